"""What storing a bundle's embedding banks as int8 rows changes (``musiclm bundle --half``).

    python benchmarks/compact_banks.py --model REFERENCE --model COMPACT --prompts MANIFEST [...]

REFERENCE and COMPACT are the same components stored two ways (e.g. the shipped bundle and
``musiclm bundle --half`` of it). Prints each bundle's size on disk; per bank named in a model's
``int8_rows``, how far its rows turned (cosine between the two storages); for the manifests'
captions, how far the loudness heads' predictions differ (LU); and for the prototypes, how often a
caption's nearest training captions are the same set, how near the two prototypes are, and how often
the two rankings keep the same one of four stand-in candidates: the caption's own reference clip and
the next three clips of the manifest (a real 10 s of music each, embedded by the bundle's MuLaN).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from musiclm.bundle import load_bundle, resolve_bundle
from musiclm.checkpoint import int8_rows
from musiclm.eval.embedders import MulanEmbedder
from musiclm.eval.report import load_clip, load_prompts

CANDIDATES = 4
SECONDS = 10.0


def bundle_bytes(name: str) -> int:
    return sum(f.stat().st_size for f in resolve_bundle(name).rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="reference, then compact")
    parser.add_argument("--prompts", nargs="+", required=True, help="manifests with reference clips")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    if len(args.model) != 2:
        parser.error("give --model twice: the reference bundle, then the compact one")

    (_, ref), (_, compact) = (load_bundle(m) for m in args.model)
    print({m: f"{bundle_bytes(m) / 1e6:.2f} MB" for m in args.model})
    for key in ("loudness", "prototypes"):
        for name in int8_rows(ref[key]):
            a, b = (getattr(c[key], name).float() for c in (ref, compact))
            cos = F.cosine_similarity(a, b, dim=-1)
            print(
                f"{key}.{name} {list(a.shape)}: row cosine min {cos.min():.6f}, mean {cos.mean():.6f}; "
                f"largest value change {float((a - b).abs().max()):.5f}"
            )

    entries = [e for manifest in args.prompts for e in load_prompts(manifest, args.limit, None)]
    captions = [e.caption for e in entries]
    lufs = [c["loudness"](captions) for c in (ref, compact)]
    diff = (lufs[0] - lufs[1]).abs()
    result = {
        "captions": len(captions),
        "loudness_abs_diff_mean": round(float(diff.mean()), 4),
        "loudness_abs_diff_max": round(float(diff.max()), 4),
    }

    mulan = ref["mulan"]
    with torch.no_grad():
        text = mulan.embed_text(captions).float()
        clips = torch.stack([load_clip(e.path, mulan.sample_rate, SECONDS, start=e.start) for e in entries])
        audio = F.normalize(MulanEmbedder(mulan).embed(clips, mulan.sample_rate).float(), dim=-1)
    rows = torch.arange(len(entries))
    stand_ins = audio[(rows[:, None] + torch.arange(CANDIDATES)) % len(entries)]  # [P, 4, D]
    near, targets, picks = [], [], []
    for c in (ref, compact):
        bank = c["prototypes"]
        near.append(bank.neighbours(text).sort(-1).values)
        targets.append(bank.prototype(text))
        picks.append(torch.einsum("pd,pnd->pn", targets[-1], stand_ins).argmax(-1))
    result.update(
        {
            "same_neighbours": round(float((near[0] == near[1]).all(-1).float().mean()), 4),
            "prototype_cosine_min": round(float((targets[0] * targets[1]).sum(-1).min()), 6),
            "same_pick_of_4": round(float((picks[0] == picks[1]).float().mean()), 4),
            "own_clip_picked": [round(float((p == 0).float().mean()), 4) for p in picks],
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
