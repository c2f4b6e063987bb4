"""MusicLM: text -> semantic -> coarse -> fine tokens -> audio, with MuLaN reranking (paper 3, 6).

A bundle is a directory of component checkpoints plus ``musiclm.json`` naming them::

    musiclm.json   {"name", "components": {"codec": "codec", "semantic": "semantic", ...}}
    codec/ semantic/ mulan/ [melody/] semantic_lm/ coarse_lm/ fine_lm/

:meth:`MusicLM.generate` samples ``candidates`` continuations per prompt in one batch and returns
the one whose MuLaN audio embedding is closest to the prompt's text embedding (the paper's
reranking); :meth:`MusicLM.continue_audio` uses the tokens of an audio prompt as prefix;
:meth:`MusicLM.story` changes the text conditioning every segment while the semantic prefix
carries on. Every check that can fail runs before any sampling starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from musiclm import checks
from musiclm.audio import audio_info, check_waveform, load_audio
from musiclm.checkpoint import load_model
from musiclm.errors import AudioError, CheckpointError, PromptError
from musiclm.lm.sampling import SamplingConfig
from musiclm.lm.stages import NULL, CoarseStage, FineStage, SemanticStage, StageLM
from musiclm.mulan.text import check_prompts

BUNDLE_FILE = "musiclm.json"
# bundle component -> checkpoint kind
COMPONENT_KINDS = {
    "codec": "codec",
    "semantic": "semantic",
    "mulan": "mulan",
    "melody": "melody",
    "semantic_lm": "semantic_lm",
    "coarse_lm": "coarse_lm",
    "fine_lm": "fine_lm",
}
OPTIONAL_COMPONENTS = {"melody"}
DECODE_BATCH = 8  # candidates decoded at once


def available_memory(device: torch.device) -> int:
    """Bytes free for a generation on ``device``: free GPU memory, or the memory the OS has available."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


MAX_SECONDS = 300.0  # the paper generates up to 5 minutes
MAX_PROMPT_CHARS = 2000
STAGE_NAMES = ("semantic", "coarse", "fine")


@dataclass
class Generation:
    """What :meth:`MusicLM.generate` returns (one row per prompt)."""

    audio: torch.Tensor  # [P, T] the chosen candidate of each prompt
    sample_rate: int
    scores: torch.Tensor  # [P, N] MuLaN text-audio cosine of every candidate
    chosen: torch.Tensor  # [P] index of the returned candidate (argmax of scores)
    candidates: torch.Tensor  # [P, N, T] every candidate
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)  # chosen semantic / coarse / fine
    cond_tokens: torch.Tensor | None = None  # [P, Mq] MuLaN text tokens
    timings: dict[str, float] = field(default_factory=dict)
    segment_starts: list[float] = field(default_factory=list)  # story mode: where each prompt takes over (s)


def make_bundle(
    out: str | Path, components: dict[str, str | Path], name: str = "musiclm", half: bool = False
) -> Path:
    """Copy component checkpoint directories into a bundle at ``out`` and write ``musiclm.json``.
    The components are loaded together first, so an incompatible set is refused. ``half`` stores
    floating-point weights as float16 (half the size; they load back into float32 models)."""
    missing = sorted(set(COMPONENT_KINDS) - OPTIONAL_COMPONENTS - set(components))
    if missing:
        raise CheckpointError(f"a bundle needs {', '.join(missing)}")
    MusicLM({k: load_model(v, kind=COMPONENT_KINDS[k]) for k, v in components.items()}, name=name)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for key, src in components.items():
        shutil.copytree(src, tmp / key, ignore=shutil.ignore_patterns("*.tmp"))
        if half:
            from safetensors.torch import load_file, save_file

            weights = tmp / key / "model.safetensors"
            state = load_file(str(weights))
            save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(weights))
    (tmp / BUNDLE_FILE).write_text(
        json.dumps({"name": name, "components": {k: k for k in components}}, indent=2) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_bundle(name_or_path: str | Path) -> Path:
    """A bundle directory from a path or the name of a shipped bundle (``default``)."""
    from musiclm.pretrained import default_bundle, shipped_bundles

    path = Path(name_or_path)
    if (path / BUNDLE_FILE).is_file():
        return path
    if str(name_or_path) in ("default", *shipped_bundles()):
        return default_bundle(str(name_or_path))
    if path.exists():
        raise CheckpointError(f"{path}: not a MusicLM bundle (no {BUNDLE_FILE})")
    raise CheckpointError(
        f"unknown model {str(name_or_path)!r}: give a bundle directory or one of "
        f"{', '.join(['default', *shipped_bundles()])}"
    )


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
        for module in self.modules().values():
            module.eval()
        self.check_compatible()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default", device: str | torch.device | None = None):
        """Load a bundle directory (or a shipped bundle by name) onto ``device`` (default: GPU if any)."""
        root = resolve_bundle(name_or_path)
        try:
            meta = json.loads((root / BUNDLE_FILE).read_text())
            names = meta["components"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{root / BUNDLE_FILE}: invalid bundle file ({e})") from None
        unknown = sorted(set(names) - set(COMPONENT_KINDS))
        if unknown:
            raise CheckpointError(f"{root / BUNDLE_FILE}: unknown components {unknown}")
        missing = sorted(set(COMPONENT_KINDS) - OPTIONAL_COMPONENTS - set(names))
        if missing:
            raise CheckpointError(f"{root}: bundle lacks {', '.join(missing)}")
        components = {k: load_model(root / v, kind=COMPONENT_KINDS[k]) for k, v in names.items()}
        model = cls(components, name=meta.get("name", root.name))
        return model.to(checks.device(device))

    def modules(self) -> dict[str, torch.nn.Module]:
        found = {
            "codec": self.codec,
            "semantic": self.semantic,
            "mulan": self.mulan,
            "melody": self.melody,
            "semantic_lm": self.semantic_lm,
            "coarse_lm": self.coarse_lm,
            "fine_lm": self.fine_lm,
        }
        return {k: v for k, v in found.items() if v is not None}

    def to(self, device: str | torch.device) -> MusicLM:
        for module in self.modules().values():
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.semantic_lm.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def has_melody(self) -> bool:
        return self.melody is not None and self.semantic_lm.config.melody_quantizers > 0

    def check_compatible(self) -> None:
        """Refuse, in one line, components that were not made for each other."""
        sem, coarse, fine = self.semantic_lm.config, self.coarse_lm.config, self.fine_lm.config
        problems = []

        def expect(what: str, got, want) -> None:
            if got != want:
                problems.append(f"{what} is {got}, expected {want}")

        expect("coarse LM codec levels", coarse.codec_levels, self.codec.num_quantizers)
        expect("fine LM codec levels", fine.codec_levels, self.codec.num_quantizers)
        expect("coarse LM coarse levels", coarse.coarse_levels, fine.coarse_levels)
        codebook = getattr(getattr(self.codec, "config", None), "codebook_size", None)
        if codebook is not None:
            expect("coarse LM codec codebook", coarse.codec_codebook, codebook)
            expect("fine LM codec codebook", fine.codec_codebook, codebook)
        expect("coarse LM frame rate", round(coarse.frame_rate, 3), round(self.codec.frame_rate, 3))
        clusters = self.semantic.config.num_clusters
        expect("semantic LM vocabulary", sem.semantic_clusters, clusters)
        expect("coarse LM semantic vocabulary", coarse.semantic_clusters, clusters)
        expect("semantic LM token rate", round(sem.semantic_rate, 3), round(self.semantic.frame_rate, 3))
        expect("coarse LM semantic rate", round(coarse.semantic_rate, 3), round(self.semantic.frame_rate, 3))
        for stage, cfg in (("semantic", sem), ("coarse", coarse)):
            expect(f"{stage} LM MuLaN tokens", cfg.mulan_quantizers, self.mulan.config.num_quantizers)
            expect(f"{stage} LM MuLaN codebook", cfg.mulan_codebook, self.mulan.config.codebook_size)
            if cfg.melody_quantizers:
                if self.melody is None:
                    problems.append(
                        f"the {stage} LM is melody-conditioned but the bundle has no melody model"
                    )
                else:
                    expect(
                        f"{stage} LM melody tokens", cfg.melody_quantizers, self.melody.config.num_quantizers
                    )
                    expect(
                        f"{stage} LM melody codebook", cfg.melody_codebook, self.melody.config.codebook_size
                    )
                    expect(f"{stage} LM melody hop", cfg.melody_hop_seconds, self.melody.config.hop_seconds)
        if problems:
            raise CheckpointError(f"{self.name}: components do not fit together: " + "; ".join(problems[:4]))

    # ------------------------------------------------------------------ conditioning

    def text_tokens(self, prompts: list[str]) -> torch.Tensor:
        """M_T: ``[P, Mq]`` MuLaN tokens of the prompts."""
        with torch.no_grad():
            return self.mulan.tokens_from_text(prompts).to(self.device)

    def melody_tokens(
        self, melody: str | Path | torch.Tensor, sample_rate: int | None = None
    ) -> torch.Tensor:
        """``[1, W, Qm]`` melody tokens of a file or ``[T]`` waveform (4 s windows at a 3 s hop)."""
        if not self.has_melody:
            raise PromptError(f"{self.name} has no melody conditioning (its LMs were trained without it)")
        wav = self._load_prompt_audio(melody, sample_rate, self.melody.sample_rate, "melody")
        with torch.no_grad():
            return self.melody.tokens(wav[None].to(self.device), self.melody.sample_rate)

    def _load_prompt_audio(self, audio, sample_rate: int | None, target_rate: int, what: str) -> torch.Tensor:
        if isinstance(audio, (str, Path)):
            try:
                wav, _ = load_audio(
                    audio, target_rate, min_seconds=0.5, max_seconds=MAX_SECONDS, allow_silent=False
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

    def _cond(
        self, stage: StageLM, mulan: torch.Tensor, melody: torch.Tensor | None, unconditional: bool = False
    ):
        """Conditioning ids of ``stage`` for ``[B, Mq]`` MuLaN tokens: a tensor, or with a melody
        ``[B, W_total, Qm]`` a function of the window start (the melody moves with the music).
        ``unconditional`` gives all-NULL ids (the dropped conditioning of training)."""
        if unconditional:
            return torch.full_like(stage.cond_ids(mulan), NULL)
        if melody is None or stage.config.melody_quantizers == 0:
            return stage.cond_ids(mulan)
        return lambda seconds: stage.cond_ids(mulan, stage.melody_at(melody, seconds))

    # ------------------------------------------------------------------ sampling

    def sampling_configs(
        self,
        temperatures: dict[str, float] | tuple[float, float, float] | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 1.0,
    ) -> dict[str, SamplingConfig]:
        """Per-stage sampling (paper temperatures from each stage's config unless given)."""
        stages = {"semantic": self.semantic_lm, "coarse": self.coarse_lm, "fine": self.fine_lm}
        top_k, top_p, guidance = checks.top_k(top_k), checks.top_p(top_p), checks.guidance(guidance)
        if isinstance(temperatures, (tuple, list)):
            temperatures = dict(zip(STAGE_NAMES, temperatures, strict=True))
        temperatures = temperatures or {}
        out = {}
        for name, stage in stages.items():
            t = float(temperatures.get(name, stage.config.lm.temperature))
            if not (t > 0 and math.isfinite(t)):
                raise PromptError(f"{name} temperature must be > 0, got {t}")
            out[name] = SamplingConfig(
                temperature=t, top_k=top_k, top_p=top_p, guidance=guidance if name != "fine" else 1.0
            )
        return out

    @staticmethod
    def check_seconds(seconds: float, what: str = "seconds") -> float:
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
            raise PromptError(f"{what} must be a positive number, got {seconds!r}")
        if seconds > MAX_SECONDS:
            raise PromptError(f"{what} = {seconds:g} is beyond the limit of {MAX_SECONDS:g} s")
        return float(seconds)

    def estimate_memory(self, batch: int, seconds: float, guidance: float = 1.0) -> int:
        """Bytes a request of ``batch`` samples (prompts x candidates) of ``seconds`` needs at its peak,
        from the model's sizes: the largest stage's KV cache and prefill activations for the whole
        batch (twice with guidance; attention runs through SDPA, without a score matrix), plus every
        candidate's audio."""
        peak = 0
        for stage in (self.semantic_lm, self.coarse_lm, self.fine_lm):
            c, length = stage.config.lm, stage.max_train_len
            rows = batch * (2 if guidance != 1.0 and stage is not self.fine_lm else 1)
            kv = c.depth * 2 * length * c.dim
            activations = length * (c.ff_dim + 4 * c.dim) + stage.layout.vocab_size  # prefill, one layer
            peak = max(peak, rows * (kv + activations) * 4)
        audio = batch * round(seconds * self.sample_rate) * 4 * 3  # candidates, chosen, scoring copies
        return peak + audio + 2**28  # + workspace of the decoder and MuLaN (bounded by their batches)

    def check_memory(self, batch: int, seconds: float, guidance: float, max_memory_gb: float | None) -> None:
        """Refuse a request whose estimate exceeds ``max_memory_gb`` (default: the memory free now)."""
        need = self.estimate_memory(batch, seconds, guidance)
        if max_memory_gb is None:
            limit = available_memory(self.device)
        else:
            limit = int(checks.positive_float(max_memory_gb, "max_memory_gb", PromptError) * 2**30)
        if need > limit:
            raise PromptError(
                f"this request needs about {need / 2**30:.1f} GB ({batch} samples x {seconds:g} s) and "
                f"{limit / 2**30:.1f} GB are available: lower --candidates or --seconds (or raise --max-memory-gb)"
            )

    @staticmethod
    def check_candidates(candidates: int) -> int:
        if not isinstance(candidates, int) or candidates < 1:
            raise PromptError(f"candidates must be a positive integer, got {candidates!r}")
        return candidates

    @staticmethod
    def _check_prompts(prompts) -> list[str]:
        prompts = check_prompts(prompts)
        for i, p in enumerate(prompts):
            if len(p) > MAX_PROMPT_CHARS:
                raise PromptError(f"prompt {i} has {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
        return prompts

    @staticmethod
    @contextlib.contextmanager
    def _progress(name: str, enabled: bool):
        """A token progress bar for one stage; yields the stages' ``progress(done, total)`` callback."""
        bar = tqdm(total=0, desc=name, unit="tok", disable=not enabled, leave=False, dynamic_ncols=True)

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

    def _run_stages(
        self,
        mulan: torch.Tensor,
        melody: torch.Tensor | None,
        semantic_tokens: int,
        sampling: dict[str, SamplingConfig],
        generator: torch.Generator,
        progress: bool,
        prompt: dict[str, torch.Tensor] | None = None,
        timings: dict[str, float] | None = None,
        unconditional: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Semantic, coarse and fine tokens for a batch; ``prompt`` (semantic [B, S0], codes
        [B, Q, 2*S0]) is continued. Returns the full sequences, prompt included."""
        timings = timings if timings is not None else {}
        prompt = prompt or {}
        lc = self.coarse_lm.config.coarse_levels
        sem_prompt, codes_prompt = prompt.get("semantic"), prompt.get("codes")

        t0 = time.perf_counter()
        with self._progress("semantic", progress) as update:
            new_sem = self.semantic_lm.generate(
                self._cond(self.semantic_lm, mulan, melody, unconditional),
                semantic_tokens,
                sampling["semantic"],
                prompt=sem_prompt,
                generator=generator,
                progress=update,
            )
        semantic = new_sem if sem_prompt is None else torch.cat([sem_prompt, new_sem], dim=1)
        timings["semantic"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with self._progress("coarse", progress) as update:
            new_coarse = self.coarse_lm.generate(
                self._cond(self.coarse_lm, mulan, melody, unconditional),
                semantic,
                sampling["coarse"],
                prompt=None if codes_prompt is None else codes_prompt[:, :lc],
                generator=generator,
                progress=update,
            )
        coarse = new_coarse if codes_prompt is None else torch.cat([codes_prompt[:, :lc], new_coarse], dim=-1)
        timings["coarse"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with self._progress("fine", progress) as update:
            new_fine = self.fine_lm.generate(
                coarse,
                sampling["fine"],
                prompt=None if codes_prompt is None else codes_prompt[:, lc:],
                generator=generator,
                progress=update,
            )
        fine = new_fine if codes_prompt is None else torch.cat([codes_prompt[:, lc:], new_fine], dim=-1)
        timings["fine"] = time.perf_counter() - t0
        return {"semantic": semantic, "coarse": coarse, "fine": fine}

    def decode(
        self, coarse: torch.Tensor, fine: torch.Tensor, num_samples: int | None = None
    ) -> torch.Tensor:
        """Acoustic tokens -> ``[B, T]`` audio at :attr:`sample_rate`."""
        codes = torch.cat([coarse, fine], dim=1)
        with torch.no_grad():  # a few candidates at a time: decoder activations are the largest tensors
            return torch.cat(
                [self.codec.decode(c, num_samples).float().clamp(-1, 1) for c in codes.split(DECODE_BATCH)]
            )

    def score(self, prompts: list[str], audio: torch.Tensor) -> torch.Tensor:
        """MuLaN cosine between each prompt and each of its candidates: audio ``[P, N, T]`` -> ``[P, N]``."""
        p, n, _ = audio.shape
        with torch.no_grad():
            text = self.mulan.embed_text(prompts).to(self.device)  # [P, D]
            emb = self.mulan.embed_audio(audio.reshape(p * n, -1), self.sample_rate).reshape(p, n, -1)
        return torch.einsum("pd,pnd->pn", text, emb)

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def generate(
        self,
        prompts: str | list[str],
        seconds: float = 10.0,
        candidates: int = 4,
        seed: int = 0,
        temperatures: dict[str, float] | tuple[float, float, float] | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 1.0,
        melody: str | Path | torch.Tensor | None = None,
        melody_sample_rate: int | None = None,
        progress: bool = True,
        unconditional: bool = False,
        max_memory_gb: float | None = None,
    ) -> Generation:
        """Music for each prompt: ``candidates`` samples in one batch, the best by MuLaN score returned.

        ``seed`` fixes every sample; ``melody`` (file or waveform) conditions on a hummed or played tune.
        ``unconditional`` ignores the prompts while sampling (an evaluation baseline; they still rank).
        """
        prompts = self._check_prompts(prompts)
        seconds = self.check_seconds(seconds)
        self.check_candidates(candidates)
        checks.seed(seed)
        sampling = self.sampling_configs(temperatures, top_k, top_p, guidance)
        self.check_memory(len(prompts) * candidates, seconds, guidance, max_memory_gb)
        melody_tokens = None if melody is None else self.melody_tokens(melody, melody_sample_rate)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        p, n = len(prompts), candidates
        mulan = self.text_tokens(prompts).repeat_interleave(n, dim=0)  # [P*N, Mq]
        if melody_tokens is not None:
            melody_tokens = melody_tokens.expand(p * n, -1, -1)
        timings["conditioning"] = time.perf_counter() - start
        generator = torch.Generator(device=self.device).manual_seed(seed)
        n_sem = max(1, round(seconds * self.semantic_lm.config.semantic_rate))
        tokens = self._run_stages(
            mulan,
            melody_tokens,
            n_sem,
            sampling,
            generator,
            progress,
            timings=timings,
            unconditional=unconditional,
        )
        return self._finish(prompts, tokens, round(seconds * self.sample_rate), p, n, mulan, timings, start)

    def _finish(self, prompts, tokens, num_samples, p, n, mulan, timings, start, scorer=None) -> Generation:
        """Decode every candidate once, score them (``scorer(audio [P, N, T]) -> [P, N]``, by default
        the MuLaN similarity to ``prompts``) and pick the best of each prompt."""
        t0 = time.perf_counter()
        audio = self.decode(tokens["coarse"], tokens["fine"], num_samples)
        timings["decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        audio = audio.reshape(p, n, -1)
        scores = self.score(prompts, audio) if scorer is None else scorer(audio)
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
            cond_tokens=mulan.reshape(p, n, -1)[:, 0].cpu(),
            timings=timings,
        )

    def tokenize_audio(self, audio, sample_rate: int | None = None) -> dict[str, torch.Tensor]:
        """Semantic ``[1, S]`` and codec ``[1, Q, 2S]`` tokens of an audio prompt (aligned, even frames)."""
        wav = self._load_prompt_audio(audio, sample_rate, self.sample_rate, "audio prompt")
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
        sample_rate: int | None = None,
        candidates: int = 1,
        seed: int = 0,
        temperatures=None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 1.0,
        progress: bool = True,
        max_memory_gb: float | None = None,
    ) -> Generation:
        """Continue an audio prompt by ``seconds``: its semantic and acoustic tokens are the prefix of
        every stage. Conditioned on ``prompt`` text, or without one on the prompt audio's own MuLaN
        tokens (M_A). The returned audio is the whole piece, prompt (re-synthesised) included."""
        seconds = self.check_seconds(seconds)
        self.check_candidates(candidates)
        prompts = self._check_prompts([prompt]) if prompt is not None else None
        checks.seed(seed)
        sampling = self.sampling_configs(temperatures, top_k, top_p, guidance)
        given_seconds = audio.shape[-1] / (sample_rate or self.sample_rate) if torch.is_tensor(audio) else 0.0
        if not torch.is_tensor(audio):
            given_seconds = audio_info(audio)[1]
        self.check_memory(candidates, given_seconds + seconds, guidance, max_memory_gb)
        start = time.perf_counter()
        given = self.tokenize_audio(audio, sample_rate)
        n = candidates
        if prompts is not None:
            mulan = self.text_tokens(prompts)
        else:
            mulan = self.mulan.tokens_from_audio(given["audio"][None].to(self.device), self.sample_rate)
        mulan = mulan.repeat_interleave(n, dim=0)
        prefix = {k: given[k].repeat_interleave(n, dim=0) for k in ("semantic", "codes")}
        timings = {"conditioning": time.perf_counter() - start}
        generator = torch.Generator(device=self.device).manual_seed(seed)
        n_sem = max(1, round(seconds * self.semantic_lm.config.semantic_rate))
        tokens = self._run_stages(mulan, None, n_sem, sampling, generator, progress, prefix, timings)
        total = tokens["coarse"].shape[-1] * self.codec.hop_length
        scorer = None
        if prompts is None:  # no text: rank by similarity to the prompt audio itself
            ref = self.mulan.embed_audio(given["audio"][None].to(self.device), self.sample_rate)

            def scorer(audio: torch.Tensor) -> torch.Tensor:
                return (self.mulan.embed_audio(audio[0], self.sample_rate) @ ref.T).reshape(1, n)

        return self._finish(prompts or ["music"], tokens, total, 1, n, mulan, timings, start, scorer)

    @torch.no_grad()
    def story(
        self,
        segments: list[tuple[str, float]],
        candidates: int = 1,
        seed: int = 0,
        temperatures=None,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float = 1.0,
        progress: bool = True,
        max_memory_gb: float | None = None,
    ) -> Generation:
        """Story mode (paper 6): one piece whose text conditioning changes at each segment boundary,
        each segment continuing from the tokens before it. ``segments`` = ``[(prompt, seconds), ...]``.
        Candidates are ranked by the mean MuLaN score of each segment against its own prompt."""
        if not segments:
            raise PromptError("story mode needs at least one (prompt, seconds) segment")
        prompts = self._check_prompts([s[0] for s in segments])
        lengths = [self.check_seconds(float(s[1]), f"segment {i} seconds") for i, s in enumerate(segments)]
        if sum(lengths) > MAX_SECONDS:
            raise PromptError(f"story of {sum(lengths):g} s is beyond the limit of {MAX_SECONDS:g} s")
        checks.seed(seed)
        sampling = self.sampling_configs(temperatures, top_k, top_p, guidance)
        self.check_memory(candidates, sum(lengths), guidance, max_memory_gb)
        start = time.perf_counter()
        n = candidates
        mulan_all = self.text_tokens(prompts)  # [K, Mq]
        rate = self.semantic_lm.config.semantic_rate
        ends = [round(sum(lengths[: k + 1]) * rate) for k in range(len(lengths))]
        bounds = [0, *ends]

        def segment_cond(stage: StageLM) -> list[torch.Tensor]:
            return [stage.cond_ids(mulan_all[k : k + 1]).expand(n, -1) for k in range(len(prompts))]

        generator = torch.Generator(device=self.device).manual_seed(seed)
        timings: dict[str, float] = {"conditioning": time.perf_counter() - start}
        # semantic: one call per segment, the previous tokens as prompt (the prefix carries on)
        t0 = time.perf_counter()
        semantic = None
        sem_ids = segment_cond(self.semantic_lm)
        half = self.semantic_lm.window_tokens // 2
        with self._progress("semantic", progress) as update:
            for k in range(len(prompts)):
                context = None if semantic is None else semantic[:, -half:]
                new = self.semantic_lm.generate(
                    sem_ids[k], bounds[k + 1] - bounds[k], sampling["semantic"], context, generator, update
                )
                semantic = new if semantic is None else torch.cat([semantic, new], dim=1)
        timings["semantic"] = time.perf_counter() - t0
        # coarse: likewise, segment by segment, each with its own MuLaN tokens
        t0 = time.perf_counter()
        coarse_ids = segment_cond(self.coarse_lm)
        ctx = self.coarse_lm.window_frames() // 2 // 2 * 2
        coarse = None
        with self._progress("coarse", progress) as update:
            for k in range(len(prompts)):
                have = 0 if coarse is None else coarse.shape[-1]
                c = min(have, ctx)
                sem = semantic[:, (have - c) // 2 : bounds[k + 1]]
                new = self.coarse_lm.generate(
                    coarse_ids[k],
                    sem,
                    sampling["coarse"],
                    None if coarse is None else coarse[..., have - c :],
                    generator,
                    update,
                )
                coarse = new if coarse is None else torch.cat([coarse, new], dim=-1)
        timings["coarse"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with self._progress("fine", progress) as update:
            fine = self.fine_lm.generate(coarse, sampling["fine"], generator=generator, progress=update)
        timings["fine"] = time.perf_counter() - t0
        tokens = {"semantic": semantic, "coarse": coarse, "fine": fine}
        total = round(sum(lengths) * self.sample_rate)
        text = self.mulan.embed_text(prompts).to(self.device)  # [K, D]

        def scorer(audio: torch.Tensor) -> torch.Tensor:
            """Each segment of each candidate against its own prompt, averaged over segments."""
            seg_scores = []
            for k in range(len(prompts)):
                a, b = (round(bounds[i] / rate * self.sample_rate) for i in (k, k + 1))
                seg_scores.append(self.mulan.embed_audio(audio[0, :, a:b], self.sample_rate) @ text[k])
            return torch.stack(seg_scores, dim=1).mean(1).reshape(1, n)

        out = self._finish(
            [" / ".join(prompts)], tokens, total, 1, n, mulan_all[:1].expand(n, -1), timings, start, scorer
        )
        out.cond_tokens = mulan_all.cpu()
        out.segment_starts = [b / rate for b in bounds[:-1]]
        return out
