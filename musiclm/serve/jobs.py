"""The job queue behind ``musiclm serve``: bounded, one generation at a time, results kept bounded.

One worker thread owns the model. Requests are checked completely when they are submitted (the
same :mod:`musiclm.checks` as the CLI, plus the server's :class:`Limits`), so a job that is queued
can only fail for reasons nobody could see in advance. Queued ``generate`` jobs that share every
sampling parameter (not the prompt) run as one batch, as many as fit in memory and ``max_batch``.
Each finished job leaves a folder with its WAV (loudness-normalised), every candidate and a
spectrogram; the oldest are deleted beyond ``keep_jobs``, ``keep_minutes`` or ``keep_mb``.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from musiclm import checks
from musiclm.audio import load_audio, normalize_loudness, save_audio
from musiclm.config import TARGET_LUFS
from musiclm.errors import AudioError, MusicLMError, PromptError
from musiclm.files import write_text_atomic
from musiclm.serve.limits import Limits

log = logging.getLogger("musiclm.serve")

STEPS = ("semantic", "coarse", "fine", "decode", "rerank")  # the order a job goes through
FINISHED = ("done", "failed", "cancelled")


class QueueFull(MusicLMError):
    """The queue holds ``max_queue`` jobs already (HTTP 429)."""


class Cancelled(Exception):
    """Raised inside a running batch once every job of it was cancelled."""


@dataclass(frozen=True)
class Request:
    """One checked request. ``audio`` (continue) and ``melody`` are waveforms at the model's rates."""

    mode: str  # generate | continue | story
    prompt: str | None = None
    seconds: float = 10.0
    candidates: int = 2
    seed: int = 0
    guidance: float | tuple[float, float] | None = None  # (semantic, coarse); None: the model's default
    temperatures: tuple[float, float, float] | None = None
    top_k: int | None = None
    top_p: float | None = None
    loudness: float | None = TARGET_LUFS  # None: written as decoded
    bpm: float | None = None  # generate / continue; None: the prompt's tempo (story: each segment's)
    segments: tuple[tuple[str, float], ...] = ()
    audio: torch.Tensor | None = field(default=None, compare=False, repr=False)
    melody: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def batch_key(self) -> tuple | None:
        """Requests with the same key run as one batch; ``None``: alone."""
        if self.mode != "generate" or self.melody is not None:
            return None
        return (
            self.seconds,
            self.candidates,
            self.seed,
            self.guidance,
            self.temperatures,
            self.top_k,
            self.top_p,
            self.bpm,
        )

    def parameters(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("audio", "melody")}
        out["segments"] = [{"prompt": p, "seconds": s} for p, s in self.segments]
        out["melody"] = self.melody is not None
        if isinstance(self.guidance, tuple):
            out["guidance"] = checks.guidance_record(self.guidance)
        return out

    def total_seconds(self, sample_rate: int) -> float:
        given = 0.0 if self.audio is None else self.audio.shape[-1] / sample_rate
        return given + (sum(s for _, s in self.segments) if self.mode == "story" else self.seconds)


@dataclass
class Job:
    id: str
    request: Request
    folder: Path
    state: str = "queued"  # queued | running | done | failed | cancelled
    stage: str | None = None
    stage_done: int = 0
    stage_total: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    batch: int = 1  # how many requests were sampled together with this one (itself included)
    result: dict | None = None
    cancel_requested: bool = False

    @property
    def progress(self) -> float:
        """0..1 over the five steps (each stage's tokens, decoding, reranking)."""
        if self.state == "done":
            return 1.0
        if self.stage not in STEPS:
            return 0.0
        part = self.stage_done / self.stage_total if self.stage_total else 0.0
        return (STEPS.index(self.stage) + part) / len(STEPS)

    def files(self) -> dict[str, Path]:
        """Result files by name: ``audio``, ``spectrogram``, ``candidate-K``."""
        if self.result is None:
            return {}
        out = {"audio": self.folder / "audio.wav", "spectrogram": self.folder / "spectrogram.png"}
        for k in range(len(self.result["scores"])):
            out[f"candidate-{k}"] = self.folder / f"candidate-{k}.wav"
        return out


def check_request(model, request: Request, limits: Limits) -> Request:
    """Every check a request can fail, before it is queued: the CLI's checks and the server limits.
    Returns the request with the guidance scales filled in (semantic, coarse), so the job records
    them and requests with equal scales batch together."""
    mode = request.mode
    if mode not in ("generate", "continue", "story"):
        raise PromptError(f"unknown mode {mode!r}")
    if mode == "story":
        if not request.segments:
            raise PromptError("story mode needs at least one segment")
        if len(request.segments) > limits.max_segments:
            raise PromptError(
                f"{len(request.segments)} segments; this server's limit is {limits.max_segments}"
            )
        for i, (_, s) in enumerate(request.segments):
            checks.seconds(s, f"segment {i} seconds")
    else:
        checks.seconds(request.seconds)
    texts = [p for p, _ in request.segments] if mode == "story" else [request.prompt]
    if mode != "continue" or request.prompt is not None:
        for i, text in enumerate(checks.prompts(texts)):
            if len(text) > limits.max_prompt_chars:
                what = f"segment {i} prompt" if mode == "story" else "prompt"
                raise PromptError(
                    f"{what} has {len(text)} characters; this server's limit is {limits.max_prompt_chars}"
                )
    if mode == "continue" and request.audio is None:
        raise AudioError("continue needs an audio file to continue")
    if request.melody is not None and not model.has_melody:
        raise PromptError(f"{model.name} has no melody conditioning (its LMs were trained without it)")
    total = request.total_seconds(model.sample_rate)
    if total > limits.max_seconds:
        raise PromptError(f"{total:g} s of audio asked for; this server's limit is {limits.max_seconds:g} s")
    checks.candidates(request.candidates)
    if request.candidates > limits.max_candidates:
        raise PromptError(
            f"candidates = {request.candidates}; this server's limit is {limits.max_candidates}"
        )
    checks.seed(request.seed)
    if request.bpm is not None and mode == "story":
        raise PromptError("story mode takes each segment's tempo from its prompt; give no bpm")
    checks.bpm(request.bpm)
    if request.loudness is not None:
        checks.loudness(request.loudness)
    model.sampling_configs(request.temperatures, request.top_k, request.top_p, guidance=request.guidance)
    model.check_memory(request.candidates, total, request.guidance, max_memory_gb=limits.max_memory_gb)
    return replace(request, guidance=model.guidance_scales(request.guidance))


def load_upload(path: str | Path, sample_rate: int, limits: Limits, *, what: str) -> torch.Tensor:
    """An uploaded audio file as a mono waveform at ``sample_rate``; one-line errors name ``what``
    (never the server's temporary path)."""
    size = Path(path).stat().st_size
    if size > limits.max_upload_mb * 2**20:
        raise AudioError(
            f"{what}: {size / 2**20:.1f} MB is larger than this server's limit of {limits.max_upload_mb:g} MB"
        )
    try:
        wav, _ = load_audio(
            path, sample_rate, min_seconds=0.5, max_seconds=limits.max_upload_seconds, allow_silent=False
        )
    except AudioError as e:
        message = str(e).replace(f"'{path}'", "the file").replace(str(path), "").lstrip(": ")
        raise AudioError(f"{what}: {message}") from None
    return wav


class JobQueue:
    """Submitted jobs, the worker that runs them, and the finished ones kept for download."""

    def __init__(self, model, limits: Limits, folder: str | Path):
        self.model, self.limits, self.folder = model, limits, Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}  # insertion order = age
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="musiclm-worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the API's side

    def submit(self, request: Request) -> Job:
        """Check ``request`` and queue it; raises a :class:`MusicLMError` (:class:`QueueFull` too)."""
        request = check_request(self.model, request, self.limits)
        with self._cond:
            if len(self._pending) >= self.limits.max_queue:
                raise QueueFull(f"the queue is full ({self.limits.max_queue} jobs waiting): try again later")
            job = Job(id=uuid.uuid4().hex[:16], request=request, folder=Path())
            job.folder = self.folder / job.id
            self._evict()
            self._jobs[job.id] = job
            self._pending.append(job)
            self._cond.notify_all()
        log.info("job %s queued (%s)", job.id, request.mode)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1 for the next job to run, 0 when not waiting."""
        with self._cond:
            try:
                return self._pending.index(job) + 1
            except ValueError:
                return 0

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a waiting job at once, a running one at its next token; finished ones stay."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINISHED:
                return job
            job.cancel_requested = True
            if job.state == "queued":
                self._pending.remove(job)
                self._finish(job, "cancelled")
            return job

    def stats(self) -> dict:
        with self._cond:
            return {"queued": len(self._pending), "running": len(self._running), "jobs": len(self._jobs)}

    def wait(self, job_id: str, timeout: float | None = None) -> Job | None:
        """Block until the job is finished (or ``timeout`` seconds pass)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (job := self._jobs.get(job_id)) is not None and job.state not in FINISHED:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            return job

    def close(self) -> None:
        """Stop the worker after the running batch; waiting jobs are cancelled."""
        with self._cond:
            self._closed = True
            for job in self._running:
                job.cancel_requested = True
            while self._pending:
                self._finish(self._pending.popleft(), "cancelled")
            self._cond.notify_all()
        self._thread.join(timeout=60)

    # ------------------------------------------------------------------ the worker's side

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        self._cond.notify_all()

    def _take_batch(self) -> list[Job]:
        """The oldest waiting job and the waiting jobs that can be sampled with it."""
        first = self._pending.popleft()
        batch, key = [first], first.request.batch_key()
        if key is not None:
            limit = checks.memory_limit(self.model.device, self.limits.max_memory_gb)
            r = first.request
            for job in list(self._pending):
                if len(batch) >= self.limits.max_batch:
                    break
                rows = (len(batch) + 1) * r.candidates
                if (
                    job.request.batch_key() == key
                    and self.model.estimate_memory(rows, r.seconds, r.guidance) <= limit
                ):
                    self._pending.remove(job)
                    batch.append(job)
        for job in batch:
            job.state, job.started, job.batch = "running", time.time(), len(batch)
        return batch

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = self._running = self._take_batch()
            try:
                results = self._run(batch)
                for job, result in zip(batch, results, strict=True):
                    if not job.cancel_requested:
                        self._store(job, result)
                with self._cond:
                    for job in batch:
                        self._finish(job, "cancelled" if job.cancel_requested else "done")
            except Cancelled:
                with self._cond:
                    for job in batch:
                        self._finish(job, "cancelled")
            except MusicLMError as e:
                with self._cond:
                    for job in batch:
                        self._finish(job, "failed", str(e))
            except Exception as e:  # a bug or the machine (out of memory): the job fails, the server lives
                log.exception("job %s failed", batch[0].id)
                with self._cond:
                    for job in batch:
                        self._finish(job, "failed", f"internal error: {type(e).__name__}: {e}")
            finally:
                with self._cond:
                    self._running = []
                    self._evict()

    def _run(self, batch: list[Job]) -> list[dict]:
        """Sample the batch; returns per job the arrays its files are made of."""
        r = batch[0].request

        def progress(stage: str, done: int, total: int) -> None:
            if all(job.cancel_requested for job in batch):
                raise Cancelled
            for job in batch:
                job.stage, job.stage_done, job.stage_total = stage, done, total

        common = dict(
            candidates=r.candidates, seed=r.seed, temperatures=r.temperatures, top_k=r.top_k, top_p=r.top_p,
            guidance=r.guidance, progress=progress, max_memory_gb=self.limits.max_memory_gb,
        )  # fmt: skip
        model = self.model
        if r.mode == "generate":
            melody_rate = model.melody.sample_rate if r.melody is not None else None
            out = model.generate(
                [job.request.prompt for job in batch], seconds=r.seconds, melody=r.melody,
                melody_sample_rate=melody_rate, bpm=r.bpm, **common,
            )  # fmt: skip
        elif r.mode == "continue":
            out = model.continue_audio(
                r.audio, r.prompt, seconds=r.seconds, sample_rate=model.sample_rate, bpm=r.bpm, **common
            )
        else:
            out = model.story(list(r.segments), **common)
        return [
            {
                "audio": out.audio[i],
                "candidates": out.candidates[i],
                "scores": [round(float(s), 4) for s in out.scores[i]],
                "chosen": int(out.chosen[i]),
                "level_db": None if out.prompt_level_db is None else float(out.prompt_level_db[i]),
                "timings": {k: round(v, 3) for k, v in out.timings.items()},
                "segment_starts": out.segment_starts,
            }
            for i in range(len(batch))
        ]

    def _store(self, job: Job, result: dict) -> None:
        """Write the job's WAVs (each normalised alike), spectrogram and JSON into its folder."""
        from musiclm.plot import save_spectrogram_png

        sr, loudness, level = self.model.sample_rate, job.request.loudness, result["level_db"]
        if loudness is not None and level is not None:
            loudness += level  # the prompt's own dynamics, kept
        job.folder.mkdir(parents=True, exist_ok=True)
        wav, lufs = result["audio"], None
        if loudness is not None:
            wav, lufs = normalize_loudness(wav, sr, lufs=loudness)
        save_audio(job.folder / "audio.wav", wav, sr)
        for k, cand in enumerate(result["candidates"]):
            if loudness is not None:
                cand, _ = normalize_loudness(cand, sr, lufs=loudness)
            save_audio(job.folder / f"candidate-{k}.wav", cand, sr)
        save_spectrogram_png(wav, sr, job.folder / "spectrogram.png", markers=result["segment_starts"])
        job.result = {
            "model": self.model.name,
            "sample_rate": sr,
            "seconds": round(wav.shape[-1] / sr, 3),
            "scores": result["scores"],
            "chosen": result["chosen"],
            "loudness_lufs": None if lufs is None else round(lufs, 2),
            "prompt_level_db": None if level is None else round(level, 2),
            "timings": result["timings"],
            "segment_starts": result["segment_starts"],
        }
        info = {"id": job.id, "mode": job.request.mode, "parameters": job.request.parameters(), **job.result}
        write_text_atomic(job.folder / "job.json", json.dumps(info, indent=2) + "\n")

    def _evict(self) -> None:
        """Forget finished jobs beyond the kept count, age or size, oldest first (lock held)."""
        finished = [j for j in self._jobs.values() if j.state in FINISHED]
        now = time.time()
        sizes = {
            j.id: sum(f.stat().st_size for f in j.folder.glob("*")) if j.folder.is_dir() else 0
            for j in finished
        }
        total = sum(sizes.values())
        for i, job in enumerate(finished):
            too_many = len(finished) - i > self.limits.keep_jobs
            too_old = now - (job.finished or now) > self.limits.keep_minutes * 60
            too_big = total > self.limits.keep_mb * 2**20
            if not (too_many or too_old or too_big):
                continue
            total -= sizes[job.id]
            del self._jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)
