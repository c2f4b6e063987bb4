"""What the fine stage loses by sampling its windows side by side (prints numbers).

The fine LM generates 10 s either sliding (each 2 s window after the first keeps the last second of
fine codes as context: 9 windows one after the other) or in parallel windows (five 2 s windows, each
from its coarse codes alone, in one batch: ``StageConfig.parallel_windows``). Teacher-forced on the
true codes of held-out clips, this prints the fine LM's negative log-likelihood per id (nats, each
level's softmax restricted to its codebook, as sampling is) under both layouts: over every frame, over
the first ``--edge`` frames of each window after the first (where the parallel layout has no fine
context and the sliding one has a second of it) and over the rest.

    python benchmarks/fine_windows.py TOKENS [--model default] [--limit 64] [--edge 10]
"""

from __future__ import annotations

import argparse

import torch

from musiclm.data.cache import TokenCache
from musiclm.lm.stages import SEP, FineStage
from musiclm.pipeline import MusicLM


@torch.inference_mode()
def window_nll(stage: FineStage, codes: torch.Tensor, start: int, end: int, scored: int) -> torch.Tensor:
    """NLL ``[levels, end - scored]`` of the fine ids of frames ``scored .. end`` of ``codes`` ``[Q, F]``,
    in the window of frames ``start .. end`` (the fine ids of ``start .. scored`` are context)."""
    c, n = stage.config.coarse_levels, end - start
    coarse = stage.flat_levels(codes[None, :c, start:end])
    fine = stage.target_ids(codes[None, c:, start:end])
    tokens = torch.cat([coarse, coarse.new_full((1, 1), SEP), fine], dim=1)
    logits = stage.transformer(tokens[:, :-1])[0, coarse.shape[1] :]  # row j predicts fine id j
    nll = torch.empty(fine.shape[1])
    for level in range(stage.levels):  # one codebook's rows at a time, restricted to its span
        lo, hi = stage.target_span(level)
        rows = torch.arange(level, fine.shape[1], stage.levels)
        logp = logits[rows, lo:hi].float().log_softmax(-1)
        nll[rows] = -logp.gather(1, (fine[0, rows] - lo)[:, None])[:, 0]
    nll = nll.reshape(n, stage.levels).T  # [levels, frames]
    return nll[:, scored - start :]


def clip_nll(stage: FineStage, codes: torch.Tensor, *, parallel: bool) -> torch.Tensor:
    """NLL ``[levels, F]`` of every fine id of a clip, in the layout generation uses."""
    frames, w = codes.shape[-1], stage.window_units
    parts = []
    if parallel:
        for i, s in enumerate(stage.window_starts(0, frames)):
            keep = i * w  # the last window is moved back; score only the frames no other window has
            parts.append(window_nll(stage, codes, s, min(s + w, frames), max(keep, s)))
    else:
        made = 0
        while made < frames:  # as StageLM.generate: half a window of context after the first
            ctx = min(made, w // 2) // stage.align * stage.align
            n_new = min(w - ctx, frames - made)
            parts.append(window_nll(stage, codes, made - ctx, made + n_new, made))
            made += n_new
    return torch.cat(parts, dim=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token cache of held-out clips with a codec field (musiclm tokenize)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--edge", type=int, default=10, help="frames at each window start scored apart")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stage = MusicLM.from_pretrained(args.model, device="cpu").fine_lm.eval()
    cache = TokenCache(args.tokens, fields=["codec"])
    w = stage.window_units
    sums = {k: torch.zeros(3) for k in ("sliding", "parallel")}  # all, window starts, rest
    counts = torch.zeros(3)
    clips = min(args.limit, len(cache.positions))
    for i in cache.positions[:clips]:
        codes = cache[i]["codec"].long()
        frames = codes.shape[-1]
        edge = torch.zeros(frames, dtype=torch.bool)
        for s in range(w, frames, w):
            edge[s : s + args.edge] = True
        for name in sums:
            nll = clip_nll(stage, codes, parallel=name == "parallel")
            per_frame = nll.sum(0)
            sums[name] += torch.stack([per_frame.sum(), per_frame[edge].sum(), per_frame[~edge].sum()])
        counts += torch.tensor([frames, int(edge.sum()), int((~edge).sum())]) * stage.levels
    print(
        f"fine LM NLL per id (nats), teacher-forced, {clips} clips of {args.tokens}, {w}-frame windows, "
        f"first {args.edge} frames of each window after the first apart"
    )
    print(f"{'layout':<12}{'all':>10}{'starts':>10}{'rest':>10}")
    for name, total in sums.items():
        print(f"{name:<12}" + "".join(f"{v:>10.4f}" for v in (total / counts).tolist()))


if __name__ == "__main__":
    main()
