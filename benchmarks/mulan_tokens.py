"""How MuLaN's conditioning RVQ is fitted decides what the LMs see (prints numbers; not a test).

    python benchmarks/mulan_tokens.py --model RUN/mulan/model --train synth/train.jsonl \
        --test synth/test.jsonl [--crops 8] [--clips 500]

The stage LMs train on the RVQ tokens of clips' *audio* embeddings and generate from the tokens of a
prompt's *text* embedding. For a trained MuLaN this refits its RVQ (12 levels) several ways and
reports, on held-out clips and their captions:

- perplexity of the audio tokens per level (how many codes a level really uses; 1 = a dead level
  whose code is the same for every clip), and the number of levels on which mismatched pairs agree
  for at least 90 % of clips (levels that carry nothing);
- how often a clip's audio tokens equal its own caption's text tokens at level 1 and on the first 2
  and 3 levels, beside another clip's caption (the gap between training and generation).

Fits: ``clip`` is what ``musiclm train mulan`` did before (one crop per clip, at most ``--clips``
clips), ``crops`` uses ``--crops`` random crops of every training clip, ``crops+text`` adds the
captions' text embeddings to the fit (codes shared by both towers' regions of the space), and the
last fits ``crops`` into a quarter of the codes (coarser codes agree more often).
"""

from __future__ import annotations

import argparse

import torch

from musiclm.checkpoint import load_model
from musiclm.data.datasets import AudioCropDataset
from musiclm.data.manifest import load_entries
from musiclm.modules.quantization import ResidualVectorQuantizer, codebook_perplexity
from musiclm.mulan.report import token_agreement
from musiclm.mulan.train import audio_embeddings, text_embeddings


def fitted(vectors: torch.Tensor, levels: int, codebook: int) -> ResidualVectorQuantizer:
    rvq = ResidualVectorQuantizer(vectors.shape[1], levels, codebook)
    rvq.fit(vectors)
    return rvq.eval()


def tokens(rvq: ResidualVectorQuantizer, emb: torch.Tensor) -> torch.Tensor:
    return rvq.encode(emb[..., None])[..., 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a trained MuLaN checkpoint")
    ap.add_argument("--train", required=True, help="the captioned clips it trained on")
    ap.add_argument("--test", required=True, help="held-out captioned clips")
    ap.add_argument("--crops", type=int, default=8, help="random crops per training clip")
    ap.add_argument("--clips", type=int, default=500, help="clips of the one-crop-per-clip fit")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model(args.model, kind="mulan").eval()
    q, k = model.config.num_quantizers, model.config.codebook_size
    train = [e for e in load_entries(args.train) if e.caption]
    test = [e for e in load_entries(args.test) if e.caption]
    crops = AudioCropDataset(train, model.sample_rate, args.seconds, seed=0)
    one = audio_embeddings(model, crops, args.clips)
    many = torch.cat([audio_embeddings(model, crops, len(crops)) for _ in range(args.crops)])
    captions = text_embeddings(model, [e.caption for e in train])
    held = AudioCropDataset(test, model.sample_rate, args.seconds, seed=1)
    test_audio = audio_embeddings(model, held, len(held))
    test_text = text_embeddings(model, [held.entries[i].caption for i in range(len(held))])
    print(f"{args.model}: {q} levels x {k} codes; {len(train)} training clips, {len(held)} held-out clips")
    fits = {
        f"clip ({len(one)} vectors)": (one, k),
        f"crops ({len(many)})": (many, k),
        f"crops+text ({len(many) + len(captions)})": (torch.cat([many, captions]), k),
        f"crops, {k // 4} codes": (many, k // 4),
    }
    print(
        f"{'fit':<32}{'perplexity mean/min':>22}{'dead':>6}"
        f"{'agree@1':>14}{'prefix@2':>14}{'prefix@3':>14}   (own caption / another's)"
    )
    for name, (vectors, codebook) in fits.items():
        rvq = fitted(vectors, q, codebook)
        audio_codes, text_codes = tokens(rvq, test_audio), tokens(rvq, test_text)
        ppl = codebook_perplexity(audio_codes[..., None], codebook)
        agree = token_agreement(audio_codes, text_codes)
        dead = sum(x >= 0.9 for x in agree["level_mismatched"])
        pair = lambda key, i, a=agree: f"{a[key][i]:.2f}/{a[key + '_mismatched'][i]:.2f}"  # noqa: E731
        print(
            f"{name:<32}{ppl.mean():>14.1f} / {ppl.min():<6.1f}{dead:>5}"
            f"{pair('level', 0):>14}{pair('prefix', 1):>14}{pair('prefix', 2):>14}"
        )


if __name__ == "__main__":
    main()
