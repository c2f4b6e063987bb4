"""``musiclm train semantic-lm | coarse-lm | fine-lm --tokens CACHE``."""

from __future__ import annotations

import argparse

NEEDS = {
    "semantic": ["semantic", "mulan_tokens"],
    "coarse": ["codec", "semantic", "mulan_tokens"],
    "fine": ["codec"],
}


def register(sub, train) -> None:
    from musiclm.train.args import add_train_arguments

    for stage in ("semantic", "coarse", "fine"):
        p = train.add_parser(f"{stage}-lm", help=f"train the {stage} stage LM on a token cache")
        p.add_argument("--tokens", required=True, help="token cache from 'musiclm tokenize'")
        p.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
        if stage != "fine":
            p.add_argument(
                "--melody",
                action="store_true",
                help="melody conditioning: melody tokens after the MuLaN tokens (cache needs melody_tokens)",
            )
        p.add_argument("--valid-tokens", default=None, help="held-out token cache: val/loss while training")
        add_train_arguments(p, out_dir=f"runs/{stage}-lm", max_steps=20000, batch_size=16, lr=3e-4)
        p.set_defaults(func=_train, stage=stage)


def _train(args: argparse.Namespace) -> None:
    from musiclm.config import get_preset
    from musiclm.data.cache import TokenCache
    from musiclm.errors import DataError
    from musiclm.lm.stages import STAGES, StageConfig
    from musiclm.lm.train import StageDataset, StageTask, check_batch_memory
    from musiclm.train import Trainer, held_out_batches
    from musiclm.train.args import train_config_from_args

    train_config = train_config_from_args(args)  # checks every setting before any work
    melody = getattr(args, "melody", False)
    fields = NEEDS[args.stage] + (["melody_tokens"] if melody else [])
    cache = TokenCache(args.tokens, fields=fields)
    model = STAGES[args.stage](StageConfig.from_musiclm(args.stage, get_preset(args.preset), melody=melody))
    check_batch_memory(model, args.batch_size)
    c = model.config
    first = cache[0]
    if "codec" in first and first["codec"].shape[0] != c.codec_levels:
        raise DataError(
            f"{args.tokens}: codec tokens have {first['codec'].shape[0]} levels, "
            f"the {args.preset} preset expects {c.codec_levels}"
        )
    if "mulan_tokens" in first and first["mulan_tokens"].shape[0] != c.mulan_quantizers:
        raise DataError(
            f"{args.tokens}: {first['mulan_tokens'].shape[0]} MuLaN tokens, expected {c.mulan_quantizers}"
        )
    task = StageTask(model)
    if args.valid_tokens:
        held_out = StageDataset(TokenCache(args.valid_tokens, fields=fields), model, seed=args.seed + 1)
        task.valid_batches = held_out_batches(held_out, args.batch_size)
    trainer = Trainer(task, StageDataset(cache, model, seed=args.seed), train_config)
    trainer.fit()
    print(f"{args.stage} LM written to {trainer.model_dir}")
