"""``musiclm serve``: the API and the web app for one model on one port."""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile

from musiclm import checks
from musiclm.errors import ConfigError
from musiclm.lm.commands import add_decoding_arguments


def register(sub, train) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a model: web app and HTTP API",
        description="One process, one loaded model: the web app at / and the JSON API at /v1 "
        "(its OpenAPI page at /docs). Requests wait in one bounded queue.",
    )
    s.add_argument("--model", default="default", help="bundle directory or shipped bundle name")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--device", default=None, help="cpu, cuda, ... (default: GPU if there is one)")
    add_decoding_arguments(s)
    s.add_argument("--results", default=None, help="folder for results (default: a temporary one)")
    s.add_argument("--no-ui", action="store_true", help="the API alone, without the web app")
    from musiclm.serve.limits import HELP, Limits

    for name, value in vars(Limits()).items():
        kind = float if name == "max_memory_gb" else type(value)
        flag, metavar = "--" + name.replace("_", "-"), name.split("_")[-1].upper()
        s.add_argument(
            flag, type=kind, default=value, metavar=metavar, help=f"{HELP[name]} (default {value})"
        )
    s.set_defaults(func=_serve)


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def _serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from musiclm.serve.app import build_app
    except ImportError as e:
        raise ConfigError(
            f"musiclm serve needs the serve extras ({e.name} is missing): pip install 'musiclm[serve]'"
        ) from None
    from musiclm.pipeline import MusicLM
    from musiclm.serve.limits import Limits

    limits = Limits(**{k: getattr(args, k) for k in vars(Limits())})
    checks.cuda_graphs(args.cuda_graphs, checks.device(args.device), "server")
    _check_port(args.host, args.port)
    folder = checks.writable_dir(args.results) if args.results else tempfile.mkdtemp(prefix="musiclm-serve-")
    try:
        model = MusicLM.from_pretrained(args.model, device=args.device)
        model.cuda_graphs, model.compile_decoding = args.cuda_graphs, args.compile
        app, queue = build_app(model, limits, folder, ui=not args.no_ui)
        print(
            f"musiclm serve: {model.name} at http://{args.host}:{args.port}/ (API: /v1, docs: /docs)",
            flush=True,
        )
        try:
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        finally:
            queue.close()
    finally:  # a bad model or limit leaves no results folder behind either
        if not args.results:
            shutil.rmtree(folder, ignore_errors=True)
