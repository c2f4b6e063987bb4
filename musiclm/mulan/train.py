"""Training MuLaN: text tokenizer, contrastive towers (shared Trainer), then the RVQ."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from musiclm.checkpoint import save_model
from musiclm.mulan.model import MuLaN
from musiclm.mulan.text import train_wordpiece
from musiclm.train import TrainConfig, Trainer, TrainTask, held_out_batches


class ContrastiveTask(TrainTask):
    def __init__(self, model: MuLaN):
        super().__init__()
        self.model = model

    def phases(self):
        params = [
            p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("quantizer.")
        ]
        return {"main": params}

    def forward(self, batch, phase: str, step: int):
        loss, accuracy = self.model.contrastive_loss(batch["wav"], list(batch["caption"]))
        return loss, {"accuracy": accuracy, "temperature": 1 / self.model.logit_scale.exp().detach()}


def captions_of(dataset, limit: int = 20000) -> list[str]:
    entries = getattr(dataset, "entries", None)
    if entries is not None:
        return [e.caption for e in entries if e.caption][:limit]
    return [dataset[i]["caption"] for i in range(min(limit, len(dataset)))]


@torch.no_grad()
def audio_embeddings(model: MuLaN, dataset, clips: int, *, batch_size: int = 16) -> torch.Tensor:
    model.eval()
    idx = list(range(min(clips, len(dataset))))
    out = []
    for start in tqdm(range(0, len(idx), batch_size), desc="audio embeddings", leave=False):
        wav = torch.stack([dataset[i]["wav"] for i in idx[start : start + batch_size]])
        out.append(model.embed_audio(wav))
    return torch.cat(out)


@torch.no_grad()
def text_embeddings(model: MuLaN, texts: list[str], *, batch_size: int = 32) -> torch.Tensor:
    return torch.cat([model.embed_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])


def quantizer_vectors(model: MuLaN, dataset, clips: int, crops: int) -> torch.Tensor:
    """What the conditioning RVQ is fitted on: audio embeddings of ``crops`` random crops of each of
    up to ``clips`` clips. One vector per clip is not enough: with no more clips than codes, level 1
    gives every clip its own code and leaves the later levels nothing to quantize (constant codes;
    ``benchmarks/mulan_tokens.py`` measured 8 of 12 such levels with 500 clips, none with 8 crops)."""
    return torch.cat([audio_embeddings(model, dataset, clips) for _ in range(crops)])


def train_mulan(
    dataset,
    model: MuLaN,
    config: TrainConfig,
    *,
    quantizer_clips: int = 2000,
    quantizer_crops: int = 8,
    valid=None,
) -> Trainer:
    """Fit the text tokenizer (own tower), train both towers, fit the RVQ on audio embeddings, export.
    ``valid``: a held-out captioned dataset whose contrastive loss is logged as ``val/loss``."""
    if model.config.text_tower == "own" and model.text.tokenizer is None:
        model.text.set_tokenizer(train_wordpiece(captions_of(dataset), model.config.text_vocab_size))
    task = ContrastiveTask(model)
    if valid is not None:
        task.valid_batches = held_out_batches(valid, config.batch_size)
    trainer = Trainer(task, dataset, config)
    trainer.fit()
    task = trainer.unwrapped
    with trainer.ema.swapped_in(task) if trainer.ema is not None else nullcontext():
        task.model.quantizer.fit(quantizer_vectors(task.model, dataset, quantizer_clips, quantizer_crops))
        save_model(task.model, Path(config.out_dir) / "model")
    trainer.finish_best(
        lambda best: best.quantizer.fit(quantizer_vectors(best, dataset, quantizer_clips, quantizer_crops)),
        kind="mulan",
        fitted=trainer.model_dir,
    )
    return trainer
