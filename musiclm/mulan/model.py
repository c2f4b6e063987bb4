"""MuLaN (paper 2.5, 3.1): audio and text towers in one L2-normalised embedding space, and the RVQ
that turns an embedding into MusicLM's conditioning tokens.

Training conditions the stage LMs on tokens of the clip's own audio embedding (M_A); generation
conditions on tokens of the prompt's text embedding (M_T); both go through the same codebooks.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import check_waveform, log_mel_spectrogram
from musiclm.checkpoint import register_model
from musiclm.checks import prompts as check_prompts
from musiclm.config import MulanConfig
from musiclm.errors import AudioError, ConfigError
from musiclm.modules.patch_transformer import PatchTransformer, normalize_per_clip
from musiclm.modules.quantization import ResidualVectorQuantizer
from musiclm.mulan.text import OwnTextTower, PretrainedTextTower


class AudioTower(nn.Module):
    """Spectrogram transformer over one window of log-mel -> ``embed_dim`` (not normalised)."""

    def __init__(self, config: MulanConfig):
        super().__init__()
        c = config
        self.config = c
        frames = round(c.window_seconds * c.sample_rate) // c.hop_length + 1
        self.backbone = PatchTransformer(
            c.n_mels,
            c.patch_frames,
            frames,
            dim=c.audio_dim,
            depth=c.audio_depth,
            heads=c.audio_heads,
            dropout=c.dropout,
        )
        self.proj = nn.Linear(c.audio_dim, c.embed_dim)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` (at most one window long) -> ``[B, embed_dim]``."""
        c = self.config
        mel = normalize_per_clip(
            log_mel_spectrogram(wav, c.sample_rate, c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels)
        )
        if math.ceil(mel.shape[-1] / c.patch_frames) > self.backbone.max_patches:
            raise AudioError(f"audio tower input longer than one {c.window_seconds} s window")
        return self.proj(self.backbone(mel))


WINDOW_BATCH = 32  # MuLaN windows embedded at once


@register_model("mulan")
class MuLaN(nn.Module):
    """``embed_audio``, ``embed_text``, ``similarity`` and the conditioning ``tokens_from_*``."""

    def __init__(self, config: MulanConfig):
        super().__init__()
        self.config = config
        self.audio = AudioTower(config)
        if config.text_tower == "own":
            self.text = OwnTextTower(config)
        elif config.text_tower == "minilm":
            self.text = PretrainedTextTower(config)
        else:
            raise ConfigError(f"unknown text_tower {config.text_tower!r}; use 'own' or 'minilm'")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.quantizer = ResidualVectorQuantizer(
            config.embed_dim, config.num_quantizers, config.codebook_size
        )

    @property
    def packaged_weights(self) -> tuple[str, ...]:
        """The frozen MiniLM comes from its package (musiclm.checkpoint leaves it out of checkpoints)."""
        return ("text.encoder.",) if self.config.text_tower == "minilm" else ()

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # ------------------------------------------------------------------ embeddings

    def audio_windows(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, W, window]``: 10 s windows at a 1 s hop (paper), at least one."""
        c = self.config
        win = round(c.window_seconds * c.sample_rate)
        hop = round(c.window_hop_seconds * c.sample_rate)
        if wav.shape[-1] <= win:
            return wav[:, None]
        n = 1 + math.ceil((wav.shape[-1] - win) / hop)
        wav = F.pad(wav, (0, win + (n - 1) * hop - wav.shape[-1]))
        return wav.unfold(-1, win, hop)

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``[B, T]`` audio -> L2-normalised ``[B, embed_dim]``: mean of the window embeddings.

        Inference only (no gradients; training goes through :meth:`contrastive_loss`)."""
        if wav.dim() == 1:
            wav = wav[None]
        if sample_rate is not None and sample_rate != self.sample_rate or not torch.isfinite(wav).all():
            wav = torch.stack(
                [check_waveform(w, sample_rate or self.sample_rate, self.sample_rate) for w in wav]
            )
        if wav.shape[-1] < self.config.hop_length:
            raise AudioError(f"audio of {wav.shape[-1]} samples is too short for MuLaN")
        windows = self.audio_windows(wav.to(self.device).float())  # a view: no copy of the audio
        # windows in groups: memory is bounded by the group, not by the number or length of clips
        if windows.shape[1] == 1:  # clips of one window each (<= 10 s): group the clips
            flat = windows[:, 0]
            emb = [F.normalize(self.audio(g), dim=-1) for g in flat.split(WINDOW_BATCH)]
            return torch.cat(emb)
        total = torch.zeros(windows.shape[0], self.config.embed_dim, device=self.device)
        for i, clip in enumerate(windows):
            for group in clip.split(WINDOW_BATCH):
                total[i] += F.normalize(self.audio(group), dim=-1).sum(0)
        return F.normalize(total, dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> L2-normalised ``[B, embed_dim]``; empty or non-string prompts are a PromptError."""
        return F.normalize(self.text(check_prompts(texts)), dim=-1)

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix ``[len(a), len(b)]`` of normalised embeddings."""
        return a @ b.T

    # ------------------------------------------------------------------ conditioning tokens

    @torch.no_grad()
    def tokens_from_embedding(self, emb: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(emb[..., None])[..., 0]

    @torch.no_grad()
    def tokens_from_audio(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """M_A: ``[B, num_quantizers]`` conditioning tokens of audio (used in training)."""
        return self.tokens_from_embedding(self.embed_audio(wav, sample_rate))

    @torch.no_grad()
    def tokens_from_text(self, texts: list[str]) -> torch.Tensor:
        """M_T: ``[B, num_quantizers]`` conditioning tokens of prompts (used at generation)."""
        return self.tokens_from_embedding(self.embed_text(texts))

    # ------------------------------------------------------------------ training / assets

    def contrastive_loss(self, wav: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric InfoNCE with a learnable temperature; returns (loss, text->audio accuracy)."""
        a = F.normalize(self.audio(wav), dim=-1)
        t = F.normalize(self.text(check_prompts(texts)), dim=-1)
        logits = t @ a.T * self.logit_scale.exp().clamp(max=100.0)
        # identical captions in a batch are not negatives of each other
        same = torch.tensor([[x == y for y in texts] for x in texts], device=logits.device)
        target = same.float() / same.sum(1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T))
        accuracy = same[torch.arange(len(texts)), logits.argmax(1)].float().mean()
        return loss, accuracy

    def save_assets(self, directory: Path) -> None:
        if hasattr(self.text, "save_assets"):
            self.text.save_assets(directory)

    def load_assets(self, directory: Path) -> None:
        if hasattr(self.text, "load_assets"):
            self.text.load_assets(directory)
