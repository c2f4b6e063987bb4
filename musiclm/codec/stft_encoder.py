"""A causal STFT encoder: short-time spectra -> ConvNeXt blocks at the frame rate -> latents.

SEANet's encoder runs its first blocks at the full sample rate and downsamples 320x with strided
convolutions; on a CPU it is the slowest part of encoding and of a training step. This encoder
lets an STFT do the downsampling (the mirror of the iSTFT decoder head) and spends its layers at
50 Hz, as frequency-domain codecs do (e.g. FunCodec, Du et al., 2023). It stays causal: a frame's
STFT windows end with the frame's last sample and its convolutions look back only, so chunked
encoding and streaming work as with SEANet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from musiclm.codec.istft_decoder import ConvNeXtBlock


class STFTEncoder(nn.Module):
    """``[B, 1, T]`` (``T`` a multiple of ``hop_length``) -> ``[B, latent_dim, T / hop_length]``.

    Each codec frame reads ``upsample`` STFT frames (hop ``hop_length / upsample``, window 4 hops)
    as log-magnitudes and power-law compressed real and imaginary parts, so phase (and with it the
    waveform) stays recoverable.
    """

    def __init__(
        self, latent_dim: int, hop_length: int, dim: int = 256, *, depth: int = 4, upsample: int = 2
    ):
        super().__init__()
        if hop_length % upsample:
            raise ValueError(f"hop_length {hop_length} is not divisible by stft upsample {upsample}")
        self.hop = hop_length // upsample
        self.n_fft = 4 * self.hop
        self.upsample = upsample
        features = 3 * (self.n_fft // 2 + 1) * upsample
        self.inp = nn.Conv1d(features, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim, causal=True) for _ in range(depth)))
        self.final_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, latent_dim)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def spectral_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T]`` -> ``[B, 3 * bins * upsample, T / hop_length]`` (float32, causal windows)."""
        with torch.autocast(x.device.type, enabled=False):
            # left padding: STFT frame k ends at sample (k + 1) * hop, so no frame reads the future
            wav = F.pad(x[:, 0].float(), (self.n_fft - self.hop, 0))
            spec = torch.stft(
                wav, self.n_fft, self.hop, self.n_fft, self.window, center=False, return_complex=True
            )
            mag = spec.abs()
            compressed = spec * (mag + 1e-6).pow(-0.7)  # |X|^0.3 with X's phase
            feats = torch.cat([(mag + 1e-5).log(), compressed.real, compressed.imag], dim=1)
        return rearrange(feats, "b c (t u) -> b (u c) t", u=self.upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(self.spectral_features(x).to(self.inp.weight.dtype))
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        h = self.final_norm(self.blocks(h).transpose(1, 2))
        return self.out(h).transpose(1, 2)
