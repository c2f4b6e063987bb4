import json

import pytest
import torch

from musiclm.checkpoint import load_model, save_model
from musiclm.config import config_diff, config_from_dict, config_to_dict, get_preset
from musiclm.errors import CheckpointError, ConfigError
from tests._toy_task import ToyConfig, ToyModel


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_presets_round_trip_through_json(name):
    cfg = get_preset(name)
    again = config_from_dict(type(cfg), json.loads(json.dumps(config_to_dict(cfg))))
    assert again == cfg


def test_paper_preset_rates():
    cfg = get_preset("paper")
    assert cfg.codec.sample_rate == 24000 and cfg.codec.frame_rate == 50
    assert cfg.codec.num_quantizers == 12 and cfg.codec.num_coarse_quantizers == 4
    assert cfg.semantic.frame_rate == 25
    assert get_preset("tiny").codec.frame_rate == 50


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict(ToyConfig, {"width": 4, "depth": 2})
    with pytest.raises(ConfigError, match="expected int"):
        config_from_dict(ToyConfig, {"width": "four"})
    assert config_diff(ToyConfig(4), ToyConfig(5)) == ["width: 4 != 5"]


def test_save_load_identity(tmp_path):
    model = ToyModel(ToyConfig(width=3))
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    x = torch.randn(5, 3)
    assert torch.equal(model(x), again(x))
    # overwriting is atomic and leaves a loadable checkpoint
    save_model(model, tmp_path / "m")
    load_model(tmp_path / "m", kind="toy-linear", expected_config=ToyConfig(width=3))


def test_mismatched_or_broken_checkpoints(tmp_path):
    save_model(ToyModel(ToyConfig(width=3)), tmp_path / "m")
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(tmp_path / "m", expected_config=ToyConfig(width=4))
    with pytest.raises(CheckpointError, match="expected 'codec'"):
        load_model(tmp_path / "m", kind="codec")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nothing")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["config"]["width"] = 7
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_model(tmp_path / "m")
