"""Files written whole or not at all: through a temporary name in the same folder, then a rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that read the format from it
    still do) for the caller to write; on success it is renamed to ``path``, on any failure removed.
    The folder is made here: the checks before a run (``checks.writable_file``) leave none behind.
    A reader never sees half a file, and a crash never leaves one under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file through a temporary name and a rename."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)
