"""The three MusicLM stages and their token layouts (paper 3.2, 4.1, 4.2).

    semantic stage : [cond] SEP [semantic]                       -> semantic tokens   (25 Hz)
    coarse stage   : [cond] SEP [semantic] SEP [coarse, flat]    -> coarse RVQ levels (50 Hz)
    fine stage     : [coarse, flat] SEP [fine, flat]             -> fine RVQ levels

``cond`` is the MuLaN tokens (and, when the model has melody conditioning, the melody tokens
after them). RVQ levels are flattened frame-major (f0q0 f0q1 .. f1q0 ..). Every kind of token has
its own id range in the stage's vocabulary (``TokenLayout``, the one place offsets are defined), each
RVQ level included, so a stage can never emit an id of the wrong level. Window lengths come from
seconds in the config times the token rates.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from musiclm.checkpoint import register_model
from musiclm.config import LMConfig, MusicLMConfig
from musiclm.errors import DataError
from musiclm.lm.sampling import SamplingConfig, guide, sample
from musiclm.lm.transformer import Transformer

PAD, SEP, NULL = 0, 1, 2  # NULL replaces dropped conditioning (classifier-free guidance)
NUM_SPECIALS = 3
Progress = Callable[[int, int], None] | None
CondSource = torch.Tensor | Callable[[float], torch.Tensor]  # ids, or ids for a window starting at t s


class TokenLayout:
    """Disjoint id ranges, one per named token kind, after the special ids."""

    def __init__(self) -> None:
        self.ranges: dict[str, tuple[int, int]] = {}
        self.vocab_size = NUM_SPECIALS

    def add(self, name: str, size: int) -> None:
        self.ranges[name] = (self.vocab_size, self.vocab_size + size)
        self.vocab_size += size

    def offset(self, name: str) -> int:
        return self.ranges[name][0]

    def span(self, name: str) -> tuple[int, int]:
        return self.ranges[name]

    def levels(self, prefix: str, n: int) -> torch.Tensor:
        """Offsets of ``prefix0 .. prefix{n-1}`` as a ``[n]`` tensor."""
        return torch.tensor([self.offset(f"{prefix}{i}") for i in range(n)])


@dataclass
class StageConfig:
    """A stage LM: its transformer plus every number its token layout is built from."""

    stage: str = "semantic"  # "semantic" | "coarse" | "fine"
    lm: LMConfig = field(default_factory=LMConfig)
    mulan_quantizers: int = 12
    mulan_codebook: int = 1024
    melody_quantizers: int = 0  # 0 = no melody conditioning
    melody_codebook: int = 0
    melody_window_seconds: float = 4.0  # one melody embedding per window (paper: 4 s at a 3 s hop)
    melody_hop_seconds: float = 3.0
    melody_drop_prob: float = 0.5  # melody tokens alone -> NULL in training, so text-only prompts work
    semantic_clusters: int = 256
    semantic_rate: float = 25.0
    codec_levels: int = 8
    codec_codebook: int = 1024
    coarse_levels: int = 3
    frame_rate: float = 50.0

    @classmethod
    def from_musiclm(cls, stage: str, config: MusicLMConfig, melody: bool = False) -> StageConfig:
        lm = {"semantic": config.semantic_lm, "coarse": config.coarse_lm, "fine": config.fine_lm}[stage]
        return cls(
            stage=stage,
            lm=lm,
            mulan_quantizers=config.mulan.num_quantizers,
            mulan_codebook=config.mulan.codebook_size,
            melody_quantizers=config.melody.num_quantizers if melody and stage != "fine" else 0,
            melody_codebook=config.melody.codebook_size if melody and stage != "fine" else 0,
            melody_window_seconds=config.melody.window_seconds,
            melody_hop_seconds=config.melody.hop_seconds,
            semantic_clusters=config.semantic.num_clusters,
            semantic_rate=config.semantic.frame_rate,
            codec_levels=config.codec.num_quantizers,
            codec_codebook=config.codec.codebook_size,
            coarse_levels=config.codec.num_coarse_quantizers,
            frame_rate=config.codec.frame_rate,
        )

    @property
    def fine_levels(self) -> int:
        return self.codec_levels - self.coarse_levels


class StageLM(nn.Module):
    """Shared machinery: layout, training examples, loss, and KV-cached batched generation."""

    stage = ""

    def __init__(self, config: StageConfig):
        super().__init__()
        if config.stage != self.stage:
            raise ValueError(
                f"{type(self).__name__} needs a {self.stage!r} StageConfig, got {config.stage!r}"
            )
        if abs(config.frame_rate - 2 * config.semantic_rate) > 1e-6:
            raise ValueError("the codec frame rate must be twice the semantic token rate")
        self.config = config
        self.layout = TokenLayout()
        self.build_layout(self.layout)
        self.transformer = Transformer(config.lm, self.layout.vocab_size)

    # ---------------------------------------------------------------- layout helpers

    def build_layout(self, layout: TokenLayout) -> None:
        c = self.config
        for i in range(c.mulan_quantizers):
            layout.add(f"mulan{i}", c.mulan_codebook)
        for i in range(c.melody_quantizers):
            layout.add(f"melody{i}", c.melody_codebook)

    @property
    def melody_windows(self) -> int:
        """Melody windows that cover one training window of this stage (0 without melody)."""
        c = self.config
        if c.melody_quantizers == 0:
            return 0
        extra = max(0.0, c.lm.window_seconds - c.melody_window_seconds)
        return 1 + math.ceil(extra / c.melody_hop_seconds - 1e-9)

    def melody_at(self, melody_tokens: torch.Tensor, seconds: float) -> torch.Tensor:
        """The ``melody_windows`` windows of ``[..., W_total, Qm]`` tokens from ``seconds`` on (the
        last window repeats past the end), as the prefix of a window starting there sees them."""
        first = round(seconds / self.config.melody_hop_seconds)
        idx = torch.arange(first, first + self.melody_windows).clamp(max=melody_tokens.shape[-2] - 1)
        return melody_tokens[..., idx.to(melody_tokens.device), :]

    def cond_ids(self, mulan_tokens: torch.Tensor, melody_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Raw MuLaN ``[B, Mq]`` (+ melody ``[B, W, Qm]``, W = :attr:`melody_windows`) tokens -> offset
        ids ``[B, Mq (+ W*Qm)]``. A melody-conditioned stage given no melody gets NULL melody ids."""
        c = self.config
        if mulan_tokens.shape[-1] != c.mulan_quantizers:
            raise ValueError(f"expected {c.mulan_quantizers} MuLaN tokens, got {mulan_tokens.shape[-1]}")
        ids = mulan_tokens.long() + self.layout.levels("mulan", c.mulan_quantizers).to(mulan_tokens.device)
        if melody_tokens is not None:
            if c.melody_quantizers == 0:
                raise ValueError("this stage was not trained with melody conditioning")
            if melody_tokens.shape[-2:] != (self.melody_windows, c.melody_quantizers):
                raise ValueError(
                    f"expected melody tokens [B, {self.melody_windows}, {c.melody_quantizers}], "
                    f"got {list(melody_tokens.shape)}"
                )
            offsets = self.layout.levels("melody", c.melody_quantizers).to(melody_tokens.device)
            ids = torch.cat([ids, rearrange(melody_tokens.long() + offsets, "b w q -> b (w q)")], dim=1)
        elif c.melody_quantizers:
            ids = F.pad(ids, (0, self.melody_windows * c.melody_quantizers), value=NULL)
        return ids

    def record_cond(self, record: dict, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning ids of a training record for a window starting at ``seconds``, and which of
        them are melody ids (dropped on their own in training)."""
        melody = None
        if self.config.melody_quantizers:
            if "melody_tokens" not in record:
                raise DataError(
                    "this stage is melody-conditioned but the token cache has no melody_tokens "
                    "(run `musiclm tokenize --melody ...`)"
                )
            melody = self.melody_at(record["melody_tokens"].long(), seconds)[None]
        cond = self.cond_ids(record["mulan_tokens"][None], melody)[0]
        is_melody = torch.arange(len(cond)) >= self.config.mulan_quantizers
        return cond, is_melody

    @staticmethod
    def cond_at(cond: CondSource, seconds: float) -> torch.Tensor:
        """``cond`` itself, or, for conditioning that changes over time (story mode, melody),
        ``cond(seconds)`` for a window starting at ``seconds``."""
        return cond(seconds) if callable(cond) else cond

    def _level_offsets(self, first: int, n: int, device) -> torch.Tensor:
        return torch.tensor([self.layout.offset(f"level{first + i}") for i in range(n)], device=device)

    def flat_levels(self, codes: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Codes ``[B, L, F]`` of RVQ levels ``first..first+L`` -> frame-major offset ids ``[B, F*L]``."""
        offsets = self._level_offsets(first, codes.shape[1], codes.device)
        return rearrange(codes.long() + offsets[None, :, None], "b l f -> b (f l)")

    def unflat_levels(self, ids: torch.Tensor, levels: int, first: int) -> torch.Tensor:
        """Inverse of :meth:`flat_levels`."""
        offsets = self._level_offsets(first, levels, ids.device)
        return rearrange(ids, "b (f l) -> b l f", l=levels) - offsets[None, :, None]

    # ---------------------------------------------------------------- training

    def window_frames(self) -> int:
        """Codec frames in the training window (even, so semantic tokens align)."""
        return max(2, 2 * round(self.config.lm.window_seconds * self.config.frame_rate / 2))

    def training_example(self, record: dict, rng: random.Random) -> dict:
        raise NotImplementedError

    @property
    def max_train_len(self) -> int:
        raise NotImplementedError

    def _pack(self, parts: list[tuple[torch.Tensor, str]], is_melody: torch.Tensor | None = None) -> dict:
        """Concatenate ``(ids, role)`` parts (role: cond / context / target) and pad to a fixed length.
        ``is_melody`` marks, within the leading cond part, the melody ids."""
        tokens = torch.cat([p for p, _ in parts])
        role = torch.cat([torch.full((len(p),), {"cond": 0, "context": 1, "target": 2}[r]) for p, r in parts])
        pad = self.max_train_len - len(tokens)
        melody = torch.zeros(len(tokens), dtype=torch.bool)
        if is_melody is not None:
            melody[: len(is_melody)] = is_melody
        return {
            "tokens": F.pad(tokens, (0, pad), value=PAD),
            "loss_mask": F.pad(role == 2, (0, pad), value=False),
            "cond_mask": F.pad(role == 0, (0, pad), value=False),
            "melody_mask": F.pad(melody, (0, pad), value=False),
        }

    def loss(self, tokens: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on target positions only."""
        logits = self.transformer(tokens[:, :-1])
        target = tokens[:, 1:].masked_fill(~loss_mask[:, 1:], -100)
        return F.cross_entropy(
            rearrange(logits, "b t v -> (b t) v").float(), target.reshape(-1), ignore_index=-100
        )

    # ---------------------------------------------------------------- generation

    @torch.inference_mode()
    def extend(
        self,
        prefix: torch.Tensor,
        n_new: int,
        span_of: Callable[[int], tuple[int, int]],
        sampling: SamplingConfig,
        cond_len: int = 0,
        generator: torch.Generator | None = None,
        progress: Progress = None,
        done: int = 0,
        total: int = 0,
    ) -> torch.Tensor:
        """Sample ``n_new`` ids after ``prefix`` ``[B, P]``; the j-th new id comes from ``span_of(j)``.

        With ``guidance != 1`` and ``cond_len > 0`` the unconditional copy (first ``cond_len`` ids
        replaced by NULL) runs in the same batch as the conditional one.
        """
        b = prefix.shape[0]
        use_cfg = sampling.guidance != 1.0 and cond_len > 0
        if use_cfg:
            uncond = prefix.clone()
            uncond[:, :cond_len] = NULL
            prefix = torch.cat([prefix, uncond])
        tf = self.transformer
        cache = tf.new_cache(prefix.shape[0], prefix.shape[1] + n_new)
        hidden = tf.hidden(prefix, cache)[:, -1]
        out = torch.empty(b, n_new, dtype=torch.long, device=prefix.device)
        for j in range(n_new):
            lo, hi = span_of(j)
            logits = tf.logits(hidden, lo, hi)  # only this step's id range
            step_logits = guide(logits[:b], logits[b:], sampling.guidance) if use_cfg else logits
            ids = sample(step_logits, sampling, 0, hi - lo, generator) + lo
            out[:, j] = ids
            if j + 1 < n_new:
                hidden = tf.hidden((torch.cat([ids, ids]) if use_cfg else ids)[:, None], cache)[:, -1]
            if progress is not None:
                progress(done + j + 1, total)
        return out


@register_model("semantic_lm")
class SemanticStage(StageLM):
    """Stage 1: conditioning tokens -> semantic tokens."""

    stage = "semantic"

    def build_layout(self, layout: TokenLayout) -> None:
        super().build_layout(layout)
        layout.add("semantic", self.config.semantic_clusters)

    @property
    def window_tokens(self) -> int:
        return max(2, round(self.config.lm.window_seconds * self.config.semantic_rate))

    @property
    def max_train_len(self) -> int:
        c = self.config
        return c.mulan_quantizers + self.melody_windows * c.melody_quantizers + 1 + self.window_tokens

    def training_example(self, record: dict, rng: random.Random) -> dict:
        sem = record["semantic"].long()
        n = self.window_tokens
        start = rng.randrange(max(1, len(sem) - n + 1))
        cond, is_melody = self.record_cond(record, start / self.config.semantic_rate)
        window = sem[start : start + n] + self.layout.offset("semantic")
        return self._pack([(cond, "cond"), (torch.tensor([SEP]), "context"), (window, "target")], is_melody)

    @torch.no_grad()
    def generate(
        self,
        cond: CondSource,
        num_tokens: int,
        sampling: SamplingConfig | None = None,
        prompt: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: Progress = None,
    ) -> torch.Tensor:
        """Semantic ids ``[B, num_tokens]`` after an optional raw ``prompt`` ``[B, P]``.

        ``cond`` are offset conditioning ids (:meth:`cond_ids`), or a function of a window's start time
        in seconds (prompt included) returning them. Longer than the training window, it slides: half
        a window of the newest tokens is kept as prefix (paper: 15 s of 30 s).
        """
        sampling = sampling or SamplingConfig(temperature=self.config.lm.temperature)
        off, window = self.layout.offset("semantic"), self.window_tokens
        span = self.layout.span("semantic")
        first = self.cond_at(cond, 0.0)
        b = first.shape[0]
        history = prompt.long().to(first.device) if prompt is not None else first.new_zeros(b, 0)
        p0 = history.shape[1]
        sep = first.new_full((b, 1), SEP)
        while history.shape[1] - p0 < num_tokens:
            context = history[:, -(window // 2) :] if history.shape[1] else history
            n_new = min(window - context.shape[1], num_tokens - (history.shape[1] - p0))
            ids = self.cond_at(cond, (history.shape[1] - context.shape[1]) / self.config.semantic_rate)
            prefix = torch.cat([ids, sep, context + off], dim=1)
            new = self.extend(
                prefix,
                n_new,
                lambda j: span,
                sampling,
                ids.shape[1],
                generator,
                progress,
                history.shape[1] - p0,
                num_tokens,
            )
            history = torch.cat([history, new - off], dim=1)
        return history[:, p0:]


class _AcousticStage(StageLM):
    """Shared by the coarse and fine stages: frame-major RVQ generation with sliding windows."""

    target_first = 0  # first RVQ level this stage generates

    @property
    def target_levels(self) -> int:
        raise NotImplementedError

    layout_levels = 0  # RVQ levels with ids in this stage's vocabulary

    def build_layout(self, layout: TokenLayout) -> None:
        for i in range(self.layout_levels):
            layout.add(f"level{i}", self.config.codec_codebook)

    def level_span(self, j: int) -> tuple[int, int]:
        return self.layout.span(f"level{self.target_first + j % self.target_levels}")

    def _slide(
        self, total_frames, make_prefix, cond_len, prompt, sampling, generator, progress
    ) -> torch.Tensor:
        """Generate ``total_frames`` frames of this stage's levels in windows with half-window overlap."""
        window, lv = self.window_frames(), self.target_levels
        history = prompt.long() if prompt is not None else None
        p0 = 0 if history is None else history.shape[-1]
        made = 0
        while made < total_frames:
            have = p0 + made
            ctx = min(have, window // 2) // 2 * 2
            n_new = min(window - ctx, total_frames - made)
            prefix = make_prefix(have - ctx, have + n_new, history[..., have - ctx :] if ctx else None)
            new = self.extend(
                prefix,
                n_new * lv,
                self.level_span,
                sampling,
                cond_len,
                generator,
                progress,
                made * lv,
                total_frames * lv,
            )
            frames = self.unflat_levels(new, lv, self.target_first)
            history = frames if history is None else torch.cat([history, frames], dim=-1)
            made += n_new
        return history[..., p0:]


@register_model("coarse_lm")
class CoarseStage(_AcousticStage):
    """Stage 2: conditioning + semantic tokens -> coarse acoustic tokens (first RVQ levels)."""

    stage = "coarse"

    @property
    def target_levels(self) -> int:
        return self.config.coarse_levels

    @property
    def layout_levels(self) -> int:  # type: ignore[override]
        return self.config.coarse_levels

    def build_layout(self, layout: TokenLayout) -> None:
        StageLM.build_layout(self, layout)
        layout.add("semantic", self.config.semantic_clusters)
        super().build_layout(layout)

    @property
    def max_train_len(self) -> int:
        f, c = self.window_frames(), self.config
        cond = c.mulan_quantizers + self.melody_windows * c.melody_quantizers
        return cond + 2 + f // 2 + f * self.target_levels

    def training_example(self, record: dict, rng: random.Random) -> dict:
        codes = record["codec"][: self.target_levels].long()
        f = min(self.window_frames(), codes.shape[-1] // 2 * 2)
        start = 2 * rng.randrange(max(1, (codes.shape[-1] - f) // 2 + 1))
        sem = record["semantic"].long()[start // 2 : (start + f) // 2] + self.layout.offset("semantic")
        coarse = self.flat_levels(codes[None, :, start : start + f])[0]
        cond, is_melody = self.record_cond(record, start / self.config.frame_rate)
        sep = torch.tensor([SEP])
        return self._pack(
            [(cond, "cond"), (sep, "context"), (sem, "context"), (sep, "context"), (coarse, "target")],
            is_melody,
        )

    @torch.no_grad()
    def generate(
        self,
        cond: CondSource,
        semantic: torch.Tensor,
        sampling: SamplingConfig | None = None,
        prompt: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: Progress = None,
    ) -> torch.Tensor:
        """Coarse codes ``[B, coarse_levels, 2 * S]`` for raw semantic ids ``[B, S]``.

        ``prompt`` (raw coarse codes ``[B, coarse_levels, P]``, P even) continues existing audio, in
        which case ``semantic`` covers prompt and new frames (``S = (P + new) / 2``).
        """
        sampling = sampling or SamplingConfig(temperature=self.config.lm.temperature)
        first = self.cond_at(cond, 0.0)
        sep = first.new_full((first.shape[0], 1), SEP)
        sem_ids = semantic.long() + self.layout.offset("semantic")
        p0 = 0 if prompt is None else prompt.shape[-1]

        def make_prefix(start: int, end: int, context: torch.Tensor | None) -> torch.Tensor:
            parts = [
                self.cond_at(cond, start / self.config.frame_rate),
                sep,
                sem_ids[:, start // 2 : (end + 1) // 2],
                sep,
            ]
            if context is not None:
                parts.append(self.flat_levels(context))
            return torch.cat(parts, dim=1)

        return self._slide(
            2 * semantic.shape[1] - p0, make_prefix, first.shape[1], prompt, sampling, generator, progress
        )


@register_model("fine_lm")
class FineStage(_AcousticStage):
    """Stage 3: coarse acoustic tokens -> fine acoustic tokens (remaining RVQ levels)."""

    stage = "fine"

    @property
    def target_first(self) -> int:  # type: ignore[override]
        return self.config.coarse_levels

    @property
    def target_levels(self) -> int:
        return self.config.fine_levels

    @property
    def layout_levels(self) -> int:  # type: ignore[override]
        return self.config.codec_levels

    @property
    def max_train_len(self) -> int:
        return 1 + self.window_frames() * self.config.codec_levels

    def training_example(self, record: dict, rng: random.Random) -> dict:
        codes = record["codec"].long()
        f = min(self.window_frames(), codes.shape[-1])
        start = rng.randrange(max(1, codes.shape[-1] - f + 1))
        window = codes[None, :, start : start + f]
        c = self.config.coarse_levels
        coarse = self.flat_levels(window[:, :c])[0]
        fine = self.flat_levels(window[:, c:], first=c)[0]
        return self._pack([(coarse, "context"), (torch.tensor([SEP]), "context"), (fine, "target")])

    @torch.no_grad()
    def generate(
        self,
        coarse: torch.Tensor,
        sampling: SamplingConfig | None = None,
        prompt: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: Progress = None,
    ) -> torch.Tensor:
        """Fine codes ``[B, fine_levels, F]`` for raw coarse codes ``[B, coarse_levels, F]``."""
        sampling = sampling or SamplingConfig(temperature=self.config.lm.temperature)
        b = coarse.shape[0]
        sep = coarse.new_full((b, 1), SEP)
        p0 = 0 if prompt is None else prompt.shape[-1]

        def make_prefix(start: int, end: int, context: torch.Tensor | None) -> torch.Tensor:
            parts = [self.flat_levels(coarse[..., start:end]), sep]
            if context is not None:
                parts.append(self.flat_levels(context, first=self.target_first))
            return torch.cat(parts, dim=1)

        return self._slide(coarse.shape[-1] - p0, make_prefix, 0, prompt, sampling, generator, progress)


STAGES: dict[str, type[StageLM]] = {"semantic": SemanticStage, "coarse": CoarseStage, "fine": FineStage}
