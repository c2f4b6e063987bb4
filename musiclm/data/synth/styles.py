"""Styles of the synthetic benchmark: tempo range, meter, groove, harmony and instrument pools.

Each style is a small arranger's recipe. Drum patterns are written one character per sixteenth note
(``X`` accent, ``x`` normal, ``o`` ghost, ``.`` rest); General MIDI drum keys and program numbers are
the standard ones, so any GM soundfont renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# General MIDI programs we use: number -> (caption name, family).
INSTRUMENTS: dict[int, tuple[str, str]] = {
    0: ("piano", "keyboard"),
    4: ("electric piano", "keyboard"),
    6: ("harpsichord", "keyboard"),
    11: ("vibraphone", "mallet"),
    12: ("marimba", "mallet"),
    16: ("organ", "organ"),
    19: ("church organ", "organ"),
    21: ("accordion", "reed"),
    24: ("nylon guitar", "guitar"),
    25: ("acoustic guitar", "guitar"),
    26: ("jazz guitar", "guitar"),
    27: ("clean electric guitar", "guitar"),
    29: ("overdriven guitar", "guitar"),
    30: ("distorted guitar", "guitar"),
    32: ("upright bass", "bass"),
    33: ("electric bass", "bass"),
    34: ("picked bass", "bass"),
    38: ("synth bass", "bass"),
    39: ("analog synth bass", "bass"),
    40: ("violin", "strings"),
    42: ("cello", "strings"),
    46: ("harp", "strings"),
    48: ("string ensemble", "strings"),
    52: ("choir", "voice"),
    56: ("trumpet", "brass"),
    57: ("trombone", "brass"),
    58: ("tuba", "brass"),
    60: ("french horn", "brass"),
    61: ("brass section", "brass"),
    65: ("alto sax", "reed"),
    66: ("tenor sax", "reed"),
    68: ("oboe", "reed"),
    71: ("clarinet", "reed"),
    73: ("flute", "pipe"),
    72: ("piccolo", "pipe"),
    75: ("pan flute", "pipe"),
    80: ("square lead", "synth lead"),
    81: ("sawtooth lead", "synth lead"),
    88: ("new age pad", "synth pad"),
    89: ("warm pad", "synth pad"),
    90: ("polysynth pad", "synth pad"),
    105: ("banjo", "guitar"),
    110: ("fiddle", "strings"),
}
DRUMS = ("drum kit", "percussion")
FAMILIES = sorted({f for _, f in INSTRUMENTS.values()} | {DRUMS[1]})

KICK, SNARE, RIM, CLAP, HAT, PEDAL_HAT, OPEN_HAT, RIDE, CRASH, LOW_TOM, SHAKER, TAMBOURINE = (
    36, 38, 37, 39, 42, 44, 46, 51, 49, 45, 70, 54,
)  # fmt: skip


@dataclass
class Style:
    name: str
    words: list[str]  # how captions may name it
    bpm: tuple[int, int]
    meter: str  # "4/4", "3/4", "6/8"
    melody: str  # "fiddle", "chorale", "procedural", or "any" (fiddle tune or procedural)
    drums: dict[int, str] = field(default_factory=dict)
    drums_probability: float = 1.0
    swing: float = 0.0  # delay of off-beat eighths, as a fraction of an eighth (1/3 = triplet swing)
    bass: str = "root"  # root | root5 | walking | offbeat | oompah | none
    bass_rhythm: str = "x.......x......."
    comp: str = "block"  # block | stabs | arp | power | strum | oompah | voices
    comp_rhythm: str = "x..............."
    progressions: list[list[str]] = field(default_factory=list)
    sevenths: bool = False
    programs: dict[str, list[int]] = field(default_factory=dict)  # role -> GM programs
    optional: dict[str, float] = field(default_factory=dict)  # role -> probability it plays
    moods: list[str] = field(default_factory=list)


STYLES: dict[str, Style] = {
    s.name: s
    for s in [
        Style(
            "hip hop",
            ["hip hop", "hip-hop", "boom bap", "lo-fi hip hop"],
            (78, 96),
            "4/4",
            "any",
            {KICK: "X.....x...x..o..", SNARE: "....X.......X...", HAT: "x.o.x.o.x.o.x.ox"},
            swing=0.2,
            bass="root",
            bass_rhythm="x.....x...x.....",
            comp="block",
            progressions=[["i", "bVI", "bIII", "bVII"], ["ii", "V", "I", "vi"], ["i", "iv", "i", "v"]],
            sevenths=True,
            programs={"bass": [38, 33], "chords": [4, 0, 89, 48], "melody": [11, 73, 4, 12, 65]},
            optional={"chords": 0.9, "bass": 0.9},
            moods=["chill", "laid-back", "mellow", "nostalgic"],
        ),
        Style(
            "rock",
            ["rock", "rock and roll", "guitar rock"],
            (108, 150),
            "4/4",
            "any",
            {
                KICK: "X.......x.x.....",
                SNARE: "....X.......X...",
                HAT: "x.x.x.x.x.x.x.x.",
                CRASH: "x...............",
            },
            bass="root",
            bass_rhythm="x.x.x.x.x.x.x.x.",
            comp="power",
            comp_rhythm="x.x.x.x.x.x.x.x.",
            progressions=[["I", "IV", "V", "IV"], ["I", "bVII", "IV", "I"], ["i", "bVI", "bVII", "i"]],
            programs={"bass": [34, 33], "chords": [29, 30, 27], "melody": [29, 30, 81, 66]},
            optional={"bass": 0.95},
            moods=["energetic", "driving", "powerful", "gritty"],
        ),
        Style(
            "jazz",
            ["jazz", "swing", "jazz swing", "bebop-flavoured jazz"],
            (110, 190),
            "4/4",
            "any",
            {RIDE: "x...x.x.x...x.x.", PEDAL_HAT: "....x.......x...", KICK: "o...o...o...o..."},
            swing=0.33,
            bass="walking",
            comp="stabs",
            comp_rhythm="x.....x.....x...",
            progressions=[["ii", "V", "I", "vi"], ["I", "vi", "ii", "V"], ["iii", "vi", "ii", "V"]],
            sevenths=True,
            programs={"bass": [32], "chords": [0, 26, 11], "melody": [65, 66, 56, 71, 57]},
            optional={"chords": 0.9},
            moods=["smooth", "sophisticated", "lively", "smoky"],
        ),
        Style(
            "bossa nova",
            ["bossa nova", "brazilian bossa nova", "latin bossa"],
            (118, 146),
            "4/4",
            "any",
            {RIM: "x..x..x...x..x..", KICK: "x..xx..xx..xx..x", SHAKER: "xoxoxoxoxoxoxoxo"},
            bass="root5",
            bass_rhythm="x..x....x..x....",
            comp="stabs",
            comp_rhythm="x..x..x...x..x..",
            progressions=[["I", "ii", "V", "I"], ["ii", "V", "I", "IV"], ["i", "iv", "V", "i"]],
            sevenths=True,
            programs={"bass": [32, 33], "chords": [24, 0], "melody": [73, 65, 24, 4]},
            optional={"bass": 0.9},
            moods=["breezy", "relaxed", "warm", "romantic"],
        ),
        Style(
            "techno",
            ["techno", "electronic dance music", "club techno"],
            (120, 136),
            "4/4",
            "procedural",
            {
                KICK: "X...X...X...X...",
                CLAP: "....x.......x...",
                OPEN_HAT: "..x...x...x...x.",
                HAT: "oooooooooooooooo",
            },
            bass="offbeat",
            bass_rhythm="..x...x...x...x.",
            comp="block",
            progressions=[["i", "i", "bVI", "bVII"], ["i", "iv", "i", "iv"], ["I", "I", "IV", "IV"]],
            programs={"bass": [38, 39], "chords": [90, 89, 88], "melody": [81, 80]},
            optional={"chords": 0.8},
            moods=["hypnotic", "pulsing", "dark", "energetic"],
        ),
        Style(
            "waltz",
            ["waltz", "viennese waltz", "waltz in three"],
            (84, 176),
            "3/4",
            "any",
            {},
            drums_probability=0.0,
            bass="oompah",
            comp="oompah",
            progressions=[["I", "V", "V", "I"], ["I", "IV", "V", "I"], ["i", "iv", "V", "i"]],
            programs={"bass": [42, 58, 32], "chords": [48, 0, 21], "melody": [40, 73, 21, 71]},
            moods=["elegant", "graceful", "swaying", "romantic"],
        ),
        Style(
            "ballad",
            ["ballad", "piano ballad", "slow ballad"],
            (60, 82),
            "4/4",
            "any",
            {KICK: "x.......x.......", RIM: "....x.......x...", HAT: "x...x...x...x..."},
            drums_probability=0.5,
            bass="root",
            bass_rhythm="x.......x.......",
            comp="arp",
            progressions=[["I", "V", "vi", "IV"], ["I", "vi", "IV", "V"], ["i", "bVI", "bIII", "bVII"]],
            programs={"bass": [33, 42], "chords": [0, 46, 4], "melody": [48, 40, 73, 52, 0]},
            optional={"bass": 0.7, "pad": 0.6},
            moods=["emotional", "tender", "sentimental", "calm"],
        ),
        Style(
            "chorale",
            ["chorale", "baroque chorale", "four-part hymn"],
            (56, 92),
            "4/4",
            "chorale",
            {},
            drums_probability=0.0,
            bass="none",
            comp="voices",
            programs={"voices": [52, 19, 48, 61, 0, 6]},
            moods=["solemn", "serene", "devotional", "stately"],
        ),
        Style(
            "folk",
            ["folk", "celtic folk", "irish folk", "traditional fiddle music"],
            (88, 128),
            "4/4",
            "fiddle",
            {LOW_TOM: "x..x..x.x..x..x.", TAMBOURINE: "..x...x...x...x."},
            drums_probability=0.4,
            bass="root5",
            bass_rhythm="x.......x.......",
            comp="strum",
            comp_rhythm="x.x.x.x.x.x.x.x.",
            programs={"bass": [32], "chords": [25, 105, 21], "melody": [110, 73, 75, 21, 72]},
            optional={"bass": 0.5},
            moods=["lively", "rustic", "cheerful", "traditional"],
        ),
    ]
}
