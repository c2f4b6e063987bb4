"""Codec speed and reconstruction quality (prints numbers; not a test).

    python benchmarks/codec.py AUDIO_DIR_OR_FILES... [--model DIR] [--seconds 10] [--max-files 20]

Speed: encode and decode throughput as a multiple of real time on this machine's CPU.
Quality: multi-scale mel distance and SI-SDR of the reconstruction from the first k RVQ levels,
for every k, averaged over the files.
"""

from __future__ import annotations

import argparse
import time

import torch

from musiclm.audio import find_audio_files, load_audio
from musiclm.checkpoint import load_model
from musiclm.codec.losses import mel_distance, si_sdr
from musiclm.errors import AudioError
from musiclm.pretrained import default_component


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="audio files or folders")
    ap.add_argument("--model", default=None, help="codec checkpoint (default: the shipped tiny codec)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds read from each file")
    ap.add_argument("--max-files", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    codec = load_model(args.model or default_component("codec"), kind="codec")
    sr = codec.sample_rate
    files = [f for x in args.inputs for f in find_audio_files(x)][: args.max_files]
    clips = []
    for f in files:
        try:
            clips.append(load_audio(f, sr, duration=args.seconds, allow_silent=False, min_seconds=0.5)[0])
        except AudioError as e:
            print(f"skipped: {e}")
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

    print(
        f"codec: {args.model or 'shipped tiny'}  ({sum(p.numel() for p in codec.parameters()) / 1e6:.2f} M params, "
        f"{sr} Hz, {codec.frame_rate:g} Hz frames, {codec.num_quantizers} x {codec.config.codebook_size} RVQ)"
    )
    print(f"files: {len(clips)}, {total_seconds:.1f} s of audio, {torch.get_num_threads()} CPU threads")
    print(f"encode: {total_seconds / t_enc:8.1f} x real time")
    print(f"decode: {total_seconds / t_dec:8.1f} x real time")
    print(f"{'levels':>6} {'kbps':>6} {'mel dist':>9} {'SI-SDR dB':>10}")
    bits = torch.log2(torch.tensor(float(codec.config.codebook_size))).item()
    for k in range(1, codec.num_quantizers + 1):
        mel, sdr = [], []
        for c, x in zip(codes, clips):
            r = codec.decode(c[:, :k], x.shape[-1])[0]
            mel.append(float(mel_distance(r, x, sr)))
            sdr.append(float(si_sdr(r[None], x[None])[0]))
        print(
            f"{k:>6} {k * codec.frame_rate * bits / 1000:6.2f} {sum(mel) / len(mel):9.4f} {sum(sdr) / len(sdr):10.2f}"
        )


if __name__ == "__main__":
    main()
