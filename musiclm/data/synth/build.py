"""``synthesize``: render a captioned, labelled dataset of synthetic music (``musiclm data synth``)."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from musiclm import checks
from musiclm.audio import save_audio
from musiclm.data.manifest import ManifestEntry, write_manifest
from musiclm.data.synth.arrange import compose
from musiclm.data.synth.captions import caption_for
from musiclm.data.synth.melodies import Tune, load_library
from musiclm.data.synth.render import FluidSynthRenderer, resolve_soundfonts, write_midi
from musiclm.data.synth.styles import STYLES
from musiclm.errors import DataError
from musiclm.files import write_text_atomic

SYNTH_VERSION = 2  # 2: fifteen styles (lo-fi, trap, house, funk, reggae, blues added)


@dataclass
class SynthConfig:
    hours: float = 1.0
    seed: int = 0
    sample_rate: int = 16000
    clip_seconds: float = 10.0
    test_fraction: float = 0.1
    library_size: int = 200  # corpus tunes parsed (half chorales, half fiddle tunes)
    styles: tuple[str, ...] = tuple(STYLES)
    audio_format: str = "flac"  # flac (lossless), ogg (Vorbis, ~5x smaller) or wav
    write_midi: bool = True
    chunk_size: int = 16  # clips rendered in sequence by one synthesizer (one soundfont per chunk)

    @property
    def num_clips(self) -> int:
        return max(1, math.ceil(self.hours * 3600 / self.clip_seconds))


def chunk_soundfont(index: int, config: SynthConfig, soundfonts: list[str]) -> str:
    """The soundfont of clip ``index``: one per chunk of ``config.chunk_size`` clips, drawn from the seed."""
    rng = np.random.default_rng([config.seed, index // config.chunk_size, 7])
    return soundfonts[int(rng.integers(len(soundfonts)))]


def plan_item(
    index: int, config: SynthConfig, library: dict[str, list[Tune]], *, soundfonts: list[str]
) -> tuple:
    """Everything about clip ``index`` but its audio, from ``(seed, index)`` alone: split, piece,
    soundfont, caption."""
    rng = np.random.default_rng([config.seed, index])
    split = "test" if rng.random() < config.test_fraction else "train"
    tunes = {
        k: [t for t in v if t.is_heldout(config.test_fraction) == (split == "test")]
        for k, v in library.items()
    }
    style = config.styles[index % len(config.styles)]
    piece = compose(style, rng, tunes, seconds=config.clip_seconds)
    soundfont = chunk_soundfont(index, config, soundfonts)
    piece.labels["soundfont"] = Path(soundfont).name
    caption = caption_for(piece.labels, rng, split, style_words=STYLES[style].words)
    return split, piece, soundfont, caption


_worker: dict = {}


def _init_worker(config: SynthConfig, library: dict, soundfonts: list[str]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker.update(config=config, library=library, soundfonts=soundfonts)


def _render_chunk(args: tuple[int, str]) -> list[dict]:
    """Render one chunk of clips with a fresh synthesizer. FluidSynth's output depends on what it
    played before (voice and effect state), so every chunk starts from a new instance and plays its
    clips in order: the audio then depends on the seed alone, not on workers or on resuming."""
    chunk, out = args
    config: SynthConfig = _worker["config"]
    indices = range(chunk * config.chunk_size, min((chunk + 1) * config.chunk_size, config.num_clips))
    plans, failed = [], []
    for i in indices:
        try:
            plans.append((i, *plan_item(i, config, _worker["library"], soundfonts=_worker["soundfonts"])))
        except Exception as e:  # one odd tune must not stop a long run: report it and go on
            failed.append({"index": i, "error": f"{type(e).__name__}: {e}"})
    paths = {
        i: Path(out) / "audio" / split / f"synth-{config.seed}-{i:06d}.{config.audio_format}"
        for i, split, *_ in plans
    }
    missing = [i for i in paths if not paths[i].is_file()]
    renderer = FluidSynthRenderer(config.sample_rate) if missing else None
    entries = []
    for i, split, piece, soundfont, caption in plans:
        audio, rendered = paths[i], 0.0
        if missing and i <= missing[-1]:  # clips before a missing one are replayed to reach its state
            wav = renderer.render(piece, soundfont)
            if not audio.is_file():  # peak-safe 16-bit (Vorbis for .ogg), written via a temporary file
                tmp = save_audio(audio.with_name(audio.stem + ".tmp" + audio.suffix), wav, config.sample_rate)
                tmp.replace(audio)  # atomic: a killed run never leaves a half-written clip behind
                rendered = config.clip_seconds
        if config.write_midi:
            midi = Path(out) / "midi" / split / f"{audio.stem}.mid"
            if not midi.is_file():
                midi.parent.mkdir(parents=True, exist_ok=True)
                write_midi(piece, midi)
        entries.append(
            {"path": str(audio), "caption": caption, "labels": piece.labels, "id": audio.stem, "split": split,
             "rendered": rendered, "index": i}
        )  # fmt: skip
    if renderer is not None:
        renderer.close()
    return entries + [{"index": f["index"], "failed": f["error"]} for f in failed]


def synthesize(
    out: str | Path,
    config: SynthConfig,
    workers: int | None = None,
    *,
    progress: bool = True,
    soundfonts: list[str] | None = None,
) -> dict:
    """Render ``config.num_clips`` clips into ``out`` (``audio/``, ``midi/``, ``train.jsonl``,
    ``test.jsonl``, ``synth.json``) with ``soundfonts`` (:func:`resolve_soundfonts`; default the
    benchmark's). Deterministic in ``config.seed`` and the soundfonts; a rerun skips finished clips."""
    out = Path(out)
    unknown = set(config.styles) - set(STYLES)
    if unknown:
        raise DataError(f"unknown styles {sorted(unknown)}; known: {', '.join(STYLES)}")
    if config.audio_format not in ("flac", "ogg", "wav"):
        raise DataError(f"unknown audio format {config.audio_format!r} (flac, ogg, wav)")
    checks.positive_float(config.hours, "--hours", DataError)
    checks.positive_float(config.clip_seconds, "--clip-seconds", DataError)
    checks.sample_rate(config.sample_rate, "--sample-rate", DataError)
    if not 0 <= config.test_fraction < 1:
        raise DataError(f"--test-fraction must lie in [0, 1), got {config.test_fraction}")
    if not isinstance(config.seed, int) or config.seed < 0:
        raise DataError(f"--seed must be a non-negative integer, got {config.seed!r}")
    if config.library_size < 0:
        raise DataError(f"--library-size must be >= 0, got {config.library_size}")
    checks.workers(workers, "--workers", DataError)
    soundfonts = [str(p) for p in resolve_soundfonts(soundfonts)]
    FluidSynthRenderer(config.sample_rate)  # fail early, in the main process, if FluidSynth is missing
    names = [Path(s).name for s in soundfonts]
    meta = out / "synth.json"
    if meta.is_file():
        made = json.loads(meta.read_text())
        old = made.get("config", {})
        mine = {k: v for k, v in _config_dict(config).items() if k != "hours"}
        if {k: old.get(k) for k in mine} != mine:
            raise DataError(f"{out}: holds a dataset made with other settings; use another --out")
        if made.get("soundfonts", names) != names:  # each chunk's soundfont is drawn from this list
            raise DataError(
                f"{out}: rendered with the soundfonts {', '.join(made['soundfonts'])}, not "
                f"{', '.join(names)}; give those (--soundfonts) or use another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 8)
    start = time.perf_counter()
    library = load_library(out / "melodies.json", seed=0, size=config.library_size, workers=workers)
    library_seconds = time.perf_counter() - start

    chunks = math.ceil(config.num_clips / config.chunk_size)
    jobs = [(c, str(out)) for c in range(chunks)]
    results: dict[int, dict] = {}
    start = time.perf_counter()
    bar = tqdm(total=config.num_clips, desc="synth", unit="clip", disable=not progress)
    if workers > 1 and chunks > 1:
        # spawn, not fork: a forked FluidSynth (or torch) can deadlock in the child
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=spawn, initializer=_init_worker, initargs=(config, library, soundfonts)
        ) as pool:
            for done in pool.map(_render_chunk, jobs):
                results.update((e["index"], e) for e in done)
                bar.update(len(done))
    else:
        _init_worker(config, library, soundfonts)
        for job in jobs:
            done = _render_chunk(job)
            results.update((e["index"], e) for e in done)
            bar.update(len(done))
    bar.close()
    render_seconds = time.perf_counter() - start

    failed = [results[i] for i in sorted(results) if "failed" in results[i]]
    for f in failed:
        print(f"skipped clip {f['index']}: {f['failed']}")
    entries = [results[i] for i in sorted(results) if "failed" not in results[i]]
    for split in ("train", "test"):
        manifest = [
            ManifestEntry(path=e["path"], caption=e["caption"], labels=e["labels"], id=e["id"])
            for e in entries
            if e["split"] == split
        ]
        write_manifest(out / f"{split}.jsonl", manifest)
    rendered = sum(e["rendered"] for e in entries)
    audio_bytes = sum(Path(e["path"]).stat().st_size for e in entries)
    summary = {
        "version": SYNTH_VERSION,
        "config": _config_dict(config),
        "clips": len(entries),
        "skipped": [{"index": f["index"], "error": f["failed"]} for f in failed],
        "splits": dict(Counter(e["split"] for e in entries)),
        "styles": dict(Counter(e["labels"]["genre"] for e in entries)),
        "instruments": dict(Counter(i for e in entries for i in e["labels"]["instruments"])),
        "melody_sources": len({e["labels"]["melody_source"] for e in entries}),
        "corpus_tunes": {k: len(v) for k, v in library.items()},
        "soundfonts": names,
        "rendered_seconds": rendered,
        "render_wall_seconds": round(render_seconds, 2),
        "library_wall_seconds": round(library_seconds, 2),
        "realtime_factor": round(rendered / render_seconds, 1) if rendered else None,
        "audio_megabytes": round(audio_bytes / 1e6, 2),
        "megabytes_per_hour": round(audio_bytes / 1e6 / (len(entries) * config.clip_seconds / 3600), 1),
    }
    write_text_atomic(meta, json.dumps(summary, indent=2))
    return summary


def _config_dict(config: SynthConfig) -> dict:
    d = dict(config.__dict__)
    d["styles"] = list(config.styles)
    return d
