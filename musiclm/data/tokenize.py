"""``musiclm tokenize``: precompute the tokens the stage LMs train on, for a whole manifest.

Long files are cut into segments of at most ``segment_seconds`` (MuLaN embeddings describe one
segment each). Work is split by shard across ``accelerate launch`` / ``torchrun`` ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from musiclm import checks
from musiclm.audio import PITCH_CLASS_RATE, audio_info, load_audio, pitch_classes
from musiclm.data.cache import claim_field, fill_field, model_fingerprint, write_index
from musiclm.data.manifest import load_entries
from musiclm.errors import AudioError, DataError, MusicLMError
from musiclm.tempo import beat_phase_grid, check_bpm, track_beat_phases

# field name -> (checkpoint kind, how to turn a segment's audio into the field's tensor)
FIELD_EXTRACTORS: dict[str, tuple[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]]] = {
    "codec": ("codec", lambda m, wav: m.encode(wav[None])[0].to(torch.int16)),
    "semantic": ("semantic", lambda m, wav: m.encode(wav[None])[0].to(torch.int16)),
    "mulan_tokens": (
        "mulan",
        lambda m, wav: m.tokens_from_audio(wav[None], m.sample_rate)[0].to(torch.int16),
    ),
    "melody_tokens": ("melody", lambda m, wav: m.tokens(wav[None], m.sample_rate)[0].to(torch.int16)),
    "chroma": ("chroma", lambda m, wav: m(wav[None])[0].to(torch.int16)),  # a PitchClassTrack
    "beats": ("beats", lambda m, wav: m(wav[None])[0].to(torch.int16)),  # a BeatPhaseTrack
}
# fields computed from an item's caption instead of its audio (an empty tensor where it has none):
# the MuLaN *text* tokens of a clip's caption, which an LM can train on beside the audio tokens
CAPTION_EXTRACTORS: dict[str, tuple[str, Callable[[nn.Module, str], torch.Tensor]]] = {
    "mulan_text_tokens": ("mulan", lambda m, caption: m.tokens_from_text([caption])[0].to(torch.int16)),
}


class PitchClassTrack(nn.Module):
    """The ``chroma`` field: each 25 Hz frame's dominant pitch class (:func:`musiclm.audio.pitch_classes`),
    for LMs trained with ``melody_chroma``. A module without weights, so that it is computed as the
    models' fields are."""

    sample_rate = PITCH_CLASS_RATE

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return pitch_classes(wav, self.sample_rate, frame_rate=25.0)  # every preset's semantic rate


class BeatPhaseTrack(nn.Module):
    """The ``beats`` field: each 25 Hz frame's beat phase (:mod:`musiclm.tempo`), for LMs trained
    with ``beat_phase``, from librosa's beat tracker. Items whose manifest entry has a ``bpm`` label
    get a steady grid at that tempo instead (:func:`labelled_beats`)."""

    sample_rate = 22050  # librosa's default rate, which its beat tracker's settings assume

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return track_beat_phases(wav[0], self.sample_rate, frame_rate=25.0)[None]


def labelled_beats(source) -> dict[str, tuple[float, float]]:
    """Entry id -> (bpm, first beat in seconds of the file) for the entries whose labels give a
    ``bpm`` (and optionally ``first_beat``; default: where the entry starts, as a rendered piece)."""
    grids = {}
    for entry in load_entries(source):
        if "bpm" in entry.labels:
            try:
                bpm = check_bpm(entry.labels["bpm"], where=f"{entry.path}: label bpm")
                first = float(entry.labels.get("first_beat", entry.start or 0.0))
            except (TypeError, ValueError) as e:
                raise DataError(str(e)) from None
            grids[entry.id] = (bpm, first)
    return grids


def plan_items(
    source, segment_seconds: float, min_seconds: float = 1.0
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Segments of every usable entry, in a stable order; plus the skipped (path, reason)."""
    checks.seconds(segment_seconds, "segment_seconds")
    items, skipped = [], []
    for entry in load_entries(source):
        try:
            _, total = audio_info(entry.path)
        except AudioError as e:
            skipped.append((entry.path, str(e)))
            continue
        start = entry.start or 0.0
        end = min(entry.end, total) if entry.end is not None else total
        k = 0
        while end - start >= min_seconds:
            seg_end = min(end, start + segment_seconds)
            items.append(
                {
                    "id": f"{entry.id}#{k}",
                    "path": str(Path(entry.path).resolve()),  # the same file from any folder
                    "start": start,
                    "end": seg_end,
                    "caption": entry.caption,
                }
            )
            start, k = seg_end, k + 1
        if k == 0:
            skipped.append((entry.path, f"shorter than {min_seconds} s"))
    return items, skipped


def tokenize(
    source,
    out: str | Path,
    models: dict[str, nn.Module],
    *,
    segment_seconds: float = 30.0,
    shard_size: int = 64,
    progress: bool = True,
    sources: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Fill the cache at ``out`` with one field per model in ``models`` (field name -> model).
    ``sources`` names each field's model for messages (e.g. its checkpoint path); a field already made
    by another model is refused."""
    sources = sources or {}
    from accelerate import PartialState

    state = PartialState()
    out = Path(out)
    items, skipped = plan_items(source, segment_seconds)
    grids = labelled_beats(source) if "beats" in models else {}  # bad labels fail before any work
    if not items:
        raise MusicLMError(f"{source}: nothing to tokenize ({len(skipped)} file(s) skipped)")
    if state.is_main_process:
        write_index(out, items, shard_size)
        prints = {id(m): model_fingerprint(m) for m in models.values()}  # MuLaN fills two fields
        for field, model in models.items():  # another model's tokens are never mixed into a field
            claim_field(out, field, prints[id(model)], sources.get(field, type(model).__name__))
    state.wait_for_everyone()
    n_shards = -(-len(items) // shard_size)
    mine = [s for s in range(n_shards) if s % state.num_processes == state.process_index]
    for field, model in models.items():
        if field in CAPTION_EXTRACTORS:
            _, text_fn = CAPTION_EXTRACTORS[field]

            def extract(item, model=model, fn=text_fn):
                caption = (item.get("caption") or "").strip()
                return fn(model, caption) if caption else torch.zeros(0, dtype=torch.int16)

        else:
            _, audio_fn = FIELD_EXTRACTORS[field]

            def extract(item, model=model, fn=audio_fn, field=field):
                grid = grids.get(item["id"].rsplit("#", 1)[0]) if field == "beats" else None
                if grid is not None:  # a labelled tempo: no audio to read
                    bpm, first = grid
                    frames = max(1, round((item["end"] - item["start"]) * 25.0))
                    return beat_phase_grid(bpm, frames, first_beat=first - item["start"]).to(torch.int16)
                wav, _ = load_audio(
                    item["path"],
                    model.sample_rate,
                    offset=item["start"],
                    duration=item["end"] - item["start"],
                    min_seconds=0.5,
                )
                return fn(model, wav)

        total = sum(len(items[s * shard_size : (s + 1) * shard_size]) for s in mine)
        with tqdm(
            total=total, desc=f"tokenize {field}", disable=not (progress and state.is_local_main_process)
        ) as bar:
            skipped += fill_field(
                out, field, items, shard_size=shard_size, extract=extract, shards=mine, progress=bar.update
            )
    state.wait_for_everyone()
    return skipped
