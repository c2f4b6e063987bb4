"""Run by test_trainer under `accelerate launch --num_processes 2`."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from musiclm.train import TrainConfig, Trainer  # noqa: E402
from tests._toy_task import ToyData, ToyTask  # noqa: E402

out = Path(sys.argv[1])
cfg = TrainConfig(out_dir=str(out), max_steps=20, batch_size=4, lr=0.05, warmup_steps=0, log_every=5,
                  checkpoint_every=10, progress=False)
trainer = Trainer(ToyTask(), ToyData(), cfg)
trainer.fit()
w = trainer.unwrapped.model.lin.weight.detach().clone()
gathered = [torch.zeros_like(w) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, w)
if trainer.accelerator.is_main_process:
    same = all(torch.equal(g, gathered[0]) for g in gathered)
    (out / "ddp_result.json").write_text(json.dumps({"world_size": dist.get_world_size(),
                                                     "weights_equal_across_ranks": same}))
