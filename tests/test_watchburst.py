"""The watcher at scale: a burst of files (a git checkout, an unzip) under a watched root is
absorbed in a few batches and commits while searches keep answering; past ``MAX_PENDING``
waiting paths, folders stand for their files."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from tiny_fixtures import FILLER_WORDS
from waiting import wait_for

from launcher import paths, service, watch
from launcher.app import App
from launcher.cli import main
from launcher.query import Query
from launcher.service import LocalService
from launcher.store import Store, default_dir


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    return tiny_models


@pytest.fixture
def commits(monkeypatch) -> list[float]:
    """When each commit that wrote a generation happened (monotonic)."""
    made: list[float] = []
    original = Store.commit

    def counted(self, *args, **kwargs):
        wrote = original(self, *args, **kwargs)
        if wrote:
            made.append(time.monotonic())
        return wrote

    monkeypatch.setattr(Store, "commit", counted)
    return made


def note(i: int) -> str:
    words = " ".join(FILLER_WORDS[(i * 7 + k) % len(FILLER_WORDS)] for k in range(5))
    return f"note {i}: {words}\n"


def settled(svc: LocalService, files: int) -> bool:
    st = svc.status()
    return st.files == files and st.queued == 0 and st.pending == 0 and not st.indexing


def indexed_paths() -> set[str]:
    store = Store.open(default_dir(), identity=None, dims=None, writable=False)
    store.close()
    return {rec.path for rec in store.snapshot().files if rec.status == "ok"}


def test_a_burst_of_files_is_absorbed_in_few_commits_while_search_answers(
    models_env, tmp_path, commits
):
    n = 2000
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    # a commit every 8 files in `index` runs: a burst must not commit n / 8 times
    cfg.write_text("[index]\ncommit_every_files = 8\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "seed.txt").write_text("the first note, about a harbor")
    assert main(["index", str(root)]) == 0
    app = App.create()
    svc = LocalService(app, watch=True)
    latencies: list[float] = []
    stop = threading.Event()

    def search_meanwhile() -> None:
        while not stop.is_set():
            started = time.monotonic()
            svc.search(Query(text="harbor lantern"))
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)

    searcher = threading.Thread(target=search_meanwhile, daemon=True)
    try:
        assert svc.watcher is not None and svc.watcher.alive
        svc.search(Query(text="warm up"))  # the query engine loads before the clock starts
        searcher.start()
        before = len(commits)
        burst = root / "checkout"
        for folder in range(4):
            (burst / f"part{folder}").mkdir(parents=True)
        for i in range(n):
            (burst / f"part{i % 4}" / f"n{i:05d}.txt").write_text(note(i))
        assert wait_for(lambda: settled(svc, n + 1), timeout=900), svc.status()
        stop.set()
        searcher.join(timeout=30)
        made = len(commits) - before
        # one commit by name, a bounded number for the cards (by count and by time), one at
        # the end of each batch: far fewer than one per 8 files (250)
        assert made <= 40, made
        assert len(latencies) >= 10
        assert max(latencies) < 2.0, sorted(latencies)[-5:]
        hits = svc.search(Query(text=FILLER_WORDS[7]))
        assert hits and all(h.path.endswith(".txt") for h in hits)
    finally:
        stop.set()
        svc.close()
        app.close()
    assert len(indexed_paths()) == n + 1


def test_overflowing_events_fold_into_folders_that_are_rescanned(models_env, tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "MAX_PENDING", 40)
    root = tmp_path / "root"
    old = root / "old"
    old.mkdir(parents=True)
    for i in range(20):
        (old / f"old{i:02d}.txt").write_text(note(i))
    (root / "keep.txt").write_text("a note that stays")
    assert main(["index", str(root)]) == 0
    app = App.create()
    svc = LocalService(app, watch=True)
    handed: list[list[str]] = []
    apply = svc.apply_changes

    def recorded(batch: list[str]) -> None:
        handed.append(list(batch))
        apply(batch)

    try:
        assert svc.watcher is not None
        svc.watcher.on_changes = recorded
        shutil.rmtree(old)  # indexed files gone, their folder with them
        new = []
        for d in range(3):
            folder = root / "unzipped" / f"dir{d}" / "deeper"
            folder.mkdir(parents=True)
            for i in range(100):
                path = folder / f"f{i:03d}.txt"
                path.write_text(note(1000 + d * 100 + i))
                new.append(str(path))
        want = {*new, str(root / "keep.txt")}
        assert wait_for(lambda: settled(svc, len(want)), timeout=600), svc.status()
        assert all(len(batch) <= 40 for batch in handed), [len(b) for b in handed]
        assert any(os.path.isdir(p) for batch in handed for p in batch)  # folders stood in
    finally:
        svc.close()
        app.close()
    assert indexed_paths() == want


def test_a_file_changed_during_a_long_batch_gets_its_words_before_the_model_is_done(
    models_env, tmp_path, monkeypatch
):
    """A batch hands its model work back to the watcher in slices, so what changes meanwhile
    is findable by its words (and the lock is free between slices) long before the
    model has read the whole burst."""
    monkeypatch.setattr(service, "BATCH_MEANING_SECONDS", 0.5)
    root = tmp_path / "root"
    root.mkdir()
    (root / "seed.txt").write_text("the first note")
    assert main(["index", str(root)]) == 0
    app = App.create()
    svc = LocalService(app, watch=True)
    batches: list[tuple[int, int]] = []
    apply = svc.apply_changes

    def recorded(batch: list[str]) -> list[str]:
        later = apply(batch)
        batches.append((len(batch), len(later)))
        return later

    try:
        assert svc.watcher is not None
        svc.watcher.on_changes = recorded
        burst = root / "burst"
        burst.mkdir()
        for i in range(800):
            (burst / f"n{i:04d}.txt").write_text(note(i))
        assert wait_for(lambda: batches, timeout=120)  # the burst's first slice is done
        late = root / "late.txt"
        late.write_text("a zeppelin full of marmalade")

        def found_by_words() -> bool:
            hits = svc.search(Query(text="zeppelin marmalade"))
            return any(h.path == str(late) and "words" in h.matched for h in hits)

        assert wait_for(found_by_words, timeout=300, step=0.1)
        still_queued = svc.status().queued
        assert still_queued > 1, still_queued  # the burst is still being read by the model
        assert wait_for(lambda: settled(svc, 802), timeout=600), svc.status()
        assert len(batches) >= 3 and any(later for _, later in batches), batches
    finally:
        svc.close()
        app.close()
    assert len(indexed_paths()) == 802


def test_fold_into_folders_keeps_the_deepest_apart_and_never_goes_above_a_root():
    sep = os.sep
    root = f"{sep}home{sep}me"
    many = {f"{root}{sep}a{sep}b{sep}f{i}": None for i in range(10)}
    many |= {f"{root}{sep}c{sep}g{i}": None for i in range(5)}
    many[f"{root}{sep}top.txt"] = None
    folded = watch.fold_into_folders(dict(many), [root], 8)
    assert list(folded) == [f"{root}{sep}a{sep}b", *[f"{root}{sep}c{sep}g{i}" for i in range(5)],
                            f"{root}{sep}top.txt"]  # fmt: skip
    assert list(watch.fold_into_folders(dict(many), [root], 1)) == [root]
    assert watch.fold_into_folders({root: None}, [root], 0) == {root: None}
    assert len(watch.fold_into_folders(dict(many), [root], 100)) == len(many)
