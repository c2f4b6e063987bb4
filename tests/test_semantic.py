import pytest
import torch

from musiclm.checkpoint import load_model, save_model
from musiclm.config import SemanticConfig, get_preset
from musiclm.data.procedural import ProceduralMusic
from musiclm.errors import AudioError, CheckpointError
from musiclm.semantic.kmeans import assign, fit_kmeans
from musiclm.semantic.ssl_model import span_mask
from musiclm.semantic.tokenizer import SemanticTokenizer
from musiclm.semantic.train import MaskedPredictionTask, fit_targets, fit_tokens
from musiclm.train import TrainConfig, Trainer

SR = 16000


def tiny_config(**kw):
    base = dict(
        dim=64,
        depth=2,
        heads=4,
        n_mels=32,
        layer=2,
        num_clusters=16,
        num_target_clusters=12,
        dropout=0.0,
        mask_prob=0.15,
        mask_span=3,
    )
    base.update(kw)
    return SemanticConfig(**base)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_token_rate_and_shape(preset):
    cfg = get_preset(preset).semantic
    assert cfg.frame_rate == 25
    if preset == "paper":
        cfg.dim, cfg.depth, cfg.heads = 32, 8, 4  # paper rates, small widths
    tok = SemanticTokenizer(cfg)
    ids = tok.encode(torch.randn(3, SR + 100) * 0.1)
    assert ids.shape == (3, 26) and ids.dtype == torch.long  # ceil(16100 / 640)
    assert ids.min() >= 0 and ids.max() < cfg.num_clusters


def test_span_mask_covers_spans():
    m = span_mask(4, 200, 0.1, span=5, generator=torch.Generator().manual_seed(0))
    assert 0.2 < m.float().mean() < 0.6
    assert span_mask(1, 10, 0.0, span=5).sum() == 0


def test_kmeans_fit_assign_round_trip():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 8, generator=g) * 10
    x = centers.repeat_interleave(40, 0) + 0.1 * torch.randn(200, 8, generator=g)
    c = fit_kmeans(x, 5)
    ids = assign(x, c)
    assert len(ids.unique()) == 5
    assert torch.equal(assign(c, c), torch.arange(5))
    assert all(len(ids[i * 40 : (i + 1) * 40].unique()) == 1 for i in range(5))


def test_masked_prediction_learns_and_tokenizer_round_trips(tmp_path):
    torch.manual_seed(0)
    clips = ProceduralMusic(48, SR, 2.0, seed=3)
    data = [clips[i] for i in range(len(clips))]  # rendered once: each epoch draws the same clips
    tok = SemanticTokenizer(tiny_config())
    task = MaskedPredictionTask(tok, fit_targets(data, tok, clips=24))
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        max_steps=120,
        batch_size=8,
        lr=2e-3,
        warmup_steps=10,
        progress=False,
        checkpoint_every=1000,
        log_every=20,
        ema_decay=None,
    )
    Trainer(task, data, cfg).fit()
    log = [__import__("json").loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss/main"] < 0.8 * log[0]["loss/main"], (log[0], log[-1])
    fit_tokens(data, tok, clips=24)
    wav = torch.stack([data[i]["wav"] for i in range(2)])
    ids = tok.encode(wav)
    assert torch.equal(ids, tok.encode(wav))  # deterministic
    assert len(ids.unique()) > 4
    save_model(tok, tmp_path / "semantic")
    again = load_model(tmp_path / "semantic", kind="semantic")
    assert torch.equal(again.encode(wav), ids)
    assert again.encode(wav[:, :12345]).shape == (2, 20)


def test_bad_audio():
    tok = SemanticTokenizer(tiny_config())
    with pytest.raises(AudioError, match="NaN"):
        tok.encode(torch.full((1, 1600), float("nan")))
    with pytest.raises(AudioError, match="non-empty"):
        tok.encode(torch.zeros(1, 0))
    assert tok.encode(torch.randn(1, 32000) * 0.1, sample_rate=32000).shape == (1, 25)


def test_hubert_adapter_offline(tmp_path):
    from transformers import HubertConfig, HubertModel

    from musiclm.checkpoint import component_kinds, load_model, save_model
    from musiclm.semantic.hf import HFSemanticTokenizer

    cfg = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 64),
        conv_kernel=(10, 64),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    tok = HFSemanticTokenizer.from_model(HubertModel(cfg), layer=1, num_clusters=8)
    clips = [torch.randn(SR) * 0.1 for _ in range(4)]
    with pytest.raises(CheckpointError, match="not fitted"):
        tok.encode(torch.stack(clips[:2]))
    tok.fit(clips)
    ids = tok.encode(torch.stack(clips[:2]))
    assert ids.shape == (2, 25) and ids.max() < 8 and len(ids.unique()) > 1
    save_model(tok, tmp_path / "hubert")
    again = load_model(tmp_path / "hubert", kind=component_kinds("semantic"))
    assert again.num_clusters == 8 and torch.equal(again.encode(torch.stack(clips[:2])), ids)


def test_the_best_export_gets_its_kmeans_too(tmp_path):
    """best/ is written while training, before the k-means: the recipe must not find it unfitted."""
    from musiclm.semantic.train import train_semantic

    torch.manual_seed(0)
    data, valid = ProceduralMusic(16, SR, 1.0, seed=3), ProceduralMusic(4, SR, 1.0, seed=4)
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=6, batch_size=4, progress=False, validate_every=3,
                      checkpoint_every=1000, log_every=3, ema_decay=None)  # fmt: skip
    train_semantic(data, SemanticTokenizer(tiny_config()), cfg, kmeans_clips=8, valid=valid)
    best = load_model(tmp_path / "best", kind="semantic")
    wav = torch.stack([data[i]["wav"] for i in range(4)])
    assert len(best.encode(wav).unique()) > 4
    assert (tmp_path / "best" / "validation.json").is_file()
