"""Fitting :class:`~musiclm.mulan.loudness.PromptLoudness` to captioned clips.

Each clip's integrated loudness is measured (ITU-R BS.1770, in worker processes) and the captions'
sentences encoded once; the anchors are the training captions' distinct sentences, and for each
match temperature and penalty a ridge regression is fitted in closed form (scikit-learn). The pair
with the lowest error on the held-out clips is kept. No gradient steps: the fit takes about as long
as reading the audio and encoding the captions.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import torch

from musiclm.audio import integrated_loudness, load_audio
from musiclm.config import LoudnessConfig
from musiclm.data.manifest import ManifestEntry
from musiclm.errors import DataError
from musiclm.mulan.loudness import PromptLoudness, sentence_counts, sentences, soft_match

TEMPERATURES = (0.02, 0.03, 0.05, 0.1)
ALPHAS = (0.3, 1.0, 3.0, 10.0)
MAX_ANCHORS = 8192  # the most frequent distinct sentences, when the captions have more
MAX_SECONDS = 30.0  # of an uncropped entry (a whole track): enough to measure its level


def _entry_loudness(entry: ManifestEntry) -> float | None:
    duration = MAX_SECONDS if entry.end is None else entry.end - (entry.start or 0.0)
    wav, sr = load_audio(entry.path, offset=entry.start or 0.0, duration=min(duration, MAX_SECONDS))
    return integrated_loudness(wav, sr)


def clip_loudness(entries: list[ManifestEntry], *, workers: int = 2) -> np.ndarray:
    """Integrated loudness (LUFS) of each entry's clip, NaN where it is silent or too short to measure."""
    if workers <= 1:
        values = [_entry_loudness(e) for e in entries]
    else:
        # spawned, not forked: a fork after torch has run its thread pool can hang in the child
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            values = list(pool.map(_entry_loudness, entries, chunksize=16))
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _measured(entries: list[ManifestEntry], where: str, workers: int) -> tuple[list[str], np.ndarray]:
    """The captions of the clips loud enough to measure, and their loudness."""
    entries = [e for e in entries if e.caption.strip()]
    lufs = clip_loudness(entries, workers=workers) if entries else np.zeros(0)
    keep = np.isfinite(lufs)
    if keep.sum() < 2:
        raise DataError(f"{where}: {int(keep.sum())} captioned clips loud enough to measure; need at least 2")
    return [e.caption for e, k in zip(entries, keep, strict=True) if k], lufs[keep]


def fit_prompt_loudness(
    train: list[ManifestEntry],
    valid: list[ManifestEntry],
    *,
    temperatures: tuple[float, ...] = TEMPERATURES,
    alphas: tuple[float, ...] = ALPHAS,
    workers: int = 2,
) -> tuple[PromptLoudness, dict]:
    """The head fitted on ``train``'s captioned clips, its temperature and penalty chosen on
    ``valid``'s, and the figures of the fit (mean absolute error in LU of the head and of the
    training median, on both splits)."""
    from sklearn.linear_model import Ridge

    for entries, where in ((train, "training set"), (valid, "validation set")):  # before any clip is read
        if sum(bool(e.caption.strip()) for e in entries) < 2:
            raise DataError(f"{where}: fewer than 2 captioned clips (the loudness head reads captions)")
    captions, y = {}, {}
    captions["train"], y["train"] = _measured(train, "training set", workers)
    captions["valid"], y["valid"] = _measured(valid, "validation set", workers)
    frequent = Counter(s for c in captions["train"] for s in sentences(c)).most_common(MAX_ANCHORS)
    anchor_text = sorted(s for s, _ in frequent)
    reference = float(np.median(y["train"]))
    low, high = (float(v) for v in np.percentile(y["train"], [1, 99]))
    config = LoudnessConfig(anchors=len(anchor_text), reference_lufs=reference, min_lufs=low, max_lufs=high)
    head = PromptLoudness(config)
    anchors = head.encode(anchor_text)
    encoded = {}
    for split in ("train", "valid"):
        counts, unique = sentence_counts(captions[split])
        encoded[split] = (counts, head.encode(unique))

    def features(split: str, temperature: float) -> np.ndarray:
        counts, unique_encoded = encoded[split]
        return (counts @ soft_match(unique_encoded, anchors, temperature)).numpy()

    fits = []
    for temperature in temperatures:
        x = {split: features(split, temperature) for split in ("train", "valid")}
        for alpha in alphas:
            ridge = Ridge(alpha=alpha).fit(x["train"], y["train"])
            error = float(np.abs(ridge.predict(x["valid"]) - y["valid"]).mean())
            fits.append((error, temperature, alpha, ridge))
    valid_mae, temperature, alpha, ridge = min(fits, key=lambda f: f[0])
    train_mae = float(np.abs(ridge.predict(features("train", temperature)) - y["train"]).mean())
    head.config = replace(config, temperature=temperature)
    head.anchors.copy_(anchors)
    head.weight.copy_(torch.as_tensor(ridge.coef_, dtype=torch.float32))
    head.bias.copy_(torch.tensor(float(ridge.intercept_)))
    metrics = {
        "temperature": temperature,
        "alpha": alpha,
        "valid_mae_by_temperature_alpha": {f"{t:g},{a:g}": round(e, 3) for e, t, a, _ in fits},
        "anchors": len(anchor_text),
        "train_clips": len(y["train"]),
        "valid_clips": len(y["valid"]),
        "reference_lufs": round(reference, 2),
        "range_lufs": [round(low, 2), round(high, 2)],
        "train_mae": round(train_mae, 3),
        "valid_mae": round(valid_mae, 3),
        "train_mae_median": round(float(np.abs(y["train"] - reference).mean()), 3),
        "valid_mae_median": round(float(np.abs(y["valid"] - reference).mean()), 3),
    }
    return head.eval(), metrics
