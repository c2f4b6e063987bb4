"""Audio I/O and features: load, resample, mix to mono, save, log-mel.

Reading goes through soundfile (wav, flac, ogg/vorbis, opus, mp3 where libsndfile has it),
resampling through soxr. Every problem with a file surfaces as a one-line :class:`AudioError` that
names the file.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

from musiclm.config import TARGET_LUFS
from musiclm.errors import AudioError
from musiclm.files import atomic_write

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
SILENCE_RMS = 1e-4  # below this RMS (about -80 dBFS) a clip counts as silent
STREAM_SECONDS = 60.0  # longer reads are decoded and resampled in blocks (bounded memory)
PEAK_DBFS = -1.0  # loudness normalisation never lifts a sample peak above this


def audio_info(path: str | Path) -> tuple[int, float]:
    """(sample rate, duration in seconds) without decoding the file."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for corrupt input
        raise AudioError(f"{path}: cannot read audio ({_short(e)})") from None
    for line in info.extra_info.splitlines():  # libsndfile notes a data chunk cut short
        if line.startswith("data") and "should be" in line:
            raise AudioError(f"{path}: truncated file (its header promises more audio: {line.strip()})")
    return info.samplerate, info.frames / max(info.samplerate, 1)


def audio_seconds(path: str | Path, *, min_seconds: float = 0.0, max_seconds: float | None = None) -> float:
    """Seconds of audio in ``path``, from its header, refused in one line outside [``min_seconds``,
    ``max_seconds``]: what a command checks of its audio inputs before it loads a model."""
    _, seconds = audio_info(path)
    if seconds < min_seconds:
        raise AudioError(f"{path}: {seconds:.2f} s is shorter than {min_seconds:g} s")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{path}: {seconds:.1f} s is longer than the limit of {max_seconds:.1f} s")
    return seconds


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
    allow_silent: bool = True,
) -> tuple[torch.Tensor, int]:
    """Read ``path`` as float32 in [-1, 1].

    Returns ``(wav, sr)`` with ``wav`` of shape ``[T]`` when ``mono`` else ``[C, T]``; resampled to
    ``sample_rate`` when given. ``offset``/``duration`` (seconds) read only a segment. Raises
    :class:`AudioError` for missing, unreadable, empty, non-finite, too short, too long or (with
    ``allow_silent=False``) silent audio.
    """
    path = Path(path)
    sr, total = audio_info(path)
    if max_seconds is not None and duration is None and total - offset > max_seconds:
        raise AudioError(
            f"{path}: {total:.1f} s is longer than the limit of {max_seconds:.1f} s "
            "(pass a duration to read a segment)"
        )
    start = int(round(offset * sr))
    frames = -1 if duration is None else int(round(duration * sr))
    span = (total * sr - start) if frames < 0 else frames
    try:
        if mono and span > STREAM_SECONDS * sr:  # long: decode, mix and resample block by block
            data = _read_mono_stream(path, sr, start, frames=frames, target_sr=sample_rate or sr)[None]
            return _check_and_convert(
                data,
                sample_rate or sr,
                path,
                sample_rate=None,
                mono=mono,
                min_seconds=min_seconds,
                allow_silent=allow_silent,
            )
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio ({_short(e)})") from None
    return _check_and_convert(
        data.T,
        sr,
        path,
        sample_rate=sample_rate,
        mono=mono,
        min_seconds=min_seconds,
        allow_silent=allow_silent,
    )


def load_clip(
    path: str | Path, sample_rate: int, seconds: float, *, start: float | None = None
) -> torch.Tensor:
    """Exactly ``seconds`` of a file from ``start`` (zero-padded when shorter)."""
    wav, _ = load_audio(path, sample_rate, offset=start or 0.0, duration=seconds)
    n = round(seconds * sample_rate)
    return torch.nn.functional.pad(wav, (0, max(0, n - wav.shape[-1])))[:n]


def _read_mono_stream(path: Path, sr: int, start: int, *, frames: int, target_sr: int) -> np.ndarray:
    """Read ``frames`` (``-1``: to the end) from ``start`` as mono at ``target_sr``, 10 s at a time, so
    a long multichannel file never sits in memory at its own rate (soxr's stream is seamless)."""
    stream = soxr.ResampleStream(sr, target_sr, 1, dtype="float32", quality="HQ") if sr != target_sr else None
    out = []
    blocks = sf.blocks(
        str(path), blocksize=10 * sr, start=start, frames=frames, dtype="float32", always_2d=True
    )
    for block in blocks:
        mono = block.mean(axis=1)
        if not np.isfinite(mono).all():
            raise AudioError(f"{path}: audio contains NaN or infinite samples")
        out.append(stream.resample_chunk(mono) if stream is not None else mono)
    if stream is not None:
        out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _check_and_convert(
    data: np.ndarray,
    sr: int,
    where: str | Path,
    *,
    sample_rate: int | None,
    mono: bool,
    min_seconds: float,
    allow_silent: bool,
) -> tuple[torch.Tensor, int]:
    if data.size == 0:
        raise AudioError(f"{where}: audio is empty")
    if not np.isfinite(data).all():
        raise AudioError(f"{where}: audio contains NaN or infinite samples")
    if mono:
        data = data.mean(axis=0, keepdims=True)
    if sample_rate is not None and sample_rate != sr:
        data = resample_np(data, sr, sample_rate)
        sr = sample_rate
    seconds = data.shape[-1] / sr
    if seconds < min_seconds:
        raise AudioError(f"{where}: {seconds:.2f} s of audio, need at least {min_seconds:.2f} s")
    if not allow_silent and is_silent(data):
        raise AudioError(f"{where}: audio is silent")
    wav = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    return (wav[0] if mono else wav), sr


def check_waveform(
    wav: torch.Tensor | np.ndarray,
    sr: int,
    sample_rate: int | None = None,
    *,
    name: str = "waveform",
    min_seconds: float = 0.0,
    allow_silent: bool = True,
) -> torch.Tensor:
    """Validate an in-memory waveform (``[T]``, ``[C, T]``) and return mono float32 ``[T]`` at
    ``sample_rate``; the same checks and messages as :func:`load_audio`."""
    data = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise AudioError(f"{name}: expected shape [T] or [channels, T], got {list(data.shape)}")
    return _check_and_convert(
        data.astype(np.float32),
        sr,
        name,
        sample_rate=sample_rate,
        mono=True,
        min_seconds=min_seconds,
        allow_silent=allow_silent,
    )[0]


def is_silent(wav: np.ndarray | torch.Tensor, threshold: float = SILENCE_RMS) -> bool:
    """True when the RMS of the signal is below ``threshold``."""
    x = wav.float() if isinstance(wav, torch.Tensor) else torch.from_numpy(np.asarray(wav, dtype=np.float32))
    return bool(x.numel() == 0 or x.pow(2).mean().sqrt() < threshold)


def resample_np(data: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``[..., T]`` float audio with soxr (high quality)."""
    if orig_sr == target_sr:
        return data
    flat = data.reshape(-1, data.shape[-1]).T  # soxr wants [T, channels]
    out = soxr.resample(np.ascontiguousarray(flat), orig_sr, target_sr, quality="HQ")  # [T', channels]
    return np.ascontiguousarray(out.T).reshape(*data.shape[:-1], -1).astype(np.float32)


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample a ``[..., T]`` tensor; returns a tensor on the same device."""
    if orig_sr == target_sr:
        return wav
    out = resample_np(wav.detach().cpu().float().numpy(), orig_sr, target_sr)
    return torch.from_numpy(out).to(wav.device)


def save_audio(path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write ``[T]`` or ``[C, T]`` audio; the format follows the extension (default 16-bit WAV).

    Peak-safe: a signal whose peak exceeds 0.99 is scaled down instead of clipped; non-finite
    samples are an error, never written.
    """
    path = Path(path)
    data = (
        wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    )
    if data.ndim == 2:
        data = data.T  # soundfile wants [T, C]
    elif data.ndim != 1:
        raise AudioError(f"{path}: can only save [T] or [C, T] audio, got shape {list(data.shape)}")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: refusing to save audio with NaN or infinite samples")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 0.99:
        data = data * (0.99 / peak)
    if path.suffix == "":
        path = path.with_suffix(".wav")
    suffix = path.suffix.lower()
    fmt, subtype = {".wav": ("WAV", "PCM_16"), ".opus": ("OGG", "OPUS")}.get(suffix, (None, None))
    with atomic_write(path) as tmp:
        sf.write(str(tmp), data, sample_rate, format=fmt, subtype=subtype)
    return path


def integrated_loudness(wav: torch.Tensor, sample_rate: int) -> float | None:
    """ITU-R BS.1770 integrated loudness (LUFS, through pyloudnorm) of ``[T]`` or ``[C, T]`` audio;
    ``None`` for audio too short to measure (< 0.4 s), silent, or below the absolute gate."""
    import pyloudnorm

    data = wav.detach().cpu().double().numpy()
    data = data.T if data.ndim == 2 else data
    if data.shape[0] < int(0.4 * sample_rate) or is_silent(data):
        return None
    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(data)
    return float(loudness) if np.isfinite(loudness) else None


def normalize_loudness(
    wav: torch.Tensor, sample_rate: int, *, lufs: float = TARGET_LUFS, peak_dbfs: float = PEAK_DBFS
) -> tuple[torch.Tensor, float | None]:
    """Scale ``[T]`` or ``[C, T]`` audio to ``lufs`` integrated loudness (ITU-R BS.1770 through
    pyloudnorm), but never past a sample peak of ``peak_dbfs``: a generated clip is as loud as
    streamed music and never clipped. Returns the audio and its loudness after scaling; audio too
    short to measure (< 0.4 s) or silent comes back unchanged with ``None``."""
    loudness = integrated_loudness(wav, sample_rate)
    if loudness is None:
        return wav, None
    peak = float(wav.detach().abs().max())
    gain_db = min(lufs - loudness, peak_dbfs - 20 * np.log10(peak))
    return wav * float(10 ** (gain_db / 20)), float(loudness + gain_db)


def find_audio_files(root: str | Path) -> list[Path]:
    """All audio files under ``root`` (recursively), sorted; a broken link is listed too, for the
    reader to report as unusable rather than to vanish from the data."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise AudioError(f"{root}: no such file or directory")
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and (p.is_file() or p.is_symlink())
    )


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def _mel_points(n: int, fmin: float, fmax: float) -> np.ndarray:
    """``n`` frequencies in Hz evenly spaced on the HTK mel scale from ``fmin`` to ``fmax``."""
    low, high = (2595.0 * np.log10(1.0 + f / 700.0) for f in (fmin, fmax))
    return 700.0 * (10.0 ** (np.linspace(low, high, n) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, *, fmin: float = 0.0, fmax: float | None = None
):
    """HTK-scale triangular mel filters with Slaney area normalisation, ``[n_mels, n_fft // 2 + 1]``.

    librosa's ``filters.mel(htk=True, norm="slaney")`` to the last bit (tests/test_audio.py), written
    out because importing ``librosa.filters`` imports ``scipy.signal``: 2-3 s of every start that
    embeds audio (MuLaN's audio tower reads mels) on a 2-core CPU, for twelve lines of numpy."""
    edges = _mel_points(n_mels + 2, fmin, sample_rate / 2 if fmax is None else fmax)
    ramps = edges[:, None] - np.fft.rfftfreq(n_fft, 1.0 / sample_rate)[None]
    width = np.diff(edges)[:, None]
    rising, falling = -ramps[:-2] / width[:-1], ramps[2:] / width[1:]
    fb = np.maximum(0, np.minimum(rising, falling)).astype(np.float32)
    fb = (fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)  # equal area per band
    if not np.all((edges[:-2] == 0) | (fb.max(axis=1) > 0)):
        warnings.warn(
            f"{n_mels} mel bands over {n_fft}-point FFTs at {sample_rate} Hz leave some bands empty; "
            "use fewer bands or a larger n_fft",
            stacklevel=2,
        )
    with torch.inference_mode(False):  # cached: a normal tensor even when first asked for in inference
        return torch.from_numpy(fb)


def mel_frequencies(
    n_mels: int, sample_rate: int, fmin: float = 0.0, *, fmax: float | None = None
) -> np.ndarray:
    """Centre frequencies in Hz of the :func:`mel_filterbank` bands."""
    return _mel_points(n_mels + 2, fmin, fmax or sample_rate / 2)[1:-1]


def log_mel_spectrogram(
    wav: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    *,
    hop_length: int = 256,
    n_mels: int = 64,
    win_length: int | None = None,
    center: bool = True,
    eps: float = 1e-5,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> torch.Tensor:
    """Log-mel magnitude spectrogram of ``[..., T]`` audio -> ``[..., n_mels, frames]``.

    With ``center=True`` there are ``T // hop_length + 1`` frames.
    """
    with torch.autocast(wav.device.type, enabled=False):  # logs of bf16 mels are too coarse for losses
        return _log_mel(
            wav,
            sample_rate,
            n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            win_length=win_length,
            center=center,
            eps=eps,
            fmin=fmin,
            fmax=fmax,
        )


def _log_mel(wav, sample_rate, n_fft, *, hop_length, n_mels, win_length, center, eps, fmin, fmax):
    shape = wav.shape
    x = wav.reshape(-1, shape[-1]).float()
    win_length = win_length or n_fft
    window = torch.hann_window(win_length, device=x.device)
    spec = torch.stft(
        x,
        n_fft,
        hop_length,
        win_length,
        window,
        center=center,
        return_complex=True,
        pad_mode="reflect" if x.shape[-1] > n_fft // 2 else "constant",
    ).abs()
    fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin=fmin, fmax=fmax).to(x.device)
    mel = torch.matmul(fb, spec)
    out = torch.log(mel.clamp(min=eps))
    return out.reshape(*shape[:-1], n_mels, out.shape[-1])


@functools.lru_cache(maxsize=8)
def _chroma_filter(sample_rate: int, n_fft: int) -> torch.Tensor:
    """librosa's ``[12, n_fft // 2 + 1]`` chroma filterbank (C = 0, A440, no tuning estimate)."""
    import librosa

    with torch.inference_mode(False):  # cached, as mel_filterbank's
        return torch.from_numpy(librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0)).float()


def power_chromagram(
    wav: torch.Tensor, sample_rate: int, *, n_fft: int = 4096, hop_length: int = 640
) -> torch.Tensor:
    """Frame-wise pitch-class power of ``[..., T]`` audio -> ``[..., 12, frames]`` (centred frames),
    unnormalised: what :func:`chromagram` normalises, and what tells a quiet frame from a loud one."""
    shape = wav.shape
    x = wav.reshape(-1, shape[-1]).float()
    window = torch.hann_window(n_fft, device=x.device)
    if x.shape[-1] < n_fft:
        x = F.pad(x, (0, n_fft - x.shape[-1]))
    power = (
        torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="constant", return_complex=True)
        .abs()
        .pow(2)
    )
    chroma = _chroma_filter(sample_rate, n_fft).to(x.device) @ power
    return chroma.reshape(*shape[:-1], 12, chroma.shape[-1])


def chromagram(
    wav: torch.Tensor, sample_rate: int, *, n_fft: int = 4096, hop_length: int = 640
) -> torch.Tensor:
    """Frame-wise pitch-class energy of ``[..., T]`` audio -> ``[..., 12, frames]``, each frame
    L2-normalised: ``librosa.feature.chroma_stft(norm=2, tuning=0)`` computed batched in torch."""
    chroma = power_chromagram(wav, sample_rate, n_fft=n_fft, hop_length=hop_length)
    return F.normalize(chroma, dim=-2, eps=1e-8)


UNPITCHED = 12  # the pitch-class id of a quiet frame (0-11: C .. B)
PITCH_CLASS_IDS = 13
PITCH_CLASS_RATE = 16000  # the sample rate they are computed at, in training and generation alike


def pitch_classes(
    wav: torch.Tensor, sample_rate: int, *, frame_rate: float = 25.0, silence_db: float = 40.0
) -> torch.Tensor:
    """``[B, T]`` audio -> ``[B, F]`` the dominant pitch class of each frame at ``frame_rate``
    (F = T * frame_rate / sample_rate, rounded), :data:`UNPITCHED` where a frame is more than
    ``silence_db`` below the loudest of its clip: a melody as the LMs read it (``melody_chroma``)."""
    hop = sample_rate / frame_rate
    if abs(hop - round(hop)) > 1e-6:
        raise ValueError(f"{sample_rate} Hz audio has no whole number of samples per {frame_rate} Hz frame")
    chroma = power_chromagram(wav, sample_rate, hop_length=round(hop))  # centred: one frame more
    chroma = chroma[..., : max(1, round(wav.shape[-1] / hop))]
    energy = chroma.sum(-2)
    quiet = (energy <= energy.amax(-1, keepdim=True) * 10 ** (-silence_db / 10)) | (energy <= 1e-10)
    return chroma.argmax(-2).masked_fill(quiet, UNPITCHED)


def chroma_cosine_similarity(
    reference: torch.Tensor, generated: torch.Tensor, sample_rate: int, **kwargs
) -> torch.Tensor:
    """Mean frame-wise cosine between the chromagrams of two ``[..., T]`` signals (cropped to the
    shorter); 1 = same pitch-class content at the same time. Returns ``[...]``."""
    a = chromagram(reference, sample_rate, **kwargs)
    b = chromagram(generated, sample_rate, **kwargs)
    n = min(a.shape[-1], b.shape[-1])
    return (a[..., :n] * b[..., :n]).sum(-2).mean(-1)


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__
