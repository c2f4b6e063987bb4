"""The web app of ``musiclm serve`` (Gradio), mounted on the API's FastAPI app.

It submits to the same :class:`~musiclm.serve.jobs.JobQueue` as the API, so browser users and API
clients share one queue, one model and one set of limits; the page polls the job and shows its
queue position, the stage and a progress bar until the result arrives.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a server

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from musiclm.config import TARGET_LUFS  # noqa: E402
from musiclm.errors import MusicLMError  # noqa: E402
from musiclm.serve.jobs import FINISHED, STEPS, JobQueue, Request, load_upload  # noqa: E402

EXAMPLES = [
    "a calm lo-fi hip hop beat with soft piano at 80 bpm",
    "an energetic techno track with a driving kick drum",
    "a slow sad waltz played on a solo violin",
    "upbeat acoustic guitar folk song",
    "epic orchestral film score with brass and timpani",
]
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page works offline


def _describe(job, queue: JobQueue) -> str:
    if job is None:
        return "The job's results expired."
    if job.state == "queued":
        return f"Waiting in the queue: position **{queue.position(job)}**"
    if job.state == "running":
        step = (
            f"{job.stage} ({STEPS.index(job.stage) + 1}/{len(STEPS)})" if job.stage in STEPS else "starting"
        )
        batch = f", sampled with {job.batch - 1} other request(s)" if job.batch > 1 else ""
        return f"Running: {step}, {job.progress:.0%} done{batch}"
    if job.state == "done":
        r = job.result
        total = r["timings"].get("total", 0.0)
        return (
            f"Done: {r['seconds']:g} s of audio in {total:.1f} s, MuLaN score {r['scores'][r['chosen']]:.3f}"
        )
    return f"**{job.state.capitalize()}**" + (f": {job.error}" if job.error else "")


def build(queue: JobQueue) -> gr.Blocks:
    """The Blocks of the app: Generate / Continue / Story tabs, shared settings, the result."""
    model, limits = queue.model, queue.limits
    # delete_cache bounds the copies Gradio serves the results from, as the queue bounds its own
    keep = int(limits.keep_minutes * 60)
    with gr.Blocks(title=f"MusicLM - {model.name}", analytics_enabled=False, delete_cache=(600, keep)) as app:
        gr.Markdown(
            f"# MusicLM\nText to music with **{model.name}** ({model.sample_rate} Hz). "
            f"Up to {limits.max_seconds:g} s and {limits.max_candidates} candidates a request; "
            "the candidates are ranked by their MuLaN similarity to the prompt."
        )
        with gr.Tabs():
            with gr.Tab("Generate"):
                prompt = gr.Textbox(
                    label="Prompt", lines=2, max_length=limits.max_prompt_chars, elem_id="prompt"
                )
                gr.Examples(EXAMPLES, inputs=prompt, label="Example prompts")
                melody = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Melody to follow (optional)",
                    visible=model.has_melody,
                )  # fmt: skip
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Tab("Continue"):
                clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip to continue")
                clip_prompt = gr.Textbox(label="Prompt (optional: default, the clip's own style)", lines=1)
                continue_button = gr.Button("Continue this clip", variant="primary", elem_id="continue")
            with gr.Tab("Story"):
                story_rows = gr.Dataframe(
                    value=[["a calm piano intro", 5.0], ["energetic drums come in", 5.0]],
                    headers=["prompt", "seconds"],
                    datatype=["str", "number"],
                    type="array",
                    label=f"Segments (up to {limits.max_segments}; add rows as you need)",
                )
                story_button = gr.Button("Generate story", variant="primary", elem_id="story")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                seconds = gr.Slider(
                    1, limits.max_seconds, value=min(10.0, limits.max_seconds), step=0.5, label="Seconds"
                )
                candidates = gr.Slider(
                    1, limits.max_candidates, value=min(2, limits.max_candidates), step=1, label="Candidates"
                )
                seed = gr.Number(0, precision=0, minimum=0, label="Seed")
            with gr.Row():
                guidance = [
                    gr.Slider(0, 10, value=g, step=0.5, label=f"{name} guidance (1 = off)")
                    for name, g in zip(("Semantic", "Coarse"), model.guidance_scales())
                ]
                temps = [
                    gr.Slider(0.05, 2.0, value=s.config.lm.temperature, step=0.05, label=f"{n} temperature")
                    for n, s in (
                        ("Semantic", model.semantic_lm),
                        ("Coarse", model.coarse_lm),
                        ("Fine", model.fine_lm),
                    )
                ]
            with gr.Row():
                top_k = gr.Number(0, precision=0, minimum=0, label="Top-k (0 = off)")
                bpm = gr.Number(
                    0,
                    minimum=0,
                    maximum=300,
                    label="Tempo in bpm (0: the one the prompt names; continue: else the clip's; story: each prompt's)",
                )
                normalize = gr.Checkbox(True, label=f"Normalise loudness to {TARGET_LUFS:g} LUFS")
        with gr.Row():
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
        status = gr.Markdown(elem_id="status")
        result = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="result")
        spectrogram = gr.Image(
            label="Mel spectrogram", type="filepath", interactive=False, elem_id="spectrogram"
        )
        with gr.Accordion("Every candidate", open=False):
            candidate_players = [
                gr.Audio(label=f"candidate {k}", type="filepath", interactive=False, visible=False)
                for k in range(limits.max_candidates)
            ]
        details = gr.JSON(label="Parameters and timings")
        job_id = gr.State(None)
        outputs = [job_id, status, result, spectrogram, details, *candidate_players]
        settings = [seconds, candidates, seed, *guidance, *temps, top_k, bpm, normalize]

        def request(mode: str, settings_values, **extra) -> Request:
            secs, n, sd, g1, g2, t1, t2, t3, k, tempo, norm = settings_values
            return Request(
                mode=mode, seconds=float(secs), candidates=int(n), seed=int(sd or 0),
                guidance=(float(g1), float(g2)),
                temperatures=(float(t1), float(t2), float(t3)), top_k=int(k) if k else None,
                bpm=float(tempo) if tempo and mode != "story" else None,
                loudness=TARGET_LUFS if norm else None, **extra,
            )  # fmt: skip

        def follow(make_request, progress):
            """Submit, then report until the job is finished; a generator Gradio streams."""
            try:
                job = queue.submit(make_request())
            except MusicLMError as e:
                raise gr.Error(str(e), print_exception=False) from None
            cleared = {result: None, spectrogram: None, details: None}
            yield {job_id: job.id, status: _describe(job, queue), **cleared}
            while job is not None and job.state not in FINISHED:
                job = queue.wait(job.id, timeout=0.3)
                if job is not None:
                    progress(job.progress, desc=_describe(job, queue))
                yield {status: _describe(job, queue)}
            if job is None or job.state != "done":
                return
            files, r = job.files(), job.result
            players = {
                player: gr.update(
                    value=str(files[f"candidate-{k}"]) if k < len(r["scores"]) else None,
                    visible=k < len(r["scores"]),
                    label=f"candidate {k}: MuLaN {r['scores'][k]:.3f}" + (" (chosen)" if k == r["chosen"] else "")
                    if k < len(r["scores"]) else f"candidate {k}",
                )
                for k, player in enumerate(candidate_players)
            }  # fmt: skip
            info = {"id": job.id, "mode": job.request.mode, "parameters": job.request.parameters(), **r}
            yield {
                status: _describe(job, queue),
                result: str(files["audio"]),
                spectrogram: str(files["spectrogram"]),
                details: info,
                **players,
            }

        def run_generate(text, melody_path, *values, progress=gr.Progress()):
            def make():
                wave = None
                if melody_path:
                    wave = load_upload(melody_path, model.melody.sample_rate, limits, what="melody")
                return request("generate", values, prompt=text, melody=wave)

            yield from follow(make, progress)

        def run_continue(clip_path, text, *values, progress=gr.Progress()):
            def make():
                if not clip_path:
                    raise MusicLMError("upload or record a clip to continue")
                wave = load_upload(clip_path, model.sample_rate, limits, what="clip")
                return request("continue", values, prompt=text.strip() or None, audio=wave)

            yield from follow(make, progress)

        def run_story(rows, *values, progress=gr.Progress()):
            def make():
                segments = []
                for i, row in enumerate(rows or []):
                    text, secs = (list(row) + ["", ""])[:2]
                    if not str(text).strip() and secs in ("", None):
                        continue
                    try:
                        segments.append((str(text), float(secs)))
                    except (TypeError, ValueError):
                        raise MusicLMError(f"segment {i}: {secs!r} is not a number of seconds") from None
                return request("story", values, segments=tuple(segments))

            yield from follow(make, progress)

        events = [
            generate_button.click(run_generate, [prompt, melody, *settings], outputs, concurrency_limit=None),
            prompt.submit(run_generate, [prompt, melody, *settings], outputs, concurrency_limit=None),
            continue_button.click(
                run_continue, [clip, clip_prompt, *settings], outputs, concurrency_limit=None
            ),
            story_button.click(run_story, [story_rows, *settings], outputs, concurrency_limit=None),
        ]

        def cancel(jid):
            job = queue.cancel(jid) if jid else None
            return "**Cancelled**" if job is not None and job.state in ("cancelled", "running") else gr.skip()

        cancel_button.click(cancel, [job_id], [status], cancels=events, queue=False)
    return app


def mount(api: FastAPI, queue: JobQueue, path: str = "/") -> FastAPI:
    """Mount the web app at ``path`` of the API's app (the API routes keep precedence)."""
    theme = gr.themes.Soft(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    blocks = build(queue).queue(max_size=None)
    return gr.mount_gradio_app(
        api, blocks, path=path, allowed_paths=[str(queue.folder)], theme=theme, footer_links=["api"],
        max_file_size=int(queue.limits.max_upload_mb * 2**20),
    )  # fmt: skip
