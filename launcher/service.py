"""The back end ``launch`` serves: search, rerank, status, re-index, thumbnails, watching.

The launch process owns the index as its one writer: the watcher's batches and the
re-index button go through the same ``Indexer`` code path as ``launcher.py index``. Queries
run on a fork of the embedding engine (same weights, own context), so a search never waits
for an indexing batch. When another process is indexing, the service opens the index
read-only, follows its commits, and leaves the watching to that process.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO

from .app import App
from .errors import LauncherError, StoreError
from .fulltext import FullText
from .indexed import is_plain_file, open_indexed, unchanged
from .indexer import Indexer, Progress
from .query import Hit, IndexStatus, Query
from .search import Searcher
from .store import MANIFEST, Snapshot
from .watch import Watcher

log = logging.getLogger("launcher")


class LocalService:
    """``SearchService`` over the local index (see ``launcher.query``)."""

    def __init__(self, app: App, *, watch: bool = True, warm: bool = False) -> None:
        self.app = app
        self._write_lock = threading.Lock()  # one writer operation at a time
        self._indexing = threading.Event()
        self._progress: Progress | None = None
        self.message = ""
        self.readonly = False
        try:
            self.store = app.open_store(writable=True)
        except StoreError as err:
            if "in progress" not in str(err):
                raise
            self.store = app.open_store(writable=False)
            self.readonly = True
            self.message = "another indexing run is in progress; showing its results as they land"
        self._manifest_mtime = self._manifest_stamp()
        self._query_engine: Any = None
        self._fulltext: FullText | None = None
        self.searcher = Searcher(
            self._snapshot, self._query_embedder, reranker=app.reranker, settings=app.settings,
            text=self._text_index,
        )  # fmt: skip
        self.watcher: Watcher | None = None
        if watch and not self.readonly and self.store.roots:
            own = str(self.store.directory)
            self.watcher = Watcher(
                list(self.store.roots),
                self.apply_changes,
                ignore=lambda p: p.startswith(own),
                on_give_up=self._give_up,
            )
        self.ready = threading.Event()
        if warm:
            threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
        else:
            self._start_watcher()
            self.ready.set()

    def _start_watcher(self) -> None:
        if self.watcher is not None:
            self.message = self.watcher.start()

    def _warm_up(self) -> None:
        """Off the request path: load the model, cache the query prompt's prefix, and start
        watching (scheduling watches on a big tree takes a while)."""
        try:
            self.message = "loading the model…"
            self.searcher.query_vector(Query(text="warm up"), self.store.dims)
            self.message = ""
            self._start_watcher()
        except LauncherError as err:
            self.message = f"the model could not load: {err}"
            log.warning("%s", self.message)
        finally:
            self.ready.set()

    # -- engine and snapshots ---------------------------------------------------------

    def _query_embedder(self) -> Any:
        """A fork of the app's engine for queries: same weights, its own context."""
        if self._query_engine is None:
            self._query_engine = self.app.embedder().fork()
        return self._query_engine

    def _manifest_stamp(self) -> int:
        try:
            return (self.store.directory / MANIFEST).stat().st_mtime_ns
        except OSError:
            return 0

    def _text_index(self) -> FullText | None:
        """The full-text index, read-only: the indexer writes through its own connection."""
        if self._fulltext is None:
            self._fulltext = self.app.open_text(self.store, writable=False)
        return self._fulltext

    def _snapshot(self) -> Snapshot:
        if self.readonly:
            stamp = self._manifest_stamp()
            if stamp != self._manifest_mtime:  # the other process committed: follow it
                self._manifest_mtime = stamp
                old = self.store
                self.store = self.app.open_store(writable=False)
                old.close()
        return self.store.snapshot()

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
        message = self.message
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
        )

    def reindex(self) -> None:
        if self.readonly:
            raise LauncherError("another process is indexing; wait for it to finish")
        if self._indexing.is_set():
            return
        threading.Thread(target=self._reindex, name="reindex", daemon=True).start()

    def _reindex(self) -> None:
        with self._write_lock:
            self._indexing.set()
            try:
                indexer = self._indexer()
                try:
                    indexer.run(list(self.store.roots))
                finally:
                    indexer.close()
            except LauncherError as err:
                self.message = f"re-index failed: {err}"
                log.warning("re-index failed: %s", err)
            finally:
                self._done_indexing()

    def _indexer(self) -> Indexer:
        return self.app.indexer(self.store, on_progress=self._on_progress)

    def _on_progress(self, p: Progress) -> None:
        self._progress = p

    def apply_changes(self, paths: list[str]) -> None:
        """The watcher's batches: the same code path as an ``index`` run."""
        with self._write_lock:
            self._indexing.set()
            try:
                indexer = self._indexer()
                try:
                    report = indexer.update_paths(paths)
                finally:
                    indexer.close()
                if report.added or report.updated or report.removed:
                    log.info(
                        "index updated: %d added, %d updated, %d removed",
                        report.added, report.updated, report.removed,
                    )  # fmt: skip
            finally:
                self._done_indexing()

    def _give_up(self, path: str, reason: str) -> None:
        """The watcher's last word on a path whose updates keep failing: record it as
        failed (findable by name; ``index --retry-failed`` tries again) so it leaves the
        queue and nothing else waits behind it."""
        with self._write_lock:
            try:
                st = os.stat(path)
            except OSError:
                return  # gone: nothing to record
            self.store.mark_failed(path, reason, size=st.st_size, mtime_ns=st.st_mtime_ns)
            self.store.commit()

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
        self.ready.wait(timeout=60)
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
