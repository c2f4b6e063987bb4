"""``musiclm train semantic-lm | coarse-lm | fine-lm --tokens CACHE``."""

from __future__ import annotations

import argparse

NEEDS = {
    "semantic": ["semantic", "mulan_tokens"],
    "coarse": ["codec", "semantic", "mulan_tokens"],
    "fine": ["codec"],
}


def cache_fields(config) -> list[str]:
    """The token cache fields an LM of this ``StageConfig`` trains and is scored on."""
    fields = list(NEEDS[config.stage])
    if config.melody_quantizers:
        fields.append("melody_tokens")
    if config.text_token_prob > 0:
        fields.append("mulan_text_tokens")
    if config.melody_chroma:
        fields.append("chroma")
    if config.beat_phase:
        fields.append("beats")
    return fields


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cuda-graphs`` and ``--compile``: how the LMs run their decoding step (``StageLM.cuda_graphs``,
    ``StageLM.compile_decoding``), for every command that generates and for ``serve``."""
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay each LM decoding step as a CUDA graph (a CUDA device only; the same tokens, "
        "several times faster for large LMs)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile each LM's decoding step with torch.compile (fewer, fused kernels a step; the "
        "first request compiles, a minute or more for large LMs; pays on a GPU, with --cuda-graphs)",
    )


def register(sub, train) -> None:
    from musiclm.train.args import add_train_arguments

    for stage in ("semantic", "coarse", "fine"):
        p = train.add_parser(f"{stage}-lm", help=f"train the {stage} stage LM on a token cache")
        p.add_argument(
            "--tokens",
            required=True,
            nargs="+",
            help="token cache from 'musiclm tokenize'; several are pooled (e.g. a first data set and "
            "what was added since)",
        )
        p.add_argument("--preset", default="tiny", help="config preset (tiny, paper)")
        if stage != "fine":
            p.add_argument(
                "--melody",
                action="store_true",
                help="melody conditioning: melody tokens after the MuLaN tokens (cache needs melody_tokens)",
            )
            p.add_argument(
                "--mulan-levels",
                type=int,
                default=0,
                help="condition on the first K MuLaN RVQ levels only (default 0: all)",
            )
            p.add_argument(
                "--mulan-codebooks",
                default=None,
                help="the MuLaN checkpoint that made the cache's tokens ('default': the shipped one): the "
                "LM also embeds each MuLaN id through its codebook vector, so what it learns of one code "
                "carries to its neighbours (default: one learned row per id, as the paper)",
            )
            p.add_argument(
                "--cond-drop-prob",
                type=float,
                default=None,
                help="share of training windows whose conditioning is dropped (NULL), what classifier-free "
                "guidance amplifies against (default: the preset's, 0.1)",
            )
            p.add_argument(
                "--melody-drop-prob",
                type=float,
                default=None,
                help="share of windows whose melody tokens alone are dropped, so the LM also follows text "
                "without a melody (with --melody; default 0.5)",
            )
            p.add_argument(
                "--melody-chroma",
                action="store_true",
                help="also add to each position the embedding of the melody's pitch class at the frame "
                "it predicts (cache needs chroma: `musiclm tokenize --chroma`; as MusicGen, not the paper)",
            )
            p.add_argument(
                "--beat-phase",
                action="store_true",
                help="also add to each position the embedding of the beat phase of the frame it "
                "predicts, so a prompt's tempo ('80 bpm') reaches the LM (cache needs beats: "
                "`musiclm tokenize --beats`; as Music ControlNet's rhythm control, not the paper)",
            )
            p.add_argument(
                "--beat-drop-prob",
                type=float,
                default=None,
                help="share of windows whose beat phases are dropped, so the LM also follows a prompt "
                "that names no tempo (with --beat-phase; default 0.3)",
            )
            p.add_argument(
                "--text-token-prob",
                type=float,
                default=0.0,
                help="share of windows conditioned on their caption's MuLaN text tokens instead of "
                "the audio tokens (cache field mulan_text_tokens; default 0: audio tokens, as the paper)",
            )
        if stage == "coarse":
            p.add_argument(
                "--aligned-semantic",
                action="store_true",
                help="also add to each position the embedding of the semantic token under the codec "
                "frame it predicts (frame-aligned, as SoundStorm; default: the paper's prefix only)",
            )
        p.add_argument(
            "--kv-heads",
            type=int,
            default=0,
            help="key/value heads, fewer than the preset's heads for grouped-query attention: a "
            "KV cache that many times smaller, faster sampling (default 0: one per query head)",
        )
        p.add_argument(
            "--attn-dropout",
            type=float,
            default=None,
            help="dropout of the attention weights in training (default: the preset's); 0 lets the "
            "fused attention kernel run, about twice as fast a step on a CPU",
        )
        p.add_argument(
            "--depth",
            type=int,
            default=0,
            help="transformer layers (default 0: the preset's); with --init, a shallower LM starts from "
            "every (its depth / depth)-th layer of that LM, a deeper one from all of them with new layers "
            "between that start as the identity, so it starts where that LM is",
        )
        p.add_argument(
            "--init",
            default=None,
            help=f"warm-start from this {stage} LM checkpoint, or a bundle's ('default': the shipped one); it may read "
            "more MuLaN levels, have more key/value heads or more layers than this run",
        )
        p.add_argument(
            "--compile",
            action="store_true",
            help="torch.compile the training pass through the blocks: fused kernels, more tokens a "
            "second on a GPU (the first steps compile; sampling stays eager)",
        )
        p.add_argument("--valid-tokens", default=None, help="held-out token cache: val/loss while training")
        p.add_argument(
            "--sample-codec",
            default=None,
            help="codec checkpoint: each validation also writes generated and reference audio of held-out clips",
        )
        p.add_argument(
            "--sample-clips", type=int, default=2, help="held-out clips generated from per validation"
        )
        p.add_argument("--sample-seconds", type=float, default=4.0)
        if stage == "semantic":
            p.add_argument(
                "--sample-coarse-lm", default=None, help="coarse LM checkpoint to hear the samples through"
            )
            p.add_argument(
                "--sample-fine-lm", default=None, help="fine LM checkpoint to hear the samples through"
            )
        add_train_arguments(p, out_dir=f"runs/{stage}-lm", max_steps=20000, batch_size=16, lr=3e-4)
        p.set_defaults(func=_train, stage=stage)


def _train(args: argparse.Namespace) -> None:
    from musiclm import checks
    from musiclm.checkpoint import load_model
    from musiclm.config import get_preset
    from musiclm.data.cache import TokenCache, check_same_models, held_out_paths, open_token_caches
    from musiclm.data.manifest import check_held_out
    from musiclm.errors import ConfigError
    from musiclm.lm.stages import STAGES, StageConfig
    from musiclm.lm.train import StageDataset, StageTask, check_batch_memory
    from musiclm.train import Trainer, held_out_batches
    from musiclm.train.args import train_config_from_args

    train_config = train_config_from_args(args)  # checks every setting before any work
    if args.sample_codec and not args.valid_tokens:
        raise ConfigError("--sample-codec needs --valid-tokens (the held-out clips to generate from)")
    checks.positive_int(args.sample_clips, "--sample-clips")
    checks.seconds(args.sample_seconds, "--sample-seconds")
    melody = getattr(args, "melody", False)
    config = StageConfig.from_musiclm(args.stage, get_preset(args.preset), melody=melody)
    config.mulan_levels = checks.mulan_levels(getattr(args, "mulan_levels", 0), config.mulan_quantizers)
    config.text_token_prob = checks.share(getattr(args, "text_token_prob", 0.0), "--text-token-prob")
    config.lm.kv_heads = checks.kv_heads(args.kv_heads, config.lm.heads)
    config.aligned_semantic = getattr(args, "aligned_semantic", False)
    config.melody_chroma = getattr(args, "melody_chroma", False)
    config.beat_phase = getattr(args, "beat_phase", False)
    if getattr(args, "beat_drop_prob", None) is not None:
        config.beat_drop_prob = checks.share(args.beat_drop_prob, "--beat-drop-prob")
    if args.attn_dropout is not None:
        if not 0 <= args.attn_dropout < 1:  # at 1 every attention weight is dropped
            raise ConfigError(f"--attn-dropout must lie in [0, 1), got {args.attn_dropout}")
        config.lm.attn_dropout = float(args.attn_dropout)
    if args.depth:
        config.lm.depth = checks.positive_int(args.depth, "--depth")
    if getattr(args, "cond_drop_prob", None) is not None:
        config.lm.cond_drop_prob = checks.share(args.cond_drop_prob, "--cond-drop-prob")
    if getattr(args, "melody_drop_prob", None) is not None:
        config.melody_drop_prob = checks.share(args.melody_drop_prob, "--melody-drop-prob")
    fields = cache_fields(config)
    quantizer = None
    if getattr(args, "mulan_codebooks", None):
        quantizer = _mulan_quantizer(args.mulan_codebooks, config)
        config.mulan_dim = quantizer.dim
    model = STAGES[args.stage](config)
    check_batch_memory(model, args.batch_size)
    if args.init:
        from musiclm.lm.warm_start import warm_start
        from musiclm.pretrained import component_path

        source = load_model(component_path(args.init, f"{args.stage}_lm"), kind=f"{args.stage}_lm")
        warm_start(model, source, where=f"--init {args.init}")
    if args.compile:
        from musiclm.lm.train import compile_blocks

        compile_blocks(model)
    if quantizer is not None:
        from musiclm.lm.codebook_embedding import quantizer_codebooks

        model.mulan_embedding.set_codebooks(quantizer_codebooks(quantizer, config.mulan_read))
    cache = open_token_caches(args.tokens, fields=fields)
    parts = getattr(cache, "caches", [cache])  # the caches pooled, or the one
    for path, one in zip(args.tokens, parts, strict=True):
        _check_cache_shapes(path, one, model.config, args.preset)
    task = StageTask(model)
    # which models made the tokens it learns from: a bundle then refuses other components beside it
    sources = {}  # pooled caches agree where they record one (check_same_models)
    for one in parts:
        for field in fields:
            record = one.source(field)
            if record.get("fingerprint"):
                sources.setdefault(field, record)
    task.export_metadata = {"token_sources": sources}
    if args.valid_tokens:
        valid_cache = TokenCache(
            args.valid_tokens,
            fields=fields + (["codec"] if args.sample_codec and "codec" not in fields else []),
        )
        # a validation cache of other shapes would score nan or fail at the first validation, and
        # one made by other components would score tokens of another meaning
        _check_cache_shapes(args.valid_tokens, valid_cache, model.config, args.preset)
        check_same_models([*parts, valid_cache])
        check_held_out(
            [p for one in parts for p in held_out_paths(one)],
            held_out_paths(valid_cache),
            train=" ".join(map(str, args.tokens)),
            valid=f"{args.valid_tokens} (--valid-tokens)",
        )
        held_out = StageDataset(valid_cache, model, seed=args.seed + 1)
        task.valid_batches = held_out_batches(held_out, args.batch_size)
        if args.sample_codec:
            task.samples["codec"] = load_model(args.sample_codec, ("codec", "hf_encodec"))
            task.samples["records"] = [
                valid_cache[i] for i in range(min(args.sample_clips, len(valid_cache)))
            ]
            task.samples["seconds"] = args.sample_seconds
            later = {
                "coarse_lm": getattr(args, "sample_coarse_lm", None),
                "fine_lm": getattr(args, "sample_fine_lm", None),
            }
            task.samples["later"] = {k: v for k, v in later.items() if v}
    trainer = Trainer(task, StageDataset(cache, model, seed=args.seed), train_config)
    trainer.fit()
    print(f"{args.stage} LM written to {trainer.model_dir}")


def _check_cache_shapes(path, cache, config, preset: str, items: int = 64) -> None:
    """A token cache's codec levels and MuLaN tokens are the ones the stage's config reads, and its
    ids (of the first ``items`` clips) lie in the vocabularies the config embeds: a cache made by a
    tokenizer of more clusters or a codec of a larger codebook is named here, not as an IndexError."""
    from musiclm.errors import DataError

    first = cache[0] if len(cache) else {}
    if "codec" in first and first["codec"].shape[0] != config.codec_levels:
        raise DataError(
            f"{path}: codec tokens have {first['codec'].shape[0]} levels, "
            f"the {preset} preset expects {config.codec_levels}"
        )
    if "mulan_tokens" in first and first["mulan_tokens"].shape[0] != config.mulan_quantizers:
        raise DataError(
            f"{path}: {first['mulan_tokens'].shape[0]} MuLaN tokens, expected {config.mulan_quantizers}"
        )
    vocabularies = {
        "semantic": ("semantic tokens", config.semantic_clusters),
        "codec": ("codec codes", config.codec_codebook),
        "mulan_tokens": ("MuLaN tokens", config.mulan_codebook),
        "mulan_text_tokens": ("MuLaN text tokens", config.mulan_codebook),
        "melody_tokens": ("melody tokens", config.melody_codebook),
    }
    for i in range(min(items, len(cache))):
        item = cache[i]
        for field, (what, size) in vocabularies.items():
            ids = item.get(field)
            if ids is None or not ids.numel() or (field == "melody_tokens" and not config.melody_quantizers):
                continue
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= size:
                raise DataError(
                    f"{path}: clip {item['id']} has {what} up to {high}, the {preset} preset's {config.stage} "
                    f"LM reads {size} (was the cache made with other components?)"
                )


def _mulan_quantizer(path: str, config):
    """The RVQ of the MuLaN checkpoint at ``path``, checked against the stage's MuLaN token shape."""
    from musiclm.checkpoint import component_kinds, load_tensors
    from musiclm.errors import CheckpointError, ConfigError
    from musiclm.modules.quantization import ResidualVectorQuantizer
    from musiclm.pretrained import component_path

    # the RVQ alone: building the whole MuLaN would need its text tower (MiniLM, CLAP) installed
    directory = component_path(path, "mulan")
    try:
        quantizer = ResidualVectorQuantizer.from_state_dict(
            load_tensors(directory, component_kinds("mulan"), "quantizer.")
        ).eval()
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{directory}: no usable MuLaN quantizer ({str(e).splitlines()[0]})") from None
    if (quantizer.num_quantizers, quantizer.codebook_size) != (
        config.mulan_quantizers,
        config.mulan_codebook,
    ):
        raise ConfigError(
            f"--mulan-codebooks {path}: {quantizer.num_quantizers} levels of {quantizer.codebook_size} "
            f"codes, the LM reads {config.mulan_quantizers} of {config.mulan_codebook}"
        )
    return quantizer
