"""Fréchet Audio Distance (paper 5: FAD with TRILL and VGGish) and FAD-inf (Gui et al., 2024).

FAD fits a Gaussian to each set of clip embeddings and measures the Fréchet distance between the two.
Which embedding is used matters more than anything else, so the embedders are pluggable
(:mod:`musiclm.eval.embedders`); this module only compares two sets of embeddings. FAD is biased
upwards for small sets; FAD-inf extrapolates it to an infinite generated set.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch


def frechet_distance(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2):
    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of the same size, got {mu1.shape} and {mu2.shape}")
    if cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"covariances must be {mu1.size}x{mu1.size}, got {cov1.shape} and {cov2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected with few clips; handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than dimensions): regularise both covariances
        offset = np.eye(mu1.size) * eps
        covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        # round-off gives tiny imaginary parts; large ones mean the input was not a covariance
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def embedding_statistics(emb: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and (unbiased) covariance ``[D, D]`` of ``[N, D]`` embeddings, in float64."""
    x = _as_matrix(emb, "embeddings")
    if x.shape[0] < 2:
        raise ValueError(
            f"FAD needs at least 2 embeddings per set to estimate a covariance, got {x.shape[0]}"
        )
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def fad(emb_a: np.ndarray | torch.Tensor, emb_b: np.ndarray | torch.Tensor) -> float:
    """FAD between two sets of ``[N, D]`` clip embeddings (e.g. reference and generated)."""
    a, b = _as_matrix(emb_a, "first set"), _as_matrix(emb_b, "second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance(*embedding_statistics(a), *embedding_statistics(b))


class FadInf(NamedTuple):
    """Result of :func:`fad_infinity`; unpacks as ``(fad_inf, slope, r2)``."""

    fad_inf: float  # FAD extrapolated to an infinite generated set
    slope: float  # d FAD / d (1/N): how much the finite-N estimate is inflated
    r2: float  # goodness of the linear fit


def fad_infinity(
    emb_ref: np.ndarray | torch.Tensor,
    emb_gen: np.ndarray | torch.Tensor,
    min_n: int | None = None,
    *,
    num_points: int = 15,
    seed: int = 0,
) -> FadInf:
    """FAD-inf as in fadtk: FAD of random generated subsets of ``num_points`` sizes from ``min_n``
    to all of them, a linear fit of FAD against 1/N, and its intercept.

    FAD is biased by about c/N, so comparing models evaluated on different numbers of clips is only
    fair after this extrapolation. ``min_n`` defaults to ``min(500, N // 2)`` (fadtk uses 500).
    """
    ref, gen = _as_matrix(emb_ref, "reference set"), _as_matrix(emb_gen, "generated set")
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"embedding sizes differ: {ref.shape[1]} vs {gen.shape[1]}")
    n = gen.shape[0]
    min_n = min(500, n // 2) if min_n is None else min_n
    if min_n < 2 or min_n >= n:
        raise ValueError(
            f"FAD-inf needs 2 <= min_n < number of generated clips, got min_n={min_n} and {n} clips"
        )
    if num_points < 2:
        raise ValueError(f"FAD-inf needs at least 2 points to fit a line, got num_points={num_points}")
    mu_ref, cov_ref = embedding_statistics(ref)
    rng = np.random.default_rng(seed)
    sizes = np.unique(np.linspace(min_n, n, num_points).round().astype(int))
    if sizes.size < 2:
        raise ValueError(f"FAD-inf needs at least 2 distinct subset sizes between {min_n} and {n}")
    scores = np.array(
        [frechet_distance(mu_ref, cov_ref, *embedding_statistics(gen[rng.permutation(n)[:k]])) for k in sizes]
    )
    x = 1.0 / sizes
    slope, intercept = np.polyfit(x, scores, 1)
    residual = scores - (slope * x + intercept)
    total = ((scores - scores.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else 1.0
    return FadInf(float(intercept), float(slope), float(r2))


def fad_paired_bootstrap(
    emb_ref: np.ndarray | torch.Tensor,
    systems: list[np.ndarray | torch.Tensor],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """``[resamples, S]``: each system's FAD to the references on the same resampled prompts.

    Row ``i`` of every set belongs to prompt ``i`` (its reference clip and each system's clip for it);
    every draw resamples the prompts with replacement, the same rows for all sets, so the spread of a
    difference between two columns is the draw's alone, not the spread of two independent FADs.
    """
    ref = _as_matrix(emb_ref, "reference set")
    sets = [_as_matrix(emb, f"system {k}") for k, emb in enumerate(systems)]
    for k, emb in enumerate(sets):
        if emb.shape != ref.shape:
            expected = f"one {ref.shape[1]}-d embedding per prompt ({list(ref.shape)})"
            raise ValueError(f"system {k}: expected {expected}, got {list(emb.shape)}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(sets)))
    for r in range(resamples):
        rows = rng.integers(0, len(ref), len(ref))
        mu_ref, cov_ref = embedding_statistics(ref[rows])  # once a draw, shared by every system
        out[r] = [frechet_distance(mu_ref, cov_ref, *embedding_statistics(emb[rows])) for emb in sets]
    return out


def _as_matrix(emb: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    x = emb.detach().cpu().double().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected [N, D] embeddings, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: embeddings contain NaN or inf")
    return x
