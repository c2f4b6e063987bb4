"""Token caches: precomputed tokens of a manifest, one folder of shards per field.

    CACHE/index.json                 ids, captions and segments of every item (in order)
    CACHE/<field>/shard-00000.safetensors   that field's tensors for items [0, shard_size)
    CACHE/<field>/shard-00000.done           written last: the shard is complete

A field (``codec``, ``semantic``, ``mulan_tokens``...) is computed by a registered extractor, so
adding a field to an existing cache computes only that field, and a rerun skips finished shards.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from musiclm.errors import DataError
from musiclm.files import atomic_write, write_text_atomic

INDEX = "index.json"


class TokenCache:
    """Read access: ``len(cache)``, ``cache.fields``, ``cache[i] -> {"id", "caption", field: tensor...}``."""

    def __init__(self, path: str | Path, fields: list[str] | None = None):
        self.path = Path(path)
        index = self.path / INDEX
        if not index.is_file():
            raise DataError(f"{self.path}: not a token cache (no {INDEX}); build one with 'musiclm tokenize'")
        meta = json.loads(index.read_text())
        self.items: list[dict] = meta["items"]
        self.shard_size: int = meta["shard_size"]
        available = [p.name for p in self.path.iterdir() if p.is_dir() and self._complete(p.name)]
        self.fields = fields or sorted(available)
        missing = sorted(set(self.fields) - set(available))
        if missing:
            raise DataError(
                f"{self.path}: field(s) {missing} missing or incomplete; run 'musiclm tokenize' again"
            )
        bad = {
            i
            for f in self.fields
            for p in (self.path / f).glob("skipped-*.json")
            for i in json.loads(p.read_text())
        }
        self.skipped = sorted(bad)
        self.positions = [i for i, item in enumerate(self.items) if item["id"] not in bad]
        self._shards: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    def source(self, field: str) -> dict:
        """Which model made ``field`` (:func:`claim_field`'s record; empty for a cache written before
        they were recorded)."""
        record = self.path / field / SOURCE
        return json.loads(record.read_text()) if record.is_file() else {}

    def num_shards(self) -> int:
        return -(-len(self.items) // self.shard_size)

    def _complete(self, field: str) -> bool:
        return all((self.path / field / f"shard-{s:05d}.done").is_file() for s in range(self.num_shards()))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        i = self.positions[i]
        item = self.items[i]
        out = {"id": item["id"], "caption": item.get("caption", "")}
        shard = i // self.shard_size
        for field in self.fields:
            key = (field, shard)
            if key not in self._shards:
                if len(self._shards) > 64:
                    self._shards.clear()
                self._shards[key] = load_file(str(self.path / field / f"shard-{shard:05d}.safetensors"))
            out[field] = self._shards[key][item["id"]]
        return out


class PooledTokenCaches:
    """Several token caches read as one, e.g. a first data set and what was added since: their clips
    are pooled without copying or re-tokenizing either."""

    def __init__(self, caches: list[TokenCache]):
        self.caches = caches
        self.ends = list(itertools.accumulate(len(c) for c in caches))

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} of a pool of {len(self)}")
        k = bisect.bisect_right(self.ends, i)
        return self.caches[k][i - (self.ends[k - 1] if k else 0)]


def open_token_caches(
    paths: list[str | Path], fields: list[str] | None = None
) -> TokenCache | PooledTokenCaches:
    """One token cache, or the pool of several (each checked like one; none given twice)."""
    seen: dict[Path, str | Path] = {}
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            raise DataError(f"{p}: token cache given twice (as {seen[key]})")
        seen[key] = p
    caches = [TokenCache(p, fields=fields) for p in paths]
    check_same_models(caches)
    return caches[0] if len(caches) == 1 else PooledTokenCaches(caches)


def check_same_models(caches: list[TokenCache]) -> None:
    """Caches read together (pooled, or training and validation) hold each field from one model:
    tokens of two semantic tokenizers or two codecs share ids but not meanings."""
    for field in sorted(set().union(*(c.fields for c in caches))):
        made = {}
        for cache in caches:
            record = cache.source(field) if field in cache.fields else {}
            if record.get("fingerprint"):
                made.setdefault(record["fingerprint"], (cache.path, record.get("model", "?")))
        if len(made) > 1:
            (a, model_a), (b, model_b) = list(made.values())[:2]
            raise DataError(
                f"{a} and {b}: field {field} was made by different models ({model_a}, {model_b}); "
                "read caches of one set of components together"
            )


def write_index(path: Path, items: list[dict], shard_size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    index = path / INDEX
    meta = {"items": items, "shard_size": shard_size}
    if index.is_file():
        old = json.loads(index.read_text())
        if _same_files(old) != _same_files(meta):
            raise DataError(f"{path}: holds a cache of other items; use another output folder")
        return  # (a cache written with relative paths keeps them)
    write_text_atomic(index, json.dumps(meta) + "\n")


def _same_files(meta: dict) -> dict:
    """An index with each item's path resolved: one spelled relative to the folder it was made in
    and one spelled absolute are the same cache."""
    items = [{**item, "path": str(Path(item["path"]).resolve())} for item in meta.get("items", [])]
    return {**meta, "items": items}


def held_out_paths(cache: TokenCache) -> list[str]:
    """The files of a cache's clips as far as they are known: absolute paths (caches written before
    paths were stored resolved hold paths relative to a folder no longer known, and are left out)."""
    return [item["path"] for item in cache.items if Path(item["path"]).is_absolute()]


SOURCE = "source.json"


def model_fingerprint(model: torch.nn.Module) -> str:
    """What made a field: the model's class, config and the weights that make its tokens (its
    ``token_state_dict()`` where it has one, e.g. a codec's encoder and codebooks; else every weight),
    hashed at float16 precision. Two runs with the same component agree; another codec or a retrained
    tokenizer differs."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    digest.update(repr(getattr(model, "config", None)).encode())
    state = model.token_state_dict() if hasattr(model, "token_state_dict") else model.state_dict()
    for name, tensor in sorted(state.items()):
        # at float16 precision: a checkpoint and its float16 copy in a compact bundle are one model
        tensor = tensor.detach().cpu().reshape(-1)
        tensor = tensor.to(torch.float16) if tensor.is_floating_point() else tensor
        digest.update(f"{name}:{tuple(state[name].shape)}".encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def claim_field(path: Path, field: str, fingerprint: str, what: str) -> None:
    """Record which model fills ``field`` (``what`` names it for the user), or refuse a different one:
    a rerun skips finished shards, so another model's tokens would otherwise be mixed in silently.
    A field written before fingerprints were recorded is taken as it is."""
    folder = path / field
    record = folder / SOURCE
    if record.is_file():
        old = json.loads(record.read_text())
        if old.get("fingerprint") != fingerprint:
            raise DataError(
                f"{path}: field {field} was made by another model ({old.get('model', '?')}, not {what}); "
                f"use another --out, or delete {folder} to make it again"
            )
        return
    if folder.is_dir() and any(folder.glob("shard-*.done")):
        return
    write_text_atomic(record, json.dumps({"model": what, "fingerprint": fingerprint}) + "\n")


def fill_field(
    path: Path,
    field: str,
    items: list[dict],
    *,
    shard_size: int,
    extract: Callable[[dict], torch.Tensor | None],
    shards: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[str, str]]:
    """Compute ``field`` for every item of the unfinished shards (or only ``shards``).

    ``extract(item)`` returns the tensor, or raises a MusicLMError for a bad item, which is reported
    and left out of the cache (listed in the field's ``skipped-*.json``). Returns the skipped (id, reason).
    """
    from musiclm.errors import MusicLMError

    folder = path / field
    folder.mkdir(parents=True, exist_ok=True)
    skipped = []
    all_shards = range(-(-len(items) // shard_size))
    for s in shards if shards is not None else all_shards:
        done = folder / f"shard-{s:05d}.done"
        if done.is_file():
            if progress:
                progress(len(items[s * shard_size : (s + 1) * shard_size]))
            continue
        tensors, bad = {}, []
        for item in items[s * shard_size : (s + 1) * shard_size]:
            try:
                tensors[item["id"]] = extract(item).contiguous()
            except MusicLMError as e:
                skipped.append((item["id"], str(e)))
                bad.append(item["id"])
                tensors[item["id"]] = torch.zeros(0, dtype=torch.long)
            if progress:
                progress(1)
        with atomic_write(folder / f"shard-{s:05d}.safetensors") as tmp:  # whole, even beside another run
            save_file(tensors, str(tmp))
        write_text_atomic(folder / f"skipped-{s:05d}.json", json.dumps(bad) + "\n")
        write_text_atomic(done, "ok\n")
    return skipped
