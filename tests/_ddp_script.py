"""Run by test_trainer under `accelerate launch --num_processes 2`."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from musiclm.train import TrainConfig, Trainer  # noqa: E402
from tests._toy_task import ToyData, ToyTask  # noqa: E402

out = Path(sys.argv[1])
cfg = TrainConfig(
    out_dir=str(out),
    max_steps=40,
    batch_size=8,
    lr=0.05,
    warmup_steps=0,
    log_every=5,
    checkpoint_every=10,
    progress=False,
)
trainer = Trainer(ToyTask(), ToyData(), cfg)
trainer.fit()
acc = trainer.accelerator
w = trainer.unwrapped.model.lin.weight.detach().clone()
torch.save(w, out / f"w{acc.process_index}.pt")
acc.wait_for_everyone()
if acc.is_main_process:
    ws = [torch.load(out / f"w{i}.pt") for i in range(acc.num_processes)]
    same = all(torch.equal(x, ws[0]) for x in ws)
    (out / "ddp_result.json").write_text(
        json.dumps({"world_size": acc.num_processes, "weights_equal_across_ranks": same})
    )
