"""Indexing end to end: real files, the real engine on tiny models, the CLI's JSON."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher import paths
from launcher.cli import main
from launcher.store import MANIFEST, Store, default_dir


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    return tiny_models


def run_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def write_config(text: str) -> None:
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(text)


def messy_tree(root: Path) -> dict[str, Path]:
    """Good files mixed with bad ones, as in the issue's 'done when'."""
    root.mkdir()
    good = {
        "notes": root / "notes.txt",
        "code": root / "src" / "main.py",
        "md": root / "docs" / "guide.md",
        "png": root / "pics" / "red.png",
        "empty": root / "empty.txt",
        "latin": Path(os.fsdecode(os.fsencode(str(root)) + b"/caf\xe9.txt")),
    }
    good["notes"].write_text("meeting notes about the quarterly budget")
    good["code"].parent.mkdir()
    good["code"].write_text("def add(a, b):\n    return a + b\n")
    good["md"].parent.mkdir()
    good["md"].write_text("\n".join(f"line {i} about gardening and soil" for i in range(200)))
    good["png"].parent.mkdir()
    Image.new("RGB", (90, 60), (200, 30, 30)).save(good["png"])
    good["empty"].write_bytes(b"")
    with open(os.fsencode(str(good["latin"])), "wb") as fh:
        fh.write(b"a file with a latin-1 name")
    buf = (root / "pics" / "red.png").read_bytes()
    (root / "pics" / "truncated.png").write_bytes(buf[: len(buf) // 2])
    Image.new("RGB", (300, 300), (1, 2, 3)).save(root / "pics" / "big.jpg")
    data = (root / "pics" / "big.jpg").read_bytes()
    (root / "pics" / "cut.jpg").write_bytes(data[:200])
    (root / "pics" / "fake.jpg").write_bytes(bytes(range(256)) * 8)
    (root / "junk.bin").write_bytes(os.urandom(4096))
    (root / "nul.txt").write_bytes(b"text\x00with\x00nuls")
    (root / "broken").symlink_to(root / "nowhere")
    (root / "loop").symlink_to(root)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1")
    return good


# Named like files we read but damaged: failed. A binary format we do not read: skipped.
BAD = {"truncated.png", "cut.jpg", "fake.jpg", "nul.txt"}
UNSUPPORTED = {"junk.bin"}


def test_messy_tree_reports_exactly_the_bad_files(models_env, tmp_path, capsys):
    root = tmp_path / "tree"
    good = messy_tree(root)
    report = run_json(capsys, "index", str(root))
    failed = {os.path.basename(e["path"]) for e in report["errors"]}
    assert failed == BAD
    assert report["failed"] == len(BAD)
    assert report["unsupported"] == len(UNSUPPORTED)
    skipped = {os.path.basename(e["path"]): e["reason"] for e in report["skipped"]}
    assert skipped["junk.bin"].startswith("unsupported format")
    assert report["files"] == len(good) + len(BAD) + len(UNSUPPORTED) + 1  # + big.jpg
    info = run_json(capsys, "info")
    paths_in_index = {e["path"] for e in info["errors"]}
    assert {os.path.basename(p) for p in paths_in_index} == BAD
    assert {os.path.basename(e["path"]) for e in info["skipped"]} == UNSUPPORTED
    store = Store.open(default_dir(), identity=None, dims=None, writable=False)
    indexed = {r.path for r in store.files()}
    store.close()
    assert str(root / "junk.bin") in indexed  # findable by its name
    assert str(good["latin"]) in indexed
    assert not any("node_modules" in p or "/.git/" in p for p in indexed)
    # a bad file never shifts vectors: every ok file has its own rows, distinct per file
    snap = Store.open(default_dir(), identity=None, dims=None, writable=False).snapshot()
    owners = [snap.row_owner(i)[0].path for i in range(len(snap))]
    assert len(owners) == sum(len(r.rows) for r in snap.files)


def test_rerun_embeds_nothing_and_changes_show_up(models_env, tmp_path, capsys):
    root = tmp_path / "tree"
    good = messy_tree(root)
    run_json(capsys, "index", str(root))
    again = run_json(capsys, "index")
    assert again["added"] == again["updated"] == again["removed"] == 0
    assert again["tokens"] == 0 and again["failed"] == 0
    time.sleep(0.01)
    good["notes"].write_text("meeting notes: the budget was approved")
    good["code"].rename(root / "src" / "renamed.py")
    good["md"].unlink()
    changed = run_json(capsys, "index")
    assert changed["updated"] == 1  # notes
    assert changed["added"] == 1 and changed["reused"] == 1  # the rename: no model run
    assert changed["removed"] == 2  # guide.md and the old name of main.py
    store = Store.open(default_dir(), identity=None, dims=None, writable=False)
    names = {os.path.basename(r.path) for r in store.files()}
    store.close()
    assert "renamed.py" in names and "main.py" not in names and "guide.md" not in names


def test_retry_failed(models_env, tmp_path, capsys):
    root = tmp_path / "tree"
    messy_tree(root)
    run_json(capsys, "index", str(root))
    assert run_json(capsys, "index")["failed"] == 0
    assert run_json(capsys, "index", "--retry-failed")["failed"] == len(BAD)


def test_long_file_is_one_result_with_its_best_chunk(models_env, tmp_path, capsys):
    root = tmp_path / "tree"
    root.mkdir()
    lines = [f"line {i}: the weather was fine and nothing happened" for i in range(400)]
    lines[250] = "line 250: the secret launch code is ZEBRA-4711 written here"
    (root / "long.txt").write_text("\n".join(lines))
    (root / "other.txt").write_text("nothing to see")
    run_json(capsys, "index", str(root))
    out = run_json(capsys, "search", "ZEBRA-4711")
    results = out["results"]
    assert [r["path"] for r in results].count(str(root / "long.txt")) == 1
    top = results[0]
    assert top["path"] == str(root / "long.txt") and top["exact"] is True
    assert top["lines"][0] <= 251 <= top["lines"][1]
    assert "ZEBRA-4711" in top["snippet"]


def test_model_change_needs_rebuild(models_env, tmp_path, capsys, monkeypatch):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_text("alpha")
    run_json(capsys, "index", str(root))
    other = tmp_path / "other.gguf"
    from launcher import synth

    synth.write_text_model(other, role="embedding", seed=99)
    monkeypatch.setenv("LAUNCHER_MODEL", str(other))
    assert main(["index"]) == 1
    assert "--rebuild" in capsys.readouterr().err
    report = run_json(capsys, "index", "--rebuild")
    assert report["added"] == 1


def test_remove_and_clear(models_env, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "f.txt").write_text(f"file in {folder.name}")
    run_json(capsys, "index", str(a), str(b))
    assert main(["remove", str(a)]) == 0
    info = run_json(capsys, "info")
    assert info["roots"] == [str(b)] and info["files"] == 1
    assert main(["clear", "--yes"]) == 0
    assert not default_dir().exists()
    assert run_json(capsys, "info")["exists"] is False


def test_damaged_catalog_falls_back_to_the_copy_of_the_last_run(models_env, tmp_path, capsys):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_text("alpha")
    run_json(capsys, "index", str(root))  # ends with a copy of the catalog
    with Store.open(default_dir(), identity=None, dims=None) as store:
        store.queue(str(root / "later.txt"), 1, 1)  # committed after the copy
        store.commit()
    (default_dir() / "catalog.db").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (default_dir() / f"catalog.db{suffix}").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["info", "--json"]) == 0  # restored by the first command that opens it
    out, err = capsys.readouterr()
    assert "copy made at the end of the last run" in err
    info = json.loads(out)
    assert (info["files"], info["queued"], info["vectors"]) == (1, 0, 1)
    (root / "b.txt").write_text("beta")
    report = run_json(capsys, "index")
    assert report["added"] == 1 and report["unchanged"] == 1
    info = run_json(capsys, "info")
    assert (info["files"], info["queued"], info["vectors"]) == (2, 0, 2)


INDEX_SCRIPT = "import sys; from launcher.cli import main; sys.exit(main(sys.argv[1:]))"


def _index(env, root, **kw):
    return subprocess.Popen(
        [sys.executable, "-c", INDEX_SCRIPT, "index", str(root), "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
    )  # fmt: skip


def test_kill_9_mid_run_loses_nothing_committed(models_env, tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    rng = random.Random(7)
    for i in range(240):
        sub = root / f"d{i % 7}"
        sub.mkdir(exist_ok=True)
        words = " ".join(
            rng.choice(["apple", "river", "stone", "cloud", "paper"]) for _ in range(30)
        )
        (sub / f"f{i}.txt").write_text(f"document {i}: {words}\n" * (1 + i % 5))
    write_config("[index]\ncommit_every_files = 7\ncommit_every_seconds = 0.2\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    committed = 0
    for _ in range(4):  # a full run takes ~7 s here: each kill lands mid-run
        proc = _index(env, root)
        time.sleep(rng.uniform(1.0, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # every kill leaves an index that loads, each row owned by exactly one file
        if not (default_dir() / MANIFEST).exists():
            continue
        store = Store.open(default_dir(), identity=None, dims=None, writable=False)
        snap = store.snapshot()
        store.close()
        owners = [snap.row_owner(i)[0].path for i in range(len(snap))]
        assert len(owners) == sum(len(r.rows) for r in snap.files)
        assert len(snap.files) >= committed  # what was committed is never lost
        committed = len(snap.files)
    assert committed > 0
    done = _index(env, root)
    out, err = done.communicate(timeout=900)  # minutes on a loaded 2-core machine
    assert done.returncode == 0, err
    store = Store.open(default_dir(), identity=None, dims=None, writable=False)
    files = store.files()
    snap = store.snapshot()
    store.close()
    on_disk = {str(p) for p in root.rglob("*.txt")}
    assert sorted(r.path for r in files) == sorted(on_disk)  # exactly the files, each once
    assert [(r.path, r.status, len(r.rows)) for r in files if r.status != "ok" or not r.rows] == []
    m = snap.matrix().astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=2e-3)


def test_image_profile_sets_the_pixel_budget_and_needs_a_rebuild(models_env, tmp_path, capsys):
    root = tmp_path / "pics"
    root.mkdir()
    Image.new("RGB", (900, 700), (10, 200, 30)).save(root / "big.png")
    write_config('[index]\nimage_profile = "fast"\n')
    run_json(capsys, "index", str(root))
    assert run_json(capsys, "info")["model"]["max_pixels"] == 64 * 32 * 32
    write_config('[index]\nimage_profile = "max"\n')
    assert main(["index"]) == 1
    assert "max_pixels" in capsys.readouterr().err
    assert run_json(capsys, "index", "--rebuild")["added"] == 1
    assert run_json(capsys, "info")["model"]["max_pixels"] == 1800 * 32 * 32
    write_config('[index]\nimage_profile = "huge"\n')
    assert main(["index"]) == 1
    assert "image_profile must be one of fast, balanced, max" in capsys.readouterr().err


def test_a_video_is_indexed_by_its_frames(models_env, tmp_path, capsys):
    av = pytest.importorskip("av")
    root = tmp_path / "vids"
    root.mkdir()
    out = av.open(str(root / "clip.mp4"), "w")
    stream = out.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
    for i in range(40):
        arr = np.full((128, 160, 3), (i * 6) % 255, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    report = run_json(capsys, "index", str(root))
    assert report["added"] == 1 and report["failed"] == 0
    info = run_json(capsys, "info")
    assert info["kinds"] == {"video": 1} and info["vectors"] == 4  # 4 frames by default
    hits = run_json(capsys, "search", "a video", "--kind", "video")["results"]
    assert hits[0]["path"].endswith("clip.mp4")


def test_new_files_are_findable_by_name_before_they_are_embedded(models_env, tmp_path, capsys):
    """A run first commits every new file by name (status "queued"). Cut short right
    there, it leaves them findable by name with no vectors; the next run embeds them, and
    counts them as added."""
    import threading

    from launcher.app import App

    root = tmp_path / "docs"
    root.mkdir()
    for i in range(6):
        (root / f"report-{i}.txt").write_text(f"quarterly numbers {i}")
    (root / "zebra-notes.md").write_text("stripes and more stripes")
    cancel = threading.Event()
    phases: list[str] = []

    def progress(p) -> None:  # type: ignore[no-untyped-def]
        phases.append(p.phase)
        if p.phase == "queued":
            cancel.set()  # stop before any file is embedded

    with App.create() as app:
        store = app.open_store()
        indexer = app.indexer(store, on_progress=progress, cancel=cancel)
        report = indexer.run([str(root)])
        indexer.close()
        store.close()
    assert report.interrupted and report.added == 0 and "cards" not in phases
    info = run_json(capsys, "info")
    assert (info["files"], info["queued"], info["vectors"], info["kinds"]) == (7, 7, 0, {})
    out = run_json(capsys, "search", "zebra")
    assert [Path(r["path"]).name for r in out["results"]] == ["zebra-notes.md"]
    assert out["results"][0]["queued"] is True
    rep = run_json(capsys, "index", str(root))
    assert (rep["added"], rep["updated"], rep["unchanged"]) == (7, 0, 0)
    info = run_json(capsys, "info")
    assert info["queued"] == 0 and info["vectors"] >= 7
    hit = run_json(capsys, "search", "zebra")["results"][0]
    assert Path(hit["path"]).name == "zebra-notes.md" and "queued" not in hit
    # a changed file keeps its old vectors until re-embedded: it is not queued again
    (root / "zebra-notes.md").write_text("stripes, now with spots")
    phases.clear()
    with App.create() as app:
        store = app.open_store()
        indexer = app.indexer(store, on_progress=lambda p: phases.append(p.phase))
        report = indexer.run([str(root)])
        indexer.close()
        store.close()
    assert report.updated == 1 and "queued" not in phases and "cards" in phases
