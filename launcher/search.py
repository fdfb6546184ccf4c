"""Ranked search over the index: cosine similarity, folding, exact matches, filters, rerank.

Vectors are unit-norm at write time, so cosine is one matrix-vector product; ``argpartition``
takes the best rows; rows of the same file fold into one hit that names its best piece. A
query found as typed (3+ characters) in a file's name, path or text ranks first, marked
exact: invoice numbers and error codes beat meaning. Text is checked for the semantic
shortlist and for every file whose name or path matches (reading all files per query would
not scale).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .embedder import Embedder
from .errors import LauncherError, ModelError
from .inputs import EmbedInput, RerankDoc
from .query import Hit, IndexStatus, Query
from .store import FileRecord, RowRef, Snapshot
from .walk import IndexSettings

log = logging.getLogger("launcher")

QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query."
EXACT_MIN_CHARS = 3
SHORTLIST = 200  # semantic candidates whose text is checked for an exact match
SHORTLIST_ROWS_PER_FILE = 20  # first-pass rows kept per wanted file (large indexes)
TEXT_CACHE_CHARS = 32_000_000  # file texts kept for exact matching and snippets
RERANK_TOP = 10
TEXT_KINDS = {"text", "code", "markdown", "html"}
KIND_GROUPS = {
    # the filter names users see -> extraction kinds
    "text": {"text"},
    "code": {"code"},
    "document": {"markdown", "html", "office"},
    "pdf": {"pdf"},
    "image": {"image"},
    "video": {"video"},
    "audio": {"audio"},
}


def query_instruction(query: Query) -> str:
    """An explicit instruction wins; an image-only query ("more like this") uses the
    document instruction, so an indexed image finds itself first; else retrieval."""
    if query.instruction:
        return query.instruction
    if query.image is not None and not query.text.strip():
        return "Represent the user's input."
    return QUERY_INSTRUCTION


@dataclass(frozen=True)
class _Tables:
    """Per-snapshot arrays for filtering and folding (built once per generation)."""

    generation: tuple[int, str]  # (number, id): numbers start again in a new index folder
    files: tuple[FileRecord, ...]
    row_file: np.ndarray  # row -> index into files
    row_ref: tuple[RowRef, ...]
    kinds: np.ndarray  # per file
    mtimes: np.ndarray  # per file, seconds
    paths_lower: tuple[str, ...]


def _tables(snap: Snapshot) -> _Tables:
    files = snap.files
    index = {rec.path: i for i, rec in enumerate(files)}
    owners = snap.owners()
    row_file = np.fromiter((index[rec.path] for rec, _ in owners), np.int64, len(owners))
    return _Tables(
        generation=(snap.generation, snap.generation_id),
        files=files,
        row_file=row_file,
        row_ref=tuple(ref for _, ref in owners),
        kinds=np.array([rec.kind or "" for rec in files], dtype=object),
        mtimes=np.array([rec.mtime_ns / 1e9 for rec in files], dtype=np.float64),
        paths_lower=tuple(rec.path.lower() for rec in files),
    )


class Searcher:
    """Answers ``Query`` objects against the newest committed snapshot of the index."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        embedder: Callable[[], Embedder],
        *,
        reranker: Callable[[], Any] | None = None,
        settings: IndexSettings | None = None,
    ) -> None:
        self.settings = settings or IndexSettings()
        self._snapshot = snapshot
        self._embedder = embedder
        self._reranker = reranker
        self._tables: _Tables | None = None
        self._lock = threading.Lock()
        self._qcache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._text_cache: OrderedDict[tuple[str, int], str | None] = OrderedDict()
        self._text_bytes = 0

    # -- embedding the query ----------------------------------------------------------

    def query_vector(self, query: Query, dims: int) -> np.ndarray:
        instruction = query_instruction(query)
        key = (query.text, instruction)
        if query.image is None and key in self._qcache:
            self._qcache.move_to_end(key)
            return self._qcache[key]
        item = EmbedInput(
            text=query.text or None,
            images=(self._as_indexed(query.image),) if query.image is not None else (),
            instruction=instruction,
        )
        with self._lock:  # one model, one caller at a time
            vec = self._embedder().embed([item], dims=dims)[0]
        if query.image is None:
            self._qcache[key] = vec
            while len(self._qcache) > 256:
                self._qcache.popitem(last=False)
        return vec

    def _as_indexed(self, image: Any) -> Any:
        """Decode and fit a query image exactly as indexing does."""
        from PIL import Image

        from .extract import fit_image, load_image

        if isinstance(image, Image.Image):
            return fit_image(image, self.settings.image_max_side)
        if isinstance(image, (str, os.PathLike)):
            s = self.settings
            return load_image(os.fspath(image), s.image_max_side, s.max_image_pixels)[0]
        return image

    # -- search -----------------------------------------------------------------------

    def search(self, query: Query) -> list[Hit]:
        snap = self._snapshot()
        if not snap.files or (not query.text.strip() and query.image is None):
            return []
        tables = self._tables
        if (
            tables is None
            or tables.generation != (snap.generation, snap.generation_id)
            or len(tables.files) != len(snap.files)
        ):
            tables = self._tables = _tables(snap)
        allowed = self._file_mask(tables, query)
        want = max(query.top, SHORTLIST)
        qvec = np.zeros(0, np.float32)
        if len(snap):
            qvec = self.query_vector(query, snap.dims)
            scores = snap.search_scores(
                qvec, shortlist=want * SHORTLIST_ROWS_PER_FILE, row_mask=allowed[tables.row_file]
            )
        else:  # only queued (not yet embedded) files: they are found by name alone
            scores = np.zeros(0, np.float32)

        best = self._fold(scores, tables, want=want) if len(scores) else {}
        exact = self._exact(query.text, tables, best, allowed)
        hits: list[Hit] = []
        for fi in set(best) | set(exact):
            if fi in best:
                row, score = best[fi]
            else:  # found by an exact match only
                row, score = self._file_best(snap, scores, tables, fi, qvec)
            is_exact = fi in exact
            line = exact.get(fi)
            if line is not None:  # show where the text is, not the nearest meaning
                row = self._row_for_line(tables, fi, line) or row
            if not is_exact and score < query.min_score:
                continue
            hits.append(self._hit(tables, fi, row, score, is_exact, query.text))
        hits.sort(key=lambda h: (not h.exact, -h.score))
        return hits[: query.top]

    def _file_mask(self, tables: _Tables, query: Query) -> np.ndarray:
        mask = np.ones(len(tables.files), dtype=bool)
        if query.kinds:
            wanted: set[str] = set()
            for k in query.kinds:
                wanted |= KIND_GROUPS.get(k, {k})
            mask &= np.isin(tables.kinds, sorted(wanted))
        if query.folder is not None:
            folder = os.path.abspath(os.path.expanduser(str(query.folder))).rstrip(os.sep) + os.sep
            mask &= np.array([p.startswith(folder) for p in (f.path for f in tables.files)])
        if query.modified_after is not None:
            mask &= tables.mtimes >= query.modified_after.timestamp()
        if query.modified_before is not None:
            mask &= tables.mtimes <= query.modified_before.timestamp()
        return mask

    @staticmethod
    def _fold(scores: np.ndarray, tables: _Tables, want: int) -> dict[int, tuple[int, float]]:
        """Best row per file for the ``want`` best files (argpartition, widened as needed)."""
        n = scores.shape[0]
        k = min(n, want * 4)
        while True:
            idx = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
            idx = idx[np.argsort(-scores[idx], kind="stable")]
            best: dict[int, tuple[int, float]] = {}
            for row in idx:
                s = float(scores[row])
                if s == -np.inf:
                    break
                fi = int(tables.row_file[row])
                if fi not in best:
                    best[fi] = (int(row), s)
                    if len(best) >= want:
                        return best
            if k >= n:
                return best
            k = min(n, k * 4)

    @staticmethod
    def _file_best(
        snap: Snapshot, scores: np.ndarray, tables: _Tables, fi: int, qvec: np.ndarray
    ) -> tuple[int, float]:
        """File ``fi``'s best row and its cosine; (-1, 0.0) for a file without vectors. Rows
        the first pass of a large index left out (-inf) are scored exactly here."""
        rows = np.nonzero(tables.row_file == fi)[0]
        if rows.size == 0:
            return -1, 0.0
        sims = scores[rows]
        if not np.isfinite(sims).any():
            sims = snap.matrix()[rows].astype(np.float32) @ np.asarray(qvec, np.float32)
        best = int(np.argmax(sims))
        return int(rows[best]), float(sims[best])

    def _exact(
        self,
        text: str,
        tables: _Tables,
        shortlist: dict[int, tuple[int, float]],
        allowed: np.ndarray,
    ) -> dict[int, int | None]:
        """Files where the query appears as typed -> the 1-based line of the first match in
        the text (None when it matched the name, path, title or preview)."""
        needle = text.strip().lower()
        if len(needle) < EXACT_MIN_CHARS:
            return {}
        found: dict[int, int | None] = {
            i: None for i, p in enumerate(tables.paths_lower) if needle in p and allowed[i]
        }
        for fi in list(shortlist)[:SHORTLIST]:
            rec = tables.files[fi]
            content = self._file_text(rec)
            if content is not None:
                pos = content.lower().find(needle)
                if pos >= 0:
                    found[fi] = content.count("\n", 0, pos) + 1
                    continue
            if fi in found:
                continue
            if needle in (rec.preview or "").lower() or needle in (rec.title or "").lower():
                found[fi] = None
        return found

    @staticmethod
    def _row_for_line(tables: _Tables, fi: int, line: int) -> int | None:
        """The chunk row of file ``fi`` whose line range holds ``line``."""
        for row in np.nonzero(tables.row_file == fi)[0]:
            loc = tables.row_ref[int(row)].locator
            if loc.line_start is not None and loc.line_start <= line <= (loc.line_end or 0):
                return int(row)
        return None

    def _file_text(self, rec: FileRecord) -> str | None:
        """The text of a text-like file (cached per path and mtime), else None."""
        if rec.kind not in TEXT_KINDS:
            return None
        key = (rec.path, rec.mtime_ns)
        if key in self._text_cache:
            return self._text_cache[key]
        from .extract import decode_text

        try:
            with open(rec.path, "rb") as fh:
                data = fh.read(4_000_000)
            text: str | None = decode_text(data)
        except (OSError, ValueError, LauncherError):
            text = None
        self._text_cache[key] = text
        self._text_bytes += len(text or "")
        # Bounded by size, not count: a few long files must not pin hundreds of MB.
        while self._text_cache and (
            self._text_bytes > TEXT_CACHE_CHARS or len(self._text_cache) > 2048
        ):
            _, old = self._text_cache.popitem(last=False)
            self._text_bytes -= len(old or "")
        return text

    def _hit(self, tables: _Tables, fi: int, row: int, score: float, exact: bool, text: str) -> Hit:
        rec = tables.files[fi]
        ref = tables.row_ref[row] if row >= 0 else None
        loc = ref.locator if ref is not None and ref.role == "chunk" else None
        snippet = self.snippet(rec, loc, text)
        return Hit(
            path=rec.path,
            name=os.path.basename(rec.path),
            folder=os.path.dirname(rec.path),
            kind=rec.kind or "file",
            score=score,
            snippet=snippet,
            exact=exact,
            page=loc.page if loc else None,
            line_start=loc.line_start if loc else None,
            line_end=loc.line_end if loc else None,
            mtime=rec.mtime_ns / 1e9,
            size=rec.size,
            has_thumbnail=rec.kind in ("image", "pdf", "video"),
            queued=rec.status == "queued",
        )

    def snippet(self, rec: FileRecord, loc: Any, query_text: str, limit: int = 240) -> str:
        """The matching text: the best chunk's lines or page, else the file's preview."""
        if rec.kind == "image":
            return ""
        text: str | None = None
        if loc is not None and loc.line_start is not None and rec.kind in TEXT_KINDS:
            content = self._file_text(rec)
            if content is not None:
                lines = content.splitlines()
                text = "\n".join(lines[loc.line_start - 1 : (loc.line_end or loc.line_start)])
        elif loc is not None and loc.page is not None and rec.kind == "pdf":
            text = _pdf_page_text(rec.path, loc.page)
        if not text:
            text = rec.preview or ""
        return _around(" ".join(text.split()), query_text, limit)

    # -- reranking --------------------------------------------------------------------

    @property
    def can_rerank(self) -> bool:
        if self._reranker is None:
            return False
        try:
            self._reranker()
        except (ModelError, LauncherError) as err:
            log.warning("reranking unavailable: %s", err)
            self._reranker = None
            return False
        return True

    def rerank(self, query: Query, hits: Sequence[Hit], top: int = RERANK_TOP) -> list[Hit]:
        """The first ``top`` hits re-scored by the reranker (P(yes)), best first; the rest
        keep their order after them."""
        if self._reranker is None:
            raise ModelError("no reranker model is configured")
        head, tail = list(hits[:top]), list(hits[top:])
        if not head:
            return list(hits)
        with self._lock:
            reranker = self._reranker()
            vision = reranker.supports_images
            docs = [self._rerank_doc(h, vision) for h in head]
            q_images = (
                (self._as_indexed(query.image),) if query.image is not None and vision else ()
            )
            scores = reranker.score_each(query.text or None, docs, query_images=q_images)
        rescored = []
        for hit, s in zip(head, scores, strict=True):
            value = float(s) if isinstance(s, float) else 0.0
            rescored.append(replace(hit, rerank_score=value))
        rescored.sort(key=lambda h: -(h.rerank_score or 0.0))
        return rescored + tail

    def _rerank_doc(self, hit: Hit, with_images: bool) -> RerankDoc:
        """A file's card for the reranker: the picture itself when the reranker has its
        mmproj, else the name and matching text."""
        if hit.kind == "image" and with_images:
            return RerankDoc(images=(self._as_indexed(hit.path),))
        return RerankDoc(text=f"{hit.name}\n{hit.snippet}".strip())

    # -- status -----------------------------------------------------------------------

    def status(self) -> IndexStatus:
        snap = self._snapshot()
        files = snap.files
        n = Counter(f.status for f in files)
        return IndexStatus(
            files=len(files), pending=n["pending_chunks"], failed=n["failed"], queued=n["queued"]
        )


def _around(text: str, query: str, limit: int) -> str:
    """A window of ``text`` around the first query word found, at most ``limit`` chars."""
    if len(text) <= limit:
        return text
    lower = text.lower()
    pos = -1
    needle = query.strip().lower()
    if needle:
        pos = lower.find(needle)
        if pos < 0:
            for word in sorted(needle.split(), key=len, reverse=True):
                if len(word) >= 3 and (pos := lower.find(word)) >= 0:
                    break
    if pos < 0:
        return text[: limit - 1].rstrip() + "…"
    start = max(0, pos - limit // 3)
    end = min(len(text), start + limit)
    out = text[start:end].strip()
    return ("…" if start > 0 else "") + out + ("…" if end < len(text) else "")


def _pdf_page_text(path: str, page: int) -> str | None:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(path)
    except (pdfium.PdfiumError, OSError):
        return None
    try:
        if not 1 <= page <= len(pdf):
            return None
        textpage = pdf[page - 1].get_textpage()
        text = textpage.get_text_bounded()
        textpage.close()
        return str(text)
    except pdfium.PdfiumError:
        return None
    finally:
        pdf.close()
