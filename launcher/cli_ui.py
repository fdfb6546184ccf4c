"""``launch``: the search page, the global hotkey and the live watcher."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from .ui import add_launch_arguments

    p = sub.add_parser(
        "launch",
        parents=[common],
        help="serve the search page on 127.0.0.1 and register the global hotkey",
        description="Serve the search page (127.0.0.1 only unless --host) with a global "
        "hotkey to bring it up; keeps the index current while it runs. If it is already "
        "running, bring it to the front.",
    )
    add_launch_arguments(p)
    p.add_argument("--no-watch", action="store_true", help="don't watch the roots for changes")
    p.set_defaults(func=cmd_launch)


def cmd_launch(args: argparse.Namespace) -> int:
    from .app import App
    from .service import LocalService
    from .ui import run_launch

    app = App.create(
        model=args.model, mmproj=args.mmproj, reranker=args.reranker, threads=args.threads,
        gpu=args.gpu, verbose=args.verbose, engine=args.engine,
    )  # fmt: skip
    if app.engine is None:
        app.model_path  # noqa: B018 - fail now, with its message, if there is no model
    try:
        return run_launch(lambda: LocalService(app, watch=not args.no_watch, warm=True), args)
    finally:
        app.close()
