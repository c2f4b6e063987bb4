"""A log-mel spectrogram as a PNG with time and frequency axes (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from musiclm.audio import log_mel_spectrogram, mel_frequencies
from musiclm.files import atomic_write


def save_spectrogram_png(
    wav: torch.Tensor, sample_rate: int, path: str | Path, *, n_mels: int = 128, markers=(), title: str = ""
) -> Path:
    """Log-mel spectrogram of ``[T]`` audio in dB (80 dB range) against seconds and Hz; ``markers``
    are times in seconds drawn as dashed white lines (e.g. story-mode segment starts). Written to a
    temporary name and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hop = max(1, sample_rate // 100)
    mel = log_mel_spectrogram(
        wav.float().reshape(1, -1), sample_rate, n_fft=1024, hop_length=hop, n_mels=n_mels
    )
    db = mel[0].numpy() * (20 / np.log(10))  # natural-log magnitude -> dB
    db = np.maximum(db - db.max(), -80.0)
    freqs = mel_frequencies(n_mels, sample_rate)
    seconds = wav.numel() / sample_rate
    fig, ax = plt.subplots(figsize=(min(16, 4 + seconds / 2), 4), dpi=100)
    image = ax.imshow(
        db, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, n_mels), vmin=-80, vmax=0
    )
    ticks = [i for i in range(0, n_mels, max(1, n_mels // 6))]
    ax.set_yticks(ticks, [f"{freqs[i]:.0f}" for i in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz, mel scale)")
    if title:
        ax.set_title(title)
    for t in markers:
        ax.axvline(t, color="white", linestyle="--", linewidth=1)
    fig.colorbar(image, ax=ax, label="dB")
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path
