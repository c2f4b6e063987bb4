"""Procedural music-like audio synthesised with numpy: chords, a melody, a bass line and drums.

Needs no files, soundfonts or network, is deterministic per index, and renders far faster than real
time, so it serves as training material for the codec and as test data everywhere. The rendered
factors (tempo, key, mode) come back as labels and a plain caption.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from musiclm.data.melody_pairs import MAJOR, MINOR, random_melody, random_timbre, render

NOTE_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


def _drums(rng: np.random.Generator, sample_rate: int, seconds: float, *, bpm: float) -> np.ndarray:
    n = int(seconds * sample_rate)
    out = np.zeros(n, dtype=np.float32)
    beat = 60.0 / bpm
    t = np.arange(int(0.25 * sample_rate)) / sample_rate
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
    noise = rng.standard_normal(t.size)
    snare = noise * np.exp(-t * 25) * 0.6
    hat = np.diff(noise, prepend=0) * np.exp(-t * 90) * 0.25
    step = 0
    while step * beat / 2 < seconds:
        i = int(step * beat / 2 * sample_rate)
        for sound, hit in ((kick, step % 4 == 0), (snare, step % 4 == 2), (hat, True)):
            if hit:
                m = min(sound.size, n - i)
                out[i : i + m] += sound[:m].astype(np.float32)
        step += 1
    return out


def render_piece(seed: int | list[int], sample_rate: int, seconds: float) -> tuple[np.ndarray, dict]:
    """One short piece -> (mono float32 audio in [-1, 1], labels).

    Labels: tempo, key, mode, drums, and the ground truth timelines ``chords`` (start s, duration s,
    root pitch class) and ``melody`` (start s, duration s, MIDI pitch).
    """
    rng = np.random.default_rng(seed)
    bpm = float(rng.uniform(70, 150))
    minor = bool(rng.random() < 0.5)
    scale = MINOR if minor else MAJOR
    tonic = int(rng.integers(0, 12))
    beat = 60.0 / bpm
    mix = np.zeros(int(seconds * sample_rate), dtype=np.float32)
    # chords: one per bar (4 beats) on scale degrees of a common progression
    pad = random_timbre(rng) | {"decay": rng.uniform(0.2, 1.0), "attack": 0.05}
    degrees = rng.choice([[0, 5, 3, 4], [0, 3, 4, 0], [0, 4, 5, 3], [5, 3, 0, 4]])
    notes, chords, t, bar = [], [], 0.0, 0
    while t < seconds:
        root = int(degrees[bar % 4])
        chords.append((t, 4 * beat, (tonic + int(scale[root % 7])) % 12))
        for third in (0, 2, 4):
            d = root + third
            notes.append((t, 4 * beat, 48 + tonic + 12 * (d // 7) + int(scale[d % 7])))
        t, bar = t + 4 * beat, bar + 1
    mix += 0.35 * render(notes, pad, sample_rate, seconds=seconds, rng=rng)
    bass = [(s, dur, p - 12) for s, dur, p in notes[::3]]
    mix += 0.3 * render(bass, random_timbre(rng), sample_rate, seconds=seconds, rng=rng)
    melody = random_melody(rng, seconds, tonic=60 + tonic, scale=scale, beat=beat)
    mix += 0.4 * render(melody, random_timbre(rng), sample_rate, seconds=seconds, rng=rng)
    drums = bool(rng.random() < 0.7)
    if drums:
        mix += 0.3 * _drums(rng, sample_rate, seconds, bpm=bpm)
    mix *= rng.uniform(0.4, 0.9) / (np.abs(mix).max() + 1e-6)
    labels = {
        "tempo": round(bpm),
        "key": NOTE_NAMES[tonic],
        "mode": "minor" if minor else "major",
        "drums": drums,
        "chords": chords,
        "melody": melody,
    }
    return mix.astype(np.float32), labels


WORDS = {
    "major": ["major key", "major-key", "bright major"],
    "minor": ["minor key", "minor-key", "dark minor"],
    "slow": ["slow", "unhurried", "laid-back"],
    "medium": ["mid-tempo", "moderate", "steady"],
    "fast": ["fast", "upbeat", "energetic"],
    "drums": ["with drums", "with a drum beat", "with percussion"],
    "no drums": ["without drums", "with no percussion", "drumless"],
}
# words the templates never use: zero-shot prompts that test generalisation beyond the captions
PARAPHRASES = {
    "major": "cheerful happy music",
    "minor": "melancholic sad music",
    "slow": "leisurely music",
    "medium": "music at a walking pace",
    "fast": "quick lively music",
    "drums": "music with kicks and snares",
    "no drums": "music with no beat",
}
TEMPLATES = [
    "{tempo} {mode} music {drums}",
    "{tempo} music in {key} {mode_short} {drums}",
    "a {mode} tune at {bpm} bpm {drums}",
    "{drums_cap}: a {mode} track, {tempo}",
]


def tempo_bucket(bpm: float) -> str:
    return "slow" if bpm < 95 else "medium" if bpm < 125 else "fast"


def caption_for(labels: dict, seed: int | list[int] = 0) -> str:
    """A natural-language caption of a piece's labels, wording and order varied by ``seed``."""
    rng = np.random.default_rng(seed)
    pick = lambda key: WORDS[key][int(rng.integers(len(WORDS[key])))]  # noqa: E731
    drums = pick("drums" if labels["drums"] else "no drums")
    return TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(
        tempo=pick(tempo_bucket(labels["tempo"])),
        mode=pick(labels["mode"]),
        mode_short=labels["mode"],
        key=labels["key"],
        bpm=labels["tempo"],
        drums=drums,
        drums_cap=drums.capitalize(),
    )


class ProceduralMusic(Dataset):
    """``size`` procedurally rendered clips of ``seconds`` at ``sample_rate`` (``wav``, ``caption``, ``index``)."""

    def __init__(self, size: int, sample_rate: int, seconds: float, *, seed: int = 0):
        self.size, self.sample_rate, self.seconds, self.seed = size, sample_rate, seconds, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        wav, labels = render_piece([self.seed, index], self.sample_rate, self.seconds)
        return {
            "wav": torch.from_numpy(wav),
            "caption": caption_for(labels, [self.seed, index]),
            "index": index,
        }
