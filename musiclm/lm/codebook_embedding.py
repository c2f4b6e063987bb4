"""MuLaN ids embedded through their RVQ codebook vectors as well as their own table rows.

A stage LM learns one embedding row per MuLaN code. With a few thousand training clips each code
of a level is seen a handful of times, and a prompt's text tokens often land on codes whose rows
were trained on other music, so the LM learns to ignore the conditioning. Every MuLaN code is a
point of the joint text/audio space (its codebook vector), and neighbouring points mean similar
music; adding a learned projection of that vector to the row shares what one code teaches with
its neighbours, from every training example. The projection starts at zero (a warm-started LM
starts where it was) and the codebooks are a frozen copy of the MuLaN quantizer's, stored with the
LM so that it loads alone. A departure from the paper (whose LMs see the ids only); the option
``StageConfig.mulan_dim`` is off by default.
"""

from __future__ import annotations

import torch
from torch import nn


def quantizer_codebooks(quantizer, levels: int) -> torch.Tensor:
    """The first ``levels`` codebooks of a residual quantizer, level-major ``[levels * codebook_size,
    dim]``: what a :class:`CodebookEmbedding` of those levels holds."""
    return torch.cat([vq.codebook for vq in quantizer.levels[:levels]])


class CodebookEmbedding(nn.Module):
    """``[B, n]`` ids -> ``[B, n, dim]``: a projection of each MuLaN id's codebook vector, zero for
    every other id (NULL, melody, the stage's own tokens)."""

    def __init__(self, *, levels: int, codebook_size: int, mulan_dim: int, dim: int, offset: int):
        super().__init__()
        self.offset, self.size = offset, levels * codebook_size
        self.register_buffer("codebooks", torch.zeros(self.size, mulan_dim))  # level-major
        self.proj = nn.Linear(mulan_dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    @torch.no_grad()
    def set_codebooks(self, codebooks: torch.Tensor) -> None:
        """Copy the first levels of a MuLaN RVQ (:func:`quantizer_codebooks`; ``[levels, codebook_size,
        mulan_dim]`` also fits)."""
        if codebooks.numel() != self.codebooks.numel() or codebooks.shape[-1] != self.codebooks.shape[1]:
            raise ValueError(
                f"expected codebooks of {self.size} vectors of {self.codebooks.shape[1]} values in all, "
                f"got {list(codebooks.shape)}"
            )
        self.codebooks.copy_(codebooks.reshape(self.size, -1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        index = ids - self.offset
        inside = (index >= 0) & (index < self.size)
        vectors = self.codebooks[index.clamp(0, self.size - 1)] * inside[..., None]
        return self.proj(vectors.to(self.proj.weight.dtype))
