"""The decoding step in fixed shapes: replayed as a CUDA graph, compiled by ``torch.compile``, or both.

A large LM's decoding step on a GPU is hundreds of small kernels whose launches, not their work, set
the pace; a CUDA graph launches them all at once, and compiling the step first (inductor) fuses each
layer's norms, rotary embedding and activations into a few kernels, so there are fewer to launch.
Both need fixed shapes and fixed buffers, which is what ``Transformer.decode(..., position=)``
provides: the step attends to the whole KV cache under a mask and writes its keys in place, its
position and ids are read from buffers the decoder owns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from musiclm.lm.transformer import KVCache, Transformer


def _fixed_step(
    transformer: Transformer,
    ids: torch.Tensor,
    cache: KVCache,
    position: torch.Tensor,
    extra: torch.Tensor | None,
) -> torch.Tensor:
    return transformer.decode(ids, cache, position=position, extra=extra)


@functools.cache
def compiled_step() -> Callable[..., torch.Tensor]:
    """:func:`_fixed_step` compiled by inductor, once per process: :class:`StaticDecoder` marks the
    batch and the cache length as dynamic sizes, so there is one graph per LM (and per whether it
    takes extra embeddings) whatever the batch and the window, and a new window or a longer request
    runs compiled code instead of compiling again (seconds for a small LM, a minute or more for a
    paper-size one). Every other size (the model's) stays fixed."""
    return torch.compile(_fixed_step)


def _dynamic(tensor: torch.Tensor, *dims: int) -> None:
    for dim in dims:  # "maybe": a size the trace must fix (a batch of one) is fixed, not an error
        torch._dynamo.maybe_mark_dynamic(tensor, dim)


class StaticDecoder:
    """``decoder(ids, extra=None) -> hidden``: :meth:`Transformer.decode` on ``cache`` in its
    fixed-shape form, ``compiled`` by :func:`compiled_step` and/or replayed as a CUDA ``graph``
    (captured at the first step, which runs as the capture's warm-up). ``extra`` (per-step
    embeddings) is given at every step or at none.

    The returned hidden states may be the graph's output buffer: use them before the next step.
    """

    def __init__(
        self, transformer: Transformer, cache: KVCache, *, graph: bool = True, compiled: bool = False
    ):
        if graph and not cache.k[0].is_cuda:
            raise ValueError("CUDA graphs need the model and its KV cache on a CUDA device")
        self.transformer, self.cache, self.use_graph = transformer, cache, graph
        self.step = compiled_step() if compiled else _fixed_step
        device = cache.k[0].device
        self.ids = torch.zeros(cache.k[0].shape[0], dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.extra: torch.Tensor | None = None
        self.compiled = compiled
        if compiled:  # batch and cache length
            _dynamic(self.ids, 0)
            _dynamic(cache.rope, 0)
            for tensor in (*cache.k, *cache.v):
                _dynamic(tensor, 0, 2)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None
        self.steps = 0

    def _step(self) -> torch.Tensor:
        return self.step(self.transformer, self.ids, self.cache, self.position, self.extra)

    def __call__(self, ids: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        cache = self.cache
        if cache.length >= cache.max_len:
            raise ValueError(f"KV cache of {cache.max_len} positions is full")
        if (extra is None) != (self.extra is None) and self.steps:
            raise ValueError("a fixed-shape decoding step takes extra embeddings at every step or at none")
        if extra is not None:
            if self.extra is None:
                self.extra = torch.empty_like(extra)
                if self.compiled:
                    _dynamic(self.extra, 0)
            self.extra.copy_(extra)
        self.ids.copy_(ids)
        self.position.fill_(cache.length)
        if not self.use_graph:
            hidden = self._step()
        elif self.graph is None:
            side = torch.cuda.Stream()  # capture wants its warm-up off the default stream
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                hidden = self._step()  # this step's result, and the keys it writes
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # records the kernels without running them
                self.out = self._step()
        else:
            self.graph.replay()
            hidden = self.out
        cache.length += 1
        self.steps += 1
        return hidden
