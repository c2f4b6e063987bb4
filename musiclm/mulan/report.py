"""How well MuLaN learned a user's captions: retrieval on held-out captioned clips.

For N held-out clips and their captions, the text-audio similarity matrix gives, for each caption,
the rank of its own clip among all N (text -> audio) and for each clip the rank of its own caption
(audio -> text). R@k is the share ranked within the top k; chance is k / N. A few clips are listed
with their nearest captions, which shows what the model confuses.
"""

from __future__ import annotations

import torch

from musiclm.audio import load_audio
from musiclm.data.manifest import load_entries
from musiclm.errors import DataError


@torch.no_grad()
def retrieval_report(model, data: str, *, clips: int = 200, seconds: float = 10.0, examples: int = 5) -> dict:
    """R@1 / R@10 both ways and the nearest captions of ``examples`` clips, on up to ``clips``
    captioned clips of ``data`` (evenly spread over it)."""
    entries = [e for e in load_entries(data) if e.caption]
    if len(entries) < 2:
        raise DataError(f"{data}: a retrieval report needs at least 2 captioned clips, found {len(entries)}")
    step = max(1, len(entries) // clips)
    entries = entries[::step][:clips]
    model.eval()
    audio = []
    for e in entries:
        wav, _ = load_audio(e.path, model.sample_rate, offset=e.start or 0.0, duration=seconds)
        audio.append(model.embed_audio(wav[None]))
    a = torch.cat(audio)
    t = torch.cat(
        [model.embed_text([e.caption for e in entries[i : i + 32]]) for i in range(0, len(entries), 32)]
    )
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
    report["examples"] = [
        {
            "clip": entries[j].path,
            "caption": entries[j].caption,
            "nearest": [entries[i].caption for i in sim[:, j].topk(min(3, n)).indices.tolist()],
        }
        for j in range(min(examples, n))
    ]
    return report


def report_text(report: dict) -> str:
    """The report as lines for a terminal."""
    lines = [
        f"MuLaN retrieval on {report['clips']} held-out clips (chance R@1 {report['chance@1']:.3f}, "
        f"R@10 {report['chance@10']:.3f}):",
        f"  caption -> clip: R@1 {report['text_to_audio_r@1']:.3f}  R@10 {report['text_to_audio_r@10']:.3f}",
        f"  clip -> caption: R@1 {report['audio_to_text_r@1']:.3f}  R@10 {report['audio_to_text_r@10']:.3f}",
    ]
    for ex in report["examples"]:
        lines.append(f"  {ex['clip']}: {ex['caption']!r}")
        lines += [f"      nearest: {c!r}" for c in ex["nearest"]]
    return "\n".join(lines)
