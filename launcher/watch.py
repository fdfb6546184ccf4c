"""Keep the index current while ``launch`` runs: a watchdog observer on the roots.

Events are collected into a set of paths and handed over in batches once the tree has been
quiet for ``debounce`` seconds (or ``max_delay`` at the latest), so a burst of saves, a git
checkout or an unzip becomes one update. When the OS runs out of watches (inotify's
``ENOSPC``) the watcher falls back to polling and says so.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import LauncherError
from .walk import plural

log = logging.getLogger("launcher")

POLL_INTERVAL = 30.0  # seconds between scans when the OS has no file watches left


class Watcher:
    """Watches ``roots`` and calls ``on_changes(paths)`` with debounced batches."""

    def __init__(
        self,
        roots: Sequence[str],
        on_changes: Callable[[list[str]], None],
        *,
        debounce: float = 1.0,
        max_delay: float = 10.0,
        poll_interval: float | None = None,
        ignore: Callable[[str], bool] | None = None,
    ) -> None:
        self.roots = list(roots)
        self.on_changes = on_changes
        self.debounce = debounce
        self.max_delay = max_delay
        self.poll_interval = POLL_INTERVAL if poll_interval is None else poll_interval
        self.ignore = ignore or (lambda p: False)
        self.message = ""
        self.polling = False
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
        while not self._stop.is_set():
            self._wake.wait(timeout=self.debounce)
            self._wake.clear()
            with self._lock:
                if not self._pending:
                    continue
                now = time.monotonic()
                quiet = now - self._last >= self.debounce
                overdue = now - self._first >= self.max_delay
                if not (quiet or overdue):
                    continue
                batch = list(self._pending)
                self._pending.clear()
            try:
                self.on_changes(batch)
            except (LauncherError, OSError) as err:
                # e.g. the disk is full at commit: keep the paths and try again later
                log.warning("updating the index failed (%s); will retry", err)
                with self._lock:
                    for path in batch:
                        self._pending.setdefault(path, None)
                    self._first = self._last = time.monotonic()
                self._stop.wait(self.max_delay)
            except BaseException:
                self.message = "stopped watching after an internal error (see the log)"
                raise

    def flush(self) -> None:
        """Hand over pending changes now (tests, shutdown)."""
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        if batch:
            self.on_changes(batch)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
