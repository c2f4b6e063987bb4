"""The loudness head: fitted to captioned clips it puts quiet prompts below loud ones, also in words
it was not fitted on; it round-trips as a checkpoint without MiniLM's weights; the pipeline sets each
prompt's clip to the level it reads, and output normalisation keeps the difference."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.audio import integrated_loudness
from musiclm.checkpoint import load_model, save_model
from musiclm.config import LoudnessConfig
from musiclm.data.manifest import ManifestEntry
from musiclm.mulan.loudness import PromptLoudness, sentences
from musiclm.mulan.loudness_train import fit_prompt_loudness

SR = 16000
STYLES = ["A piano piece.", "Rock with drums and bass.", "A techno track.", "Jazz played on a sax.",
          "A violin sonata.", "Hip hop with a synth bass.", "A folk song on guitar.", "A trap beat.",
          "An accordion waltz.", "A string quartet.", "A bossa nova on nylon guitar.", "An organ chorale."]  # fmt: skip
LEVELS = {"It is quiet.": -38.0, "": -26.0, "It is loud.": -16.0}


def _clip(path, lufs: float, seed: int) -> None:
    """One second of noise at about ``lufs`` integrated loudness."""
    noise = np.random.default_rng(seed).standard_normal(SR).astype(np.float32) * 0.1
    gain = 10 ** ((lufs - integrated_loudness(torch.from_numpy(noise), SR)) / 20)
    sf.write(path, noise * gain, SR)


def _entries(folder, styles, seed) -> list[ManifestEntry]:
    folder.mkdir()
    out = []
    for i, style in enumerate(styles):
        for j, (words, lufs) in enumerate(LEVELS.items()):
            path = folder / f"{i}-{j}.wav"
            _clip(path, lufs + (seed + i + j) % 3 - 1.0, seed * 100 + 10 * i + j)
            out.append(ManifestEntry(path=str(path), caption=f"{style} {words}".strip()))
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("loudness")
    train = _entries(root / "train", STYLES[:8], 0)
    valid = _entries(root / "valid", STYLES[8:], 1)  # other pieces and other words
    return fit_prompt_loudness(train, valid, workers=2)  # in worker processes (spawned)


def test_sentences_split_a_caption():
    assert sentences("Rock with drums. It is loud! Fast; bright") == [
        "Rock with drums.",
        "It is loud!",
        "Fast;",
        "bright",
    ]
    assert sentences("  no stop at all ") == ["no stop at all"]


def test_the_fit_orders_prompts_by_the_loudness_they_name(fitted):
    head, metrics = fitted
    assert metrics["valid_mae"] < 0.5 * metrics["valid_mae_median"], metrics
    assert metrics["train_clips"] == 24 and metrics["valid_clips"] == 12
    quiet, loud = head(["A harp solo. It is quiet.", "A harp solo. It is loud."]).tolist()
    assert quiet + 10 < loud
    # words it never saw, through what MiniLM knows of them
    hushed, powerful = head(
        ["A harp solo. It is gentle and hushed.", "A harp solo. It is powerful and loud."]
    )
    assert hushed + 5 < powerful


def test_a_checkpoint_round_trips_without_the_encoder(fitted, tmp_path):
    head, _ = fitted
    save_model(head, tmp_path / "loudness")
    from safetensors.torch import load_file

    assert sorted(load_file(str(tmp_path / "loudness" / "model.safetensors"))) == [
        "anchors",
        "bias",
        "weight",
    ]
    again = load_model(tmp_path / "loudness", kind="loudness")
    prompts = ["A harp solo. It is quiet.", "Loud rock."]
    assert torch.allclose(again(prompts), head(prompts), atol=1e-4)


def test_a_compact_bundle_keeps_the_anchors_in_8_bits_and_the_predictions(fitted, tmp_path):
    from safetensors.torch import load_file

    from musiclm.bundle import make_bundle
    from tests._tiny_bundle import components, save_parts

    head, _ = fitted
    parts = save_parts(tmp_path, {**components(melody=False), "loudness": head})
    bundle = make_bundle(tmp_path / "bundle", parts, name="lvl", half=True)
    assert load_file(str(bundle / "loudness" / "model.safetensors"))["anchors"].dtype == torch.int8
    again = load_model(bundle / "loudness", kind="loudness")
    prompts = ["A harp solo. It is quiet.", "Loud rock.", "A harp solo. It is gentle and hushed."]
    assert torch.allclose(again(prompts), head(prompts), atol=0.05)


def test_predictions_stay_in_the_training_range(fitted):
    head, metrics = fitted
    low, high = metrics["range_lufs"]
    head.weight.mul_(100.0)  # an extreme head: predictions far outside what any clip had
    try:
        out = head(["It is quiet.", "It is loud."])
    finally:
        head.weight.div_(100.0)
    assert float(out.min()) >= low - 0.01 and float(out.max()) <= high + 0.01


def test_a_config_out_of_order_is_refused_in_one_line(fitted, tmp_path):
    from musiclm.errors import CheckpointError

    save_model(fitted[0], tmp_path / "loudness")
    meta = json.loads((tmp_path / "loudness" / "config.json").read_text())
    meta["config"]["min_lufs"] = 0.0
    (tmp_path / "loudness" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="min_lufs <= reference_lufs"):
        load_model(tmp_path / "loudness", kind="loudness")
    with pytest.raises(ValueError, match="only 'minilm'"):
        LoudnessConfig(text_encoder="clap")


def test_the_pipeline_sets_each_prompt_to_the_loudness_it_reads(tmp_path):
    from musiclm.bundle import make_bundle
    from musiclm.cli import main
    from musiclm.pipeline import MusicLM
    from tests._tiny_bundle import components, save_parts

    torch.manual_seed(1)
    head = PromptLoudness(LoudnessConfig(anchors=8, reference_lufs=-28.0, min_lufs=-45.0, max_lufs=-12.0))
    head.anchors.copy_(torch.nn.functional.normalize(torch.randn(8, 384), dim=-1))
    head.weight.normal_(std=4.0)  # a level that depends on the prompt's words
    parts = components(melody=False)
    bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path, {**parts, "loudness": head}), name="lvl")
    model = MusicLM.from_pretrained(bundle, device="cpu")
    prompts = ["a calm piano piece. It is quiet.", "loud rock with drums. It is loud."]
    out = model.generate(prompts, seconds=1.0, candidates=2, seed=0, progress=False)
    want = head(prompts)
    assert out.prompt_lufs is not None and torch.allclose(out.prompt_lufs, want, atol=1e-4)
    assert torch.allclose(out.prompt_level_db, want + 28.0, atol=1e-4)
    for p in range(2):
        assert integrated_loudness(out.audio[p], SR) == pytest.approx(float(want[p]), abs=0.1)
        for n in range(2):
            assert integrated_loudness(out.candidates[p, n], SR) == pytest.approx(float(want[p]), abs=0.1)
    # the same samples at their decoded level without the head; unconditional samples keep theirs
    plain = MusicLM({k: v for k, v in model.modules().items() if k != "loudness"}, name="plain")
    raw = plain.generate(prompts, seconds=1.0, candidates=2, seed=0, progress=False)
    gain = out.candidates.norm(dim=-1, keepdim=True) / raw.candidates.norm(dim=-1, keepdim=True)
    assert raw.prompt_lufs is None and bool((out.chosen == raw.chosen).all())
    assert torch.allclose(out.candidates, raw.candidates * gain, atol=1e-5)
    uncond = model.generate(prompts, seconds=1.0, candidates=1, seed=0, progress=False, unconditional=True)
    assert uncond.prompt_lufs is None
    # normalised output keeps the prompt's level: the target moved by its distance from the reference
    # (a target low enough that these noisy clips' peaks do not hold it back)
    wav = tmp_path / "quiet.wav"
    args = ["generate", prompts[0], "-o", str(wav), "--model", str(bundle), "--seconds", "1", "--candidates", "1",
            "--loudness", "-30", "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    meta = json.loads(wav.with_suffix(".json").read_text())
    assert meta["prompt_level_db"] == pytest.approx(float(want[0]) + 28.0, abs=0.01)
    assert meta["loudness_lufs"] == pytest.approx(-30.0 + meta["prompt_level_db"], abs=0.1)


def test_each_segment_of_a_story_comes_out_at_its_own_prompts_level(tmp_path):
    from musiclm.bundle import make_bundle
    from musiclm.pipeline import STORY_GAIN_RAMP, MusicLM
    from tests._tiny_bundle import components, save_parts

    head = PromptLoudness(LoudnessConfig(anchors=2, reference_lufs=-30.0, min_lufs=-50.0, max_lufs=-10.0))
    head.anchors.copy_(head.encode(["It is quiet.", "It is loud."]))  # a head that knows two sentences
    head.weight.copy_(torch.tensor([-8.0, 8.0]))
    parts = components(melody=False)
    bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path, {**parts, "loudness": head}), name="lvl")
    model = MusicLM.from_pretrained(bundle, device="cpu")
    segments = [("a calm piano piece. It is quiet.", 1.5), ("loud rock with drums. It is loud.", 1.5)]
    out = model.story(segments, candidates=2, seed=0, progress=False)
    want = head([p for p, _ in segments])
    assert abs(float(want[0] - want[1])) > 3  # the two prompts ask for different levels
    edge, ramp = round(out.segment_starts[1] * SR), round(STORY_GAIN_RAMP * SR / 2)
    for clip in out.candidates[0]:
        first = integrated_loudness(clip[: edge - ramp], SR)
        second = integrated_loudness(clip[edge + ramp :], SR)
        # each segment as far from the other as their prompts ask (the whole clip may be scaled down
        # together to keep its peaks below -1 dBFS)
        assert second - first == pytest.approx(float(want[1] - want[0]), abs=1.0)
        assert float(clip.abs().max()) <= 10 ** (-1 / 20) + 1e-4
    # the story's level for normalisation: its segments' mean by duration (about equal here)
    assert out.prompt_lufs.shape == (1,) and float(out.prompt_lufs[0]) == pytest.approx(
        float(want.mean()), abs=0.5
    )
