"""``make demo``'s request timed per stage, for one bundle or several side by side (prints numbers).

    python benchmarks/demo_request.py [--model default] [--model runs/other/bundle] [--rounds 3]
        [--threads 2] [--guidance G] [--float32]

The request ``make demo`` sends (its prompt, 10 s, 4 candidates, each bundle's own guidance unless
``--guidance``), after one short warm-up request per bundle. With several bundles the rounds
alternate between them, so a slow spell of a shared machine hits each, and the medians are compared:
an A/B of a speed change in one process. ``--float32`` adds each bundle again with float32 weights
throughout the decoding step (``MusicLM.float16_weights = False``), the other side of that A/B.
"""

from __future__ import annotations

import argparse
import statistics

import torch

PROMPT = "a calm lo-fi hip hop beat with soft piano at 80 bpm"  # the Makefile's demo prompt
STAGES = ("semantic", "coarse", "fine", "decode", "rerank", "total")


def main() -> None:
    from musiclm.pipeline import MusicLM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="bundle directory or shipped name (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=None, help="default: each bundle's own")
    ap.add_argument("--float32", action="store_true", help="also each bundle with float32 weights")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {}
    for name in args.model or ["default"]:
        models[name] = MusicLM.from_pretrained(name, device="cpu")
        if args.float32:
            models[f"{name}, float32 weights"] = MusicLM.from_pretrained(name, device="cpu")
            models[f"{name}, float32 weights"].float16_weights = False
    names = list(models)
    for model in models.values():
        model.generate("warm-up", seconds=1.0, candidates=args.candidates, progress=False)
    times: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name, model in models.items():
            out = model.generate(
                PROMPT, seconds=args.seconds, candidates=args.candidates, guidance=args.guidance,
                seed=r, progress=False,
            )  # fmt: skip
            times[name].append(out.timings)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in out.timings.items()))
    print(
        f"\nmake demo's request ({args.seconds:g} s, {args.candidates} candidates, {torch.get_num_threads()} "
        f"threads), medians of {args.rounds} rounds, seconds:"
    )
    print(f"{'bundle':<40}" + "".join(f"{s:>10}" for s in STAGES))
    for name in names:
        med = {s: statistics.median(t.get(s, 0.0) for t in times[name]) for s in STAGES}
        print(f"{name:<40}" + "".join(f"{med[s]:>10.2f}" for s in STAGES))


if __name__ == "__main__":
    main()
