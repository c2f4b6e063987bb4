"""``musiclm train melody``."""

from __future__ import annotations

import argparse


def register(sub, train) -> None:
    from musiclm.train.args import add_train_arguments

    p = train.add_parser("melody", help="train the melody embedder (contrastive) and its RVQ")
    p.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
    p.add_argument("--pairs", type=int, default=20000, help="synthetic melody pairs per epoch")
    p.add_argument("--quantizer-pairs", type=int, default=2000, help="pairs embedded to fit the RVQ")
    add_train_arguments(p, out_dir="runs/melody", max_steps=3000, batch_size=32, lr=3e-4)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from musiclm import checks
    from musiclm.config import get_preset
    from musiclm.data.melody_pairs import SynthMelodyPairs
    from musiclm.melody.model import MelodyEmbedder, fit_quantizer
    from musiclm.melody.train import MelodyTask, embed_dataset, finish_quantizer
    from musiclm.train import Trainer, held_out_batches
    from musiclm.train.args import train_config_from_args

    train_config = train_config_from_args(args)  # checks every setting before any work
    checks.positive_int(args.pairs, "--pairs")
    checks.positive_int(args.quantizer_pairs, "--quantizer-pairs")
    config = get_preset(args.preset).melody
    model = MelodyEmbedder(config)
    pairs = SynthMelodyPairs(args.pairs, config.sample_rate, config.window_seconds, seed=args.seed)
    task = MelodyTask(model)  # held out: pairs of another seed
    held_out = SynthMelodyPairs(256, config.sample_rate, config.window_seconds, seed=args.seed + 10_000)
    task.valid_batches = held_out_batches(held_out, args.batch_size)
    trainer = Trainer(task, pairs, train_config)
    trainer.fit()
    held = SynthMelodyPairs(
        args.quantizer_pairs, config.sample_rate, config.window_seconds, seed=args.seed + 1
    )
    with trainer.ema.swapped_in(trainer.unwrapped) if trainer.ema else _null():
        error = finish_quantizer(trainer.unwrapped.model, held, Path(args.out) / "model")
    trainer.finish_best(
        lambda best: fit_quantizer(best, embed_dataset(best, held)),
        kind="melody",
        fitted=trainer.model_dir,
    )
    print(f"melody model written to {Path(args.out) / 'model'} (RVQ squared error {error:.4f})")


def _null():
    from contextlib import nullcontext

    return nullcontext()
