"""``index``, ``info``, ``remove``, ``clear``: build and inspect the index."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from .errors import IndexBusy, LauncherError, StoreError
from .fulltext import FullText, FullTextUnavailable
from .walk import human_size, plural


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
        model=args.model, mmproj=args.mmproj, threads=args.threads, gpu=args.gpu,
        verbose=args.verbose, engine=args.engine,
    )  # fmt: skip


class TerminalProgress:
    """One self-rewriting line on stderr when it is a terminal; silent otherwise.

    Between the indexer's reports a ticker redraws the line once a second with the time
    spent on the current file, so a long file or a large picture never looks frozen.
    ``close()`` (also on Ctrl+C and errors) erases the line before anything else is printed.
    """

    def __init__(self, stream: TextIO | None = None, *, tick: float = 1.0) -> None:
        self.stream = stream = stream or sys.stderr
        self.enabled = stream.isatty()
        self._last = 0.0
        self._width = shutil.get_terminal_size((100, 20)).columns
        self._tick = tick
        self._lock = threading.Lock()
        self._current: Any = None
        self._since = 0.0  # when work on the current file started
        self._shown = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        if p.phase == "done":
            self.close()
            return
        now = time.monotonic()
        with self._lock:
            cur = self._current
            if cur is None or (cur.phase, cur.path) != (p.phase, p.path):
                self._since = now
            self._current = p
            if now - self._last < 0.1:
                return
            self._draw(now)
        if self._ticker is None and p.phase in ("cards", "chunks"):
            self._ticker = threading.Thread(target=self._tick_loop, name="progress", daemon=True)
            self._ticker.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                if self._current is not None and not self._stop.is_set():
                    self._draw(time.monotonic())

    def _draw(self, now: float) -> None:
        self._last = now
        line = progress_line(self._current, now - self._since, self._width - 1)
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Stop redrawing and erase the line (the cursor is left at its start)."""
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(2)
        with self._lock:
            self._current = None
            if self._shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._shown = False


def progress_line(p: Any, elapsed: float, width: int) -> str:
    """The progress line for ``p`` (``elapsed``: seconds on its current file), at most
    ``width`` characters; the file name is shortened first."""
    if p.phase == "scan":
        head = f"scanning… {plural(p.found, 'file')} found, {p.done:,} to index"
    elif p.phase == "queued":
        return f"{plural(p.done, 'new file')} findable by name; reading their words…"[:width]
    elif p.phase == "words":  # no model yet: files, not tokens
        eta = _duration(p.eta_s) if p.eta_s is not None else "–"
        head = (
            f"words  {_bar(p.done, p.total, 20)} {p.done:,}/{plural(p.total, 'file')}  "
            f"{p.files_per_s:.0f} files/s  ETA {eta}"
        )
    else:
        eta = _duration(p.eta_s) if p.eta_s is not None else "–"
        head = (
            f"{p.phase:6} {_bar(p.done, p.total, 20)} {p.done:,}/{plural(p.total, 'file')}  "
            f"{p.tokens_per_s:.0f} tok/s  ETA {eta}"
        )
    name = os.path.basename(p.path)
    tail = ""
    if p.phase != "scan":
        if p.parts > 1:
            tail += f" (part {p.part + 1}/{p.parts})"
        if elapsed >= 2:
            tail += f" {_duration(elapsed)}"
    room = width - len(head) - 2 - len(tail)
    if name and room < len(name):
        name = "…" + name[len(name) - room + 1 :] if room > 8 else ""
    line = f"{head}  {name}{tail}" if name else head
    return line[:width]


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
    progress = TerminalProgress()
    made: list[Any] = []  # the indexer once made: its report outlives an interrupted run
    started = time.monotonic()
    try:
        report = _run_index(args, progress, made)
    except KeyboardInterrupt:
        progress.close()  # first, so no half-drawn bar is left before the message
        _print_partial(args, made, started, interrupted=True)
        print(_resume_hint(made), file=sys.stderr)
        return 130
    except Exception as err:  # still raised (one line, exit 1): `--json` readers see it too
        progress.close()
        _print_partial(args, made, started, error=err)
        raise
    finally:
        progress.close()
    if args.json:
        json.dump(report.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_summary(report)
    if report.interrupted:
        print(_resume_hint(made), file=sys.stderr)
        return 130
    return 0


def _resume_hint(made: list[Any]) -> str:
    if made and made[0].store.staged:
        return ("launcher: interrupted; the old index is unchanged and still in use; run "
                "`index --rebuild` again to resume the rebuild")  # fmt: skip
    return "launcher: interrupted; run `index` again to resume"


def _run_index(args: argparse.Namespace, progress: TerminalProgress, made: list[Any]) -> Any:
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
            indexer = app.indexer(store, on_progress=progress, cancel=cancel)
            made.append(indexer)
            try:
                with _stop_on_sigint(cancel):
                    return indexer.run(roots, retry_failed=args.retry_failed)
            except KeyboardInterrupt:  # the second Ctrl+C
                cancel.set()
                store.commit()  # keep what was done: the next run resumes from here
                raise
            finally:
                indexer.close()
        finally:
            store.close()


def _print_partial(
    args: argparse.Namespace,
    made: list[Any],
    started: float,
    *,
    interrupted: bool = False,
    error: BaseException | None = None,
) -> None:
    """``--json`` for a run cut short: the counts so far, with ``interrupted``/``error``."""
    if not args.json:
        return
    from .indexer import Report

    report = made[0].report if made and made[0].report is not None else Report()
    data = report.to_json()
    data["seconds"] = round(time.monotonic() - started, 3)
    data["interrupted"] = interrupted
    if error is not None:
        text = str(error) if isinstance(error, LauncherError) else ""
        data["error"] = text or f"{type(error).__name__}: {error}"
    json.dump(data, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _stop_on_sigint(cancel: threading.Event) -> Iterator[None]:
    """Ctrl+C asks the run to stop (it ends the file at hand, commits what is done and
    reports); a second Ctrl+C interrupts at once. A handler that only sets an event
    cannot be lost inside a llama.cpp callback, as a KeyboardInterrupt can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        from .native import request_abort

        request_abort()  # the batch in llama.cpp stops too; the run redoes it next time

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_summary(report: Any) -> None:
    out = sys.stderr
    print(
        f"{plural(report.files, 'file')}: {report.added:,} added, {report.updated:,} updated, "
        f"{report.removed:,} removed, {report.unchanged:,} unchanged, {report.failed:,} failed, "
        f"{len(report.skipped):,} skipped ({report.reused:,} reused by content) "
        f"in {_duration(report.seconds)}",
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
    from .store import Store, default_dir, index_exists

    folder = default_dir()
    if not index_exists(folder):
        return None
    wait = _lock_waiter() if writable else None
    store = Store.open(folder, identity=None, dims=None, writable=writable, wait=wait)
    if store.recovered:  # (a damaged catalog restored, an old index converted)
        print(f"launcher: warning: {store.recovered}", file=sys.stderr)
    return store


def cmd_info(args: argparse.Namespace) -> int:
    from .store import default_dir

    store = _open_existing(args, writable=False)
    if store is None:
        data: dict[str, Any] = {
            "index": str(default_dir()), "exists": False, "roots": [], "files": 0,
            "vectors": 0, "errors": [], "skipped": [],
        }  # fmt: skip
    else:
        with store:
            data = _info(store)
    data["device"] = _device(args)
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
    if data["model_files"].get("engine"):
        print(f"Engine: {data['model_files']['engine']} (last run embedded there)")
    print(f"Device: {data['device']['text']}")
    print("Roots:")
    for root in data["roots"]:
        print(f"  {root}")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(data["kinds"].items())) or "none read yet"
    print(f"Files: {data['files']:,} ({kinds}); vectors: {data['vectors']:,}; "
          f"pending chunks: {data['pending']:,}; failed: {len(data['errors']):,}")  # fmt: skip
    if data["skipped"]:
        print(f"Skipped: {plural(len(data['skipped']), 'file')} in formats that are not read "
              "(findable by name)")  # fmt: skip
    if data["queued"]:
        print(f"Queued: {plural(data['queued'], 'file')} found but not embedded yet (findable "
              "by name; run `index` again to finish)")  # fmt: skip
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


def _device(args: argparse.Namespace) -> dict[str, Any]:
    """Where the model runs for commands with these flags (``--gpu``, ``--threads``)."""
    from .config import load_config
    from .native import physical_cores, resolve_device

    device = resolve_device(args.gpu)
    threads = args.threads or load_config().threads or physical_cores()
    return {
        "kind": device.kind, "name": device.name, "layers": device.layers,
        "mmproj_gpu": device.mmproj_gpu, "why": device.why, "text": device.describe(threads),
    }  # fmt: skip


def _info(store: Any) -> dict[str, Any]:
    import dataclasses

    import numpy as np

    from .store import REBUILD, STATUSES, read_models

    snap = store.snapshot()
    cols = snap.columns()  # per-file arrays: no record is built for counting
    kinds: dict[str, int] = {}
    vectors_by_kind: dict[str, int] = {}
    queued_code = STATUSES.index("queued")
    names = [k or "unknown" for k in cols.kind_names]
    counted = cols.status_codes != queued_code  # queued: not read yet, its kind is unknown
    for code in np.unique(cols.kind_codes[counted]):
        these = counted & (cols.kind_codes == code)
        kind = names[int(code)]
        kinds[kind] = kinds.get(kind, 0) + int(np.count_nonzero(these))
        vectors_by_kind[kind] = vectors_by_kind.get(kind, 0) + int(cols.nrows[these].sum())
    queued = cols.status_count("queued")
    errors = []
    skipped = []
    pending = cols.status_count("pending_chunks")
    for path, status, reason in snap.reasons():
        if status == "failed":
            errors.append({"path": path, "reason": reason or "unknown"})
        elif status != "queued":  # indexed by name only: a format that is not read
            skipped.append({"path": path, "reason": reason})
            pending -= status == "pending_chunks"
    size = sum(f.stat().st_size for f in store.directory.iterdir() if f.is_file())
    return {
        "index": str(store.directory),
        "exists": True,
        "generation": snap.generation,
        "roots": list(snap.roots),
        "files": len(cols),
        "vectors": len(snap),
        "kinds": kinds,
        "vectors_by_kind": vectors_by_kind,
        "pending": pending,
        "queued": queued,
        "errors": sorted(errors, key=lambda e: e["path"]),
        "skipped": sorted(skipped, key=lambda e: e["path"]),
        "model": dict(snap.identity),
        "dims": snap.dims,
        "bytes": size,
        "last_run": dataclasses.asdict(snap.stats) if snap.stats else None,
        "model_files": {
            k: v
            for k, v in (read_models(store.directory) or {}).items()
            if k in ("model", "mmproj", "engine")
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
        gone = []
        for path in store.paths():
            inside = path == target or path.startswith(prefix)
            kept = any(path.startswith(o) or path == o[:-1] for o in others)
            if inside and not kept:
                store.remove(path)
                gone.append(path)
        with contextlib.suppress(FullTextUnavailable), FullText.open(store.directory) as text:
            text.remove(gone)  # before the store forgets them (see Indexer._drop_words)
        store.commit()
    print(f"removed {target} and {plural(len(gone), 'file')} from the index", file=sys.stderr)
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
