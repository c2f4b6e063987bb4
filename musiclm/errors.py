"""Exceptions with one-line, user-facing messages.

Everything a user can get wrong (a path, a prompt, a checkpoint) raises a subclass of
:class:`MusicLMError`; the CLI prints its message on one line instead of a traceback.
"""


class MusicLMError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class AudioError(MusicLMError):
    """Audio that cannot be read or is unusable (missing, corrupt, empty, silent, too short...)."""


class CheckpointError(MusicLMError):
    """A checkpoint that is missing, incomplete or does not fit the requested model."""


class ConfigError(MusicLMError):
    """A configuration that is invalid or inconsistent."""


class DataError(MusicLMError):
    """A dataset, manifest or token cache that cannot be used."""


class PromptError(MusicLMError):
    """A text prompt that cannot be used (empty, wrong type...)."""
