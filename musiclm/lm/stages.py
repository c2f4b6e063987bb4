"""The three MusicLM stages and their token layouts (paper 3.2, 4.1, 4.2).

    semantic stage : [cond] SEP [semantic]                       -> semantic tokens   (25 Hz)
    coarse stage   : [cond] SEP [semantic] SEP [coarse, flat]    -> coarse RVQ levels (50 Hz)
    fine stage     : [coarse, flat] SEP [fine, flat]             -> fine RVQ levels

``cond`` is the MuLaN tokens (and, when the model has melody conditioning, the melody tokens
after them). RVQ levels are flattened frame-major (f0q0 f0q1 .. f1q0 ..). Every kind of token has
its own id range in the stage's vocabulary (``TokenLayout``, the one place offsets are defined), each
RVQ level included, so a stage can never emit an id of the wrong level. Window lengths come from
seconds in the config times the token rates.

Each stage writes its sequence in ONE method, :meth:`StageLM.sequence`, which builds the training
examples and every generation prefix alike. Generation is ONE sliding loop,
:meth:`StageLM.generate`: windows of the training length, half a window of the newest tokens kept
as context (paper: 15 s of 30 s for the semantic stage), each window's conditioning read from a
:class:`~musiclm.lm.conditioning.Conditioning` value, windows cut where a story segment begins.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from musiclm.audio import PITCH_CLASS_IDS
from musiclm.checkpoint import register_model
from musiclm.config import LMConfig, MusicLMConfig, require, require_positive, require_share
from musiclm.lm.codebook_embedding import CodebookEmbedding
from musiclm.lm.conditioning import Conditioning
from musiclm.lm.graphs import StaticDecoder
from musiclm.lm.guidance import NULL, guide, with_unconditional
from musiclm.lm.sampling import SamplingConfig, sample
from musiclm.lm.transformer import Transformer
from musiclm.tempo import BEAT_PHASES

PAD, SEP = 0, 1  # and NULL = 2 (guidance.py): dropped conditioning
NUM_SPECIALS = 3
Progress = Callable[[int, int], None] | None
ROLES = {"cond": 0, "context": 1, "target": 2}


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
    # the LM reads only the first mulan_levels MuLaN RVQ levels (0 = all): coarse levels of a text
    # prompt's tokens match a clip's audio tokens far more often than fine ones (musiclm mulan-report)
    mulan_levels: int = 0
    # share of training windows conditioned on the MuLaN *text* tokens of their clip's caption (cache
    # field mulan_text_tokens) instead of its audio tokens, where it has a caption: the tokens a prompt
    # gives at generation. 0 = the paper (audio tokens only).
    text_token_prob: float = 0.0
    # > 0: the MuLaN embedding width; the LM then also embeds each MuLaN id through its RVQ codebook
    # vector (musiclm.lm.codebook_embedding), shared knowledge across neighbouring codes. 0 = the
    # paper (one learned row per id).
    mulan_dim: int = 0
    melody_quantizers: int = 0  # 0 = no melody conditioning
    melody_codebook: int = 0
    melody_window_seconds: float = 4.0  # one melody embedding per window (paper: 4 s at a 3 s hop)
    melody_hop_seconds: float = 3.0
    melody_drop_prob: float = 0.5  # melody tokens alone -> NULL in training, so text-only prompts work
    # coarse stage only: each input position also adds a learned embedding of the semantic token
    # under the codec frame it predicts (frame-aligned conditioning, as SoundStorm sums its semantic
    # tokens into the acoustic ones), besides reading the semantic tokens in the prefix (the paper).
    # Starts at zero, so a warm start begins where its source was.
    aligned_semantic: bool = False
    # semantic and coarse stages: each position also adds a learned embedding of the melody's pitch
    # class (musiclm.audio.pitch_classes) at the frame it predicts, MusicGen's chroma conditioning:
    # the paper's melody tokens describe 4 s windows with one embedding each, which the LM has to turn
    # back into notes. In training the pitch classes are those of the clip's own mix (on the synthetic
    # benchmark the melody's for two frames in three), dropped with melody_drop_prob. Starts at zero.
    melody_chroma: bool = False
    # semantic and coarse stages: each position also adds a learned embedding of the beat phase
    # (musiclm.tempo) of the frame it predicts, so that a prompt's "80 bpm" reaches the LM; in training
    # the phases of the clip's own beats, dropped with beat_drop_prob (a prompt may name no tempo).
    # Starts at zero. A departure from the paper, as Music ControlNet's rhythm control.
    beat_phase: bool = False
    beat_drop_prob: float = 0.3
    # with classifier-free guidance, whether the NULL-conditioned copy also loses the beat phases, so
    # that guidance amplifies them with the text (True), or keeps them, so that it amplifies the text
    # alone and the beat phases act once, as in training (False: measured, tempo then follows the
    # prompt far less often; benchmarks/README.md)
    beat_guidance: bool = True
    # generating past one training window slides: this share of the window's units, the newest, stays
    # as context for the next (0.5: half a window). More context costs prefills, not decoding steps:
    # every unit is still sampled once
    slide_context: float = 0.5
    # fine stage only: generate the new frames as non-overlapping windows side by side in one batch, each
    # from its coarse codes alone (AudioLM's fine stage, and what training windows look like), instead
    # of sliding with half a window of fine context: a fifth of the sequential steps for 10 s, the
    # fine stage about twice as fast on CPU. Off by default: measured, the clips' mode is recognised
    # 2-6 points less often (benchmarks/README.md).
    parallel_windows: bool = False
    # with parallel_windows: seconds each window after the first samples before the frames it keeps,
    # and drops, so that no kept frame is sampled without fine codes before it (0 = none; measured
    # at 0.4 s, it does not give back the mode that windows side by side lose)
    window_burn_in: float = 0.0
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

    def __post_init__(self):
        require(
            self,
            self.stage in ("semantic", "coarse", "fine"),
            f"stage must be semantic, coarse or fine, got {self.stage!r}",
        )
        require_positive(self, "mulan_quantizers", "mulan_codebook", "semantic_clusters", "codec_levels")
        require_positive(self, "codec_codebook", "semantic_rate", "frame_rate", "melody_window_seconds")
        require_positive(self, "melody_hop_seconds")
        require(
            self,
            1 <= self.coarse_levels <= self.codec_levels,
            f"coarse_levels must lie in [1, codec_levels = {self.codec_levels}], got {self.coarse_levels}",
        )
        require(
            self,
            0 <= self.mulan_levels <= self.mulan_quantizers,
            f"mulan_levels must lie in [0, mulan_quantizers = {self.mulan_quantizers}], got {self.mulan_levels}",
        )
        require(
            self,
            self.melody_quantizers >= 0 and (self.melody_quantizers == 0 or self.melody_codebook >= 1),
            "melody_quantizers must be >= 0, with a melody_codebook when > 0",
        )
        require_share(self, "text_token_prob", "melody_drop_prob", "beat_drop_prob")
        require_share(self, "slide_context", below_one=True)
        require(self, self.window_burn_in >= 0, f"window_burn_in must be >= 0, got {self.window_burn_in}")
        require(self, self.mulan_dim >= 0, f"mulan_dim must be >= 0, got {self.mulan_dim}")

    @property
    def fine_levels(self) -> int:
        return self.codec_levels - self.coarse_levels

    @property
    def mulan_read(self) -> int:
        """MuLaN levels in the LM's conditioning."""
        return self.mulan_levels or self.mulan_quantizers


class StageLM(nn.Module):
    """What the stages share: vocabulary, conditioning ids, training examples, loss, and the one
    KV-cached sliding generation loop. A stage counts in *units*: semantic tokens, or codec frames
    of ``levels`` RVQ ids each."""

    stage = ""
    conditioned = True  # reads a Conditioning (the fine stage sees only coarse tokens)
    align = 1  # window contexts start on multiples of this many units
    # replay each window's decoding step as a CUDA graph (a model on a CUDA device only); a runtime
    # switch, not part of the checkpoint
    cuda_graphs = False
    # compile the decoding step with torch.compile (fixed shapes, dynamic sizes: compiled once per
    # process and LM); with cuda_graphs the compiled step is what the graph replays. A runtime switch
    compile_decoding = False
    # multiply by float16 copies of the weights in the decoding step (a float32 model on a CPU:
    # FBGEMM's small-batch GEMM, float32 arithmetic, about twice the tokens/s; measured on the shipped
    # LMs, the same likelihoods to 1e-5 and the same tokens, benchmarks/README.md): None = wherever
    # supported, False = float32 throughout; a runtime switch, not part of the checkpoint
    float16_weights: bool | None = None

    def __init__(self, config: StageConfig):
        super().__init__()
        if config.stage != self.stage:
            raise ValueError(
                f"{type(self).__name__} needs a {self.stage!r} StageConfig, got {config.stage!r}"
            )
        if abs(config.frame_rate - 2 * config.semantic_rate) > 1e-6:
            raise ValueError("the codec frame rate must be twice the semantic token rate")
        if not 0 <= config.text_token_prob <= 1:
            raise ValueError(f"text_token_prob must be in [0, 1], got {config.text_token_prob}")
        if not 0 <= config.mulan_levels <= config.mulan_quantizers:
            raise ValueError(
                f"mulan_levels must be 0 (all) to {config.mulan_quantizers}, got {config.mulan_levels}"
            )
        # the default sampling is checked as any other (temperature, top_k, top_p in range)
        SamplingConfig(temperature=config.lm.temperature, top_k=config.lm.top_k, top_p=config.lm.top_p)
        if not 0 <= config.slide_context < 1:
            raise ValueError(f"slide_context must be in [0, 1), got {config.slide_context}")
        if config.aligned_semantic and config.stage != "coarse":
            raise ValueError(f"aligned_semantic is a coarse-stage option, not for the {config.stage} stage")
        if config.melody_chroma and not self.conditioned:
            raise ValueError(
                f"melody_chroma is for the semantic and coarse stages, not the {config.stage} stage"
            )
        if config.beat_phase and not self.conditioned:
            raise ValueError(
                f"beat_phase is for the semantic and coarse stages, not the {config.stage} stage"
            )
        if not 0 <= config.beat_drop_prob <= 1:
            raise ValueError(f"beat_drop_prob must be in [0, 1], got {config.beat_drop_prob}")
        self.config = config
        self.layout = self.token_layout()
        self.transformer = Transformer(config.lm, self.layout.vocab_size)
        self.mulan_embedding = None
        if config.mulan_dim and self.conditioned:
            self.mulan_embedding = CodebookEmbedding(
                levels=config.mulan_read,
                codebook_size=config.mulan_codebook,
                mulan_dim=config.mulan_dim,
                dim=config.lm.dim,
                offset=self.layout.offset("mulan0"),
            )
        self.chroma_embedding = None
        if config.melody_chroma:
            self.chroma_embedding = nn.Embedding(PITCH_CLASS_IDS, config.lm.dim)
            nn.init.zeros_(self.chroma_embedding.weight)
        self.beat_embedding = None
        if config.beat_phase:
            self.beat_embedding = nn.Embedding(BEAT_PHASES, config.lm.dim)
            nn.init.zeros_(self.beat_embedding.weight)

    def default_sampling(self) -> SamplingConfig:
        """How the stage samples when a caller says nothing: its config's temperature and
        truncation, unguided."""
        lm = self.config.lm
        return SamplingConfig(temperature=lm.temperature, top_k=lm.top_k, top_p=lm.top_p)

    # ---------------------------------------------------------------- what each stage defines

    def token_layout(self) -> TokenLayout:
        """The stage's vocabulary: an id range per token kind."""
        raise NotImplementedError

    @property
    def units_per_second(self) -> float:
        raise NotImplementedError

    @property
    def window_units(self) -> int:
        """Units generated per training window."""
        raise NotImplementedError

    @property
    def levels(self) -> int:
        """Ids per unit."""
        return 1

    def sequence(
        self, cond: torch.Tensor | None, inputs: torch.Tensor | None, target: torch.Tensor
    ) -> list[tuple[torch.Tensor, str]]:
        """THE token layout of the stage, for training and generation alike: ``[B, n]`` id parts with
        their role (cond / context / target) for offset conditioning ids ``cond``, the window of the
        stage's inputs (:meth:`window_inputs`) and raw ``target`` units (a whole training window, or
        in generation the context generated so far)."""
        raise NotImplementedError

    def window_inputs(self, inputs: torch.Tensor | None, start: int, end: int) -> torch.Tensor | None:
        """The part of the stage's inputs that units ``start .. end`` are generated from."""
        return None

    def training_window(
        self, record: dict, rng: random.Random
    ) -> tuple[int, torch.Tensor | None, torch.Tensor]:
        """A random training window of a token record: ``(start unit, inputs [1, ...], target [1, ...])``."""
        raise NotImplementedError

    def target_ids(self, units: torch.Tensor) -> torch.Tensor:
        """Raw target units ``[B, (levels,) n]`` -> offset ids ``[B, n * levels]``."""
        raise NotImplementedError

    def target_units(self, ids: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`target_ids`."""
        raise NotImplementedError

    def target_span(self, j: int) -> tuple[int, int]:
        """The id range of the ``j``-th generated id."""
        raise NotImplementedError

    # ---------------------------------------------------------------- conditioning ids

    def cond_layout(self) -> TokenLayout:
        layout, c = TokenLayout(), self.config
        for i in range(c.mulan_read):
            layout.add(f"mulan{i}", c.mulan_codebook)
        for i in range(c.melody_quantizers):
            layout.add(f"melody{i}", c.melody_codebook)
        return layout

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
        offsets = self.layout.levels("mulan", c.mulan_read).to(mulan_tokens.device)
        ids = mulan_tokens[..., : c.mulan_read].long() + offsets
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

    def window_cond(self, cond: Conditioning, *, start: int, new_start: int) -> torch.Tensor:
        """Offset conditioning ids of a window whose context starts at unit ``start`` and whose new
        units start at ``new_start``: the MuLaN tokens of the segment ``new_start`` falls in, the
        melody from ``start`` on (the melody moves with the music)."""
        segment = cond.segment(new_start, cond.bounds(self.units_per_second, self.align))
        melody = None
        if cond.melody is not None and self.config.melody_quantizers:
            melody = self.melody_at(cond.melody, start / self.units_per_second)
        ids = self.cond_ids(cond.mulan[:, segment], melody)
        return torch.full_like(ids, NULL) if cond.unconditional else ids

    # ---------------------------------------------------------------- training

    @property
    def cond_len(self) -> int:
        """Conditioning ids at the start of every sequence (MuLaN, then melody windows)."""
        c = self.config
        return c.mulan_read + self.melody_windows * c.melody_quantizers if self.conditioned else 0

    @property
    def max_train_len(self) -> int:
        """Tokens of a full training example (all examples are padded to it)."""
        return self.cond_len + self.window_inputs_len + 1 + self.window_units * self.levels

    @property
    def window_inputs_len(self) -> int:
        """Tokens the inputs and their separators take in a full window, besides the one SEP."""
        return 0

    @property
    def input_ids(self) -> tuple[int, int] | None:
        """The id range ``[lo, hi)`` of what the stage reads besides its conditioning (semantic
        tokens, coarse codes); None for a stage that reads none."""
        return None

    def training_example(self, record: dict, rng: random.Random) -> dict:
        """A random window of a token record laid out by :meth:`sequence`, padded to :attr:`max_train_len`."""
        start, inputs, target = self.training_window(record, rng)
        cond = own = None
        if self.conditioned:
            p = self.config.text_token_prob
            text = p > 0 and rng.random() < p  # no draw at 0: the same examples as without the option
            own = Conditioning.from_record(
                record,
                melody=self.config.melody_quantizers > 0,
                text=text,
                chroma=self.config.melody_chroma,
                beats=self.config.beat_phase,
            )
            cond = self.window_cond(own, start=start, new_start=start)
        parts = self.sequence(cond, self.window_inputs(inputs, start, start + target.shape[-1]), target)
        example = self._pack([(ids[0], role) for ids, role in parts])
        n = sum(len(ids[0]) for ids, role in parts)
        first = n - parts[-1][0].shape[1]  # the target ids come last
        tracks = {} if own is None else {"chroma": own.chroma, "beats": own.beats}
        for key, track in tracks.items():
            if track is not None:
                ids = self.frame_positions(self.frame_units(track, start, start + target.shape[-1]), first, n)
                example[key] = F.pad(ids[0], (0, self.max_train_len - n), value=-1)
        return example

    def _pack(self, parts: list[tuple[torch.Tensor, str]]) -> dict:
        """Concatenate ``(ids, role)`` parts and pad to a fixed length; within the cond part, the ids
        after the MuLaN tokens are melody ids (dropped on their own in training)."""
        tokens = torch.cat([p for p, _ in parts])
        role = torch.cat([torch.full((len(p),), ROLES[r]) for p, r in parts])
        melody = (role == ROLES["cond"]) & (torch.arange(len(tokens)) >= self.config.mulan_read)
        pad = self.max_train_len - len(tokens)
        return {
            "tokens": F.pad(tokens, (0, pad), value=PAD),
            "loss_mask": F.pad(role == ROLES["target"], (0, pad), value=False),
            "cond_mask": F.pad(role == ROLES["cond"], (0, pad), value=False),
            "melody_mask": F.pad(melody, (0, pad), value=False),
        }

    # ------------------------------------ per-frame tracks: pitch classes (melody_chroma), beat phases

    def frame_units(self, track: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Ids ``[B, end - start]`` of units ``start .. end`` from a track ``[B, F]`` at the semantic
        token rate (-1, none, past its end: a melody shorter than the piece)."""
        per = round(self.units_per_second / self.config.semantic_rate)  # 1 semantic, 2 acoustic
        idx = torch.arange(start, end, device=track.device) // per
        if track.shape[1] == 0:
            return torch.full((track.shape[0], len(idx)), -1, dtype=torch.long, device=track.device)
        ids = track.long()[:, idx.clamp(max=track.shape[1] - 1)]
        return ids.masked_fill(idx >= track.shape[1], -1)

    def frame_positions(self, units: torch.Tensor, first_target: int, length: int) -> torch.Tensor:
        """Track ids ``[B, length]`` per position of a sequence whose target ids start at
        ``first_target``: at each position that of the unit of the *next* id (the one it predicts),
        -1 before the targets and past ``units`` ``[B, U]``."""
        k = torch.arange(length, device=units.device) + 1 - first_target
        unit = k.clamp(min=0) // self.levels
        if units.shape[1] == 0:
            return torch.full((units.shape[0], length), -1, dtype=torch.long, device=units.device)
        ids = units[:, unit.clamp(max=units.shape[1] - 1)]
        return ids.masked_fill((k < 0) | (unit >= units.shape[1]), -1)

    def frame_embeddings(
        self, chroma: torch.Tensor | None = None, beats: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """``[B, T]`` per-position pitch-class and beat-phase ids (-1: none) -> the sum of their
        embeddings ``[B, T, dim]`` (zero where none), or None if neither is given or read."""
        out = None
        for ids, table in ((chroma, self.chroma_embedding), (beats, self.beat_embedding)):
            if ids is not None and table is not None:
                e = table(ids.clamp(min=0)) * (ids >= 0).unsqueeze(-1)
                out = e if out is None else out + e
        return out

    def extra_embeddings(
        self, tokens: torch.Tensor, chroma: torch.Tensor | None = None, beats: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """What the transformer adds to the embeddings of ``tokens`` (None if nothing): the MuLaN ids'
        codebook embeddings (the conditioning ids come first in every sequence, so only those
        positions are looked at), the stage's :meth:`step_embeddings` and, given ``[B, T]``
        per-position pitch classes or beat phases (:meth:`frame_positions`), their embeddings."""
        extra = self.step_embeddings(tokens, tokens.shape[1])
        frames = self.frame_embeddings(chroma, beats)
        if frames is not None:
            extra = frames if extra is None else extra + frames
        if self.mulan_embedding is None:
            return extra
        n = min(self.config.mulan_read, tokens.shape[1])
        mulan = F.pad(self.mulan_embedding(tokens[:, :n]), (0, 0, 0, tokens.shape[1] - n))
        return mulan if extra is None else extra + mulan

    def rows_per_sample(self, seconds: float) -> int:
        """Sequences a sample of ``seconds`` puts in the stage's batch at once (besides guidance's copy)."""
        return 1

    def step_embeddings(self, tokens: torch.Tensor, length: int) -> torch.Tensor | None:
        """Embeddings ``[B, length, dim]`` added at every position of a sequence that starts with
        ``tokens`` (``length`` may reach past them: the positions generation will feed), or None:
        what a decoding step adds besides its id's embedding."""
        return None

    def loss(
        self,
        tokens: torch.Tensor,
        loss_mask: torch.Tensor,
        chroma: torch.Tensor | None = None,
        beats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token cross-entropy on target positions only, each over its own id range (an RVQ
        level's codes, the semantic ids), the distribution generation samples from (``chroma``,
        ``beats``: per-position pitch classes and beat phases). The head runs on those positions and
        rows alone: the whole vocabulary is 3-8k ids (tiny preset), a range 256-1024, and the head was
        a large part of a training step. A trained LM puts 99.9 % of its mass in range, so the figure
        is within 0.001 nats of the cross-entropy over the whole vocabulary (benchmarks/README.md)."""
        inputs = tokens[:, :-1]
        pitch = None if chroma is None else chroma[:, :-1]
        phase = None if beats is None else beats[:, :-1]
        hidden = self.transformer.hidden(inputs, extra=self.extra_embeddings(inputs, pitch, phase))
        keep = loss_mask[:, 1:]
        hidden, target = hidden[keep], tokens[:, 1:][keep]
        total = hidden.new_zeros((), dtype=torch.float32)
        for lo, hi in self.target_ranges():  # one per level: a few matrix products, not one per id
            mine = (target >= lo) & (target < hi)
            logits = self.transformer.logits(hidden[mine], lo, hi).float()
            total = total + F.cross_entropy(logits, target[mine] - lo, reduction="sum")
        return total / target.numel()

    def target_ranges(self) -> list[tuple[int, int]]:
        """The id range of each kind of target the stage generates (one per RVQ level; semantic: one)."""
        return sorted({self.target_span(j) for j in range(self.levels)})

    # ---------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        cond: Conditioning | None,
        length: int,
        *,
        inputs: torch.Tensor | None = None,
        prompt: torch.Tensor | None = None,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        progress: Progress = None,
    ) -> torch.Tensor:
        """``length`` new raw units ``[B, (levels,) length]`` after the raw ``prompt`` units.

        ``inputs`` are what the stage reads, covering prompt and new units (coarse: semantic ids
        ``[B, S]``; fine: coarse codes ``[B, coarse_levels, F]``). Longer than a training window,
        generation slides: ``slide_context`` of a window (the newest units) stays as context, the
        conditioning is read per window, and no window crosses the start of a conditioning segment.
        """
        sampling = sampling or self.default_sampling()
        ref = cond.mulan if cond is not None else inputs
        b = ref.shape[0]
        empty = self.target_units(torch.zeros(b, 0, dtype=torch.long, device=ref.device))
        history = prompt.long().to(ref.device) if prompt is not None else empty
        p0 = history.shape[-1]
        bounds = cond.bounds(self.units_per_second, self.align) if cond is not None else [0]
        for start, have, end in self.sliding_spans(p0, length, bounds):
            ctx, n_new, made = have - start, end - have, have - p0
            ids = None if cond is None else self.window_cond(cond, start=have - ctx, new_start=have)
            parts = self.sequence(
                ids, self.window_inputs(inputs, have - ctx, have + n_new), history[..., have - ctx :]
            )
            prefix = torch.cat([p for p, _ in parts], dim=1)
            tracks = {"chroma": None, "beats": None}
            for key, table in (("chroma", self.chroma_embedding), ("beats", self.beat_embedding)):
                track = None if cond is None or cond.unconditional else getattr(cond, key)
                if table is not None and track is not None:
                    units = self.frame_units(track, have - ctx, have + n_new)
                    first = prefix.shape[1] - ctx * self.levels  # the context's target ids end the prefix
                    tracks[key] = self.frame_positions(units, first, prefix.shape[1] + n_new * self.levels)
            new = self._extend(
                prefix,
                n_new * self.levels,
                sampling,
                cond_len=0 if ids is None else ids.shape[1],
                **tracks,
                generator=generator,
                progress=progress,
                done=made * self.levels,
                total=length * self.levels,
            )
            history = torch.cat([history, self.target_units(new)], dim=-1)
        return history[..., p0:]

    def sliding_spans(self, start: int, length: int, bounds=()) -> list[tuple[int, int, int]]:
        """(first unit, first new, end) of the windows :meth:`generate` slides through to make units
        ``start .. start + length``: ``slide_context`` of a window of the newest units as context,
        none crossing one of ``bounds`` (the starts of conditioning segments)."""
        w, spans, have = self.window_units, [], start
        keep = min(int(w * self.config.slide_context), w - self.align)  # at least one frame is new
        while have < start + length:
            ctx = min(have, keep) // self.align * self.align
            next_bound = min([x for x in bounds if x > have], default=start + length)
            spans.append((have - ctx, have, min(have - ctx + w, start + length, next_bound)))
            have = spans[-1][2]
        return spans

    @torch.inference_mode()
    def _extend(
        self,
        prefix: torch.Tensor,
        n_new: int,
        sampling: SamplingConfig,
        *,
        cond_len: int,
        generator: torch.Generator | None,
        progress: Progress,
        done: int,
        total: int,
        chroma: torch.Tensor | None = None,
        beats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample ``n_new`` ids after ``prefix`` ``[B, P]`` with the KV cache; the j-th from
        :meth:`target_span`. With guidance, the NULL-conditioned copy runs in the same batch (and
        without the pitch classes ``chroma`` and beat phases ``beats`` ``[B, P + n_new]``, if given; it
        keeps the beat phases unless ``beat_guidance``);
        ``progress(done + j, total)`` after each id."""
        b = prefix.shape[0]
        use_cfg = sampling.guidance != 1.0 and cond_len > 0
        if use_cfg:
            prefix = with_unconditional(prefix, cond_len)
            if chroma is not None:
                chroma = torch.cat([chroma, torch.full_like(chroma, -1)])
            if beats is not None:
                beats = torch.cat([beats, torch.full_like(beats, -1) if self.config.beat_guidance else beats])
        tf, p = self.transformer, prefix.shape[1]
        # a compiled step multiplies by the weights themselves (FBGEMM's packed copies are opaque to it)
        half = False if self.compile_decoding else self.float16_weights
        cache = tf.new_cache(prefix.shape[0], p + n_new, float16_weights=half)
        pitch, phase = (None if x is None else x[:, :p] for x in (chroma, beats))
        hidden = tf.hidden(prefix, cache, self.extra_embeddings(prefix, pitch, phase))[:, -1]
        if self.cuda_graphs or self.compile_decoding:
            decode = StaticDecoder(tf, cache, graph=self.cuda_graphs, compiled=self.compile_decoding)
        else:
            decode = functools.partial(tf.decode, cache=cache)
        steps = self.step_embeddings(prefix, p + n_new)
        frames = self.frame_embeddings(chroma, beats)
        if frames is not None:
            steps = frames if steps is None else steps + frames
        out = torch.empty(b, n_new, dtype=torch.long, device=prefix.device)
        for j in range(n_new):
            lo, hi = self.target_span(j)
            logits = tf.logits(hidden, lo, hi, cache)  # only this step's id range
            step_logits = guide(logits[:b], logits[b:], sampling.guidance) if use_cfg else logits
            ids = sample(step_logits, sampling, 0, hi=hi - lo, generator=generator) + lo
            out[:, j] = ids
            if j + 1 < n_new:  # id j is fed at position p + j
                hidden = decode(
                    ids.repeat(2) if use_cfg else ids, extra=None if steps is None else steps[:, p + j]
                )
            if progress is not None:
                progress(done + j + 1, total)
        return out


@register_model("semantic_lm")
class SemanticStage(StageLM):
    """Stage 1: conditioning tokens -> semantic tokens."""

    stage = "semantic"

    def token_layout(self) -> TokenLayout:
        layout = self.cond_layout()
        layout.add("semantic", self.config.semantic_clusters)
        return layout

    @property
    def units_per_second(self) -> float:
        return self.config.semantic_rate

    @property
    def window_units(self) -> int:
        return max(2, round(self.config.lm.window_seconds * self.config.semantic_rate))

    def sequence(self, cond, inputs, target):
        sep = cond.new_full((cond.shape[0], 1), SEP)
        return [(cond, "cond"), (sep, "context"), (self.target_ids(target), "target")]

    def training_window(self, record, rng):
        sem = record["semantic"].long()
        n = self.window_units
        start = rng.randrange(max(1, len(sem) - n + 1))
        return start, None, sem[None, start : start + n]

    def target_ids(self, units):
        return units.long() + self.layout.offset("semantic")

    def target_units(self, ids):
        return ids - self.layout.offset("semantic")

    def target_span(self, j):
        return self.layout.span("semantic")


class _AcousticStage(StageLM):
    """Shared by the coarse and fine stages: units are codec frames, flattened frame-major."""

    align = 2  # a window starts on a semantic token (two codec frames)

    @property
    def first_level(self) -> int:
        """The first RVQ level this stage generates."""
        raise NotImplementedError

    @property
    def units_per_second(self) -> float:
        return self.config.frame_rate

    @property
    def window_units(self) -> int:
        """Codec frames in the training window (even, so semantic tokens align)."""
        return max(2, 2 * round(self.config.lm.window_seconds * self.config.frame_rate / 2))

    def add_levels(self, layout: TokenLayout, n: int) -> TokenLayout:
        for i in range(n):
            layout.add(f"level{i}", self.config.codec_codebook)
        return layout

    def flat_levels(self, codes: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Codes ``[B, L, F]`` of RVQ levels ``first..first+L`` -> frame-major offset ids ``[B, F*L]``."""
        offsets = self.layout.levels("level", first + codes.shape[1])[first:].to(codes.device)
        return rearrange(codes.long() + offsets[None, :, None], "b l f -> b (f l)")

    def target_ids(self, units):
        return self.flat_levels(units, self.first_level)

    def target_units(self, ids):
        offsets = self.layout.levels("level", self.first_level + self.levels)[self.first_level :]
        return rearrange(ids, "b (f l) -> b l f", l=self.levels) - offsets.to(ids.device)[None, :, None]

    def target_span(self, j):
        return self.layout.span(f"level{self.first_level + j % self.levels}")


@register_model("coarse_lm")
class CoarseStage(_AcousticStage):
    """Stage 2: conditioning + semantic tokens -> coarse acoustic tokens (first RVQ levels)."""

    stage = "coarse"

    def __init__(self, config: StageConfig):
        super().__init__(config)
        self.aligned_semantic_embedding = None
        if config.aligned_semantic:
            self.aligned_semantic_embedding = nn.Embedding(config.semantic_clusters, config.lm.dim)
            nn.init.zeros_(self.aligned_semantic_embedding.weight)

    def token_layout(self) -> TokenLayout:
        layout = self.cond_layout()
        layout.add("semantic", self.config.semantic_clusters)
        return self.add_levels(layout, self.config.coarse_levels)

    @property
    def first_level(self) -> int:
        return 0

    @property
    def levels(self) -> int:
        return self.config.coarse_levels

    @property
    def window_inputs_len(self) -> int:
        return self.window_units // 2 + 1  # semantic tokens and their SEP

    @property
    def input_ids(self) -> tuple[int, int]:
        return self.layout.span("semantic")

    def window_inputs(self, inputs, start, end):
        return inputs[:, start // 2 : (end + 1) // 2]

    def step_embeddings(self, tokens, length):
        """With ``aligned_semantic``: at each position from the SEP before the coarse ids on, the
        embedding of the semantic token under the frame of the *next* id (the one it predicts)."""
        if self.aligned_semantic_embedding is None:
            return None
        lo, hi = self.layout.span("semantic")
        first = self.cond_len + 1  # the semantic ids follow the conditioning and a SEP
        count = ((tokens >= lo) & (tokens < hi)).sum(1, keepdim=True)  # [B, 1]; rows may be shorter
        semantic = (tokens[:, first : first + max(int(count.max()), 1)] - lo).clamp(0, hi - lo - 1)
        # index of the coarse id predicted at each position: 0 at the SEP after the semantic ids
        k = torch.arange(length, device=tokens.device)[None] - (first + count)
        frame = k.clamp(min=0) // (2 * self.levels)  # a semantic token spans two codec frames
        ids = semantic.gather(1, frame.minimum((count - 1).clamp(min=0)))  # past a short row: its last
        return self.aligned_semantic_embedding(ids) * (k >= 0).unsqueeze(-1)

    def sequence(self, cond, inputs, target):
        sep = cond.new_full((cond.shape[0], 1), SEP)
        semantic = inputs.long() + self.layout.offset("semantic")
        return [
            (cond, "cond"),
            (sep, "context"),
            (semantic, "context"),
            (sep, "context"),
            (self.target_ids(target), "target"),
        ]

    def training_window(self, record, rng):
        codes = record["codec"][: self.levels].long()
        f = min(self.window_units, codes.shape[-1] // 2 * 2)
        start = 2 * rng.randrange(max(1, (codes.shape[-1] - f) // 2 + 1))
        return start, record["semantic"].long()[None], codes[None, :, start : start + f]


@register_model("fine_lm")
class FineStage(_AcousticStage):
    """Stage 3: coarse acoustic tokens -> fine acoustic tokens (remaining RVQ levels)."""

    stage = "fine"
    conditioned = False

    def token_layout(self) -> TokenLayout:
        return self.add_levels(TokenLayout(), self.config.codec_levels)

    @property
    def first_level(self) -> int:
        return self.config.coarse_levels

    @property
    def levels(self) -> int:
        return self.config.fine_levels

    @property
    def window_inputs_len(self) -> int:
        return self.window_units * self.config.coarse_levels

    @property
    def input_ids(self) -> tuple[int, int]:
        return self.layout.offset("level0"), self.layout.span(f"level{self.config.coarse_levels - 1}")[1]

    def window_inputs(self, inputs, start, end):
        return inputs[..., start:end]

    def sequence(self, cond, inputs, target):
        sep = inputs.new_full((inputs.shape[0], 1), SEP)
        return [(self.flat_levels(inputs), "context"), (sep, "context"), (self.target_ids(target), "target")]

    def window_spans(self, start: int, length: int) -> list[tuple[int, int, int]]:
        """(first frame, first kept, end) of the windows that cover frames ``start .. start + length``
        side by side: each after the first starts ``window_burn_in`` before the frames it keeps, the
        last moves back to end with the span (what it samples before its kept frames is dropped)."""
        w = min(self.window_units, length)
        burn = min(round(self.config.window_burn_in * self.units_per_second), w - 1)
        spans, kept = [], start
        while kept < start + length:
            first = min(kept - (burn if kept > start else 0), start + length - w)
            spans.append((first, kept, min(first + w, start + length)))
            kept = spans[-1][2]
        return spans

    def rows_per_sample(self, seconds: float) -> int:
        if not self.config.parallel_windows:
            return 1
        return len(self.window_spans(0, max(1, round(seconds * self.units_per_second))))

    @torch.no_grad()
    def generate(
        self, cond, length, *, inputs=None, prompt=None, sampling=None, generator=None, progress=None
    ):
        """Fine codes ``[B, fine_levels, length]`` for the coarse codes ``inputs`` after the ``prompt``
        frames; with ``parallel_windows`` every window is sampled at once (the prompt's fine codes
        are then not read: no window sees fine codes it did not sample)."""
        if not self.config.parallel_windows or length <= 0:
            return super().generate(
                cond, length, inputs=inputs, prompt=prompt, sampling=sampling, generator=generator,
                progress=progress,
            )  # fmt: skip
        sampling = sampling or self.default_sampling()
        p0 = 0 if prompt is None else prompt.shape[-1]
        spans = self.window_spans(p0, length)
        n = spans[0][2] - spans[0][0]  # every window is as long
        windows = torch.cat([self.window_inputs(inputs, s, s + n) for s, _, _ in spans])  # [(k b), c, n]
        empty = torch.zeros(windows.shape[0], self.levels, 0, dtype=torch.long, device=windows.device)
        prefix = torch.cat([p for p, _ in self.sequence(None, windows, empty)], dim=1)
        new = self._extend(
            prefix, n * self.levels, sampling, cond_len=0, generator=generator, progress=progress,
            done=0, total=n * self.levels,
        )  # fmt: skip
        units = rearrange(self.target_units(new), "(k b) l n -> k b l n", k=len(spans))
        return torch.cat([units[i, ..., a - s : e - s] for i, (s, a, e) in enumerate(spans)], dim=-1)

    @torch.no_grad()
    def resample_fine(self, codes: torch.Tensor, *, sampling=None, generator=None) -> torch.Tensor:
        """Codec codes ``[B, codec_levels, F]`` with their fine levels sampled anew by this LM from
        their coarse levels: what the codec's decoder gets in a generated piece (to tune it on)."""
        if codes.dim() != 3 or codes.shape[1] != self.config.codec_levels:
            raise ValueError(
                f"codes must be [B, {self.config.codec_levels}, frames] for this fine LM, got {list(codes.shape)}"
            )
        coarse = codes[:, : self.config.coarse_levels]
        fine = self.generate(None, codes.shape[-1], inputs=coarse, sampling=sampling, generator=generator)
        return torch.cat([coarse, fine.to(codes)], dim=1)

    def training_window(self, record, rng):
        codes = record["codec"].long()
        f = min(self.window_units, codes.shape[-1])
        start = rng.randrange(max(1, codes.shape[-1] - f + 1))
        c = self.config.coarse_levels
        return start, codes[None, :c], codes[None, c:, start : start + f]


STAGES: dict[str, type[StageLM]] = {"semantic": SemanticStage, "coarse": CoarseStage, "fine": FineStage}
