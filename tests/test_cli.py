"""The command line as a new user meets it: first run, flags, messages, `--json` contracts."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from launcher import paths
from launcher.cli import main
from launcher.cli_index import TerminalProgress, progress_line
from launcher.extract import KINDS as FILE_KINDS
from launcher.indexer import Progress
from launcher.query import KINDS
from launcher.store import MANIFEST, default_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def models_env(tiny_models, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    return tiny_models


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- first run


def test_search_before_any_index_says_how_to_make_one_and_creates_nothing(
    models_env, capsys, isolated_home
) -> None:
    code, out, err = run(capsys, "search", "invoice")
    assert code == 1 and out == ""
    assert "no index yet" in err and "launcher.py index" in err
    assert not isolated_home.exists()  # no data folder, index folder or lock file


def test_the_page_says_how_to_index_when_the_index_is_empty() -> None:
    from launcher.query import IndexStatus
    from launcher.ui import render_status

    empty = render_status(IndexStatus(files=0, pending=0, failed=0))
    assert "nothing indexed yet" in empty and "launcher.py index" in empty
    one = render_status(IndexStatus(files=1, pending=0, failed=0))
    assert "1 file<" in one and "nothing indexed" not in one
    busy = render_status(IndexStatus(files=0, pending=0, failed=0, indexing=True))
    assert "nothing indexed" not in busy  # the first run is under way


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["search", "x", "--top", "0"], "--top"),
        (["search", "x", "--top", "-1"], "--top"),
        (["search", "x", "--min-score", "nan"], "--min-score"),
        (["search", "x", "--min-score", "inf"], "--min-score"),
        (["search", "x", "--min-score", "2"], "--min-score"),
        (["search", "x", "--threads", "0"], "--threads"),
        (["embed", "--text", "x", "--dims", "0"], "--dims"),
    ],
)
def test_out_of_range_flags_are_argparse_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


def test_kinds_are_one_vocabulary(models_env, tmp_path, capsys) -> None:
    """What `info` reports is what `--kind` accepts, and it filters by it."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "guide.md").write_text("# Gardening\n\nsoil, compost and seeds for the garden\n")
    (root / "notes.txt").write_text("gardening notes: soil and compost")
    assert run(capsys, "index", str(root), "--json")[0] == 0
    info = json.loads(run(capsys, "info", "--json")[1])
    assert set(info["kinds"]) == {"markdown", "text"}
    assert set(info["kinds"]) <= set(KINDS) and set(FILE_KINDS) <= set(KINDS)
    code, out, _ = run(capsys, "search", "gardening soil", "--kind", "markdown", "--json")
    assert code == 0
    assert [r["path"] for r in json.loads(out)["results"]] == [str(root / "guide.md")]
    code, out, _ = run(capsys, "search", "gardening soil", "--kind", "document", "--json")
    assert [r["kind"] for r in json.loads(out)["results"]] == ["markdown"]  # a group of kinds


# --------------------------------------------------------------------------- plurals


def test_one_file_and_one_result_are_singular(models_env, tmp_path, capsys) -> None:
    root = tmp_path / "one"
    root.mkdir()
    (root / "only.txt").write_text("the only note about lighthouses")
    code, _, err = run(capsys, "index", str(root))
    assert code == 0 and "1 file:" in err and "1 files" not in err
    code, _, err = run(capsys, "search", "lighthouses")
    assert code == 0 and "1 result in" in err and "1 results" not in err


# --------------------------------------------------------------------------- index --json


def test_index_json_reports_an_error(models_env, tmp_path, capsys) -> None:
    code, out, err = run(capsys, "index", str(tmp_path / "missing"), "--json")
    assert code == 1 and err.startswith("launcher: error: no such file or folder")
    data = json.loads(out)
    assert "no such file or folder" in data["error"] and data["interrupted"] is False
    assert {"added", "updated", "removed", "unchanged", "failed", "files"} <= set(data)


def test_index_json_reports_an_interrupted_run(models_env, tmp_path) -> None:
    """A real Ctrl+C (SIGINT) mid-run: `--json` still prints the counts so far."""
    root = tmp_path / "tree"
    root.mkdir()
    for i in range(400):
        words = " ".join(f"word{(i * 7 + j) % 97}" for j in range(60))
        (root / f"f{i:03}.txt").write_text(f"document {i}: {words}\n" * (1 + i % 4))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = "import sys; from launcher.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "index", str(root), "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (default_dir() / MANIFEST).exists():  # the files are queued: cards are next
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    data = json.loads(out)
    assert data["interrupted"] is True and data["files"] == 400
    assert data["added"] < 400  # cut short, with the counts so far
    assert "run `index` again" in err


# --------------------------------------------------------------------------- reranking


def test_a_document_the_reranker_cannot_read_is_shown_unscored(
    models_env, tmp_path, capsys, monkeypatch
) -> None:
    """Not a made-up score of 0.0: the hit keeps its place below the scored ones, says why."""
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "boats.txt").write_text("sailing boats in the harbour at dawn")
    pic = root / "harbour.png"
    Image.new("RGB", (64, 48), (20, 60, 200)).save(pic)
    assert run(capsys, "index", str(root), "--json")[0] == 0
    # Same size and mtime, other bytes: still "the file indexed" for the reads the server
    # allows (launcher/indexed.py), but the reranker, which reads pictures afresh, cannot.
    before = pic.stat()
    pic.write_bytes(b"x" * before.st_size)
    os.utime(pic, ns=(before.st_atime_ns, before.st_mtime_ns))
    monkeypatch.setenv("LAUNCHER_RERANKER_MMPROJ", str(models_env.mmproj))
    code, out, err = run(
        capsys, "search", "harbour boats", "--rerank", "--reranker", str(models_env.rank), "--json"
    )
    assert code == 0, err
    by_path = {r["path"]: r for r in json.loads(out)["results"]}
    assert "rerank_score" in by_path[str(root / "boats.txt")]
    bad = by_path[str(pic)]
    assert "rerank_score" not in bad and bad["rerank_error"]
    assert f"reranking {pic} failed" in err  # logged
    assert list(by_path)[-1] == str(pic)


# --------------------------------------------------------------------------- progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_has_one_unit_and_shows_where_it_is_in_a_file() -> None:
    slow = Progress("chunks", 3, 4, "/x/long.md", files_per_s=0.02, tokens_per_s=56, eta_s=33,
                    part=8, parts=40)  # fmt: skip
    fast = Progress("cards", 10, 40, "/x/a.txt", files_per_s=3.24, tokens_per_s=150, eta_s=9)
    for p in (slow, fast):
        line = progress_line(p, 0.0, 119)
        assert "files/s" not in line and "s/file" not in line and "tok/s" in line
    line = progress_line(slow, 75.0, 119)
    assert "3/4 files" in line and "56 tok/s" in line and "ETA 0:33" in line
    assert "long.md (part 9/40) 1:15" in line  # 75 s on this file so far
    scan = progress_line(Progress("scan", 12, 0, "/x/b.txt", found=1500), 0.0, 119)
    assert "1,500 files found" in scan and "12 to index" in scan
    name = "a-very-long-file-name-" * 10 + ".pdf"
    narrow = progress_line(Progress("cards", 1, 2, "/x/" + name, tokens_per_s=5), 3.0, 80)
    assert len(narrow) <= 80 and narrow.endswith(".pdf 0:03")


def test_progress_bar_draws_on_a_terminal_only_and_clears_itself() -> None:
    out = Tty()
    bar = TerminalProgress(out, tick=60)
    bar(Progress("cards", 1, 3, "/x/a.txt", tokens_per_s=10, eta_s=4))
    assert "1/3 files" in out.getvalue()
    bar.close()
    assert out.getvalue().endswith("\r\x1b[K")  # the line is erased, the cursor at its start
    quiet = io.StringIO()  # not a terminal: nothing drawn (logs and pipes stay clean)
    TerminalProgress(quiet)(Progress("cards", 1, 2, "/x/a.txt"))
    assert quiet.getvalue() == ""


def test_progress_never_counts_a_file_done_before_it_is(models_env, tmp_path) -> None:
    """Files found while scanning; a long file reports its chunks; `done` reaches `total`
    only when the last file is finished (no "24/24 ETA 0:00" while it still runs)."""
    from launcher.app import App

    root = tmp_path / "tree"
    root.mkdir()
    for i in range(5):
        (root / f"note{i}.txt").write_text(f"short note number {i} about boats")
    (root / "long.md").write_text("\n".join(f"line {i} about gardening" for i in range(400)))
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[index]\nchunk_tokens = 64\nchunk_overlap = 8\n")
    seen: list[Progress] = []
    with App.create() as app:
        store = app.open_store()
        indexer = app.indexer(store, on_progress=seen.append)
        report = indexer.run([str(root)])
        indexer.close()
        store.close()
    assert report.added == 6
    scan = [p for p in seen if p.phase == "scan"]
    assert [p.found for p in scan] == list(range(7))  # 0 as the scan starts
    work = [p for p in seen if p.phase in ("cards", "chunks")]
    assert work and all(p.done < p.total for p in work)  # reported while a file is open
    parts = [(p.part, p.parts) for p in work if p.phase == "chunks"]
    assert len(parts) > 1 and parts[0][1] > 4 and parts == sorted(parts)
    assert seen[-1].phase == "done"


def test_ctrl_c_clears_the_progress_bar_before_the_message(
    models_env, tmp_path, monkeypatch
) -> None:
    from launcher.indexer import Indexer

    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_text("alpha")

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(Indexer, "_embed_cards", interrupted)
    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["index", str(root)]) == 130
    text = err.getvalue()
    assert "\r\x1b[K" in text  # the bar was drawn
    assert "\r\x1b[Klauncher: interrupted" in text  # on a clean line, not after half a bar
