"""Residual vector quantization (SoundStream, paper 3.1) with EMA codebooks.

Each level quantizes the residual left by the levels before it, so decoding from the first ``k``
levels gives a coarser reconstruction: MusicLM's coarse/fine split relies on that, and quantizer
dropout (training with a random number of levels) is what makes prefixes decode well. Codebooks
are not learned by gradient: they are initialised by k-means on the first batch and then follow an
exponential moving average of the vectors assigned to them; codes that fall out of use are reset to
random vectors of the current batch. Under DDP the statistics are summed across ranks so every rank
keeps the same codebooks.

Nearest-code search always runs in float32, also under bf16 autocast: with bf16's 8-bit mantissa the
expanded distance ``|x|^2 - 2 x.c + |c|^2`` loses the small differences between codes, ties go to
the lowest index, and a codebook collapses to a handful of codes (what a bf16 GPU run of the codec
showed: 2-3 codes per level). A code is dead when it went unused for ``dead_code_patience`` updates
in a row (fast: catches an encoder that drifts away from its k-means init) or when its EMA usage is
below ``dead_code_threshold`` x the uniform share (slow: catches rarely used codes); both hold at any
batch size, unlike an absolute count (2 marked every code dead at small batches and none at large).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def kmeans(
    x: torch.Tensor, k: int, iters: int = 10, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Lloyd's k-means on ``[N, D]`` (batched torch); returns ``[k, D]`` centroids.

    With fewer vectors than clusters the centroids are drawn with replacement (plus a little noise),
    which EMA updates and dead-code replacement then spread out.
    """
    n = x.shape[0]
    idx = (
        torch.randint(0, n, (k,), generator=generator)
        if n < k
        else torch.randperm(n, generator=generator)[:k]
    )
    centroids = x[idx.to(x.device)].clone()
    if n < k:
        centroids += 1e-3 * x.std() * torch.randn_like(centroids)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class EMAVectorQuantizer(nn.Module):
    """One codebook of ``codebook_size`` vectors of size ``dim``, updated by EMA in training."""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        *,
        dead_code_threshold: float = 0.1,
        kmeans_init: bool = True,
        eps: float = 1e-5,
        dead_code_patience: int = 20,
    ):
        super().__init__()
        self.codebook_size, self.decay, self.eps = codebook_size, decay, eps
        self.dead_code_threshold, self.dead_code_patience = dead_code_threshold, dead_code_patience
        init = torch.zeros(codebook_size, dim) if kmeans_init else torch.randn(codebook_size, dim)
        self.register_buffer("codebook", init)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", init.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        # consecutive updates without use; training-only, so not part of checkpoints
        self.register_buffer("idle", torch.zeros(codebook_size), persistent=False)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest code for each row of ``[N, dim]`` -> ``[N]`` (float32 distances, see the module doc)."""
        with torch.autocast(x.device.type, enabled=False):
            x, cb = x.float(), self.codebook.float()
            dist2 = x.pow(2).sum(1, keepdim=True) - 2 * x @ cb.T + cb.pow(2).sum(1)[None]
            return dist2.argmin(dim=1)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.codebook)

    @torch.no_grad()
    def update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA step on a batch ``[N, dim]`` with its assignments ``[N]``; inits and revives codes."""
        x = x.float()
        if not bool(self.initialized):
            centroids = kmeans(x, self.codebook_size)
            if _distributed():
                dist.broadcast(centroids, 0)
            self.codebook.copy_(centroids)
            self.embed_sum.copy_(centroids)
            self.cluster_size.fill_(1.0)
            self.initialized.fill_(True)
            return
        counts = torch.bincount(codes, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, x)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.idle.add_(1).masked_fill_(counts > 0, 0)
        self.cluster_size.lerp_(counts, 1 - self.decay)
        self.embed_sum.lerp_(sums, 1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        self._revive_dead_codes(x, share=float(total) / self.codebook_size)

    def _revive_dead_codes(self, x: torch.Tensor, share: float) -> None:
        """Dead codes (see the module doc) restart at random vectors of the batch, with the uniform
        ``share`` as their usage."""
        dead = (self.cluster_size < self.dead_code_threshold * share) | (self.idle >= self.dead_code_patience)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        fresh = x[torch.randint(0, x.shape[0], (n_dead,), device=x.device)]
        if _distributed():
            dist.broadcast(fresh, 0)
        self.codebook[dead] = fresh
        self.embed_sum[dead] = fresh * share
        self.cluster_size[dead] = share
        self.idle[dead] = 0


def codebook_perplexity(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """exp(entropy) of the code histogram of each level of ``[B, levels, T]`` codes -> ``[levels]``:
    the number of equally used codes that would give the same entropy (``codebook_size`` at best)."""
    levels = codes.shape[1]
    flat = codes.transpose(0, 1).reshape(levels, -1)
    counts = torch.zeros(levels, codebook_size, device=codes.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float)
    )
    p = counts / counts.sum(1, keepdim=True)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum(1))


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [B, dim, T], straight-through gradients to the input
    codes: torch.Tensor  # [B, n_q, T]
    commit_loss: torch.Tensor  # scalar


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` EMA codebooks applied to successive residuals of ``[B, dim, T]`` input."""

    def __init__(
        self,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        *,
        decay: float = 0.99,
        commitment_weight: float = 1.0,
        dead_code_threshold: float = 0.1,
        quantizer_dropout: float = 0.0,
        kmeans_init: bool = True,
    ):
        super().__init__()
        self.dim, self.num_quantizers, self.codebook_size = dim, num_quantizers, codebook_size
        self.commitment_weight = commitment_weight
        self.quantizer_dropout = quantizer_dropout
        self.levels = nn.ModuleList(
            EMAVectorQuantizer(
                dim, codebook_size, decay, dead_code_threshold=dead_code_threshold, kmeans_init=kmeans_init
            )
            for _ in range(num_quantizers)
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ResidualVectorQuantizer:
        """The quantizer ``state`` describes (levels ``levels.N.codebook`` of ``[size, dim]``), loaded."""
        n = 0
        while f"levels.{n}.codebook" in state:
            n += 1
        if n == 0:
            raise ValueError("no quantizer codebooks (levels.0.codebook) in the state")
        size, dim = state["levels.0.codebook"].shape
        quantizer = cls(dim, n, size)
        quantizer.load_state_dict({k: v.float() for k, v in state.items()})
        return quantizer

    def _check_levels(self, n_q: int | None) -> int:
        n_q = self.num_quantizers if n_q is None else n_q
        if not 1 <= n_q <= self.num_quantizers:
            raise ValueError(f"n_q must be in [1, {self.num_quantizers}], got {n_q}")
        return n_q

    def forward(self, x: torch.Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize ``[B, dim, T]``; in training also updates the codebooks.

        Quantizer dropout: with probability ``quantizer_dropout`` a training batch uses a random
        number of levels in ``[1, num_quantizers]`` (per batch, so every example in it sees the same
        prefix), which teaches the decoder to work from any prefix of levels.
        """
        if n_q is None and self.training and self.quantizer_dropout > 0:
            if torch.rand(()) < self.quantizer_dropout:
                n_q = int(torch.randint(1, self.num_quantizers + 1, ()))
        n_q = self._check_levels(n_q)
        with torch.autocast(x.device.type, enabled=False):
            return self._quantize(x.float(), n_q)

    def _quantize(self, x: torch.Tensor, n_q: int) -> QuantizerOutput:
        b = x.shape[0]
        residual = rearrange(x, "b d t -> (b t) d")
        total = torch.zeros_like(residual)
        codes, commit = [], x.new_zeros(())
        for vq in self.levels[:n_q]:
            idx = vq.quantize(residual.detach())
            if self.training:
                vq.update(residual.detach(), idx)
            q = vq.dequantize(idx).to(residual.dtype)
            commit = commit + F.mse_loss(residual, q.detach())
            residual = residual - q.detach()
            total = total + q
            codes.append(idx)
        flat_in = rearrange(x, "b d t -> (b t) d")
        quantized = flat_in + (total - flat_in).detach()  # straight-through estimator
        return QuantizerOutput(
            quantized=rearrange(quantized, "(b t) d -> b d t", b=b),
            codes=rearrange(torch.stack(codes, dim=1), "(b t) q -> b q t", b=b),
            commit_loss=self.commitment_weight * commit,
        )

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """``[B, dim, T]`` -> codes ``[B, n_q, T]`` (no codebook update)."""
        n_q = self._check_levels(n_q)
        b = x.shape[0]
        residual = rearrange(x, "b d t -> (b t) d")
        codes = []
        for vq in self.levels[:n_q]:
            idx = vq.quantize(residual)
            residual = residual - vq.dequantize(idx).to(residual.dtype)
            codes.append(idx)
        return rearrange(torch.stack(codes, dim=1), "(b t) q -> b q t", b=b)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, k, T]`` for the first ``k`` levels -> ``[B, dim, T]``."""
        k = codes.shape[1]
        self._check_levels(k)
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]"
            )
        out = sum(vq.dequantize(codes[:, i]) for i, vq in enumerate(self.levels[:k]))
        return rearrange(out, "b t d -> b d t")

    @torch.no_grad()
    def fit(self, vectors: torch.Tensor, epochs: int = 20, batch_size: int = 512, *, seed: int = 0) -> float:
        """Fit the codebooks to a set of ``[N, dim]`` vectors (k-means init + EMA passes).

        For RVQs over embeddings (MuLaN, melody) that are trained after their encoder. Returns the
        mean squared error between the vectors and their quantized reconstruction.
        """
        vectors = vectors.to(self.levels[0].codebook.device)
        was_training = self.training
        self.train()
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(vectors), generator=g).split(batch_size):
                self(vectors[idx].T.unsqueeze(0), n_q=self.num_quantizers)
        self.train(was_training)
        recon = self.decode(self.encode(vectors.T.unsqueeze(0)))[0].T
        return float((recon - vectors).pow(2).sum(-1).mean())
