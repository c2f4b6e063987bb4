"""Does a continuation keep the tempo? (prints numbers; not a test)

    python benchmarks/continuation_tempo.py synth/test.jsonl [--model default] [--clips 32]
        [--given 4] [--seconds 6]

For each of the first ``--clips`` labelled clips of a manifest, the first ``--given`` seconds are
continued by ``--seconds`` (`MusicLM.continue_audio`, one candidate, the bundle's sampling), with
the clip's caption as text and without text (the audio's own MuLaN tokens), each with and without
beat phases: for models whose LMs read them, the beats tracked in the given audio, continued at
the tempo the caption names (or, without text, at the tracked one). The tempo of the continued
seconds alone is estimated and compared with the clip's bpm label (within 4 %, or at double /
half); the clip's own next seconds are the upper bound.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from musiclm.eval.attributes import estimate_tempo, tempo_accuracy
from musiclm.eval.report import load_clip, load_prompts
from musiclm.pipeline import MusicLM


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest", help="labelled manifest (.jsonl with labels.bpm)")
    p.add_argument("--model", default="default")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--given", type=float, default=4.0, help="seconds of each clip to continue")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds to add")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model)
    if not model.reads_tempo:
        raise SystemExit(f"{model.name}: its LMs read no beat phases; nothing to compare")
    sr = model.sample_rate
    entries = load_prompts(args.manifest)[: args.clips]
    bpm = [float(json.loads(line)["labels"]["bpm"]) for line in open(args.manifest) if line.strip()]
    bpm = bpm[: len(entries)]
    systems = {
        "caption, beat phases": dict(text=True, beats=True),
        "caption, no beat phases": dict(text=True, beats=False),
        "no text, beat phases": dict(text=False, beats=True),
        "no text, no beat phases": dict(text=False, beats=False),
    }
    tempi: dict[str, list[float]] = {name: [] for name in [*systems, "the clip's next seconds"]}
    t0 = time.perf_counter()
    for i, e in enumerate(entries):
        clip = load_clip(e.path, sr, args.given + args.seconds, start=e.start)
        given, rest = clip[: round(args.given * sr)], clip[round(args.given * sr) :]
        tempi["the clip's next seconds"].append(estimate_tempo(rest.numpy(), sr))
        for name, how in systems.items():
            out = model.continue_audio(
                given, e.caption if how["text"] else None, seconds=args.seconds, sample_rate=sr,
                seed=i, progress=False, beat_phases=how["beats"],
            )  # fmt: skip
            continued = out.audio[0, round(args.given * sr) :]
            tempi[name].append(estimate_tempo(continued.numpy(), sr))
        print(f"{i + 1}/{len(entries)} clips ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(
        f"\n{len(entries)} clips of {args.manifest}: {args.given:g} s given, {args.seconds:g} s continued "
        f"({model.name}); tempo of the continued seconds against the clip's label"
    )
    print(f"{'continuation':<28}{'tempo':>8}{'x2':>8}{'median |error|':>16}")
    for name, values in tempi.items():
        err = np.median(np.abs(np.array(values) / np.array(bpm) - 1))
        print(
            f"{name:<28}{tempo_accuracy(values, bpm):>8.3f}{tempo_accuracy(values, bpm, octave=True):>8.3f}"
            f"{100 * err:>15.1f}%"
        )


if __name__ == "__main__":
    main()
