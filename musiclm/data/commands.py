"""``musiclm tokenize``."""

from __future__ import annotations

import argparse


def register(sub, train) -> None:
    p = sub.add_parser("tokenize", help="precompute codec / semantic / MuLaN tokens of a dataset")
    p.add_argument("--data", required=True, help="audio folder, .jsonl manifest or .csv")
    p.add_argument(
        "--out",
        required=True,
        help="cache folder (a rerun resumes; new fields are added; a field made by another model is refused)",
    )
    p.add_argument("--codec", default=None, help="codec checkpoint ('default' = the shipped one)")
    p.add_argument("--semantic", default=None, help="semantic tokenizer checkpoint")
    p.add_argument(
        "--mulan",
        default=None,
        help="MuLaN checkpoint (gives mulan_tokens of the audio and mulan_text_tokens of the captions)",
    )
    p.add_argument("--melody", default=None, help="melody embedder checkpoint (gives melody_tokens)")
    p.add_argument(
        "--chroma",
        action="store_true",
        help="also the pitch class of every semantic-rate frame (field chroma, for --melody-chroma LMs)",
    )
    p.add_argument(
        "--beats",
        action="store_true",
        help="also the beat phase of every semantic-rate frame (field beats, for --beat-phase LMs): a "
        "grid at the manifest's bpm label where it has one, else librosa's beat tracker",
    )
    p.add_argument("--segment-seconds", type=float, default=30.0)
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_tokenize)

    data = sub.add_parser(
        "data", help="datasets: the synthetic captioned benchmark and the real-music corpus"
    ).add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = data.add_parser(
        "synth",
        help="render captioned synthetic music (music21 tunes + procedural styles, FluidSynth)",
        description="Writes audio/, midi/, train.jsonl, test.jsonl (captions, labels, melody notes) "
        "and synth.json. Deterministic in --seed; a rerun resumes.",
    )
    s.add_argument("--hours", type=float, default=1.0, help="total duration to render")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sample-rate", type=int, default=16000)
    s.add_argument("--clip-seconds", type=float, default=10.0)
    s.add_argument("--test-fraction", type=float, default=0.1, help="held-out share (own tunes and wordings)")
    s.add_argument("--styles", default=None, help="comma-separated subset of styles (default: all)")
    s.add_argument("--library-size", type=int, default=200, help="music21 corpus tunes to draw melodies from")
    s.add_argument("--workers", type=int, default=None, help="render processes (default: all cores, max 8)")
    s.add_argument("--format", default="flac", choices=["flac", "ogg", "wav"], help="audio file format")
    s.add_argument(
        "--soundfonts",
        default=None,
        help="comma-separated soundfont files, or names in the system's soundfont folders, each chunk of "
        "clips drawing one; 'all': every known General MIDI soundfont found (more timbres). Default "
        "TimGM6mb.sf2, what the benchmark's sets and the shipped model's training set were rendered "
        "with: the same seed renders other audio with other soundfonts",
    )
    s.add_argument("--no-midi", action="store_true", help="do not write the MIDI files")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=_synth)

    r = data.add_parser(
        "real",
        help="captionless corpus of real recorded music from Debian game-music packages",
        description="Fetches each package with apt-get download + dpkg-deb -x (nothing installed), cuts "
        "its music into clips and writes train/valid/test.jsonl (split by track), corpus.json and "
        "licenses/. A rerun resumes.",
    )
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--packages", default=None, help="comma-separated subset (default: all known packages)")
    r.add_argument(
        "--cache", default=None, help="where .deb files are kept and unpacked (default: OUT/cache)"
    )
    r.add_argument("--sample-rate", type=int, default=16000)
    r.add_argument("--clip-seconds", type=float, default=10.0)
    r.add_argument(
        "--valid-fraction", type=float, default=0.05, help="share of tracks held out for validation"
    )
    r.add_argument("--test-fraction", type=float, default=0.05, help="share of tracks held out for testing")
    r.add_argument("--format", default="flac", choices=["flac", "ogg", "opus"], help="clip file format")
    r.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores, max 8)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=_real)

    m = data.add_parser(
        "merge", help="merge audio folders, .jsonl manifests and .csv files into one manifest"
    )
    m.add_argument("sources", nargs="+", help="folders (captions in same-named .txt), .jsonl or .csv files")
    m.add_argument("-o", "--output", required=True, help="the merged .jsonl manifest")
    m.set_defaults(func=_merge)

    c = data.add_parser(
        "recaption",
        help="caption a labelled synthetic manifest anew from its labels, in the training or held-out "
        "wordings (the same prompts paraphrased, for an adherence evaluation)",
    )
    c.add_argument("source", help=".jsonl manifest from 'musiclm data synth'")
    c.add_argument("--wording", choices=["train", "test"], required=True, help="which wordings to use")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("-o", "--output", required=True, help="the new .jsonl manifest")
    c.set_defaults(func=_recaption)

    u = data.add_parser("summary", help="hours, clips, captions and unusable files of a dataset")
    u.add_argument("source", help="folder, .jsonl manifest or .csv")
    u.set_defaults(func=_summary)


def _merge(args: argparse.Namespace) -> None:
    from pathlib import Path

    from musiclm import checks
    from musiclm.data.manifest import load_entries, write_manifest
    from musiclm.errors import DataError

    out = Path(args.output)
    if out.suffix != ".jsonl":
        raise DataError(f"{out}: the merged manifest must be a .jsonl file")
    checks.not_same_file(out, args.sources)
    checks.writable_file(out)
    entries, seen = [], set()
    for source in args.sources:
        for e in load_entries(source):
            key = (str(Path(e.path).resolve()), e.start, e.end)
            if key not in seen:  # the same clip listed twice counts once
                seen.add(key)
                entries.append(e)
    write_manifest(out, entries)
    captioned = sum(bool(e.caption) for e in entries)
    print(f"{out}: {len(entries)} entries ({captioned} captioned) from {len(args.sources)} sources")


def _recaption(args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    import numpy as np

    from musiclm import checks
    from musiclm.data.manifest import read_manifest, write_manifest
    from musiclm.data.synth.captions import caption_for
    from musiclm.data.synth.styles import STYLES
    from musiclm.errors import DataError

    out = Path(args.output)
    if args.seed < 0:
        raise DataError(f"--seed must be a non-negative integer, got {args.seed}")
    if out.suffix != ".jsonl":
        raise DataError(f"{out}: the new manifest must be a .jsonl file")
    checks.not_same_file(out, [args.source])
    checks.writable_file(out)
    entries = read_manifest(args.source)
    for n, e in enumerate(entries, 1):
        if e.labels.get("genre") not in STYLES:
            raise DataError(f"{args.source}: entry {n} ({e.id}) has no synthetic style label to caption from")
    new = []
    for n, e in enumerate(entries):
        rng = np.random.default_rng([args.seed, n])
        caption = caption_for(e.labels, rng, args.wording, style_words=STYLES[e.labels["genre"]].words)
        new.append(dataclasses.replace(e, caption=caption))
    write_manifest(out, new)
    print(f"{out}: {len(new)} entries captioned in the {args.wording} wordings")


def _summary(args: argparse.Namespace) -> None:
    from musiclm.data.manifest import dataset_summary

    summary = dataset_summary(args.source)
    print(
        f"{args.source}: {summary['clips']} usable clips, {summary['hours']:.2f} h, "
        f"{summary['captioned']} captioned, {len(summary['skipped'])} unusable"
    )
    for path, why in summary["skipped"]:
        print(f"  skipped {path}: {why}")
    if summary["copies"]:
        print(
            f"  copies or links of another file (the same bytes): {summary['copies']} of {summary['files']} "
            "usable files (train bundle keeps each recording in one split)"
        )


def _real(args: argparse.Namespace) -> None:
    from musiclm.data.real import PACKAGES, RealCorpusConfig, build_real_corpus

    packages = tuple(x.strip() for x in args.packages.split(",")) if args.packages else tuple(PACKAGES)
    config = RealCorpusConfig(
        packages=packages,
        sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        audio_format=args.format,
    )
    summary = build_real_corpus(
        args.out, config, cache_dir=args.cache, workers=args.workers, progress=not args.no_progress
    )
    for name, row in summary["packages"].items():
        print(
            f"  {name:28s} {row['train']:6.2f} h train {row['valid']:5.2f} h valid {row['test']:5.2f} h test  {row['licence']}"
        )
    for line in summary["errors"]:
        print(f"skipped {line}")
    h, c, t = summary["hours"], summary["clips"], summary["tracks"]
    print(
        f"{args.out}: "
        + ", ".join(f"{s} {h[s]:.2f} h / {c[s]} clips / {t[s]} tracks" for s in ("train", "valid", "test"))
    )


def _synth(args: argparse.Namespace) -> None:
    from musiclm.data.synth import STYLES, SynthConfig, synthesize

    styles = tuple(x.strip() for x in args.styles.split(",")) if args.styles else tuple(STYLES)
    config = SynthConfig(
        hours=args.hours,
        seed=args.seed,
        sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds,
        test_fraction=args.test_fraction,
        library_size=args.library_size,
        styles=styles,
        write_midi=not args.no_midi,
        audio_format=args.format,
    )
    fonts = [x.strip() for x in args.soundfonts.split(",") if x.strip()] if args.soundfonts else None
    summary = synthesize(
        args.out, config, workers=args.workers, progress=not args.no_progress, soundfonts=fonts
    )
    print(
        f"{args.out}: {summary['clips']} clips ({summary['splits']}), {len(summary['styles'])} styles, "
        f"{len(summary['instruments'])} instruments, {summary['melody_sources']} melodies; "
        f"rendered {summary['rendered_seconds']:.0f} s at {summary['realtime_factor']}x real time, "
        f"{summary['megabytes_per_hour']} MB/hour"
    )


def _tokenize(args: argparse.Namespace) -> None:
    import torch

    from musiclm import checks
    from musiclm.checkpoint import component_kinds, load_model
    from musiclm.data.tokenize import FIELD_EXTRACTORS, tokenize
    from musiclm.errors import MusicLMError
    from musiclm.pretrained import component_path

    checks.seconds(args.segment_seconds, "--segment-seconds")
    checks.positive_int(args.shard_size, "--shard-size")
    wanted = {
        "codec": args.codec,
        "semantic": args.semantic,
        "mulan_tokens": args.mulan,
        "melody_tokens": args.melody,
    }
    models, sources = {}, {}
    for field, path in wanted.items():
        if path:
            kind = FIELD_EXTRACTORS[field][0]
            model = load_model(component_path(path, kind), kind=component_kinds(kind))
            models[field] = model.to("cuda" if torch.cuda.is_available() else "cpu")
            sources[field] = path
    if "mulan_tokens" in models:
        models["mulan_text_tokens"] = models["mulan_tokens"]
        sources["mulan_text_tokens"] = sources["mulan_tokens"]
    if args.chroma:
        from musiclm.data.tokenize import PitchClassTrack

        models["chroma"] = PitchClassTrack()
    if args.beats:
        from musiclm.data.tokenize import BeatPhaseTrack

        models["beats"] = BeatPhaseTrack()
    if not models:
        raise MusicLMError(
            "nothing to compute: give at least one of --codec, --semantic, --mulan, --melody, --chroma, "
            "--beats"
        )
    skipped = tokenize(
        args.data,
        args.out,
        models,
        segment_seconds=args.segment_seconds,
        shard_size=args.shard_size,
        progress=not args.no_progress,
        sources=sources,
    )
    for where, why in skipped:
        print(f"skipped {where}: {why}")
    print(f"{args.out}: fields {sorted(models)} ready ({len(skipped)} skipped)")
