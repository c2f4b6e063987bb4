"""musiclm: an open implementation of MusicLM (Agostinelli et al., 2023).

``MusicLM.from_pretrained("default")`` loads the shipped model; see the README for the commands.

A prompt's way to a WAV: :mod:`musiclm.pipeline` checks the request (:mod:`musiclm.checks`), gets the
prompt's MuLaN tokens (:mod:`musiclm.mulan`) and wraps them in a
:class:`~musiclm.lm.conditioning.Conditioning`; the semantic, coarse and fine stages
(:mod:`musiclm.lm.stages`) sample tokens in one sliding loop; the codec (:mod:`musiclm.codec`)
decodes each candidate and MuLaN reranks them. :mod:`musiclm.bundle` loads the components,
:mod:`musiclm.train` trains each of them, :mod:`musiclm.eval` measures the result.
"""

from musiclm.config import MusicLMConfig, get_preset
from musiclm.errors import AudioError, CheckpointError, ConfigError, MusicLMError, PromptError

__version__ = "0.1.0"
__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "MusicLM",
    "MusicLMConfig",
    "MusicLMError",
    "PromptError",
    "get_preset",
    "load_pretrained",
]


def __getattr__(name: str):
    """``MusicLM`` and ``load_pretrained`` import the whole model stack, so only when asked for."""
    if name in ("MusicLM", "load_pretrained"):
        from musiclm.pipeline import MusicLM

        return MusicLM if name == "MusicLM" else MusicLM.from_pretrained
    raise AttributeError(f"module 'musiclm' has no attribute {name!r}")
