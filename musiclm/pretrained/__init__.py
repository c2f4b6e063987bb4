"""The models and example audio that ship inside the package (they load offline)."""

from __future__ import annotations

import json
from pathlib import Path

from musiclm.errors import CheckpointError

ROOT = Path(__file__).resolve().parent
DEFAULT_COMPONENTS = {
    "codec": "musiclm-tiny/codec",
    "semantic": "musiclm-tiny/semantic",
    "mulan": "musiclm-tiny/mulan",
    "melody": "musiclm-tiny/melody",
    "semantic_lm": "musiclm-tiny/semantic_lm",
    "coarse_lm": "musiclm-tiny/coarse_lm",
    "fine_lm": "musiclm-tiny/fine_lm",
    "loudness": "musiclm-tiny/loudness",
}
BUNDLES = {"default": "musiclm-tiny", "musiclm-tiny": "musiclm-tiny"}
BUNDLE_FILE = "musiclm.json"  # a bundle's manifest: {"name": ..., "components": {component: directory}}


def read_bundle_file(root: Path) -> dict:
    """A bundle directory's manifest, its ``components`` checked to be a mapping (one-line error)."""
    try:
        meta = json.loads((root / BUNDLE_FILE).read_text())
        dict(meta["components"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{root / BUNDLE_FILE}: invalid bundle file ({e})") from None
    return meta


def default_component(name: str) -> Path:
    """Directory of the shipped checkpoint for a component (``codec``, ...)."""
    if name not in DEFAULT_COMPONENTS:
        raise CheckpointError(f"no shipped default for {name!r}; available: {sorted(DEFAULT_COMPONENTS)}")
    path = ROOT / DEFAULT_COMPONENTS[name]
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: the shipped {name} checkpoint is missing from this installation")
    return path


def component_path(path: str | Path | None, name: str) -> str | Path:
    """The checkpoint of component ``name``: the shipped one for ``'default'`` (or none), the bundle's
    own where ``path`` is a bundle directory (so ``--init my-bundle`` works as ``--init default``
    does), else ``path`` as given."""
    if path in (None, "default"):
        return default_component(name)
    if not (Path(path) / BUNDLE_FILE).is_file():
        return path
    components = read_bundle_file(Path(path))["components"]
    if name not in components:
        raise CheckpointError(f"{path}: the bundle has no {name} (it has {', '.join(sorted(components))})")
    return Path(path) / components[name]


def shipped_bundles() -> list[str]:
    """Names of the MusicLM bundles that ship with the package."""
    return sorted(k for k in BUNDLES if k != "default")


def default_bundle(name: str = "default") -> Path:
    """Directory of a shipped MusicLM bundle (``default`` = the tiny one)."""
    if name not in BUNDLES:
        raise CheckpointError(f"no shipped bundle {name!r}; available: {', '.join(BUNDLES)}")
    path = ROOT / BUNDLES[name]
    if not (path / BUNDLE_FILE).is_file():
        raise CheckpointError(f"{path}: the shipped {name} bundle is missing from this installation")
    return path


def example_audio() -> Path:
    """A short procedurally rendered clip used by ``musiclm demo``."""
    return ROOT / "example.wav"
