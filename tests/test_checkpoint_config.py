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


def test_int8_rows_load_back_as_float32_and_a_bad_scale_is_named(tmp_path):
    """Compact storage: a tensor kept as int8 rows with a scale each loads back into the float32
    model, every row within 8 bits of where it was; a scale that fits no int8 tensor is one line."""
    from safetensors.torch import load_file, save_file

    from musiclm.checkpoint import ROW_SCALE, quantize_rows

    model = ToyModel(ToyConfig(width=300))
    save_model(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    state["lin.weight"], state["lin.weight" + ROW_SCALE] = quantize_rows(state["lin.weight"])
    assert state["lin.weight"].dtype == torch.int8 and int(state["lin.weight"].abs().max()) == 127
    save_file(state, str(weights))
    again = load_model(tmp_path / "m")
    original, loaded = model.lin.weight.detach(), again.lin.weight.detach()
    assert loaded.dtype == torch.float32 and not torch.equal(loaded, original)
    step = original.abs().max() / 127  # one quantization step of the row
    assert float((loaded - original).abs().max()) <= 0.5 * float(step) + 1e-7
    assert float(torch.cosine_similarity(loaded, original)) > 0.9999
    state["lin.weight" + ROW_SCALE] = torch.ones(2, 1)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"lin.weight.row_scale does not scale an int8 tensor"):
        load_model(tmp_path / "m")


def test_every_model_kind_is_found_by_importing_its_own_module():
    """``load_model`` imports only the module ``BUILTIN_KINDS`` names for a checkpoint's kind."""
    import importlib
    import pkgutil

    import musiclm
    from musiclm.checkpoint import _REGISTRY, BUILTIN_KINDS

    for info in pkgutil.walk_packages(musiclm.__path__, "musiclm."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    package_kinds = {kind for kind, cls in _REGISTRY.items() if cls.__module__.startswith("musiclm.")}
    assert package_kinds == set(BUILTIN_KINDS)
    assert all(_REGISTRY[kind].__module__ == module for kind, module in BUILTIN_KINDS.items())
