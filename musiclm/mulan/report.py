"""How well MuLaN learned a user's captions: retrieval on held-out captioned clips.

For N held-out clips and their captions, the text-audio similarity matrix gives, for each caption,
the rank of its own clip among all N (text -> audio) and for each clip the rank of its own caption
(audio -> text). R@k is the share ranked within the top k; chance is k / N. A few clips are listed
with their nearest captions, which shows what the model confuses. Clips with the synthetic
benchmark's labels also get zero-shot accuracy per factor, with prompts in the training captions'
words and in held-out words (:mod:`musiclm.data.synth.factors`).
"""

from __future__ import annotations

import torch

from musiclm.audio import load_audio
from musiclm.data.manifest import load_entries
from musiclm.data.synth.factors import FACTORS, WORDINGS, factor_prompts, factor_value
from musiclm.errors import DataError
from musiclm.modules.quantization import codebook_perplexity
from musiclm.mulan.train import text_embeddings


def captioned_entries(data: str) -> list:
    """The captioned entries of ``data`` that a retrieval report reads (at least two), so that a
    command can refuse a bad manifest before it loads a model."""
    entries = [e for e in load_entries(data) if e.caption]
    if len(entries) < 2:
        raise DataError(f"{data}: a retrieval report needs at least 2 captioned clips, found {len(entries)}")
    return entries


@torch.no_grad()
def retrieval_report(
    model, data: str | list, *, clips: int = 200, seconds: float = 10.0, examples: int = 5
) -> dict:
    """R@1 / R@10 both ways and the nearest captions of ``examples`` clips, on up to ``clips``
    captioned clips of ``data`` (a manifest, or :func:`captioned_entries` of one; evenly spread over it)."""
    entries = data if isinstance(data, list) else captioned_entries(data)
    step = max(1, len(entries) // clips)
    entries = entries[::step][:clips]
    model.eval()
    audio = []
    for e in entries:
        wav, _ = load_audio(e.path, model.sample_rate, offset=e.start or 0.0, duration=seconds)
        audio.append(model.embed_audio(wav[None]))
    a = torch.cat(audio)
    t = text_embeddings(model, [e.caption for e in entries])
    sim = t @ a.T  # [captions, clips]
    own = sim.diagonal()
    # clips scored at least as high as a caption's own clip (ties count against it), and vice versa
    text_rank = (sim >= own[:, None]).sum(1) - 1
    audio_rank = (sim >= own[None, :]).sum(0) - 1
    n = len(entries)
    report = {"clips": n, "chance@1": 1 / n, "chance@10": min(1.0, 10 / n)}
    for name, rank in (("text_to_audio", text_rank), ("audio_to_text", audio_rank)):
        for k in (1, 10):
            report[f"{name}_r@{k}"] = float((rank < k).float().mean())
    if hasattr(model, "tokens_from_embedding"):
        audio_tokens = model.tokens_from_embedding(a)
        report["token_agreement"] = token_agreement(audio_tokens, model.tokens_from_embedding(t))
        codebook = getattr(getattr(model, "quantizer", None), "codebook_size", None)
        if codebook:  # codes in use per level; 1 = a dead level (the same code for every clip)
            report["token_perplexity"] = codebook_perplexity(audio_tokens[..., None], codebook).tolist()
    labels = [e.labels for e in entries]
    if any("genre" in x for x in labels):
        report["zero_shot"] = zero_shot(model, a, labels)
    report["examples"] = [
        {
            "clip": entries[j].path,
            "caption": entries[j].caption,
            "nearest": [entries[i].caption for i in sim[:, j].topk(min(3, n)).indices.tolist()],
        }
        for j in range(min(examples, n))
    ]
    return report


def token_agreement(audio_tokens: torch.Tensor, text_tokens: torch.Tensor) -> dict:
    """How often a clip's MuLaN audio tokens (what the LMs train on) equal its caption's text tokens
    (what they get at generation), per RVQ level and for every prefix of levels, beside the same for
    mismatched pairs (each clip against the next clip's caption): the gap the LMs must bridge."""
    same = audio_tokens == text_tokens  # [N, Q]
    other = audio_tokens == text_tokens.roll(1, dims=0)
    return {
        "level": same.float().mean(0).tolist(),
        "prefix": same.cumprod(1).float().mean(0).tolist(),
        "level_mismatched": other.float().mean(0).tolist(),
        "prefix_mismatched": other.cumprod(1).float().mean(0).tolist(),
    }


@torch.no_grad()
def zero_shot(model, audio: torch.Tensor, labels: list[dict]) -> dict:
    """Per factor: the share of clips whose audio embedding is closest to the prompt of their own
    value, among the values present in these clips, for each wording; ``majority`` is the share of
    the most frequent value (what always guessing it would score)."""
    out, prompts = {}, {wording: factor_prompts(wording) for wording in WORDINGS}
    for factor in FACTORS:
        values = [factor_value(factor, x) for x in labels]
        present = sorted({v for v in values if v is not None})
        if len(present) < 2:
            continue
        rows = [i for i, v in enumerate(values) if v is not None]
        truth = torch.tensor([present.index(values[i]) for i in rows])
        row = {
            "values": len(present),
            "clips": len(rows),
            "majority": float(truth.bincount().max() / len(rows)),
        }
        for wording in WORDINGS:
            text = model.embed_text([prompts[wording][factor][v] for v in present])
            row[wording] = float(((audio[rows] @ text.T).argmax(1) == truth).float().mean())
        out[factor] = row
    return out


def report_text(report: dict) -> str:
    """The report as lines for a terminal."""
    lines = [
        f"MuLaN retrieval on {report['clips']} clips (chance R@1 {report['chance@1']:.3f}, "
        f"R@10 {report['chance@10']:.3f}):",
        f"  caption -> clip: R@1 {report['text_to_audio_r@1']:.3f}  R@10 {report['text_to_audio_r@10']:.3f}",
        f"  clip -> caption: R@1 {report['audio_to_text_r@1']:.3f}  R@10 {report['audio_to_text_r@10']:.3f}",
    ]
    if report.get("token_agreement"):
        agree = report["token_agreement"]
        fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        lines.append("  audio tokens = caption's text tokens, per RVQ level (own caption / another clip's):")
        lines.append(f"    level:  {fmt(agree['level'])}  /  {fmt(agree['level_mismatched'])}")
        lines.append(f"    prefix: {fmt(agree['prefix'])}  /  {fmt(agree['prefix_mismatched'])}")
    if report.get("token_perplexity"):
        ppl = " ".join(f"{x:.0f}" for x in report["token_perplexity"])
        lines.append(f"  audio token perplexity per RVQ level (1 = a dead level): {ppl}")
    if report.get("zero_shot"):
        lines.append("  zero-shot accuracy per factor (prompts in the captions' words / in held-out words):")
        for factor, row in report["zero_shot"].items():
            lines.append(
                f"    {factor:<12} {row['train']:.3f} / {row['heldout']:.3f}  "
                f"(majority {row['majority']:.3f}, {row['values']} values, {row['clips']} clips)"
            )
    for ex in report["examples"]:
        lines.append(f"  {ex['clip']}: {ex['caption']!r}")
        lines += [f"      nearest: {c!r}" for c in ex["nearest"]]
    return "\n".join(lines)
