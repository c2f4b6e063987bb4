"""Audio an LM makes while it trains: what each validation of a stage LM writes to ``samples/``.

Each stage generates from held-out token records what it would produce inside MusicLM, and a codec
(passed in: the stage LMs never import it) turns the tokens into audio:

- coarse: the held-out clip's semantic tokens and MuLaN tokens -> coarse codes -> the codec's first
  levels;
- fine: the held-out coarse codes -> fine codes -> every level;
- semantic: the clip's MuLaN tokens -> semantic tokens, then through a coarse and a fine LM when
  they are given (e.g. the recipe's other runs), else only the tokens are written.

Beside each ``clipK-generated.wav`` the held-out tokens decoded with the same levels
(``clipK-reference.wav``): what the stage is learning to reproduce.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from musiclm.audio import save_audio
from musiclm.files import write_text_atomic
from musiclm.lm.conditioning import Conditioning
from musiclm.lm.sampling import SamplingConfig
from musiclm.lm.stages import StageLM


def _conditioning(stage: StageLM, record: dict) -> Conditioning | None:
    """The held-out clip's own conditioning, as the stage reads it in training."""
    if not stage.conditioned:
        return None
    return Conditioning.from_record(
        record, melody=stage.config.melody_quantizers > 0, beats=stage.config.beat_phase
    )


def _sampling(lm: StageLM) -> SamplingConfig:
    return lm.default_sampling()  # the stage's own temperature and truncation


@torch.no_grad()
def write_samples(
    stage: StageLM,
    records: list[dict],
    folder: Path,
    *,
    codec,
    seconds: float = 4.0,
    coarse_lm: StageLM | None = None,
    fine_lm: StageLM | None = None,
    seed: int = 0,
) -> list[Path]:
    """Generate ``seconds`` from each held-out record with ``stage`` and write the WAVs (or, for a
    semantic LM without the stages after it, the tokens) into ``folder``; returns what was written."""
    device = next(stage.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    c = stage.config
    written = []
    for i, record in enumerate(records):
        record = {k: v.to(device) for k, v in record.items() if torch.is_tensor(v)}
        s = min(round(seconds * c.semantic_rate), record["codec"].shape[-1] // 2)
        if "semantic" in record:
            s = min(s, record["semantic"].shape[-1])
        frames = 2 * s
        cond = _conditioning(stage, record)
        if stage.stage == "semantic":
            semantic = stage.generate(cond, s, sampling=_sampling(stage), generator=generator)
            if coarse_lm is None or fine_lm is None:
                path = folder / f"clip{i}-semantic.json"
                folder.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, json.dumps({"semantic": semantic[0].tolist()}) + "\n")
                written.append(path)
                continue
            coarse_cond = _conditioning(coarse_lm, record)
            coarse = coarse_lm.generate(
                coarse_cond, frames, inputs=semantic, sampling=_sampling(coarse_lm), generator=generator
            )
            fine = fine_lm.generate(
                None, frames, inputs=coarse, sampling=_sampling(fine_lm), generator=generator
            )
            codes, levels = torch.cat([coarse, fine], dim=1), c.codec_levels
        elif stage.stage == "coarse":
            semantic = record["semantic"][None, :s].long()
            codes = stage.generate(
                cond, frames, inputs=semantic, sampling=_sampling(stage), generator=generator
            )
            levels = c.coarse_levels
        else:
            coarse = record["codec"][None, : c.coarse_levels, :frames].long()
            fine = stage.generate(None, frames, inputs=coarse, sampling=_sampling(stage), generator=generator)
            codes, levels = torch.cat([coarse, fine], dim=1), c.codec_levels
        reference = record["codec"][None, :levels, :frames].long()
        for name, tokens in (("generated", codes), ("reference", reference)):
            audio = codec.decode(tokens.to(next(codec.parameters()).device))[0].float().clamp(-1, 1)
            written.append(save_audio(folder / f"clip{i}-{name}.wav", audio.cpu(), codec.sample_rate))
    return written
