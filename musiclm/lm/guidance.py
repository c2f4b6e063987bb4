"""Classifier-free guidance, all of it: the NULL id, the dropout that teaches it, the guided logits.

Training replaces the conditioning ids of a random share of examples by NULL
(:func:`drop_conditioning`), so one model learns both p(x | text) and p(x). Sampling runs the
conditional and the NULL-conditioned prefix in one batch (:func:`with_unconditional`) and mixes the
two next-token distributions (:func:`guide`). MusicGen does this; the MusicLM paper does not.
"""

from __future__ import annotations

import torch

NULL = 2  # the id that replaces dropped conditioning (after PAD = 0 and SEP = 1)


def drop_conditioning(tokens: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """``[B, T]`` tokens with the ids under ``mask`` set to NULL in a random ``p`` share of the rows."""
    if p <= 0 or not mask.any():
        return tokens
    drop = torch.rand(tokens.shape[0], 1, device=tokens.device) < p
    return tokens.masked_fill(mask & drop, NULL)


def with_unconditional(prefix: torch.Tensor, cond_len: int) -> torch.Tensor:
    """``[2B, P]``: the prefix, then a copy whose first ``cond_len`` (conditioning) ids are NULL."""
    uncond = prefix.clone()
    uncond[:, :cond_len] = NULL
    return torch.cat([prefix, uncond])


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Guided logits ``uncond + scale * (cond - uncond)`` (scale 1 = conditional sampling)."""
    return uncond + scale * (cond - uncond)
