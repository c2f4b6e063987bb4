"""Arrange a style + tune into a multi-track piece with known labels (tempo, key, instruments, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from musiclm.data.synth.melodies import (
    QUALITY,
    Tune,
    chord_pitches,
    harmonize,
    note_name,
    procedural_melody,
    progression_chords,
    transpose_to,
)
from musiclm.data.synth.styles import DRUMS, INSTRUMENTS, STYLES, Style

DYNAMICS = {"soft": (40, 62), "medium": (68, 92), "loud": (100, 124)}
REGISTERS = {"low": 52, "middle": 65, "high": 77}  # target mean melody pitch


@dataclass
class Track:
    name: str
    program: int  # GM program; ignored for drums
    is_drum: bool
    role: str
    notes: list[tuple[float, float, int, int]] = field(
        default_factory=list
    )  # start_s, end_s, pitch, velocity


@dataclass
class Piece:
    tracks: list[Track]
    seconds: float
    labels: dict


class _Clock:
    """Quarter-note time -> seconds, with swung off-beat eighths."""

    def __init__(self, bpm: float, swing: float):
        self.spb, self.swing = 60.0 / bpm, swing

    def __call__(self, q: float) -> float:
        frac = q % 1.0
        if abs(frac - 0.5) < 1e-6:
            q += self.swing * 0.5
        return q * self.spb


def _velocity(rng: np.random.Generator, dynamics: str, accent: float = 1.0) -> int:
    lo, hi = DYNAMICS[dynamics]
    return int(np.clip(rng.integers(lo, hi + 1) * accent, 1, 127))


def _loop(notes: list[list[float]], length: float, until: float) -> list[list[float]]:
    """Repeat a phrase of ``length`` quarters until ``until``."""
    out, k = [], 0
    while k * length < until and notes:
        out += [[s + k * length, d, p] for s, d, p in notes if s + k * length < until]
        k += 1
    return out


def _fit_register(notes: list[list[float]], target: int) -> list[list[float]]:
    if not notes:
        return notes
    mean = float(np.mean([p for _, _, p in notes]))
    shift = 12 * round((target - mean) / 12)
    return [[s, d, p + shift] for s, d, p in notes]


def _pattern_hits(pattern: str, bar: float, bars: int) -> list[tuple[float, str]]:
    step = bar / len(pattern)
    return [(b * bar + i * step, c) for b in range(bars) for i, c in enumerate(pattern) if c != "."]


def compose(
    style_name: str,
    rng: np.random.Generator,
    tunes: dict[str, list[Tune]],
    *,
    seconds: float,
) -> Piece:
    """One piece of ``style_name`` lasting ``seconds``; every factor is drawn from ``rng`` and stored
    in ``labels`` (genre, bpm, key, mode, meter, instruments, dynamics, register, melody notes)."""
    style: Style = STYLES[style_name]
    bpm = int(rng.integers(style.bpm[0], style.bpm[1] + 1))
    bar = {"4/4": 4.0, "3/4": 3.0, "6/8": 3.0}[style.meter]
    total_q = seconds * bpm / 60.0
    bars = int(np.ceil(total_q / bar)) + 1
    dynamics = str(rng.choice(list(DYNAMICS)))
    register = str(rng.choice(list(REGISTERS)))
    tonic = int(rng.integers(12))

    # Melody (and, for chorales, all voices) from the corpus, or procedural over a progression.
    pool = [
        t
        for t in tunes.get("chorale" if style.melody == "chorale" else "fiddle", [])
        if t.meter == style.meter
    ]
    use_tune = style.melody in ("chorale", "fiddle") or (
        style.melody == "any" and pool and rng.random() < 0.5
    )
    voices: list[list[list[float]]]
    if use_tune and pool:
        tune = transpose_to(pool[int(rng.integers(len(pool)))], tonic)
        mode, source = tune.mode, f"music21:{tune.source}"
        lead_in = np.floor(min(n[0] for n in tune.voices[0]) / bar) * bar  # skip empty opening bars
        shifted = [[[s - lead_in, d, p] for s, d, p in v if s >= lead_in] for v in tune.voices]
        length = np.ceil((tune.length - lead_in) / bar) * bar
        voices = [_loop(v, length, bars * bar) for v in shifted]
        chords = harmonize(voices[0], tonic, mode, bar=bar, bars=bars)
    else:
        progressions = style.progressions or [["I", "IV", "V", "I"], ["i", "iv", "V", "i"]]
        progression = progressions[int(rng.integers(len(progressions)))]
        mode = "minor" if any(c.rstrip("7") == "i" for c in progression) else "major"
        chords = progression_chords(progression, tonic, mode, sevenths=style.sevenths)
        chords = [chords[b % len(chords)] for b in range(bars)]
        density = 0.35 if style.name in ("ballad", "hip hop", "lo-fi", "reggae") else 0.6
        voices = [procedural_melody(rng, chords, tonic, mode=mode, bar=bar, density=density)]
        if style.comp == "voices":  # no corpus chorale at hand: lower voices sing the chord tones
            for k in range(3):
                voices.append([[b * bar + h, bar / 2, chord_pitches(r, q, 43 + 6 * k)[k % 3]]
                               for b, (r, q) in enumerate(chords) for h in (0.0, bar / 2)])  # fmt: skip
        source = "procedural"
    if style.sevenths and use_tune:
        seventh = {"maj": "maj7", "min": "min7"}
        chords = [(r, seventh.get(q, q)) for r, q in chords]

    clock = _Clock(bpm, style.swing)
    tracks: list[Track] = []

    def add_track(
        role: str, program: int, notes: list[tuple[float, float, int]], *, accent: float = 1.0
    ) -> None:
        name = INSTRUMENTS[program][0]
        events = []
        for s, d, p in notes:
            if s >= total_q:
                continue
            start, end = clock(s), min(clock(s + d), seconds)
            if end > start and 0 <= p < 128:
                events.append((start, end, int(p), _velocity(rng, dynamics, accent)))
        if events:
            tracks.append(Track(name, program, False, role, events))

    pick = lambda role: int(rng.choice(style.programs[role]))  # noqa: E731
    plays = lambda role: rng.random() < style.optional.get(role, 1.0)  # noqa: E731

    if style.comp == "voices":
        ensemble = pick("voices")
        for i, v in enumerate(voices):
            add_track("voices", ensemble, v, accent=1.0 if i == 0 else 0.85)
        melody = voices[0]
    else:
        melody = _fit_register(voices[0], REGISTERS[register])
        add_track("melody", pick("melody"), melody)
        if "chords" in style.programs and plays("chords"):
            add_track("chords", pick("chords"), _comp(style, chords, bar, bars=bars, rng=rng), accent=0.8)
        if style.bass != "none" and "bass" in style.programs and plays("bass"):
            add_track(
                "bass", pick("bass"), _bass(style, chords, bar, bars=bars, tonic=tonic, mode=mode), accent=0.9
            )
        if "pad" in style.optional and plays("pad"):
            pad = [(b * bar, bar, p) for b, (r, q) in enumerate(chords) for p in chord_pitches(r, q, 55)]
            add_track("pad", 48, pad, accent=0.6)

    has_drums = bool(style.drums) and rng.random() < style.drums_probability
    if has_drums:
        events = []
        for key, pattern in style.drums.items():
            for q, c in _pattern_hits(pattern, bar, bars):
                if q < total_q:
                    accent = {"X": 1.15, "x": 1.0, "o": 0.55}[c]
                    t = clock(q)
                    events.append((t, min(t + 0.1, seconds), key, _velocity(rng, dynamics, accent)))
        tracks.append(Track(DRUMS[0], 0, True, "drums", sorted(events)))

    melody_notes = [
        [round(clock(s), 4), round(min(clock(s + d), seconds), 4), int(p)]
        for s, d, p in melody
        if s < total_q
    ]
    labels = {
        "genre": style.name,
        "bpm": bpm,
        "meter": style.meter,
        "key": note_name(tonic),
        "mode": mode,
        "instruments": list(dict.fromkeys(t.name for t in tracks)),
        "programs": [-1 if t.is_drum else t.program for t in tracks],
        "families": sorted({DRUMS[1] if t.is_drum else INSTRUMENTS[t.program][1] for t in tracks}),
        "num_instruments": len(tracks),
        "drums": has_drums,
        "dynamics": dynamics,
        "register": register if style.comp != "voices" else "middle",
        "mood": str(rng.choice(style.moods)),
        "chords": [
            f"{note_name(r)}{'' if q == 'maj' else q}" for r, q in chords[: int(np.ceil(total_q / bar))]
        ],
        "melody_source": source,
        "melody": melody_notes,
    }
    if not any(t.role in ("melody", "voices") for t in tracks):
        raise ValueError(f"{style.name} piece from {source} has no audible melody")
    return Piece(tracks, seconds, labels)


def _comp(
    style: Style, chords, bar: float, *, bars: int, rng: np.random.Generator
) -> list[tuple[float, float, int]]:
    notes = []
    for b, (root, quality) in enumerate(chords[:bars]):
        pitches = chord_pitches(root, quality, 52)
        t0 = b * bar
        if style.comp == "block":
            notes += [(t0, bar * 0.98, p) for p in pitches]
        elif style.comp in ("stabs", "strum", "power"):
            if style.comp == "power":
                pitches = [pitches[0] - 12, pitches[0] - 5, pitches[0]]
            step = bar / len(style.comp_rhythm)
            hits = [i for i, c in enumerate(style.comp_rhythm) if c != "."]
            for j, i in enumerate(hits):
                length = ((hits[j + 1] if j + 1 < len(hits) else len(style.comp_rhythm)) - i) * step
                notes += [(t0 + i * step + k * 0.01, length * 0.9, p) for k, p in enumerate(pitches)]
        elif style.comp == "arp":
            cycle = pitches + [pitches[0] + 12, pitches[1] + 12]
            for i in range(int(bar * 2)):
                notes.append((t0 + i / 2, 0.9, cycle[i % len(cycle)]))
        elif style.comp == "oompah":
            notes += [(t0 + beat, 0.8, p) for beat in (1.0, 2.0) for p in pitches]
    return notes


def _bass(
    style: Style, chords, bar: float, *, bars: int, tonic: int, mode: str
) -> list[tuple[float, float, int]]:
    notes = []
    for b, (root, quality) in enumerate(chords[:bars]):
        low = 36 + (root - 36) % 12
        fifth = low + 7
        t0 = b * bar
        if style.bass == "walking":
            next_root = chords[(b + 1) % len(chords)][0]
            target = 36 + (next_root - 36) % 12
            third = low + QUALITY[quality][1]
            approach = target - 1 if target > low else target + 1
            for beat, p in enumerate([low, third, fifth, approach][: int(bar)]):
                notes.append((t0 + beat, 0.95, p))
        elif style.bass == "oompah":
            notes.append((t0, 0.9, low))
        else:
            step = bar / len(style.bass_rhythm)
            hits = [i for i, c in enumerate(style.bass_rhythm) if c != "."]
            for j, i in enumerate(hits):
                p = fifth if style.bass == "root5" and j % 2 == 1 else low
                length = ((hits[j + 1] if j + 1 < len(hits) else len(style.bass_rhythm)) - i) * step
                notes.append((t0 + i * step, length * 0.9, p))
    return notes
