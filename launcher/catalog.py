"""The catalog: the index's per-file records in SQLite (``catalog.db``), one row per file.

Tables::

    catalogs  one row per catalog: "live" (the index in use) and, during ``index --rebuild``,
              "rebuild"; its generation, model identity, dims, roots, vector segments and
              last run stats (the part ``manifest.json`` mirrors)
    files     one row per file of a catalog: stat, kind, status, preview..., ``rows`` (its
              vector rows: int64 row numbers, little-endian) and ``pieces`` (JSON: the role
              and locator of each row)

Every change of a file writes its row again under a new ``id`` (ids are never reused), so
an id names one version of one file; only a compaction updates ``rows`` in place (the row
numbers, not what they hold). A snapshot, which knows the row numbers of its generation,
can therefore read a record later by id and get exactly the version it saw, or nothing if
that version was replaced since.

Why a database of its own and not tables in ``text.db``: the catalog must work where
SQLite lacks FTS5 (the text index is then off); its backup copy (``catalog.bak.db``)
must stay small, without the text of every file; and the text index is shared by the live
and the rebuilding index, while each has its own catalog. The text index needs no common
transaction with the catalog: text is added after the commit that adds a file and removed
before the commit that removes it (see ``indexer``), so it never holds more than the
catalog. Writes run in WAL mode with ``synchronous=NORMAL``: a commit survives a crash or
kill -9 as soon as it returns, and the database stays consistent through a power cut, which
may undo the last commits (their files are indexed again by the next run). FULL would add
an fsync to every commit, the largest part of its cost on a slow disk, for that case only;
the segments a commit names are fsynced before it, so no commit ever names lost vectors.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError
from .extract import Locator

CATALOG = "catalog.db"
CATALOG_BACKUP = "catalog.bak.db"
SCHEMA_VERSION = 1
LIVE, REBUILD_ROLE = "live", "rebuild"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS catalogs (
    role TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    generation_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    dims INTEGER NOT NULL,
    roots TEXT NOT NULL,
    segments TEXT NOT NULL,
    stats TEXT,
    files INTEGER NOT NULL,
    live_rows INTEGER NOT NULL,
    written_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cat TEXT NOT NULL,
    path BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    kind TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    content_hash TEXT,
    preview TEXT NOT NULL,
    title TEXT,
    indexed_ns INTEGER NOT NULL,
    rows BLOB NOT NULL,
    pieces TEXT NOT NULL,
    UNIQUE (cat, path)
);
CREATE INDEX IF NOT EXISTS files_by_hash ON files (cat, content_hash)
    WHERE content_hash IS NOT NULL;
"""

# The columns of ``files`` in the order ``record_values``/``record_from_row`` use.
FILE_COLUMNS = (
    "id, path, size, mtime_ns, kind, status, reason, content_hash, preview, title, "
    "indexed_ns, rows, pieces"
)
ROW_DTYPE = np.dtype("<i8")


class CatalogDamaged(Exception):
    """The database cannot be read (not SQLite, malformed, wrong schema)."""


class CatalogEmpty(Exception):
    """A reader found no schema yet: a writer is creating the catalog."""


def path_key(path: str) -> bytes:
    """Paths are stored as their bytes: names that are not valid UTF-8 round-trip."""
    return path.encode("utf-8", "surrogateescape")


def key_path(key: bytes) -> str:
    return bytes(key).decode("utf-8", "surrogateescape")


def connect(path: Path, *, writable: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, NORMAL sync."""
    if writable and not path.exists():  # private from the first byte: it holds previews
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    elif not writable and not path.exists():  # (sqlite3 would create an empty file)
        raise CatalogEmpty()
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if writable:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
        else:
            conn.execute("PRAGMA query_only=1")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and not writable:
            raise CatalogEmpty()  # being created by a writer (or an empty file)
        if version != SCHEMA_VERSION:
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path} has catalog schema {version}, newer than this program's "
                    f"{SCHEMA_VERSION}: update the program or rebuild the index"
                )
            if version != 0:
                raise CatalogDamaged(f"unknown catalog schema {version}")
    except sqlite3.DatabaseError as err:
        conn.close()
        raise CatalogDamaged(str(err)) from None
    except (CatalogDamaged, CatalogEmpty, StoreError):
        conn.close()
        raise
    return conn


@dataclass(frozen=True)
class CatalogRow:
    """One row of ``catalogs``: what ``manifest.json`` mirrors."""

    role: str
    generation: int
    generation_id: str
    identity: dict[str, Any]
    dims: int
    roots: tuple[str, ...]
    segments: tuple[tuple[str, int], ...]
    stats: dict[str, Any] | None
    files: int = 0  # counts kept with the row: opening an index counts nothing
    live_rows: int = 0


def read_catalog(conn: sqlite3.Connection, role: str) -> CatalogRow | None:
    row = conn.execute(
        "SELECT generation, generation_id, identity, dims, roots, segments, stats, files, "
        "live_rows FROM catalogs WHERE role = ?",
        (role,),
    ).fetchone()
    if row is None:
        return None
    generation, generation_id, identity, dims, roots, segments, stats, files, live = row
    try:
        return CatalogRow(
            role,
            int(generation),
            str(generation_id),
            dict(json.loads(identity)),
            int(dims),
            tuple(str(r) for r in json.loads(roots)),
            tuple((str(n), int(r)) for n, r in json.loads(segments)),
            json.loads(stats) if stats else None,
            int(files),
            int(live),
        )
    except (TypeError, ValueError) as err:
        raise CatalogDamaged(f"malformed catalog row ({err})") from None


def write_catalog(conn: sqlite3.Connection, row: CatalogRow, written_ns: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO catalogs (role, generation, generation_id, identity, dims, "
        "roots, segments, stats, files, live_rows, written_ns) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.role,
            row.generation,
            row.generation_id,
            json.dumps(row.identity, sort_keys=True),
            row.dims,
            json.dumps(list(row.roots)),
            json.dumps([list(s) for s in row.segments]),
            json.dumps(row.stats) if row.stats is not None else None,
            row.files,
            row.live_rows,
            written_ns,
        ),
    )


def rows_blob(rows: Sequence[int]) -> bytes:
    return np.asarray(rows, dtype=ROW_DTYPE).tobytes()


def pieces_json(refs: Sequence[Any]) -> str:
    return json.dumps([[r.role, r.locator.to_json()] for r in refs], separators=(",", ":"))


def decode_pieces(rows: bytes, pieces: str) -> list[tuple[int, str, Locator]]:
    numbers = np.frombuffer(rows, dtype=ROW_DTYPE).tolist()
    roles = json.loads(pieces)  # (zip raises ValueError if the lengths differ)
    return [(n, r, Locator.from_json(loc)) for n, (r, loc) in zip(numbers, roles, strict=True)]


class Readers:
    """Read-only connections to one catalog file, one per thread (snapshots share them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, writable=False)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same commit."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
