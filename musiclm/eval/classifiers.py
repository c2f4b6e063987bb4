"""Audio label classifiers for KLD and attribute accuracy.

:class:`LabelClassifier` is a small CNN trained on a project's own labels (genre, instrument,
mood...), cheap enough for a CPU; :class:`HFAudioClassifier` wraps a ``transformers`` audio
classifier such as AST trained on AudioSet (the paper uses LEAF on AudioSet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import log_mel_spectrogram, resample
from musiclm.checkpoint import load_model, register_model, save_model
from musiclm.errors import AudioError, ConfigError, DataError
from musiclm.modules.hf import load_pretrained
from musiclm.modules.patch_transformer import normalize_per_clip


@dataclass
class LabelClassifierConfig:
    """Label names per factor, e.g. ``{"genre": ["rock", "jazz"], "instrument": ["piano", ...]}``."""

    labels: dict[str, list[str]] = field(default_factory=dict)
    multilabel: list[str] = field(default_factory=list)  # factors where several labels can hold at once
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    channels: tuple[int, ...] = (16, 32, 64)
    dropout: float = 0.1


Labels = Mapping[str, Sequence[str | Sequence[str] | None]]


@register_model("label_classifier")
class LabelClassifier(nn.Module):
    """Small CNN over a log-mel spectrogram with one head per label factor.

    Cheap enough to train on a few hundred clips on a CPU, so KLD can be computed on a project's own
    labels when no AudioSet classifier is available. Save with :meth:`save`, reload with :meth:`load`.
    """

    def __init__(self, config: LabelClassifierConfig):
        super().__init__()
        if not config.labels or any(len(v) < 1 for v in config.labels.values()):
            raise ConfigError("label classifier needs at least one factor with at least one label")
        if any("." in f or not f for f in config.labels):
            raise ConfigError(
                f"label factor names must be non-empty and without '.', got {list(config.labels)}"
            )
        unknown = sorted(set(config.multilabel) - set(config.labels))
        if unknown:
            raise ConfigError(f"multilabel factors {unknown} are not in labels {sorted(config.labels)}")
        for f, names in config.labels.items():
            if len(set(names)) != len(names):
                raise ConfigError(f"factor {f!r} has duplicate labels")
            if len(names) < 2 and f not in config.multilabel:
                raise ConfigError(f"single-label factor {f!r} needs at least 2 labels")
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(1, c), nn.GELU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({f: nn.Linear(c_in, len(names)) for f, names in config.labels.items()})

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def device(self) -> torch.device:
        return self.heads[next(iter(self.config.labels))].weight.device

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, T]`` audio at ``sample_rate`` -> logits ``{factor: [B, num_labels]}``."""
        h = self.dropout(self.clip_features(wav))
        return {f: head(h) for f, head in self.heads.items()}

    def clip_features(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` audio at ``sample_rate`` -> the pooled features ``[B, channels[-1]]`` the heads
        read: an embedding of what the labels tell apart, for a FAD independent of MuLaN."""
        c = self.config
        min_samples = c.hop_length * 2 ** len(c.channels)
        if wav.shape[-1] < min_samples:
            raise AudioError(f"label classifier needs at least {min_samples} samples, got {wav.shape[-1]}")
        mel = normalize_per_clip(
            log_mel_spectrogram(wav.float(), c.sample_rate, c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels)
        )
        return self.features(mel[:, None]).mean(dim=(-1, -2))

    def loss(self, wav: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum over factors of cross-entropy (single-label, -100 = unknown) or masked BCE (multi-label)."""
        logits = self(wav)
        total = wav.new_zeros(())
        for f, target in targets.items():
            if f in self.config.multilabel:
                known = ~torch.isnan(target[:, 0])
                if known.any():
                    total = total + F.binary_cross_entropy_with_logits(logits[f][known], target[known])
            elif (target != -100).any():
                total = total + F.cross_entropy(logits[f], target, ignore_index=-100)
        return total

    def fit(
        self,
        wavs: torch.Tensor | Sequence[torch.Tensor],
        labels: Labels,
        epochs: int = 20,
        *,
        batch_size: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        sample_rate: int | None = None,
        seed: int = 0,
    ) -> list[float]:
        """Train on clips and their labels; returns the mean loss of each epoch.

        ``labels[factor][i]`` is clip ``i``'s label (a list of labels for a multi-label factor, ``None``
        when unknown). Clips of different lengths are randomly cropped to the shortest each epoch.
        """
        clips = [torch.as_tensor(w).float().reshape(-1) for w in wavs]
        if not clips:
            raise DataError("label classifier: no clips to train on")
        if sample_rate is not None and sample_rate != self.sample_rate:
            clips = [resample(w, sample_rate, self.sample_rate) for w in clips]
        targets = self._targets(labels, len(clips))
        length = min(w.shape[-1] for w in clips)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
        history = []
        self.train()
        for _ in range(epochs):
            order = torch.randperm(len(clips), generator=gen)
            losses = []
            for idx in order.split(batch_size):
                batch = torch.stack([_crop(clips[i], length, gen) for i in idx.tolist()]).to(self.device)
                loss = self.loss(batch, {f: t[idx].to(self.device) for f, t in targets.items()})
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            history.append(float(np.mean(losses)))
        self.eval()
        return history

    def _targets(self, labels: Labels, n: int) -> dict[str, torch.Tensor]:
        out = {}
        for f, values in labels.items():
            if f not in self.config.labels:
                raise DataError(
                    f"unknown label factor {f!r}; the classifier has {sorted(self.config.labels)}"
                )
            if len(values) != n:
                raise DataError(f"factor {f!r} has {len(values)} labels for {n} clips")
            index = {name: i for i, name in enumerate(self.config.labels[f])}
            if f in self.config.multilabel:
                t = torch.zeros(n, len(index))
                for i, v in enumerate(values):
                    if v is None:
                        t[i] = float("nan")
                        continue
                    for name in [v] if isinstance(v, str) else v:
                        t[i, _lookup(index, name, f)] = 1.0
            else:
                t = torch.tensor([-100 if v is None else _lookup(index, v, f) for v in values])
            out[f] = t
        return out

    @torch.no_grad()
    def predict_proba(
        self, wav: torch.Tensor, sample_rate: int | None = None, batch_size: int = 16
    ) -> dict[str, torch.Tensor]:
        """``[B, T]`` audio -> ``{factor: [B, C]}`` probabilities (softmax, or sigmoid if multi-label)."""
        wav = _as_batch(wav)
        if sample_rate is not None:
            wav = resample(wav, sample_rate, self.sample_rate)
        was_training = self.training
        self.eval()
        features = torch.cat([self.clip_features(chunk.to(self.device)) for chunk in wav.split(batch_size)])
        self.train(was_training)
        return self.probabilities(features)

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`clip_features` ``[B, D]`` -> ``{factor: [B, C]}`` probabilities (softmax, or sigmoid
        if multi-label), as :meth:`predict_proba` gives them for the audio: a caller that has the
        features for a FAD does not run the network twice."""
        out = {}
        for f, head in self.heads.items():
            x = head(features.to(self.device)).float().cpu()
            out[f] = x.sigmoid() if f in self.config.multilabel else x.softmax(-1)
        return out

    def predict(
        self, wav: torch.Tensor, sample_rate: int | None = None, threshold: float = 0.5
    ) -> dict[str, list[Any]]:
        """Most likely label per clip (for a multi-label factor: all labels above ``threshold``)."""
        out: dict[str, list[Any]] = {}
        for f, p in self.predict_proba(wav, sample_rate).items():
            names = self.config.labels[f]
            if f in self.config.multilabel:
                out[f] = [[names[j] for j in range(len(names)) if row[j] >= threshold] for row in p.tolist()]
            else:
                out[f] = [names[j] for j in p.argmax(-1).tolist()]
        return out

    def save(self, directory: str | Path) -> Path:
        return save_model(self, directory)

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> LabelClassifier:
        return load_model(directory, kind="label_classifier", map_location=map_location)  # type: ignore[return-value]


def _lookup(index: dict[str, int], name: Any, factor: str) -> int:
    if name not in index:
        raise DataError(f"unknown label {name!r} for factor {factor!r}; known: {sorted(index)}")
    return index[name]


def _crop(wav: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    if wav.shape[-1] == length:
        return wav
    start = int(torch.randint(0, wav.shape[-1] - length + 1, (1,), generator=gen))
    return wav[start : start + length]


def _as_batch(wav: torch.Tensor) -> torch.Tensor:
    wav = torch.as_tensor(wav).float()
    wav = wav[None] if wav.dim() == 1 else wav
    if wav.dim() != 2 or wav.shape[0] == 0:
        raise AudioError(f"expected [B, T] audio, got shape {list(wav.shape)}")
    if not torch.isfinite(wav).all():
        raise AudioError("audio contains NaN or inf")
    return wav


class HFAudioClassifier:
    """A ``transformers`` audio classifier (e.g. AST fine-tuned on AudioSet) -> label probabilities.

    ``multilabel`` (sigmoid per label) defaults to the model config's ``problem_type``; pass ``True``
    for AudioSet taggers, whose labels are not exclusive.
    """

    def __init__(
        self, model: Any, feature_extractor: Any, multilabel: bool | None = None, *, batch_size: int = 8
    ):
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        if multilabel is None:
            multilabel = getattr(model.config, "problem_type", None) == "multi_label_classification"
        self.multilabel = multilabel
        self.batch_size = batch_size
        id2label = model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "MIT/ast-finetuned-audioset-10-10-0.4593",
        local_files_only: bool = True,
        **kwargs: Any,
    ) -> HFAudioClassifier:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        model = load_pretrained(
            AutoModelForAudioClassification, name_or_path, local_files_only=local_files_only
        )
        extractor = load_pretrained(AutoFeatureExtractor, name_or_path, local_files_only=local_files_only)
        return cls(model, extractor, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def predict_proba(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``[B, T]`` audio -> ``[B, num_labels]`` probabilities."""
        wav = resample(_as_batch(wav), sample_rate, self.sample_rate)
        out = []
        for chunk in wav.split(self.batch_size):
            inputs = self.feature_extractor(
                list(chunk.cpu().numpy()), sampling_rate=self.sample_rate, return_tensors="pt"
            )
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            logits = self.model(**inputs).logits.float().cpu()
            out.append(logits.sigmoid() if self.multilabel else logits.softmax(-1))
        return torch.cat(out)
