"""The index on disk: a JSON manifest plus vector segments, committed atomically.

Layout of the index folder (default ``<data dir>/index``)::

    manifest.json          current generation: format version, model identity, dims, roots,
                           segments, one entry per file, last run stats
    manifest.prev.json     the generation before it, the fallback if manifest.json is damaged
    rebuild.json           (during ``index --rebuild``) the new index being built beside the
    rebuild.prev.json      old one, with its fallback; it replaces manifest.json when done
    seg-<gen>-<id>.npy     float16 vector rows; written once, never modified
    models.json            the model files the index was built with (paths and identity), so
                           commands find them without flags
    lock                   held with flock by the one process writing, only while it writes;
                           it names the holder ("<pid> <role>")

Segments: a commit writes only the rows added since the previous commit, as a new segment
file, then the manifest; committing every few files never rewrites the gigabytes already
on disk. Rows of removed or changed files stay in their segment as dead rows until a
compaction (dead rows over a quarter of all rows, or too many segments) copies the live
rows into one new segment. Row numbers in the manifest index the concatenation of its
segments, in the listed order.

Commit order: (1) the new segment: temp file, fsync, rename, fsync folder; (2) the
manifest: temp file, fsync, manifest.json -> manifest.prev.json, temp -> manifest.json,
fsync folder; (3) delete segment files that neither manifest names. A kill at any point
leaves manifest.json or manifest.prev.json naming only complete segments; what a kill
loses is the uncommitted tail. Loading validates (JSON, version, segment shapes, row
counts, row ownership) and falls back to the previous generation; if only some segments
are damaged, the files whose vectors they held are dropped (to be indexed again) and the
rest is kept. Nothing recoverable raises ``StoreError``, never a silent empty index.

float16: unit-norm components lie in [-1, 1] where float16 keeps ~3 significant digits, so
a cosine moves by ~1e-3, far below the gaps that order search results, and the disk and
memory are halved. NumPy has no fast float16 matmul, so ``Snapshot.scores`` converts
blocks to float32 on the fly.

Rebuilds: a rebuild writes its generations to rebuild.json (same commit order, own
segments) while manifest.json keeps serving the old index; ``finish_rebuild`` commits the
new index as the next generation of manifest.json, one atomic rename. An interrupted
rebuild leaves the old index as it was, and the next rebuild with the same model resumes.

Processes: the lock is taken per run and released after it, so a running ``launch`` and
CLI commands take turns; a commit first checks that its lock file is still the one in the
folder and that every segment it names is on disk (a deleted index folder is never
committed over with segments that no longer exist).

Threads: one writer (the indexer) owns a ``Store``; readers in the same process call
``snapshot()`` and get an immutable ``Snapshot`` of the last commit, swapped under a lock.
Paths with undecodable bytes (surrogate escapes) round-trip through the JSON's ``\\udcxx``
escapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from .errors import IndexBusy, IndexMismatch, InputError, StoreError
from .extract import Locator

FORMAT = "launcher-index"
FORMAT_VERSION = 2
# Versions this program reads. 1 -> 2 added the "queued" status (a file found by a run but
# not embedded yet); a version-1 manifest is a valid version 2 one and is written as 2 at
# the next commit.
READABLE_VERSIONS = (1, 2)
VECTOR_DTYPE = np.dtype(np.float16)
MANIFEST = "manifest.json"
MANIFEST_PREV = "manifest.prev.json"
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


def default_dir() -> Path:
    from . import paths

    return paths.data_dir() / "index"


def index_exists(directory: str | os.PathLike[str] | None = None) -> bool:
    """Whether an index was ever committed in ``directory`` (default ``default_dir()``)."""
    path = Path(directory) if directory is not None else default_dir()
    return (path / MANIFEST).exists() or (path / MANIFEST_PREV).exists()


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


class _Damaged(Exception):
    """A manifest that cannot be used (internal: turns into a fallback or a StoreError)."""


@dataclass
class _Loaded:
    source: str
    generation: int
    generation_id: str
    identity: dict[str, Any]
    dims: int
    roots: tuple[str, ...]
    segments: list[_Segment]
    files: dict[str, FileRecord]
    stats: RunStats | None
    bad_segments: list[str]


class Snapshot:
    """An immutable view of one committed generation, for searching.

    ``matrix()`` holds the live rows only (float16, read-only); ``row_owner(i)`` tells which
    file and piece row ``i`` of it is. Both are built on first use.
    """

    def __init__(
        self,
        generation: int,
        identity: dict[str, Any],
        dims: int,
        roots: tuple[str, ...],
        files: dict[str, FileRecord],
        segments: tuple[_Segment, ...],
        stats: RunStats | None,
        generation_id: str = "",
    ):
        self.generation = generation
        # generation numbers start again after the folder is deleted: (generation, id) is
        # what tells two snapshots apart
        self.generation_id = generation_id
        self.identity = identity
        self.dims = dims
        self.roots = roots
        self.stats = stats
        self._files = files
        self._segments = segments
        self._lock = threading.Lock()
        self._owners: list[tuple[FileRecord, RowRef]] | None = None
        self._matrix: np.ndarray | None = None
        self._coarse: np.ndarray | None = None
        self._coarse_lock = threading.Lock()

    @property
    def files(self) -> tuple[FileRecord, ...]:
        return tuple(self._files.values())

    def get(self, path: str) -> FileRecord | None:
        return self._files.get(path)

    def _build(self) -> tuple[list[tuple[FileRecord, RowRef]], np.ndarray]:
        with self._lock:
            if self._owners is None or self._matrix is None:
                owners = sorted(
                    ((rec, ref) for rec in self._files.values() for ref in rec.rows),
                    key=lambda pair: pair[1].row,
                )
                rows = np.fromiter((ref.row for _, ref in owners), dtype=np.int64)
                self._matrix = _gather(self._segments, rows, self.dims)
                self._matrix.setflags(write=False)
                self._owners = owners
            return self._owners, self._matrix

    def __len__(self) -> int:
        return sum(len(rec.rows) for rec in self._files.values())

    def matrix(self) -> np.ndarray:
        """All live rows, ``(n, dims)`` float16, unit-norm; row i belongs to ``row_owner(i)``."""
        return self._build()[1]

    def row_owner(self, i: int) -> tuple[FileRecord, RowRef]:
        return self._build()[0][i]

    def owners(self) -> list[tuple[FileRecord, RowRef]]:
        """``row_owner`` for every row of ``matrix()``, in order (do not modify)."""
        return self._build()[0]

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
        # A rebuild in progress: commits go to rebuild.json until ``finish_rebuild``.
        self.staged = False
        self.resumed = False  # a staged rebuild that picked up an interrupted one
        self.model_files: dict[str, str | None] | None = None  # written to models.json
        self._files: dict[str, FileRecord] = {}
        self._by_hash: dict[str, set[str]] = {}
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
        # Segments the other manifest pair names (the live index during a rebuild, a paused
        # rebuild otherwise): never garbage to this writer.
        self._foreign: set[str] = set()
        self._live_generation = 0

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
            store._load(rebuild)
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
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _names(self) -> tuple[str, str]:
        """This store's manifest and its fallback."""
        return (REBUILD, REBUILD_PREV) if self.staged else (MANIFEST, MANIFEST_PREV)

    def _load(self, rebuild: bool) -> None:
        # A reader that finds a segment missing may have raced a writer's commit: it reads
        # the manifests again before calling the segment damaged.
        attempts = 1 if self.writable else 3
        for attempt in range(attempts):
            self._retry_missing = attempt < attempts - 1
            try:
                loaded = self._read_best()
                break
            except _Retry:
                time.sleep(0.2)
        if loaded is not None and self.identity is None:
            # A reader that takes whatever model built the index (info, remove, clear).
            self.identity, self.dims = loaded.identity, loaded.dims
        if self.identity is None:
            self.identity = {}
        if loaded is not None and rebuild and self.writable:
            loaded = self._stage(loaded)
        elif loaded is not None and rebuild:
            loaded = replace(loaded, files={}, segments=[], bad_segments=[], stats=None)
        if loaded is not None:
            if loaded.dims != self.dims or loaded.identity != self.identity:
                old = {**loaded.identity, "dims": loaded.dims}
                new = {**self.identity, "dims": self.dims}
                raise IndexMismatch(
                    "the index was built with another model or settings "
                    f"({_identity_diff(old, new)}); rebuild it to use this one: "
                    "launcher.py index --rebuild",
                    old,
                    new,
                )
            self.generation = loaded.generation
            self.generation_id = loaded.generation_id
            self.roots = loaded.roots
            self.stats = loaded.stats
            self._segments = loaded.segments
            self._total_rows = sum(s.rows for s in loaded.segments)
            for record in loaded.files.values():
                self._index_record(record)
        if self.writable:
            if not self.staged:
                self._foreign = self._names_in((REBUILD, REBUILD_PREV))
            self._collect_garbage(self._names_in_manifests())
        self._publish()

    def _stage(self, live: _Loaded) -> _Loaded:
        """Switch to building a new index beside ``live`` (rebuild.json). An interrupted
        rebuild with the same identity is resumed; anything else starts empty, with the
        live index's roots."""
        self._foreign = self._names_in((MANIFEST, MANIFEST_PREV))
        self._live_generation = live.generation
        self.staged = True
        staged: _Loaded | None = None
        with contextlib.suppress(StoreError):  # a damaged half-built rebuild: start over
            staged = self._read_best()
        self.recovered = None  # whatever was wrong with the half-built one is moot
        if (
            staged is not None
            and staged.identity == self.identity
            and staged.dims == self.dims
            and not staged.bad_segments
        ):
            self.resumed = True
            return staged
        self._changes += 1  # the first commit writes the (empty) new generation
        return replace(
            live,
            generation_id="",
            identity=self.identity or {},
            dims=self.dims,
            files={},
            segments=[],
            bad_segments=[],
            stats=None,
        )

    def _read_best(self) -> _Loaded | None:
        """The newest usable generation, falling back (and salvaging) as the docstring says."""
        problems: list[str] = []
        salvageable: _Loaded | None = None
        seen_any = False
        for name in self._names:
            path = self.directory / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as err:
                problems.append(f"{name}: {err.strerror or err}")
                seen_any = True
                continue
            seen_any = True
            try:
                loaded = self._parse(name, raw)
            except _Damaged as err:
                problems.append(f"{name}: {err}")
                if name == self._names[0] and self.writable:
                    self._set_aside(path)
                continue
            if not loaded.bad_segments:
                if problems and self.writable and name != self._names[0]:
                    # The next commit moves manifest.json to the fallback slot: a damaged
                    # one must not take the place of the good generation found here.
                    self._set_aside(self.directory / self._names[0])
                if problems:
                    self.recovered = (
                        f"{'; '.join(problems)}; using the previous generation "
                        f"({loaded.generation}) instead"
                    )
                return loaded
            problems.append(f"{name}: damaged vectors ({', '.join(loaded.bad_segments)})")
            salvageable = salvageable or loaded
        if salvageable is not None:
            return self._salvage(salvageable, problems)
        if seen_any:
            raise StoreError(
                f"the index at {self.directory} is damaged and no earlier generation could "
                f"be read ({'; '.join(problems)}); rebuild it: launcher.py index --rebuild"
            )
        return None

    def _set_aside(self, path: Path) -> None:
        """Keep a damaged manifest for inspection, out of the way of the next commit."""
        with contextlib.suppress(OSError):  # if it stays, the next commit replaces it
            os.replace(path, path.with_name(path.name + ".damaged"))

    def _salvage(self, loaded: _Loaded, problems: list[str]) -> _Loaded:
        bad = {s.name for s in loaded.segments if s.array is None}
        bad_ranges = [(s.start, s.start + s.rows) for s in loaded.segments if s.name in bad]
        kept: dict[str, FileRecord] = {}
        dropped = 0
        for path, record in loaded.files.items():
            if any(lo <= r.row < hi for r in record.rows for lo, hi in bad_ranges):
                dropped += 1  # its vectors are gone: it is indexed again as a new file
            else:
                kept[path] = record
        self.recovered = (
            f"{'; '.join(problems)}; kept generation {loaded.generation} without the "
            f"{dropped} file(s) whose vectors were lost (they will be indexed again)"
        )
        self._force_compact = True
        self._changes += 1  # the next commit writes the salvaged generation
        return replace(loaded, files=kept)

    _force_compact = False
    _retry_missing = False

    def _parse(self, name: str, raw: bytes) -> _Loaded:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _Damaged(f"not valid JSON ({err.__class__.__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise _Damaged("not an index manifest")
        version = data.get("version")
        if not isinstance(version, int):
            raise _Damaged("no format version")
        if version > FORMAT_VERSION:
            raise StoreError(
                f"the index at {self.directory} has format {version}, newer than this "
                f"program's {FORMAT_VERSION}: update the program or rebuild the index"
            )
        if version not in READABLE_VERSIONS:
            raise StoreError(
                f"the index at {self.directory} has the old format {version}; "
                "rebuild it: launcher.py index --rebuild"
            )
        try:
            dims = int(data["dims"])
            if data.get("dtype") != VECTOR_DTYPE.name:
                raise _Damaged(f"unexpected dtype {data.get('dtype')!r}")
            identity = data["identity"]
            if not isinstance(identity, dict):
                raise _Damaged("identity is not an object")
            segments: list[_Segment] = []
            bad: list[str] = []
            start = 0
            for entry in data["segments"]:
                seg_name, rows = str(entry["name"]), int(entry["rows"])
                if os.path.basename(seg_name) != seg_name or not seg_name.startswith("seg-"):
                    raise _Damaged(f"bad segment name {seg_name!r}")
                array = self._open_segment(seg_name, rows, dims)
                if array is None:
                    bad.append(seg_name)
                segments.append(_Segment(seg_name, start, rows, array))
                start += rows
            if int(data["rows"]) != start:
                raise _Damaged(f"row count {data['rows']} != {start} rows in the segments")
            files: dict[str, FileRecord] = {}
            owned = np.zeros(start, dtype=bool)
            for entry in data["files"]:
                record = FileRecord.from_json(entry)
                for ref in record.rows:
                    if not 0 <= ref.row < start or owned[ref.row]:
                        raise _Damaged(f"row {ref.row} out of range or owned twice")
                    owned[ref.row] = True
                files[record.path] = record
            stats = RunStats.from_json(data["stats"]) if data.get("stats") else None
            roots = tuple(str(r) for r in data.get("roots", ()))
            generation = int(data["generation"])
            generation_id = str(data.get("generation_id", ""))
        except (KeyError, TypeError, ValueError) as err:
            raise _Damaged(f"malformed ({err.__class__.__name__}: {err})") from None
        return _Loaded(
            name, generation, generation_id, identity, dims, roots, segments, files, stats, bad
        )

    def _open_segment(self, name: str, rows: int, dims: int) -> np.ndarray | None:
        path = self.directory / name
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            if self._retry_missing:
                raise _Retry() from None
            return None
        except (OSError, ValueError, EOFError):
            return None  # truncated or garbled: the generation that names it is damaged
        if array.shape != (rows, dims) or array.dtype != VECTOR_DTYPE:
            return None
        return array

    def _names_in_manifests(self) -> set[str]:
        """Segment names that any manifest (live or rebuild) refers to (unvalidated)."""
        names = {s.name for s in self._segments}
        return names | self._names_in((MANIFEST, MANIFEST_PREV, REBUILD, REBUILD_PREV))

    def _names_in(self, manifests: Iterable[str]) -> set[str]:
        names: set[str] = set()
        for manifest in manifests:
            try:
                data = json.loads((self.directory / manifest).read_bytes())
                names.update(str(s["name"]) for s in data["segments"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return names

    # -- reading (writer's live view) ---------------------------------------------------

    def get(self, path: str) -> FileRecord | None:
        return self._files.get(path)

    def files(self) -> list[FileRecord]:
        return list(self._files.values())

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def unchanged(self, path: str, size: int, mtime_ns: int) -> FileRecord | None:
        """The record when ``path`` has the recorded size and mtime (skip it unread), else None.

        A record whose mtime was within a couple of seconds of its indexing time counts as
        changed, so a write in the same timestamp tick is not missed.
        """
        record = self._files.get(path)
        if record is None or record.size != size or record.mtime_ns != mtime_ns:
            return None
        if record.status == "queued":  # never embedded: not a reason to skip it
            return None
        if record.indexed_ns - record.mtime_ns < RACY_NS:
            return None
        self.seen(path)
        return record

    def lookup_by_hash(self, digest: str) -> FileRecord | None:
        """An indexed (status ok) file with this content hash, to reuse its vectors."""
        for path in sorted(self._by_hash.get(digest, ())):
            record = self._files[path]
            if record.status == "ok" and record.rows:
                return record
        return None

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

    def _index_record(self, record: FileRecord) -> None:
        old = self._files.get(record.path)
        if old is not None and old.content_hash:
            paths = self._by_hash.get(old.content_hash)
            if paths is not None:
                paths.discard(record.path)
                if not paths:
                    del self._by_hash[old.content_hash]
        self._files[record.path] = record
        if record.content_hash:
            self._by_hash.setdefault(record.content_hash, set()).add(record.path)

    def _set(self, record: FileRecord) -> FileRecord:
        self._check_writable()
        self._index_record(record)
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
        record = self._files.get(path)
        if record is None:
            raise KeyError(path)
        arr = self._prepare(vectors, len(pieces))
        start = self._append(arr)
        rows = tuple(RowRef(start + i, p.role, p.locator) for i, p in enumerate(pieces))
        return self._set(replace(record, rows=record.rows + rows, status=status))

    def touch(self, path: str, size: int, mtime_ns: int) -> FileRecord:
        """Same content, new stat (the hash matched): keep the vectors, update size/mtime."""
        record = self._files[path]
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
        record = self._files.pop(path, None)
        if record is None:
            return False
        if record.content_hash:
            paths = self._by_hash.get(record.content_hash, set())
            paths.discard(path)
            if not paths:
                self._by_hash.pop(record.content_hash, None)
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
        gone = sorted(p for p in self._files if p not in seen and not p.startswith(prefixes))
        for path in gone:
            self.remove(path)
        self._seen = None
        self._kept_prefixes = []
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

    def _live_rows(self) -> int:
        return sum(len(r.rows) for r in self._files.values())

    def _should_compact(self) -> bool:
        if self._force_compact:
            return True
        dead = self._total_rows - self._live_rows()
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
        files = self._files
        self._check_lock()
        self._check_segments()
        try:
            if not self.staged:
                self._write_models()
            if compact:
                segments, files = self._write_compacted(generation, token)
            else:
                segments = list(self._segments)
                if self._pending:
                    pending = np.concatenate(self._pending)
                    segments.append(self._write_segment(generation, token, pending))
            self._write_manifest(generation, token, segments, files)
        except OSError as err:
            raise StoreError(f"cannot write the index in {self.directory}: {err}") from err
        keep = {s.name for s in segments} | {s.name for s in self._segments} | self._foreign
        self._segments = segments
        self._files = files
        if compact:
            self._by_hash = {}
            for record in files.values():
                if record.content_hash:
                    self._by_hash.setdefault(record.content_hash, set()).add(record.path)
        self._pending = []
        self._total_rows = sum(s.rows for s in segments)
        self.generation = generation
        self.generation_id = token
        self._changes = 0
        self._force_compact = False
        self._last_commit = time.monotonic()
        self._collect_garbage(keep)
        self._publish()
        return True

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
        """Make the rebuilt index the live one: its next generation goes to manifest.json
        in one atomic rename, and the rebuild's manifests are removed. The old index's
        segments stay (as the fallback generation) until the next commit."""
        self._check_writable()
        if not self.staged:
            self.commit()
            return
        self.staged = False
        self.generation = max(self.generation, self._live_generation)
        self._changes += 1
        self.commit()
        for name in (REBUILD, REBUILD_PREV):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
        _fsync_dir(self.directory)
        self._foreign = set()

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
        name = self._segment_name(generation, token)
        final = self.directory / name
        tmp = final.with_name(name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(rows, dtype=VECTOR_DTYPE), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        start = sum(s.rows for s in self._segments)
        array = np.load(final, mmap_mode="r", allow_pickle=False)
        return _Segment(name, start, len(rows), array)

    def _write_compacted(
        self, generation: int, token: str
    ) -> tuple[list[_Segment], dict[str, FileRecord]]:
        """All live rows into one new segment, streamed in blocks; records renumbered."""
        order = [(path, ref) for path, rec in self._files.items() for ref in rec.rows]
        if not order:
            return [], {p: replace(r, rows=()) for p, r in self._files.items()}
        name = self._segment_name(generation, token)
        final = self.directory / name
        tmp = final.with_name(name + ".tmp")
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=VECTOR_DTYPE, shape=(len(order), self.dims)
        )
        block = 8192
        for lo in range(0, len(order), block):
            out[lo : lo + block] = self._rows([ref.row for _, ref in order[lo : lo + block]])
        out.flush()
        del out
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        new_rows: dict[str, list[RowRef]] = {}
        for i, (path, ref) in enumerate(order):
            new_rows.setdefault(path, []).append(replace(ref, row=i))
        files = {
            path: replace(rec, rows=tuple(new_rows.get(path, ())))
            for path, rec in self._files.items()
        }
        array = np.load(final, mmap_mode="r", allow_pickle=False)
        return [_Segment(name, 0, len(order), array)], files

    def _write_manifest(
        self,
        generation: int,
        token: str,
        segments: Sequence[_Segment],
        files: Mapping[str, FileRecord],
    ) -> None:
        data = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "generation": generation,
            "generation_id": token,
            "written_ns": time.time_ns(),
            "identity": self.identity,
            "dims": self.dims,
            "dtype": VECTOR_DTYPE.name,
            "roots": list(self.roots),
            "rows": sum(s.rows for s in segments),
            "segments": [{"name": s.name, "rows": s.rows} for s in segments],
            "stats": dataclasses.asdict(self.stats) if self.stats else None,
            "files": [files[p].to_json() for p in sorted(files)],
        }
        # ensure_ascii: surrogate-escaped path bytes become \udcxx escapes and come back.
        raw = json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        name, prev = self._names
        current = self.directory / name
        tmp = self.directory / (name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if current.exists():
            os.replace(current, self.directory / prev)
        os.replace(tmp, current)
        _fsync_dir(self.directory)

    def _collect_garbage(self, keep: set[str]) -> None:
        """Delete segment and temp files no manifest needs (crash leftovers, old ones)."""
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

    def _publish(self) -> None:
        snap = Snapshot(
            self.generation,
            self.identity or {},
            self.dims,
            self.roots,
            dict(self._files),
            tuple(self._segments),
            self.stats,
            self.generation_id,
        )
        with self._snap_lock:
            self._snapshot = snap

    def snapshot(self) -> Snapshot:
        """The last committed generation, immutable: safe to search from another thread."""
        with self._snap_lock:
            assert self._snapshot is not None
            return self._snapshot


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


def _write_atomic(path: Path, raw: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
