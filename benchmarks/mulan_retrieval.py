"""MuLaN retrieval and zero-shot accuracy on held-out procedural music (prints numbers; not a test).

    python benchmarks/mulan_retrieval.py [--towers own minilm] [--steps 400] [--train-clips 800]

For each text tower: trains a tiny-preset MuLaN on captioned procedural clips, then on held-out
clips (other seeds: unseen melodies and progressions) reports text->audio R@1 and R@10 with each
clip's own caption, and zero-shot accuracy per factor (mode, tempo bucket, drums) by comparing the
audio embedding with label prompts, once in the captions' words and once in paraphrases the
caption templates never use.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from musiclm.config import get_preset
from musiclm.data.procedural import PARAPHRASES, WORDS, caption_for, render_piece, tempo_bucket
from musiclm.mulan.model import MuLaN
from musiclm.mulan.train import audio_embeddings, text_embeddings, train_mulan
from musiclm.train import TrainConfig

FACTORS = {
    "mode": (lambda lab: lab["mode"], ["major", "minor"]),
    "tempo": (lambda lab: tempo_bucket(lab["tempo"]), ["slow", "medium", "fast"]),
    "drums": (lambda lab: "drums" if lab["drums"] else "no drums", ["drums", "no drums"]),
}


class Rendered(Dataset):
    """Pre-rendered procedural clips (rendering once keeps the benchmark about the model)."""

    def __init__(self, n: int, seed: int, sr: int, seconds: float):
        self.items = []
        for i in tqdm(range(n), desc=f"render seed {seed}", leave=False):
            wav, labels = render_piece([seed, i], sr, seconds)
            self.items.append(
                {"wav": torch.from_numpy(wav), "caption": caption_for(labels, [seed, i]), "labels": labels}
            )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {"wav": self.items[i]["wav"], "caption": self.items[i]["caption"]}


def prompt_for(value: str, paraphrase: bool) -> str:
    return PARAPHRASES[value] if paraphrase else f"{WORDS[value][0]} music"


@torch.no_grad()
def evaluate(model: MuLaN, held: Rendered) -> dict:
    model.eval()
    audio = audio_embeddings(model, held, len(held))
    text = text_embeddings(model, [it["caption"] for it in held.items], batch_size=64)
    rank = (
        (model.similarity(text, audio).argsort(dim=1, descending=True) == torch.arange(len(held))[:, None])
        .float()
        .argmax(1)
    )
    out = {"R@1": (rank < 1).float().mean().item(), "R@10": (rank < 10).float().mean().item()}
    for paraphrase in (False, True):
        for name, (get, values) in FACTORS.items():
            prompts = model.embed_text([prompt_for(v, paraphrase) for v in values])
            pred = (audio @ prompts.T).argmax(1)
            truth = torch.tensor([values.index(get(it["labels"])) for it in held.items])
            out[f"{name}{' (paraphrase)' if paraphrase else ''}"] = (pred == truth).float().mean().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--towers", nargs="+", default=["own", "minilm"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--train-clips", type=int, default=800)
    ap.add_argument("--held-clips", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()

    base = get_preset("tiny").mulan
    sr = base.sample_rate
    train = Rendered(args.train_clips, 0, sr, args.seconds)
    held = Rendered(args.held_clips, 12345, sr, args.seconds)
    chance = {"R@1": 1 / len(held), "R@10": 10 / len(held)}
    for name, (_, values) in FACTORS.items():
        chance[name] = chance[f"{name} (paraphrase)"] = 1 / len(values)
    results = {}
    for tower in args.towers:
        cfg = get_preset("tiny").mulan
        cfg.text_tower = tower
        cfg.window_seconds = args.seconds
        torch.manual_seed(0)
        tc = TrainConfig(
            out_dir=tempfile.mkdtemp(prefix=f"mulan-{tower}-"),
            max_steps=args.steps,
            batch_size=32,
            lr=5e-4,
            warmup_steps=50,
            checkpoint_every=10**9,
            log_every=50,
            ema_decay=None,
        )
        trainer = train_mulan(train, MuLaN(cfg), tc, quantizer_clips=len(train))
        results[tower] = evaluate(trainer.unwrapped.model, held)
    print(f"train: {len(train)} clips x {args.seconds:g} s, {args.steps} steps; held-out: {len(held)} clips")
    print(f"{'metric':<22}" + "".join(f"{t:>10}" for t in results) + f"{'chance':>10}")
    for metric in chance:
        print(
            f"{metric:<22}"
            + "".join(f"{r[metric]:>10.3f}" for r in results.values())
            + f"{chance[metric]:>10.3f}"
        )


if __name__ == "__main__":
    main()
