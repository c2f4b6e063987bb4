"""``musiclm eval`` on a tiny random bundle writes a complete, resumable report."""

import json

import numpy as np
import soundfile as sf
import torch

from musiclm.bundle import make_bundle
from musiclm.data.manifest import ManifestEntry, write_manifest
from musiclm.eval.kld import LabelClassifier, LabelClassifierConfig
from tests._tiny_bundle import SR, components, save_parts


def _benchmark(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(6):
        bpm = [90, 120, 150][i % 3]
        t = np.arange(3 * SR) / SR
        clicks = (np.mod(t, 60 / bpm) < 0.01) * rng.normal(0, 0.5, len(t))
        wav = 0.2 * np.sin(2 * np.pi * [220, 330][i % 2] * t) + clicks
        path = tmp_path / f"ref{i}.wav"
        sf.write(path, wav.astype(np.float32), SR)
        labels = {
            "bpm": bpm,
            "key": "A" if i % 2 == 0 else "E",
            "mode": "major",
            "genre": ["rock", "jazz"][i % 2],
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
            "--classifier", str(tmp_path / "clf"), "--device", "cpu", "--batch-size", "3"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    systems = report["systems"]
    assert set(systems) == {"model", "unconditional", "reference", "shuffled prompts"}
    for name in ("model", "unconditional", "reference"):
        assert -1 <= systems[name]["mcc"] <= 1
        assert {"tempo", "key", "mode", "genre"} <= set(systems[name]["adherence"])
    for name in ("model", "unconditional"):
        assert systems[name]["fad_mulan"] >= 0 and systems[name]["kld_genre"] >= 0
    assert systems["reference"]["adherence"]["tempo_octave"] >= 0.5  # the click tracks carry their tempo
    table = (out / "report.md").read_text()
    assert "| model |" in table and "| reference |" in table
    generated = sorted((out / "generated").glob("*.wav"))
    assert len(generated) == 6
    stamps = [p.stat().st_mtime_ns for p in generated]
    assert main(args) == 0  # resumes: nothing is generated again
    assert [p.stat().st_mtime_ns for p in generated] == stamps
