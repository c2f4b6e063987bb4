"""Time to generate audio with a preset's three stage LMs and codec, on any device (prints numbers).

    python benchmarks/generate_audio.py --preset paper --device cuda [--dtype bf16] [--seconds 10]
        [--candidates 4] [--guidance 3] [--kv-heads K] [--cuda-graphs] [--compile] [--parallel-windows]
        [--rounds 3]

Random weights (speed does not depend on them): a request of ``--candidates`` sequences for
``--seconds`` of audio runs the semantic, coarse and fine stages as ``MusicLM.generate`` does (the
same windows, the NULL-conditioned copy of the batch under guidance) and decodes with the codec;
MuLaN's text embedding and reranking, a few milliseconds, are left out. Prints each stage's seconds,
the total and the real-time factor (audio seconds per second of generation; above 1 is faster than
real time), the median of ``--rounds`` requests after one warm-up request. ``--parallel-windows``
samples the fine stage's windows side by side in one batch (the fine LM's ``parallel_windows``, not
the shipped default: benchmarks/README.md says what it costs in quality). ``--compile`` compiles each
LM's decoding step (``torch.compile``) during the warm-up request; the timed requests, longer than
the warm-up, run the same compiled code (batch and cache length are dynamic sizes in it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from musiclm.codec.soundstream import SoundStream
from musiclm.config import get_preset
from musiclm.lm.conditioning import Conditioning
from musiclm.lm.sampling import SamplingConfig
from musiclm.lm.stages import CoarseStage, FineStage, SemanticStage, StageConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def request(stages, codec, *, seconds: float, candidates: int, guidance: float, device) -> dict[str, float]:
    semantic, coarse, fine = stages
    c = semantic.config
    mulan = torch.randint(0, c.mulan_codebook, (candidates, c.mulan_quantizers), device=device)
    cond = Conditioning.constant(mulan)
    g = torch.Generator(device=device).manual_seed(0)
    times: dict[str, float] = {}

    def timed(name, fn):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times[name] = time.perf_counter() - t0
        return out

    def sampling(stage, guidance: float = 1.0) -> SamplingConfig:  # the stage's own temperature
        return SamplingConfig(stage.config.lm.temperature, guidance=guidance)

    sem = timed(
        "semantic",
        lambda: semantic.generate(
            cond, round(seconds * c.semantic_rate), sampling=sampling(semantic, guidance),
            generator=g,
        ),
    )  # fmt: skip
    frames = 2 * sem.shape[-1]
    crs = timed(
        "coarse",
        lambda: coarse.generate(cond, frames, inputs=sem, sampling=sampling(coarse, guidance), generator=g),
    )
    fin = timed(
        "fine",
        lambda: fine.generate(None, frames, inputs=crs, sampling=sampling(fine), generator=g),
    )
    with torch.inference_mode():
        timed("decode", lambda: codec.decode(torch.cat([crs, fin], dim=1)))
    times["total"] = sum(times.values())
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16" if torch.cuda.is_available() else "fp32", choices=list(DTYPES))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--kv-heads", type=int, default=0, help="key/value heads of the LMs (0: one per head)")
    ap.add_argument("--cuda-graphs", action="store_true", help="replay each decoding step as a CUDA graph")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="compile each decoding step (torch.compile; with graphs: replayed)",
    )
    ap.add_argument(
        "--parallel-windows", action="store_true", help="the fine stage's windows side by side in one batch"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.cuda_graphs and device.type != "cuda":
        ap.error("--cuda-graphs needs --device cuda")
    cfg = get_preset(args.preset)
    stages = []
    for name, cls in (("semantic", SemanticStage), ("coarse", CoarseStage), ("fine", FineStage)):
        sc = StageConfig.from_musiclm(name, cfg)
        sc.lm.kv_heads = args.kv_heads or None
        sc.parallel_windows = args.parallel_windows and name == "fine"
        stage = cls(sc).eval().to(device=device, dtype=dtype)
        stage.cuda_graphs = args.cuda_graphs
        stage.compile_decoding = args.compile
        stages.append(stage)
    codec = SoundStream(cfg.codec).eval().to(device)
    params = sum(p.numel() for s in stages for p in s.parameters())
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    graphs = (
        (", CUDA graphs" if args.cuda_graphs else "")
        + (", compiled" if args.compile else "")
        + (", fine windows side by side" if args.parallel_windows else "")
    )
    print(f"{args.preset} preset, {params / 1e6:.0f}M LM parameters, {args.dtype}{graphs}, on {where}")
    kw = dict(seconds=args.seconds, candidates=args.candidates, guidance=args.guidance, device=device)
    warm = request(stages, codec, **{**kw, "seconds": min(args.seconds, 2.0)})
    print(
        f"warm-up request ({min(args.seconds, 2.0):g} s of audio, compiling if asked): {warm['total']:.1f} s"
    )
    runs = [request(stages, codec, **kw) for _ in range(args.rounds)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    split = ", ".join(f"{k} {v:.1f}" for k, v in median.items() if k != "total")
    print(
        f"{args.seconds:g} s x {args.candidates} candidates, guidance {args.guidance:g}: "
        f"{median['total']:.1f} s ({split}); real-time factor {args.seconds / median['total']:.2f}"
    )


if __name__ == "__main__":
    main()
