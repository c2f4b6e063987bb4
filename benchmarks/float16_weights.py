"""What float16 weights change in the LMs' decoding step (prints numbers; not a test).

    python benchmarks/float16_weights.py TOKENS [--model default] [--clips 64] [--threads 2]
        [--prompts MANIFEST --prompt-limit 16 --seconds 10]

On a CPU the decoding step multiplies by float16 copies of the weights by default
(``StageLM.float16_weights``; float32 activations and sums). For each LM of a bundle, on one
training window of each held-out clip of a token cache (``musiclm tokenize``), the true ids are fed
through the decoding step twice, with float32 and with float16 weights, and this prints the negative
log-likelihood of each true id (each step's softmax over its id range, as sampling has it) with its
standard error over clips, the mean KL divergence of the float16 step's distribution from the
float32 one's, how often their most likely ids agree, and each pass's tokens/s.

With ``--prompts`` it also generates from each caption of a manifest twice, the same seed with
float32 and with float16 weights (one candidate, the bundle's guidance), and prints the share of
identical tokens per stage and the seconds each took. First it times the 16 matrix products of a
decoding step of the tiny preset's LM (d=192, 4 layers) at 1, 4 and 8 rows each way.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from musiclm.config import get_preset
from musiclm.data.cache import TokenCache
from musiclm.lm.stages import StageLM
from musiclm.lm.transformer import float16_linear, float32_linear
from musiclm.pipeline import MusicLM


@torch.inference_mode()
def products(rounds: int = 7, steps: int = 200) -> None:
    """Milliseconds for a decoding step's matrix products (tiny preset), medians of alternating rounds."""
    lm = get_preset("tiny").semantic_lm
    shapes = [(3 * lm.dim, lm.dim), (lm.dim, lm.dim), (lm.ff_dim, lm.dim), (lm.dim, lm.ff_dim)] * lm.depth
    weights = [torch.randn(out, dim) * 0.05 for out, dim in shapes]
    ways = {
        name: [make(w) for w in weights] for name, make in (("32", float32_linear), ("16", float16_linear))
    }
    print(f"the {len(shapes)} matrix products of a decoding step (d={lm.dim}, {lm.depth} layers), ms:")
    for rows in (1, 4, 8):
        xs = [torch.randn(rows, dim) for _, dim in shapes]
        times = {name: [] for name in ways}
        for _ in range(rounds):
            for name, fns in ways.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    for fn, x in zip(fns, xs):
                        fn(x)
                times[name].append(1e3 * (time.perf_counter() - t0) / steps)
        a, b = (statistics.median(times[n]) for n in ("32", "16"))
        print(f"  {rows} rows: float32 {a:.3f}, float16 weights {b:.3f} ({a / b:.1f}x)")


@torch.inference_mode()
def teacher_forced(stage: StageLM, example: dict, float16: bool) -> tuple[torch.Tensor, float]:
    """Log-probabilities ``[targets, ids]`` of each target id's range, fed the true ids one
    decoding step at a time, and the seconds the steps took."""
    tokens, mask = example["tokens"][None], example["loss_mask"]
    n = int(mask.nonzero().max()) + 1
    p = int(mask.nonzero().min())  # the first target, predicted from the position before it
    tracks = [example.get(k) for k in ("chroma", "beats")]
    inputs = tokens[:, : n - 1]
    extra = stage.extra_embeddings(inputs, *(None if t is None else t[None, : n - 1] for t in tracks))
    tf = stage.transformer
    cache = tf.new_cache(1, n, float16_weights=float16)
    hidden = tf.hidden(tokens[:, :p], cache, None if extra is None else extra[:, :p])[:, -1]
    rows = []
    t0 = time.perf_counter()
    for j in range(n - p):
        lo, hi = stage.target_span(j)
        rows.append(tf.logits(hidden, lo, hi, cache).float().log_softmax(-1)[0])
        if p + j + 1 < n:
            step = None if extra is None else extra[:, p + j]
            hidden = tf.decode(tokens[:, p + j], cache, extra=step)
    seconds = time.perf_counter() - t0
    width = max(len(r) for r in rows)
    padded = torch.full((len(rows), width), float("-inf"))
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    return padded, seconds


def target_offsets(stage: StageLM, example: dict) -> torch.Tensor:
    """Each target id's index within its range."""
    mask = example["loss_mask"]
    ids = example["tokens"][mask]
    return torch.tensor([int(i) - stage.target_span(j)[0] for j, i in enumerate(ids)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token cache of held-out clips (musiclm tokenize)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--prompts", default=None, help="manifest with captions: also generate from them")
    ap.add_argument("--prompt-limit", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    products()
    model = MusicLM.from_pretrained(args.model, device="cpu")
    cache = TokenCache(args.tokens)
    records = [cache[i] for i in cache.positions[: args.clips]]
    print(f"{len(records)} clips of {args.tokens}; bundle {model.name}; {torch.get_num_threads()} threads")
    print(
        f"{'LM':<10}{'ids':>8}{'NLL float32':>14}{'NLL float16':>14}{'difference':>12}{'SE':>8}"
        f"{'KL':>10}{'top-1 same':>12}{'tokens/s 32 / 16':>20}"
    )
    for name in ("semantic_lm", "coarse_lm", "fine_lm"):
        stage = getattr(model, name).eval()
        nll = {False: [], True: []}
        kl, same, count, seconds = 0.0, 0, 0, {False: 0.0, True: 0.0}
        for i, record in enumerate(records):
            example = stage.training_example(record, random.Random(i))
            target = target_offsets(stage, example)
            logp = {}
            for half in (False, True):
                logp[half], s = teacher_forced(stage, example, half)
                seconds[half] += s
                nll[half].append(-logp[half].gather(1, target[:, None]).mean().item())
            a, b = logp[False], logp[True]
            valid = a.isfinite()
            kl += (a.exp() * (a - b)).masked_fill(~valid, 0).sum().item()
            same += int((a.argmax(1) == b.argmax(1)).sum())
            count += len(target)
        n32, n16 = statistics.mean(nll[False]), statistics.mean(nll[True])
        diffs = [y - x for x, y in zip(nll[False], nll[True])]
        se = statistics.stdev(nll[False]) / len(records) ** 0.5
        rate = "/".join(f"{count / seconds[h]:.0f}" for h in (False, True))
        print(
            f"{name:<10}{count:>8}{n32:>14.4f}{n16:>14.4f}{statistics.mean(diffs):>+12.1e}{se:>8.4f}"
            f"{kl / count:>10.2e}{same / count:>12.4f}{rate:>20}"
        )
    if args.prompts:
        same_seed(model, args.prompts, args.prompt_limit, args.seconds)


def same_seed(model: MusicLM, manifest: str, limit: int, seconds: float) -> None:
    prompts = [json.loads(line)["caption"] for line in open(manifest)][:limit]
    same, total, took = {}, {}, {False: 0.0, True: 0.0}
    for i, prompt in enumerate(prompts):
        out = {}
        for half in (False, True):
            model.float16_weights = half
            t0 = time.perf_counter()
            out[half] = model.generate(prompt, seconds=seconds, candidates=1, seed=i, progress=False).tokens
            took[half] += time.perf_counter() - t0
        for stage, ids in out[False].items():
            same[stage] = same.get(stage, 0) + int((ids == out[True][stage]).sum())
            total[stage] = total.get(stage, 0) + ids.numel()
    model.float16_weights = None
    shares = ", ".join(f"{stage} {same[stage] / total[stage]:.4f}" for stage in same)
    print(f"\n{len(prompts)} prompts of {manifest}, {seconds:g} s, one candidate, the same seed each way:")
    print(f"  identical tokens, float16 against float32 weights: {shares}")
    print(f"  seconds: float32 {took[False]:.1f}, float16 {took[True]:.1f}")


if __name__ == "__main__":
    main()
