"""The shared training options of every ``musiclm train COMPONENT`` command and the ``TrainConfig``
they describe, so that components add their own options without knowing about the CLI."""

from __future__ import annotations

import argparse
from dataclasses import fields

from musiclm import checks


def add_train_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """Add the shared ``TrainConfig`` options (``--out``, ``--steps``, ``--batch-size``...)."""
    from musiclm.train.config import TrainConfig

    base = TrainConfig(**defaults)
    g = parser.add_argument_group("training")
    g.add_argument("--out", default=base.out_dir, help="run directory (resumes if it has a checkpoint)")
    g.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"total optimiser steps (default {base.max_steps}; with --max-minutes and no --steps, the "
        "time budget alone ends the run and sets the learning-rate schedule)",
    )
    parser.set_defaults(default_steps=base.max_steps)
    g.add_argument(
        "--max-minutes", type=float, default=None, help="stop (checkpoint + export) after this long"
    )
    g.add_argument("--batch-size", type=int, default=base.batch_size)
    g.add_argument("--lr", type=float, default=base.lr)
    g.add_argument(
        "--betas", type=float, nargs=2, default=base.betas, metavar=("B1", "B2"), help="Adam betas"
    )
    g.add_argument("--warmup-steps", type=int, default=base.warmup_steps)
    g.add_argument("--grad-accum", type=int, default=base.grad_accum)
    g.add_argument("--grad-clip", type=float, default=base.grad_clip)
    g.add_argument("--ema-decay", type=float, default=base.ema_decay, help="0 disables the EMA")
    g.add_argument("--mixed-precision", default=base.mixed_precision, choices=["auto", "no", "bf16", "fp16"])
    g.add_argument(
        "--checkpoint-every", type=int, default=base.checkpoint_every, help="steps between checkpoints"
    )
    g.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=base.checkpoint_minutes,
        help="also checkpoint after this much wall time (0: by steps only)",
    )
    g.add_argument(
        "--validate-every", type=int, default=base.validate_every, help="steps between validations (0: off)"
    )
    g.add_argument(
        "--validate-minutes", type=float, default=base.validate_minutes, help="wall time between validations"
    )
    g.add_argument("--log-every", type=int, default=base.log_every)
    g.add_argument("--num-workers", type=int, default=base.num_workers)
    g.add_argument("--seed", type=int, default=base.seed)
    g.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.2,
        help="refuse to train when more than this share of the audio files is unusable",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def train_config_from_args(args: argparse.Namespace, **overrides):
    """The ``TrainConfig`` described by :func:`add_train_arguments` options."""
    from musiclm.train.config import UNCAPPED_STEPS

    steps = args.steps
    if steps is None:
        steps = UNCAPPED_STEPS if args.max_minutes is not None else args.default_steps
    values = dict(
        out_dir=args.out,
        max_steps=steps,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        betas=tuple(args.betas),
        warmup_steps=args.warmup_steps,
        grad_accum=args.grad_accum,
        grad_clip=args.grad_clip or None,
        ema_decay=args.ema_decay or None,
        mixed_precision=args.mixed_precision,
        checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes or None,
        validate_every=args.validate_every,
        validate_minutes=args.validate_minutes,
        log_every=args.log_every,
        num_workers=args.num_workers,
        seed=args.seed,
        progress=not args.no_progress,
    )
    from musiclm.train.config import TrainConfig

    values.update(overrides)
    checks.share(args.max_bad_fraction, "--max-bad-fraction")
    checks.writable_dir(values["out_dir"], "run folder")
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known})
