"""A log-mel spectrogram as a PNG, written with zlib alone.

Our own tiny encoder rather than matplotlib: one picture per generation does not justify a plotting
stack as a dependency of the package.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from musiclm.audio import log_mel_spectrogram

# A perceptually ordered dark-to-bright colour ramp (black, purple, red, orange, pale yellow).
_RAMP = np.array(
    [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64
)


def colorize(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in [0, 1] -> ``[H, W, 3]`` uint8 RGB through the ramp."""
    x = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_RAMP) - 2)
    frac = (x - lo)[..., None]
    return np.round(_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``[H, W, 3]`` uint8 as an 8-bit RGB PNG."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path


def save_spectrogram_png(
    wav: torch.Tensor,
    sample_rate: int,
    path: str | Path,
    n_mels: int = 128,
    height_scale: int = 2,
    markers=(),
) -> Path:
    """Log-mel spectrogram of ``[T]`` audio (low frequencies at the bottom, 80 dB range); ``markers``
    are times in seconds drawn as white vertical lines (e.g. story-mode segment starts)."""
    hop = max(1, sample_rate // 100)
    mel = log_mel_spectrogram(
        wav.float().reshape(1, -1), sample_rate, n_fft=1024, hop_length=hop, n_mels=n_mels
    )
    db = mel[0].numpy() * (20 / np.log(10))  # natural-log magnitude -> dB
    db = db - db.max()
    img = colorize((db + 80.0) / 80.0)[::-1]
    img = np.repeat(img, height_scale, axis=0)
    for t in markers:
        col = int(round(t * sample_rate / hop))
        if 0 <= col < img.shape[1]:
            img[:, col] = 255
    return write_png(path, np.ascontiguousarray(img))
