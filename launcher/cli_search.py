"""``search``: the same ranked search the UI runs, from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .cli import positive_int, score
from .errors import LauncherError
from .query import KINDS, Query
from .walk import plural


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "search",
        parents=[common],
        help="search the index by meaning (and exact text)",
        description="Search the index. Results go to stdout, everything else to stderr.",
    )
    p.add_argument(
        "query", nargs="?", default="", help="what to look for (may be empty with --image)"
    )
    p.add_argument("--image", metavar="PATH", help="search with an image")
    p.add_argument("--instruction", help="query instruction (default: a retrieval instruction)")
    p.add_argument("--top", type=positive_int, default=10, help="number of results (default 10)")
    p.add_argument(
        "--kind", action="append", default=[], choices=KINDS, help="only this kind (repeatable)"
    )
    p.add_argument("--in", dest="folder", metavar="DIR", help="only files under DIR")
    p.add_argument("--after", metavar="DATE", help="modified on or after DATE (YYYY-MM-DD)")
    p.add_argument("--before", metavar="DATE", help="modified before DATE (YYYY-MM-DD)")
    p.add_argument(
        "--min-score", type=score, default=0.0, help="drop results below this score (-1 to 1)"
    )
    p.add_argument(
        "--rerank", action="store_true", help="re-score the top results with the reranker"
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help='print {"results": [...]}')
    out.add_argument("--paths-only", action="store_true", help="print one path per line")
    p.add_argument(
        "-0",
        "--null",
        action="store_true",
        help="print paths only, each ended by a NUL byte (for xargs -0): exact paths",
    )
    p.set_defaults(func=cmd_search)


def path_line(path: str) -> str:
    """A path as one line: a path holding a line break is written with ``\\n``/``\\r``
    (and ``\\\\`` for a backslash), so each line is one whole result (``--null`` is exact)."""
    if "\n" not in path and "\r" not in path:
        return path
    return path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _date(value: str | None, flag: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise LauncherError(f"{flag}: not a date: {value!r} (use YYYY-MM-DD)") from None


def cmd_search(args: argparse.Namespace) -> int:
    from .app import App
    from .search import Searcher
    from .store import default_dir, index_exists

    if not args.query.strip() and not args.image:
        raise LauncherError("give a query, or --image PATH")
    if not index_exists():
        raise LauncherError(
            f"there is no index yet (it will live in {default_dir()}): make one with "
            "`launcher.py index FOLDER`, e.g. `launcher.py index ~/Documents`"
        )
    image = Path(args.image) if args.image else None
    if image is not None and not image.is_file():
        raise LauncherError(f"--image: no such file: {image}")
    query = Query(
        text=args.query,
        image=image,
        instruction=args.instruction,
        kinds=frozenset(args.kind),
        folder=Path(args.folder) if args.folder else None,
        modified_after=_date(args.after, "--after"),
        modified_before=_date(args.before, "--before"),
        min_score=args.min_score,
        top=args.top,
        rerank=args.rerank,
    )
    with App.create(
        model=args.model, mmproj=args.mmproj, reranker=args.reranker, threads=args.threads,
        gpu=args.gpu, verbose=args.verbose, engine=args.engine,
    ) as app:  # fmt: skip
        store = app.open_store(writable=False)
        text = app.open_text(store)
        try:
            searcher = Searcher(
                store.snapshot, app.embedder, reranker=app.reranker, settings=app.settings,
                text=lambda: text,
            )  # fmt: skip
            started = time.monotonic()
            hits = searcher.search(query)
            method = None
            if args.rerank:
                if searcher.can_rerank:
                    hits = searcher.rerank(query, hits)
                    method = app.reranker().method
                else:
                    print("launcher: note: no reranker available; showing embedding order",
                          file=sys.stderr)  # fmt: skip
            elapsed = time.monotonic() - started
        finally:
            if text is not None:
                text.close()
            store.close()
    if args.json:
        results = [_hit_json(h) for h in hits]
        payload: dict[str, Any] = {"results": results, "seconds": round(elapsed, 3)}
        if method:
            payload["rerank"] = method
        json.dump(payload, sys.stdout)
        sys.stdout.write("\n")
    elif args.paths_only or args.null:
        for h in hits:
            if args.null:
                sys.stdout.write(h.path + "\0")
            else:
                print(path_line(h.path))
    else:
        if not hits:
            print("no results", file=sys.stderr)
        for h in hits:
            where = f" (page {h.page})" if h.page else (
                f" (lines {h.line_start}-{h.line_end})" if h.line_start else "")  # fmt: skip
            badge = " [exact]" if h.exact else ""
            if h.rerank_error:
                badge += f" [not reranked: {h.rerank_error}]"
            score = h.rerank_score if h.rerank_score is not None else h.score
            print(f"{score:.3f}  {h.path}{where}{badge}")
            if h.snippet:
                print(f"       {h.snippet[:160]}")
        print(f"{plural(len(hits), 'result')} in {elapsed:.2f} s", file=sys.stderr)
    return 0


def _hit_json(h: Any) -> dict[str, Any]:
    out = {
        "path": h.path,
        "score": round(float(h.score), 6),
        "kind": h.kind,
        "snippet": h.snippet,
        "name": h.name,
        "exact": h.exact,
        "mtime": h.mtime,
        "size": h.size,
    }
    if h.page is not None:
        out["page"] = h.page
    if h.line_start is not None:
        out["lines"] = [h.line_start, h.line_end]
    if h.rerank_score is not None:
        out["rerank_score"] = round(float(h.rerank_score), 6)
    if h.rerank_error:
        out["rerank_error"] = h.rerank_error  # the reranker failed on it: left unscored
    if h.queued:
        out["queued"] = True  # found by name; content not indexed yet
    if h.matched:  # the fused ranking (LAUNCHER_README, "How results are ranked")
        out["relevance"] = round(float(h.relevance), 6)
        out["matched"] = h.matched
    if h.marks:
        out["marks"] = [list(m) for m in h.marks]  # spans of "snippet" matching the words
    return out
