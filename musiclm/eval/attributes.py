"""Musical attributes of generated audio: tempo and key estimators, and accuracy against prompts.

The paper evaluates text adherence with learned metrics only; checking that a prompt's "120 bpm" or
"in D minor" comes out in the audio needs signal-level estimators. Both are librosa's, so figures
compare with published ones: tempo is ``librosa.feature.tempo`` on the spectral-flux onset strength
(5 ms frames for sub-bpm lags), key the Krumhansl-Schmuckler profile that correlates best with the
clip's mean constant-Q chroma.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from musiclm.errors import AudioError

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
_FLAT_TO_SHARP = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E"}

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
ONSET_RATE = 200.0  # onset-strength frames per second: 5 ms lags keep 180 bpm within ~1.5 %


def _mono(wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    x = torch.as_tensor(wav).float()
    if x.dim() == 2:
        x = x.mean(0)
    if x.dim() != 1 or x.numel() == 0:
        raise AudioError(f"expected non-empty [T] or [channels, T] audio, got shape {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise AudioError("audio contains NaN or inf")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return x


def estimate_tempo(
    wav: torch.Tensor | np.ndarray, sample_rate: int, min_bpm: float = 50.0, *, max_bpm: float = 220.0
) -> float:
    """Global tempo in BPM of ``[T]`` (or ``[channels, T]``) audio, between ``min_bpm`` and ``max_bpm``."""
    import librosa

    if not 0 < min_bpm < max_bpm:
        raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm} and {max_bpm}")
    x = _mono(wav, sample_rate).double().numpy()
    seconds = x.size / sample_rate
    if seconds < 2 * 60.0 / min_bpm:
        raise AudioError(
            f"{seconds:.1f} s of audio is too short to estimate tempo down to {min_bpm:g} bpm "
            f"(need {2 * 60 / min_bpm:.1f} s)"
        )
    hop = max(1, round(sample_rate / ONSET_RATE))
    env = librosa.onset.onset_strength(y=x, sr=sample_rate, hop_length=hop)
    if env.max() <= 0:
        raise AudioError("no onsets in the audio: cannot estimate tempo")
    bpm = librosa.feature.tempo(onset_envelope=env, sr=sample_rate, hop_length=hop, max_tempo=max_bpm)
    return float(np.clip(bpm[0], min_bpm, max_bpm))


def estimate_key(wav: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[str, str, float]:
    """(tonic name, "major" | "minor", correlation) of the best of the 24 Krumhansl-Schmuckler keys.

    The mean constant-Q chroma of the clip is correlated (Pearson) with each key profile rotated to
    each tonic.
    """
    import librosa

    x = _mono(wav, sample_rate)
    if x.abs().max() <= 0:
        raise AudioError("silent audio: cannot estimate key")
    profile = librosa.feature.chroma_cqt(y=x.double().numpy(), sr=sample_rate).mean(-1)
    if np.ptp(profile) <= 0:
        raise AudioError("no pitched content: cannot estimate key")
    best = ("C", "major", -np.inf)
    for mode, template in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
            if r > best[2]:
                best = (NOTE_NAMES[tonic], mode, r)
    return best


def normalize_key_name(name: str) -> str:
    """Sharp spelling of a tonic ("Eb" -> "D#") so estimates compare with labels written either way."""
    name = name.strip()
    name = name[:1].upper() + name[1:]
    name = _FLAT_TO_SHARP.get(name, name)
    if name not in NOTE_NAMES:
        raise ValueError(f"unknown note name {name!r}")
    return name


def attribute_accuracy(pred: Sequence[object], truth: Sequence[object]) -> float:
    """Fraction of clips whose predicted attribute equals the prompt's (exact match)."""
    if len(pred) != len(truth):
        raise ValueError(f"got {len(pred)} predictions for {len(truth)} targets")
    if not truth:
        raise ValueError("no targets to score")
    return float(np.mean([p == t for p, t in zip(pred, truth)]))


DYNAMICS = ("soft", "medium", "loud")  # the benchmark's dynamics labels, quietest first


def order_accuracy(values: Sequence[float], labels: Sequence[str], order: Sequence[str] = DYNAMICS) -> float:
    """Share of pairs of clips with different ``labels`` whose ``values`` come in the labels' ``order``
    (ties count half): 0.5 is chance, 1 every pair in order. Dynamics are read this way, not as a
    class per clip, so no loudness threshold has to be fixed (a soft piece is softer, not -30 LUFS)."""
    if len(values) != len(labels):
        raise ValueError(f"got {len(values)} values for {len(labels)} labels")
    unknown = sorted({str(label) for label in labels} - set(order))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the order {list(order)}")
    v, names = np.asarray(values, np.float64), np.asarray([str(label) for label in labels])
    groups = [v[names == name] for name in order]
    in_order = pairs = 0.0
    for i, lower in enumerate(groups):  # group by group: memory grows with the groups, not all pairs
        for higher in groups[i + 1 :]:
            sign = np.sign(higher[:, None] - lower[None, :])  # +1 in order, -1 reversed, 0 tied
            in_order += float(((sign + 1) / 2).sum())
            pairs += sign.size
    if not pairs:
        raise ValueError("every clip has the same label: no pair to order")
    return in_order / pairs


def tempo_accuracy(
    pred_bpm: Sequence[float] | np.ndarray,
    true_bpm: Sequence[float] | np.ndarray,
    tolerance: float = 0.04,
    *,
    octave: bool = False,
) -> float:
    """Fraction of tempi within ``tolerance`` (relative) of the truth: MIREX "Accuracy 1".

    ``octave=True`` also accepts double and half tempo, since a piece felt at 70 or 140 bpm is
    often a matter of taste (MIREX "Accuracy 2" further accepts triple and third).
    """
    pred, true = np.asarray(pred_bpm, np.float64), np.asarray(true_bpm, np.float64)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"expected two lists of the same length, got shapes {pred.shape} and {true.shape}")
    if pred.size == 0:
        raise ValueError("no tempi to score")
    if (true <= 0).any() or not np.isfinite(pred).all():
        raise ValueError("tempi must be finite and the true tempi positive")
    factors = np.array([1.0, 2.0, 0.5]) if octave else np.array([1.0])
    ok = (
        np.abs(pred[:, None] - true[:, None] * factors[None]) <= tolerance * true[:, None] * factors[None]
    ).any(1)
    return float(ok.mean())
