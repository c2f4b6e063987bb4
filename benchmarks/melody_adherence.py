"""Melody adherence of a bundle: chroma cosine between a melody and music generated from it.

For held-out clips of a synthetic benchmark (``musiclm data synth``), the labelled melody notes are
rendered as a plain sine "hum"; the model generates from the clip's caption with and without that
melody, and audiocraft's chroma cosine similarity between the hum and each output is reported,
beside the same figure for the clip itself (the reference: what following the melody can reach).

    python benchmarks/melody_adherence.py SYNTH_DIR/test.jsonl --clips 8 --seconds 6
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from musiclm.audio import chroma_cosine_similarity, load_audio
from musiclm.data.manifest import read_manifest
from musiclm.pipeline import MusicLM


def hum(notes: list[list[float]], seconds: float, sample_rate: int) -> torch.Tensor:
    """Sine tones (with short fades) for ``[start, end, midi_pitch]`` notes."""
    out = np.zeros(round(seconds * sample_rate), dtype=np.float32)
    for start, end, pitch in notes:
        a, b = round(start * sample_rate), min(round(end * sample_rate), len(out))
        if b <= a:
            continue
        t = np.arange(b - a) / sample_rate
        env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        out[a:b] += 0.3 * env * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)
    return torch.from_numpy(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--model", default="default")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--candidates", type=int, default=1)
    args = p.parse_args()
    model = MusicLM.from_pretrained(args.model, device="cpu")
    sr = model.sample_rate
    entries = [e for e in read_manifest(args.manifest) if e.labels.get("melody")][: args.clips]
    with_m, without, shuffled, reference = [], [], [], []
    t0 = time.perf_counter()
    for i, e in enumerate(entries):
        melody = hum(e.labels["melody"], args.seconds, sr)
        a = model.generate(
            e.caption,
            args.seconds,
            args.candidates,
            seed=i,
            melody=melody,
            melody_sample_rate=sr,
            progress=False,
        )
        b = model.generate(e.caption, args.seconds, args.candidates, seed=i, progress=False)
        with_m.append(float(chroma_cosine_similarity(melody, a.audio[0], sr)))
        without.append(float(chroma_cosine_similarity(melody, b.audio[0], sr)))
        other = hum(entries[(i + 1) % len(entries)].labels["melody"], args.seconds, sr)
        shuffled.append(float(chroma_cosine_similarity(other, a.audio[0], sr)))
        clip, _ = load_audio(e.path, sr, offset=e.start or 0.0, duration=args.seconds)
        reference.append(float(chroma_cosine_similarity(melody, clip, sr)))
        print(
            f"{e.id}: with melody {with_m[-1]:.3f}  without {without[-1]:.3f}  other melody {shuffled[-1]:.3f}"
            f"  reference {reference[-1]:.3f}"
        )
    print(
        f"chroma cosine over {len(entries)} clips of {args.seconds:g} s: with melody {np.mean(with_m):.3f} "
        f"(±{np.std(with_m) / np.sqrt(len(with_m)):.3f}), without {np.mean(without):.3f} "
        f"(±{np.std(without) / np.sqrt(len(without)):.3f}), output vs another clip's melody "
        f"{np.mean(shuffled):.3f}, the reference clip {np.mean(reference):.3f}; {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
