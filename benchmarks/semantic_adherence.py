"""Does a semantic LM follow its prompt? A stage-level adherence figure in seconds, not an eval's minutes.

A label (genre by default) is predicted from the histogram of a clip's semantic tokens by a logistic
regression fitted on the training clips' real tokens; the figure is how often it recovers the
held-out clip's label from semantic tokens the LM generated from that clip's conditioning (its
caption's MuLaN text tokens, as a prompt gives at generation: `--condition text`), at each guidance
scale. The same classifier on the held-out clips' real tokens is the ceiling, the most frequent
label the floor. Both token caches come from `musiclm tokenize` of a labelled synthetic benchmark
(`musiclm data synth`); the semantic stage alone runs, so the coarse and fine LMs, the codec and
the audio classifier of `musiclm eval` are out of the loop.

    python benchmarks/semantic_adherence.py --train-tokens TOK_TRAIN --train-manifest SYNTH/train.jsonl \\
        --test-tokens TOK_TEST --test-manifest SYNTH/test.jsonl LM [LM ...]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from musiclm.checkpoint import load_model
from musiclm.data.cache import TokenCache
from musiclm.data.manifest import read_manifest
from musiclm.lm.conditioning import Conditioning
from musiclm.lm.sampling import SamplingConfig


def histograms(tokens: list[torch.Tensor], clusters: int) -> np.ndarray:
    """``[N, clusters]`` relative frequency of each semantic token per clip."""
    return np.stack([np.bincount(t.numpy(), minlength=clusters) / max(t.numel(), 1) for t in tokens])


def load_split(cache_dir: str, manifest: str, label: str, field: str) -> tuple[list, torch.Tensor, list]:
    """Semantic tokens, conditioning tokens (``field``) and labels of the cache's clips."""
    labels = {str(Path(e.path).resolve()): e.labels.get(label) for e in read_manifest(manifest)}
    cache = TokenCache(cache_dir, fields=["semantic", field])
    semantic, cond, y = [], [], []
    for i in range(len(cache)):
        record, item = cache[i], cache.items[cache.positions[i]]  # positions: the items not skipped
        value = labels.get(str(Path(item["path"]).resolve()))
        if value is None or not record[field].numel():
            continue
        semantic.append(record["semantic"].long())
        cond.append(record[field].long())
        y.append(str(value))
    if not y:
        raise SystemExit(f"{cache_dir}: no clip has a {label!r} label in {manifest}")
    return semantic, torch.stack(cond), y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lms", nargs="+", help="semantic LM checkpoints")
    p.add_argument("--train-tokens", required=True)
    p.add_argument("--train-manifest", required=True)
    p.add_argument("--test-tokens", required=True)
    p.add_argument("--test-manifest", required=True)
    p.add_argument("--label", default="genre")
    p.add_argument("--condition", choices=["text", "audio"], default="text")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    field = "mulan_text_tokens" if args.condition == "text" else "mulan_tokens"
    train_sem, _, train_y = load_split(args.train_tokens, args.train_manifest, args.label, field)
    test_sem, test_cond, test_y = load_split(args.test_tokens, args.test_manifest, args.label, field)
    clusters = 1 + max(int(t.max()) for t in train_sem + test_sem)
    classifier = LogisticRegression(max_iter=3000, C=10.0).fit(histograms(train_sem, clusters), train_y)
    floor = Counter(test_y).most_common(1)[0][1] / len(test_y)
    ceiling = classifier.score(histograms(test_sem, clusters), test_y)
    print(f"{len(test_y)} held-out clips, {len(set(train_y))} {args.label} labels; "
          f"most frequent {floor:.3f}, real tokens {ceiling:.3f} (train {classifier.score(histograms(train_sem, clusters), train_y):.3f})")  # fmt: skip
    for path in args.lms:
        lm = load_model(path, kind="semantic_lm").eval()
        row = []
        for guidance in args.guidance:
            t0 = time.perf_counter()
            generated = lm.generate(
                Conditioning.constant(test_cond),
                lm.window_units,
                sampling=SamplingConfig(temperature=args.temperature, guidance=guidance),
                generator=torch.Generator().manual_seed(args.seed),
            )
            score = classifier.score(histograms(list(generated), clusters), test_y)
            row.append(f"guidance {guidance:g}: {score:.3f} ({time.perf_counter() - t0:.0f} s)")
        print(f"{path}: " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main()
