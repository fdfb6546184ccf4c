"""Ranked search over the index: words and meaning fused, exact matches first, filters, rerank.

Two rankings of files: by meaning (cosine; vectors are unit-norm at write time, so one
matrix-vector product; ``argpartition`` takes the best rows and rows of the same file fold
into one hit that names its best piece) and by words (BM25 in the full-text index, every
word of every file). Reciprocal rank fusion (k = ``RRF_K``) merges them: a file near the
top of either list is near the top, and one near the top of both comes first. A query
found as typed (3+ characters: the whole query as a phrase in the text, or a substring of
the name or path) ranks first, marked exact: invoice numbers and error codes beat meaning.
Without the full-text index (sqlite3 without FTS5) the text of the semantic shortlist is
read for exact matches instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .engines import Engine
from .errors import InputError, LauncherError, ModelError, ModelNotFound, ModelSwitchedOff
from .fulltext import FullText, Term, TextFilter, TextHit, TextQuery, parse_query
from .indexed import open_indexed, unchanged
from .inputs import EmbedInput, RerankDoc
from .query import KIND_GROUPS, Hit, IndexStatus, Query, Results
from .store import Columns, FileRecord, Snapshot
from .walk import IndexSettings

log = logging.getLogger("launcher")

QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query."
EXACT_MIN_CHARS = 3
SHORTLIST = 200  # semantic candidates whose text is checked for an exact match
SHORTLIST_ROWS_PER_FILE = 20  # first-pass rows kept per wanted file (large indexes)
TEXT_CACHE_CHARS = 32_000_000  # file texts kept for exact matching and snippets
RERANK_TOP = 10
NO_RERANKER = "no reranker found (optional; `launcher.py models pull` gets it): Rerank is off"
RRF_K = 60  # reciprocal rank fusion: 1 / (RRF_K + rank), the usual constant
TEXT_CANDIDATES = 1000  # files the words ranking contributes
TEXT_KINDS = {"text", "code", "markdown", "html"}


def query_instruction(query: Query) -> str:
    """An explicit instruction wins; an image-only query ("more like this") uses the
    document instruction, so an indexed image finds itself first; else retrieval."""
    if query.instruction:
        return query.instruction
    if query.image is not None and not query.text.strip():
        return "Represent the user's input."
    return QUERY_INSTRUCTION


class Searcher:
    """Answers ``Query`` objects against the newest committed snapshot of the index."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        embedder: Callable[[], Engine],
        *,
        reranker: Callable[[], Any] | None = None,
        settings: IndexSettings | None = None,
        text: Callable[[], FullText | None] | None = None,
    ) -> None:
        self.settings = settings or IndexSettings()
        self._text = text or (lambda: None)
        self._snapshot = snapshot
        self._embedder = embedder
        self._reranker = reranker
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
        """The first ``query.top`` hits, as ``Results``: its ``total`` counts every file
        found (capped: the meaning ranking looks at ``max(top, SHORTLIST)`` files, words at
        ``TEXT_CANDIDATES``)."""
        snap = self._snapshot()
        if not snap.file_count or (not query.text.strip() and query.image is None):
            return Results()
        tables = snap.columns()
        allowed = self._file_mask(tables, query)
        want = max(query.top, SHORTLIST)
        qvec = np.zeros(0, np.float32)
        if len(snap):
            qvec = self.query_vector(query, snap.dims)
            scores = snap.search_scores(
                qvec, shortlist=want * SHORTLIST_ROWS_PER_FILE, row_mask=allowed[tables.row_file]
            )
        else:  # only queued (not yet embedded) files: they are found by words and name
            scores = np.zeros(0, np.float32)

        best = self._fold(scores, tables, want=want) if len(scores) else {}
        text = self._text()
        parsed = parse_query(query.text)
        words = self._words(text, parsed, query, tables, allowed)
        if text is not None:
            exact = self._exact_words(text, query, parsed, tables, allowed)
        else:
            exact = self._exact(query.text, snap, best, allowed)
        fused: dict[int, float] = {}
        for ranking in (best, words):
            for rank, fi in enumerate(ranking):
                fused[fi] = fused.get(fi, 0.0) + 1.0 / (RRF_K + rank + 1)
        for fi in exact:
            fused.setdefault(fi, 0.0)
        for fi in self._excluded(text, parsed, query, tables):  # -word: never shown
            fused.pop(fi, None)
        lists = sum(1 for ranking in (best, words) if ranking) or 1
        order = sorted(fused, key=lambda fi: (fi not in exact, -fused[fi]))
        hits: list[Hit] = []
        for fi in order:
            if len(hits) >= query.top:
                break
            if fi in best:
                row, score = best[fi]
            else:  # found by words or an exact match only
                row, score = self._file_best(snap, scores, fi, qvec)
            is_exact = fi in exact
            if not is_exact and fi not in words and score < query.min_score:
                continue
            line = exact.get(fi)
            if line is not None:  # show where the text is, not the nearest meaning
                row = self._row_for_line(snap, fi, line) or row
            hit = self._hit(snap, fi, row, score, is_exact, query.text)
            piece = text.piece(hit.path, parsed) if text is not None and fi in words else None
            hits.append(replace(
                _with_piece(hit, piece),
                relevance=min(1.0, fused[fi] * (RRF_K + 1) / lists),
                matched="+".join(m for m, ranking in (("words", words), ("meaning", best))
                                 if fi in ranking),
            ))  # fmt: skip
        total = sum(
            1 for fi in fused if fi in exact or fi in words or best[fi][1] >= query.min_score
        )
        return Results(
            hits,
            total=total,
            capped=len(best) >= want or len(words) >= TEXT_CANDIDATES,
            by_words=len(words) if text is not None and parsed else None,
        )

    def _words(
        self,
        text: FullText | None,
        parsed: TextQuery,
        query: Query,
        tables: Columns,
        allowed: np.ndarray,
    ) -> dict[int, TextHit]:
        """Files that have every word of the query, best BM25 first (file index -> hit)."""
        if text is None or not parsed:
            return {}
        found: dict[int, TextHit] = {}
        for hit in text.search(parsed, limit=TEXT_CANDIDATES, where=_text_filter(query)):
            fi = tables.find(hit.path)
            # The text index may hold a file the vector index has just dropped: skip it.
            if fi is not None and allowed[fi]:
                found[fi] = hit
        return found

    def _excluded(
        self, text: FullText | None, parsed: TextQuery, query: Query, tables: Columns
    ) -> set[int]:
        """Files with any ``-excluded`` word: left out whatever found them."""
        out: set[int] = set()
        if text is None:
            return out
        for term in parsed.negative:
            wanted = TextQuery((Term(term.text, phrase=term.phrase),))
            for hit in text.search(wanted, limit=1_000_000, where=_text_filter(query)):
                fi = tables.find(hit.path)
                if fi is not None:
                    out.add(fi)
        return out

    def _exact_words(
        self,
        text: FullText,
        query: Query,
        parsed: TextQuery,
        tables: Columns,
        allowed: np.ndarray,
    ) -> dict[int, int | None]:
        """Files with the whole query as typed: as a phrase in their text, or inside their
        name or path. Only plain queries (no quotes, no -exclusions) are exact matches."""
        needle = query.text.strip().lower()
        if len(needle) < EXACT_MIN_CHARS or parsed.negative or any(t.phrase for t in parsed.terms):
            return {}
        found: dict[int, int | None] = {
            int(i): None for i in tables.containing(needle) if allowed[i]
        }
        phrase = TextQuery((Term(" ".join(t.text for t in parsed.terms), phrase=True),))
        for hit in text.search(phrase, limit=TEXT_CANDIDATES, where=_text_filter(query)):
            fi = tables.find(hit.path)
            if fi is not None and allowed[fi]:
                found.setdefault(fi, None)
        return found

    def _file_mask(self, tables: Columns, query: Query) -> np.ndarray:
        mask = np.ones(len(tables), dtype=bool)
        if query.kinds:
            wanted: set[str] = set()
            for k in query.kinds:
                wanted |= KIND_GROUPS.get(k, {k})
            mask &= tables.kind_mask(wanted)
        if query.folder is not None:
            folder = os.path.abspath(os.path.expanduser(str(query.folder))).rstrip(os.sep) + os.sep
            mask &= tables.under(folder)
        if query.modified_after is not None or query.modified_before is not None:
            mtimes = tables.mtime_ns / 1e9
            if query.modified_after is not None:
                mask &= mtimes >= query.modified_after.timestamp()
            if query.modified_before is not None:
                mask &= mtimes <= query.modified_before.timestamp()
        return mask

    @staticmethod
    def _fold(scores: np.ndarray, tables: Columns, want: int) -> dict[int, tuple[int, float]]:
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
        snap: Snapshot, scores: np.ndarray, fi: int, qvec: np.ndarray
    ) -> tuple[int, float]:
        """File ``fi``'s best row and its cosine; (-1, 0.0) for a file without vectors. Rows
        the first pass of a large index left out (-inf) are scored exactly here."""
        rows = snap.columns().matrix_rows_of(fi)
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
        snap: Snapshot,
        shortlist: dict[int, tuple[int, float]],
        allowed: np.ndarray,
    ) -> dict[int, int | None]:
        """Files where the query appears as typed -> the 1-based line of the first match in
        the text (None when it matched the name, path, title or preview)."""
        needle = text.strip().lower()
        if len(needle) < EXACT_MIN_CHARS:
            return {}
        found: dict[int, int | None] = {
            int(i): None for i in snap.columns().containing(needle) if allowed[i]
        }
        for fi in list(shortlist)[:SHORTLIST]:
            rec = snap.record(fi)
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
    def _row_for_line(snap: Snapshot, fi: int, line: int) -> int | None:
        """The chunk row of file ``fi`` whose line range holds ``line``."""
        for row in snap.columns().matrix_rows_of(fi):
            loc = snap.row_owner(int(row))[1].locator
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

        try:  # only the file that was indexed: never a symlink or FIFO swapped in since
            with open_indexed(rec, follow_symlinks=self.settings.follow_symlinks) as fh:
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

    def _hit(self, snap: Snapshot, fi: int, row: int, score: float, exact: bool, text: str) -> Hit:
        rec = snap.record(fi)
        ref = snap.row_owner(row)[1] if row >= 0 else None
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
            text = _pdf_page_text(rec, loc.page, self.settings.follow_symlinks)
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
        except ModelSwitchedOff:
            self._reranker = None
            return False
        except ModelNotFound:  # it is optional: one short line, not the whole search path
            log.warning(NO_RERANKER)
            self._reranker = None
            return False
        except LauncherError as err:  # there is one, but it cannot be used: say why
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
            outcome: list[float | InputError] = []
            docs: list[RerankDoc] = []
            for hit in head:
                try:
                    docs.append(self._rerank_doc(hit, vision))
                    outcome.append(0.0)  # placeholder for its score
                except InputError as err:  # e.g. its picture is unreadable now
                    outcome.append(err)
                except OSError as err:  # gone or locked since it was indexed
                    outcome.append(InputError(f"cannot read it: {err.strerror or err}"))
            q_images = (
                (self._as_indexed(query.image),) if query.image is not None and vision else ()
            )
            scores = iter(reranker.score_each(query.text or None, docs, query_images=q_images))
        outcome = [next(scores) if isinstance(o, float) else o for o in outcome]
        rescored, unscored = [], []
        for hit, s in zip(head, outcome, strict=True):
            if isinstance(s, float):
                rescored.append(replace(hit, rerank_score=s))
            else:  # shown unscored (after the scored ones), not as a made-up 0.0
                log.warning("reranking %s failed: %s", hit.path, s)
                unscored.append(replace(hit, rerank_score=None, rerank_error=str(s)))
        rescored.sort(key=lambda h: -(h.rerank_score or 0.0))
        return rescored + unscored + tail

    def _rerank_doc(self, hit: Hit, with_images: bool) -> RerankDoc:
        """A file's card for the reranker: the picture itself when the reranker has its
        mmproj, else the name and matching text."""
        if hit.kind == "image" and with_images and self._unchanged(hit.path):
            return RerankDoc(images=(self._as_indexed(hit.path),))
        return RerankDoc(text=f"{hit.name}\n{hit.snippet}".strip())

    def _unchanged(self, path: str) -> bool:
        """``path`` is in the index and still the file that was indexed (``launcher.indexed``)."""
        rec = self._snapshot().get(path)
        return rec is not None and unchanged(rec, follow_symlinks=self.settings.follow_symlinks)

    # -- status -----------------------------------------------------------------------

    def status(self) -> IndexStatus:
        cols = self._snapshot().columns()
        return IndexStatus(
            files=len(cols),
            pending=cols.status_count("pending_chunks"),
            failed=cols.status_count("failed"),
            queued=cols.status_count("queued"),
        )


def _text_filter(query: Query) -> TextFilter:
    """The query's filters for the full-text index (the same ones ``_file_mask`` applies)."""
    kinds: set[str] = set()
    for k in query.kinds:
        kinds |= KIND_GROUPS.get(k, {k})
    folder = None
    if query.folder is not None:
        folder = os.path.abspath(os.path.expanduser(str(query.folder)))
    after = query.modified_after.timestamp() if query.modified_after is not None else None
    before = query.modified_before.timestamp() if query.modified_before is not None else None
    return TextFilter(
        kinds=frozenset(kinds),
        folder=folder,
        mtime_after_ns=int(after * 1e9) if after is not None else None,
        # _file_mask keeps mtime <= before; the text filter is "<", so one tick past it
        mtime_before_ns=int(before * 1e9) + 1 if before is not None else None,
    )


def _with_piece(hit: Hit, piece: TextHit | None) -> Hit:
    """The hit located and quoted at its best-matching piece of text, marks included."""
    if piece is None or not piece.marks:
        return hit
    loc = piece.locator
    return replace(
        hit,
        snippet=piece.snippet,
        marks=piece.marks,
        page=loc.page if loc.page is not None else hit.page,
        line_start=loc.line_start,
        line_end=loc.line_end,
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


def _pdf_page_text(rec: FileRecord, page: int, follow_symlinks: bool) -> str | None:
    import pypdfium2 as pdfium

    try:
        with open_indexed(rec, follow_symlinks=follow_symlinks) as fh:
            pdf = pdfium.PdfDocument(fh)
            try:
                if not 1 <= page <= len(pdf):
                    return None
                textpage = pdf[page - 1].get_textpage()
                text = textpage.get_text_bounded()
                textpage.close()
                return str(text)
            finally:
                pdf.close()
    except (pdfium.PdfiumError, OSError, LauncherError):
        return None
