"""Beat phase: where each frame falls within its beat, the tempo signal the stage LMs can read.

MuLaN tokens carry a tempo *bucket* at best ("slow", "fast"): the nearest training captions of a
prompt's level-1 code name a BPM within 4 % for fewer than a third of held-out prompts
(``benchmarks/tempo_in_conditioning.py``). An LM trained with ``beat_phase`` also adds, at every
position, an embedding of the beat phase of the frame it predicts, as Music ControlNet conditions
on beat activations (Wu et al. 2023; a departure from MusicLM). In training the phases come from
the beats of the clip itself: a grid at the manifest's ``bpm`` label, or librosa's beat tracker; at
generation from the tempo a prompt names ("80 bpm") or ``--bpm``, on a grid from the first frame.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from musiclm.errors import AudioError

BEAT_PHASES = 8  # phase bins per beat: id k covers phases [k/8, (k+1)/8); -1 = no beat known
MIN_BPM, MAX_BPM = 30.0, 300.0
_BPM = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-\s*)?(?:bpm\b|beats?\s+(?:per|a|each)\s+minute)", re.IGNORECASE)


def check_bpm(bpm: float, where: str = "bpm") -> float:
    """``bpm`` as a float, or a one-line error if it is not a usable tempo."""
    try:
        bpm = float(bpm)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {bpm!r} is not a tempo in bpm") from None
    if not MIN_BPM <= bpm <= MAX_BPM:
        raise ValueError(f"{where}: a tempo of {bpm:g} bpm is outside {MIN_BPM:g}-{MAX_BPM:g}")
    return bpm


def tempo_from_prompt(prompt: str) -> float | None:
    """The tempo a prompt names ("at 80 bpm", "92 beats per minute"), or None; the first if several."""
    match = _BPM.search(prompt)
    if match is None:
        return None
    bpm = float(match.group(1))
    return bpm if MIN_BPM <= bpm <= MAX_BPM else None


def beat_phase_grid(
    bpm: float, frames: int, *, frame_rate: float = 25.0, first_beat: float = 0.0
) -> torch.Tensor:
    """``[frames]`` beat-phase ids of a steady tempo whose beats fall at ``first_beat + k * 60 / bpm``
    seconds, frame ``f`` sampled at ``f / frame_rate`` seconds."""
    t = torch.arange(frames, dtype=torch.float64) / frame_rate
    phase = torch.remainder((t - first_beat) * check_bpm(bpm) / 60.0, 1.0)
    return (phase * BEAT_PHASES).long().clamp(max=BEAT_PHASES - 1)


def beat_phase_from_beats(beats: np.ndarray, frames: int, *, frame_rate: float = 25.0) -> torch.Tensor:
    """``[frames]`` beat-phase ids from beat times in seconds: linear between consecutive beats, and
    before the first and after the last beat continued at the median beat period; all -1 with
    fewer than two beats."""
    beats = np.sort(np.asarray(beats, dtype=np.float64))
    if beats.size < 2:
        return torch.full((frames,), -1, dtype=torch.long)
    period = float(np.median(np.diff(beats)))
    t = np.arange(frames) / frame_rate
    # beat "index" of every frame time, extrapolated past both ends with the median period
    index = np.interp(t, beats, np.arange(beats.size, dtype=np.float64))
    index = np.where(t < beats[0], (t - beats[0]) / period, index)
    index = np.where(t > beats[-1], beats.size - 1 + (t - beats[-1]) / period, index)
    phase = np.mod(index, 1.0)
    return torch.from_numpy(np.minimum((phase * BEAT_PHASES).astype(np.int64), BEAT_PHASES - 1))


def track_beats(wav: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Beat times in seconds of ``[T]`` audio by librosa's beat tracker (Ellis 2007); none in silence."""
    import librosa

    x = torch.as_tensor(wav).detach().cpu().double()
    if x.dim() != 1 or x.numel() == 0:
        raise AudioError(f"expected non-empty [T] audio, got shape {list(x.shape)}")
    if x.abs().max() <= 0:
        return np.zeros(0)
    _, beats = librosa.beat.beat_track(y=x.numpy(), sr=sample_rate, hop_length=512, units="time")
    return np.asarray(beats, dtype=np.float64)


def track_beat_phases(wav: torch.Tensor, sample_rate: int, *, frame_rate: float = 25.0) -> torch.Tensor:
    """``[T]`` audio -> ``[F]`` beat-phase ids from librosa's beat tracker (Ellis 2007), F = T *
    frame_rate / sample_rate rounded; all -1 where it finds fewer than two beats."""
    frames = max(1, round(torch.as_tensor(wav).numel() * frame_rate / sample_rate))
    return beat_phase_from_beats(track_beats(wav, sample_rate), frames, frame_rate=frame_rate)


def continued_beat_phases(
    beats: np.ndarray, frames: int, *, bpm: float | None = None, frame_rate: float = 25.0
) -> torch.Tensor:
    """``[frames]`` beat-phase ids of a piece that continues audio whose beats fell at ``beats``
    (seconds): at ``bpm`` from its last beat on when given (before it: the tracked beats), else the
    tracked beats extended at their median period; all -1 where neither gives a tempo."""
    beats = np.sort(np.asarray(beats, dtype=np.float64))
    if bpm is None:
        return beat_phase_from_beats(beats, frames, frame_rate=frame_rate)
    last = float(beats[-1]) if beats.size else 0.0
    grid = beat_phase_grid(bpm, frames, frame_rate=frame_rate, first_beat=last)
    if beats.size >= 2:  # the given audio keeps its own beats
        given = min(frames, int(np.floor(last * frame_rate)) + 1)
        grid[:given] = beat_phase_from_beats(beats, frames, frame_rate=frame_rate)[:given]
    return grid
