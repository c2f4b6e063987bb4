"""How to train (not what): the ``TrainConfig`` of the shared Trainer, checked when it is built.

Apart from the trainer so that the command line can show its defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from musiclm import checks
from musiclm.errors import ConfigError

# steps of a time-budgeted run without a step count: never reached, so the budget ends the run
UNCAPPED_STEPS = 10**9


@dataclass
class TrainConfig:
    """How to train (not what): optimisation, schedule, checkpointing and logging."""

    out_dir: str = "runs/model"
    max_steps: int = 1000
    max_minutes: float | None = None  # stop (with a checkpoint and export) after this much wall time
    batch_size: int = 8
    lr: float = 3e-4
    phase_lr: dict[str, float] = field(default_factory=dict)  # per-phase override of ``lr``
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" (to 10% of lr) or "constant", after linear warmup
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    mixed_precision: str = "auto"  # "auto" (bf16 on a GPU that has it, else fp32), "no", "bf16", "fp16"
    checkpoint_every: int = 500
    checkpoint_minutes: float | None = 5.0  # also checkpoint after this much wall time (None: steps only)
    validate_every: int = 0  # steps between validations (0: only by minutes / at the end)
    validate_minutes: float | None = None  # wall time between validations
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    progress: bool = True
    cpu: bool = False  # force the CPU even when a GPU is present

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            checks.positive_int(getattr(self, name), name.replace("max_steps", "steps"))
        checks.positive_float(self.lr, "lr")
        for name, value in self.phase_lr.items():
            checks.positive_float(value, f"{name} learning rate")
        for name in ("max_minutes", "validate_minutes", "checkpoint_minutes"):
            if getattr(self, name) is not None:
                checks.positive_float(getattr(self, name), name)
        if self.validate_every < 0 or self.warmup_steps < 0 or self.num_workers < 0:
            raise ConfigError("validate_every, warmup_steps and num_workers must be >= 0")
        if not all(0 <= b < 1 for b in self.betas) or len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip must be > 0 (or off), got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in (0, 1) (or off), got {self.ema_decay!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be cosine or constant, got {self.schedule!r}")
