"""Melodies and harmony for the synthetic benchmark: real tunes from music21's corpus, or procedural.

A :class:`Tune` holds one or more voices as ``(start, duration, midi_pitch)`` in quarter notes, the
meter it was written in and its key. Corpus tunes come from Bach's four-part chorales (real
harmony: every voice is kept) and the public-domain fiddle tunes of Ryan's Mammoth Collection (one
melody; chords are added by :func:`harmonize`). Parsed tunes are cached as JSON, since parsing is the
slow part (~0.1-0.2 s a file).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from musiclm.errors import DataError
from musiclm.files import write_text_atomic

PITCH_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
# Diatonic triads per mode as (scale degree, quality); the harmonizer prefers the first ones.
TRIADS = {
    "major": [(0, "maj"), (3, "maj"), (4, "maj"), (5, "min"), (1, "min"), (2, "min")],
    "minor": [(0, "min"), (3, "min"), (4, "maj"), (5, "maj"), (2, "maj"), (6, "maj")],
}
QUALITY = {
    "maj": [0, 4, 7],
    "min": [0, 3, 7],
    "dom7": [0, 4, 7, 10],
    "maj7": [0, 4, 7, 11],
    "min7": [0, 3, 7, 10],
}
MELODY_LIBRARY_VERSION = 1


@dataclass
class Tune:
    """Voices (highest first) of ``[start_q, dur_q, pitch]`` notes, quarter-note time."""

    id: str
    source: str
    voices: list[list[list[float]]]
    beats_per_bar: float  # in quarter notes: 4 (4/4, 2/2), 2 (2/4), 3 (3/4), 3 (6/8 compound)
    meter: str  # "4/4", "3/4" or "6/8"
    tonic: int  # pitch class, C = 0
    mode: str

    @property
    def length(self) -> float:
        return max(n[0] + n[1] for v in self.voices for n in v)

    def is_heldout(self, fraction: float) -> bool:
        """Deterministic split by tune id, so a held-out tune never appears in training."""
        return (zlib.crc32(self.id.encode()) % 1000) < fraction * 1000


def _meter_of(ratio: str) -> tuple[str, float] | None:
    return {
        "4/4": ("4/4", 4.0),
        "2/2": ("4/4", 4.0),
        "2/4": ("4/4", 2.0),
        "3/4": ("3/4", 3.0),
        "6/8": ("6/8", 3.0),
    }.get(ratio)


def tune_from_score(score, source: str, max_quarters: float = 96.0, *, keep_voices: int = 4) -> Tune | None:
    """A :class:`Tune` from a parsed music21 score, or None if its meter is not one we arrange."""
    sigs = score.recurse().getElementsByClass("TimeSignature")
    meter = _meter_of(sigs[0].ratioString) if sigs else None
    if meter is None:
        return None
    key = score.analyze("key")
    voices = []
    for part in list(score.parts)[:keep_voices]:
        notes = []
        for n in part.flatten().notes:
            start = float(n.offset)
            if start >= max_quarters:
                break
            pitch = max(p.midi for p in n.pitches)
            notes.append([round(start, 4), round(float(n.quarterLength), 4), int(pitch)])
        if notes:
            voices.append(notes)
    if not voices or len(voices[0]) < 8:
        return None
    mode = key.mode if key.mode in SCALES else "major"
    return Tune(source.replace(" ", "_"), source, voices, meter[1], meter[0], key.tonic.pitchClass, mode)


def corpus_paths(seed: int, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` ``(collection, path)`` pairs, half chorales and half fiddle tunes, shuffled."""
    try:
        from music21 import corpus
    except ImportError:
        raise DataError("the synthetic benchmark needs music21: pip install 'musiclm[synth]'") from None
    rng = np.random.default_rng(seed)
    chorales = sorted(str(p) for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml"))
    fiddle = sorted(str(p) for p in corpus.getComposer("ryansMammoth"))
    rng.shuffle(chorales)
    rng.shuffle(fiddle)
    half = limit // 2
    return [("chorale", p) for p in chorales[:half]] + [("fiddle", p) for p in fiddle[: limit - half]]


def _parse_one(item: tuple[str, str]) -> dict | None:
    from music21 import corpus

    collection, path = item
    try:
        score = corpus.parse(path)
    except Exception:  # a few corpus files do not parse; they are simply not used
        return None
    name = f"{'bach' if collection == 'chorale' else 'ryansMammoth'}/{Path(path).stem}"
    tune = tune_from_score(score, name, keep_voices=4 if collection == "chorale" else 1)
    return None if tune is None else {"collection": collection, **asdict(tune)}


def load_library(cache: Path, seed: int = 0, size: int = 200, *, workers: int = 1) -> dict[str, list[Tune]]:
    """Tunes by collection (``chorale``, ``fiddle``), parsed once and cached in ``cache`` (JSON)."""
    cache = Path(cache)
    if cache.is_file():
        data = json.loads(cache.read_text())
        if (
            data.get("version") == MELODY_LIBRARY_VERSION
            and data.get("size") == size
            and data.get("seed") == seed
        ):
            return _group(data["tunes"])
    items = corpus_paths(seed, size)
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parsed = list(pool.map(_parse_one, items, chunksize=8))
    else:
        parsed = [_parse_one(i) for i in items]
    tunes = [t for t in parsed if t is not None]
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        cache, json.dumps({"version": MELODY_LIBRARY_VERSION, "seed": seed, "size": size, "tunes": tunes})
    )
    return _group(tunes)


def _group(tunes: list[dict]) -> dict[str, list[Tune]]:
    groups: dict[str, list[Tune]] = {}
    for t in tunes:
        collection = t.pop("collection")
        groups.setdefault(collection, []).append(Tune(**t))
    return groups


def transpose_to(tune: Tune, tonic: int) -> Tune:
    """The tune moved to a new tonic by the smallest interval (up to a tritone either way)."""
    shift = (tonic - tune.tonic) % 12
    shift = shift - 12 if shift > 6 else shift
    voices = [[[s, d, p + shift] for s, d, p in v] for v in tune.voices]
    return Tune(tune.id, tune.source, voices, tune.beats_per_bar, tune.meter, tonic, tune.mode)


def chord_pitches(root_pc: int, quality: str, base: int = 48) -> list[int]:
    """Close-position chord with its root at or just above ``base``."""
    root = base + (root_pc - base) % 12
    return [root + i for i in QUALITY[quality]]


def harmonize(
    melody: list[list[float]], tonic: int, mode: str, *, bar: float, bars: int
) -> list[tuple[int, str]]:
    """One diatonic triad per bar, ``(root_pc, quality)``, that best covers the bar's melody notes
    (duration-weighted; ties go to the tonic, subdominant and dominant)."""
    scale = SCALES[mode]
    chords = []
    for b in range(bars):
        weight = np.zeros(12)
        for s, d, p in melody:
            overlap = min(s + d, (b + 1) * bar) - max(s, b * bar)
            if overlap > 0:
                weight[int(p) % 12] += overlap * (1.5 if abs(s - b * bar) < 1e-6 else 1.0)
        best, best_score = TRIADS[mode][0], -1.0
        for rank, (degree, quality) in enumerate(TRIADS[mode]):
            root = (tonic + scale[degree]) % 12
            score = sum(weight[(root + i) % 12] for i in QUALITY[quality]) - 0.05 * rank
            if score > best_score:
                best, best_score = (degree, quality), score
        chords.append(((tonic + scale[best[0]]) % 12, best[1]))
    return chords


def progression_chords(
    progression: list[str], tonic: int, mode: str, *, sevenths: bool = False
) -> list[tuple[int, str]]:
    """Roman-numeral progression (``I``, ``vi``, ``bVII``, ...) to ``(root_pc, quality)`` chords."""
    numerals = {"I": 0, "II": 2, "III": 4, "IV": 5, "V": 7, "VI": 9, "VII": 11}
    out = []
    for sym in progression:
        flat, seventh = sym.startswith("b"), sym.endswith("7")  # "IV7": a dominant (iv7: minor) seventh
        core = sym.lstrip("b").rstrip("7")
        root = (tonic + numerals[core.upper()] - (1 if flat else 0)) % 12
        quality = "maj" if core.isupper() else "min"
        if seventh:
            quality = "dom7" if core.isupper() else "min7"
        elif sevenths:
            quality = {"maj": "maj7", "min": "min7"}[quality] if core.upper() != "V" else "dom7"
        out.append((root, quality))
    return out


def procedural_melody(
    rng: np.random.Generator,
    chords: list[tuple[int, str]],
    tonic: int,
    *,
    mode: str,
    bar: float,
    density: float,
) -> list[list[float]]:
    """A stepwise melody over ``chords`` (one a bar): chord tones on strong beats, scale steps between,
    a repeated rhythmic motif so it sounds like a tune rather than noise."""
    scale_pcs = [(tonic + i) % 12 for i in SCALES[mode]]
    steps = int(bar * 2)  # eighth notes
    motif = rng.random(steps) < density
    motif[0] = True
    notes: list[list[float]] = []
    pitch = 60 + (tonic - 60) % 12 + int(rng.choice([0, 2, 4]))
    for b, (root, quality) in enumerate(chords):
        tones = {(root + i) % 12 for i in QUALITY[quality]}
        onsets = [i for i in range(steps) if motif[i] or (b % 2 and rng.random() < 0.15)]
        for j, i in enumerate(onsets):
            end = onsets[j + 1] if j + 1 < len(onsets) else steps
            strong = i % 2 == 0 and (i // 2) % 2 == 0
            candidates = [
                p for p in range(pitch - 5, pitch + 6) if p % 12 in (tones if strong else scale_pcs)
            ]
            weights = np.array([1.0 / (1 + abs(p - pitch)) for p in candidates])
            pitch = int(rng.choice(candidates, p=weights / weights.sum()))
            pitch = int(np.clip(pitch, 55, 79))
            notes.append([b * bar + i / 2, (end - i) / 2 * 0.95, pitch])
    return notes


def note_name(pitch_class: int) -> str:
    return PITCH_NAMES[pitch_class % 12]
