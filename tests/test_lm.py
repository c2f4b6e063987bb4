import dataclasses
import random
from unittest import mock

import numpy as np
import pytest
import torch

from musiclm.checkpoint import load_model, save_model
from musiclm.config import LMConfig, get_preset
from musiclm.errors import ConfigError, DataError
from musiclm.lm.conditioning import Conditioning
from musiclm.lm.guidance import guide
from musiclm.lm.sampling import SamplingConfig, categorical, sample
from musiclm.lm.stages import CoarseStage, FineStage, SemanticStage, StageConfig
from musiclm.lm.train import StageDataset, StageTask
from musiclm.lm.transformer import float16_linear, float16_weights_supported
from musiclm.train import TrainConfig, Trainer


def stage_config(stage, window, **lm):
    base = dict(dim=32, depth=2, heads=2, ff_dim=64, dropout=0.0, window_seconds=window, cond_drop_prob=0.0)
    base.update(lm)
    return StageConfig(
        stage=stage,
        lm=LMConfig(**base),
        mulan_quantizers=4,
        mulan_codebook=16,
        semantic_clusters=16,
        codec_levels=4,
        codec_codebook=16,
        coarse_levels=2,
    )


def record(seed, frames=40):
    g = torch.Generator().manual_seed(seed)
    return {
        "codec": torch.randint(0, 16, (4, frames), generator=g),
        "semantic": torch.randint(0, 16, (frames // 2,), generator=g),
        "mulan_tokens": torch.randint(0, 16, (4,), generator=g),
    }


def test_layout_ranges_are_disjoint_and_cover_the_vocab():
    model = CoarseStage(stage_config("coarse", 0.4))
    spans = sorted(model.layout.ranges.values())
    assert spans[0][0] == 3 and spans[-1][1] == model.layout.vocab_size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert set(model.layout.ranges) == {*(f"mulan{i}" for i in range(4)), "semantic", "level0", "level1"}


def test_kv_cache_matches_full_forward():
    model = SemanticStage(stage_config("semantic", 1.0)).eval()
    tokens = torch.randint(3, model.layout.vocab_size, (2, 17))
    full = model.transformer(tokens)
    cache = model.transformer.new_cache(2, 17)
    parts = [model.transformer(tokens[:, :9], cache)]
    parts += [model.transformer(tokens[:, i : i + 1], cache) for i in range(9, 13)]
    parts.append(model.transformer(tokens[:, 13:], cache))  # a multi-token chunk on a filled cache
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_decode_step_equals_the_general_path_bit_for_bit():
    model = CoarseStage(stage_config("coarse", 0.4, dropout=0.1)).eval()  # dropout must not apply
    tf = model.transformer
    tokens = torch.randint(3, model.layout.vocab_size, (3, 12))
    general, fast = tf.new_cache(3, 12), tf.new_cache(3, 12)
    tf.hidden(tokens[:, :5], general), tf.hidden(tokens[:, :5], fast)
    for i in range(5, 12):
        assert torch.equal(tf.decode(tokens[:, i], fast), tf.hidden(tokens[:, i : i + 1], general)[:, -1])
    assert fast.length == general.length == 12
    with pytest.raises(ValueError, match="full"):
        tf.decode(tokens[:, 0], fast)
    # in bfloat16 (GPU inference) too, where the rotation runs in float32
    tf = tf.to(torch.bfloat16)
    general, fast = tf.new_cache(3, 12), tf.new_cache(3, 12)
    tf.hidden(tokens[:, :5], general), tf.hidden(tokens[:, :5], fast)
    for i in range(5, 8):
        step = tf.decode(tokens[:, i], fast)
        assert step.dtype == torch.bfloat16
        assert torch.allclose(
            step.float(), tf.hidden(tokens[:, i : i + 1], general)[:, -1].float(), atol=0.05
        )


def test_grouped_query_attention_caches_one_head_and_matches_the_full_forward(tmp_path):
    model = SemanticStage(stage_config("semantic", 1.0, heads=4, kv_heads=1)).eval()
    tf = model.transformer
    assert tf.blocks[0].attn.qkv.weight.shape == (32 + 2 * 8, 32)  # queries 4 heads, keys/values 1
    tokens = torch.randint(3, model.layout.vocab_size, (2, 17))
    full = tf(tokens)
    cache = tf.new_cache(2, 17)
    assert cache.k[0].shape == (2, 1, 17, 8)
    parts = [tf(tokens[:, :9], cache)]
    parts += [tf.logits(tf.decode(tokens[:, i], cache))[:, None] for i in range(9, 13)]
    parts.append(tf(tokens[:, 13:], cache))
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)
    # a different model from multi-head attention, and the setting survives save / load
    mha = SemanticStage(stage_config("semantic", 1.0, heads=4)).eval()
    assert mha.transformer.blocks[0].attn.qkv.weight.shape == (96, 32)
    save_model(model, tmp_path / "lm")
    loaded = load_model(tmp_path / "lm")
    assert loaded.config.lm.kv_heads == 1 and torch.equal(loaded.transformer(tokens), full)
    with pytest.raises(ConfigError, match="kv_heads must divide heads = 4"):  # at the config, not the model
        SemanticStage(stage_config("semantic", 1.0, heads=4, kv_heads=3))


def test_the_fixed_shape_step_equals_the_decoding_step():
    for kv_heads in (None, 1):
        model = CoarseStage(stage_config("coarse", 0.4, heads=4, kv_heads=kv_heads)).eval()
        tf = model.transformer
        tokens = torch.randint(3, model.layout.vocab_size, (3, 12))
        plain, fixed = tf.new_cache(3, 12), tf.new_cache(3, 12)
        tf.hidden(tokens[:, :4], plain), tf.hidden(tokens[:, :4], fixed)
        for i in range(4, 12):
            step = tf.decode(tokens[:, i], fixed, position=torch.tensor([fixed.length]))
            fixed.length += 1  # the caller's, with a position
            assert torch.allclose(step, tf.decode(tokens[:, i], plain), atol=1e-5)
        assert torch.allclose(fixed.k[1], plain.k[1], atol=1e-6)
        assert torch.allclose(fixed.v[1], plain.v[1], atol=1e-6)


@pytest.mark.skipif(not float16_weights_supported(), reason="needs FBGEMM (x86 with AVX2)")
def test_float16_weights_decode_what_float32_decodes_within_their_rounding():
    model = CoarseStage(stage_config("coarse", 0.4, heads=4, kv_heads=2)).eval()
    tf = model.transformer
    for p in tf.parameters():  # trained-size weights, not the 0.02 of initialisation
        p.data.normal_(0, 0.3)
    tokens = torch.randint(3, model.layout.vocab_size, (3, 12))
    exact, half = tf.new_cache(3, 12), tf.new_cache(3, 12, float16_weights=True)
    tf.hidden(tokens[:, :4], exact), tf.hidden(tokens[:, :4], half)
    lo, hi = model.layout.span("level0")
    for i in range(4, 12):
        a, b = tf.decode(tokens[:, i], exact), tf.decode(tokens[:, i], half)
        assert not torch.equal(a, b)  # the step multiplied by the rounded weights
        assert (a - b).abs().max() < 0.02 * a.abs().max()
        la, lb = tf.logits(a, lo, hi, exact), tf.logits(b, lo, hi, half)
        assert lb.shape == (3, hi - lo) and (la - lb).abs().max() < 0.02 * la.abs().max()
    # sampling: float16 weights by default on this CPU, float32 when switched off, and a model they
    # cannot serve is refused before any work
    sem = torch.randint(0, 16, (2, 10))
    cond = Conditioning.constant(torch.randint(0, 16, (2, 4)))
    built, new_cache = [], tf.new_cache

    def recorded(*args, **kwargs):
        built.append(new_cache(*args, **kwargs))
        return built[-1]

    for setting, used in ((None, True), (True, True), (False, False)):
        model.float16_weights = setting
        built.clear()
        with mock.patch.object(tf, "new_cache", recorded):
            out = model.generate(cond, 20, inputs=sem, generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 2, 20)
        assert built and {c.linear is float16_linear for c in built} == {used}
    model.to(torch.bfloat16).float16_weights = True
    with pytest.raises(ValueError, match="float16_weights needs a float32 model"):
        model.generate(cond, 20, inputs=sem)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_graph_decoding_samples_what_eager_decoding_samples(compiled):
    model = CoarseStage(stage_config("coarse", 0.4, heads=4, kv_heads=2)).eval().cuda()
    sem = torch.randint(0, 16, (2, 10), device="cuda")
    cond = Conditioning.constant(torch.randint(0, 16, (2, 4), device="cuda"))
    runs = []
    for graphs in (False, True):
        model.cuda_graphs, model.compile_decoding = graphs, graphs and compiled
        g = torch.Generator(device="cuda").manual_seed(0)
        runs.append(model.generate(cond, 20, inputs=sem, sampling=SamplingConfig(guidance=2.0), generator=g))
    assert torch.equal(*runs)


def test_compiled_decoding_samples_what_eager_decoding_samples_and_compiles_once():
    """`compile_decoding`: the decoding step compiled by inductor samples the eager tokens, and a
    later request with another batch and length runs the same graph (batch and cache length are
    dynamic sizes), not a new compile."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # compiled afresh here, whatever ran before in this process
    before = counters["stats"]["unique_graphs"]
    model = CoarseStage(stage_config("coarse", 0.4, heads=4, kv_heads=2)).eval()
    for frames, batch in ((20, 2), (30, 3)):
        sem = torch.randint(0, 16, (batch, frames // 2))
        cond = Conditioning.constant(torch.randint(0, 16, (batch, 4)))
        runs = []
        for compiled in (False, True):
            model.compile_decoding = compiled
            g = torch.Generator().manual_seed(0)
            runs.append(
                model.generate(cond, frames, inputs=sem, sampling=SamplingConfig(guidance=2.0), generator=g)
            )
        assert torch.equal(*runs)
        assert counters["stats"]["unique_graphs"] - before == 1


def test_categorical_draws_what_multinomial_draws():
    probs = torch.randn(4, 50).mul(3).softmax(-1)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ours = torch.stack([categorical(probs, generator=a) for _ in range(200)])
    theirs = torch.stack([torch.multinomial(probs, 1, generator=b).squeeze(-1) for _ in range(200)])
    assert torch.equal(ours, theirs)
    assert len(ours.unique()) > 10  # really random


def test_sampling_respects_range_top_k_and_seed():
    logits = torch.randn(64, 50)
    ids = sample(logits, SamplingConfig(temperature=1.0, top_k=3), 10, hi=20)
    assert ids.min() >= 10 and ids.max() < 20
    top3 = torch.topk(logits[:, 10:20], 3).indices + 10
    assert (ids[:, None] == top3).any(1).all()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    cfg = SamplingConfig(temperature=1.0, top_p=0.9)
    assert torch.equal(
        sample(logits, cfg, 0, hi=50, generator=g1), sample(logits, cfg, 0, hi=50, generator=g2)
    )
    assert torch.equal(sample(logits, SamplingConfig(temperature=0), 0, hi=50), logits.argmax(1))
    with pytest.raises(ValueError):
        SamplingConfig(top_p=1.5)


def test_guidance_one_is_the_conditional_model():
    c, u = torch.randn(3, 10), torch.randn(3, 10)
    assert torch.allclose(guide(c, u, 1.0), c, atol=1e-6)
    model = SemanticStage(stage_config("semantic", 1.0)).eval()
    mulan = torch.randint(0, 16, (2, 4))

    def run(scale):
        sampling = SamplingConfig(temperature=1.0, guidance=scale)
        return model.generate(
            Conditioning.constant(mulan), 10, sampling=sampling, generator=torch.Generator().manual_seed(0)
        )

    plain = model.generate(
        Conditioning.constant(mulan),
        10,
        sampling=SamplingConfig(temperature=1.0),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(run(1.0), plain)
    # the unconditional branch really drops the conditioning
    prefix = torch.cat([model.cond_ids(mulan), torch.ones(2, 1, dtype=torch.long)], dim=1)
    uncond = prefix.clone()
    uncond[:, :4] = 2  # NULL
    assert not torch.allclose(model.transformer(prefix)[:, -1], model.transformer(uncond)[:, -1])


def test_sliding_generation_lengths_ranges_and_seeds():
    sem = SemanticStage(stage_config("semantic", 1.0)).eval()  # 25-token window
    coarse = CoarseStage(stage_config("coarse", 0.4)).eval()  # 20-frame window
    fine = FineStage(stage_config("fine", 0.2)).eval()  # 10-frame window
    mulan = torch.randint(0, 16, (3, 4))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    cond = Conditioning.constant(mulan)
    s = sem.generate(cond, 61, generator=g())
    assert s.shape == (3, 61) and s.min() >= 0 and s.max() < 16
    assert torch.equal(s, sem.generate(cond, 61, generator=g()))
    steps = []
    c = coarse.generate(cond, 46, inputs=s[:, :23], generator=g(), progress=lambda d, t: steps.append((d, t)))
    assert c.shape == (3, 2, 46) and c.min() >= 0 and c.max() < 16
    assert steps[-1] == (92, 92)
    f = fine.generate(None, 37, inputs=c[..., :37], generator=g())
    assert f.shape == (3, 2, 37) and f.min() >= 0 and f.max() < 16
    # continuation: a prompt is kept as context and only new frames come back
    more = coarse.generate(cond, 40, inputs=s[:, :30], prompt=c[..., :20], generator=g())
    assert more.shape == (3, 2, 40)


def test_slide_context_keeps_that_share_of_a_window_and_samples_each_frame_once():
    # a 20-frame window whose contexts start on even frames (two codec frames a semantic token)
    config = dataclasses.replace(stage_config("coarse", 0.4), slide_context=0.75)
    coarse = CoarseStage(config).eval()
    spans = coarse.sliding_spans(0, 46)
    assert spans[:3] == [(0, 0, 20), (6, 20, 26), (12, 26, 32)] and spans[-1][2] == 46
    assert all(b == a for (_, _, a), (_, b, _) in zip(spans, spans[1:], strict=False))  # no gap, no overlap
    assert CoarseStage(stage_config("coarse", 0.4)).sliding_spans(0, 46)[1] == (10, 20, 30)  # default half
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    cond, sem = Conditioning.constant(torch.randint(0, 16, (2, 4))), torch.randint(0, 16, (2, 23))
    steps = []
    c = coarse.generate(cond, 46, inputs=sem, generator=g(), progress=lambda d, t: steps.append(d))
    assert c.shape == (2, 2, 46) and steps == list(range(1, 93))
    assert not torch.equal(
        c, CoarseStage(stage_config("coarse", 0.4)).eval().generate(cond, 46, inputs=sem, generator=g())
    )
    with pytest.raises(ConfigError, match="slide_context"):
        CoarseStage(dataclasses.replace(stage_config("coarse", 0.4), slide_context=1.0))


def test_resample_fine_keeps_the_coarse_levels_and_samples_the_rest_from_them():
    """What a decoder tuned on generated codes gets: the coarse levels as they were, fine levels the
    LM's own samples given them (the same ones for the same generator)."""
    fine = FineStage(stage_config("fine", 0.2)).eval()
    codes = torch.randint(0, 16, (3, 4, 23))
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    out = fine.resample_fine(codes, generator=g())
    assert out.shape == codes.shape and out.dtype == codes.dtype
    assert torch.equal(out[:, :2], codes[:, :2]) and not torch.equal(out[:, 2:], codes[:, 2:])
    assert torch.equal(out[:, 2:], fine.generate(None, 23, inputs=codes[:, :2], generator=g()))
    with pytest.raises(ValueError, match=r"\[B, 4, frames\]"):
        fine.resample_fine(codes[:, :3])


def test_fine_windows_side_by_side_read_only_their_own_coarse_codes():
    """Parallel windows: one batched pass whose windows each see only their coarse codes; sliding:
    a window also reads the fine codes sampled before it. Same shapes, prompt or not."""
    torch.manual_seed(0)
    config = dataclasses.replace(stage_config("fine", 0.2), parallel_windows=True)  # 10-frame windows
    fine = FineStage(config).eval()
    coarse = torch.randint(0, 16, (2, 2, 37))
    changed = coarse.clone()
    changed[..., :10] = (changed[..., :10] + 1) % 16  # the first window's coarse codes only
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    sharp = SamplingConfig(temperature=0.1)  # an untrained LM's logits are near uniform
    assert fine.window_spans(0, 37) == [(0, 0, 10), (10, 10, 20), (20, 20, 30), (27, 30, 37)]
    assert fine.rows_per_sample(0.74) == 4

    steps = []
    out = fine.generate(
        None, 37, inputs=coarse, generator=g(), sampling=sharp, progress=lambda d, t: steps.append(t)
    )
    assert out.shape == (2, 2, 37) and steps[-1] == 20  # 10 frames x 2 levels, all windows at once
    again = fine.generate(None, 37, inputs=changed, generator=g(), sampling=sharp)
    assert not torch.equal(again[..., :10], out[..., :10])
    assert torch.equal(again[..., 10:], out[..., 10:])  # later windows never saw the first one

    fine.config.parallel_windows = False
    slid = fine.generate(None, 37, inputs=coarse, generator=g(), sampling=sharp)
    slid_changed = fine.generate(None, 37, inputs=changed, generator=g(), sampling=sharp)
    assert slid.shape == (2, 2, 37) and not torch.equal(slid_changed[..., 10:], slid[..., 10:])
    fine.config.parallel_windows = True

    # continuation: windows start after the prompt's frames, only new frames come back
    more = fine.generate(
        None, 15, inputs=coarse[..., :35], prompt=out[..., :20], generator=g(), sampling=sharp
    )
    assert more.shape == (2, 2, 15) and fine.window_spans(20, 15) == [(20, 20, 30), (25, 30, 35)]
    assert fine.generate(None, 0, inputs=coarse[..., :0], generator=g()).shape == (2, 2, 0)

    # a burn-in: every window after the first samples 2 frames before those it keeps
    fine.config.window_burn_in = 0.04
    assert fine.window_spans(0, 37) == [(0, 0, 10), (8, 10, 18), (16, 18, 26), (24, 26, 34), (27, 34, 37)]
    assert fine.generate(None, 37, inputs=coarse, generator=g(), sampling=sharp).shape == (2, 2, 37)


def test_generation_and_training_share_one_layout():
    """The prefix of a first generation window is the training example of the same window up to its
    first target token."""
    import random

    for cls, window in ((SemanticStage, 1.0), (CoarseStage, 0.4), (FineStage, 0.2)):
        model = cls(stage_config(cls.stage, window)).eval()
        n = model.window_units
        rec = record(0, frames=2 * n if cls is SemanticStage else n)  # one window: it starts at 0
        example = model.training_example(rec, random.Random(0))
        first_target = int(example["loss_mask"].int().argmax())
        inputs = {SemanticStage: None, CoarseStage: rec["semantic"][None], FineStage: rec["codec"][None, :2]}[
            cls
        ]
        cond = Conditioning.constant(rec["mulan_tokens"][None]) if model.conditioned else None
        seen = []
        model._extend = lambda prefix, n_new, *a, **k: seen.append(prefix) or torch.full((1, n_new), 3)  # noqa: B023
        model.generate(cond, n, inputs=inputs)
        assert len(seen) == 1 and torch.equal(seen[0][0], example["tokens"][:first_target]), cls.stage
        assert int(example["cond_mask"].sum()) == (
            model.cond_ids(rec["mulan_tokens"][None]).shape[1] if cond else 0
        )


def test_the_loss_is_each_targets_cross_entropy_over_its_own_range():
    """The loss runs the head on target positions and their id ranges only: it must equal the
    cross-entropy of the full logits with every id outside a target's range masked out and the
    positions without a target ignored."""
    for cls, window in ((SemanticStage, 1.0), (CoarseStage, 0.4), (FineStage, 0.2)):
        torch.manual_seed(0)
        model = cls(stage_config(cls.stage, window)).eval()
        examples = [model.training_example(record(i, frames=80), random.Random(i)) for i in range(3)]
        tokens = torch.stack([e["tokens"] for e in examples])
        mask = torch.stack([e["loss_mask"] for e in examples])
        mask[1, -5:] = False  # rows with different numbers of targets
        logits = model.transformer(tokens[:, :-1])
        outside = torch.ones_like(logits, dtype=torch.bool)
        for j in range(model.levels):  # every RVQ level's range (semantic: the one)
            lo, hi = model.target_span(j)
            assert hi - lo == 16
            in_level = (tokens[:, 1:] >= lo) & (tokens[:, 1:] < hi)
            outside[..., lo:hi] &= ~in_level[..., None]
        target = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
        reference = torch.nn.functional.cross_entropy(
            logits.masked_fill(outside, float("-inf")).flatten(0, 1), target.flatten(), ignore_index=-100
        )
        torch.testing.assert_close(model.loss(tokens, mask), reference, rtol=1e-5, atol=1e-6)
        full = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
        assert model.loss(tokens, mask) < full  # the mass outside the range no longer counts


@pytest.mark.parametrize("stage,window", [("semantic", 0.4), ("coarse", 0.2), ("fine", 0.1)])
def test_overfits_and_greedy_decoding_reproduces(stage, window, tmp_path):
    torch.manual_seed(0)
    cls = {"semantic": SemanticStage, "coarse": CoarseStage, "fine": FineStage}[stage]
    model = cls(stage_config(stage, window, dim=64, ff_dim=128))
    frames = model.window_units * (2 if stage == "semantic" else 1)  # semantic: 2 frames per token
    recs = [record(i, frames=frames) for i in range(2)]
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        max_steps=150,
        batch_size=2,
        lr=3e-3,
        warmup_steps=10,
        progress=False,
        checkpoint_every=1000,
        log_every=50,
        ema_decay=None,
        weight_decay=0.0,
    )
    Trainer(StageTask(model), StageDataset(recs, model), cfg).fit()
    model.eval()
    batch = torch.stack([model.training_example(r, __import__("random").Random(0))["tokens"] for r in recs])
    mask = torch.stack([model.training_example(r, __import__("random").Random(0))["loss_mask"] for r in recs])
    assert model.loss(batch, mask) < 0.05
    greedy = SamplingConfig(temperature=0.0)
    # greedy decoding reproduces each record, so the output follows the conditioning
    cond = Conditioning.constant(torch.stack([r["mulan_tokens"] for r in recs]))
    n = model.window_units
    if stage == "semantic":
        out = model.generate(cond, n, sampling=greedy)
        assert torch.equal(out, torch.stack([r["semantic"] for r in recs]))
    elif stage == "coarse":
        out = model.generate(cond, n, inputs=torch.stack([r["semantic"] for r in recs]), sampling=greedy)
        assert torch.equal(out, torch.stack([r["codec"][:2] for r in recs]))
    else:
        out = model.generate(None, n, inputs=torch.stack([r["codec"][:2] for r in recs]), sampling=greedy)
        assert torch.equal(out, torch.stack([r["codec"][2:] for r in recs]))
    # the validation's conditioning gain: large for an LM that reads its conditioning, ~0 untrained
    keys = ("tokens", "loss_mask", "cond_mask", "melody_mask")
    examples = [model.training_example(r, random.Random(0)) for r in recs]
    batches = [{k: torch.stack([e[k] for e in examples]) for k in keys}]
    trained, untrained = StageTask(model), StageTask(cls(model.config).eval())
    trained.valid_batches = untrained.valid_batches = batches
    figures = trained.validate(tmp_path / "valid", 150)
    before = untrained.validate(tmp_path / "valid", 0)
    if stage == "semantic":
        assert "val/input_gain" not in figures
    else:  # the records differ in their semantic tokens / coarse codes too: the LM reads them
        assert figures["val/input_gain"] > 0.1, figures
        assert abs(before["val/input_gain"]) < 0.05
    if stage == "fine":
        assert "val/cond_gain" not in figures
    else:
        # (the coarse LM also tells the two records apart by their semantic tokens: a smaller gain)
        assert figures["val/cond_gain"] > 0.1, figures
        assert abs(before["val/cond_gain"]) < 0.05
    save_model(model, tmp_path / stage)
    again = load_model(tmp_path / stage)
    assert type(again) is cls and torch.equal(again.transformer(batch), model.transformer(batch))


def test_attention_dropout_is_its_own_setting():
    from musiclm.lm.train import training_memory

    model = CoarseStage(stage_config("coarse", 0.8, dropout=0.0, attn_dropout=0.5))
    task = StageTask(model).train()
    data = torch.utils.data.default_collate([StageDataset([record(i)], model)[0] for i in range(4)])

    def two_losses():
        return [task(data, "main", 0)[0].item() for _ in range(2)]

    first, second = two_losses()
    assert first != second  # the attention weights are dropped in training
    for block in model.transformer.blocks:
        block.attn.dropout = 0.0
    first, second = two_losses()
    assert first == second  # and nothing else is: residual dropout is its own setting
    # a config without the setting (every checkpoint written before it) drops the attention weights
    # at the residual rate, as it trained before
    old = CoarseStage(stage_config("coarse", 0.8, dropout=0.1))
    assert [b.attn.dropout for b in old.transformer.blocks] == [0.1, 0.1]
    # the memory estimate keeps the unfused attention's weight matrices only where it runs
    fused = CoarseStage(stage_config("coarse", 0.8, dropout=0.1, attn_dropout=0.0))
    length, heads, depth = old.max_train_len, 2, 2
    assert training_memory(old, 8) - training_memory(fused, 8) == 4 * depth * 8 * length * 3 * heads * length


def test_stage_configs_from_presets():
    import dataclasses

    for name in ("tiny", "paper"):
        for stage in ("semantic", "coarse", "fine"):
            sc = StageConfig.from_musiclm(stage, get_preset(name))
            assert sc.frame_rate == 2 * sc.semantic_rate
    paper = get_preset("paper")
    small = lambda stage: dataclasses.replace(  # noqa: E731  paper layout, tiny transformer
        StageConfig.from_musiclm(stage, paper),
        lm=dataclasses.replace(getattr(paper, f"{stage}_lm"), dim=16, depth=1, heads=1, ff_dim=16),
    )
    assert SemanticStage(small("semantic")).window_units == 750  # 30 s at 25 Hz
    coarse = CoarseStage(small("coarse"))
    assert coarse.window_units * coarse.levels == 2000  # 10 s x 4 coarse levels
    fine = FineStage(small("fine"))
    assert fine.window_units * fine.levels == 1200  # 3 s x 8 fine levels


def test_validation_writes_generated_and_reference_audio(tmp_path):
    """Each stage's validation renders held-out clips through a codec; the semantic LM through the
    coarse and fine LMs where their checkpoints exist, else it writes its tokens."""
    import json

    import soundfile as sf

    from tests._tiny_bundle import components

    codec = components(melody=False)["codec"]
    for level in codec.quantizer.levels:
        level.codebook.normal_()
    recs = [record(i, frames=80) for i in range(2)]
    stages = {
        "semantic": SemanticStage(stage_config("semantic", 0.4)),
        "coarse": CoarseStage(stage_config("coarse", 0.2)),
        "fine": FineStage(stage_config("fine", 0.1)),
    }
    later = {"coarse_lm": str(tmp_path / "coarse"), "fine_lm": str(tmp_path / "fine")}
    for name, model in stages.items():
        task = StageTask(model)
        params = sum(p.numel() for p in task.parameters())
        task.samples.update(records=recs, codec=codec, seconds=1.0, later=later if name == "semantic" else {})
        assert sum(p.numel() for p in task.parameters()) == params  # the codec is not trained along
        task.validate(tmp_path / name, step=3)
        folder = tmp_path / name / "step-0000003"
        if name == "semantic":  # no coarse / fine checkpoints yet: tokens only
            tokens = json.loads((folder / "clip1-semantic.json").read_text())["semantic"]
            assert len(tokens) == 25 and all(0 <= t < 16 for t in tokens)
            continue
        for i in range(2):
            generated, sr = sf.read(folder / f"clip{i}-generated.wav")
            reference, _ = sf.read(folder / f"clip{i}-reference.wav")
            assert sr == codec.sample_rate and generated.shape == reference.shape == (sr,)
            assert not np.allclose(generated, reference)
        save_model(model, tmp_path / name)
    task = StageTask(stages["semantic"])
    task.samples.update(records=recs[:1], codec=codec, seconds=1.0, later=later)
    task.validate(tmp_path / "semantic", step=4)
    audio, sr = sf.read(tmp_path / "semantic" / "step-0000004" / "clip0-generated.wav")
    assert audio.shape == (sr,) and np.abs(audio).max() > 0


def test_mulan_levels_condition_on_the_first_levels_only(tmp_path):
    config = stage_config("semantic", 1.0)
    config.mulan_levels = 2
    model = SemanticStage(config).eval()
    assert sum(k.startswith("mulan") for k in model.layout.ranges) == 2
    example = model.training_example(record(0), random.Random(0))
    assert int(example["cond_mask"].sum()) == 2
    mulan = torch.tensor([[1, 2, 3, 4]])

    def run(tokens):
        g = torch.Generator().manual_seed(0)
        return model.generate(Conditioning.constant(tokens), 12, sampling=SamplingConfig(), generator=g)

    base = run(mulan)
    assert torch.equal(base, run(torch.tensor([[1, 2, 9, 9]])))  # unread levels change nothing
    assert not torch.equal(base, run(torch.tensor([[9, 2, 3, 4]])))  # a read level does
    save_model(model, tmp_path / "lm")
    assert load_model(tmp_path / "lm").config.mulan_levels == 2
    config.mulan_levels = 5
    with pytest.raises(ValueError, match="mulan_levels"):
        SemanticStage(config)


def test_text_token_prob_conditions_windows_on_caption_tokens():
    config = stage_config("semantic", 1.0)
    audio, text = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    rec = record(0) | {"mulan_tokens": audio, "mulan_text_tokens": text}
    offsets = SemanticStage(config).layout.levels("mulan", 4)

    def cond_of(model, r, seed=0):
        ex = model.training_example(r, random.Random(seed))
        return ex["tokens"][ex["cond_mask"]]

    assert torch.equal(cond_of(SemanticStage(config), rec), audio + offsets)  # default: the paper
    config.text_token_prob = 1.0
    model = SemanticStage(config)
    assert torch.equal(cond_of(model, rec), text + offsets)
    uncaptioned = rec | {"mulan_text_tokens": torch.zeros(0, dtype=torch.int16)}
    assert torch.equal(cond_of(model, uncaptioned), audio + offsets)
    config.text_token_prob = 0.5
    model = SemanticStage(config)
    seen = {tuple(cond_of(model, rec, seed).tolist()) for seed in range(20)}
    assert seen == {tuple((audio + offsets).tolist()), tuple((text + offsets).tolist())}
    config.text_token_prob = 1.0
    with pytest.raises(DataError, match="mulan_text_tokens"):
        cond_of(SemanticStage(config), record(0))  # a cache without text tokens


def test_warm_start_copies_weights_and_adapts_levels_and_kv_heads():
    from musiclm.errors import ConfigError
    from musiclm.lm.warm_start import warm_start

    torch.manual_seed(0)
    source = SemanticStage(stage_config("semantic", 1.0, heads=4)).eval()
    tokens = torch.randint(3, source.layout.vocab_size, (2, 11))
    same = SemanticStage(stage_config("semantic", 1.0, heads=4)).eval()
    warm_start(same, source)
    assert torch.equal(same.transformer(tokens), source.transformer(tokens))

    # fewer MuLaN levels: the semantic rows move down to their new ids, the read levels keep theirs
    config = stage_config("semantic", 1.0, heads=4)
    config.mulan_levels = 1
    fewer = SemanticStage(config).eval()
    warm_start(fewer, source)
    lo, hi = source.layout.span("semantic")
    new_lo, new_hi = fewer.layout.span("semantic")
    assert new_lo < lo and torch.equal(
        fewer.transformer.embed.weight[new_lo:new_hi], source.transformer.embed.weight[lo:hi]
    )
    assert torch.equal(fewer.transformer.head.weight[new_lo:new_hi], source.transformer.head.weight[lo:hi])
    m_lo, m_hi = source.layout.span("mulan0")
    assert torch.equal(fewer.transformer.embed.weight[m_lo:m_hi], source.transformer.embed.weight[m_lo:m_hi])

    # one kv head: each key / value head the mean of the four. Where the four heads are equal, the
    # grouped model computes exactly what the source does
    for block in source.transformer.blocks:
        w = block.attn.qkv.weight.data
        for part in (slice(32, 64), slice(64, 96)):
            heads = w[part].view(4, 8, 32)
            heads[:] = heads[0]
    gqa = SemanticStage(stage_config("semantic", 1.0, heads=4, kv_heads=1)).eval()
    warm_start(gqa, source)
    assert gqa.transformer.blocks[0].attn.qkv.weight.shape == (48, 32)
    assert torch.allclose(gqa.transformer(tokens), source.transformer(tokens), atol=1e-5)

    with pytest.raises(ConfigError, match="holds a semantic LM"):
        warm_start(CoarseStage(stage_config("coarse", 1.0, heads=4)), source)
    with pytest.raises(ConfigError, match="different preset"):
        warm_start(SemanticStage(stage_config("semantic", 1.0, heads=4, ff_dim=48)), source)
    with pytest.raises(ConfigError, match="cannot be grouped"):
        warm_start(SemanticStage(stage_config("semantic", 1.0, heads=4, kv_heads=2)), gqa)


def test_warm_start_into_fewer_layers_takes_every_other_block():
    from musiclm.errors import ConfigError
    from musiclm.lm.warm_start import block_indices, warm_start

    assert (
        block_indices(2, 4) == [0, 2]
        and block_indices(3, 6) == [0, 2, 4]
        and block_indices(4, 4) == [0, 1, 2, 3]
    )
    torch.manual_seed(0)
    source = SemanticStage(stage_config("semantic", 1.0, depth=4)).eval()
    shallow = SemanticStage(stage_config("semantic", 1.0, depth=2)).eval()
    warm_start(shallow, source)
    # the shallow model computes what the source does with its blocks 1 and 3 left out
    tokens = torch.randint(3, source.layout.vocab_size, (2, 11))
    source.transformer.blocks = torch.nn.ModuleList(source.transformer.blocks[i] for i in (0, 2))
    assert torch.equal(shallow.transformer(tokens), source.transformer(tokens))
    with pytest.raises(ConfigError, match="different preset"):
        warm_start(SemanticStage(stage_config("semantic", 1.0, depth=1, ff_dim=48)), source)


def test_warm_start_into_more_layers_starts_where_the_source_is_and_learns():
    """A deeper model keeps the source's blocks and adds identity blocks: the same logits at the
    start, and the new blocks' weights receive gradient (their output projections at once)."""
    from musiclm.lm.warm_start import grown_positions, warm_start

    assert grown_positions(8, 4) == [0, 2, 4, 6] and grown_positions(6, 4) == [0, 1, 3, 4]
    torch.manual_seed(0)
    source = CoarseStage(stage_config("coarse", 1.0, depth=2)).eval()
    deep = CoarseStage(stage_config("coarse", 1.0, depth=4)).eval()
    warm_start(deep, source)
    tokens = torch.randint(3, source.layout.vocab_size, (2, 11))
    assert torch.allclose(deep.transformer(tokens), source.transformer(tokens), atol=1e-6)
    new, kept = deep.transformer.blocks[1], deep.transformer.blocks[2]
    assert torch.equal(kept.attn.qkv.weight, source.transformer.blocks[1].attn.qkv.weight)
    assert not new.attn.out.weight.any() and new.attn.qkv.weight.std() > 0  # fresh, not copied
    deep.train()
    deep.transformer(tokens).logsumexp(-1).mean().backward()
    assert new.attn.out.weight.grad.abs().sum() > 0 and new.ff[2].weight.grad.abs().sum() > 0


def test_codebook_embedding_carries_what_a_code_taught_to_its_unseen_neighbours(tmp_path):
    """Codes 0-5 and 8-13 train the LM on two kinds of music; codes 6-7 and 14-15, never seen, lie
    next to their kind in the MuLaN space. Embedded through their codebook vectors they make that
    kind's music; their own table rows were never trained."""
    from musiclm.errors import ConfigError
    from musiclm.lm.warm_start import warm_start

    torch.manual_seed(0)
    config = stage_config("semantic", 0.4)
    config.mulan_levels, config.mulan_dim = 1, 8
    model = SemanticStage(config)
    g = torch.Generator().manual_seed(0)
    kinds = torch.randn(2, 8, generator=g)
    codebook = kinds.repeat_interleave(8, dim=0) + 0.05 * torch.randn(16, 8, generator=g)
    model.mulan_embedding.set_codebooks(codebook[None])
    n = model.window_units
    patterns = [torch.arange(n) % 4, 8 + torch.arange(n) % 4]  # kind 0: ids 0-3, kind 1: ids 8-11

    def rec(code):
        mulan = torch.tensor([code, 0, 0, 0])
        return {"semantic": patterns[code // 8], "mulan_tokens": mulan, "codec": torch.zeros(4, 2 * n)}

    recs = [rec(c) for c in (*range(6), *range(8, 14))]
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=120, batch_size=12, lr=3e-3, warmup_steps=10,
                      progress=False, checkpoint_every=1000, log_every=50, ema_decay=None)  # fmt: skip
    Trainer(StageTask(model), StageDataset(recs, model), cfg).fit()
    model.eval()
    unseen = torch.tensor([[6, 0, 0, 0], [7, 0, 0, 0], [14, 0, 0, 0], [15, 0, 0, 0]])
    out = model.generate(Conditioning.constant(unseen), n, sampling=SamplingConfig(temperature=0.0))
    assert torch.equal(out, torch.stack([patterns[0], patterns[0], patterns[1], patterns[1]]))

    # saved with its codebooks, it loads alone; warm-started from an LM without one, it starts as that LM
    save_model(model, tmp_path / "lm")
    again = load_model(tmp_path / "lm")
    assert torch.equal(
        again.generate(Conditioning.constant(unseen), n, sampling=SamplingConfig(temperature=0.0)), out
    )
    plain = stage_config("semantic", 0.4)
    plain.mulan_levels = 1
    source = SemanticStage(plain).eval()
    warmed = SemanticStage(config).eval()
    warm_start(warmed, source)
    assert not warmed.mulan_embedding.proj.weight.any()  # starts at zero: the source's model exactly
    with pytest.raises(ConfigError, match="--mulan-codebooks"):
        warm_start(source, model)
    tokens = torch.cat([unseen[:, :1] + warmed.layout.offset("mulan0"), torch.full((4, 3), 5)], dim=1)
    assert torch.equal(
        warmed.transformer(tokens, extra=warmed.extra_embeddings(tokens)), source.transformer(tokens)
    )


def test_aligned_semantic_embeddings_are_those_training_sees_and_start_at_zero():
    """Greedy generation with aligned semantic embeddings picks, at every step, the argmax the training
    layout's full forward gives for the same sequence (the decoding steps add the embedding of the
    right semantic token); warm-started from a plain LM it starts as that LM."""
    from musiclm.errors import ConfigError
    from musiclm.lm.warm_start import warm_start

    torch.manual_seed(0)
    config = stage_config("coarse", 0.4)
    config.aligned_semantic = True
    model = CoarseStage(config).eval()
    with torch.no_grad():
        model.aligned_semantic_embedding.weight.normal_(std=2.0)  # large: it decides the argmax
    n = model.window_units
    rec = record(3, frames=n)
    semantic = rec["semantic"][None]
    out = model.generate(Conditioning.constant(rec["mulan_tokens"][None]), n, inputs=semantic,
                         sampling=SamplingConfig(temperature=0.0))  # fmt: skip
    example = model.training_example(
        {**rec, "codec": torch.cat([out[0], rec["codec"][2:]])}, random.Random(0)
    )
    tokens, mask = example["tokens"][None], example["loss_mask"][None]
    logits = model.transformer(tokens, extra=model.extra_embeddings(tokens))[:, :-1]
    at_targets = logits[mask[:, 1:]]  # [n * levels, vocab], the j-th predicting the j-th target
    spans = [model.target_span(j) for j in range(len(at_targets))]
    predicted = torch.stack([row[lo:hi].argmax() + lo for row, (lo, hi) in zip(at_targets, spans)])
    assert torch.equal(predicted, tokens[mask])
    # the position predicting coarse id k (frame k // levels) adds its frame's semantic token
    with torch.no_grad():
        model.aligned_semantic_embedding.weight.copy_(torch.arange(16.0)[:, None].expand(16, 32))
    added = model.step_embeddings(tokens, tokens.shape[1])[0, :, 0]
    first = int(mask[0].int().argmax())  # the first target; the SEP before it predicts it
    k = torch.arange(n * model.levels)
    assert torch.equal(added[first - 1 + k], semantic[0, k // model.levels // 2].float())
    assert not added[: first - 1].any()
    # without the embedding's steps generation differs: the test above can fail
    plain = CoarseStage(stage_config("coarse", 0.4)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "aligned" not in k})
    other = plain.generate(Conditioning.constant(rec["mulan_tokens"][None]), n, inputs=semantic,
                           sampling=SamplingConfig(temperature=0.0))  # fmt: skip
    assert not torch.equal(other, out)

    warmed = CoarseStage(config).eval()
    warm_start(warmed, plain)
    assert not warmed.aligned_semantic_embedding.weight.any()
    assert torch.equal(
        warmed.transformer(tokens, extra=warmed.extra_embeddings(tokens)), plain.transformer(tokens)
    )
    with pytest.raises(ConfigError, match="--aligned-semantic"):
        warm_start(plain, model)
    with pytest.raises(ValueError, match="coarse-stage option"):
        FineStage(StageConfig(stage="fine", aligned_semantic=True))


# a per-frame track the semantic and coarse LMs can read: (config flag, embedding, ids, warm-start flag)
FRAME_TRACKS = {
    "chroma": ("melody_chroma", "chroma_embedding", 13, "--melody-chroma"),
    "beats": ("beat_phase", "beat_embedding", 8, "--beat-phase"),
}


@pytest.mark.parametrize("track", ["chroma", "beats"])
@pytest.mark.parametrize("stage", ["semantic", "coarse"])
def test_frame_track_embeddings_are_those_training_sees_and_start_at_zero(stage, track):
    """Greedy generation that reads a per-frame track (a melody's pitch classes, beat phases) picks,
    at every step, the argmax the training layout's full forward gives for the same sequence and
    track (each position adds the id of the frame it predicts); the track changes the output, the
    unconditional half of guidance does not see it, and a warm start from a plain LM starts as that
    LM."""
    from musiclm.errors import ConfigError
    from musiclm.lm.warm_start import warm_start

    flag, table, num_ids, option = FRAME_TRACKS[track]
    torch.manual_seed(0)
    cls = {"semantic": SemanticStage, "coarse": CoarseStage}[stage]
    config = stage_config(stage, 0.4)
    setattr(config, flag, True)
    model = cls(config).eval()
    with torch.no_grad():
        getattr(model, table).weight.normal_(std=2.0)  # large: it decides the argmax
    n = model.window_units
    frames = n if stage == "coarse" else 2 * n
    rec = record(3, frames=frames)
    rec[track] = torch.randint(0, num_ids, (frames // 2,), generator=torch.Generator().manual_seed(1))
    inputs = rec["semantic"][None] if stage == "coarse" else None

    def generate(m, ids, guidance=1.0):
        cond = Conditioning.constant(rec["mulan_tokens"][None], **{track: ids})
        return m.generate(cond, n, inputs=inputs, sampling=SamplingConfig(temperature=0.0, guidance=guidance))

    out = generate(model, rec[track][None])
    generated = (
        {"semantic": out[0]} if stage == "semantic" else {"codec": torch.cat([out[0], rec["codec"][2:]])}
    )
    example = model.training_example({**rec, **generated}, random.Random(0))
    tokens, mask, chroma = example["tokens"][None], example["loss_mask"][None], example[track][None]
    logits = model.transformer(tokens, extra=model.extra_embeddings(tokens, **{track: chroma}))[:, :-1]
    at_targets = logits[mask[:, 1:]]
    spans = [model.target_span(j) for j in range(len(at_targets))]
    predicted = torch.stack([row[lo:hi].argmax() + lo for row, (lo, hi) in zip(at_targets, spans)])
    assert torch.equal(predicted, tokens[mask])
    # the position predicting target id k adds the class of k's unit (two codec frames a class)
    first = int(mask[0].int().argmax())
    k = torch.arange(n * model.levels)
    per_class = 1 if stage == "semantic" else 2
    assert torch.equal(chroma[0, first - 1 + k], rec[track][k // model.levels // per_class])
    assert (chroma[0, : first - 1] == -1).all()
    # other ids, or none, give other music; guidance runs with them
    assert not torch.equal(generate(model, (rec[track][None] + 1) % num_ids), out)
    assert not torch.equal(generate(model, None), out)
    assert not torch.equal(generate(model, rec[track][None], 3.0), generate(model, None, 3.0))

    plain = cls(stage_config(stage, 0.4)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(table)})
    warmed = cls(config).eval()
    warm_start(warmed, plain)
    assert not getattr(warmed, table).weight.any()
    assert torch.equal(generate(warmed, rec[track][None]), generate(plain, None))
    with pytest.raises(ConfigError, match=option):
        warm_start(plain, model)
    with pytest.raises(ValueError, match="semantic and coarse stages"):
        FineStage(StageConfig(stage="fine", **{flag: True}))


def test_beat_guidance_decides_whether_guidance_amplifies_the_beat_phases():
    """With beat_guidance off the NULL-conditioned half keeps the beat phases, so guidance amplifies
    the conditioning tokens alone: where those say nothing (every MuLaN id embeds as NULL does),
    guided sampling is plain sampling with the beats. With it on (the default), guidance amplifies
    the beats too and picks other tokens."""
    from musiclm.lm.guidance import NULL

    torch.manual_seed(0)
    config = stage_config("semantic", 0.4)
    config.beat_phase = True
    model = SemanticStage(config).eval()
    lo, hi = model.layout.span("mulan0")[0], model.layout.span("mulan3")[1]
    with torch.no_grad():
        model.beat_embedding.weight.normal_(std=2.0)
        model.transformer.embed.weight[lo:hi] = model.transformer.embed.weight[NULL]
    rec = record(3, frames=2 * model.window_units)
    beats = torch.randint(0, 8, (model.window_units,), generator=torch.Generator().manual_seed(1))

    def generate(guidance):
        cond = Conditioning.constant(rec["mulan_tokens"][None], beats=beats[None])
        sampling = SamplingConfig(temperature=0.0, guidance=guidance)
        return model.generate(cond, model.window_units, sampling=sampling)

    plain = generate(1.0)
    assert not torch.equal(generate(3.0), plain)
    model.config.beat_guidance = False
    assert torch.equal(generate(3.0), plain)


def test_pitch_classes_name_the_pitch_class_of_a_tone_and_mark_silence():
    from musiclm.audio import UNPITCHED, pitch_classes

    sr = 16000
    t = torch.arange(sr) / sr
    a4, c4 = 0.3 * torch.sin(2 * torch.pi * 440.0 * t), 0.3 * torch.sin(2 * torch.pi * 261.63 * t)
    ids = pitch_classes(torch.cat([a4, torch.zeros(sr), c4])[None], sr, frame_rate=25.0)[0]
    assert ids.shape == (75,)
    assert (ids[5:20] == 9).all() and (ids[31:45] == UNPITCHED).all() and (ids[55:70] == 0).all()


@pytest.mark.parametrize("track", ["chroma", "beats"])
def test_training_learns_to_read_a_frame_track(tmp_path, track):
    """Semantic tokens that follow the pitch classes (or beat phases) and nothing else: training
    takes the held-out loss down by reading them (val/chroma_gain, val/beat_gain), which an
    untrained LM does not."""
    flag, _, num_ids, _ = FRAME_TRACKS[track]
    gain = {"chroma": "val/chroma_gain", "beats": "val/beat_gain"}[track]
    torch.manual_seed(0)
    config = stage_config("semantic", 1.0)
    setattr(config, flag, True)
    model = SemanticStage(config)
    n = model.window_units
    g = torch.Generator().manual_seed(0)
    recs = []
    for _ in range(8):
        ids = torch.randint(0, num_ids, (n,), generator=g)
        recs.append({"semantic": ids.clone(), "mulan_tokens": torch.zeros(4, dtype=torch.long), track: ids})
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=150, batch_size=4, lr=3e-3, warmup_steps=10,
                      progress=False, checkpoint_every=1000, log_every=50, ema_decay=None)  # fmt: skip
    keys = ("tokens", "loss_mask", "cond_mask", "melody_mask", track)
    examples = [model.training_example(r, random.Random(0)) for r in recs]
    batches = [{k: torch.stack([e[k] for e in examples]) for k in keys}]
    untrained = StageTask(SemanticStage(config).eval())
    untrained.valid_batches = batches
    with torch.no_grad():
        before = untrained.validate(tmp_path / "valid", 0)
    Trainer(StageTask(model), StageDataset(recs, model), cfg).fit()
    trained = StageTask(model.eval())
    trained.valid_batches = batches
    with torch.no_grad():
        after = trained.validate(tmp_path / "valid", 150)
    assert abs(before[gain]) < 1e-6  # the embedding starts at zero
    assert after[gain] > 0.5, after


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("stage", "middle", "stage must be semantic, coarse or fine"),
        ("coarse_levels", 9, "coarse_levels must lie in [1, codec_levels = 8]"),
        ("mulan_levels", 13, "mulan_levels must lie in [0, mulan_quantizers = 12]"),
        ("text_token_prob", 1.5, "text_token_prob must lie in [0, 1]"),
        ("slide_context", 1.0, "slide_context must lie in [0, 1)"),
        ("frame_rate", float("nan"), "frame_rate must be positive"),
    ],
)
def test_a_stage_config_out_of_range_is_one_line(field, value, match):
    import re

    from musiclm.lm.stages import StageConfig

    with pytest.raises(ConfigError, match=re.escape(f"StageConfig: {match}")):
        StageConfig(**{field: value})


def test_compiled_training_pass_computes_the_eager_loss_and_gradients():
    """`train *-lm --compile` compiles the training pass alone: the same loss and gradients as
    eager, a pass with a KV cache still eager, and the weights' names (so the checkpoint) unchanged."""
    from musiclm.lm.train import compile_blocks

    torch.manual_seed(0)
    eager = CoarseStage(stage_config("coarse", 0.4))
    compiled = CoarseStage(stage_config("coarse", 0.4))
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled)
    examples = [eager.training_example(record(i, frames=80), random.Random(i)) for i in range(2)]
    tokens = torch.stack([e["tokens"] for e in examples])
    mask = torch.stack([e["loss_mask"] for e in examples])
    losses = []
    for model in (eager, compiled):
        loss = model.loss(tokens, mask)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    for (name, a), (other, b) in zip(eager.named_parameters(), compiled.named_parameters(), strict=True):
        assert name == other
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)
    caches = [model.transformer.new_cache(2, 8) for model in (eager, compiled)]
    with torch.no_grad():
        outs = [
            m.transformer.hidden(tokens[:, :8], c) for m, c in zip((eager, compiled), caches, strict=True)
        ]
    assert caches[1].length == 8 and torch.equal(outs[0], outs[1])
    assert set(compiled.state_dict()) == set(eager.state_dict())
