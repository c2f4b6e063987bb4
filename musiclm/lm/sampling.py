"""Turning logits into tokens: temperature, top-k, top-p, within one id range."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingConfig:
    """How one stage samples (paper temperatures: 1.0 semantic, 0.95 coarse, 0.4 fine)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance: float = 1.0  # classifier-free guidance scale; 1 = plain conditional sampling

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def sample(
    logits: torch.Tensor,
    config: SamplingConfig,
    lo: int,
    *,
    hi: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``[B]`` ids from ``[B, V]`` logits restricted to the id range ``[lo, hi)``.

    Only that range is considered, so a stage can never emit an id of another RVQ level or a
    special token. Temperature 0 is greedy decoding.
    """
    x = logits[:, lo:hi].float()
    if config.temperature == 0:
        return x.argmax(dim=-1) + lo
    if config.temperature != 1:
        x = x / config.temperature
    if config.top_k is not None and config.top_k < x.shape[-1]:
        kth = torch.topk(x, config.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        cum = sorted_x.softmax(-1).cumsum(-1)
        drop = cum - sorted_x.softmax(-1) > config.top_p  # keep the smallest set whose mass reaches top_p
        x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    ids = categorical(x.softmax(dim=-1), generator=generator)
    return ids + lo if lo else ids


def categorical(probs: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw ``[B]`` from each row of ``[B, V]`` probabilities: ``argmax(p / q)``, q ~ Exp(1).

    The same draws as ``torch.multinomial(probs, 1, generator=generator)`` for the same generator
    state (it takes this path for a single draw), without its input checks, whose reductions and
    host syncs cost more than the draw itself at every decoding step (so a row of NaN, which
    ``multinomial`` refuses, gives an arbitrary id here).
    """
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.div(probs, q, out=q).argmax(dim=-1)
