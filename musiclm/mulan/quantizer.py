"""The conditioning RVQ of a MuLaN checkpoint, read without building its towers.

An LM that embeds MuLaN ids through their codebook vectors (``--mulan-codebooks``) needs only these
codebooks: reading them alone keeps LM training free of the text tower's weights and packages (a
MiniLM or CLAP that a training machine may not have) and of seconds of loading.
"""

from __future__ import annotations

import re
from pathlib import Path

from safetensors import safe_open

from musiclm.checkpoint import CONFIG_FILE, WEIGHTS_FILE, component_kinds, read_checkpoint_config
from musiclm.errors import CheckpointError
from musiclm.modules.quantization import ResidualVectorQuantizer

PREFIX = "quantizer."


def load_mulan_quantizer(directory: str | Path) -> ResidualVectorQuantizer:
    """The ``ResidualVectorQuantizer`` of the MuLaN (own or CLAP) checkpoint at ``directory``, in eval mode."""
    directory = Path(directory)
    meta = read_checkpoint_config(directory)
    if meta["kind"] not in component_kinds("mulan"):
        raise CheckpointError(f"{directory}: holds a {meta['kind']!r} model, not a MuLaN")
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing (next to its {CONFIG_FILE})")
    with safe_open(str(path), framework="pt") as f:
        state = {k.removeprefix(PREFIX): f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)}
    levels = {int(m.group(1)) for k in state if (m := re.match(r"levels\.(\d+)\.codebook$", k))}
    if not levels or levels != set(range(len(levels))):
        raise CheckpointError(f"{path}: no quantizer codebooks ({PREFIX}levels.N.codebook)")
    codebook_size, dim = state["levels.0.codebook"].shape
    quantizer = ResidualVectorQuantizer(dim, len(levels), codebook_size)
    try:
        quantizer.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise CheckpointError(f"{path}: quantizer weights do not fit ({str(e).splitlines()[0]})") from None
    return quantizer.eval()
