import pytest
import torch

from musiclm.audio import chroma_cosine_similarity, chromagram
from musiclm.checkpoint import load_model, save_model
from musiclm.config import MelodyConfig
from musiclm.data.melody_pairs import SynthMelodyPairs
from musiclm.melody.model import MelodyEmbedder, fit_quantizer
from musiclm.melody.train import MelodyTask, embed_dataset
from musiclm.train import TrainConfig, Trainer

SR = 8000


def tiny_config(**kw):
    base = dict(
        sample_rate=SR,
        n_fft=512,
        hop_length=160,
        n_mels=48,
        patch_frames=4,
        dim=64,
        depth=2,
        heads=4,
        dropout=0.0,
        embed_dim=32,
        window_seconds=2.0,
        hop_seconds=1.5,
        num_quantizers=4,
        codebook_size=32,
    )
    base.update(kw)
    return MelodyConfig(**base)


def test_windows_and_token_shapes():
    model = MelodyEmbedder(tiny_config()).eval()
    wav = torch.randn(2, int(5.2 * SR)) * 0.1
    assert model.num_windows(wav.shape[-1]) == 4  # 2 s windows at 1.5 s hop over 5.2 s
    emb = model.embed(wav)
    assert emb.shape == (2, 4, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2, 4), atol=1e-5)
    tokens = model.tokens(wav)
    assert tokens.shape == (2, 4, 4) and tokens.dtype == torch.long
    assert 0 <= tokens.min() and tokens.max() < 32
    assert model.embed(torch.randn(1, 100)).shape == (1, 1, 32)  # shorter than a window: padded


def test_pairs_share_melody_not_timbre():
    pairs = SynthMelodyPairs(4, SR, 2.0, seed=3)
    a, b = pairs[0]["anchor"], pairs[0]["positive"]
    other = pairs[1]["positive"]
    assert not torch.allclose(a, b)
    assert torch.equal(a, SynthMelodyPairs(4, SR, 2.0, seed=3)[0]["anchor"])  # deterministic
    same = chroma_cosine_similarity(a, b, SR, n_fft=2048, hop_length=400)
    different = chroma_cosine_similarity(a, other, SR, n_fft=2048, hop_length=400)
    assert same > different + 0.1


def test_chromagram_finds_the_pitch_class():
    t = torch.arange(SR) / SR
    a4 = torch.sin(2 * torch.pi * 440 * t)
    chroma = chromagram(a4, SR, n_fft=2048, hop_length=400)
    assert chroma.shape[0] == 12 and chroma.mean(-1).argmax() == 9  # A


def test_contrastive_training_learns_timbre_invariance(tmp_path):
    torch.manual_seed(0)
    model = MelodyEmbedder(tiny_config())
    pairs = SynthMelodyPairs(256, SR, 2.0, seed=0)
    train = [pairs[i] for i in range(len(pairs))]  # rendered once: each epoch draws the same pairs
    held = SynthMelodyPairs(32, SR, 2.0, seed=99)

    def held_out_accuracy():
        model.eval()
        with torch.no_grad():
            a = model.embed_windows(torch.stack([held[i]["anchor"] for i in range(len(held))]))
            p = model.embed_windows(torch.stack([held[i]["positive"] for i in range(len(held))]))
        return ((a @ p.T).argmax(1) == torch.arange(len(held))).float().mean().item()

    before = held_out_accuracy()
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        max_steps=120,
        batch_size=32,
        lr=1e-3,
        warmup_steps=10,
        ema_decay=None,
        progress=False,
        checkpoint_every=1000,
        log_every=20,
    )
    Trainer(MelodyTask(model), train, cfg).fit()
    after = held_out_accuracy()
    assert after > max(3 / 32, before + 0.15), (before, after)  # chance is 1/32

    error_before = embed_dataset(model, held).pow(2).sum(-1).mean()
    error = fit_quantizer(model, embed_dataset(model, held), epochs=5)
    assert error < 0.5 * error_before
    save_model(model, tmp_path / "melody")
    again = load_model(tmp_path / "melody")
    wav = held[0]["anchor"][None]
    assert torch.equal(model.eval().tokens(wav), again.tokens(wav))


def test_resamples_other_rates():
    model = MelodyEmbedder(tiny_config()).eval()
    assert model.embed(torch.randn(1, 3 * 16000) * 0.1, sample_rate=16000).shape == (1, 2, 32)
    with pytest.raises(Exception, match="NaN"):
        model.embed(torch.full((1, 16000), float("nan")), sample_rate=16000)
