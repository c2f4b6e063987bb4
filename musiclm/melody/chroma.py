"""A melody as frame-aligned pitch classes: the dominant chroma bin of each frame.

A departure from the paper, after MusicGen's melody conditioning (Copet et al. 2023): the paper's
melody tokens describe 4 s windows of a tune as one embedding each, which an LM has to turn back
into notes; a pitch class per frame, added at the position that predicts that frame, says which
note sounds when. Training reads it from the clip's own mix (on the synthetic benchmark the mix's
dominant pitch class is the melody's for about two frames in three); at generation it comes from
the hummed or played melody. Ids 0-11 are C..B, :data:`UNPITCHED` a quiet frame.
"""

from __future__ import annotations

import torch
from torch import nn

from musiclm.audio import power_chromagram

UNPITCHED = 12
NUM_CHROMA_IDS = 13


class ChromaTrack(nn.Module):
    """``[B, T]`` audio -> ``[B, F]`` pitch-class ids at ``frame_rate`` (F = T * frame_rate / sr,
    rounded). A frame more than ``silence_db`` below the loudest frame of its clip is UNPITCHED.

    A module (without weights) only so that ``musiclm tokenize`` can treat it as it treats models.
    """

    def __init__(self, sample_rate: int = 16000, frame_rate: float = 25.0, silence_db: float = 40.0):
        super().__init__()
        hop = sample_rate / frame_rate
        if abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"{sample_rate} Hz audio has no whole number of samples per {frame_rate} Hz frame"
            )
        self.sample_rate, self.frame_rate, self.hop = sample_rate, frame_rate, round(hop)
        self.silence_db = silence_db

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.ids(wav)

    @torch.no_grad()
    def ids(self, wav: torch.Tensor) -> torch.Tensor:
        chroma = power_chromagram(wav, self.sample_rate, hop_length=self.hop)  # [B, 12, F + 1]
        frames = max(1, round(wav.shape[-1] / self.hop))
        chroma = chroma[..., :frames]
        energy = chroma.sum(-2)  # [B, F]
        floor = energy.amax(-1, keepdim=True) * 10 ** (-self.silence_db / 10)
        quiet = (energy <= floor) | (energy <= 1e-10)
        return chroma.argmax(-2).masked_fill(quiet, UNPITCHED)
