"""``musiclm train mulan|loudness|prototypes``, ``musiclm embed`` and ``musiclm mulan-report``."""

from __future__ import annotations

import argparse


def register(sub, train) -> None:
    from musiclm.train.args import add_train_arguments

    p = train.add_parser("mulan", help="train MuLaN (text + audio towers) and its conditioning RVQ")
    p.add_argument(
        "--data", required=True, help="captioned audio: folder with .txt captions, manifest, or 'procedural'"
    )
    p.add_argument("--preset", default="tiny")
    p.add_argument(
        "--text-tower", choices=["own", "minilm"], default=None, help="override the preset's text tower"
    )
    p.add_argument("--crop-seconds", type=float, default=10.0)
    p.add_argument("--procedural-clips", type=int, default=4000)
    p.add_argument(
        "--quantizer-clips", type=int, default=2000, help="clips the conditioning RVQ is fitted on"
    )
    p.add_argument("--quantizer-crops", type=int, default=8, help="random crops of each of those clips")
    p.add_argument("--valid", default=None, help="held-out captioned audio: val/loss while training")
    add_train_arguments(p, out_dir="runs/mulan", max_steps=20000, batch_size=32, lr=3e-4)
    p.set_defaults(func=_train)

    lo = train.add_parser(
        "loudness",
        help='fit the head that reads a prompt\'s loudness ("quiet", "powerful and loud")',
        description="Each sentence of a caption is matched softly to the training captions' sentences "
        "(frozen MiniLM) and a kernel ridge regression fitted to each clip's integrated loudness (LUFS); "
        "the match temperature and penalty are chosen on --valid. Minutes on a CPU, no gradient steps.",
    )
    lo.add_argument(
        "--data", required=True, help="captioned audio: manifest, CSV or folder with .txt captions"
    )
    lo.add_argument("--valid", required=True, help="held-out captioned audio (other tracks than --data)")
    lo.add_argument("--out", default="runs/loudness", help="checkpoint folder to write")
    lo.add_argument("--workers", type=int, default=2, help="processes that measure the clips' loudness")
    lo.set_defaults(func=_train_loudness)

    pr = train.add_parser(
        "prototypes",
        help="embed captioned clips with MuLaN, to rank candidates by their prompt's audio prototype",
        description="A seeded sample of the captioned clips is embedded by MuLaN, audio (the first "
        "--seconds of each clip) and caption side by side. A bundle with this component ranks a prompt's "
        "candidates by their closeness to the mean audio embedding of the clips whose captions are "
        "nearest the prompt, rather than to the prompt's text embedding. No training: minutes on a CPU.",
    )
    pr.add_argument(
        "--model", default="default", help="MuLaN checkpoint or bundle ('default': the shipped one)"
    )
    pr.add_argument(
        "--data", required=True, help="captioned audio: manifest, CSV or folder with .txt captions"
    )
    pr.add_argument("--out", default="runs/prototypes", help="checkpoint folder to write")
    pr.add_argument("--clips", type=int, default=3000, help="at most this many clips (a seeded sample)")
    pr.add_argument(
        "--neighbours", type=int, default=32, help="nearest captions whose clips make a prompt's prototype"
    )
    pr.add_argument("--seconds", type=float, default=10.0, help="of each clip, from its start")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--no-progress", action="store_true", help="no progress bars")
    pr.set_defaults(func=_train_prototypes)

    e = sub.add_parser("embed", help="MuLaN embeddings / tokens of prompts or audio files (JSON lines)")
    e.add_argument("--model", default="default", help="MuLaN checkpoint ('default': the shipped bundle's)")
    e.add_argument("--text", nargs="*", default=[], help="prompts")
    e.add_argument("--audio", nargs="*", default=[], help="audio files")
    e.set_defaults(func=_embed)

    r = sub.add_parser("mulan-report", help="MuLaN retrieval R@1 / R@10 on held-out captioned clips")
    r.add_argument("--model", default="default", help="MuLaN checkpoint ('default': the shipped bundle's)")
    r.add_argument("--data", required=True, help="held-out captioned audio (folder, manifest or CSV)")
    r.add_argument("--clips", type=int, default=200, help="at most this many clips, spread over the data")
    r.add_argument("--json", default=None, help="also write the report as JSON here")
    r.set_defaults(func=_report)


def _train(args: argparse.Namespace) -> None:
    from musiclm import checks
    from musiclm.config import get_preset
    from musiclm.data.datasets import training_dataset
    from musiclm.data.manifest import check_held_out_data
    from musiclm.mulan.model import MuLaN
    from musiclm.mulan.train import train_mulan
    from musiclm.train.args import train_config_from_args

    train_config = train_config_from_args(args)  # checks every setting before any work
    checks.positive_int(args.quantizer_clips, "--quantizer-clips")
    checks.positive_int(args.quantizer_crops, "--quantizer-crops")
    checks.seconds(args.crop_seconds, "--crop-seconds")
    check_held_out_data(args.data, args.valid)
    config = get_preset(args.preset).mulan
    if args.text_tower:
        config.text_tower = args.text_tower
    dataset = training_dataset(
        args.data,
        config.sample_rate,
        args.crop_seconds,
        procedural_clips=args.procedural_clips,
        seed=args.seed,
        max_bad_fraction=args.max_bad_fraction,
        captioned=True,
    )
    valid = None
    if args.valid:
        valid = training_dataset(
            args.valid, config.sample_rate, args.crop_seconds, seed=args.seed + 1, captioned=True
        )
    trainer = train_mulan(
        dataset,
        MuLaN(config),
        train_config,
        quantizer_clips=args.quantizer_clips,
        quantizer_crops=args.quantizer_crops,
        valid=valid,
    )
    print(f"MuLaN written to {trainer.model_dir}")


def _train_loudness(args: argparse.Namespace) -> None:
    import json

    from musiclm import checks
    from musiclm.checkpoint import save_model
    from musiclm.data.manifest import check_held_out, load_entries
    from musiclm.mulan.loudness_train import fit_prompt_loudness

    workers = checks.positive_int(args.workers, "--workers")
    checks.writable_dir(args.out, "--out")
    train, valid = load_entries(args.data), load_entries(args.valid)
    check_held_out(
        [e.path for e in train], [e.path for e in valid], train=args.data, valid=f"{args.valid} (--valid)"
    )
    head, metrics = fit_prompt_loudness(train, valid, workers=workers)
    save_model(head, args.out, metadata={"fit": metrics})
    print(json.dumps(metrics))
    print(f"loudness head written to {args.out}")


def _train_prototypes(args: argparse.Namespace) -> None:
    from musiclm import checks
    from musiclm.checkpoint import component_kinds, load_model, save_model
    from musiclm.data.manifest import load_entries
    from musiclm.errors import DataError
    from musiclm.mulan.prototypes_build import build_prototypes
    from musiclm.pretrained import component_path

    clips = checks.positive_int(args.clips, "--clips")
    neighbours = checks.positive_int(args.neighbours, "--neighbours")
    seconds = checks.seconds(args.seconds, "--seconds")
    checks.writable_dir(args.out, "--out")
    entries = load_entries(args.data)
    if not any(e.caption.strip() for e in entries):  # before MuLaN loads
        raise DataError(
            f"{args.data}: no captioned clips (prototypes pair each clip's audio with its caption)"
        )
    mulan = load_model(component_path(args.model, "mulan"), kind=component_kinds("mulan"))
    bank = build_prototypes(
        mulan, entries, clips=clips, neighbours=neighbours, seconds=seconds, seed=args.seed,
        progress=not args.no_progress,
    )  # fmt: skip
    save_model(bank, args.out, metadata={"clips": bank.config.entries, "seed": args.seed})
    print(f"prototypes of {bank.config.entries} clips written to {args.out}")


def _report(args: argparse.Namespace) -> None:
    import json

    from musiclm.checkpoint import component_kinds, load_model
    from musiclm.checks import positive_int, writable_file
    from musiclm.files import write_text_atomic
    from musiclm.mulan.report import captioned_entries, report_text, retrieval_report
    from musiclm.pretrained import component_path

    positive_int(args.clips, "--clips")
    if args.json:
        writable_file(args.json, "report")
    entries = captioned_entries(args.data)  # a bad manifest is refused before the model loads
    path = component_path(args.model, "mulan")
    report = retrieval_report(load_model(path, kind=component_kinds("mulan")), entries, clips=args.clips)
    print(report_text(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")


def _embed(args: argparse.Namespace) -> None:
    import json

    from musiclm.audio import audio_seconds, load_audio
    from musiclm.checkpoint import load_model
    from musiclm.checks import prompts as check_prompts
    from musiclm.errors import MusicLMError
    from musiclm.pretrained import component_path

    if not args.text and not args.audio:
        raise MusicLMError("nothing to embed: give --text PROMPT... and/or --audio FILE...")
    if args.text:
        check_prompts(args.text)
    for path in args.audio:  # every file readable before the model loads and anything is printed
        audio_seconds(path, min_seconds=0.1)
    model = load_model(component_path(args.model, "mulan"), kind="mulan")
    if args.text:
        emb = model.embed_text(args.text)
        for t, e, tok in zip(args.text, emb, model.tokens_from_embedding(emb)):
            print(
                json.dumps(
                    {"text": t, "tokens": tok.tolist(), "embedding": [round(x, 5) for x in e.tolist()]}
                )
            )
    for path in args.audio:
        wav, _ = load_audio(path, model.sample_rate, min_seconds=0.1)
        emb = model.embed_audio(wav[None])
        print(
            json.dumps(
                {
                    "audio": path,
                    "tokens": model.tokens_from_embedding(emb)[0].tolist(),
                    "embedding": [round(x, 5) for x in emb[0].tolist()],
                }
            )
        )
