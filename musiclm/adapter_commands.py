"""``musiclm adapter codec|semantic|mulan``: a bundle component from pretrained ``transformers`` weights.

Each writes an ordinary checkpoint directory that ``musiclm bundle --codec/--semantic/--mulan DIR``
accepts: EnCodec as the codec, a HuBERT / w2v-BERT layer + k-means (fitted here on ``--data``) as
the semantic tokenizer, CLAP + an RVQ (fitted here on ``--data``) as MuLaN. Weights are read from a
local directory or the Hugging Face cache, never downloaded unless ``--download`` is given.
"""

from __future__ import annotations

import argparse

from musiclm import checks


def register(sub, train) -> None:
    adapter = sub.add_parser(
        "adapter", help="make a bundle component from pretrained transformers weights"
    ).add_subparsers(dest="component", required=True, metavar="COMPONENT")
    codec = adapter.add_parser("codec", help="EnCodec as the codec")
    codec.add_argument("--hf", default="facebook/encodec_24khz", help="EnCodec name or local directory")
    codec.add_argument("--bandwidth", type=float, default=6.0, help="kbps (picks the RVQ levels)")
    semantic = adapter.add_parser("semantic", help="a HuBERT / w2v-BERT layer + k-means")
    semantic.add_argument("--hf", required=True, help="e.g. facebook/hubert-base-ls960 or a local directory")
    semantic.add_argument("--layer", type=int, default=7)
    semantic.add_argument("--clusters", type=int, default=1024)
    semantic.add_argument(
        "--frame-rate",
        type=float,
        default=25.0,
        help="token rate: half the codec's frame rate (EnCodec 24 kHz: 37.5)",
    )
    mulan = adapter.add_parser("mulan", help="LAION CLAP + an RVQ for conditioning tokens")
    mulan.add_argument("--hf", default="laion/clap-htsat-unfused", help="CLAP name or local directory")
    mulan.add_argument("--quantizers", type=int, default=12)
    mulan.add_argument("--codebook", type=int, default=1024)
    for p in (codec, semantic, mulan):
        p.add_argument("--out", required=True, help="checkpoint directory to write")
        p.add_argument("--download", action="store_true", help="allow downloading the weights")
        p.set_defaults(func=_adapter)
    for p in (semantic, mulan):
        p.add_argument("--data", required=True, help="audio folder or manifest to fit on")
        p.add_argument("--clips", type=int, default=200, help="clips of the data to fit on")
        p.add_argument("--clip-seconds", type=float, default=10.0)


def _adapter(args: argparse.Namespace) -> None:
    from musiclm.checkpoint import save_model

    checks.writable_dir(args.out, "checkpoint folder")
    offline = not args.download
    if args.component == "codec":
        from musiclm.codec.encodec import EncodecCodec

        checks.positive_float(args.bandwidth, "--bandwidth")
        model = EncodecCodec.from_pretrained(args.hf, bandwidth=args.bandwidth, local_files_only=offline)
        what = f"{model.num_quantizers} levels at {model.frame_rate:g} Hz"
    else:
        from musiclm.data.datasets import validation_clips

        checks.positive_int(args.clips, "--clips")
        checks.positive_float(args.clip_seconds, "--clip-seconds")
        if args.component == "semantic":
            from musiclm.semantic.hf import HFSemanticTokenizer

            checks.positive_int(args.clusters, "--clusters")
            checks.positive_float(args.frame_rate, "--frame-rate")
            model = HFSemanticTokenizer.from_pretrained(
                args.hf,
                layer=args.layer,
                num_clusters=args.clusters,
                local_files_only=offline,
                frame_rate=args.frame_rate,
            )
            clips = validation_clips(args.data, model.sample_rate, args.clips, seconds=args.clip_seconds)
            model.fit(list(clips))
            what = f"layer {args.layer}, {args.clusters} clusters fitted on {len(clips)} clips"
        else:
            from musiclm.mulan.hf import ClapMuLaN

            checks.positive_int(args.quantizers, "--quantizers")
            checks.positive_int(args.codebook, "--codebook")
            model = ClapMuLaN.from_pretrained(
                args.hf, num_quantizers=args.quantizers, codebook_size=args.codebook, local_files_only=offline
            )
            clips = validation_clips(args.data, model.sample_rate, args.clips, seconds=args.clip_seconds)
            error = model.fit_quantizer(list(clips))
            what = f"RVQ {args.quantizers} x {args.codebook} fitted on {len(clips)} clips (error {error:.4f})"
    save_model(model, args.out)
    print(f"{args.component} adapter written to {args.out}: {args.hf}, {what}")
