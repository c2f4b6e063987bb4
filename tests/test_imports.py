"""What starting a command costs: the parser imports no torch, loading a checkpoint imports the module
of its kind alone (a codec load needs neither scikit-learn nor transformers nor the LMs)."""

import subprocess
import sys

from musiclm.checkpoint import save_model
from musiclm.codec.soundstream import SoundStream
from musiclm.config import get_preset

PROBE = """
import sys
from musiclm.cli import build_parser
build_parser()
print(sorted(m for m in ("torch", "numpy") if m in sys.modules))
from musiclm.checkpoint import load_model
load_model(sys.argv[1], kind="codec")
print(sorted(m for m in ("sklearn", "transformers", "musiclm.lm.stages") if m in sys.modules))
"""


def test_the_parser_and_a_codec_load_import_only_what_they_need(tmp_path):
    save_model(SoundStream(get_preset("tiny").codec), tmp_path / "codec")
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "codec")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["[]", "[]"], run.stdout
