"""``musiclm generate``, ``musiclm continue``, ``musiclm story`` and ``musiclm bundle``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from musiclm import checks
from musiclm.config import CONDITIONING_SOURCES, TARGET_LUFS
from musiclm.errors import MusicLMError, PromptError
from musiclm.lm.commands import add_decoding_arguments


def _add_temperatures_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--temperatures SEMANTIC COARSE FINE``, as generate, story, continue and bundle take it (eval
    spells it out: importing this module would add a level to the import graph)."""
    parser.add_argument(
        "--temperatures", type=float, nargs=3, default=None, metavar=("SEMANTIC", "COARSE", "FINE"), help=help
    )


def _add_sampling_arguments(p: argparse.ArgumentParser, candidates: int) -> None:
    p.add_argument(
        "-o", "--output", default="music.wav", help="output WAV (a .json sidecar is written beside it)"
    )
    p.add_argument("--model", default="default", help="bundle directory or shipped bundle name")
    p.add_argument("--candidates", type=int, default=candidates, help="samples ranked by MuLaN score")
    p.add_argument("--seed", type=int, default=0)
    _add_temperatures_argument(
        p, "sampling temperatures per stage (default: the LMs' own, 1.0 1.0 0.7 for the shipped bundle)"
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="sample each stage from its k likeliest ids (default: the LMs' own; none)",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="nucleus sampling for every stage (default: the LMs' own; none)",
    )
    p.add_argument(
        "--guidance",
        type=checks.guidance_arg,
        default=None,
        metavar="G|S,C",
        help="classifier-free guidance scale of the semantic and coarse stages, or S,C for each "
        "(1 = off; default: the LMs' own, 4,2 for the shipped bundle)",
    )
    p.add_argument("--plot", action="store_true", help="also write a PNG mel spectrogram")
    p.add_argument(
        "--loudness",
        type=float,
        default=TARGET_LUFS,
        metavar="LUFS",
        help="normalise the output to this integrated loudness, peaks kept below -1 dBFS (default %(default)g, EBU R128); "
        "with a bundle that reads loudness from the prompt, a prompt that names no dynamics comes out "
        "here and a quiet or loud one as far below or above it as the bundle reads",
    )
    p.add_argument(
        "--no-normalize", action="store_true", help="write the audio as generated (at the prompt's own level)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: GPU if there is one)")
    add_decoding_arguments(p)
    p.add_argument(
        "--max-memory-gb", type=float, default=None, help="refuse larger requests (default: the free memory)"
    )
    p.add_argument("--no-progress", action="store_true")


def register(sub, train) -> None:
    g = sub.add_parser(
        "generate",
        help="generate music from a text prompt",
        description="Text -> music with a MusicLM bundle; writes the WAV and a JSON sidecar.",
    )
    g.add_argument("prompt", nargs="*", help="the text prompt(s)")
    g.add_argument("--prompts", default=None, help="text file with one prompt per line")
    g.add_argument("--seconds", type=float, default=10.0)
    g.add_argument("--melody", default=None, help="audio file whose melody the music should follow")
    g.add_argument(
        "--bpm",
        type=float,
        default=None,
        help="tempo of every prompt (default: the tempo a prompt names, e.g. '80 bpm'; read by models "
        "whose LMs were trained with --beat-phase)",
    )
    _add_sampling_arguments(g, candidates=4)
    g.set_defaults(func=_generate)

    c = sub.add_parser("continue", help="continue an audio prompt (optionally steered by text)")
    c.add_argument("audio", help="audio file to continue")
    c.add_argument(
        "prompt", nargs="?", default=None, help="text prompt (default: the audio's own MuLaN tokens)"
    )
    c.add_argument("--seconds", type=float, default=10.0, help="seconds to add")
    c.add_argument(
        "--bpm",
        type=float,
        default=None,
        help="tempo to continue at, from the audio's last beat (default: the tempo the prompt names, else "
        "the audio's own; read by models whose LMs were trained with --beat-phase)",
    )
    _add_sampling_arguments(c, candidates=1)
    c.set_defaults(func=_continue)

    s = sub.add_parser(
        "story",
        help="story mode: prompts that change over time",
        description='Example: musiclm story "calm piano" 15 "energetic drums" 15 -o story.wav',
    )
    s.add_argument("segments", nargs="+", help="PROMPT SECONDS [PROMPT SECONDS ...]")
    _add_sampling_arguments(s, candidates=1)
    s.set_defaults(func=_story)

    b = sub.add_parser("bundle", help="assemble trained components into a MusicLM bundle")
    b.add_argument("--out", required=True)
    b.add_argument("--name", default="musiclm")
    b.add_argument(
        "--half",
        action="store_true",
        help="store weights as float16 (half the size) and embedding banks as int8 rows (a quarter)",
    )
    b.add_argument(
        "--guidance",
        type=checks.guidance_arg,
        default=None,
        metavar="G|S,C",
        help="the guidance scale requests without one get, one for the semantic and coarse LMs or S,C "
        "for each; recorded in their configs; set it by measurement, e.g. musiclm eval --guidance S,C",
    )
    _add_temperatures_argument(
        b,
        "the sampling temperatures requests without any get (recorded in each LM's config; set them "
        "by measurement, e.g. musiclm eval --temperatures S C F)",
    )
    b.add_argument(
        "--conditioning",
        choices=CONDITIONING_SOURCES,
        default=None,
        help="what the LMs read of a prompt: its MuLaN text tokens (the paper's) or its audio "
        "prototype's (needs --prototypes); recorded in the prototypes' config; default: as that says",
    )
    from musiclm.bundle import COMPONENTS, OPTIONAL

    for name in COMPONENTS:
        flag = "--" + name.replace("_", "-")
        b.add_argument(flag, dest=name, required=name not in OPTIONAL, help=f"{name} checkpoint directory")
    b.set_defaults(func=_bundle)


def _load(args):
    from musiclm.pipeline import MusicLM

    model = MusicLM.from_pretrained(args.model, device=args.device)
    model.cuda_graphs = args.cuda_graphs
    model.compile_decoding = args.compile
    return model


def _check_args(args, outputs: list[Path], inputs: list[str | None] = ()) -> None:
    """Everything that can be checked without the model, before it is loaded."""
    checks.cuda_graphs(args.cuda_graphs, checks.device(args.device), "request")
    checks.seed(args.seed)
    checks.top_k(args.top_k)
    checks.top_p(args.top_p)
    args.guidance = checks.guidance(args.guidance)
    checks.candidates(args.candidates)
    if getattr(args, "seconds", None) is not None:
        checks.seconds(args.seconds)
    if args.max_memory_gb is not None:
        checks.positive_float(args.max_memory_gb, "--max-memory-gb", PromptError)
    checks.loudness(args.loudness)
    checks.temperatures(args.temperatures)
    for out in outputs:
        checks.not_same_file(out, list(inputs))
        checks.writable_file(out)
        checks.writable_file(out.with_suffix(".json"), "sidecar")


def _check_audio_input(path: str | None, what: str) -> float:
    """An audio file the request reads (a melody, a clip to continue) exists, has a readable header
    and a usable length: checked before the model loads (the pipeline reads it again, fully)."""
    if path is None:
        return 0.0
    from musiclm.audio import audio_seconds
    from musiclm.errors import AudioError

    try:
        return audio_seconds(path, min_seconds=0.5, max_seconds=checks.MAX_SECONDS)
    except AudioError as e:
        raise AudioError(f"{what}: {e}") from None


def _read_prompts_file(path: Path) -> list[str]:
    if not path.is_file():
        raise PromptError(f"{path}: no such prompts file")
    data = path.read_bytes()
    if b"\x00" in data:
        raise PromptError(f"{path}: not a text file (binary data)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise PromptError(f"{path}: the prompts file has no prompt (one per line)")
    return prompts


def _sampling_kwargs(args) -> dict:
    return dict(
        seed=args.seed,
        temperatures=tuple(args.temperatures) if args.temperatures else None,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance=args.guidance,
        progress=not args.no_progress,
        max_memory_gb=args.max_memory_gb,
    )


def _outputs(output: str, count: int) -> list[Path]:
    out = Path(output)
    if out.suffix.lower() != ".wav":
        raise MusicLMError(f"{output}: the output must be a .wav file")
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i:02d}{out.suffix}") for i in range(count)]


def _write(result, row: int, path: Path, *, model, args, extra: dict) -> None:
    from musiclm.audio import normalize_loudness, save_audio
    from musiclm.files import write_text_atomic

    wav, loudness = result.audio[row], None
    level = None if result.prompt_level_db is None else float(result.prompt_level_db[row])
    if not args.no_normalize:
        wav, loudness = normalize_loudness(wav, result.sample_rate, lufs=args.loudness + (level or 0.0))
    save_audio(path, wav, result.sample_rate)
    sidecar = {
        "model": model.name,
        "sample_rate": result.sample_rate,
        "seconds": round(result.audio.shape[-1] / result.sample_rate, 3),
        "seed": args.seed,
        "candidates": args.candidates,
        "scores": [round(float(x), 4) for x in result.scores[row]],
        "chosen": int(result.chosen[row]),
        "loudness_lufs": None if loudness is None else round(loudness, 2),
        "prompt_level_db": None if level is None else round(level, 2),
        "parameters": {
            "temperatures": args.temperatures,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "guidance": checks.guidance_record(model.guidance_scales(args.guidance)),
        },
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }
    write_text_atomic(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    if args.plot:
        from musiclm.plot import save_spectrogram_png

        save_spectrogram_png(wav, result.sample_rate, path.with_suffix(".png"), markers=result.segment_starts)
    print(f"{path}: {sidecar['seconds']:g} s, MuLaN score {sidecar['scores'][sidecar['chosen']]:.3f}")


def _generate(args: argparse.Namespace) -> None:
    prompts = list(args.prompt)
    if args.prompts:
        prompts += _read_prompts_file(Path(args.prompts))
    if not prompts:
        raise PromptError('give a prompt, e.g. musiclm generate "calm piano" -o out.wav, or --prompts FILE')
    checks.prompts(prompts)
    outputs = _outputs(args.output, len(prompts))
    from musiclm.tempo import tempo_from_prompt

    _check_args(args, outputs, [args.melody, args.prompts])
    checks.bpm(args.bpm, "--bpm")
    _check_audio_input(args.melody, "melody")
    model = _load(args)
    result = model.generate(
        prompts,
        seconds=args.seconds,
        candidates=args.candidates,
        melody=args.melody,
        bpm=args.bpm,
        **_sampling_kwargs(args),
    )
    for i, (prompt, path) in enumerate(zip(prompts, outputs, strict=True)):
        bpm = (args.bpm or tempo_from_prompt(prompt)) if model.reads_tempo else None
        _write(
            result,
            i,
            path,
            model=model,
            args=args,
            extra={"prompt": prompt, "melody": args.melody, "bpm": bpm, "mode": "generate"},
        )


def _continue(args: argparse.Namespace) -> None:
    if args.prompt is not None:
        checks.prompts([args.prompt])
    outputs = _outputs(args.output, 1)
    _check_args(args, outputs, [args.audio])
    checks.bpm(args.bpm, "--bpm")
    given = _check_audio_input(args.audio, "audio prompt")
    checks.seconds(given + args.seconds, "the continued piece's length")
    model = _load(args)
    result = model.continue_audio(
        args.audio, args.prompt, seconds=args.seconds, candidates=args.candidates, bpm=args.bpm,
        **_sampling_kwargs(args),
    )  # fmt: skip
    _write(
        result,
        0,
        outputs[0],
        model=model,
        args=args,
        extra={"prompt": args.prompt, "audio_prompt": args.audio, "mode": "continue"},
    )


def _story(args: argparse.Namespace) -> None:
    items = args.segments
    if len(items) % 2:
        raise PromptError("story segments come in pairs: PROMPT SECONDS [PROMPT SECONDS ...]")
    segments = []
    for i in range(0, len(items), 2):
        try:
            segments.append((items[i], float(items[i + 1])))
        except ValueError:
            raise PromptError(f"{items[i + 1]!r} after {items[i]!r} is not a number of seconds") from None
    checks.prompts([p for p, _ in segments])
    lengths = [checks.seconds(s, f"segment {i} seconds") for i, (_, s) in enumerate(segments)]
    checks.seconds(sum(lengths), "the story's length")
    outputs = _outputs(args.output, 1)
    _check_args(args, outputs)
    model = _load(args)
    result = model.story(segments, candidates=args.candidates, **_sampling_kwargs(args))
    extra = {
        "mode": "story",
        "segments": [
            {"prompt": p, "seconds": s, "start": t}
            for (p, s), t in zip(segments, result.segment_starts, strict=True)
        ],
    }
    _write(result, 0, outputs[0], model=model, args=args, extra=extra)


def _bundle(args: argparse.Namespace) -> None:
    from musiclm.bundle import COMPONENTS, make_bundle

    parts = {name: getattr(args, name) for name in COMPONENTS if getattr(args, name)}
    guidance = checks.guidance(args.guidance)
    temperatures = checks.temperatures(args.temperatures)
    out = make_bundle(
        args.out, parts, name=args.name, half=args.half, guidance=guidance, temperatures=temperatures,
        conditioning=args.conditioning,
    )  # fmt: skip
    print(f"{out}: bundle {args.name} with {', '.join(sorted(parts))}")
