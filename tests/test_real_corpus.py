"""The real-music corpus builder on a fake unpacked package (no download)."""

import json
import zipfile

import numpy as np
import pytest
import soundfile as sf

from musiclm.data import real
from musiclm.data.manifest import read_manifest
from musiclm.errors import DataError

SR = 16000


def _tone(path, seconds, freq, sr=SR, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package 'fake-music' already unpacked in the cache: loose tracks, a duplicate, a zip, stems."""
    cache = tmp_path / "cache"
    root = cache / "fake-music"
    music = root / "usr/share/music"
    music.mkdir(parents=True)
    for i in range(12):
        _tone(music / f"track{i:02d}.wav", 2.5, 200 + 40 * i, sr=22050)
    (music / "dup.wav").write_bytes((music / "track00.wav").read_bytes())  # same bytes: counted once
    _tone(music / "quiet.wav", 2.0, 300, amp=1e-4)  # below -50 dBFS: no clips
    song = root / "usr/share/songs/rock"
    song.mkdir(parents=True)
    _tone(song / "song.wav", 2.0, 220)
    _tone(song / "guitar.wav", 2.0, 330)
    _tone(tmp_path / "inzip.wav", 2.0, 440)
    with zipfile.ZipFile(root / "usr/share/pack.zip", "w") as z:
        z.write(tmp_path / "inzip.wav", "music/inzip.wav")
    (root / ".unpacked").write_text("fake\n")
    package = real.MusicPackage(
        "fake-music",
        "CC0",
        "test tones",
        ("usr/share/music/*.wav", "usr/share/pack.zip!music/*.wav", "usr/share/songs/*/song.wav"),
        stems=("guitar.wav",),
    )
    monkeypatch.setitem(real.PACKAGES, "fake-music", package)
    return cache


def _build(out, cache, **kw):
    config = real.RealCorpusConfig(
        packages=("fake-music",), clip_seconds=1.0, valid_fraction=0.25, test_fraction=0.25, **kw
    )
    return real.build_real_corpus(out, config, cache_dir=cache, workers=1, progress=False)


def test_corpus_clips_split_by_track_with_provenance(tmp_path, fake_package):
    out = tmp_path / "corpus"
    summary = _build(out, fake_package)
    entries = {s: read_manifest(out / f"{s}.jsonl") for s in real.SPLITS}
    tracks = {s: {e.labels["track"] for e in es} for s, es in entries.items()}
    # 12 loose tracks (the duplicate dropped, the quiet one empty) + the zip member + the stem song
    assert sum(len(t) for t in tracks.values()) == 14
    assert not (tracks["train"] & tracks["valid"]) and not (tracks["train"] & tracks["test"])
    assert not (tracks["valid"] & tracks["test"])
    assert all(tracks.values()), tracks  # 14 tracks at 25/25/50 %: each split gets some
    every = [e for es in entries.values() for e in es]
    sources = {e.labels["source"] for e in every}
    assert ("usr/share/music/dup.wav" in sources) != ("usr/share/music/track00.wav" in sources)
    assert "usr/share/music/quiet.wav" not in sources
    assert any(e.labels["source"] == "usr/share/pack.zip!music/inzip.wav" for e in every)
    for e in every:
        wav, sr = sf.read(e.path)
        assert sr == SR and len(wav) == SR  # resampled from 22.05 kHz, cut to 1 s clips
        assert e.labels["licence"] == "CC0" and e.labels["package"] == "fake-music"
    # stems are summed: the rock song holds both its 220 Hz and its guitar's 330 Hz
    rock = next(e for e in every if "songs/rock" in e.labels["source"])
    spectrum = np.abs(np.fft.rfft(sf.read(rock.path)[0]))
    assert spectrum[220] > 0.2 * spectrum.max() and spectrum[330] > 0.2 * spectrum.max()
    assert sum(summary["clips"].values()) == len(every) == 13 * 2 + 2
    assert (out / "corpus.json").is_file()


def test_corpus_split_is_deterministic_and_rerun_resumes(tmp_path, fake_package):
    out = tmp_path / "corpus"
    _build(out, fake_package)
    first = {s: (out / f"{s}.jsonl").read_text() for s in real.SPLITS}
    clip = next((out / "audio" / "fake-music").iterdir())
    mtime = clip.stat().st_mtime_ns
    _build(out, fake_package)
    assert {s: (out / f"{s}.jsonl").read_text() for s in real.SPLITS} == first
    assert clip.stat().st_mtime_ns == mtime  # finished tracks are not cut again
    with pytest.raises(DataError, match="other settings"):
        _build(out, fake_package, sample_rate=8000)


def test_corpus_rejects_unknown_package(tmp_path):
    with pytest.raises(DataError, match="unknown package"):
        real.build_real_corpus(tmp_path, real.RealCorpusConfig(packages=("no-such-pkg",)), progress=False)
    assert json.loads(json.dumps(real.RealCorpusConfig().__dict__, default=list))


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"sample_rate": 0}, "--sample-rate"),
        ({"clip_seconds": 0.0}, "--clip-seconds"),
        ({"valid_fraction": -0.5, "test_fraction": 0.6}, "fractions"),
    ],
)
def test_corpus_settings_are_checked_before_any_download(tmp_path, settings, match):
    config = real.RealCorpusConfig(packages=(next(iter(real.PACKAGES)),), **settings)
    with pytest.raises(DataError, match=match):
        real.build_real_corpus(tmp_path / "out", config, progress=False)
    with pytest.raises(DataError, match="--workers"):
        real.build_real_corpus(tmp_path / "out", real.RealCorpusConfig(), workers=0, progress=False)
    assert not (tmp_path / "out").exists()
