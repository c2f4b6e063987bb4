"""MusicLM end to end with tiny random components: generate, rerank, continue, story, melody, errors."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.bundle import make_bundle
from musiclm.config import LMConfig
from musiclm.errors import AudioError, CheckpointError, ConfigError, PromptError
from musiclm.lm.stages import NULL, CoarseStage, FineStage, SemanticStage, StageConfig
from musiclm.pipeline import MusicLM
from tests._tiny_bundle import PROMPTS, SR, components, save_parts


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return make_bundle(root / "bundle", save_parts(root, components()), name="tiny-test")


@pytest.fixture(scope="module")
def model(bundle):
    return MusicLM.from_pretrained(bundle, device="cpu")


def _melody_wav(seconds=4.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    notes = 220 * 2 ** (rng.integers(0, 12, size=int(seconds * 2)) / 12)
    f = np.repeat(notes, len(t) // len(notes) + 1)[: len(t)]
    return torch.tensor(0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR), dtype=torch.float32)


def test_generate_length_rerank_and_seeds(model):
    out = model.generate(PROMPTS[:2], seconds=1.2, candidates=3, seed=1, progress=False)
    assert out.audio.shape == (2, round(1.2 * SR)) and out.sample_rate == SR
    assert out.scores.shape == (2, 3) and out.candidates.shape == (2, 3, round(1.2 * SR))
    assert torch.equal(out.chosen, out.scores.argmax(1))
    for p in range(2):
        assert torch.equal(out.audio[p], out.candidates[p, out.chosen[p]])
        assert out.scores[p, out.chosen[p]] == out.scores[p].max()
    assert out.tokens["semantic"].shape == (2, 30) and out.tokens["coarse"].shape == (2, 2, 60)
    assert out.tokens["fine"].shape == (2, 2, 60)
    assert -1 <= out.scores.min() and out.scores.max() <= 1
    again = model.generate(PROMPTS[:2], seconds=1.2, candidates=3, seed=1, progress=False)
    assert torch.equal(out.audio, again.audio)
    other = model.generate(PROMPTS[:2], seconds=1.2, candidates=3, seed=2, progress=False)
    assert not torch.equal(out.tokens["semantic"], other.tokens["semantic"])
    assert not torch.equal(out.cond_tokens[0], out.cond_tokens[1])  # prompts -> different conditioning


def test_long_generation_slides_windows(model):
    out = model.generate(
        PROMPTS[0], seconds=5.0, candidates=1, progress=False
    )  # windows of 2 s / 1 s / 0.5 s
    assert out.audio.shape == (1, 5 * SR) and out.tokens["semantic"].shape == (1, 125)


def test_melody_tokens_reach_the_prefix(model, monkeypatch):
    seen = []
    original = model.semantic_lm._extend

    def spy(prefix, *args, **kwargs):
        seen.append(prefix.clone())
        return original(prefix, *args, **kwargs)

    monkeypatch.setattr(model.semantic_lm, "_extend", spy)
    model.generate(PROMPTS[0], seconds=1.0, candidates=2, progress=False)
    lo, hi = model.semantic_lm.layout.span("melody0")[0], model.semantic_lm.layout.span("melody3")[1]
    melody_part = seen[0][:, 4 : 4 + model.semantic_lm.melody_windows * 4]
    assert (melody_part == NULL).all()  # no melody given: NULL melody ids
    seen.clear()
    wav = _melody_wav()
    model.generate(PROMPTS[0], seconds=1.0, candidates=2, melody=wav, melody_sample_rate=SR, progress=False)
    melody_part = seen[0][:, 4 : 4 + model.semantic_lm.melody_windows * 4]
    assert ((melody_part >= lo) & (melody_part < hi)).all()
    expected = model.semantic_lm.cond_ids(
        model.text_tokens([PROMPTS[0]]), model.semantic_lm.melody_at(model.melody_tokens(wav, SR), 0.0)
    )
    assert torch.equal(seen[0][0, : expected.shape[1]], expected[0])


def test_a_melody_reaches_chroma_reading_lms_as_pitch_classes(monkeypatch):
    parts = components(melody=False)
    for name, cls in (("semantic_lm", SemanticStage), ("coarse_lm", CoarseStage)):
        config = parts[name].config
        config.melody_chroma = True
        parts[name] = cls(config)
    model = MusicLM(parts)
    assert model.has_melody
    seen = {"semantic_lm": [], "coarse_lm": []}
    for name, spied in seen.items():
        lm = getattr(model, name)

        def spy(prefix, *args, original=lm._extend, seen=spied, **kwargs):
            seen.append(kwargs.get("chroma"))
            return original(prefix, *args, **kwargs)

        monkeypatch.setattr(lm, "_extend", spy)
    a4 = 0.3 * torch.sin(2 * torch.pi * 440.0 * torch.arange(2 * SR) / SR)
    model.generate(PROMPTS[0], seconds=1.0, candidates=2, melody=a4, melody_sample_rate=SR, progress=False)
    for chroma in (seen["semantic_lm"][0], seen["coarse_lm"][0]):
        assert chroma.shape[0] == 2 and (chroma >= 0).sum() >= 2 * 20 and (chroma[chroma >= 0] == 9).all()
    for spied in seen.values():
        spied.clear()
    model.generate(PROMPTS[0], seconds=1.0, candidates=2, progress=False)
    assert seen["semantic_lm"][0] is None and seen["coarse_lm"][0] is None


def test_the_tempo_a_prompt_names_reaches_beat_reading_lms_as_a_beat_grid(monkeypatch, tmp_path, capsys):
    from musiclm.cli import main
    from musiclm.tempo import beat_phase_grid, continued_beat_phases, track_beats

    parts = components(melody=False)
    for name, cls in (("semantic_lm", SemanticStage), ("coarse_lm", CoarseStage)):
        config = parts[name].config
        config.beat_phase = True
        parts[name] = cls(config)
        torch.nn.init.normal_(parts[name].beat_embedding.weight, std=2.0)  # large: it decides the music
    model = MusicLM(parts)
    assert model.reads_tempo
    seen = []
    original = model.semantic_lm._extend

    def spy(prefix, *args, **kwargs):
        seen.append(kwargs.get("beats"))
        return original(prefix, *args, **kwargs)

    monkeypatch.setattr(model.semantic_lm, "_extend", spy)
    rate = model.semantic_lm.config.semantic_rate
    prompts = [f"{PROMPTS[0]} at 120 bpm", PROMPTS[1]]
    out = model.generate(prompts, seconds=1.0, candidates=2, guidance=1.0, progress=False)
    # position i predicts the id after it: the last second of positions but one reads the targets'
    n = round(rate)
    beats, first = seen[0], seen[0].shape[1] - n - 1
    assert beats.shape[0] == 4 and (beats[:2, :first] == -1).all() and (beats[:, -1] == -1).all()
    assert torch.equal(beats[0, first:-1], beat_phase_grid(120, n, frame_rate=rate))
    assert (beats[2:] == -1).all()  # the second prompt names no tempo
    seen.clear()
    other = model.generate(prompts, seconds=1.0, candidates=2, guidance=1.0, progress=False, bpm=60)
    assert torch.equal(seen[0][2, first:-1], beat_phase_grid(60, n, frame_rate=rate))
    assert not torch.equal(other.tokens["semantic"][0], out.tokens["semantic"][0])  # the tempo matters
    story = model.story([(f"{PROMPTS[0]} at 120 bpm", 1.0), (f"{PROMPTS[1]} at 90 bpm", 1.0)], progress=False)
    assert story.audio.shape[-1] == 2 * SR
    assert torch.equal(
        model.beat_phases([120, 90], 2.0, (0.0, 1.0))[0],
        torch.cat(
            [
                beat_phase_grid(120, round(rate), frame_rate=rate),
                beat_phase_grid(90, round(rate), frame_rate=rate),
            ]
        ),
    )
    # a continuation: the beats tracked in the audio prompt, then at the tempo asked for
    clicks = torch.zeros(2 * SR)
    for t in np.arange(0.1, 2.0, 0.5):  # 120 bpm
        clicks[int(t * SR) : int(t * SR) + 200] = torch.sin(torch.arange(200) * 0.8) * torch.exp(
            -torch.arange(200) / 40
        )
    seen.clear()
    model.continue_audio(clicks, None, seconds=1.0, sample_rate=SR, bpm=60, progress=False)
    frames = model.tokenize_audio(clicks, SR)["semantic"].shape[1] + n
    tracked = track_beats(clicks, SR)
    want = continued_beat_phases(tracked, frames, bpm=60, frame_rate=rate)
    assert len(tracked) >= 2 and torch.equal(seen[0][0, -n - 1 : -1], want[-n:])
    seen.clear()
    model.continue_audio(clicks, None, seconds=1.0, sample_rate=SR, progress=False)  # the audio's own tempo
    assert torch.equal(seen[0][0, -n - 1 : -1], continued_beat_phases(tracked, frames, frame_rate=rate)[-n:])
    seen.clear()
    model.continue_audio(clicks, None, seconds=1.0, sample_rate=SR, progress=False, beat_phases=False)
    assert seen[0] is None  # in free time, as for a prompt that names no tempo
    with pytest.raises(PromptError, match="outside"):
        model.generate(PROMPTS[0], seconds=1.0, candidates=1, bpm=1000, progress=False)
    assert main(["generate", PROMPTS[0], "--bpm", "0", "-o", str(tmp_path / "x.wav")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bpm" in err[0], err


def test_continuation_keeps_the_prompt_tokens(model):
    audio = _melody_wav(2.0)
    given = model.tokenize_audio(audio, SR)
    out = model.continue_audio(
        audio, "a calm piano piece", seconds=1.0, sample_rate=SR, candidates=2, progress=False
    )
    s0 = given["semantic"].shape[1]
    assert torch.equal(out.tokens["semantic"][0, :s0], given["semantic"][0])
    assert torch.equal(out.tokens["coarse"][0, :, : 2 * s0], given["codes"][0, :2])
    assert torch.equal(out.tokens["fine"][0, :, : 2 * s0], given["codes"][0, 2:])
    assert out.tokens["semantic"].shape[1] == s0 + 25
    assert out.audio.shape[-1] == (2 * s0 + 50) * model.codec.hop_length
    no_text = model.continue_audio(audio, None, seconds=0.5, sample_rate=SR, progress=False)
    assert no_text.audio.shape[-1] > out.audio.shape[-1] - SR


def test_story_switches_conditioning_at_segment_boundaries(model, monkeypatch):
    calls = {"semantic": [], "coarse": []}
    for name in calls:
        stage = getattr(model, f"{name}_lm")

        def spy(prefix, n_new, *args, original=stage._extend, seen=calls[name], **kwargs):
            seen.append((prefix.clone(), n_new))
            return original(prefix, n_new, *args, **kwargs)

        monkeypatch.setattr(stage, "_extend", spy)
    out = model.story([(PROMPTS[0], 1.0), (PROMPTS[1], 1.5), (PROMPTS[2], 0.5)], progress=False)
    # 25 Hz, 2 s windows (50 tokens) with 25 tokens of context; no window crosses a segment start
    # (round(cumulative seconds * rate) = 25, 62): new tokens 25 | 25, 12 | 13
    assert [n for _, n in calls["semantic"]] == [25, 25, 12, 13]
    tokens = model.text_tokens(PROMPTS[:3])
    ids = [model.semantic_lm.cond_ids(tokens[k : k + 1])[0] for k in range(3)]
    for (prefix, _), k in zip(calls["semantic"], [0, 1, 1, 2], strict=True):
        assert torch.equal(prefix[0, : len(ids[k])], ids[k])
    # the coarse stage (1 s windows of 50 frames, 24 frames of context) switches at frames 50 and 124
    coarse_ids = [model.coarse_lm.cond_ids(tokens[k : k + 1])[0] for k in range(3)]
    levels = model.coarse_lm.levels
    made, segments = 0, []
    for prefix, n in calls["coarse"]:
        k = next(k for k in range(3) if torch.equal(prefix[0, : len(coarse_ids[k])], coarse_ids[k]))
        segments.append((made, made + n // levels, k))
        made += n // levels
    assert all(k == (0 if a < 50 else 1 if a < 124 else 2) for a, _, k in segments)
    assert all(b <= 50 or a >= 50 for a, b, _ in segments) and all(
        b <= 124 or a >= 124 for a, b, _ in segments
    )
    assert out.segment_starts == [0.0, 1.0, 2.48]
    assert out.audio.shape[-1] == 3 * SR and out.tokens["semantic"].shape[1] == 75


def test_cli_generate_writes_wav_sidecar_and_plot(bundle, tmp_path, capsys):
    from musiclm.cli import main

    out = tmp_path / "song.wav"
    rc = main(["generate", "a calm piano piece", "-o", str(out), "--model", str(bundle), "--seconds", "1",
               "--candidates", "2", "--seed", "3", "--plot", "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    wav, sr = sf.read(out)
    assert sr == SR and len(wav) == SR
    meta = json.loads(out.with_suffix(".json").read_text())
    for key in ("prompt", "seed", "model", "scores", "chosen", "timings", "parameters", "sample_rate"):
        assert key in meta
    assert meta["seed"] == 3 and len(meta["scores"]) == 2 and meta["model"] == "tiny-test"
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    rc = main(["generate", "--prompts", str(prompts), "-o", str(tmp_path / "many.wav"), "--model", str(bundle),
               "--seconds", "0.5", "--candidates", "1", "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 0 and (tmp_path / "many-00.wav").is_file() and (tmp_path / "many-01.json").is_file()
    rc = main(["story", "calm", "1", "loud", "1", "-o", str(tmp_path / "story.wav"), "--model", str(bundle),
               "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 0 and len(json.loads((tmp_path / "story.json").read_text())["segments"]) == 2


def test_bad_input_fails_early_with_one_line(model, bundle, tmp_path, capsys):
    from musiclm.cli import main

    for bad in ["", "   ", [], ["ok", ""]]:
        with pytest.raises(PromptError):
            model.generate(bad, seconds=1, progress=False)
    for seconds in (0, -1, float("nan"), 10_000):
        with pytest.raises(PromptError):
            model.generate("piano", seconds=seconds, progress=False)
    with pytest.raises(AudioError, match="melody"):
        model.generate("piano", seconds=1, melody=str(tmp_path / "missing.wav"), progress=False)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR * 2), SR)
    with pytest.raises(AudioError, match="melody"):
        model.generate("piano", seconds=1, melody=str(silent), progress=False)
    with pytest.raises(PromptError, match="give 3"):  # once a bare zip() ValueError
        model.generate("piano", seconds=1, temperatures=(1.0, 1.0), progress=False)
    with pytest.raises(PromptError, match="unknown stage"):
        model.generate("piano", seconds=1, temperatures={"coarse": 1.0, "semantc": 0.9}, progress=False)
    with pytest.raises(PromptError, match="segment 0 must be a"):  # once the third value ignored
        model.story([("piano", 1.0, 3.0)], progress=False)
    with pytest.raises(CheckpointError, match="unknown model"):
        MusicLM.from_pretrained("no-such-model")
    assert main(["generate", "", "-o", str(tmp_path / "x.wav"), "--model", str(bundle)]) == 1
    assert main(["generate", "piano", "-o", str(tmp_path / "x.wav"), "--model", "nope"]) == 1
    assert main(["story", "calm", "ten", "-o", str(tmp_path / "x.wav"), "--model", str(bundle)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("musiclm: error:") for line in err)


def test_cuda_graphs_are_refused_off_a_cuda_device(model):
    assert model.cuda_graphs is False  # off by default
    with pytest.raises(ConfigError, match="CUDA graphs need the model on a CUDA device; it is on cpu"):
        model.cuda_graphs = True
    assert model.cuda_graphs is False and not model.fine_lm.cuda_graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("which", ["tiny", "default"])  # the shipped one's LMs add per-step embeddings
@pytest.mark.parametrize("compiled", [False, True])  # the graphs replay the compiled decoding step
def test_cuda_graphs_generate_what_eager_decoding_generates(bundle, which, compiled):
    gpu = MusicLM.from_pretrained(bundle if which == "tiny" else "default", device="cuda")
    runs = []
    for graphs in (False, True):
        gpu.cuda_graphs, gpu.compile_decoding = graphs, graphs and compiled
        runs.append(gpu.generate(PROMPTS[:2], seconds=2.5, candidates=2, seed=3, progress=False))
    for stage in ("semantic", "coarse", "fine"):
        assert torch.equal(runs[0].tokens[stage], runs[1].tokens[stage]), stage
    assert gpu.to("cpu").cuda_graphs is False  # moved off the GPU: eager again


def test_mismatched_components_are_refused(tmp_path):
    parts = components(melody=False)
    parts["fine_lm"] = FineStage(
        StageConfig(stage="fine", lm=LMConfig(dim=32, depth=1, heads=2, ff_dim=64, window_seconds=0.5),
                    mulan_quantizers=4, mulan_codebook=16, semantic_clusters=16, codec_levels=8,
                    codec_codebook=64, coarse_levels=2)
    )  # fmt: skip
    dirs = save_parts(tmp_path, parts)
    with pytest.raises(CheckpointError, match="fine LM codec levels"):
        make_bundle(tmp_path / "bad", dirs)
    with pytest.raises(CheckpointError, match="melody"):
        MusicLM({**components(melody=True), "melody": None})

    # an LM that embeds MuLaN codebooks must sit beside the MuLaN they came from
    parts = components(melody=False)
    config = parts["semantic_lm"].config
    config.mulan_levels, config.mulan_dim = 1, parts["mulan"].quantizer.dim
    parts["semantic_lm"] = SemanticStage(config)
    parts["semantic_lm"].mulan_embedding.set_codebooks(parts["mulan"].quantizer.levels[0].codebook[None])
    MusicLM(parts)
    parts["semantic_lm"].mulan_embedding.set_codebooks(torch.randn(1, 16, config.mulan_dim))
    with pytest.raises(CheckpointError, match="codebooks of another MuLaN"):
        MusicLM(parts)


def test_an_lm_trained_on_another_codecs_codes_is_refused_in_a_bundle(tmp_path):
    """An LM records which models made the tokens it learned from; a bundle must hold those models:
    another codec's codes have the same shapes, so nothing else would notice."""
    from musiclm.checkpoint import save_model
    from musiclm.codec.soundstream import SoundStream
    from musiclm.data.cache import model_fingerprint

    parts = components(melody=False)
    dirs = save_parts(tmp_path, parts)
    other = SoundStream(parts["codec"].config)  # the same config, other weights
    record = {"codec": {"model": "other-codec", "fingerprint": model_fingerprint(other)}}
    save_model(parts["coarse_lm"], tmp_path / "coarse-other", metadata={"token_sources": record})
    with pytest.raises(
        CheckpointError, match=r"coarse_lm was trained on codec tokens of another codec \(other-codec\)"
    ):
        make_bundle(tmp_path / "bad", {**dirs, "coarse_lm": tmp_path / "coarse-other"})
    assert not (tmp_path / "bad").exists()
    record = {"codec": {"model": "its codec", "fingerprint": model_fingerprint(parts["codec"])}}
    save_model(parts["coarse_lm"], tmp_path / "coarse-own", metadata={"token_sources": record})
    make_bundle(tmp_path / "good", {**dirs, "coarse_lm": tmp_path / "coarse-own"}, half=True)
    # the bundle's float16 copy of the codec is the same model for the record
    half = MusicLM.from_pretrained(tmp_path / "good", device="cpu")
    assert model_fingerprint(half.codec) == model_fingerprint(parts["codec"])


def test_guidance_defaults_to_the_lms_configured_scale(tmp_path):
    """A bundle's semantic and coarse LMs carry the guidance scales measured best for them (``musiclm
    bundle --guidance S C``): requests without one sample each stage with its own (the fine stage
    unguided); one given scale overrides both, a pair each."""
    from musiclm.cli import main

    parts = save_parts(tmp_path, components())
    guided = make_bundle(tmp_path / "guided", parts, name="guided", guidance=(2.5, 1.5))
    model = MusicLM.from_pretrained(guided, device="cpu")
    assert model.guidance_scales() == (2.5, 1.5) and model.guidance_scales(1.0) == (1.0, 1.0)
    assert [s.guidance for s in model.sampling_configs().values()] == [2.5, 1.5, 1.0]
    assert [s.guidance for s in model.sampling_configs(guidance=1.0).values()] == [1.0, 1.0, 1.0]
    assert [s.guidance for s in model.sampling_configs(guidance=[3, 2]).values()] == [3.0, 2.0, 1.0]
    one = make_bundle(tmp_path / "one", parts, name="one", guidance=2.5)
    assert MusicLM.from_pretrained(one, device="cpu").guidance_scales() == (2.5, 2.5)

    def tokens(**kw):  # tokens: the test bundle's untrained codec decodes every code alike
        return model.generate(
            "a calm piano piece", seconds=0.5, candidates=1, seed=5, progress=False, **kw
        ).tokens

    default, explicit, coarse_off = tokens(), tokens(guidance=(2.5, 1.5)), tokens(guidance=(2.5, 1.0))
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    assert torch.equal(default["semantic"], coarse_off["semantic"])  # the coarse scale is the coarse stage's
    assert not torch.equal(default["coarse"], coarse_off["coarse"])
    assert not torch.equal(default["semantic"], tokens(guidance=1.0)["semantic"])
    out = tmp_path / "song.wav"
    for given, recorded in (
        ([], {"semantic": 2.5, "coarse": 1.5}),
        (["--guidance", "2,1"], {"semantic": 2.0, "coarse": 1.0}),
    ):
        rc = main(["generate", "piano", "-o", str(out), "--model", str(guided), "--seconds", "0.5", "--candidates",
                   "1", "--no-progress", "--device", "cpu", *given])  # fmt: skip
        assert (
            rc == 0 and json.loads(out.with_suffix(".json").read_text())["parameters"]["guidance"] == recorded
        )


def test_bundle_records_the_sampling_temperatures_requests_default_to(tmp_path, capsys):
    """``musiclm bundle --temperatures S C F`` writes each LM's default temperature (measured for the
    bundle); requests without temperatures sample with them, explicit ones override them."""
    from musiclm.cli import main

    parts = save_parts(tmp_path, components())
    warm = make_bundle(tmp_path / "warm", parts, temperatures=(0.3, 0.5, 0.7))
    model = MusicLM.from_pretrained(warm, device="cpu")
    assert [s.temperature for s in model.sampling_configs().values()] == [0.3, 0.5, 0.7]
    assert [s.temperature for s in model.sampling_configs((1.0, 1.0, 1.0)).values()] == [1.0, 1.0, 1.0]

    def tokens(bundle, **kw):
        out = MusicLM.from_pretrained(bundle, device="cpu").generate(
            "a calm piano piece", seconds=0.5, candidates=1, seed=5, progress=False, **kw
        )
        return out.tokens["semantic"]

    plain = make_bundle(tmp_path / "plain", parts)
    assert torch.equal(tokens(warm), tokens(plain, temperatures=(0.3, 0.5, 0.7)))
    assert not torch.equal(tokens(warm), tokens(plain))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in parts.items()]
    assert main(["bundle", "--out", str(tmp_path / "bad"), *flags, "--temperatures", "1", "0", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["musiclm: error: temperature must be a positive finite number, got 0.0"]
    assert not (tmp_path / "bad").exists()


def test_an_lms_configured_truncation_is_how_requests_sample_unless_they_give_their_own(tmp_path):
    """An LM's ``top_k`` / ``top_p`` (its config.json) truncate its sampling for requests that give
    none; a request's own replaces them. top-k 1 makes a stage greedy: the same tokens at any seed."""
    parts = save_parts(tmp_path, components())
    plain = make_bundle(tmp_path / "plain", parts)
    greedy = make_bundle(tmp_path / "greedy", parts)
    path = greedy / "semantic_lm" / "config.json"
    saved = json.loads(path.read_text())
    saved["config"]["lm"].update(top_k=1, top_p=0.5)
    path.write_text(json.dumps(saved))
    model = MusicLM.from_pretrained(greedy, device="cpu")
    assert [(s.top_k, s.top_p) for s in model.sampling_configs().values()] == [
        (1, 0.5),
        (None, None),
        (None, None),
    ]
    assert [(s.top_k, s.top_p) for s in model.sampling_configs(top_k=7).values()] == [
        (7, 0.5),
        (7, None),
        (7, None),
    ]

    def semantic(m, seed, **kw):
        out = m.generate("a calm piano piece", seconds=0.5, candidates=1, seed=seed, progress=False, **kw)
        return out.tokens["semantic"]

    assert torch.equal(semantic(model, 1), semantic(model, 2))
    loose = MusicLM.from_pretrained(plain, device="cpu")
    assert not torch.equal(semantic(loose, 1), semantic(loose, 2))
    assert not torch.equal(semantic(model, 1, top_k=50, top_p=1.0), semantic(model, 2, top_k=50, top_p=1.0))
    saved["config"]["lm"]["top_p"] = 1.5
    path.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="top_p"):
        MusicLM.from_pretrained(greedy, device="cpu")


def test_requests_beyond_the_memory_cap_are_refused_before_sampling(model, monkeypatch):
    fixed = model.estimate_memory(0, 1.0, 1.0)
    small = model.estimate_memory(2, 1.0, 1.0)
    assert model.estimate_memory(20, 1.0, 1.0) - fixed == pytest.approx(10 * (small - fixed), rel=0.01)
    assert model.estimate_memory(2, 10.0, 1.0) > small  # grows with seconds
    assert model.estimate_memory(2, 1.0, 3.0) > small  # guidance doubles the LM batch

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled although the request was refused")

    monkeypatch.setattr(model, "sample_tokens", no_sampling)
    with pytest.raises(PromptError, match="lower --candidates or --seconds"):
        model.generate("piano", seconds=1, candidates=4, max_memory_gb=small / 2**30 / 2, progress=False)
    with pytest.raises(PromptError, match="lower --candidates"):
        model.story([("calm", 1.0), ("loud", 1.0)], candidates=2, max_memory_gb=1e-6, progress=False)


def test_a_bundle_can_use_the_encodec_adapter_as_its_codec(tmp_path):
    """A transformers adapter is selectable from a bundle: EnCodec (50 Hz, 4 levels of 64 codes at
    1.2 kbps, as the tiny LMs expect) stands in for SoundStream, and the bundle generates."""
    from transformers import EncodecConfig, EncodecModel

    from musiclm.codec.encodec import EncodecCodec

    cfg = EncodecConfig(
        target_bandwidths=[1.2, 2.4], sampling_rate=SR, num_filters=4, upsampling_ratios=[8, 5, 4, 2],
        codebook_size=64, codebook_dim=16, hidden_size=16, num_lstm_layers=1,
    )  # fmt: skip
    parts = components(melody=False)
    parts["codec"] = EncodecCodec.from_model(EncodecModel(cfg), bandwidth=1.2)
    bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path, parts), name="tiny-encodec")
    model = MusicLM.from_pretrained(bundle, device="cpu")
    assert isinstance(model.codec, EncodecCodec)
    out = model.generate(PROMPTS[0], seconds=1.0, candidates=2, progress=False)
    assert out.audio.shape == (1, SR) and out.tokens["fine"].shape == (1, 2, 50)
    parts["codec"] = EncodecCodec.from_model(EncodecModel(cfg), bandwidth=2.4)  # 8 levels: refused
    with pytest.raises(CheckpointError, match="codec levels"):
        make_bundle(tmp_path / "bad", save_parts(tmp_path / "bad-parts", parts))
