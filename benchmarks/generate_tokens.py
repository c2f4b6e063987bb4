"""Token-generation speed of the three stage LMs on CPU (prints numbers; not a test).

    python benchmarks/generate_tokens.py [--tokens 250] [--threads 2] [--rounds 5]

1. tokens/s of each stage of the tiny preset (its transformer is d=192, 4 layers, 4 heads) at
   batch 1 and 4, untrained weights (speed does not depend on them), as sampling runs by default
   (on a CPU with FBGEMM the decoding step multiplies by float16 copies of the weights) and with
   float32 weights throughout (``StageLM.float16_weights = False``);
2. the same for audiolm-pytorch's SemanticTransformer at the same sizes, in the same process, when
   that package is installed (it is a benchmark peer only, never a dependency). Its module imports
   torchaudio and fairseq at import time although token sampling uses neither; where they cannot be
   imported they are replaced by empty placeholder modules so the transformer itself can be timed.
   Ours and the peer's runs alternate for ``--rounds`` rounds and the medians are compared, so a
   slow spell of a shared machine hits both;
3. time per generated token as the sequence grows (flat with the KV cache).

``make demo``'s whole request, per stage: ``benchmarks/demo_request.py``.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import statistics
import sys
import time
import types

import torch

from musiclm.config import get_preset
from musiclm.lm.conditioning import Conditioning
from musiclm.lm.sampling import SamplingConfig
from musiclm.lm.stages import CoarseStage, FineStage, SemanticStage, StageConfig


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ours(stage: str, batch: int, n_tokens: int, cfg, float16: bool | None = None):
    """A function timing one run: tokens/s (all sequences of the batch counted) of one of our stages."""
    sc = StageConfig.from_musiclm(stage, cfg)
    sc.lm.window_seconds = 1e6  # time one long window, no sliding
    model = {"semantic": SemanticStage, "coarse": CoarseStage, "fine": FineStage}[stage](sc).eval()
    model.float16_weights = float16
    g = torch.Generator().manual_seed(0)
    mulan = torch.randint(0, sc.mulan_codebook, (batch, sc.mulan_quantizers))
    cond = Conditioning.constant(mulan)
    s = SamplingConfig(temperature=1.0)
    if stage == "semantic":
        run = lambda: model.generate(cond, n_tokens, sampling=s, generator=g)  # noqa: E731
        made = n_tokens
    elif stage == "coarse":
        frames = max(2, n_tokens // sc.coarse_levels // 2 * 2)
        sem = torch.randint(0, sc.semantic_clusters, (batch, frames // 2))
        run = lambda: model.generate(cond, frames, inputs=sem, sampling=s, generator=g)  # noqa: E731
        made = frames * sc.coarse_levels
    else:
        frames = max(1, n_tokens // sc.fine_levels)
        coarse = torch.randint(0, sc.codec_codebook, (batch, sc.coarse_levels, frames))
        run = lambda: model.generate(None, frames, inputs=coarse, sampling=s, generator=g)  # noqa: E731
        made = frames * sc.fine_levels

    def timed() -> float:
        with torch.inference_mode():
            return batch * made / _timed(run)

    timed()  # warm-up
    return timed


def _import_audiolm():
    def placeholder(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__path__ = []
        m.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = m
        return m

    try:
        import torchaudio  # noqa: F401
    except Exception:
        ta = placeholder("torchaudio")
        for sub in ("functional", "transforms"):
            setattr(ta, sub, placeholder(f"torchaudio.{sub}"))
        ta.functional.resample = None
    for name in ("fairseq", "wandb"):
        try:
            __import__(name)
        except Exception:
            placeholder(name)
    import audiolm_pytorch

    return audiolm_pytorch


def audiolm(batch: int, n_tokens: int, lm):
    alm = _import_audiolm()
    module = sys.modules["audiolm_pytorch.audiolm_pytorch"]
    # its constructor looks up the T5 text encoder's width online even when no text is used
    module.get_encoded_dim = lambda name: lm.dim
    module.tqdm = lambda steps, **kw: steps  # no progress bar, as ours runs without one
    transformer = alm.SemanticTransformer(
        num_semantic_tokens=256,
        dim=lm.dim,
        depth=lm.depth,
        heads=lm.heads,
        cond_dim=lm.dim,  # cond_dim: no T5 lookup
    )
    wrapper = alm.SemanticTransformerWrapper(transformer=transformer).eval()

    made = []

    def run():
        out = wrapper.generate(max_length=n_tokens, batch_size=batch, cond_scale=1.0, use_kv_cache=True)
        made.append(out.shape[-1])  # it stops early once every row has sampled its end token

    def timed() -> float:
        with torch.inference_mode():
            seconds = _timed(run)
            return batch * made[-1] / seconds

    timed()  # warm-up
    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=250, help="tokens generated per sequence")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5, help="alternating runs of ours and the peer (medians)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_preset("tiny")
    lm = cfg.semantic_lm
    print(
        f"CPU threads: {torch.get_num_threads()}; tiny preset LMs: d={lm.dim}, {lm.depth} layers, {lm.heads} heads"
    )
    print(f"{'model':<34}{'batch':>6}{'tokens/s':>12}")
    for stage in ("coarse", "fine"):
        for batch in (1, 4):
            runs = [ours(stage, batch, args.tokens, cfg, f) for f in (None, False)]
            pairs = [tuple(run() for run in runs) for _ in range(args.rounds)]  # alternating
            a, b = (statistics.median(x) for x in zip(*pairs))
            print(f"{'musiclm ' + stage:<34}{batch:>6}{a:>12.1f}")
            print(f"{'musiclm ' + stage + ', float32 weights':<34}{batch:>6}{b:>12.1f}")
    for batch in (1, 4):
        runs = [ours("semantic", batch, args.tokens, cfg, f) for f in (None, False)]
        try:
            runs.append(audiolm(batch, args.tokens, lm))
        except ImportError as e:
            print(f"audiolm-pytorch not installed ({e}); peer comparison skipped")
        triples = [tuple(run() for run in runs) for _ in range(args.rounds)]  # alternating
        rates = [statistics.median(x) for x in zip(*triples)]
        versus = [f"   musiclm is {r / rates[2]:.1f}x" if len(rates) > 2 else "" for r in rates[:2]]
        print(f"{'musiclm semantic':<34}{batch:>6}{rates[0]:>12.1f}{versus[0]}")
        print(f"{'musiclm semantic, float32 weights':<34}{batch:>6}{rates[1]:>12.1f}{versus[1]}")
        if len(rates) > 2:
            print(f"{'audiolm-pytorch SemanticTransformer':<34}{batch:>6}{rates[2]:>12.1f}")

    print("\ntime per token vs sequence length (semantic stage, batch 1):")
    sc = StageConfig.from_musiclm("semantic", cfg)
    sc.lm.window_seconds = 1e6
    model = SemanticStage(sc).eval()
    cond = Conditioning.constant(torch.zeros(1, sc.mulan_quantizers, dtype=torch.long))
    stamps = []
    with torch.inference_mode():
        model.generate(
            cond, 1000, sampling=SamplingConfig(), progress=lambda d, t: stamps.append(time.perf_counter())
        )
    for lo, hi in ((0, 100), (200, 300), (450, 550), (900, 1000)):
        print(
            f"  tokens {lo:>4}-{hi:<4}: {1000 * (stamps[hi - 1] - stamps[lo]) / (hi - lo - 1):.2f} ms/token"
        )


if __name__ == "__main__":
    main()
