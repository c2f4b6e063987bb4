"""Text adherence: MuLaN Cycle Consistency (paper 5, "MCC") and the CLAP score.

MCC is the cosine between MuLaN's embedding of each prompt and its audio embedding of the clip
generated from that prompt, averaged over prompts. MusicLM is conditioned on MuLaN, so MCC is
optimistic for it; the CLAP score does the same with an independent joint embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musiclm.checks import prompts as check_prompts
from musiclm.errors import AudioError
from musiclm.eval.embedders import equal_length_batches
from musiclm.modules.hf import Clap


@torch.no_grad()
def mulan_cycle_consistency(
    mulan: Any,
    texts: str | Sequence[str],
    wavs: torch.Tensor | Sequence[torch.Tensor],
    *,
    sample_rate: int,
    batch_size: int = 8,
) -> tuple[float, np.ndarray]:
    """(mean, per-clip ``[N]``) cosine in [-1, 1] between ``texts[i]`` and clip ``wavs[i]``.

    ``mulan`` is anything with ``embed_text(list[str])`` and ``embed_audio(wav, sample_rate)`` (our
    MuLaN or ``ClapMuLaN``); clip ``i`` must have been generated from prompt ``i``.
    """
    texts = _prompts(texts)
    clips = _clips(wavs, len(texts))
    if hasattr(mulan, "eval"):
        mulan.eval()
    t = torch.cat([mulan.embed_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
    a = torch.cat(
        [mulan.embed_audio(batch, sample_rate) for batch in equal_length_batches(clips, batch_size)]
    )
    return embedding_cosines(t, a)


def clap_score(
    clap: Clap,
    texts: str | Sequence[str],
    wavs: torch.Tensor | Sequence[torch.Tensor],
    *,
    sample_rate: int,
    batch_size: int = 8,
) -> tuple[float, np.ndarray]:
    """(mean, per-clip ``[N]``) cosine between CLAP text and audio embeddings of paired prompts/clips:
    :func:`mulan_cycle_consistency` with an independent joint embedding."""
    return mulan_cycle_consistency(clap, texts, wavs, sample_rate=sample_rate, batch_size=batch_size)


def embedding_cosines(text: torch.Tensor, audio: torch.Tensor) -> tuple[float, np.ndarray]:
    """(mean, per-row ``[N]``) cosine of paired ``[N, D]`` text and audio embeddings: the MCC of
    embeddings already computed (e.g. the ones FAD uses)."""
    per_clip = (F.normalize(text.float().cpu(), dim=-1) * F.normalize(audio.float().cpu(), dim=-1)).sum(-1)
    per_clip = per_clip.clamp(-1.0, 1.0).double().numpy()
    return float(per_clip.mean()), per_clip


def _prompts(texts: str | Sequence[str]) -> list[str]:
    return check_prompts(texts if isinstance(texts, str) else list(texts))


def _clips(wavs: torch.Tensor | Sequence[torch.Tensor], n: int) -> list[torch.Tensor]:
    clips = [torch.as_tensor(w).float().reshape(-1) for w in wavs]
    if len(clips) != n:
        raise ValueError(f"got {n} prompts but {len(clips)} clips; pass one clip per prompt")
    for i, c in enumerate(clips):
        if c.numel() == 0 or not torch.isfinite(c).all():
            raise AudioError(f"clip {i} is empty or contains NaN/inf")
    return clips
