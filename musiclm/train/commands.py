"""``musiclm plot-metrics RUN``: the training curves of a run as a PNG."""

from __future__ import annotations

import argparse


def register(sub, train) -> None:
    p = sub.add_parser(
        "plot-metrics",
        help="plot a run's metrics.jsonl (train and validation curves) as a PNG",
        description="One panel per figure (losses, validation metrics, learning rates) against the step.",
    )
    p.add_argument("run", help="run folder (holding metrics.jsonl) or a metrics.jsonl file")
    p.add_argument("-o", "--output", default=None, help="PNG to write (default: RUN/metrics.png)")
    p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> None:
    from pathlib import Path

    from musiclm import checks
    from musiclm.train.plot import plot_metrics

    run = Path(args.run)
    metrics = run if run.is_file() else run / "metrics.jsonl"
    out = Path(args.output) if args.output else metrics.with_name("metrics.png")
    checks.writable_file(out)
    panels = plot_metrics(metrics, out)
    print(f"{out}: {panels} panels")
