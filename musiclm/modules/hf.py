"""Third-party models through ``transformers``: one loader and the one CLAP wrapper.

Everything that reads a pretrained Hugging Face model goes through :func:`load_pretrained`, which
never downloads unless asked and turns a missing model into a one-line error. :class:`Clap` is the
single place LAION CLAP is called, so MuLaN-over-CLAP, the CLAP FAD embedder and the CLAP score
embed a clip identically (``is_longer`` included where the feature extractor gives it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from musiclm.audio import check_waveform
from musiclm.checks import prompts as check_prompts
from musiclm.errors import AudioError, CheckpointError


def load_pretrained(cls: Any, name_or_path: str, *, local_files_only: bool = True, **kwargs: Any) -> Any:
    """``cls.from_pretrained(name_or_path)``, offline unless ``local_files_only=False``."""
    try:
        return cls.from_pretrained(name_or_path, local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as e:
        hint = (
            " (not on this machine: allow downloading with --download or local_files_only=False)"
            if local_files_only
            else ""
        )
        raise CheckpointError(
            f"{name_or_path}: cannot load {cls.__name__} ({str(e).splitlines()[0]}){hint}"
        ) from None


def pooled(out: Any) -> torch.Tensor:
    """Projected features: a tensor in some transformers versions, an output object in others."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class Clap:
    """LAION CLAP (``transformers.ClapModel``): L2-normalised text and audio embeddings."""

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any = None):
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "laion/clap-htsat-unfused", *, local_files_only: bool = True
    ) -> Clap:
        from transformers import ClapModel, ClapProcessor

        model = load_pretrained(ClapModel, name_or_path, local_files_only=local_files_only)
        processor = load_pretrained(ClapProcessor, name_or_path, local_files_only=local_files_only)
        return cls(model, processor.feature_extractor, processor.tokenizer)

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``[B, T]`` (or ``[T]``) audio at ``sample_rate`` -> ``[B, dim]``."""
        sr = sample_rate or self.sample_rate
        rows = wav if wav.dim() == 2 else wav[None]
        clips = [check_waveform(w, sr, self.sample_rate).cpu().numpy() for w in rows]
        inputs = self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")
        kwargs = {"input_features": inputs["input_features"].to(self.device)}
        if "is_longer" in inputs:
            kwargs["is_longer"] = inputs["is_longer"].to(self.device)
        return F.normalize(pooled(self.model.get_audio_features(**kwargs)), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> ``[N, dim]``."""
        if self.tokenizer is None:
            raise AudioError("this CLAP wrapper has no tokenizer: it embeds audio only")
        batch = self.tokenizer(check_prompts(texts), padding=True, truncation=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(pooled(self.model.get_text_features(**batch)), dim=-1)


def model_from_config(config: dict) -> Any:
    """A ``transformers`` model rebuilt from its ``config.to_dict()`` (random weights, no download):
    adapters store that dict in their own checkpoint config and the weights beside it."""
    from transformers import AutoConfig, AutoModel

    values = dict(config)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise CheckpointError("a transformers model config needs its model_type")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **values)).eval()
