"""The decoding step replayed as a CUDA graph.

A large LM's decoding step on a GPU is hundreds of small kernels whose launches, not their work, set
the pace; a CUDA graph launches them all at once. It needs fixed shapes and fixed buffers, which is
what ``Transformer.decode(..., position=)`` provides: the step attends to the whole KV cache under a
mask and writes its keys in place, its position and ids are read from buffers the graph owns.
"""

from __future__ import annotations

import torch

from musiclm.lm.transformer import KVCache, Transformer


class GraphDecoder:
    """``decoder(ids, extra=None) -> hidden``: :meth:`Transformer.decode` on ``cache``, captured once
    (the first step runs eagerly as the capture's warm-up) and replayed for every later step of the
    cache. ``extra`` (per-step embeddings) is given at every step or at none.

    The returned hidden states are the graph's output buffer: use them before the next step.
    """

    def __init__(self, transformer: Transformer, cache: KVCache):
        if not cache.k[0].is_cuda:
            raise ValueError("CUDA graphs need the model and its KV cache on a CUDA device")
        self.transformer, self.cache = transformer, cache
        device = cache.k[0].device
        self.ids = torch.zeros(cache.k[0].shape[0], dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.extra: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def _step(self) -> torch.Tensor:
        return self.transformer.decode(self.ids, self.cache, position=self.position, extra=self.extra)

    def __call__(self, ids: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        cache = self.cache
        if cache.length >= cache.max_len:
            raise ValueError(f"KV cache of {cache.max_len} positions is full")
        if (extra is None) != (self.extra is None) and self.graph is not None:
            raise ValueError("a captured decoding step takes extra embeddings at every step or at none")
        if extra is not None:
            if self.extra is None:
                self.extra = torch.empty_like(extra)
            self.extra.copy_(extra)
        self.ids.copy_(ids)
        self.position.fill_(cache.length)
        if self.graph is None:
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
        return hidden
