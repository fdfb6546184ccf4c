"""Writes tests/data/format2/index with the FORMAT 2 code (launcher before the catalog).

Run it with the old package first on the path, e.g.::

    git -C REPO archive <format-2 commit> launcher | tar -x -C /tmp/v2
    PYTHONPATH=/tmp/v2 python tests/data/format2/make_fixture.py tests/data/format2/index

It makes three generations (so manifest.prev.json exists and a replaced file left dead
rows in the first segment), every status, locators, a skipped file, a path that is not
valid UTF-8, run stats, models.json and a text.db. No model is involved: the vectors are
seeded random unit vectors, dims 8.
"""

import shutil
import sys
from pathlib import Path

import numpy as np

from launcher import store as store_mod
from launcher.extract import Locator, Piece
from launcher.fulltext import FullText, TextDoc
from launcher.store import FileRecord, RunStats, Store

assert store_mod.FORMAT_VERSION == 2, "run this with the format-2 code"
out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
DIMS = 8
IDENTITY = {"file": "tiny.gguf", "size": 1, "header_hash": "abc", "dims": DIMS}


def vecs(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIMS))


def pieces(n: int, *, page: bool = False) -> list[Piece]:
    out_ = [Piece("card", "card")]
    for i in range(n - 1):
        loc = Locator(page=i + 1) if page else Locator(line_start=10 * i + 1, line_end=10 * i + 9)
        out_.append(Piece("chunk", f"c{i}", locator=loc))
    return out_


def rec(path: str, kind: str | None, **kw) -> FileRecord:
    return FileRecord(
        path=path, size=kw.pop("size", 100), mtime_ns=kw.pop("mtime_ns", 10**18), kind=kind, **kw
    )


files = {"model": "/models/tiny.gguf", "mmproj": None}
with Store.open(out, identity=IDENTITY, dims=DIMS, model_files=files) as s:
    s.set_roots(["/docs"])
    s.put(
        rec("/docs/a.txt", "text", content_hash="h-a-old", preview="old alpha"),
        pieces(2),
        vecs(1, 2),
    )
    s.put(
        rec("/docs/b.pdf", "pdf", content_hash="h-b", title="Bee", preview="bee pdf"),
        pieces(3, page=True),
        vecs(2, 3),
    )
    s.queue("/docs/queued.txt", 5, 10**18)
    s.commit()
    s.put(
        rec("/docs/a.txt", "text", content_hash="h-a", preview="alpha text"), pieces(3), vecs(3, 3)
    )  # replaces: the first a.txt rows are dead rows now
    s.put(rec("/docs/img.png", "image", content_hash="h-img"), pieces(1), vecs(4, 1))
    s.mark_failed(
        "/docs/broken.bin",
        "ExtractError: cannot read it",
        size=7,
        mtime_ns=10**18,
        kind="text",
        content_hash="h-broken",
    )
    s.commit()
    s.put(
        rec(
            "/docs/skipped.xyz",
            None,
            status="ok",
            reason="format not read",
            content_hash="h-x",
            preview="skipped.xyz",
        ),
        pieces(1),
        vecs(5, 1),
    )
    s.put(
        rec(
            "/docs/long.md",
            "markdown",
            status="pending_chunks",
            content_hash="h-long",
            preview="long",
        ),
        pieces(1),
        vecs(6, 1),
    )
    s.put(
        rec("/docs/caf\udce9.txt", "text", content_hash="h-cafe", preview="latin-1 name"),
        pieces(2),
        vecs(7, 2),
    )
    s.set_stats(RunStats(started_ns=1, finished_ns=2, seen=8, indexed=6, failed=1, queued=1))
    s.commit()

with FullText.open(out) as text:
    text.put(TextDoc("/docs/a.txt", 100, 10**18, "text", "alpha beta gamma invoice 2024"))
    text.put(TextDoc("/docs/b.pdf", 100, 10**18, "pdf", "bee pdf text"))
for name in ("lock",):
    (out / name).unlink(missing_ok=True)
print("wrote", sorted(p.name for p in out.iterdir()))
