"""k-means for semantic tokens: fitted with scikit-learn, assigned with batched torch.

Fitting uses ``MiniBatchKMeans`` (k-means++ init, mini-batches): it is well tested, fast enough on a
CPU for the few hundred thousand frames a tokenizer is fitted on, and needs no extra dependency
such as faiss. Assignment runs at tokenization time on whatever device the model is on, so it is
a torch ``argmin`` over distances, batched over all frames at once.
"""

from __future__ import annotations

import numpy as np
import torch

from musiclm.audio import chromagram
from musiclm.config import SemanticConfig
from musiclm.semantic.ssl_model import frame_features


def fit_kmeans(features: torch.Tensor, k: int, seed: int = 0, *, batch_size: int = 4096) -> torch.Tensor:
    """Centroids ``[k, D]`` of ``[N, D]`` features."""
    from sklearn.cluster import MiniBatchKMeans  # here, not at import: scikit-learn takes seconds to import

    x = features.detach().cpu().float().numpy()
    if len(x) < k:
        raise ValueError(f"k-means needs at least {k} frames, got {len(x)}")
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=batch_size, n_init=3, max_iter=100)
    km.fit(x)
    return torch.from_numpy(km.cluster_centers_.astype(np.float32))


def assign(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid of every ``[..., D]`` feature vector -> ids ``[...]``."""
    flat = features.reshape(-1, features.shape[-1]).float()
    c = centroids.to(flat.device, torch.float32)
    d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ c.T + c.pow(2).sum(1)[None]
    return d.argmin(dim=1).reshape(features.shape[:-1])


def target_features(wav: torch.Tensor, config: SemanticConfig) -> torch.Tensor:
    """First-iteration (music-aware) frame features: normalised log-mel + scaled chroma, ``[B, F, n_mels + 12]``.

    Chroma gives the pitch-class content that log-mel alone blurs, so the first targets already
    separate harmonies, not only timbres.
    """
    mel = frame_features(wav, config)
    chroma = chromagram(wav, config.sample_rate, n_fft=4096, hop_length=config.hop_length)[
        ..., : mel.shape[1]
    ]
    chroma = chroma.transpose(-1, -2) * np.sqrt(config.n_mels / 12)  # weigh chroma like the mel block
    if chroma.shape[1] < mel.shape[1]:
        chroma = torch.nn.functional.pad(chroma, (0, 0, 0, mel.shape[1] - chroma.shape[1]))
    return torch.cat([mel, chroma], dim=-1)
