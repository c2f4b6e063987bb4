"""How well a bundle's loudness head reads the level a prompt asks for, on labelled held-out clips.

    python benchmarks/prompt_loudness.py --model BUNDLE_OR_HEAD --prompts MANIFEST [--workers 2]

Prints, for the manifest's captions: the head's mean absolute error against the integrated loudness
of each caption's own clip (beside the error of its reference level, a constant), and how often the
predictions put two clips with different dynamics labels in the labels' order (0.5 is chance), over
every clip and over the captions that name their dynamics in words of the synthetic benchmark.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from musiclm.checkpoint import load_model
from musiclm.data.manifest import load_entries
from musiclm.data.synth.captions import DYNAMIC_WORDS
from musiclm.eval.attributes import order_accuracy
from musiclm.mulan.loudness_train import clip_loudness
from musiclm.pretrained import component_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="bundle, 'default' or a loudness checkpoint")
    parser.add_argument("--prompts", required=True, help="manifest with captions and dynamics labels")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    head = load_model(component_path(args.model, "loudness"), kind="loudness")
    entries = load_entries(args.prompts)
    captions = [e.caption for e in entries]
    labels = [e.labels["dynamics"] for e in entries]
    predicted = head(captions).numpy()
    measured = clip_loudness(entries, workers=args.workers)
    ok = np.isfinite(measured)
    words = [w for split in DYNAMIC_WORDS.values() for ws in split.values() for w in ws if w]
    named = np.array([any(w in c for w in words) for c in captions])
    row = {
        "clips": len(entries),
        "named": int(named.sum()),
        "mae": round(float(np.abs(predicted - measured)[ok].mean()), 3),
        "mae_reference_level": round(float(np.abs(head.config.reference_lufs - measured)[ok].mean()), 3),
        "order": round(order_accuracy(predicted, labels), 3),
        "order_named": round(order_accuracy(predicted[named], [x for x, n in zip(labels, named) if n]), 3),
        "order_references": round(order_accuracy(np.where(ok, measured, -70.0), labels), 3),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
