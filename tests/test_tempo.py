import numpy as np
import pytest
import torch

from musiclm.tempo import (
    BEAT_PHASES,
    beat_phase_from_beats,
    beat_phase_grid,
    check_bpm,
    continued_beat_phases,
    tempo_from_prompt,
    track_beat_phases,
)


@pytest.mark.parametrize(
    "prompt, bpm",
    [
        ("a calm lo-fi hip hop beat with soft piano at 80 bpm", 80.0),
        ("It is brisk, around 138 BPM. It is in G minor.", 138.0),
        ("a waltz at 92 beats per minute", 92.0),
        ("techno, 128-bpm, dark", 128.0),
        ("ambient at 72.5 BPM", 72.5),
        ("a slow piano ballad", None),
        ("a song from 1999 about bpm", None),
        ("at 5000 bpm", None),  # no music is that fast: not a tempo
    ],
)
def test_the_tempo_a_prompt_names(prompt, bpm):
    assert tempo_from_prompt(prompt) == bpm


def test_a_grid_starts_each_beat_at_phase_zero_and_matches_its_beats():
    ids = beat_phase_grid(120.0, 100, frame_rate=25.0)  # a beat every 12.5 frames
    assert ids.shape == (100,) and ids.min() == 0 and ids.max() == BEAT_PHASES - 1
    assert (torch.nonzero(ids.diff() < 0).flatten() + 1).tolist() == [13, 25, 38, 50, 63, 75, 88]
    beats = np.arange(0.0, 4.0, 0.5)
    assert torch.equal(beat_phase_from_beats(beats, 100, frame_rate=25.0), ids)
    # a first beat a quarter-beat in moves every phase back by a quarter
    shifted = beat_phase_grid(120.0, 100, frame_rate=25.0, first_beat=0.125)
    assert shifted[0] == 3 * BEAT_PHASES // 4
    assert (beat_phase_from_beats(np.array([1.0]), 10) == -1).all()  # one beat: no phase
    with pytest.raises(ValueError, match="outside"):
        check_bpm(0)


def test_the_beat_tracker_finds_the_beats_of_a_click_track():
    sr, bpm = 22050, 120.0
    wav = np.zeros(8 * sr)
    click = np.exp(-np.arange(400) / 60.0) * np.sin(2 * np.pi * 1000 * np.arange(400) / sr)
    for t in np.arange(0.25, 8.0, 60.0 / bpm):
        wav[int(t * sr) : int(t * sr) + 400] += click
    ids = track_beat_phases(torch.from_numpy(wav), sr, frame_rate=25.0)
    grid = beat_phase_grid(bpm, 200, frame_rate=25.0, first_beat=0.25)
    off = (ids - grid).remainder(BEAT_PHASES)
    assert ids.shape == (200,)
    assert ((off <= 1) | (off >= BEAT_PHASES - 1)).float().mean() > 0.9  # within a bin, at every frame
    assert (track_beat_phases(torch.zeros(sr * 2), sr) == -1).all()


def test_a_continuation_keeps_the_given_beats_and_goes_on_at_their_tempo_or_the_one_asked():
    beats = np.arange(0.25, 4.0, 0.5)  # 120 bpm from 0.25 s; the last beat at 3.75 s
    kept = continued_beat_phases(beats, 250, frame_rate=25.0)  # 10 s: 4 given, 6 continued
    assert torch.equal(kept, beat_phase_grid(120.0, 250, frame_rate=25.0, first_beat=0.25))
    faster = continued_beat_phases(beats, 250, bpm=150.0, frame_rate=25.0)
    given = int(3.75 * 25) + 1  # frames up to the last beat keep the tracked phases
    assert torch.equal(faster[:given], kept[:given])
    assert torch.equal(faster[given:], beat_phase_grid(150.0, 250, frame_rate=25.0, first_beat=3.75)[given:])
    assert (continued_beat_phases(np.zeros(0), 50) == -1).all()  # no beats, no tempo: nothing known
    alone = continued_beat_phases(np.zeros(0), 50, bpm=90.0)  # no beats: the grid from the start
    assert torch.equal(alone, beat_phase_grid(90.0, 50))
