"""Indexing runs: walk the roots, extract, embed in tiers, keep the store current.

Tier 0 commits every new file by name; the words tier then puts every word of every new or
changed file in the full-text index (no model: extraction is fast, embedding is not); tier
1 embeds one *card* per new or changed file across the whole tree, most recently modified
first, so every file is findable by meaning early; tier 2 then embeds the chunks of long
files. Files whose chunks are still
missing carry the status ``pending_chunks``, so an interrupted run resumes where it
stopped. Extraction runs in a thread beside the model so the CPU does not wait on disk.

Reading one file (hash, sniff, extract) is the per-file boundary: whatever it raises
(``ExtractError``, an ``OSError``, or any exception from pypdfium2, Pillow, PyAV, the zip and
XML readers) becomes that file's failure with the exception's type and message as reason, its
traceback goes to the log, and the run goes on. Our own programming errors are not input
problems: with ``LAUNCHER_STRICT=1`` (the test suite sets it) they propagate instead. Each
extraction has a time budget; one that overruns is abandoned (see ``_Worker``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin on 3.10
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ENGINE_UNAVAILABLE, EngineUnavailable, InputError, StoreError
from .extract import (
    TOO_SLOW,
    Budget,
    Extracted,
    ExtractError,
    Interrupted,
    Kind,
    Piece,
    Unsupported,
    extract,
    name_card,
    os_reason,
    sniff,
)
from .fulltext import FullText, TextDoc
from .inputs import Embedder, EmbedInput
from .store import FileRecord, RunStats, Status, Store, content_hash
from .walk import Admitter, FileEntry, IndexSettings, WalkProblem, walk

log = logging.getLogger("launcher")

CARD_BATCH = 8  # cards embedded per engine call (text cards share a decode)
PREFETCH = 4  # files extracted ahead of the model
CHUNK_SLICE = 4  # a long file's chunks per engine call (one packed decode), then progress
BURST_COMMITS = 16  # a watcher batch of many files commits about this many times (and by time)
WORDS_COMMIT_FILES = 500  # full-text writes grouped per transaction: files...
WORDS_COMMIT_SECONDS = 2.0  # ...or seconds, whichever comes first
ABANDON_GRACE = 5.0  # seconds past its budget before an extraction is abandoned
CHUNK_CACHE_BYTES = 64 * 1000 * 1000  # chunks kept from tier 1 for tier 2 (no second read)
STRICT_ENV = "LAUNCHER_STRICT"


@dataclass(frozen=True)
class Progress:
    """Where a run is. ``total`` counts the files of the current phase; ``done`` the files
    finished (scan: files to index so far), ``path`` is the file being worked on, and
    ``part``/``parts`` how far into it (chunks or pages embedded) when it has several."""

    phase: str  # "scan" | "queued" | "words" | "cards" | "chunks" | "done"
    done: int
    total: int
    path: str = ""
    files_per_s: float = 0.0
    tokens_per_s: float = 0.0
    eta_s: float | None = None
    found: int = 0  # scan: files seen so far (to index or unchanged)
    part: int = 0
    parts: int = 0


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
    unsupported: int = 0  # binary files of formats not read: indexed by name, in ``skipped``
    interrupted: bool = False
    deferred: list[str] = field(default_factory=list)  # meaning work left for the next batch

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
            "unsupported": self.unsupported,
            "errors": [{"path": p, "reason": r} for p, r in self.errors],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class _Prepared:
    """What the extraction thread made of one file."""

    digest: str | None
    kind: Kind | None
    result: Extracted | InputError


@dataclass
class _Job:
    entry: FileEntry
    is_new: bool
    future: Future[_Prepared] | None = None
    started: float = 0.0  # when the extraction thread took it up (monotonic)


def _file_failure(err: Exception, path: str) -> ExtractError:
    """The per-file boundary for an exception no reader anticipated: the file's failure,
    with the traceback in the log. Our own bugs propagate under ``LAUNCHER_STRICT=1``."""
    if _our_bug(err):
        if os.environ.get(STRICT_ENV) == "1":
            raise err
        # a user's run goes on, but this one is ours to fix: say so on stderr too
        log.warning("internal error reading %s (please report it)", path, exc_info=err)
    else:
        log.info("reading %s failed", path, exc_info=err)
    return ExtractError(failure_reason(err))


class _Worker:
    """One daemon thread that runs extractions in order.

    An extraction over its time budget is abandoned: a fresh worker takes the queue and the
    old thread is left to stop at its extraction's next ``Budget.check`` (between pages,
    rows, frames). A thread is cheaper than a subprocess per file (no interpreter start, no
    tokenizer to load, no pickling of decoded images) and can leak CPU only while stuck in
    one native call, which the caps on pages and pixels keep short. Daemon, so a thread
    stuck in native code never holds up the process's exit.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="extract", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:  # handed to the waiting thread, raised there
                future.set_exception(err)

    def stop(self, wait: float = 0.0) -> None:
        """Cancel what has not started; let the running task end on its own."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        self._queue.put(None)
        if wait:
            self._thread.join(timeout=wait)


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
        text: FullText | None = None,
    ) -> None:
        self.store = store
        self.text = text  # the full-text index (None: sqlite3 without FTS5)
        self._make_embedder = embedder
        self._embedder: Embedder | None = None
        self.settings = settings
        self.on_progress = on_progress or (lambda p: None)
        self.cancel = cancel or threading.Event()
        self._retry_failed = False
        self._slice_end: float | None = None  # a watcher batch's meaning tiers stop here
        self.report: Report | None = None  # the current (or last) run's, also if it was cut short
        self._worker = _Worker()
        self._chunk_cache: dict[str, tuple[str, Extracted]] = {}
        self._chunk_cache_bytes = 0

    def close(self) -> None:
        self._worker.stop(wait=2.0)
        self._chunk_cache.clear()
        if self.text is not None:
            self.text.close()

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
        report = self.report = Report()
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
        try:
            self.store.backup()  # the fallback if the catalog is damaged later
        except StoreError as err:  # all is committed; only the fallback copy is older
            log.warning("%s", err)
        self.on_progress(Progress("done", report.files, report.files))
        return report

    def _run(self, roots: Sequence[str], retry_failed: bool, report: Report) -> None:
        self.store.set_roots(roots)
        self.store.begin_sweep()
        jobs: list[_Job] = []
        pending_chunks: list[str] = []
        words: list[FileEntry] = []
        text_sigs = self.text.signatures() if self.text is not None else {}
        self._forget_words(text_sigs)
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
            self.on_progress(Progress("scan", len(jobs), 0, item.path, found=report.files))
            self.store.seen(item.path)
            if self.text is not None and text_sigs.get(item.path) != (item.size, item.mtime_ns):
                words.append(item)
            known = self.store.unchanged_status(item.path, item.size, item.mtime_ns)
            if known is not None and not (known == "failed" and self._retry_failed_file(item.path)):
                report.unchanged += 1
                if known == "pending_chunks":
                    pending_chunks.append(item.path)
                continue
            jobs.append(_Job(item, is_new=self._is_new(item.path)))
        self._queue(jobs)
        self._words(words)
        # What a person worked on last is searchable by meaning first.
        jobs.sort(key=lambda j: -j.entry.mtime_ns)
        self._cards(jobs, report, pending_chunks)
        self._chunks(self._recent_first(pending_chunks), report)
        if not self.cancel.is_set():
            removed = self.store.sweep()
            self._drop_words(removed)  # before the commit that drops them from the store
            report.removed = len(removed)

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
                queued=self.store.count("queued"),
            )
        )

    def update_paths(self, paths: Iterable[str], *, meaning_seconds: float | None = None) -> Report:
        """Apply changes to specific paths (the watcher's events) through the same code
        path as a run: existing files are (re)indexed, vanished ones removed. A folder
        stands for everything under it (moved in, or rescanned after an overflow of
        events). The cost is the batch's, not the index's: each folder on the way is
        listed once, and a big batch commits a bounded number of times.

        Names and words are done for the whole batch; the model's tiers stop after
        ``meaning_seconds`` and list the files left in ``report.deferred``, for the next
        batch (whose own new files then get their words first)."""
        started = time.monotonic()
        self._slice_end = started + meaning_seconds if meaning_seconds is not None else None
        report = self.report = Report()
        self._retry_failed = False  # (only a run retries every failure, when asked)
        jobs: list[_Job] = []
        pending: list[str] = []
        roots = tuple(self.store.roots)
        admitter = Admitter(roots, self.settings)
        entries: dict[str, FileEntry] = {}
        gone: list[str] = []  # indexed files that are gone or no longer to be indexed
        vanished: list[str] = []  # other paths that are not files: maybe removed folders
        for path in dict.fromkeys(paths):
            if not _under(path, roots):
                continue
            entry = admitter.admit(path)
            if entry is not None:
                entries.setdefault(entry.path, entry)
                continue
            if self.store.get(path) is not None:
                gone.append(path)
            elif not os.path.isfile(path):
                vanished.append(path)
                for inside in admitter.files_under(path):  # a folder moved in
                    entries.setdefault(inside.path, inside)
        gone += self._gone_under(vanished)
        self._drop_words(gone + vanished)  # before the commit that drops them from the store
        for path in gone:
            if self.store.remove(path):
                report.removed += 1
        for entry in entries.values():
            report.files += 1
            known = self.store.unchanged(entry.path, entry.size, entry.mtime_ns)
            if known is not None and not self._retry(known):
                report.unchanged += 1
                if known.status == "pending_chunks":  # e.g. a batch that failed midway
                    pending.append(entry.path)
                continue
            jobs.append(_Job(entry, is_new=self._is_new(entry.path)))
        every = self.store.commit_every_files
        # A burst (a git checkout, an unzip) commits about BURST_COMMITS times, plus the
        # seconds bound: not once per ``commit_every_files`` files.
        self.store.commit_every_files = max(every, len(jobs) // BURST_COMMITS)
        try:
            self._queue(jobs)
            self._words([job.entry for job in jobs if self._needs_words(job.entry)])
            self._cards(jobs, report, pending)
            self._chunks(pending, report)
        finally:
            self.store.commit_every_files = every
            self._slice_end = None
        report.seconds = time.monotonic() - started
        self.store.commit()
        return report

    def _retry_failed_file(self, path: str) -> bool:
        """``_retry`` for a file the walk found unchanged with status failed (its record is
        read only then: failures are few)."""
        rec = self.store.get(path)
        return rec is not None and self._retry(rec)

    def _retry(self, rec: FileRecord) -> bool:
        """A failed file to try again: all of them with ``--retry-failed``; without, those
        that failed only because the remote engine could not be reached."""
        if rec.status != "failed":
            return False
        return self._retry_failed or (rec.reason or "").startswith(ENGINE_UNAVAILABLE)

    def _needs_words(self, entry: FileEntry) -> bool:
        """False when the full-text index has this very version (a file left over from a
        batch's meaning tiers, or touched with the same size and time)."""
        return self.text is not None and self.text.signature(entry.path) != (
            entry.size,
            entry.mtime_ns,
        )

    def _slice_over(self) -> bool:
        return self._slice_end is not None and time.monotonic() >= self._slice_end

    def _gone_under(self, folders: Sequence[str]) -> list[str]:
        """Indexed files under these paths that no longer exist (a folder removed or
        moved away): one pass over the index for the whole batch."""
        if not folders:
            return []
        prefixes = {f.rstrip(os.sep) for f in folders}
        out = []
        for known in self.store.paths():
            parent = os.path.dirname(known)
            while parent not in prefixes:
                up = os.path.dirname(parent)
                if up == parent:
                    break
                parent = up
            else:
                if not os.path.lexists(known):
                    out.append(known)
        return out

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

    # -- the words tier: full text -----------------------------------------------------

    def _words(self, entries: Sequence[FileEntry]) -> None:
        """Every word of these files into the full-text index, before any model work:
        a word a person remembers finds its file minutes after ``index`` starts, not when
        the model reaches it. Pictures and media go in by name (their kind says so)."""
        if self.text is None or not entries:
            return
        timer = _Rate(len(entries))
        docs: list[TextDoc] = []
        flushed = time.monotonic()
        for entry in entries:
            if self.cancel.is_set():
                break
            if timer.done % 50 == 0:
                self.on_progress(timer.progress("words", entry.path))
            doc = self._text_doc(entry)
            if doc is not None:
                docs.append(doc)
            timer.finish()
            if len(docs) >= WORDS_COMMIT_FILES or time.monotonic() - flushed > WORDS_COMMIT_SECONDS:
                self._put_words(docs)
                flushed = time.monotonic()
        self._put_words(docs)
        self.on_progress(timer.progress("words", ""))  # every file's words are searchable

    def _put_words(self, docs: list[TextDoc]) -> None:
        assert self.text is not None
        with self.text.batch():
            for doc in docs:
                self.text.put(doc)
        docs.clear()

    def _text_doc(self, entry: FileEntry) -> TextDoc | None:
        """The file's words; an unreadable file is kept by name (the cards tier records
        why). None when the run was stopped meanwhile (the next run reads it)."""
        kind: Kind | None = None
        layer = None
        budget = Budget(self._budget_seconds(entry.path), self.cancel)
        try:
            kind = sniff(entry.path)
            if kind is not None:
                layer = extract(entry.path, kind, self.settings, budget=budget,
                                text_only=True).text  # fmt: skip
        except Interrupted:
            return None
        except (InputError, OSError):
            pass  # recorded as this file's failure by the cards tier, with its reason
        except Exception as err:
            _file_failure(err, entry.path)  # logged (or raised, if it is our own bug)
        if layer is None:  # a picture, a video, or unreadable: findable by its name
            return TextDoc(entry.path, entry.size, entry.mtime_ns, kind, "")
        return TextDoc(entry.path, entry.size, entry.mtime_ns, kind, layer.body, layer.spans)

    # The text index only ever holds files the store has committed: text is added after
    # the commit that queues a file and dropped before the commit that removes it, so a
    # kill at any moment leaves at most files whose text the next run adds.

    def _drop_words(self, paths: Sequence[str]) -> None:
        if self.text is not None and paths:
            self.text.remove(paths)

    def _forget_words(self, text_sigs: dict[str, tuple[int, int]]) -> None:
        """Drop the text of files the store no longer has (``remove`` on an older version,
        or a store fallen back to its previous generation). Not while rebuilding: the text
        then also serves the live index, whose files the rebuild has not reached yet."""
        if not self.store.staged:
            known = set(self.store.paths())  # (one query, not one per file)
            gone = [p for p in text_sigs if p not in known]
            self._drop_words(gone)
            for path in gone:  # their text is gone: a file back at that path needs words
                del text_sigs[path]

    def _recent_first(self, paths: list[str]) -> list[str]:
        def mtime(path: str) -> int:
            rec = self.store.get(path)
            return rec.mtime_ns if rec is not None else 0

        return sorted(dict.fromkeys(paths), key=lambda p: -mtime(p))

    # -- tier 1: cards ----------------------------------------------------------------

    def _prepare(self, job: _Job) -> _Prepared:
        """Runs in the extraction thread: hash, sniff and extract one file. The per-file
        boundary (see the module docstring)."""
        job.started = time.monotonic()
        entry = job.entry
        digest: str | None = None
        kind: Kind | None = None
        budget = Budget(self._budget_seconds(entry.path), self.cancel)

        def count_tokens(text: str) -> int:
            budget.check()  # an abandoned extraction stops here, before the engine is used
            return self._count_tokens(text)

        try:
            digest = content_hash(entry.path)
            kind = sniff(entry.path)
            ex = extract(entry.path, kind, self.settings, count_tokens, budget)
            return _Prepared(digest, kind, ex)
        except InputError as err:
            return _Prepared(digest, kind, err)
        except OSError as err:
            return _Prepared(digest, kind, ExtractError(os_reason(err)))
        except Interrupted:
            return _Prepared(digest, kind, ExtractError("interrupted"))
        except Exception as err:
            return _Prepared(digest, kind, _file_failure(err, entry.path))

    def _budget_seconds(self, path: str) -> float:
        """The time budget of one file; ``--retry-failed`` lifts it for files that failed
        as too slow (Ctrl+C still stops them)."""
        if self._retry_failed:
            rec = self.store.get(path)
            if (
                rec is not None
                and rec.status == "failed"
                and (rec.reason or "").startswith(TOO_SLOW)
            ):
                return 0.0
        return self.settings.max_seconds_per_file

    def _start(self, job: _Job) -> None:
        if job.future is None or job.future.cancelled():
            job.future = self._worker.submit(lambda: self._prepare(job))

    def _prefetched(self, jobs: list[_Job]) -> Iterator[_Job]:
        """Yield jobs in order with their extraction started ``PREFETCH`` files ahead."""
        for i, job in enumerate(jobs):
            for ahead in jobs[i : i + PREFETCH + 1]:
                self._start(ahead)
            yield job

    def _result(self, job: _Job) -> _Prepared | None:
        """The job's extraction, waited for in short steps: None once the run is cancelled
        (Ctrl+C answers at once); a "too slow" failure when it overruns its budget (the
        worker is then replaced, see ``_Worker``)."""
        while True:
            self._start(job)  # again if an abandoned worker cancelled it
            assert job.future is not None
            try:
                return job.future.result(timeout=0.1)
            except FutureTimeout:
                pass
            if self.cancel.is_set():
                return None
            budget = self._budget_seconds(job.entry.path)
            if budget and job.started and time.monotonic() - job.started > budget + ABANDON_GRACE:
                log.info("reading %s: abandoned after %.0f s", job.entry.path, budget)
                self._worker.stop()
                self._worker = _Worker()
                job.future = None
                reason = f"{TOO_SLOW} (over {budget:g} s to read)"
                return _Prepared(None, None, ExtractError(reason))

    def _cards(self, jobs: list[_Job], report: Report, pending_chunks: list[str]) -> None:
        timer = _Rate(len(jobs))
        batch: list[tuple[_Job, str, Extracted, str | None]] = []

        def flush() -> None:
            if batch:
                self._embed_cards(batch, report, pending_chunks, timer)
                timer.finish(len(batch))
                batch.clear()
                self.store.maybe_commit()

        for i, job in enumerate(self._prefetched(jobs)):
            if self.cancel.is_set():
                break
            if self._slice_over():
                report.deferred += [j.entry.path for j in jobs[i:]]
                break
            prepared = self._result(job)
            job.future = None  # free the extracted content
            if prepared is None:
                break
            entry = job.entry
            digest, result = prepared.digest, prepared.result
            self.on_progress(timer.progress("cards", entry.path))
            if digest is not None and self._same_content(entry, digest, report, pending_chunks):
                timer.finish()
                continue
            skip_reason = None
            if isinstance(result, Unsupported):
                # Not a failure: a format we do not read. Findable by its name.
                skip_reason = result.reason
                result = name_card(entry.path, None, self.settings)
            elif isinstance(result, InputError):
                timer.finish()
                if not os.path.lexists(entry.path):  # deleted since the walk: not a failure
                    if self.store.get(entry.path) is not None:
                        self._drop_words([entry.path])
                        self.store.remove(entry.path)
                        report.removed += 1
                    continue
                self._fail(entry, digest, str(result), report, job.is_new, kind=prepared.kind)
                continue
            batch.append((job, digest or "", result, skip_reason))
            if len(batch) >= CARD_BATCH or result.card.image is not None:
                flush()
        flush()

    def _same_content(
        self, entry: FileEntry, digest: str, report: Report, pending_chunks: list[str]
    ) -> bool:
        """Skip the model when the content is already indexed: same file touched, or a
        moved/renamed/copied file (vectors reused by content hash)."""
        old = self.store.get(entry.path)
        if old is not None and old.status == "queued":
            old = None
        retry = old is not None and self._retry(old)
        if old is not None and old.content_hash == digest and not retry:
            self.store.touch(entry.path, entry.size, entry.mtime_ns)
            report.unchanged += 1
            if old.status == "pending_chunks":  # its chunks are still to come
                pending_chunks.append(entry.path)
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
        batch: list[tuple[_Job, str, Extracted, str | None]],
        report: Report,
        pending_chunks: list[str],
        timer: _Rate,
    ) -> None:
        outcomes = self.embedder.embed_each(
            [self._input(ex.card, job.entry.path, ex.kind) for job, _, ex, _ in batch]
        )
        if self.cancel.is_set():
            return  # maybe cut short inside the engine: these files are redone next run
        for (job, digest, ex, skip_reason), vec in zip(batch, outcomes, strict=True):
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
                kind=None if skip_reason else ex.kind,
                status=status,
                reason=skip_reason,  # an "ok" record with a reason: skipped, found by name
                content_hash=digest,
                preview=ex.card.preview,
                title=ex.title,
            )
            self.store.put(record, [ex.card], np.asarray(vec)[None, :])
            if ex.chunks:
                pending_chunks.append(entry.path)
                self._keep_chunks(entry.path, digest, ex)
            if skip_reason:
                report.skipped.append((entry.path, skip_reason))
                report.unsupported += 1
            elif job.is_new:
                report.added += 1
            else:
                report.updated += 1

    def _input(self, piece: Piece, path: str, kind: Kind | None) -> EmbedInput:
        """A piece as engine input; without an mmproj, pictures are left out (their text
        and the file's name remain)."""
        if piece.image is not None and not self.embedder.supports_images:
            text = piece.text or name_card(path, kind, self.settings).card.text
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
        if self.cancel.is_set():
            return  # the run is stopping (the engine too): the next run records it
        report.failed += 1
        report.errors.append((entry.path, reason))
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
        jobs = []
        for path in todo:
            rec = self.store.get(path)
            assert rec is not None
            job = _Job(FileEntry(path, rec.size, rec.mtime_ns, ""), is_new=False)
            kept = self._kept_chunks(rec)
            if kept is not None:  # read in tier 1 and unchanged since: no second read
                job.future = Future()
                job.future.set_result(kept)
            jobs.append(job)
        self._chunk_cache.clear()
        self._chunk_cache_bytes = 0
        # A file's chunk work grows with its size up to max_chunks (~4 bytes a token): the
        # ETA weighs files by that, not one file like another.
        cap = self.settings.max_chunks * self.settings.chunk_tokens * 4
        timer = _Rate(len(todo), [max(1, min(job.entry.size, cap)) for job in jobs])
        for i, job in enumerate(self._prefetched(jobs)):
            if self.cancel.is_set():
                break
            if self._slice_over():
                report.deferred += [j.entry.path for j in jobs[i:]]
                break
            prepared = self._result(job)
            job.future = None
            if prepared is None:
                break
            digest, result = prepared.digest, prepared.result
            path = job.entry.path
            rec = self.store.get(path)
            if rec is None or digest != rec.content_hash or isinstance(result, InputError):
                # Changed or unreadable since its card was embedded: the next run redoes it.
                timer.finish()
                continue
            # A few chunks per engine call: progress inside a long file, and Ctrl+C is
            # answered between them; a file cut short stays pending_chunks for the next run.
            outcomes = self._embed_chunks(result.chunks, path, result.kind, timer, report)
            if outcomes is None:
                return
            if any(isinstance(v, EngineUnavailable) for v in outcomes):
                timer.finish()  # the engine went away: stays pending_chunks for the next run
                continue
            pieces: list[Piece] = []
            vectors = []
            for piece, vec in zip(result.chunks, outcomes, strict=True):
                if isinstance(vec, np.ndarray):
                    pieces.append(piece)
                    vectors.append(vec)
            matrix = np.stack(vectors) if vectors else np.zeros((0, self.store.dims), np.float32)
            self.store.extend(path, pieces, matrix, status="ok")  # keeps the card's row
            timer.finish()
            self.store.maybe_commit()

    def _embed_chunks(
        self, chunks: Sequence[Piece], path: str, kind: Kind | None, timer: _Rate, report: Report
    ) -> list[np.ndarray | InputError] | None:
        """A long file's chunks, ``CHUNK_SLICE`` at a time, reporting progress inside it;
        None when the run was cancelled meanwhile."""
        outcomes: list[np.ndarray | InputError] = []
        for start in range(0, len(chunks), CHUNK_SLICE):
            self.on_progress(timer.progress("chunks", path, start, len(chunks)))
            part = chunks[start : start + CHUNK_SLICE]
            outcomes += self.embedder.embed_each([self._input(c, path, kind) for c in part])
            if self.cancel.is_set():
                return None
            for piece in part:
                tokens = _piece_tokens(piece, self._count_tokens, self.settings.image_pixel_budget)
                report.tokens += tokens
                timer.add_tokens(tokens)
        return outcomes

    def _needs_chunks(self, path: str) -> bool:
        rec = self.store.get(path)
        return rec is not None and rec.status == "pending_chunks"

    def _keep_chunks(self, path: str, digest: str, ex: Extracted) -> None:
        """Keep a long file's chunks for tier 2 while they fit in ``CHUNK_CACHE_BYTES``."""
        size = sum(
            len(c.text or "") + (c.image.width * c.image.height * 3 if c.image else 0)
            for c in ex.chunks
        )
        if self._chunk_cache_bytes + size <= CHUNK_CACHE_BYTES:
            self._chunk_cache[path] = (digest, ex)
            self._chunk_cache_bytes += size

    def _kept_chunks(self, rec: FileRecord) -> _Prepared | None:
        kept = self._chunk_cache.get(rec.path)
        if kept is None or kept[0] != rec.content_hash:
            return None
        try:
            st = os.stat(rec.path)
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
            return None  # changed since tier 1: read it again
        return _Prepared(kept[0], kept[1].kind, kept[1])


class _Rate:
    """Files/s, tokens/s and ETA for progress reports, over files taken in order.

    ``done`` counts finished files. The ETA counts work: each file's ``weights`` entry (1 by
    default), the file in progress by the share of its pieces done, so a long file moves it.
    """

    def __init__(self, total: int, weights: Sequence[int] | None = None) -> None:
        self.total = total
        self.weights = list(weights) if weights is not None else [1] * total
        self.work = sum(self.weights)
        self.done = 0
        self.worked = 0
        self.tokens = 0
        self.start = time.monotonic()

    def finish(self, files: int = 1) -> None:
        self.worked += sum(self.weights[self.done : self.done + files])
        self.done += files

    def add_tokens(self, tokens: int) -> None:
        self.tokens += tokens

    def progress(self, phase: str, path: str, part: int = 0, parts: int = 0) -> Progress:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        current = self.weights[self.done] if self.done < len(self.weights) else 0
        worked = self.worked + (current * part / parts if parts else 0.0)
        eta = (self.work - worked) * elapsed / worked if worked > 0 else None
        return Progress(
            phase, self.done, self.total, path, self.done / elapsed, self.tokens / elapsed, eta,
            part=part, parts=parts,
        )  # fmt: skip


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


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_BUG_TYPES = (AssertionError, NameError, AttributeError, TypeError, ImportError)


def _our_bug(err: BaseException) -> bool:
    """A programming error raised in launcher's own code (not in a library reading input)."""
    if not isinstance(err, _BUG_TYPES):
        return False
    tb, last = err.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and os.path.dirname(last.tb_frame.f_code.co_filename) == _PACKAGE_DIR


def failure_reason(err: BaseException) -> str:
    """``"ValueError: Crop exceeds page dimensions"``: the type and the first line."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    return f"{name}: {message[:200]}" if message else name


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
