"""KL divergence between label distributions of reference and generated clips (paper 5, "KLD").

The paper runs the LEAF classifier (trained on AudioSet) on each MusicCaps clip and on the clip
generated from its caption, and averages KL(reference || generated) over the pairs: low KLD means the
generated music has the same *labels* as the reference, whatever its exact notes. Any classifier
works as long as both sides use the same one (:mod:`musiclm.eval.classifiers`); this module only
compares two sets of label probabilities.
"""

from __future__ import annotations

import numpy as np
import torch


def kl_per_clip(
    p_ref: np.ndarray | torch.Tensor,
    p_gen: np.ndarray | torch.Tensor,
    eps: float = 1e-6,
    *,
    multilabel: bool = False,
) -> np.ndarray:
    """``[N]`` KL(ref || gen) of paired ``[N, C]`` label probabilities (nats).

    Single-label rows are clipped to ``eps`` and renormalised (a zero probability would make KL
    infinite). With ``multilabel=True`` each column is an independent Bernoulli (sigmoid outputs of
    an AudioSet tagger) and the per-label KLs are averaged.
    """
    p, q = _probabilities(p_ref, "p_ref"), _probabilities(p_gen, "p_gen")
    if p.shape != q.shape:
        raise ValueError(f"p_ref and p_gen must have the same shape, got {list(p.shape)} and {list(q.shape)}")
    if multilabel:
        p, q = np.clip(p, eps, 1 - eps), np.clip(q, eps, 1 - eps)
        return (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).mean(-1)
    p, q = np.clip(p, eps, None), np.clip(q, eps, None)
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    return (p * np.log(p / q)).sum(-1)


def kl_divergence(
    p_ref: np.ndarray | torch.Tensor,
    p_gen: np.ndarray | torch.Tensor,
    eps: float = 1e-6,
    *,
    multilabel: bool = False,
) -> float:
    """Mean over paired clips of KL(ref || gen) of their label probabilities; see :func:`kl_per_clip`."""
    return float(kl_per_clip(p_ref, p_gen, eps, multilabel=multilabel).mean())


def _probabilities(p: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    x = p.detach().cpu().double().numpy() if isinstance(p, torch.Tensor) else np.asarray(p, np.float64)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"{what}: expected non-empty [N, C] probabilities, got shape {list(x.shape)}")
    if not np.isfinite(x).all() or (x < 0).any() or (x > 1 + 1e-6).any():
        raise ValueError(f"{what}: probabilities must be finite and in [0, 1]")
    return x
