#!/usr/bin/env python3
"""The whole flow on a bundled sample: build a sample folder (notes, code, a PDF, pictures),
index it, and open the search page with the hotkey.

    python demo_launcher.py [--model M] [--mmproj P] [--no-browser] [--port N]

The demo keeps its own index (``<data dir>/demo``), so it never touches your real one.
Without a model it explains how to get one.
"""

from __future__ import annotations

import argparse
import sys

from launcher import paths
from launcher.errors import LauncherError, ModelNotFound

DEMO_PORT = 7734  # launch uses 7733


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="embedding model GGUF (default: found in models/)")
    parser.add_argument("--mmproj", help="its vision projector GGUF")
    parser.add_argument("--reranker", help="reranker GGUF (optional)")
    parser.add_argument("--no-browser", action="store_true", help="don't open a browser")
    parser.add_argument("--port", type=int, help="port for the page")
    parser.add_argument("--hotkey", default=None, help="global hotkey ('off' to disable)")
    parser.add_argument("--index-only", action="store_true", help="index the sample and stop")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ModelNotFound as err:
        print(
            f"demo: {err}\n\n"
            "The demo needs the Qwen3-VL-Embedding-2B GGUF (and its mmproj for pictures).\n"
            "Get them with:\n\n    python launcher.py models pull\n\n"
            f"or put the files in {paths.repo_models_dir()} and run the demo again.",
            file=sys.stderr,
        )
        return 1
    except LauncherError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    from launcher.app import App
    from launcher.cli_index import TerminalProgress
    from launcher.sample import build_sample

    app = App.create(model=args.model, mmproj=args.mmproj, reranker=args.reranker,
                     index_dir=paths.data_dir() / "demo" / "index")  # fmt: skip
    sample = build_sample(paths.data_dir() / "demo" / "sample")
    print(f"demo: sample folder {sample}", file=sys.stderr)
    print(f"demo: model {app.model_path.name}; indexing (the first time loads the model)…",
          file=sys.stderr)  # fmt: skip
    with app:
        store = app.open_store(rebuild=_model_changed(app))
        try:
            indexer = app.indexer(store, on_progress=TerminalProgress())
            try:
                report = indexer.run([str(sample)])
            finally:
                indexer.close()
        finally:
            store.close()
        print(
            f"demo: {report.files} files indexed ({report.added} new, {report.failed} failed) "
            f"in {report.seconds:.0f} s",
            file=sys.stderr,
        )
        if args.index_only:
            return 0
        print("demo: try 'tomato soup', 'INV-2024-0917', 'a terminal error', or drop a picture",
              file=sys.stderr)  # fmt: skip
        from launcher.service import LocalService
        from launcher.ui import DEFAULT_HOTKEY, run_launch

        launch_args = argparse.Namespace(
            port=args.port, host="127.0.0.1", no_browser=args.no_browser,
            hotkey=args.hotkey or DEFAULT_HOTKEY,
        )  # fmt: skip
        # its own port and running-instance file: a later `launch` must not find the demo
        return run_launch(
            lambda: LocalService(app, warm=True),
            launch_args,
            instance_path=paths.data_dir() / "demo" / "ui.json",
            default_port=DEMO_PORT,
        )


def _model_changed(app) -> bool:  # type: ignore[no-untyped-def]
    """The demo index follows whatever model the demo is pointed at."""
    from launcher.errors import StoreError

    try:
        app.open_store(writable=False).close()
    except StoreError:
        return True
    return False


if __name__ == "__main__":
    raise SystemExit(main())
