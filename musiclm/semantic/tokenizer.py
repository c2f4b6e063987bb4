"""``SemanticTokenizer``: SSL model + k-means centroids -> semantic token ids at 25 Hz (paper 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from musiclm.audio import check_waveform
from musiclm.checkpoint import register_model
from musiclm.config import SemanticConfig
from musiclm.errors import AudioError
from musiclm.semantic.kmeans import assign
from musiclm.semantic.ssl_model import SSLModel, frame_features


@register_model("semantic")
class SemanticTokenizer(nn.Module):
    """``encode(wav [B, T]) -> ids [B, ceil(T / hop_length)]`` in ``[0, num_clusters)``, deterministic."""

    def __init__(self, config: SemanticConfig):
        super().__init__()
        self.config = config
        self.ssl = SSLModel(config)
        self.register_buffer("centroids", torch.zeros(config.num_clusters, config.dim))

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Layer-``config.layer`` features ``[B, frames, dim]``."""
        return self.ssl.layer_features(frame_features(wav, self.config), self.config.layer)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise AudioError(
                f"semantic tokenizer input must be non-empty [B, T] audio, got {list(wav.shape)}"
            )
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = torch.stack([check_waveform(w, sample_rate, self.sample_rate) for w in wav])
        elif not torch.isfinite(wav).all():
            raise AudioError("semantic tokenizer input contains NaN or infinite samples")
        was_training = self.training
        self.eval()
        try:
            return assign(self.features(wav.to(self.centroids.device).float()), self.centroids)
        finally:
            self.train(was_training)
