"""Bad input gets one line naming what and where, before any work; outputs never half-written."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.cli import main
from musiclm.pretrained import default_component

SR = 16000


def _one_line_error(capsys, args, match):
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1, (args, err)
    assert len(err) == 1 and err[0].startswith("musiclm: error:"), err
    assert match in err[0], err[0]


GEN = ["generate", "calm piano", "--model", "no-model-needed-before-these-checks"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--top-k", "0"], "top_k"),
        (["--top-k", "-1"], "top_k"),
        (["--top-p", "0"], "top_p"),
        (["--top-p", "2"], "top_p"),
        (["--guidance", "nan"], "guidance"),
        (["--guidance", "inf"], "guidance"),
        (["--guidance", "3,2,1"], "one scale or two"),
        (["--guidance", "3,-2"], "guidance"),
        (["--device", "tpu"], "device"),
        (["--device", "cpu", "--cuda-graphs"], "--cuda-graphs needs a CUDA device; this request runs on cpu"),
        (["--seed", str(2**64)], "seed"),
        (["--seed", "-1"], "seed"),
        (["--candidates", "0"], "candidates"),
        (["--seconds", "nan"], "seconds"),
        (["--temperatures", "1", "0", "1"], "temperature"),
    ],
)
def test_sampling_arguments_fail_before_loading(capsys, tmp_path, extra, match):
    _one_line_error(capsys, [*GEN, "-o", str(tmp_path / "x.wav"), *extra], match)


def test_eval_sampling_arguments_fail_before_loading(capsys, tmp_path):
    ev = ["eval", "--model", "no-such-model", "--prompts", "p.txt", "--out", str(tmp_path)]
    _one_line_error(capsys, [*ev, "--temperatures", "1", "nan", "1"], "temperature")
    _one_line_error(capsys, [*ev, "--guidance", "-1"], "guidance")
    for extra, match in [
        (["--limit", "0"], "--limit"),  # 0 and -3 once meant every prompt / all but the last 3
        (["--limit", "-3"], "--limit"),
        (["--batch-size", "0"], "--batch-size"),
        (["--candidates", "0"], "candidates"),
        (["--seconds", "-1"], "--seconds"),
        (["--seeds", "0", "-1"], "seed"),
    ]:
        _one_line_error(capsys, [*ev, *extra], match)
    # the prompts and the classifier are read before the model loads, and no report folder is made
    out = tmp_path / "report"
    ev = ["eval", "--model", "no-such-model", "--out", str(out)]
    _one_line_error(capsys, [*ev, "--prompts", str(tmp_path / "missing.jsonl")], "missing.jsonl")
    (tmp_path / "p.txt").write_text("calm piano\n")
    _one_line_error(
        capsys, [*ev, "--prompts", str(tmp_path / "p.txt"), "--classifier", "no-such-clf"], "no-such-clf"
    )
    assert not out.exists()


def test_mulan_report_reads_its_manifest_before_the_model(capsys, tmp_path):
    report = ["mulan-report", "--model", "no-such-mulan"]
    _one_line_error(capsys, [*report, "--data", str(tmp_path / "missing.jsonl")], "missing.jsonl")
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"path": "a.wav", "caption": "calm piano"}) + "\n")
    _one_line_error(capsys, [*report, "--data", str(one)], "at least 2 captioned clips")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_on_a_cpu_build(capsys, tmp_path):
    _one_line_error(capsys, [*GEN, "-o", str(tmp_path / "x.wav"), "--device", "cuda"], "no CUDA")


def test_prompts_that_are_not_text(capsys, tmp_path):
    out = str(tmp_path / "x.wav")
    _one_line_error(capsys, ["generate", "bad \udcff bytes", "-o", out], "not valid UTF-8")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02piano")
    _one_line_error(capsys, ["generate", "--prompts", str(binary), "-o", out], "binary")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9 jazz\n".encode("latin-1"))
    _one_line_error(capsys, ["generate", "--prompts", str(latin), "-o", out], "not UTF-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    _one_line_error(capsys, ["generate", "--prompts", str(empty), "-o", out], str(empty))


def test_a_bom_does_not_reach_the_prompt(tmp_path):
    from musiclm.pipeline_commands import _read_prompts_file

    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffcalm piano\nloud rock\n".encode())
    assert _read_prompts_file(path) == ["calm piano", "loud rock"]


def test_outputs_that_cannot_be_written_fail_before_any_work(capsys, tmp_path):
    folder = tmp_path / "a-folder.wav"
    folder.mkdir()
    _one_line_error(capsys, [*GEN, "-o", str(folder)], "is a directory")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _one_line_error(capsys, [*GEN, "-o", str(a_file / "x.wav")], "is a file, not a folder")
    _one_line_error(capsys, [*GEN, "-o", str(tmp_path / "x.mp3")], "must be a .wav")
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        _one_line_error(capsys, [*GEN, "-o", str(locked / "x.wav")], "cannot write")
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros(SR), SR)
    _one_line_error(capsys, ["continue", str(song), "-o", str(song)], "overwrite the input")
    assert sf.info(song).frames == SR


def test_audio_inputs_and_story_lengths_fail_before_loading(capsys, tmp_path):
    """A missing, unreadable, too short or too long clip to continue or melody to follow, and a
    story segment of no length, are refused before the model loads (no such model is given)."""
    out = str(tmp_path / "x.wav")
    model = ["--model", "no-model-needed-before-these-checks", "-o", out]
    short, long, text = tmp_path / "short.wav", tmp_path / "long.wav", tmp_path / "notes.txt"
    sf.write(short, np.zeros(SR // 4), SR)
    sf.write(long, np.zeros(301 * 8000), 8000)
    text.write_text("not audio")
    _one_line_error(capsys, ["continue", str(tmp_path / "missing.wav"), *model], "audio prompt: ")
    _one_line_error(capsys, ["continue", str(short), *model], "shorter than 0.5 s")
    _one_line_error(capsys, ["continue", str(long), *model], "longer than the limit")
    fits = tmp_path / "fits.wav"
    sf.write(fits, np.zeros(295 * 8000), 8000)
    _one_line_error(capsys, ["continue", str(fits), "--seconds", "10", *model], "continued piece's length")
    _one_line_error(capsys, ["generate", "piano", "--melody", str(text), *model], "melody: ")
    _one_line_error(capsys, ["story", "piano", "-5", *model], "segment 0 seconds")
    _one_line_error(capsys, ["story", "piano", "200", "rock", "200", *model], "the story's length")
    assert not (tmp_path / "x.wav").exists()


def test_train_settings_fail_with_one_line(capsys, tmp_path):
    base = ["train", "codec", "--data", "procedural", "--out", str(tmp_path / "run"), "--no-progress"]
    for extra, match in [
        (["--checkpoint-every", "0"], "checkpoint_every"),
        (["--log-every", "0"], "log_every"),
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "nan"], "lr"),
        (["--steps", "0"], "steps"),
        (["--init", "default", "--decoder", "seanet"], "has the istft decoder, not seanet"),
        (["--init", "default", "--encoder", "seanet"], "has the stft encoder, not seanet"),
        (["--decoder-only"], "--decoder-only needs --init"),
        (["--init", "default", "--fine-lm", "default"], "--fine-lm needs --decoder-only"),
        (["--init", "default", "--decoder-only", "--fine-lm-share", "0"], "--fine-lm-share must lie in"),
        (
            ["--init", "default", "--decoder-only", "--fine-lm-captioned"],
            "--fine-lm-captioned needs --fine-lm",
        ),
        (
            ["--init", "default", "--decoder-only", "--fine-lm-mel-only"],
            "--fine-lm-mel-only needs --fine-lm",
        ),
        (["--crop-seconds", "0"], "--crop-seconds"),  # once a numpy traceback
        (["--crop-seconds", "1e9"], "beyond the limit"),  # once a 58 TiB allocation
        (["--valid", "procedural", "--valid-seconds", "nan"], "--valid-seconds"),
        (["--valid-clips", "0"], "--valid-clips"),
        (["--adversarial-start", "-1"], "--adversarial-start"),
        (["--waveform-l1", "-1"], "--waveform-l1"),  # once a negative loss weight, trained on
        (["--disc-lr", "0"], "discriminator learning rate"),  # once the default rate, silently
        (["--max-bad-fraction", "2"], "--max-bad-fraction"),
        (["--procedural-clips", "0"], "--procedural-clips"),
    ]:
        _one_line_error(capsys, base + extra, match)
    out = ["--out", str(tmp_path / "run"), "--no-progress"]
    _one_line_error(
        capsys, ["train", "semantic", "--data", "procedural", "--crop-seconds", "-1", *out], "--crop-"
    )
    _one_line_error(capsys, ["train", "mulan", "--data", "x.jsonl", "--crop-seconds", "0", *out], "--crop-")
    semantic = ["train", "semantic", "--data", "procedural", *out]
    _one_line_error(capsys, [*semantic, "--kmeans-clips", "0"], "--kmeans-clips")  # once a ZeroDivisionError
    _one_line_error(capsys, [*semantic, "--procedural-clips", "0"], "--procedural-clips")  # the same
    _one_line_error(capsys, ["train", "melody", *out, "--quantizer-pairs", "0"], "--quantizer-pairs")
    _one_line_error(capsys, ["train", "melody", *out, "--pairs", "0"], "--pairs")
    tokenize = ["tokenize", "--data", "x.jsonl", "--out", str(tmp_path / "run"), "--chroma"]
    _one_line_error(capsys, [*tokenize, "--segment-seconds", "0"], "--segment-seconds")  # once a hang
    _one_line_error(capsys, [*tokenize, "--shard-size", "0"], "--shard-size")
    # a fine LM of other RVQ levels than the codec's: refused before any audio is read
    from musiclm.checkpoint import save_model
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig

    small = CodecConfig(sample_rate=SR, channels=4, latent_dim=16, num_quantizers=4, codebook_size=64)
    save_model(SoundStream(small), tmp_path / "codec")
    extra = ["--init", str(tmp_path / "codec"), "--decoder-only", "--fine-lm", "default"]
    _one_line_error(capsys, base + extra, "models 8 RVQ levels of 1024 codes, the codec has 4 of 64")
    assert not (tmp_path / "run").exists()  # the run folder, checked writable, is not left behind
    missing = [
        "train",
        "mulan",
        "--data",
        str(tmp_path / "missing.jsonl"),
        "--out",
        str(tmp_path / "a" / "run"),
    ]
    _one_line_error(capsys, missing, "missing.jsonl")
    merge = ["data", "merge", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "a" / "all.jsonl")]
    _one_line_error(capsys, merge, "missing.jsonl")  # an output file's folder is not left behind either
    assert not (tmp_path / "a").exists()


def test_validation_on_training_files_is_refused(capsys, tmp_path):
    """Every trainer with a --valid set refuses one that shares a file with its training data."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        sf.write(clips / f"{i}.wav", 0.1 * np.sin(np.arange(SR) * (i + 1) / 30), SR)
        (clips / f"{i}.txt").write_text(f"a tone number {i}")
    valid = tmp_path / "valid.jsonl"
    valid.write_text(json.dumps({"path": str(clips / "2.wav"), "caption": "a tone"}) + "\n")
    run = ["--data", str(clips), "--valid", str(valid), "--out", str(tmp_path / "run")]
    for trainer in ("codec", "semantic", "mulan", "loudness"):
        extra = [] if trainer == "loudness" else ["--steps", "1", "--no-progress"]
        _one_line_error(capsys, ["train", trainer, *run, *extra], "1 of its 1 clips are in the training data")
    assert not (tmp_path / "run").exists()


def test_lm_conditioning_flags_fail_before_the_cache_is_read(capsys, tmp_path):
    base = ["train", "coarse-lm", "--tokens", str(tmp_path / "no-cache"), "--out", str(tmp_path / "run")]
    # --init also takes a bundle directory: its coarse_lm is the start (here a fine LM, to be refused)
    bundle, partial = tmp_path / "bundle", tmp_path / "partial"
    for folder, components in [(bundle, {"coarse_lm": str(default_component("fine_lm"))}), (partial, {})]:
        folder.mkdir()
        (folder / "musiclm.json").write_text(json.dumps({"name": "mine", "components": components}))
    for extra, match in [
        (["--mulan-levels", "13"], "--mulan-levels"),
        (["--mulan-levels", "-1"], "--mulan-levels"),
        (["--text-token-prob", "1.5"], "--text-token-prob"),
        (["--text-token-prob", "nan"], "--text-token-prob"),
        (["--cond-drop-prob", "1.2"], "--cond-drop-prob"),
        (["--melody-drop-prob", "-0.5"], "--melody-drop-prob"),
        (["--mulan-codebooks", str(tmp_path / "no-mulan")], "no-mulan"),
        (["--kv-heads", "3"], "--kv-heads"),
        (["--kv-heads", "-1"], "--kv-heads"),
        (["--depth", "-2"], "--depth"),
        (["--attn-dropout", "1.5"], "--attn-dropout"),
        (["--attn-dropout", "nan"], "--attn-dropout"),
        (["--attn-dropout", "1"], "--attn-dropout"),  # every attention weight dropped
        (["--init", str(tmp_path / "no-lm")], "no-lm"),
        (["--init", str(default_component("fine_lm"))], "'fine_lm' model, expected 'coarse_lm'"),
        (["--init", str(bundle)], "'fine_lm' model, expected 'coarse_lm'"),
        (["--init", str(partial)], "the bundle has no coarse_lm"),
    ]:
        _one_line_error(capsys, base + extra, match)
    assert not (tmp_path / "run" / "model").exists()


def test_codec_levels_and_embed_arguments(capsys, tmp_path):
    from safetensors.torch import save_file

    from musiclm.checkpoint import save_model
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig

    codec = save_model(SoundStream(CodecConfig(channels=4, latent_dim=16, num_quantizers=4, codebook_size=64)),
                       tmp_path / "codec")  # fmt: skip
    codes = tmp_path / "codes.safetensors"
    save_file({"codes": torch.zeros(4, 10, dtype=torch.int16)}, str(codes), metadata={"sample_rate": str(SR)})
    for levels in ("0", "99"):
        _one_line_error(
            capsys,
            [
                "codec",
                "decode",
                str(codes),
                "-o",
                str(tmp_path / "x.wav"),
                "--model",
                str(codec),
                "--levels",
                levels,
            ],
            "--levels must lie in [1, 4]",
        )
    wide = tmp_path / "wide.safetensors"  # codes of a codec with a larger codebook: once a ValueError
    save_file(
        {"codes": torch.full((4, 10), 900, dtype=torch.int16)}, str(wide), metadata={"sample_rate": str(SR)}
    )
    decode = ["codec", "decode", str(wide), "-o", str(tmp_path / "x.wav"), "--model", str(codec)]
    _one_line_error(capsys, decode, "codes up to 900 do not fit this codec's 64 codes")
    _one_line_error(capsys, ["embed"], "nothing to embed")
    # a bad audio file is named before the model loads and before the text's embedding is printed
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio")
    embed = ["embed", "--model", "no-such-mulan", "--text", "piano", "--audio", str(fake)]
    assert main(embed) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "fake.wav: cannot read audio" in captured.err


def test_corrupt_weights_are_named_at_load(tmp_path):
    from safetensors.torch import load_file, save_file

    from musiclm.checkpoint import load_model, save_model
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig
    from musiclm.errors import CheckpointError

    path = save_model(SoundStream(CodecConfig(channels=4, latent_dim=16, num_quantizers=2, num_coarse_quantizers=1, codebook_size=8)),
                      tmp_path / "codec")  # fmt: skip
    weights = load_file(str(path / "model.safetensors"))
    weights = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()
    }
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        load_model(path)


def test_checkpoints_get_the_usual_permissions(tmp_path):
    from musiclm.checkpoint import save_model
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig

    old = os.umask(0o022)
    try:
        path = save_model(SoundStream(CodecConfig(channels=4, latent_dim=16, num_quantizers=2, num_coarse_quantizers=1, codebook_size=8)),
                          tmp_path / "codec")  # fmt: skip
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
    assert (path / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_half_precision_bundle_gets_the_usual_permissions(tmp_path):
    from musiclm.bundle import make_bundle
    from tests._tiny_bundle import components, save_parts

    old = os.umask(0o022)
    try:
        bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path, components()), half=True)
    finally:
        os.umask(old)
    modes = {p.parent.name: p.stat().st_mode & 0o777 for p in bundle.rglob("model.safetensors")}
    assert len(modes) == 7 and set(modes.values()) == {0o644}, modes


def test_audio_is_written_through_a_temporary_name(tmp_path, monkeypatch):
    from musiclm.audio import save_audio

    target = tmp_path / "out.wav"
    sf.write(target, np.full(100, 0.5), SR)

    def broken_write(path, *args, **kwargs):
        open(path, "wb").write(b"RIFF half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr("musiclm.audio.sf.write", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_audio(target, np.zeros(SR), SR)
    assert sf.info(target).frames == 100  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary left behind


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("musiclm ")


def test_train_and_encode_outputs_are_checked_first(capsys, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _one_line_error(
        capsys, ["train", "codec", "--data", "procedural", "--out", str(a_file), "--no-progress"], "is a file"
    )
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros(SR), SR)
    _one_line_error(
        capsys, ["codec", "encode", str(song), "-o", str(a_file / "codes.safetensors")], "is a file"
    )
    _one_line_error(capsys, ["codec", "encode", str(song), "-o", str(song)], "overwrite the input")


def test_default_model_for_codec_encode_and_an_all_bad_folder(capsys, tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, 0.1 * np.sin(np.arange(SR) / 10), SR)
    assert (
        main(["codec", "encode", str(song), "-o", str(tmp_path / "c.safetensors"), "--model", "default"]) == 0
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_bytes(b"RIFFnonsense")
    _one_line_error(
        capsys,
        ["train", "codec", "--data", str(bad), "--out", str(tmp_path / "run"), "--no-progress"],
        "a.wav",
    )


def test_the_loudness_fit_refuses_bad_data_in_one_line(capsys, tmp_path):
    clips, held = tmp_path / "clips", tmp_path / "held"
    for folder in (clips, held):
        folder.mkdir()
        for i in range(3):  # audio without captions
            noise = np.random.default_rng(i).standard_normal(SR).astype(np.float32) * 0.1
            sf.write(folder / f"{i}.wav", noise, SR)
    base = ["train", "loudness", "--out", str(tmp_path / "head")]
    _one_line_error(
        capsys, [*base, "--data", str(clips), "--valid", str(held)], "fewer than 2 captioned clips"
    )
    _one_line_error(
        capsys, [*base, "--data", str(tmp_path / "none.jsonl"), "--valid", str(held)], "none.jsonl"
    )
    _one_line_error(
        capsys, [*base, "--data", str(clips), "--valid", str(held), "--workers", "0"], "--workers"
    )
    assert not (tmp_path / "head" / "config.json").exists()


def test_a_full_disk_is_one_line_and_leaves_no_partial_output(capsys, tmp_path, monkeypatch):
    import errno

    import musiclm.files

    source = tmp_path / "a.jsonl"
    source.write_text(json.dumps({"path": "a.wav", "caption": "calm piano"}) + "\n")
    out = tmp_path / "all.jsonl"

    def full(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(musiclm.files.Path, "write_text", full)
    _one_line_error(capsys, ["data", "merge", str(source), "-o", str(out)], "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]
    monkeypatch.undo()
    monkeypatch.setattr(
        musiclm.files.Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError("bug"))
    )
    with pytest.raises(OSError, match="bug"):  # any other OSError is a bug, with its traceback
        main(["data", "merge", str(source), "-o", str(out)])
