"""Zero-shot prompts for the labelled factors of the synthetic benchmark (paper 5.2's question: does
the text tower understand the words, not just the training captions?).

Each factor maps a clip's labels to one value and each value to a prompt, once in the words the
training captions use and once in held-out words that no training caption contains (the ``test``
wordings of :mod:`~musiclm.data.synth.captions` and each style's held-out synonym). A text tower that
only memorised caption strings scores near chance on the held-out column.
"""

from __future__ import annotations

from musiclm.data.synth.captions import DYNAMIC_WORDS, TEMPO_WORDS, tempo_bucket
from musiclm.data.synth.styles import INSTRUMENTS, STYLES

WORDINGS = ("train", "heldout")
FACTORS = ("genre", "lead family", "tempo", "mode", "drums", "dynamics")
FAMILY_WORDS = {
    "keyboard": "keyboard",
    "mallet": "mallet percussion",
    "organ": "organ",
    "reed": "reed",
    "guitar": "plucked string",
    "bass": "bass",
    "strings": "bowed string",
    "voice": "vocal",
    "brass": "brass",
    "pipe": "flute-like",
    "synth lead": "synthesizer lead",
    "synth pad": "synthesizer pad",
}


def factor_value(factor: str, labels: dict) -> str | None:
    """The value of ``factor`` for a clip's labels (None when the labels do not say)."""
    if factor == "genre":
        return labels.get("genre")
    if factor == "lead family":  # the melody's instrument: the first track of every arrangement
        programs = labels.get("programs") or [-1]
        return INSTRUMENTS[programs[0]][1] if programs[0] in INSTRUMENTS else None
    if factor == "tempo":
        return tempo_bucket(labels["bpm"]) if "bpm" in labels else None
    if factor == "mode":
        return labels.get("mode")
    if factor == "drums":
        return None if "drums" not in labels else ("drums" if labels["drums"] else "no drums")
    if factor == "dynamics":
        return labels.get("dynamics")
    raise ValueError(f"unknown factor {factor!r}")


def _family_names(family: str) -> str:
    names = [name for name, f in INSTRUMENTS.values() if f == family]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def factor_prompts(wording: str) -> dict[str, dict[str, str]]:
    """``{factor: {value: prompt}}`` in the training captions' words or in held-out words."""
    if wording not in WORDINGS:
        raise ValueError(f"unknown wording {wording!r} ({' or '.join(WORDINGS)})")
    train = wording == "train"
    split = "train" if train else "test"
    genre = {
        name: f"{s.words[0]} music".replace("music music", "music") if train else s.words[-1]
        for name, s in STYLES.items()
    }
    families = sorted({f for _, f in INSTRUMENTS.values()})
    return {
        "genre": genre,
        "lead family": {
            f: (
                f"a melody played on {_family_names(f)}"
                if train
                else f"the tune is carried by a {FAMILY_WORDS[f]} instrument"
            )
            for f in families
        },
        "tempo": {b: f"{TEMPO_WORDS[split][b][0]} music" for b in ("slow", "medium", "fast")},
        "mode": {m: (f"The key is {m}." if train else f"a piece in a {m} mode") for m in ("major", "minor")},
        "drums": {
            "drums": "There is a steady drum beat." if train else "Percussion keeps time.",
            "no drums": "There are no drums." if train else "No percussion at all.",
        },
        "dynamics": {d: f"It is {words[0]}." for d, words in DYNAMIC_WORDS[split].items()},
    }
