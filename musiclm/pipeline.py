"""MusicLM: text -> semantic -> coarse -> fine tokens -> audio, with MuLaN reranking (paper 3, 6).

:meth:`MusicLM.generate` samples ``candidates`` pieces per prompt in one batch and returns the one
whose MuLaN audio embedding is closest to the prompt's text embedding (the paper's reranking);
:meth:`MusicLM.continue_audio` uses the tokens of an audio prompt as prefix; :meth:`MusicLM.story`
changes the text conditioning at each segment boundary. All three describe their request as a
:class:`~musiclm.lm.conditioning.Conditioning` value (and prompt tokens) and run the same three
sliding stage loops (:meth:`MusicLM.sample_tokens`). Every check that can fail runs before any
sampling starts. The bundle format (loading, compatibility) is :mod:`musiclm.bundle`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from musiclm import checks
from musiclm.audio import (
    PEAK_DBFS,
    PITCH_CLASS_RATE,
    audio_info,
    check_waveform,
    integrated_loudness,
    load_audio,
    pitch_classes,
)
from musiclm.bundle import COMPONENTS, check_compatible, load_bundle
from musiclm.checks import Guidance
from musiclm.config import CONDITIONING_SOURCES
from musiclm.errors import AudioError, ConfigError, PromptError
from musiclm.lm.conditioning import Conditioning
from musiclm.lm.sampling import SamplingConfig
from musiclm.lm.stages import CoarseStage, FineStage, SemanticStage
from musiclm.tempo import (
    beat_phase_grid,
    continued_beat_phases,
    tempo_from_prompt,
    track_beats,
)

DECODE_BATCH = 8  # candidates decoded at once
STORY_GAIN_RAMP = 0.5  # seconds over which a story's level moves from one segment's to the next
STAGE_NAMES = ("semantic", "coarse", "fine")
# tqdm bars (True), silence (False), or a callback ``(stage, done, total)``; stages are STAGE_NAMES,
# then "decode" and "rerank". An exception raised by the callback stops the request.
Progress = bool | Callable[[str, int, int], None]


@dataclass
class Generation:
    """What :meth:`MusicLM.generate` returns (one row per prompt)."""

    audio: torch.Tensor  # [P, T] the chosen candidate of each prompt
    sample_rate: int
    # [P, N] every candidate's ranking score: MuLaN audio cosine to the prompt's audio prototype where
    # the bundle has prototypes, else MuLaN text-audio cosine (:meth:`MusicLM.rank_targets`)
    scores: torch.Tensor
    chosen: torch.Tensor  # [P] index of the returned candidate (argmax of scores)
    candidates: torch.Tensor  # [P, N, T] every candidate
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)  # chosen semantic / coarse / fine
    cond_tokens: torch.Tensor | None = None  # [P, Mq] the MuLaN tokens the LMs read (conditioning_tokens)
    timings: dict[str, float] = field(default_factory=dict)
    segment_starts: list[float] = field(default_factory=list)  # story mode: where each prompt takes over (s)
    # the integrated loudness (LUFS) each prompt asks for, read by the bundle's loudness head, which
    # every clip and candidate of the prompt is set to; and its distance (dB) from the head's reference
    # level (a prompt that names no dynamics: near 0), for output normalisation to keep (a story: each
    # segment at its own prompt's level, these the segments' mean by duration). None without a
    # loudness head, for unconditional samples and for continuations
    prompt_lufs: torch.Tensor | None = None  # [P]
    prompt_level_db: torch.Tensor | None = None  # [P]


class MusicLM:
    """The whole text-to-music model. Build with :meth:`from_pretrained` or from loaded components."""

    def __init__(self, components: dict[str, torch.nn.Module], name: str = "musiclm"):
        self.name = name
        self.codec = components["codec"]
        self.semantic = components["semantic"]
        self.mulan = components["mulan"]
        self.melody = components.get("melody")
        self.semantic_lm: SemanticStage = components["semantic_lm"]
        self.coarse_lm: CoarseStage = components["coarse_lm"]
        self.fine_lm: FineStage = components["fine_lm"]
        self.loudness = components.get("loudness")
        self.prototypes = components.get("prototypes")
        self.conditioning = (
            "prototype" if self.prototypes is not None and self.prototypes.config.condition else "text"
        )
        for module in self.modules().values():
            module.eval()
        text = getattr(self.mulan, "text", None)
        if self.loudness is not None and getattr(self.mulan.config, "text_tower", None) == "minilm":
            self.loudness.use_text_encoder(text.encoder, text.tokenizer)  # one MiniLM for both
        check_compatible(self.modules(), name)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default", device: str | torch.device | None = None):
        """Load a bundle directory (or a shipped bundle by name) onto ``device`` (default: GPU if any)."""
        name, components = load_bundle(name_or_path)
        return cls(components, name=name).to(checks.device(device))

    def modules(self) -> dict[str, torch.nn.Module]:
        """The loaded components by bundle name."""
        return {k: m for k in COMPONENTS if (m := getattr(self, k)) is not None}

    def to(self, device: str | torch.device) -> MusicLM:
        for module in self.modules().values():
            module.to(device)
        if self.device.type != "cuda":  # graphs are captured on a CUDA device only
            self.cuda_graphs = False
        return self

    @property
    def device(self) -> torch.device:
        return next(self.semantic_lm.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def has_melody(self) -> bool:
        return self._has_melody_tokens or self._reads_chroma

    @property
    def _has_melody_tokens(self) -> bool:
        return self.melody is not None and self.semantic_lm.config.melody_quantizers > 0

    @property
    def _reads_chroma(self) -> bool:
        return self.semantic_lm.config.melody_chroma or self.coarse_lm.config.melody_chroma

    @property
    def float16_weights(self) -> bool | None:
        """How the three LMs multiply in their decoding step
        (:attr:`musiclm.lm.stages.StageLM.float16_weights`): None (default) by float16 copies of the
        weights on a CPU that supports them, about twice as fast; False float32 throughout."""
        return self.semantic_lm.float16_weights

    @float16_weights.setter
    def float16_weights(self, value: bool | None) -> None:
        for lm in (self.semantic_lm, self.coarse_lm, self.fine_lm):
            lm.float16_weights = value

    @property
    def cuda_graphs(self) -> bool:
        """Whether the three LMs replay their decoding step as a CUDA graph
        (:attr:`musiclm.lm.stages.StageLM.cuda_graphs`): the same tokens as eager decoding, with one
        launch a step instead of hundreds of kernels dispatched from Python (benchmarks/README.md,
        "GPU"). Off by default; a model on a CUDA device only."""
        return self.semantic_lm.cuda_graphs

    @cuda_graphs.setter
    def cuda_graphs(self, value: bool) -> None:
        if value and self.device.type != "cuda":
            raise ConfigError(f"CUDA graphs need the model on a CUDA device; it is on {self.device}")
        for lm in (self.semantic_lm, self.coarse_lm, self.fine_lm):
            lm.cuda_graphs = bool(value)

    @property
    def compile_decoding(self) -> bool:
        """Whether the three LMs run a decoding step compiled by ``torch.compile``
        (:attr:`musiclm.lm.stages.StageLM.compile_decoding`): each layer's small operations fused
        into a few kernels, compiled at the first request (with :attr:`cuda_graphs`, what the graphs
        replay). Off by default: compiling costs more than it saves on a CPU."""
        return self.semantic_lm.compile_decoding

    @compile_decoding.setter
    def compile_decoding(self, value: bool) -> None:
        for lm in (self.semantic_lm, self.coarse_lm, self.fine_lm):
            lm.compile_decoding = bool(value)

    @property
    def reads_tempo(self) -> bool:
        """Whether the LMs read beat phases, so that a prompt's "80 bpm" (or ``bpm=``) sets the tempo."""
        return self.semantic_lm.config.beat_phase or self.coarse_lm.config.beat_phase

    def beat_phases(
        self, tempi: list[float | None], seconds: float, starts: tuple[float, ...] = (0.0,)
    ) -> torch.Tensor | None:
        """Beat-phase ids ``[1, F]`` at the semantic rate for a piece whose segments start at
        ``starts`` seconds with tempi ``tempi`` (None: none named), each segment's grid starting on a
        beat; None when the LMs do not read them or no segment names a tempo."""
        if not self.reads_tempo or all(t is None for t in tempi):
            return None
        rate = self.semantic_lm.config.semantic_rate
        frames = self._semantic_steps(seconds)
        out = torch.full((frames,), -1, dtype=torch.long)
        bounds = [round(t * rate) for t in starts] + [frames]
        for bpm, a, b in zip(tempi, bounds, bounds[1:]):
            if bpm is not None and b > a:
                out[a:b] = beat_phase_grid(bpm, b - a, frame_rate=rate)
        return out[None].to(self.device)

    def prompt_beats(
        self, prompts: list[str], seconds: float, *, bpm: float | None = None
    ) -> torch.Tensor | None:
        """Beat-phase ids ``[P, F]`` of each prompt's piece: a grid at ``bpm``, else at the tempo the
        prompt names, else none (-1); None when the LMs do not read them or no prompt has a tempo."""
        rows = [self.beat_phases([bpm or tempo_from_prompt(q)], seconds) for q in prompts]
        if all(r is None for r in rows):
            return None
        none = torch.full((1, self._semantic_steps(seconds)), -1, dtype=torch.long, device=self.device)
        return torch.cat([none if r is None else r for r in rows])

    # ------------------------------------------------------------------ conditioning

    def text_tokens(self, prompts: list[str]) -> torch.Tensor:
        """M_T: ``[P, Mq]`` MuLaN tokens of the prompts."""
        with torch.no_grad():
            return self.mulan.tokens_from_text(prompts).to(self.device)

    @property
    def conditioning(self) -> str:
        """What the LMs read of a prompt: "text" (its MuLaN text tokens, the paper's) or "prototype"
        (the MuLaN tokens of its audio prototype); the bundle's choice, settable to compare both."""
        return self._conditioning

    @conditioning.setter
    def conditioning(self, value: str) -> None:
        if value not in CONDITIONING_SOURCES:
            raise ConfigError(f"conditioning must be one of {CONDITIONING_SOURCES}, got {value!r}")
        if value == "prototype" and self.prototypes is None:
            raise ConfigError(f"{self.name} has no prototypes component to condition on")
        self._conditioning = value

    def conditioning_tokens(self, prompts: list[str]) -> torch.Tensor:
        """``[P, Mq]``: the MuLaN tokens the LMs read for the prompts, by :attr:`conditioning`: their
        text's (M_T, the paper's) or their audio prototypes' (:mod:`musiclm.mulan.prototypes`)."""
        if self.conditioning == "text":
            return self.text_tokens(prompts)
        with torch.no_grad():
            prototype = self.prototypes.prototype(self.mulan.embed_text(prompts))
            return self.mulan.tokens_from_embedding(prototype).to(self.device)

    def melody_tokens(
        self, melody: str | Path | torch.Tensor, sample_rate: int | None = None
    ) -> torch.Tensor:
        """``[1, W, Qm]`` melody tokens of a file or ``[T]`` waveform (4 s windows at a 3 s hop)."""
        if not self._has_melody_tokens:
            raise PromptError(f"{self.name} has no melody tokens (its LMs were trained without them)")
        wav = self._load_prompt_audio(melody, sample_rate, self.melody.sample_rate, what="melody")
        with torch.no_grad():
            return self.melody.tokens(wav[None].to(self.device), self.melody.sample_rate)

    def melody_conditioning(
        self, melody: str | Path | torch.Tensor, sample_rate: int | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the LMs read of a melody: its tokens ``[1, W, Qm]`` (:meth:`melody_tokens`) and its
        pitch class per semantic frame ``[1, F]`` (:func:`musiclm.audio.pitch_classes`), each None where the
        LMs were trained without it."""
        if not self.has_melody:
            raise PromptError(f"{self.name} has no melody conditioning (its LMs were trained without it)")
        tokens = self.melody_tokens(melody, sample_rate) if self._has_melody_tokens else None
        chroma = None
        if self._reads_chroma:
            rate = self.semantic_lm.config.semantic_rate
            wav = self._load_prompt_audio(melody, sample_rate, PITCH_CLASS_RATE, what="melody")
            chroma = pitch_classes(wav[None], PITCH_CLASS_RATE, frame_rate=rate).to(self.device)
        return tokens, chroma

    def prompt_conditioning(
        self,
        prompts: list[str],
        seconds: float,
        *,
        bpm: float | None = None,
        melody: str | Path | torch.Tensor | None = None,
        melody_sample_rate: int | None = None,
        unconditional: bool = False,
    ) -> Conditioning:
        """What the LMs read for ``seconds`` of music for each prompt: its MuLaN text tokens, the beat
        phases of the tempo it names (or ``bpm``) and the melody's tokens and pitch classes."""
        melody_tokens = chroma = None
        if melody is not None:
            melody_tokens, chroma = self.melody_conditioning(melody, melody_sample_rate)
            melody_tokens = None if melody_tokens is None else melody_tokens.expand(len(prompts), -1, -1)
            chroma = None if chroma is None else chroma.expand(len(prompts), -1)
        return Conditioning.constant(
            self.conditioning_tokens(prompts),
            melody_tokens,
            unconditional=unconditional,
            chroma=chroma,
            beats=self.prompt_beats(prompts, seconds, bpm=bpm),
        )

    def _load_prompt_audio(
        self, audio, sample_rate: int | None, target_rate: int, *, what: str
    ) -> torch.Tensor:
        if isinstance(audio, (str, Path)):
            try:
                wav, _ = load_audio(
                    audio, target_rate, min_seconds=0.5, max_seconds=checks.MAX_SECONDS, allow_silent=False
                )
            except AudioError as e:
                raise AudioError(f"{what}: {e}") from None
            return wav
        if not isinstance(audio, torch.Tensor):
            raise AudioError(f"{what} must be a file path or a waveform tensor, got {type(audio).__name__}")
        if sample_rate is None:
            raise AudioError(f"{what}: give the sample rate of the waveform")
        # the same checks as a file gets from load_audio, messages prefixed with ``what``
        return check_waveform(audio, sample_rate, target_rate, name=what, min_seconds=0.5, allow_silent=False)

    # ------------------------------------------------------------------ checks before any work

    def sampling_configs(
        self,
        temperatures: dict[str, float] | tuple[float, float, float] | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        *,
        guidance: Guidance = None,
    ) -> dict[str, SamplingConfig]:
        """Per-stage sampling: temperatures, top-k / top-p and guidance from each stage's config
        unless given (the paper's temperatures; guidance as measured for the LM: one scale for the
        semantic and coarse stages, or a pair). The fine stage samples unguided."""
        stages = {"semantic": self.semantic_lm, "coarse": self.coarse_lm, "fine": self.fine_lm}
        top_k, top_p, guidance = checks.top_k(top_k), checks.top_p(top_p), checks.guidance(guidance)
        if isinstance(temperatures, (tuple, list)):
            if len(temperatures) != len(STAGE_NAMES):
                raise PromptError(
                    f"temperatures: give {len(STAGE_NAMES)} ({', '.join(STAGE_NAMES)}), got {len(temperatures)}"
                )
            temperatures = dict(zip(STAGE_NAMES, temperatures, strict=True))
        temperatures = temperatures or {}
        unknown = sorted(set(temperatures) - set(STAGE_NAMES))
        if unknown:
            raise PromptError(
                f"temperatures: unknown stage(s) {unknown}; the stages are {', '.join(STAGE_NAMES)}"
            )
        out = {}
        for name, stage in stages.items():
            t = float(temperatures.get(name, stage.config.lm.temperature))
            if not (t > 0 and math.isfinite(t)):
                raise PromptError(f"{name} temperature must be > 0, got {t}")
            own = stage.config.lm
            out[name] = SamplingConfig(
                temperature=t,
                top_k=own.top_k if top_k is None else top_k,
                top_p=own.top_p if top_p is None else top_p,
                guidance=self._guidance(stage, guidance),
            )
        return out

    def _guidance(self, stage: torch.nn.Module, guidance: Guidance) -> float:
        """The guidance scale ``stage`` samples with: the given one (its half of a pair: semantic,
        coarse), else its config's; 1 for fine."""
        if stage is self.fine_lm:
            return 1.0
        pair = checks.guidance_pair(guidance)
        return float(stage.config.lm.guidance if pair is None else pair[stage is self.coarse_lm])

    def guidance_scales(self, given: Guidance = None) -> tuple[float, float]:
        """The (semantic, coarse) guidance scales a request samples with: ``given``, else each LM's
        own default."""
        given = checks.guidance(given)
        return self._guidance(self.semantic_lm, given), self._guidance(self.coarse_lm, given)

    def estimate_memory(self, batch: int, seconds: float, guidance: Guidance = None) -> int:
        """Bytes a request of ``batch`` samples (prompts x candidates) of ``seconds`` needs at its peak,
        from the model's sizes: the largest stage's KV cache and prefill activations for the whole
        batch (twice with guidance; attention runs through SDPA, without a score matrix), plus every
        candidate's audio."""
        guidance, peak = checks.guidance(guidance), 0
        for stage in (self.semantic_lm, self.coarse_lm, self.fine_lm):
            c, length = stage.config.lm, stage.max_train_len
            rows = (
                batch * (2 if self._guidance(stage, guidance) != 1.0 else 1) * stage.rows_per_sample(seconds)
            )
            kv = c.depth * 2 * length * c.dim
            activations = length * (c.ff_dim + 4 * c.dim) + stage.layout.vocab_size  # prefill, one layer
            peak = max(peak, rows * (kv + activations) * 4)
        audio = batch * round(seconds * self.sample_rate) * 4 * 3  # candidates, chosen, scoring copies
        return peak + audio + 2**28  # + workspace of the decoder and MuLaN (bounded by their batches)

    def check_memory(
        self, batch: int, seconds: float, guidance: Guidance, *, max_memory_gb: float | None
    ) -> None:
        """Refuse a request whose estimate exceeds ``max_memory_gb`` (default: the memory free now)."""
        need = self.estimate_memory(batch, seconds, guidance)
        limit = checks.memory_limit(self.device, max_memory_gb, PromptError)
        if need > limit:
            raise PromptError(
                f"this request needs about {need / 2**30:.1f} GB ({batch} samples x {seconds:g} s) and "
                f"{limit / 2**30:.1f} GB are available: lower --candidates or --seconds (or raise --max-memory-gb)"
            )

    def _check_request(
        self, *, candidates, seed, temperatures, top_k, top_p, guidance, seconds, max_memory_gb, prompts=1
    ) -> dict[str, SamplingConfig]:
        """The checks every request shares; returns the per-stage sampling configs."""
        checks.candidates(candidates)
        checks.seed(seed)
        guidance = checks.guidance(guidance)
        sampling = self.sampling_configs(temperatures, top_k, top_p, guidance=guidance)
        self.check_memory(prompts * candidates, seconds, guidance, max_memory_gb=max_memory_gb)
        return sampling

    # ------------------------------------------------------------------ sampling

    @staticmethod
    @contextlib.contextmanager
    def _progress(name: str, progress: Progress):
        """Yields the ``update(done, total)`` callback of one stage: a tqdm bar when ``progress`` is a
        bool, else ``progress(name, done, total)`` (a server's job record; raising there cancels)."""
        if callable(progress):
            yield lambda done, total: progress(name, done, total)
            return
        unit = "tok" if name in STAGE_NAMES else "step"
        bar = tqdm(total=0, desc=name, unit=unit, disable=not progress, leave=False, dynamic_ncols=True)

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.n = done
            if done == total or done % 32 == 0:
                bar.refresh()

        try:
            yield update
        finally:
            bar.close()

    def sample_tokens(
        self,
        cond: Conditioning,
        semantic_tokens: int,
        *,
        sampling: dict[str, SamplingConfig],
        generator: torch.Generator,
        prompt: dict[str, torch.Tensor] | None = None,
        progress: Progress = True,
        timings: dict[str, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Semantic, coarse and fine tokens of ``semantic_tokens`` new semantic steps for a batch;
        ``prompt`` (semantic ``[B, S0]``, codes ``[B, Q, 2 * S0]``) is continued. Returns the whole
        sequences, prompt included."""
        timings = timings if timings is not None else {}
        prompt = prompt or {}
        lc = self.coarse_lm.config.coarse_levels
        codes = prompt.get("codes")
        given = {
            "semantic": prompt.get("semantic"),
            "coarse": None if codes is None else codes[:, :lc],
            "fine": None if codes is None else codes[:, lc:],
        }
        out: dict[str, torch.Tensor] = {}
        for name, stage in (
            ("semantic", self.semantic_lm),
            ("coarse", self.coarse_lm),
            ("fine", self.fine_lm),
        ):
            t0 = time.perf_counter()
            before = 0 if given[name] is None else given[name].shape[-1]
            if name == "semantic":
                inputs, length = None, semantic_tokens
            else:  # two codec frames per semantic token
                inputs = out["semantic"] if name == "coarse" else out["coarse"]
                length = 2 * out["semantic"].shape[-1] - before
            with self._progress(name, progress) as update:
                new = stage.generate(
                    cond if stage.conditioned else None,
                    length,
                    inputs=inputs,
                    prompt=given[name],
                    sampling=sampling[name],
                    generator=generator,
                    progress=update,
                )
            out[name] = new if given[name] is None else torch.cat([given[name], new], dim=-1)
            timings[name] = time.perf_counter() - t0
        return out

    def decode(
        self, coarse: torch.Tensor, fine: torch.Tensor, num_samples: int | None = None
    ) -> torch.Tensor:
        """Acoustic tokens -> ``[B, T]`` audio at :attr:`sample_rate`."""
        codes = torch.cat([coarse, fine], dim=1)
        with torch.no_grad():  # a few candidates at a time: decoder activations are the largest tensors
            return torch.cat(
                [self.codec.decode(c, num_samples).float().clamp(-1, 1) for c in codes.split(DECODE_BATCH)]
            )

    @torch.no_grad()
    def rank_targets(self, prompts: list[str]) -> torch.Tensor:
        """``[P, D]``: what candidates are ranked against, each prompt's audio prototype where the bundle
        has prototypes (:mod:`musiclm.mulan.prototypes`), else its MuLaN text embedding (the paper's)."""
        text = self.mulan.embed_text(prompts).to(self.device)
        return text if self.prototypes is None else self.prototypes.prototype(text).to(text.dtype)

    def score(self, prompts: list[str], audio: torch.Tensor) -> torch.Tensor:
        """MuLaN cosine between each prompt's ranking target and each of its candidates' audio:
        ``[P, N, T]`` -> ``[P, N]``."""
        p, n, _ = audio.shape
        with torch.no_grad():
            target = self.rank_targets(prompts)  # [P, D]
            emb = self.mulan.embed_audio(audio.reshape(p * n, -1), self.sample_rate).reshape(p, n, -1)
        return torch.einsum("pd,pnd->pn", target, emb)

    def _finish(
        self, tokens, *, prompts, num_samples, candidates, cond_tokens, timings, start, progress, scorer=None
    ) -> Generation:
        """Decode every candidate once, score them (``scorer(audio [P, N, T]) -> [P, N]``, by default
        the MuLaN similarity to ``prompts``) and pick the best of each prompt."""
        p, n = len(prompts), candidates
        t0 = time.perf_counter()
        with self._progress("decode", progress) as update:
            update(0, 1)
            audio = self.decode(tokens["coarse"], tokens["fine"], num_samples)
            update(1, 1)
        timings["decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        audio = audio.reshape(p, n, -1)
        with self._progress("rerank", progress) as update:
            update(0, 1)
            scores = self.score(prompts, audio) if scorer is None else scorer(audio)
            update(1, 1)
        timings["rerank"] = time.perf_counter() - t0
        chosen = scores.argmax(dim=1)
        rows = torch.arange(p, device=chosen.device)
        pick = lambda t: t.reshape(p, n, *t.shape[1:])[rows, chosen]  # noqa: E731
        timings["total"] = time.perf_counter() - start
        return Generation(
            audio=audio[rows, chosen].cpu(),
            sample_rate=self.sample_rate,
            scores=scores.cpu(),
            chosen=chosen.cpu(),
            candidates=audio.cpu(),
            tokens={k: pick(v).cpu() for k, v in tokens.items()},
            cond_tokens=cond_tokens.cpu(),
            timings=timings,
        )

    def _set_loudness(self, result: Generation, prompts: list[list[str]]) -> Generation:
        """Each row's segments at the loudness their prompts ask for, by the bundle's loudness head
        (``prompts[row]``: a generated piece's one prompt, a story's one per segment, the segments
        starting at ``result.segment_starts``), the gain moving linearly over :data:`STORY_GAIN_RAMP`
        seconds at each boundary; a clip whose peak would pass -1 dBFS is scaled down whole, so its
        segments keep their levels relative to each other. Unchanged without a head."""
        if self.loudness is None:
            return result
        t0 = time.perf_counter()
        with torch.no_grad():
            flat = self.loudness([q for row in prompts for q in row]).float().cpu()
        lufs = flat.split([len(row) for row in prompts])  # per row, per segment
        sr, total = self.sample_rate, result.candidates.shape[-1]
        edges = [round(t * sr) for t in result.segment_starts or [0.0]] + [total]
        lengths = torch.tensor(edges[1:], dtype=torch.float32) - torch.tensor(edges[:-1], dtype=torch.float32)
        ramp = min(STORY_GAIN_RAMP * sr, float(lengths.min())) / 2  # knots in order however short a segment
        ceiling = 10 ** (PEAK_DBFS / 20)
        for row, targets in enumerate(lufs):
            for n in range(result.candidates.shape[1]):
                clip = result.candidates[row, n]
                measured = [
                    integrated_loudness(clip[a:b], sr) for a, b in zip(edges[:-1], edges[1:], strict=True)
                ]
                if all(m is None for m in measured):  # silent or too short to measure: left as it is
                    continue
                gains = [0.0 if m is None else t - m for t, m in zip(targets.tolist(), measured, strict=True)]
                knots = [(0.0, gains[0])]
                for k in range(1, len(gains)):
                    knots += [(edges[k] - ramp, gains[k - 1]), (edges[k] + ramp, gains[k])]
                x, y = zip(*knots, (float(total), gains[-1]), strict=True)
                scaled = clip * 10 ** (torch.from_numpy(np.interp(np.arange(total), x, y)).float() / 20)
                peak = float(scaled.abs().max())
                result.candidates[row, n] = scaled * min(1.0, ceiling / peak) if peak > 0 else scaled
        result.audio = result.candidates[torch.arange(len(prompts)), result.chosen].clone()
        # a row's level: its segments' mean by duration (a generated piece: its prompt's)
        result.prompt_lufs = torch.stack([(t * lengths).sum() / lengths.sum() for t in lufs])
        result.prompt_level_db = result.prompt_lufs - self.loudness.config.reference_lufs
        result.timings["loudness"] = time.perf_counter() - t0
        result.timings["total"] += result.timings["loudness"]
        return result

    def _semantic_steps(self, seconds: float) -> int:
        return max(1, round(seconds * self.semantic_lm.config.semantic_rate))

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def generate(
        self,
        prompts: str | list[str],
        seconds: float = 10.0,
        candidates: int = 4,
        *,
        seed: int = 0,
        temperatures: dict[str, float] | tuple[float, float, float] | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: Guidance = None,
        melody: str | Path | torch.Tensor | None = None,
        melody_sample_rate: int | None = None,
        progress: Progress = True,
        unconditional: bool = False,
        max_memory_gb: float | None = None,
        bpm: float | None = None,
    ) -> Generation:
        """Music for each prompt: ``candidates`` samples in one batch, the best by MuLaN score returned.

        ``seed`` fixes every sample; ``melody`` (file or waveform) conditions on a hummed or played tune.
        ``bpm`` sets the tempo of every prompt; without it, the tempo each prompt names ("80 bpm"), if
        any (models whose LMs read beat phases, :attr:`reads_tempo`; others take it from the text).
        ``unconditional`` ignores the prompts while sampling (an evaluation baseline; they still rank).
        """
        prompts = checks.prompts(prompts)
        seconds = checks.seconds(seconds)
        bpm = checks.bpm(bpm)
        sampling = self._check_request(
            candidates=candidates, prompts=len(prompts), seed=seed, temperatures=temperatures, top_k=top_k,
            top_p=top_p, guidance=guidance, seconds=seconds, max_memory_gb=max_memory_gb,
        )  # fmt: skip
        start = time.perf_counter()
        cond = self.prompt_conditioning(
            prompts, seconds, bpm=bpm, melody=melody, melody_sample_rate=melody_sample_rate,
            unconditional=unconditional,
        )  # fmt: skip
        timings = {"conditioning": time.perf_counter() - start}
        tokens = self.sample_tokens(
            cond.repeat_interleave(candidates),
            self._semantic_steps(seconds),
            sampling=sampling,
            generator=torch.Generator(device=self.device).manual_seed(seed),
            progress=progress,
            timings=timings,
        )
        result = self._finish(
            tokens, prompts=prompts, num_samples=round(seconds * self.sample_rate), candidates=candidates,
            cond_tokens=cond.mulan[:, 0], timings=timings, start=start, progress=progress,
        )  # fmt: skip
        return result if unconditional else self._set_loudness(result, [[q] for q in prompts])

    def tokenize_audio(self, audio, sample_rate: int | None = None) -> dict[str, torch.Tensor]:
        """Semantic ``[1, S]`` and codec ``[1, Q, 2S]`` tokens of an audio prompt (aligned, even frames)."""
        wav = self._load_prompt_audio(audio, sample_rate, self.sample_rate, what="audio prompt")
        with torch.no_grad():
            codes = self.codec.encode(wav[None].to(self.device))
            sem_wav = (
                wav
                if self.semantic.sample_rate == self.sample_rate
                else check_waveform(wav, self.sample_rate, self.semantic.sample_rate)
            )
            semantic = self.semantic.encode(sem_wav[None].to(self.device))
        s = min(semantic.shape[-1], codes.shape[-1] // 2)
        if s < 1:
            raise AudioError("audio prompt is too short to tokenize")
        return {"semantic": semantic[:, :s].long(), "codes": codes[..., : 2 * s].long(), "audio": wav}

    @torch.no_grad()
    def continue_audio(
        self,
        audio: str | Path | torch.Tensor,
        prompt: str | None = None,
        seconds: float = 10.0,
        *,
        sample_rate: int | None = None,
        candidates: int = 1,
        seed: int = 0,
        temperatures=None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: Guidance = None,
        progress: Progress = True,
        max_memory_gb: float | None = None,
        bpm: float | None = None,
        beat_phases: bool = True,
    ) -> Generation:
        """Continue an audio prompt by ``seconds``: its semantic and acoustic tokens are the prefix of
        every stage. Conditioned on ``prompt`` text, or without one on the prompt audio's own MuLaN
        tokens (M_A). The returned audio is the whole piece, prompt (re-synthesised) included.

        Models whose LMs read beat phases (:attr:`reads_tempo`) get the beats tracked in the audio
        prompt, continued at ``bpm``, else at the tempo ``prompt`` names, else at the tracked one;
        ``beat_phases=False`` gives them none (as for a prompt that names no tempo: free time)."""
        seconds = checks.seconds(seconds)
        prompts = checks.prompts([prompt]) if prompt is not None else None
        bpm = checks.bpm(bpm)
        given_seconds = audio.shape[-1] / (sample_rate or self.sample_rate) if torch.is_tensor(audio) else 0.0
        if not torch.is_tensor(audio):
            given_seconds = audio_info(audio)[1]
        sampling = self._check_request(
            candidates=candidates, seed=seed, temperatures=temperatures, top_k=top_k, top_p=top_p,
            guidance=guidance, seconds=given_seconds + seconds, max_memory_gb=max_memory_gb,
        )  # fmt: skip
        start = time.perf_counter()
        given = self.tokenize_audio(audio, sample_rate)
        n = candidates
        if prompts is not None:
            mulan = self.conditioning_tokens(prompts)
        else:
            mulan = self.mulan.tokens_from_audio(given["audio"][None].to(self.device), self.sample_rate)
        beats = None
        if self.reads_tempo and beat_phases:
            frames = given["semantic"].shape[-1] + self._semantic_steps(seconds)
            tempo = bpm or (tempo_from_prompt(prompt) if prompt is not None else None)
            rate = self.semantic_lm.config.semantic_rate
            track = continued_beat_phases(
                track_beats(given["audio"], self.sample_rate), frames, bpm=tempo, frame_rate=rate
            )
            beats = None if bool((track < 0).all()) else track[None].to(self.device)
        timings = {"conditioning": time.perf_counter() - start}
        tokens = self.sample_tokens(
            Conditioning.constant(mulan, beats=beats).repeat_interleave(n),
            self._semantic_steps(seconds),
            sampling=sampling,
            generator=torch.Generator(device=self.device).manual_seed(seed),
            prompt={k: given[k].repeat_interleave(n, dim=0) for k in ("semantic", "codes")},
            progress=progress,
            timings=timings,
        )
        scorer = None
        if prompts is None:  # no text: rank by similarity to the prompt audio itself
            ref = self.mulan.embed_audio(given["audio"][None].to(self.device), self.sample_rate)

            def scorer(audio: torch.Tensor) -> torch.Tensor:
                return (self.mulan.embed_audio(audio[0], self.sample_rate) @ ref.T).reshape(1, n)

        return self._finish(
            tokens, prompts=prompts or ["music"], num_samples=tokens["coarse"].shape[-1] * self.codec.hop_length,
            candidates=n, cond_tokens=mulan, timings=timings, start=start, progress=progress, scorer=scorer,
        )  # fmt: skip

    @torch.no_grad()
    def story(
        self,
        segments: list[tuple[str, float]],
        candidates: int = 1,
        *,
        seed: int = 0,
        temperatures=None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: Guidance = None,
        progress: Progress = True,
        max_memory_gb: float | None = None,
    ) -> Generation:
        """Story mode (paper 6): one piece whose text conditioning changes at each segment boundary,
        each segment continuing from the tokens before it. ``segments`` = ``[(prompt, seconds), ...]``.
        Candidates are ranked by the mean score of each segment against its own prompt (:meth:`score`)."""
        if not segments:
            raise PromptError("story mode needs at least one (prompt, seconds) segment")
        for i, s in enumerate(segments):
            if not isinstance(s, (tuple, list)) or len(s) != 2:
                raise PromptError(f"story segment {i} must be a (prompt, seconds) pair, got {s!r}")
        prompts = checks.prompts([s[0] for s in segments])
        lengths = [checks.seconds(float(s[1]), f"segment {i} seconds") for i, s in enumerate(segments)]
        total = checks.seconds(sum(lengths), "the story's length")
        sampling = self._check_request(
            candidates=candidates, seed=seed, temperatures=temperatures, top_k=top_k, top_p=top_p,
            guidance=guidance, seconds=total, max_memory_gb=max_memory_gb,
        )  # fmt: skip
        start = time.perf_counter()
        n = candidates
        mulan = self.conditioning_tokens(prompts)  # [K, Mq]
        starts = tuple(sum(lengths[:k]) for k in range(len(lengths)))
        beats = self.beat_phases([tempo_from_prompt(q) for q in prompts], total, starts)
        cond = Conditioning(mulan[None], starts, beats=beats).repeat_interleave(n)
        timings = {"conditioning": time.perf_counter() - start}
        tokens = self.sample_tokens(
            cond,
            self._semantic_steps(total),
            sampling=sampling,
            generator=torch.Generator(device=self.device).manual_seed(seed),
            progress=progress,
            timings=timings,
        )
        rate = self.semantic_lm.config.semantic_rate
        bounds = [*cond.bounds(rate), tokens["semantic"].shape[-1]]
        target = self.rank_targets(prompts)  # [K, D]

        def scorer(audio: torch.Tensor) -> torch.Tensor:
            """Each segment of each candidate against its own prompt's target, averaged over segments."""
            seg_scores = []
            for k in range(len(prompts)):
                a, b = (round(bounds[i] / rate * self.sample_rate) for i in (k, k + 1))
                seg_scores.append(self.mulan.embed_audio(audio[0, :, a:b], self.sample_rate) @ target[k])
            return torch.stack(seg_scores, dim=1).mean(1).reshape(1, n)

        out = self._finish(
            tokens, prompts=[" / ".join(prompts)], num_samples=round(total * self.sample_rate), candidates=n,
            cond_tokens=mulan[:1], timings=timings, start=start, progress=progress, scorer=scorer,
        )  # fmt: skip
        out.cond_tokens = mulan.cpu()
        out.segment_starts = [b / rate for b in bounds[:-1]]
        return self._set_loudness(out, [prompts])
