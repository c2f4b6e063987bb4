"""Fréchet Audio Distance (paper 5: FAD with TRILL and VGGish) and FAD-inf (Gui et al., 2024).

FAD fits a Gaussian to each set of clip embeddings and measures the Fréchet distance between the two.
Which embedding is used matters more than anything else, so the embedders are pluggable: our MuLaN,
and, over ``transformers``, CLAP, EnCodec and MERT (the models fadtk recommends). FAD is biased
upwards for small sets; FAD-inf extrapolates it to an infinite generated set.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from musiclm.audio import resample
from musiclm.errors import AudioError, CheckpointError

# ------------------------------------------------------------------------------------------------ metric


def frechet_distance(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, eps: float = 1e-6
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


def _as_matrix(emb: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    x = emb.detach().cpu().double().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected [N, D] embeddings, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: embeddings contain NaN or inf")
    return x


# ------------------------------------------------------------------------------------------------ embedders


class EmbeddingProvider(ABC):
    """One embedding per clip: ``embed([B, T] audio, sample_rate) -> [B, D]``.

    Subclasses set ``name`` and ``sample_rate`` and implement ``_embed_batch`` on audio already at
    ``sample_rate``; resampling, batching and ``no_grad`` live here so every embedder is used alike.
    """

    name: str = "embedding"
    sample_rate: int = 16000
    batch_size: int = 8

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @abstractmethod
    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        """``[b, T]`` float audio at ``self.sample_rate`` on ``self.device`` -> ``[b, D]``."""

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``[B, T]`` (or ``[T]``) audio at ``sample_rate`` -> float32 ``[B, D]`` on the CPU."""
        wav = torch.as_tensor(wav)
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[0] == 0 or wav.shape[-1] == 0:
            raise AudioError(f"{self.name}: expected non-empty [B, T] audio, got shape {list(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise AudioError(f"{self.name}: audio contains NaN or inf")
        wav = resample(wav.float(), sample_rate, self.sample_rate)
        out = [self._embed_batch(chunk.to(self.device)).float().cpu() for chunk in wav.split(self.batch_size)]
        return torch.cat(out)

    def embed_clips(self, clips: Sequence[torch.Tensor], sample_rate: int) -> np.ndarray:
        """Clips of any lengths -> ``[N, D]``; runs of equal-length clips are batched together."""
        tensors = [torch.as_tensor(c).float().reshape(-1) for c in clips]
        if not tensors:
            raise ValueError(f"{self.name}: no clips to embed")
        return torch.cat(
            [self.embed(b, sample_rate) for b in equal_length_batches(tensors, self.batch_size)]
        ).numpy()


def equal_length_batches(clips: Sequence[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Stack runs of consecutive equal-length ``[T]`` clips, at most ``batch_size`` per batch, in order."""
    out, i = [], 0
    while i < len(clips):
        j = i + 1
        while j < len(clips) and j - i < batch_size and clips[j].shape[-1] == clips[i].shape[-1]:
            j += 1
        out.append(torch.stack(list(clips[i:j])))
        i = j
    return out


class MulanEmbedder(EmbeddingProvider):
    """Our MuLaN audio tower (or any object with ``embed_audio`` and ``sample_rate``, e.g. ClapMuLaN)."""

    def __init__(self, mulan: Any, batch_size: int = 8):
        self.mulan = mulan.eval() if hasattr(mulan, "eval") else mulan
        self.name = "mulan"
        self.sample_rate = int(mulan.sample_rate)
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return getattr(self.mulan, "device", torch.device("cpu"))

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        return self.mulan.embed_audio(wav, self.sample_rate)


class _HFEmbedder(EmbeddingProvider):
    def __init__(self, model: Any, batch_size: int):
        self.model = model.eval()
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class ClapEmbedder(_HFEmbedder):
    """LAION CLAP audio embeddings (L2-normalised projections, as fadtk's ``clap-laion-*``)."""

    def __init__(self, model: Any, feature_extractor: Any, batch_size: int = 8):
        super().__init__(model, batch_size)
        self.feature_extractor = feature_extractor
        self.name = "clap"
        self.sample_rate = int(feature_extractor.sampling_rate)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "laion/clap-htsat-unfused", local_files_only: bool = True, **kwargs: Any
    ) -> ClapEmbedder:
        from transformers import ClapFeatureExtractor, ClapModel

        model = _load_pretrained(ClapModel, name_or_path, local_files_only)
        extractor = _load_pretrained(ClapFeatureExtractor, name_or_path, local_files_only)
        return cls(model, extractor, **kwargs)

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        inputs = self.feature_extractor(
            list(wav.cpu().numpy()), sampling_rate=self.sample_rate, return_tensors="pt"
        )
        kwargs = {"input_features": inputs["input_features"].to(self.device)}
        if "is_longer" in inputs:
            kwargs["is_longer"] = inputs["is_longer"].to(self.device)
        return F.normalize(_pooled(self.model.get_audio_features(**kwargs)), dim=-1)


class EncodecEmbedder(_HFEmbedder):
    """EnCodec encoder output (continuous, before quantisation), averaged over time."""

    def __init__(self, model: Any, batch_size: int = 8):
        super().__init__(model, batch_size)
        self.name = "encodec"
        self.sample_rate = int(model.config.sampling_rate)
        self.channels = int(model.config.audio_channels)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "facebook/encodec_24khz", local_files_only: bool = True, **kwargs: Any
    ) -> EncodecEmbedder:
        from transformers import EncodecModel

        return cls(_load_pretrained(EncodecModel, name_or_path, local_files_only), **kwargs)

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav[:, None].expand(-1, self.channels, -1)  # mono into every channel of a stereo model
        return self.model.encoder(x).mean(-1)


class MertEmbedder(_HFEmbedder):
    """MERT (or any HuBERT-like model taking ``input_values``): hidden states averaged over time.

    ``layer`` picks ``hidden_states[layer]`` (fadtk uses one middle layer of MERT); ``None`` takes
    ``last_hidden_state``. Without a feature extractor each clip is normalised to zero mean and unit
    variance, as MERT's own extractor does.
    """

    def __init__(
        self,
        model: Any,
        sample_rate: int = 24000,
        feature_extractor: Any | None = None,
        layer: int | None = None,
        batch_size: int = 8,
    ):
        super().__init__(model, batch_size)
        self.name = "mert" if layer is None else f"mert-layer{layer}"
        self.feature_extractor = feature_extractor
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", None) or sample_rate)
        self.layer = layer

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "m-a-p/MERT-v1-95M",
        layer: int | None = None,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> MertEmbedder:
        """MERT ships its model code with its weights: loading it needs ``trust_remote_code=True``."""
        from transformers import AutoFeatureExtractor, AutoModel

        model = _load_pretrained(
            AutoModel, name_or_path, local_files_only, trust_remote_code=trust_remote_code
        )
        try:
            extractor = _load_pretrained(AutoFeatureExtractor, name_or_path, local_files_only)
        except CheckpointError:
            extractor = None
        return cls(model, feature_extractor=extractor, layer=layer, **kwargs)

    def _embed_batch(self, wav: torch.Tensor) -> torch.Tensor:
        if self.feature_extractor is not None:
            inputs = self.feature_extractor(
                list(wav.cpu().numpy()), sampling_rate=self.sample_rate, return_tensors="pt"
            )
            x = inputs["input_values"].to(self.device)
        else:
            x = (wav - wav.mean(-1, keepdim=True)) / (wav.var(-1, keepdim=True) + 1e-7).sqrt()
        out = self.model(input_values=x, output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        return hidden.mean(1)


def _pooled(out: Any) -> torch.Tensor:
    """Projected features: a tensor in some transformers versions, an output object in others."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _load_pretrained(cls: Any, name_or_path: str, local_files_only: bool, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(name_or_path, local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as e:
        hint = " (pass local_files_only=False to download it)" if local_files_only else ""
        raise CheckpointError(
            f"{name_or_path}: cannot load {cls.__name__} ({str(e).splitlines()[0]}){hint}"
        ) from None
