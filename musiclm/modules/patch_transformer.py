"""A spectrogram transformer (ViT over time patches), shared by the MuLaN audio tower and the
melody embedder: log-mel ``[B, n_mels, frames]`` -> patches of ``patch_frames`` x all bands ->
CLS token + learned positions -> pre-norm transformer -> the CLS feature ``[B, dim]``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class PatchTransformer(nn.Module):
    def __init__(
        self,
        n_mels: int,
        patch_frames: int,
        max_frames: int,
        *,
        dim: int,
        depth: int,
        heads: int,
        dropout: float,
    ):
        super().__init__()
        self.patch_frames = patch_frames
        self.max_patches = math.ceil(max_frames / patch_frames)
        self.patch = nn.Linear(n_mels * patch_frames, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, self.max_patches + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        p = math.ceil(mel.shape[-1] / self.patch_frames)
        if p > self.max_patches:
            raise ValueError(
                f"{mel.shape[-1]} frames exceed the {self.max_patches * self.patch_frames} this model takes"
            )
        mel = F.pad(mel, (0, p * self.patch_frames - mel.shape[-1]))
        x = self.patch(rearrange(mel, "b m (p f) -> b p (f m)", f=self.patch_frames))
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos[:, : p + 1]
        return self.norm(self.encoder(x))[:, 0]


def normalize_per_clip(mel: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each clip's spectrogram (loudness invariance)."""
    return (mel - mel.mean(dim=(-1, -2), keepdim=True)) / (mel.std(dim=(-1, -2), keepdim=True) + 1e-5)
