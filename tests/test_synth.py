"""The synthetic captioned benchmark: determinism, audibility, labels that match the audio, splits."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from musiclm.data.manifest import read_manifest
from musiclm.errors import DataError


def _synth_available() -> bool:
    try:
        import fluidsynth  # noqa: F401
        import music21  # noqa: F401

        from musiclm.data.synth.render import resolve_soundfonts

        return bool(resolve_soundfonts(None))  # the benchmark's soundfont, what sets are rendered with
    except (ImportError, OSError, DataError):
        return False


if not _synth_available():
    if os.environ.get("MUSICLM_REQUIRE_SYNTH"):
        raise RuntimeError("FluidSynth, music21 or the TimGM6mb soundfont is missing (see `make sysdeps`)")
    pytest.skip("FluidSynth / music21 / soundfont not installed", allow_module_level=True)

from musiclm.data.synth import STYLES, FluidSynthRenderer, Piece, SynthConfig, plan_item, synthesize  # noqa: E402
from musiclm.data.synth.captions import TEMPLATES  # noqa: E402
from musiclm.data.synth.melodies import SCALES, load_library, note_name, progression_chords  # noqa: E402
from musiclm.data.synth.render import BENCHMARK_SOUNDFONTS, resolve_soundfonts  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return load_library(tmp_path_factory.mktemp("lib") / "melodies.json", seed=0, size=16)


@pytest.fixture(scope="module")
def renderer():
    return FluidSynthRenderer(SR)


def _audio_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*.flac"))}


def _soundfont() -> str:
    return str(resolve_soundfonts(None)[0])


def test_plan_is_deterministic_and_seed_dependent(library):
    fonts = [_soundfont()]
    config = SynthConfig(seed=3, clip_seconds=4.0)
    n = len(STYLES) + 3
    a = [plan_item(i, config, library, soundfonts=fonts) for i in range(n)]
    b = [plan_item(i, config, library, soundfonts=fonts) for i in range(n)]
    assert [(x[0], x[1].labels, x[3]) for x in a] == [(x[0], x[1].labels, x[3]) for x in b]
    other = [plan_item(i, SynthConfig(seed=4, clip_seconds=4.0), library, soundfonts=fonts) for i in range(n)]
    assert [x[3] for x in a] != [x[3] for x in other]
    assert {x[1].labels["genre"] for x in a} == set(STYLES)  # round robin over every style


def test_every_style_renders_audible_audio_deterministically(library):
    config = SynthConfig(seed=0, clip_seconds=3.0)
    pieces = [plan_item(i, config, library, soundfonts=[_soundfont()])[1] for i in range(len(STYLES))]
    first, second = FluidSynthRenderer(SR), FluidSynthRenderer(SR)
    for piece in pieces:
        wav = first.render(piece, _soundfont())
        assert wav.shape == (3 * SR,) and np.isfinite(wav).all()
        assert np.sqrt(np.mean(wav**2)) > 1e-3, f"{piece.labels['genre']} is silent"
        np.testing.assert_array_equal(wav, second.render(piece, _soundfont()))  # same sequence, same audio


def _onsets(wav: np.ndarray, hop: int = 80, window: int = 320) -> np.ndarray:
    """Rising edges of a smoothed log-energy envelope that come within 2.5 nepers of its peak."""
    energy = np.convolve(wav**2, np.ones(window) / window, mode="same")[::hop]
    env = 0.5 * np.log(energy + 1e-10)
    on = env > env.max() - 2.5
    edges = np.flatnonzero(on & ~np.roll(on, 1))
    keep = [p for j, p in enumerate(edges) if j == 0 or p - edges[j - 1] > 40]  # 0.2 s apart
    return np.array(keep) * hop / SR


def test_tempo_label_matches_rendered_kick_drum(library, renderer):
    config = SynthConfig(seed=1, clip_seconds=8.0, styles=("techno",))
    for index in range(3):
        _, piece, _, _ = plan_item(index, config, library, soundfonts=[_soundfont()])
        drums = [t for t in piece.tracks if t.is_drum]
        assert drums, "techno always has drums"
        kick = drums[0]
        kick.notes = [n for n in kick.notes if n[2] == 36]  # four on the floor: one kick per beat
        wav = renderer.render(Piece([kick], piece.seconds, piece.labels), _soundfont())
        onsets = _onsets(wav)
        assert len(onsets) >= 10
        period = np.polyfit(np.arange(len(onsets)), onsets, 1)[0]
        assert abs(60.0 / period - piece.labels["bpm"]) < 2.0


def test_twelve_bar_blues_follows_its_dominant_seventh_changes(library):
    assert progression_chords(["I7", "iv7", "bVII", "V"], 0, "major") == [
        (0, "dom7"), (5, "min7"), (10, "maj"), (7, "maj"),
    ]  # fmt: skip
    names = [note_name(i) for i in range(12)]
    config = SynthConfig(seed=0, clip_seconds=45.0, styles=("blues",))
    for index in range(3):
        _, piece, _, _ = plan_item(index, config, library, soundfonts=[_soundfont()])
        chords = piece.labels["chords"]
        assert len(chords) >= 12 and all(c.endswith("7") for c in chords)
        roots = [names.index(c[:-4]) for c in chords[:12]]
        steps = [(r - roots[0]) % 12 for r in roots]
        assert steps[4:6] == [5, 5] and steps[8] == 7 and steps[6:8] == [0, 0]  # IV IV I I V


def test_captions_name_each_style_without_doubled_words(library):
    config = SynthConfig(seed=0, clip_seconds=4.0, test_fraction=0.3)
    items = [plan_item(i, config, library, soundfonts=[_soundfont()]) for i in range(4 * len(STYLES))]
    for _, piece, _, caption in items:
        words = STYLES[piece.labels["genre"]].words
        assert any(w.lower() in caption.lower() for w in words), caption
        assert "music music" not in caption.lower(), caption


def test_melody_notes_are_the_rendered_melody(library):
    config = SynthConfig(seed=2, clip_seconds=5.0, styles=("techno", "ballad"))
    for index in range(4):
        _, piece, _, _ = plan_item(index, config, library, soundfonts=[_soundfont()])
        melody = next(t for t in piece.tracks if t.role == "melody")
        assert [[round(s, 4), round(e, 4), p] for s, e, p, _ in melody.notes] == piece.labels["melody"]
        tonic = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"].index(piece.labels["key"])
        scale = {(tonic + i) % 12 for i in SCALES[piece.labels["mode"]]}
        assert {p % 12 for _, _, p in piece.labels["melody"]} <= scale  # procedural: diatonic


def test_heldout_split_has_own_tunes_and_wordings(library):
    config = SynthConfig(seed=0, clip_seconds=4.0, test_fraction=0.3)
    items = [plan_item(i, config, library, soundfonts=[_soundfont()]) for i in range(90)]
    sources = {
        split: {p.labels["melody_source"] for s, p, _, _ in items if s == split} - {"procedural"}
        for split in ("train", "test")
    }
    assert sources["test"] and sources["train"] and not sources["test"] & sources["train"]
    test_captions = [c for s, _, _, c in items if s == "test"]
    train_captions = {c for s, _, _, c in items if s == "train"}
    assert test_captions and not set(test_captions) & train_captions
    # each test caption comes from a held-out template: its fixed words never start a train caption
    assert any("Listen to" in c or "Here we have" in c or "excerpt" in c for c in test_captions)
    assert not any("Listen to" in c or "Here we have" in c for c in train_captions)
    assert len(TEMPLATES["test"]) >= 3


def test_synthesize_writes_dataset_and_resumes(tmp_path):
    out = tmp_path / "synth"
    config = SynthConfig(hours=8 * 2.0 / 3600, clip_seconds=2.0, library_size=8, seed=5, chunk_size=3)
    summary = synthesize(out, config, workers=1, progress=False)
    assert summary["clips"] == 8 and summary["rendered_seconds"] == 16.0
    entries = read_manifest(out / "train.jsonl") + (
        read_manifest(out / "test.jsonl") if summary["splits"].get("test") else []
    )
    assert len(entries) == 8
    for e in entries:
        assert os.path.isfile(e.path) and e.caption and e.labels["bpm"] > 0 and "melody" in e.labels
    assert len(list((out / "midi").rglob("*.mid"))) == 8
    again = synthesize(out, config, workers=1, progress=False)
    assert again["rendered_seconds"] == 0  # every clip was already there
    # the audio depends on the seed alone: two workers, and a resumed run, give the same bytes
    parallel = tmp_path / "parallel"
    synthesize(parallel, config, workers=2, progress=False)
    assert _audio_bytes(parallel) == _audio_bytes(out)
    victim = sorted((out / "audio").rglob("*.flac"))[5]
    victim.unlink()
    assert synthesize(out, config, workers=1, progress=False)["rendered_seconds"] == 2.0
    assert _audio_bytes(parallel) == _audio_bytes(out)
    assert json.loads((out / "synth.json").read_text())["clips"] == 8
    with pytest.raises(DataError, match="other settings"):
        synthesize(
            out,
            SynthConfig(hours=config.hours, clip_seconds=2.0, library_size=8, seed=6, chunk_size=3),
            workers=1,
        )


def test_sets_are_rendered_with_the_benchmarks_soundfont_unless_told_and_keep_theirs(tmp_path):
    config = SynthConfig(hours=2 * 2.0 / 3600, clip_seconds=2.0, library_size=4, seed=1, chunk_size=2)
    made = synthesize(tmp_path / "s", config, workers=1, progress=False)
    assert made["soundfonts"] == list(BENCHMARK_SOUNDFONTS)  # whatever else this machine has
    entries = read_manifest(tmp_path / "s" / "train.jsonl") + read_manifest(tmp_path / "s" / "test.jsonl")
    assert {e.labels["soundfont"] for e in entries} == set(BENCHMARK_SOUNDFONTS)
    with pytest.raises(DataError, match="soundfont 'NoSuch.sf2' not found"):
        synthesize(tmp_path / "t", config, workers=1, progress=False, soundfonts=["NoSuch.sf2"])
    assert not (tmp_path / "t").exists()  # refused before anything is written
    other = tmp_path / "Other.sf2"  # a second soundfont changes what each chunk draws
    other.write_bytes(Path(_soundfont()).read_bytes())
    with pytest.raises(DataError, match=f"rendered with the soundfonts {BENCHMARK_SOUNDFONTS[0]}, not"):
        synthesize(tmp_path / "s", config, workers=1, progress=False, soundfonts=[_soundfont(), str(other)])


def test_cli_synth_and_bad_style(tmp_path, capsys):
    from musiclm.cli import main

    out = tmp_path / "cli"
    rc = main(["data", "synth", "--hours", str(2 * 2.0 / 3600), "--clip-seconds", "2", "--out", str(out),
               "--library-size", "6", "--workers", "1", "--styles", "rock,waltz"])  # fmt: skip
    assert rc in (0, None) and "2 clips" in capsys.readouterr().out
    assert main(["data", "synth", "--out", str(tmp_path / "bad"), "--styles", "polka"]) == 1
    assert "unknown styles" in capsys.readouterr().err
    for extra, match in [  # each refused in one line before anything is rendered or written
        (["--sample-rate", "0"], "--sample-rate"),  # once a traceback from a render worker
        (["--seed", "-1"], "--seed"),  # once a ZeroDivisionError
        (["--test-fraction", "1.5"], "--test-fraction"),  # once rendered with no training split
        (["--hours", "inf"], "--hours"),
        (["--workers", "0"], "--workers"),
        (["--library-size", "-1"], "--library-size"),
    ]:
        assert main(["data", "synth", "--out", str(tmp_path / "bad"), *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "bad").exists()


def test_heldout_factor_prompts_use_words_no_training_caption_has(library):
    from musiclm.data.synth.factors import FACTORS, WORDINGS, factor_prompts, factor_value

    config = SynthConfig(seed=0, clip_seconds=4.0, test_fraction=0.2)
    items = [plan_item(i, config, library, soundfonts=[_soundfont()]) for i in range(20 * len(STYLES))]
    train = " ".join(c.lower() for s, _, _, c in items if s == "train")
    heldout = factor_prompts("heldout")
    for style in STYLES:
        assert heldout["genre"][style].lower() not in train
    for wording in WORDINGS:  # every value a clip can have has a prompt in both wordings
        prompts = factor_prompts(wording)
        assert set(prompts) == set(FACTORS)
        for _, piece, _, _ in items:
            for factor in FACTORS:
                value = factor_value(factor, piece.labels)
                assert value is None or value in prompts[factor], (factor, value)
