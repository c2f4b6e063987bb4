"""Model checkpoints: one directory with ``config.json`` + ``model.safetensors``.

A model class registers under a *kind* (``@register_model("codec")``); it must take its dataclass
config as the only constructor argument and keep it as ``self.config``. A model with files besides
its tensors (a tokenizer vocabulary) implements ``save_assets(dir)`` / ``load_assets(dir)``. ``load_model`` rebuilds the
model from the JSON config alone, so a checkpoint never needs the training code's state.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from musiclm.config import config_diff, config_from_dict, config_to_dict
from musiclm.errors import CheckpointError, ConfigError

PLAIN_FORMAT = 1  # what a checkpoint of floating-point (and integer) tensors alone is written as
INT8_ROWS_FORMAT = 2  # one with int8 rows, each scaled by its ROW_SCALE tensor (compact bundles)
FORMAT_VERSION = INT8_ROWS_FORMAT  # the newest format this code reads
ROW_SCALE = ".row_scale"  # key suffix of an int8 tensor's per-row scales: value = int8 * scale
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

_REGISTRY: dict[str, type[nn.Module]] = {}
# where each of the package's kinds is defined: loading one imports that module alone (loading a
# codec need not import scikit-learn, transformers or the LMs)
BUILTIN_KINDS = {
    "codec": "musiclm.codec.soundstream",
    "hf_encodec": "musiclm.codec.encodec",
    "semantic": "musiclm.semantic.tokenizer",
    "hf_semantic": "musiclm.semantic.hf",
    "mulan": "musiclm.mulan.model",
    "hf_clap": "musiclm.mulan.hf",
    "loudness": "musiclm.mulan.loudness",
    "prototypes": "musiclm.mulan.prototypes",
    "melody": "musiclm.melody.model",
    "semantic_lm": "musiclm.lm.stages",
    "coarse_lm": "musiclm.lm.stages",
    "fine_lm": "musiclm.lm.stages",
    "label_classifier": "musiclm.eval.classifiers",
}
# kinds that can stand in for a component besides its own: the transformers adapters
ADAPTER_KINDS = {"codec": ("hf_encodec",), "semantic": ("hf_semantic",), "mulan": ("hf_clap",)}


def component_kinds(component: str) -> tuple[str, ...]:
    """The checkpoint kinds that can serve as ``component`` (its own, then its adapters)."""
    return (component, *ADAPTER_KINDS.get(component, ()))


M = TypeVar("M", bound=type[nn.Module])


def register_model(kind: str) -> Callable[[M], M]:
    """Class decorator: make ``load_model`` able to rebuild this class from its ``kind``."""

    def wrap(cls: M) -> M:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"model kind {kind!r} registered twice")
        _REGISTRY[kind] = cls
        cls.checkpoint_kind = kind  # type: ignore[attr-defined]
        return cls

    return wrap


def _config_class(cls: type[nn.Module]) -> type:
    hint = cls.__init__.__annotations__.get("config")
    if isinstance(hint, str):
        import typing

        hint = typing.get_type_hints(cls.__init__)["config"]
    if hint is None:
        raise TypeError(f"{cls.__name__}.__init__ must annotate its `config` argument")
    return hint


def save_model(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``directory`` atomically (a crash never leaves half a checkpoint)."""
    kind = getattr(type(model), "checkpoint_kind", None)
    if kind is None:
        raise TypeError(f"{type(model).__name__} is not registered with @register_model")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700: give the checkpoint the usual permissions
    try:
        packaged = packaged_weights(model)
        state = {
            k: v.detach().contiguous().cpu()
            for k, v in model.state_dict().items()
            if not k.startswith(packaged)
        }
        save_file(dedupe_shared(state), str(tmp / WEIGHTS_FILE), metadata={"kind": kind})
        meta = {
            "kind": kind,
            "format_version": PLAIN_FORMAT,
            "config": config_to_dict(model.config),
            **(metadata or {}),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if hasattr(model, "save_assets"):  # e.g. a text tokenizer's vocabulary
            model.save_assets(tmp)
        for f in tmp.iterdir():  # safetensors writes 0600
            f.chmod(0o666 & ~umask)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): store a copy of each duplicate."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def int8_rows(model: nn.Module) -> tuple[str, ...]:
    """Names of ``model``'s tensors that compact storage (``make_bundle(half=True)``) may keep as int8
    rows: banks of embeddings read by their direction, which 8 bits a value keep (the shipped banks'
    rows to a cosine of 0.99994 or more: benchmarks/README.md, "Compact storage")."""
    return tuple(getattr(model, "int8_rows", ()))


def quantize_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(int8 [R, D], float32 [R, 1] scales)``: each row scaled so that its largest value is 127."""
    tensor = tensor.float()
    scale = tensor.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127
    return torch.round(tensor / scale).to(torch.int8), scale


def dequantize_rows(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``state`` with each int8 tensor that has ``ROW_SCALE`` scales turned back into float32."""
    out = dict(state)
    for key in [k for k in state if k.endswith(ROW_SCALE)]:
        name, scale = key.removesuffix(ROW_SCALE), out.pop(key)
        values = out.get(name)
        if values is None or values.dtype != torch.int8 or scale.shape != (*values.shape[:-1], 1):
            raise CheckpointError(f"{where}: {key} does not scale an int8 tensor {name}")
        out[name] = values.float() * scale.float()
    return out


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory (kind, format_version, config, ...)."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE})")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None
    if not isinstance(meta, dict) or "kind" not in meta or "config" not in meta:
        raise CheckpointError(f"{cfg_path}: missing 'kind' or 'config'")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: written by a newer musiclm (format {meta['format_version']})")
    return meta


def load_model(
    directory: str | Path,
    kind: str | tuple[str, ...] | None = None,
    expected_config: Any | None = None,
    *,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a registered model from ``directory``, in eval mode.

    ``kind`` (one kind or a tuple of accepted kinds) and ``expected_config``, when given, must match
    what the checkpoint holds; a mismatch
    raises :class:`CheckpointError` naming the differing fields.
    """
    directory = Path(directory)
    meta = read_checkpoint_config(directory)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and meta["kind"] not in kinds:
        expected = " or ".join(repr(k) for k in kinds)
        raise CheckpointError(f"{directory}: holds a {meta['kind']!r} model, expected {expected}")
    cls = _REGISTRY.get(meta["kind"])
    if cls is None:
        _import_builtin_model(meta["kind"])
        cls = _REGISTRY.get(meta["kind"])
    if cls is None:
        raise CheckpointError(f"{directory}: unknown model kind {meta['kind']!r}")
    try:
        config = config_from_dict(_config_class(cls), meta["config"], where=str(directory / CONFIG_FILE))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except ValueError as e:  # a config's own check of its values (__post_init__)
        raise CheckpointError(f"{directory / CONFIG_FILE}: {e}") from None
    if expected_config is not None:
        diff = config_diff(config, expected_config)
        if diff:
            raise CheckpointError(f"{directory}: config does not match: " + "; ".join(diff[:5]))
    try:
        model = cls(config)
    except ValueError as e:  # a value out of range in a hand-edited config: one line, not a traceback
        raise CheckpointError(f"{directory / CONFIG_FILE}: {e}") from None
    if hasattr(model, "load_assets"):
        model.load_assets(directory)
    load_weights(model, directory / WEIGHTS_FILE, map_location)
    return model.eval()


def load_tensors(directory: str | Path, kinds: tuple[str, ...], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` (prefix removed) of a checkpoint of one of ``kinds``, read without
    building its model: a part such as MuLaN's RVQ, without the text tower's weights and packages."""
    from safetensors import safe_open

    directory = Path(directory)
    meta = read_checkpoint_config(directory)
    if meta["kind"] not in kinds:
        raise CheckpointError(f"{directory}: holds a {meta['kind']!r} model, expected {' or '.join(kinds)}")
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing")
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    state = {k.removeprefix(prefix): v for k, v in dequantize_rows(state, str(path)).items()}
    if not state:
        raise CheckpointError(f"{path}: holds no tensors under {prefix!r}")
    return state


def load_weights(model: nn.Module, path: str | Path, map_location: str | torch.device = "cpu") -> None:
    """Load a safetensors file into ``model`` strictly, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing")
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    state = dequantize_rows(state, str(path))
    own = model.state_dict()
    from_package = {k for k in set(own) - set(state) if k.startswith(packaged_weights(model))}
    missing = sorted(set(own) - set(state) - from_package)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit {type(model).__name__} "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: {k} has shape {list(v.shape)}, model expects {list(own[k].shape)}"
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: {k} holds NaN or infinite weights (a corrupt checkpoint)")
    model.load_state_dict(state, strict=not from_package)


def packaged_weights(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of weights the model loads from an installed package when it is built (a
    frozen pretrained encoder): checkpoints leave them out, so a bundle does not carry a copy."""
    return tuple(getattr(model, "packaged_weights", ()))


def _import_builtin_model(kind: str) -> None:
    """Import the module that defines ``kind`` so its ``@register_model`` decorator runs."""
    import importlib

    if kind in BUILTIN_KINDS:
        importlib.import_module(BUILTIN_KINDS[kind])
