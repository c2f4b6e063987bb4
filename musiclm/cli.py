"""The ``musiclm`` command.

Each component contributes its sub-commands from a ``commands`` module exposing
``register(subparsers, train_subparsers)``; this file only assembles them and turns every
:class:`~musiclm.errors.MusicLMError` into a one-line message and exit status 1.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from musiclm.errors import MusicLMError

COMMAND_MODULES: list[str] = [
    "musiclm.codec.commands",
    "musiclm.melody.commands",
    "musiclm.data.commands",
    "musiclm.lm.commands",
    "musiclm.semantic.commands",
    "musiclm.mulan.commands",
    "musiclm.pipeline_commands",
    "musiclm.adapter_commands",
    "musiclm.recipe",
    "musiclm.eval_commands",
    "musiclm.serve.commands",
    "musiclm.train.commands",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("musiclm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musiclm", description="MusicLM: text-to-music generation")
    parser.add_argument("--version", action="version", version=f"musiclm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a component").add_subparsers(
        dest="component", required=True, metavar="COMPONENT"
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, train)
    return parser


# what the machine, not the command, can get wrong while writing: one line, as for bad input (every
# output is written through a temporary name, so nothing half-written is left under its own name)
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MusicLMError as e:
        print(f"musiclm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("musiclm: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in DISK_ERRORS:  # anything else is a bug: keep its traceback
            raise
        print(f"musiclm: error: {e.strerror}: {e.filename or 'writing output'}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
