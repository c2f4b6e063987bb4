"""What the fine stage loses by sampling its windows side by side (prints numbers).

The fine LM generates 10 s either sliding (each 2 s window after the first keeps the last second of
fine codes as context: 9 windows one after the other) or in parallel windows (five 2 s windows, each
from its coarse codes alone, in one batch: ``StageConfig.parallel_windows``). Teacher-forced on the
true codes of held-out clips, this prints the fine LM's negative log-likelihood per id (nats, each
level's softmax restricted to its codebook, as sampling is) under both layouts: over every frame, over
the first ``--edge`` frames of each window after the first (where the parallel layout has no fine
context and the sliding one has a second of it) and over the rest.

With ``--manifest`` (the labelled manifest the cache was made from, same order) it also samples the
fine codes of each clip from its true coarse codes in each layout (``--seeds`` draws each), decodes
them with the bundle's codec and prints what the eval's tools hear: tempo accuracy against the
labels (within 4 %, or at double / half), mode accuracy, and the onset strength within 50 ms of the
junctions between windows against elsewhere (for the sliding loop and the codec's round trip, which
have none, at the side-by-side layout's). With ``--prompts`` (a labelled manifest) the same from the
coarse codes the bundle itself samples for its captions. With ``--burn-in`` each comparison also has
windows side by side with a burn-in (``StageConfig.window_burn_in``: each window after the first
starts that many seconds before the frames it keeps and drops them).

    python benchmarks/fine_windows.py TOKENS [--model default] [--limit 64] [--edge 10]
        [--manifest M] [--prompts P --prompt-limit 48] [--seeds 2] [--no-nll] [--burn-in S]
"""

from __future__ import annotations

import argparse
import json

import librosa
import numpy as np
import torch

from musiclm.data.cache import TokenCache
from musiclm.eval.attributes import attribute_accuracy, estimate_key, estimate_tempo, tempo_accuracy
from musiclm.lm.stages import SEP, FineStage
from musiclm.pipeline import MusicLM


@torch.inference_mode()
def window_nll(stage: FineStage, codes: torch.Tensor, start: int, end: int, scored: int) -> torch.Tensor:
    """NLL ``[levels, end - scored]`` of the fine ids of frames ``scored .. end`` of ``codes`` ``[Q, F]``,
    in the window of frames ``start .. end`` (the fine ids of ``start .. scored`` are context)."""
    c, n = stage.config.coarse_levels, end - start
    coarse = stage.flat_levels(codes[None, :c, start:end])
    fine = stage.target_ids(codes[None, c:, start:end])
    tokens = torch.cat([coarse, coarse.new_full((1, 1), SEP), fine], dim=1)
    logits = stage.transformer(tokens[:, :-1])[0, coarse.shape[1] :]  # row j predicts fine id j
    nll = torch.empty(fine.shape[1])
    for level in range(stage.levels):  # one codebook's rows at a time, restricted to its span
        lo, hi = stage.target_span(level)
        rows = torch.arange(level, fine.shape[1], stage.levels)
        logp = logits[rows, lo:hi].float().log_softmax(-1)
        nll[rows] = -logp.gather(1, (fine[0, rows] - lo)[:, None])[:, 0]
    nll = nll.reshape(n, stage.levels).T  # [levels, frames]
    return nll[:, scored - start :]


def layouts(burn_in: float) -> list[tuple[str, bool, float]]:
    """(name, parallel_windows, window_burn_in) of the layouts compared."""
    out = [("sliding", False, 0.0), ("side by side", True, 0.0)]
    return out + ([(f"side by side, {burn_in:g} s burn-in", True, burn_in)] if burn_in > 0 else [])


def use_layout(stage: FineStage, parallel: bool, burn_in: float) -> tuple[bool, float]:
    """Set the fine stage's layout; returns the one it had."""
    before = stage.config.parallel_windows, stage.config.window_burn_in
    stage.config.parallel_windows, stage.config.window_burn_in = parallel, burn_in
    return before


def clip_nll(stage: FineStage, codes: torch.Tensor) -> torch.Tensor:
    """NLL ``[levels, F]`` of every fine id of a clip, in the layout the stage generates with."""
    frames = codes.shape[-1]
    spans = stage.window_spans if stage.config.parallel_windows else stage.sliding_spans
    parts = [window_nll(stage, codes, first, end, kept) for first, kept, end in spans(0, frames)]
    return torch.cat(parts, dim=-1)


def junctions(stage: FineStage, frames: int) -> list[float]:
    """Seconds where one window's kept frames meet the next's in the side-by-side layout the stage
    is set to (without it: the plain side-by-side layout's, as a control)."""
    before = use_layout(stage, True, stage.config.window_burn_in if stage.config.parallel_windows else 0.0)
    spans = stage.window_spans(0, frames)
    use_layout(stage, *before)
    return [kept / stage.units_per_second for _, kept, _ in spans[1:]]


def boundary_onsets(audio: np.ndarray, sample_rate: int, seconds: list[float]) -> tuple[float, float]:
    """Mean onset strength within 50 ms of each of ``seconds``, and elsewhere."""
    hop = sample_rate // 100
    env = librosa.onset.onset_strength(y=audio, sr=sample_rate, hop_length=hop)
    near = np.zeros(len(env), dtype=bool)
    for b in seconds:
        i = round(b * 100)
        near[max(0, i - 5) : i + 6] = True
    return float(env[near].mean()), float(env[~near].mean())


def labelled(manifest: str, n: int) -> tuple[list[str], list[float], list[str]]:
    """Captions, labelled tempi and modes of the first ``n`` entries of a labelled manifest."""
    entries = [json.loads(line) for line in open(manifest) if line.strip()][:n]
    labels = [e["labels"] for e in entries]
    return [e["caption"] for e in entries], [float(x["bpm"]) for x in labels], [x["mode"] for x in labels]


@torch.inference_mode()
def generated_coarse(model: MusicLM, captions: list[str], seconds: float, batch: int = 8) -> torch.Tensor:
    """Coarse codes ``[N, coarse_levels, F]`` the bundle samples for ``captions`` (its own guidance)."""
    sampling = model.sampling_configs()
    frames = round(seconds * model.coarse_lm.units_per_second)
    out = []
    for i in range(0, len(captions), batch):
        part = captions[i : i + batch]
        cond = model.prompt_conditioning(part, seconds)
        g = torch.Generator().manual_seed(i)
        semantic = model.semantic_lm.generate(cond, frames // 2, sampling=sampling["semantic"], generator=g)
        out.append(
            model.coarse_lm.generate(cond, frames, inputs=semantic, sampling=sampling["coarse"], generator=g)
        )
    return torch.cat(out)


@torch.inference_mode()
def compare_sampled(
    model: MusicLM,
    coarse: torch.Tensor,
    bpm: list[float],
    modes: list[str],
    *,
    seeds: int,
    title: str,
    burn_in: float,
    true_fine=None,
) -> None:
    """Tempo and mode accuracy and onsets at window boundaries of ``coarse`` decoded with fine codes
    sampled in each layout (``seeds`` draws each), beside ``true_fine`` (the codec's round trip)."""
    stage, sr, batch = model.fine_lm, model.sample_rate, 8
    sampling = model.sampling_configs()["fine"]
    systems = {} if true_fine is None else {"codec round trip": [true_fine]}
    at_seconds = {}
    shipped = stage.config.parallel_windows, stage.config.window_burn_in
    for name, parallel, burn in layouts(burn_in):
        use_layout(stage, parallel, burn)
        at_seconds[name] = junctions(stage, coarse.shape[-1])
        runs = []
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            runs.append(torch.cat([
                stage.generate(None, coarse.shape[-1], inputs=part, sampling=sampling, generator=g)
                for part in coarse.split(batch)
            ]))  # fmt: skip
        systems[name] = runs
    use_layout(stage, *shipped)
    print(f"\n{title} ({seeds} draws each), decoded:")
    print(
        f"{'fine codes':<32}{'tempo':>8}{'x2':>8}{'x2 per draw':>24}{'mode':>8}"
        f"{'onsets at boundaries':>22}{'elsewhere':>11}"
    )
    for name, runs in systems.items():
        acc, acc2, mode, at, off = [], [], [], [], []
        for fine in runs:
            audio = model.decode(coarse, fine).numpy()
            tempi = [estimate_tempo(a, sr) for a in audio]
            acc.append(tempo_accuracy(tempi, bpm))
            acc2.append(tempo_accuracy(tempi, bpm, octave=True))
            mode.append(attribute_accuracy([estimate_key(a, sr)[1] for a in audio], modes))
            where = at_seconds.get(name, at_seconds["side by side"])  # the round trip: the control's
            onsets = np.array([boundary_onsets(a, sr, where) for a in audio])
            at.append(onsets[:, 0].mean())
            off.append(onsets[:, 1].mean())
        draws = " ".join(f"{a:.3f}" for a in acc2)
        print(
            f"{name:<32}{np.mean(acc):>8.3f}{np.mean(acc2):>8.3f}{draws:>24}{np.mean(mode):>8.3f}"
            f"{np.mean(at):>22.3f}{np.mean(off):>11.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token cache of held-out clips with a codec field (musiclm tokenize)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--edge", type=int, default=10, help="frames at each window start scored apart")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--manifest", default=None, help="labelled manifest of the cache: also sample")
    ap.add_argument("--seeds", type=int, default=2, help="fine draws per clip when sampling")
    ap.add_argument("--prompts", default=None, help="labelled manifest: also from generated coarse codes")
    ap.add_argument("--prompt-limit", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-nll", action="store_true", help="skip the teacher-forced loss")
    ap.add_argument("--burn-in", type=float, default=0.0, help="seconds: also side by side with it")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model, device="cpu")
    stage = model.fine_lm.eval()
    cache = TokenCache(args.tokens, fields=["codec"])
    clips = min(args.limit, len(cache.positions))
    if args.manifest:
        _, bpm, modes = labelled(args.manifest, clips)
        codes = [cache[i]["codec"].long() for i in cache.positions[:clips]]
        frames = min(x.shape[-1] for x in codes)
        codes = torch.stack([x[:, :frames] for x in codes])
        c = stage.config.coarse_levels
        title = f"{clips} clips of {args.tokens}, fine codes sampled from their true coarse codes"
        compare_sampled(
            model,
            codes[:, :c],
            bpm,
            modes,
            seeds=args.seeds,
            title=title,
            burn_in=args.burn_in,
            true_fine=codes[:, c:],
        )
    if args.prompts:
        captions, bpm, modes = labelled(args.prompts, args.prompt_limit)
        coarse = generated_coarse(model, captions, args.seconds)
        title = f"{len(captions)} prompts of {args.prompts}, fine codes sampled from the coarse codes the bundle samples"
        compare_sampled(model, coarse, bpm, modes, seeds=args.seeds, title=title, burn_in=args.burn_in)
    if args.no_nll:  # only the sampled comparisons
        return
    w = stage.window_units
    sums = {name: torch.zeros(3) for name, _, _ in layouts(args.burn_in)}  # all, window starts, rest
    counts = torch.zeros(3)
    for i in cache.positions[:clips]:
        codes = cache[i]["codec"].long()
        frames = codes.shape[-1]
        edge = torch.zeros(frames, dtype=torch.bool)
        for s in range(w, frames, w):
            edge[s : s + args.edge] = True
        for name, parallel, burn in layouts(args.burn_in):
            use_layout(stage, parallel, burn)
            nll = clip_nll(stage, codes)
            per_frame = nll.sum(0)
            sums[name] += torch.stack([per_frame.sum(), per_frame[edge].sum(), per_frame[~edge].sum()])
        counts += torch.tensor([frames, int(edge.sum()), int((~edge).sum())]) * stage.levels
    print(
        f"fine LM NLL per id (nats), teacher-forced, {clips} clips of {args.tokens}, {w}-frame windows, "
        f"first {args.edge} frames of each window after the first apart"
    )
    print(f"{'layout':<32}{'all':>10}{'starts':>10}{'rest':>10}")
    for name, total in sums.items():
        print(f"{name:<32}" + "".join(f"{v:>10.4f}" for v in (total / counts).tolist()))


if __name__ == "__main__":
    main()
