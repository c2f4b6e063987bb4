"""The codec interface over ``transformers``' EncodecModel, for users with EnCodec weights.

``EncodecCodec.from_pretrained("facebook/encodec_24khz", bandwidth=6.0)`` gives 8 RVQ levels at
75 Hz: MusicLM's paper set-up uses its own SoundStream at 50 Hz, but the token layouts are built
from ``frame_rate`` / ``num_quantizers``, so either codec fits the stages. Saved with
``save_model`` it is an ordinary checkpoint (kind ``hf_encodec``: the EnCodec config in
``config.json``, its weights in ``model.safetensors``) that a bundle can use as its ``codec``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from musiclm.checkpoint import register_model
from musiclm.errors import AudioError, CheckpointError
from musiclm.modules.hf import load_pretrained, model_from_config


@dataclass
class EncodecAdapterConfig:
    hf_config: dict = field(default_factory=dict)  # transformers EncodecConfig.to_dict()
    bandwidth: float = 6.0  # kbps: picks the number of RVQ levels
    source: str = ""  # the pretrained name or path it was made from (for the record)


@register_model("hf_encodec")
class EncodecCodec(nn.Module):
    """``encode(wav [B, T]) -> codes [B, n_q, F]``, ``decode(codes, length) -> wav`` over EnCodec."""

    def __init__(self, config: EncodecAdapterConfig):
        super().__init__()
        self.config = config
        self.model = model_from_config(config.hf_config)
        if config.bandwidth not in self.model.config.target_bandwidths:
            raise CheckpointError(
                f"bandwidth {config.bandwidth} not among the model's {self.model.config.target_bandwidths}"
            )

    @classmethod
    def from_model(cls, model, *, bandwidth: float | None = None, source: str = "") -> EncodecCodec:
        """Wrap a loaded ``EncodecModel`` (its weights are copied)."""
        bandwidth = bandwidth if bandwidth is not None else max(model.config.target_bandwidths)
        codec = cls(EncodecAdapterConfig(model.config.to_dict(), float(bandwidth), source))
        codec.model.load_state_dict(model.state_dict())
        return codec.eval()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "facebook/encodec_24khz",
        *,
        bandwidth: float | None = 6.0,
        local_files_only: bool = True,
    ) -> EncodecCodec:
        from transformers import EncodecModel

        model = load_pretrained(EncodecModel, name_or_path, local_files_only=local_files_only)
        return cls.from_model(model, bandwidth=bandwidth, source=str(name_or_path))

    @property
    def bandwidth(self) -> float:
        return self.config.bandwidth

    @property
    def sample_rate(self) -> int:
        return self.model.config.sampling_rate

    @property
    def hop_length(self) -> int:
        return math.prod(self.model.config.upsampling_ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def codebook_size(self) -> int:
        return self.model.config.codebook_size

    @property
    def num_quantizers(self) -> int:
        bits = math.log2(self.model.config.codebook_size)
        return int(self.bandwidth * 1000 // (self.frame_rate * bits))

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise AudioError(
                f"EnCodec input must be non-empty [B, T] mono audio, got shape {list(wav.shape)}"
            )
        out = self.model.encode(wav[:, None].float(), bandwidth=self.bandwidth)
        return out.audio_codes[0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        audio = self.model.decode(codes[None].long(), [None])[0][:, 0]
        return audio if length is None else audio[:, :length]
