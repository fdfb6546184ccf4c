"""``index``, ``info``, ``remove``, ``clear``: build and inspect the index."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .errors import IndexBusy, LauncherError, StoreError
from .walk import human_size


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "index",
        parents=[common],
        help="add folders (or files) to the index and index them",
        description="Add folders or files to the indexed roots and bring the index up to date. "
        "Without PATH, re-index the roots already added.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="folders or files to add")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--rebuild", action="store_true", help="start over (after a model change)")
    p.add_argument("--retry-failed", action="store_true", help="retry files that failed before")
    p.set_defaults(func=cmd_index)

    i = sub.add_parser("info", parents=[common], help="show what is indexed")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("remove", parents=[common], help="drop an indexed root and its files")
    r.add_argument("path", metavar="PATH", help="a root given to `index` before")
    r.set_defaults(func=cmd_remove)

    c = sub.add_parser("clear", parents=[common], help="delete the whole index")
    c.add_argument("--yes", action="store_true", help="do not ask")
    c.set_defaults(func=cmd_clear)


def _app(args: argparse.Namespace) -> Any:
    from .app import App

    return App.create(
        model=args.model, mmproj=args.mmproj, threads=args.threads, verbose=args.verbose
    )


class TerminalProgress:
    """One self-rewriting line on stderr when it is a terminal; silent otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream = stream or sys.stderr
        self.enabled = stream.isatty()
        self._last = 0.0
        self._width = shutil.get_terminal_size((100, 20)).columns

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if p.phase not in ("done",) and now - self._last < 0.1:
            return
        self._last = now
        if p.phase == "scan":
            line = f"scanning… {p.done} files to index"
        elif p.phase == "queued":
            line = f"{p.done} new files findable by name; embedding…"
        elif p.phase == "done":
            self.stream.write("\r\033[K")
            self.stream.flush()
            return
        else:
            eta = _duration(p.eta_s) if p.eta_s is not None else "–"
            bar = _bar(p.done, p.total, 20)
            # slow files (long documents on a CPU) read better as seconds per file
            fps = p.files_per_s
            rate = f"{1 / fps:.0f} s/file" if 0 < fps < 0.1 else f"{fps:.1f} files/s"
            line = (
                f"{p.phase:6} {bar} {p.done}/{p.total}  {rate}  "
                f"{p.tokens_per_s:.0f} tok/s  ETA {eta}  {os.path.basename(p.path)}"
            )
        self.stream.write("\r\033[K" + line[: self._width - 1])
        self.stream.flush()


def _bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02}:{s:02}" if h else f"{m}:{s:02}"


def _lock_waiter() -> Callable[[IndexBusy], bool]:
    """How CLI writers meet a held lock: they wait for a running ``launch`` (it holds the
    lock only while it applies a change) and give up on another ``index`` run."""
    told = False

    def wait(busy: IndexBusy) -> bool:
        nonlocal told
        if busy.role != "launch":
            return False
        if not told:
            print(f"launcher: the running launch (pid {busy.pid}) is updating the index; "
                  "waiting for it…", file=sys.stderr)  # fmt: skip
            told = True
        return True

    return wait


def cmd_index(args: argparse.Namespace) -> int:
    with _app(args) as app:
        if args.rebuild:
            app.check_model()  # a broken model fails here, before the index is touched
        store = app.open_store(rebuild=args.rebuild, wait=_lock_waiter())
        try:
            if store.recovered:
                print(f"launcher: warning: {store.recovered}", file=sys.stderr)
            if store.staged:
                again = " (resuming the interrupted one)" if store.resumed else ""
                print(f"launcher: building the new index beside the old one{again}; the old "
                      "one stays in use until it is done", file=sys.stderr)  # fmt: skip
            added = [os.path.abspath(os.path.expanduser(p)) for p in args.paths]
            for path in added:
                if not os.path.exists(path):
                    raise LauncherError(f"no such file or folder: {path}")
            roots = list(dict.fromkeys([*store.roots, *added]))
            if not roots:
                raise LauncherError("nothing to index yet: give a folder, e.g. `index ~/Documents`")
            cancel = threading.Event()
            indexer = app.indexer(store, on_progress=TerminalProgress(), cancel=cancel)
            try:
                report = indexer.run(roots, retry_failed=args.retry_failed)
            except KeyboardInterrupt:
                cancel.set()
                store.commit()  # keep what was done: the next run resumes from here
                if store.staged:
                    print("launcher: interrupted; the old index is unchanged and still in "
                          "use; run `index --rebuild` again to resume the rebuild",
                          file=sys.stderr)  # fmt: skip
                else:
                    print("launcher: interrupted; run `index` again to resume", file=sys.stderr)
                return 130
            finally:
                indexer.close()
        finally:
            store.close()
    if args.json:
        json.dump(report.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_summary(report)
    return 0


def _print_summary(report: Any) -> None:
    out = sys.stderr
    print(
        f"{report.files} files: {report.added} added, {report.updated} updated, "
        f"{report.removed} removed, {report.unchanged} unchanged, {report.failed} failed "
        f"({report.reused} reused by content) in {_duration(report.seconds)}",
        file=out,
    )
    for path, reason in report.errors[:20]:
        print(f"  failed: {path}: {reason}", file=out)
    if len(report.errors) > 20:
        print(f"  … and {len(report.errors) - 20} more (see `launcher.py info`)", file=out)
    for path, reason in report.skipped[:10]:
        print(f"  skipped: {path}: {reason}", file=out)
    if len(report.skipped) > 10:
        print(f"  … and {len(report.skipped) - 10} more skipped", file=out)


def _open_existing(args: argparse.Namespace, *, writable: bool) -> Any:
    """The index as it is on disk, whatever model built it (None if there is none)."""
    from .store import MANIFEST, MANIFEST_PREV, Store, default_dir

    folder = default_dir()
    if not (folder / MANIFEST).exists() and not (folder / MANIFEST_PREV).exists():
        return None
    wait = _lock_waiter() if writable else None
    return Store.open(folder, identity=None, dims=None, writable=writable, wait=wait)


def cmd_info(args: argparse.Namespace) -> int:
    from .store import default_dir

    store = _open_existing(args, writable=False)
    if store is None:
        data: dict[str, Any] = {
            "index": str(default_dir()), "exists": False, "roots": [], "files": 0,
            "vectors": 0, "errors": [],
        }  # fmt: skip
    else:
        with store:
            data = _info(store)
    if args.json:
        json.dump(data, sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not data["exists"]:
        print(f"No index yet (it will live in {data['index']}). Run `launcher.py index FOLDER`.")
        return 0
    print(f"Index: {data['index']} ({human_size(data['bytes'])})")
    where = data["model_files"].get("model") or data["model"].get("model_file")
    print(f"Model: {where} ({data['dims']} dims)")
    print("Roots:")
    for root in data["roots"]:
        print(f"  {root}")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(data["kinds"].items())) or "none read yet"
    print(f"Files: {data['files']} ({kinds}); vectors: {data['vectors']}; "
          f"pending chunks: {data['pending']}; failed: {len(data['errors'])}")  # fmt: skip
    if data["queued"]:
        print(f"Queued: {data['queued']} files found but not embedded yet (findable by name; "
              "run `index` again to finish)")  # fmt: skip
    if data["last_run"]:
        run = data["last_run"]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["finished_ns"] / 1e9))
        if run.get("interrupted"):
            print(f"Last run: {when}, interrupted after {run['indexed']} indexed, "
                  f"{run['failed']} failed; run `launcher.py index` again to finish")  # fmt: skip
        else:
            print(f"Last run: {when}, {run['indexed']} indexed, {run['unchanged']} unchanged, "
                  f"{run['removed']} removed, {run['failed']} failed")  # fmt: skip
    if data.get("rebuild_pending"):
        print("A rebuild was interrupted: run `launcher.py index --rebuild` to finish it (the "
              "index above stays in use until then)")  # fmt: skip
    for err in data["errors"][:50]:
        print(f"  failed: {err['path']}: {err['reason']}")
    if len(data["errors"]) > 50:
        print(f"  … and {len(data['errors']) - 50} more (--json lists all)")
    return 0


def _info(store: Any) -> dict[str, Any]:
    import dataclasses

    from .store import REBUILD, read_models

    snap = store.snapshot()
    kinds: dict[str, int] = {}
    vectors_by_kind: dict[str, int] = {}
    errors = []
    pending = 0
    queued = 0
    for rec in snap.files:
        if rec.status == "queued":  # not read yet: its kind is not known
            queued += 1
            continue
        kind = rec.kind or "unknown"
        kinds[kind] = kinds.get(kind, 0) + 1
        vectors_by_kind[kind] = vectors_by_kind.get(kind, 0) + len(rec.rows)
        if rec.status == "failed":
            errors.append({"path": rec.path, "reason": rec.reason or "unknown"})
        elif rec.status == "pending_chunks":
            pending += 1
    size = sum(f.stat().st_size for f in store.directory.iterdir() if f.is_file())
    return {
        "index": str(store.directory),
        "exists": True,
        "generation": snap.generation,
        "roots": list(snap.roots),
        "files": len(snap.files),
        "vectors": len(snap),
        "kinds": kinds,
        "vectors_by_kind": vectors_by_kind,
        "pending": pending,
        "queued": queued,
        "errors": sorted(errors, key=lambda e: e["path"]),
        "model": dict(snap.identity),
        "dims": snap.dims,
        "bytes": size,
        "last_run": dataclasses.asdict(snap.stats) if snap.stats else None,
        "model_files": {
            k: v
            for k, v in (read_models(store.directory) or {}).items()
            if k in ("model", "mmproj")
        },
        "rebuild_pending": (store.directory / REBUILD).exists(),
    }


def cmd_remove(args: argparse.Namespace) -> int:
    target = os.path.abspath(os.path.expanduser(args.path))
    store = _open_existing(args, writable=True)
    if store is None:
        raise StoreError("there is no index yet")
    with store:
        if target not in store.roots:
            roots = ", ".join(store.roots) or "none"
            raise LauncherError(f"{target} is not an indexed root (roots: {roots})")
        store.set_roots([r for r in store.roots if r != target])
        prefix = target.rstrip(os.sep) + os.sep
        others = tuple(r.rstrip(os.sep) + os.sep for r in store.roots)
        gone = 0
        for rec in list(store.files()):
            inside = rec.path == target or rec.path.startswith(prefix)
            kept = any(rec.path.startswith(o) or rec.path == o[:-1] for o in others)
            if inside and not kept:
                store.remove(rec.path)
                gone += 1
        store.commit()
    print(f"removed {target} and {gone} files from the index", file=sys.stderr)
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    from .store import default_dir

    folder = default_dir()
    if not folder.exists():
        print("there is no index", file=sys.stderr)
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise LauncherError("refusing to clear without --yes (no terminal to ask)")
        answer = input(f"Delete the index in {folder}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("kept the index", file=sys.stderr)
            return 1
    # Deleted under the lock (not while indexing; a running launch finishes its update
    # first and then finds no index, rather than half of one).
    store = _open_existing(args, writable=True)
    try:
        shutil.rmtree(folder)
    finally:
        if store is not None:
            store.close()
    print(f"deleted {folder}", file=sys.stderr)
    return 0
