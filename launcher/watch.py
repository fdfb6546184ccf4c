"""Keep the index current while ``launch`` runs: a watchdog observer on the roots.

Events are collected into a set of paths and handed over in batches once the tree has been
quiet for ``debounce`` seconds (or ``max_delay`` at the latest), so a burst of saves, a git
checkout or an unzip becomes one update. The paths waiting are bounded (``MAX_PENDING``):
past it, the deepest ones give way to their folders, each rescanned once, so a burst of a
million files costs a few folders' worth of memory. When the OS runs out of watches
(inotify's ``ENOSPC``) the watcher falls back to polling and says so.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import LauncherError
from .walk import plural

log = logging.getLogger("launcher")

POLL_INTERVAL = 30.0  # seconds between scans when the OS has no file watches left
GIVE_UP = 3  # failed batches before a path is retried alone; it is dropped if it fails again
MAX_BACKOFF = 300.0  # seconds: the longest wait before retrying a failed batch
MAX_PENDING = 20_000  # paths waiting for a batch; past it they are folded into folders


class Watcher:
    """Watches ``roots`` and calls ``on_changes(paths)`` with debounced batches; it may
    return paths whose work it left for later, which come back with the next batch. A path
    whose batches keep failing is handed to ``on_give_up(path, reason)`` and dropped."""

    def __init__(
        self,
        roots: Sequence[str],
        on_changes: Callable[[list[str]], Sequence[str] | None],
        *,
        debounce: float = 1.0,
        max_delay: float = 10.0,
        poll_interval: float | None = None,
        ignore: Callable[[str], bool] | None = None,
        on_give_up: Callable[[str, str], None] | None = None,
    ) -> None:
        self.roots = list(roots)
        self.on_changes = on_changes
        self.debounce = debounce
        self.max_delay = max_delay
        self.poll_interval = POLL_INTERVAL if poll_interval is None else poll_interval
        self.ignore = ignore or (lambda p: False)
        self.on_give_up = on_give_up  # (path, reason): a path that keeps failing
        self.message = ""
        self.problem = ""  # the last failure while it is being retried
        self.polling = False
        self._failures: dict[str, int] = {}
        self._errors = 0
        self._retry_at = 0.0
        self._pending: dict[str, None] = {}
        self._first = 0.0
        self._last = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread: threading.Thread | None = None

    # -- events -----------------------------------------------------------------------

    def _event(self, event: Any) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        now = time.monotonic()
        with self._lock:
            for raw in paths:
                if not raw:
                    continue
                path = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
                if self.ignore(path):
                    continue
                if not self._pending:
                    self._first = now
                self._pending[path] = None
                self._last = now
            self._bound()
        self._wake.set()

    def _handler(self) -> Any:
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return  # reads are not changes
                if event.is_directory and event.event_type in ("modified", "closed"):
                    return  # a folder's listing changed: its files' own events say how
                watcher._event(event)

        return Handler()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> str:
        """Start watching; returns a one-line status (also kept in ``message``)."""
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        handler = self._handler()
        try:
            observer = Observer()
            for root in self.roots:
                observer.schedule(handler, root, recursive=True)
            observer.start()
            self.message = f"watching {plural(len(self.roots), 'folder')} for changes"
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EMFILE, errno.ENFILE):
                raise
            # Out of inotify watches (big trees): poll instead, and say so.
            observer = PollingObserver(timeout=self.poll_interval)
            for root in self.roots:
                observer.schedule(handler, root, recursive=True)
            observer.start()
            self.polling = True
            self.message = (
                f"the system ran out of file watches ({err.strerror}); checking for changes "
                f"every {self.poll_interval:.0f} s instead (raise fs.inotify.max_user_watches "
                "for instant updates)"
            )
            log.warning("%s", self.message)
        self._observer = observer
        self._thread = threading.Thread(target=self._loop, name="watch-batches", daemon=True)
        self._thread.start()
        return self.message

    def _loop(self) -> None:
        """Hand over batches until stopped. Never dies: a failed batch is logged, kept and
        retried with a growing delay; after ``GIVE_UP`` failures its paths are retried one
        at a time, and a path that still fails goes to ``on_give_up`` and leaves the queue."""
        while not self._stop.is_set():
            self._wake.wait(timeout=self.debounce)
            self._wake.clear()
            with self._lock:
                if not self._pending:
                    continue
                now = time.monotonic()
                if now < self._retry_at:
                    continue
                quiet = now - self._last >= self.debounce
                overdue = now - self._first >= self.max_delay
                if not (quiet or overdue):
                    continue
                paths = list(self._pending)
                self._pending.clear()
            # Paths that failed GIVE_UP times go alone, so one bad file holds up no other.
            suspects = [p for p in paths if self._failures.get(p, 0) >= GIVE_UP]
            rest = [p for p in paths if self._failures.get(p, 0) < GIVE_UP]
            for batch in ([rest] if rest else []) + [[p] for p in suspects]:
                if self._stop.is_set():
                    self._keep(batch)
                    continue
                self._hand_over(batch)

    def _hand_over(self, batch: list[str]) -> None:
        try:
            later = self.on_changes(batch)
        except Exception as err:
            reason = (
                f"{type(err).__name__}: {err}" if not isinstance(err, LauncherError) else str(err)
            )
            log.warning("updating the index failed (%s); will retry", reason, exc_info=err)
            tries = self._failures.get(batch[0], 0) + 1
            if len(batch) == 1 and tries > GIVE_UP and self._give_up(batch[0], reason):
                return
            for path in batch:
                self._failures[path] = self._failures.get(path, 0) + 1
            self._errors += 1
            delay = min(self.max_delay * 2 ** (self._errors - 1), MAX_BACKOFF)
            self.problem = f"updating the index failed ({reason}); retrying in {delay:.0f} s"
            with self._lock:
                self._retry_at = time.monotonic() + delay
            self._keep(batch)
        else:
            for path in batch:
                self._failures.pop(path, None)
            self._errors = 0
            self.problem = ""
            if later:
                self._later(later)

    def _keep(self, batch: list[str]) -> None:
        with self._lock:
            for path in batch:
                self._pending.setdefault(path, None)
            if batch:
                self._first = self._last = time.monotonic()
        self._wake.set()

    def _later(self, paths: Sequence[str]) -> None:
        """Work a batch left for later goes out with the next batch, after a quiet moment
        (``debounce``: the index's lock is free meanwhile, for a CLI command's turn)."""
        now = time.monotonic()
        with self._lock:
            if not self._pending:
                self._first = now
            for path in paths:
                self._pending.setdefault(path, None)
            self._last = now
            self._bound()
        self._wake.set()

    def _bound(self) -> None:
        """(Under the lock.) Past ``MAX_PENDING`` waiting paths, fold them into folders."""
        if len(self._pending) > MAX_PENDING:
            self._pending = fold_into_folders(self._pending, self.roots, MAX_PENDING // 2)

    def _give_up(self, path: str, reason: str) -> bool:
        """Drop ``path`` once ``on_give_up`` has recorded it. If recording fails too, the
        trouble is not this file (a full disk, say): keep it and go on retrying."""
        if self.on_give_up is not None:
            try:
                self.on_give_up(path, reason)
            except Exception as err:
                log.warning("could not record %s as failed: %s", path, err, exc_info=err)
                return False
        log.warning("gave up on %s after %d tries: %s", path, GIVE_UP + 1, reason)
        self._failures.pop(path, None)
        self._errors = 0
        self.problem = ""
        return True

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """True while changes are being picked up and handed over."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    @property
    def status(self) -> str:
        """One line for the page: watching, retrying after a failure, or not watching."""
        if not self.alive:
            return "not watching for changes (restart launch to resume)"
        return self.problem or self.message

    def flush(self) -> None:
        """Hand over pending changes now, and what they leave for later (tests, a watcher
        replaced)."""
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        while batch:
            batch = list(self.on_changes(batch) or [])

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)


def fold_into_folders(paths: dict[str, None], roots: Sequence[str], limit: int) -> dict[str, None]:
    """At most ``limit`` paths standing for ``paths`` (where folding allows): the deepest
    give way to their folder, which the batch rescans whole, level by level, never above
    a root."""
    tops = {os.path.normpath(r) for r in roots}

    def foldable(p: str) -> bool:
        return os.path.normpath(p) not in tops and os.path.dirname(p) != p

    while len(paths) > limit:
        depths = [p.count(os.sep) for p in paths if foldable(p)]
        if not depths:
            break  # only roots are left
        depth = max(depths)
        paths = {
            (os.path.dirname(p) if p.count(os.sep) == depth and foldable(p) else p): None
            for p in paths
        }
    return paths
