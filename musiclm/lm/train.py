"""Training a stage LM on token caches with the shared Trainer."""

from __future__ import annotations

import random

from torch.utils.data import Dataset

from musiclm.errors import DataError
from musiclm.lm.guidance import drop_conditioning
from musiclm.lm.stages import StageLM
from musiclm.train import TrainTask


class StageDataset(Dataset):
    """Random training windows of one stage from token records.

    ``records`` is anything with ``len`` and ``[i] -> dict`` holding ``"codec"`` Long[Q, F_a],
    ``"semantic"`` Long[F_s] and ``"mulan_tokens"`` Long[Mq] (a token cache or a list).
    """

    def __init__(self, records, model: StageLM, seed: int = 0):
        if len(records) == 0:
            raise DataError("no token records to train on")
        self.records, self.model = records, model
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.model.training_example(self.records[i], self.rng)


class StageTask(TrainTask):
    """Cross-entropy on the generated part; conditioning dropped with ``cond_drop_prob`` (for CFG),
    melody tokens alone with ``melody_drop_prob`` (so the model also follows text without a melody)."""

    def __init__(self, model: StageLM):
        super().__init__()
        self.model = model

    def forward(self, batch, phase: str, step: int):
        config = self.model.config
        tokens = drop_conditioning(batch["tokens"], batch["cond_mask"], config.lm.cond_drop_prob)
        tokens = drop_conditioning(tokens, batch["melody_mask"], config.melody_drop_prob)
        loss = self.model.loss(tokens, batch["loss_mask"])
        return loss, {}
