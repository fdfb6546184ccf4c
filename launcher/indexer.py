"""Indexing runs: walk the roots, extract, embed in tiers, keep the store current.

Tier 1 embeds one *card* per new or changed file across the whole tree, so every file is
findable early; tier 2 then embeds the chunks of long files. Files whose chunks are still
missing carry the status ``pending_chunks``, so an interrupted run resumes where it
stopped. Extraction runs in a thread beside the model so the CPU does not wait on disk.

Per-file failures are caught by type (``InputError``, which includes ``ExtractError`` and
``ImageError``), recorded with their reason, and never touch another file's vectors.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .extract import Extracted, ExtractError, Kind, Piece, extract, name_card, sniff
from .inputs import Embedder, EmbedInput
from .store import FileRecord, RunStats, Status, Store, content_hash
from .walk import FileEntry, IndexSettings, WalkProblem, admit, walk

CARD_BATCH = 8  # cards embedded per engine call (text cards share a decode)
PREFETCH = 4  # files extracted ahead of the model


@dataclass(frozen=True)
class Progress:
    """Where a run is; ``total`` counts the files of the current phase."""

    phase: str  # "scan" | "queued" | "cards" | "chunks" | "done"
    done: int
    total: int
    path: str = ""
    files_per_s: float = 0.0
    tokens_per_s: float = 0.0
    eta_s: float | None = None


@dataclass
class Report:
    """What a run did, in files. ``errors`` are this run's failures and skipped paths."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    reused: int = 0
    files: int = 0
    seconds: float = 0.0
    tokens: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "reused": self.reused,
            "tokens": self.tokens,
            "interrupted": self.interrupted,
            "errors": [{"path": p, "reason": r} for p, r in self.errors],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class _Job:
    entry: FileEntry
    is_new: bool
    future: Future[tuple[str | None, Extracted | InputError]] | None = None


class Indexer:
    """Keeps ``store`` in step with the files under its roots, using ``embedder``.

    ``embedder`` is a zero-argument factory: the model loads only when a file needs it.
    """

    def __init__(
        self,
        store: Store,
        embedder: Callable[[], Embedder],
        settings: IndexSettings,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.store = store
        self._make_embedder = embedder
        self._embedder: Embedder | None = None
        self.settings = settings
        self.on_progress = on_progress or (lambda p: None)
        self.cancel = cancel or threading.Event()
        self._retry_failed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._make_embedder()
        return self._embedder

    def _count_tokens(self, text: str) -> int:
        # The model's own tokenizer, so chunks fit its budget (loads the model once).
        return self.embedder.count_tokens(text)

    # -- runs -------------------------------------------------------------------------

    def run(self, roots: Sequence[str], *, retry_failed: bool = False) -> Report:
        """Index everything under ``roots`` (which become the store's roots) and prune
        files that are gone (mark and sweep)."""
        started = time.monotonic()
        started_ns = time.time_ns()
        report = Report()
        self._retry_failed = retry_failed
        try:
            self._run(roots, retry_failed, report)
        except BaseException:
            # Ctrl+C (or a fatal error) mid-run: what was done is recorded as an
            # interrupted run; the caller commits it with the work done so far.
            report.interrupted = True
            self._record(report, started, started_ns)
            raise
        if self.cancel.is_set():
            report.interrupted = True
        self._record(report, started, started_ns)
        if self.store.staged and not report.interrupted:
            self.store.finish_rebuild()  # the rebuilt index replaces the old one now
        else:
            self.store.commit()
        self.on_progress(Progress("done", report.files, report.files))
        return report

    def _run(self, roots: Sequence[str], retry_failed: bool, report: Report) -> None:
        self.store.set_roots(roots)
        self.store.begin_sweep()
        jobs: list[_Job] = []
        pending_chunks: list[str] = []
        self.on_progress(Progress("scan", 0, 0))
        for item in walk(roots, self.settings):
            if self.cancel.is_set():
                break
            if isinstance(item, WalkProblem):
                if item.is_dir:
                    self.store.seen_under(item.path)
                report.skipped.append((item.path, item.reason))
                continue
            report.files += 1
            self.store.seen(item.path)
            known = self.store.unchanged(item.path, item.size, item.mtime_ns)
            if known is not None and not (retry_failed and known.status == "failed"):
                report.unchanged += 1
                if known.status == "pending_chunks":
                    pending_chunks.append(item.path)
                continue
            jobs.append(_Job(item, is_new=self._is_new(item.path)))
            if len(jobs) % 500 == 0:
                self.on_progress(Progress("scan", len(jobs), 0, item.path))
        self._queue(jobs)
        self._cards(jobs, report, pending_chunks)
        self._chunks(pending_chunks, report)
        if not self.cancel.is_set():
            report.removed = len(self.store.sweep())

    def _record(self, report: Report, started: float, started_ns: int) -> None:
        """The run's stats go into the next commit (``info`` shows them as "Last run")."""
        report.seconds = time.monotonic() - started
        self.store.set_stats(
            RunStats(
                started_ns=started_ns,
                finished_ns=time.time_ns(),
                seen=report.files,
                indexed=report.added + report.updated,
                unchanged=report.unchanged,
                reused=report.reused,
                failed=report.failed,
                removed=report.removed,
                problems=len(report.skipped),
                interrupted=report.interrupted,
                queued=sum(1 for r in self.store.files() if r.status == "queued"),
            )
        )

    def update_paths(self, paths: Iterable[str]) -> Report:
        """Apply changes to specific paths (the watcher's events) through the same code
        path as a run: existing files are (re)indexed, vanished ones removed."""
        started = time.monotonic()
        report = Report()
        jobs: list[_Job] = []
        pending: list[str] = []
        roots = tuple(self.store.roots)
        for path in _expand_dirs(dict.fromkeys(paths)):
            if not _under(path, roots):
                continue
            entry = admit(path, roots, self.settings)
            if entry is None:
                # gone, or no longer a file to index (now ignored, too large...)
                if self.store.get(path) is not None:
                    self.store.remove(path)
                    report.removed += 1
                elif not os.path.isfile(path):
                    # maybe a removed folder: it takes everything indexed under it
                    prefix = path.rstrip(os.sep) + os.sep
                    for rec in list(self.store.files()):
                        if rec.path.startswith(prefix) and not os.path.lexists(rec.path):
                            self.store.remove(rec.path)
                            report.removed += 1
                continue
            report.files += 1
            if self.store.unchanged(entry.path, entry.size, entry.mtime_ns) is not None:
                report.unchanged += 1
                continue
            jobs.append(_Job(entry, is_new=self._is_new(entry.path)))
        self._cards(jobs, report, pending)
        self._chunks(pending, report)
        report.seconds = time.monotonic() - started
        self.store.commit()
        return report

    def _is_new(self, path: str) -> bool:
        rec = self.store.get(path)
        return rec is None or rec.status == "queued"

    # -- tier 0: names ----------------------------------------------------------------

    def _queue(self, jobs: list[_Job]) -> None:
        """Put new files in the index by name before any model work, in one commit: search
        finds them by name at once (by meaning once their card is embedded), and a run cut
        short leaves them queued for the next one."""
        queued = 0
        for job in jobs:
            if job.is_new and self.store.get(job.entry.path) is None:
                self.store.queue(job.entry.path, job.entry.size, job.entry.mtime_ns)
                queued += 1
        if queued:
            self.store.commit()
            self.on_progress(Progress("queued", queued, queued))

    # -- tier 1: cards ----------------------------------------------------------------

    def _prepare(self, entry: FileEntry) -> tuple[str | None, Extracted | InputError]:
        """Runs in the extraction thread: hash, sniff and extract one file."""
        try:
            digest = content_hash(entry.path)
        except OSError as err:
            return None, ExtractError(f"cannot read: {err.strerror or err}")
        try:
            return digest, extract(entry.path, sniff(entry.path), self.settings, self._count_tokens)
        except InputError as err:
            return digest, err
        except OSError as err:
            return digest, ExtractError(f"cannot read: {err.strerror or err}")

    def _prefetched(self, jobs: list[_Job]) -> Iterator[_Job]:
        """Yield jobs in order with their extraction started ``PREFETCH`` files ahead."""
        for i, job in enumerate(jobs):
            for ahead in jobs[i : i + PREFETCH + 1]:
                if ahead.future is None:
                    ahead.future = self._pool.submit(self._prepare, ahead.entry)
            yield job

    def _cards(self, jobs: list[_Job], report: Report, pending_chunks: list[str]) -> None:
        timer = _Rate(len(jobs))
        batch: list[tuple[_Job, str, Extracted]] = []

        def flush() -> None:
            if batch:
                self._embed_cards(batch, report, pending_chunks, timer)
                batch.clear()
                self.store.maybe_commit()

        for job in self._prefetched(jobs):
            if self.cancel.is_set():
                break
            assert job.future is not None
            digest, result = job.future.result()
            job.future = None  # free the extracted content
            entry = job.entry
            timer.step(entry.path, 0)
            self.on_progress(timer.progress("cards", entry.path))
            if digest is not None and self._same_content(entry, digest, report):
                continue
            if isinstance(result, InputError):
                self._fail(entry, digest, str(result), report, job.is_new)
                continue
            batch.append((job, digest or "", result))
            if len(batch) >= CARD_BATCH or result.card.image is not None:
                flush()
        flush()

    def _same_content(self, entry: FileEntry, digest: str, report: Report) -> bool:
        """Skip the model when the content is already indexed: same file touched, or a
        moved/renamed/copied file (vectors reused by content hash)."""
        old = self.store.get(entry.path)
        if old is not None and old.status == "queued":
            old = None
        retry = old is not None and old.status == "failed" and self._retry_failed
        if old is not None and old.content_hash == digest and not retry:
            self.store.touch(entry.path, entry.size, entry.mtime_ns)
            report.unchanged += 1
            return True
        source = self.store.lookup_by_hash(digest)
        if source is not None and source.status != "failed" and source.rows:
            self.store.reuse(source, entry.path, entry.size, entry.mtime_ns)
            report.reused += 1
            if old is None:
                report.added += 1
            else:
                report.updated += 1
            return True
        return False

    def _embed_cards(
        self,
        batch: list[tuple[_Job, str, Extracted]],
        report: Report,
        pending_chunks: list[str],
        timer: _Rate,
    ) -> None:
        outcomes = self.embedder.embed_each(
            [self._input(ex.card, job.entry.path) for job, _, ex in batch]
        )
        for (job, digest, ex), vec in zip(batch, outcomes, strict=True):
            entry = job.entry
            tokens = _piece_tokens(ex.card, self._count_tokens, self.settings.image_pixel_budget)
            report.tokens += tokens
            timer.add_tokens(tokens)
            if isinstance(vec, InputError):
                self._fail(entry, digest, str(vec), report, job.is_new, kind=ex.kind)
                continue
            status: Status = "pending_chunks" if ex.chunks else "ok"
            record = FileRecord(
                path=entry.path,
                size=entry.size,
                mtime_ns=entry.mtime_ns,
                kind=ex.kind,
                status=status,
                content_hash=digest,
                preview=ex.card.preview,
                title=ex.title,
            )
            self.store.put(record, [ex.card], np.asarray(vec)[None, :])
            if ex.chunks:
                pending_chunks.append(entry.path)
            if job.is_new:
                report.added += 1
            else:
                report.updated += 1

    def _input(self, piece: Piece, path: str) -> EmbedInput:
        """A piece as engine input; without an mmproj, pictures are left out (their text
        and the file's name remain)."""
        if piece.image is not None and not self.embedder.supports_images:
            text = piece.text or name_card(path, _safe_sniff(path), self.settings).card.text
            return EmbedInput(text=text)
        return piece.to_input()

    def _fail(
        self,
        entry: FileEntry,
        digest: str | None,
        reason: str,
        report: Report,
        is_new: bool,
        *,
        kind: Kind | None = None,
    ) -> None:
        """Record a failure. The file stays findable by its name when that can be embedded."""
        report.failed += 1
        report.errors.append((entry.path, reason))
        kind = kind or _safe_sniff(entry.path)
        card = name_card(entry.path, kind, self.settings, label=None).card
        out = self.embedder.embed_each([card.to_input()])[0]
        if isinstance(out, InputError):
            self.store.mark_failed(
                entry.path, reason, size=entry.size, mtime_ns=entry.mtime_ns, kind=kind,
                content_hash=digest,
            )  # fmt: skip
            return
        record = FileRecord(
            path=entry.path,
            size=entry.size,
            mtime_ns=entry.mtime_ns,
            kind=kind,
            status="failed",
            reason=reason,
            content_hash=digest,
            preview=card.preview,
        )
        self.store.put(record, [card], np.asarray(out)[None, :])

    # -- tier 2: chunks ---------------------------------------------------------------

    def _chunks(self, paths: list[str], report: Report) -> None:
        todo = [p for p in dict.fromkeys(paths) if self._needs_chunks(p)]
        timer = _Rate(len(todo))
        jobs = []
        for path in todo:
            rec = self.store.get(path)
            assert rec is not None
            jobs.append(_Job(FileEntry(path, rec.size, rec.mtime_ns, ""), is_new=False))
        for job in self._prefetched(jobs):
            if self.cancel.is_set():
                break
            assert job.future is not None
            digest, result = job.future.result()
            job.future = None
            path = job.entry.path
            timer.step(path, 0)
            self.on_progress(timer.progress("chunks", path))
            rec = self.store.get(path)
            if rec is None or digest != rec.content_hash or isinstance(result, InputError):
                # Changed or unreadable since its card was embedded: the next run redoes it.
                continue
            outcomes = self.embedder.embed_each([self._input(c, path) for c in result.chunks])
            pieces: list[Piece] = []
            vectors = []
            for piece, vec in zip(result.chunks, outcomes, strict=True):
                tokens = _piece_tokens(piece, self._count_tokens, self.settings.image_pixel_budget)
                report.tokens += tokens
                timer.add_tokens(tokens)
                if isinstance(vec, np.ndarray):
                    pieces.append(piece)
                    vectors.append(vec)
            matrix = np.stack(vectors) if vectors else np.zeros((0, self.store.dims), np.float32)
            self.store.extend(path, pieces, matrix, status="ok")  # keeps the card's row
            self.store.maybe_commit()

    def _needs_chunks(self, path: str) -> bool:
        rec = self.store.get(path)
        return rec is not None and rec.status == "pending_chunks"


class _Rate:
    """Files/s, tokens/s and ETA for progress reports."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tokens = 0
        self.start = time.monotonic()

    def step(self, path: str, tokens: int) -> None:
        self.done += 1
        self.tokens += tokens

    def add_tokens(self, tokens: int) -> None:
        self.tokens += tokens

    def progress(self, phase: str, path: str) -> Progress:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        fps = (self.done - 1) / elapsed if self.done > 1 else 0.0
        eta = (self.total - self.done) / fps if fps > 0 else None
        return Progress(phase, self.done, self.total, path, fps, self.tokens / elapsed, eta)


def _piece_tokens(piece: Piece, count: Callable[[str], int], max_pixels: int) -> int:
    """Content tokens the model reads for a piece: its text, and its image at the size the
    engine resizes it to."""
    from .errors import ImageError
    from .images import FACTOR, smart_resize

    tokens = count(piece.text) if piece.text else 0
    if piece.image is not None:
        w, h = piece.image.size
        try:
            rh, rw = smart_resize(h, w, max_pixels=max_pixels)
        except ImageError:
            return tokens
        tokens += (rh // FACTOR) * (rw // FACTOR)
    return tokens


def _safe_sniff(path: str) -> Kind | None:
    try:
        return sniff(path)
    except OSError:
        return None


def _expand_dirs(paths: Iterable[str]) -> Iterator[str]:
    """Paths as given, plus the files inside those that are folders (a folder moved in)."""
    for path in paths:
        yield path
        if os.path.isdir(path) and not os.path.islink(path):
            for folder, _dirs, names in os.walk(path):
                for name in sorted(names):
                    yield os.path.join(folder, name)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
