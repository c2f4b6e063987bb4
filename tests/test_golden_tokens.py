"""Golden tokens: the same seed gives the same tokens, in training examples and in generation.

The reference values in ``golden_tokens.json`` were written by the code before a refactoring; a
change that alters sampling or a token layout must say why and regenerate them with
``MUSICLM_UPDATE_GOLDEN=1 pytest tests/test_golden_tokens.py``.
"""

import json
import os
import random
from pathlib import Path

import pytest
import torch

from musiclm.bundle import make_bundle
from musiclm.pipeline import MusicLM
from tests._tiny_bundle import PROMPTS, SR, components, save_parts

GOLDEN = Path(__file__).with_name("golden_tokens.json")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    model = MusicLM.from_pretrained(
        make_bundle(root / "bundle", save_parts(root, components())), device="cpu"
    )
    model.float16_weights = False  # float32 throughout, the path the references were written with
    return model


def _tone(seconds: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return 0.3 * torch.sin(2 * torch.pi * (220 + 110 * (t > seconds / 2)) * t)


def _tokens(out) -> dict:
    return {k: v.tolist() for k, v in out.tokens.items()}


def _cases(model: MusicLM) -> dict:
    record = {
        "semantic": torch.arange(100) % 16,
        "codec": (torch.arange(4 * 200).reshape(4, 200) * 7) % 64,
        "mulan_tokens": torch.tensor([1, 5, 9, 13]),
        "melody_tokens": (torch.arange(6 * 4).reshape(6, 4) * 3) % 32,
    }
    examples = {
        name: {k: v.int().tolist() for k, v in stage.training_example(record, random.Random(3)).items()}
        for name, stage in (
            ("semantic", model.semantic_lm),
            ("coarse", model.coarse_lm),
            ("fine", model.fine_lm),
        )
    }
    kw = dict(progress=False, seed=7)
    return {
        "training_examples": examples,
        "generate": _tokens(
            model.generate(PROMPTS[:2], seconds=5.0, candidates=2, guidance=3.0, top_k=8, **kw)
        ),
        "melody": _tokens(
            model.generate(PROMPTS[0], seconds=2.0, melody=_tone(4.0), melody_sample_rate=SR, **kw)
        ),
        "continue": _tokens(model.continue_audio(_tone(2.0), PROMPTS[1], seconds=1.5, sample_rate=SR, **kw)),
        "story": _tokens(model.story([(PROMPTS[0], 1.0), (PROMPTS[2], 2.5), (PROMPTS[3], 0.5)], **kw)),
    }


def test_same_seed_same_tokens_as_the_reference(model):
    got = _cases(model)
    if os.environ.get("MUSICLM_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, separators=(",", ":")) + "\n")
    want = json.loads(GOLDEN.read_text())
    for case in want:
        assert got[case] == want[case], f"{case}: tokens differ from the reference"
