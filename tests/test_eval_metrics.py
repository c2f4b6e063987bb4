import dataclasses
import math

import numpy as np
import pytest
import torch

from musiclm.config import get_preset
from musiclm.errors import AudioError, DataError
from musiclm.eval import (
    EncodecEmbedder,
    HFAudioClassifier,
    LabelClassifier,
    LabelClassifierConfig,
    MertEmbedder,
    MulanEmbedder,
    attribute_accuracy,
    embedding_statistics,
    estimate_key,
    estimate_tempo,
    fad,
    fad_infinity,
    fad_paired_bootstrap,
    frechet_distance,
    kl_divergence,
    kl_per_clip,
    mulan_cycle_consistency,
    normalize_key_name,
    order_accuracy,
    tempo_accuracy,
)
from musiclm.mulan.model import MuLaN
from musiclm.mulan.text import train_wordpiece
from tests._tiny_clap import tiny_clap_model

SR = 16000
PROMPTS = ["a calm piano piece", "music with drums", "a loud rock song"]


def closed_form(mu1, var1, mu2, var2):
    """FAD of Gaussians with commuting covariances, from their eigenvalues."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2)))


# ------------------------------------------------------------------------------------------------ FAD


def test_fad_of_a_set_with_itself_is_zero_and_grows_with_shift():
    x = np.random.default_rng(0).standard_normal((400, 8))
    assert abs(fad(x, x)) < 1e-8
    scores = [fad(x, x + s) for s in (0.25, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(scores, scores[1:]))
    # same covariance: only the mean term is left, D * s^2
    assert scores == pytest.approx([8 * s**2 for s in (0.25, 0.5, 1.0, 2.0)], rel=1e-6)


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = closed_form(mu1, var1, mu2, var2)
    assert frechet_distance(mu1, np.diag(var1), mu2, cov2=np.diag(var2)) == pytest.approx(expected, rel=1e-8)
    # commuting but non-diagonal: the same eigenvalues in a shared rotated basis
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    cov1, cov2 = q @ np.diag(var1) @ q.T, q @ np.diag(var2) @ q.T
    assert frechet_distance(mu1, cov1, mu2, cov2=cov2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, cov1, mu1, cov2=cov1) == pytest.approx(0.0, abs=1e-8)


def test_fad_from_samples_is_close_to_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 0.5]), np.array([1.0, 0.0, -1.5, 0.5])
    var1, var2 = np.array([1.0, 0.5, 2.0, 1.0]), np.array([0.3, 1.5, 2.0, 4.0])
    a = mu1 + rng.standard_normal((20000, 4)) * np.sqrt(var1)
    b = mu2 + rng.standard_normal((20000, 4)) * np.sqrt(var2)
    mu, cov = embedding_statistics(np.array([[0.0], [2.0]]))
    assert mu == pytest.approx([1.0]) and cov.shape == (1, 1) and cov[0, 0] == pytest.approx(2.0)  # unbiased
    mu, cov = embedding_statistics(a)
    assert mu == pytest.approx(mu1, abs=0.05) and np.diag(cov) == pytest.approx(var1, rel=0.05)
    assert fad(a, b) == pytest.approx(closed_form(mu1, var1, mu2, var2), rel=0.05)
    assert fad(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(fad(a, b), rel=1e-3)


def test_fad_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 32)), rng.standard_normal((6, 32)) + 1.0
    score = fad(a, b)
    assert math.isfinite(score) and score > 16  # the mean term alone is about 32


def test_fad_infinity_extrapolates_the_small_sample_bias():
    rng = np.random.default_rng(4)
    ref, gen = rng.standard_normal((4000, 16)), rng.standard_normal((800, 16))
    finite = fad(ref, gen)
    result = fad_infinity(ref, gen, min_n=100, num_points=15, seed=0)
    fad_inf, slope, r2 = result
    assert finite > 0.1  # the bias of 800 samples in 16 dimensions
    assert abs(fad_inf) < 0.05 and fad_inf < finite
    assert slope > 0 and r2 > 0.8
    shifted = fad_infinity(ref, gen + 0.3, min_n=100, seed=0).fad_inf
    assert shifted == pytest.approx(16 * 0.09, rel=0.25)
    assert fad_infinity(ref, gen, min_n=100, seed=0) == result  # deterministic for a seed


def test_paired_bootstrap_tells_a_real_shift_from_the_draw():
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((300, 8))
    near, other_draw = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    draws = fad_paired_bootstrap(ref, [near, other_draw, near + 0.25], resamples=200, seed=0)
    assert draws.shape == (200, 3)
    diff = draws - draws[:, :1]
    assert (diff[:, 2] > 0).all()  # shifted by 0.25 in every dimension: further in every draw
    assert 0.05 < (diff[:, 1] < 0).mean() < 0.95  # another draw of the same distribution: undecided
    same = fad_paired_bootstrap(ref, [near, near], resamples=20, seed=0)
    assert np.array_equal(same[:, 0], same[:, 1])  # the same rows for every system
    assert np.array_equal(fad_paired_bootstrap(ref, [near], resamples=20, seed=0), same[:, :1])
    with pytest.raises(ValueError, match="one 8-d embedding per prompt"):
        fad_paired_bootstrap(ref, [near[:-1]])
    with pytest.raises(ValueError, match="resamples"):
        fad_paired_bootstrap(ref, [near], resamples=0)


def test_fad_errors_are_clear():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        embedding_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        fad(x, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="sizes differ"):
        fad(x, np.zeros((10, 5)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fad(np.zeros(10), x)
    with pytest.raises(ValueError, match="NaN"):
        fad(np.full((3, 4), np.nan), x)
    with pytest.raises(ValueError, match="min_n"):
        fad_infinity(x, x, min_n=10)
    with pytest.raises(ValueError, match="min_n"):
        fad_infinity(x, x, min_n=1)


# ------------------------------------------------------------------------------------------------ KLD


def test_kl_divergence_values():
    p = np.array([[0.5, 0.5], [0.2, 0.8]])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-9)
    q = np.array([[0.9, 0.1], [0.2, 0.8]])
    hand = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_per_clip(p, q) == pytest.approx([hand, 0.0], abs=1e-5)
    assert kl_divergence(p, q) == pytest.approx(hand / 2, abs=1e-5)
    assert kl_divergence(q, p) != pytest.approx(kl_divergence(p, q), abs=1e-3)  # KL is not symmetric
    # a zero probability in the generated clip gives a large but finite value
    assert 5 < kl_divergence([[0.5, 0.5]], [[1.0, 0.0]]) < 20


def test_kl_divergence_multilabel_is_a_mean_of_bernoulli_kls():
    p, q = np.array([[0.8, 0.1]]), np.array([[0.5, 0.1]])
    bern = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert kl_divergence(p, q, multilabel=True) == pytest.approx(bern / 2, abs=1e-5)
    assert kl_divergence(torch.tensor(p), torch.tensor(p), multilabel=True) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(np.ones((2, 3)) / 3, np.ones((2, 4)) / 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kl_divergence([[2.0, -1.0]], [[0.5, 0.5]])


def _sine_or_noise(n, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SR // 2) / SR
    wavs, kind = [], []
    for i in range(n):
        if i % 2 == 0:
            f = 80 + 120 * float(torch.rand(1, generator=g))
            wavs.append(0.5 * torch.sin(2 * math.pi * f * t + 6 * float(torch.rand(1, generator=g))))
            kind.append("sine")
        else:
            wavs.append(0.3 * torch.randn(t.numel(), generator=g))
            kind.append("noise")
    return wavs, kind


def test_label_classifier_learns_separates_and_round_trips(tmp_path):
    config = LabelClassifierConfig(
        labels={"kind": ["sine", "noise"], "tags": ["tonal", "hiss", "loud"]},
        multilabel=["tags"],
        n_mels=32,
        channels=(8, 16),
    )
    model = LabelClassifier(config)
    wavs, kind = _sine_or_noise(16, 0)
    tags = [["tonal"] if k == "sine" else ["hiss"] for k in kind]
    tags[1] = None  # unknown labels are skipped
    history = model.fit(wavs, {"kind": kind, "tags": tags}, epochs=8, batch_size=8, lr=3e-3)
    assert len(history) == 8 and history[-1] < 0.7 * history[0]

    test_wavs, test_kind = _sine_or_noise(8, 1)
    batch = torch.stack(test_wavs)
    assert model.predict(batch)["kind"] == test_kind
    proba = model.predict_proba(batch)
    assert proba["kind"].shape == (8, 2) and proba["tags"].shape == (8, 3)
    assert torch.allclose(proba["kind"].sum(-1), torch.ones(8))
    # the classifier's KL between a clip and itself is 0, between a sine and a noise clip large
    assert kl_divergence(proba["kind"], proba["kind"]) == pytest.approx(0.0, abs=1e-9)
    assert kl_divergence(proba["kind"][0::2], proba["kind"][1::2]) > 0.5

    loaded = LabelClassifier.load(model.save(tmp_path / "clf"))
    again = loaded.predict_proba(batch)
    assert all(torch.allclose(proba[k], again[k], atol=1e-6) for k in proba)
    assert loaded.config == config

    with pytest.raises(DataError, match="unknown label"):
        model.fit(wavs[:2], {"kind": ["sine", "violin"]}, epochs=1)
    with pytest.raises(DataError, match="2 labels for 3 clips"):
        model.fit(wavs[:3], {"kind": ["sine", "noise"]}, epochs=1)
    with pytest.raises(AudioError, match="at least"):
        model.predict_proba(torch.zeros(1, 100))


def test_hf_audio_classifier_with_tiny_ast():
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_mel_bins=16,
        max_length=32,
        patch_size=8,
        frequency_stride=8,
        time_stride=8,
        num_labels=5,
    )
    extractor = ASTFeatureExtractor(num_mel_bins=16, max_length=32)
    model = ASTForAudioClassification(config)
    wav = torch.randn(3, 8000) * 0.1
    tagger = HFAudioClassifier(model, extractor, multilabel=True, batch_size=2)
    p = tagger.predict_proba(wav, 8000)  # resampled to the extractor's 16 kHz
    assert p.shape == (3, 5) and ((p > 0) & (p < 1)).all() and len(tagger.labels) == 5
    assert not torch.allclose(p.sum(-1), torch.ones(3))
    softmax = HFAudioClassifier(model, extractor).predict_proba(wav, 8000)
    assert torch.allclose(softmax.sum(-1), torch.ones(3), atol=1e-5)
    assert kl_divergence(p, p, multilabel=True) == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------------------------------ MCC and embedders


@pytest.fixture(scope="module")
def tiny_mulan():
    torch.manual_seed(0)
    config = dataclasses.replace(
        get_preset("tiny").mulan,
        embed_dim=32,
        n_mels=32,
        patch_frames=10,
        audio_dim=32,
        audio_depth=1,
        audio_heads=2,
        text_vocab_size=200,
        text_dim=32,
        text_depth=1,
        text_heads=2,
        max_text_tokens=16,
        dropout=0.0,
        window_seconds=1.0,
        window_hop_seconds=0.5,
        num_quantizers=2,
        codebook_size=8,
    )
    model = MuLaN(config)
    model.text.set_tokenizer(train_wordpiece(PROMPTS, 200))
    return model.eval()


def test_mulan_cycle_consistency_is_a_paired_cosine(tiny_mulan):
    wavs = torch.randn(3, SR) * 0.1
    mean, per_clip = mulan_cycle_consistency(tiny_mulan, PROMPTS, wavs, sample_rate=SR, batch_size=2)
    assert per_clip.shape == (3,) and np.all(per_clip >= -1) and np.all(per_clip <= 1)
    assert mean == pytest.approx(per_clip.mean())
    with torch.no_grad():
        t, a = tiny_mulan.embed_text(PROMPTS), tiny_mulan.embed_audio(wavs)
    assert per_clip == pytest.approx((t * a).sum(-1).numpy(), abs=1e-5)
    # clips of different lengths and at another sample rate are fine
    clips = [torch.randn(8000) * 0.1, torch.randn(12000) * 0.1, torch.randn(8000) * 0.1]
    _, per_clip = mulan_cycle_consistency(tiny_mulan, PROMPTS, clips, sample_rate=8000)
    assert per_clip.shape == (3,) and np.all(np.abs(per_clip) <= 1)
    with pytest.raises(ValueError, match="3 prompts but 2 clips"):
        mulan_cycle_consistency(tiny_mulan, PROMPTS, wavs[:2], sample_rate=SR)


def test_mulan_embedder_feeds_fad(tiny_mulan):
    embedder = MulanEmbedder(tiny_mulan, batch_size=2)
    emb = embedder.embed(torch.randn(5, 8000) * 0.1, 8000)
    assert emb.shape == (5, 32) and embedder.sample_rate == SR
    clips = [torch.randn(SR) * 0.1 for _ in range(4)] + [torch.randn(SR // 2) * 0.1 for _ in range(3)]
    sets = embedder.embed_clips(clips, SR)
    assert sets.shape == (7, 32)
    assert fad(sets, sets) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(AudioError, match="NaN"):
        embedder.embed(torch.full((1, SR), float("nan")), SR)


def test_hf_embedders_with_tiny_random_models():
    from transformers import EncodecConfig, EncodecModel, HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    encodec = EncodecModel(
        EncodecConfig(
            sampling_rate=8000,
            audio_channels=1,
            num_filters=4,
            hidden_size=16,
            upsampling_ratios=[4, 2],
            num_lstm_layers=1,
            codebook_size=16,
            codebook_dim=16,
        )
    )
    emb = EncodecEmbedder(encodec, batch_size=2).embed(torch.randn(3, SR) * 0.1, SR)
    assert emb.shape == (3, 16) and torch.isfinite(emb).all()

    hubert = HubertModel(
        HubertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16, 16),
            conv_stride=(5, 4),
            conv_kernel=(10, 4),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        )
    )
    wav = torch.randn(2, SR) * 0.1
    last = MertEmbedder(hubert, sample_rate=8000).embed(wav, SR)
    layer = MertEmbedder(
        hubert, feature_extractor=Wav2Vec2FeatureExtractor(sampling_rate=8000, do_normalize=True), layer=1
    ).embed(wav, SR)
    assert last.shape == layer.shape == (2, 32)
    assert not torch.allclose(last, layer)


def test_clap_embedder_and_score_with_a_tiny_random_clap():
    from transformers import (
        ClapFeatureExtractor,
        PreTrainedTokenizerFast,
    )

    from musiclm.eval import ClapEmbedder, clap_score, mulan_cycle_consistency
    from musiclm.modules.hf import Clap

    model = tiny_clap_model()
    extractor = ClapFeatureExtractor(truncation="rand_trunc")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_wordpiece(PROMPTS, 200), pad_token="[PAD]", unk_token="[UNK]"
    )
    wavs = torch.randn(3, SR) * 0.1
    clap = Clap(model, extractor, tokenizer)
    emb = ClapEmbedder(clap).embed(wavs, SR)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    mean, per_clip = clap_score(clap, PROMPTS, wavs, sample_rate=SR, batch_size=2)
    assert per_clip.shape == (3,) and np.all(np.abs(per_clip) <= 1) and mean == pytest.approx(per_clip.mean())
    # one CLAP wrapper: the FAD embedder, the CLAP score and MuLaN-over-CLAP embed a clip alike
    from musiclm.mulan.hf import ClapMuLaN

    text = clap.embed_text(PROMPTS)
    assert np.allclose(per_clip, (text * emb).sum(-1).numpy(), atol=1e-5)
    assert torch.allclose(
        ClapMuLaN.from_model(clap, num_quantizers=1, codebook_size=2).embed_audio(wavs, SR), emb, atol=1e-5
    )
    assert mulan_cycle_consistency(clap, PROMPTS, wavs, sample_rate=SR)[0] == pytest.approx(mean)


# ------------------------------------------------------------------------------------------------ attributes


def click_track(bpm, seconds=8.0, sr=SR, seed=0):
    """Short decaying noise bursts on every beat."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr), np.float32)
    n = int(0.02 * sr)
    burst = rng.standard_normal(n) * np.exp(-np.arange(n) / sr * 300)
    for t in np.arange(0.1, seconds, 60.0 / bpm):
        i = int(round(t * sr))
        m = min(n, out.size - i)
        out[i : i + m] += 0.5 * burst[:m]
    return out


def drum_loop(bpm, seconds=8.0, sr=SR, seed=0):
    """Rock beat: kick on 1 and 3, snare on 2 and 4, closed hi-hat on every eighth note."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr), np.float32)
    t = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
    snare = rng.standard_normal(t.size) * np.exp(-t * 25) * 0.6
    hat = np.diff(rng.standard_normal(t.size), prepend=0) * np.exp(-t * 90) * 0.25
    for step, start in enumerate(np.arange(0.0, seconds, 30.0 / bpm)):
        i = int(start * sr)
        beat, on_beat = (step // 2) % 4, step % 2 == 0
        for sound, hit in (
            (kick, on_beat and beat in (0, 2)),
            (snare, on_beat and beat in (1, 3)),
            (hat, True),
        ):
            if hit:
                m = min(sound.size, out.size - i)
                out[i : i + m] += sound[:m]
    return out / np.abs(out).max() * 0.8


def _same_pulse(found: float, bpm: float) -> bool:
    """Within 2 bpm of the tempo, or of its double or half (the metrical level is a matter of taste
    at the extremes, where librosa's prior around 120 bpm picks the level nearer to it)."""
    return any(abs(found - f * bpm) <= 2 for f in (1, 2, 0.5))


@pytest.mark.parametrize("bpm", [60, 72, 95, 120, 140, 174, 180])
def test_tempo_of_click_tracks(bpm):
    found = estimate_tempo(click_track(bpm), SR)
    assert _same_pulse(found, bpm)
    if 70 <= bpm <= 160:
        assert found == pytest.approx(bpm, abs=2)


@pytest.mark.parametrize("bpm", [60, 87, 110, 128, 150, 174])
def test_tempo_of_drum_loops_is_the_beat_not_the_hihat(bpm):
    found = estimate_tempo(drum_loop(bpm, seed=bpm), SR)
    assert _same_pulse(found, bpm)
    if 70 <= bpm <= 160:
        assert found == pytest.approx(bpm, abs=2)


def test_tempo_other_sample_rates_and_errors():
    assert estimate_tempo(torch.from_numpy(click_track(100, sr=44100)), 44100) == pytest.approx(100, abs=2)
    assert estimate_tempo(click_track(100, sr=22050)[None], 22050) == pytest.approx(100, abs=2)
    with pytest.raises(AudioError, match="too short"):
        estimate_tempo(click_track(120, seconds=1.0), SR)
    with pytest.raises(AudioError, match="no onsets"):
        estimate_tempo(np.zeros(5 * SR, np.float32), SR)
    with pytest.raises(ValueError, match="min_bpm"):
        estimate_tempo(click_track(120), SR, min_bpm=200, max_bpm=100)


def cadence(tonic_midi, minor, seconds=0.8, sr=SR):
    """I-IV-V-I (i-iv-V-i in harmonic minor) of decaying sine triads."""
    third = 3 if minor else 4
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
    t = np.arange(int(seconds * sr)) / sr
    env = np.minimum(1.0, t / 0.02) * np.exp(-t)
    parts = [
        sum(np.sin(2 * np.pi * 440 * 2 ** ((tonic_midi + k - 69) / 12) * t) for k in chord) * env / 3
        for chord in chords
    ]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize(
    "tonic,mode", [("C", "major"), ("D", "major"), ("A", "minor"), ("F#", "minor"), ("Bb", "major")]
)
def test_key_of_cadences(tonic, mode):
    midi = 60 + ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"].index(
        normalize_key_name(tonic)
    )
    name, found_mode, score = estimate_key(cadence(midi, mode == "minor"), SR)
    assert (name, found_mode) == (normalize_key_name(tonic), mode)
    assert 0.5 < score <= 1.0


def test_key_errors_and_names():
    assert normalize_key_name("eb") == "D#" and normalize_key_name("A") == "A"
    with pytest.raises(ValueError, match="unknown note"):
        normalize_key_name("H")
    with pytest.raises(AudioError, match="silent"):
        estimate_key(np.zeros(SR, np.float32), SR)


def test_accuracies():
    assert attribute_accuracy(["C", "D", "E", "F"], ["C", "D", "E", "G"]) == 0.75
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        attribute_accuracy([1, 2, 3], [1, 2])
    pred, true = [120, 124, 60, 250, 100], [120, 120, 120, 125, 130]
    assert tempo_accuracy(pred, true) == pytest.approx(2 / 5)  # 124 is within 4% of 120
    assert tempo_accuracy(pred, true, octave=True) == pytest.approx(4 / 5)  # half and double count
    assert tempo_accuracy(pred, true, tolerance=0.01) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="same length"):
        tempo_accuracy([120], [120, 60])


def test_dynamics_are_scored_as_the_order_of_loudness():
    """Pairs with different labels count, in the labels' order or not (ties half); same-label pairs
    do not; in the eval, clips as loud as their labels say score 1, the same clips reversed 1 pair of 5."""
    from types import SimpleNamespace

    from musiclm.eval.report import _attributes

    labels = ["soft", "medium", "loud", "loud"]
    assert order_accuracy([-30, -20, -10, -12], labels) == 1.0
    assert order_accuracy([-10, -20, -30, -5], labels) == pytest.approx(2 / 5)  # 2 of 5 pairs in order
    assert order_accuracy([-20, -20, -20, -20], labels) == 0.5
    assert order_accuracy([-30, -20, -10, -40], labels) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="not in the order"):
        order_accuracy([1, 2], ["soft", "quiet"])
    with pytest.raises(ValueError, match="no pair"):
        order_accuracy([1, 2], ["loud", "loud"])
    t = torch.arange(2 * SR) / SR
    tone = torch.sin(2 * torch.pi * 440 * t)
    entries = [SimpleNamespace(labels={"dynamics": d}) for d in labels]
    in_order = [tone * g for g in (0.02, 0.1, 0.5, 0.4)]
    assert _attributes(in_order, SR, entries)["dynamics"] == 1.0
    assert _attributes(in_order[::-1], SR, entries)["dynamics"] == pytest.approx(1 / 5)
    silent_soft = [torch.zeros_like(tone), *in_order[1:]]  # silence counts as the quietest
    assert _attributes(silent_soft, SR, entries)["dynamics"] == 1.0
    assert "dynamics" not in _attributes(in_order, SR, [SimpleNamespace(labels={})] * 4)
