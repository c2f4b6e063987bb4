"""A HuBERT / w2v-BERT-style self-supervised audio model trained by masked prediction.

Front end: log-mel frames at the semantic token rate (hop 640 at 16 kHz -> 25 Hz). The paper's
w2v-BERT has a conv feature extractor at 50 Hz and reaches 25 Hz by striding; computing the mel
frames directly at 25 Hz gives the same token rate for a fraction of the compute, which is what a
model trainable on a CPU needs. A depthwise convolution adds relative position information, a
transformer encoder follows, and spans of frames are replaced by a learned mask vector; the model
predicts the k-means class of every masked frame (HuBERT's recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import log_mel_spectrogram
from musiclm.config import SemanticConfig


def frame_features(wav: torch.Tensor, config: SemanticConfig) -> torch.Tensor:
    """Log-mel ``[B, frames, n_mels]`` with exactly ``ceil(T / hop_length)`` frames, normalised per clip."""
    hop = config.hop_length
    frames = -(-wav.shape[-1] // hop)
    wav = F.pad(wav, (0, frames * hop - wav.shape[-1]))
    mel = log_mel_spectrogram(wav, config.sample_rate, config.n_fft, hop_length=hop, n_mels=config.n_mels)[
        ..., :frames
    ]
    mel = (mel - mel.mean(dim=(-1, -2), keepdim=True)) / (mel.std(dim=(-1, -2), keepdim=True) + 1e-5)
    return mel.transpose(-1, -2)


def span_mask(
    batch: int, frames: int, prob: float, *, span: int, generator=None, device=None
) -> torch.Tensor:
    """Boolean ``[B, frames]``: each frame starts a masked span of ``span`` frames with ``prob``."""
    starts = torch.rand(batch, frames, generator=generator, device=device) < prob
    mask = F.pad(starts.float()[:, None], (span - 1, 0)).unfold(-1, span, 1).amax(-1)
    return mask[:, 0].bool()


class SSLModel(nn.Module):
    """Log-mel frames -> transformer layers; ``layer_features`` gives any layer's output."""

    def __init__(self, config: SemanticConfig):
        super().__init__()
        c = config
        self.config = c
        self.proj = nn.Linear(c.n_mels, c.dim)
        self.pos_conv = nn.Conv1d(c.dim, c.dim, 15, padding=7, groups=c.dim // 4 if c.dim % 4 == 0 else 1)
        self.mask_embedding = nn.Parameter(torch.randn(c.dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                c.dim,
                c.heads,
                c.ff_mult * c.dim,
                c.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_target_clusters)

    def _embed(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.proj(feats)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        return x + F.gelu(self.pos_conv(x.transpose(1, 2))).transpose(1, 2)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Masked-prediction logits ``[B, frames, num_target_clusters]``."""
        x = self._embed(feats, mask)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))

    def layer_features(self, feats: torch.Tensor, layer: int) -> torch.Tensor:
        """Output of transformer layer ``layer`` (1-based; 0 = the input embedding), ``[B, frames, dim]``."""
        if not 0 <= layer <= len(self.layers):
            raise ValueError(f"layer must be in [0, {len(self.layers)}], got {layer}")
        x = self._embed(feats, None)
        for block in self.layers[:layer]:
            x = block(x)
        return x
