"""The codec interface over ``transformers``' EncodecModel, for users with EnCodec weights.

``EncodecCodec.from_pretrained("facebook/encodec_24khz", bandwidth=6.0)`` gives 8 RVQ levels at
75 Hz: MusicLM's paper set-up uses its own SoundStream at 50 Hz, but the token layouts are built
from ``frame_rate`` / ``num_quantizers``, so either codec fits the stages.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from musiclm.errors import AudioError, CheckpointError


class EncodecCodec(nn.Module):
    """``encode(wav [B, T]) -> codes [B, n_q, F]``, ``decode(codes, length) -> wav`` over EnCodec."""

    def __init__(self, model, bandwidth: float | None = None):
        super().__init__()
        self.model = model.eval()
        cfg = model.config
        self.bandwidth = bandwidth if bandwidth is not None else max(cfg.target_bandwidths)
        if self.bandwidth not in cfg.target_bandwidths:
            raise CheckpointError(f"bandwidth {self.bandwidth} not among the model's {cfg.target_bandwidths}")

    @classmethod
    def from_pretrained(cls, name_or_path: str = "facebook/encodec_24khz", bandwidth: float | None = 6.0):
        from transformers import EncodecModel

        try:
            model = EncodecModel.from_pretrained(name_or_path)
        except OSError as e:
            raise CheckpointError(
                f"{name_or_path}: cannot load EnCodec weights ({str(e).splitlines()[0]})"
            ) from None
        return cls(model, bandwidth)

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
