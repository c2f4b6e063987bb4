import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.audio import (
    check_waveform,
    chromagram,
    find_audio_files,
    load_audio,
    log_mel_spectrogram,
    resample,
    save_audio,
)
from musiclm.errors import AudioError


def _tone(sr=16000, seconds=1.0, freq=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_load_formats_resample_and_mono(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, _tone(sr=22050, channels=2), 22050)
    wav, sr = load_audio(path, sample_rate=16000)
    assert sr == 16000 and wav.ndim == 1
    assert abs(wav.shape[0] - 16000) <= 2
    assert wav.abs().max() > 0.3


def test_segment_read(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(seconds=2.0), 16000)
    wav, _ = load_audio(path, offset=0.5, duration=0.25)
    assert wav.shape[0] == 4000


def test_resample_tensor_keeps_batch_shape():
    x = torch.randn(3, 2, 24000)
    y = resample(x, 24000, 16000)
    assert y.shape == (3, 2, 16000)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: None, "no such audio file"),
        (lambda p: p.write_bytes(b"not audio at all" * 10), "cannot read audio"),
        (lambda p: sf.write(p, np.zeros((0,), np.float32), 16000), "empty"),
        (lambda p: sf.write(p, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT"), "NaN"),
        (lambda p: sf.write(p, _tone(seconds=0.1), 16000), "at least"),
    ],
)
def test_bad_audio_gives_one_line_error(tmp_path, make, match):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=match) as e:
        load_audio(path, min_seconds=0.5)
    assert "\n" not in str(e.value) and "bad.wav" in str(e.value)


def test_silent_and_too_long(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    load_audio(path)  # silence is allowed by default
    with pytest.raises(AudioError, match="silent"):
        load_audio(path, allow_silent=False)
    with pytest.raises(AudioError, match="longer than"):
        load_audio(path, max_seconds=0.5)


def test_save_is_peak_safe_and_refuses_nan(tmp_path):
    loud = torch.tensor(_tone()) * 4
    out = save_audio(tmp_path / "loud.wav", loud, 16000)
    back, _ = load_audio(out)
    assert back.abs().max() <= 1.0 and back.abs().max() > 0.9
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "nan.wav", torch.full((100,), float("nan")), 16000)


def test_check_waveform_mixes_and_validates():
    x = torch.tensor(_tone(channels=2)).T
    y = check_waveform(x, 16000, 8000)
    assert y.shape == (8000,)
    with pytest.raises(AudioError, match="shape"):
        check_waveform(torch.zeros(1, 1, 10), 16000)


def test_log_mel_shape_and_peak_bin():
    sr, hop = 16000, 320
    wav = torch.tensor(_tone(freq=1000.0))
    mel = log_mel_spectrogram(wav, sr, n_fft=1024, hop_length=hop, n_mels=64)
    assert mel.shape == (64, 16000 // hop + 1)
    low = log_mel_spectrogram(torch.tensor(_tone(freq=200.0)), sr, hop_length=hop, n_mels=64)
    assert mel.mean(-1).argmax() > low.mean(-1).argmax()


def test_find_audio_files(tmp_path):
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "x.flac", _tone(), 16000)
    (tmp_path / "notes.txt").write_text("hi")
    assert [p.name for p in find_audio_files(tmp_path)] == ["x.flac"]
    with pytest.raises(AudioError):
        find_audio_files(tmp_path / "missing")


def test_long_files_stream_through_the_same_resampler(tmp_path):
    from musiclm.audio import STREAM_SECONDS, load_audio, resample_np

    sr = 22050
    seconds = STREAM_SECONDS + 5
    rng = np.random.default_rng(0)
    data = (rng.normal(0, 0.1, (int(seconds * sr), 2))).astype(np.float32)
    sf.write(tmp_path / "long.flac", data, sr)
    wav, out_sr = load_audio(tmp_path / "long.flac", 16000)
    expected = resample_np(data.mean(1)[None], sr, 16000)[0]
    assert out_sr == 16000 and wav.shape[-1] == expected.shape[-1]
    assert np.abs(wav.numpy() - expected).max() < 1e-3


def test_a_truncated_wav_is_refused(tmp_path):
    from musiclm.audio import load_audio
    from musiclm.errors import AudioError

    sf.write(tmp_path / "full.wav", np.zeros(16000, np.float32), 16000)
    raw = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(tmp_path / "cut.wav")


def test_chromagram_is_librosas_chroma_stft():
    import librosa

    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    y = (np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)
    ours = chromagram(torch.from_numpy(np.stack([y, y[::-1].copy()])), 16000, n_fft=2048, hop_length=400)
    for row, wav in zip(ours, (y, y[::-1])):
        ref = librosa.feature.chroma_stft(y=wav, sr=16000, n_fft=2048, hop_length=400, tuning=0.0, norm=2)
        assert np.allclose(row.numpy(), ref, atol=1e-5)
    assert int(ours[0].mean(-1).argmax()) == 9  # A


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "fmin", "fmax"),
    [
        (16000, 1024, 64, 0.0, None),
        (24000, 2048, 128, 0.0, None),
        (16000, 400, 80, 30.0, 7600.0),
        (8000, 256, 40, 0.0, 3000.0),
    ],
)
def test_mel_filterbank_is_librosas_to_the_bit(sample_rate, n_fft, n_mels, fmin, fmax):
    import librosa

    from musiclm.audio import mel_filterbank, mel_frequencies

    ours = mel_filterbank(sample_rate, n_fft, n_mels, fmin=fmin, fmax=fmax).numpy()
    ref = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm="slaney"
    )
    assert ours.dtype == ref.dtype and np.array_equal(ours, ref)
    centres = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax or sample_rate / 2, htk=True)[1:-1]
    assert np.array_equal(mel_frequencies(n_mels, sample_rate, fmin, fmax=fmax), centres)


def test_mel_bands_too_narrow_for_the_fft_warn():
    from musiclm.audio import mel_filterbank

    with pytest.warns(UserWarning, match="leave some bands empty"):
        mel_filterbank(8000, 64, 80)


def test_filters_first_built_in_inference_mode_still_serve_training():
    """The mel and chroma filters are cached: built first under ``torch.inference_mode`` (a
    tokenizer, an eval), they must not be inference tensors that a later training step cannot use."""
    from musiclm.audio import _chroma_filter, mel_filterbank, power_chromagram

    mel_filterbank.cache_clear()
    _chroma_filter.cache_clear()
    wav = torch.randn(1, 8000) * 0.1
    with torch.inference_mode():
        log_mel_spectrogram(wav, 16000)
        power_chromagram(wav, 16000)
    x = wav.clone().requires_grad_()
    (log_mel_spectrogram(x, 16000).sum() + power_chromagram(x, 16000).sum()).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_atomic_write_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    from musiclm.files import atomic_write

    path = tmp_path / "new" / "codes.safetensors"
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert list((tmp_path / "new").iterdir()) == []  # neither the file nor its temporary
    with atomic_write(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".safetensors" and tmp != path
        tmp.write_text("whole")
    assert path.read_text() == "whole" and [p.name for p in path.parent.iterdir()] == ["codes.safetensors"]
