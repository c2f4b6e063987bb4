"""The MuLaN interface over ``transformers``' ClapModel (LAION CLAP), for users with its weights.

``ClapMuLaN.from_pretrained("laion/clap-htsat-unfused")`` gives ``embed_text``, ``embed_audio``,
``similarity`` and, once its RVQ is fitted on audio embeddings (``fit_quantizer``), the same
conditioning tokens as :class:`musiclm.mulan.model.MuLaN`, as open-musiclm and audiocraft use CLAP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import check_waveform
from musiclm.checks import prompts as check_prompts
from musiclm.errors import CheckpointError
from musiclm.modules.quantization import ResidualVectorQuantizer


def _pooled(out) -> torch.Tensor:
    """Projected features: a tensor in some transformers versions, an output object in others."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClapMuLaN(nn.Module):
    def __init__(
        self, model, feature_extractor, tokenizer, num_quantizers: int = 12, codebook_size: int = 1024
    ):
        super().__init__()
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.quantizer = ResidualVectorQuantizer(
            model.config.projection_dim, num_quantizers, codebook_size
        ).eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str = "laion/clap-htsat-unfused", **kwargs) -> ClapMuLaN:
        from transformers import ClapModel, ClapProcessor

        try:
            model = ClapModel.from_pretrained(name_or_path)
            processor = ClapProcessor.from_pretrained(name_or_path)
        except OSError as e:
            raise CheckpointError(f"{name_or_path}: cannot load CLAP ({str(e).splitlines()[0]})") from None
        return cls(model, processor.feature_extractor, processor.tokenizer, **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``[B, T]`` audio -> L2-normalised ``[B, projection_dim]``."""
        sr = sample_rate or self.sample_rate
        clips = [
            check_waveform(w, sr, self.sample_rate).numpy() for w in (wav if wav.dim() == 2 else wav[None])
        ]
        inputs = self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")
        feats = inputs["input_features"].to(self.model.device)
        return F.normalize(_pooled(self.model.get_audio_features(input_features=feats)), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(check_prompts(texts), padding=True, truncation=True, return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(_pooled(self.model.get_text_features(**batch)), dim=-1)

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T

    def fit_quantizer(self, clips: list[torch.Tensor], sample_rate: int | None = None) -> float:
        """Fit the conditioning RVQ on the audio embeddings of ``clips``; returns its error."""
        emb = torch.cat([self.embed_audio(c[None], sample_rate) for c in clips])
        error = self.quantizer.fit(emb)
        self.quantizer.eval()
        return error

    @torch.no_grad()
    def tokens_from_audio(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        return self.quantizer.encode(self.embed_audio(wav, sample_rate)[..., None])[..., 0]

    @torch.no_grad()
    def tokens_from_text(self, texts: list[str]) -> torch.Tensor:
        return self.quantizer.encode(self.embed_text(texts)[..., None])[..., 0]
