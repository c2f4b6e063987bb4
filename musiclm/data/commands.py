"""``musiclm tokenize``."""

from __future__ import annotations

import argparse


def register(sub, train) -> None:
    p = sub.add_parser("tokenize", help="precompute codec / semantic / MuLaN tokens of a dataset")
    p.add_argument("--data", required=True, help="audio folder, .jsonl manifest or .csv")
    p.add_argument("--out", required=True, help="cache folder (a rerun resumes; new fields are added)")
    p.add_argument("--codec", default=None, help="codec checkpoint ('default' = the shipped one)")
    p.add_argument("--semantic", default=None, help="semantic tokenizer checkpoint")
    p.add_argument("--mulan", default=None, help="MuLaN checkpoint (gives mulan_tokens)")
    p.add_argument("--segment-seconds", type=float, default=30.0)
    p.add_argument("--shard-size", type=int, default=64)
    p.set_defaults(func=_tokenize)


def _tokenize(args: argparse.Namespace) -> None:
    import torch

    from musiclm.checkpoint import load_model
    from musiclm.data.tokenize import FIELD_EXTRACTORS, tokenize
    from musiclm.errors import MusicLMError
    from musiclm.pretrained import default_component

    wanted = {"codec": args.codec, "semantic": args.semantic, "mulan_tokens": args.mulan}
    models = {}
    for field, path in wanted.items():
        if path:
            kind = FIELD_EXTRACTORS[field][0]
            path = default_component(kind) if path == "default" else path
            model = load_model(path, kind=kind)
            models[field] = model.to("cuda" if torch.cuda.is_available() else "cpu")
    if not models:
        raise MusicLMError("nothing to compute: give at least one of --codec, --semantic, --mulan")
    skipped = tokenize(args.data, args.out, models, args.segment_seconds, args.shard_size)
    for where, why in skipped:
        print(f"skipped {where}: {why}")
    print(f"{args.out}: fields {sorted(models)} ready ({len(skipped)} skipped)")
