"""Which stage limits prompt adherence? ``musiclm eval`` with a stage's tokens taken from the reference.

For each held-out prompt the reference clip is tokenized by the bundle itself; with ``--oracle
semantic`` the coarse and fine LMs generate from the prompt and the reference's semantic tokens (the
semantic LM is out of the loop), with ``--oracle coarse`` only the fine LM generates, from the
reference's coarse codes. The clips go to ``OUT/generated`` and are scored by the same ``evaluate``
as the bundle's own eval (reference and codec round-trip rows included), so the three reports read
side by side: a figure that the oracle row lifts far above the bundle's is lost in the replaced stage.

    python benchmarks/oracle_tokens.py SYNTH/test.jsonl --oracle semantic --classifier CLS --limit 48 --out O
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from musiclm.audio import save_audio
from musiclm.eval.classifiers import LabelClassifier
from musiclm.eval.report import EvalConfig, evaluate, load_clip, load_prompts
from musiclm.pipeline import MusicLM


@torch.inference_mode()
def generate_with_oracle(model: MusicLM, entries, folder: Path, *, oracle: str, config: EvalConfig) -> None:
    """One clip per entry into ``folder`` (kept clips are reused, so a rerun resumes)."""
    folder.mkdir(parents=True, exist_ok=True)
    sr, lc = model.sample_rate, model.coarse_lm.config.coarse_levels
    sampling = model.sampling_configs(guidance=config.guidance)
    todo = [i for i in range(len(entries)) if not (folder / f"{i:05d}.wav").is_file()]
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        refs = [model.tokenize_audio(load_clip(entries[i].path, sr, config.seconds, start=entries[i].start), sr)
                for i in batch]  # fmt: skip
        semantic = torch.cat([r["semantic"] for r in refs])
        codes = torch.cat([r["codes"] for r in refs])
        captions = [entries[i].caption for i in batch]
        cond = model.prompt_conditioning(captions, config.seconds)
        generator = torch.Generator(device=model.device).manual_seed(config.seed + batch[0])
        frames = codes.shape[-1]
        if oracle == "semantic":
            coarse = model.coarse_lm.generate(
                cond, frames, inputs=semantic, sampling=sampling["coarse"], generator=generator
            )
        else:
            coarse = codes[:, :lc]
        fine = model.fine_lm.generate(
            None, frames, inputs=coarse, sampling=sampling["fine"], generator=generator
        )
        audio = model.decode(coarse, fine, round(config.seconds * sr))
        for row, i in enumerate(batch):
            save_audio(folder / f"{i:05d}.wav", audio[row].cpu(), sr)
        print(f"{start + len(batch)}/{len(todo)} clips", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompts", help="labelled manifest with reference audio, e.g. synth/test.jsonl")
    p.add_argument("--oracle", choices=("semantic", "coarse"), required=True)
    p.add_argument("--model", default="default")
    p.add_argument("--classifier", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's own")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    model = MusicLM.from_pretrained(args.model, device="cpu")
    classifier = LabelClassifier.load(args.classifier) if args.classifier else None
    config = EvalConfig(
        seconds=args.seconds,
        batch_size=args.batch_size,
        limit=args.limit,
        baselines=("reference", "codec", "shuffled"),
        guidance=args.guidance,
    )
    entries = load_prompts(args.prompts, args.limit)
    t0 = time.perf_counter()
    folder = Path(args.out) / "generated"
    generate_with_oracle(model, entries, folder, oracle=args.oracle, config=config)
    print(
        f"generated {len(entries)} clips with {args.oracle} tokens of the references in {time.perf_counter() - t0:.0f} s"
    )
    evaluate(model, args.prompts, args.out, config=config, classifier=classifier, generated=folder)
    print((Path(args.out) / "report.md").read_text())


if __name__ == "__main__":
    main()
