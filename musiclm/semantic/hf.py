"""Semantic tokens from pretrained ``transformers`` backbones (HuBERT, Wav2Vec2-BERT) + k-means.

The paper clusters layer 7 of a 600M w2v-BERT. Users who have such weights can use them here: the
backbone's hidden states of one layer are mean-pooled in time to the 25 Hz token rate and
assigned to k-means centroids fitted with :func:`musiclm.semantic.kmeans.fit_kmeans`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import check_waveform
from musiclm.errors import CheckpointError
from musiclm.semantic.kmeans import assign, fit_kmeans


class HFSemanticTokenizer(nn.Module):
    """``encode(wav [B, T]) -> ids [B, frames]`` over a ``transformers`` audio encoder."""

    def __init__(
        self,
        backbone,
        layer: int,
        sample_rate: int = 16000,
        *,
        frame_rate: float = 25.0,
        centroids: torch.Tensor | None = None,
        feature_extractor=None,
    ):
        super().__init__()
        self.backbone = backbone.eval()
        self.layer = layer
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.feature_extractor = feature_extractor  # for models fed with filterbanks (w2v-BERT)
        self.register_buffer("centroids", centroids if centroids is not None else torch.zeros(0))

    @classmethod
    def from_pretrained(cls, name_or_path: str, layer: int, **kwargs) -> HFSemanticTokenizer:
        """``facebook/hubert-base-ls960`` (layer 6-9) or ``facebook/w2v-bert-2.0`` (paper: layer 7)."""
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        try:
            config = AutoConfig.from_pretrained(name_or_path)
            model = AutoModel.from_pretrained(name_or_path)
            extractor = (
                AutoFeatureExtractor.from_pretrained(name_or_path) if "bert" in config.model_type else None
            )
        except OSError as e:
            raise CheckpointError(
                f"{name_or_path}: cannot load backbone ({str(e).splitlines()[0]})"
            ) from None
        return cls(model, layer, feature_extractor=extractor, **kwargs)

    @torch.inference_mode()
    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Layer features pooled to ``frame_rate``: ``[B, ceil(T * frame_rate / sample_rate), dim]``."""
        if self.feature_extractor is not None:
            inputs = self.feature_extractor(
                list(wav.cpu().numpy()), sampling_rate=self.sample_rate, return_tensors="pt"
            )
            inputs = {k: v.to(wav.device) for k, v in inputs.items()}
        else:
            inputs = {"input_values": wav}
        hidden = self.backbone(**inputs, output_hidden_states=True).hidden_states[self.layer]
        frames = -(-wav.shape[-1] * int(self.frame_rate) // self.sample_rate)
        return F.adaptive_avg_pool1d(hidden.transpose(1, 2), frames).transpose(1, 2)

    def fit(self, clips: list[torch.Tensor], num_clusters: int) -> None:
        feats = torch.cat([self.features(c[None])[0] for c in clips])
        self.centroids = fit_kmeans(feats, num_clusters)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        if self.centroids.numel() == 0:
            raise CheckpointError("the k-means centroids are not fitted; call fit() first")
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = torch.stack([check_waveform(w, sample_rate, self.sample_rate) for w in wav])
        return assign(self.features(wav.float()), self.centroids)
