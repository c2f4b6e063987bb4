"""The loudness a prompt asks for ("gentle and hushed" is quieter than "powerful and loud").

MuLaN's audio tower normalises each clip's spectrogram, so nothing the LMs read carries a clip's
level: a prompt's dynamics reach them as nothing, and generated clips come out in no order of
loudness (benchmarks/README.md, "Dynamics"). This head reads the level from the prompt instead, and
the pipeline sets each generated clip to it. A departure from the paper, which has no such head.

How: a caption says its dynamics in one of its sentences ("It is quiet."), so the prompt is split
into sentences and each is encoded by the frozen all-MiniLM-L6-v2 (mean-pooled, unit length). Each
sentence is matched softly to the training captions' sentences (a softmax over cosine similarities
at a low temperature) and the prompt's loudness is a fitted bias plus, per sentence, the matched
sentences' fitted contributions (kernel ridge regression, :mod:`musiclm.mulan.loudness_train`). A
sentence in words the captions never used lands on its nearest known sentences ("It is gentle and
hushed." on "It is quiet." and "It is softly played."). On held-out clips and wordings this ordered
clips by their dynamics labels far better than a linear map of MiniLM features, of the whole
caption or of its sentences (benchmarks/README.md).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.checkpoint import register_model
from musiclm.config import LoudnessConfig
from musiclm.errors import CheckpointError

SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
ENCODE_BATCH = 256  # sentences through the encoder at once


def sentences(prompt: str) -> list[str]:
    """The prompt's sentences (the whole prompt when it has one or none)."""
    return [s for s in (part.strip() for part in SENTENCE_END.split(prompt)) if s] or [prompt.strip()]


def sentence_counts(prompts: list[str]) -> tuple[torch.Tensor, list[str]]:
    """``([P, U] counts, U unique sentences)``: how often each prompt has each sentence, so that each
    sentence is encoded once however many prompts share it."""
    split = [sentences(p) for p in prompts]
    unique = sorted({s for parts in split for s in parts})
    index = {s: i for i, s in enumerate(unique)}
    rows = torch.tensor([row for row, parts in enumerate(split) for _ in parts])
    cols = torch.tensor([index[s] for parts in split for s in parts])
    counts = torch.zeros(len(split), len(unique))
    counts.index_put_((rows, cols), torch.ones(len(cols)), accumulate=True)
    return counts, unique


def soft_match(encoded: torch.Tensor, anchors: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[U, anchors]``: each unit-length encoding's softmax over its cosines to the anchors."""
    return torch.softmax(encoded @ anchors.T / temperature, dim=-1)


@register_model("loudness")
class PromptLoudness(nn.Module):
    """``prompts -> [P]`` integrated loudness (LUFS) of the music they describe."""

    int8_rows = ("anchors",)  # unit-length sentence encodings: compact bundles keep them in 8 bits

    def __init__(self, config: LoudnessConfig):
        super().__init__()
        self.config = config
        # unit-length encodings of the training captions' sentences, and each one's contribution
        self.anchors = nn.Parameter(torch.zeros(config.anchors, config.hidden_size), requires_grad=False)
        self.weight = nn.Parameter(torch.zeros(config.anchors), requires_grad=False)
        self.bias = nn.Parameter(torch.tensor(float(config.reference_lufs)), requires_grad=False)
        # (encoder, tokenizer): not a submodule, so checkpoints never hold it and MuLaN's MiniLM can
        # be shared (use_text_encoder); loaded from its package on first use otherwise
        self._text: tuple[nn.Module, object] | None = None

    def use_text_encoder(self, encoder: nn.Module, tokenizer) -> None:
        """Read features with an already loaded all-MiniLM-L6-v2 (MuLaN's) instead of a second copy."""
        if encoder.config.hidden_size != self.config.hidden_size:
            raise CheckpointError(
                f"the loudness head reads {self.config.hidden_size}-wide features, the encoder gives "
                f"{encoder.config.hidden_size}"
            )
        self._text = (encoder, tokenizer)

    def _encoder(self) -> tuple[nn.Module, object]:
        if self._text is None:
            from musiclm.mulan.minilm import load_minilm

            encoder, tokenizer = load_minilm()
            self.use_text_encoder(encoder.eval().requires_grad_(False).to(self.weight.device), tokenizer)
        return self._text

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit-length mean-pooled encoder states of each text: ``[N, hidden_size]``."""
        from musiclm.mulan.minilm import mean_pooled

        encoder, tokenizer = self._encoder()
        out = []
        for start in range(0, len(texts), ENCODE_BATCH):
            chunk = texts[start : start + ENCODE_BATCH]
            pooled, _ = mean_pooled(encoder, tokenizer, chunk, max_length=self.config.max_text_tokens)
            out.append(F.normalize(pooled.float(), dim=-1))
        return torch.cat(out).to(self.weight.device)

    @torch.no_grad()
    def features(self, prompts: list[str]) -> torch.Tensor:
        """``[P, anchors]``: per prompt, the sum over its sentences of their soft match to the anchors."""
        counts, unique = sentence_counts(prompts)
        match = soft_match(self.encode(unique), self.anchors.float(), self.config.temperature)
        return counts.to(match.device) @ match

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        lufs = self.features(prompts) @ self.weight.float() + self.bias.float()
        return lufs.clamp(self.config.min_lufs, self.config.max_lufs)
