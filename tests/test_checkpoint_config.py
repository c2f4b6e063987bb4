import json
import re

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


@pytest.mark.parametrize(
    "cls, field, value, match",
    [
        (
            "CodecConfig",
            "num_coarse_quantizers",
            9,
            "num_coarse_quantizers must lie in [1, num_quantizers = 8]",
        ),
        ("CodecConfig", "codebook_size", 1, "codebook_size must be >= 2"),
        ("CodecConfig", "strides", (2, 0), "strides must be positive"),
        ("CodecConfig", "decoder", "wavenet", "decoder must be 'seanet' or 'istft'"),
        ("CodecConfig", "istft_upsample", 3, "istft_upsample = 3 does not divide the hop length 320"),
        ("SemanticConfig", "layer", 5, "layer must lie in [0, depth = 4]"),
        ("SemanticConfig", "heads", 5, "dim = 192 is not a multiple of heads = 5"),
        ("MulanConfig", "text_tower", "bert", "text_tower must be 'own' or 'minilm'"),
        ("MulanConfig", "window_seconds", 0.0, "window_seconds must be positive"),
        ("MelodyConfig", "fmax", 9000.0, "need 0 <= fmin < fmax <= sample_rate / 2, got 50.0, 9000.0"),
        ("LMConfig", "kv_heads", 3, "kv_heads must divide heads = 4"),
        ("LMConfig", "dropout", 1.0, "dropout must lie in [0, 1)"),
        ("LMConfig", "temperature", float("nan"), "temperature must be positive"),
        ("LMConfig", "top_p", 1.5, "top_p must lie in (0, 1]"),
        ("LMConfig", "guidance", -1.0, "guidance must be a finite number >= 0"),
        ("LMConfig", "cond_drop_prob", 2.0, "cond_drop_prob must lie in [0, 1]"),
    ],
)
def test_a_config_field_out_of_range_is_one_line_at_construction_and_at_load(
    tmp_path, cls, field, value, match
):
    """Every component config checks its fields when built, so a bad value (by hand, or in a
    checkpoint's config.json) is named at once instead of failing inside a model."""
    import dataclasses

    from musiclm import config as configs

    config_class = getattr(configs, cls)
    with pytest.raises(ConfigError, match=re.escape(f"{cls}: {match}")):
        config_class(**{field: value})
    data = config_to_dict(config_class())
    data[field] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(ConfigError, match=re.escape(f"in.json: {cls}: {match}")):
        config_from_dict(config_class, data, where="in.json")
    assert dataclasses.is_dataclass(config_class())  # the defaults themselves are valid


def test_a_checkpoint_with_a_bad_config_is_named_at_load(tmp_path):
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig

    path = save_model(SoundStream(CodecConfig(channels=4, latent_dim=16, num_quantizers=2, num_coarse_quantizers=1)),
                      tmp_path / "codec")  # fmt: skip
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["num_coarse_quantizers"] = 5
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=re.escape(f"{path / 'config.json'}: CodecConfig: num_coarse")):
        load_model(path)


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
