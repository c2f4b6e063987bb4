"""A tiny regression task for exercising the Trainer (used in-process and by the DDP script)."""

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from musiclm.checkpoint import register_model
from musiclm.train import TrainTask


class ToyData(Dataset):
    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@dataclass
class ToyConfig:
    width: int = 4


@register_model("toy-linear")
class ToyModel(nn.Module):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.width, 1)

    def forward(self, x):
        return self.lin(x).squeeze(-1)


class ToyTask(TrainTask):
    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.model = ToyModel(ToyConfig())
        self.stop_at = stop_at

    def forward(self, batch, phase, step):
        if self.stop_at is not None and step == self.stop_at:
            raise KeyboardInterrupt
        x, y = batch
        loss = (self.model(x) - y).pow(2).mean()
        return loss, {"mae": (self.model(x) - y).abs().mean()}
