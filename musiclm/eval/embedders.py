"""Clip embedders for FAD and retrieval: one embedding per clip, whatever the model.

Our MuLaN audio tower, and over ``transformers`` CLAP, EnCodec and MERT (the models fadtk
recommends). Each implements ``_embed_batch`` on audio at its own rate; resampling, batching, input
checks and ``no_grad`` live in :class:`EmbeddingProvider`, so every embedder is used alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from musiclm.audio import resample
from musiclm.errors import AudioError, CheckpointError
from musiclm.modules.hf import Clap, load_pretrained


class EmbeddingProvider(ABC):
    """One embedding per clip: ``embed([B, T] audio, sample_rate) -> [B, D]``.

    Subclasses set ``name`` and ``sample_rate`` and implement ``_embed_batch`` on audio already at
    ``sample_rate``; resampling, batching and ``no_grad`` live here so every embedder is used alike.
    """

    name: str = "embedding"
    sample_rate: int = 16000
    batch_size: int = 8

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @abstractmethod
    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        """``[b, T]`` float audio at ``self.sample_rate`` on ``self.device`` -> ``[b, D]``."""

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``[B, T]`` (or ``[T]``) audio at ``sample_rate`` -> float32 ``[B, D]`` on the CPU."""
        wav = torch.as_tensor(wav)
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[0] == 0 or wav.shape[-1] == 0:
            raise AudioError(f"{self.name}: expected non-empty [B, T] audio, got shape {list(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise AudioError(f"{self.name}: audio contains NaN or inf")
        wav = resample(wav.float(), sample_rate, self.sample_rate)
        out = [self._embed_batch(chunk.to(self.device)).float().cpu() for chunk in wav.split(self.batch_size)]
        return torch.cat(out)

    def embed_clips(self, clips: Sequence[torch.Tensor], sample_rate: int) -> np.ndarray:
        """Clips of any lengths -> ``[N, D]``; runs of equal-length clips are batched together."""
        tensors = [torch.as_tensor(c).float().reshape(-1) for c in clips]
        if not tensors:
            raise ValueError(f"{self.name}: no clips to embed")
        return torch.cat(
            [self.embed(b, sample_rate) for b in equal_length_batches(tensors, self.batch_size)]
        ).numpy()


def equal_length_batches(clips: Sequence[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Stack runs of consecutive equal-length ``[T]`` clips, at most ``batch_size`` per batch, in order."""
    out, i = [], 0
    while i < len(clips):
        j = i + 1
        while j < len(clips) and j - i < batch_size and clips[j].shape[-1] == clips[i].shape[-1]:
            j += 1
        out.append(torch.stack(list(clips[i:j])))
        i = j
    return out


class MulanEmbedder(EmbeddingProvider):
    """Our MuLaN audio tower (or any object with ``embed_audio`` and ``sample_rate``, e.g. ClapMuLaN)."""

    def __init__(self, mulan: Any, batch_size: int = 8):
        self.mulan = mulan.eval() if hasattr(mulan, "eval") else mulan
        self.name = "mulan"
        self.sample_rate = int(mulan.sample_rate)
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return getattr(self.mulan, "device", torch.device("cpu"))

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        return self.mulan.embed_audio(wav, self.sample_rate)


class ClassifierEmbedder(EmbeddingProvider):
    """The pooled features of a label classifier (:class:`musiclm.eval.classifiers.LabelClassifier`):
    a FAD space that shares nothing with the MuLaN that conditions the model and ranks its candidates,
    as the original FAD uses VGGish, an audio classifier's embedding."""

    def __init__(self, classifier: Any, batch_size: int = 8):
        self.classifier = classifier.eval()
        self.name = "classifier"
        self.sample_rate = int(classifier.sample_rate)
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.classifier.device

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        return self.classifier.clip_features(wav)


class _HFEmbedder(EmbeddingProvider):
    def __init__(self, model: Any, batch_size: int):
        self.model = model.eval()
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class ClapEmbedder(EmbeddingProvider):
    """LAION CLAP audio embeddings (L2-normalised projections, as fadtk's ``clap-laion-*``)."""

    def __init__(self, clap: Clap, batch_size: int = 8):
        self.clap = clap
        self.name = "clap"
        self.sample_rate = clap.sample_rate
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "laion/clap-htsat-unfused", *, local_files_only: bool = True, **kwargs: Any
    ) -> ClapEmbedder:
        return cls(Clap.from_pretrained(name_or_path, local_files_only=local_files_only), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.clap.device

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        return self.clap.embed_audio(wav, self.sample_rate)


class EncodecEmbedder(_HFEmbedder):
    """EnCodec encoder output (continuous, before quantisation), averaged over time."""

    def __init__(self, model: Any, batch_size: int = 8):
        super().__init__(model, batch_size)
        self.name = "encodec"
        self.sample_rate = int(model.config.sampling_rate)
        self.channels = int(model.config.audio_channels)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "facebook/encodec_24khz", local_files_only: bool = True, **kwargs: Any
    ) -> EncodecEmbedder:
        from transformers import EncodecModel

        return cls(load_pretrained(EncodecModel, name_or_path, local_files_only=local_files_only), **kwargs)

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav[:, None].expand(-1, self.channels, -1)  # mono into every channel of a stereo model
        return self.model.encoder(x).mean(-1)


class MertEmbedder(_HFEmbedder):
    """MERT (or any HuBERT-like model taking ``input_values``): hidden states averaged over time.

    ``layer`` picks ``hidden_states[layer]`` (fadtk uses one middle layer of MERT); ``None`` takes
    ``last_hidden_state``. Without a feature extractor each clip is normalised to zero mean and unit
    variance, as MERT's own extractor does.
    """

    def __init__(
        self,
        model: Any,
        sample_rate: int = 24000,
        feature_extractor: Any | None = None,
        *,
        layer: int | None = None,
        batch_size: int = 8,
    ):
        super().__init__(model, batch_size)
        self.name = "mert" if layer is None else f"mert-layer{layer}"
        self.feature_extractor = feature_extractor
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", None) or sample_rate)
        self.layer = layer

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "m-a-p/MERT-v1-95M",
        layer: int | None = None,
        local_files_only: bool = True,
        *,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> MertEmbedder:
        """MERT ships its model code with its weights: loading it needs ``trust_remote_code=True``."""
        from transformers import AutoFeatureExtractor, AutoModel

        model = load_pretrained(
            AutoModel, name_or_path, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
        try:
            extractor = load_pretrained(AutoFeatureExtractor, name_or_path, local_files_only=local_files_only)
        except CheckpointError:
            extractor = None
        return cls(model, feature_extractor=extractor, layer=layer, **kwargs)

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        if self.feature_extractor is not None:
            inputs = self.feature_extractor(
                list(wav.cpu().numpy()), sampling_rate=self.sample_rate, return_tensors="pt"
            )
            x = inputs["input_values"].to(self.device)
        else:
            x = (wav - wav.mean(-1, keepdim=True)) / (wav.var(-1, keepdim=True) + 1e-7).sqrt()
        out = self.model(input_values=x, output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        return hidden.mean(1)
