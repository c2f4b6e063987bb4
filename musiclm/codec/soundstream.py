"""SoundStream: the neural codec that gives MusicLM its acoustic tokens (paper 3.1).

``encode`` turns audio into ``[B, num_quantizers, frames]`` codes at ``frame_rate`` (50 Hz in both
presets); ``decode`` turns any prefix of the RVQ levels back into audio. The first
``num_coarse_quantizers`` levels are the coarse acoustic tokens, the rest the fine ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.checkpoint import register_model
from musiclm.codec.istft_decoder import ISTFTDecoder
from musiclm.codec.quantization import ResidualVectorQuantizer
from musiclm.codec.seanet import SEANetDecoder, SEANetEncoder
from musiclm.config import CodecConfig
from musiclm.errors import AudioError, ConfigError


@dataclass
class CodecOutput:
    audio: torch.Tensor  # [B, T] reconstruction
    codes: torch.Tensor  # [B, n_q, frames]
    commit_loss: torch.Tensor


@register_model("codec")
class SoundStream(nn.Module):
    """Causal SEANet encoder -> residual VQ -> causal SEANet decoder (or a Vocos-style iSTFT one)."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = c = config
        self.encoder = SEANetEncoder(c.channels, tuple(c.strides), c.latent_dim)
        self.quantizer = ResidualVectorQuantizer(
            c.latent_dim,
            c.num_quantizers,
            c.codebook_size,
            decay=c.codebook_decay,
            commitment_weight=c.commitment_weight,
            dead_code_threshold=c.dead_code_threshold,
            quantizer_dropout=c.quantizer_dropout,
        )
        if c.decoder == "seanet":
            self.decoder = SEANetDecoder(c.channels, tuple(c.strides), c.latent_dim)
        elif c.decoder == "istft":
            self.decoder = ISTFTDecoder(
                c.latent_dim, c.hop_length, c.istft_dim, c.istft_depth, c.istft_upsample
            )
        else:
            raise ConfigError(f"codec decoder must be 'seanet' or 'istft', got {c.decoder!r}")

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.hop_length)

    def _prepare(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() == 3 and wav.shape[1] == 1:
            wav = wav[:, 0]
        if wav.dim() != 2:
            raise AudioError(f"codec input must be [B, T] mono audio, got shape {list(wav.shape)}")
        if wav.shape[-1] == 0:
            raise AudioError("codec input is empty")
        pad = self.num_frames(wav.shape[-1]) * self.hop_length - wav.shape[-1]
        return F.pad(wav.float(), (0, pad))[:, None]

    def forward(self, wav: torch.Tensor, n_q: int | None = None) -> CodecOutput:
        """Full autoencoding pass used in training (codebook updates and quantizer dropout)."""
        length = wav.shape[-1]
        q = self.quantizer(self.encoder(self._prepare(wav)), n_q)
        audio = self.decoder(q.quantized)[:, 0, :length]
        return CodecOutput(audio, q.codes, q.commit_loss)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """``[B, T]`` audio at ``sample_rate`` -> codes ``[B, n_q, ceil(T / hop_length)]``."""
        x = self._prepare(wav.to(self._device))
        return self.quantizer.encode(self.encoder(x), n_q)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Codes ``[B, k, F]`` (the first ``k`` levels) -> ``[B, F * hop_length]`` audio, or ``length``."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, levels, frames], got shape {list(codes.shape)}")
        audio = self.decoder(self.quantizer.decode(codes.to(self._device).long()))[:, 0]
        return audio if length is None else audio[:, :length]

    @property
    def _device(self) -> torch.device:
        return self.quantizer.levels[0].codebook.device
