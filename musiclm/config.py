"""Typed dataclass configs for every component, and the ``tiny`` / ``paper`` presets.

A config says *what* a model is (sizes, rates, window lengths); it is saved next to the weights in
every checkpoint, so a model can be rebuilt without the code that trained it. Token counts are always
derived from seconds and rates (see the ``*_rate`` properties), never written as literals.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from musiclm.errors import ConfigError

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------------


# the integrated loudness (ITU-R BS.1770, LUFS) generated audio is normalised to: EBU R128's broadcast
# level, which generated music reaches without a limiter (normalisation keeps peaks below -1 dBFS).
# Streaming's -14 is beyond 99 % of the shipped model's clips and 96 % of the benchmark's own, so each
# came out at its peak ceiling instead and a louder prompt no louder (benchmarks/README.md)
TARGET_LUFS = -23.0


def require(config: Any, ok: bool, message: str) -> None:
    """A config field out of range is one line naming the config and the field, at construction
    (and so when a checkpoint's config.json is read), not a tensor error deep in a model. These
    helpers serve every dataclass config's ``__post_init__``, in this module and beside the models."""
    if not ok:
        raise ConfigError(f"{type(config).__name__}: {message}")


def require_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        ok = (
            not isinstance(value, bool)
            and isinstance(value, (int, float))
            and math.isfinite(value)
            and value > 0
        )
        require(config, ok, f"{name} must be positive, got {value!r}")


def require_share(config: Any, *names: str, below_one: bool = False) -> None:
    for name in names:
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and 0 <= value and (value < 1 if below_one else value <= 1)
        require(config, ok, f"{name} must lie in [0, 1{')' if below_one else ']'}, got {value!r}")


def require_heads(config: Any, dim: str, heads: str) -> None:
    require(
        config,
        getattr(config, dim) % getattr(config, heads) == 0,
        f"{dim} = {getattr(config, dim)} is not a multiple of {heads} = {getattr(config, heads)}",
    )


@dataclass
class CodecConfig:
    """SoundStream codec: causal SEANet encoder/decoder around a residual vector quantizer."""

    sample_rate: int = 16000
    channels: int = 16  # width of the first encoder block; doubled at every stride
    strides: tuple[int, ...] = (2, 4, 5, 8)  # product = hop length (320 -> 50 Hz at 16 kHz)
    latent_dim: int = 128
    num_quantizers: int = 8
    codebook_size: int = 1024
    num_coarse_quantizers: int = 3  # levels [0, n) are "coarse", the rest "fine" (paper 4 of 12)
    quantizer_dropout: float = 0.5  # probability of training with a random prefix of the levels
    commitment_weight: float = 1.0
    codebook_decay: float = 0.99
    dead_code_threshold: float = 0.1  # a code is revived when used < this x the uniform share
    encoder: str = "seanet"  # "seanet" (strided convs) or "stft" (ConvNeXt at 50 Hz on spectra, faster)
    stft_dim: int = 256  # width of the STFT encoder's ConvNeXt blocks
    stft_depth: int = 4
    decoder: str = "seanet"  # "seanet" (transposed convs, causal) or "istft" (Vocos-style, faster)
    istft_dim: int = 256  # width of the iSTFT decoder's ConvNeXt blocks
    istft_depth: int = 8
    istft_upsample: int = 2  # STFT frames per codec frame (hop = hop_length / istft_upsample)

    def __post_init__(self):
        require_positive(
            self, "sample_rate", "channels", "latent_dim", "num_quantizers", "stft_dim", "stft_depth"
        )
        require_positive(self, "istft_dim", "istft_depth", "istft_upsample")
        require(self, self.codebook_size >= 2, f"codebook_size must be >= 2, got {self.codebook_size}")
        require(
            self,
            len(self.strides) > 0 and all(isinstance(x, int) and x >= 1 for x in self.strides),
            f"strides must be positive integers, got {self.strides!r}",
        )
        require(
            self,
            1 <= self.num_coarse_quantizers <= self.num_quantizers,
            f"num_coarse_quantizers must lie in [1, num_quantizers = {self.num_quantizers}], "
            f"got {self.num_coarse_quantizers}",
        )
        require_share(self, "quantizer_dropout")
        require_share(self, "codebook_decay", below_one=True)
        require(
            self, self.commitment_weight >= 0, f"commitment_weight must be >= 0, got {self.commitment_weight}"
        )
        require(self, self.dead_code_threshold >= 0, "dead_code_threshold must be >= 0")
        require(
            self,
            self.encoder in ("seanet", "stft"),
            f"encoder must be 'seanet' or 'stft', got {self.encoder!r}",
        )
        require(
            self,
            self.decoder in ("seanet", "istft"),
            f"decoder must be 'seanet' or 'istft', got {self.decoder!r}",
        )
        require(
            self,
            self.hop_length % self.istft_upsample == 0,
            f"istft_upsample = {self.istft_upsample} does not divide the hop length {self.hop_length}",
        )

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_fine_quantizers(self) -> int:
        return self.num_quantizers - self.num_coarse_quantizers


@dataclass
class SemanticConfig:
    """Self-supervised (HuBERT / w2v-BERT style) model + k-means giving semantic tokens."""

    sample_rate: int = 16000
    hop_length: int = 640  # 25 Hz at 16 kHz
    n_fft: int = 1024
    n_mels: int = 64
    dim: int = 192
    depth: int = 4
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    layer: int = 3  # transformer layer whose output is clustered (paper: layer 7 of w2v-BERT)
    num_clusters: int = 256  # paper 1024
    num_target_clusters: int = 100  # k-means classes of the masked-prediction targets
    mask_prob: float = 0.08  # probability that a frame starts a masked span
    mask_span: int = 5
    crop_seconds: float = 8.0

    def __post_init__(self):
        require_positive(
            self, "sample_rate", "hop_length", "n_fft", "n_mels", "dim", "depth", "heads", "ff_mult"
        )
        require_positive(self, "num_clusters", "num_target_clusters", "mask_span", "crop_seconds")
        require_heads(self, "dim", "heads")
        require(
            self,
            0 <= self.layer <= self.depth,
            f"layer must lie in [0, depth = {self.depth}], got {self.layer}",
        )
        require_share(self, "mask_prob")
        require_share(self, "dropout", below_one=True)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass
class MulanConfig:
    """MuLaN: an audio tower and a text tower sharing a normalised embedding space, plus its RVQ."""

    sample_rate: int = 16000
    embed_dim: int = 128
    # audio tower: spectrogram transformer over log-mel patches
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    patch_frames: int = 8
    audio_dim: int = 192
    audio_depth: int = 4
    audio_heads: int = 4
    # text tower: "minilm" (pretrained all-MiniLM-L6-v2) or "own" (small transformer)
    text_tower: str = "own"
    text_vocab_size: int = 4096
    text_dim: int = 192
    text_depth: int = 4
    text_heads: int = 4
    max_text_tokens: int = 64
    dropout: float = 0.1
    # long clips: mean of embeddings over windows (paper 10 s windows at 1 s stride)
    window_seconds: float = 10.0
    window_hop_seconds: float = 1.0
    # conditioning tokens: RVQ over the embedding (paper 12 x 1024)
    num_quantizers: int = 12
    codebook_size: int = 1024

    def __post_init__(self):
        require_positive(self, "sample_rate", "embed_dim", "n_fft", "hop_length", "n_mels", "patch_frames")
        require_positive(
            self, "audio_dim", "audio_depth", "audio_heads", "text_vocab_size", "text_dim", "text_depth"
        )
        require_positive(
            self, "text_heads", "max_text_tokens", "window_seconds", "window_hop_seconds", "num_quantizers"
        )
        require(self, self.codebook_size >= 2, f"codebook_size must be >= 2, got {self.codebook_size}")
        require_heads(self, "audio_dim", "audio_heads")
        require_heads(self, "text_dim", "text_heads")
        require(
            self,
            self.text_tower in ("own", "minilm"),
            f"text_tower must be 'own' or 'minilm', got {self.text_tower!r}",
        )
        require_share(self, "dropout", below_one=True)


@dataclass
class MelodyConfig:
    """Melody embedding model (paper section 6 / App. C) and its RVQ tokens."""

    sample_rate: int = 16000
    n_fft: int = 2048  # long window: pitch resolution matters more than time here
    hop_length: int = 320
    n_mels: int = 96
    fmin: float = 50.0
    fmax: float = 4000.0  # melodies live below 4 kHz; the rest is mostly timbre
    patch_frames: int = 4  # ViT patch = this many mel frames x all mel bins
    dim: int = 128
    depth: int = 4
    heads: int = 4
    dropout: float = 0.1
    embed_dim: int = 192
    window_seconds: float = 4.0
    hop_seconds: float = 3.0
    num_quantizers: int = 24
    codebook_size: int = 512

    def __post_init__(self):
        require_positive(
            self, "sample_rate", "n_fft", "hop_length", "n_mels", "patch_frames", "dim", "depth", "heads"
        )
        require_positive(self, "embed_dim", "window_seconds", "hop_seconds", "num_quantizers")
        require(self, self.codebook_size >= 2, f"codebook_size must be >= 2, got {self.codebook_size}")
        require_heads(self, "dim", "heads")
        require(
            self,
            0 <= self.fmin < self.fmax <= self.sample_rate / 2,
            f"need 0 <= fmin < fmax <= sample_rate / 2, got {self.fmin}, {self.fmax}",
        )
        require_share(self, "dropout", below_one=True)

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * self.sample_rate)


@dataclass
class LoudnessConfig:
    """The loudness a prompt asks for (:mod:`musiclm.mulan.loudness`): each sentence of the prompt is
    matched softly to the sentences of the training captions, and each of those carries a fitted
    contribution to the integrated loudness of the clip."""

    text_encoder: str = "minilm"  # all-MiniLM-L6-v2, as MuLaN's "minilm" text tower (shared with it)
    hidden_size: int = 384  # the encoder's width
    max_text_tokens: int = 64  # per sentence
    anchors: int = 1  # training sentences a prompt's sentences are matched to
    # softmax temperature of the match over cosine similarities: low enough that a sentence goes to
    # its nearest known sentences ("gentle and hushed" to "quiet", "softly played"), chosen on held-out clips
    temperature: float = 0.03
    # the training clips' median loudness (LUFS): the level that output normalisation moves to its
    # target, so that a prompt that names no dynamics lands near that target
    reference_lufs: float = -23.0
    # the range a prediction is kept in (the training clips' 1st and 99th percentiles): a prompt unlike
    # any caption never asks for a level no training clip had
    min_lufs: float = -70.0
    max_lufs: float = 0.0

    def __post_init__(self):
        if self.text_encoder != "minilm":
            raise ValueError(f"text_encoder {self.text_encoder!r}: only 'minilm' is supported")
        if min(self.hidden_size, self.max_text_tokens, self.anchors) < 1 or self.temperature <= 0:
            raise ValueError("hidden_size, max_text_tokens, anchors and temperature must be positive")
        if not self.min_lufs <= self.reference_lufs <= self.max_lufs:
            raise ValueError(
                f"need min_lufs <= reference_lufs <= max_lufs, got {self.min_lufs}, "
                f"{self.reference_lufs}, {self.max_lufs}"
            )


# what the LMs can read of a prompt: its MuLaN text tokens (the paper's) or the MuLaN tokens of its
# audio prototype (PrototypesConfig.condition)
CONDITIONING_SOURCES = ("text", "prototype")


@dataclass
class PrototypesConfig:
    """Candidate ranking by audio prototypes (:mod:`musiclm.mulan.prototypes`): the MuLaN embeddings
    of captioned training clips, text and audio side by side."""

    entries: int = 1  # training clips kept
    embed_dim: int = 128  # MuLaN's joint embedding width
    # the nearest captions whose clips' audio embeddings are averaged into a prompt's prototype: few
    # enough to stay the prompt's kind of music, enough to average out any one clip (chosen on
    # held-out prompts: benchmarks/README.md, "Ranking the candidates")
    neighbours: int = 32
    seconds: float = 10.0  # of each clip embedded (from its start), as the clips MuLaN conditions on
    # the LMs read the MuLaN tokens of each prompt's prototype instead of its text's: tokens of the
    # audio side, which the LMs were trained on (a departure from the paper; measured on validation
    # prompts and off in the shipped bundle: benchmarks/README.md, "Conditioning on the prompt's
    # prototype")
    condition: bool = False

    def __post_init__(self):
        if min(self.entries, self.embed_dim, self.neighbours) < 1 or self.seconds <= 0:
            raise ValueError("entries, embed_dim, neighbours and seconds must be positive")


@dataclass
class LMConfig:
    """One decoder-only token language model (semantic, coarse or fine stage)."""

    dim: int = 256
    depth: int = 4
    heads: int = 4
    # key/value heads: fewer than ``heads`` is grouped-query attention (a group of query heads
    # shares one key/value head), which divides the KV cache that every decoding step reads;
    # None = one per query head, as in the paper
    kv_heads: int | None = None
    ff_dim: int = 1024
    dropout: float = 0.1  # of the residual branches in training
    # of the attention weights in training (None: ``dropout``); at 0 the fused attention kernel runs,
    # which keeps no T x T matrix for the backward pass (on a CPU the unfused one runs otherwise)
    attn_dropout: float | None = None
    window_seconds: float = 10.0  # training crop of the generated stream (paper 30 / 10 / 3 s)
    temperature: float = 1.0  # default sampling temperature (paper 1.0 / 0.95 / 0.4)
    # default truncation of sampling (None = off): the k likeliest ids, or the smallest set of ids
    # holding top_p of the probability; a request's own top-k / top-p replaces these
    top_k: int | None = None
    top_p: float | None = None
    guidance: float = 1.0  # default classifier-free guidance scale of sampling (1 = off), by measurement
    cond_drop_prob: float = 0.1  # conditioning dropped in training, for classifier-free guidance

    def __post_init__(self):
        require_positive(self, "dim", "depth", "heads", "ff_dim", "window_seconds", "temperature")
        require_heads(self, "dim", "heads")
        if self.kv_heads is not None:
            ok = isinstance(self.kv_heads, int) and self.kv_heads >= 1 and self.heads % self.kv_heads == 0
            require(self, ok, f"kv_heads must divide heads = {self.heads}, got {self.kv_heads!r}")
        require_share(self, "dropout", below_one=True)
        if self.attn_dropout is not None:
            require_share(self, "attn_dropout", below_one=True)
        if self.top_k is not None:
            require(
                self,
                isinstance(self.top_k, int) and self.top_k >= 1,
                f"top_k must be >= 1, got {self.top_k!r}",
            )
        if self.top_p is not None:
            require(self, 0 < self.top_p <= 1, f"top_p must lie in (0, 1], got {self.top_p!r}")
        ok = isinstance(self.guidance, (int, float)) and math.isfinite(self.guidance) and self.guidance >= 0
        require(self, ok, f"guidance must be a finite number >= 0 (1 = off), got {self.guidance!r}")
        require_share(self, "cond_drop_prob")

    @property
    def attention_dropout(self) -> float:
        return self.dropout if self.attn_dropout is None else self.attn_dropout


@dataclass
class MusicLMConfig:
    """Everything a MusicLM bundle is made of."""

    codec: CodecConfig = field(default_factory=CodecConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    mulan: MulanConfig = field(default_factory=MulanConfig)
    melody: MelodyConfig = field(default_factory=MelodyConfig)
    semantic_lm: LMConfig = field(default_factory=lambda: LMConfig(window_seconds=10.0))
    coarse_lm: LMConfig = field(default_factory=lambda: LMConfig(window_seconds=4.0, temperature=0.95))
    fine_lm: LMConfig = field(default_factory=lambda: LMConfig(window_seconds=2.0, temperature=0.4))


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def tiny() -> MusicLMConfig:
    """The shipped default: paper architecture at 16 kHz, small enough to train on 2 CPU cores and to
    ship inside the package (smaller conditioning codebooks and LM widths keep the bundle small)."""
    # no dropout of the attention weights: the fused attention kernel makes a CPU training step about
    # twice as fast, for the same held-out loss a step (benchmarks/README.md, "Training throughput")
    lm = dict(dim=192, depth=4, heads=4, ff_dim=768, dropout=0.1, attn_dropout=0.0)
    return MusicLMConfig(
        # STFT encoder and iSTFT decoder: at equal CPU training time they reconstruct real music far
        # better than SEANet's (benchmarks/README.md), and encode 8x / decode 7x faster
        codec=CodecConfig(encoder="stft", decoder="istft"),
        mulan=MulanConfig(num_quantizers=12, codebook_size=256),
        melody=MelodyConfig(num_quantizers=12, codebook_size=256),
        semantic_lm=LMConfig(**lm, window_seconds=10.0, temperature=1.0),
        coarse_lm=LMConfig(**lm, window_seconds=4.0, temperature=0.95),
        # the paper samples fine tokens at 0.4; LMs this small sound dull and lose the genre there
        # (0.7 measured best, benchmarks/README.md)
        fine_lm=LMConfig(**lm, window_seconds=2.0, temperature=0.7),
    )


def paper() -> MusicLMConfig:
    """Hyperparameters of Agostinelli et al. (2023), sections 3-4."""
    lm = dict(dim=1024, depth=24, heads=16, ff_dim=4096, dropout=0.1)
    return MusicLMConfig(
        codec=CodecConfig(
            sample_rate=24000,
            channels=32,
            strides=(3, 4, 5, 8),  # 480 -> 50 Hz
            latent_dim=128,
            num_quantizers=12,
            codebook_size=1024,
            num_coarse_quantizers=4,
        ),
        semantic=SemanticConfig(
            sample_rate=16000,
            hop_length=640,
            n_mels=80,
            dim=1024,
            depth=24,
            heads=16,
            layer=7,
            num_clusters=1024,
            num_target_clusters=500,
        ),
        mulan=MulanConfig(
            audio_dim=768,
            audio_depth=12,
            audio_heads=12,
            text_tower="own",
            text_vocab_size=32000,
            text_dim=768,
            text_depth=12,
            text_heads=12,
            max_text_tokens=128,
            num_quantizers=12,
            codebook_size=1024,
        ),
        melody=MelodyConfig(embed_dim=192, num_quantizers=24, codebook_size=512),
        semantic_lm=LMConfig(**lm, window_seconds=30.0, temperature=1.0),
        coarse_lm=LMConfig(**lm, window_seconds=10.0, temperature=0.95),
        fine_lm=LMConfig(**lm, window_seconds=3.0, temperature=0.4),
    )


PRESETS = {"tiny": tiny, "paper": paper}


def get_preset(name: str) -> MusicLMConfig:
    """Return a fresh copy of the named preset (``tiny`` or ``paper``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


# --------------------------------------------------------------------------------------------------
# (De)serialisation
# --------------------------------------------------------------------------------------------------


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""
    return dataclasses.asdict(config)


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        return config_from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Rebuild a dataclass config from :func:`config_to_dict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} for {cls.__name__}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ConfigError, ValueError, TypeError) as e:  # a field out of range, checked by the class
        raise ConfigError(f"{where}: {e}") from None


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Human-readable list of fields where two configs of the same type differ."""
    da, db = (config_to_dict(a), config_to_dict(b)) if dataclasses.is_dataclass(a) else (a, b)
    out: list[str] = []
    for key in sorted(set(da) | set(db)):
        va, vb = da.get(key), db.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} != {vb!r}")
    return out
