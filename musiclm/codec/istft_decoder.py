"""A Vocos-style decoder: ConvNeXt blocks at the frame rate, then an inverse STFT.

SEANet's decoder upsamples 320x with transposed convolutions and spends most of its time and
training steps at the full sample rate. This head stays at 50 Hz (cheap, fast to train), predicts
an STFT frame of log-magnitudes and phases per ``hop / upsample`` samples and lets ``torch.istft``
do the upsampling (Siuzdak, 2023, "Vocos"). Unlike SEANet it is not causal: each output sample
sees the frames whose windows overlap it (a few tens of milliseconds ahead), which MusicLM, which
decodes whole token sequences, does not need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> pointwise MLP (x3) -> layer scale, residual.

    ``causal``: the convolution sees the current and the 6 previous frames only (for an encoder
    whose codes must not depend on the future).
    """

    def __init__(self, dim: int, mult: int = 3, layer_scale: float = 0.1, *, causal: bool = False):
        super().__init__()
        self.pad = (6, 0) if causal else (3, 3)
        self.dwconv = nn.Conv1d(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))
        self.scale = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, dim, T]
        y = rearrange(self.dwconv(F.pad(x, self.pad)), "b d t -> b t d")
        y = self.mlp(self.norm(y)) * self.scale
        return x + rearrange(y, "b t d -> b d t")


class ISTFTDecoder(nn.Module):
    """``[B, latent_dim, F]`` -> ``[B, 1, F * hop_length]`` through ConvNeXt blocks and an iSTFT."""

    def __init__(
        self, latent_dim: int, hop_length: int, dim: int = 256, *, depth: int = 8, upsample: int = 2
    ):
        super().__init__()
        if hop_length % upsample:
            raise ValueError(f"hop_length {hop_length} is not divisible by istft upsample {upsample}")
        self.hop = hop_length // upsample
        self.n_fft = 4 * self.hop
        self.upsample = upsample
        self.inp = nn.Conv1d(latent_dim, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
        self.final_norm = nn.LayerNorm(dim)
        # one STFT frame (log-magnitude + phase for every bin) per sub-frame
        self.head = nn.Linear(dim, upsample * (self.n_fft + 2))
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        frames = z.shape[-1]
        x = self.inp(z)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        x = self.final_norm(self.blocks(x).transpose(1, 2))
        x = rearrange(self.head(x), "b t (u c) -> b c (t u)", u=self.upsample).float()
        log_mag, phase = x.chunk(2, dim=1)
        spec = torch.polar(log_mag.clamp(max=10.0).exp(), phase)  # cos/sin of the phase: no wrapping
        with torch.autocast(z.device.type, enabled=False):
            # center=True: sub-frame k covers samples around k * hop; pad one hop to keep the length
            wav = torch.istft(
                F.pad(spec, (0, 1)),
                self.n_fft,
                self.hop,
                self.n_fft,
                self.window,
                center=True,
                length=frames * self.upsample * self.hop,
            )
        return wav[:, None]
