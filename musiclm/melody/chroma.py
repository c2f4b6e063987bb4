"""Chromagrams and the chroma-cosine melody-adherence metric (as audiocraft reports it)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=8)
def _chroma_filter(sample_rate: int, n_fft: int, fmin: float, fmax: float) -> torch.Tensor:
    """``[12, n_fft // 2 + 1]`` map from STFT bins to pitch classes (C = 0), each bin to its nearest class."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    valid = (freqs >= fmin) & (freqs <= fmax)
    midi = 69 + 12 * torch.log2(freqs.clamp(min=1e-6) / 440.0)
    pitch_class = torch.round(midi).long() % 12
    fb = torch.zeros(12, freqs.numel(), dtype=torch.float32)
    fb[pitch_class[valid], torch.nonzero(valid).squeeze(1)] = 1.0
    return fb


def chromagram(
    wav: torch.Tensor,
    sample_rate: int,
    n_fft: int = 4096,
    hop_length: int = 640,
    fmin: float = 60.0,
    fmax: float = 2100.0,
) -> torch.Tensor:
    """Frame-wise pitch-class energy of ``[..., T]`` audio -> ``[..., 12, frames]``, each frame L2-normalised."""
    shape = wav.shape
    x = wav.reshape(-1, shape[-1]).float()
    window = torch.hann_window(n_fft, device=x.device)
    if x.shape[-1] < n_fft:
        x = F.pad(x, (0, n_fft - x.shape[-1]))
    power = torch.stft(x, n_fft, hop_length, window=window, center=True, return_complex=True).abs().pow(2)
    chroma = _chroma_filter(sample_rate, n_fft, fmin, fmax).to(x.device) @ power
    chroma = F.normalize(chroma, dim=-2, eps=1e-8)
    return chroma.reshape(*shape[:-1], 12, chroma.shape[-1])


def chroma_cosine_similarity(
    reference: torch.Tensor, generated: torch.Tensor, sample_rate: int, **kwargs
) -> torch.Tensor:
    """Mean frame-wise cosine between the chromagrams of two ``[..., T]`` signals (cropped to the
    shorter); 1 = same pitch-class content at the same time. Returns ``[...]``."""
    a = chromagram(reference, sample_rate, **kwargs)
    b = chromagram(generated, sample_rate, **kwargs)
    n = min(a.shape[-1], b.shape[-1])
    return (a[..., :n] * b[..., :n]).sum(-2).mean(-1)
