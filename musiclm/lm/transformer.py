"""Decoder-only transformer with rotary positions and a preallocated KV cache.

Pre-norm blocks, ``F.scaled_dot_product_attention``, GELU feed-forward, dropout. Positions are
relative through RoPE (rotary embeddings): they need no learned table, cost nothing per decoding
step (unlike a T5 bias, which needs a fresh bias row for every new query), and let a sliding
window restart at any absolute offset.

Two paths share the weights: :meth:`Transformer.hidden` for training and for a prompt's prefill,
and :meth:`Transformer.decode`, one new id per row against the KV cache, for sampling.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.config import LMConfig

LinearFn = Callable[[torch.Tensor], torch.Tensor]


def float32_linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> LinearFn:
    """``x -> x @ weight.T + bias`` as ``mm`` / ``addmm`` on a transposed view taken once (what
    ``F.linear`` calls, same results, without its per-call transpose and dispatch layers)."""
    wt = weight.t()
    if bias is None:
        return lambda x: torch.mm(x, wt)
    return lambda x: torch.addmm(bias, x, wt)


@functools.cache
def float16_weights_supported() -> bool:
    """Whether this CPU build has FBGEMM's GEMM with float16 weights (x86 with AVX2 or newer)."""
    if not hasattr(torch, "fbgemm_pack_gemm_matrix_fp16"):
        return False
    try:
        with warnings.catch_warnings():  # deprecated in favour of torchao, warned once per process
            warnings.simplefilter("ignore")
            packed = torch.fbgemm_pack_gemm_matrix_fp16(torch.ones(8, 8))
            torch.fbgemm_linear_fp16_weight_fp32_activation(torch.ones(1, 8), packed, None)
    except RuntimeError:  # "Your CPU does not support FBGEMM"
        return False
    return True


def float16_linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> LinearFn:
    """``x -> x @ weight.T + bias`` with the weight rounded to float16 and packed once for FBGEMM's
    small-batch GEMM (float32 activations and accumulation). A decoding step multiplies a few rows by
    each weight, where MKL's float32 GEMM runs far below its large-matrix rate; FBGEMM's kernel is
    made for that shape and reads half the bytes: several times faster at 1-8 rows on a CPU
    (benchmarks/README.md, "Float16 weights in the decoding step"). Rounding to float16 changes a
    weight by at most 2^-11 of itself."""
    if not float16_weights_supported():  # (which also takes the API's one deprecation warning)
        raise ValueError("float16 weights need a CPU with FBGEMM (x86, AVX2)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed = torch.fbgemm_pack_gemm_matrix_fp16(weight.detach().float().contiguous())
    return lambda x: torch.fbgemm_linear_fp16_weight_fp32_activation(x, packed, bias)


class LayerWeights(NamedTuple):
    """One block's weights as :meth:`Transformer.decode` uses them, prepared once per cache: layer
    norms' tensors and the linear layers as functions of ``[B, in]`` rows."""

    norm1_weight: torch.Tensor
    norm1_bias: torch.Tensor
    qkv: LinearFn  # dim -> dim + 2 * kv_heads * head_dim
    out: LinearFn  # dim -> dim
    norm2_weight: torch.Tensor
    norm2_bias: torch.Tensor
    up: LinearFn  # dim -> ff_dim, with its bias
    down: LinearFn  # ff_dim -> dim, with its bias


class KVCache:
    """Keys and values of every layer, ``[B, kv_heads, max_len, head_dim]``, filled up to ``length``,
    the rotary factors of all ``max_len`` positions and the decoding step's weight views (both
    computed once per cache, not per decoding step)."""

    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        *,
        max_len: int,
        head_dim: int,
        device,
        dtype,
        weights: list[LayerWeights] | None = None,
        linear: Callable[..., LinearFn] = float32_linear,
    ):
        shape = (batch, heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.rope = rotary_factors(torch.arange(max_len, device=device), head_dim)
        self.weights = weights
        self.linear = linear  # how ``weights`` were prepared; the LM head's id ranges alike
        self.heads: dict[tuple[int, int | None], LinearFn] = {}
        self.length = 0
        self.max_len = max_len


def rotary_factors(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """``[T, head_dim / 2, 2]``: cosine and sine of the rotation of each channel pair at each
    position (a unit complex number as two reals, so that a compiled graph holds no complex tensor)."""
    inv_freq = 1.0 / base ** (
        torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    angles = positions.float()[:, None] * inv_freq[None]
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def rotary(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i + 1)`` of ``[..., T, H, D]`` (queries and keys together as
    ``[B, T, heads + kv_heads, D]``; the decoding step's ``[B, heads + kv_heads, D]`` with the
    factors ``[1, D / 2, 2]`` of its one position) by the factors ``[T, D / 2, 2]`` of their
    positions (:func:`rotary_factors`). Eagerly it is one complex product, one kernel; traced by
    ``torch.compile`` it is the same rotation in real arithmetic, which inductor fuses with its
    neighbours (complex operations it leaves to eager kernels)."""
    rope = rope.view(rope.shape[0], *(1,) * (x.dim() - 3), *rope.shape[1:])
    if torch.compiler.is_compiling():
        cos, sin = rope.unbind(-1)
        even, odd = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        turned = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return turned.flatten(-2).type_as(x)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * torch.view_as_complex(rope)).flatten(-2).type_as(x)


class Attention(nn.Module):
    """Causal self-attention; ``kv_heads < heads`` is grouped-query attention."""

    def __init__(self, dim: int, heads: int, dropout: float, kv_heads: int | None = None):
        super().__init__()
        self.heads, self.kv_heads, self.dropout = heads, kv_heads or heads, dropout
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim + 2 * self.kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None, rope) -> torch.Tensor:
        # plain views and transposes, no einops: this runs once per layer per prefill
        b, t, dim = x.shape
        h, kvh = self.heads, self.kv_heads
        qkv = F.linear(x, self.qkv.weight).view(b, t, h + 2 * kvh, self.head_dim)
        positions, factors = rope
        qk = rotary(qkv[:, :, : h + kvh], factors).transpose(1, 2)  # queries and keys, one product
        q, k = qk[:, :h], qk[:, h:]  # [B, heads, T, D], [B, kv_heads, T, D]
        v = qkv[:, :, h + kvh :].transpose(1, 2)
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
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=kvh != h,
        )
        return F.linear(y.transpose(1, 2).reshape(b, t, dim), self.out.weight)


class Block(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.heads, config.attention_dropout, config.kv_heads)
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

    def decode_weights(self, linear: Callable[..., LinearFn] = float32_linear) -> LayerWeights:
        up, _, down = self.ff
        return LayerWeights(
            self.norm1.weight,
            self.norm1.bias,
            linear(self.attn.qkv.weight),
            linear(self.attn.out.weight),
            self.norm2.weight,
            self.norm2.bias,
            linear(up.weight, up.bias),
            linear(down.weight, down.bias),
        )


class Transformer(nn.Module):
    """Token ids ``[B, T]`` -> next-token logits ``[B, T, vocab_size]``."""

    def __init__(self, config: LMConfig, vocab_size: int):
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"dim {config.dim} is not divisible by heads {config.heads}")
        if config.kv_heads is not None and (config.kv_heads < 1 or config.heads % config.kv_heads):
            raise ValueError(f"heads {config.heads} is not a multiple of kv_heads {config.kv_heads}")
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

    def new_cache(self, batch: int, max_len: int, *, float16_weights: bool | None = False) -> KVCache:
        """An empty cache for ``batch`` rows of up to ``max_len`` positions; with
        ``float16_weights`` (a float32 model on a CPU with :func:`float16_weights_supported`; None:
        wherever that holds) the decoding step and the head multiply by float16 copies of the
        weights (:func:`float16_linear`)."""
        c = self.config
        p = self.head.weight
        can = p.device.type == "cpu" and p.dtype == torch.float32 and float16_weights_supported()
        if float16_weights and not can:
            raise ValueError("float16_weights needs a float32 model on a CPU with FBGEMM (x86, AVX2)")
        linear = float16_linear if (can if float16_weights is None else float16_weights) else float32_linear
        return KVCache(
            c.depth,
            batch,
            c.kv_heads or c.heads,
            max_len=max_len,
            head_dim=c.dim // c.heads,
            device=p.device,
            dtype=p.dtype,
            weights=[block.decode_weights(linear) for block in self.blocks],
            linear=linear,
        )

    def hidden(
        self, tokens: torch.Tensor, cache: KVCache | None = None, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final normalised hidden states ``[B, T, dim]`` (appends to ``cache`` when given);
        ``extra`` ``[B, T, dim]`` is added to the token embeddings (the conditioning's codebook
        embeddings, :mod:`musiclm.lm.codebook_embedding`; the coarse LM's aligned semantic tokens)."""
        start, t = (cache.length if cache is not None else 0), tokens.shape[1]
        positions = torch.arange(start, start + t, device=tokens.device)
        if cache is not None:
            factors = cache.rope[start : start + t]
        else:
            factors = rotary_factors(positions, self.config.dim // self.config.heads)
        rope = (positions, factors)
        x = F.embedding(tokens, self.embed.weight)
        if extra is not None:
            x = x + extra
        for i, block in enumerate(self.blocks):
            x = block(x, i, cache, rope)
        if cache is not None:
            cache.length += tokens.shape[1]
        return self.norm(x)

    def decode(
        self,
        ids: torch.Tensor,
        cache: KVCache,
        position: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final normalised hidden states ``[B, dim]`` after appending one id per row ``[B]``
        (``extra`` ``[B, dim]``: added to their embeddings, as in :meth:`hidden`).

        The same computation as ``hidden(ids[:, None], cache)[:, -1]`` (bit for bit with one kv
        head per query head in float32), written for the one-token step that sampling repeats
        thousands of times: ``[B, dim]`` activations, no position tensor, no dropout, weight views
        taken once per cache. On a CPU a small model's step is bound by the number of operations,
        not arithmetic, so this is where time goes.

        With ``position`` (``[1]`` on the cache's device, equal to ``cache.length``) every shape is
        fixed: the step attends to the whole cache under a mask and writes its keys at
        ``position``; checking that the cache has room and advancing ``cache.length`` are left to
        the caller, so the step reads no Python number that changes. That is the form a CUDA graph
        can replay and ``torch.compile`` traces once (:class:`musiclm.lm.graphs.StaticDecoder`).
        """
        b, c, fixed = ids.shape[0], self.config, position is not None
        pos = None if fixed else cache.length  # a fixed step reads no Python state of the cache
        if not fixed and pos >= cache.max_len:
            raise ValueError(f"KV cache of {cache.max_len} positions is full")
        heads, head_dim, shape = c.heads, c.dim // c.heads, (c.dim,)
        kv_heads = c.kv_heads or heads
        factors = cache.rope.index_select(0, position) if fixed else cache.rope[pos : pos + 1]
        # the cache's length from its shape: a number a compiled step may keep symbolic
        mask = torch.arange(cache.k[0].shape[2], device=ids.device)[None] <= position if fixed else None
        x = F.embedding(ids, self.embed.weight)
        if extra is not None:
            x = x + extra
        for i, w in enumerate(cache.weights):
            h = F.layer_norm(x, shape, w.norm1_weight, w.norm1_bias)
            qkv = w.qkv(h).view(b, heads + 2 * kv_heads, head_dim)
            qk = rotary(qkv[:, : heads + kv_heads], factors)
            k, v = cache.k[i], cache.v[i]
            # the query heads of a group are its kv head's queries: one query position has no mask
            q = qk[:, :heads].view(b, kv_heads, heads // kv_heads, head_dim)
            if fixed:
                k.index_copy_(2, position, qk[:, heads:, None])
                v.index_copy_(2, position, qkv[:, heads + kv_heads :, None])
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                k[:, :, pos] = qk[:, heads:]
                v[:, :, pos] = qkv[:, heads + kv_heads :]
                y = F.scaled_dot_product_attention(q, k[:, :, : pos + 1], v[:, :, : pos + 1])
            x = x + w.out(y.view(b, c.dim))
            h = F.layer_norm(x, shape, w.norm2_weight, w.norm2_bias)
            x = x + w.down(F.gelu(w.up(h)))
        if not fixed:
            cache.length += 1
        return F.layer_norm(x, shape, self.norm.weight, self.norm.bias)

    def logits(
        self, hidden: torch.Tensor, lo: int = 0, hi: int | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Logits of the ids ``[lo, hi)`` only: sampling one RVQ level needs just its rows of the head
        (multiplied as ``cache`` multiplies its decoding step's weights, when given)."""
        if cache is None or cache.linear is float32_linear:
            return F.linear(hidden, self.head.weight[lo:hi])
        if (lo, hi) not in cache.heads:
            cache.heads[lo, hi] = cache.linear(self.head.weight[lo:hi])
        return cache.heads[lo, hi](hidden)

    def forward(
        self, tokens: torch.Tensor, cache: KVCache | None = None, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.logits(self.hidden(tokens, cache, extra))
