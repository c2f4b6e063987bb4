"""Semantic tokens from pretrained ``transformers`` backbones (HuBERT, Wav2Vec2-BERT) + k-means.

The paper clusters layer 7 of a 600M w2v-BERT. Users who have such weights can use them here: the
backbone's hidden states of one layer are mean-pooled in time to the 25 Hz token rate and
assigned to k-means centroids fitted with :func:`musiclm.semantic.kmeans.fit_kmeans`. Saved with
``save_model`` it is an ordinary checkpoint (kind ``hf_semantic``: the backbone's config in
``config.json``, backbone weights and centroids in ``model.safetensors``) that a bundle can use as
its ``semantic`` tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import check_waveform
from musiclm.checkpoint import register_model
from musiclm.errors import CheckpointError
from musiclm.modules.hf import load_pretrained, model_from_config
from musiclm.semantic.kmeans import assign, fit_kmeans


@dataclass
class HFSemanticConfig:
    hf_config: dict = field(default_factory=dict)  # the backbone's transformers config.to_dict()
    feature_extractor: dict = field(default_factory=dict)  # {"class": name, **to_dict()} for w2v-BERT
    layer: int = 7
    num_clusters: int = 1024
    sample_rate: int = 16000
    frame_rate: float = 25.0
    source: str = ""  # the pretrained name or path it was made from (for the record)


@register_model("hf_semantic")
class HFSemanticTokenizer(nn.Module):
    """``encode(wav [B, T]) -> ids [B, frames]`` over a ``transformers`` audio encoder."""

    def __init__(self, config: HFSemanticConfig):
        super().__init__()
        self.config = config
        self.backbone = model_from_config(config.hf_config)
        self.feature_extractor = None  # for models fed with filterbanks (w2v-BERT)
        if config.feature_extractor:
            import transformers

            values = dict(config.feature_extractor)
            self.feature_extractor = getattr(transformers, values.pop("class")).from_dict(values)
        dim = self.backbone.config.hidden_size
        self.register_buffer("centroids", torch.zeros(config.num_clusters, dim))
        self.register_buffer("fitted", torch.tensor(False))

    @classmethod
    def from_model(
        cls, backbone, *, layer: int, num_clusters: int, feature_extractor=None, source: str = "", **kwargs
    ) -> HFSemanticTokenizer:
        """Wrap a loaded backbone (its weights are copied); fit the centroids with :meth:`fit`."""
        extractor = {}
        if feature_extractor is not None:
            extractor = {"class": type(feature_extractor).__name__, **feature_extractor.to_dict()}
        config = HFSemanticConfig(
            backbone.config.to_dict(), extractor, layer, num_clusters, source=source, **kwargs
        )
        tok = cls(config)
        tok.backbone.load_state_dict(backbone.state_dict())
        return tok.eval()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        layer: int,
        num_clusters: int = 1024,
        local_files_only: bool = True,
        **kwargs,
    ) -> HFSemanticTokenizer:
        """``facebook/hubert-base-ls960`` (layer 6-9) or ``facebook/w2v-bert-2.0`` (paper: layer 7)."""
        from transformers import AutoFeatureExtractor, AutoModel

        model = load_pretrained(AutoModel, name_or_path, local_files_only=local_files_only)
        extractor = None
        if "bert" in model.config.model_type:
            extractor = load_pretrained(AutoFeatureExtractor, name_or_path, local_files_only=local_files_only)
        return cls.from_model(
            model,
            layer=layer,
            num_clusters=num_clusters,
            feature_extractor=extractor,
            source=str(name_or_path),
            **kwargs,
        )

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_clusters(self) -> int:
        return self.config.num_clusters

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
        hidden = self.backbone(**inputs, output_hidden_states=True).hidden_states[self.config.layer]
        frames = math.ceil(wav.shape[-1] * self.frame_rate / self.sample_rate - 1e-9)
        return F.adaptive_avg_pool1d(hidden.transpose(1, 2), frames).transpose(1, 2)

    def fit(self, clips: list[torch.Tensor]) -> None:
        """k-means centroids of the layer features of ``clips`` (``[T]`` each, at :attr:`sample_rate`)."""
        feats = torch.cat([self.features(c[None])[0] for c in clips])
        self.centroids.copy_(fit_kmeans(feats, self.num_clusters))
        self.fitted.fill_(True)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        if not bool(self.fitted):
            raise CheckpointError("the k-means centroids are not fitted; call fit() first")
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = torch.stack([check_waveform(w, sample_rate, self.sample_rate) for w in wav])
        return assign(self.features(wav.float()), self.centroids)
