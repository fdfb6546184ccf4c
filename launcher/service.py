"""The back end ``launch`` serves: search, rerank, status, re-index, thumbnails, watching.

The index has one writer at a time, and ``launch`` is a writer only while it applies a
change: the watcher's batches and the re-index button take the index's lock for one
operation (``_writing``) and go through the same ``Indexer`` code path as
``launcher.py index``; a big batch hands its model work back in slices
(``BATCH_MEANING_SECONDS``), freeing the lock in between. Between them, CLI commands
(``index``, ``remove``, ``clear``, ``index --rebuild``) write as they please; when one
holds the lock, the batch waits for it (the page shows that run's commits as they land)
and then takes over. A follower thread notices commits made by others (a new manifest),
reloads the search snapshot, and watches the roots the index has now. Queries run on a
fork of the embedding engine (same weights, own context), so a search never waits for an
indexing batch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from .app import App
from .errors import IndexBusy, IndexMismatch, LauncherError, StoreError
from .fulltext import FullText
from .indexed import is_plain_file, open_indexed, unchanged
from .indexer import Indexer, Progress
from .query import Hit, IndexStatus, Query
from .search import Searcher
from .store import MANIFEST, REBUILD, Snapshot, Store
from .watch import Watcher

log = logging.getLogger("launcher")

FOLLOW_INTERVAL = 1.0  # seconds between checks for commits made by other processes
# Seconds of model work a watcher batch does before it hands the rest back to the watcher:
# the lock is free for a moment (a CLI command takes its turn) and files that changed
# meanwhile get their names and words before the model goes on.
BATCH_MEANING_SECONDS = 30.0


class LocalService:
    """``SearchService`` over the local index (see ``launcher.query``)."""

    def __init__(self, app: App, *, watch: bool = True, warm: bool = False) -> None:
        self.app = app
        self._write_lock = threading.Lock()  # one writer operation at a time
        self._reload_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._watched = False  # a watcher ran before (so a new one follows a gap)
        self._closing = threading.Event()
        self._indexing = threading.Event()
        self._progress: Progress | None = None
        self.message = ""  # the watcher's state, or why the model could not load
        self._notice = ""  # transient: waiting for another writer, the index was deleted
        self._watch = watch
        # Read-only between writes: the lock is taken per operation (``_writing``).
        self.store = app.open_store(writable=False)
        self._stamp = self._manifest_stamp()
        # The store of our last write, closed clean, and the stamp it left: reused for the
        # next write when nobody committed in between (no re-read of the whole index).
        self._writer: Store | None = None
        self._written: Any = None
        self._active = False  # an operation is writing: ``self.store`` is its writer
        self._query_engine: Any = None
        self._device_text: str | None = None
        self._fulltext: FullText | None = None
        self.searcher = Searcher(
            self._snapshot, self._query_embedder, reranker=app.reranker, settings=app.settings,
            text=self._text_index,
        )  # fmt: skip
        self.watcher: Watcher | None = None
        self._follower = threading.Thread(target=self._follow, name="index-follow", daemon=True)
        self.ready = threading.Event()
        if warm:
            threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
        else:
            self._start_following()
            self.ready.set()

    def _start_following(self) -> None:
        self._sync_watcher()
        self._follower.start()

    def _warm_up(self) -> None:
        """Off the request path: load the model, cache the query prompt's prefix, and start
        watching (scheduling watches on a big tree takes a while)."""
        try:
            self.message = "loading the model…"
            self.searcher.query_vector(Query(text="warm up"), self.store.dims)
            self.message = ""
        except LauncherError as err:
            self.message = f"the model could not load: {err}"
            log.warning("%s", self.message)
            self._watch = False  # batches would fail the same way
        finally:
            self._start_following()
            self.ready.set()

    # -- engine and snapshots ---------------------------------------------------------

    def _query_embedder(self) -> Any:
        """A fork of the app's engine for queries: same weights, its own context."""
        if self._query_engine is None:
            self._query_engine = self.app.embedder().fork()
        return self._query_engine

    def _manifest_stamp(self) -> tuple[tuple[int, int, int] | None, ...] | None:
        """What changes when anyone commits (manifests are replaced by a rename); None when
        there is no index."""
        stamps: list[tuple[int, int, int] | None] = []
        for name in (MANIFEST, REBUILD):
            try:
                st = (self.store.directory / name).stat()
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps) if stamps[0] is not None else None

    def _refresh(self) -> None:
        """Follow commits made by other processes: reload when the manifest changed."""
        stamp = self._manifest_stamp()
        if stamp == self._stamp:
            return
        with self._reload_lock:
            stamp = self._manifest_stamp()
            if stamp == self._stamp or self._active:
                return  # (while we write, the writer's own snapshots are the newest)
            try:
                store = self.app.open_store(writable=False)
            except IndexMismatch as err:
                # rebuilt with another model: keep showing the last snapshot
                self._stamp = stamp
                self._notice = f"the index changed and cannot be shown: {err}; restart launch"
                log.warning("%s", self._notice)
                return
            except StoreError as err:
                # (raced a writer's commit and clean-up: the next look reads it again)
                log.info("could not follow the index yet: %s", err)
                return
            old, self.store, self._stamp = self.store, store, stamp
            old.close()
            if stamp is None and not store.directory.is_dir():
                self._notice = (
                    "the index was deleted; run `launcher.py index FOLDER` to make a new one"
                )
            else:
                self._notice = ""

    def _text_index(self) -> FullText | None:
        """The full-text index, read-only: the indexer writes through its own connection.
        Opened again when its file was replaced (the index folder deleted and made anew)."""
        current = self._fulltext
        if current is not None and current.replaced():
            current.close()
            current = None
        if current is None:
            current = self._fulltext = self.app.open_text(self.store, writable=False)
        return current

    def _snapshot(self) -> Snapshot:
        self._refresh()
        return self.store.snapshot()

    def _follow(self) -> None:
        """Pick up other processes' commits and roots even while nobody searches."""
        while not self._closing.wait(FOLLOW_INTERVAL):
            try:
                self._refresh()
                self._sync_watcher()
            except (LauncherError, OSError) as err:
                log.warning("following the index failed: %s", err)

    def _sync_watcher(self) -> None:
        """Watch the roots the index has now (``index DIR``, ``remove`` or ``clear`` in
        another process change them)."""
        if not self._watch:
            return
        with self._watch_lock:
            if self._closing.is_set():
                return
            roots = list(self.store.snapshot().roots)
            old = self.watcher
            if roots == (old.roots if old is not None else []):
                return
            self.watcher = None
            self.message = ""
            if roots:
                own = str(self.store.directory)
                watcher = Watcher(
                    roots, self.apply_changes, ignore=lambda p: p.startswith(own),
                    on_give_up=self._give_up,
                )  # fmt: skip
                try:
                    self.message = watcher.start()
                    self.watcher = watcher
                    if old is None and self._watched:
                        # Watching resumes after a gap (the index was deleted and made anew):
                        # what changed before this watcher started is caught up by one
                        # incremental run (unchanged files cost a stat each).
                        self.reindex()
                    self._watched = True
                except OSError as err:
                    watcher.stop()
                    self.message = f"cannot watch {', '.join(roots)}: {err}"
                    log.warning("%s", self.message)
            if old is not None:
                # The new watcher is running: changes the old one saw but had not handed
                # over yet are applied now, not lost with it.
                old.stop()
                old.flush()

    # -- writing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Store | None]:
        """The index open for writing, for one operation; ``None`` if there is no index
        (deleted: it is not recreated behind the user's back) or the service is closing.
        While another process holds the lock this waits, showing why."""

        def wait(busy: IndexBusy) -> bool:
            self._notice = (
                f"another indexing run is in progress (pid {busy.pid}); showing its "
                "results as they land"
            )
            return not self._closing.is_set()

        with self._write_lock:
            try:
                store = self._open_writer(wait)
            except IndexBusy:
                yield None  # closing
                return
            except IndexMismatch as err:
                # rebuilt with another model by another process: this one cannot add to it
                self._notice = f"the index changed and cannot be updated: {err}; restart launch"
                yield None
                return
            except StoreError:
                if self.store.directory.is_dir():
                    raise
                yield None  # the index folder is gone: nothing to update
                return
            finally:
                if self._notice.startswith("another indexing run"):
                    self._notice = ""
            with self._reload_lock:  # searches see the writer's commits as they land
                old, self.store, self._active = self.store, store, True
            if old is not store:
                old.close()
            clean = False
            try:
                yield store
                clean = not store.uncommitted
            finally:
                stamp = self._manifest_stamp()  # under the lock: these are our commits
                store.close()
                with self._reload_lock:
                    self._stamp, self._active = stamp, False
                self._writer, self._written = (store, stamp) if clean else (None, None)

    def _open_writer(self, wait: Callable[[IndexBusy], bool]) -> Store:
        """Our last writer again if the index is as it left it, else the index from disk."""
        cached = self._writer
        self._writer = None
        if cached is not None and self._manifest_stamp() == self._written:
            cached.relock("launch", wait)
            if self._manifest_stamp() == self._written:  # nobody committed before we locked
                return cached
            cached.close()
        return self.app.open_store(writable=True, role="launch", wait=wait, create=False)

    # -- SearchService ----------------------------------------------------------------

    def search(self, query: Query) -> list[Hit]:
        return self.searcher.search(query)

    def rerank(self, query: Query, hits: Sequence[Hit]) -> list[Hit]:
        return self.searcher.rerank(query, hits)

    @property
    def can_rerank(self) -> bool:
        return self.searcher.can_rerank

    def status(self) -> IndexStatus:
        base = self.searcher.status()
        message = self._notice or self.message
        w = self.watcher
        if w is not None and w.started and (w.problem or not w.alive):
            message = w.status  # not "watching" while it retries a failure or has stopped
        p = self._progress
        if self._indexing.is_set() and p is not None and p.total:
            message = f"indexing: {p.phase} {p.done}/{p.total}"
        return IndexStatus(
            files=base.files,
            pending=base.pending,
            failed=base.failed,
            indexing=self._indexing.is_set(),
            queued=base.queued,
            message=message,
            device=self._device(),
        )

    def _device(self) -> str:
        """Where the model runs (the settings the engine loads with: ``App.device_text``)."""
        if self._device_text is None:
            try:
                self._device_text = self.app.device_text()
            except LauncherError as err:  # a bad gpu setting: said once, here
                self._device_text = f"device: {err}"
        return self._device_text

    def reindex(self) -> None:
        if self._indexing.is_set():
            return
        threading.Thread(target=self._reindex, name="reindex", daemon=True).start()

    def _reindex(self) -> None:
        try:
            with self._writing() as store:
                if store is None or not store.roots:
                    return
                self._indexing.set()
                try:
                    indexer = self._indexer(store)
                    try:
                        indexer.run(list(store.roots))
                    finally:
                        indexer.close()
                finally:
                    self._done_indexing()
        except LauncherError as err:
            self.message = f"re-index failed: {err}"
            log.warning("re-index failed: %s", err)

    def _indexer(self, store: Store) -> Indexer:
        return self.app.indexer(store, on_progress=self._on_progress)

    def _on_progress(self, p: Progress) -> None:
        self._progress = p

    def apply_changes(self, paths: list[str]) -> list[str]:
        """The watcher's batches: the same code path as an ``index`` run. Returns the
        files whose model work is left for the next batch (``BATCH_MEANING_SECONDS``)."""
        with self._writing() as store:
            if store is None:
                return []
            self._indexing.set()
            try:
                indexer = self._indexer(store)
                try:
                    report = indexer.update_paths(paths, meaning_seconds=BATCH_MEANING_SECONDS)
                finally:
                    indexer.close()
                if report.added or report.updated or report.removed:
                    log.info(
                        "index updated: %d added, %d updated, %d removed",
                        report.added, report.updated, report.removed,
                    )  # fmt: skip
                return report.deferred
            finally:
                self._done_indexing()

    def _give_up(self, path: str, reason: str) -> None:
        """The watcher's last word on a path whose updates keep failing: record it as
        failed (findable by name; ``index --retry-failed`` tries again) so it leaves the
        queue and nothing else waits behind it."""
        try:
            st = os.stat(path)
        except OSError:
            return  # gone: nothing to record
        with self._writing() as store:
            if store is None:
                return
            store.mark_failed(path, reason, size=st.st_size, mtime_ns=st.st_mtime_ns)
            store.commit()

    def _done_indexing(self) -> None:
        """Between indexing runs the page only answers queries (their own engine): give
        back the indexing engine's vision encoder, the largest thing it holds."""
        self.app.release_vision()
        self._indexing.clear()

    def is_indexed(self, path: str) -> bool:
        """Only exact paths of files in the index (no normalisation that could widen it)
        that are still plain files: never a symlink or FIFO swapped in since indexing."""
        rec = self._snapshot().get(path) if isinstance(path, str) else None
        follow = self.app.settings.follow_symlinks
        return rec is not None and is_plain_file(path, follow_symlinks=follow)

    def thumbnail(self, path: str, size: int = 256) -> bytes | None:
        """A PNG of an indexed picture, PDF or video; None unless the file is still the
        one indexed (``launcher.indexed``)."""
        rec = self._snapshot().get(path) if isinstance(path, str) else None
        if rec is None or rec.kind not in ("image", "pdf", "video"):
            return None
        s = self.app.settings
        try:
            if rec.kind == "video":
                if not unchanged(rec, follow_symlinks=s.follow_symlinks):
                    return None
                image = _video_frame(path, s)
            else:
                with open_indexed(rec, s.max_file_bytes, follow_symlinks=s.follow_symlinks) as fh:
                    if rec.kind == "pdf":
                        image = _pdf_page(fh, 1)
                    else:
                        image = _open_image(fh.read(), s.max_image_pixels, size)
        except (OSError, LauncherError, ValueError):
            return None
        if image is None:
            return None
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()

    def close(self) -> None:
        self._closing.set()  # a batch waiting for another writer gives up
        self.ready.wait(timeout=60)
        if self._follower.is_alive():
            self._follower.join(timeout=5)
        with self._watch_lock:
            if self.watcher is not None:
                self.watcher.stop()
        with self._write_lock:
            if self._query_engine is not None:
                self._query_engine.close()
            if self._fulltext is not None:
                self._fulltext.close()
            self.store.close()


def _open_image(data: bytes, max_pixels: int, size: int) -> Any:
    from .images import load_image, to_rgb

    return to_rgb(load_image(data, max_pixels=max_pixels, draft=(size, size)))


def _video_frame(path: str, settings: Any) -> Any:
    from dataclasses import replace

    from .extract import extract

    return extract(path, "video", replace(settings, video_frames=1)).card.image


def _pdf_page(source: BinaryIO, page: int) -> Any:
    from .extract import pdf_page_image

    return pdf_page_image(source, page, 512)  # under the lock indexing also holds
