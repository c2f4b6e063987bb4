"""Argument checks shared by the Python API, the CLI and the trainers: one-line errors before any work.

Each check returns the (normalised) value or raises a :class:`~musiclm.errors.MusicLMError` subclass
whose message names the argument, so the CLI prints one line and a server can answer 4xx.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from musiclm.errors import ConfigError, MusicLMError, PromptError

# a request's guidance: one scale for the semantic and coarse stages, a pair (semantic, coarse), or
# None (each LM's own default)
Guidance = float | tuple[float, float] | None

MAX_SEED = 2**64 - 1
MAX_SECONDS = 300.0  # the paper generates up to 5 minutes
MAX_PROMPT_CHARS = 2000


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


def mulan_levels(value: int, levels: int) -> int:
    """MuLaN RVQ levels a stage LM reads: 0 (all) to ``levels``."""
    if not 0 <= value <= levels:
        raise ConfigError(f"--mulan-levels must be 0 (all) to {levels}, got {value}")
    return value


def kv_heads(value: int, heads: int) -> int | None:
    """Key/value heads of a stage LM: 0 (one per query head) or a divisor of ``heads``."""
    if value == 0:
        return None
    if value < 0 or heads % value:
        divisors = ", ".join(str(d) for d in range(1, heads + 1) if heads % d == 0)
        raise ConfigError(f"--kv-heads must be 0 (one per query head) or one of {divisors}, got {value}")
    return value


def share(value: float, what: str) -> float:
    """A probability-like share in [0, 1] (NaN refused)."""
    if not 0 <= value <= 1:
        raise ConfigError(f"{what} must be in [0, 1], got {value}")
    return float(value)


def sample_rate(value, what: str = "sample rate", error: type[MusicLMError] = ConfigError) -> int:
    """An audio sample rate in Hz that resamplers and codecs handle (8 kHz to 192 kHz)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 8000 <= value <= 192000:
        raise error(f"{what} must be a whole number of Hz in [8000, 192000], got {value!r}")
    return value


def workers(value: int | None, what: str = "workers", error: type[MusicLMError] = ConfigError) -> int | None:
    """A number of processes, or None for the default."""
    return None if value is None else positive_int(value, what, error)


def top_k(value: int | None) -> int | None:
    return None if value is None else positive_int(value, "top_k", PromptError)


def top_p(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise PromptError(f"top_p must lie in (0, 1], got {value!r}")
    return float(value)


def bpm(value: float | None, where: str = "bpm") -> float | None:
    """A tempo a request asks for (:func:`musiclm.tempo.check_bpm`); None (the prompt's own) passes."""
    from musiclm.tempo import check_bpm  # numpy and torch: only when a tempo is given

    if value is None:
        return None
    try:
        return check_bpm(value, where)
    except ValueError as e:
        raise PromptError(str(e)) from None


def guidance_arg(text: str) -> float | tuple[float, ...]:
    """``--guidance G`` or ``--guidance S,C`` (semantic, coarse) as numbers; ranges are checked by
    :func:`guidance`. One command-line token, so it never takes a prompt that follows it."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or two separated by a comma (semantic,coarse), got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def guidance(value: float | Sequence[float] | None) -> float | tuple[float, float] | None:
    """A guidance scale for the semantic and coarse stages, or a pair (semantic, coarse); None (the
    model's own per stage) passes. A one-element sequence is one scale."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not 1 <= len(value) <= 2:
            raise PromptError(f"guidance takes one scale or two (semantic, coarse), got {len(value)} values")
        if any(isinstance(v, (list, tuple)) for v in value):
            raise PromptError(f"guidance must be numbers, got {list(value)!r}")
        scales = tuple(guidance(v) for v in value)
        return scales[0] if len(scales) == 1 else scales
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise PromptError(f"guidance must be a finite number >= 0 (1 = off), got {value!r}")
    return float(value)


def guidance_pair(value: float | Sequence[float] | None) -> tuple[float, float] | None:
    """The (semantic, coarse) scales of a checked :func:`guidance`: one scale is both stages'."""
    value = guidance(value)
    return value if value is None or isinstance(value, tuple) else (value, value)


def guidance_record(scales: tuple[float, float]) -> dict[str, float]:
    """A request's (semantic, coarse) scales as records write them (sidecars, reports, jobs)."""
    return dict(zip(("semantic", "coarse"), scales, strict=True))


def temperatures(values) -> tuple[float, float, float] | None:
    """Per-stage sampling temperatures (semantic, coarse, fine); None (the LMs' own) passes."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 3:
        raise PromptError(f"temperatures must be three numbers (semantic, coarse, fine), got {values!r}")
    return tuple(positive_float(t, "temperature", PromptError) for t in values)


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


def cuda_graphs(enabled: bool, device, what: str) -> None:
    """``--cuda-graphs`` only where ``what`` (a request, a server) runs on a CUDA device."""
    if enabled and device.type != "cuda":
        raise ConfigError(f"--cuda-graphs needs a CUDA device; this {what} runs on {device}")


def writable_file(path: str | Path, what: str = "output") -> Path:
    """Check that ``path`` can be written before any work starts. Folders made for the check are
    removed again, so input refused after it leaves no empty folder behind: whoever writes the file
    makes its folder."""
    path = Path(path)
    if path.is_dir():
        raise MusicLMError(f"{path}: the {what} is a directory, not a file")
    parent = path.parent
    made = []  # the folders the check makes, deepest first
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise MusicLMError(f"{path}: cannot write the {what}: {p} is a file, not a folder")
            break
        made.append(p)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as e:
        raise MusicLMError(f"{path}: cannot write the {what} ({e.strerror or e})") from None
    finally:
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()
    return path


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check that folder ``path`` exists or can be made, and that files can be written in it (made
    for the check only: whoever writes there makes the folder)."""
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


def prompts(texts) -> list[str]:
    """A list of non-empty strings of at most ``MAX_PROMPT_CHARS``, stripped (a UTF-8 BOM too)."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise PromptError(f"prompts must be a non-empty list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise PromptError(f"prompt {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise PromptError(f"prompt {i} is empty")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes arrive from argv as lone surrogates
            raise PromptError(f"prompt {i} is not valid UTF-8 text") from None
        if len(t) > MAX_PROMPT_CHARS:
            raise PromptError(f"prompt {i} has {len(t)} characters; the limit is {MAX_PROMPT_CHARS}")
    return [t.strip().lstrip("\ufeff").strip() for t in texts]


def seconds(value, what: str = "seconds") -> float:
    """A duration in (0, ``MAX_SECONDS``]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PromptError(f"{what} must be a positive number, got {value!r}")
    if value > MAX_SECONDS:
        raise PromptError(f"{what} = {value:g} is beyond the limit of {MAX_SECONDS:g} s")
    return float(value)


def loudness(value) -> float:
    """A loudness target in LUFS, in [-70, 0]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -70 <= value <= 0:
        raise PromptError(f"loudness must be a number of LUFS in [-70, 0], got {value!r}")
    return float(value)


def candidates(value) -> int:
    return positive_int(value, "candidates", PromptError)


def available_memory(device) -> int:
    """Bytes free on ``device``: free GPU memory, or the memory the OS has available."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def memory_limit(device, max_memory_gb: float | None, error: type[MusicLMError] = ConfigError) -> int:
    """Bytes a job may use: ``max_memory_gb`` when given (checked), else what ``device`` has free."""
    if max_memory_gb is None:
        return available_memory(device)
    return int(positive_float(max_memory_gb, "max_memory_gb", error) * 2**30)
