"""The JSON API of ``musiclm serve`` (FastAPI): submit a job, poll it, download its audio, cancel it.

Every request body is checked completely before a job is queued; a bad one gets a 4xx whose body is
``{"error": "<one line>"}``. Audio (a melody to follow, a clip to continue) comes as
``multipart/form-data``: the same fields as the JSON body, plus the file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from musiclm.config import TARGET_LUFS
from musiclm.errors import MusicLMError
from musiclm.serve.jobs import Job, JobQueue, QueueFull, load_upload
from musiclm.serve.jobs import Request as JobRequest


class Sampling(BaseModel):
    """What every mode shares."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(10.0, description="seconds to generate (continue: seconds to add)")
    candidates: int = Field(2, description="samples drawn; the best by MuLaN score is returned")
    seed: int = 0
    guidance: float | Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(
        None,
        description="classifier-free guidance scale of the semantic and coarse stages, or two: semantic, "
        "coarse (1 = off; default: the model's)",
    )
    temperatures: Annotated[list[float], Field(min_length=3, max_length=3)] | None = Field(
        None, description="semantic, coarse, fine (default: the model's)"
    )
    top_k: int | None = None
    top_p: float | None = None
    normalize: bool = Field(True, description="loudness-normalise the output (peaks kept below -1 dBFS)")
    loudness: float = Field(
        TARGET_LUFS,
        description="target integrated loudness in LUFS of a prompt that names no dynamics; a bundle that "
        "reads loudness from the prompt puts a quiet or loud one below or above it",
    )


BPM_HELP = "tempo in beats a minute, 30-300 (default: the one the prompt names, e.g. '80 bpm'; read by bundles whose LMs were trained with beat phases)"


class GenerateBody(Sampling):
    prompt: str
    bpm: float | None = Field(None, description=BPM_HELP)


class ContinueBody(Sampling):
    prompt: str | None = Field(None, description="text to steer by (default: the clip's own MuLaN tokens)")
    bpm: float | None = Field(
        None,
        description=BPM_HELP.replace(
            "the one the prompt names", "the one the prompt names, else the clip's own"
        ),
    )


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    seconds: float


class StoryBody(Sampling):
    segments: list[Segment]


def _one_line(e: ValidationError | RequestValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
    return f"{where}: {err.get('msg', 'invalid')}"


def _form_value(key: str, value: str):
    """Form fields are text: lists (temperatures, segments; guidance may be one) come as JSON or
    comma-separated."""
    if key == "guidance" and "," not in value and not value.strip().startswith("["):
        return value
    if key in ("temperatures", "guidance"):
        value = value.strip()
        return json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v.strip()]
    if key == "segments":
        return json.loads(value)
    if value == "" and key in ("prompt", "top_k", "top_p"):
        return None
    return value


def _schema(body: type[BaseModel], upload: str | None) -> dict:
    """OpenAPI request body: JSON, and multipart with the audio file where the mode takes one."""
    schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    content = {"application/json": {"schema": schema}}
    if upload:
        props = {**schema["properties"], upload: {"type": "string", "format": "binary"}}
        content["multipart/form-data"] = {"schema": {**schema, "properties": props}}
    return {"requestBody": {"required": True, "content": content}}


def create_app(queue: JobQueue, *, title: str = "MusicLM") -> FastAPI:
    """The API over ``queue`` (which owns the model); mount the web app on it with :func:`ui.mount`."""
    model, limits = queue.model, queue.limits
    app = FastAPI(
        title=title, description="Text-to-music generation with MusicLM. Jobs run one batch at a time."
    )
    max_bytes = int(limits.max_upload_mb * 2**20)

    @app.exception_handler(MusicLMError)
    async def _user_error(request, e: MusicLMError):
        status = 429 if isinstance(e, QueueFull) else 400
        return JSONResponse({"error": str(e)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        return JSONResponse({"error": _one_line(e)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request, e: HTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    async def read_body(request: Request, body: type[BaseModel], upload: str | None):
        """The checked body and the path of the uploaded file (or None)."""
        ctype = request.headers.get("content-type", "")
        length = int(request.headers.get("content-length") or 0)
        if length > max_bytes + 2**16:
            raise HTTPException(
                413, f"request of {length / 2**20:.1f} MB; the upload limit is {limits.max_upload_mb:g} MB"
            )
        path = None
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form(max_files=1, max_fields=32)
            data = {}
            for key, value in form.multi_items():
                if isinstance(value, str):
                    data[key] = _form_value(key, value)
                elif key != upload:
                    raise HTTPException(
                        400, f"unexpected file field {key!r}" + (f" (use {upload!r})" if upload else "")
                    )
                else:
                    content = await value.read(max_bytes + 1)
                    if len(content) > max_bytes:
                        raise HTTPException(
                            413, f"{upload}: larger than the upload limit of {limits.max_upload_mb:g} MB"
                        )
                    suffix = Path(value.filename or "upload.wav").suffix[:8] or ".wav"
                    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False, dir=queue.folder) as f:
                        f.write(content)
                    path = Path(f.name)
        elif ctype.startswith("application/json") or not ctype:
            try:
                data = await request.json()
            except ValueError:
                raise HTTPException(400, "the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise HTTPException(400, "the body must be a JSON object")
        else:
            raise HTTPException(
                415, f"unsupported content type {ctype!r}: send JSON or a form (multipart for files)"
            )
        try:
            return body.model_validate(data), path
        except ValidationError as e:
            if path:
                path.unlink(missing_ok=True)
            raise HTTPException(422, _one_line(e)) from None

    def submit(body: Sampling, mode: str, **extra) -> dict:
        request = JobRequest(
            mode=mode,
            seconds=body.seconds,
            candidates=body.candidates,
            seed=body.seed,
            guidance=tuple(body.guidance) if isinstance(body.guidance, list) else body.guidance,
            temperatures=tuple(body.temperatures) if body.temperatures else None,
            top_k=body.top_k,
            top_p=body.top_p,
            loudness=body.loudness if body.normalize else None,
            **extra,
        )
        job = queue.submit(request)
        return job_json(job, queue)

    def upload_wave(path: Path | None, rate: int, what: str):
        if path is None:
            return None
        try:
            return load_upload(path, rate, limits, what=what)
        finally:
            path.unlink(missing_ok=True)

    @app.post("/v1/generate", status_code=202, openapi_extra=_schema(GenerateBody, "melody"))
    async def generate(request: Request) -> dict:
        """Text to music; a ``melody`` file (multipart) makes it follow that tune."""
        body, path = await read_body(request, GenerateBody, "melody")
        if path is not None and not model.has_melody:
            path.unlink(missing_ok=True)
            raise MusicLMError(f"{model.name} has no melody conditioning (its LMs were trained without it)")
        melody = upload_wave(path, model.melody.sample_rate if path else 0, "melody")
        return submit(body, "generate", prompt=body.prompt, bpm=body.bpm, melody=melody)

    @app.post("/v1/continue", status_code=202, openapi_extra=_schema(ContinueBody, "audio"))
    async def continue_(request: Request) -> dict:
        """Continue an ``audio`` clip (multipart) by ``seconds``; the result includes the clip."""
        body, path = await read_body(request, ContinueBody, "audio")
        if path is None:
            raise MusicLMError(
                "continue needs an audio file: send multipart/form-data with a file field 'audio'"
            )
        audio = upload_wave(path, model.sample_rate, "audio")
        return submit(body, "continue", prompt=body.prompt, bpm=body.bpm, audio=audio)

    @app.post("/v1/story", status_code=202, openapi_extra=_schema(StoryBody, None))
    async def story(request: Request) -> dict:
        """Story mode: one piece whose prompt changes at each segment."""
        body, _ = await read_body(request, StoryBody, None)
        segments = tuple((s.prompt, s.seconds) for s in body.segments)
        return submit(body, "story", segments=segments)

    def find(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (unknown, or its results expired)")
        return job

    @app.get("/v1/jobs/{job_id}")
    def job_state(job_id: str) -> dict:
        """State, stage, progress (0..1), queue position, error; the result once done."""
        return job_json(find(job_id), queue)

    @app.delete("/v1/jobs/{job_id}")
    def cancel(job_id: str) -> dict:
        """Cancel a waiting or running job (a finished one is left as it is)."""
        find(job_id)
        return job_json(queue.cancel(job_id), queue)

    def result_file(job_id: str, name: str, media_type: str) -> FileResponse:
        job = find(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
        path = job.files().get(name)
        if path is None or not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {name}")
        return FileResponse(path, media_type=media_type, filename=f"musiclm-{job_id}-{path.name}")

    @app.get("/v1/jobs/{job_id}/audio", response_class=FileResponse)
    def audio(job_id: str, candidate: int | None = None):
        """The WAV of a finished job (``?candidate=K``: any candidate, not only the chosen one)."""
        return result_file(job_id, "audio" if candidate is None else f"candidate-{candidate}", "audio/wav")

    @app.get("/v1/jobs/{job_id}/spectrogram", response_class=FileResponse)
    def spectrogram(job_id: str):
        """The mel spectrogram (PNG) of a finished job's audio."""
        return result_file(job_id, "spectrogram", "image/png")

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok", "model": model.name, **queue.stats()}

    @app.get("/v1/model")
    def model_info() -> dict:
        """The model and the limits every request is checked against."""
        return {
            "name": model.name,
            "sample_rate": model.sample_rate,
            "device": str(model.device),
            "melody": model.has_melody,
            "modes": ["generate", "continue", "story"],
            "limits": {k: v for k, v in vars(limits).items()},
        }

    return app


def job_json(job: Job, queue: JobQueue) -> dict:
    """What the API says about a job."""
    out = {
        "id": job.id,
        "mode": job.request.mode,
        "state": job.state,
        "position": queue.position(job),
        "stage": job.stage,
        "stage_progress": round(job.stage_done / job.stage_total, 4) if job.stage_total else 0.0,
        "progress": round(job.progress, 4),
        "error": job.error,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "batch": job.batch,
        "parameters": job.request.parameters(),
    }
    if job.state == "done" and job.result is not None:
        base = f"/v1/jobs/{job.id}"
        out["result"] = {
            **job.result,
            "audio_url": f"{base}/audio",
            "spectrogram_url": f"{base}/spectrogram",
            "candidate_urls": [f"{base}/audio?candidate={k}" for k in range(len(job.result["scores"]))],
        }
    return out
