"""The two-pass scan of large indexes keeps the exact top hits."""

from __future__ import annotations

import numpy as np
import pytest

from launcher import store as store_mod
from launcher.extract import Piece
from launcher.store import FileRecord, Store


def clustered(n: int, dims: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 topics, energy concentrated in the leading dims the way
    Matryoshka-trained embeddings are."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.sqrt(1.0 + np.arange(dims) / 32.0)
    centres = rng.normal(size=(50, dims)) * weight
    x = centres[rng.integers(0, 50, n)] + 0.6 * rng.normal(size=(n, dims)) * weight
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def big_store(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "COARSE_MIN_ROWS", 2000)
    monkeypatch.setattr(store_mod, "COARSE_DIMS", 128)
    dims = 512
    vectors = clustered(4000, dims, 1)
    st = Store.open(tmp_path / "idx", identity={"model": "synthetic"}, dims=dims)
    for i in range(0, 4000, 4):
        rec = FileRecord(path=f"/f/{i // 4}.txt", size=1, mtime_ns=1)
        pieces = [Piece("card" if j == 0 else "chunk", "x") for j in range(4)]
        st.put(rec, pieces, vectors[i : i + 4])
    st.commit()
    yield st
    st.close()


def test_first_pass_keeps_the_exact_top_hits(big_store):
    snap = big_store.snapshot()
    assert snap.coarse() is not None and snap.coarse().shape == (4000, 128)
    queries = clustered(40, 512, 2)
    hits = 0
    for q in queries:
        exact = np.argsort(-snap.scores(q))[:10]
        fast = snap.search_scores(q, shortlist=400)
        got = np.argsort(-fast)[:10]
        hits += len(set(exact) & set(got))
        # the kept rows carry their exact full-dim score (float32 dot products of 512 terms:
        # BLAS kernels sum in CPU-specific orders, so 1e-4, far below a coarse score's error)
        np.testing.assert_allclose(fast[got], snap.scores(q)[got], rtol=0, atol=1e-4)
    assert hits / (10 * len(queries)) >= 0.99


def test_masked_rows_never_come_back(big_store):
    snap = big_store.snapshot()
    mask = np.zeros(len(snap), dtype=bool)
    mask[::7] = True
    out = snap.search_scores(clustered(1, 512, 3)[0], shortlist=100, row_mask=mask)
    assert np.all(np.isinf(out[~mask]))
    assert np.isfinite(out[mask]).sum() == 100


def test_exact_match_outside_the_shortlist_gets_its_exact_score(big_store, monkeypatch):
    """A file found by name that the first pass left out still shows its real cosine (not
    -inf, which would also make `search --json` print invalid JSON)."""
    from launcher import search as search_mod
    from launcher.query import Query
    from launcher.search import Searcher

    monkeypatch.setattr(search_mod, "SHORTLIST", 5)
    monkeypatch.setattr(search_mod, "SHORTLIST_ROWS_PER_FILE", 2)
    snap = big_store.snapshot()
    q = clustered(1, 512, 4)[0]
    target = "/f/123.txt"
    rows = [ref.row for ref in snap.get(target).rows]
    shortlist = np.isfinite(snap.search_scores(q, shortlist=10))
    assert not shortlist[rows].any()  # the first pass does not keep the target's rows

    class Fixed:  # the query's vector, without a model (this test is about ranking)
        def embed(self, items, dims=None):
            return q[None, :]

    searcher = Searcher(big_store.snapshot, lambda: Fixed())
    hits = searcher.search(Query(text="123.txt", top=5))
    assert hits[0].path == target and hits[0].exact
    exact_best = float(np.max(snap.scores(q)[rows]))
    assert hits[0].score == pytest.approx(exact_best, abs=1e-4)
    assert all(np.isfinite(h.score) for h in hits)
