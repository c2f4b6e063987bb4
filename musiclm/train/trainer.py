"""The one training loop every component uses, on HF ``accelerate``.

A component supplies a :class:`TrainTask`: an ``nn.Module`` whose ``forward(batch, phase, step)``
returns ``(loss, metrics)``. Tasks with several optimisers (the codec's generator and
discriminators) declare several *phases*; each phase gets its own AdamW and scheduler and is run on
the same micro-batches in turn. The trainer adds what every run needs: CPU/GPU/multi-process DDP,
bf16 autocast, gradient accumulation and clipping, an EMA of the weights, atomic periodic
checkpoints with exact step resume, a tqdm bar and a JSONL metrics log.

Layout of ``out_dir``::

    train_config.json   the TrainConfig of the run
    metrics.jsonl       one JSON object per logged step
    state/              task.safetensors (all weights) + trainer.pt (optimisers, schedulers, EMA, RNG, step)
    model/              the exported model (EMA weights): config.json + model.safetensors
    best/               the export that scored best on the task's validation metric so far
    samples/            what the task's validation writes (e.g. decoded audio), one folder per step
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from musiclm.checkpoint import dedupe_shared, load_model, load_weights, save_model
from musiclm.config import config_to_dict
from musiclm.errors import CheckpointError, ConfigError, DataError
from musiclm.files import write_text_atomic
from musiclm.train.config import UNCAPPED_STEPS, TrainConfig
from musiclm.train.ema import EMA
from musiclm.train.interrupt import sigterm_as_interrupt

TASK_WEIGHTS = "task.safetensors"
TRAINER_STATE = "trainer.pt"
COMPLETE = "COMPLETE"  # written last into a state folder: the folder is whole


class TrainTask(nn.Module):
    """What a component trains. Subclasses implement ``forward`` and usually ``export``."""

    def phases(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser phases, each with the parameters it updates; one phase by default."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def phase_active(self, phase: str, step: int) -> bool:
        """Whether ``phase`` runs at ``step`` (e.g. a discriminator that starts late)."""
        return True

    def forward(self, batch: Any, phase: str, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    #: the metric (a key of :meth:`validate`'s result, lower is better) that picks ``best/``
    validation_metric: str | None = "val/loss"
    #: fixed held-out batches (see :func:`held_out_batches`); their mean loss is ``val/loss``
    valid_batches: list | None = None

    def validate(self, samples_dir: Path, step: int) -> dict[str, float]:
        """Held-out figures of the current weights (``val/...``); may write samples to ``samples_dir``.

        The trainer calls it on the main process with the EMA weights swapped in, in eval mode. By
        default: the training loss of the first phase on :attr:`valid_batches`.
        """
        if not self.valid_batches:
            return {}
        device = next(self.parameters()).device
        phase = next(iter(self.phases()))
        with torch.no_grad():  # (the trainer calls it so; a caller of its own may not)
            losses = [float(self(_to(batch, device), phase, step)[0]) for batch in self.valid_batches]
        return {"val/loss": sum(losses) / len(losses)}

    def export(self, directory: Path) -> None:
        """Write the trained model as a checkpoint (default: ``self.model`` via ``save_model``)."""
        model = getattr(self, "model", None)
        if model is None:
            raise NotImplementedError(f"{type(self).__name__} must implement export()")
        # what the task records beside its weights (e.g. an LM: which models made its tokens)
        save_model(model, directory, metadata=getattr(self, "export_metadata", None))


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


@contextmanager
def seeded_random(seed: int, device: torch.device | None = None):
    """Torch's random draws seeded with ``seed`` inside, and the outer stream restored after: every
    validation draws the same dropped conditioning and crops, so the held-out metric that picks the
    best checkpoint moves with the weights, not with luck, and training's own stream is untouched."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def held_out_batches(dataset, batch_size: int, *, max_items: int = 64, collate_fn=None) -> list:
    """Fixed batches of the first ``max_items`` items of a held-out dataset (the same every time)."""
    from torch.utils.data import DataLoader, Subset

    n = min(len(dataset), max_items)
    if n == 0:
        raise ConfigError("the validation set is empty")
    loader = DataLoader(
        Subset(dataset, range(n)), batch_size=batch_size, shuffle=False, collate_fn=collate_fn
    )
    return list(loader)


def _lr_lambda(config: TrainConfig, time_fraction: Callable[[], float] = lambda: 0.0):
    """Warmup, then cosine decay over the steps, or over ``max_minutes`` if that runs out first."""

    def fn(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        progress = min(1.0, max(progress, time_fraction()))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def resolve_mixed_precision(mode: str) -> str:
    if mode != "auto":
        return mode
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class Trainer:
    """Train a :class:`TrainTask` on a dataset; call :meth:`fit`. Resumes from ``out_dir/state``."""

    def __init__(
        self,
        task: TrainTask,
        dataset: Dataset | IterableDataset | DataLoader,
        config: TrainConfig,
        *,
        collate_fn=None,
        accelerator: Accelerator | None = None,
    ):
        self.config = config
        self.out_dir = Path(config.out_dir)
        phases = task.phases()
        if not phases or any(len(p) == 0 for p in phases.values()):
            raise ValueError("every training phase needs at least one parameter")
        # accelerate only runs multi-process on CPU when told to use the CPU
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = accelerator or Accelerator(
            cpu=config.cpu or multi_cpu,
            mixed_precision=resolve_mixed_precision(config.mixed_precision),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=len(phases) > 1)],
        )
        acc = self.accelerator
        set_seed(config.seed)
        self.loader = self._make_loader(dataset, collate_fn)
        self.phase_names = list(phases)
        opts = [
            torch.optim.AdamW(
                params,
                lr=config.phase_lr.get(name, config.lr),
                betas=tuple(config.betas),
                weight_decay=config.weight_decay,
            )
            for name, params in phases.items()
        ]
        prepared = acc.prepare(task, *opts, self.loader)
        self.task, self.loader = prepared[0], prepared[-1]
        # the task itself, for saving, EMA and phases: found once (unwrapping walks every module)
        self.unwrapped: TrainTask = acc.unwrap_model(self.task)
        self.optimizers = dict(zip(self.phase_names, prepared[1:-1]))
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt.optimizer, _lr_lambda(config, self._time_fraction))
            for name, opt in self.optimizers.items()
        }
        self.phase_params = phases
        self.step = 0  # optimiser steps taken, restored by resume()
        self.best: float | None = None  # best validation metric so far, restored by resume()
        self.ema = EMA(self.unwrapped, config.ema_decay) if config.ema_decay else None

    # ------------------------------------------------------------------ helpers

    @property
    def state_dir(self) -> Path:
        return self.out_dir / "state"

    @property
    def model_dir(self) -> Path:
        return self.out_dir / "model"

    def _make_loader(self, dataset, collate_fn) -> DataLoader:
        if isinstance(dataset, DataLoader):
            return dataset
        iterable = isinstance(dataset, IterableDataset)
        if not iterable and len(dataset) == 0:
            raise DataError("the training dataset is empty")
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=not iterable,
            drop_last=not iterable and len(dataset) >= self.config.batch_size,
            num_workers=self.config.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.config.num_workers > 0,
        )

    def _batches(self) -> Iterator[Any]:
        epoch = 0
        while True:
            if hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(epoch)
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
            if empty:
                raise DataError("the training data loader yielded no batch")
            epoch += 1

    # ------------------------------------------------------------------ checkpoints

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best": self.best,
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }

    def save_checkpoint(self) -> None:
        """Write ``state/`` (for resuming) and ``model/`` (EMA weights) atomically.

        Ranks hold identical weights and optimiser states under DDP, so the main process alone
        writes; the others wait at a barrier.
        """
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = self.out_dir / "state.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            weights = {k: v.detach().contiguous().cpu() for k, v in self.unwrapped.state_dict().items()}
            save_file(dedupe_shared(weights), str(tmp / TASK_WEIGHTS))
            torch.save(self._trainer_state(), tmp / TRAINER_STATE)
            umask = os.umask(0)
            os.umask(umask)
            for f in tmp.iterdir():  # safetensors writes 0600
                f.chmod(0o666 & ~umask)
            (tmp / COMPLETE).write_text(f"{self.step}\n")
            old = self.out_dir / "state.old"
            # a kill between any two of these steps leaves a complete state that resume() finds
            if self.state_dir.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.state_dir, old)
            os.replace(tmp, self.state_dir)
            shutil.rmtree(old, ignore_errors=True)
            self.export()
        acc.wait_for_everyone()

    def export(self, directory: Path | None = None) -> Path:
        """Export the (EMA) model as a checkpoint; returns its directory."""
        directory = Path(directory or self.model_dir)
        task = self.unwrapped
        ctx = self.ema.swapped_in(task) if self.ema is not None else nullcontext()
        with ctx:
            task.export(directory)
        return directory

    def _state_to_resume(self) -> Path | None:
        """The newest complete state: ``state/``, else a finished ``state.tmp/`` or the ``state.old/``
        left by a kill in the middle of :meth:`save_checkpoint`'s swap."""
        tmp, old = self.out_dir / "state.tmp", self.out_dir / "state.old"
        if self.state_dir.is_dir():
            return self.state_dir
        if (tmp / COMPLETE).is_file():
            return tmp
        if old.is_dir():
            return old
        return None

    def resume(self) -> bool:
        """Load the last complete state when there is one (on every rank); returns whether it did."""
        where = self._state_to_resume()
        if where is None:
            return False
        try:
            load_weights(self.unwrapped, where / TASK_WEIGHTS, map_location=self.accelerator.device)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume: {e}; use another out_dir") from None
        try:
            state = torch.load(where / TRAINER_STATE, map_location="cpu", weights_only=False)
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            for name, sched in self.schedulers.items():
                sched.load_state_dict(state["schedulers"][name])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
        except Exception as e:
            raise CheckpointError(
                f"{where}: cannot resume ({str(e).splitlines()[0][:200]}); "
                "it was written by a different model or config: use another out_dir"
            ) from None
        self.step = int(state["step"])
        self.best = state.get("best")
        self.resumed_from = where
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return True

    # ------------------------------------------------------------------ validation

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"

    def finish_best(self, fit: Callable[[nn.Module], None], *, kind: str, fitted: Path | None = None) -> None:
        """Give ``best/`` what the final export got after training (k-means, an RVQ fitted on the
        trained embeddings): ``best/`` is exported while training, before those fits. When ``best/``
        holds the last step's weights, ``fitted`` (the final export, already fitted) is copied
        instead of fitting the same weights twice (minutes of embedding passes on a CPU)."""
        if not (self.best_dir / "config.json").is_file():
            return
        figures = (self.best_dir / "validation.json").read_text()
        tmp = self.out_dir / "best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if (
            fitted is not None
            and (Path(fitted) / "config.json").is_file()
            and json.loads(figures)["step"] == self.step
        ):
            shutil.copytree(fitted, tmp)
        else:
            model = load_model(self.best_dir, kind=kind)
            fit(model)
            save_model(model, tmp)
        (tmp / "validation.json").write_text(figures)
        self._replace_best(tmp)

    def _replace_best(self, tmp: Path) -> None:
        """``tmp`` becomes ``best/`` by renames, never written in place: a kill between them leaves the
        previous one whole in ``best.old``."""
        old = self.out_dir / "best.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.best_dir.exists():
            os.replace(self.best_dir, old)
        os.replace(tmp, self.best_dir)
        shutil.rmtree(old, ignore_errors=True)

    def validate(self) -> dict[str, float]:
        """Run the task's validation (main process, EMA weights, eval mode); export ``best/`` when
        the validation metric improved. Returns the figures (empty on other ranks)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        figures: dict[str, float] = {}
        if acc.is_main_process:
            task = self.unwrapped
            ctx = self.ema.swapped_in(task) if self.ema is not None else nullcontext()
            was_training = task.training
            task.eval()
            with ctx, torch.no_grad(), seeded_random(self.config.seed, self.accelerator.device):
                figures = {k: float(v) for k, v in task.validate(self.out_dir / "samples", self.step).items()}
            task.train(was_training)
            key = task.validation_metric
            if key is not None and key in figures and (self.best is None or figures[key] < self.best):
                self.best = figures[key]
                tmp = self.out_dir / "best.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                self.export(tmp)
                (tmp / "validation.json").write_text(
                    json.dumps({"step": self.step, **figures}, indent=2) + "\n"
                )
                self._replace_best(tmp)
        acc.wait_for_everyone()
        return figures

    def _validation_due(self, last_time: float) -> bool:
        cfg = self.config
        by_steps = cfg.validate_every > 0 and self.step % cfg.validate_every == 0
        by_time = (
            cfg.validate_minutes is not None and time.perf_counter() - last_time > 60 * cfg.validate_minutes
        )
        if cfg.validate_minutes is not None and self.accelerator.num_processes > 1:
            flag = torch.tensor(float(by_time), device=self.accelerator.device)  # every rank agrees
            by_time = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        return by_steps or by_time

    def _checkpoint_due(self, last: float) -> bool:
        """Wall-time checkpoints, agreed by every rank (a kill loses minutes, not thousands of steps)."""
        minutes = self.config.checkpoint_minutes
        due = minutes is not None and time.perf_counter() - last > 60 * minutes
        if minutes is not None and self.accelerator.num_processes > 1:
            flag = torch.tensor(float(due), device=self.accelerator.device)
            due = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        return due

    def _log(self, log_file, record: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    # ------------------------------------------------------------------ training

    def fit(self) -> dict[str, float]:
        """Train until ``max_steps``; returns the last logged metrics."""
        cfg, acc = self.config, self.accelerator
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock() if acc.is_main_process else None
        try:
            if acc.is_main_process:
                text = json.dumps(config_to_dict(cfg), indent=2) + "\n"
                write_text_atomic(self.out_dir / "train_config.json", text)
            resumed = self.resume()
            if resumed:
                acc.print(f"resumed from {self.resumed_from} at step {self.step}")
                if acc.is_main_process:
                    self._truncate_metrics()
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        batches = self._batches()
        self.task.train()
        bar = tqdm(
            total=None if cfg.max_steps >= UNCAPPED_STEPS else cfg.max_steps,
            initial=self.step,
            disable=not (cfg.progress and acc.is_local_main_process),
            desc=type(self.unwrapped).__name__,
            dynamic_ncols=True,
        )
        sums: dict[str, torch.Tensor] = {}
        count, last, t0 = 0, {}, time.perf_counter()
        started = self._started = t0
        log_file = open(self.out_dir / "metrics.jsonl", "a") if acc.is_main_process else None
        validates = cfg.validate_every > 0 or cfg.validate_minutes is not None
        first_step = self.step + 1
        last_checkpoint = time.perf_counter()
        last_validation = t0
        with sigterm_as_interrupt():  # `kill` stops training as Ctrl-C does: with a checkpoint
            try:
                while self.step < cfg.max_steps:
                    micro = [next(batches) for _ in range(cfg.grad_accum)]
                    for name, value in self._train_step(micro).items():
                        sums[name] = sums.get(name, 0.0) + value
                    count += 1
                    self.step += 1
                    if self.ema is not None:
                        self.ema.update(self.unwrapped)
                    bar.update(1)
                    first = self.step == first_step  # logged at once, so a new run shows a figure early
                    if first or self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        last = {k: float(v) / count for k, v in sums.items()}
                        elapsed = time.perf_counter() - t0
                        record = {"step": self.step, **last, "steps_per_s": count / max(elapsed, 1e-9)}
                        record.update({f"lr/{n}": s.get_last_lr()[0] for n, s in self.schedulers.items()})
                        self._log(log_file, record)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in last.items() if k.startswith("loss")})
                        sums, count, t0 = {}, 0, time.perf_counter()
                    out_of_time = cfg.max_minutes is not None and self._out_of_time(started)
                    final = self.step == cfg.max_steps or out_of_time
                    if validates and (final or self._validation_due(last_validation)):
                        figures = self.validate()
                        if figures:
                            self._log(log_file, {"step": self.step, **figures})
                            acc.print(
                                f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
                            )
                        last_validation = time.perf_counter()
                    if (
                        self.step % cfg.checkpoint_every == 0
                        or final
                        or self._checkpoint_due(last_checkpoint)
                    ):
                        self.save_checkpoint()
                        last_checkpoint = time.perf_counter()
                    if out_of_time:
                        acc.print(f"time budget of {cfg.max_minutes:g} min reached at step {self.step}")
                        break
            except KeyboardInterrupt:
                if acc.num_processes == 1 and self.step > 0:
                    acc.print(f"interrupted: saving a checkpoint at step {self.step}")
                    self.save_checkpoint()
                raise
            finally:
                bar.close()
                if log_file is not None:
                    log_file.close()
                if lock is not None:
                    lock.close()
        return last

    def _lock(self):
        """An exclusive lock on the run folder: two trainers on one ``out_dir`` would overwrite each
        other's checkpoints. Released when the process ends, however it ends."""
        import fcntl

        handle = open(self.out_dir / ".lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise CheckpointError(f"{self.out_dir}: another training run is using this folder") from None
        return handle

    def _truncate_metrics(self) -> None:
        """Drop logged records past the resumed step (they are trained again), so no step repeats."""
        path = self.out_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        write_text_atomic(path, "".join(x + "\n" for x in kept))

    def _time_fraction(self) -> float:
        """Share of ``max_minutes`` used by this run (single process only: DDP ranks must agree)."""
        started = getattr(self, "_started", None)
        if self.config.max_minutes is None or started is None or self.accelerator.num_processes > 1:
            return 0.0
        return (time.perf_counter() - started) / (60 * self.config.max_minutes)

    def _out_of_time(self, started: float) -> bool:
        """Every process agrees (the main one's clock decides), so DDP ranks stop at the same step."""
        over = torch.tensor(float(time.perf_counter() - started > 60 * self.config.max_minutes))
        if self.accelerator.num_processes > 1:
            over = self.accelerator.reduce(over.to(self.accelerator.device), reduction="sum").cpu()
        return bool(over > 0)

    def _train_step(self, micro: list[Any]) -> dict[str, torch.Tensor]:
        cfg, acc = self.config, self.accelerator
        metrics: dict[str, torch.Tensor] = {}
        n = len(micro)
        for phase in self.phase_names:
            if not self.unwrapped.phase_active(phase, self.step):
                continue
            opt = self.optimizers[phase]
            opt.zero_grad(set_to_none=True)
            for i, batch in enumerate(micro):
                sync = i == n - 1
                with acc.no_sync(self.task) if not sync else nullcontext(), acc.autocast():
                    loss, extra = self.task(batch, phase=phase, step=self.step)
                acc.backward(loss / n)
                metrics[f"loss/{phase}"] = metrics.get(f"loss/{phase}", 0.0) + loss.detach().float() / n
                for k, v in extra.items():
                    v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                    metrics[k] = metrics.get(k, 0.0) + v / n
            if cfg.grad_clip:
                norm = acc.clip_grad_norm_(self.phase_params[phase], cfg.grad_clip)
                if norm is not None:
                    metrics[f"grad_norm/{phase}"] = torch.as_tensor(norm).detach().float()
            opt.step()
            self.schedulers[phase].step()
        return metrics
