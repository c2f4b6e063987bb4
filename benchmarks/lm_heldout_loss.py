"""Held-out loss of stage LMs side by side, every conditioning given, the same windows for each.

A trainer's ``val/loss`` drops conditioning, melody tokens, pitch classes and beat phases at their
training rates (it is the training objective on held-out clips), so two runs' figures differ by the
draws as well as by the models. This scores each LM on the same fixed windows of a held-out token
cache with nothing dropped, and what each part of its conditioning is worth there (the loss with
another clip's MuLaN tokens, or without the pitch classes or beat phases, minus the loss as it is):

    python benchmarks/lm_heldout_loss.py VALID_TOKENS --stage semantic --lm default --lm RUN/model
"""

from __future__ import annotations

import argparse

import torch

from musiclm.checkpoint import load_model
from musiclm.data.cache import TokenCache
from musiclm.lm.commands import NEEDS, cache_fields
from musiclm.lm.train import StageDataset, StageTask
from musiclm.pretrained import component_path
from musiclm.train.trainer import held_out_batches


@torch.no_grad()
def score(model, cache_dir: str, *, clips: int, batch_size: int, seed: int) -> dict[str, float]:
    """Loss with everything given, and the gain of each conditioning part, on fixed held-out windows."""
    cache = TokenCache(cache_dir, fields=cache_fields(model.config))
    task = StageTask(model.eval())
    task.valid_batches = held_out_batches(StageDataset(cache, model, seed=seed), batch_size, max_items=clips)
    losses, sizes = [], []
    for batch in task.valid_batches:
        tracks = {k: batch[k] for k in ("chroma", "beats") if batch.get(k) is not None}
        losses.append(float(model.loss(batch["tokens"], batch["loss_mask"], **tracks)))
        sizes.append(int(batch["loss_mask"][:, 1:].sum()))
    figures = {"loss": sum(x * n for x, n in zip(losses, sizes, strict=True)) / sum(sizes)}
    if model.conditioned:
        figures["cond_gain"] = task.conditioning_gain()
    if model.chroma_embedding is not None:
        figures["chroma_gain"] = task.track_gain("chroma")
    if model.beat_embedding is not None:
        figures["beat_gain"] = task.track_gain("beats")
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tokens", help="held-out token cache (`musiclm tokenize` of clips no LM trained on)")
    p.add_argument("--stage", choices=sorted(NEEDS), required=True)
    p.add_argument("--lm", action="append", required=True, help="LM checkpoint or bundle (repeat)")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=1, help="window draw (the trainers' validation uses seed + 1)")
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"{'LM':<48} {'loss':>7} {'cond':>7} {'chroma':>7} {'beats':>7}")
    for name in args.lm:
        model = load_model(component_path(name, f"{args.stage}_lm"), kind=f"{args.stage}_lm")
        f = score(model, args.tokens, clips=args.clips, batch_size=args.batch_size, seed=args.seed)
        cells = [
            f"{f[k]:7.4f}" if k in f else f"{'':>7}"
            for k in ("loss", "cond_gain", "chroma_gain", "beat_gain")
        ]
        print(f"{name[-48:]:<48} {' '.join(cells)}")


if __name__ == "__main__":
    main()
