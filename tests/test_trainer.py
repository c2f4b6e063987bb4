import json
import subprocess
import sys
from pathlib import Path

import pytest

from musiclm.checkpoint import load_model
from musiclm.train import TrainConfig, Trainer
from tests._toy_task import ToyData, ToyModel, ToyTask


def _cfg(out, **kw):
    base = dict(
        out_dir=str(out),
        max_steps=40,
        batch_size=8,
        lr=0.05,
        warmup_steps=0,
        log_every=5,
        checkpoint_every=10,
        ema_decay=0.9,
        progress=False,
        schedule="constant",
    )
    base.update(kw)
    return TrainConfig(**base)


def _log(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_training_lowers_loss_and_exports(tmp_path):
    Trainer(ToyTask(), ToyData(), _cfg(tmp_path)).fit()
    log = _log(tmp_path)
    assert log[-1]["loss/main"] < 0.2 * log[0]["loss/main"]
    assert "mae" in log[0] and "grad_norm/main" in log[0]
    model = load_model(tmp_path / "model")
    assert isinstance(model, ToyModel)


def test_resume_after_interruption_continues_step_count(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        Trainer(ToyTask(stop_at=23), ToyData(), _cfg(tmp_path, checkpoint_every=10)).fit()
    # a graceful interrupt saves at step 23; simulate a hard kill by rolling back to the step-20 save
    trainer = Trainer(ToyTask(), ToyData(), _cfg(tmp_path))
    assert trainer.resume() and trainer.step == 23
    trainer.fit()
    assert trainer.step == 40
    steps = [r["step"] for r in _log(tmp_path)]
    assert steps[-1] == 40 and steps == sorted(steps)


def test_hard_kill_loses_only_steps_since_last_checkpoint(tmp_path):
    Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=20, checkpoint_every=10)).fit()
    trainer = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=30))
    assert trainer.resume() and trainer.step == 20


def test_gradient_accumulation_and_two_phases(tmp_path):
    class TwoPhase(ToyTask):
        def phases(self):
            return {"w": [self.model.lin.weight], "b": [self.model.lin.bias]}

    Trainer(TwoPhase(), ToyData(), _cfg(tmp_path, grad_accum=2, max_steps=30)).fit()
    log = _log(tmp_path)
    assert {"loss/w", "loss/b"} <= set(log[0])
    assert log[-1]["loss/w"] < log[0]["loss/w"]


def test_resume_refuses_a_different_model(tmp_path):
    from torch import nn

    from musiclm.errors import CheckpointError

    Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=10)).fit()
    other = ToyTask()
    other.model.lin = nn.Linear(4, 2)
    with pytest.raises(CheckpointError, match="cannot resume"):
        Trainer(other, ToyData(), _cfg(tmp_path, max_steps=20)).fit()


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    script = Path(__file__).with_name("_ddp_script.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "ddp_result.json").read_text())
    assert out["world_size"] == 2
    assert out["weights_equal_across_ranks"]
    log = _log(tmp_path)
    assert log[-1]["step"] == 40 and log[-1]["loss/main"] < log[0]["loss/main"]
