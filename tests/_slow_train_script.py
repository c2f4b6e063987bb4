"""Train the toy task slowly (for a real SIGKILL or SIGTERM mid-run):
python _slow_train_script.py OUT_DIR [CHECKPOINT_EVERY]."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from musiclm.train import TrainConfig, Trainer  # noqa: E402
from tests._toy_task import ToyData, ToyTask  # noqa: E402


class SlowTask(ToyTask):
    def forward(self, batch, phase, step):
        time.sleep(0.02)
        return super().forward(batch, phase, step)


cfg = TrainConfig(
    out_dir=sys.argv[1],
    max_steps=100_000,
    batch_size=8,
    lr=0.05,
    warmup_steps=0,
    log_every=1,
    checkpoint_every=int(sys.argv[2]) if len(sys.argv) > 2 else 5,
    ema_decay=0.9,
    progress=False,
    schedule="constant",
)
Trainer(SlowTask(), ToyData(), cfg).fit()
