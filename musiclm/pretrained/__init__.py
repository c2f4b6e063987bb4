"""The models and example audio that ship inside the package (they load offline)."""

from __future__ import annotations

from pathlib import Path

from musiclm.errors import CheckpointError

ROOT = Path(__file__).resolve().parent
DEFAULT_COMPONENTS = {"codec": "codec-tiny"}


def default_component(name: str) -> Path:
    """Directory of the shipped checkpoint for a component (``codec``, ...)."""
    if name not in DEFAULT_COMPONENTS:
        raise CheckpointError(f"no shipped default for {name!r}; available: {sorted(DEFAULT_COMPONENTS)}")
    path = ROOT / DEFAULT_COMPONENTS[name]
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: the shipped {name} checkpoint is missing from this installation")
    return path


def example_audio() -> Path:
    """A short procedurally rendered clip used by ``musiclm demo``."""
    return ROOT / "example.wav"
