"""Exponential moving average of model weights (sampling uses the averaged weights)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` for every floating parameter.

    Buffers (e.g. EMA codebooks, which are averages already) are left to the model. Has
    ``state_dict``/``load_state_dict`` so the trainer checkpoints it with everything else.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: int = 100):
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().clone().float() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # ramp the decay up so early (random) weights are forgotten quickly
        decay = min(self.decay, (1 + self.updates) / (self.warmup + self.updates))
        params = dict(model.named_parameters())
        current = [params[n].detach().float() for n in self.names]
        torch._foreach_lerp_(self.shadow, current, 1.0 - decay)

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        params = dict(model.named_parameters())
        backup = [params[n].detach().clone() for n in self.names]
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                params[n].copy_(s)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, b in zip(self.names, backup):
                    params[n].copy_(b)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay, "shadow": dict(zip(self.names, self.shadow))}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        shadow = state["shadow"]
        self.shadow = [shadow[n].to(self.shadow[i].device).float() for i, n in enumerate(self.names)]
