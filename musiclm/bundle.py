"""MusicLM bundles: the component checkpoints of one model, side by side, plus ``musiclm.json``.

    musiclm.json   {"name": ..., "components": {"codec": "codec", "semantic": "semantic", ...}}
    codec/ semantic/ mulan/ [melody/] semantic_lm/ coarse_lm/ fine_lm/ [loudness/] [prototypes/]

Each component directory is an ordinary checkpoint (``config.json`` + safetensors) whose kind is the
component's name, or for the codec, semantic tokenizer and MuLaN one of the ``transformers``
adapters that stand in for them (EnCodec, HuBERT / w2v-BERT + k-means, CLAP + RVQ). This module owns the format: which components a bundle has, loading them,
refusing sets that were not made for each other, and writing a bundle atomically. Generation lives
in :mod:`musiclm.pipeline`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from musiclm import checks
from musiclm.config import CONDITIONING_SOURCES
from musiclm.errors import CheckpointError, ConfigError
from musiclm.pretrained import BUNDLE_FILE, default_bundle, read_bundle_file, shipped_bundles

if TYPE_CHECKING:  # torch loads only when a bundle does: the CLI lists the components without it
    from torch import nn

# every component of a bundle; each name is also the checkpoint kind of its directory
COMPONENTS = (
    "codec", "semantic", "mulan", "melody", "semantic_lm", "coarse_lm", "fine_lm", "loudness", "prototypes",
)  # fmt: skip
OPTIONAL = frozenset({"melody", "loudness", "prototypes"})
LM_COMPONENTS = ("semantic_lm", "coarse_lm", "fine_lm")  # in the order of per-stage temperatures


def resolve_bundle(name_or_path: str | Path) -> Path:
    """A bundle directory from a path or the name of a shipped bundle (``default``)."""
    path = Path(name_or_path)
    if (path / BUNDLE_FILE).is_file():
        return path
    if str(name_or_path) in ("default", *shipped_bundles()):
        return default_bundle(str(name_or_path))
    if path.exists():
        raise CheckpointError(f"{path}: not a MusicLM bundle (no {BUNDLE_FILE})")
    raise CheckpointError(
        f"unknown model {str(name_or_path)!r}: give a bundle directory or one of "
        f"{', '.join(['default', *shipped_bundles()])}"
    )


def _check_names(names, where: str) -> None:
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise CheckpointError(f"{where}: unknown components {unknown}")
    missing = [c for c in COMPONENTS if c not in OPTIONAL and c not in names]
    if missing:
        raise CheckpointError(f"{where}: a bundle needs {', '.join(missing)}")


def load_bundle(name_or_path: str | Path) -> tuple[str, dict[str, nn.Module]]:
    """``(name, {component: module})`` of a bundle directory or shipped bundle name."""
    root = resolve_bundle(name_or_path)
    meta = read_bundle_file(root)
    names = meta["components"]
    _check_names(names, str(root))
    from musiclm.checkpoint import component_kinds, load_model

    components = {k: load_model(root / v, kind=component_kinds(k)) for k, v in names.items()}
    return meta.get("name", root.name), components


def _same_codebooks(lm_codebooks, mulan: nn.Module, levels: int) -> bool:
    """Whether an LM's codebook embedding holds ``mulan``'s first ``levels`` RVQ codebooks (within
    float16 storage)."""
    import torch

    from musiclm.lm.codebook_embedding import quantizer_codebooks

    quantizer = getattr(mulan, "quantizer", None)
    if quantizer is None:
        return False
    theirs = quantizer_codebooks(quantizer, levels).float()
    return theirs.shape == lm_codebooks.shape and torch.allclose(
        lm_codebooks.float(), theirs, rtol=1e-2, atol=1e-3
    )


# which component of a bundle makes each token-cache field an LM can be trained on
FIELD_COMPONENTS = {
    "codec": "codec",
    "semantic": "semantic",
    "mulan_tokens": "mulan",
    "mulan_text_tokens": "mulan",
    "melody_tokens": "melody",
}


def check_token_sources(metas: dict[str, dict], models: dict[str, nn.Module], name: str = "musiclm") -> None:
    """Each LM was trained on tokens of the components beside it in the bundle, by the fingerprints
    its checkpoint records (:func:`musiclm.data.cache.model_fingerprint`): an LM trained on another
    codec's codes has the same shapes and plays noise. LMs that record none are taken as they are."""
    from musiclm.data.cache import model_fingerprint

    prints: dict[str, str] = {}
    for key in LM_COMPONENTS:
        for field, record in (metas.get(key) or {}).get("token_sources", {}).items():
            part = FIELD_COMPONENTS.get(field)
            if part is None or models.get(part) is None:
                continue
            if part not in prints:
                prints[part] = model_fingerprint(models[part])
            if prints[part] != record.get("fingerprint"):
                raise CheckpointError(
                    f"{name}: the {key} was trained on {field} tokens of another {part} "
                    f"({record.get('model', '?')}) than the bundle's; bundle that {part}, or tokenize "
                    "with this one and train the LM again"
                )


def check_compatible(components: dict[str, nn.Module], name: str = "musiclm") -> None:
    """Refuse, in one line, components that were not made for each other."""
    codec, semantic, mulan, melody = (components.get(k) for k in ("codec", "semantic", "mulan", "melody"))
    sem, coarse, fine = (components[k].config for k in ("semantic_lm", "coarse_lm", "fine_lm"))
    problems = []

    def expect(what: str, got, want) -> None:
        if got != want:
            problems.append(f"{what} is {got}, expected {want}")

    expect("coarse LM codec levels", coarse.codec_levels, codec.num_quantizers)
    expect("fine LM codec levels", fine.codec_levels, codec.num_quantizers)
    expect("coarse LM coarse levels", coarse.coarse_levels, fine.coarse_levels)
    codebook = getattr(codec, "codebook_size", None) or getattr(
        getattr(codec, "config", None), "codebook_size", None
    )
    if codebook is not None:
        expect("coarse LM codec codebook", coarse.codec_codebook, codebook)
        expect("fine LM codec codebook", fine.codec_codebook, codebook)
    expect("coarse LM frame rate", round(coarse.frame_rate, 3), round(codec.frame_rate, 3))
    clusters = semantic.config.num_clusters  # own tokenizer and adapter alike
    expect("semantic LM vocabulary", sem.semantic_clusters, clusters)
    expect("coarse LM semantic vocabulary", coarse.semantic_clusters, clusters)
    expect("semantic LM token rate", round(sem.semantic_rate, 3), round(semantic.frame_rate, 3))
    expect("coarse LM semantic rate", round(coarse.semantic_rate, 3), round(semantic.frame_rate, 3))
    for stage, cfg in (("semantic", sem), ("coarse", coarse)):
        expect(f"{stage} LM MuLaN tokens", cfg.mulan_quantizers, mulan.config.num_quantizers)
        expect(f"{stage} LM MuLaN codebook", cfg.mulan_codebook, mulan.config.codebook_size)
        lm_codebooks = getattr(components[f"{stage}_lm"], "mulan_embedding", None)
        if lm_codebooks is not None and not _same_codebooks(lm_codebooks.codebooks, mulan, cfg.mulan_read):
            problems.append(f"the {stage} LM embeds the codebooks of another MuLaN than the bundle's")
        if not cfg.melody_quantizers:
            continue
        if melody is None:
            problems.append(f"the {stage} LM is melody-conditioned but the bundle has no melody model")
            continue
        expect(f"{stage} LM melody tokens", cfg.melody_quantizers, melody.config.num_quantizers)
        expect(f"{stage} LM melody codebook", cfg.melody_codebook, melody.config.codebook_size)
        expect(f"{stage} LM melody hop", cfg.melody_hop_seconds, melody.config.hop_seconds)
    prototypes = components.get("prototypes")
    if prototypes is not None and not prototypes.matches(mulan):
        problems.append("the prototypes were embedded by another MuLaN than the bundle's")
    if problems:
        raise CheckpointError(f"{name}: components do not fit together: " + "; ".join(problems[:4]))


def _store_compact(directory: Path, int8_names: tuple[str, ...]) -> None:
    """Rewrite a checkpoint directory's weights as float16, and ``int8_names`` as int8 rows."""
    from safetensors.torch import load_file, save_file

    from musiclm.checkpoint import (
        CONFIG_FILE,
        INT8_ROWS_FORMAT,
        ROW_SCALE,
        WEIGHTS_FILE,
        dequantize_rows,
        quantize_rows,
        read_checkpoint_config,
    )

    weights = directory / WEIGHTS_FILE
    mode = weights.stat().st_mode
    state = dequantize_rows(load_file(str(weights)), str(weights))  # a compact checkpoint again
    out = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    for name in int8_names:
        out[name], out[name + ROW_SCALE] = quantize_rows(state[name])
    save_file(out, str(weights))
    weights.chmod(mode)  # safetensors writes 0600: keep the checkpoint's own permissions
    if int8_names:  # older readers refuse it in one line instead of failing on the int8 tensors
        meta = read_checkpoint_config(directory)
        meta["format_version"] = max(meta.get("format_version", 0), INT8_ROWS_FORMAT)
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def make_bundle(
    out: str | Path,
    components: dict[str, str | Path],
    *,
    name: str = "musiclm",
    half: bool = False,
    guidance: float | tuple[float, float] | None = None,
    temperatures: tuple[float, float, float] | None = None,
    conditioning: str | None = None,
) -> Path:
    """Copy component checkpoint directories into a bundle at ``out`` and write ``musiclm.json``.
    The components are loaded together first, so an incompatible set is refused. ``half`` stores
    floating-point weights as float16 (half the size; they load back into float32 models) and the
    embedding banks a model names in ``int8_rows`` (the loudness head's anchors, the prototypes) as
    int8 rows with a scale each (a quarter of float32);
    ``guidance`` becomes the semantic and coarse LMs' default guidance scale (one for both, or a pair:
    semantic, coarse), ``temperatures`` (semantic, coarse, fine) their default sampling temperatures;
    ``conditioning`` ("text" or "prototype") what the LMs read of a prompt (prototype: the MuLaN
    tokens of its audio prototype, which needs the prototypes component)."""
    _check_names(components, str(out))
    if conditioning is not None and conditioning not in CONDITIONING_SOURCES:
        raise ConfigError(f"conditioning must be one of {CONDITIONING_SOURCES}, got {conditioning!r}")
    if conditioning == "prototype" and "prototypes" not in components:
        raise ConfigError("conditioning 'prototype' needs the prototypes component")
    guidance, temperatures = checks.guidance_pair(guidance), checks.temperatures(temperatures)
    from musiclm.checkpoint import CONFIG_FILE, component_kinds, int8_rows, load_model, read_checkpoint_config

    models = {k: load_model(v, kind=component_kinds(k)) for k, v in components.items()}
    check_compatible(models, name)
    check_token_sources({k: read_checkpoint_config(v) for k, v in components.items()}, models, name)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for key, src in components.items():
        shutil.copytree(src, tmp / key, ignore=shutil.ignore_patterns("*.tmp"))
        if half:
            _store_compact(tmp / key, int8_rows(models[key]))
        lm = {}
        if guidance is not None and key in ("semantic_lm", "coarse_lm"):
            lm["guidance"] = guidance[key == "coarse_lm"]
        if temperatures is not None and key in LM_COMPONENTS:
            lm["temperature"] = float(temperatures[LM_COMPONENTS.index(key)])
        prototypes = (
            {"condition": conditioning == "prototype"} if conditioning and key == "prototypes" else {}
        )
        if lm or prototypes:
            meta = read_checkpoint_config(tmp / key)
            meta["config"].update(prototypes)
            if lm:
                meta["config"]["lm"].update(lm)
            (tmp / key / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / BUNDLE_FILE).write_text(
        json.dumps({"name": name, "components": {k: k for k in components}}, indent=2) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
