"""How long a command takes to start: wall time of fresh processes, median of several runs.

    python benchmarks/startup.py [--source OLD_CHECKOUT] [--runs 5]

Times ``musiclm --help`` (parsing alone), ``musiclm codec encode`` of a 5 s clip with the shipped
codec (start-up, load and a short piece of work), the plan ``musiclm train bundle`` makes before
it starts (the LMs' memory for the tiny preset), the shipped model's load (what ``generate`` does
before its first token) and a whole short ``musiclm generate``. With ``--source`` every case also
runs against that checkout of the package, alternating with this one, so that both sit in one run.
Every process runs without ``site`` (``python -S``), the package's folder and the environment's
site-packages on its path: an editable install would otherwise import this checkout whatever the
path says.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

PLAN = "from musiclm.recipe import Plan; Plan.for_machine('tiny')"
LOAD = "from musiclm.pipeline import MusicLM; MusicLM.from_pretrained('default')"


def cases(folder: Path) -> dict[str, list[str]]:
    clip = folder / "clip.wav"
    t = np.arange(5 * 24000) / 24000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    return {
        "musiclm --help": ["-m", "musiclm", "--help"],
        "musiclm codec encode (5 s, shipped codec)": [
            "-m", "musiclm", "codec", "encode", str(clip), "-o", str(folder / "codes.safetensors"),
            "--model", "default",
        ],
        "train bundle's plan (tiny preset)": ["-c", PLAN],
        "the shipped model loaded (MusicLM.from_pretrained)": ["-c", LOAD],
        "musiclm generate (2 s, 1 candidate, shipped model)": [
            "-m", "musiclm", "generate", "calm piano", "--seconds", "2", "--candidates", "1",
            "-o", str(folder / "out.wav"), "--no-progress",
        ],
    }  # fmt: skip


def wall(args: list[str], source: str, folder: str) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([source, sysconfig.get_paths()["purelib"]]))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-S", *args], env=env, cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="another checkout of the package to time beside")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sources = {"this checkout": str(Path(__file__).resolve().parents[1])}
    if args.source:
        sources["--source"] = str(Path(args.source).resolve())
    with tempfile.TemporaryDirectory() as folder:
        for name, command in cases(Path(folder)).items():
            times: dict[str, list[float]] = {label: [] for label in sources}
            for _ in range(args.runs):
                for label, source in sources.items():  # alternating: drift in machine speed hits both
                    times[label].append(wall(command, source, folder))
            figures = ", ".join(f"{label} {statistics.median(t):.2f} s" for label, t in times.items())
            print(f"{name}: {figures} (median of {args.runs})")


if __name__ == "__main__":
    main()
