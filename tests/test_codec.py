from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.checkpoint import load_model, save_model
from musiclm.codec.losses import mel_distance
from musiclm.codec.soundstream import SoundStream
from musiclm.codec.train import CodecLossConfig, CodecTask
from musiclm.config import CodecConfig, get_preset
from musiclm.data.procedural import ProceduralMusic
from musiclm.errors import CheckpointError
from musiclm.modules.quantization import ResidualVectorQuantizer
from musiclm.train import TrainConfig, Trainer

SR = 16000


def fast_config(**kw):
    base = dict(
        sample_rate=SR,
        channels=4,
        strides=(2, 4, 5, 8),
        latent_dim=16,
        num_quantizers=4,
        codebook_size=64,
        num_coarse_quantizers=2,
        quantizer_dropout=0.5,
    )
    base.update(kw)
    return CodecConfig(**base)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_frame_rate_and_shapes(preset):
    cfg = get_preset(preset).codec
    model = SoundStream(cfg).eval()
    assert model.frame_rate == 50
    n = int(0.1 * cfg.sample_rate) + 7  # not a whole number of frames
    codes = model.encode(torch.randn(2, n) * 0.1)
    assert codes.shape == (2, cfg.num_quantizers, -(-n // cfg.hop_length))
    assert codes.dtype == torch.long and codes.max() < cfg.codebook_size
    assert model.decode(codes, n).shape == (2, n)


@pytest.mark.parametrize("length", [1, 319, 320, 4801])
def test_round_trip_lengths(length):
    model = SoundStream(fast_config()).eval()
    wav = torch.randn(3, length) * 0.1
    codes = model.encode(wav)
    assert codes.shape == (3, 4, -(-length // 320))
    assert model.decode(codes, length).shape == (3, length)
    assert model.decode(codes[:, :1]).shape == (3, codes.shape[-1] * 320)


def test_rvq_prefix_decoding_and_range_checks():
    rvq = ResidualVectorQuantizer(8, 4, 32, quantizer_dropout=0.0)
    x = torch.randn(4, 8, 50)
    rvq.train()
    for _ in range(20):
        rvq(x)
    rvq.eval()
    codes = rvq.encode(x)
    errors = [(rvq.decode(codes[:, :k]) - x).pow(2).mean().item() for k in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    with pytest.raises(ValueError, match="codes must lie"):
        rvq.decode(torch.full((1, 2, 3), 32))
    with pytest.raises(ValueError, match="n_q"):
        rvq.encode(x, n_q=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("codec")
    model = SoundStream(fast_config())
    clips = ProceduralMusic(64, SR, 0.32, seed=1)
    data = [clips[i] for i in range(len(clips))]  # rendered once: each epoch draws the same clips
    held = torch.stack([ProceduralMusic(4, SR, 0.5, seed=9)[i]["wav"] for i in range(4)])

    def distance():
        model.eval()
        return float(mel_distance(model.decode(model.encode(held), held.shape[-1]), held, SR))

    before = distance()
    cfg = TrainConfig(
        out_dir=str(out),
        max_steps=100,
        batch_size=4,
        lr=3e-3,
        warmup_steps=10,
        progress=False,
        checkpoint_every=1000,
        log_every=50,
        ema_decay=None,
    )
    losses = CodecLossConfig(adversarial_start=10_000, mel_ffts=(128, 512, 2048))
    Trainer(CodecTask(model, losses), data, cfg).fit()
    return model.eval(), held, before, distance(), out


def test_training_lowers_mel_distance(trained):
    _, _, before, after, _ = trained
    assert after < 0.7 * before, (before, after)


def test_more_levels_quantize_better(trained):
    model, held, *_ = trained
    assert all(bool(level.initialized) for level in model.quantizer.levels)  # every level was trained
    with torch.no_grad():
        latent = model.encoder(model._prepare(held))
    codes = model.encode(held)
    errors = [float((model.quantizer.decode(codes[:, :k]) - latent).pow(2).mean()) for k in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert model.decode(codes[:, :1], held.shape[-1]).shape == held.shape


def test_checkpoint_gives_identical_codes(trained, tmp_path):
    model, held, *_ = trained
    save_model(model, tmp_path / "codec")
    again = load_model(tmp_path / "codec", kind="codec")
    assert torch.equal(model.encode(held), again.encode(held))


def test_decoder_only_training_keeps_every_code_and_improves_the_decoding(trained, tmp_path):
    """``decoder_only``: the encoder and codebooks (weights and EMA state) come out as they went in,
    so every code stays the same (LMs trained on them stay valid), and the decoder alone learns: a
    fresh one learns to decode the trained codec's codes."""
    import copy

    model = copy.deepcopy(trained[0]).train()
    model.decoder = SoundStream(fast_config()).decoder
    held = torch.stack([ProceduralMusic(4, SR, 0.5, seed=11)[i]["wav"] for i in range(4)])
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    codes = model.encode(held)

    def distance():
        return float(mel_distance(model.decode(codes, held.shape[-1]), held, SR))

    before = distance()
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=100, batch_size=4, lr=3e-3, warmup_steps=5,
                      progress=False, checkpoint_every=1000, log_every=50, ema_decay=None)  # fmt: skip
    losses = CodecLossConfig(adversarial_start=10_000, mel_ffts=(128, 512, 2048))
    task = CodecTask(model, losses, decoder_only=True)
    assert {id(p) for p in task.phases()["generator"]} == {id(p) for p in model.decoder.parameters()}
    clips = ProceduralMusic(64, SR, 0.32, seed=3)
    Trainer(task, [clips[i] for i in range(len(clips))], cfg).fit()
    model.eval()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert torch.equal(model.encode(held), codes)
    assert distance() < 0.7 * before, (before, distance())


def test_decoder_only_training_on_resampled_codes(trained):
    """``resample``: a share of the crops is decoded from the codes it returns (here the fine levels
    set to 0) instead of the encoder's; validation decodes such codes too, and that picks ``best/``."""
    import copy

    model = copy.deepcopy(trained[0]).eval()
    wav = torch.stack([ProceduralMusic(8, SR, 0.32, seed=4)[i]["wav"] for i in range(8)])
    codes = model.encode(wav)

    def zero_fine(c):
        c = c.clone()
        c[:, 2:] = 0
        return c

    def decoded(c):
        return model.decoder(model.quantizer.decode(c))[:, 0, : wav.shape[-1]]

    losses = CodecLossConfig(adversarial_start=10_000, silence_prob=0.0)
    with torch.no_grad():
        every = CodecTask(model, losses, decoder_only=True, resample=zero_fine, resampled_share=1.0)
        assert torch.allclose(every._decoded(wav)[0].audio, decoded(zero_fine(codes)))
        torch.manual_seed(0)
        half = CodecTask(model, losses, decoder_only=True, resample=zero_fine)._decoded(wav)[0].audio
        as_is = torch.isclose(half, decoded(codes)).all(-1)
        resampled = torch.isclose(half, decoded(zero_fine(codes))).all(-1)
        assert (as_is | resampled).all() and 0 < int(resampled.sum()) < 8 and not (as_is & resampled).any()
        # captioned crops alone: bare audio keeps the encoder's codes whatever the share
        captioned = torch.tensor([True, False] * 4)
        kw = dict(decoder_only=True, resample=zero_fine, resampled_share=1.0, resample_captioned=True)
        some = CodecTask(model, losses, **kw)._decoded(wav, captioned)[0].audio
        assert torch.allclose(some[captioned], decoded(zero_fine(codes))[captioned])
        assert torch.allclose(some[~captioned], decoded(codes)[~captioned])
        task = CodecTask(model, losses, valid_clips=wav[:4], samples=0, decoder_only=True, resample=zero_fine)
        figures = task.validate(Path("unused"), 0)
        expected = float(mel_distance(decoded(zero_fine(codes))[:4], wav[:4], SR))
    assert task.validation_metric == "val/mel_distance_resampled"
    # the figure is the resampled codes' distance, not the encoder's codes' (which differ from it)
    assert figures["val/mel_distance_resampled"] == pytest.approx(expected, rel=1e-5)
    assert figures["val/mel_distance_resampled"] != pytest.approx(figures["val/mel_distance"], rel=1e-5)
    with pytest.raises(ValueError, match="decoder_only"):
        CodecTask(model, losses, resample=zero_fine)
    with pytest.raises(ValueError, match="give resample"):
        CodecTask(model, losses, decoder_only=True, resample_captioned=True)
    with pytest.raises(ValueError, match="give resample"):
        CodecTask(model, losses, decoder_only=True, resampled_mel_only=True)


def test_resampled_crops_scored_by_mel_alone(trained):
    """``resampled_mel_only``: the waveform L1 leaves out the resampled crops (another sample than the
    target's) and weighs the encoder's crops as before; the mel loss covers every crop."""
    import copy

    model = copy.deepcopy(trained[0]).eval()
    wav = torch.stack([ProceduralMusic(4, SR, 0.32, seed=5)[i]["wav"] for i in range(4)])
    batch = {"wav": wav, "caption": ["a", "", "b", ""]}

    def zero_fine(c):
        c = c.clone()
        c[:, 2:] = 0
        return c

    def loss(l1: float, **kw) -> float:
        losses = CodecLossConfig(adversarial_start=10_000, silence_prob=0.0, waveform_l1_weight=l1)
        task = CodecTask(model, losses, decoder_only=True, resample=zero_fine, resampled_share=1.0, **kw)
        with torch.no_grad():
            return float(task(batch, "generator", 0)[0])

    captioned = dict(resample_captioned=True)
    mel = loss(0.0, **captioned)
    with torch.no_grad():
        out = model.decoder(model.quantizer.decode(model.encode(wav)))[:, 0, : wav.shape[-1]]
    own_l1 = float((out - wav).abs().mean(-1)[1::2].sum()) / 4  # the two bare crops, over all four
    assert loss(100.0, resampled_mel_only=True, **captioned) == pytest.approx(mel + 100 * own_l1, rel=1e-4)
    assert loss(100.0, **captioned) > loss(100.0, resampled_mel_only=True, **captioned) + 1e-3
    assert loss(100.0, resampled_mel_only=True) == pytest.approx(loss(0.0), rel=1e-5)  # every crop resampled


def test_adversarial_phases_run(tmp_path):
    model = SoundStream(fast_config())
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        max_steps=3,
        batch_size=2,
        progress=False,
        checkpoint_every=10,
        log_every=1,
        warmup_steps=0,
    )
    task = CodecTask(
        model, CodecLossConfig(adversarial_start=0, disc_channels=4, stft_ffts=(256,), wave_scales=1)
    )
    Trainer(task, ProceduralMusic(4, SR, 0.25), cfg).fit()
    log = (tmp_path / "metrics.jsonl").read_text()
    assert '"loss/discriminator"' in log and '"adv"' in log and '"feat"' in log


def test_encodec_adapter_offline(tmp_path):
    from transformers import EncodecConfig, EncodecModel

    from musiclm.checkpoint import component_kinds, load_model
    from musiclm.codec.encodec import EncodecCodec

    cfg = EncodecConfig(
        target_bandwidths=[1.5, 3.0],
        sampling_rate=SR,
        num_filters=4,
        upsampling_ratios=[8, 5, 4, 2],
        codebook_size=64,
        codebook_dim=16,
        hidden_size=16,
        num_lstm_layers=1,
    )
    codec = EncodecCodec.from_model(EncodecModel(cfg), bandwidth=1.5)
    assert codec.frame_rate == 50 and codec.num_quantizers == 5
    wav = torch.randn(2, 4000) * 0.1
    codes = codec.encode(wav)
    assert codes.shape == (2, 5, 13)
    assert codec.decode(codes, 4000).shape == (2, 4000)
    assert codec.decode(codes[:, :2], 4000).shape == (2, 4000)
    # an ordinary checkpoint that can serve as a bundle's codec, rebuilt without transformers' cache
    save_model(codec, tmp_path / "encodec")
    again = load_model(tmp_path / "encodec", kind=component_kinds("codec"))
    assert isinstance(again, EncodecCodec) and again.bandwidth == 1.5
    assert torch.equal(again.encode(wav), codes)
    with pytest.raises(CheckpointError, match="expected 'semantic'"):
        load_model(tmp_path / "encodec", kind=component_kinds("semantic"))
    # the CLI makes the same checkpoint from a local transformers directory, offline
    from musiclm.cli import main

    EncodecModel(cfg).save_pretrained(tmp_path / "hf-encodec")
    out = tmp_path / "cli-encodec"
    assert (
        main(
            [
                "adapter",
                "codec",
                "--hf",
                str(tmp_path / "hf-encodec"),
                "--bandwidth",
                "1.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert load_model(out, kind=component_kinds("codec")).num_quantizers == 5
    assert main(["adapter", "codec", "--hf", str(tmp_path / "missing"), "--out", str(out)]) == 1


def test_cli_round_trip_and_bad_audio(trained, tmp_path, capsys):
    from musiclm.cli import main

    model, *_ = trained
    save_model(model, tmp_path / "codec")
    wav = ProceduralMusic(1, SR, 0.7)[0]["wav"].numpy()
    sf.write(tmp_path / "in.wav", np.stack([wav, wav], 1), 22050)  # stereo, other rate
    codec = ["--model", str(tmp_path / "codec")]
    codes = tmp_path / "new" / "c.safetensors"  # a folder the command makes
    assert main(["codec", "encode", str(tmp_path / "in.wav"), "-o", str(codes), *codec]) == 0
    decode = ["codec", "decode", str(codes), "-o", str(tmp_path / "out.wav")]
    assert main([*decode, "--levels", "2", *codec]) == 0
    out, sr = sf.read(tmp_path / "out.wav")
    assert sr == SR and abs(len(out) - round(len(wav) / 22050 * SR)) <= 1
    capsys.readouterr()
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    bad = ["codec", "encode", str(tmp_path / "bad.wav"), "-o", str(tmp_path / "x.safetensors")]
    assert main([*bad, *codec]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.wav" in err and not (tmp_path / "x.safetensors").exists()
    assert main(["codec", "decode", str(tmp_path / "in.wav"), "-o", str(tmp_path / "y.wav"), *codec]) == 1
    assert "not a codes file" in capsys.readouterr().err and not (tmp_path / "y.wav").exists()


def test_cli_trains_on_a_folder_and_resumes(tmp_path):
    from musiclm.cli import main

    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", ProceduralMusic(2, SR, 1.0, seed=i)[0]["wav"].numpy(), SR)
    args = [
        "train",
        "codec",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "run"),
        "--batch-size",
        "2",
        "--crop-seconds",
        "0.25",
        "--checkpoint-every",
        "2",
        "--no-progress",
        "--warmup-steps",
        "0",
    ]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3"]) == 0
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [__import__("json").loads(x)["step"] for x in log][-1] == 3
    assert load_model(tmp_path / "run" / "model", kind="codec").frame_rate == 50


def test_code_search_is_exact_under_bf16_autocast():
    """Root cause of the collapsed GPU codec: bf16 distances tie and argmin picks the first codes."""
    from musiclm.modules.quantization import EMAVectorQuantizer

    torch.manual_seed(0)
    vq = EMAVectorQuantizer(64, 256, kmeans_init=False)
    offset = 30.0  # latents far from the origin relative to their spread, as an encoder's often are
    vq.codebook.copy_(offset + torch.randn(256, 64))
    x = (offset + torch.randn(2000, 64)).bfloat16()  # what a bf16 encoder hands over
    exact = torch.cdist(x.double(), vq.codebook.double()).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = vq.quantize(x)
    assert (codes == exact).float().mean() > 0.99
    assert codes.unique().numel() > 200
    # the same expanded distance computed in bf16 (the old code path) collapses
    xb, cb = x, vq.codebook.bfloat16()
    old = (xb.pow(2).sum(1, keepdim=True) - 2 * xb @ cb.T + cb.pow(2).sum(1)[None]).argmin(1)
    assert (old == exact).float().mean() < 0.5


def test_dead_codes_are_revived_at_small_batches():
    """A drifted input leaves most codes unused; revival brings the codebook back into use."""
    from musiclm.modules.quantization import EMAVectorQuantizer, codebook_perplexity

    torch.manual_seed(0)
    vq = EMAVectorQuantizer(8, 128)
    vq.update(torch.randn(512, 8), torch.zeros(512, dtype=torch.long))  # k-means init
    shifted = lambda: 5 + torch.randn(64, 8)  # noqa: E731 - the encoder moved away from the init
    first = vq.quantize(shifted())
    assert first.unique().numel() < 20  # a few border codes catch everything
    for _ in range(60):
        x = shifted()
        vq.update(x, vq.quantize(x))
    codes = vq.quantize(torch.cat([shifted() for _ in range(32)]))
    assert codebook_perplexity(codes[None, None], 128) > 60


@pytest.mark.parametrize(
    ("encoder", "decoder"), [("seanet", "seanet"), ("seanet", "istft"), ("stft", "istft")]
)
def test_encoders_and_decoders_train_and_keep_lengths(encoder, decoder):
    torch.manual_seed(0)
    config = fast_config(
        encoder=encoder, decoder=decoder, istft_dim=32, istft_depth=2, stft_dim=32, stft_depth=2
    )
    model = SoundStream(config)
    wav = ProceduralMusic(4, SR, 0.32, seed=3)
    batch = torch.stack([wav[i]["wav"] for i in range(4)])
    task = CodecTask(model, CodecLossConfig(adversarial_start=10_000, mel_ffts=(128, 512), silence_prob=0.0))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(15):
        loss, _ = task(batch, phase="generator", step=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    model.eval()
    for n in (1, 319, 321, 5000):
        assert model.decode(model.encode(torch.randn(2, n) * 0.1), n).shape == (2, n)


def test_validation_logs_figures_writes_samples_and_keeps_best(tmp_path):
    import json

    torch.manual_seed(0)
    model = SoundStream(fast_config())
    held = torch.stack([ProceduralMusic(3, SR, 0.5, seed=9)[i]["wav"] for i in range(3)])
    task = CodecTask(model, CodecLossConfig(adversarial_start=10_000, mel_ffts=(128, 512)), valid_clips=held)
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        max_steps=12,
        batch_size=4,
        lr=3e-3,
        warmup_steps=0,
        progress=False,
        checkpoint_every=100,
        validate_every=4,
        log_every=4,
        ema_decay=None,
    )
    trainer = Trainer(task, ProceduralMusic(32, SR, 0.32, seed=1), cfg)
    trainer.fit()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val/mel_distance" in r]
    assert [r["step"] for r in val] == [4, 8, 12]
    for r in val:
        assert {f"val/mel_distance@{k}" for k in range(1, 5)} <= set(r)
        assert 1 <= r["val/perplexity_min"] <= 64 and np.isfinite(r["val/si_sdr"])
    best = min(val, key=lambda r: r["val/mel_distance"])
    saved = json.loads((tmp_path / "best" / "validation.json").read_text())
    assert saved["step"] == best["step"] and trainer.best == pytest.approx(best["val/mel_distance"])
    assert load_model(tmp_path / "best", kind="codec").frame_rate == 50
    decoded, _ = sf.read(tmp_path / "samples" / "step-0000012" / "clip0-decoded.wav")
    assert len(decoded) == held.shape[-1]


def test_long_audio_is_coded_in_chunks_that_match_one_pass(trained):
    model, *_ = trained
    wav = torch.cat([ProceduralMusic(1, SR, 3.0, seed=s)[0]["wav"] for s in range(3)])[None]
    whole = model.encode(wav)
    chunked = model.encode(wav, chunk_frames=40)
    assert whole.unique().numel() > 4  # a real code sequence, not one repeated code
    assert torch.equal(whole, chunked)
    audio = model.decode(whole, wav.shape[-1])
    pieces = model.decode(whole, wav.shape[-1], chunk_frames=40)
    assert torch.allclose(audio, pieces, atol=1e-5)


def test_istft_decoder_chunks_match_one_pass():
    torch.manual_seed(0)
    model = SoundStream(fast_config(decoder="istft", istft_dim=32, istft_depth=2)).eval()
    latent = torch.randint(0, 64, (1, 4, 300))
    assert torch.allclose(model.decode(latent), model.decode(latent, chunk_frames=50), atol=1e-5)


def test_stft_encoder_is_causal_and_chunks_match_one_pass():
    """Codes never depend on later audio, so long audio encoded in chunks equals one pass."""
    torch.manual_seed(0)
    model = SoundStream(fast_config(encoder="stft", stft_dim=32, stft_depth=3))
    wav = torch.randn(1, 300 * 320) * 0.1
    with torch.no_grad():
        model(wav)  # k-means initialisation of the codebooks from this audio
    model.eval()
    later = wav.clone()
    later[:, 150 * 320 :] = torch.randn(1, 150 * 320)  # change everything from frame 150 on
    with torch.no_grad():
        changed = (model.encoder(later[:, None]) != model.encoder(wav[:, None])).any(1)[0]
    assert not changed[:150].any() and changed[150:].all()
    codes = model.encode(wav)
    assert codes.unique().numel() > 8  # a real code sequence, not one repeated code
    assert torch.equal(model.encode(wav, chunk_frames=40), codes)


def test_silence_augmentation_leaves_the_batch_alone_and_pairs_the_discriminator():
    torch.manual_seed(0)
    task = CodecTask(SoundStream(fast_config()), CodecLossConfig(adversarial_start=0, silence_prob=0.5))
    wav = torch.stack([ProceduralMusic(16, SR, 0.32, seed=5)[i]["wav"] for i in range(16)])
    assert bool((wav.abs().amax(-1) > 0).all())
    before = wav.clone()
    task(wav, phase="generator", step=1)
    assert torch.equal(wav, before)  # the caller's batch is not modified
    real, fake = task._fakes[wav.data_ptr()]
    silent = real.abs().amax(-1) == 0
    assert 0 < int(silent.sum()) < 16 and torch.equal(real[~silent], wav[~silent])
    loss, _ = task(wav, phase="discriminator", step=1)
    assert torch.isfinite(loss) and wav.data_ptr() not in task._fakes


def test_train_codec_warm_starts_with_the_checkpoints_config(tmp_path):
    """``--init`` continues that codec, not the preset: a codec of another config (SEANet encoder and
    decoder, narrower, fewer levels) warm-starts and the run keeps its config; asking it for another
    decoder is refused in one line by the CLI (see test_bad_input)."""
    from musiclm.checkpoint import read_checkpoint_config
    from musiclm.cli import main

    source = fast_config(encoder="seanet", decoder="seanet", dead_code_threshold=0.05)
    assert source != get_preset("tiny").codec
    save_model(SoundStream(source), tmp_path / "source")
    out = tmp_path / "run"
    args = ["train", "codec", "--data", "procedural", "--procedural-clips", "2", "--init", str(tmp_path / "source"),
            "--steps", "1", "--batch-size", "1", "--crop-seconds", "0.5", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    trained = load_model(out / "model")
    assert trained.config == source and read_checkpoint_config(out / "model")["kind"] == "codec"
    # --decoder-only from that run: the decoder moves, nothing else does
    args = [*args[:-3], "--steps", "2", "--out", str(tmp_path / "dec"), "--no-progress", "--decoder-only"]
    args[args.index("--init") + 1] = str(out / "model")
    assert main(args) == 0
    tuned = load_model(tmp_path / "dec" / "model").state_dict()
    moved = {k for k, v in trained.state_dict().items() if not torch.equal(v, tuned[k])}
    assert moved and all(k.startswith("decoder.") for k in moved)
    # ... and with a fine LM of its levels sampling the fine codes of every crop
    from musiclm.config import LMConfig
    from musiclm.lm.stages import FineStage, StageConfig

    lm = LMConfig(dim=32, depth=1, heads=2, ff_dim=64, window_seconds=0.2)
    fine = StageConfig(stage="fine", lm=lm, codec_levels=4, codec_codebook=64, coarse_levels=2)
    save_model(FineStage(fine), tmp_path / "fine")
    args[args.index("--out") + 1] = str(tmp_path / "resampled")
    # (procedural clips carry captions: --fine-lm-captioned reads them from the batch, every crop resampled;
    # --fine-lm-mel-only leaves those crops out of the waveform L1)
    resampled = ["--fine-lm", str(tmp_path / "fine"), "--fine-lm-share", "1", "--fine-lm-captioned"]
    assert main([*args, *resampled, "--fine-lm-mel-only", "--waveform-l1", "10"]) == 0
    tuned = load_model(tmp_path / "resampled" / "model").state_dict()
    moved = {k for k, v in trained.state_dict().items() if not torch.equal(v, tuned[k])}
    assert moved and all(k.startswith("decoder.") for k in moved)
