"""Render pieces to audio with FluidSynth and a General MIDI soundfont, and write them as MIDI files.

Rendering drives one FluidSynth instance per soundfont directly from the note list (no temporary
MIDI file, no re-loading of the soundfont per piece), which is what makes the benchmark fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musiclm.data.synth.arrange import Piece
from musiclm.errors import DataError

SOUNDFONT_DIRS = ["/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts"]
# Preferred General MIDI soundfonts (Debian packages fluid-soundfont-gm, timgm6mb-soundfont,
# musescore-general-soundfont-small); rotating them varies timbre for the same program.
KNOWN_SOUNDFONTS = ["FluidR3_GM.sf2", "TimGM6mb.sf2", "MuseScore_General_Lite.sf3"]
SOUNDFONT_PACKAGES = "fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small"
# What the benchmark's sets (and the shipped model's training set) were rendered with: the same seed
# renders other audio with any other list, since each chunk of clips draws its soundfont from it.
BENCHMARK_SOUNDFONTS = ("TimGM6mb.sf2",)
INSTALL_HINT = (
    "install FluidSynth and a General MIDI soundfont, e.g. "
    f"`apt-get install fluidsynth {SOUNDFONT_PACKAGES}` and `pip install 'musiclm[synth]'`"
)


def midi_channels(piece: Piece) -> list[int]:
    """MIDI channel of each track: drums on channel 10 (index 9), the others in order around it."""
    out, melodic = [], 0
    for track in piece.tracks:
        out.append(9 if track.is_drum else melodic + (melodic >= 9))
        melodic += not track.is_drum
    return out


def locate_soundfont(name: str) -> Path | None:
    """The file ``name`` in the first of the system's soundfont folders that holds it."""
    return next((Path(d) / name for d in SOUNDFONT_DIRS if (Path(d) / name).is_file()), None)


def find_soundfonts(extra: list[str] | None = None) -> list[Path]:
    """Known GM soundfonts found on this system (plus ``extra`` paths), in a fixed order."""
    found = [Path(p) for p in extra or [] if Path(p).is_file()]
    for name in KNOWN_SOUNDFONTS:
        path = locate_soundfont(name)
        if path is not None and path.resolve() not in [f.resolve() for f in found]:
            found.append(path)
    return found


def resolve_soundfonts(wanted: list[str] | tuple[str, ...] | None) -> list[Path]:
    """The soundfonts a set is rendered with, in order: ``None`` the benchmark's, ``["all"]`` every
    known one found here, else each a file path or a name found in the usual folders."""
    if wanted is None:
        wanted = BENCHMARK_SOUNDFONTS
    if list(wanted) == ["all"]:
        found = find_soundfonts()
        if not found:
            raise DataError(f"no General MIDI soundfont found; {INSTALL_HINT}")
        return found
    out = []
    for item in wanted:
        path = Path(item) if Path(item).is_file() else locate_soundfont(item)
        if path is None:
            raise DataError(
                f"soundfont {item!r} not found (a file, or a name in {', '.join(SOUNDFONT_DIRS)}); {INSTALL_HINT}"
            )
        out.append(path)
    if not out:
        raise DataError("--soundfonts names no soundfont")
    return out


class FluidSynthRenderer:
    """Renders :class:`Piece` objects at ``sample_rate``; soundfonts are loaded once, lazily.

    FluidSynth's output depends on what the instance played before, so the same sequence of pieces
    on a fresh renderer gives the same audio; :func:`synthesize` relies on that."""

    def __init__(self, sample_rate: int, gain: float = 0.8):
        try:
            import fluidsynth
        except (ImportError, OSError) as e:
            raise DataError(f"FluidSynth is not available ({e}); {INSTALL_HINT}") from None
        self._fluidsynth, self.sample_rate, self.gain = fluidsynth, sample_rate, gain
        self._synths: dict[str, tuple[object, int]] = {}

    def _synth(self, soundfont: str):
        if soundfont not in self._synths:
            synth = self._fluidsynth.Synth(samplerate=float(self.sample_rate), gain=self.gain)
            sfid = synth.sfload(str(soundfont))
            if sfid < 0:
                raise DataError(f"{soundfont}: FluidSynth could not load this soundfont")
            self._synths[soundfont] = (synth, sfid)
        return self._synths[soundfont]

    def close(self) -> None:
        for synth, _ in self._synths.values():
            synth.delete()
        self._synths.clear()

    def render(self, piece: Piece, soundfont: str) -> np.ndarray:
        """Mono float32 audio of exactly ``piece.seconds``."""
        synth, sfid = self._synth(soundfont)
        synth.system_reset()
        events = []  # (time, is_on, channel, pitch, velocity); note-offs sort before note-ons
        for track, ch in zip(piece.tracks, midi_channels(piece), strict=True):
            synth.program_select(ch, sfid, 128 if track.is_drum else 0, 0 if track.is_drum else track.program)
            for start, end, pitch, velocity in track.notes:
                events.append((start, 1, ch, pitch, velocity))
                events.append((end, 0, ch, pitch, 0))
        events.sort()
        total = int(round(piece.seconds * self.sample_rate))
        out = np.zeros(total * 2, dtype=np.int16)  # interleaved stereo
        done = 0
        for time, is_on, ch, pitch, velocity in events:
            at = min(int(round(time * self.sample_rate)), total)
            if at > done:
                out[2 * done : 2 * at] = synth.get_samples(at - done)
                done = at
            if is_on:
                synth.noteon(ch, pitch, velocity)
            else:
                synth.noteoff(ch, pitch)
        if total > done:
            out[2 * done :] = synth.get_samples(total - done)
        for ch in range(16):
            synth.cc(ch, 120, 0)  # all sound off, so nothing rings into the next piece
        stereo = out.reshape(-1, 2).astype(np.float32) / 32768.0
        return stereo.mean(axis=1)


def write_midi(piece: Piece, path: str | Path, ticks_per_beat: int = 480) -> None:
    """The piece as a type-1 MIDI file (tempo 120 so that one beat = 0.5 s; times are in seconds)."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)])
    mid.tracks.append(meta)
    to_ticks = lambda seconds: int(round(seconds * 2 * ticks_per_beat))  # noqa: E731
    for track, ch in zip(piece.tracks, midi_channels(piece), strict=True):
        mt = mido.MidiTrack([mido.MetaMessage("track_name", name=track.name, time=0)])
        if not track.is_drum:
            mt.append(mido.Message("program_change", channel=ch, program=track.program, time=0))
        events = []
        for start, end, pitch, velocity in track.notes:
            events.append((to_ticks(start), 1, pitch, velocity))
            events.append((to_ticks(end), 0, pitch, 0))
        now = 0
        for tick, is_on, pitch, velocity in sorted(events):
            kind = "note_on" if is_on else "note_off"
            mt.append(mido.Message(kind, channel=ch, note=pitch, velocity=velocity, time=tick - now))
            now = tick
        mid.tracks.append(mt)
    mid.save(str(path))
