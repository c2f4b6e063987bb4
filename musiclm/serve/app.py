"""The server's ASGI app: the API with the web app mounted on it, over one job queue."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from musiclm.serve.api import create_app
from musiclm.serve.jobs import JobQueue
from musiclm.serve.limits import Limits


def build_app(model, limits: Limits, folder: str | Path, *, ui: bool = True) -> tuple[FastAPI, JobQueue]:
    """``(app, queue)`` for ``model``; results go under ``folder``. Close the queue when done."""
    queue = JobQueue(model, limits, folder)
    app = create_app(queue, title=f"MusicLM ({model.name})")
    if ui:
        from musiclm.serve.ui import mount

        app = mount(app, queue)
    return app, queue
