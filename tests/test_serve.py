"""``musiclm serve``'s API over a tiny bundle: jobs run, download, cancel, queue limits, bad input."""

import io
import threading
import time

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from musiclm.bundle import make_bundle  # noqa: E402
from musiclm.pipeline import MusicLM  # noqa: E402
from musiclm.serve.app import build_app  # noqa: E402
from musiclm.serve.limits import Limits  # noqa: E402
from tests._tiny_bundle import PROMPTS, SR, components, save_parts  # noqa: E402

LIMITS = dict(
    max_seconds=4.0, max_candidates=2, max_queue=3, max_batch=4, max_upload_mb=1.0, max_upload_seconds=5.0
)


def _parts() -> dict:
    """The tiny bundle's components, with codec codebooks that are not all zero (distinct codes then
    decode to distinct audio)."""
    parts = components()
    for level in parts["codec"].quantizer.levels:
        level.codebook.normal_()
    return parts


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return MusicLM.from_pretrained(
        make_bundle(root / "bundle", save_parts(root, _parts()), name="tiny-serve")
    )


@pytest.fixture
def server(model, tmp_path):
    """A client of an API-only app and its queue, closed after the test."""
    app, queue = build_app(model, Limits(**LIMITS), tmp_path / "results", ui=False)
    with TestClient(app) as client:
        yield client, queue
    queue.close()


class Gate:
    """Holds the worker at the start of sampling until opened: a running job stays running."""

    def __init__(self, model, monkeypatch):
        self.entered, self.open = threading.Event(), threading.Event()
        original = model.sample_tokens

        def held(*args, **kwargs):
            self.entered.set()
            assert self.open.wait(30)
            # the first progress report is where a cancelled batch stops
            kwargs["progress"]("semantic", 0, 1)
            return original(*args, **kwargs)

        monkeypatch.setattr(model, "sample_tokens", held)


def _wait(client, job_id, timeout=60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _wav_bytes(seconds: float, sr: int = SR, freq: float = 330.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * freq * t), sr, format="WAV")
    return buf.getvalue()


def test_generate_poll_download(server):
    client, _ = server
    r = client.post("/v1/generate", json={"prompt": PROMPTS[0], "seconds": 1.5, "candidates": 2, "seed": 3})
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done" and job["progress"] == 1.0 and job["error"] is None
    result = job["result"]
    assert result["sample_rate"] == SR and len(result["scores"]) == 2
    assert result["chosen"] == int(np.argmax(result["scores"]))
    wav, sr = sf.read(io.BytesIO(client.get(result["audio_url"]).content))
    assert sr == SR and wav.shape == (round(1.5 * SR),)
    # loudness-normalised to -23 LUFS (measured here independently), peaks below -1 dBFS
    assert abs(pyloudnorm.Meter(sr).integrated_loudness(wav) - result["loudness_lufs"]) < 0.1
    assert result["loudness_lufs"] <= -23.0 + 1e-3 and np.abs(wav).max() <= 10 ** (-1 / 20) + 1e-3
    for url in result["candidate_urls"]:
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    png = client.get(result["spectrogram_url"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_request_same_audio_and_normalize_off(server):
    client, _ = server
    body = {"prompt": PROMPTS[1], "seconds": 1.0, "candidates": 1, "seed": 5}
    a, b = (_wait(client, client.post("/v1/generate", json=body).json()["id"]) for _ in range(2))
    raw = _wait(client, client.post("/v1/generate", json={**body, "normalize": False}).json()["id"])
    wa, wb, wr = (sf.read(io.BytesIO(client.get(j["result"]["audio_url"]).content))[0] for j in (a, b, raw))
    np.testing.assert_array_equal(wa, wb)
    assert raw["result"]["loudness_lufs"] is None and not np.allclose(wa, wr, atol=1e-3)
    # guidance per stage (semantic, coarse), as JSON and as form fields; one scale is both stages'
    pair = _wait(client, client.post("/v1/generate", json={**body, "guidance": [2, 1.5]}).json()["id"])
    assert pair["parameters"]["guidance"] == {"semantic": 2.0, "coarse": 1.5}
    one = _wait(client, client.post("/v1/generate", data={**body, "guidance": "2"}).json()["id"])
    assert one["parameters"]["guidance"] == {"semantic": 2.0, "coarse": 2.0}


def test_continue_and_story(server):
    client, _ = server
    r = client.post(
        "/v1/continue",
        data={"seconds": "1", "candidates": "1", "prompt": PROMPTS[2]},
        files={"audio": ("clip.wav", _wav_bytes(1.5), "audio/wav")},
    )
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done" and job["mode"] == "continue"
    # none given: the test bundle's own defaults, recorded
    assert job["parameters"]["guidance"] == {"semantic": 1.0, "coarse": 1.0}
    wav, _ = sf.read(io.BytesIO(client.get(job["result"]["audio_url"]).content))
    assert abs(len(wav) / SR - 2.5) < 0.1  # the clip, re-synthesised, then one more second
    r = client.post(
        "/v1/story",
        json={"segments": [{"prompt": PROMPTS[0], "seconds": 1}, {"prompt": PROMPTS[1], "seconds": 1}]},
    )
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done" and job["result"]["segment_starts"] == [0.0, 1.0]


def test_a_tempo_reaches_the_model_and_the_record(server, model, monkeypatch):
    """``bpm`` (generate, continue) is passed to the model as the CLI's ``--bpm`` is, recorded in the
    job, and part of the batch key (two tempi never share a batch); story mode refuses one."""
    client, _ = server
    seen, original = [], model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("bpm"))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    body = {"prompt": PROMPTS[0], "seconds": 1.0, "candidates": 1}
    job = _wait(client, client.post("/v1/generate", json={**body, "bpm": 96}).json()["id"])
    assert job["state"] == "done" and job["parameters"]["bpm"] == 96.0 and seen == [96.0]
    form = _wait(client, client.post("/v1/generate", data={**body, "bpm": "120"}).json()["id"])
    assert form["parameters"]["bpm"] == 120.0 and seen[-1] == 120.0
    from musiclm.serve.jobs import Request

    assert Request("generate", "a", bpm=90.0).batch_key() != Request("generate", "a", bpm=120.0).batch_key()
    story = {"segments": [{"prompt": PROMPTS[0], "seconds": 1}], "bpm": 90}
    r = client.post("/v1/story", json=story)
    assert r.status_code == 422 and "bpm" in r.json()["error"]


def test_melody_upload(server):
    client, _ = server
    files = {"melody": ("tune.wav", _wav_bytes(2.0, freq=440), "audio/wav")}
    r = client.post(
        "/v1/generate", data={"prompt": PROMPTS[0], "seconds": "1", "candidates": "1"}, files=files
    )
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done" and job["parameters"]["melody"] is True


def test_cancel_queue_full_and_batching(server, model, monkeypatch):
    client, queue = server
    gate = Gate(model, monkeypatch)
    body = {"prompt": PROMPTS[0], "seconds": 1.0, "candidates": 1}
    running = client.post("/v1/generate", json={**body, "seed": 1}).json()
    assert gate.entered.wait(30)
    assert client.get(f"/v1/jobs/{running['id']}").json()["state"] == "running"
    waiting = [client.post("/v1/generate", json={**body, "prompt": p}).json() for p in PROMPTS[:3]]
    assert [client.get(f"/v1/jobs/{j['id']}").json()["position"] for j in waiting] == [1, 2, 3]
    full = client.post("/v1/generate", json=body)
    assert full.status_code == 429 and "queue is full" in full.json()["error"]
    # a waiting job is cancelled at once and leaves the queue; a running one at its next token
    assert client.delete(f"/v1/jobs/{waiting[0]['id']}").json()["state"] == "cancelled"
    assert client.get(f"/v1/jobs/{waiting[2]['id']}").json()["position"] == 2
    assert client.delete(f"/v1/jobs/{running['id']}").status_code == 200
    gate.open.set()
    assert _wait(client, running["id"])["state"] == "cancelled"
    r = client.get(f"/v1/jobs/{running['id']}/audio")
    assert r.status_code == 409 and "cancelled" in r.json()["error"]
    # the two left were sampled together, each with its own prompt
    done = [_wait(client, j["id"]) for j in waiting[1:]]
    assert [j["state"] for j in done] == ["done", "done"] and [j["batch"] for j in done] == [2, 2]
    a, b = (sf.read(io.BytesIO(client.get(j["result"]["audio_url"]).content))[0] for j in done)
    assert not np.allclose(a, b)
    assert queue.stats() == {"queued": 0, "running": 0, "jobs": 4}  # the refused one never was a job


def test_concurrent_submissions_all_complete(server):
    client, _ = server
    ids, errors = [], []

    def submit(i):
        r = client.post(
            "/v1/generate", json={"prompt": PROMPTS[i % 4], "seconds": 0.5, "candidates": 1, "seed": i}
        )
        (ids if r.status_code == 202 else errors).append(r.json().get("id") or r.text)

    for round_ in range(2):  # the queue holds 3: two rounds of three submitted at once
        threads = [threading.Thread(target=submit, args=(3 * round_ + i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for job_id in ids[-3:]:
            _wait(client, job_id)
    assert not errors and len(set(ids)) == 6
    for job_id in ids:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "done"
        assert client.get(f"/v1/jobs/{job_id}/audio").status_code == 200


BAD_JSON = [
    ({"prompt": ""}, 400, "prompt 0 is empty"),
    ({"prompt": "x" * 400}, 400, "limit is 300"),
    ({"prompt": "piano", "seconds": 0}, 400, "seconds must be a positive number"),
    ({"prompt": "piano", "seconds": 5}, 400, "this server's limit is 4 s"),
    ({"prompt": "piano", "seconds": "long"}, 422, "seconds: Input should be a valid number"),
    ({"prompt": "piano", "candidates": 3}, 400, "candidates = 3; this server's limit is 2"),
    ({"prompt": "piano", "candidates": 0}, 400, "candidates must be a positive integer"),
    ({"prompt": "piano", "seed": -1}, 400, "seed must be an integer"),
    ({"prompt": "piano", "temperatures": [1, 1]}, 422, "temperatures: List should have at least 3 items"),
    ({"prompt": "piano", "temperatures": [1, -1, 1]}, 400, "coarse temperature must be > 0"),
    ({"prompt": "piano", "top_p": 2}, 400, "top_p must lie in (0, 1]"),
    ({"prompt": "piano", "guidance": -1}, 400, "guidance must be a finite number"),
    ({"prompt": "piano", "guidance": [3, -1]}, 400, "guidance must be a finite number"),
    ({"prompt": "piano", "guidance": [3, 2, 1]}, 422, "guidance"),
    ({"prompt": "piano", "loudness": 5}, 400, "loudness must be a number of LUFS"),
    ({"prompt": "piano", "voice": "x"}, 422, "voice: Extra inputs are not permitted"),
    ({"prompt": "piano", "bpm": 1000}, 400, "a tempo of 1000 bpm is outside 30-300"),
    ({}, 422, "prompt: Field required"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_JSON)
def test_bad_generate_request(server, body, status, message):
    client, queue = server
    r = client.post("/v1/generate", json={"seconds": 1, **body})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert "\n" not in r.json()["error"] and queue.stats()["jobs"] == 0  # refused before queueing


def test_bad_requests_of_every_kind(server):
    client, queue = server

    def error(r, status):
        assert r.status_code == status, r.text
        return r.json()["error"]

    assert "not valid JSON" in error(
        client.post("/v1/generate", content=b"{", headers={"content-type": "application/json"}), 400
    )
    assert "unsupported content type" in error(
        client.post("/v1/generate", content=b"x", headers={"content-type": "text/plain"}), 415
    )
    assert "needs an audio file" in error(client.post("/v1/continue", data={"seconds": "1"}), 400)
    bad = {"audio": ("notes.wav", b"not audio at all", "audio/wav")}
    message = error(client.post("/v1/continue", data={"seconds": "1"}, files=bad), 400)
    assert (
        message.startswith("audio: cannot read audio")
        and "/tmp" not in message
        and str(queue.folder) not in message
    )
    long = {"audio": ("long.wav", _wav_bytes(6.0, sr=8000), "audio/wav")}
    assert "longer than the limit of 5.0 s" in error(client.post("/v1/continue", files=long), 400)
    big = {"audio": ("big.wav", _wav_bytes(40.0), "audio/wav")}
    assert "the upload limit is 1 MB" in error(client.post("/v1/continue", files=big), 413)
    other = {"song": ("a.wav", _wav_bytes(1.0), "audio/wav")}
    assert "unexpected file field 'song'" in error(
        client.post("/v1/generate", data={"prompt": "x"}, files=other), 400
    )
    assert "at least one segment" in error(client.post("/v1/story", json={"segments": []}), 400)
    segments = [{"prompt": "a", "seconds": 1}] * 9
    assert "9 segments" in error(client.post("/v1/story", json={"segments": segments}), 400)
    segments = [{"prompt": "a", "seconds": 3}, {"prompt": "b", "seconds": 3}]
    assert "6 s of audio asked for" in error(client.post("/v1/story", json={"segments": segments}), 400)
    assert "no job 'nope'" in error(client.get("/v1/jobs/nope"), 404)
    assert "no job" in error(client.get("/v1/jobs/nope/audio"), 404)
    assert "no job" in error(client.delete("/v1/jobs/nope"), 404)
    assert queue.stats()["jobs"] == 0 and not list(queue.folder.glob("*.wav"))  # no upload left behind


def test_health_model_and_openapi(server):
    client, _ = server
    assert client.get("/v1/health").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["name"] == "tiny-serve" and info["sample_rate"] == SR and info["melody"] is True
    assert info["limits"]["max_seconds"] == 4.0 and info["limits"]["max_candidates"] == 2
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/generate"]["post"]["requestBody"]["content"]
    assert "prompt" in body["application/json"]["schema"]["properties"]
    assert body["multipart/form-data"]["schema"]["properties"]["melody"]["format"] == "binary"
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/audio", "/v1/story", "/v1/continue"} <= set(spec["paths"])


def test_results_are_bounded(model, tmp_path):
    app, queue = build_app(model, Limits(**{**LIMITS, "keep_jobs": 2}), tmp_path / "results", ui=False)
    with TestClient(app) as client:
        ids = [
            client.post(
                "/v1/generate", json={"prompt": "piano", "seconds": 0.5, "candidates": 1, "seed": i}
            ).json()["id"]
            for i in range(3)
        ]
        for job_id in ids:
            _wait(client, job_id)
        client.post("/v1/generate", json={"prompt": "piano", "seconds": 0.5, "candidates": 1})
        assert client.get(f"/v1/jobs/{ids[0]}").status_code == 404  # the oldest is forgotten ...
        assert not (queue.folder / ids[0]).exists()  # ... and its files deleted
        assert client.get(f"/v1/jobs/{ids[2]}/audio").status_code == 200
    queue.close()


def test_generation_failure_is_a_failed_job(server, model, monkeypatch):
    client, _ = server

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "sample_tokens", broken)
    job = _wait(client, client.post("/v1/generate", json={"prompt": "piano", "seconds": 1}).json()["id"])
    assert job["state"] == "failed" and job["error"] == "internal error: RuntimeError: out of memory"
    monkeypatch.undo()
    assert (
        _wait(client, client.post("/v1/generate", json={"prompt": "piano", "seconds": 1}).json()["id"])[
            "state"
        ]
        == "done"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must be in 1..65535"),
        (["--max-seconds", "0"], "--max-seconds must be a positive finite number"),
        (["--max-seconds", "1000"], "beyond the model's limit"),
        (["--device", "cuda:7"], "device 'cuda:7'"),
        (["--device", "cpu", "--cuda-graphs"], "--cuda-graphs needs a CUDA device; this server runs on cpu"),
        (["--model", "/no/such/bundle"], "no/such/bundle"),
    ],
)
def test_serve_command_bad_input(args, message, tmp_path, monkeypatch, capsys):
    import tempfile

    import uvicorn

    from musiclm.cli import main

    def started(*_, **__):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", started)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["serve", "--port", "7999", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # no results folder left behind


def test_cli_output_is_loudness_normalised(model, tmp_path):
    from musiclm.cli import main

    bundle = tmp_path / "b"
    make_bundle(bundle, save_parts(tmp_path, _parts()), name="tiny-cli")
    for flag, name in ((["--loudness", "-30"], "norm.wav"), (["--no-normalize"], "raw.wav")):
        assert (
            main(
                [
                    "generate",
                    "piano",
                    "--model",
                    str(bundle),
                    "--seconds",
                    "1",
                    "--candidates",
                    "1",
                    "--no-progress",
                    "-o",
                    str(tmp_path / name),
                    *flag,
                ]
            )
            == 0
        )
    norm, sr = sf.read(tmp_path / "norm.wav")
    raw, _ = sf.read(tmp_path / "raw.wav")
    meter = pyloudnorm.Meter(sr)
    assert (
        abs(meter.integrated_loudness(norm) - (-30.0)) < 0.2 or np.abs(norm).max() > 0.88
    )  # target, or peak-limited
    assert np.abs(norm).max() <= 10 ** (-1 / 20) + 1e-3
    assert abs(meter.integrated_loudness(raw) - meter.integrated_loudness(norm)) > 1.0
    assert torch.tensor(np.corrcoef(norm, raw)[0, 1]) > 0.999  # the same audio, scaled
