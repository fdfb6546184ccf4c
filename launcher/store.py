"""The index on disk: vector segments, a SQLite catalog of the files, and a small manifest.

Layout of the index folder (default ``<data dir>/index``)::

    catalog.db             the source of truth (``launcher.catalog``): one row per file (stat,
                           kind, status, its vector rows and their locators), and per catalog
                           (live; rebuild while ``index --rebuild`` runs) the generation,
                           model identity, dims, roots, segments and last run stats
    catalog.bak.db         a copy of catalog.db made at the end of each indexing run: the
                           fallback when catalog.db is damaged or lost
    manifest.json          a mirror of the live catalog row, written after each commit:
                           format version, generation, model identity, dims, roots,
                           segments, file count. Small and human-readable; followers (a
                           running ``launch``) watch it to notice commits
    rebuild.json           the same for the index being rebuilt beside the live one
    manifest.v2.json       after a migration from format 2: the old manifest, kept until the
                           next commit
    seg-<gen>-<id>.npy     float16 vector rows; written once, never modified
    models.json            the model files the index was built with (paths and identity), so
                           commands find them without flags
    lock                   held with flock by the one process writing, only while it writes;
                           it names the holder ("<pid> <role>")

Segments: a commit writes only the rows added since the previous commit, as a new segment
file; rows of removed or changed files stay in their segment as dead rows until a
compaction (dead rows over a quarter of all rows, or too many segments) copies the live
rows into one new segment. Row numbers index the concatenation of the segments, in order.

Catalog: the writer changes file rows as it goes, inside one SQL transaction that
``commit`` ends, so a commit costs what changed, not what the index holds; nothing
reaches other readers (or survives a kill) before ``commit``.

Commit order: (1) the new segment, under its final (unique) name: write, fsync, fsync
folder; (2) the SQL transaction: file rows and the catalog row naming the segments (WAL,
synchronous=NORMAL, see ``launcher.catalog``); (3) manifest.json: temp file, rename (a
mirror: not fsynced); (4) delete segment files no catalog, backup or old manifest names.
Two fsyncs per commit, whatever the index holds. A kill before (2) loses the uncommitted
tail (a stray segment is deleted later); a kill between (2) and (3) leaves manifest.json
one generation behind: catalog.db is the truth, the next writer rewrites the mirror on
open, and followers see the commit at the next one.

Damage: SQLite's atomic commit covers torn writes. A catalog.db that cannot be read is set
aside (``catalog.db.damaged``) and catalog.bak.db is used instead: what is lost is what was
committed since the last run ended (those files are indexed again). Without a usable copy
``StoreError`` is raised, never a silent empty index. A damaged or missing segment drops
the files whose vectors it held (they are indexed again); the rest is kept.

Migration: a format 1 or 2 index (manifest.json with one entry per file) is converted on
first open, by whichever command opens it first (under the lock): the catalog is built
from the manifest (or its fallback), the segments are used as they are, text.db is kept.

float16: unit-norm components lie in [-1, 1] where float16 keeps ~3 significant digits, so
a cosine moves by ~1e-3, far below the gaps that order search results, and the disk and
memory are halved. NumPy has no fast float16 matmul, so ``Snapshot.scores`` converts
blocks to float32 on the fly.

Rebuilds: a rebuild writes the "rebuild" catalog (own segments, rebuild.json) while the
live one keeps serving; ``finish_rebuild`` makes it the live one in one transaction. An
interrupted rebuild leaves the old index as it was, and the next rebuild with the same
model resumes.

Processes: the lock is taken per run and released after it, so a running ``launch`` and
CLI commands take turns; a commit first checks that its lock file is still the one in the
folder and that every segment it names is on disk (a deleted index folder is never
committed over with segments that no longer exist).

Threads: one writer (the indexer) owns a ``Store``; readers in the same process call
``snapshot()`` and get an immutable ``Snapshot`` of the last commit, swapped under a lock.
A snapshot reads its per-file columns from the catalog at first use (one query) and
records by id (see ``launcher.catalog``); if the writer has committed again by then, it
reads that newer generation whole.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from . import catalog as cat
from .catalog import CATALOG, CATALOG_BACKUP, LIVE, REBUILD_ROLE, CatalogDamaged, CatalogRow
from .errors import IndexBusy, IndexMismatch, InputError, StoreError
from .extract import Locator

FORMAT = "launcher-index"
FORMAT_VERSION = 3
# Versions this program reads. 1 -> 2 added the "queued" status; 2 -> 3 moved the files
# from manifest.json into catalog.db (1 and 2 are migrated on first open).
READABLE_VERSIONS = (1, 2, 3)
VECTOR_DTYPE = np.dtype(np.float16)
MANIFEST = "manifest.json"
MANIFEST_PREV = "manifest.prev.json"  # format 2's fallback (read by the migration)
MANIFEST_V2 = "manifest.v2.json"
REBUILD = "rebuild.json"
REBUILD_PREV = "rebuild.prev.json"
MODELS = "models.json"
LOCK = "lock"
LOCK_POLL = 0.2  # seconds between tries while waiting for the writer lock

# queued: found, not embedded yet (findable by name); pending_chunks: card embedded, chunks
# to come; failed: could not be indexed (findable by name, reason kept); ok: done.
Status = Literal["ok", "failed", "pending_chunks", "queued"]
STATUSES = ("ok", "failed", "pending_chunks", "queued")
ROLES = ("card", "chunk")
# An mtime this close to the time the file was read may hide a later write in the same
# timestamp tick (coarse file systems): such a file is re-checked by hash next run.
RACY_NS = 2_000_000_000
# Indexes are ranked in two passes: the first COARSE_DIMS dims (Matryoshka truncation,
# renormalised) pick a shortlist, full dims order it (bench/run.py measures speed and
# recall against an exact scan). NumPy converts float16 slowly, so an exact scan costs
# ~5 ms per 1,000 rows (50k rows: ~250 ms) against ~20 ms for two passes at any size
# measured; below COARSE_MIN_ROWS the shortlist would be most of the index anyway.
COARSE_DIMS = 256
COARSE_MIN_ROWS = 8192
# A writer's snapshot derives its per-file arrays from an earlier one's while fewer files
# than this changed since (each is read again at every commit); past it, it reads them all.
DERIVE_MAX_PATHS = 2000


def default_dir() -> Path:
    from . import paths

    return paths.data_dir() / "index"


def index_exists(directory: str | os.PathLike[str] | None = None) -> bool:
    """Whether an index was ever committed in ``directory`` (default ``default_dir()``)."""
    path = Path(directory) if directory is not None else default_dir()
    return any((path / name).exists() for name in (MANIFEST, MANIFEST_PREV, CATALOG_BACKUP))


def content_hash(path: str | os.PathLike[str]) -> str:
    """BLAKE2b-128 of the file's bytes, hex: the key for reusing vectors of moved files."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class RowRef:
    """One vector row of a file: its card or one of its chunks, and where that is."""

    row: int
    role: str  # "card" | "chunk"
    locator: Locator = field(default_factory=Locator)


@dataclass(frozen=True)
class FileRecord:
    """One file in the index. ``rows`` is empty for failed files and not-yet-embedded ones."""

    path: str
    size: int
    mtime_ns: int
    kind: str | None = None
    status: Status = "ok"
    reason: str | None = None
    content_hash: str | None = None
    preview: str = ""
    title: str | None = None
    rows: tuple[RowRef, ...] = ()
    indexed_ns: int = 0

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}
        for key in ("kind", "status", "reason", "content_hash", "preview", "title"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        out["indexed_ns"] = self.indexed_ns
        out["rows"] = [{"row": r.row, "role": r.role, **r.locator.to_json()} for r in self.rows]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileRecord:
        status = data.get("status", "ok")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        rows = []
        for r in data.get("rows", ()):
            if r["role"] not in ROLES or not isinstance(r["row"], int):
                raise ValueError("bad row entry")
            rows.append(RowRef(r["row"], r["role"], Locator.from_json(r)))
        path, size, mtime = data["path"], data["size"], data["mtime_ns"]
        if not isinstance(path, str) or not isinstance(size, int) or not isinstance(mtime, int):
            raise ValueError("bad path, size or mtime_ns")
        return cls(
            path=path,
            size=size,
            mtime_ns=mtime,
            kind=data.get("kind"),
            status=status,
            reason=data.get("reason"),
            content_hash=data.get("content_hash"),
            preview=data.get("preview", ""),
            title=data.get("title"),
            rows=tuple(rows),
            indexed_ns=int(data.get("indexed_ns", 0)),
        )


@dataclass(frozen=True)
class RunStats:
    """What the last indexing run did (the indexer fills it; the manifest keeps it)."""

    started_ns: int = 0
    finished_ns: int = 0
    seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    reused: int = 0
    failed: int = 0
    removed: int = 0
    problems: int = 0
    interrupted: bool = False  # stopped before the end (Ctrl+C): the next run resumes
    queued: int = 0  # files left found-but-not-embedded when the run ended

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunStats:
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {
            k: bool(v) if types[k] == "bool" else int(v) for k, v in data.items() if k in types
        }
        return cls(**values)


class PieceLike(Protocol):
    """What ``put`` needs to know of each vector: ``extract.Piece`` fits."""

    @property
    def role(self) -> str: ...

    @property
    def locator(self) -> Locator: ...


@dataclass(frozen=True)
class _Segment:
    name: str
    start: int
    rows: int
    array: np.ndarray | None  # read-only memmap; None for a damaged segment (no live rows)


def _identity_dict(identity: Any) -> dict[str, Any]:
    """A JSON-normal dict (tuples become lists) so that loaded and given ones compare equal."""
    if dataclasses.is_dataclass(identity) and not isinstance(identity, type):
        identity = dataclasses.asdict(identity)
    if not isinstance(identity, Mapping):
        raise TypeError("identity must be a dataclass or a mapping")
    return json.loads(json.dumps(dict(identity), sort_keys=True))


def _identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    def short(value: Any) -> str:
        text = repr(value)
        return text[:14] + "…'" if len(text) > 24 and isinstance(value, str) else text

    keys = sorted(set(old) | set(new), key=lambda k: (k.endswith("hash"), k))
    diffs = [
        f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in keys if old.get(k) != new.get(k)
    ]
    more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
    return "; ".join(diffs[:4]) + more


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a folder to fsync it; its renames are journaled
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Columns:
    """A snapshot's files as arrays, for vectorised filters; position = file index.

    Paths are one bytes string (``\\0``-separated, sorted by their bytes) with offsets, not a
    million Python strings: a path is sliced out when needed, found by bisection, and
    substring or folder filters are ``bytes.find`` scans.
    """

    def __init__(
        self,
        ids: np.ndarray,
        blob: bytes,
        lengths: np.ndarray,
        size: np.ndarray,
        mtime_ns: np.ndarray,
        kind_codes: np.ndarray,
        kind_names: tuple[str | None, ...],
        status_codes: np.ndarray,
        counts: np.ndarray,
        numbers: np.ndarray,
    ) -> None:
        n = len(ids)
        self.ids = ids
        self.blob = blob
        self.starts = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=self.starts[1:])
        self.size = size
        self.mtime_ns = mtime_ns
        self.kind_codes = kind_codes
        self.kind_names = kind_names
        self.status_codes = status_codes
        self.nrows = counts.astype(np.int32)
        owner = np.repeat(np.arange(n, dtype=np.int32), counts)
        order = np.argsort(numbers, kind="stable")
        self.live_rows = numbers[order].astype(np.int64)  # matrix row i -> global row
        self.row_file = owner[order]  # matrix row i -> file index
        self._lower: tuple[bytes, np.ndarray] | None = None
        self._by_file: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]], chunk: int = 65536) -> Columns:
        """From ``files`` rows (id, path, size, mtime_ns, kind, status, rows) sorted by path,
        taken a chunk at a time: what stays is arrays, never one object per file."""
        keys_ = ("ids", "blob", "len", "size", "mtime", "kind", "status", "count", "numbers")
        parts: dict[str, list[Any]] = {k: [] for k in keys_}
        names: dict[str | None, int] = {}
        it = iter(rows)
        while batch := list(itertools.islice(it, chunk)):
            ids, keys, sizes, mtimes, kinds, statuses, blobs = zip(*batch, strict=True)
            m = len(batch)
            parts["ids"].append(np.asarray(ids, np.int64))
            parts["blob"].append(b"\0".join(keys) + b"\0")
            parts["len"].append(np.fromiter((len(k) + 1 for k in keys), np.int64, m))
            parts["size"].append(np.asarray(sizes, np.int64))
            parts["mtime"].append(np.asarray(mtimes, np.int64))
            parts["kind"].append(
                np.fromiter((names.setdefault(k, len(names)) for k in kinds), np.int16, m)
            )
            parts["status"].append(np.fromiter((STATUSES.index(x) for x in statuses), np.int8, m))
            parts["count"].append(np.fromiter((len(r) // 8 for r in blobs), np.int64, m))
            parts["numbers"].append(np.frombuffer(b"".join(blobs), dtype=cat.ROW_DTYPE))
            del batch, ids, keys, sizes, mtimes, kinds, statuses, blobs

        def joined(key: str, dtype: Any) -> np.ndarray:
            return np.concatenate(parts[key]) if parts[key] else np.zeros(0, dtype)

        return cls(
            joined("ids", np.int64), b"".join(parts["blob"]), joined("len", np.int64),
            joined("size", np.int64), joined("mtime", np.int64), joined("kind", np.int16),
            tuple(names), joined("status", np.int8), joined("count", np.int64),
            joined("numbers", cat.ROW_DTYPE),
        )  # fmt: skip

    @classmethod
    def empty(cls) -> Columns:
        return cls.from_rows(())

    def __len__(self) -> int:
        return len(self.ids)

    def key(self, i: int) -> bytes:
        return self.blob[int(self.starts[i]) : int(self.starts[i + 1]) - 1]

    def path(self, i: int) -> str:
        return cat.key_path(self.key(i))

    def find(self, path: str) -> int | None:
        """The file index of ``path``, or None."""
        key = cat.path_key(path)
        i = bisect.bisect_left(range(len(self)), key, key=self.key)
        return i if i < len(self) and self.key(i) == key else None

    def kinds(self) -> np.ndarray:
        """Each file's kind (None for queued files), as an object array."""
        return np.array(self.kind_names, dtype=object)[self.kind_codes]

    def kind_mask(self, wanted: Iterable[str]) -> np.ndarray:
        codes = [i for i, k in enumerate(self.kind_names) if k in set(wanted)]
        return np.isin(self.kind_codes, codes)

    def status_count(self, status: str) -> int:
        return int(np.count_nonzero(self.status_codes == STATUSES.index(status)))

    def _starts_of(self, blob: bytes, starts: np.ndarray, needle: bytes) -> np.ndarray:
        """Indices of the paths in ``blob`` that contain ``needle``."""
        hits = []
        at = blob.find(needle)
        while at >= 0:
            i = int(np.searchsorted(starts, at, side="right")) - 1
            hits.append(i)
            at = blob.find(needle, int(starts[i + 1]))  # next path
        return np.asarray(hits, dtype=np.int64)

    def containing(self, needle: str) -> np.ndarray:
        """Indices of the files whose lower-cased path contains ``needle`` (lower case)."""
        if "\0" in needle or not needle:
            return np.zeros(0, np.int64)
        with self._lock:
            if self._lower is None:
                text = self.blob.decode("utf-8", "surrogateescape")
                low = text.lower()
                lowered = low.encode("utf-8", "surrogateescape")
                if len(lowered) == len(self.blob):  # the same offsets, if the NULs line up
                    nuls = np.flatnonzero(np.frombuffer(lowered, np.uint8) == 0)
                    if np.array_equal(nuls, self.starts[1:] - 1):
                        self._lower = (lowered, self.starts)
                if self._lower is None:
                    parts = [self.path(i).lower() for i in range(len(self))]
                    keys = [p.encode("utf-8", "surrogateescape") for p in parts]
                    starts = np.zeros(len(keys) + 1, np.int64)
                    np.cumsum([len(k) + 1 for k in keys], out=starts[1:])
                    self._lower = (b"\0".join(keys) + b"\0", starts)
            blob, starts = self._lower
        return self._starts_of(blob, starts, needle.encode("utf-8", "surrogateescape"))

    def under(self, folder: str) -> np.ndarray:
        """A mask of the files whose path starts with ``folder`` (ending in a separator)."""
        mask = np.zeros(len(self), dtype=bool)
        needle = b"\0" + cat.path_key(folder)
        blob = b"\0" + self.blob
        at = blob.find(needle)
        while at >= 0:
            i = int(np.searchsorted(self.starts, at, side="left"))
            if i < len(self) and self.starts[i] == at:
                mask[i] = True
            at = blob.find(needle, at + 1)
        return mask

    def rows_of(self, i: int) -> np.ndarray:
        """Global row numbers of file ``i``, ascending."""
        with self._lock:
            if self._by_file is None:
                order = np.argsort(self.row_file, kind="stable")
                bounds = np.searchsorted(self.row_file[order], np.arange(len(self) + 1))
                self._by_file = (self.live_rows[order], bounds)
            rows, bounds = self._by_file
        return rows[bounds[i] : bounds[i + 1]]

    def matrix_rows_of(self, i: int) -> np.ndarray:
        """Matrix row numbers of file ``i``, ascending."""
        return np.searchsorted(self.live_rows, self.rows_of(i))

    def updated(self, gone: Iterable[str], added: Sequence[Sequence[Any]]) -> Columns:
        """These columns after a commit that replaced or removed the files ``gone`` and
        wrote ``added`` (``files`` rows: id, path, size, mtime_ns, kind, status, rows; their
        paths among ``gone``): array work in O(files), no object per file, so a writer's
        next snapshot is ready without reading every record again."""
        n = len(self)
        keep = np.ones(n, dtype=bool)
        for path in gone:
            i = self.find(path)
            if i is not None:
                keep[i] = False
        kept = np.flatnonzero(keep)
        added = sorted(added, key=lambda r: bytes(r[1]))
        keys = [bytes(r[1]) for r in added]
        at = np.asarray(
            [bisect.bisect_left(kept, k, key=lambda j: self.key(int(j))) for k in keys], np.int64
        )
        m = len(kept) + len(added)
        pos_kept = np.arange(len(kept)) + np.searchsorted(at, np.arange(len(kept)), side="right")
        pos_new = at + np.arange(len(added))

        def merged(old: np.ndarray, new: Any) -> np.ndarray:
            out = np.empty(m, dtype=old.dtype)
            out[pos_kept] = old[kept]
            out[pos_new] = new
            return out

        out = object.__new__(Columns)
        out.ids = merged(self.ids, [r[0] for r in added])
        out.size = merged(self.size, [r[2] for r in added])
        out.mtime_ns = merged(self.mtime_ns, [r[3] for r in added])
        names = list(self.kind_names)
        codes = []
        for r in added:
            if r[4] not in names:
                names.append(r[4])
            codes.append(names.index(r[4]))
        out.kind_names = tuple(names)
        out.kind_codes = merged(self.kind_codes, codes)
        out.status_codes = merged(self.status_codes, [STATUSES.index(r[5]) for r in added])
        counts = [len(r[6]) // 8 for r in added]
        out.nrows = merged(self.nrows, counts)
        # paths: the kept bytes, and the new keys where their files now sit
        lengths = merged(np.diff(self.starts), [len(k) + 1 for k in keys])
        out.starts = np.zeros(m + 1, np.int64)
        np.cumsum(lengths, out=out.starts[1:])
        is_new = np.zeros(m, dtype=bool)
        is_new[pos_new] = True
        new_bytes = np.repeat(is_new, lengths)
        blob = np.empty(int(out.starts[-1]), dtype=np.uint8)
        old_blob = np.frombuffer(self.blob, np.uint8)
        blob[~new_bytes] = old_blob[np.repeat(keep, np.diff(self.starts))]
        blob[new_bytes] = np.frombuffer(b"".join(k + b"\0" for k in keys), np.uint8)
        out.blob = blob.tobytes()
        # the row map: kept files' rows renumbered to their new places, new rows merged in
        where = np.full(n, -1, np.int64)
        where[kept] = pos_kept
        live = keep[self.row_file]
        rows = self.live_rows[live]
        owners = where[self.row_file[live]].astype(np.int32)
        numbers = np.frombuffer(b"".join(bytes(r[6]) for r in added), dtype=cat.ROW_DTYPE)
        new_owner = np.repeat(pos_new, counts).astype(np.int32)
        order = np.argsort(numbers, kind="stable")
        numbers, new_owner = numbers[order].astype(np.int64), new_owner[order]
        ins = np.searchsorted(rows, numbers)
        out.live_rows = np.insert(rows, ins, numbers)
        out.row_file = np.insert(owners, ins, new_owner)
        out._lower = None
        out._by_file = None
        out._lock = threading.Lock()
        return out


class Snapshot:
    """An immutable view of one committed generation, for searching.

    ``matrix()`` holds the live rows only (float16, read-only); ``row_owner(i)`` tells which
    file and piece row ``i`` of it is; ``columns()`` has the files as arrays. All are built
    on first use: opening an index reads no per-file data.
    """

    def __init__(
        self,
        generation: int,
        identity: dict[str, Any],
        dims: int,
        roots: tuple[str, ...],
        segments: tuple[_Segment, ...],
        stats: RunStats | None,
        generation_id: str = "",
        *,
        readers: cat.Readers | None = None,
        role: str = LIVE,
        reopen: Callable[[CatalogRow], list[_Segment]] | None = None,
        derive: tuple[Columns, set[str], list[Any]] | None = None,
    ):
        self.generation = generation
        # generation numbers start again after the folder is deleted: (generation, id) is
        # what tells two snapshots apart
        self.generation_id = generation_id
        self.identity = identity
        self.dims = dims
        self.roots = roots
        self.stats = stats
        self._segments = segments
        self._readers = readers
        self._role = role
        self._reopen = reopen
        self._lock = threading.RLock()
        self._columns: Columns | None = None
        # (columns of an earlier generation, paths written since, their rows now): this
        # generation's columns without reading the catalog (see ``Columns.updated``)
        self._derive = derive
        self._records: dict[int, FileRecord] = {}
        self._matrix: np.ndarray | None = None
        self._coarse: np.ndarray | None = None
        self._coarse_lock = threading.Lock()

    # -- the files ------------------------------------------------------------------------

    def columns(self) -> Columns:
        """The files of this generation as arrays (one catalog query, the first time)."""
        with self._lock:
            if self._columns is None and self._derive is not None:
                base, gone, added = self._derive
                self._columns = base.updated(gone, added)
                self._derive = None
            elif self._columns is None:
                self._columns = self._load()
            return self._columns

    def _load(self) -> Columns:
        if self._readers is None or not self._readers.path.exists():
            return Columns.empty()
        for attempt in range(3):
            try:
                with self._readers.read() as conn:
                    row = cat.read_catalog(conn, self._role)
                    if row is None:
                        return Columns.empty()
                    if (row.identity, row.dims) != (self.identity, self.dims):
                        return Columns.empty()  # rebuilt with another model: reopen it
                    if (row.generation, row.generation_id) != (
                        self.generation,
                        self.generation_id,
                    ):
                        self._adopt(row)  # committed again since: read that one whole
                    cursor = conn.execute(
                        "SELECT id, path, size, mtime_ns, kind, status, rows FROM files "
                        "WHERE cat = ? ORDER BY path",
                        (self._role,),
                    )
                    bad = [(s.start, s.start + s.rows) for s in self._segments if s.array is None]
                    if bad:  # files whose vectors are lost are left out (the writer drops them)
                        return Columns.from_rows(r for r in cursor if not _hits_ranges(r[6], bad))
                    return Columns.from_rows(cursor)
            except _Retry:
                if attempt == 2:
                    raise StoreError("the index changed while being read; try again") from None
                time.sleep(0.2)
            except cat.CatalogEmpty:  # (the folder was deleted and is being made anew)
                return Columns.empty()
            except (sqlite3.DatabaseError, CatalogDamaged) as err:
                raise StoreError(f"cannot read the index catalog: {err}") from err
        return Columns.empty()  # (not reached)

    def _adopt(self, row: CatalogRow) -> None:
        assert self._reopen is not None
        self._segments = tuple(self._reopen(row))
        self.generation, self.generation_id = row.generation, row.generation_id
        self.roots = row.roots
        self.stats = RunStats.from_json(row.stats) if row.stats else None

    @property
    def file_count(self) -> int:
        return len(self.columns())

    @property
    def files(self) -> tuple[FileRecord, ...]:
        """Every file's record (builds them all: for small indexes and tests)."""
        return tuple(self.record(i) for i in range(self.file_count))

    def get(self, path: str) -> FileRecord | None:
        i = self.columns().find(path)
        return self.record(i) if i is not None else None

    def record(self, i: int) -> FileRecord:
        """File ``i`` of ``columns()`` (read from the catalog by id, then kept)."""
        with self._lock:
            rec = self._records.get(i)
            if rec is not None:
                return rec
        cols = self.columns()
        rows = cols.rows_of(i).tolist()
        row = None
        if self._readers is not None:
            row = (
                self._readers.conn()
                .execute(f"SELECT {cat.FILE_COLUMNS} FROM files WHERE id = ?", (int(cols.ids[i]),))
                .fetchone()
            )
        if row is not None:
            rec = _record(row)
            # Row numbers are this generation's (a compaction since renumbers them); a
            # file's rows keep their order.
            ordered = sorted(rec.rows, key=lambda r: r.row)
            refs = tuple(RowRef(n, r.role, r.locator) for n, r in zip(rows, ordered, strict=True))
            rec = replace(rec, rows=refs)
        else:  # replaced since this snapshot was taken: what the columns say
            kind = cols.kind_names[cols.kind_codes[i]]
            rec = FileRecord(
                path=cols.path(i), size=int(cols.size[i]), mtime_ns=int(cols.mtime_ns[i]),
                kind=kind, status=STATUSES[cols.status_codes[i]],  # type: ignore[arg-type]
                rows=tuple(RowRef(n, "card" if j == 0 else "chunk") for j, n in enumerate(rows)),
            )  # fmt: skip
        with self._lock:
            return self._records.setdefault(i, rec)

    def reasons(self) -> list[tuple[str, str, str]]:
        """(path, status, reason) of the files that have a reason (failed or skipped)."""
        if self._readers is None or not self._readers.path.exists():
            return []
        cols = self.columns()
        rows = self._readers.conn().execute(
            "SELECT id, path, status, reason FROM files WHERE cat = ? AND reason IS NOT NULL",
            (self._role,),
        )
        ids = set(cols.ids.tolist())
        return [(cat.key_path(p), s, r) for i, p, s, r in rows if i in ids]

    # -- the vectors ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.columns().live_rows)

    def matrix(self) -> np.ndarray:
        """All live rows, ``(n, dims)`` float16, unit-norm; row i belongs to ``row_owner(i)``."""
        cols = self.columns()
        with self._lock:
            if self._matrix is None:
                self._matrix = _gather(self._segments, cols.live_rows, self.dims)
                self._matrix.setflags(write=False)
            return self._matrix

    def row_owner(self, i: int) -> tuple[FileRecord, RowRef]:
        cols = self.columns()
        rec = self.record(int(cols.row_file[i]))
        row = int(cols.live_rows[i])
        return rec, next(r for r in rec.rows if r.row == row)

    def owners(self) -> list[tuple[FileRecord, RowRef]]:
        """``row_owner`` for every row of ``matrix()``, in order (builds every record)."""
        return [self.row_owner(i) for i in range(len(self))]

    def scores(self, query: np.ndarray, block: int = 16384) -> np.ndarray:
        """Cosine scores of a unit-norm query against every row of ``matrix()`` (float32)."""
        m = self.matrix()
        q = self._check_query(query)
        out = np.empty(m.shape[0], dtype=np.float32)
        for start in range(0, m.shape[0], block):
            out[start : start + block] = m[start : start + block].astype(np.float32) @ q
        return out

    def _check_query(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dims:
            raise ValueError(f"query has {q.shape[0]} dims, the index {self.dims}")
        return q

    def coarse(self) -> np.ndarray | None:
        """The first-pass matrix of a large index (see ``build_coarse``), built once per
        snapshot; None for small ones, which are scanned exactly."""
        if len(self) < COARSE_MIN_ROWS or self.dims <= COARSE_DIMS:
            return None
        m = self.matrix()
        with self._coarse_lock:
            if self._coarse is None:
                self._coarse = build_coarse(m)
            return self._coarse

    def search_scores(
        self, query: np.ndarray, *, shortlist: int, row_mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores for ranking: exact cosine for every row of a small index; two passes for a
        large one (``two_pass_scores``). Rows left out (or masked) score ``-inf``."""
        q = self._check_query(query)
        coarse = self.coarse()
        if coarse is None:
            out = self.scores(q)
            if row_mask is not None:
                out[~row_mask] = -np.inf
            return out
        return two_pass_scores(self.matrix(), coarse, q, shortlist=shortlist, row_mask=row_mask)


def build_coarse(matrix: np.ndarray, dims: int | None = None) -> np.ndarray:
    """The first ``dims`` dims of every row, renormalised, float32 (Matryoshka truncation)."""
    d = dims or COARSE_DIMS
    out = np.empty((matrix.shape[0], d), dtype=np.float32)
    for start in range(0, matrix.shape[0], 65536):
        part = matrix[start : start + 65536, :d].astype(np.float32)
        part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        out[start : start + 65536] = part
    return out


def two_pass_scores(
    matrix: np.ndarray,
    coarse: np.ndarray,
    query: np.ndarray,
    *,
    shortlist: int,
    row_mask: np.ndarray | None = None,
) -> np.ndarray:
    """A first pass over ``coarse`` keeps the ``shortlist`` best rows, which are then scored
    exactly at full dims; every other row scores ``-inf``."""
    q = np.asarray(query, dtype=np.float32)
    d = coarse.shape[1]
    qc = q[:d] / max(float(np.linalg.norm(q[:d])), 1e-12)
    first = coarse @ qc
    if row_mask is not None:
        first[~row_mask] = -np.inf
    k = min(shortlist, first.shape[0])
    rows = np.argpartition(-first, k - 1)[:k]
    rows = np.sort(rows[np.isfinite(first[rows])])  # in order: sequential reads of the rows
    out = np.full(first.shape[0], -np.inf, dtype=np.float32)
    out[rows] = matrix[rows].astype(np.float32) @ q
    return out


def _gather(segments: Sequence[_Segment], rows: np.ndarray, dims: int) -> np.ndarray:
    """Rows (global numbers, ascending) copied out of the segments into one array."""
    out = np.empty((len(rows), dims), dtype=VECTOR_DTYPE)
    pos = 0
    for seg in segments:
        end = seg.start + seg.rows
        hi = int(np.searchsorted(rows, end, side="left"))
        if hi > pos:
            if seg.array is None:
                raise StoreError(f"index segment {seg.name} is damaged")
            out[pos:hi] = seg.array[rows[pos:hi] - seg.start]
            pos = hi
    if pos != len(rows):
        raise StoreError("index rows point past the end of the vectors")
    return out


def _changed(entry: tuple[int, int, str, int], size: int, mtime_ns: int) -> bool:
    """Whether a file with this (size, mtime_ns) must be read again (see ``unchanged``)."""
    old_size, old_mtime, status, indexed_ns = entry
    if old_size != size or old_mtime != mtime_ns:
        return True
    if status == "queued":  # never embedded: not a reason to skip it
        return True
    return indexed_ns - old_mtime < RACY_NS


def _hits_ranges(rows: bytes, ranges: Sequence[tuple[int, int]]) -> bool:
    numbers = np.frombuffer(rows, dtype=cat.ROW_DTYPE)
    return any(bool(((numbers >= lo) & (numbers < hi)).any()) for lo, hi in ranges)


def _record(row: Sequence[Any]) -> FileRecord:
    """A ``files`` row (``catalog.FILE_COLUMNS``) as a record."""
    _id, key, size, mtime, kind, status, reason, digest, preview, title, indexed, rows, pieces = row
    refs = tuple(RowRef(n, role, loc) for n, role, loc in cat.decode_pieces(rows, pieces))
    return FileRecord(
        path=cat.key_path(key), size=size, mtime_ns=mtime, kind=kind, status=status,
        reason=reason, content_hash=digest, preview=preview, title=title, rows=refs,
        indexed_ns=indexed,
    )  # fmt: skip


_INSERT = (
    "INSERT INTO files (cat, path, size, mtime_ns, kind, status, reason, content_hash, "
    "preview, title, indexed_ns, rows, pieces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _values(role: str, rec: FileRecord) -> tuple[Any, ...]:
    return (
        role, cat.path_key(rec.path), rec.size, rec.mtime_ns, rec.kind, rec.status, rec.reason,
        rec.content_hash, rec.preview or "", rec.title, rec.indexed_ns,
        cat.rows_blob([r.row for r in rec.rows]), cat.pieces_json(rec.rows),
    )  # fmt: skip


class Store:
    """The index, open for writing (one process, lock file) or for reading.

    Writer calls: ``put``, ``extend``, ``touch``, ``mark_failed``, ``remove``, ``reuse``,
    ``begin_sweep``/``seen``/``seen_under``/``sweep``, ``set_stats``, ``maybe_commit``,
    ``commit``, ``finish_rebuild``. Nothing reaches the disk before ``commit``; ``close``
    does not commit.
    """

    COMPACT_DEAD_FRACTION = 0.25
    COMPACT_MIN_DEAD_ROWS = 1024
    MAX_SEGMENTS = 64

    def __init__(self, directory: Path, identity: dict[str, Any] | None, dims: int, writable: bool):
        self.directory = directory
        self.identity = identity
        self.dims = dims
        self.writable = writable
        self.generation = 0
        self.generation_id = ""
        self.roots: tuple[str, ...] = ()
        self.stats: RunStats | None = None
        self.recovered: str | None = None  # what was wrong when a fallback was used
        self.commit_every_files = 64
        self.commit_every_seconds = 30.0
        # A rebuild in progress: commits go to the "rebuild" catalog until ``finish_rebuild``.
        self.staged = False
        self.resumed = False  # a staged rebuild that picked up an interrupted one
        self.model_files: dict[str, str | None] | None = None  # written to models.json
        self._conn: sqlite3.Connection | None = None  # the writer's (or a reader's own)
        self._readers = cat.Readers(directory / CATALOG)  # snapshots read through these
        self._role = LIVE
        self._in_txn = False
        self._file_count = 0
        self._live_rows = 0
        self._segments: list[_Segment] = []
        self._pending: list[np.ndarray] = []
        self._total_rows = 0
        self._changes = 0
        self._last_commit = time.monotonic()
        self._seen: set[str] | None = None
        self._kept_prefixes: list[str] = []
        self._lock_fd: int | None = None
        self._snap_lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._live_generation = 0
        self._promote = False  # the next commit makes the rebuild catalog the live one
        self._force_compact = False
        self._backup_names: tuple[tuple[int, int], set[str]] | None = None
        # Paths written since the last commit (None: unknown, e.g. after a compaction), and
        # columns some snapshot read with the paths written since: the next snapshots derive
        # their columns from those (``_derivation``).
        self._touched: set[str] | None = set()
        self._base: tuple[Columns, set[str]] | None = None
        # path -> (size, mtime_ns, status, indexed_ns), for ``unchanged_status``
        self._stat_map: dict[str, tuple[int, int, str, int]] | None = None

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str] | None = None,
        *,
        identity: Any,
        dims: int | None,
        rebuild: bool = False,
        writable: bool = True,
        commit_every_files: int = 64,
        commit_every_seconds: float = 30.0,
        role: str = "index",
        wait: Callable[[IndexBusy], bool] | None = None,
        create: bool = True,
        model_files: Mapping[str, str | None] | None = None,
    ) -> Store:
        """Open (or start) the index. A different model identity or dims raises
        ``IndexMismatch`` unless ``rebuild``: then the new index is built beside the old one
        (see the module docstring) and replaces it at ``finish_rebuild``. ``identity=None``
        takes the index's own (for info, remove, clear).

        A writer takes the lock file (``role`` names it to others). When another process
        holds it, ``wait(busy)`` decides: True waits and tries again, False (or no
        ``wait``) raises the ``IndexBusy``. ``create=False`` does not create a missing index
        folder (``StoreError``). ``model_files`` ({"model": path, "mmproj": path or None})
        is remembered in models.json at the next commit of the live index."""
        path = Path(directory) if directory is not None else default_dir()
        if identity is None and rebuild:
            raise ValueError("a rebuild must give the model identity")
        ident = _identity_dict(identity) if identity is not None else None
        store = cls(path, ident, int(dims or 0), writable)
        store.commit_every_files = commit_every_files
        store.commit_every_seconds = commit_every_seconds
        store.model_files = dict(model_files) if model_files is not None else None
        if writable:
            try:
                if create:
                    from . import paths

                    paths.ensure(path)  # 0700: the index holds text from the user's files
                elif not path.is_dir():
                    raise StoreError(f"there is no index in {path}")
                store._acquire_lock(role, wait, create)
            except OSError as err:
                raise StoreError(f"cannot open the index folder {path}: {err}") from err
        try:
            store._load(rebuild, wait)
        except BaseException:
            store.close()
            raise
        return store

    def _acquire_lock(
        self, role: str, wait: Callable[[IndexBusy], bool] | None, create: bool
    ) -> None:
        lock = self.directory / LOCK
        while True:
            if create:  # (again: it may have been deleted while we waited)
                self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.name == "nt":
                    import msvcrt

                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
                else:
                    import fcntl

                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                busy = _holder(fd)
                os.close(fd)
                if wait is None or not wait(busy):
                    raise busy from None
                time.sleep(LOCK_POLL)
                continue
            if not _same_file(fd, lock):
                # The folder was deleted (or the lock file replaced) while we waited: a
                # lock on the old file excludes nobody. Take the new one.
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {role}\n".encode())
            self._lock_fd = fd
            return

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def relock(self, role: str = "index", wait: Callable[[IndexBusy], bool] | None = None) -> None:
        """Write again with a store closed after its last commit, without reading the index
        again (``launch`` between its updates). The caller checks that nobody committed
        in between (``manifest.json`` and ``rebuild.json`` unchanged)."""
        if self._changes or self._pending:
            raise RuntimeError("relock() of a store closed with uncommitted changes")
        try:
            self._acquire_lock(role, wait, create=False)
        except OSError as err:
            raise StoreError(f"cannot open the index folder {self.directory}: {err}") from err
        self.writable = True

    def _check_lock(self) -> None:
        """Before a commit: the lock held is still the index folder's lock file."""
        if self._lock_fd is not None and not _same_file(self._lock_fd, self.directory / LOCK):
            raise StoreError(
                f"the index folder {self.directory} was deleted or replaced while this run "
                "was writing; nothing more was written (run `index` again)"
            )

    def close(self) -> None:
        """Release the lock. Uncommitted changes are dropped, as a kill would drop them;
        the last snapshot stays readable, but nothing more can be written."""
        self.writable = False
        if self._in_txn and self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            self._in_txn = False
            self._touched = None  # (rolled back: the next commit's snapshot reads it all)
            with contextlib.suppress(sqlite3.Error, StoreError):
                row = self._read_row(self._role)
                self._file_count = row.files if row is not None else 0
                self._live_rows = row.live_rows if row is not None else 0
        self._release_lock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _names(self) -> tuple[str, str]:
        """This store's manifest mirror and format 2's fallback of it."""
        return (REBUILD, REBUILD_PREV) if self.staged else (MANIFEST, MANIFEST_PREV)

    def _load(self, rebuild: bool, wait: Callable[[IndexBusy], bool] | None = None) -> None:
        db = self.directory / CATALOG
        _manifest_versions(self.directory)  # a newer (or unknown) format is refused
        if not db.exists():
            self._without_catalog(wait)
        if self.writable or db.exists():
            try:
                self._conn = self._connect()
            except cat.CatalogEmpty:  # (a reader, while a writer creates it): no index yet
                self._conn = None
        live = self._read_row(LIVE) if self._conn is not None else None
        if live is not None and self.identity is None:
            # A reader that takes whatever model built the index (info, remove, clear).
            self.identity, self.dims = live.identity, live.dims
        if self.identity is None:
            self.identity = {}
        current = live
        if live is not None and rebuild and self.writable:
            current = self._stage(live)
        elif live is not None and rebuild:
            self._role = REBUILD_ROLE
            current = self._read_row(REBUILD_ROLE)
            if current is None or current.identity != self.identity:
                current = replace(live, role=REBUILD_ROLE, segments=(), stats=None, files=0,
                                  live_rows=0)  # fmt: skip
        if current is not None:
            if current.dims != self.dims or current.identity != self.identity:
                old = {**current.identity, "dims": current.dims}
                new = {**self.identity, "dims": self.dims}
                raise IndexMismatch(
                    "the index was built with another model or settings "
                    f"({_identity_diff(old, new)}); rebuild it to use this one: "
                    "launcher.py index --rebuild",
                    old,
                    new,
                )
            self.generation = current.generation
            self.generation_id = current.generation_id
            self.roots = current.roots
            self.stats = RunStats.from_json(current.stats) if current.stats else None
            self._segments = self._open_segments(current)
            self._total_rows = sum(s.rows for s in self._segments)
            self._file_count, self._live_rows = current.files, current.live_rows
            bad = [s for s in self._segments if s.array is None]
            if bad and self.writable:
                self._salvage(bad)
            elif bad:
                names = ", ".join(s.name for s in bad)
                self.recovered = f"damaged vectors ({names}); their files are left out"
        if self.writable:
            if current is not None and not self._changes:
                self._sync_mirror(current)
            self._collect_garbage(self._keep_names())
        self._publish()

    def _connect(self) -> sqlite3.Connection:
        """The catalog, set aside and replaced by its backup copy when it cannot be read
        (by whichever command opens it first: a reader takes the lock to do it)."""
        db = self.directory / CATALOG
        try:
            return _checked(db, writable=self.writable)
        except (sqlite3.DatabaseError, CatalogDamaged) as err:
            problem = f"{CATALOG}: {err}"
        if self.writable:
            self._replace_damaged(problem)
            return cat.connect(db, writable=True)
        try:
            self._acquire_lock("repair", None, create=False)
        except IndexBusy:
            raise StoreError(
                f"the index at {self.directory} is damaged ({problem}); the indexing run in "
                "progress restores its backup"
            ) from None
        except OSError as err:
            raise StoreError(f"cannot open the index folder {self.directory}: {err}") from err
        try:
            try:  # (maybe restored while we waited)
                return _checked(db, writable=False)
            except (sqlite3.DatabaseError, CatalogDamaged):
                pass
            self._replace_damaged(problem)
            conn = cat.connect(db, writable=True)
            self._sync_mirrors(conn)
            conn.close()
            return _checked(db, writable=False)
        finally:
            self._release_lock()

    def _replace_damaged(self, problem: str) -> None:
        db = self.directory / CATALOG
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                name = CATALOG + suffix
                os.replace(db.with_name(name), db.with_name(name + ".damaged"))
        self._restore_backup(problem)

    def _without_catalog(self, wait: Callable[[IndexBusy], bool] | None) -> None:
        """No catalog.db: a new index, a format 1-2 one to migrate, or a lost catalog."""
        versions = _manifest_versions(self.directory)
        if not versions and not (self.directory / CATALOG_BACKUP).exists():
            return  # a new index
        if self.writable:
            if any(v in (1, 2) for v in versions):
                from .migrate import migrate

                self.recovered = migrate(self.directory)
            else:
                self._restore_backup(f"{CATALOG} is missing")
            conn = cat.connect(self.directory / CATALOG, writable=True)
            try:
                self._sync_mirrors(conn)
            finally:
                conn.close()
            return
        # Converted (or restored) by whichever command opens it first, under the lock.
        try:
            self._acquire_lock("migrate", wait, create=False)
        except OSError as err:
            raise StoreError(f"cannot open the index folder {self.directory}: {err}") from err
        try:
            if not (self.directory / CATALOG).exists():
                self.writable = True
                try:
                    self._without_catalog(wait)
                finally:
                    self.writable = False
        finally:
            self._release_lock()

    def _sync_mirrors(self, conn: sqlite3.Connection) -> None:
        """manifest.json (and rebuild.json) from a catalog just migrated or restored."""
        for role, name in ((LIVE, MANIFEST), (REBUILD_ROLE, REBUILD)):
            row = cat.read_catalog(conn, role)
            if row is not None:
                _write_atomic(self.directory / name, _manifest_bytes(row))
        for name in (MANIFEST_PREV, REBUILD_PREV):  # format 2's fallbacks: migrated
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)

    def _restore_backup(self, problem: str) -> None:
        backup = self.directory / CATALOG_BACKUP
        db = self.directory / CATALOG
        try:
            src = cat.connect(backup, writable=False) if backup.exists() else None
            row = cat.read_catalog(src, LIVE) if src is not None else None
            if src is not None:
                src.close()
        except (sqlite3.DatabaseError, CatalogDamaged, cat.CatalogEmpty) as err:
            problem += f"; {CATALOG_BACKUP}: {err or 'empty'}"
            row = None
        if row is None:
            raise StoreError(
                f"the index at {self.directory} is damaged and no earlier copy could be read "
                f"({problem}); rebuild it: launcher.py index --rebuild"
            )
        for suffix in ("-wal", "-shm"):  # a stale log must never be applied to the copy
            with contextlib.suppress(FileNotFoundError):
                os.unlink(db.with_name(CATALOG + suffix))
        tmp = db.with_name(CATALOG + ".tmp")
        shutil.copyfile(backup, tmp)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, db)
        _fsync_dir(self.directory)
        self.recovered = (
            f"{problem}; using the copy made at the end of the last run (generation "
            f"{row.generation}); files indexed since then are indexed again"
        )

    def _read_row(self, role: str) -> CatalogRow | None:
        assert self._conn is not None
        try:
            return cat.read_catalog(self._conn, role)
        except CatalogDamaged as err:
            raise StoreError(f"the index catalog in {self.directory} is damaged: {err}") from err

    def _count(self) -> None:
        assert self._conn is not None
        n, total = self._conn.execute(
            "SELECT count(*), total(length(rows)) FROM files WHERE cat = ?", (self._role,)
        ).fetchone()
        self._file_count, self._live_rows = int(n), int(total) // 8

    def _stage(self, live: CatalogRow) -> CatalogRow:
        """Switch to building a new index beside ``live`` (the "rebuild" catalog). An
        interrupted rebuild with the same identity is resumed; anything else starts empty,
        with the live index's roots."""
        self._live_generation = live.generation
        self.staged = True
        self._role = REBUILD_ROLE
        staged = self._read_row(REBUILD_ROLE)
        if staged is not None and staged.identity == self.identity and staged.dims == self.dims:
            segments = self._open_segments(staged)
            if all(s.array is not None for s in segments):
                self.resumed = True
                return staged
        self._begin()
        assert self._conn is not None
        self._conn.execute("DELETE FROM files WHERE cat = ?", (REBUILD_ROLE,))
        self._conn.execute("DELETE FROM catalogs WHERE role = ?", (REBUILD_ROLE,))
        self._touched = None
        self._changes += 1  # the first commit writes the (empty) new generation
        return CatalogRow(REBUILD_ROLE, live.generation, "", self.identity or {}, self.dims,
                          live.roots, (), None, 0, 0)  # fmt: skip

    def _open_segments(self, row: CatalogRow) -> list[_Segment]:
        """The catalog row's segments, memory-mapped; None arrays for damaged ones. A
        reader that finds one missing may have raced a commit: it reads the row again."""
        for attempt in range(1 if self.writable else 3):
            try:
                return self._map_segments(row, retry=not self.writable and attempt < 2)
            except _Retry:
                time.sleep(0.2)
                if self._conn is not None:
                    row = self._read_row(row.role) or row
        return self._map_segments(row, retry=False)

    def _map_segments(self, row: CatalogRow, *, retry: bool) -> list[_Segment]:
        out: list[_Segment] = []
        start = 0
        known = {s.name: s for s in self._segments}
        for name, rows in row.segments:
            if os.path.basename(name) != name or not name.startswith("seg-"):
                raise StoreError(f"the index catalog names a bad segment {name!r}")
            if name in known and known[name].rows == rows and known[name].array is not None:
                array = known[name].array
            else:
                array = self._open_segment(name, rows, row.dims, retry)
            out.append(_Segment(name, start, rows, array))
            start += rows
        return out

    def _reopen(self, row: CatalogRow) -> list[_Segment]:
        """For a snapshot that reads a newer generation than it was made for (``_Retry``
        when a segment is missing: the snapshot reads the catalog again)."""
        return self._map_segments(row, retry=True)

    def _salvage(self, bad: list[_Segment]) -> None:
        """Drop the files whose vectors a damaged segment held; the next commit compacts."""
        assert self._conn is not None
        ranges = [(s.start, s.start + s.rows) for s in bad]
        lost = [
            (i, p)
            for i, p, rows in self._conn.execute(
                "SELECT id, path, rows FROM files WHERE cat = ?", (self._role,)
            )
            if _hits_ranges(rows, ranges)
        ]
        self._begin()
        self._conn.executemany("DELETE FROM files WHERE id = ?", [(i,) for i, _ in lost])
        self._touched = None
        self._count()
        names = ", ".join(s.name for s in bad)
        self.recovered = (
            f"damaged vectors ({names}); kept generation {self.generation} without the "
            f"{len(lost)} file(s) whose vectors were lost (they will be indexed again)"
        )
        self._force_compact = True
        self._changes += 1

    def _open_segment(self, name: str, rows: int, dims: int, retry: bool) -> np.ndarray | None:
        path = self.directory / name
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            if retry:
                raise _Retry() from None
            return None
        except (OSError, ValueError, EOFError):
            return None  # truncated or garbled: its files are dropped
        if array.shape != (rows, dims) or array.dtype != VECTOR_DTYPE:
            return None
        return array

    def _keep_names(self) -> set[str]:
        """Segments some catalog, the backup copy or a format-2 manifest still names."""
        names = {s.name for s in self._segments}
        if self._conn is not None:
            for (segments,) in self._conn.execute("SELECT segments FROM catalogs"):
                with contextlib.suppress(ValueError, TypeError):
                    names.update(str(n) for n, _ in json.loads(segments))
        names |= self._backup_segments()
        try:
            data = json.loads((self.directory / MANIFEST_V2).read_bytes())
            names.update(str(s["name"]) for s in data["segments"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return names

    def _backup_segments(self) -> set[str]:
        path = self.directory / CATALOG_BACKUP
        try:
            st = path.stat()
        except OSError:
            return set()
        stamp = (st.st_ino, st.st_mtime_ns)
        if self._backup_names is None or self._backup_names[0] != stamp:
            names: set[str] = set()
            try:
                conn = cat.connect(path, writable=False)
                try:
                    for role in (LIVE, REBUILD_ROLE):
                        row = cat.read_catalog(conn, role)
                        if row is not None:
                            names.update(n for n, _ in row.segments)
                finally:
                    conn.close()
            except (sqlite3.DatabaseError, CatalogDamaged):
                pass
            self._backup_names = (stamp, names)
        return self._backup_names[1]

    # -- reading (writer's live view) ---------------------------------------------------

    def _select(self, where: str, params: Sequence[Any]) -> list[FileRecord]:
        if self._conn is None:
            return []
        rows = self._conn.execute(
            f"SELECT {cat.FILE_COLUMNS} FROM files WHERE cat = ? {where}", (self._role, *params)
        )
        return [_record(r) for r in rows]

    def get(self, path: str) -> FileRecord | None:
        found = self._select("AND path = ?", (cat.path_key(path),))
        return found[0] if found else None

    def files(self) -> list[FileRecord]:
        return self._select("ORDER BY path", ())

    def paths(self) -> list[str]:
        """Every file's path (cheaper than ``files()``)."""
        if self._conn is None:
            return []
        rows = self._conn.execute("SELECT path FROM files WHERE cat = ?", (self._role,))
        return [cat.key_path(k) for (k,) in rows]

    def count(self, status: str) -> int:
        """Files with this status."""
        if self._conn is None:
            return 0
        return int(self._conn.execute(
            "SELECT count(*) FROM files WHERE cat = ? AND status = ?", (self._role, status)
        ).fetchone()[0])  # fmt: skip

    def __len__(self) -> int:
        return self._file_count

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.get(path) is not None

    def unchanged(self, path: str, size: int, mtime_ns: int) -> FileRecord | None:
        """The record when ``path`` has the recorded size and mtime (skip it unread), else None.

        A record whose mtime was within a couple of seconds of its indexing time counts as
        changed, so a write in the same timestamp tick is not missed. (One indexed SELECT:
        for a few paths; a whole run asks ``unchanged_status``.)
        """
        record = self.get(path)
        if record is None or _changed(
            (record.size, record.mtime_ns, record.status, record.indexed_ns), size, mtime_ns
        ):
            return None
        self.seen(path)
        return record

    def unchanged_status(self, path: str, size: int, mtime_ns: int) -> Status | None:
        """``unchanged(...).status`` without building the record: the run's walk asks it of
        every file, so the (path -> stat, status) map is read in one query per run and
        kept in step with this writer's changes."""
        if self._stat_map is None:
            assert self._conn is not None or not self.generation
            rows = self._conn.execute(
                "SELECT path, size, mtime_ns, status, indexed_ns FROM files WHERE cat = ?",
                (self._role,),
            ) if self._conn is not None else ()  # fmt: skip
            self._stat_map = {cat.key_path(k): (s, m, st, i) for k, s, m, st, i in rows}
        entry = self._stat_map.get(path)
        if entry is None or _changed(entry, size, mtime_ns):
            return None
        self.seen(path)
        return entry[2]  # type: ignore[return-value]

    def lookup_by_hash(self, digest: str) -> FileRecord | None:
        """An indexed (status ok) file with this content hash, to reuse its vectors."""
        found = self._select(
            "AND content_hash = ? AND status = 'ok' AND length(rows) > 0 ORDER BY path LIMIT 1",
            (digest,),
        )
        return found[0] if found else None

    def vectors_of(self, record: FileRecord) -> np.ndarray:
        """The record's vectors in row order, float16 (committed or not)."""
        return self._rows([r.row for r in record.rows])

    def _rows(self, rows: Sequence[int]) -> np.ndarray:
        idx = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(idx), self.dims), dtype=VECTOR_DTYPE)
        committed = sum(s.rows for s in self._segments)
        pending = idx >= committed
        if pending.any():
            if len(self._pending) > 1:
                self._pending = [np.concatenate(self._pending)]
            out[pending] = self._pending[0][idx[pending] - committed]
        for seg in self._segments:
            mask = (idx >= seg.start) & (idx < seg.start + seg.rows)
            if mask.any():
                if seg.array is None:
                    raise StoreError(f"index segment {seg.name} is damaged")
                out[mask] = seg.array[idx[mask] - seg.start]
        return out

    # -- writing ------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError("the index is open read-only")

    def _begin(self) -> None:
        """The writer's transaction: open from the first change to ``commit``."""
        assert self._conn is not None
        if not self._in_txn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True

    def _prepare(self, vectors: np.ndarray, n: int) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.shape != (n, self.dims):
            raise ValueError(f"expected vectors of shape ({n}, {self.dims}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError("the model returned a non-finite vector")
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InputError("the model returned a zero vector")
        return (arr / norms).astype(VECTOR_DTYPE)

    def _append(self, vectors: np.ndarray) -> int:
        start = self._total_rows
        if len(vectors):
            self._pending.append(vectors)
            self._total_rows += len(vectors)
        return start

    def _delete(self, path: str) -> bool:
        assert self._conn is not None
        old = self._conn.execute(
            "SELECT id, length(rows) FROM files WHERE cat = ? AND path = ?",
            (self._role, cat.path_key(path)),
        ).fetchone()
        if old is None:
            return False
        self._conn.execute("DELETE FROM files WHERE id = ?", (old[0],))
        if self._touched is not None:
            self._touched.add(path)
        if self._stat_map is not None:
            self._stat_map.pop(path, None)
        self._file_count -= 1
        self._live_rows -= old[1] // 8
        return True

    def _set(self, record: FileRecord) -> FileRecord:
        self._check_writable()
        self._begin()
        assert self._conn is not None
        self._delete(record.path)
        self._conn.execute(_INSERT, _values(self._role, record))
        if self._touched is not None:
            self._touched.add(record.path)
        if self._stat_map is not None:
            stat = (record.size, record.mtime_ns, record.status, record.indexed_ns)
            self._stat_map[record.path] = stat
        self._file_count += 1
        self._live_rows += len(record.rows)
        self.seen(record.path)
        self._changes += 1
        return record

    def put(
        self, record: FileRecord, pieces: Sequence[PieceLike], vectors: np.ndarray
    ) -> FileRecord:
        """Add or replace a file with one vector per piece; ``record.rows`` is ignored.

        The old rows of the path become dead. Vectors are renormalised and stored float16.
        """
        self._check_writable()
        arr = self._prepare(vectors, len(pieces))
        start = self._append(arr)
        rows = tuple(RowRef(start + i, p.role, p.locator) for i, p in enumerate(pieces))
        return self._set(replace(record, rows=rows, indexed_ns=time.time_ns()))

    def extend(
        self,
        path: str,
        pieces: Sequence[PieceLike],
        vectors: np.ndarray,
        *,
        status: Status = "ok",
    ) -> FileRecord:
        """Append rows to an indexed file (e.g. its chunks after its card), set ``status``."""
        self._check_writable()
        record = self.get(path)
        if record is None:
            raise KeyError(path)
        arr = self._prepare(vectors, len(pieces))
        start = self._append(arr)
        rows = tuple(RowRef(start + i, p.role, p.locator) for i, p in enumerate(pieces))
        return self._set(replace(record, rows=record.rows + rows, status=status))

    def touch(self, path: str, size: int, mtime_ns: int) -> FileRecord:
        """Same content, new stat (the hash matched): keep the vectors, update size/mtime."""
        record = self.get(path)
        if record is None:
            raise KeyError(path)
        return self._set(replace(record, size=size, mtime_ns=mtime_ns, indexed_ns=time.time_ns()))

    def queue(self, path: str, size: int, mtime_ns: int) -> FileRecord:
        """Record a new file before it is embedded, so search finds it by name at once."""
        return self._set(FileRecord(path=path, size=size, mtime_ns=mtime_ns, status="queued"))

    def mark_failed(
        self,
        path: str,
        reason: str,
        *,
        size: int,
        mtime_ns: int,
        kind: str | None = None,
        content_hash: str | None = None,
    ) -> FileRecord:
        """Record a file that could not be indexed (no rows). Its old vectors are dropped:
        they describe content that is no longer there."""
        record = FileRecord(
            path=path,
            size=size,
            mtime_ns=mtime_ns,
            kind=kind,
            status="failed",
            reason=reason,
            content_hash=content_hash,
            indexed_ns=time.time_ns(),
        )
        return self._set(record)

    def reuse(self, source: FileRecord, path: str, size: int, mtime_ns: int) -> FileRecord:
        """Index ``path`` with a copy of ``source``'s vectors (a moved, renamed or copied
        file with the same content hash): no model run. Copying, not sharing, keeps each
        row owned by exactly one file; the source's rows die when it is swept."""
        self._check_writable()
        start = self._append(self.vectors_of(source))
        rows = tuple(RowRef(start + i, r.role, r.locator) for i, r in enumerate(source.rows))
        record = replace(
            source, path=path, size=size, mtime_ns=mtime_ns, rows=rows, indexed_ns=time.time_ns()
        )
        return self._set(record)

    def remove(self, path: str) -> bool:
        self._check_writable()
        self._begin()
        if not self._delete(path):
            return False
        self._changes += 1
        return True

    def set_roots(self, roots: Iterable[str]) -> None:
        roots = tuple(roots)
        if roots != self.roots:
            self.roots = roots
            self._changes += 1

    def set_stats(self, stats: RunStats) -> None:
        """Record what a run did; the next commit writes it even if nothing else changed."""
        self._check_writable()
        self.stats = stats
        self._changes += 1

    # -- mark and sweep -----------------------------------------------------------------

    def begin_sweep(self) -> None:
        """Start a run: files not ``seen`` (or put, touched...) before ``sweep`` are removed."""
        self._stat_map = None
        self._seen = set()
        self._kept_prefixes = []

    def seen(self, path: str) -> None:
        if self._seen is not None:
            self._seen.add(path)

    def seen_under(self, folder: str) -> None:
        """Keep everything under ``folder`` (unreadable folder, missing root: not deleted)."""
        self._kept_prefixes.append(folder.rstrip(os.sep) + os.sep)

    def sweep(self) -> list[str]:
        """Remove the files not seen since ``begin_sweep``; returns their paths."""
        if self._seen is None:
            raise RuntimeError("sweep() without begin_sweep()")
        seen, prefixes = self._seen, tuple(self._kept_prefixes)
        gone = sorted(p for p in self.paths() if p not in seen and not p.startswith(prefixes))
        for path in gone:
            self.remove(path)
        self._seen = None
        self._kept_prefixes = []
        self._stat_map = None  # (a run's: its memory goes with it)
        return gone

    # -- committing ---------------------------------------------------------------------

    @property
    def uncommitted(self) -> int:
        """Changes (files put, removed...) since the last commit."""
        return self._changes

    def maybe_commit(self) -> bool:
        """Commit when ``commit_every_files`` changes or ``commit_every_seconds`` have
        accumulated; True if it committed."""
        if not self._changes:
            return False
        due = time.monotonic() - self._last_commit >= self.commit_every_seconds
        if self._changes >= self.commit_every_files or due:
            return self.commit()
        return False

    def _should_compact(self) -> bool:
        if self._force_compact:
            return True
        dead = self._total_rows - self._live_rows
        if (
            dead >= self.COMPACT_MIN_DEAD_ROWS
            and dead > self.COMPACT_DEAD_FRACTION * self._total_rows
        ):
            return True
        return len(self._segments) + 1 > self.MAX_SEGMENTS

    def commit(self, *, compact: bool | None = None) -> bool:
        """Write the changes since the last commit as a new generation (see the module
        docstring for the order). ``compact`` forces (True) or forbids (False) rewriting
        the live rows into one segment; None decides by the dead-row share. Returns False
        when there was nothing to write."""
        self._check_writable()
        if not self._changes and not compact:
            return False
        generation = self.generation + 1
        token = secrets.token_hex(4)
        if compact is None:
            compact = self._should_compact()
        self._check_lock()
        self._check_segments()
        assert self._conn is not None
        before = (self.generation, self.generation_id)
        try:
            if not self.staged:
                self._write_models()
            self._begin()
            if compact:
                segments = self._write_compacted(generation, token)
            else:
                segments = list(self._segments)
                if self._pending:
                    pending = np.concatenate(self._pending)
                    segments.append(self._write_segment(generation, token, pending))
            if self._promote:
                self._swap_in_rebuild()
            row = CatalogRow(
                self._role, generation, token, self.identity or {}, self.dims, self.roots,
                tuple((s.name, s.rows) for s in segments),
                dataclasses.asdict(self.stats) if self.stats else None,
                self._file_count, self._live_rows,
            )  # fmt: skip
            cat.write_catalog(self._conn, row, time.time_ns())
            self._conn.execute("COMMIT")
            self._in_txn = False
            self._promote = False
            self._write_manifest(row)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot write the index in {self.directory}: {err}") from err
        self._segments = segments
        self._pending = []
        self._total_rows = sum(s.rows for s in segments)
        self.generation = generation
        self.generation_id = token
        self._changes = 0
        self._force_compact = False
        self._last_commit = time.monotonic()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / MANIFEST_V2)  # the migrated index has committed
        # (an older snapshot keeps reading a deleted segment through its memory map)
        self._collect_garbage(self._keep_names())
        if compact:
            self._base = None
        self._publish(None if compact else self._derivation(before))
        self._touched = set()
        return True

    def _derivation(self, before: tuple[int, str]) -> tuple[Columns, set[str], list[Any]] | None:
        """How the new snapshot gets its columns without reading the whole catalog: the
        newest columns a snapshot read (for the generation they say) plus the files written
        since, read now. A page that searches between a watcher's commits then costs array
        work at its next query, not a read of every record; None after a compaction (row
        numbers change) or when too much changed."""
        prev, touched = self._snapshot, self._touched
        if touched is None or any(seg.array is None for seg in self._segments):
            self._base = None
            return None
        if prev is not None and prev._role == self._role:
            with prev._lock:
                if prev._columns is not None and (prev.generation, prev.generation_id) == before:
                    self._base = (prev._columns, set())
        if self._base is None:
            return None
        base, gone = self._base[0], self._base[1] | touched
        if len(gone) > DERIVE_MAX_PATHS:
            self._base = None
            return None
        self._base = (base, gone)
        assert self._conn is not None
        rows = []
        for path in gone:
            row = self._conn.execute(
                "SELECT id, path, size, mtime_ns, kind, status, rows FROM files "
                "WHERE cat = ? AND path = ?",
                (self._role, cat.path_key(path)),
            ).fetchone()
            if row is not None:
                rows.append(row)
        return base, gone, rows

    def backup(self) -> None:
        """Copy the catalog to catalog.bak.db (the fallback if catalog.db is damaged): at
        the end of a run, not per commit (it copies every record)."""
        if self._conn is None or self._in_txn or not self.writable:
            return
        final = self.directory / CATALOG_BACKUP
        if self._backup_of() == (self.generation, self.generation_id):
            return  # nothing committed since the last copy (a run that changed nothing)
        tmp = final.with_name(CATALOG_BACKUP + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            self._conn.execute("VACUUM INTO ?", (str(tmp),))
            os.chmod(tmp, 0o600)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.directory)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot back up the index catalog: {err}") from err

    def _backup_of(self) -> tuple[int, str] | None:
        """The generation of this store's catalog that the backup copy holds."""
        if not (self.directory / CATALOG_BACKUP).exists():
            return None  # (connecting would create an empty file)
        try:
            conn = cat.connect(self.directory / CATALOG_BACKUP, writable=False)
        except (OSError, sqlite3.Error, CatalogDamaged, cat.CatalogEmpty, StoreError):
            return None
        try:
            row = cat.read_catalog(conn, self._role)
        except (sqlite3.Error, CatalogDamaged):
            row = None
        finally:
            conn.close()
        return (row.generation, row.generation_id) if row is not None else None

    def _check_segments(self) -> None:
        """Never commit a generation naming a segment that is not on disk (the folder was
        emptied or deleted under this writer)."""
        for seg in self._segments:
            # (a segment known to be damaged is not copied: the salvage compaction drops it)
            if seg.array is not None and not (self.directory / seg.name).is_file():
                raise StoreError(
                    f"index segment {seg.name} vanished from {self.directory} while this run "
                    "was writing (was the folder deleted?); nothing more was written (run "
                    "`index` again)"
                )

    def finish_rebuild(self) -> None:
        """Make the rebuilt index the live one: one transaction swaps the catalogs, then
        manifest.json names it and rebuild.json goes. The old index's segments are deleted
        once nothing names them."""
        self._check_writable()
        if not self.staged:
            self.commit()
            return
        self.staged = False
        self.generation = max(self.generation, self._live_generation)
        self._promote = True
        self._changes += 1
        self.commit()
        for name in (REBUILD, REBUILD_PREV):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
        _fsync_dir(self.directory)

    def _swap_in_rebuild(self) -> None:
        assert self._conn is not None
        self._conn.execute("DELETE FROM files WHERE cat = ?", (LIVE,))
        self._conn.execute("UPDATE files SET cat = ? WHERE cat = ?", (LIVE, REBUILD_ROLE))
        self._conn.execute("DELETE FROM catalogs WHERE role = ?", (REBUILD_ROLE,))
        self._role = LIVE
        self._stat_map = None
        self._touched = None

    def _write_models(self) -> None:
        """models.json: the model files this index is built with, when they changed."""
        if self.model_files is None:
            return
        data = {**self.model_files, "identity": self.identity}
        if read_models(self.directory) == data:
            return
        raw = json.dumps(data, ensure_ascii=True, indent=1).encode("ascii")
        _write_atomic(self.directory / MODELS, raw)

    def _segment_name(self, generation: int, token: str) -> str:
        return f"seg-{generation:06d}-{token}.npy"

    def _write_segment(self, generation: int, token: str, rows: np.ndarray) -> _Segment:
        # Written under its final name (unique, and named by no catalog until the commit:
        # a kill half-way leaves a file the next commit deletes): no rename to wait for.
        name = self._segment_name(generation, token)
        final = self.directory / name
        with open(final, "wb") as f:
            np.save(f, np.ascontiguousarray(rows, dtype=VECTOR_DTYPE), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.directory)
        start = sum(s.rows for s in self._segments)
        array = np.load(final, mmap_mode="r", allow_pickle=False)
        return _Segment(name, start, len(rows), array)

    def _write_compacted(self, generation: int, token: str) -> list[_Segment]:
        """All live rows into one new segment, streamed in blocks; the catalog's row numbers
        rewritten in the open transaction (a file keeps the order of its rows)."""
        assert self._conn is not None
        owned = self._conn.execute(
            "SELECT id, rows FROM files WHERE cat = ? AND length(rows) > 0 ORDER BY id",
            (self._role,),
        ).fetchall()
        if not owned:
            return []
        ids = [i for i, _ in owned]
        counts = [len(r) // 8 for _, r in owned]
        order = np.frombuffer(b"".join(r for _, r in owned), dtype=cat.ROW_DTYPE)
        name = self._segment_name(generation, token)
        final = self.directory / name
        tmp = final.with_name(name + ".tmp")
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=VECTOR_DTYPE, shape=(len(order), self.dims)
        )
        block = 8192
        for lo in range(0, len(order), block):
            out[lo : lo + block] = self._rows(order[lo : lo + block].tolist())
        out.flush()
        del out
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        self._conn.executemany(
            "UPDATE files SET rows = ? WHERE id = ?",
            (
                (np.arange(bounds[k], bounds[k + 1], dtype=cat.ROW_DTYPE).tobytes(), i)
                for k, i in enumerate(ids)
            ),
        )
        array = np.load(final, mmap_mode="r", allow_pickle=False)
        return [_Segment(name, 0, len(order), array)]

    def _sync_mirror(self, row: CatalogRow) -> None:
        """Rewrite the manifest mirror when it does not match the catalog (a kill between
        a catalog commit and its manifest write, a damaged or format-2 manifest)."""
        try:
            data = json.loads((self.directory / self._names[0]).read_bytes())
            ok = (
                data.get("version") == FORMAT_VERSION
                and data.get("generation") == row.generation
                and data.get("generation_id") == row.generation_id
            )
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            try:
                self._write_manifest(row)
            except OSError as err:
                raise StoreError(f"cannot write the index in {self.directory}: {err}") from err
        for name in (MANIFEST_PREV, REBUILD_PREV):  # format 2's fallbacks: migrated
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)

    def _write_manifest(self, row: CatalogRow) -> None:
        # A mirror: replaced atomically (never seen half-written), but not fsynced; after
        # a power cut the catalog is the truth and the next writer rewrites it.
        _write_atomic(self.directory / self._names[0], _manifest_bytes(row), durable=False)

    def _collect_garbage(self, keep: set[str]) -> None:
        """Delete segment and temp files nothing names (crash leftovers, old ones)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            stale_seg = name.startswith("seg-") and name.endswith(".npy") and name not in keep
            if stale_seg or name.endswith(".tmp"):
                # Still mapped (Windows) or already gone: the next commit tries again.
                with contextlib.suppress(OSError):
                    os.unlink(self.directory / name)

    # -- readers ------------------------------------------------------------------------

    def _publish(self, derive: tuple[Columns, set[str], list[Any]] | None = None) -> None:
        snap = Snapshot(
            self.generation,
            self.identity or {},
            self.dims,
            self.roots,
            tuple(self._segments),
            self.stats,
            self.generation_id,
            readers=self._readers if self.generation else None,
            role=self._role,
            reopen=self._reopen,
            derive=derive,
        )
        with self._snap_lock:
            self._snapshot = snap

    def snapshot(self) -> Snapshot:
        """The last committed generation, immutable: safe to search from another thread."""
        with self._snap_lock:
            assert self._snapshot is not None
            return self._snapshot


def _checked(db: Path, *, writable: bool) -> sqlite3.Connection:
    """A connection to a catalog that answered a first query (else it is damaged)."""
    conn = cat.connect(db, writable=writable)
    try:
        cat.read_catalog(conn, LIVE)
        conn.execute("SELECT id FROM files LIMIT 1").fetchall()
    except (sqlite3.DatabaseError, CatalogDamaged):
        conn.close()
        raise
    return conn


def _manifest_bytes(row: CatalogRow) -> bytes:
    """The manifest mirror of a catalog row: small, human-readable, ASCII."""
    data = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "generation": row.generation,
        "generation_id": row.generation_id,
        "written_ns": time.time_ns(),
        "identity": row.identity,
        "dims": row.dims,
        "dtype": VECTOR_DTYPE.name,
        "roots": list(row.roots),
        "rows": sum(n for _, n in row.segments),
        "segments": [{"name": n, "rows": r} for n, r in row.segments],
        "stats": row.stats,
        "catalog": CATALOG,
        "file_count": row.files,
        "live_rows": row.live_rows,
    }
    return json.dumps(data, ensure_ascii=True, indent=1).encode("ascii")


def _manifest_versions(directory: Path) -> list[int]:
    """Format versions of the manifests in ``directory`` (0: unreadable)."""
    versions = []
    for name in (MANIFEST, MANIFEST_PREV, REBUILD):
        try:
            data = json.loads((directory / name).read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            versions.append(0)
            continue
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, int):
            versions.append(0)
            continue
        if version > FORMAT_VERSION:
            raise StoreError(
                f"the index at {directory} has format {version}, newer than this "
                f"program's {FORMAT_VERSION}: update the program or rebuild the index"
            )
        if version not in READABLE_VERSIONS:
            raise StoreError(
                f"the index at {directory} has the old format {version}; "
                "rebuild it: launcher.py index --rebuild"
            )
        versions.append(version)
    return versions


def read_models(directory: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """What models.json remembers ({"model", "mmproj", "identity"}), or None if nothing
    (usable) is there."""
    path = Path(directory) if directory is not None else default_dir()
    try:
        data = json.loads((path / MODELS).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        return None
    return data


def _write_atomic(path: Path, raw: bytes, *, durable: bool = True) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def _holder(fd: int) -> IndexBusy:
    """Who holds the lock, from the lock file's "<pid> <role>" line."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        words = os.read(fd, 64).decode("ascii", "replace").split()
    except OSError:  # (Windows: the holder's locked byte cannot be read)
        words = []
    pid = int(words[0]) if words and words[0].isdigit() else None
    return IndexBusy(pid, words[1] if len(words) > 1 else None)


def _same_file(fd: int, path: Path) -> bool:
    """Is ``path`` still the file open as ``fd``? (False once it is deleted or replaced.)"""
    if os.name != "posix":
        return True  # an open file cannot be deleted or replaced on Windows
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class _Retry(Exception):
    """A reader found a segment missing: a writer is committing; read the manifest again."""
