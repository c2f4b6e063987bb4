"""Musical attributes of generated audio: tempo and key estimators, and accuracy against prompts.

The paper evaluates text adherence with learned metrics only; checking that a prompt's "120 bpm" or
"in D minor" comes out in the audio needs signal-level estimators. These are small, dependency-free
versions of the classic methods: spectral-flux onset envelope + autocorrelation comb for tempo, and
Krumhansl-Schmuckler key profiles over a chromagram for key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from musiclm.audio import chromagram, log_mel_spectrogram
from musiclm.errors import AudioError

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
_FLAT_TO_SHARP = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E"}

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

ENVELOPE_RATE = 200.0  # onset envelope frames per second: 5 ms lag steps keep 180 bpm within ~1 bpm
_COMPRESSION = 1.0  # log1p(c * magnitude / peak): small c keeps kicks and snares above hi-hats
_MULTIPLES = 4  # beat-period multiples summed by the comb; more multiples -> finer period estimate
_GRID_BPM = 0.05  # candidate tempo step
_STRONG = 0.8  # candidates scoring this fraction of the best are metrical levels of the same pulse
_PRIOR_OCTAVES = 1.5  # width of the log-normal tempo preference around 120 bpm
_SUBDIVISION = 0.45  # off-pulse onsets this strong (relative) mean the pulse is really faster


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


def onset_envelope(wav: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Spectral-flux onset strength at about :data:`ENVELOPE_RATE` frames/s -> (envelope, frame rate).

    Positive flux of a lightly compressed mel magnitude summed over bands, minus a 1 s moving
    average. Loud, broadband hits (kick, snare) outweigh soft ones (hi-hat), as they do for a
    listener, which is what tells the beat from its subdivision; slow loudness changes do not count.
    """
    x = _mono(wav, sample_rate)
    hop = max(1, round(sample_rate / ENVELOPE_RATE))
    n_fft = 1 << int(np.ceil(np.log2(0.04 * sample_rate)))
    mel = log_mel_spectrogram(x, sample_rate, n_fft, hop, n_mels=40, eps=1e-10).double().numpy()
    mel = np.log1p(_COMPRESSION * np.exp(mel - mel.max()))
    flux = np.maximum(np.diff(mel, axis=-1), 0.0).sum(0)
    rate = sample_rate / hop
    width = max(1, int(rate))
    trend = np.convolve(flux, np.ones(width) / width, mode="same")
    return np.maximum(flux - trend, 0.0), rate


def estimate_tempo(
    wav: torch.Tensor | np.ndarray, sample_rate: int, min_bpm: float = 50.0, max_bpm: float = 220.0
) -> float:
    """Global tempo in BPM of ``[T]`` audio.

    An autocorrelation comb scores every candidate tempo (0.05 bpm grid) by the mean normalised
    autocorrelation at the first multiples of its period, which gives sub-bpm precision. A period's
    multiples (half, third... the tempo) score as high as the period itself, so the metrical level is
    chosen separately: start from the slowest strong candidate and move to double (triple) tempo
    while the envelope folded at the current period has as strong onsets half-way (a third of the way)
    between pulses as on them, relative to a mild log-normal preference for ~120 bpm.
    """
    if not 0 < min_bpm < max_bpm:
        raise ValueError(f"need 0 < min_bpm < max_bpm, got {min_bpm} and {max_bpm}")
    env, rate = onset_envelope(wav, sample_rate)
    n = env.size
    if n < 2 * 60.0 * rate / min_bpm:
        raise AudioError(
            f"{n / rate:.1f} s of audio is too short to estimate tempo down to {min_bpm:g} bpm "
            f"(need {2 * 60 / min_bpm:.1f} s)"
        )
    if env.max() <= 0:
        raise AudioError("no onsets in the audio: cannot estimate tempo")
    env = np.convolve(env, _gaussian(1.5), mode="same")  # spread peaks so fractional lags interpolate
    centered = env - env.mean()
    spec = np.fft.rfft(centered, 2 * n)
    acf = np.fft.irfft(spec * np.conj(spec))[:n] / (n - np.arange(n))  # unbiased: long lags not penalised
    acf = acf / acf[0]

    bpm = np.arange(min_bpm, max_bpm + 1e-9, _GRID_BPM)
    lags = 60.0 * rate / bpm[:, None] * np.arange(1, _MULTIPLES + 1)[None]
    valid = lags <= n / 2  # keep at least half the signal overlapping
    values = np.interp(np.minimum(lags, n - 1), np.arange(n), acf)
    score = (values * valid).sum(1) / np.maximum(valid.sum(1), 1)

    padded = np.pad(score, 1, constant_values=-np.inf)  # a peak may sit on either end of the range
    peaks = np.flatnonzero((score >= padded[:-2]) & (score >= padded[2:]))
    strong = peaks[score[peaks] >= score.max() - (1 - _STRONG) * abs(score.max())]
    i = int(strong.min()) if strong.size else int(np.argmax(score))  # slowest strong candidate
    while True:  # each step at least doubles the tempo, and stops past max_bpm
        pulse = _folded_pulse(env, 60.0 * rate / bpm[i])
        options = []
        for factor, phases in ((2, (1 / 2,)), (3, (1 / 3, 2 / 3))):
            j = _peak_near(score, bpm, factor * bpm[i])
            if j is not None:
                strength = min(pulse(p) for p in phases) * _prior(bpm[j]) / _prior(bpm[i])
                if strength >= _SUBDIVISION:
                    options.append((strength, j))
        if not options:
            return _refine(bpm, score, i)
        i = max(options)[1]


def _prior(bpm: float) -> float:
    """Log-normal preference for moderate tempi (1.5 octaves wide around 120 bpm)."""
    return float(np.exp(-0.5 * (np.log2(bpm / 120.0) / _PRIOR_OCTAVES) ** 2))


def _folded_pulse(env: np.ndarray, period: float, bins: int = 48) -> Callable[[float], float]:
    """Pulse train of ``period`` frames at its best phase -> mean onset strength a fraction of a
    period after each pulse, relative to that on the pulses."""
    phase = np.floor((np.arange(env.size) / period % 1.0) * bins).astype(int) % bins
    hist = np.bincount(phase, weights=env, minlength=bins) / np.maximum(np.bincount(phase, minlength=bins), 1)
    start = (int(np.argmax(hist)) + 0.5) / bins * period
    reach = max(1, int(round(period / bins * 2)))

    def strength(offset: float) -> float:
        centres = np.round(start + (np.arange(int(env.size / period) + 1) + offset) * period).astype(int)
        centres = centres[(centres >= reach) & (centres < env.size - reach)]
        if centres.size == 0:
            return 0.0
        return float(np.mean([env[c - reach : c + reach + 1].max() for c in centres]))

    on = strength(0.0)
    return lambda offset: strength(offset) / on if on > 0 else 0.0


def _peak_near(score: np.ndarray, bpm: np.ndarray, target: float, tolerance: float = 0.03) -> int | None:
    """Index of the best score within ``tolerance`` (relative) of ``target`` bpm, if in range."""
    window = np.flatnonzero(np.abs(bpm - target) <= tolerance * target)
    if window.size == 0 or target > bpm[-1] * (1 + tolerance):
        return None
    return int(window[np.argmax(score[window])])


def _gaussian(sigma: float) -> np.ndarray:
    t = np.arange(-int(4 * sigma), int(4 * sigma) + 1)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def _refine(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """Parabolic interpolation of a peak of ``y`` sampled on the uniform grid ``x``."""
    if i <= 0 or i >= y.size - 1:
        return float(x[i])
    a, b, c = y[i - 1], y[i], y[i + 1]
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return float(x[i] + shift * (x[1] - x[0]))


def estimate_key(wav: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[str, str, float]:
    """(tonic name, "major" | "minor", correlation) of the best of the 24 Krumhansl-Schmuckler keys.

    The mean chroma of the clip is correlated (Pearson) with each key profile rotated to each tonic.
    """
    x = _mono(wav, sample_rate)
    if x.abs().max() <= 0:
        raise AudioError("silent audio: cannot estimate key")
    chroma = chromagram(x, sample_rate).double().numpy()  # [12, frames]
    profile = chroma.mean(-1)
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


def tempo_accuracy(
    pred_bpm: Sequence[float] | np.ndarray,
    true_bpm: Sequence[float] | np.ndarray,
    tolerance: float = 0.04,
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
