"""Ranking by audio prototypes: a bundle with them keeps the candidate nearest the audio of the
training clips whose captions are nearest the prompt; the bank round-trips through a compact bundle
(int8 rows);
a bank embedded by another MuLaN is refused in one line; the LMs can read the MuLaN tokens of a
prompt's prototype instead of its text's, as a bundle records; ``train prototypes`` builds one from a
captioned folder and refuses uncaptioned data before any work."""

import json

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from musiclm.bundle import make_bundle
from musiclm.checkpoint import save_model
from musiclm.cli import main
from musiclm.config import PrototypesConfig
from musiclm.data.manifest import ManifestEntry
from musiclm.errors import CheckpointError, ConfigError
from musiclm.mulan.prototypes import AudioPrototypes
from musiclm.mulan.prototypes_build import build_prototypes
from musiclm.pipeline import MusicLM
from tests._tiny_bundle import PROMPTS, SR, components, save_parts


def _sounds(n: int, seconds: float = 2.0) -> torch.Tensor:
    """``[n, T]``: clearly different sounds (a tone each, at its own pitch, over a little noise)."""
    t = torch.arange(round(seconds * SR)) / SR
    g = torch.Generator().manual_seed(0)
    return torch.stack(
        [0.3 * torch.sin(2 * torch.pi * 110 * 2 ** (i * 7 / 12) * t) + 0.01 * torch.randn(len(t), generator=g)
         for i in range(n)]
    )  # fmt: skip


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return root, components(melody=False)


def _bank(mulan, sounds: torch.Tensor, captions: list[str], neighbours: int = 1) -> AudioPrototypes:
    """A bank pairing each caption with one sound, embedded by ``mulan``."""
    bank = AudioPrototypes(
        PrototypesConfig(entries=len(captions), embed_dim=32, neighbours=neighbours, seconds=2.0)
    )
    with torch.no_grad():
        bank.text.copy_(mulan.embed_text(captions))
        bank.audio.copy_(mulan.embed_audio(sounds, SR))
        text, audio = bank.probes(mulan)
        bank.probe_text.copy_(text)
        bank.probe_audio.copy_(audio)
    return bank


def test_candidates_are_ranked_by_the_prompts_prototype(parts):
    _, comps = parts
    sounds = _sounds(len(PROMPTS))
    plain = MusicLM(comps, name="plain")
    # each prompt's own caption is its nearest: its prototype is the sound paired with it
    bank = _bank(comps["mulan"], sounds, PROMPTS)
    ranked = MusicLM({**comps, "prototypes": bank}, name="prototypes")
    for i, prompt in enumerate(PROMPTS):
        by_text = plain.score([prompt], sounds[None])[0]
        by_prototype = ranked.score([prompt], sounds[None])[0]
        assert int(by_prototype.argmax()) == i and float(by_prototype[i]) == pytest.approx(1.0, abs=1e-4)
        others = [j for j in range(len(PROMPTS)) if j != i]
        assert not torch.allclose(by_text, by_prototype)
        assert (by_prototype[others] < by_prototype[i] - 1e-3).all()
    # the pipeline keeps that candidate: generate's scores are the same ranking
    out = ranked.generate(PROMPTS[:2], seconds=1.0, candidates=3, seed=0, progress=False)
    expected = ranked.score(PROMPTS[:2], out.candidates)
    assert torch.allclose(out.scores, expected, atol=1e-5) and (out.chosen == expected.argmax(1)).all()


def test_a_half_precision_bundle_keeps_the_ranking_and_refuses_another_mulan(parts, tmp_path):
    root, comps = parts
    sounds = _sounds(len(PROMPTS))
    dirs = save_parts(root, comps)
    dirs["prototypes"] = save_model(_bank(comps["mulan"], sounds, PROMPTS), tmp_path / "prototypes")
    bundle = make_bundle(tmp_path / "bundle", dirs, name="t", half=True)
    stored = load_file(str(bundle / "prototypes" / "model.safetensors"))  # the bank's rows in 8 bits
    assert stored["audio"].dtype == stored["text"].dtype == torch.int8
    assert json.loads((bundle / "prototypes" / "config.json").read_text())["format_version"] == 2
    model = MusicLM.from_pretrained(bundle, device="cpu")
    assert model.prototypes.audio.dtype == torch.float32
    original = load_file(str(dirs["prototypes"] / "model.safetensors"))
    for name in ("audio", "text"):
        cosine = torch.cosine_similarity(getattr(model.prototypes, name), original[name], dim=-1)
        assert float(cosine.min()) > 0.9999
    assert model.score(PROMPTS[:1], sounds[None]).argmax().item() == 0
    # a bank embedded by a MuLaN trained otherwise (here: other random weights)
    other = components(melody=False)["mulan"]
    torch.manual_seed(1)
    for p in other.parameters():
        p.data.normal_(0, 0.05)
    dirs["prototypes"] = save_model(_bank(other, sounds, PROMPTS), tmp_path / "other")
    with pytest.raises(CheckpointError, match="prototypes were embedded by another MuLaN"):
        make_bundle(tmp_path / "mixed", dirs, name="mixed")
    assert not (tmp_path / "mixed").exists()


def test_the_lms_read_the_prototypes_tokens_where_the_bundle_says(parts, tmp_path, capsys):
    root, comps = parts
    sounds = _sounds(len(PROMPTS))
    bank = _bank(comps["mulan"], sounds, PROMPTS)  # one neighbour: a prompt's prototype is its own sound
    model = MusicLM({**comps, "prototypes": bank}, name="p")
    assert model.conditioning == "text"  # the paper's, unless the bundle says otherwise
    text = model.conditioning_tokens(PROMPTS)
    assert torch.equal(text, model.text_tokens(PROMPTS))
    model.conditioning = "prototype"
    tokens = model.conditioning_tokens(PROMPTS)
    assert torch.equal(tokens, comps["mulan"].tokens_from_audio(sounds, SR))  # the audio side's tokens
    assert not torch.equal(tokens, text)
    out = model.generate(PROMPTS[:2], seconds=1.0, candidates=2, seed=0, progress=False)
    assert torch.equal(out.cond_tokens, tokens[:2])
    model.conditioning = "text"
    by_text = model.generate(PROMPTS[:2], seconds=1.0, candidates=2, seed=0, progress=False)
    assert not torch.equal(out.tokens["coarse"], by_text.tokens["coarse"])  # what the LMs read changed
    # a bundle records the choice in the prototypes' config, and refuses it without prototypes
    dirs = save_parts(root, comps)
    dirs["prototypes"] = save_model(bank, tmp_path / "prototypes")
    bundle = make_bundle(tmp_path / "bundle", dirs, name="t", conditioning="prototype")
    assert MusicLM.from_pretrained(bundle, device="cpu").conditioning == "prototype"
    without = {k: v for k, v in dirs.items() if k != "prototypes"}
    with pytest.raises(ConfigError, match="needs the prototypes component"):
        make_bundle(tmp_path / "plain", without, name="plain", conditioning="prototype")
    assert not (tmp_path / "plain").exists()
    plain = make_bundle(tmp_path / "plain", without, name="plain")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a calm piano piece\n")
    args = ["eval", "--model", str(plain), "--prompts", str(prompts), "--out", str(tmp_path / "ev")]
    assert main([*args, "--conditioning", "prototype"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--conditioning prototype" in err[0] and "no prototypes" in err[0], err
    assert not (tmp_path / "ev").exists()


def test_build_samples_captioned_clips(parts, tmp_path):
    _, comps = parts
    sounds = _sounds(6)
    entries = []
    for i, wav in enumerate(sounds):
        sf.write(tmp_path / f"{i}.wav", wav.numpy(), SR)
        entries.append(
            ManifestEntry(path=str(tmp_path / f"{i}.wav"), caption=PROMPTS[i % 4] if i < 5 else "")
        )
    bank = build_prototypes(comps["mulan"], entries, clips=4, neighbours=2, seconds=2.0, progress=False)
    assert bank.config.entries == 4 and bank.config.neighbours == 2
    assert torch.allclose(bank.audio.norm(dim=-1), torch.ones(4), atol=1e-5)
    # each kept clip's audio embedding is its sound's, paired with its own caption's text embedding
    with torch.no_grad():
        audio = comps["mulan"].embed_audio(sounds[:5], SR)
        text = comps["mulan"].embed_text([e.caption for e in entries[:5]])
    for a, t in zip(bank.audio, bank.text, strict=True):
        j = int((audio @ a).argmax())
        assert float(audio[j] @ a) == pytest.approx(1.0, abs=1e-4)
        assert float(text[j] @ t) == pytest.approx(1.0, abs=1e-4)
    assert bank.matches(comps["mulan"])


def test_train_prototypes_command(parts, tmp_path, capsys):
    _, comps = parts
    mulan_dir = save_model(comps["mulan"], tmp_path / "mulan")
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, wav in enumerate(_sounds(3)):
        sf.write(clips / f"{i}.wav", wav.numpy(), SR)
    base = ["train", "prototypes", "--model", str(mulan_dir), "--out", str(tmp_path / "bank")]
    for args, match in (
        (["--data", str(clips)], "no captioned clips"),  # audio without captions
        (["--data", str(clips), "--clips", "0"], "--clips"),
        (["--data", str(clips), "--seconds", "nan"], "--seconds"),
        (["--data", str(tmp_path / "none.jsonl")], "none.jsonl"),
    ):
        assert main([*base, *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("musiclm: error:") and match in err[0], err
    assert not (tmp_path / "bank" / "config.json").exists()
    for i in range(3):
        (clips / f"{i}.txt").write_text(PROMPTS[i])
    assert main([*base, "--data", str(clips), "--neighbours", "2", "--seconds", "2"]) == 0
    config = json.loads((tmp_path / "bank" / "config.json").read_text())
    assert config["kind"] == "prototypes" and config["config"]["entries"] == 3
