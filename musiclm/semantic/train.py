"""Training the semantic tokenizer: k-means targets, masked prediction, then k-means on a layer."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from musiclm.checkpoint import save_model
from musiclm.semantic.kmeans import assign, fit_kmeans, target_features
from musiclm.semantic.ssl_model import frame_features, span_mask
from musiclm.semantic.tokenizer import SemanticTokenizer
from musiclm.train import TrainConfig, Trainer, TrainTask, held_out_batches


class MaskedPredictionTask(TrainTask):
    """HuBERT's objective: predict the k-means class of masked frames."""

    def __init__(self, tokenizer: SemanticTokenizer, target_centroids: torch.Tensor):
        super().__init__()
        self.model = tokenizer
        self.register_buffer("target_centroids", target_centroids)

    def phases(self):
        return {"main": list(self.model.ssl.parameters())}

    def forward(self, batch, phase: str, step: int):
        wav = batch["wav"] if isinstance(batch, dict) else batch
        c = self.model.config
        with torch.no_grad():
            targets = assign(target_features(wav, c), self.target_centroids)
        feats = frame_features(wav, c)
        mask = span_mask(wav.shape[0], feats.shape[1], c.mask_prob, span=c.mask_span, device=wav.device)
        logits = self.model.ssl(feats, mask)
        loss = F.cross_entropy(logits[mask].float(), targets[mask])
        accuracy = (logits[mask].argmax(-1) == targets[mask]).float().mean()
        return loss, {"masked_accuracy": accuracy, "masked_fraction": mask.float().mean()}


def _sample_clips(dataset, n: int) -> list[torch.Tensor]:
    n = min(n, len(dataset))
    step = max(1, len(dataset) // n)
    return [dataset[i]["wav"] for i in range(0, step * n, step)]


@torch.no_grad()
def fit_targets(dataset, tokenizer: SemanticTokenizer, clips: int = 200) -> torch.Tensor:
    """First-iteration targets: k-means on log-mel + chroma frames of ``clips`` dataset items."""
    feats = [
        target_features(w[None], tokenizer.config)[0]
        for w in tqdm(_sample_clips(dataset, clips), desc="target features")
    ]
    return fit_kmeans(torch.cat(feats), tokenizer.config.num_target_clusters)


@torch.no_grad()
def fit_tokens(dataset, tokenizer: SemanticTokenizer, clips: int = 200) -> None:
    """k-means with ``num_clusters`` on layer ``config.layer`` features; stored in the tokenizer."""
    tokenizer.eval()
    feats = [
        tokenizer.features(w[None].to(tokenizer.centroids.device))[0].cpu()
        for w in tqdm(_sample_clips(dataset, clips), desc="layer features")
    ]
    tokenizer.centroids.copy_(fit_kmeans(torch.cat(feats), tokenizer.config.num_clusters))


def train_semantic(
    dataset, tokenizer: SemanticTokenizer, config: TrainConfig, *, kmeans_clips: int = 200, valid=None
) -> Trainer:
    """The whole recipe; exports the finished tokenizer to ``out_dir/model``. ``valid``: a held-out
    dataset whose masked-prediction loss is logged as ``val/loss``."""
    from pathlib import Path

    task = MaskedPredictionTask(tokenizer, fit_targets(dataset, tokenizer, kmeans_clips))
    if valid is not None:
        task.valid_batches = held_out_batches(valid, config.batch_size)
    trainer = Trainer(task, dataset, config)
    trainer.fit()
    task = trainer.unwrapped
    with trainer.ema.swapped_in(task) if trainer.ema is not None else nullcontext():
        fit_tokens(dataset, task.model, kmeans_clips)
        save_model(task.model, Path(config.out_dir) / "model")
    trainer.finish_best(
        lambda best: fit_tokens(dataset, best, kmeans_clips),
        kind="semantic",
        fitted=trainer.model_dir,
    )
    return trainer
