"""The on-disk index: round trips, crashes and damage, identity, reuse, sweep, ownership."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from launcher.catalog import CATALOG
from launcher.errors import InputError, StoreError
from launcher.extract import Locator, Piece
from launcher.store import (
    FORMAT_VERSION,
    MANIFEST,
    FileRecord,
    RunStats,
    Store,
    content_hash,
    default_dir,
)

DIMS = 8


@dataclass(frozen=True)
class Identity:
    file: str = "Qwen3-VL-Embedding-2B-Q8_0.gguf"
    size: int = 123
    header_hash: str = "abc"
    dims: int = DIMS
    instruction: str = "Represent the user's input."
    image: tuple[int, int] = (4, 1800)


ID = Identity()


def vec(seed: int, n: int = 1) -> np.ndarray:
    """Distinct unit vectors per (seed, row): owners can be told apart from the matrix."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIMS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pieces(n: int) -> list[Piece]:
    out = [Piece("card", "card")]
    out += [
        Piece("chunk", f"c{i}", locator=Locator(line_start=i * 10 + 1, line_end=i * 10 + 10))
        for i in range(n - 1)
    ]
    return out


def record(path: str, **kw) -> FileRecord:
    return FileRecord(
        path=path, size=kw.pop("size", 10), mtime_ns=kw.pop("mtime_ns", 1), kind="text", **kw
    )


def put(store: Store, path: str, seed: int, n: int = 2, **kw) -> FileRecord:
    return store.put(record(path, **kw), pieces(n), vec(seed, n))


def open_store(d: Path, **kw) -> Store:
    return Store.open(d, identity=kw.pop("identity", ID), dims=kw.pop("dims", DIMS), **kw)


def check_ownership(snap, expected: dict[str, np.ndarray]) -> None:
    """Every matrix row is its owner's vector, and every file's vectors are all there."""
    m = snap.matrix()
    assert m.shape == (sum(len(v) for v in expected.values()), DIMS)
    got: dict[str, list[np.ndarray]] = {}
    for i in range(len(m)):
        rec, ref = snap.row_owner(i)
        idx = [r.row for r in rec.rows].index(ref.row)
        np.testing.assert_allclose(m[i].astype(np.float32), expected[rec.path][idx], atol=2e-3)
        got.setdefault(rec.path, []).append(m[i])
    assert set(got) == set(expected)


def seg_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("seg-"))


def test_round_trip(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        a = put(s, "/docs/a.txt", 1, 3, content_hash="h1", preview="hello")
        put(s, "/docs/b.txt", 2, 1)
        s.mark_failed("/docs/c.jpg", "truncated image", size=5, mtime_ns=7, kind="image")
        s.set_roots(["/docs"])
        s.stats = RunStats(seen=3, indexed=2, failed=1)
        assert s.commit()
        assert not s.commit()  # nothing new
    with open_store(d, writable=False) as s:
        assert s.generation == 1 and s.roots == ("/docs",) and s.recovered is None
        assert s.stats == RunStats(seen=3, indexed=2, failed=1)
        got = s.get("/docs/a.txt")
        assert got == a
        assert got.rows[1].locator == Locator(line_start=1, line_end=10)
        failed = s.get("/docs/c.jpg")
        assert (
            failed.status == "failed" and failed.reason == "truncated image" and failed.rows == ()
        )
        snap = s.snapshot()
        check_ownership(snap, {"/docs/a.txt": vec(1, 3), "/docs/b.txt": vec(2, 1)})
        scores = snap.scores(vec(1)[0])
        best = int(np.argmax(scores))
        assert snap.row_owner(best)[0].path == "/docs/a.txt" and scores[best] == pytest.approx(
            1, abs=2e-3
        )


def test_default_dir_is_under_launcher_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path))
    assert default_dir() == tmp_path / "data" / "index"
    with Store.open(identity=ID, dims=DIMS) as s:
        put(s, "/a", 1)
        s.commit()
    assert (tmp_path / "data" / "index" / MANIFEST).exists()


def test_uncommitted_tail_is_lost_committed_is_kept(tmp_path: Path) -> None:
    d = tmp_path / "index"
    s = open_store(d)
    put(s, "/a", 1)
    s.commit()
    put(s, "/b", 2)
    s.close()  # as a kill -9 would: no commit
    with open_store(d) as s:
        assert [r.path for r in s.files()] == ["/a"]


def test_commits_append_segments_without_rewriting(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        put(s, "/a", 1)
        s.commit()
        (first,) = seg_files(d)
        before = os.stat(d / first)
        put(s, "/b", 2)
        s.commit()
        assert len(seg_files(d)) == 2
        after = os.stat(d / first)
        assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
        s.remove("/a")  # metadata only: no new segment
        s.commit()
        assert len(seg_files(d)) == 2
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["version"] == FORMAT_VERSION and manifest["generation"] == 3
    assert manifest["identity"]["file"] == ID.file and manifest["dims"] == DIMS
    assert manifest["dtype"] == "float16" and manifest["rows"] == 4


def test_maybe_commit_every_n_files(tmp_path: Path) -> None:
    with open_store(tmp_path, commit_every_files=3, commit_every_seconds=3600) as s:
        put(s, "/a", 1)
        put(s, "/b", 2)
        assert not s.maybe_commit()
        put(s, "/c", 3)
        assert s.maybe_commit() and s.generation == 1 and s.uncommitted == 0


def test_stray_segment_without_manifest_is_ignored_and_cleaned(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        put(s, "/a", 1)
        s.commit()
    # A kill after the segment was written but before the manifest was replaced:
    np.save(d / "seg-000002-deadbeef.npy", vec(9, 2).astype(np.float16))
    (d / "manifest.json.tmp").write_text('{"half": ')
    with open_store(d) as s:
        assert s.generation == 1 and [r.path for r in s.files()] == ["/a"]
        assert s.recovered is None
        assert "seg-000002-deadbeef.npy" not in seg_files(d)
        assert not (d / "manifest.json.tmp").exists()
        check_ownership(s.snapshot(), {"/a": vec(1, 2)})


def _two_generations(d: Path) -> None:
    with open_store(d) as s:
        put(s, "/a", 1)
        s.commit()
        put(s, "/b", 2)
        s.commit()


def test_damaged_manifest_is_rewritten_from_the_catalog(tmp_path: Path) -> None:
    """manifest.json is a mirror: catalog.db is the truth."""
    d = tmp_path / "index"
    _two_generations(d)
    raw = (d / MANIFEST).read_bytes()
    (d / MANIFEST).write_bytes(raw[: len(raw) // 2])
    with open_store(d, writable=False) as r:
        assert r.generation == 2 and sorted(f.path for f in r.files()) == ["/a", "/b"]
    with open_store(d) as s:
        assert s.generation == 2 and s.recovered is None
        check_ownership(s.snapshot(), {"/a": vec(1, 2), "/b": vec(2, 2)})
    assert json.loads((d / MANIFEST).read_text())["generation"] == 2


def test_kill_between_catalog_commit_and_manifest_write(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        put(s, "/a", 1)
        s.commit()
        behind = (d / MANIFEST).read_bytes()
        put(s, "/b", 2)
        s.commit()
    (d / MANIFEST).write_bytes(behind)  # the catalog committed generation 2, the mirror not
    with open_store(d, writable=False) as r:
        assert r.generation == 2 and len(r) == 2
    with open_store(d) as s:  # a writer puts the mirror right
        assert s.generation == 2 and len(s) == 2
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["generation"] == 2 and manifest["file_count"] == 2


def _garble(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 300)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def test_damaged_catalog_falls_back_to_the_backup_copy(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        put(s, "/a", 1)
        s.commit()
        s.backup()  # (the end of a run)
        put(s, "/b", 2)
        s.commit()
    _garble(d / CATALOG)
    with open_store(d) as s:
        assert s.generation == 1 and [r.path for r in s.files()] == ["/a"]
        assert "catalog.db" in s.recovered and "copy made at the end of the last run" in s.recovered
        check_ownership(s.snapshot(), {"/a": vec(1, 2)})
        assert (d / "catalog.db.damaged").exists()
        put(s, "/c", 3)
        s.commit()  # goes on from the copy
    with open_store(d) as s:
        assert s.recovered is None and sorted(r.path for r in s.files()) == ["/a", "/c"]
        check_ownership(s.snapshot(), {"/a": vec(1, 2), "/c": vec(3, 2)})


def test_missing_catalog_is_restored_from_the_backup(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        put(s, "/a", 1)
        s.commit()
        s.backup()
    for name in (CATALOG, CATALOG + "-wal", CATALOG + "-shm"):
        (d / name).unlink(missing_ok=True)
    with open_store(d, writable=False) as r:  # restored under the lock, by the first opener
        assert [f.path for f in r.files()] == ["/a"]
        check_ownership(r.snapshot(), {"/a": vec(1, 2)})


def test_corrupt_newest_segment_drops_only_its_files(tmp_path: Path) -> None:
    d = tmp_path / "index"
    _two_generations(d)
    newest = seg_files(d)[-1]
    data = (d / newest).read_bytes()
    (d / newest).write_bytes(data[: len(data) - 20])  # truncated
    with open_store(d, writable=False) as r:
        assert newest in r.recovered
        check_ownership(r.snapshot(), {"/a": vec(1, 2)})
    with open_store(d) as s:
        assert [r.path for r in s.files()] == ["/a"]  # /b is indexed again by the next run
        assert newest in s.recovered and "1 file(s)" in s.recovered
        check_ownership(s.snapshot(), {"/a": vec(1, 2)})
        put(s, "/c", 3)
        s.commit()
    with open_store(d) as s:
        assert s.recovered is None and sorted(r.path for r in s.files()) == ["/a", "/c"]


def test_garbled_npy_header_drops_its_files(tmp_path: Path) -> None:
    d = tmp_path / "index"
    _two_generations(d)
    newest = seg_files(d)[-1]
    (d / newest).write_bytes(b"\x93NUMPY garbage" * 10)
    with open_store(d) as s:
        assert [r.path for r in s.files()] == ["/a"] and newest in s.recovered


def test_damaged_shared_segment_is_salvaged_not_emptied(tmp_path: Path) -> None:
    d = tmp_path / "index"
    _two_generations(d)
    oldest = seg_files(d)[0]
    (d / oldest).unlink()
    with open_store(d) as s:
        assert [r.path for r in s.files()] == ["/b"]  # /a lost its vectors: re-index it
        assert "1 file(s)" in s.recovered
        check_ownership(s.snapshot(), {"/b": vec(2, 2)})
        s.commit()  # compacts away the hole
        assert oldest not in seg_files(d)
    with open_store(d) as s:
        assert s.recovered is None
        check_ownership(s.snapshot(), {"/b": vec(2, 2)})


def test_nothing_recoverable_is_an_error_not_an_empty_index(tmp_path: Path) -> None:
    d = tmp_path / "index"
    _two_generations(d)
    _garble(d / CATALOG)
    with pytest.raises(StoreError, match="damaged and no earlier copy"):
        open_store(d, writable=False)
    assert not (d / CATALOG).exists()  # set aside as catalog.db.damaged: still nothing
    with pytest.raises(StoreError, match="damaged and no earlier copy"):
        open_store(d, writable=False)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "index"
    _two_generations(d)
    data = json.loads((d / MANIFEST).read_text())
    data["version"] = 99
    (d / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(StoreError, match="newer"):
        open_store(d)
    data["version"] = 0
    (d / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(StoreError, match="old format 0"):
        open_store(d)
    data["version"] = FORMAT_VERSION
    (d / MANIFEST).write_text(json.dumps(data))
    conn = sqlite3.connect(d / CATALOG)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(d)
    assert FORMAT_VERSION == 3


def test_identity_mismatch_and_rebuild(tmp_path: Path) -> None:
    d = tmp_path / "index"
    _two_generations(d)
    other = Identity(file="other.gguf", header_hash="zzz")
    with pytest.raises(StoreError, match=r"another model.*other\.gguf.*--rebuild"):
        open_store(d, identity=other)
    with pytest.raises(StoreError, match="dims"):
        open_store(d, dims=4)
    # The refused open left the lock free and the index untouched.
    with open_store(d, identity=other, rebuild=True) as s:
        assert len(s) == 0
        put(s, "/new", 5)
        s.commit()
        s.finish_rebuild()
    with open_store(d, identity=other) as s:
        assert [r.path for r in s.files()] == ["/new"]
        s.commit(compact=True)  # nothing names the older segments any more
    assert len(seg_files(d)) == 1
    with pytest.raises(StoreError, match="another model"):
        open_store(d)


def test_identity_as_mapping(tmp_path: Path) -> None:
    ident = {"file": "m.gguf", "image": [4, 1800]}
    with Store.open(tmp_path, identity=ident, dims=DIMS) as s:
        put(s, "/a", 1)
        s.commit()
    with Store.open(tmp_path, identity={"image": (4, 1800), "file": "m.gguf"}, dims=DIMS) as s:
        assert len(s) == 1


def test_rename_reuses_vectors_by_hash(tmp_path: Path) -> None:
    d = tmp_path / "index"
    doc = tmp_path / "doc.txt"
    doc.write_text("the same content")
    digest = content_hash(doc)
    assert digest == content_hash(doc) and len(digest) == 32
    with open_store(d) as s:
        put(s, "/old/doc.txt", 4, 3, content_hash=digest, preview="p")
        s.commit()
    with open_store(d) as s:
        s.begin_sweep()
        source = s.lookup_by_hash(digest)
        assert source is not None and source.path == "/old/doc.txt"
        moved = s.reuse(source, "/new/doc.txt", size=16, mtime_ns=99)
        assert moved.preview == "p" and moved.content_hash == digest and moved.mtime_ns == 99
        assert s.sweep() == ["/old/doc.txt"]
        assert s.lookup_by_hash(digest).path == "/new/doc.txt"
        s.commit()
    with open_store(d) as s:
        check_ownership(s.snapshot(), {"/new/doc.txt": vec(4, 3)})
        assert s.get("/new/doc.txt").rows[2].locator == Locator(line_start=11, line_end=20)


def test_failed_files_are_not_reused(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        s.mark_failed("/x", "decode error", size=1, mtime_ns=1, content_hash="h")
        assert s.lookup_by_hash("h") is None


def test_sweep_removes_unseen_and_keeps_unreadable_folders(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        for i, p in enumerate(["/r/a", "/r/b", "/r/locked/c", "/r/locked2", "/usb/d"]):
            put(s, p, i, 1)
        s.commit()
        s.begin_sweep()
        s.seen("/r/a")
        put(s, "/r/new", 9, 1)  # put counts as seen
        s.seen_under("/r/locked")  # a folder that could not be listed this time
        s.seen_under("/usb/")  # an unplugged root
        assert s.sweep() == ["/r/b", "/r/locked2"]
        assert sorted(r.path for r in s.files()) == ["/r/a", "/r/locked/c", "/r/new", "/usb/d"]


def test_row_ownership_exact_after_removals_and_compaction(tmp_path: Path) -> None:
    d = tmp_path / "index"
    expected: dict[str, np.ndarray] = {}
    with open_store(d) as s:
        for i in range(30):
            put(s, f"/f{i:02d}", i, 1 + i % 4)
            expected[f"/f{i:02d}"] = vec(i, 1 + i % 4)
            if i % 7 == 6:
                s.commit()
        s.commit()
        for i in range(0, 30, 3):
            s.remove(f"/f{i:02d}")
            del expected[f"/f{i:02d}"]
        put(s, "/f01", 101, 2)  # replaced: old rows die
        expected["/f01"] = vec(101, 2)
        s.commit(compact=False)
        check_ownership(s.snapshot(), expected)
        s.commit(compact=True)
        assert s.snapshot().matrix().shape[0] == sum(len(v) for v in expected.values())
        check_ownership(s.snapshot(), expected)
        put(s, "/late", 77, 2)
        expected["/late"] = vec(77, 2)
        s.commit()
    with open_store(d) as s:
        check_ownership(s.snapshot(), expected)
        manifest = json.loads((d / MANIFEST).read_text())
        assert manifest["rows"] == sum(len(v) for v in expected.values())


def test_auto_compaction_when_many_rows_are_dead(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Store, "COMPACT_MIN_DEAD_ROWS", 4)
    with open_store(tmp_path) as s:
        for i in range(10):
            put(s, f"/f{i}", i, 2)
        s.commit()
        for i in range(6):
            s.remove(f"/f{i}")
        s.commit()
        manifest = json.loads((tmp_path / MANIFEST).read_text())
        assert manifest["rows"] == 8 and len(manifest["segments"]) == 1
        check_ownership(s.snapshot(), {f"/f{i}": vec(i, 2) for i in range(6, 10)})


def test_extend_and_pending_chunks(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        s.put(record("/a", status="pending_chunks"), pieces(1), vec(1, 1))
        s.commit()
        extra = [Piece("chunk", "x", locator=Locator(page=2))]
        rec = s.extend("/a", extra, vec(2, 1), status="ok")
        assert rec.status == "ok" and [r.role for r in rec.rows] == ["card", "chunk"]
        np.testing.assert_allclose(
            s.vectors_of(rec).astype(np.float32), np.vstack([vec(1), vec(2)]), atol=2e-3
        )
        s.commit()
        assert s.snapshot().row_owner(1)[1].locator == Locator(page=2)


def test_unchanged_and_touch(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        put(s, "/old", 1, size=10, mtime_ns=1_000)  # written long before it was read
        assert s.unchanged("/old", 10, 1_000) is not None
        assert s.unchanged("/old", 11, 1_000) is None
        assert s.unchanged("/missing", 10, 1_000) is None
        now = time.time_ns()
        put(s, "/racy", 2, size=10, mtime_ns=now)  # modified right as it was read
        assert s.unchanged("/racy", 10, now) is None
        touched = s.touch("/old", 10, 2_000)
        assert touched.rows == s.get("/old").rows and touched.mtime_ns == 2_000


def test_bad_vectors(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        with pytest.raises(ValueError, match="shape"):
            s.put(record("/a"), pieces(2), vec(1, 3))
        bad = vec(1, 2)
        bad[1, 0] = np.nan
        with pytest.raises(InputError, match="non-finite"):
            s.put(record("/a"), pieces(2), bad)
        with pytest.raises(InputError, match="zero"):
            s.put(record("/a"), pieces(1), np.zeros((1, DIMS)))
        assert len(s) == 0
        # Unnormalised input is stored unit-norm.
        s.put(record("/b"), pieces(1), vec(3) * 5)
        s.commit()
        assert np.linalg.norm(s.snapshot().matrix()[0].astype(np.float32)) == pytest.approx(
            1, abs=1e-3
        )


def test_non_utf8_path_round_trips(tmp_path: Path) -> None:
    path = os.fsdecode(b"/docs/caf\xe9\xff.txt")
    with open_store(tmp_path) as s:
        put(s, path, 1)
        s.commit()
    json.loads((tmp_path / MANIFEST).read_bytes().decode("ascii"))  # plain ASCII JSON
    with open_store(tmp_path) as s:
        (rec,) = s.files()
        assert rec.path == path and os.fsencode(rec.path) == b"/docs/caf\xe9\xff.txt"


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        put(s, "/a", 1)
        s.commit()
        with pytest.raises(StoreError, match="another indexing run is in progress"):
            open_store(tmp_path)
        with open_store(tmp_path, writable=False) as r:  # readers need no lock
            assert len(r) == 1
            with pytest.raises(StoreError, match="read-only"):
                put(r, "/b", 2)
    with open_store(tmp_path) as s:  # released on close
        assert len(s) == 1


def test_readers_see_only_committed_snapshots(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        put(s, "/a", 1)
        s.commit()
        old = s.snapshot()
        put(s, "/b", 2)
        assert s.snapshot() is old and len(old.files) == 1  # not half-written state
        s.commit(compact=True)  # old segment files go away...
        s.commit(compact=True)
        new = s.snapshot()
        assert len(new.files) == 2 and new.generation == 3
        # ...but the old snapshot still reads its (memory-mapped) rows.
        check_ownership(old, {"/a": vec(1, 2)})


def test_concurrent_reader_thread(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    with open_store(tmp_path) as s:
        put(s, "/seed", 0)
        s.commit()

        def reader() -> None:
            try:
                while not stop.is_set():
                    snap = s.snapshot()
                    m = snap.matrix()
                    for i in range(len(m)):
                        rec, _ = snap.row_owner(i)
                        assert snap.get(rec.path) is rec
                    time.sleep(0.001)  # a UI thread idles between queries
            except BaseException as err:  # noqa: BLE001 - reported to the main thread
                errors.append(err)

        t = threading.Thread(target=reader)
        t.start()
        for i in range(1, 25):
            put(s, f"/f{i}", i)
            if i % 3 == 0:
                s.remove(f"/f{i - 1}")
            s.commit(compact=(i % 5 == 0))
        stop.set()
        t.join()
    assert not errors


WRITER = r"""
import sys, numpy as np
from launcher.extract import Piece
from launcher.store import FileRecord, Store
d, start = sys.argv[1], int(sys.argv[2])
with Store.open(d, identity={"m": 1}, dims=8, commit_every_files=3) as s:
    i = start
    while True:
        v = np.random.default_rng(i).normal(size=(2, 8))
        s.put(FileRecord(f"/f{i:05d}", 1, 1), [Piece("card", "c"), Piece("chunk", "x")], v)
        if i % 7 == 0:
            s.remove(f"/f{i - 3:05d}")
        s.maybe_commit()
        if i % 20 == 0:
            s.commit(compact=True)
        i += 1
"""


def _generation(d: Path) -> int:
    try:
        return int(json.loads((d / MANIFEST).read_bytes())["generation"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_kill_9_mid_run_keeps_every_commit(tmp_path: Path) -> None:
    """A writer process killed at arbitrary moments: every reopen gets a whole generation
    whose every row is the right vector of the right file."""
    import signal
    import subprocess
    import sys

    d = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    start = 1
    last_generation = 0
    for delay in (0.3, 0.45, 0.6, 0.75):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(d), str(start)], env=env)
        try:
            # (once this writer has committed: its start-up time depends on the load)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _generation(d) <= last_generation:
                time.sleep(0.02)
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        with Store.open(d, identity={"m": 1}, dims=8) as s:
            assert s.recovered is None  # a kill never damages what was committed
            assert s.generation > last_generation
            last_generation = s.generation
            files = s.files()
            assert files
            for rec in files:
                i = int(rec.path[2:])
                want = np.random.default_rng(i).normal(size=(2, 8))
                want /= np.linalg.norm(want, axis=1, keepdims=True)
                got = s.vectors_of(rec).astype(np.float32)
                np.testing.assert_allclose(got, want, atol=2e-3)
            check_ownership(
                s.snapshot(), {r.path: s.vectors_of(r).astype(np.float32) for r in files}
            )
            start = max(int(r.path[2:]) for r in files) + 1000


def test_rebuild_is_built_beside_the_old_index_and_swapped_when_done(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        put(s, "/a", 1)
        put(s, "/b", 2)
        s.set_roots(["/"])
        s.commit()
    other = Identity(file="other.gguf", header_hash="zzz")
    with open_store(d, identity=other, rebuild=True) as s:
        assert s.staged and len(s) == 0 and s.roots == ("/",)
        put(s, "/new", 5)
        s.commit()
        with open_store(d, writable=False) as r:  # the old index is still the live one
            assert sorted(f.path for f in r.files()) == ["/a", "/b"]
            check_ownership(r.snapshot(), {"/a": vec(1, 2), "/b": vec(2, 2)})
        # interrupted here: no finish_rebuild
    with open_store(d) as s:  # the old model still opens its index, untouched
        assert sorted(f.path for f in s.files()) == ["/a", "/b"]
        put(s, "/c", 3)  # and keeps working meanwhile
        s.commit(compact=True)
    with open_store(d, identity=other, rebuild=True) as s:
        assert s.resumed and [f.path for f in s.files()] == ["/new"]  # resumes
        put(s, "/new2", 6)
        s.finish_rebuild()
    with open_store(d, identity=other, writable=False) as r:
        check_ownership(r.snapshot(), {"/new": vec(5, 2), "/new2": vec(6, 2)})
        assert r.snapshot().generation > 2
    with pytest.raises(StoreError, match="another model"):
        open_store(d)
    assert not (d / "rebuild.json").exists()


def test_a_rebuild_with_another_model_starts_over(tmp_path: Path) -> None:
    d = tmp_path / "index"
    _two_generations(d)
    first = Identity(file="first.gguf")
    with open_store(d, identity=first, rebuild=True) as s:
        put(s, "/x", 9)
        s.commit()
    with open_store(d, identity=Identity(file="second.gguf"), rebuild=True) as s:
        assert not s.resumed and len(s) == 0
        put(s, "/y", 8)
        s.finish_rebuild()
    with open_store(d, identity=Identity(file="second.gguf")) as s:
        assert [f.path for f in s.files()] == ["/y"]
        s.commit(compact=True)
    # only the live generation and its fallback keep segments
    assert len(seg_files(d)) <= 2


def test_writer_lock_names_its_holder_and_can_be_waited_for(tmp_path: Path) -> None:
    from launcher.errors import IndexBusy

    seen: list[IndexBusy] = []
    first = open_store(tmp_path, role="launch")
    with pytest.raises(IndexBusy) as info:
        open_store(tmp_path, wait=lambda busy: seen.append(busy) or False)
    assert info.value.pid == os.getpid() and info.value.role == "launch"
    assert seen and seen[0].role == "launch"
    threading.Timer(0.5, first.close).start()
    waited: list[IndexBusy] = []
    with open_store(tmp_path, wait=lambda busy: waited.append(busy) or True) as s:
        assert waited and s.writable  # it waited, then took the lock


def test_a_deleted_index_folder_is_never_committed_over(tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "index"
    s = open_store(d)
    try:
        put(s, "/a", 1)
        s.commit()
        shutil.rmtree(d)
        put(s, "/b", 2)
        with pytest.raises(StoreError, match="deleted or replaced"):
            s.commit()
        d.mkdir()  # the folder exists again: still nothing that names lost segments
        with pytest.raises(StoreError, match="deleted or replaced"):
            s.commit()
        assert not (d / MANIFEST).exists()
    finally:
        s.close()
    with open_store(d) as fresh:  # a clean new index
        assert len(fresh) == 0 and fresh.recovered is None


def test_a_vanished_segment_is_never_named_by_a_commit(tmp_path: Path) -> None:
    d = tmp_path / "index"
    with open_store(d) as s:
        put(s, "/a", 1)
        s.commit()
        for name in seg_files(d):
            (d / name).unlink()
        put(s, "/b", 2)
        with pytest.raises(StoreError, match="vanished"):
            s.commit()


def test_run_stats_alone_are_committed(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        put(s, "/a", 1)
        s.commit()
        assert not s.commit()  # nothing to write
        s.set_stats(RunStats(seen=1, unchanged=1, interrupted=True, queued=2))
        assert s.commit()
    with open_store(tmp_path, writable=False) as r:
        assert r.stats == RunStats(seen=1, unchanged=1, interrupted=True, queued=2)


def test_models_json_remembers_the_live_index_model_files(tmp_path: Path) -> None:
    from launcher.store import read_models

    files = {"model": "/m/a.gguf", "mmproj": None}
    with open_store(tmp_path, model_files=files) as s:
        put(s, "/a", 1)
        s.commit()
    assert read_models(tmp_path) == {**files, "identity": json.loads(json.dumps(vars(ID)))}
    other = Identity(file="b.gguf")
    with open_store(tmp_path, identity=other, rebuild=True,
                    model_files={"model": "/m/b.gguf", "mmproj": None}) as s:  # fmt: skip
        put(s, "/b", 2)
        s.commit()
        assert read_models(tmp_path)["model"] == "/m/a.gguf"  # not before the swap
        s.finish_rebuild()
    assert read_models(tmp_path)["model"] == "/m/b.gguf"


def test_unchanged_status_map_follows_this_writers_changes(tmp_path: Path) -> None:
    old = time.time_ns() - 10**10  # (an mtime well before indexing: not "racy")
    with open_store(tmp_path) as s:
        put(s, "/a", 1, mtime_ns=old)
        s.queue("/q", 1, old)
        s.commit()
        s.begin_sweep()
        assert s.unchanged_status("/a", 10, old) == "ok"
        assert s.unchanged_status("/a", 11, old) is None  # another size
        assert s.unchanged_status("/q", 1, old) is None  # queued: never skipped
        s.mark_failed("/a", "broken", size=12, mtime_ns=old)
        assert s.unchanged_status("/a", 12, old) == "failed"
        s.remove("/a")
        assert s.unchanged_status("/a", 12, old) is None
        assert s.sweep() == ["/q"]  # not seen by this run: removed


def test_columns_filter_paths_without_a_python_string_per_file() -> None:
    """Substring, folder and exact lookups over the one-blob path column, including case
    changes that alter a path's byte length and undecodable bytes."""
    from launcher.store import Columns

    kinds = {"/a/\u2126x": "text", "/a/\u023ay": "pdf", "/b/Readme.TXT": None,
             "/b/c\udce9": "text", "/c/d": "image", "/bb/e": "pdf"}  # fmt: skip
    keys = sorted(p.encode("utf-8", "surrogateescape") for p in kinds)
    kind = [kinds[k.decode("utf-8", "surrogateescape")] for k in keys]
    cols = Columns.from_rows([(i, k, 0, 0, kind[i], "ok", b"") for i, k in enumerate(keys)])

    def names(idx) -> list[str]:
        return [cols.path(int(i)) for i in idx]

    assert names(cols.containing("\u03c9x")) == ["/a/\u2126x"]  # Ω (3 bytes) -> ω (2)
    assert names(cols.containing("\u2c65y")) == ["/a/\u023ay"]  # Ⱥ (2 bytes) -> ⱥ (3)
    assert names(cols.containing("readme.txt")) == ["/b/Readme.TXT"]
    assert names(np.flatnonzero(cols.under("/b/"))) == ["/b/Readme.TXT", "/b/c\udce9"]
    assert cols.find("/b/c\udce9") == keys.index(b"/b/c\xe9")
    assert cols.find("/b") is None and cols.find("/zz") is None
    assert sorted(names(np.flatnonzero(cols.kind_mask({"pdf"})))) == ["/a/\u023ay", "/bb/e"]


def test_a_reader_racing_the_first_writer_sees_no_index_not_damage(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / CATALOG).touch()  # the writer has created the file, not its tables yet
    with open_store(tmp_path, writable=False) as r:
        assert len(r) == 0 and r.recovered is None and r.snapshot().file_count == 0
    with open_store(tmp_path) as s:  # (nor a first open that has not committed)
        with open_store(tmp_path, writable=False) as r:
            assert len(r) == 0 and r.recovered is None
        put(s, "/a", 1)
        s.commit()
    assert (tmp_path / CATALOG).exists() and not (tmp_path / "catalog.db.damaged").exists()


def _same_columns(a, b) -> None:
    assert a.blob == b.blob and np.array_equal(a.starts, b.starts)
    for name in ("ids", "size", "mtime_ns", "status_codes", "nrows", "live_rows", "row_file"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert list(a.kinds()) == list(b.kinds())


def test_a_writers_next_snapshot_updates_the_columns_it_read(tmp_path: Path) -> None:
    """After a commit, the writer's snapshot starts from the last one's arrays and the files
    the commit wrote: the same arrays a fresh read of the catalog gives."""
    rng = np.random.default_rng(3)
    with open_store(tmp_path) as s:
        for i in range(40):
            put(s, f"/d{i % 3}/f{i:02d}", i, 1 + i % 3)
        s.commit()
        s.snapshot().columns()
        for step in range(12):
            for _ in range(int(rng.integers(1, 6))):
                i = int(rng.integers(0, 50))
                path, op = f"/d{i % 3}/f{i:02d}", int(rng.integers(0, 6))
                rec = s.get(path)
                if op == 0:
                    put(s, path, 100 + step, 1 + int(rng.integers(0, 3)))
                elif op == 1:
                    s.remove(path)
                elif op == 2 and rec is not None:
                    s.touch(path, rec.size + 1, rec.mtime_ns)
                elif op == 3 and rec is not None:
                    s.extend(path, pieces(2)[1:], vec(200 + step, 1), status="ok")
                elif op == 4:
                    s.queue(f"/new/q{step}-{i}", 1, 1)
                else:
                    s.mark_failed(path, "broken", size=1, mtime_ns=2, kind="text")
            s.commit(compact=step == 7)
            snap = s.snapshot()
            assert (snap._derive is not None) == (step != 7)  # (a compaction renumbers all)
            if step % 3 == 2:
                continue  # no search in between: the next one derives from further back
            mine = snap.columns()
            with open_store(tmp_path, writable=False) as r:
                fresh = r.snapshot().columns()
                _same_columns(mine, fresh)
                expected = {f.path: s.vectors_of(f).astype(np.float32) for f in r.files() if f.rows}
            check_ownership(snap, expected)
