"""Argument checks shared by the Python API, the CLI and the trainers: one-line errors before any work.

Each check returns the (normalised) value or raises a :class:`~musiclm.errors.MusicLMError` subclass
whose message names the argument, so the CLI prints one line and a server can answer 4xx.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from musiclm.errors import ConfigError, MusicLMError, PromptError

MAX_SEED = 2**64 - 1


def positive_int(value, what: str, error: type[MusicLMError] = ConfigError) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{what} must be a positive integer, got {value!r}")
    return value


def positive_float(value, what: str, error: type[MusicLMError] = ConfigError) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise error(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def top_k(value: int | None) -> int | None:
    return None if value is None else positive_int(value, "top_k", PromptError)


def top_p(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise PromptError(f"top_p must lie in (0, 1], got {value!r}")
    return float(value)


def guidance(value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise PromptError(f"guidance must be a finite number >= 0 (1 = off), got {value!r}")
    return float(value)


def seed(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise PromptError(f"seed must be an integer in [0, 2**64 - 1], got {value!r}")
    return value


def device(value: str | None):
    """A torch device that exists on this machine (``None``: the GPU if there is one, else the CPU)."""
    import torch

    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {value!r} (use cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {value!r}: this torch build or machine has no CUDA GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {value!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {value!r}: MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {value!r} is not supported (use cpu, cuda or mps)")
    return dev


def writable_file(path: str | Path, what: str = "output") -> Path:
    """Check that ``path`` can be written (its folder made if needed) before any work starts."""
    path = Path(path)
    if path.is_dir():
        raise MusicLMError(f"{path}: the {what} is a directory, not a file")
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise MusicLMError(f"{path}: cannot write the {what}: {p} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as e:
        raise MusicLMError(f"{path}: cannot write the {what} ({e.strerror or e})") from None
    return path


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check that folder ``path`` exists or can be made, and that files can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MusicLMError(f"{path}: the {what} is a file, not a folder")
    writable_file(path / ".musiclm-write-check", what)
    return path


def not_same_file(output: str | Path, inputs: list[str | Path | None]) -> None:
    """Refuse an output (or its .json sidecar) that would overwrite one of the inputs."""
    out = Path(output).resolve()
    for i in inputs:
        if i is None:
            continue
        src = Path(i).resolve()
        if src in (out, out.with_suffix(".json"), out.with_suffix(".png")):
            raise MusicLMError(f"{output}: the output would overwrite the input {i}")
