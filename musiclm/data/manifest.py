"""Manifests: the list of (audio, caption, labels) a dataset is made of, as JSONL.

One JSON object per line: ``{"path", "caption", "start", "end", "labels", "id"}`` where only ``path``
is required; ``start``/``end`` (seconds) select a segment of a longer file. Importers turn a folder
with same-named ``.txt`` captions, a CSV with path/caption columns, or the MusicCaps CSV into
entries; relative paths resolve against the manifest's (or CSV's) folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from musiclm.audio import AUDIO_EXTENSIONS, find_audio_files
from musiclm.errors import DataError
from musiclm.files import write_text_atomic


@dataclass
class ManifestEntry:
    path: str
    caption: str = ""
    start: float | None = None
    end: float | None = None
    labels: dict = field(default_factory=dict)
    id: str = ""

    def __post_init__(self):
        if not self.id:
            self.id = Path(self.path).stem + (f"@{self.start:g}" if self.start is not None else "")


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Entries of a JSONL manifest; relative audio paths are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest")
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            entry = ManifestEntry(**obj)
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"{path}:{n}: invalid manifest line ({e})") from None
        if not Path(entry.path).is_absolute():
            entry.path = str(path.parent / entry.path)
        entries.append(entry)
    return entries


def write_manifest(path: str | Path, entries: list[ManifestEntry]) -> Path:
    """Write entries as JSONL (paths under the manifest's folder are stored relative to it), through a
    temporary name and a rename, so a manifest is never half-written."""
    path = Path(path)
    root = path.parent.resolve()
    lines = []
    for e in entries:
        obj = asdict(e)
        p = Path(e.path).resolve()
        obj["path"] = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        lines.append(json.dumps(obj) + "\n")
    return write_text_atomic(path, "".join(lines))


def from_folder(root: str | Path) -> list[ManifestEntry]:
    """Every audio file under ``root``; a same-named ``.txt`` next to it is its caption."""
    entries = []
    for audio in find_audio_files(root):
        txt = audio.with_suffix(".txt")
        caption = txt.read_text().strip() if txt.is_file() else ""
        entries.append(ManifestEntry(path=str(audio), caption=caption))
    return entries


def from_csv(
    path: str | Path, path_column: str = "path", caption_column: str = "caption"
) -> list[ManifestEntry]:
    """A CSV with at least a path column (and usually a caption column)."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and path_column not in rows[0]:
        raise DataError(f"{path}: no {path_column!r} column (columns: {list(rows[0])})")
    entries = []
    for row in rows:
        p = Path(row[path_column])
        entries.append(
            ManifestEntry(
                path=str(p if p.is_absolute() else path.parent / p), caption=row.get(caption_column, "") or ""
            )
        )
    return entries


def from_musiccaps(csv_path: str | Path, audio_dir: str | Path) -> tuple[list[ManifestEntry], list[str]]:
    """MusicCaps CSV (``ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,...``) onto a
    folder of downloaded clips. A clip may be named ``<ytid>.<ext>`` (the 10 s clip itself) or
    ``<ytid>_<start>-<end>.<ext>`` / ``[<ytid>]...`` ; returns (entries, ids of missing clips)."""
    audio_dir = Path(audio_dir)
    files = find_audio_files(audio_dir) if audio_dir.is_dir() else []
    by_id: dict[str, Path] = {}
    for f in files:
        stem = f.stem
        for key in (stem, stem.split("_")[0], stem.strip("[]").split("]")[0]):
            by_id.setdefault(key, f)
    entries, missing = [], []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            ytid = row.get("ytid", "")
            clip = by_id.get(ytid) or by_id.get(f"{ytid}_{row.get('start_s')}-{row.get('end_s')}")
            if clip is None:
                missing.append(ytid)
                continue
            whole_file = clip.stem == ytid or "_" in clip.stem
            labels = {
                "aspects": _parse_list(row.get("aspect_list", "")),
                "audioset": [
                    s.strip() for s in row.get("audioset_positive_labels", "").split(",") if s.strip()
                ],
            }
            for key in ("is_balanced_subset", "is_audioset_eval"):
                if key in row:
                    labels[key] = row[key].strip().lower() == "true"
            entries.append(
                ManifestEntry(
                    path=str(clip),
                    caption=row.get("caption", ""),
                    labels=labels,
                    id=ytid,
                    start=None if whole_file else float(row.get("start_s", 0) or 0),
                    end=None if whole_file else float(row.get("end_s", 0) or 0) or None,
                )
            )
    return entries, missing


def _parse_list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        try:
            return [str(x) for x in json.loads(text.replace("'", '"'))]
        except json.JSONDecodeError:
            pass
    return [s.strip(" '\"") for s in text.strip("[]").split(",") if s.strip(" '\"")]


def load_entries(source: str | Path | list[ManifestEntry]) -> list[ManifestEntry]:
    """Entries from a ``.jsonl`` manifest, a ``.csv`` (path/caption), a folder, or a single audio file."""
    if isinstance(source, list):
        return source
    source = Path(source)
    if source.is_dir():
        entries = from_folder(source)
    elif source.suffix == ".jsonl":
        entries = read_manifest(source)
    elif source.suffix == ".csv":
        entries = from_csv(source)
    elif source.suffix.lower() in AUDIO_EXTENSIONS and source.is_file():
        entries = [ManifestEntry(path=str(source))]
    else:
        raise DataError(f"{source}: not an audio folder, a .jsonl manifest, a .csv or an audio file")
    if not entries:
        raise DataError(f"{source}: no audio found")
    return entries


def check_held_out(train_paths, valid_paths, *, train: str, valid: str) -> None:
    """Refuse a validation set that shares a file with the training set: a best checkpoint chosen on
    clips it trained on is chosen for memorising them. ``train`` / ``valid`` name the sets (flags)."""
    seen = {str(Path(p).resolve()) for p in train_paths}
    shared = [p for p in valid_paths if str(Path(p).resolve()) in seen]
    if shared:
        raise DataError(
            f"{valid}: {len(shared)} of its {len(valid_paths)} clips are in the training data {train} "
            f"(first: {shared[0]}); validate on held-out files"
        )


def check_held_out_data(data: str, valid: str | None, *, flags: str = "--data / --valid") -> None:
    """:func:`check_held_out` for two data sources (folder, manifest, CSV; procedural music has no files)."""
    from musiclm.data import PROCEDURAL

    if valid is None or PROCEDURAL in (data, valid):
        return
    train_paths = [e.path for e in load_entries(data)]
    check_held_out(
        train_paths, [e.path for e in load_entries(valid)], train=str(data), valid=f"{valid} ({flags})"
    )


def same_recordings(files: list[str]) -> dict[str, str]:
    """Each file -> the first (sorted) file of the same bytes: a copy or a link of one recording,
    under whatever name, is one recording. Only files that share a size are read."""
    by_size: dict[object, list[str]] = {}
    for f in sorted(files):
        try:
            size: object = os.path.getsize(f)
        except OSError:  # missing: its own group (training reports it)
            size = ("unreadable", f)
        by_size.setdefault(size, []).append(f)
    first = {}
    for group in by_size.values():
        if len(group) == 1:  # a size of its own: nothing to read
            first[group[0]] = group[0]
            continue
        by_digest: dict[str, list[str]] = {}
        for f in group:
            with open(f, "rb") as handle:
                by_digest.setdefault(hashlib.file_digest(handle, "sha256").hexdigest(), []).append(f)
        for members in by_digest.values():
            first.update({f: members[0] for f in members})
    return first


def dataset_summary(source: str | Path | list[ManifestEntry], min_seconds: float = 0.1) -> dict:
    """Usable clips, hours, captioned clips, the unusable files with the reason (from headers; the
    training datasets' rule: readable and at least ``min_seconds`` long), and how many usable files
    are copies of another (:func:`same_recordings`: only files of one size are read)."""
    from musiclm.audio import audio_info
    from musiclm.errors import AudioError

    clips, seconds, captioned, skipped, usable = 0, 0.0, 0, [], []
    for e in load_entries(source):
        try:
            _, total = audio_info(e.path)
        except AudioError as err:
            skipped.append((e.path, str(err).removeprefix(f"{e.path}: ")))
            continue
        span = min(e.end, total) if e.end is not None else total
        span -= e.start or 0.0
        if span < min_seconds:
            skipped.append((e.path, f"only {max(span, 0):.2f} s of audio"))
            continue
        clips, seconds, captioned = clips + 1, seconds + span, captioned + bool(e.caption)
        usable.append(e.path)
    files = sorted(set(usable))
    recordings = len(set(same_recordings(files).values()))
    return {
        "clips": clips,
        "hours": seconds / 3600,
        "captioned": captioned,
        "skipped": skipped,
        "files": len(files),
        "copies": len(files) - recordings,  # files whose bytes another file already holds
    }
