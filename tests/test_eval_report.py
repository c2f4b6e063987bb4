"""``musiclm eval`` on a tiny random bundle writes a complete, resumable report."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm.bundle import make_bundle
from musiclm.data.manifest import ManifestEntry, load_entries, write_manifest
from musiclm.eval import MulanEmbedder, fad, kl_divergence, mulan_cycle_consistency
from musiclm.eval.classifiers import LabelClassifier, LabelClassifierConfig
from musiclm.eval.report import load_clip, markdown_table
from musiclm.pipeline import MusicLM
from tests._tiny_bundle import SR, components, save_parts


def _benchmark(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(6):
        bpm = [90, 120, 150][i % 3]
        t = np.arange(3 * SR) / SR
        clicks = (np.mod(t, 60 / bpm) < 0.01) * rng.normal(0, 0.5, len(t))
        wav = (0.2 * np.sin(2 * np.pi * [220, 330][i % 2] * t) + clicks) * [0.25, 0.5, 1.0][i % 3]
        path = tmp_path / f"ref{i}.wav"
        sf.write(path, wav.astype(np.float32), SR)
        labels = {
            "bpm": bpm,
            "key": "A" if i % 2 == 0 else "E",
            "mode": "major",
            "genre": ["rock", "jazz"][i % 2],
            "dynamics": ["soft", "medium", "loud"][i % 3],
        }
        entries.append(ManifestEntry(str(path), f"a {labels['genre']} piece at {bpm} bpm", labels=labels))
    return write_manifest(tmp_path / "bench.jsonl", entries)


def test_eval_cli_writes_report_and_resumes(tmp_path):
    from musiclm.cli import main

    bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path / "parts", components()), name="tiny-eval")
    manifest = _benchmark(tmp_path)
    clf = LabelClassifier(LabelClassifierConfig(labels={"genre": ["jazz", "rock"]}, channels=(4,)))
    clf.fit(torch.randn(4, SR), {"genre": ["jazz", "rock", "jazz", "rock"]}, epochs=1)
    clf.save(tmp_path / "clf")
    out = tmp_path / "report"
    args = ["eval", "--model", str(bundle), "--prompts", str(manifest), "--out", str(out), "--seconds", "3",
            "--classifier", str(tmp_path / "clf"), "--device", "cpu", "--batch-size", "3",
            "--temperatures", "1", "0.95", "0.7"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["temperatures"] == {"semantic": 1.0, "coarse": 0.95, "fine": 0.7}
    systems = report["systems"]
    assert set(systems) == {"model", "unconditional", "reference", "codec round trip", "shuffled prompts"}
    for name in ("model", "unconditional", "reference", "codec round trip"):
        assert {"tempo", "key", "mode", "dynamics", "genre"} <= set(systems[name]["adherence"])
    assert systems["reference"]["adherence"]["tempo_octave"] >= 0.5  # the click tracks carry their tempo
    assert systems["reference"]["adherence"]["dynamics"] == 1.0  # each as loud as its label says
    # every figure is what the metric gives on the files the report names, prompt i with clip i
    model = MusicLM.from_pretrained(bundle, device="cpu")
    entries = load_entries(manifest)
    clips = {
        "model": [load_clip(str(p), SR, 3.0) for p in sorted((out / "generated").glob("*.wav"))],
        "unconditional": [load_clip(str(p), SR, 3.0) for p in sorted((out / "unconditional").glob("*.wav"))],
        "reference": [load_clip(e.path, SR, 3.0) for e in entries],
    }
    with torch.inference_mode():  # each reference through the bundle's codec, one at a time
        clips["codec round trip"] = [
            model.codec.decode(model.codec.encode(w[None]), w.shape[-1]).reshape(-1).clamp(-1, 1)
            for w in clips["reference"]
        ]
    captions = [e.caption for e in entries]
    for name, wavs in clips.items():
        mcc, _ = mulan_cycle_consistency(model.mulan, captions, wavs, sample_rate=SR)
        assert systems[name]["mcc"] == pytest.approx(mcc, abs=1e-4)
    emb = {k: MulanEmbedder(model.mulan).embed(torch.stack(w), SR).numpy() for k, w in clips.items()}
    clf = LabelClassifier.load(tmp_path / "clf")
    probs = {k: clf.predict_proba(torch.stack(w), SR) for k, w in clips.items()}
    features = {k: clf.clip_features(torch.stack(w)).detach().numpy() for k, w in clips.items()}
    for name in ("model", "unconditional", "codec round trip"):
        assert systems[name]["fad_mulan"] == pytest.approx(fad(emb["reference"], emb[name]), rel=1e-4)
        expected = fad(features["reference"], features[name])
        assert systems[name]["fad_classifier"] == pytest.approx(expected, rel=1e-4)
        assert expected != pytest.approx(fad(emb["reference"], emb[name]), rel=1e-2)
        kld = kl_divergence(probs["reference"]["genre"], probs[name]["genre"])
        assert systems[name]["kld_genre"] == pytest.approx(kld, rel=1e-4)
    table = (out / "report.md").read_text()
    assert "| model |" in table and "| reference |" in table
    assert "guidance 1, temperatures 1 / 0.95 / 0.7)" in table.splitlines()[0]
    assert "top_k" not in report and "top_p" not in report  # recorded only where a stage truncates
    truncated = markdown_table({**report, "top_p": {"semantic": 0.9, "coarse": None, "fine": None}})
    assert "temperatures 1 / 0.95 / 0.7, top-p 0.9 / off / off)" in truncated.splitlines()[0]
    generated = sorted((out / "generated").glob("*.wav"))
    assert len(generated) == 6
    stamps = [p.stat().st_mtime_ns for p in generated]
    assert main(args) == 0  # resumes: nothing is generated again
    assert [p.stat().st_mtime_ns for p in generated] == stamps


def test_classifier_trains_on_the_clips_and_their_codec_round_trips(tmp_path, monkeypatch, capsys):
    """``train classifier --through-codec``: every clip a second time as the codec decodes it, with
    the same labels; a path that is no codec is one line, before any audio is read."""
    from musiclm.cli import main

    bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path / "parts", components()), name="tiny-clf")
    manifest = _benchmark(tmp_path)
    seen = {}

    def fit(self, wavs, labels, **kwargs):
        seen.update(wavs=wavs, labels=labels)
        return [1.0, 0.5]

    monkeypatch.setattr(LabelClassifier, "fit", fit)
    args = ["train", "classifier", "--data", str(manifest), "--factors", "genre", "--seconds", "2"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    plain = seen["wavs"]
    assert main([*args, "--out", str(tmp_path / "both"), "--through-codec", str(bundle)]) == 0
    wavs, genres = seen["wavs"], seen["labels"]["genre"]
    assert len(plain) == 6 and len(wavs) == 12 and genres == ["rock", "jazz"] * 6
    assert torch.equal(wavs[:6], plain)
    codec = MusicLM.from_pretrained(bundle, device="cpu").codec
    with torch.inference_mode():
        for clip, decoded in zip(plain, wavs[6:]):
            expected = codec.decode(codec.encode(clip[None]), clip.shape[-1]).reshape(-1).clamp(-1, 1)
            assert torch.allclose(decoded, expected, atol=1e-5)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--through-codec", str(tmp_path / "nothing")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0], err


def test_eval_over_seeds_reports_each_figure_s_mean_and_spread(tmp_path, monkeypatch, capsys):
    from musiclm.cli import main
    from musiclm.eval import report as report_module

    bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path / "parts", components()), name="tiny-eval")
    manifest, out = _benchmark(tmp_path), tmp_path / "report"
    args = ["eval", "--model", str(bundle), "--prompts", str(manifest), "--out", str(out), "--seconds", "3",
            "--device", "cpu", "--batch-size", "3", "--no-unconditional"]  # fmt: skip
    assert main([*args, "--seeds", "0", "1", "1"]) == 0  # once per seed, each in its own folder
    report = json.loads((out / "report.json").read_text())
    runs = [json.loads((out / f"seed-{s}" / "report.json").read_text())["systems"] for s in (0, 1)]
    assert report["seeds"] == [0, 1] and not (out / "seed-2").exists()
    assert report["systems"]["model"]["mcc"] == pytest.approx(np.mean([r["model"]["mcc"] for r in runs]))
    capsys.readouterr()
    assert main([*args, "--seeds", "0", "1", "--generated", str(out / "seed-0" / "generated")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds" in err[0]

    # the figures of each seed's run, combined (this tiny random bundle's clips do not vary by seed)
    def one_run(model, source, folder, *, config, **kwargs):
        s = config.seed
        return {
            "prompts": 6, "seconds": 3.0, "model": "m", "wall_seconds": {"generation": 1.0, "total": 2.0},
            "systems": {
                "model": {"fad_mulan": 0.4 + 0.1 * s, "adherence": {"tempo": 0.5 * s}},
                "unconditional": {"fad_mulan": 0.5 + 0.3 * s, "adherence": {"tempo": 0.25}},
            },
        }  # fmt: skip

    monkeypatch.setattr(report_module, "evaluate", one_run)
    config = report_module.EvalConfig()
    combined = report_module.evaluate_seeds(None, manifest, tmp_path / "fake", config=config, seeds=[0, 1, 2])
    assert combined["systems"]["model"]["fad_mulan"] == pytest.approx(0.5)
    assert combined["spread"]["model"]["fad_mulan"] == pytest.approx(0.1)
    assert combined["systems"]["model"]["adherence"]["tempo"] == pytest.approx(0.5)
    assert combined["fad_mulan_below_unconditional"] == pytest.approx([0.2, 0.375, 0.4545454])
    assert combined["wall_seconds"] == {"generation": 3.0, "total": 6.0}
    table = (tmp_path / "fake" / "report.md").read_text()
    assert "Mean over seeds 0, 1, 2" in table and "20.0 %, 37.5 %, 45.5 %" in table


def test_unconditional_samples_draw_one_candidate(tmp_path, monkeypatch):
    """The model's clip is the best of --candidates; the unconditional baseline never sees the prompt,
    so it is not ranked by it either: one candidate."""
    from musiclm.cli import main

    bundle = make_bundle(tmp_path / "bundle", save_parts(tmp_path / "parts", components()), name="tiny-eval")
    calls = []
    generate = MusicLM.generate

    def recording(self, prompts, *args, **kwargs):
        calls.append((kwargs["unconditional"], kwargs["candidates"]))
        return generate(self, prompts, *args, **kwargs)

    monkeypatch.setattr(MusicLM, "generate", recording)
    out = tmp_path / "report"
    args = ["eval", "--model", str(bundle), "--prompts", str(_benchmark(tmp_path)), "--out", str(out),
            "--seconds", "3", "--device", "cpu", "--batch-size", "2", "--limit", "2", "--candidates", "3"]  # fmt: skip
    assert main(args) == 0
    assert calls == [(False, 3), (True, 1)]
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"] == 3 and "best of 3 candidates" in (out / "report.md").read_text()
