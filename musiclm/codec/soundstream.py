"""SoundStream: the neural codec that gives MusicLM its acoustic tokens (paper 3.1).

``encode`` turns audio into ``[B, num_quantizers, frames]`` codes at ``frame_rate`` (50 Hz in both
presets); ``decode`` turns any prefix of the RVQ levels back into audio. The first
``num_coarse_quantizers`` levels are the coarse acoustic tokens, the rest the fine ones.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.checkpoint import register_model
from musiclm.codec.istft_decoder import ISTFTDecoder
from musiclm.codec.seanet import SEANetDecoder, SEANetEncoder
from musiclm.codec.stft_encoder import STFTEncoder
from musiclm.config import CodecConfig
from musiclm.errors import AudioError, ConfigError
from musiclm.modules.quantization import ResidualVectorQuantizer

CHUNK_FRAMES = 1500  # 30 s at 50 Hz: encode / decode longer audio in pieces of this many frames


@dataclass
class CodecOutput:
    audio: torch.Tensor  # [B, T] reconstruction
    codes: torch.Tensor  # [B, n_q, frames]
    commit_loss: torch.Tensor


@register_model("codec")
class SoundStream(nn.Module):
    """Causal encoder (SEANet or STFT) -> residual VQ -> causal SEANet decoder or Vocos-style iSTFT one."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = c = config
        if c.encoder == "seanet":
            self.encoder = SEANetEncoder(c.channels, tuple(c.strides), c.latent_dim)
        elif c.encoder == "stft":
            self.encoder = STFTEncoder(c.latent_dim, c.hop_length, c.stft_dim, depth=c.stft_depth)
        else:
            raise ConfigError(f"codec encoder must be 'seanet' or 'stft', got {c.encoder!r}")
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
                c.latent_dim, c.hop_length, c.istft_dim, depth=c.istft_depth, upsample=c.istft_upsample
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

    def token_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that make the codes (encoder and codebooks): a decoder tuned alone
        (``train codec --decoder-only``) leaves every token, and so this, as it was."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("decoder.")}

    @torch.no_grad()
    def encode(
        self, wav: torch.Tensor, n_q: int | None = None, *, chunk_frames: int = CHUNK_FRAMES
    ) -> torch.Tensor:
        """``[B, T]`` audio at ``sample_rate`` -> codes ``[B, n_q, ceil(T / hop_length)]``.

        Long audio is encoded ``chunk_frames`` at a time, each chunk with the encoder's receptive field
        of past audio in front, so memory is bounded by the chunk and the codes match a single pass.
        """
        x = self._prepare(wav.to(self._device))
        frames, hop = x.shape[-1] // self.hop_length, self.hop_length
        if frames <= chunk_frames:
            return self.quantizer.encode(self.encoder(x), n_q)
        ctx = self.encoder_context_frames
        codes = []
        for start in range(0, frames, chunk_frames):
            end = min(frames, start + chunk_frames)
            left = min(start, ctx)
            latent = self.encoder(x[..., (start - left) * hop : end * hop])[..., left:]
            codes.append(self.quantizer.encode(latent, n_q))
        return torch.cat(codes, dim=-1)

    @torch.no_grad()
    def decode(
        self, codes: torch.Tensor, length: int | None = None, *, chunk_frames: int = CHUNK_FRAMES
    ) -> torch.Tensor:
        """Codes ``[B, k, F]`` (the first ``k`` levels) -> ``[B, F * hop_length]`` audio, or ``length``.

        Long sequences are decoded ``chunk_frames`` at a time with the decoder's context on both
        sides, so memory is bounded by the chunk.
        """
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, levels, frames], got shape {list(codes.shape)}")
        latent = self.quantizer.decode(codes.to(self._device).long())
        frames, hop = latent.shape[-1], self.hop_length
        if frames <= chunk_frames:
            audio = self.decoder(latent)[:, 0]
        else:
            left, right = self.decoder_context_frames
            pieces = []
            for start in range(0, frames, chunk_frames):
                end = min(frames, start + chunk_frames)
                a, b = max(0, start - left), min(frames, end + right)
                out = self.decoder(latent[..., a:b])[:, 0]
                pieces.append(out[:, (start - a) * hop : (end - a) * hop])
            audio = torch.cat(pieces, dim=-1)
        return audio if length is None else audio[:, :length]

    @functools.cached_property
    def encoder_context_frames(self) -> int:
        """Frames of past audio that reach one latent frame (measured: the causal encoder's reach)."""
        hop, n = self.hop_length, 256
        x = torch.randn(1, 1, n * hop, device=self._device) * 0.1
        p = n * hop // 4
        changed = self._changed(self.encoder, x, p)  # latent frames that sample p reaches
        if int(changed.max()) >= n - 1:
            raise ConfigError(f"the codec encoder reaches over {n - p // hop} frames: too far to chunk")
        return int(changed.max()) - p // hop + 2

    @functools.cached_property
    def decoder_context_frames(self) -> tuple[int, int]:
        """(past, future) latent frames that reach the samples of one frame (measured)."""
        hop, n = self.hop_length, 128
        z = torch.randn(1, self.config.latent_dim, n, device=self._device)
        k = n // 2
        changed = self._changed(self.decoder, z, k)  # output samples that frame k reaches
        future = math.ceil(max(0, k * hop - int(changed.min())) / hop)
        past = math.ceil(max(0, int(changed.max()) + 1 - (k + 1) * hop) / hop)
        return past + 1, future + 1

    @torch.no_grad()
    def _changed(self, net: nn.Module, x: torch.Tensor, position: int) -> torch.Tensor:
        """Output positions of ``net`` that change when input position ``position`` changes."""
        was_training = net.training
        net.eval()
        y = x.clone()
        y[..., position] += 1.0
        diff = (net(y) - net(x)).abs().amax(dim=(0, 1))
        net.train(was_training)
        return torch.nonzero(diff > 0)[:, 0]

    @property
    def _device(self) -> torch.device:
        return self.quantizer.levels[0].codebook.device
