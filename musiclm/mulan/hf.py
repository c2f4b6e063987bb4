"""MuLaN over LAION CLAP, for users with its weights: the same interface and conditioning tokens.

``ClapMuLaN.from_pretrained("laion/clap-htsat-unfused")`` gives ``embed_text``, ``embed_audio``,
``similarity`` and, once its RVQ is fitted on audio embeddings (``fit_quantizer``), the same
conditioning tokens as :class:`musiclm.mulan.model.MuLaN`, as open-musiclm and audiocraft use CLAP.
Saved with ``save_model`` it is an ordinary checkpoint (kind ``hf_clap``: CLAP's config in
``config.json``, CLAP weights and the RVQ in ``model.safetensors``, its tokenizer beside them) that
a bundle can use as its ``mulan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from musiclm.checkpoint import register_model
from musiclm.errors import CheckpointError
from musiclm.modules.hf import Clap, load_pretrained, model_from_config
from musiclm.modules.quantization import ResidualVectorQuantizer

TOKENIZER_DIR = "clap_tokenizer"


@dataclass
class ClapMulanConfig:
    hf_config: dict = field(default_factory=dict)  # transformers ClapConfig.to_dict()
    feature_extractor: dict = field(default_factory=dict)  # ClapFeatureExtractor.to_dict()
    num_quantizers: int = 12
    codebook_size: int = 1024
    source: str = ""  # the pretrained name or path it was made from (for the record)


@register_model("hf_clap")
class ClapMuLaN(nn.Module):
    def __init__(self, config: ClapMulanConfig):
        super().__init__()
        from transformers import ClapFeatureExtractor

        self.config = config
        self.model = model_from_config(config.hf_config)
        extractor = ClapFeatureExtractor.from_dict(dict(config.feature_extractor))
        self.clap = Clap(self.model, extractor)  # the tokenizer comes with from_model / load_assets
        self.quantizer = ResidualVectorQuantizer(
            self.clap.dim, config.num_quantizers, config.codebook_size
        ).eval()

    @classmethod
    def from_model(cls, clap: Clap, *, num_quantizers: int = 12, codebook_size: int = 1024, source: str = ""):
        """Wrap a loaded :class:`Clap` (its weights are copied); fit the RVQ with :meth:`fit_quantizer`."""
        config = ClapMulanConfig(
            clap.model.config.to_dict(),
            clap.feature_extractor.to_dict(),
            num_quantizers,
            codebook_size,
            source,
        )
        mulan = cls(config)
        mulan.model.load_state_dict(clap.model.state_dict())
        mulan.clap.tokenizer = clap.tokenizer
        return mulan.eval()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "laion/clap-htsat-unfused", *, local_files_only: bool = True, **kwargs
    ) -> ClapMuLaN:
        clap = Clap.from_pretrained(name_or_path, local_files_only=local_files_only)
        return cls.from_model(clap, source=str(name_or_path), **kwargs)

    def save_assets(self, directory: Path) -> None:
        self.clap.tokenizer.save_pretrained(str(Path(directory) / TOKENIZER_DIR))

    def load_assets(self, directory: Path) -> None:
        from transformers import AutoTokenizer

        path = Path(directory) / TOKENIZER_DIR
        if not path.is_dir():
            raise CheckpointError(f"{directory}: the CLAP tokenizer ({TOKENIZER_DIR}/) is missing")
        self.clap.tokenizer = load_pretrained(AutoTokenizer, str(path))

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
