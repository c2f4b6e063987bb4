"""What the stage LMs are conditioned on, as a value: MuLaN tokens over time and an optional melody.

One :class:`Conditioning` describes a whole batch for a whole piece: the MuLaN tokens of one or
more segments with the second at which each takes over (one segment for a prompt, several in story
mode), the melody tokens (one row per melody hop), per-frame pitch classes and beat phases, and
whether to drop it all (unconditional sampling). A stage reads, for each window it generates, the
segment the window's new tokens fall in (:meth:`bounds`, :meth:`segment`) and the melody from the
window's start, so generation, continuation, story mode and long pieces are the same sliding loop.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import torch

from musiclm.errors import DataError


@dataclass(frozen=True)
class Conditioning:
    mulan: torch.Tensor  # [B, K, Mq] raw MuLaN tokens of K segments
    starts: tuple[float, ...] = (0.0,)  # second at which each segment takes over, starts[0] = 0
    melody: torch.Tensor | None = None  # [B, W, Qm] raw melody tokens, one row per melody hop
    unconditional: bool = False  # every conditioning id NULL (the dropped conditioning of training)
    # [B, F] the melody's pitch-class ids at the semantic token rate (musiclm.audio.pitch_classes), read by
    # stages trained with melody_chroma
    chroma: torch.Tensor | None = None
    # [B, F] beat-phase ids at the semantic token rate (musiclm.tempo; -1 where no beat is known), read
    # by stages trained with beat_phase
    beats: torch.Tensor | None = None

    def __post_init__(self):
        if self.mulan.dim() != 3 or self.mulan.shape[1] != len(self.starts):
            raise ValueError(
                f"MuLaN tokens must be [B, segments={len(self.starts)}, Mq], got {list(self.mulan.shape)}"
            )
        if self.starts[0] != 0 or list(self.starts) != sorted(self.starts):
            raise ValueError(f"segment starts must begin at 0 and increase, got {self.starts}")

    @classmethod
    def constant(
        cls,
        mulan: torch.Tensor,
        melody: torch.Tensor | None = None,
        *,
        unconditional: bool = False,
        chroma: torch.Tensor | None = None,
        beats: torch.Tensor | None = None,
    ) -> Conditioning:
        """One segment: ``[B, Mq]`` MuLaN tokens for the whole piece."""
        return cls(mulan[:, None], (0.0,), melody, unconditional, chroma, beats)

    @classmethod
    def from_record(
        cls, record: dict, *, melody: bool, text: bool = False, chroma: bool = False, beats: bool = False
    ) -> Conditioning:
        """A training record's own conditioning (MuLaN audio tokens, cached melody tokens, with
        ``chroma`` its pitch classes, with ``beats`` its beat phases); with ``text``, its caption's
        MuLaN text tokens instead where the record has them."""
        tokens = None
        if melody:
            if "melody_tokens" not in record:
                raise DataError(
                    "this stage is melody-conditioned but the token cache has no melody_tokens "
                    "(run `musiclm tokenize --melody ...`)"
                )
            tokens = record["melody_tokens"].long()[None]
        mulan = record["mulan_tokens"]
        if text:
            if "mulan_text_tokens" not in record:
                raise DataError(
                    "training on text tokens needs the token cache field mulan_text_tokens "
                    "(run `musiclm tokenize --mulan ...` again)"
                )
            if record["mulan_text_tokens"].numel():  # uncaptioned clips keep their audio tokens
                mulan = record["mulan_text_tokens"]
        pitch = None
        if chroma:
            if "chroma" not in record:
                raise DataError(
                    "this stage reads pitch classes but the token cache has no chroma field "
                    "(run `musiclm tokenize --chroma ...`)"
                )
            pitch = record["chroma"].long()[None]
        phases = None
        if beats:
            if "beats" not in record:
                raise DataError(
                    "this stage reads beat phases but the token cache has no beats field "
                    "(run `musiclm tokenize --beats ...`)"
                )
            phases = record["beats"].long()[None]
        return cls.constant(mulan.long()[None], tokens, chroma=pitch, beats=phases)

    def repeat_interleave(self, n: int) -> Conditioning:
        """Each row ``n`` times in a row (the candidates of a prompt)."""
        melody = None if self.melody is None else self.melody.repeat_interleave(n, dim=0)
        chroma = None if self.chroma is None else self.chroma.repeat_interleave(n, dim=0)
        beats = None if self.beats is None else self.beats.repeat_interleave(n, dim=0)
        return replace(
            self, mulan=self.mulan.repeat_interleave(n, dim=0), melody=melody, chroma=chroma, beats=beats
        )

    def bounds(self, units_per_second: float, align: int = 1) -> list[int]:
        """Segment starts in a stage's units (on the grid of ``align`` units)."""
        return [align * round(t * units_per_second / align) for t in self.starts]

    def segment(self, unit: int, bounds: list[int]) -> int:
        """The segment that ``unit`` (an index in the units of ``bounds``) belongs to."""
        return bisect.bisect_right(bounds, unit) - 1
