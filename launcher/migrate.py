"""Converting a format 1-2 index (one JSON manifest holding every file) to format 3.

The catalog is built from manifest.json, or from manifest.prev.json when that one is
damaged (format 2's fallback), as a temporary file that is renamed into place when whole:
a kill during the migration leaves the old index as it was, and the next open tries again.
Vector segments are used as they are (no re-embedding); files whose segment is damaged are
left out (they are indexed again); text.db is not touched. The manifest used is kept as
manifest.v2.json until the next commit. A rebuild in progress (rebuild.json) is converted
too and resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import catalog as cat
from .errors import StoreError
from .store import (
    _INSERT,
    FORMAT,
    MANIFEST,
    MANIFEST_PREV,
    MANIFEST_V2,
    REBUILD,
    REBUILD_PREV,
    VECTOR_DTYPE,
    FileRecord,
    _fsync_dir,
    _values,
    _write_atomic,
)


class _Damaged(Exception):
    pass


@dataclass
class _Old:
    name: str
    raw: bytes
    row: cat.CatalogRow
    files: list[FileRecord]
    dropped: int


def migrate(directory: Path) -> str | None:
    """Build catalog.db from the format 1-2 manifests in ``directory`` (the caller holds
    the lock). Returns what was wrong (a fallback or lost files), or None."""
    problems: list[str] = []
    live = _read(directory, (MANIFEST, MANIFEST_PREV), cat.LIVE, problems)
    rebuild = None
    with contextlib.suppress(StoreError):  # a damaged half-built rebuild: start over
        rebuild = _read(directory, (REBUILD, REBUILD_PREV), cat.REBUILD_ROLE, [])
    if live is None:
        raise StoreError(
            f"the index at {directory} is damaged and no earlier generation could be read "
            f"({'; '.join(problems)}); rebuild it: launcher.py index --rebuild"
        )
    final = directory / cat.CATALOG
    tmp = final.with_name(cat.CATALOG + ".tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    conn = cat.connect(tmp, writable=True)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")  # one file to rename
        conn.execute("BEGIN IMMEDIATE")
        for old in (live, rebuild):
            if old is None:
                continue
            conn.executemany(_INSERT, (_values(old.row.role, r) for r in old.files))
            live_rows = sum(len(r.rows) for r in old.files)
            row = replace(old.row, files=len(old.files), live_rows=live_rows)
            cat.write_catalog(conn, row, 0)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    _write_atomic(directory / MANIFEST_V2, live.raw)
    os.replace(tmp, final)
    _fsync_dir(directory)
    notes = list(problems)
    if live.dropped:
        notes.append(f"{live.dropped} file(s) whose vectors were lost will be indexed again")
    return "; ".join(notes) if notes else None


def _read(directory: Path, names: tuple[str, str], role: str, problems: list[str]) -> _Old | None:
    salvage: _Old | None = None
    for name in names:
        try:
            raw = (directory / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as err:
            problems.append(f"{name}: {err.strerror or err}")
            continue
        try:
            old = _parse(directory, name, raw, role)
        except _Damaged as err:
            problems.append(f"{name}: {err}")
            continue
        if not old.dropped:
            if problems:
                problems.append(f"using the previous generation ({old.row.generation}) instead")
            return old
        problems.append(f"{name}: damaged vectors")
        salvage = salvage or old
    return salvage


def _parse(directory: Path, name: str, raw: bytes, role: str) -> _Old:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _Damaged(f"not valid JSON ({err.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _Damaged("not an index manifest")
    if data.get("version") not in (1, 2):
        raise _Damaged(f"not format 1 or 2 (version {data.get('version')!r})")
    try:
        dims = int(data["dims"])
        if data.get("dtype") != VECTOR_DTYPE.name:
            raise _Damaged(f"unexpected dtype {data.get('dtype')!r}")
        identity = data["identity"]
        if not isinstance(identity, dict):
            raise _Damaged("identity is not an object")
        segments: list[tuple[str, int]] = []
        bad: list[tuple[int, int]] = []
        start = 0
        for entry in data["segments"]:
            seg, rows = str(entry["name"]), int(entry["rows"])
            if os.path.basename(seg) != seg or not seg.startswith("seg-"):
                raise _Damaged(f"bad segment name {seg!r}")
            if not _segment_ok(directory / seg, rows, dims):
                bad.append((start, start + rows))
            segments.append((seg, rows))
            start += rows
        if int(data["rows"]) != start:
            raise _Damaged(f"row count {data['rows']} != {start} rows in the segments")
        files: list[FileRecord] = []
        owned = np.zeros(start, dtype=bool)
        dropped = 0
        for entry in data["files"]:
            record = FileRecord.from_json(entry)
            for ref in record.rows:
                if not 0 <= ref.row < start or owned[ref.row]:
                    raise _Damaged(f"row {ref.row} out of range or owned twice")
                owned[ref.row] = True
            if any(lo <= r.row < hi for r in record.rows for lo, hi in bad):
                dropped += 1  # its vectors are gone: it is indexed again as a new file
                continue
            files.append(record)
        row = cat.CatalogRow(
            role,
            int(data["generation"]),
            str(data.get("generation_id", "")),
            json.loads(json.dumps(identity, sort_keys=True)),
            dims,
            tuple(str(r) for r in data.get("roots", ())),
            tuple(segments),
            data.get("stats") or None,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise _Damaged(f"malformed ({err.__class__.__name__}: {err})") from None
    return _Old(name, raw, row, files, dropped)


def _segment_ok(path: Path, rows: int, dims: int) -> bool:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return bool(array.shape == (rows, dims) and array.dtype == VECTOR_DTYPE)
