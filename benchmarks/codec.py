"""Codec speed and reconstruction quality beside Opus (prints numbers; not a test).

    python benchmarks/codec.py DATA... [--model DIR] [--seconds 10] [--max-files 40] [--threads 2]

DATA: audio files, folders or .jsonl manifests (e.g. the real-music corpus's test.jsonl), files
spread evenly over them. Per number of RVQ levels: bitrate, multi-scale mel distance, SI-SDR, and
the codebook perplexity of that level (exp of the code entropy, at most the codebook size). On the
same clips, Opus (ffmpeg's libopus) at 6 and 12 kbps as the peer, through the same metric code.
Then: encode / decode speed as a multiple of real time, and what the codec makes of digital silence.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from musiclm.audio import load_audio, save_audio
from musiclm.checkpoint import load_model
from musiclm.codec.losses import mel_distance, si_sdr
from musiclm.data.manifest import load_entries
from musiclm.errors import AudioError
from musiclm.modules.quantization import codebook_perplexity
from musiclm.pretrained import default_component


def opus_round_trip(wav: torch.Tensor, sr: int, kbps: int, tmp: Path) -> torch.Tensor:
    """Encode with libopus at ``kbps`` and decode back to ``sr`` (same length as ``wav``)."""
    src, enc = tmp / "in.wav", tmp / f"out{kbps}.opus"
    save_audio(src, wav, sr)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c:a", "libopus", "-b:a", f"{kbps}k", str(enc)],
        check=True,
    )
    out, _ = load_audio(enc, sr)
    out = out[: wav.shape[-1]]
    return torch.nn.functional.pad(out, (0, wav.shape[-1] - out.shape[-1]))


def dbfs(x: torch.Tensor) -> float:
    return 20 * math.log10(float(x.pow(2).mean().sqrt()) + 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="audio files, folders or .jsonl manifests")
    ap.add_argument("--model", default=None, help="codec checkpoint (default: the shipped codec)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds read from each file")
    ap.add_argument("--max-files", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    codec = load_model(args.model or default_component("codec"), kind="codec")
    sr = codec.sample_rate
    entries = [e for x in args.inputs for e in load_entries(x)]
    step = max(1, len(entries) / args.max_files)
    entries = [entries[int(i * step)] for i in range(min(args.max_files, len(entries)))]
    clips = []
    for e in entries:
        try:
            wav, _ = load_audio(e.path, sr, offset=e.start or 0.0, duration=args.seconds, allow_silent=False)
            clips.append(wav)
        except AudioError as err:
            print(f"skipped: {err}")
    if not clips:
        raise SystemExit("no usable audio")
    total_seconds = sum(c.shape[-1] for c in clips) / sr

    codec.encode(clips[0][None, :sr])  # warm-up
    t0 = time.perf_counter()
    codes = [codec.encode(c[None]) for c in clips]
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c, x in zip(codes, clips):
        codec.decode(c, x.shape[-1])
    t_dec = time.perf_counter() - t0

    c = codec.config
    params = sum(p.numel() for p in codec.parameters()) / 1e6
    print(
        f"codec: {args.model or 'shipped'} ({params:.2f} M params, {c.decoder} decoder, {sr} Hz, "
        f"{codec.frame_rate:g} Hz frames, {c.num_quantizers} x {c.codebook_size} RVQ)"
    )
    print(f"clips: {len(clips)}, {total_seconds:.1f} s of audio, {torch.get_num_threads()} CPU threads")
    print(f"{'levels':>6} {'kbps':>6} {'mel dist':>9} {'SI-SDR dB':>10} {'perplexity':>11}")
    bits = math.log2(c.codebook_size)
    perplexity = codebook_perplexity(torch.cat(codes, dim=-1), c.codebook_size)
    for k in range(1, codec.num_quantizers + 1):
        mel, sdr = [], []
        for code, x in zip(codes, clips):
            r = codec.decode(code[:, :k], x.shape[-1])[0]
            mel.append(float(mel_distance(r, x, sr)))
            sdr.append(float(si_sdr(r[None], x[None])[0]))
        kbps = k * codec.frame_rate * bits / 1000
        print(
            f"{k:>6} {kbps:6.2f} {sum(mel) / len(mel):9.4f} {sum(sdr) / len(sdr):10.2f} {perplexity[k - 1]:11.1f}"
        )

    if shutil.which("ffmpeg"):
        with tempfile.TemporaryDirectory() as tmp:
            for kbps in (6, 12):
                mel, sdr = [], []
                for x in clips:
                    r = opus_round_trip(x, sr, kbps, Path(tmp))
                    mel.append(float(mel_distance(r, x, sr)))
                    sdr.append(float(si_sdr(r[None], x[None])[0]))
                print(f"{'opus':>6} {kbps:6.2f} {sum(mel) / len(mel):9.4f} {sum(sdr) / len(sdr):10.2f}")
    else:
        print("opus: skipped (ffmpeg not found)")

    print(f"encode: {total_seconds / t_enc:8.1f} x real time")
    print(f"decode: {total_seconds / t_dec:8.1f} x real time")
    silence = torch.zeros(1, 5 * sr)
    out = codec.decode(codec.encode(silence), silence.shape[-1])[0]
    spectrum = torch.stft(out, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs().mean(-1)
    peak_to_median = float(spectrum.max() / spectrum.median().clamp(min=1e-12))
    print(f"silence in: decoded RMS {dbfs(out):.1f} dBFS, spectral peak / median {peak_to_median:.1f}")


if __name__ == "__main__":
    main()
