"""Ranking on real indexes built with the tiny models: folding, exact boost, filters,
image queries, rerank reordering, and the live watcher."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.app import App
from launcher.cli import main
from launcher.query import Query
from launcher.reranker import Reranker
from launcher.service import LocalService


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    monkeypatch.setenv("LAUNCHER_RERANKER", str(tiny_models.rank))
    monkeypatch.setenv("LAUNCHER_RERANKER_MMPROJ", str(tiny_models.mmproj))
    return tiny_models


def picture(seed: int, size=(96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def corpus(tmp_path, models_env):
    root = tmp_path / "corpus"
    (root / "notes").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "pics").mkdir()
    (root / "notes" / "budget.txt").write_text("quarterly budget meeting: costs and revenue")
    (root / "notes" / "garden.md").write_text("# Garden\n" + "tomatoes and basil grow well\n" * 80)
    (root / "notes" / "invoice.txt").write_text("Invoice INV-20931 for consulting services")
    (root / "code" / "add.py").write_text("def add(a, b):\n    return a + b\n")
    for i in range(3):
        picture(i).save(root / "pics" / f"photo{i}.png")
    old = root / "notes" / "old.txt"
    old.write_text("an old letter about the house")
    past = time.time() - 400 * 86400
    os.utime(old, (past, past))
    assert main(["index", str(root), "--json"]) == 0
    return root


@pytest.fixture
def service(corpus):
    app = App.create()
    svc = LocalService(app, watch=False)
    yield svc
    svc.close()
    app.close()


def paths(hits):
    return [Path(h.path).name for h in hits]


def test_one_hit_per_file_and_unit_scores(service):
    hits = service.search(Query(text="tomatoes", top=50))
    names = paths(hits)
    assert len(names) == len(set(names))
    assert all(-1.0001 <= h.score <= 1.0001 for h in hits)
    assert "garden.md" in names


def test_exact_match_ranks_first_and_is_marked(service):
    hits = service.search(Query(text="INV-20931"))
    assert paths(hits)[0] == "invoice.txt" and hits[0].exact
    assert not any(h.exact for h in hits[1:])
    # too short for an exact match: pure meaning
    assert not any(h.exact for h in service.search(Query(text="in")))


def test_exact_match_in_a_file_name(service):
    hits = service.search(Query(text="photo1"))
    assert paths(hits)[0] == "photo1.png" and hits[0].exact


def test_kind_folder_date_and_score_filters(service, corpus):
    hits = service.search(Query(text="anything", kinds=frozenset({"image"}), top=50))
    assert hits and all(h.kind == "image" for h in hits)
    hits = service.search(Query(text="anything", kinds=frozenset({"code"}), top=50))
    assert paths(hits) == ["add.py"]
    hits = service.search(Query(text="anything", folder=corpus / "notes", top=50))
    assert set(paths(hits)) == {"budget.txt", "garden.md", "invoice.txt", "old.txt"}
    recent = service.search(
        Query(text="letter", modified_after=datetime.now() - timedelta(days=30), top=50)
    )
    assert "old.txt" not in paths(recent)
    older = service.search(
        Query(text="letter", modified_before=datetime.now() - timedelta(days=300), top=50)
    )
    assert paths(older) == ["old.txt"]
    scores = [h.score for h in service.search(Query(text="budget", top=50))]
    cut = sorted(scores)[len(scores) // 2]
    kept = service.search(Query(text="budget", top=50, min_score=cut))
    assert all(h.score >= cut or h.exact for h in kept) and len(kept) < len(scores)


def test_image_query_finds_the_same_image_first(service, corpus):
    image = Image.open(corpus / "pics" / "photo2.png")
    hits = service.search(Query(image=image, top=5))
    assert paths(hits)[0] == "photo2.png"


def test_rerank_reorders_by_reranker_scores(service, models_env):
    query = Query(text="budget costs", top=8)
    hits = service.search(query)
    assert service.can_rerank
    reranked = service.rerank(query, hits)
    assert sorted(paths(reranked)) == sorted(paths(hits))
    scores = [h.rerank_score for h in reranked]
    assert all(s is not None for s in scores)
    assert scores == sorted(scores, reverse=True)
    # the scores are the reranker's own, computed independently here
    with Reranker(models_env.rank, threads=2) as rr:
        doc = f"{reranked[0].name}\n{reranked[0].snippet}".strip()
        expected = rr.score("budget costs", [doc])[0]
    assert abs(expected - scores[0]) < 1e-4  # another batch layout: float32 noise only


def test_no_reranker_is_a_clear_note(corpus, monkeypatch, capsys):
    monkeypatch.setenv("LAUNCHER_RERANKER", "none")
    capsys.readouterr()
    assert main(["search", "budget", "--rerank", "--json"]) == 0
    out = capsys.readouterr()
    assert "no reranker" in out.err
    assert json.loads(out.out)["results"]


def test_cli_search_json_and_paths_only(corpus, capsys):
    capsys.readouterr()
    assert main(["search", "INV-20931", "--json", "--top", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    first = data["results"][0]
    assert {"path", "score", "kind", "snippet"} <= set(first)
    assert first["path"].endswith("invoice.txt")
    assert main(["search", "budget", "--paths-only", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(os.path.isabs(x) for x in lines)
    assert main(["search", "--image", str(corpus / "pics" / "photo0.png"), "--paths-only"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("photo0.png")


@pytest.fixture(params=["inotify", "polling"])
def watch_mode(request, monkeypatch):
    """The OS watcher, or the polling fallback taken when the OS has no watches left."""
    if request.param == "polling":
        import errno

        import watchdog.observers

        from launcher import watch

        class Exhausted(watchdog.observers.Observer):  # type: ignore[misc,valid-type]
            def start(self):
                raise OSError(errno.ENOSPC, "inotify watch limit reached")

        monkeypatch.setattr(watchdog.observers, "Observer", Exhausted)
        monkeypatch.setattr(watch, "POLL_INTERVAL", 0.3)
    return request.param


def test_watcher_applies_creations_edits_moves_and_deletions(corpus, models_env, watch_mode):
    app = App.create()
    svc = LocalService(app, watch=True)
    try:
        assert svc.watcher is not None
        if watch_mode == "polling":
            assert svc.watcher.polling and "ran out of file watches" in svc.message
        else:
            assert not svc.watcher.polling and "watching" in svc.message

        def wait_for(cond, timeout=20.0):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if cond():
                    return True
                time.sleep(0.2)
            return False

        new = corpus / "notes" / "fresh.txt"
        new.write_text("Ticket ZX-5521: printer on fire")
        assert wait_for(lambda: svc.is_indexed(str(new)))
        assert paths(svc.search(Query(text="ZX-5521")))[0] == "fresh.txt"
        new.write_text("Ticket QQ-7788: printer fixed")
        assert wait_for(lambda: paths(svc.search(Query(text="QQ-7788")))[:1] == ["fresh.txt"])
        moved = corpus / "code" / "moved.txt"
        new.rename(moved)
        assert wait_for(lambda: svc.is_indexed(str(moved)) and not svc.is_indexed(str(new)))
        moved.unlink()
        assert wait_for(lambda: not svc.is_indexed(str(moved)))
        sub = corpus / "incoming"
        sub.mkdir()
        (sub / "a.txt").write_text("a folder that appeared")
        assert wait_for(lambda: svc.is_indexed(str(sub / "a.txt")))
    finally:
        svc.close()
        app.close()


def test_search_during_an_update_sees_a_whole_snapshot(service, corpus):
    before = service.search(Query(text="budget", top=50))
    snap = service.store.snapshot()
    (corpus / "notes" / "x.txt").write_text("new file")
    service.apply_changes([str(corpus / "notes" / "x.txt")])
    # the old snapshot is unchanged; the new one has the file
    assert snap.get(str(corpus / "notes" / "x.txt")) is None
    assert service.is_indexed(str(corpus / "notes" / "x.txt"))
    assert len(service.search(Query(text="budget", top=50))) == len(before) + 1


def test_images_without_mmproj_are_indexed_by_name(tmp_path, tiny_models, monkeypatch, capsys):
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", "none")
    root = tmp_path / "pics"
    root.mkdir()
    picture(1).save(root / "sunset.png")
    capsys.readouterr()
    assert main(["index", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 1 and report["failed"] == 0
    assert main(["search", "sunset", "--paths-only"]) == 0
    assert capsys.readouterr().out.strip().endswith("sunset.png")


def test_launch_gives_back_the_vision_encoder_after_indexing(corpus, models_env):
    """Between indexing runs the service holds no vision encoder for indexing (hundreds of
    MB with a real mmproj); pictures still index and search afterwards."""
    app = App.create()
    svc = LocalService(app, watch=False)
    try:
        new = corpus / "pics" / "new.png"
        picture(9).save(new)
        svc.apply_changes([str(new)])
        assert svc.is_indexed(str(new))
        engine = app.embedder()
        assert engine._vision is None  # released once the batch was done
        hits = svc.search(Query(image=str(new), top=3))
        assert hits[0].path == str(new)  # the query engine loads its own when asked
        newer = corpus / "pics" / "newer.png"
        picture(10).save(newer)
        svc.apply_changes([str(newer)])  # and indexing loads it again
        assert svc.search(Query(image=str(newer), top=1))[0].path == str(newer)
        assert engine._vision is None
    finally:
        svc.close()
        app.close()
