"""Training the melody embedder with the shared Trainer, then fitting its RVQ."""

from __future__ import annotations

from pathlib import Path

import torch

from musiclm.checkpoint import save_model
from musiclm.melody.model import MelodyEmbedder, fit_quantizer
from musiclm.train import TrainTask


class MelodyTask(TrainTask):
    """Contrastive (InfoNCE) training on "same melody, other instrument" pairs."""

    def __init__(self, model: MelodyEmbedder):
        super().__init__()
        self.model = model

    def phases(self) -> dict[str, list[torch.nn.Parameter]]:
        # the RVQ is fitted afterwards on the trained embeddings, not by gradient descent
        params = [p for n, p in self.model.named_parameters() if not n.startswith("quantizer.")]
        return {"main": params}

    def forward(self, batch, phase: str, step: int):
        loss, accuracy = self.model.contrastive_loss(batch["anchor"], batch["positive"])
        return loss, {"accuracy": accuracy}

    def export(self, directory: Path) -> None:
        save_model(self.model, directory)


@torch.no_grad()
def embed_dataset(model: MelodyEmbedder, dataset, batch_size: int = 32) -> torch.Tensor:
    """Embeddings of every anchor and positive window of a pair dataset, ``[2N, embed_dim]``."""
    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        windows = torch.stack([it[k] for it in items for k in ("anchor", "positive")])
        out.append(model.embed_windows(windows.to(model.head.weight.device)).cpu())
    return torch.cat(out)


def finish_quantizer(model: MelodyEmbedder, dataset, directory: Path, *, epochs: int = 20) -> float:
    """Fit the RVQ on the trained model's embeddings and save the final checkpoint."""
    error = fit_quantizer(model, embed_dataset(model, dataset), epochs=epochs)
    save_model(model, directory)
    return error
