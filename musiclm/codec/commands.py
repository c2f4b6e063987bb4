"""``musiclm train codec``, ``musiclm codec encode|decode`` and ``musiclm demo``."""

from __future__ import annotations

import argparse


def register(sub, train) -> None:
    from musiclm.data import PROCEDURAL
    from musiclm.train.args import add_train_arguments

    p = train.add_parser("codec", help="train the SoundStream codec")
    p.add_argument("--data", required=True, help=f"audio folder, manifest (.jsonl/.csv) or '{PROCEDURAL}'")
    p.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
    p.add_argument("--crop-seconds", type=float, default=1.0, help="training crop length")
    p.add_argument(
        "--procedural-clips", type=int, default=4000, help=f"clips per epoch with --data {PROCEDURAL}"
    )
    p.add_argument(
        "--encoder", choices=["seanet", "stft"], default=None, help="encoder (default: the preset's)"
    )
    p.add_argument(
        "--decoder", choices=["seanet", "istft"], default=None, help="decoder (default: the preset's)"
    )
    p.add_argument(
        "--init",
        default=None,
        help="warm-start from this codec checkpoint, or a bundle's ('default': the shipped one; same config)",
    )
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="with --init: train the decoder alone; the codes stay the same, so LMs trained on them stay valid",
    )
    p.add_argument(
        "--fine-lm",
        default=None,
        help="with --decoder-only: a fine LM (checkpoint, or a bundle's: 'default') whose own fine levels,"
        " sampled from each crop's coarse codes, the decoder learns to render (a share of the crops)",
    )
    p.add_argument(
        "--fine-lm-share",
        type=float,
        default=0.5,
        help="share of the crops whose fine levels --fine-lm samples",
    )
    p.add_argument(
        "--fine-lm-captioned",
        action="store_true",
        help="with --fine-lm: resample only crops of captioned clips (the LMs' music); bare audio keeps"
        " the encoder's codes",
    )
    p.add_argument(
        "--fine-lm-mel-only",
        action="store_true",
        help="with --fine-lm: no --waveform-l1 on resampled crops (their codes are another sample than"
        " the target's, so its phase is no target for them; the mel loss still is)",
    )
    p.add_argument("--valid", default=None, help="held-out audio (folder/manifest) validated while training")
    p.add_argument("--valid-clips", type=int, default=32, help="validation clips (spread over --valid)")
    p.add_argument("--valid-seconds", type=float, default=5.0, help="seconds of each validation clip")
    p.add_argument("--preload", action="store_true", help="decode the training audio into memory once")
    p.add_argument("--adversarial-start", type=int, default=2000, help="steps before the GAN losses start")
    p.add_argument(
        "--waveform-l1",
        type=float,
        default=100.0,
        help="weight of an L1 loss on the waveform (keeps the phase)",
    )
    p.add_argument(
        "--silence-prob",
        type=float,
        default=0.02,
        help="share of crops replaced by silence (decode silence as silence)",
    )
    p.add_argument("--disc-lr", type=float, default=None, help="discriminator learning rate (default: --lr)")
    # no weight EMA by default: averaged encoder weights would not match the EMA codebooks
    add_train_arguments(
        p, out_dir="runs/codec", max_steps=20000, batch_size=16, lr=3e-4, ema_decay=None, betas=(0.5, 0.9)
    )
    p.set_defaults(func=_train)

    codec = sub.add_parser("codec", help="encode audio to acoustic tokens and back").add_subparsers(
        dest="codec_command", required=True, metavar="ACTION"
    )
    enc = codec.add_parser("encode", help="audio file -> codes (.safetensors)")
    enc.add_argument("input")
    enc.add_argument("-o", "--output", required=True)
    enc.add_argument("--model", default=None, help="codec checkpoint directory ('default': the shipped one)")
    enc.set_defaults(func=_encode)
    dec = codec.add_parser("decode", help="codes (.safetensors) -> audio file")
    dec.add_argument("input")
    dec.add_argument("-o", "--output", required=True)
    dec.add_argument("--model", default=None)
    dec.add_argument("--levels", type=int, default=None, help="decode only the first N RVQ levels")
    dec.set_defaults(func=_decode)

    demo = sub.add_parser("demo", help="round-trip the shipped example through the shipped codec")
    demo.add_argument("-o", "--output", default="demo.wav")
    demo.set_defaults(func=_demo)


def _train(args: argparse.Namespace) -> None:
    import dataclasses

    from musiclm import checks
    from musiclm.checkpoint import load_model
    from musiclm.codec.soundstream import SoundStream
    from musiclm.codec.train import CodecLossConfig, CodecTask
    from musiclm.config import get_preset
    from musiclm.data.datasets import training_dataset, validation_clips
    from musiclm.data.manifest import check_held_out_data
    from musiclm.errors import ConfigError
    from musiclm.train import Trainer
    from musiclm.train.args import train_config_from_args

    phase_lr = {"discriminator": args.disc_lr} if args.disc_lr is not None else {}
    train_config = train_config_from_args(args, phase_lr=phase_lr)  # checks every setting before any work
    checks.seconds(args.crop_seconds, "--crop-seconds")
    checks.seconds(args.valid_seconds, "--valid-seconds")
    checks.positive_int(args.valid_clips, "--valid-clips")  # (--disc-lr: TrainConfig checks phase_lr)
    if args.adversarial_start < 0:
        raise ConfigError(f"--adversarial-start must be a step >= 0, got {args.adversarial_start}")
    if not 0 <= args.waveform_l1 < float("inf"):
        raise ConfigError(f"--waveform-l1 must be a weight >= 0, got {args.waveform_l1}")
    check_held_out_data(args.data, args.valid)
    init = None
    if args.decoder_only and not args.init:
        raise ConfigError(
            "--decoder-only needs --init: the codec whose encoder and codebooks stay as they are"
        )
    if args.fine_lm and not args.decoder_only:
        raise ConfigError("--fine-lm needs --decoder-only: the codes it samples are the frozen encoder's")
    if args.fine_lm_captioned and not args.fine_lm:
        raise ConfigError("--fine-lm-captioned needs --fine-lm: it says which crops that LM resamples")
    if args.fine_lm_mel_only and not args.fine_lm:
        raise ConfigError(
            "--fine-lm-mel-only needs --fine-lm: it changes the loss of the crops that LM resamples"
        )
    if not 0 < args.fine_lm_share <= 1:
        raise ConfigError(f"--fine-lm-share must lie in (0, 1], got {args.fine_lm_share}")
    if not 0 <= args.silence_prob < 1:
        raise ConfigError(f"--silence-prob must lie in [0, 1), got {args.silence_prob}")
    if args.init:  # the run continues that codec: its config, not the preset's
        from musiclm.pretrained import component_path

        init = load_model(component_path(args.init, "codec"), kind="codec")
        for part in ("encoder", "decoder"):
            asked, has = getattr(args, part), getattr(init.config, part)
            if asked and asked != has:
                raise ConfigError(f"--init {args.init} has the {has} {part}, not {asked}")
    config = init.config if init is not None else get_preset(args.preset).codec
    config = dataclasses.replace(
        config, encoder=args.encoder or config.encoder, decoder=args.decoder or config.decoder
    )
    fine_lm = _fine_lm(args.fine_lm, config) if args.fine_lm else None
    valid = (
        validation_clips(args.valid, config.sample_rate, args.valid_clips, seconds=args.valid_seconds)
        if args.valid
        else None
    )
    dataset = training_dataset(
        args.data,
        config.sample_rate,
        args.crop_seconds,
        procedural_clips=args.procedural_clips,
        seed=args.seed,
        preload=args.preload,
        max_bad_fraction=args.max_bad_fraction,
    )
    losses = CodecLossConfig(
        adversarial_start=args.adversarial_start,
        waveform_l1_weight=args.waveform_l1,
        silence_prob=args.silence_prob,
    )
    model = SoundStream(config)
    if init is not None:
        model.load_state_dict(init.state_dict())
    task = CodecTask(
        model,
        losses,
        valid_clips=valid,
        decoder_only=args.decoder_only,
        resample=fine_lm.resample_fine if fine_lm is not None else None,
        resampled_share=args.fine_lm_share,
        resample_captioned=args.fine_lm_captioned,
        resampled_mel_only=args.fine_lm_mel_only,
    )
    trainer = Trainer(task, dataset, train_config)
    if fine_lm is not None:
        fine_lm.to(trainer.accelerator.device)
    trainer.fit()
    if getattr(dataset, "report", None):
        print(dataset.report_text())
    print(
        f"codec written to {trainer.model_dir}"
        + (f" (best by validation: {trainer.best_dir})" if valid is not None else "")
    )


def _fine_lm(path: str, codec_config):
    """The fine LM whose samples a decoder-only run renders; its levels must be the codec's."""
    from musiclm.checkpoint import load_model
    from musiclm.errors import ConfigError
    from musiclm.pretrained import component_path

    lm = load_model(component_path(path, "fine_lm"), kind="fine_lm")
    has = (lm.config.codec_levels, lm.config.codec_codebook)
    wants = (codec_config.num_quantizers, codec_config.codebook_size)
    if has != wants:
        raise ConfigError(
            f"--fine-lm {path} models {has[0]} RVQ levels of {has[1]} codes, the codec has {wants[0]} of {wants[1]}"
        )
    return lm


def load_codec(model: str | None):
    """A codec checkpoint by directory, or the shipped default."""
    from musiclm.checkpoint import load_model
    from musiclm.pretrained import component_path

    return load_model(component_path(model, "codec"), kind="codec")


def _encode(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from musiclm import checks
    from musiclm.audio import load_audio
    from musiclm.files import atomic_write

    checks.not_same_file(args.output, [args.input])
    checks.writable_file(args.output)
    codec = load_codec(args.model)
    wav, _ = load_audio(args.input, codec.sample_rate, min_seconds=1 / codec.frame_rate)
    codes = codec.encode(wav[None])[0].to(torch.int16 if codec.config.codebook_size <= 32768 else torch.int32)
    meta = {
        "sample_rate": str(codec.sample_rate),
        "length": str(wav.shape[-1]),
        "frame_rate": str(codec.frame_rate),
    }
    with atomic_write(args.output) as tmp:
        save_file({"codes": codes.contiguous()}, str(tmp), metadata=meta)
    print(f"{args.output}: {codes.shape[0]} levels x {codes.shape[1]} frames at {codec.frame_rate:g} Hz")


def _decode(args: argparse.Namespace) -> None:
    from safetensors import safe_open

    from musiclm import checks
    from musiclm.audio import save_audio
    from musiclm.errors import DataError

    checks.not_same_file(args.output, [args.input])
    checks.writable_file(args.output)
    codec = load_codec(args.model)
    try:
        with safe_open(args.input, "pt") as f:
            codes, meta = f.get_tensor("codes"), f.metadata() or {}
    except Exception as e:
        raise DataError(f"{args.input}: not a codes file written by 'musiclm codec encode' ({e})") from None
    if codes.dim() != 2 or codes.shape[0] > codec.num_quantizers:
        raise DataError(f"{args.input}: codes of shape {list(codes.shape)} do not fit this codec")
    size = codec.config.codebook_size
    if codes.numel() and not (0 <= int(codes.min()) and int(codes.max()) < size):
        raise DataError(
            f"{args.input}: codes up to {int(codes.max())} do not fit this codec's {size} codes "
            "(made by another codec?)"
        )
    if int(meta.get("sample_rate", codec.sample_rate)) != codec.sample_rate:
        raise DataError(
            f"{args.input}: codes were made by a {meta['sample_rate']} Hz codec, not {codec.sample_rate} Hz"
        )
    levels = codes.shape[0] if args.levels is None else args.levels
    if not 1 <= levels <= codes.shape[0]:
        raise DataError(f"--levels must lie in [1, {codes.shape[0]}] (levels in {args.input}), got {levels}")
    length = int(meta["length"]) if "length" in meta else None
    audio = codec.decode(codes[None, :levels].long(), length)[0]
    save_audio(args.output, audio, codec.sample_rate)
    print(f"{args.output}: decoded {levels} levels")


def _demo(args: argparse.Namespace) -> None:
    import json

    import torch

    from musiclm.audio import load_audio, save_audio
    from musiclm.codec.losses import mel_distance, si_sdr
    from musiclm.files import write_text_atomic
    from musiclm.pretrained import example_audio

    codec = load_codec(None)
    wav, _ = load_audio(example_audio(), codec.sample_rate)
    codes = codec.encode(wav[None])
    report = {"input": "example.wav", "seconds": wav.shape[-1] / codec.sample_rate, "levels": {}}
    for k in range(1, codec.num_quantizers + 1):
        recon = codec.decode(codes[:, :k], wav.shape[-1])[0]
        report["levels"][k] = {
            "kbps": round(
                k
                * codec.frame_rate
                * torch.log2(torch.tensor(float(codec.config.codebook_size))).item()
                / 1000,
                2,
            ),
            "mel_distance": round(float(mel_distance(recon, wav, codec.sample_rate)), 4),
            "si_sdr_db": round(float(si_sdr(recon[None], wav[None])[0]), 2),
        }
    out = save_audio(args.output, recon, codec.sample_rate)
    write_text_atomic(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    best = report["levels"][codec.num_quantizers]
    print(
        f"{out}: example reconstructed with all {codec.num_quantizers} levels "
        f"(mel distance {best['mel_distance']}, SI-SDR {best['si_sdr_db']} dB); details in {out.with_suffix('.json')}"
    )
