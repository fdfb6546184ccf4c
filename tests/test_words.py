"""Full text end to end: a word a person remembers finds its file, whatever the model thinks.

The tiny models are random, so meaning alone finds nothing in particular here: every hit
below comes from the full-text index, fused with the vectors by the real searcher.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_fixtures import FILLER_WORDS

from launcher.app import App
from launcher.cli import main
from launcher.fulltext import DB_NAME, FullText
from launcher.query import Query, Results
from launcher.service import LocalService
from launcher.store import Store, default_dir

FILLER = FILLER_WORDS[:23]

PLANTED = {
    "code": ("ledger/notes-2024.txt", "ZQX-4417-KAPPA"),
    "rare": ("misc/weekend.txt", "sesquipedalian"),
    "far": ("travel/itinerary.txt", "albatross zeppelin"),
    "accent": ("physics/lecture.md", "Schrodinger"),
    "cjk": ("japan/diary.txt", "東京タワー"),
}


def _lines(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(FILLER) for _ in range(10)) for _ in range(n)]


def make_tree(root: Path, files: int = 240) -> Path:
    """Hundreds of files of filler, and five that hold something memorable in their body."""
    rng = random.Random(3)
    for i in range(files):
        folder = root / f"folder{i % 9}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:03d}.txt").write_text("\n".join(_lines(rng, 12)) + "\n")
    bodies = {key: _lines(rng, 60) for key in PLANTED}
    bodies["code"][30] += " ticket ZQX-4417-KAPPA is still open"  # line 31, not the name
    bodies["rare"][5] += " a sesquipedalian speech"
    bodies["far"][0] += " albatross"  # first line ...
    bodies["far"] += _lines(rng, 400)
    bodies["far"][-1] += " zeppelin"  # ... and 400 lines later: different pieces
    bodies["accent"][40] += " Erwin Schrödinger and the cat"
    bodies["cjk"][20] = "今日は東京タワーに行きました。とても高かったです。"
    for key, (rel, _) in PLANTED.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(bodies[key]) + "\n", encoding="utf-8")
    return root


KILLED = """
import sys
from launcher.cli import main
sys.exit(main(["index", sys.argv[1]]))
"""


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    return tiny_models


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_models) -> tuple[Path, Path]:
    """One tree and its index for the module (indexing 245 files is the slow part)."""
    base = tmp_path_factory.mktemp("words")
    root = make_tree(base / "tree")
    env = {**os.environ, "LAUNCHER_HOME": str(base / "home"),
           "LAUNCHER_MODEL": str(tiny_models.embedding), "LAUNCHER_MMPROJ": str(tiny_models.mmproj),
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    subprocess.run([sys.executable, "-c", KILLED, str(root)], env=env, check=True,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    return root, base / "home"


@pytest.fixture
def tree(built, models_env, isolated_home) -> Path:
    """The module's tree, with a copy of its index as this test's own."""
    root, home = built
    shutil.copytree(home, isolated_home, dirs_exist_ok=True)
    return root


def search_json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["search", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["results"]


@pytest.mark.parametrize("key", sorted(PLANTED))
def test_remembered_words_find_their_file_first(tree, capsys, key: str) -> None:
    rel, query = PLANTED[key]
    results = search_json(capsys, query)
    assert results, query
    assert results[0]["path"] == str(tree / rel)


def test_hit_points_at_the_line_and_marks_the_words(tree) -> None:
    app = App.create()
    svc = LocalService(app, watch=False)
    try:
        hit = svc.search(Query(text="ZQX-4417-KAPPA"))[0]
        assert hit.path == str(tree / PLANTED["code"][0])
        assert hit.exact and "words" in hit.matched
        assert hit.line_start is not None and hit.line_start <= 31 <= (hit.line_end or 0)
        assert [hit.snippet[s:e] for s, e in hit.marks] == ["ZQX-4417-KAPPA"]
        accent = svc.search(Query(text="schrodinger"))[0]
        assert [accent.snippet[s:e] for s, e in accent.marks] == ["Schrödinger"]
        assert 0 < hit.relevance <= 1
    finally:
        svc.close()
        app.close()


def test_query_language_and_filters(tree, capsys) -> None:
    far = str(tree / PLANTED["far"][0])
    assert search_json(capsys, "albatr")[0]["path"] == far  # prefix while typing
    assert far not in [r["path"] for r in search_json(capsys, "albatross -zeppelin", "--top", "50")]
    phrase = search_json(capsys, '"still open"')
    assert phrase[0]["path"] == str(tree / PLANTED["code"][0])
    for odd in ('"unbalanced', "NEAR(", "*", "-", "a:b", "((("):
        search_json(capsys, odd)  # no error, whatever it finds
    inside = search_json(capsys, "sesquipedalian", "--in", str(tree / "misc"))
    assert [r["path"] for r in inside][:1] == [str(tree / PLANTED["rare"][0])]
    outside = search_json(capsys, "sesquipedalian", "--in", str(tree / "folder1"))
    assert str(tree / PLANTED["rare"][0]) not in [r["path"] for r in outside]
    assert search_json(capsys, "sesquipedalian", "--kind", "pdf") == []


def test_watcher_changes_follow_into_the_text_index(tmp_path, models_env) -> None:
    tree = make_tree(tmp_path / "tree", files=10)
    assert main(["index", str(tree)]) == 0
    app = App.create()
    svc = LocalService(app, watch=False)
    try:
        note = tree / "misc" / "weekend.txt"
        note.write_text("now about a xylophone concert\n")
        svc.apply_changes([str(note)])
        assert svc.search(Query(text="xylophone"))[0].path == str(note)
        assert not by_words(svc, "sesquipedalian")  # the old words are gone
        moved = tree / "folder2" / "renamed.txt"
        os.rename(note, moved)
        svc.apply_changes([str(note), str(moved)])
        assert by_words(svc, "xylophone") == [str(moved)]
        moved.unlink()
        svc.apply_changes([str(moved)])
        assert by_words(svc, "xylophone") == []
    finally:
        svc.close()
        app.close()


def by_words(svc: LocalService, text: str) -> list[str]:
    """The files the text index found (the random model finds every file by meaning)."""
    return [h.path for h in svc.search(Query(text=text, top=50)) if "words" in h.matched]


def test_existing_index_gets_its_text_without_reembedding(tree, capsys) -> None:
    (default_dir() / DB_NAME).unlink()  # as an index made before the text index existed
    capsys.readouterr()
    assert main(["index", str(tree), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens"] == 0 and report["added"] == 0 and report["updated"] == 0
    assert search_json(capsys, "sesquipedalian")[0]["path"] == str(tree / PLANTED["rare"][0])


def test_removed_root_leaves_the_text_index(tree, capsys) -> None:
    other = make_tree(tree.parent / "other", files=3)
    (other / "only-here.txt").write_text("a quokka was seen\n")
    assert main(["index", str(other)]) == 0
    assert search_json(capsys, "quokka")[0]["path"] == str(other / "only-here.txt")
    assert main(["remove", str(other)]) == 0
    assert str(other / "only-here.txt") not in [r["path"] for r in search_json(capsys, "quokka")]
    with FullText.open(default_dir()) as ft:
        assert not [p for p in ft.signatures() if p.startswith(str(other))]
        assert len(ft) == 245
    shutil.rmtree(other)


def test_words_come_before_meaning(tmp_path, models_env) -> None:
    """A run stopped as soon as the model starts leaves every file findable by its words,
    with a snippet, marked as not embedded yet."""
    root = make_tree(tmp_path / "tree", files=30)
    app = App.create()
    try:
        with app.open_store() as store:
            indexer = app.indexer(store)

            def stop_after_words(p):
                if p.phase == "words" and p.done == p.total:
                    indexer.cancel.set()

            indexer.on_progress = stop_after_words
            report = indexer.run([str(root)])
            indexer.close()
            assert report.interrupted and report.tokens == 0 and report.added == 0
        svc = LocalService(app, watch=False)
        try:
            hit = svc.search(Query(text="sesquipedalian"))[0]
            assert hit.path == str(root / PLANTED["rare"][0])
            assert hit.queued and "sesquipedalian" in hit.snippet and hit.marks
        finally:
            svc.close()
    finally:
        app.close()


def test_kill_9_never_leaves_text_without_its_file(tmp_path, models_env) -> None:
    root = make_tree(tmp_path / "tree", files=120)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.5, 1.5, 3.0):
        proc = subprocess.Popen([sys.executable, "-c", KILLED, str(root)], env=env,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (default_dir() / DB_NAME).exists():
            continue
        with Store.open(default_dir(), identity=None, dims=None, writable=False) as store:
            known = {rec.path for rec in store.files()}
        with FullText.open(default_dir(), writable=False) as ft:
            assert set(ft.signatures()) <= known
        # Moving files out between runs: the text index follows what the store has.
        victim = sorted(root.rglob("file*.txt"))[0]
        victim.unlink()
    assert main(["index", str(root)]) == 0
    with Store.open(default_dir(), identity=None, dims=None, writable=False) as store:
        known = {rec.path for rec in store.files()}
    with FullText.open(default_dir(), writable=False) as ft:
        assert set(ft.signatures()) == known
    app = App.create()
    svc = LocalService(app, watch=False)
    try:
        for key in ("code", "rare", "cjk"):
            rel, query = PLANTED[key]
            assert svc.search(Query(text=query))[0].path == str(root / rel)
    finally:
        svc.close()
        app.close()


def test_meaning_tiers_take_the_newest_files_first(tmp_path, models_env) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    now = time.time()
    ages = [5, 1, 9, 3, 7]  # days
    for i, days in enumerate(ages):
        path = root / f"note{i}.txt"
        path.write_text(f"note number {i}\n" + "\n".join(f"line {n} of {i}" for n in range(400)))
        os.utime(path, (now - days * 86400, now - days * 86400))
    order: dict[str, list[str]] = {"cards": [], "chunks": []}

    def progress(p) -> None:
        if p.phase in order and p.path and p.path not in order[p.phase]:
            order[p.phase].append(p.path)

    app = App.create()
    try:
        with app.open_store() as store:
            indexer = app.indexer(store, on_progress=progress)
            indexer.run([str(root)])
            indexer.close()
    finally:
        app.close()
    newest_first = [str(root / f"note{i}.txt") for i in sorted(range(5), key=lambda i: ages[i])]
    assert order["cards"] == newest_first
    assert order["chunks"] == newest_first


def test_without_fts5_a_clear_message_and_search_by_meaning(tmp_path, models_env, monkeypatch,
                                                            capsys) -> None:  # fmt: skip
    from launcher import fulltext

    def no_fts5() -> None:
        raise fulltext.FullTextUnavailable("this Python's sqlite3 lacks FTS5 (test)")

    monkeypatch.setattr(fulltext, "check_fts5", no_fts5)
    root = make_tree(tmp_path / "tree", files=5)
    assert main(["index", str(root)]) == 0
    err = capsys.readouterr().err
    assert err.count("lacks FTS5") == 1
    assert not (default_dir() / DB_NAME).exists()
    results = search_json(capsys, "ZQX-4417-KAPPA")
    assert results and results[0]["path"] == str(root / PLANTED["code"][0])  # read as before


def test_results_count_what_was_found_beyond_the_top(tree) -> None:
    """``Results.total`` counts every file found (the page's "N results" and "Show more");
    ``by_words`` says whether any file has the query's words (the page's weak matches)."""
    app = App.create()
    svc = LocalService(app, watch=False)
    try:
        common = svc.search(Query(text="lantern", top=5))
        assert isinstance(common, Results)
        assert len(common) == 5 and common.by_words is not None and common.by_words > 5
        assert common.total >= common.by_words
        rare = svc.search(Query(text="sesquipedalian", top=20))
        assert isinstance(rare, Results)
        assert rare.by_words == 1 and rare.total > len(rare) == 20
        assert rare.capped  # meaning ranks every file: it stops counting at its shortlist
        gibberish = svc.search(Query(text="qwzxv kplmrt", top=20))
        assert isinstance(gibberish, Results)
        assert gibberish and gibberish.by_words == 0
        assert not any("words" in h.matched or h.exact for h in gibberish)
    finally:
        svc.close()
        app.close()
