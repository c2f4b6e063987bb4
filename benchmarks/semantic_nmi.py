"""Do semantic tokens carry musical content? (prints numbers; not a test)

    python benchmarks/semantic_nmi.py [--model SEMANTIC_DIR] [--codec CODEC_DIR] [--steps 600]

On held-out procedural music with ground truth (chord root and melody pitch class at every frame)
it reports the normalised mutual information between those labels and
  * the semantic tokens (a tokenizer given with --model, or one trained here for --steps),
  * the first RVQ level of the codec (the shipped one by default), at the same 25 Hz,
  * k-means (same number of clusters) on raw log-mel frames,
plus tokenization speed as a multiple of real time.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score as nmi

from musiclm.checkpoint import load_model
from musiclm.config import get_preset
from musiclm.data.procedural import ProceduralMusic, render_piece
from musiclm.pretrained import default_component
from musiclm.semantic.kmeans import assign, fit_kmeans
from musiclm.semantic.ssl_model import frame_features
from musiclm.semantic.tokenizer import SemanticTokenizer
from musiclm.semantic.train import train_semantic
from musiclm.train import TrainConfig


def frame_labels(labels: dict, frames: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(frames) + 0.5) / rate
    chord = np.full(frames, -1)
    melody = np.full(frames, -1)
    for start, dur, pc in labels["chords"]:
        chord[(t >= start) & (t < start + dur)] = pc
    for start, dur, pitch in labels["melody"]:
        melody[(t >= start) & (t < start + dur)] = pitch % 12
    return chord, melody


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="semantic tokenizer checkpoint (default: train one here)")
    ap.add_argument("--codec", default=None, help="codec checkpoint (default: the shipped one)")
    ap.add_argument("--steps", type=int, default=600, help="training steps when no --model is given")
    ap.add_argument("--clips", type=int, default=60, help="held-out clips of 8 s")
    args = ap.parse_args()

    cfg = get_preset("tiny").semantic
    sr = cfg.sample_rate
    train = ProceduralMusic(4000, sr, cfg.crop_seconds, seed=0)
    if args.model:
        tok = load_model(args.model, kind="semantic")
    else:
        out = tempfile.mkdtemp(prefix="semantic-")
        tc = TrainConfig(
            out_dir=out,
            max_steps=args.steps,
            batch_size=8,
            lr=5e-4,
            warmup_steps=50,
            checkpoint_every=10**9,
            log_every=50,
            ema_decay=None,
        )
        train_semantic(train, SemanticTokenizer(cfg), tc, kmeans_clips=150)
        tok = load_model(f"{out}/model", kind="semantic")
    codec = load_model(args.codec or default_component("codec"), kind="codec")

    mel_centroids = fit_kmeans(
        torch.cat([frame_features(train[i]["wav"][None], cfg)[0] for i in range(150)]), cfg.num_clusters
    )
    rows = {"semantic tokens": [], "codec RVQ level 1": [], "k-means on log-mel": []}
    chords, melodies = [], []
    seconds, t_tok = 0.0, 0.0
    for i in range(args.clips):
        wav, labels = render_piece([777, i], sr, 8.0)
        wav = torch.from_numpy(wav)[None]
        t0 = time.perf_counter()
        ids = tok.encode(wav)[0]
        t_tok += time.perf_counter() - t0
        seconds += 8.0
        frames = ids.shape[0]
        rows["semantic tokens"].append(ids.numpy())
        rows["codec RVQ level 1"].append(codec.encode(wav)[0, 0, ::2][:frames].numpy())  # 50 Hz -> 25 Hz
        rows["k-means on log-mel"].append(assign(frame_features(wav, cfg)[0], mel_centroids).numpy())
        c, m = frame_labels(labels, frames, cfg.frame_rate)
        chords.append(c)
        melodies.append(m)
    chord, melody = np.concatenate(chords), np.concatenate(melodies)
    voiced = melody >= 0
    print(
        f"held-out: {args.clips} clips x 8 s; {cfg.num_clusters} clusters; frame rate {cfg.frame_rate:g} Hz"
    )
    print(f"{'tokens':<22}{'NMI chord root':>16}{'NMI melody pc':>16}")
    for name, ids in rows.items():
        ids = np.concatenate(ids)
        print(f"{name:<22}{nmi(chord, ids):>16.4f}{nmi(melody[voiced], ids[voiced]):>16.4f}")
    print(
        f"semantic tokenization speed: {seconds / t_tok:.1f} x real time on {torch.get_num_threads()} CPU threads"
    )


if __name__ == "__main__":
    main()
