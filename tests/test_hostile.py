"""One bad file never stops a run (issue 15): hostile files generated here, the real engine
on tiny models, the CLI in process and in subprocesses (SIGINT, dropped privileges)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import hostile
import pytest
from PIL import Image
from waiting import wait_for

from launcher import extract as extract_mod
from launcher import paths
from launcher.app import App
from launcher.cli import main
from launcher.errors import StoreError
from launcher.extract import extract, sniff
from launcher.sample import make_pdf
from launcher.service import LocalService
from launcher.store import MANIFEST, Store, default_dir
from launcher.walk import IndexSettings

REPO = Path(__file__).resolve().parents[1]
INDEX_SCRIPT = "import sys; from launcher.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    return tiny_models


def run_json(capsys, *argv, code: int = 0) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == code
    return json.loads(capsys.readouterr().out)


def good_files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "notes": root / "notes.txt",
        "report": root / "report.pdf",
        "photo": root / "photo.png",
        "plan": root / "plan.docx",
    }
    files["notes"].write_text("meeting notes about the quarterly budget")
    files["report"].write_bytes(make_pdf([("Quarterly report: revenue grew " * 30, False)]))
    Image.new("RGB", (90, 60), (200, 30, 30)).save(files["photo"])
    files["plan"].write_bytes(hostile.docx(["The migration plan for the servers"] * 5))
    return files


# bad files: failed, each with a reason that says why
FAILING = {
    "crop-box.pdf": hostile.crop_box_pdf,
    "page-tree-loop.pdf": hostile.page_tree_loop_pdf,
    "truncated.pdf": hostile.truncated_pdf,
    "truncated-entry.docx": hostile.docx_truncated_entry,
    "huge-declared.png": hostile.png_huge_declared_size,
}
# hostile but valid: indexed, within bounds
INDEXED = {
    "blank-5000.pdf": hostile.blank_pages_pdf,
    "space-bomb.odt": hostile.odt_space_bomb,
    "gray16-be.tif": hostile.tiff_16bit_big_endian,
    "many-frames.gif": hostile.gif_many_frames,
}


def hostile_tree(root: Path) -> dict[str, Path]:
    good = good_files(root)
    bad = root / "bad"
    bad.mkdir()
    for name, make in {**FAILING, **INDEXED}.items():
        (bad / name).write_bytes(make())
    return good


def statuses() -> dict[str, tuple[str, str | None]]:
    store = Store.open(default_dir(), identity=None, dims=None, writable=False)
    try:
        return {os.path.basename(r.path): (r.status, r.reason) for r in store.files()}
    finally:
        store.close()


def test_hostile_corpus_only_the_bad_files_fail(models_env, tmp_path, capsys):
    root = tmp_path / "tree"
    good = hostile_tree(root)
    pytest.importorskip("av")
    hostile.write_mp4(tmp_path / "good.mp4")
    (root / "bad" / "lying-moov.mp4").write_bytes(
        hostile.mp4_lying_moov((tmp_path / "good.mp4").read_bytes())
    )
    report = run_json(capsys, "index", str(root))
    failed = {os.path.basename(e["path"]): e["reason"] for e in report["errors"]}
    # The mp4's lie is caught by FFmpeg (it reads the frames that are there, or refuses it):
    # either way the run goes on.
    failed.pop("lying-moov.mp4", None)
    assert set(failed) == set(FAILING)
    assert failed["crop-box.pdf"] == "ValueError: Crop exceeds page dimensions"
    assert failed["huge-declared.png"].startswith("image too large")
    assert all(failed.values())
    state = statuses()
    for name in [*INDEXED, *(p.name for p in good.values())]:
        assert state[name][0] == "ok", (name, state[name])
    # the traceback of the unexpected error is in the log file, not on the terminal
    log = (paths.log_dir() / "launcher.log").read_text()
    assert "Traceback" in log and "Crop exceeds page dimensions" in log and "crop-box.pdf" in log
    # every rerun, --retry-failed included, goes through too
    again = run_json(capsys, "index", "--retry-failed")
    assert {os.path.basename(e["path"]) for e in again["errors"]} - {"lying-moov.mp4"} == set(
        FAILING
    )


def test_a_vanished_or_unsniffable_file_is_not_the_runs_end(models_env, tmp_path):
    """A file deleted between the walk and its reading drops out of the index; the rest of
    the run is indexed (it used to end the run with "file vanished")."""
    root = tmp_path / "tree"
    root.mkdir()
    for i in range(12):
        (root / f"note{i:02}.txt").write_text(f"note number {i} about rivers and stones")
    victim = root / "note05.txt"

    def on_progress(p):
        if p.phase == "queued":  # after the walk, before any file is read
            victim.unlink()

    app = App.create()
    store = app.open_store()
    indexer = app.indexer(store, on_progress=on_progress)
    try:
        report = indexer.run([str(root)])
    finally:
        indexer.close()
        store.close()
        app.close()
    assert report.failed == 0 and report.errors == []
    state = statuses()
    assert "note05.txt" not in state
    assert {n for n, (s, _) in state.items() if s == "ok"} == {
        f"note{i:02}.txt" for i in range(12) if i != 5
    }


def _without_dac(argv: list[str]) -> list[str] | None:
    """``argv`` run as root without the capabilities that let root read any file."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0:
        return argv  # an ordinary user cannot read a mode-000 file anyway
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *argv]


def test_unreadable_file_fails_alone(models_env, tmp_path):
    root = tmp_path / "tree"
    good_files(root)
    locked = root / "locked.txt"
    locked.write_text("secret")
    locked.chmod(0)
    argv = _without_dac([sys.executable, "-c", INDEX_SCRIPT, "index", str(root), "--json"])
    if argv is None:
        pytest.skip("running as root without setpriv: root reads every file")
    probe = _without_dac(["cat", str(locked)])
    assert probe is not None
    if subprocess.run(probe, capture_output=True).returncode == 0:
        pytest.skip("cannot drop root's read-anything capability here")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(os.path.basename(e["path"]), e["reason"]) for e in report["errors"]] == [
        ("locked.txt", "permission denied")
    ]
    state = statuses()
    assert state["locked.txt"] == ("failed", "permission denied")
    assert {n for n, (s, _) in state.items() if s == "ok"} == {
        "notes.txt",
        "report.pdf",
        "photo.png",
        "plan.docx",
    }


def test_blank_pages_render_within_the_cap(tmp_path, monkeypatch):
    """5,000 blank pages: at most twice ``max_rendered_pages`` renders, blank ones included,
    each first at probe size (the old code rendered every page at full size)."""
    path = tmp_path / "blank.pdf"
    path.write_bytes(hostile.blank_pages_pdf(5000))
    sizes = []
    real = extract_mod._render

    def counting(page, longest):
        sizes.append(longest)
        return real(page, longest)

    monkeypatch.setattr(extract_mod, "_render", counting)
    settings = IndexSettings(max_rendered_pages=8)
    x = extract(path, sniff(path), settings)
    assert x.pages == 5000 and x.truncated
    assert len(sizes) <= 2 * settings.max_rendered_pages
    assert set(sizes) == {extract_mod.BLANK_PROBE_PX}  # blank: never rendered full size


def test_odt_space_bomb_stays_small(tmp_path):
    """A 400-byte ODT that asks for 300 million spaces (22 GB once): measured as the peak
    RSS (VmHWM, which starts afresh at exec, unlike ru_maxrss) of a process that extracts
    it."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc to read the peak RSS")
    path = tmp_path / "bomb.odt"
    path.write_bytes(hostile.odt_space_bomb())
    code = (
        "import re, sys; from launcher.extract import extract, sniff; "
        "x = extract(sys.argv[1], sniff(sys.argv[1])); "
        "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split()[-1]) / 1024  # kB
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"


def test_our_own_bugs_are_not_hidden_by_the_boundary(models_env, tmp_path, monkeypatch, capsys):
    """A programming error in launcher's code is raised under LAUNCHER_STRICT (the suite's
    setting); for users it is that file's failure, with its traceback in the log."""
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_text("some text")
    (root / "b.md").write_text("# other text")

    def buggy(doc):
        return extract_mod.preview_of(None)  # TypeError raised inside launcher's code

    monkeypatch.setitem(extract_mod._EXTRACTORS, "text", buggy)
    with pytest.raises(TypeError):
        main(["index", str(root), "--json"])
    monkeypatch.delenv("LAUNCHER_STRICT")
    report = run_json(capsys, "index", str(root))
    assert [(os.path.basename(e["path"]), e["reason"].split(":")[0]) for e in report["errors"]] == [
        ("a.txt", "TypeError")
    ]
    assert statuses()["b.md"][0] == "ok"


def test_watched_folder_receives_the_bad_files_and_keeps_indexing(models_env, tmp_path, capsys):
    root = tmp_path / "watched"
    root.mkdir()
    (root / "first.txt").write_text("the first note")
    run_json(capsys, "index", str(root))
    app = App.create()
    svc = LocalService(app, watch=True)
    try:
        assert svc.watcher is not None and svc.watcher.alive
        for name, make in {**FAILING, **INDEXED}.items():
            (root / name).write_bytes(make())
        (root / "after.txt").write_text("a note written after the bad files")

        def recorded() -> bool:  # present and done (new files are queued by name first)
            snap = svc.store.snapshot()
            names = {os.path.basename(r.path): r.status for r in snap.files}
            wanted = [*FAILING, *INDEXED, "after.txt"]
            return all(names.get(n, "queued") != "queued" for n in wanted) and not (
                svc.status().indexing
            )

        assert wait_for(recorded, timeout=60.0)
        snap = svc.store.snapshot()
        state = {os.path.basename(r.path): r.status for r in snap.files}
        assert {n for n, s in state.items() if s == "failed"} == set(FAILING)
        assert svc.watcher.alive and "watching" in svc.status().message
        later = root / "later.txt"
        later.write_text("the watcher still works")
        assert wait_for(lambda: svc.is_indexed(str(later)))
    finally:
        svc.close()
        app.close()


def test_parallel_pdf_thumbnails_while_indexing(models_env, tmp_path, capsys):
    """pdfium is not thread-safe: six parallel thumbnails a round, 100 rounds, while the
    indexer reads PDFs in its own thread. Used to crash the process (trap in libpdfium)."""
    root = tmp_path / "pdfs"
    root.mkdir()
    for i in range(6):
        pages = [(f"Scanned page {i}.{p}", True) for p in range(3)]
        (root / f"scan{i}.pdf").write_bytes(make_pdf(pages))
    run_json(capsys, "index", str(root))
    more = tmp_path / "more"
    more.mkdir()
    app = App.create()
    svc = LocalService(app, watch=False)
    stop = threading.Event()
    indexing_errors: list[BaseException] = []

    def keep_reading_pdfs() -> None:
        settings = IndexSettings(pdf_render_px=256)
        while not stop.is_set():
            for pdf in sorted(root.glob("*.pdf")):
                try:
                    extract(pdf, "pdf", settings)
                except BaseException as err:  # noqa: BLE001 - reported below
                    indexing_errors.append(err)
                    return

    reader = threading.Thread(target=keep_reading_pdfs)
    reader.start()
    try:
        pdfs = sorted(str(p) for p in root.glob("*.pdf"))
        for _ in range(100):
            results: list[bytes | None] = [None] * 6

            def thumb(k: int, out: list[bytes | None] = results) -> None:
                out[k] = svc.thumbnail(pdfs[k], 64)

            threads = [threading.Thread(target=thumb, args=(k,)) for k in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(r and r.startswith(b"\x89PNG") for r in results)  # no spurious 404s
    finally:
        stop.set()
        reader.join()
        svc.close()
        app.close()
    assert indexing_errors == []


# -- Ctrl+C -------------------------------------------------------------------------------


def _text_tree(root: Path) -> None:
    for i in range(3000):
        sub = root / f"d{i % 20}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"n{i}.txt").write_text(f"note {i} about rivers, stones and clouds\n" * 3)


def _picture_tree(root: Path) -> None:
    root.mkdir(parents=True)
    for i in range(2000):
        Image.new("RGB", (64 + i % 50, 64), (i % 256, 90, 160)).save(root / f"p{i}.png")


def _pdf_tree(root: Path) -> None:
    root.mkdir(parents=True)
    for i in range(150):
        pages = [(f"scan {i} page {p}", True) for p in range(4)]
        (root / f"s{i}.pdf").write_bytes(make_pdf(pages))


def _embedding_started() -> bool:
    if not (default_dir() / MANIFEST).exists():
        return False
    try:
        with Store.open(default_dir(), identity=None, dims=None, writable=False) as store:
            return any(rec.status != "queued" for rec in store.files())
    except StoreError:  # (not there yet)
        return False


@pytest.mark.parametrize("make_tree", [_text_tree, _picture_tree, _pdf_tree])
def test_ctrl_c_stops_every_phase(models_env, tmp_path, make_tree):
    root = tmp_path / "tree"
    make_tree(root)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", INDEX_SCRIPT, "index", str(root), "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Interrupted once the model is at work: the first embedded files are committed
        # (the first commit only names them; the words tier runs without the model).
        assert wait_for(_embedding_started, timeout=120)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # ~2 s; margin for a loaded CI machine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    report = json.loads(out)
    assert report["interrupted"] is True and report["files"] > 0


# -- the watcher never dies ---------------------------------------------------------------


def test_watcher_retries_with_backoff_then_gives_up_on_a_path(tmp_path, monkeypatch):
    """A batch that raises (any exception) is kept and retried; a path that keeps failing is
    handed to ``on_give_up`` and leaves the queue; the thread lives on and says so."""
    from launcher import watch

    monkeypatch.setattr(watch, "MAX_BACKOFF", 0.2)
    root = tmp_path / "w"
    root.mkdir()
    calls: list[list[str]] = []
    given_up: list[tuple[str, str]] = []
    bad = str(root / "bad.txt")

    def on_changes(paths: list[str]) -> None:
        calls.append(sorted(paths))
        if bad in paths:
            raise RuntimeError("pdfium exploded")

    w = watch.Watcher(
        [str(root)], on_changes, debounce=0.05, max_delay=0.1,
        on_give_up=lambda p, r: given_up.append((p, r)),
    )  # fmt: skip
    w.start()
    try:
        (root / "bad.txt").write_text("x")
        assert wait_for(lambda: "retrying" in w.status, timeout=10)
        assert "RuntimeError: pdfium exploded" in w.status
        assert wait_for(lambda: given_up, timeout=20)
        assert given_up[0][0] == bad and "pdfium exploded" in given_up[0][1]
        n = len(calls)
        (root / "good.txt").write_text("y")
        assert wait_for(lambda: any(c == [str(root / "good.txt")] for c in calls[n:]))
        assert w.alive and w.status == w.message and "watching" in w.status
    finally:
        w.stop()
    assert not w.alive and w.status.startswith("not watching")


def test_watcher_keeps_a_path_it_cannot_record(tmp_path, monkeypatch):
    """When recording the failure fails too (a full disk), the trouble is not the file: it
    stays queued and is retried, never silently dropped."""
    from launcher import watch

    monkeypatch.setattr(watch, "MAX_BACKOFF", 0.1)
    root = tmp_path / "w"
    root.mkdir()
    calls: list[list[str]] = []

    def on_changes(paths: list[str]) -> None:
        calls.append(paths)
        raise OSError(28, "No space left on device")

    def on_give_up(path: str, reason: str) -> None:
        raise OSError(28, "No space left on device")

    w = watch.Watcher([str(root)], on_changes, debounce=0.05, max_delay=0.05, on_give_up=on_give_up)
    w.start()
    try:
        (root / "a.txt").write_text("x")
        assert wait_for(lambda: len(calls) >= watch.GIVE_UP + 3, timeout=20)
        assert w.alive and "No space left" in w.status
    finally:
        w.stop()


def test_update_paths_finishes_files_left_pending(models_env, tmp_path):
    """15.8: a watcher batch cut short after the cards leaves a file in pending_chunks; the
    next update of that (unchanged) path embeds its chunks."""
    root = tmp_path / "tree"
    root.mkdir()
    long = root / "long.txt"
    long.write_text("\n".join(f"line {i} about the river and its stones" for i in range(120)))
    app = App.create()
    store = app.open_store()
    store.set_roots([str(root)])
    try:
        cancel = threading.Event()

        def stop_in_the_chunks(p):
            if p.phase == "chunks":
                cancel.set()

        first = app.indexer(store, on_progress=stop_in_the_chunks, cancel=cancel)
        first.update_paths([str(long)])
        first.close()
        assert store.get(str(long)).status == "pending_chunks"
        second = app.indexer(store)
        second.update_paths([str(long)])
        second.close()
        rec = store.get(str(long))
        assert rec.status == "ok" and len(rec.rows) > 1
    finally:
        store.close()
        app.close()


# -- time budget ----------------------------------------------------------------------------


def _slow_text(seconds: float):
    def extractor(doc):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            doc.budget.check()
            time.sleep(0.02)
        return extract_mod._text(doc)

    return extractor


def test_time_budget_then_retry_failed_lifts_it(models_env, tmp_path, monkeypatch, capsys):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "slow.txt").write_text("a file that takes long to read")
    (root / "quick.md").write_text("# a quick one")
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("[index]\nmax_seconds_per_file = 0.3\n")
    monkeypatch.setitem(extract_mod._EXTRACTORS, "text", _slow_text(1.5))
    report = run_json(capsys, "index", str(root))
    assert [(os.path.basename(e["path"]), e["reason"]) for e in report["errors"]] == [
        ("slow.txt", "too slow (over 0.3 s to read)")
    ]
    assert run_json(capsys, "index")["failed"] == 0  # unchanged: not tried again
    again = run_json(capsys, "index", "--retry-failed")  # without the time limit
    assert again["failed"] == 0 and again["updated"] == 1
    assert statuses()["slow.txt"] == ("ok", None)


def test_a_hung_extraction_is_abandoned(models_env, tmp_path, monkeypatch, capsys):
    """An extraction that never checks its budget (stuck in native code) is given up after
    budget + grace, and the files after it are read by a fresh worker."""
    from launcher import indexer as indexer_mod

    monkeypatch.setattr(indexer_mod, "ABANDON_GRACE", 0.3)
    release = threading.Event()

    def hung(doc):
        release.wait(60)
        return extract_mod._text(doc)

    root = tmp_path / "tree"
    root.mkdir()
    (root / "hung.txt").write_text("stuck")
    for i in range(6):
        (root / f"ok{i}.md").write_text(f"# fine {i}")
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("[index]\nmax_seconds_per_file = 0.3\n")
    monkeypatch.setitem(extract_mod._EXTRACTORS, "text", hung)
    try:
        report = run_json(capsys, "index", str(root))
    finally:
        release.set()
    assert [(os.path.basename(e["path"]), e["reason"]) for e in report["errors"]] == [
        ("hung.txt", "too slow (over 0.3 s to read)")
    ]
    state = statuses()
    assert all(state[f"ok{i}.md"][0] == "ok" for i in range(6))


# -- smaller items --------------------------------------------------------------------------


def test_pdf_failure_reasons_come_from_the_file_itself(tmp_path):
    """15.9: pdfium's last error is global; reasons must not depend on the file before."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <"
        + b"11" * 32
        + b"> /U <"
        + b"22" * 32
        + b"> /P -4 >>",
    ]
    locked = hostile.raw_pdf(objects).replace(
        b"/Root 1 0 R >>", b"/Root 1 0 R /Encrypt 4 0 R /ID [<00112233><00112233>] >>"
    )
    (tmp_path / "locked.pdf").write_bytes(locked)
    (tmp_path / "junk.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 2)
    for name in ["locked.pdf", "junk.pdf", "locked.pdf", "junk.pdf"]:
        with pytest.raises(extract_mod.ExtractError) as err:
            extract(tmp_path / name, "pdf")
        expected = "password-protected PDF" if name == "locked.pdf" else "corrupt PDF"
        assert err.value.reason == expected


def test_index_json_on_error_and_paths_with_a_newline(models_env, tmp_path, capsys):
    capsys.readouterr()
    assert main(["index", str(tmp_path / "missing"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert "no such file or folder" in out["error"]
    root = tmp_path / "tree"
    root.mkdir()
    odd = root / "two\nlines.txt"
    odd.write_text("a zebra crossing")
    run_json(capsys, "index", str(root))
    capsys.readouterr()
    assert main(["search", "zebra", "--paths-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(root) + "/two\\nlines.txt"]
    assert main(["search", "zebra", "--null"]) == 0
    assert capsys.readouterr().out == str(odd) + "\0"


def test_16_bit_big_endian_tiff_is_indexed_and_searchable(models_env, tmp_path, capsys):
    """15.7: Pillow's ``point`` refuses I;16B; such scans were reported corrupt."""
    root = tmp_path / "scans"
    root.mkdir()
    tif = root / "scan.tif"
    tif.write_bytes(hostile.tiff_16bit_big_endian())
    x = extract(tif, sniff(tif))
    assert x.card.image is not None and x.card.image.mode == "RGB"
    lo, hi = x.card.image.convert("L").getextrema()
    assert hi - lo > 200  # the gradient survives: scaled, not clipped to white
    assert run_json(capsys, "index", str(root))["failed"] == 0
    out = run_json(capsys, "search", "--image", str(tif))
    assert out["results"][0]["path"] == str(tif)


def test_ctrl_c_inside_a_llama_log_callback_is_not_lost(monkeypatch):
    """A KeyboardInterrupt raised while llama.cpp's log callback runs (a ctypes callback:
    ctypes drops exceptions there) is raised again once the callback has returned."""
    import ctypes

    from launcher import native

    class InterruptedAppend:
        def append(self, line: str) -> None:
            raise KeyboardInterrupt  # as if Ctrl+C arrived inside the callback

    monkeypatch.setattr(native, "_LOG_LINES", InterruptedAppend())
    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    callback = callback_type(native._on_log)
    with pytest.raises(KeyboardInterrupt):
        callback(2, b"a log line\n", None)  # through ctypes, like llama.cpp calls it
        for _ in range(100):
            time.sleep(0.01)  # the interrupt is delivered at the next bytecode
