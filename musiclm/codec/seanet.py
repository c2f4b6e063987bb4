"""Causal SEANet encoder and decoder (SoundStream's convolutional backbone).

Every convolution pads on the left only, so frame ``t`` never sees samples after it: the codec
can stream, and a strided stack of total stride ``hop`` maps ``T`` samples (a multiple of ``hop``)
to exactly ``T / hop`` frames and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Conv1d):
    """Conv1d with left padding of ``(kernel - 1) * dilation - (stride - 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.kernel_size[0] - 1) * self.dilation[0] - (self.stride[0] - 1)
        return super().forward(F.pad(x, (pad, 0)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Transposed conv whose surplus ``kernel - stride`` samples are trimmed on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trim = self.kernel_size[0] - self.stride[0]
        y = super().forward(x)
        return y[..., : y.shape[-1] - trim] if trim else y


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ELU(),
            CausalConv1d(channels, channels // 2, 7, dilation=dilation),
            nn.ELU(),
            CausalConv1d(channels // 2, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _residual_stack(channels: int) -> list[nn.Module]:
    return [ResidualUnit(channels, d) for d in (1, 3, 9)]


class SEANetEncoder(nn.Module):
    """``[B, 1, T]`` -> ``[B, latent_dim, T / prod(strides)]``; channels double at every stride."""

    def __init__(self, channels: int, strides: tuple[int, ...], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [CausalConv1d(1, channels, 7)]
        ch = channels
        for s in strides:
            layers += [*_residual_stack(ch), nn.ELU(), CausalConv1d(ch, 2 * ch, 2 * s, stride=s)]
            ch *= 2
        layers += [nn.ELU(), CausalConv1d(ch, latent_dim, 3)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SEANetDecoder(nn.Module):
    """Mirror of :class:`SEANetEncoder`: ``[B, latent_dim, F]`` -> ``[B, 1, F * prod(strides)]``."""

    def __init__(self, channels: int, strides: tuple[int, ...], latent_dim: int):
        super().__init__()
        ch = channels * 2 ** len(strides)
        layers: list[nn.Module] = [CausalConv1d(latent_dim, ch, 7)]
        for s in reversed(strides):
            layers += [
                nn.ELU(),
                CausalConvTranspose1d(ch, ch // 2, 2 * s, stride=s),
                *_residual_stack(ch // 2),
            ]
            ch //= 2
        layers += [nn.ELU(), CausalConv1d(ch, 1, 7)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
