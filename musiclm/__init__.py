"""musiclm: an open implementation of MusicLM (Agostinelli et al., 2023).

See ``ARCHITECTURE.md`` for the design. Public entry points are re-exported here as they land.
"""

from musiclm.config import MusicLMConfig, get_preset
from musiclm.errors import AudioError, CheckpointError, ConfigError, MusicLMError

__version__ = "0.1.0"
__all__ = ["AudioError", "CheckpointError", "ConfigError", "MusicLMConfig", "MusicLMError", "get_preset"]
