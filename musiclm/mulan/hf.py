"""MuLaN over LAION CLAP, for users with its weights: the same interface and conditioning tokens.

``ClapMuLaN.from_pretrained("laion/clap-htsat-unfused")`` gives ``embed_text``, ``embed_audio``,
``similarity`` and, once its RVQ is fitted on audio embeddings (``fit_quantizer``), the same
conditioning tokens as :class:`musiclm.mulan.model.MuLaN`, as open-musiclm and audiocraft use CLAP.
"""

from __future__ import annotations

import torch
from torch import nn

from musiclm.modules.hf import Clap
from musiclm.modules.quantization import ResidualVectorQuantizer


class ClapMuLaN(nn.Module):
    def __init__(self, clap: Clap, *, num_quantizers: int = 12, codebook_size: int = 1024):
        super().__init__()
        self.clap = clap
        self.model = clap.model  # registered, so .to() and .eval() reach it
        self.quantizer = ResidualVectorQuantizer(clap.dim, num_quantizers, codebook_size).eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str = "laion/clap-htsat-unfused", **kwargs) -> ClapMuLaN:
        return cls(Clap.from_pretrained(name_or_path), **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.clap.sample_rate

    def embed_audio(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``[B, T]`` audio -> L2-normalised ``[B, projection_dim]``."""
        return self.clap.embed_audio(wav, sample_rate)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return self.clap.embed_text(texts)

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
