"""Run ``musiclm train bundle`` with every phase replaced by a sleeping child (for the Ctrl-C,
SIGKILL and side-by-side tests): python _recipe_script.py DATA RUN MINUTES [--parallel yes]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import musiclm.recipe as recipe  # noqa: E402
from musiclm.cli import main  # noqa: E402

SLEEP = [sys.executable, "-c", "import time; time.sleep(0.4 if '--fast' in __import__('sys').argv else 60)"]
recipe.Recipe._commands = lambda self, phase, minutes, plan: [
    [*SLEEP, "--fast"] if phase in ("tokenize", "bundle") else SLEEP
]
recipe.Recipe._write_card = lambda self: None
args = [
    "train",
    "bundle",
    "--data",
    sys.argv[1],
    "--out",
    sys.argv[2],
    "--minutes",
    sys.argv[3],
    *sys.argv[4:],
]
sys.exit(main(args))
