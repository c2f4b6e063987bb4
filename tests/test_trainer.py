import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_ctrl_c_saves_and_the_next_run_continues_the_step_count(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        Trainer(ToyTask(stop_at=23), ToyData(), _cfg(tmp_path, checkpoint_every=10)).fit()
    # Ctrl-C saves at the step it stopped (23), not only at the last periodic checkpoint (20); a hard
    # kill is test_sigkill_mid_run_resumes_at_the_last_checkpoint
    trainer = Trainer(ToyTask(), ToyData(), _cfg(tmp_path))
    assert trainer.resume() and trainer.step == 23
    trainer.fit()
    assert trainer.step == 40
    steps = [r["step"] for r in _log(tmp_path)]
    assert steps[-1] == 40 and steps == sorted(steps)


def test_sigkill_mid_run_resumes_at_the_last_checkpoint(tmp_path):
    import os
    import signal
    import time

    script = Path(__file__).with_name("_slow_train_script.py")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stderr=subprocess.PIPE)
    marker = tmp_path / "state" / "COMPLETE"
    deadline = time.time() + 120
    while time.time() < deadline and not (marker.is_file() and int(marker.read_text() or 0) >= 10):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    time.sleep(0.13)  # a few steps past the checkpoint, maybe in the middle of the next one
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = [r["step"] for r in _log(tmp_path)]
    assert logged[-1] > 10  # it was killed while training, not after
    trainer = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=logged[-1] + 7, log_every=1))
    assert trainer.resume()
    saved = trainer.step
    assert saved % 5 == 0 and saved >= 10
    trainer.fit()
    steps = [r["step"] for r in _log(tmp_path)]
    assert steps == list(range(1, logged[-1] + 8))  # the steps after the checkpoint were redone, none twice


def test_sigterm_mid_run_checkpoints_the_step_it_is_at(tmp_path):
    import os
    import signal
    import time

    script = Path(__file__).with_name("_slow_train_script.py")
    # no periodic checkpoint before step 1000: whatever resumes was saved on the way out
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), "1000"], stderr=subprocess.PIPE)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 10):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) != 0
    logged = [r["step"] for r in _log(tmp_path)]
    trainer = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=logged[-1] + 3, log_every=1))
    # the step it was at: the last logged one, or one past it if the signal came before its log line
    assert trainer.resume() and trainer.step - logged[-1] in (0, 1)


@pytest.mark.parametrize("kill_at", [0, 1, 2])
def test_a_kill_inside_the_checkpoint_swap_loses_nothing(tmp_path, monkeypatch, kill_at):
    """Stop at each step of save_checkpoint's swap (state -> state.old, state.tmp -> state, removing
    state.old): the next run resumes from a complete state at the right step."""
    import shutil

    import musiclm.train.trainer as trainer_module

    Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=10, checkpoint_every=10)).fit()
    done = []
    real_replace, real_rmtree = trainer_module.os.replace, shutil.rmtree

    def step(name):
        if len(done) == kill_at:
            raise SystemExit(f"killed before {name}")
        done.append(name)

    import os

    class FakeOs:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            if Path(dst).name in ("state", "state.old"):
                step(f"{Path(src).name} -> {Path(dst).name}")
            return real_replace(src, dst)

    class FakeShutil:
        def __getattr__(self, name):
            return getattr(shutil, name)

        @staticmethod
        def rmtree(path, ignore_errors=False):
            if Path(path).name == "state.old" and len(done) == 2:
                step("removing state.old")
            return real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(trainer_module, "os", FakeOs())
    monkeypatch.setattr(trainer_module, "shutil", FakeShutil())
    with pytest.raises(SystemExit, match="killed"):
        Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=20, checkpoint_every=20)).fit()
    monkeypatch.undo()
    again = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=30))
    assert again.resume()
    # before the first rename the old state (step 10) is whole; after it the new one (step 20) is
    assert again.step == (10 if kill_at == 0 else 20)
    again.fit()
    assert again.step == 30 and (tmp_path / "state").is_dir()
    assert not (tmp_path / "state.old").exists() and not (tmp_path / "state.tmp").exists()


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path):
    from musiclm.errors import CheckpointError

    first = Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=10))
    lock = first._lock()
    try:
        with pytest.raises(CheckpointError, match="another training run"):
            Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=10)).fit()
    finally:
        lock.close()
    Trainer(ToyTask(), ToyData(), _cfg(tmp_path, max_steps=10)).fit()  # free again


@pytest.mark.parametrize(
    "bad",
    [
        dict(checkpoint_every=0),
        dict(log_every=0),
        dict(batch_size=0),
        dict(lr=float("nan")),
        dict(max_steps=0),
    ],
)
def test_bad_train_settings_are_refused(tmp_path, bad):
    from musiclm.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a positive"):
        _cfg(tmp_path, **bad)


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


def test_checkpoints_by_wall_time_and_curves_png(tmp_path, monkeypatch, capsys):
    from musiclm.cli import main

    trainer = Trainer(
        ToyTask(), ToyData(), _cfg(tmp_path, max_steps=12, checkpoint_every=1000, checkpoint_minutes=1e-9)
    )
    saved = []
    real_save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda: (saved.append(trainer.step), real_save()))
    trainer.fit()
    assert saved == list(range(1, 13))  # every step took longer than the (tiny) wall-time period
    log = _log(tmp_path)
    assert log[0]["step"] == 1  # the first step is logged at once
    assert main(["plot-metrics", str(tmp_path)]) == 0
    png = tmp_path / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "panels" in capsys.readouterr().out
    assert main(["plot-metrics", str(tmp_path / "nothing-here")]) == 1


def test_a_time_budget_without_a_step_count_ends_the_run_itself(tmp_path):
    """`--max-minutes` alone: no default step cap cuts a budgeted run short (the budget ends it)."""
    import argparse
    import dataclasses

    from musiclm.train.args import add_train_arguments, train_config_from_args

    parser = argparse.ArgumentParser()
    add_train_arguments(parser, max_steps=40)

    def parsed(*argv):
        return train_config_from_args(parser.parse_args(["--out", str(tmp_path / "run"), *argv]))

    assert parsed().max_steps == 40
    assert parsed("--steps", "7", "--max-minutes", "1").max_steps == 7
    budgeted = parsed("--max-minutes", "0.03")
    assert budgeted.max_steps > 10**6
    config = dataclasses.replace(_cfg(tmp_path / "run"), max_steps=budgeted.max_steps, max_minutes=0.03)
    trainer = Trainer(ToyTask(), ToyData(), config)
    trainer.fit()
    assert 40 < trainer.step < budgeted.max_steps  # past the default count, stopped by the budget


class NoisyValidation(ToyTask):
    """A validation that draws random numbers, as the stage LMs' dropped conditioning does."""

    def validate(self, samples_dir, step):
        return {"val/loss": float(torch.rand(()))}


def test_every_validation_draws_the_same_randomness_and_training_keeps_its_own(tmp_path):
    trainer = Trainer(NoisyValidation(), ToyData(), _cfg(tmp_path))
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first, second = trainer.validate(), trainer.validate()
    assert first == second  # the best checkpoint is picked by the weights, not by the draw
    assert torch.equal(torch.get_rng_state(), state)  # training's random stream goes on as before


class ValidationByStep(ToyTask):
    """A validation whose best is the first (``sign`` 1) or the last (``sign`` -1) step validated."""

    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign

    def validate(self, samples_dir, step):
        return {"val/loss": self.sign * step}


@pytest.mark.parametrize("last", [True, False])
def test_best_gets_the_final_fit_and_is_copied_when_it_is_the_last_step(tmp_path, last):
    """A fit after training (an RVQ, k-means) reaches best/ too; when best/ holds the last step's
    weights the final export's fit is copied, not run again on the same weights."""
    from musiclm.checkpoint import save_model

    trainer = Trainer(ValidationByStep(-1.0 if last else 1.0), ToyData(), _cfg(tmp_path, validate_every=10))
    trainer.fit()
    final = load_model(tmp_path / "model")
    final.lin.bias.data.fill_(42.0)  # what the final export's fit set
    save_model(final, tmp_path / "model")
    calls = []

    def fit(model):
        calls.append(model)
        model.lin.bias.data.fill_(7.0)

    trainer.finish_best(fit, kind="toy-linear", fitted=tmp_path / "model")
    best = load_model(tmp_path / "best")
    assert json.loads((tmp_path / "best" / "validation.json").read_text())["step"] == (40 if last else 10)
    assert best.lin.bias.item() == (42.0 if last else 7.0) and len(calls) == (0 if last else 1)
    if not last:  # the fit ran on the best step's weights, not the final ones
        assert not torch.equal(best.lin.weight, final.lin.weight)
    assert not (tmp_path / "best.tmp").exists() and not (tmp_path / "best.old").exists()
