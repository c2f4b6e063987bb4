"""``musiclm serve``: one process, one model, a job queue, a JSON API and a web app on one port.

:mod:`jobs` (the queue; torch, no web framework), :mod:`api` (FastAPI), :mod:`ui` (Gradio),
:mod:`app` (the two together), :mod:`commands` (the CLI).
"""
