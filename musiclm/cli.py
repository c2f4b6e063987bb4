"""The ``musiclm`` command.

Each component contributes its sub-commands from a ``commands`` module exposing
``register(subparsers, train_subparsers)``; this file only assembles them and turns every
:class:`~musiclm.errors.MusicLMError` into a one-line message and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import fields

from musiclm import checks
from musiclm.errors import MusicLMError

COMMAND_MODULES: list[str] = [
    "musiclm.codec.commands",
    "musiclm.melody.commands",
    "musiclm.data.commands",
    "musiclm.lm.commands",
    "musiclm.semantic.commands",
    "musiclm.mulan.commands",
    "musiclm.pipeline_commands",
    "musiclm.eval.commands",
    "musiclm.train.commands",
]


def add_train_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """Add the shared ``TrainConfig`` options (``--out``, ``--steps``, ``--batch-size``...)."""
    from musiclm.train import TrainConfig

    base = TrainConfig(**defaults)
    g = parser.add_argument_group("training")
    g.add_argument("--out", default=base.out_dir, help="run directory (resumes if it has a checkpoint)")
    g.add_argument("--steps", type=int, default=base.max_steps, help="total optimiser steps")
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
    from musiclm.train import TrainConfig

    values = dict(
        out_dir=args.out,
        max_steps=args.steps,
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
    values.update(overrides)
    checks.writable_dir(values["out_dir"], "run folder")
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("musiclm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musiclm", description="MusicLM: text-to-music generation")
    parser.add_argument("--version", action="version", version=f"musiclm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a component").add_subparsers(
        dest="component", required=True, metavar="COMPONENT"
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MusicLMError as e:
        print(f"musiclm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("musiclm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
