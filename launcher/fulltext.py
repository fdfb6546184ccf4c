"""The full-text index: every extracted word of every file, in SQLite FTS5.

One database file, ``text.db``, beside the vector store. A file's text is one document, so
all the words of a query must appear somewhere in the same file (not the same chunk), and
BM25 ranks whole files; the chunk boundaries (``spans``: character offset -> locator) say
where in the file the best match is, so a hit still points at its page or lines.

Tables::

    docs      one row per file: path, name, folder, body (the extracted text), spans,
              and the size/mtime/kind of the version the text was taken from
    words     FTS5 over docs (external content): unicode61, accents folded, prefix indexes;
              codes such as INV-2024-0917 or snake_case_name are phrases of their parts
    grams     FTS5 trigram over docs, only for files with scripts written without spaces
              (Chinese, Japanese, Thai ...): a substring of such a sentence is found

Text is stored once (``docs``); both FTS tables index it without copying it. The database
runs in WAL mode, so the page keeps answering while a run writes.

Query language (``parse_query``): plain words must all match (a word of 3+ characters
also matches as a prefix, so results appear while typing), ``"quoted phrases"`` match as
typed, ``-word`` excludes. Anything FTS5 would reject (``*``, ``:``, ``NEAR``, unbalanced
quotes) is quoted into a literal, never an error.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StoreError
from .extract import Locator

DB_NAME = "text.db"
SCHEMA_VERSION = 1
# bm25 weights of the columns (name, folder, body): a word in a file's name says more
# about the file than the same word somewhere in its text.
WEIGHTS = (8.0, 2.0, 1.0)
MAX_BODY_CHARS = 16_000_000  # text kept per file; past this a file is findable by its head
PREFIX_MIN_CHARS = 3  # shorter words match whole only ("a*" would match everything)
SNIPPET_CHARS = 240
MARK_START, MARK_END = "\x02", "\x03"

# Scripts written without spaces between words: unicode61 makes a whole sentence one
# token, so these go to the trigram table, where any substring of 3+ characters is found.
_NO_SPACE_SCRIPTS = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]"
)
_WORD = re.compile(r"\w", re.UNICODE)
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    folder TEXT NOT NULL,
    body TEXT NOT NULL,
    spans TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    kind TEXT,
    has_grams INTEGER NOT NULL DEFAULT 0
);
CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5(
    name, folder, body, content='docs', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2', prefix='2 3'
);
CREATE VIRTUAL TABLE IF NOT EXISTS grams USING fts5(
    name, folder, body, content='docs', content_rowid='id',
    tokenize='trigram'
);
"""


class FullTextUnavailable(StoreError):
    """Python's sqlite3 was built without FTS5 (or trigram): full-text search is off."""


@dataclass(frozen=True)
class TextDoc:
    """A file's extracted text and where its pieces start (character offset -> locator)."""

    path: str
    size: int
    mtime_ns: int
    kind: str | None
    body: str
    spans: tuple[tuple[int, Locator], ...] = ()


@dataclass(frozen=True)
class Term:
    """One query term: a word (or a code, a phrase of its parts) or a quoted phrase."""

    text: str
    phrase: bool = False  # quoted: matched as typed, no prefix
    exclude: bool = False

    @property
    def no_space_script(self) -> bool:
        return bool(_NO_SPACE_SCRIPTS.search(self.text))


@dataclass(frozen=True)
class TextQuery:
    terms: tuple[Term, ...]

    @property
    def positive(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.exclude)

    @property
    def negative(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.exclude)

    def __bool__(self) -> bool:
        return bool(self.positive)


@dataclass(frozen=True)
class TextHit:
    """A file the text index matched, best first; ``rank`` is 0-based."""

    path: str
    rank: int
    bm25: float  # FTS5's bm25: lower is better
    snippet: str = ""
    marks: tuple[tuple[int, int], ...] = ()  # matched spans of ``snippet`` (start, end)
    locator: Locator = field(default_factory=Locator)


@dataclass(frozen=True)
class TextFilter:
    """The page's filters, applied inside the query so a narrow filter still fills a page."""

    kinds: frozenset[str] = frozenset()  # extraction kinds; empty = all
    folder: str | None = None  # only paths under this folder
    mtime_after_ns: int | None = None
    mtime_before_ns: int | None = None


def fold(text: str) -> str:
    """Lower case without accents: how the word table compares words."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def parse_query(text: str) -> TextQuery:
    """Words, ``"phrases"`` and ``-excluded`` words; input FTS5 would reject becomes literal."""
    terms: list[Term] = []
    for m in _TOKEN.finditer(text):
        if m.group(3) is not None:
            word = m.group(3)
            exclude = word.startswith("-") and len(word) > 1
            word = word[1:] if exclude else word
            if _WORD.search(word):
                terms.append(Term(word, exclude=exclude))
        else:
            phrase = m.group(2)
            if _WORD.search(phrase):
                terms.append(Term(phrase, phrase=True, exclude=m.group(1) == "-"))
    return TextQuery(tuple(terms))


def _literal(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _word_expr(term: Term) -> str:
    lit = _literal(term.text)
    if term.phrase or len(term.text) < PREFIX_MIN_CHARS:
        return lit
    # The word itself or a longer word it starts: a whole-word match counts twice in bm25,
    # so "cat" ranks a file about cats above one about catalogues.
    return f"({lit} OR {lit}*)"


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _split_folder(path: str) -> tuple[str, str]:
    """The name and folder as words to index (undecodable bytes become U+FFFD)."""
    folder, name = os.path.split(_key(path).decode("utf-8", "replace"))
    return name, folder


def _key(path: str) -> bytes:
    """Paths are stored as their bytes: names that are not valid UTF-8 round-trip."""
    return path.encode("utf-8", "surrogateescape")


def _path(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


class FullText:
    """The text index of one index folder. One writer at a time (the store's lock);
    any number of readers, each thread with its own connection."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        self.path = path
        self.writable = writable
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        if writable:
            self._create()
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def replaced(self) -> bool:
        """True when the database file this object opened is gone or another one now."""
        now = self._file_identity()
        if self._identity is None:  # not there at open: connections are made lazily
            self._identity = now
            return False
        return now != self._identity

    @classmethod
    def open(cls, index_dir: Path, *, writable: bool = True) -> FullText:
        check_fts5()
        return cls(Path(index_dir) / DB_NAME, writable=writable)

    # -- connections ---------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.writable and not self.path.exists():
                raise StoreError(f"no text index at {self.path}")
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if not self.writable:
                conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        if fresh:  # private from the first byte: it holds the text of every file
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version not in (0, SCHEMA_VERSION):
            raise StoreError(
                f"{self.path} has text index version {version}; this launcher reads "
                f"{SCHEMA_VERSION} (run 'launcher index --rebuild')"
            )
        with self._transaction(conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes into one transaction: all of them land, or none (kill -9 included)."""
        self._require_writer()
        with self._transaction(self._conn()):
            yield

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> FullText:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writer(self) -> None:
        if not self.writable:
            raise StoreError("the text index was opened read-only")

    # -- writing -------------------------------------------------------------------------

    def put(self, doc: TextDoc) -> None:
        """Add a file's text, replacing what the index had for that path."""
        self._require_writer()
        conn = self._conn()
        body = doc.body[:MAX_BODY_CHARS]
        name, folder = _split_folder(doc.path)
        grams = int(bool(_NO_SPACE_SCRIPTS.search(name) or _NO_SPACE_SCRIPTS.search(body)))
        spans = json.dumps([[start, loc.to_json()] for start, loc in doc.spans])
        with self._transaction(conn):
            self._delete(conn, doc.path)
            cur = conn.execute(
                "INSERT INTO docs (path, name, folder, body, spans, size, mtime_ns, kind,"
                " has_grams) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_key(doc.path), name, folder, body, spans, doc.size, doc.mtime_ns, doc.kind,
                 grams),
            )  # fmt: skip
            row = (cur.lastrowid, name, folder, body)
            conn.execute("INSERT INTO words (rowid, name, folder, body) VALUES (?, ?, ?, ?)", row)
            if grams:
                conn.execute(
                    "INSERT INTO grams (rowid, name, folder, body) VALUES (?, ?, ?, ?)", row
                )

    def _delete(self, conn: sqlite3.Connection, path: str) -> bool:
        old = conn.execute(
            "SELECT id, name, folder, body, has_grams FROM docs WHERE path = ?", (_key(path),)
        ).fetchone()
        if old is None:
            return False
        doc_id, name, folder, body, grams = old
        # External-content tables are told the old values so they can drop its tokens.
        conn.execute(
            "INSERT INTO words (words, rowid, name, folder, body) VALUES ('delete', ?, ?, ?, ?)",
            (doc_id, name, folder, body),
        )
        if grams:
            conn.execute(
                "INSERT INTO grams (grams, rowid, name, folder, body)"
                " VALUES ('delete', ?, ?, ?, ?)",
                (doc_id, name, folder, body),
            )
        conn.execute("DELETE FROM docs WHERE id = ?", (doc_id,))
        return True

    def remove(self, paths: Iterable[str]) -> int:
        """Forget these files; returns how many the index had."""
        self._require_writer()
        conn = self._conn()
        with self._transaction(conn):
            return sum(self._delete(conn, p) for p in paths)

    def move(self, old: str, new: str) -> bool:
        """A file renamed or moved: its text is kept, its name and folder words change."""
        self._require_writer()
        conn = self._conn()
        with self._transaction(conn):
            row = conn.execute(
                "SELECT body, spans, size, mtime_ns, kind FROM docs WHERE path = ?", (_key(old),)
            ).fetchone()
            if row is None:
                return False
            body, spans, size, mtime_ns, kind = row
            locs = tuple((int(s), Locator.from_json(j)) for s, j in json.loads(spans))
            self.put(TextDoc(new, size, mtime_ns, kind, body, locs))
            self._delete(conn, old)
            return True

    def clear(self) -> None:
        self._require_writer()
        conn = self._conn()
        with self._transaction(conn):
            conn.execute("DELETE FROM docs")
            conn.execute("INSERT INTO words (words) VALUES ('delete-all')")
            conn.execute("INSERT INTO grams (grams) VALUES ('delete-all')")

    # -- reading -------------------------------------------------------------------------

    def signatures(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of the version each file's text was taken from."""
        rows = self._conn().execute("SELECT path, size, mtime_ns FROM docs")
        return {_path(key): (size, mtime_ns) for key, size, mtime_ns in rows}

    def signature(self, path: str) -> tuple[int, int] | None:
        """(size, mtime_ns) of the version of this file whose text is held, if any."""
        row = (
            self._conn()
            .execute("SELECT size, mtime_ns FROM docs WHERE path = ?", (_key(path),))
            .fetchone()
        )
        return (int(row[0]), int(row[1])) if row is not None else None

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM docs").fetchone()[0])

    def stats(self) -> tuple[int, int]:
        """(files, characters of text held)."""
        files, chars = self._conn().execute("SELECT count(*), total(length(body)) FROM docs")\
            .fetchone()  # fmt: skip
        return int(files), int(chars)

    def search(
        self,
        query: str | TextQuery,
        *,
        limit: int = 500,
        where: TextFilter | None = None,
        snippets: int = 0,
    ) -> list[TextHit]:
        """Files matching every positive term and no excluded one, best BM25 first; the
        first ``snippets`` hits carry the best-matching piece, its locator and marks."""
        q = parse_query(query) if isinstance(query, str) else query
        if not q or (not self.writable and not self.path.exists()):
            return []  # nothing to look for, or no text indexed yet
        sql, params = self._select(q, where or TextFilter(), limit)
        conn = self._conn()
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as err:  # a query FTS5 still refuses: no match
            if "fts5" in str(err).lower() or "syntax" in str(err).lower():
                return []
            raise
        hits = []
        for rank, (doc_id, key, score) in enumerate(rows):
            if rank < snippets:
                snippet, marks, loc = self._best_piece(conn, q, doc_id)
                hits.append(TextHit(_path(key), rank, score, snippet, marks, loc))
            else:
                hits.append(TextHit(_path(key), rank, score))
        return hits

    def piece(self, path: str, query: str | TextQuery) -> TextHit | None:
        """The best-matching piece of one file for ``query`` (snippet, marks, locator)."""
        q = parse_query(query) if isinstance(query, str) else query
        if not self.path.exists() and not self.writable:
            return None
        conn = self._conn()
        row = conn.execute("SELECT id FROM docs WHERE path = ?", (_key(path),)).fetchone()
        if row is None or not q:
            return None
        snippet, marks, loc = self._best_piece(conn, q, row[0])
        return TextHit(path, 0, 0.0, snippet, marks, loc)

    def _select(self, q: TextQuery, where: TextFilter, limit: int) -> tuple[str, list[object]]:
        words = [t for t in q.positive if not t.no_space_script]
        grams = [t for t in q.positive if t.no_space_script]
        long_grams = [t for t in grams if len(t.text) >= 3]
        short_grams = [t for t in grams if len(t.text) < 3]
        excluded = " OR ".join(_word_expr(t) for t in q.negative)
        params: list[object] = []
        cond: list[str] = []
        if words:
            table = "words"
            expr = " AND ".join(_word_expr(t) for t in words)
            if excluded:
                expr = f"({expr}) NOT ({excluded})"
            params.append(expr)
            if long_grams:
                cond.append("d.id IN (SELECT rowid FROM grams WHERE grams MATCH ?)")
                params.append(" AND ".join(_literal(t.text) for t in long_grams))
        elif long_grams:
            table = "grams"
            params.append(" AND ".join(_literal(t.text) for t in long_grams))
        else:  # only 1-2 character CJK terms: a scan of the files that have such text
            table = ""
        if not words and excluded:
            cond.append("d.id NOT IN (SELECT rowid FROM words WHERE words MATCH ?)")
            params.append(excluded)
        for t in short_grams:
            cond.append(
                "d.has_grams = 1 AND (d.body LIKE ? ESCAPE '\\' OR d.name LIKE ? ESCAPE '\\')"
            )
            params += [_like(t.text), _like(t.text)]
        if where.kinds:
            cond.append(f"d.kind IN ({','.join('?' * len(where.kinds))})")
            params += sorted(where.kinds)
        if where.folder:
            folder = _key(where.folder.rstrip(os.sep) + os.sep)
            cond.append("substr(d.path, 1, ?) = ?")
            params += [len(folder), folder]
        if where.mtime_after_ns is not None:
            cond.append("d.mtime_ns >= ?")
            params.append(where.mtime_after_ns)
        if where.mtime_before_ns is not None:
            cond.append("d.mtime_ns < ?")
            params.append(where.mtime_before_ns)
        extra = "".join(f" AND {c}" for c in cond)
        if table:
            w = ", ".join(str(x) for x in WEIGHTS)
            sql = (
                f"SELECT d.id, d.path, bm25({table}, {w}) AS score FROM {table}"
                f" JOIN docs d ON d.id = {table}.rowid WHERE {table} MATCH ?{extra}"
                " ORDER BY score LIMIT ?"
            )
        else:
            sql = f"SELECT d.id, d.path, 0.0 FROM docs d WHERE 1{extra} ORDER BY d.id LIMIT ?"
        params.append(limit)
        return sql, params

    def _best_piece(
        self, conn: sqlite3.Connection, q: TextQuery, doc_id: int
    ) -> tuple[str, tuple[tuple[int, int], ...], Locator]:
        """The piece of the file with the most distinct query terms, as a marked snippet."""
        body, spans_json = conn.execute(
            "SELECT body, spans FROM docs WHERE id = ?", (doc_id,)
        ).fetchone()
        marks = self._marks(conn, q, doc_id, body)
        starts = [0]
        locators = [Locator()]
        for start, loc in json.loads(spans_json):
            if start == 0:
                locators[0] = Locator.from_json(loc)
            else:
                starts.append(int(start))
                locators.append(Locator.from_json(loc))
        if not marks:  # matched by name or folder only: the start of the text
            return (*_window(body, 0, ()), Locator())
        by_piece: dict[int, list[tuple[int, int]]] = {}
        for start, end in marks:
            by_piece.setdefault(bisect.bisect_right(starts, start) - 1, []).append((start, end))

        def quality(item: tuple[int, list[tuple[int, int]]]) -> tuple[int, int, int]:
            piece, found = item
            distinct = {fold(body[s:e]) for s, e in found}
            return (len(distinct), len(found), -piece)

        piece, found = max(by_piece.items(), key=quality)
        return (*_window(body, found[0][0], found), locators[piece])

    def _marks(
        self, conn: sqlite3.Connection, q: TextQuery, doc_id: int, body: str
    ) -> list[tuple[int, int]]:
        """Character spans of the body that match the query, as FTS5 itself sees them."""
        marks: list[tuple[int, int]] = []
        words = [t for t in q.positive if not t.no_space_script]
        if words:
            expr = " OR ".join(_word_expr(t) for t in words)
            row = conn.execute(
                "SELECT highlight(words, 2, ?, ?) FROM words WHERE words MATCH ? AND rowid = ?",
                (MARK_START, MARK_END, expr, doc_id),
            ).fetchone()
            if row is not None:
                marks += _marked_spans(row[0])
        low = body.casefold() if len(body.casefold()) == len(body) else None
        for t in q.positive:
            if t.no_space_script and low is not None:
                needle = t.text.casefold()
                at = low.find(needle)
                while at >= 0 and len(marks) < 1000:
                    marks.append((at, at + len(needle)))
                    at = low.find(needle, at + len(needle))
        return sorted(marks)


def _marked_spans(marked: str) -> list[tuple[int, int]]:
    """Offsets in the unmarked text of each MARK_START..MARK_END span."""
    spans = []
    removed = 0
    pos = marked.find(MARK_START)
    while pos >= 0:
        end = marked.find(MARK_END, pos)
        if end < 0:
            break
        start = pos - removed
        spans.append((start, start + end - pos - 1))
        removed += 2
        pos = marked.find(MARK_START, end)
    return spans


_SPACES = {ord(c): " " for c in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"}


def _window(
    body: str, at: int, marks: Sequence[tuple[int, int]]
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """About SNIPPET_CHARS of text around ``at`` (from a word start), and the marks inside
    it, shifted to the snippet. Line breaks become spaces one for one, so offsets hold."""
    start = max(0, at - SNIPPET_CHARS // 3)
    if start:
        space = body.find(" ", start, at)
        start = space + 1 if space >= 0 else start
    end = min(len(body), start + SNIPPET_CHARS)
    lead = "…" if start else ""
    text = lead + body[start:end].translate(_SPACES) + ("…" if end < len(body) else "")
    shift = len(lead) - start
    inside = tuple((s + shift, e + shift) for s, e in marks if s >= start and e <= end)
    return text, inside


def check_fts5() -> None:
    """Raise ``FullTextUnavailable`` with a clear message if sqlite3 cannot do FTS5."""
    try:
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram')")
        finally:
            conn.close()
    except sqlite3.OperationalError as err:
        raise FullTextUnavailable(
            f"this Python's sqlite3 (SQLite {sqlite3.sqlite_version}) lacks FTS5 with the "
            f"trigram tokenizer ({err}); full-text search needs SQLite 3.34 or newer built "
            "with FTS5 — search by meaning and by name still works"
        ) from err
