"""Can the LMs know a prompt's tempo from their MuLaN conditioning? (prints numbers; not a test)

    python benchmarks/tempo_in_conditioning.py --train CACHE MANIFEST [--train ...] --valid CACHE MANIFEST

The LMs read the first level of MuLaN's conditioning RVQ (`--mulan-levels 1`): 256 codes for every
genre, instrument and tempo. For each held-out clip this guesses its labels from what the LMs are
given, with nothing learned beyond a lookup in the training clips: the majority tempo bucket and
genre, and the median BPM, of the training clips that share the clip's level-1 code (of its audio,
as in training, and of its caption, as at generation), and the median BPM of the 10 training
captions nearest the clip's caption in MuLaN's text embedding (all 12 levels' worth) and in the
frozen MiniLM sentence embedding beneath it. BPM is scored as `musiclm eval` scores tempo: within
4 %, or also at double / half. The caches are `musiclm tokenize` caches of the manifests (fields
`mulan_tokens` and `mulan_text_tokens`), made with the MuLaN given here.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import torch
import torch.nn.functional as F

from musiclm.checkpoint import load_model
from musiclm.data.cache import TokenCache
from musiclm.data.manifest import load_entries
from musiclm.mulan.minilm import mean_pooled
from musiclm.pretrained import component_path

BUCKETS = (90, 115, 135)  # BPM edges of four tempo buckets: slow, medium, brisk, fast


def clips(cache: str, manifest: str) -> list[dict]:
    """Level-1 audio and text codes, caption, BPM, tempo bucket and genre of each cached clip."""
    labels = {e.id: e.labels for e in load_entries(manifest)}
    tokens = TokenCache(cache, fields=["mulan_tokens", "mulan_text_tokens"])
    out = []
    for i in tokens.positions:
        item = tokens[i]
        label = labels[item["id"].split("#")[0]]
        bpm = float(label["bpm"])
        out.append({
            "audio": int(item["mulan_tokens"][0]), "text": int(item["mulan_text_tokens"][0]),
            "caption": item["caption"], "bpm": bpm, "genre": label["genre"],
            "bucket": sum(bpm >= edge for edge in BUCKETS),
        })  # fmt: skip
    return out


def tempo_right(pred: torch.Tensor, bpm: torch.Tensor) -> tuple[float, float]:
    """Shares within 4 % of the BPM, and within 4 % of it, its double or its half."""

    def near(target):
        return (pred - target).abs() <= 0.04 * target

    exact = near(bpm)
    return exact.float().mean().item(), (exact | near(bpm / 2) | near(bpm * 2)).float().mean().item()


def by_code(train: list[dict], valid: list[dict], code: str) -> dict:
    """Each held-out clip gets the majority bucket / genre and the median BPM of the training clips
    with its level-1 code (the training set's overall ones for a code no training clip has)."""
    groups = defaultdict(list)
    for c in train:
        groups[c[code]].append(c)
    out = {}
    for factor in ("bucket", "genre"):
        overall = Counter(c[factor] for c in train).most_common(1)[0][0]
        guess = [Counter(g[factor] for g in groups[c[code]]).most_common(1)[0][0] if groups[c[code]] else overall
                 for c in valid]  # fmt: skip
        out[factor] = sum(g == c[factor] for g, c in zip(guess, valid, strict=True)) / len(valid)
    median = torch.tensor([c["bpm"] for c in train]).median()
    pred = torch.stack([torch.tensor([g["bpm"] for g in groups[c[code]]]).median() if groups[c[code]] else median
                        for c in valid])  # fmt: skip
    out["bpm"] = tempo_right(pred, torch.tensor([c["bpm"] for c in valid]))
    return out


@torch.no_grad()
def nearest_captions(embed, train: list[dict], valid: list[dict], k: int = 10, batch: int = 256):
    """Median BPM of the ``k`` training captions nearest each held-out caption under ``embed``."""

    def all_of(rows):
        return F.normalize(torch.cat([embed([c["caption"] for c in rows[i : i + batch]])
                                      for i in range(0, len(rows), batch)]), dim=-1)  # fmt: skip

    a, b = all_of(train), all_of(valid)
    nearest = (b @ a.T).topk(k, dim=1).indices
    pred = torch.tensor([c["bpm"] for c in train])[nearest].median(dim=1).values
    return tempo_right(pred, torch.tensor([c["bpm"] for c in valid]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", nargs=2, action="append", required=True, metavar=("CACHE", "MANIFEST"))
    p.add_argument("--valid", nargs=2, required=True, metavar=("CACHE", "MANIFEST"))
    p.add_argument("--mulan", default="default", help="the MuLaN (or bundle) that made the caches")
    p.add_argument("--limit", type=int, default=None, help="at most this many training clips (even spread)")
    args = p.parse_args()
    torch.manual_seed(0)
    train = [c for cache, manifest in args.train for c in clips(cache, manifest)]
    if args.limit and len(train) > args.limit:
        train = train[:: len(train) // args.limit][: args.limit]
    valid = clips(*args.valid)
    majority = Counter(c["bucket"] for c in train).most_common(1)[0][0]
    print(f"{len(train)} training clips, {len(valid)} held-out clips; the majority tempo bucket is right "
          f"for {sum(c['bucket'] == majority for c in valid) / len(valid):.3f}")  # fmt: skip
    print("| what the guess reads | tempo bucket | genre | BPM within 4 % / with x2 |")
    print("|---|---|---|---|")
    for code, what in (("audio", "level-1 code of the clip's audio (training)"),
                       ("text", "level-1 code of its caption (generation)")):  # fmt: skip
        r = by_code(train, valid, code)
        print(f"| {what} | {r['bucket']:.3f} | {r['genre']:.3f} | {r['bpm'][0]:.3f} / {r['bpm'][1]:.3f} |")
    mulan = load_model(component_path(args.mulan, "mulan"), kind="mulan").eval()
    tower = mulan.text

    def minilm(texts):
        return mean_pooled(tower.encoder, tower.tokenizer, texts, max_length=mulan.config.max_text_tokens)[0]

    embedders = [("MuLaN text embedding of its caption, 10 nearest captions", mulan.embed_text)]
    if hasattr(tower, "encoder"):
        embedders.append(("MiniLM sentence embedding of its caption, 10 nearest captions", minilm))
    for what, embed in embedders:
        exact, octave = nearest_captions(embed, train, valid)
        print(f"| {what} | | | {exact:.3f} / {octave:.3f} |")


if __name__ == "__main__":
    main()
