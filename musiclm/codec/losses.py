"""SoundStream losses: multi-scale mel reconstruction, hinge adversarial, feature matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from musiclm.audio import log_mel_spectrogram


def multiscale_mel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    *,
    ffts: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048),
) -> torch.Tensor:
    """Sum over STFT sizes of L1 on mel magnitudes + L2 on log-mels (SoundStream's s = 2^6..2^11).

    The number of mel bands scales with the FFT size so small windows do not get empty bands.
    """
    total = pred.new_zeros(())
    for n_fft in ffts:
        n_mels = max(8, min(64, n_fft // 8))
        kwargs = dict(n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)
        lp = log_mel_spectrogram(pred, sample_rate, **kwargs)
        lt = log_mel_spectrogram(target, sample_rate, **kwargs)
        alpha = (n_fft / 2) ** 0.5
        total = total + F.l1_loss(lp.exp(), lt.exp()) + alpha * F.mse_loss(lp, lt).sqrt()
    return total / len(ffts)


def mel_distance(pred: torch.Tensor, target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean absolute log-mel difference over several resolutions (an evaluation metric)."""
    out = []
    for n_fft in (256, 512, 1024, 2048):
        kwargs = dict(n_fft=n_fft, hop_length=n_fft // 4, n_mels=min(64, n_fft // 8))
        out.append(
            (
                log_mel_spectrogram(pred, sample_rate, **kwargs)
                - log_mel_spectrogram(target, sample_rate, **kwargs)
            )
            .abs()
            .mean()
        )
    return torch.stack(out).mean()


def si_sdr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio in dB, per item of ``[B, T]``."""
    target = target - target.mean(-1, keepdim=True)
    pred = pred - pred.mean(-1, keepdim=True)
    scale = (pred * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    projection = scale * target
    noise = pred - projection
    return 10 * torch.log10(projection.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps) + eps)


def hinge_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def hinge_generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator features of real and generated audio, relative to the real scale."""
    total, count = 0.0, 0
    for fr, ff in zip(real, fake):
        for r, f in zip(fr, ff):
            total = total + (r.detach() - f).abs().mean() / (r.detach().abs().mean() + 1e-5)
            count += 1
    return total / max(count, 1)
