"""Training: one accelerate-based Trainer shared by every component."""

from musiclm.train.ema import EMA
from musiclm.train.trainer import TrainConfig, Trainer, TrainTask, held_out_batches

__all__ = ["EMA", "TrainConfig", "TrainTask", "Trainer", "held_out_batches"]
