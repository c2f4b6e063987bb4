"""Warm-starting a stage LM from a trained one, so that training runs add up.

A new run may read fewer MuLaN levels (``mulan_levels``) or use fewer key/value heads
(``kv_heads``) than the checkpoint it starts from; both change parameter shapes, so weights are
carried over by meaning, not by position:

- embedding and output rows by token kind (the layouts' named id ranges): a model that reads
  fewer MuLaN levels keeps the rows of the levels it reads, and kinds the source lacks (melody
  ids when the source had no melody conditioning) keep their fresh initialisation;
- key and value projections averaged over each group of heads that will share one (the
  checkpoint conversion of grouped-query attention, Ainslie et al. 2023, "GQA");
- a codebook embedding of the MuLaN ids (``--mulan-codebooks``), an aligned semantic embedding
  (``--aligned-semantic``), a pitch-class embedding (``--melody-chroma``) or a beat-phase embedding
  (``--beat-phase``) that the source lacks starts at zero, so the new run starts where the source was;
- a shallower model (``--depth``) takes every (source depth / depth)-th block from the first, the
  rule DistilBERT used to initialise its student (Sanh et al. 2019): of the shipped 4-layer fine
  LM's two-block subsets, blocks 0 and 2 start at the lowest held-out loss (7.20 nats against
  7.52 for 0 and 3 and 12.09 for 0 and 1; the full model 6.77);
- a deeper model keeps the source's blocks in order, spread over its depth, with a new block
  after each of them as far as it needs; a new block starts with its two residual output
  projections at zero, so it passes its input through unchanged and the grown model computes
  exactly what the source did (Net2Net's function-preserving deepening, Chen et al. 2016), while
  its own attention and feed-forward weights keep their fresh initialisation to learn from.

Anything else that differs (width, codebook sizes) is an error naming it.
"""

from __future__ import annotations

import torch

from musiclm.errors import ConfigError
from musiclm.lm.stages import NUM_SPECIALS, StageLM

ROWS = ("transformer.embed.weight", "transformer.head.weight")  # one row per token id
CODEBOOK_EMBEDDING = "mulan_embedding."
ALIGNED_EMBEDDING = "aligned_semantic_embedding."
CHROMA_EMBEDDING = "chroma_embedding."
BEAT_EMBEDDING = "beat_embedding."
ZERO_STARTED = (ALIGNED_EMBEDDING, CHROMA_EMBEDDING, BEAT_EMBEDDING)
OPTIONAL = (CODEBOOK_EMBEDDING, *ZERO_STARTED)  # a run may add them to a source without them
BLOCKS = "transformer.blocks."
RESIDUAL_OUTPUTS = ("attn.out.weight", "ff.2.weight", "ff.2.bias")  # zero: a new block is the identity


def warm_start(model: StageLM, source: StageLM, *, where: str = "--init") -> None:
    """Copy ``source``'s weights into ``model`` (in place), adapting the layout and the kv heads."""
    if source.stage != model.stage:
        raise ConfigError(f"{where}: holds a {source.stage} LM, this run trains a {model.stage} LM")
    if source.mulan_embedding is not None and model.mulan_embedding is None:
        raise ConfigError(
            f"{where}: embeds MuLaN ids by codebook vector; this run needs --mulan-codebooks too"
        )
    if source.config.aligned_semantic and not model.config.aligned_semantic:
        raise ConfigError(f"{where}: adds aligned semantic embeddings; this run needs --aligned-semantic too")
    if source.config.melody_chroma and not model.config.melody_chroma:
        raise ConfigError(f"{where}: reads the melody's pitch classes; this run needs --melody-chroma too")
    if source.config.beat_phase and not model.config.beat_phase:
        raise ConfigError(f"{where}: reads beat phases; this run needs --beat-phase too")
    new, old = model.state_dict(), _pick_blocks(source.state_dict(), source, model)
    added = _added_blocks(model, source)

    def shared(names) -> set[str]:  # optional embeddings and added blocks are compared apart
        return {n for n in names if not n.startswith(OPTIONAL) and _block_of(n) not in added}

    if shared(new) != shared(old):
        missing = sorted(shared(new) ^ shared(old))[0]
        raise ConfigError(f"{where}: parameter {missing} exists in only one of the two models")
    ranges = _row_map(model, source, where=where)
    with torch.no_grad():
        for name, target in new.items():
            # a codebook embedding the source lacks stays at zero, and its codebooks always come
            # from the MuLaN the run names, never from the source
            if name.startswith(CODEBOOK_EMBEDDING) and (name not in old or name.endswith(".codebooks")):
                continue
            if name.startswith(ZERO_STARTED) and name not in old:
                continue
            if _block_of(name) in added:
                if name.endswith(RESIDUAL_OUTPUTS):
                    target.zero_()
                continue
            weight = old[name]
            if name in ROWS:
                for (lo, hi), (src_lo, _) in ranges:
                    target[lo:hi] = weight[src_lo : src_lo + hi - lo]
            elif name.endswith("attn.qkv.weight") and weight.shape != target.shape:
                target.copy_(_pool_kv_heads(weight, model, source, where=where))
            elif weight.shape != target.shape:
                raise ConfigError(
                    f"{where}: {name} is {list(weight.shape)} there and {list(target.shape)} here "
                    "(a different preset?)"
                )
            else:
                target.copy_(weight)


def block_indices(depth: int, source_depth: int) -> list[int]:
    """The source blocks a shallower ``depth``-block model starts from: every ``source_depth / depth``-th."""
    return [i * source_depth // depth for i in range(depth)]


def grown_positions(depth: int, source_depth: int) -> list[int]:
    """Where a deeper ``depth``-block model puts each source block, in order, the new blocks
    between and after them (4 -> 8: 0, 2, 4, 6; 4 -> 6: 0, 1, 3, 4)."""
    return [i * depth // source_depth for i in range(source_depth)]


def _block_of(name: str) -> int | None:
    return int(name[len(BLOCKS) :].split(".", 1)[0]) if name.startswith(BLOCKS) else None


def _added_blocks(model: StageLM, source: StageLM) -> set[int]:
    depth, source_depth = model.config.lm.depth, source.config.lm.depth
    return set(range(depth)) - set(grown_positions(depth, source_depth)) if depth > source_depth else set()


def _pick_blocks(state: dict, source: StageLM, model: StageLM) -> dict:
    """``source``'s state dict with its blocks renumbered to ``model``'s depth (unchanged if equal)."""
    depth, source_depth = model.config.lm.depth, source.config.lm.depth
    if depth == source_depth:
        return state
    if depth > source_depth:
        picked = {str(i): j for i, j in enumerate(grown_positions(depth, source_depth))}
    else:
        picked = {str(i): j for j, i in enumerate(block_indices(depth, source_depth))}  # source -> new
    out = {}
    for name, weight in state.items():
        if name.startswith(BLOCKS):
            index, rest = name[len(BLOCKS) :].split(".", 1)
            if index not in picked:
                continue  # a block the shallower model leaves out
            name = f"{BLOCKS}{picked[index]}.{rest}"
        out[name] = weight
    return out


def _row_map(model: StageLM, source: StageLM, *, where: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``((lo, hi) in model, (lo, hi) in source)`` for the special ids and every token kind both have."""
    pairs = [((0, NUM_SPECIALS), (0, NUM_SPECIALS))]
    for kind, (lo, hi) in model.layout.ranges.items():
        if kind not in source.layout.ranges:
            continue  # e.g. melody ids the source was trained without: they keep their initialisation
        src_lo, src_hi = source.layout.ranges[kind]
        if src_hi - src_lo != hi - lo:
            raise ConfigError(f"{where}: {kind} has {src_hi - src_lo} ids there and {hi - lo} here")
        pairs.append(((lo, hi), (src_lo, src_hi)))
    return pairs


def _pool_kv_heads(weight: torch.Tensor, model: StageLM, source: StageLM, *, where: str) -> torch.Tensor:
    """A fused ``[q; k; v]`` projection with ``source``'s kv heads -> one with ``model``'s, each new
    key / value head the mean of the heads of its group."""
    lm, src = model.config.lm, source.config.lm
    heads, head_dim = lm.heads, lm.dim // lm.heads
    kv_new, kv_old = lm.kv_heads or heads, src.kv_heads or src.heads
    if (src.dim, src.heads) != (lm.dim, lm.heads) or kv_old % kv_new:
        raise ConfigError(
            f"{where}: {kv_old} key/value heads of {src.heads} there cannot be grouped into "
            f"{kv_new} of {heads} here"
        )
    q, k, v = weight.split([lm.dim, kv_old * head_dim, kv_old * head_dim])

    def pool(w: torch.Tensor) -> torch.Tensor:
        return w.view(kv_new, kv_old // kv_new, head_dim, lm.dim).mean(1).reshape(-1, lm.dim)

    return torch.cat([q, pool(k), pool(v)])
