"""Offline synthetic captioned music with ground truth: corpus tunes and procedural arrangements
rendered by FluidSynth, captions and labels from the factors that made each clip."""

from musiclm.data.synth.arrange import Piece, Track, compose
from musiclm.data.synth.build import SynthConfig, plan_item, synthesize
from musiclm.data.synth.captions import caption_for
from musiclm.data.synth.render import FluidSynthRenderer, find_soundfonts, write_midi
from musiclm.data.synth.styles import FAMILIES, INSTRUMENTS, STYLES

__all__ = [
    "FAMILIES",
    "INSTRUMENTS",
    "STYLES",
    "FluidSynthRenderer",
    "Piece",
    "SynthConfig",
    "Track",
    "caption_for",
    "compose",
    "find_soundfonts",
    "plan_item",
    "synthesize",
    "write_midi",
]
