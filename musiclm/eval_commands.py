"""``musiclm eval`` and ``musiclm train classifier``."""

from __future__ import annotations

import argparse
import json

from musiclm import checks
from musiclm.config import CONDITIONING_SOURCES


def register(sub, train) -> None:
    e = sub.add_parser(
        "eval",
        help="evaluate a bundle on a captioned benchmark (FAD, KLD, MCC, attribute adherence)",
        description="Generates a clip per caption (kept in OUT/generated, so a rerun resumes), then "
        "writes OUT/report.json and OUT/report.md with the model, an unconditional baseline, the "
        "references as upper bound and shuffled prompts as chance level.",
    )
    e.add_argument("--model", default="default", help="bundle directory or shipped bundle name")
    e.add_argument(
        "--prompts", required=True, help="manifest (.jsonl), CSV / MusicCaps CSV, or .txt of prompts"
    )
    e.add_argument("--out", required=True, help="report folder")
    e.add_argument("--reference", default=None, help="folder of the MusicCaps clips (with a MusicCaps CSV)")
    e.add_argument("--generated", default=None, help="folder of already generated clips (00000.wav, ...)")
    e.add_argument(
        "--classifier", default=None, help="label classifier checkpoint (gives KLD and factor accuracy)"
    )
    e.add_argument("--seconds", type=float, default=10.0)
    e.add_argument("--candidates", type=int, default=1)
    e.add_argument(
        "--guidance",
        type=checks.guidance_arg,
        default=None,
        metavar="G|S,C",
        help="one scale for the semantic and coarse stages, or S,C for each; default: the model's own",
    )
    e.add_argument(
        "--temperatures",
        type=float,
        nargs=3,
        default=None,
        metavar=("SEMANTIC", "COARSE", "FINE"),
        help="sampling temperatures per stage (default: the model's own)",
    )
    e.add_argument(
        "--conditioning",
        choices=CONDITIONING_SOURCES,
        default=None,
        help="what the LMs read of a prompt: its MuLaN text tokens or its audio prototype's "
        "(a bundle with prototypes); default: the model's own",
    )
    e.add_argument("--limit", type=int, default=None, help="evaluate only the first N prompts")
    e.add_argument("--batch-size", type=int, default=4)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="evaluate once per seed (OUT/seed-S) and report each figure's mean and spread: "
        "on a few dozen prompts one draw can move FAD by more than two models differ",
    )
    e.add_argument("--no-unconditional", action="store_true", help="skip the unconditional baseline")
    e.add_argument("--device", default=None)
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_eval)

    c = train.add_parser("classifier", help="train the label classifier used for KLD and adherence")
    c.add_argument("--data", required=True, help="labelled manifest, e.g. from `musiclm data synth`")
    c.add_argument("--out", required=True)
    c.add_argument("--factors", default="genre,families", help="label factors (multi-label if list-valued)")
    c.add_argument("--seconds", type=float, default=5.0, help="training crop length")
    c.add_argument("--epochs", type=int, default=15)
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--through-codec",
        default=None,
        metavar="CODEC",
        help="also train on every clip encoded and decoded by this codec (checkpoint, bundle or "
        "'default'), same labels: generated audio always comes through a codec, and a classifier "
        "that has only heard clean audio mistakes the codec's artifacts for another genre",
    )
    c.set_defaults(func=_train_classifier)


def _eval(args: argparse.Namespace) -> None:
    from musiclm.errors import ConfigError
    from musiclm.eval.classifiers import LabelClassifier
    from musiclm.eval.report import EvalConfig, evaluate, evaluate_seeds, load_prompts
    from musiclm.pipeline import MusicLM

    guidance = checks.guidance(args.guidance)
    temperatures = checks.temperatures(args.temperatures)
    checks.seconds(args.seconds, "--seconds")
    checks.candidates(args.candidates)
    checks.positive_int(args.batch_size, "--batch-size")
    for seed in [args.seed, *(args.seeds or [])]:
        checks.seed(seed)
    if args.limit is not None:
        checks.positive_int(args.limit, "--limit")
    if args.seeds and args.generated:
        raise ConfigError("--seeds generates a set of clips per seed; it cannot score --generated clips")
    entries = load_prompts(args.prompts, args.limit, args.reference)  # refused before any loading
    classifier = LabelClassifier.load(args.classifier) if args.classifier else None
    model = MusicLM.from_pretrained(args.model, device=args.device)
    if args.conditioning:
        try:
            model.conditioning = args.conditioning
        except ConfigError as e:
            raise ConfigError(f"--conditioning {args.conditioning}: {e}") from None
    baselines = ("reference", "codec", "shuffled") + (() if args.no_unconditional else ("unconditional",))
    config = EvalConfig(
        seconds=args.seconds,
        candidates=args.candidates,
        seed=args.seed,
        batch_size=args.batch_size,
        limit=args.limit,
        baselines=baselines,
        guidance=guidance,
        temperatures=temperatures,
        progress=not args.no_progress,
    )
    if args.seeds:
        report = evaluate_seeds(
            model, entries, args.out, config=config, seeds=args.seeds, classifier=classifier,
            reference=args.reference,
        )  # fmt: skip
    else:
        report = evaluate(
            model,
            entries,
            args.out,
            config=config,
            classifier=classifier,
            generated=args.generated,
            reference=args.reference,
        )
    print((__import__("pathlib").Path(args.out) / "report.md").read_text())
    print(json.dumps(report["wall_seconds"]))


def _train_classifier(args: argparse.Namespace) -> None:
    import torch

    from musiclm.data.manifest import load_entries
    from musiclm.errors import DataError
    from musiclm.eval.classifiers import LabelClassifier, LabelClassifierConfig
    from musiclm.eval.report import load_clip

    checks.seconds(args.seconds, "--seconds")
    checks.positive_int(args.epochs, "--epochs")
    if args.limit is not None:
        checks.positive_int(args.limit, "--limit")
    codec = _codec(args.through_codec) if args.through_codec else None
    entries = load_entries(args.data)
    entries = entries[: args.limit] if args.limit else entries
    factors = [f.strip() for f in args.factors.split(",") if f.strip()]
    for f in factors:
        if not all(f in (e.labels or {}) for e in entries):
            raise DataError(f"{args.data}: not every entry has a {f!r} label")
    labels = {f: [e.labels[f] for e in entries] for f in factors}
    multilabel = [f for f in factors if isinstance(labels[f][0], list)]
    names = {
        f: sorted({x for v in labels[f] for x in (v if f in multilabel else [v])}, key=str) for f in factors
    }
    config = LabelClassifierConfig(labels=names, multilabel=multilabel)
    wavs = [load_clip(e.path, config.sample_rate, args.seconds, start=e.start) for e in entries]
    if codec is not None:
        wavs += _round_trips(codec, wavs, config.sample_rate)
        labels = {f: v + v for f, v in labels.items()}
    model = LabelClassifier(config)
    losses = model.fit(torch.stack(wavs), labels, epochs=args.epochs, seed=args.seed)
    model.save(args.out)
    print(
        f"{args.out}: classifier over {names and {f: len(v) for f, v in names.items()}}, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )


def _codec(name: str):
    """The codec of ``--through-codec``: a codec checkpoint, a bundle's codec, or the shipped one."""
    from musiclm.checkpoint import component_kinds, load_model
    from musiclm.pretrained import component_path

    return load_model(component_path(name, "codec"), component_kinds("codec"))


def _round_trips(codec, wavs: list, sample_rate: int) -> list:
    """``wavs`` at ``sample_rate`` encoded and decoded by ``codec``, back at ``sample_rate``."""
    from tqdm import tqdm

    from musiclm.audio import resample
    from musiclm.eval.report import codec_round_trip

    out = []
    for start in tqdm(range(0, len(wavs), 64), desc="through the codec", unit="batch"):
        batch = [resample(w, sample_rate, codec.sample_rate) for w in wavs[start : start + 64]]
        out += [resample(w, codec.sample_rate, sample_rate) for w in codec_round_trip(codec, batch)]
    return out
