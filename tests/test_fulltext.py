"""The full-text index (SQLite FTS5): what a person types finds the file that has it."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tiny_fixtures import FILLER_WORDS

from launcher.extract import Locator
from launcher.fulltext import (
    FullText,
    TextDoc,
    TextFilter,
    check_fts5,
    fold,
    parse_query,
)

WORDS = FILLER_WORDS


def _filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _search(ft: FullText, query: str, **kw) -> list:
    return ft.search(query, snippets=20, **kw)


def _doc(path: str, body: str, *, kind: str = "text", mtime_ns: int = 1, lines: int = 0) -> TextDoc:
    """A document whose pieces are its paragraphs (blank-line separated), with line locators."""
    spans = []
    offset = 0
    line = 1
    for para in body.split("\n\n"):
        n = para.count("\n") + 1
        spans.append((offset, Locator(line_start=line, line_end=line + n - 1)))
        offset += len(para) + 2
        line += n + 1
    return TextDoc(path, len(body), mtime_ns, kind, body, tuple(spans))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[FullText, dict[str, str]]:
    """Three hundred files of filler words, a few of them holding something memorable."""
    rng = random.Random(7)
    ft = FullText.open(tmp_path / "idx")
    planted = {
        "code": "/docs/projects/ledger-notes.txt",
        "rare": "/docs/misc/weekend.txt",
        "far": "/docs/travel/itinerary.txt",
        "accent": "/docs/physics/lecture.txt",
        "cjk": "/docs/japan/diary.txt",
    }
    bodies: dict[str, str] = {}
    with ft.batch():
        for i in range(300):
            path = f"/docs/folder{i % 7}/file{i:03d}.txt"
            bodies[path] = "\n\n".join(_filler(rng, 60) for _ in range(4))
            ft.put(_doc(path, bodies[path], mtime_ns=i))
        paras = lambda *extra: "\n\n".join(  # noqa: E731
            [_filler(rng, 80) for _ in range(5)] + list(extra)
        )
        bodies[planted["code"]] = paras(f"{_filler(rng, 20)} the ticket ZQX-4417-KAPPA stays open")
        bodies[planted["rare"]] = paras(f"{_filler(rng, 10)} a sesquipedalian speech")
        far = [_filler(rng, 80) for _ in range(8)]
        far[0] += " albatross"
        far[7] += " zeppelin"
        bodies[planted["far"]] = "\n\n".join(far)
        bodies[planted["accent"]] = paras("Erwin Schrödinger wrote about the cat")
        bodies[planted["cjk"]] = paras("今日は東京タワーに行きました。とても高かったです。")
        for key, path in planted.items():
            ft.put(_doc(path, bodies[path], mtime_ns=10_000 + len(key)))
    yield ft, {**planted, **{"_body:" + k: v for k, v in bodies.items()}}
    ft.close()


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("ZQX-4417-KAPPA", "code"),  # a code, as typed
        ("zqx-4417-kappa", "code"),  # any case
        ("ZQX-4417-KA", "code"),  # while typing
        ("sesquipedalian", "rare"),  # a rare word
        ("albatross zeppelin", "far"),  # two words far apart, in different pieces
        ("Schrodinger", "accent"),  # typed without its accent
        ("schrödinger cat", "accent"),
        ("東京タワー", "cjk"),  # a substring of a Japanese sentence
        ("東京", "cjk"),  # two characters only
        ("sesquiped", "rare"),  # prefix
    ],
)
def test_planted_word_found_first(corpus, query: str, key: str) -> None:
    ft, planted = corpus
    hits = _search(ft, query)
    assert hits, query
    assert hits[0].path == planted[key]


def test_all_words_must_match(corpus) -> None:
    ft, planted = corpus
    assert _search(ft, "albatross sesquipedalian") == []
    assert [h.path for h in _search(ft, "albatross")] == [planted["far"]]


def test_snippet_from_best_piece_with_marks_and_locator(corpus) -> None:
    ft, planted = corpus
    (hit,) = _search(ft, "ZQX-4417-KAPPA")
    assert hit.path == planted["code"]
    marked = [hit.snippet[s:e] for s, e in hit.marks]
    assert marked == ["ZQX-4417-KAPPA"]
    body = planted["_body:" + planted["code"]]
    line = body[: body.index("ZQX")].count("\n") + 1
    assert hit.locator.line_start is not None and hit.locator.line_end is not None
    assert hit.locator.line_start <= line <= hit.locator.line_end
    assert hit.locator.line_start > 1  # the last paragraph, not the file's start


def test_snippet_marks_folded_and_prefix_matches(corpus) -> None:
    ft, planted = corpus
    (hit,) = _search(ft, "schrodinger")
    assert [hit.snippet[s:e] for s, e in hit.marks] == ["Schrödinger"]
    (hit,) = _search(ft, "東京タワー")
    assert "東京タワー" in hit.snippet


def test_best_piece_is_the_one_with_most_terms(tmp_path: Path) -> None:
    with FullText.open(tmp_path) as ft:
        body = "alpha only here\n\nnothing\n\nalpha and beta together"
        ft.put(_doc("/x.txt", body))
        (hit,) = _search(ft, "alpha beta")
        assert hit.locator.line_start == 5
        assert sorted(hit.snippet[s:e] for s, e in hit.marks) == ["alpha", "beta"]


def test_phrase_and_exclusion(tmp_path: Path) -> None:
    with FullText.open(tmp_path) as ft, ft.batch():
        ft.put(_doc("/a.txt", "the quick brown fox"))
        ft.put(_doc("/b.txt", "brown the quick fox"))
        ft.put(_doc("/c.txt", "a quick brown dog"))
    paths = lambda q: sorted(h.path for h in _search(ft, q))  # noqa: E731
    with FullText.open(tmp_path, writable=False) as ft:
        assert paths('"quick brown"') == ["/a.txt", "/c.txt"]
        assert paths('"quick brown" -dog') == ["/a.txt"]
        assert paths("quick -fox") == ["/c.txt"]
        assert paths("fox") == ["/a.txt", "/b.txt"]
        assert paths("-fox") == []  # nothing to look for is no results, not every file


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced',
        "*",
        "fox*",
        "NEAR(fox dog)",
        "title:fox",
        "-",
        "- fox",
        "AND",
        "OR fox",
        '""',
        "fox AND",
        "(fox",
        "fox)",
        "^fox",
        "fox + dog",
        "'; DROP TABLE docs; --",
        "\\",
        "%_",
    ],
)
def test_odd_input_never_errors(tmp_path: Path, query: str) -> None:
    with FullText.open(tmp_path) as ft:
        ft.put(_doc("/a.txt", "the quick brown fox and the lazy dog"))
        hits = _search(ft, query)
        assert all(h.path == "/a.txt" for h in hits)
        assert len(ft) == 1  # nothing was dropped


def test_parse_query() -> None:
    q = parse_query('report "annual budget" -draft -"old copy" "open')
    assert [(t.text, t.phrase, t.exclude) for t in q.terms] == [
        ("report", False, False),
        ("annual budget", True, False),
        ("draft", False, True),
        ("old copy", True, True),
        ("open", True, False),
    ]
    assert not parse_query("- * ''")
    assert fold("Schrödinger ÉCOLE") == "schrodinger ecole"


def test_identifiers(tmp_path: Path) -> None:
    with FullText.open(tmp_path) as ft, ft.batch():
        ft.put(_doc("/a.py", "def snake_case_name(x): return CamelCaseThing(x)"))
        ft.put(_doc("/b.py", "snake case name camel case"))
    with FullText.open(tmp_path, writable=False) as ft:
        # the parts of an identifier are words of their own; as typed, it is their phrase
        assert {h.path for h in _search(ft, "snake_case_name")} == {"/a.py", "/b.py"}
        assert [h.path for h in _search(ft, "case_camel")] == []
        assert [h.path for h in _search(ft, "CamelCaseThing")] == ["/a.py"]
        assert [h.path for h in _search(ft, "camelcase")] == ["/a.py"]


def test_name_and_folder_words_match_and_name_ranks_higher(tmp_path: Path) -> None:
    with FullText.open(tmp_path) as ft, ft.batch():
        ft.put(_doc("/home/u/Invoices/scan.txt", "paid in full"))
        ft.put(_doc("/home/u/notes/invoice.txt", "paid in full"))
        ft.put(_doc("/home/u/notes/other.txt", "the invoice was paid"))
    with FullText.open(tmp_path, writable=False) as ft:
        hits = _search(ft, "invoice")
        assert hits[0].path == "/home/u/notes/invoice.txt"
        assert {h.path for h in hits} == {
            "/home/u/Invoices/scan.txt", "/home/u/notes/invoice.txt", "/home/u/notes/other.txt",
        }  # fmt: skip


def test_filters_apply_inside_the_query(corpus) -> None:
    ft, planted = corpus
    everything = _search(ft, "river", limit=1000)
    assert len(everything) > 50
    only = _search(ft, "river", where=TextFilter(folder="/docs/folder3"), limit=1000)
    assert only and all(h.path.startswith("/docs/folder3/") for h in only)
    assert len(only) == len([h for h in everything if h.path.startswith("/docs/folder3/")])
    recent = _search(ft, "river", where=TextFilter(mtime_after_ns=290), limit=1000)
    sigs = ft.signatures()
    assert recent and all(sigs[h.path][1] >= 290 for h in recent)
    assert len(recent) == len([h for h in everything if sigs[h.path][1] >= 290])
    assert _search(ft, "river", where=TextFilter(kinds=frozenset({"pdf"}))) == []
    # a folder filter is a folder, not a prefix of names
    assert _search(ft, "river", where=TextFilter(folder="/docs/folder")) == []


def test_replace_move_remove_clear(tmp_path: Path) -> None:
    with FullText.open(tmp_path) as ft:
        ft.put(_doc("/a.txt", "first version mentions kiwi"))
        ft.put(_doc("/a.txt", "second version mentions mango"))
        assert len(ft) == 1
        assert _search(ft, "kiwi") == [] and _search(ft, "mango")[0].path == "/a.txt"
        assert ft.move("/a.txt", "/moved/b.txt")
        assert [h.path for h in _search(ft, "mango")] == ["/moved/b.txt"]
        assert _search(ft, "a.txt") == []
        assert [h.path for h in _search(ft, "moved")] == ["/moved/b.txt"]
        ft.put(_doc("/c.txt", "東京タワー"))
        assert ft.remove(["/moved/b.txt", "/nope"]) == 1
        assert _search(ft, "mango") == []
        assert ft.signatures() == {"/c.txt": (len("東京タワー"), 1)}
        ft.clear()
        assert len(ft) == 0 and _search(ft, "東京タワー") == []


def test_undecodable_path_round_trips(tmp_path: Path) -> None:
    odd = os.fsdecode(b"/data/caf\xe9-menu.txt")
    with FullText.open(tmp_path) as ft:
        ft.put(_doc(odd, "espresso ristretto"))
        assert [h.path for h in _search(ft, "ristretto")] == [odd]


def test_database_is_private(tmp_path: Path) -> None:
    with FullText.open(tmp_path) as ft:
        ft.put(_doc("/a.txt", "secret words"))
    mode = stat.S_IMODE((tmp_path / "text.db").stat().st_mode)
    assert mode & 0o077 == 0


def test_readers_see_commits_of_another_writer(tmp_path: Path) -> None:
    writer = FullText.open(tmp_path)
    reader = FullText.open(tmp_path, writable=False)
    writer.put(_doc("/a.txt", "blueberry"))
    assert [h.path for h in reader.search("blueberry")] == ["/a.txt"]
    with writer.batch():
        writer.put(_doc("/b.txt", "blueberry pie"))
        assert len(reader.search("blueberry")) == 1  # not committed yet
    assert len(reader.search("blueberry")) == 2
    writer.close()
    reader.close()


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from launcher.fulltext import FullText, TextDoc
    ft = FullText.open(sys.argv[1])
    batch = 0
    while True:
        with ft.batch():
            for i in range(50):
                ft.put(TextDoc(f"/f{batch}-{i}.txt", 1, batch, "text", f"batch{batch} word"))
        batch += 1
        print(batch, flush=True)
    """
)


def test_kill_9_leaves_whole_batches(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
            stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one batch committed
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with FullText.open(tmp_path) as ft:
            sigs = ft.signatures()
            batches: dict[int, int] = {}
            for _size, batch in sigs.values():
                batches[batch] = batches.get(batch, 0) + 1
            assert batches and set(batches.values()) == {50}, batches
            assert len(_search(ft, "word", limit=100_000)) == len(sigs)
            ft.clear()


def test_check_fts5_passes_here() -> None:
    check_fts5()
