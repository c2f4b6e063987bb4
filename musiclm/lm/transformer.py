"""Decoder-only transformer with rotary positions and a preallocated KV cache.

Pre-norm blocks, ``F.scaled_dot_product_attention``, GELU feed-forward, dropout. Positions are
relative through RoPE (rotary embeddings): they need no learned table, cost nothing per decoding
step (unlike a T5 bias, which needs a fresh bias row for every new query), and let a sliding
window restart at any absolute offset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.config import LMConfig


class KVCache:
    """Keys and values of every layer, ``[B, heads, max_len, head_dim]``, filled up to ``length``,
    and the rotary factors of all ``max_len`` positions (computed once, not per decoding step)."""

    def __init__(self, layers: int, batch: int, heads: int, *, max_len: int, head_dim: int, device, dtype):
        shape = (batch, heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.rope = rotary_factors(torch.arange(max_len, device=device), head_dim)
        self.length = 0
        self.max_len = max_len


def rotary_factors(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Unit complex numbers ``[T, head_dim / 2]``: the rotation of each channel pair at each position."""
    inv_freq = 1.0 / base ** (
        torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    angles = positions.float()[:, None] * inv_freq[None]
    return torch.polar(torch.ones_like(angles), angles)


def rotary(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i + 1)`` of ``[..., T, H, D]`` (queries and keys together as
    ``[B, T, 2, H, D]``) by the factors ``[T, D / 2]`` of their positions: one complex product."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    factors = rope.view(rope.shape[0], *(1,) * (x.dim() - 3), rope.shape[1])
    return torch.view_as_real(pairs * factors).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None, rope) -> torch.Tensor:
        # plain views and transposes, no einops: this runs once per layer per sampled token
        b, t, dim = x.shape
        qkv = F.linear(x, self.qkv.weight).view(b, t, 3, self.heads, dim // self.heads)
        positions, factors = rope
        q, k = rotary(qkv[:, :, :2], factors).transpose(1, 3).unbind(2)  # [B, H, T, D] each
        v = qkv[:, :, 2].transpose(1, 2)
        start = cache.length if cache is not None else 0
        if cache is not None:
            if start + t > cache.max_len:
                raise ValueError(f"KV cache of {cache.max_len} positions is full")
            cache.k[layer][:, :, start : start + t] = k
            cache.v[layer][:, :, start : start + t] = v
            k, v = cache.k[layer][:, :, : start + t], cache.v[layer][:, :, : start + t]
        mask, causal = None, False
        if t > 1 and start == 0:
            causal = True
        elif t > 1:  # a chunk appended to a filled cache: causal within the chunk, full to the past
            mask = torch.arange(start + t, device=x.device)[None] <= positions[:, None]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        return F.linear(y.transpose(1, 2).reshape(b, t, dim), self.out.weight)


class Block(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.heads, config.dropout)
        self.norm2 = nn.LayerNorm(config.dim)
        self.ff = nn.Sequential(
            nn.Linear(config.dim, config.ff_dim), nn.GELU(), nn.Linear(config.ff_dim, config.dim)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None, rope) -> torch.Tensor:
        # functional calls on the modules' weights: module dispatch is a large part of a decoding step
        drop = self.drop.p > 0 and self.training
        n1, n2, (up, _, down) = self.norm1, self.norm2, self.ff
        h = self.attn(F.layer_norm(x, n1.normalized_shape, n1.weight, n1.bias, n1.eps), layer, cache, rope)
        x = x + (self.drop(h) if drop else h)
        h = F.layer_norm(x, n2.normalized_shape, n2.weight, n2.bias, n2.eps)
        h = F.linear(F.gelu(F.linear(h, up.weight, up.bias)), down.weight, down.bias)
        return x + (self.drop(h) if drop else h)


class Transformer(nn.Module):
    """Token ids ``[B, T]`` -> next-token logits ``[B, T, vocab_size]``."""

    def __init__(self, config: LMConfig, vocab_size: int):
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"dim {config.dim} is not divisible by heads {config.heads}")
        self.config = config
        self.embed = nn.Embedding(vocab_size, config.dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        c = self.config
        p = self.head.weight
        return KVCache(
            c.depth,
            batch,
            c.heads,
            max_len=max_len,
            head_dim=c.dim // c.heads,
            device=p.device,
            dtype=p.dtype,
        )

    def hidden(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final normalised hidden states ``[B, T, dim]`` (appends to ``cache`` when given)."""
        start, t = (cache.length if cache is not None else 0), tokens.shape[1]
        positions = torch.arange(start, start + t, device=tokens.device)
        if cache is not None:
            factors = cache.rope[start : start + t]
        else:
            factors = rotary_factors(positions, self.config.dim // self.config.heads)
        rope = (positions, factors)
        x = F.embedding(tokens, self.embed.weight)
        for i, block in enumerate(self.blocks):
            x = block(x, i, cache, rope)
        if cache is not None:
            cache.length += tokens.shape[1]
        return self.norm(x)

    def logits(self, hidden: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Logits of the ids ``[lo, hi)`` only: sampling one RVQ level needs just its rows of the head."""
        return F.linear(hidden, self.head.weight[lo:hi])

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.logits(self.hidden(tokens, cache))
