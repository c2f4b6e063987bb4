"""``musiclm train semantic``."""

from __future__ import annotations

import argparse


def register(sub, train) -> None:
    from musiclm.train.args import add_train_arguments

    p = train.add_parser("semantic", help="train the semantic tokenizer (masked prediction, then k-means)")
    p.add_argument("--data", required=True, help="audio folder, manifest or 'procedural'")
    p.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
    p.add_argument("--crop-seconds", type=float, default=None, help="training crop (default from the config)")
    p.add_argument(
        "--kmeans-clips", type=int, default=200, help="clips whose frames the k-means are fitted on"
    )
    p.add_argument("--procedural-clips", type=int, default=4000)
    p.add_argument(
        "--valid", default=None, help="held-out audio (folder or manifest): val/loss while training"
    )
    add_train_arguments(p, out_dir="runs/semantic", max_steps=20000, batch_size=16, lr=5e-4)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> None:
    from musiclm import checks
    from musiclm.config import get_preset
    from musiclm.data.datasets import training_dataset
    from musiclm.data.manifest import check_held_out_data
    from musiclm.semantic.tokenizer import SemanticTokenizer
    from musiclm.semantic.train import train_semantic
    from musiclm.train.args import train_config_from_args

    train_config = train_config_from_args(args)  # checks every setting before any work
    if args.crop_seconds is not None:
        checks.seconds(args.crop_seconds, "--crop-seconds")
    checks.positive_int(args.kmeans_clips, "--kmeans-clips")
    check_held_out_data(args.data, args.valid)
    config = get_preset(args.preset).semantic
    crop = args.crop_seconds or config.crop_seconds
    dataset = training_dataset(
        args.data,
        config.sample_rate,
        crop,
        procedural_clips=args.procedural_clips,
        seed=args.seed,
        max_bad_fraction=args.max_bad_fraction,
    )
    valid = None
    if args.valid:
        valid = training_dataset(args.valid, config.sample_rate, crop, seed=args.seed + 1)
    trainer = train_semantic(
        dataset, SemanticTokenizer(config), train_config, valid=valid, kmeans_clips=args.kmeans_clips
    )
    print(f"semantic tokenizer written to {trainer.model_dir}")
