"""Peak memory of `codec encode` and `embed` on a 1-minute and a 20-minute file (prints numbers).

    python benchmarks/memory.py [--audio LONG_FILE] [--minutes 1 20]

Each command runs in a fresh process that reports its own peak resident memory, so the figures are
comparable: long inputs are read, encoded and embedded in bounded pieces, and the 20-minute run
should stay within 1.5x of the 1-minute one. Without --audio, 44.1 kHz stereo test audio (noise
bursts over a chord) is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def _child(argv: list[str]) -> None:
    from musiclm.cli import main

    rc = main(argv)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rc": rc, "peak_mb": peak_mb}))


def _write_test_audio(path: Path, minutes: float, sr: int = 44100) -> None:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, 2) as f:
        for second in range(int(minutes * 60)):
            t = np.arange(sr) / sr + second
            chord = sum(np.sin(2 * np.pi * f0 * t) for f0 in (220, 277, 330)) * 0.1
            burst = rng.normal(0, 0.05, sr) * (np.arange(sr) < sr // 8)
            f.write(np.stack([chord + burst, chord - burst], 1).astype(np.float32))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", default=None, help="a long audio file (default: generated test audio)")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 20.0])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for minutes in args.minutes:
            src = tmp / f"{minutes:g}min.flac"
            if args.audio:
                data, sr = sf.read(args.audio, frames=int(minutes * 60 * sf.info(args.audio).samplerate))
                sf.write(src, data, sr)
            else:
                _write_test_audio(src, minutes)
            for name, cmd in {
                "codec encode": ["codec", "encode", str(src), "-o", str(tmp / "codes.safetensors")],
                "embed": ["embed", "--audio", str(src)],
            }.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--child", *cmd], capture_output=True, text=True, check=True
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((name, minutes, result["peak_mb"]))
                print(f"{name:13s} {minutes:5.1f} min  peak {result['peak_mb']:7.0f} MB", flush=True)
        for name in ("codec encode", "embed"):
            peaks = [p for n, _, p in rows if n == name]
            print(f"{name}: longest / shortest = {peaks[-1] / peaks[0]:.2f}x")


if __name__ == "__main__":
    main()
