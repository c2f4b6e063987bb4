"""Training throughput: tokens/s and model FLOPs utilisation of each stage LM, and codec steps/s.

    python benchmarks/train_throughput.py [--preset paper] [--components semantic coarse fine codec]
        [--batch-size 8] [--codec-batch-size 16] [--steps 20] [--warmup 5] [--peak-tflops F]
        [--attn-dropout P] [--compile]

Each component is trained by the project's own ``Trainer`` (AdamW, EMA, gradient clipping, bf16
autocast on a GPU that has it, as ``musiclm train`` runs it) for ``--warmup + --steps`` optimiser
steps on random data of its training shape: token windows of the stage's training length, audio
crops of the recipe's length for the codec (whose discriminators train from the first step here, so
the whole GAN step is timed). Speed does not depend on the data. The figure is the median step after
the warm-up, from the per-step ``steps_per_s`` of the run's own metrics log.

MFU is the model FLOPs per token, ``6 N + 12 L d T`` (PaLM's count: N parameters outside the token
embedding, L layers, width d, training length T; of the output head only what the loss runs: a
target's id range, at the share of positions that have a target), times tokens/s, over the device's
peak dense bf16 FLOP/s (known for H100 / H200 / A100, else ``--peak-tflops``). Under ``accelerate
launch`` with several processes each process trains its share and the main one prints the figures
of all.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import torch

from musiclm.config import get_preset
from musiclm.lm.stages import STAGES, StageConfig
from musiclm.lm.train import StageDataset, StageTask, compile_blocks
from musiclm.train import TrainConfig, Trainer

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM


def peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def median_step_seconds(run: Path, warmup: int) -> float:
    rates = [
        r["steps_per_s"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if "steps_per_s" in r and r["step"] > warmup
    ]
    return 1 / statistics.median(rates)


def train(task, dataset, *, batch_size: int, steps: int, out: Path, lr: float, betas=(0.9, 0.99)) -> Trainer:
    config = TrainConfig(
        out_dir=str(out),
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        betas=betas,
        warmup_steps=0,
        log_every=1,
        checkpoint_every=10**9,
        checkpoint_minutes=None,
        progress=False,
    )
    trainer = Trainer(task, dataset, config)
    trainer.fit()
    return trainer


def random_records(config: StageConfig, n: int, seconds: float) -> list[dict]:
    frames = int(seconds * config.frame_rate)
    return [
        {
            "codec": torch.randint(0, config.codec_codebook, (config.codec_levels, frames)),
            "semantic": torch.randint(0, config.semantic_clusters, (int(seconds * config.semantic_rate),)),
            "mulan_tokens": torch.randint(0, config.mulan_codebook, (config.mulan_quantizers,)),
        }
        for _ in range(n)
    ]


def stage_figures(stage: str, args, tmp: Path) -> dict:
    config = StageConfig.from_musiclm(stage, get_preset(args.preset))
    if args.attn_dropout is not None:
        config.lm.attn_dropout = args.attn_dropout
    model = STAGES[stage](config)
    if args.compile:  # what `musiclm train *-lm --compile` does (its first steps are the warm-up)
        compile_blocks(model)
    records = random_records(config, 64, 2 * config.lm.window_seconds + 1)
    trainer = train(
        StageTask(model),
        StageDataset(records, model),
        batch_size=args.batch_size,
        steps=args.warmup + args.steps,
        out=tmp / stage,
        lr=3e-4,
    )
    if not trainer.accelerator.is_main_process:
        return None
    seconds = median_step_seconds(tmp / stage, args.warmup)
    c, length = config.lm, model.max_train_len
    params = sum(p.numel() for p in model.parameters()) - model.transformer.embed.weight.numel()
    # the loss runs the head on target positions and each one's id range only (StageLM.loss)
    width = max(hi - lo for lo, hi in model.target_ranges())
    targets = float(model.training_example(records[0], random.Random(0))["loss_mask"][1:].float().mean())
    head = model.transformer.head.weight.numel()
    flops_per_token = 6 * (params - head + targets * c.dim * width) + 12 * c.depth * c.dim * length
    tokens_per_s = trainer.accelerator.num_processes * args.batch_size * length / seconds
    return {
        "component": f"{stage} LM",
        "params": params,
        "batch": args.batch_size,
        "length": length,
        "step_s": seconds,
        "tokens_per_s": tokens_per_s,
        "flops": flops_per_token * tokens_per_s,
    }


def codec_figures(args, tmp: Path) -> dict:
    from musiclm.codec.soundstream import SoundStream
    from musiclm.codec.train import CodecLossConfig, CodecTask

    config = get_preset(args.preset).codec
    crop = int(args.codec_crop_seconds * config.sample_rate)
    audio = 0.1 * torch.randn(256, crop)
    task = CodecTask(SoundStream(config), CodecLossConfig(adversarial_start=0))
    trainer = train(
        task,
        [audio[i] for i in range(len(audio))],
        batch_size=args.codec_batch_size,
        steps=args.warmup + args.steps,
        out=tmp / "codec",
        lr=3e-4,
        betas=(0.5, 0.9),
    )
    if not trainer.accelerator.is_main_process:
        return None
    seconds = median_step_seconds(tmp / "codec", args.warmup)
    return {
        "component": "codec (generator + discriminators)",
        "params": sum(p.numel() for p in task.model.parameters()),
        "batch": args.codec_batch_size,
        "length": crop,
        "step_s": seconds,
        "tokens_per_s": None,
        "flops": None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
    ap.add_argument(
        "--components", nargs="+", default=["semantic", "coarse", "fine", "codec"],
        choices=["semantic", "coarse", "fine", "codec"],
    )  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=8, help="stage LM windows per step and process")
    ap.add_argument("--codec-batch-size", type=int, default=16, help="codec crops per step (the recipe's)")
    ap.add_argument("--codec-crop-seconds", type=float, default=1.0, help="codec crop (the recipe's)")
    ap.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)"
    )
    ap.add_argument(
        "--attn-dropout", type=float, default=None, help="the LMs' attention dropout (default: the preset's)"
    )
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile each stage LM's forward through its blocks"
    )
    args = ap.parse_args()
    peak = peak_tflops(args.peak_tflops)
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} threads"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.components:
            figures = (
                codec_figures(args, Path(tmp)) if name == "codec" else stage_figures(name, args, Path(tmp))
            )
            rows.append(figures)
    if None in rows:  # not the main process
        return
    compiled = ", stage LMs compiled" if args.compile else ""
    print(f"\n{args.preset} preset on {device}{compiled}; median of {args.steps} steps after {args.warmup}")
    print(f"{'component':<36}{'params':>10}{'batch':>7}{'length':>8}{'step s':>9}{'tokens/s':>12}{'MFU':>7}")
    for r in rows:
        tokens = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else f"{1 / r['step_s']:.2f} st/s"
        mfu = f"{100 * r['flops'] / (peak * 1e12):.1f}%" if r["flops"] and peak else "-"
        print(
            f"{r['component']:<36}{r['params'] / 1e6:>9.1f}M{r['batch']:>7}{r['length']:>8}"
            f"{r['step_s']:>9.3f}{tokens:>12}{mfu:>7}"
        )


if __name__ == "__main__":
    main()
