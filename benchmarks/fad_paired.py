"""Is one system nearer the references than another, or is it the draw? FAD with a paired bootstrap.

    python benchmarks/fad_paired.py --model BUNDLE --prompts MANIFEST --generated DIR [DIR ...] \
        [--classifier CLS] [--limit N] [--resamples 1000]

Every DIR holds one clip per prompt as ``musiclm eval`` writes them (``OUT/generated/00000.wav``, ...),
for the same prompts in the same order. Each system's clips and the prompts' reference clips are
embedded once (MuLaN of the bundle; the label classifier's features too with ``--classifier``), then
the prompts are resampled with replacement ``--resamples`` times, the same draw for every system and
the references, and each system's FAD is computed on every draw. The table gives each system's FAD
on all prompts, its difference to the first DIR's, that difference's 90 % interval over the draws and
the share of draws in which it is the nearer. On a few dozen prompts the draw moves FAD by more than
most changes do; this says how many prompts a difference needs before it counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from musiclm.eval.classifiers import LabelClassifier
from musiclm.eval.embedders import ClassifierEmbedder, MulanEmbedder
from musiclm.eval.fad import fad, fad_paired_bootstrap
from musiclm.eval.report import load_clip, load_prompts
from musiclm.pipeline import MusicLM


def clip_paths(folder: Path, count: int) -> list[Path]:
    """The folder's first ``count`` clips, or one line naming the folder or the first clip missing."""
    if not folder.is_dir():
        raise SystemExit(f"error: {folder}: no such folder")
    paths = [folder / f"{i:05d}.wav" for i in range(count)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]}: missing ({len(missing)} of {count} clips are)")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="bundle whose MuLaN embeds the clips")
    parser.add_argument("--prompts", required=True, help="labelled manifest with reference clips")
    parser.add_argument(
        "--generated", nargs="+", required=True, help="clip folders; the first is the baseline"
    )
    parser.add_argument(
        "--classifier", default=None, help="label classifier checkpoint: FAD in its space too"
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    entries = load_prompts(args.prompts, args.limit, None)
    if not all(e.path for e in entries):
        raise SystemExit(f"error: {args.prompts}: every prompt needs a reference clip")
    folders = [Path(d) for d in args.generated]
    paths = [clip_paths(folder, len(entries)) for folder in folders]  # every clip there before any work
    model = MusicLM.from_pretrained(args.model)
    sr = model.sample_rate
    embedders = {"MuLaN": MulanEmbedder(model.mulan)}
    if args.classifier:
        embedders["classifier"] = ClassifierEmbedder(LabelClassifier.load(args.classifier))
    refs = torch.stack([load_clip(e.path, sr, args.seconds, start=e.start) for e in entries])
    audio = [torch.stack([load_clip(str(p), sr, args.seconds) for p in clips]) for clips in paths]

    print(f"{len(entries)} prompts, {args.resamples} paired resamples; baseline {folders[0]}\n")
    for space, embedder in embedders.items():
        ref = embedder.embed(refs, sr).double().numpy()
        systems = [embedder.embed(wav, sr).double().numpy() for wav in audio]
        whole = [fad(ref, emb) for emb in systems]
        draws = fad_paired_bootstrap(ref, systems, resamples=args.resamples, seed=args.seed)
        diff = draws - draws[:, :1]
        print(f"| clips | FAD ({space}) | minus the baseline's | 90 % interval | nearer in |")
        print("|---|---|---|---|---|")
        for k, folder in enumerate(folders):
            if k == 0:
                print(f"| {folder} | {whole[0]:.4f} | | | |")
                continue
            low, high = np.percentile(diff[:, k], [5, 95])
            nearer = float((diff[:, k] < 0).mean())
            print(
                f"| {folder} | {whole[k]:.4f} | {whole[k] - whole[0]:+.4f} | "
                f"{low:+.4f} .. {high:+.4f} | {nearer:.1%} of draws |"
            )
        print()


if __name__ == "__main__":
    main()
