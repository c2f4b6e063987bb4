"""Datasets of fixed-length random crops, for every component that trains on audio."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from musiclm.audio import audio_info, load_audio
from musiclm.data import PROCEDURAL
from musiclm.data.manifest import ManifestEntry, load_entries
from musiclm.errors import AudioError


class AudioCropDataset(Dataset):
    """Random ``crop_seconds`` crops (mono, ``sample_rate``) with their captions.

    Files are checked once up front (header only): unreadable, empty or too-short ones are
    skipped and listed in :attr:`report` as ``(path, reason)``. A file that turns out corrupt or
    silent when read later is replaced by another random item rather than crashing the run.
    Shorter audio is zero-padded, so every item has exactly ``round(crop_seconds * sample_rate)``
    samples and the default collate works. ``preload`` decodes every file once into memory (16-bit),
    so crops cost a slice instead of a seek and decode: for fast GPU training on a few hours of audio.
    """

    def __init__(
        self,
        source: str | Path | list[ManifestEntry],
        sample_rate: int,
        crop_seconds: float,
        *,
        seed: int = 0,
        min_seconds: float = 0.1,
        progress: bool = False,
        preload: bool = False,
    ):
        self.sample_rate, self.crop_seconds = sample_rate, crop_seconds
        self.num_samples = round(crop_seconds * sample_rate)
        self.rng = random.Random(seed)
        self.entries: list[ManifestEntry] = []
        self.durations: list[float] = []
        self.report: list[tuple[str, str]] = []
        for entry in tqdm(load_entries(source), desc="checking audio", disable=not progress):
            try:
                _, total = audio_info(entry.path)
            except AudioError as e:
                self.report.append((entry.path, str(e)))
                continue
            start = entry.start or 0.0
            end = min(entry.end, total) if entry.end is not None else total
            if end - start < min_seconds:
                self.report.append((entry.path, f"only {max(end - start, 0):.2f} s of audio"))
                continue
            self.entries.append(entry)
            self.durations.append(end - start)
        if not self.entries:
            first = self.report[0][1] if self.report else "no entries"
            raise AudioError(
                f"{source}: no usable audio ({len(self.report)} file(s) skipped; first: {first})"
            )
        self.audio: list[np.ndarray] | None = self._preload(progress) if preload else None

    def _preload(self, progress: bool) -> list[np.ndarray]:
        def read(i: int) -> np.ndarray:
            e = self.entries[i]
            wav, _ = load_audio(e.path, self.sample_rate, offset=e.start or 0.0, duration=self.durations[i])
            return (wav.numpy() * 32767).round().astype(np.int16)

        with ThreadPoolExecutor(os.cpu_count()) as pool:
            it = pool.map(read, range(len(self.entries)))
            return list(tqdm(it, total=len(self.entries), desc="loading audio", disable=not progress))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        if self.audio is not None:
            audio = self.audio[index]
            # torch's generator: DataLoader seeds it per worker, so workers draw different crops
            start = int(torch.randint(max(1, len(audio) - self.num_samples + 1), ()))
            wav = torch.from_numpy(audio[start : start + self.num_samples].astype(np.float32) / 32767)
            wav = F.pad(wav, (0, self.num_samples - wav.shape[-1]))
            return {"wav": wav, "caption": self.entries[index].caption, "index": index}
        for _ in range(10):
            entry = self.entries[index]
            span = self.durations[index]
            offset = (entry.start or 0.0) + float(torch.rand(())) * max(0.0, span - self.crop_seconds)
            try:
                wav, _ = load_audio(
                    entry.path,
                    self.sample_rate,
                    offset=offset,
                    duration=min(self.crop_seconds, span),
                    allow_silent=False,
                )
            except AudioError as e:
                self.report.append((entry.path, str(e)))
                index = self.rng.randrange(len(self.entries))
                continue
            wav = F.pad(wav[: self.num_samples], (0, max(0, self.num_samples - wav.shape[-1])))
            return {"wav": wav, "caption": entry.caption, "index": index}
        raise AudioError(f"10 unreadable or silent files in a row, the last: {self.report[-1][1]}")

    def report_text(self, limit: int = 10) -> str:
        """The skipped files, one ``path: reason`` line each (the first ``limit``), for the user."""
        seen = dict(self.report)  # one line per file, latest reason
        lines = [f"skipped {len(seen)} of {len(self.entries) + len(seen)} files:"]
        lines += [
            f"  {why}" if why.startswith(path) else f"  {path}: {why}"
            for path, why in list(seen.items())[:limit]
        ]
        if len(seen) > limit:
            lines.append(f"  ... and {len(seen) - limit} more")
        return "\n".join(lines)


def training_dataset(
    data: str,
    sample_rate: int,
    crop_seconds: float,
    *,
    procedural_clips: int = 0,
    seed: int = 0,
    preload: bool = False,
    max_bad_fraction: float = 0.2,
    captioned: bool = False,
):
    """The audio a codec (or any audio model) trains on: a folder/manifest, or procedural music.

    Unusable files are listed (path and reason); above ``max_bad_fraction`` of them nothing trains.
    ``captioned``: only the clips with a caption (MuLaN; a corpus may mix captioned and bare audio).
    """
    from musiclm import checks

    checks.seconds(crop_seconds, "crop_seconds")
    checks.share(max_bad_fraction, "max_bad_fraction")
    if data == PROCEDURAL:
        checks.positive_int(procedural_clips, "--procedural-clips")
        from musiclm.data.procedural import ProceduralMusic

        return ProceduralMusic(procedural_clips, sample_rate, crop_seconds, seed=seed)
    from musiclm.data.datasets import AudioCropDataset
    from musiclm.data.manifest import load_entries
    from musiclm.errors import DataError

    source = data
    if captioned:
        entries = load_entries(data)
        source = [e for e in entries if e.caption.strip()]
        if not source:
            raise DataError(f"{data}: no captioned clips (of {len(entries)}); MuLaN learns from captions")
        if len(source) < len(entries):
            print(f"{data}: {len(source)} captioned clips of {len(entries)} (the others have no caption)")
    dataset = AudioCropDataset(
        source, sample_rate, crop_seconds, seed=seed, preload=preload, progress=preload
    )
    if dataset.report:
        print(dataset.report_text())
        skipped = len(dict(dataset.report))
        bad = skipped / (len(dataset.entries) + skipped)
        if bad > max_bad_fraction:
            raise DataError(
                f"{data}: {bad:.0%} of the files are unusable (limit {max_bad_fraction:.0%}, --max-bad-fraction)"
            )
    return dataset


def validation_clips(data: str, sample_rate: int, clips: int, *, seconds: float):
    """``[N, T]``: the first ``seconds`` of ``clips`` files spread evenly over a held-out set."""
    import torch

    from musiclm import checks
    from musiclm.audio import load_audio
    from musiclm.data.manifest import load_entries
    from musiclm.errors import DataError

    checks.seconds(seconds, "validation seconds")
    entries = load_entries(data)
    if not entries:
        raise DataError(f"{data}: no validation audio")
    picked = [
        entries[round(i * (len(entries) - 1) / max(clips - 1, 1))] for i in range(min(clips, len(entries)))
    ]
    n = round(seconds * sample_rate)
    out = []
    for e in picked:
        wav, _ = load_audio(e.path, sample_rate, offset=e.start or 0.0, duration=seconds)
        out.append(torch.nn.functional.pad(wav[:n], (0, n - min(n, wav.shape[-1]))))
    return torch.stack(out)
