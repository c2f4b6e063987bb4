"""SoundStream's discriminators: multi-resolution complex-STFT and multi-scale waveform.

Each returns, per sub-discriminator, its logits and the intermediate feature maps (for the feature
matching loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Features = list[torch.Tensor]


class STFTDiscriminator(nn.Module):
    """2-D conv net over the real and imaginary parts of one STFT resolution."""

    def __init__(self, n_fft: int, channels: int = 16):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        ch = channels
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(2, ch, (3, 9), padding=(1, 4)))])
        for mult, stride in ((2, (1, 2)), (4, (1, 2)), (4, (1, 2))):
            self.convs.append(
                weight_norm(nn.Conv2d(ch, channels * mult, (3, 9), stride=stride, padding=(1, 4)))
            )
            ch = channels * mult
        self.convs.append(weight_norm(nn.Conv2d(ch, ch, (3, 3), padding=(1, 1))))
        self.out = weight_norm(nn.Conv2d(ch, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, Features]:
        window = torch.hann_window(self.n_fft, device=wav.device)
        spec = torch.stft(wav.float(), self.n_fft, self.hop, window=window, return_complex=True)
        x = rearrange(torch.view_as_real(spec), "b f t c -> b c t f")
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class WaveDiscriminator(nn.Module):
    """MelGAN-style grouped 1-D conv net on the waveform at one scale."""

    def __init__(self, channels: int = 16, groups: int = 4, max_channels: int = 256):
        super().__init__()
        ch = channels
        convs = [weight_norm(nn.Conv1d(1, ch, 15, padding=7))]
        for _ in range(3):
            out = min(ch * 4, max_channels)
            convs.append(weight_norm(nn.Conv1d(ch, out, 41, stride=4, padding=20, groups=groups)))
            ch = out
        convs.append(weight_norm(nn.Conv1d(ch, ch, 5, padding=2)))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv1d(ch, 1, 3, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, Features]:
        x = wav[:, None]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class CodecDiscriminator(nn.Module):
    """All sub-discriminators: STFT at several resolutions + waveform at several scales."""

    def __init__(
        self, stft_ffts: tuple[int, ...] = (1024, 512, 256), wave_scales: int = 3, channels: int = 16
    ):
        super().__init__()
        self.stft = nn.ModuleList(STFTDiscriminator(n, channels) for n in stft_ffts)
        self.wave = nn.ModuleList(WaveDiscriminator(channels) for _ in range(wave_scales))

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, Features]]:
        outs = [d(wav) for d in self.stft]
        x = wav
        for i, d in enumerate(self.wave):
            if i:
                x = F.avg_pool1d(x[:, None], 4, 2, padding=1)[:, 0]
            outs.append(d(x))
        return outs
