"""A captionless corpus of real recorded music from Debian's game-music packages (``musiclm data real``).

The synthetic benchmark has captions but FluidSynth timbres; the codec, the semantic model and the
stage LMs (on MuLaN audio tokens) need real recordings to learn what real music sounds like. Debian
ships hours of freely licensed game soundtracks. Each package is fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x`` into a cache folder (nothing is installed), its music files (some
inside zip/pk3 archives) are decoded, mixed to mono, resampled and cut into fixed-length clips.

Splits are by track: the hash of ``package/source file`` puts a whole track in train, valid or test,
so no recording is heard in two splits. The same bytes shipped by two packages count once. Each
manifest line records the clip's package, source file, licence and split; ``corpus.json`` sums the
hours per package and split, and ``licenses/`` keeps every package's Debian copyright file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from musiclm import checks
from musiclm.audio import SILENCE_RMS, resample_np, save_audio
from musiclm.data.manifest import ManifestEntry, write_manifest
from musiclm.errors import DataError
from musiclm.files import write_text_atomic

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class MusicPackage:
    """Where a package keeps its music: glob patterns under the unpacked tree; ``archive!pattern``
    looks inside a zip/pk3; ``stems`` are files beside a match that are summed into it (multitrack songs)."""

    name: str
    licence: str
    style: str
    patterns: tuple[str, ...]
    stems: tuple[str, ...] = ()


PACKAGES: dict[str, MusicPackage] = {
    p.name: p
    for p in (
        MusicPackage(
            "0ad-data",
            "CC-BY-SA-3.0",
            "world / orchestral",
            ("usr/share/games/0ad/mods/public/public.zip!audio/music/*.ogg",),
        ),
        MusicPackage(
            "ufoai-music",
            "GPL-2+ / CC-BY / CC-BY-SA",
            "orchestral / electronic",
            ("usr/share/games/ufoai/base/0music.pk3!music/*.ogg",),
        ),
        MusicPackage(
            "naev-data",
            "CC-BY / CC-BY-SA / GPL / public domain",
            "space ambient / electronic / orchestral",
            ("usr/share/naev/dat/snd/music/*.ogg",),
        ),
        MusicPackage(
            "supertux-data",
            "CC-BY-SA / GPL-2+",
            "chiptune / pop",
            ("usr/share/games/supertux2/music/*/*.ogg",),
        ),
        MusicPackage(
            "widelands-data",
            "GPL-2+ / CC-BY-SA",
            "orchestral / folk",
            ("usr/share/games/widelands/data/music/*.ogg",),
        ),
        MusicPackage(
            "hedgewars-data",
            "GPL-2 / CC-BY-SA",
            "themed pop / orchestral",
            ("usr/share/games/hedgewars/Data/Music/*.ogg",),
        ),
        MusicPackage(
            "supertuxkart-data",
            "CC-BY-SA / GPL-3+",
            "pop / rock / electronic",
            ("usr/share/games/supertuxkart/data/music/*.ogg",),
        ),
        MusicPackage(
            "nexuiz-music",
            "GPL-2+",
            "electronic / metal",
            ("usr/share/games/nexuiz/data/music.pk3!sound/cdtracks/*.ogg",),
        ),
        MusicPackage(
            "fretsonfire-songs-muldjord",
            "GPL-2+",
            "rock / metal",
            ("usr/share/games/fretsonfire/data/songs/*/*/song.ogg",),
            stems=("guitar.ogg", "rhythm.ogg"),
        ),
        MusicPackage(
            "fretsonfire-songs-sectoid",
            "GPL-2+",
            "rock",
            ("usr/share/games/fretsonfire/data/songs/*/*/song.ogg",),
            stems=("guitar.ogg", "rhythm.ogg"),
        ),
    )
}


@dataclass
class RealCorpusConfig:
    packages: tuple[str, ...] = tuple(PACKAGES)
    sample_rate: int = 16000
    clip_seconds: float = 10.0
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    audio_format: str = "flac"  # flac (lossless), ogg (Vorbis) or opus (smallest)
    min_rms_db: float = -50.0  # quieter clips (fade-outs, silence between movements) are dropped
    seed: int = 0  # salt of the split hash: another seed gives another split


def track_split(key: str, config: RealCorpusConfig) -> str:
    """Deterministic split of a whole track from its ``package/source`` key."""
    digest = hashlib.sha256(f"{config.seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < config.test_fraction:
        return "test"
    return "valid" if u < config.test_fraction + config.valid_fraction else "train"


def fetch_package(name: str, cache_dir: Path) -> Path:
    """``apt-get download`` + ``dpkg-deb -x`` into ``cache_dir/name`` (once); returns the unpacked root."""
    root = cache_dir / name
    if (root / ".unpacked").is_file():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError("musiclm data real needs apt-get and dpkg-deb (a Debian or Ubuntu system)")
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        run = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if run.returncode != 0 or not found:
            why = (run.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise DataError(f"apt-get download {name} failed: {why} (run 'apt-get update' first?)")
    shutil.rmtree(root, ignore_errors=True)
    tmp = cache_dir / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(tmp)], check=True)
    os.replace(tmp, root)
    (root / ".unpacked").write_text(found[-1].name + "\n")
    return root


@dataclass
class Track:
    package: str
    source: str  # path inside the package (``archive!member`` for archive members)
    files: list[str] = field(default_factory=list)  # local files summed into the track

    @property
    def key(self) -> str:
        return f"{self.package}/{self.source}"


def find_tracks(package: MusicPackage, root: Path, scratch: Path) -> list[Track]:
    """The package's music files; archive members are extracted to ``scratch``."""
    tracks = []
    for pattern in package.patterns:
        if "!" in pattern:
            archive, member_pattern = pattern.split("!", 1)
            for zpath in sorted(root.glob(archive)):
                with zipfile.ZipFile(zpath) as z:
                    for member in sorted(z.namelist()):
                        if fnmatch.fnmatch(member, member_pattern):
                            out = scratch / package.name / member
                            if not out.is_file():
                                out.parent.mkdir(parents=True, exist_ok=True)
                                with z.open(member) as src, open(out, "wb") as dst:
                                    shutil.copyfileobj(src, dst)
                            source = f"{zpath.relative_to(root)}!{member}"
                            tracks.append(Track(package.name, source, [str(out)]))
        else:
            for path in sorted(root.glob(pattern)):
                stems = [path.parent / s for s in package.stems if (path.parent / s).is_file()]
                rel = str(path.relative_to(root))
                tracks.append(Track(package.name, rel, [str(path)] + [str(s) for s in stems]))
    return tracks


def _read_mix(files: list[str], sample_rate: int) -> np.ndarray:
    """Decode, mix to mono and resample; stems are summed (then scaled back if they would clip)."""
    mix = None
    for f in files:
        data, sr = sf.read(f, dtype="float32", always_2d=True)
        mono = resample_np(data.mean(axis=1), sr, sample_rate)
        if mix is None:
            mix = mono
        else:
            n = max(len(mix), len(mono))
            mix = np.pad(mix, (0, n - len(mix))) + np.pad(mono, (0, n - len(mono)))
    peak = float(np.abs(mix).max()) if mix is not None and mix.size else 0.0
    return mix / peak * 0.99 if peak > 0.99 else mix


def _cut_track(track: Track, split: str, out: str, *, config: RealCorpusConfig, licence: str) -> dict:
    """Write the clips of one track; returns its record (also written as a sidecar, so reruns skip it)."""
    out_dir = Path(out)
    stem = Path(track.source.split("!")[-1]).with_suffix("")
    name = "_".join(stem.parts[-2:]) if stem.name == "song" else stem.name
    name = "_".join(name.split())  # no whitespace in file names: safer for shells and tools
    sidecar = out_dir / "tracks" / track.package / f"{name}.json"
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    try:
        wav = _read_mix(track.files, config.sample_rate)
    except Exception as e:  # a corrupt file in a package must not stop the corpus
        return {"key": track.key, "error": f"cannot decode ({str(e).splitlines()[0][:120]})", "clips": []}
    n = round(config.clip_seconds * config.sample_rate)
    threshold = max(10 ** (config.min_rms_db / 20), SILENCE_RMS)
    ext = {"flac": ".flac", "ogg": ".ogg", "opus": ".opus"}[config.audio_format]
    clips = []
    for i in range(len(wav) // n):
        clip = wav[i * n : (i + 1) * n]
        if float(np.sqrt(np.mean(clip**2))) < threshold:
            continue
        path = out_dir / "audio" / track.package / f"{name}-{i:03d}{ext}"
        tmp = path.with_name(path.stem + ".tmp" + ext)
        save_audio(tmp, clip, config.sample_rate)
        os.replace(tmp, path)
        clips.append({"path": str(path.relative_to(out_dir)), "start": i * config.clip_seconds})
    record = {
        "key": track.key,
        "package": track.package,
        "source": track.source,
        "licence": licence,
        "split": split,
        "name": name,
        "track_seconds": len(wav) / config.sample_rate,
        "clips": clips,
    }
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, sidecar)
    return record


def build_real_corpus(
    out: str | Path,
    config: RealCorpusConfig,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Fetch, cut and split the corpus into ``out``; a rerun skips finished tracks. Returns the summary."""
    from tqdm.auto import tqdm

    unknown = [p for p in config.packages if p not in PACKAGES]
    if unknown:
        raise DataError(f"unknown package(s) {unknown}; known: {', '.join(PACKAGES)}")
    if config.audio_format not in ("flac", "ogg", "opus"):
        raise DataError(f"audio format must be flac, ogg or opus, got {config.audio_format!r}")
    fractions = (config.valid_fraction, config.test_fraction)
    if not (all(f >= 0 for f in fractions) and sum(fractions) < 1):
        raise DataError("valid + test fractions must lie in [0, 1)")
    checks.sample_rate(config.sample_rate, "--sample-rate", DataError)
    checks.positive_float(config.clip_seconds, "--clip-seconds", DataError)
    checks.workers(workers, "--workers", DataError)
    out = Path(out)
    settings = out / "real.json"
    wanted = {k: v for k, v in asdict(config).items() if k != "packages"}
    if settings.is_file():
        old = json.loads(settings.read_text())
        if old != wanted:
            diff = sorted(k for k in wanted if old.get(k) != wanted[k])
            raise DataError(f"{out} was built with other settings ({', '.join(diff)}); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings, json.dumps(wanted, indent=2) + "\n")
    cache = Path(cache_dir) if cache_dir else out / "cache"
    (out / "licenses").mkdir(exist_ok=True)

    jobs, seen = [], set()
    with tempfile.TemporaryDirectory(dir=cache.parent if cache_dir else out) as scratch:
        for name in config.packages:
            package = PACKAGES[name]
            root = fetch_package(name, cache)
            copyright_file = root / "usr/share/doc" / name / "copyright"
            if copyright_file.is_file():
                shutil.copyfile(copyright_file, out / "licenses" / f"{name}.copyright")
            for track in find_tracks(package, root, Path(scratch)):
                digest = hashlib.sha1(Path(track.files[0]).read_bytes()).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                jobs.append((track, track_split(track.key, config), package.licence))
        workers = workers or min(8, os.cpu_count() or 1)
        with ProcessPoolExecutor(workers) as pool:
            futures = [
                pool.submit(_cut_track, t, s, str(out), config=config, licence=lic) for t, s, lic in jobs
            ]
            records = [f.result() for f in tqdm(futures, desc="tracks", disable=not progress)]
    return _write_manifests(out, records, config)


def _write_manifests(out: Path, records: list[dict], config: RealCorpusConfig) -> dict:
    by_split: dict[str, list[ManifestEntry]] = {s: [] for s in SPLITS}
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0.0))
    tracks: dict[str, int] = dict.fromkeys(SPLITS, 0)
    errors = []
    for r in records:
        if "error" in r:
            errors.append(f"{r['key']}: {r['error']}")
            continue
        tracks[r["split"]] += bool(r["clips"])
        for c in r["clips"]:
            labels = {k: r[k] for k in ("package", "source", "licence", "split")}
            labels["track"] = r["key"]
            entry = ManifestEntry(str(out / c["path"]), labels=labels, id=f"{r['key']}@{c['start']:g}")
            by_split[r["split"]].append(entry)
            seconds[r["package"]][r["split"]] += config.clip_seconds
    for split, entries in by_split.items():
        write_manifest(out / f"{split}.jsonl", entries)
    summary = {
        "hours": {s: round(sum(p[s] for p in seconds.values()) / 3600, 3) for s in SPLITS},
        "clips": {s: len(e) for s, e in by_split.items()},
        "tracks": tracks,
        "packages": {
            name: {
                "licence": PACKAGES[name].licence,
                "style": PACKAGES[name].style,
                **{s: round(v / 3600, 3) for s, v in sec.items()},
            }
            for name, sec in sorted(seconds.items())
        },
        "errors": errors,
    }
    tmp = out / "corpus.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "corpus.json")
    return summary
