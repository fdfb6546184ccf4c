"""Command line: a thin layer that parses flags, calls the library, prints results.

Library errors (``LauncherError``) become one line on stderr and exit code 1; no traceback.
Each area registers its subcommands through a ``register(sub, common)`` function.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from .errors import LauncherError


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (``--top 0`` or ``-1`` is an error, not 'none')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def score(text: str) -> float:
    """argparse type: a finite score between -1 and 1 (cosine; the reranker gives 0 to 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between -1 and 1, got {text}")
    return value


def gpu_setting(text: str) -> Any:
    """argparse type: ``auto``, ``off`` or a number of layers to put on the GPU."""
    from .config import parse_gpu
    from .errors import ConfigError

    try:
        return parse_gpu(text, "--gpu")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--gpu ")) from None


def common_parser() -> argparse.ArgumentParser:
    """Flags every command accepts (model selection, threads, verbosity)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("models")
    g.add_argument("--model", help="embedding model GGUF (else $LAUNCHER_MODEL, config, discovery)")
    g.add_argument(
        "--mmproj", help="vision projector GGUF (else $LAUNCHER_MMPROJ, config, discovery)"
    )
    g.add_argument("--reranker", help="reranker GGUF (else $LAUNCHER_RERANKER, config, discovery)")
    g.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads (default: physical cores)"
    )
    g.add_argument(
        "--gpu", type=gpu_setting, default=None, metavar="auto|off|N",
        help="GPU offload: auto (all layers when llama.cpp was built with a GPU backend), off, "
        "or N layers (else $LAUNCHER_GPU, config gpu, auto)",
    )  # fmt: skip
    g.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log output")
    g.add_argument(
        "--engine",
        metavar="URL",
        help="embed on this llama-server or vLLM server (else $LAUNCHER_ENGINE, [engine] url; "
        "'local': this machine). Sends file text and pictures there",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    from . import cli_engine, cli_index, cli_models, cli_search, cli_ui

    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="launcher",
        description="Private semantic search over your files (Qwen3-VL on the CPU).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (cli_index, cli_search, cli_ui, cli_models, cli_engine):
        module.register(sub, common)
    return parser


LOG_FILE = "launcher.log"


def _setup_logging(verbose: bool) -> None:
    """Library warnings (e.g. truncated input) as one line each on stderr; everything from
    INFO up, tracebacks included, in ``<log dir>/launcher.log`` (one rotated copy kept)."""
    import logging
    import logging.handlers

    from . import paths

    class _Stderr(logging.Handler):
        """One line per record on whatever ``sys.stderr`` is now (tests swap it)."""

        def emit(self, record: logging.LogRecord) -> None:
            # on a terminal, start from a clean line (a progress bar may be drawn there)
            clear = "\r\033[K" if sys.stderr.isatty() else ""
            level = record.levelname.lower()
            sys.stderr.write(f"{clear}launcher: {level}: {record.getMessage()}\n")

    class _File(logging.handlers.RotatingFileHandler):
        """The log file, with tracebacks: where "see the log" points. Its folder is made
        at the first record, so a command that logs nothing writes nothing."""

        def _open(self) -> Any:
            os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
            return super()._open()

        def handleError(self, record: logging.LogRecord) -> None:
            pass  # an unwritable log (disk full) must not spill tracebacks on stderr

    logger = logging.getLogger("launcher")
    for handler in [h for h in logger.handlers if type(h).__name__ in ("_Stderr", "_File")]:
        logger.removeHandler(handler)  # main() runs again in tests, with another home
        handler.close()
    stderr = _Stderr()
    stderr.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.addHandler(stderr)
    to_file = _File(paths.log_dir() / LOG_FILE, maxBytes=5_000_000, backupCount=1, delay=True)
    to_file.setLevel(logging.DEBUG if verbose else logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s: %(message)s"))
    logger.addHandler(to_file)
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    # Paths that are not valid UTF-8 are printed as their original bytes, never a crash.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    try:
        return int(args.func(args) or 0)
    except LauncherError as err:
        print(f"launcher: error: {err}", file=sys.stderr)
        for line in err.details:
            print(f"  {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("launcher: interrupted", file=sys.stderr)
        return 130
