"""What one request may ask of a server (torch-free: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass

from musiclm import checks
from musiclm.errors import PromptError

HELP = {
    "max_seconds": "longest audio a request may ask for (continue: the clip included)",
    "max_candidates": "most candidates a request may ask for",
    "max_prompt_chars": "longest prompt",
    "max_segments": "most story segments",
    "max_queue": "jobs that may wait; more are answered 429",
    "max_batch": "generate requests with equal settings sampled together (1: never batch)",
    "max_upload_mb": "largest uploaded audio file",
    "max_upload_seconds": "longest uploaded audio",
    "keep_jobs": "finished jobs kept for download",
    "keep_minutes": "how long a finished job is kept",
    "keep_mb": "disk space the kept results may take",
    "max_memory_gb": "refuse larger requests (default: the memory free when one arrives)",
}


@dataclass
class Limits:
    """What one request may ask of the server; ``/v1/model`` reports them."""

    max_seconds: float = 30.0
    max_candidates: int = 4
    max_prompt_chars: int = 300
    max_segments: int = 8
    max_queue: int = 16  # jobs waiting, not counting the running batch
    max_batch: int = 4  # generate requests with equal parameters sampled together
    max_upload_mb: float = 20.0
    max_upload_seconds: float = 60.0
    keep_jobs: int = 100
    keep_minutes: float = 60.0
    keep_mb: float = 1000.0
    max_memory_gb: float | None = None  # default: the memory free when a request arrives

    def __post_init__(self):
        for name in ("max_seconds", "max_upload_mb", "max_upload_seconds", "keep_minutes", "keep_mb"):
            checks.positive_float(getattr(self, name), f"--{name.replace('_', '-')}")
        for name in (
            "max_candidates",
            "max_prompt_chars",
            "max_segments",
            "max_queue",
            "max_batch",
            "keep_jobs",
        ):
            checks.positive_int(getattr(self, name), f"--{name.replace('_', '-')}")
        if self.max_memory_gb is not None:
            checks.positive_float(self.max_memory_gb, "--max-memory-gb")
        if self.max_seconds > checks.MAX_SECONDS:
            raise PromptError(f"--max-seconds is beyond the model's limit of {checks.MAX_SECONDS:g} s")
