"""Building :class:`~musiclm.mulan.prototypes.AudioPrototypes` from captioned clips with a MuLaN.

No training: a random sample of the captioned clips is embedded once, audio (the first
``seconds`` of each clip, as MuLaN sees the clips it conditions on) and caption side by side.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from musiclm.audio import load_clip
from musiclm.config import PrototypesConfig
from musiclm.data.manifest import ManifestEntry
from musiclm.errors import DataError
from musiclm.mulan.prototypes import AudioPrototypes

EMBED_BATCH = 32  # clips through the audio tower at once


@torch.no_grad()
def build_prototypes(
    mulan,
    entries: list[ManifestEntry],
    *,
    clips: int = 3000,
    neighbours: int = 32,
    seconds: float = 10.0,
    seed: int = 0,
    progress: bool = True,
) -> AudioPrototypes:
    """The bank of up to ``clips`` captioned clips of ``entries`` (a seeded random sample), embedded
    by ``mulan``; the returned module holds float32 unit-length embeddings."""
    entries = [e for e in entries if e.caption.strip()]
    if not entries:
        raise DataError("no captioned clips: prototypes pair each clip's audio with its caption")
    order = torch.randperm(len(entries), generator=torch.Generator().manual_seed(seed))[:clips]
    entries = [entries[i] for i in order.tolist()]
    sr = mulan.sample_rate
    audio = []
    for start in tqdm(
        range(0, len(entries), EMBED_BATCH), desc="prototypes", unit="batch", disable=not progress
    ):
        batch = torch.stack(
            [load_clip(e.path, sr, seconds, start=e.start) for e in entries[start : start + EMBED_BATCH]]
        )
        audio.append(mulan.embed_audio(batch, sr).float().cpu())
    text = torch.cat(
        [
            mulan.embed_text([e.caption for e in entries[s : s + 256]]).float().cpu()
            for s in range(0, len(entries), 256)
        ]
    )
    audio = torch.cat(audio)
    config = PrototypesConfig(
        entries=len(entries), embed_dim=audio.shape[-1], neighbours=neighbours, seconds=seconds
    )
    bank = AudioPrototypes(config)
    bank.text.copy_(torch.nn.functional.normalize(text, dim=-1))
    bank.audio.copy_(torch.nn.functional.normalize(audio, dim=-1))
    probe_text, probe_audio = bank.probes(mulan)
    bank.probe_text.copy_(probe_text.cpu())
    bank.probe_audio.copy_(probe_audio.cpu())
    return bank.eval()
