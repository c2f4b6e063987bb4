"""MusicCaps-style captions from a piece's labels, with varied wording.

A caption mentions a random subset of the factors (genre, tempo, key, instruments, dynamics, mood,
register, drums) in a random order, through one of several sentence templates and synonyms. The
``test`` split uses templates and phrasings that never occur in ``train``, so a model cannot score on
held-out prompts by having memorised their wording.
"""

from __future__ import annotations

import re

import numpy as np

TEMPO_WORDS = {
    "train": {
        "slow": ["slow", "unhurried"],
        "medium": ["mid-tempo", "moderate"],
        "fast": ["fast", "up-tempo"],
    },
    "test": {"slow": ["leisurely"], "medium": ["medium-paced"], "fast": ["brisk"]},
}
DYNAMIC_WORDS = {
    "train": {
        "soft": ["softly played", "quiet"],
        "medium": ["moderately loud", ""],
        "loud": ["loud", "forceful"],
    },
    "test": {"soft": ["gentle and hushed"], "medium": ["balanced"], "loud": ["powerful and loud"]},
}
REGISTER_WORDS = {
    "train": {
        "low": "a low-pitched melody",
        "middle": "a melody in the middle register",
        "high": "a high melody",
    },
    "test": {
        "low": "a deep, low melody",
        "middle": "a mid-range melody",
        "high": "a bright, high-register melody",
    },
}
TEMPLATES = {
    "train": [
        "{genre_a} {genre} piece{with_instruments}. {details}",
        "This is {genre_a} {genre} track{with_instruments}. {details}",
        "The recording features {instruments} playing {genre}. {details}",
        "{Instruments} in {genre_a} {genre} arrangement. {details}",
        "{details} {Genre_a} {genre} tune{with_instruments}.",
        "{genre} music{with_instruments}. {details}",
        "An instrumental {genre} recording{with_instruments}. {details}",
        "{genre} played on {instruments}. {details}",
    ],
    "test": [
        "Here we have {genre_a} {genre} song{with_instruments}. {details}",
        "A short {genre} excerpt played on {instruments}. {details}",
        "{details} Listen to {instruments} in a {genre} style.",
        "{details} The style is {genre}, performed on {instruments}.",
    ],
}


def tempo_bucket(bpm: float) -> str:
    return "slow" if bpm < 90 else "medium" if bpm < 125 else "fast"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption_for(
    labels: dict, rng: np.random.Generator, split: str = "train", *, style_words: list[str] | None = None
) -> str:
    """A caption of ``labels``; ``split`` picks the train or held-out wordings."""
    if split not in TEMPLATES:
        raise ValueError(f"unknown split {split!r} (train or test)")
    words = style_words or [labels["genre"]]
    pool = (words[:-1] or words) if split == "train" else words[-1:]  # the last synonym is held out
    genre = pool[int(rng.integers(len(pool)))]
    instruments = [n for n in labels["instruments"]]
    rng.shuffle(instruments)
    shown = instruments[: max(1, int(rng.integers(1, len(instruments) + 1)))]
    instruments_text = _join(shown)
    details = []
    tempo = tempo_bucket(labels["bpm"])
    tempo_word = str(rng.choice(TEMPO_WORDS[split][tempo]))
    clauses = {
        "tempo": f"The tempo is {tempo_word} at {labels['bpm']} bpm."
        if rng.random() < 0.6
        else f"It is {tempo_word}, around {labels['bpm']} BPM.",
        "key": f"It is in {labels['key']} {labels['mode']}."
        if rng.random() < 0.5
        else f"The key is {labels['key']} {labels['mode']}.",
        "mood": f"The mood is {labels['mood']}." if split == "train" else f"It feels {labels['mood']}.",
        "dynamics": (
            f"It is {w}." if (w := str(rng.choice(DYNAMIC_WORDS[split][labels["dynamics"]]))) else ""
        ),
        "register": f"It has {REGISTER_WORDS[split][labels['register']]}.",
        "drums": ("There is a steady drum beat." if labels["drums"] else "There are no drums.")
        if split == "train"
        else ("Percussion keeps time." if labels["drums"] else "No percussion at all."),
    }
    names = [k for k in clauses if clauses[k]]
    rng.shuffle(names)
    keep = names[: int(rng.integers(2, len(names) + 1))]
    if "tempo" not in keep and rng.random() < 0.7:
        keep.insert(0, "tempo")
    details = " ".join(clauses[k] for k in keep)
    template = TEMPLATES[split][int(rng.integers(len(TEMPLATES[split])))]
    text = template.format(
        genre=genre,
        genre_a=_article(genre),
        Genre_a=_article(genre).capitalize(),
        with_instruments=f" with {instruments_text}",
        instruments=instruments_text,
        Instruments=instruments_text[:1].upper() + instruments_text[1:],
        details=details,
    )
    text = re.sub(r"\bmusic music\b", "music", " ".join(text.split()), flags=re.IGNORECASE)
    return text[:1].upper() + text[1:]
