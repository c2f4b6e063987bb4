import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from musiclm.checkpoint import load_model, save_model
from musiclm.config import MulanConfig
from musiclm.data.procedural import render_piece
from musiclm.errors import PromptError
from musiclm.mulan.model import MuLaN
from musiclm.mulan.text import train_wordpiece
from musiclm.mulan.train import ContrastiveTask, audio_embeddings
from musiclm.train import TrainConfig, Trainer
from tests._tiny_clap import tiny_clap_model

SR = 16000
PROMPTS = ["music with drums", "music without drums"]


class DrumsOrNot(Dataset):
    """Procedural clips captioned by whether drums play (ground truth from the renderer)."""

    def __init__(self, n, seed):
        self.items = []
        for i in range(n):
            wav, labels = render_piece([seed, i], SR, 2.0)
            self.items.append({"wav": torch.from_numpy(wav), "caption": PROMPTS[0 if labels["drums"] else 1]})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def tiny_config(**kw):
    base = dict(
        embed_dim=32,
        n_mels=32,
        patch_frames=10,
        audio_dim=48,
        audio_depth=2,
        audio_heads=4,
        text_vocab_size=200,
        text_dim=48,
        text_depth=1,
        text_heads=4,
        max_text_tokens=16,
        dropout=0.0,
        window_seconds=2.0,
        window_hop_seconds=1.0,
        num_quantizers=4,
        codebook_size=16,
    )
    base.update(kw)
    return MulanConfig(**base)


def make_model(captions=PROMPTS + ["a calm piano piece", "a loud rock song"]):
    model = MuLaN(tiny_config())
    model.text.set_tokenizer(train_wordpiece(captions, 200))
    return model


def test_shapes_normalisation_and_windows():
    model = make_model().eval()
    a = model.embed_audio(torch.randn(3, int(4.5 * SR)) * 0.1)  # 4 windows of 2 s at 1 s hop, averaged
    t = model.embed_text(["a calm piano piece", "a loud rock song"])
    assert a.shape == (3, 32) and t.shape == (2, 32)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert model.similarity(t, a).shape == (2, 3)
    assert model.audio_windows(torch.zeros(1, int(4.5 * SR))).shape == (1, 4, 2 * SR)


def test_window_groups_give_the_mean_of_all_windows(monkeypatch):
    import torch.nn.functional as F

    import musiclm.mulan.model as mulan_model

    model = make_model().eval()
    wav = torch.randn(2, int(9.5 * SR)) * 0.1
    windows = model.audio_windows(wav)
    with torch.no_grad():
        each = F.normalize(model.audio(windows.reshape(-1, windows.shape[-1])), dim=-1)
        expected = F.normalize(each.reshape(2, -1, each.shape[-1]).mean(1), dim=-1)
    monkeypatch.setattr(mulan_model, "WINDOW_BATCH", 3)  # 9 windows per clip: groups of 3
    assert torch.allclose(model.embed_audio(wav), expected, atol=1e-5)
    short = torch.randn(7, SR) * 0.1  # one window per clip: clips grouped
    with torch.no_grad():
        expected_short = F.normalize(model.audio(short), dim=-1)
    assert torch.allclose(model.embed_audio(short), expected_short, atol=1e-5)


def test_bad_prompts():
    model = make_model()
    for bad, match in [([""], "empty"), (["  "], "empty"), ([3], "not a string"), ([], "non-empty")]:
        with pytest.raises(PromptError, match=match):
            model.embed_text(bad)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model.embed_text(["piano " * 40])
    assert any("truncated" in str(x.message) for x in w)


def test_training_separates_captions_and_tokens_share_a_codebook(tmp_path):
    torch.manual_seed(0)
    train, held = DrumsOrNot(96, seed=1), DrumsOrNot(32, seed=2)
    model = make_model()

    def zero_shot():
        model.eval()
        with torch.no_grad():
            a = audio_embeddings(model, held, len(held))
            pred = (model.embed_text(PROMPTS) @ a.T).argmax(0)
        truth = torch.tensor([PROMPTS.index(x["caption"]) for x in held.items])
        return (pred == truth).float().mean().item()

    before = zero_shot()
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        max_steps=150,
        batch_size=16,
        lr=1e-3,
        warmup_steps=10,
        progress=False,
        checkpoint_every=1000,
        log_every=25,
        ema_decay=None,
    )
    Trainer(ContrastiveTask(model), train, cfg).fit()
    log = [__import__("json").loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss/main"] < log[0]["loss/main"]
    after = zero_shot()
    majority = max(sum(x["caption"] == p for x in held.items) for p in PROMPTS) / len(held)
    assert after >= max(0.8, majority + 0.1), (before, after, majority)

    emb = audio_embeddings(model, train, len(train))
    error = model.quantizer.fit(emb, epochs=10)
    assert error < 0.5 * emb.pow(2).sum(-1).mean()
    a_tok = model.tokens_from_audio(torch.stack([held[i]["wav"] for i in range(4)]))
    t_tok = model.tokens_from_text(PROMPTS)
    assert a_tok.shape == (4, 4) and t_tok.shape == (2, 4)
    assert a_tok.max() < 16 and t_tok.max() < 16
    # text tokens come from the codebooks fitted on audio embeddings and still tell the prompts apart
    with torch.no_grad():
        recon = torch.nn.functional.normalize(model.quantizer.decode(t_tok[..., None])[..., 0], dim=-1)
        sim = recon @ model.embed_text(PROMPTS).T
    assert sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0], sim

    save_model(model, tmp_path / "mulan")
    again = load_model(tmp_path / "mulan", kind="mulan")
    assert torch.equal(again.tokens_from_text(PROMPTS), t_tok)
    assert torch.allclose(
        again.embed_audio(held[0]["wav"][None]), model.embed_audio(held[0]["wav"][None]), atol=1e-6
    )


def small_random_bert():
    """A stand-in for the packaged MiniLM: a one-layer BERT with a fixed initialisation."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from musiclm.mulan.minilm import BertConfig, BertEncoder, WordPieceTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "calm", "piano", "loud", "rock", "music"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    return BertEncoder(config), WordPieceTokenizer(tok)


def test_pretrained_text_tower_with_a_small_random_bert():
    from musiclm.mulan.text import PretrainedTextTower

    bert, tok = small_random_bert()
    tower = PretrainedTextTower(tiny_config(text_tower="minilm"), bert, tok)
    out = tower(["calm piano", "loud rock music"])
    assert out.shape == (2, 32)
    assert all(not p.requires_grad for p in tower.encoder.parameters())


def test_checkpoints_leave_the_packaged_text_encoder_out(tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setattr("musiclm.mulan.text.load_minilm", small_random_bert)
    model = MuLaN(tiny_config(text_tower="minilm")).eval()
    save_model(model, tmp_path / "mulan")
    with safe_open(str(tmp_path / "mulan" / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert stored and not any(k.startswith("text.encoder.") for k in stored)
    assert "text.proj.0.weight" in stored  # the trained projection is kept
    loaded = load_model(tmp_path / "mulan")
    prompts = ["calm piano", "loud rock music"]
    assert torch.equal(loaded.embed_text(prompts), model.embed_text(prompts))


def test_the_conditioning_rvq_loads_alone_without_building_the_text_tower(tmp_path, monkeypatch):
    from musiclm.checkpoint import component_kinds, load_tensors
    from musiclm.errors import CheckpointError
    from musiclm.modules.quantization import ResidualVectorQuantizer

    monkeypatch.setattr("musiclm.mulan.text.load_minilm", small_random_bert)
    model = MuLaN(tiny_config(text_tower="minilm")).eval()
    model.quantizer.fit(
        torch.nn.functional.normalize(torch.randn(64, model.config.embed_dim), dim=-1), epochs=3
    )
    save_model(model, tmp_path / "mulan")

    def no_text_model():
        raise AssertionError("the text tower was built")

    monkeypatch.setattr("musiclm.mulan.text.load_minilm", no_text_model)
    state = load_tensors(tmp_path / "mulan", component_kinds("mulan"), "quantizer.")
    quantizer = ResidualVectorQuantizer.from_state_dict(state).eval()
    x = torch.randn(5, model.config.embed_dim, 3)
    assert torch.equal(quantizer.encode(x), model.quantizer.encode(x))
    other = tmp_path / "lm"
    other.mkdir()
    (other / "config.json").write_text('{"kind": "coarse_lm", "format_version": 1, "config": {}}')
    with pytest.raises(CheckpointError, match="holds a 'coarse_lm' model"):
        load_tensors(other, component_kinds("mulan"), "quantizer.")


def test_clap_adapter_offline(tmp_path):
    from transformers import (
        ClapFeatureExtractor,
        PreTrainedTokenizerFast,
    )

    from musiclm.modules.hf import Clap
    from musiclm.mulan.hf import ClapMuLaN

    model = tiny_clap_model()
    words = train_wordpiece(PROMPTS + ["a calm piano piece"], 200)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]")
    clap = ClapMuLaN.from_model(
        Clap(model, ClapFeatureExtractor(truncation="rand_trunc"), tokenizer),
        num_quantizers=2,
        codebook_size=4,
    )
    clips = [torch.randn(SR) * 0.1 for _ in range(6)]
    a = clap.embed_audio(torch.stack(clips[:2]), sample_rate=SR)  # resampled to CLAP's 48 kHz
    t = clap.embed_text(["a calm piano piece", "music with drums"])
    assert a.shape == (2, 16) and t.shape == (2, 16)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert clap.similarity(t, a).shape == (2, 2)
    clap.fit_quantizer(clips, SR)
    assert clap.tokens_from_text(["music with drums"]).shape == (1, 2)
    assert clap.tokens_from_audio(clips[0][None], SR).max() < 4
    # a checkpoint (weights, RVQ and tokenizer) that can serve as a bundle's MuLaN
    from musiclm.checkpoint import component_kinds, load_model, save_model

    save_model(clap, tmp_path / "clap")
    again = load_model(tmp_path / "clap", kind=component_kinds("mulan"))
    assert torch.equal(
        again.tokens_from_text(["music with drums"]), clap.tokens_from_text(["music with drums"])
    )
    assert torch.allclose(
        again.embed_audio(clips[0][None], SR), clap.embed_audio(clips[0][None], SR), atol=1e-6
    )
    from musiclm.checkpoint import load_tensors
    from musiclm.modules.quantization import ResidualVectorQuantizer

    rvq = ResidualVectorQuantizer.from_state_dict(load_tensors(tmp_path / "clap", ("hf_clap",), "quantizer."))
    assert torch.equal(rvq.eval().encode(t[..., None]), clap.quantizer.encode(t[..., None]))
    with pytest.raises(PromptError):
        clap.embed_text([""])


def test_retrieval_report_ranks_each_caption_against_every_clip(tmp_path):
    import soundfile as sf

    from musiclm.data.manifest import ManifestEntry, write_manifest
    from musiclm.mulan.report import report_text, retrieval_report

    n, sr = 12, 16000
    entries = []
    for i in range(n):
        path = tmp_path / f"{i}.wav"
        sf.write(path, 0.3 * np.sin(2 * np.pi * 200 * (i + 1) * np.arange(sr) / sr).astype(np.float32), sr)
        entries.append(ManifestEntry(str(path), f"tone {i}"))
    data = str(write_manifest(tmp_path / "valid.jsonl", entries))

    grad_seen = []

    class Ideal:  # knows which tone a clip is and which a caption names
        sample_rate = sr

        def eval(self):
            return self

        def embed_audio(self, wav):
            grad_seen.append(torch.is_grad_enabled())
            i = int(torch.fft.rfft(wav[0]).abs().argmax()) // 200 - 1
            return torch.nn.functional.one_hot(torch.tensor([i]), n).float()

        def embed_text(self, texts):
            return torch.nn.functional.one_hot(torch.tensor([int(t.split()[1]) for t in texts]), n).float()

    class Deaf(Ideal):  # the same embedding for every clip
        def embed_audio(self, wav):
            return torch.ones(1, n) / n**0.5

    good = retrieval_report(Ideal(), data, examples=2)
    assert grad_seen and not any(grad_seen)  # embeddings under no_grad: no autograd graph is kept
    assert good["text_to_audio_r@1"] == good["audio_to_text_r@1"] == 1.0
    assert good["examples"][1]["nearest"][0] == "tone 1" and "R@1 1.000" in report_text(good)
    bad = retrieval_report(Deaf(), data)
    assert bad["text_to_audio_r@1"] == 0.0 and bad["text_to_audio_r@10"] == 0.0  # ties count against it


def test_zero_shot_accuracy_per_factor_in_both_wordings(tmp_path):
    import soundfile as sf

    from musiclm.data.manifest import ManifestEntry, write_manifest
    from musiclm.data.synth.factors import factor_prompts
    from musiclm.mulan.report import report_text, retrieval_report

    genres, sr = ["jazz", "rock", "waltz"], 16000
    entries = []
    for i in range(9):
        path = tmp_path / f"{i}.wav"
        sf.write(path, 0.3 * np.sin(2 * np.pi * 200 * (i + 1) * np.arange(sr) / sr).astype(np.float32), sr)
        labels = {"genre": genres[i % 3], "bpm": 80 + 30 * (i % 3), "mode": "major", "drums": i % 2 == 0}
        entries.append(ManifestEntry(str(path), f"tone {i}", labels=labels | {"programs": [0]}))
    data = str(write_manifest(tmp_path / "valid.jsonl", entries))
    known = {p: genres.index(g) for g, p in factor_prompts("train")["genre"].items() if g in genres}

    class GenreOnly:  # hears a clip's genre and understands only the training captions' genre words
        sample_rate = sr

        def eval(self):
            return self

        def embed_audio(self, wav):
            i = int(torch.fft.rfft(wav[0]).abs().argmax()) // 200 - 1
            return torch.nn.functional.one_hot(torch.tensor([i % 3]), 3).float()

        def embed_text(self, texts):
            return torch.stack(
                [torch.eye(3)[known[t]] if t in known else torch.full((3,), 0.5) for t in texts]
            )

    report = retrieval_report(GenreOnly(), data)
    shot = report["zero_shot"]
    assert set(shot) == {"genre", "tempo", "drums"}  # one mode and one lead family: nothing to tell apart
    assert shot["genre"]["train"] == 1.0 and shot["genre"]["heldout"] == pytest.approx(1 / 3)
    assert shot["genre"]["majority"] == pytest.approx(1 / 3) and shot["genre"]["values"] == 3
    assert "zero-shot" in report_text(report) and "genre" in report_text(report)


def test_token_agreement_per_level_and_prefix():
    from musiclm.mulan.report import token_agreement

    audio = torch.tensor([[1, 2, 3], [4, 5, 6]])
    agree = token_agreement(audio, torch.tensor([[1, 2, 0], [4, 0, 6]]))
    assert agree["level"] == [1.0, 0.5, 0.5] and agree["prefix"] == [1.0, 0.5, 0.0]
    assert agree["level_mismatched"] == [0.0, 0.0, 0.0]  # each clip against the other's caption


def test_the_conditioning_rvq_is_fitted_on_several_crops_of_each_clip(tmp_path):
    import soundfile as sf

    from musiclm.data.datasets import AudioCropDataset
    from musiclm.data.manifest import ManifestEntry
    from musiclm.mulan.train import quantizer_vectors
    from tests._tiny_bundle import components

    mulan, sr = components(melody=False)["mulan"], 16000
    entries = []
    for i in range(3):
        t = np.arange(4 * sr) / sr
        sf.write(
            tmp_path / f"{i}.wav",
            (0.3 * np.sin(2 * np.pi * 100 * (i + 1) * t * (1 + t))).astype(np.float32),
            sr,
        )
        entries.append(ManifestEntry(str(tmp_path / f"{i}.wav"), "a sweep"))
    crops = AudioCropDataset(entries, sr, 1.0, seed=0)
    vectors = quantizer_vectors(mulan, crops, clips=2, crops=4)
    assert vectors.shape == (8, mulan.config.embed_dim)  # 4 crops of the first 2 clips
    first_clip = vectors[0::2]  # its 4 crops: different places in the sweep, different embeddings
    assert torch.cdist(first_clip, first_clip).fill_diagonal_(1).min() > 1e-4


def test_report_of_a_real_mulan_has_token_agreement_and_perplexity(tmp_path):
    import soundfile as sf

    from musiclm.data.manifest import ManifestEntry, write_manifest
    from musiclm.mulan.report import report_text, retrieval_report
    from tests._tiny_bundle import PROMPTS, components

    mulan, sr, entries = components(melody=False)["mulan"], 16000, []
    for i, prompt in enumerate(PROMPTS):
        t = np.arange(2 * sr) / sr
        sf.write(tmp_path / f"{i}.wav", (0.3 * np.sin(2 * np.pi * 150 * (i + 1) * t)).astype(np.float32), sr)
        entries.append(ManifestEntry(str(tmp_path / f"{i}.wav"), prompt))
    report = retrieval_report(mulan, str(write_manifest(tmp_path / "v.jsonl", entries)), seconds=2.0)
    q = mulan.config.num_quantizers
    assert len(report["token_agreement"]["level"]) == q and len(report["token_perplexity"]) == q
    assert all(1.0 <= p <= len(PROMPTS) + 1e-4 for p in report["token_perplexity"])
    assert "perplexity per RVQ level" in report_text(report)
