"""Training: one accelerate-based Trainer shared by every component.

The names load on first use, so that ``musiclm.train.args`` (the CLI's training options) does not
pull in torch when the command line is only being parsed.
"""

__all__ = ["EMA", "TrainConfig", "TrainTask", "Trainer", "held_out_batches"]


def __getattr__(name: str):
    if name == "EMA":
        from musiclm.train.ema import EMA

        return EMA
    if name == "TrainConfig":
        from musiclm.train.config import TrainConfig

        return TrainConfig
    if name in __all__:
        from musiclm.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'musiclm.train' has no attribute {name!r}")
