"""Melody embedding model (paper section 6, App. C) and its conditioning tokens.

A small ViT over log-mel windows (4 s at a 3 s hop in the paper) maps each window to an L2-normalised
embedding; contrastive training on pairs "same melody, other instrument" makes the embedding carry
the melody and drop the timbre. An RVQ (paper 24 x 512) turns each window embedding into tokens that
are appended to the MuLaN tokens in the stage LMs' prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from musiclm.audio import check_waveform, log_mel_spectrogram
from musiclm.checkpoint import register_model
from musiclm.config import MelodyConfig
from musiclm.modules.patch_transformer import PatchTransformer, normalize_per_clip
from musiclm.modules.quantization import ResidualVectorQuantizer


@register_model("melody")
class MelodyEmbedder(nn.Module):
    """Windows of audio -> melody embeddings -> RVQ tokens."""

    def __init__(self, config: MelodyConfig):
        super().__init__()
        self.config = c = config
        frames = c.window_samples // c.hop_length + 1
        self.backbone = PatchTransformer(
            c.n_mels, c.patch_frames, frames, dim=c.dim, depth=c.depth, heads=c.heads, dropout=c.dropout
        )
        self.head = nn.Linear(c.dim, c.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.quantizer = ResidualVectorQuantizer(c.embed_dim, c.num_quantizers, c.codebook_size)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def num_windows(self, num_samples: int) -> int:
        """Windows covering ``num_samples`` (at least one; the last one zero-padded)."""
        c = self.config
        return 1 + max(0, math.ceil((num_samples - c.window_samples) / c.hop_samples))

    def split_windows(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, W, window_samples]`` (paper: 4 s windows at a 3 s hop)."""
        c = self.config
        n = self.num_windows(wav.shape[-1])
        total = c.window_samples + (n - 1) * c.hop_samples
        wav = F.pad(wav, (0, total - wav.shape[-1]))
        return wav.unfold(-1, c.window_samples, c.hop_samples)

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """Log-mel of ``[N, window_samples]``, normalised per window (loudness invariance)."""
        c = self.config
        mel = log_mel_spectrogram(
            windows,
            c.sample_rate,
            c.n_fft,
            hop_length=c.hop_length,
            n_mels=c.n_mels,
            fmin=c.fmin,
            fmax=c.fmax,
        )
        return normalize_per_clip(mel)

    def embed_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """``[N, window_samples]`` -> L2-normalised ``[N, embed_dim]``."""
        return F.normalize(self.head(self.backbone(self.features(windows))), dim=-1)

    def embed(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``[B, T]`` audio -> ``[B, W, embed_dim]`` per-window melody embeddings."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = torch.stack([check_waveform(w, sample_rate, self.sample_rate) for w in wav])
        windows = self.split_windows(wav.to(self.head.weight.device).float())
        b = windows.shape[0]
        emb = self.embed_windows(rearrange(windows, "b w t -> (b w) t"))
        return rearrange(emb, "(b w) d -> b w d", b=b)

    @torch.no_grad()
    def tokens(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``[B, T]`` audio -> melody tokens ``[B, W, num_quantizers]`` (ids in [0, codebook_size))."""
        emb = self.embed(wav, sample_rate)
        codes = self.quantizer.encode(rearrange(emb, "b w d -> b d w"))
        return rearrange(codes, "b q w -> b w q")

    def contrastive_loss(
        self, anchor: torch.Tensor, positive: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric InfoNCE over a batch of window pairs; returns (loss, retrieval accuracy)."""
        a, p = self.embed_windows(anchor), self.embed_windows(positive)
        logits = a @ p.T * self.logit_scale.exp().clamp(max=100.0)
        target = torch.arange(a.shape[0], device=a.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        accuracy = (logits.argmax(dim=1) == target).float().mean()
        return loss, accuracy


def fit_quantizer(model: MelodyEmbedder, embeddings: torch.Tensor, epochs: int = 20) -> float:
    """Train the RVQ on ``[N, embed_dim]`` window embeddings; returns the reconstruction error."""
    error = model.quantizer.fit(embeddings, epochs=epochs)
    model.quantizer.eval()
    return error
