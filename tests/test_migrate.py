"""A real format-2 index (written by the format-2 code: tests/data/format2/make_fixture.py)
is converted on first open: same files, same vectors, same search results, no re-embedding."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from launcher.catalog import CATALOG
from launcher.fulltext import FullText
from launcher.store import (
    FORMAT_VERSION,
    MANIFEST,
    MANIFEST_PREV,
    MANIFEST_V2,
    FileRecord,
    RunStats,
    Store,
)

FIXTURE = Path(__file__).parent / "data" / "format2" / "index"


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.fixture
def old_index(tmp_path: Path) -> Path:
    d = tmp_path / "index"
    shutil.copytree(FIXTURE, d)
    return d


def _old(d: Path) -> tuple[dict, dict[str, FileRecord], np.ndarray]:
    """What the format-2 manifest says, read directly: its files and all its rows."""
    data = json.loads((d / MANIFEST).read_bytes())
    assert data["version"] == 2
    files = {e["path"]: FileRecord.from_json(e) for e in data["files"]}
    rows = np.concatenate([np.load(d / s["name"]) for s in data["segments"]])
    return data, files, rows


def _ranking(paths_rows: dict[str, np.ndarray], q: np.ndarray) -> list[str]:
    best = {p: float((r.astype(np.float32) @ q).max()) for p, r in paths_rows.items() if len(r)}
    return sorted(best, key=lambda p: (-best[p], p))


def test_format2_index_is_converted_on_first_open_without_loss(old_index: Path) -> None:
    data, old_files, old_rows = _old(old_index)
    before = _digests(old_index)
    assert len(old_files) == 8 and (old_index / MANIFEST_PREV).exists()
    with Store.open(old_index, identity=None, dims=None, writable=False) as r:
        assert r.recovered is None
        assert r.generation == data["generation"] and r.identity == data["identity"]
        assert r.roots == ("/docs",) and r.stats == RunStats.from_json(data["stats"])
        got = {f.path: f for f in r.files()}
        assert set(got) == set(old_files)
        for path, old in old_files.items():
            new = got[path]
            assert (new.size, new.mtime_ns, new.kind, new.status, new.reason) == (
                old.size, old.mtime_ns, old.kind, old.status, old.reason,
            )  # fmt: skip
            assert (new.content_hash, new.preview, new.title, new.indexed_ns) == (
                old.content_hash, old.preview, old.title, old.indexed_ns,
            )  # fmt: skip
            assert [(x.role, x.locator) for x in new.rows] == [
                (x.role, x.locator) for x in old.rows
            ]
            want = old_rows[[x.row for x in old.rows]]
            assert np.array_equal(r.vectors_of(new), want)  # the same float16 bytes
        snap = r.snapshot()
        assert snap.file_count == 8 and len(snap) == sum(len(f.rows) for f in old_files.values())
        # Search: every query ranks the files as the format-2 rows do.
        by_path = {p: old_rows[[x.row for x in f.rows]] for p, f in old_files.items()}
        rng = np.random.default_rng(0)
        for _ in range(20):
            q = rng.normal(size=8).astype(np.float32)
            q /= np.linalg.norm(q)
            scores = snap.scores(q)
            best: dict[str, float] = {}
            for i, s in enumerate(scores):
                path = snap.row_owner(i)[0].path
                best[path] = max(best.get(path, -2.0), float(s))
            assert sorted(best, key=lambda p: (-best[p], p)) == _ranking(by_path, q)
        cols = snap.columns()
        assert snap.get("/docs/caf\udce9.txt").preview == "latin-1 name"  # type: ignore[union-attr]
        assert [cols.path(int(i)) for i in cols.containing("caf")] == ["/docs/caf\udce9.txt"]
        assert cols.under("/docs/").all() and not cols.under("/doc/").any()
        pdf = cols.kind_mask({"pdf"})
        assert [cols.path(int(i)) for i in np.nonzero(pdf)[0]] == ["/docs/b.pdf"]
    after = _digests(old_index)
    # Segments and text.db are used as they are; the old manifest is kept beside the new.
    for name, digest in before.items():
        if name.startswith("seg-") or name in ("text.db", "models.json"):
            assert after[name] == digest, name
    assert after[MANIFEST_V2] == before[MANIFEST]
    assert not (old_index / MANIFEST_PREV).exists() and (old_index / CATALOG).exists()
    manifest = json.loads((old_index / MANIFEST).read_bytes())
    assert manifest["version"] == FORMAT_VERSION == 3 and manifest["file_count"] == 8
    assert "files" not in manifest  # the files are in the catalog now
    with FullText.open(old_index, writable=False) as text:  # the words index still finds
        assert [h.path for h in text.search("invoice")] == ["/docs/a.txt"]


def test_migrated_index_goes_on_and_drops_the_old_manifest_at_its_next_commit(
    old_index: Path,
) -> None:
    _, old_files, _ = _old(old_index)
    ident = json.loads((old_index / MANIFEST).read_bytes())["identity"]
    with Store.open(old_index, identity=ident, dims=8) as s:
        assert (old_index / MANIFEST_V2).exists()
        a = s.get("/docs/a.txt")
        assert a is not None
        assert s.unchanged(a.path, a.size, a.mtime_ns) == a  # a no-change run skips it
        s.remove("/docs/img.png")
        assert s.commit()
    assert not (old_index / MANIFEST_V2).exists()
    with Store.open(old_index, identity=ident, dims=8, writable=False) as r:
        assert {f.path for f in r.files()} == set(old_files) - {"/docs/img.png"}
        assert r.snapshot().get("/docs/a.txt") is not None


def test_a_damaged_format2_manifest_migrates_its_previous_generation(old_index: Path) -> None:
    prev = json.loads((old_index / MANIFEST_PREV).read_bytes())
    (old_index / MANIFEST).write_text('{"truncated')
    (old_index / (CATALOG + ".tmp")).write_bytes(b"a migration killed half-way")
    with Store.open(old_index, identity=None, dims=None) as s:
        assert s.generation == prev["generation"] == 2
        assert "previous generation (2)" in (s.recovered or "")
        assert {f.path for f in s.files()} == {e["path"] for e in prev["files"]}
    assert not (old_index / (CATALOG + ".tmp")).exists()
