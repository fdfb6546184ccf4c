"""(scalep) The index at home-folder scale, seen by real processes (issue 11, item 5).

For each size (10k and 100k files by default): a tree of real small text files on disk and
an index of them made of synthetic records (three rows of random vectors per file, in the
tiny test model's dims, written through the ``Store`` API, plus each file's words in the
full-text index), with the files' real size and mtime, so a re-scan finds nothing to do.
Then, each in a cold process: ``info`` and ``search`` until the first answer (and the part
of it that opens the index), ``launch`` until the first query's results show in a browser,
``index`` with nothing changed (checked: 0 added, updated, removed), and the index's size.

    python bench/run.py --only scalep [--scalep-sizes 10000,100000]
    python bench/scalep.py 10000            # the section alone, printed

The processes run the tiny generated model (``launcher.synth``), not the 2B twin: these rows
measure the index, not the model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_FILE = 3
FILES_PER_FOLDER = 100
TARGETS = {
    "open_100k": "<= 1 s of opening at 100k",
    "launch_100k": "<= 10 s at 100k",
    "rescan_100k": "<= 30 s at 100k",
}
# (what the synthetic index is made of)
WORDS = ("harbor", "lantern", "meadow", "copper", "violet", "engine", "garden", "orbit",
         "quartz", "ribbon", "walnut", "glacier", "invoice", "budget")  # fmt: skip


def tiny_model(folder: Path) -> Path:
    from launcher import synth

    path = folder / "tiny-embedding.gguf"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        synth.write_text_model(path, role="embedding", seed=11)
    return path


def make_tree(root: Path, files: int) -> None:
    """``files`` small text files, ``FILES_PER_FOLDER`` to a folder."""
    for i in range(files):
        folder = root / f"d{i // FILES_PER_FOLDER:05d}"
        if i % FILES_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(6))
        (folder / f"note{i:07d}.txt").write_text(f"note {i}: {words}\n")


def build_index(root: Path, seed: int = 7) -> int:
    """Runs in a process with LAUNCHER_HOME and LAUNCHER_MODEL set: synthetic records for
    every file under ``root`` (their real size and mtime), committed, plus their words."""
    import numpy as np

    from launcher.app import App
    from launcher.extract import Locator, Piece
    from launcher.fulltext import TextDoc
    from launcher.store import RACY_NS, FileRecord

    paths = sorted(str(p) for p in root.rglob("*.txt"))
    newest = max(os.stat(p).st_mtime_ns for p in paths)
    while time.time_ns() - newest < RACY_NS + 100_000_000:
        time.sleep(0.1)  # records made within 2 s of a file's mtime count as changed
    app = App.create()
    store = app.open_store(writable=True)
    store.commit_every_files = 10**9
    store.commit_every_seconds = 1e9
    text = app.open_text(store)
    assert text is not None
    store.set_roots([str(root)])
    rng = np.random.default_rng(seed)
    block = 4096
    for start in range(0, len(paths), block):
        part = paths[start : start + block]
        vectors = rng.standard_normal((len(part) * ROWS_PER_FILE, store.dims)).astype(np.float32)
        with text.batch():
            for i, path in enumerate(part):
                st = os.stat(path)
                with open(path, encoding="utf-8") as fh:
                    body = fh.read()
                pieces = [
                    Piece("card", body, locator=Locator(line_start=1, line_end=1)),
                    Piece("chunk", body, locator=Locator(line_start=1, line_end=1)),
                    Piece("chunk", body, locator=Locator(line_start=1, line_end=1)),
                ][:ROWS_PER_FILE]
                record = FileRecord(
                    path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, kind="text",
                    status="ok", content_hash=f"{start + i:064x}", preview=body[:80],
                )  # fmt: skip
                rows = vectors[i * ROWS_PER_FILE : (i + 1) * ROWS_PER_FILE]
                store.put(record, pieces, rows)
                text.put(TextDoc(path, st.st_size, st.st_mtime_ns, "text", body))
    store.commit()
    n = len(store)
    text.close()
    store.close()
    app.close()
    return n


def _open_seconds(env: dict[str, str]) -> float:
    """Opening the index in a cold process, as ``info`` and ``search`` do (the model file's
    identity, the store read for searching): the part of their time the index costs."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from launcher.app import App\n"
        "app = App.create(); s = app.open_store(writable=False); snap = s.snapshot()\n"
        "snap.matrix(); len(snap)\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, text=True,
                         capture_output=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def _cli(env: dict[str, str], *argv: str) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "launcher.py"), *argv], env=env,
                         text=True, capture_output=True, timeout=1800)  # fmt: skip
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()[-500:]}")
    return seconds, out.stdout


def _launch_first_results(env: dict[str, str], home: Path, query: str) -> float | str:
    """Seconds from starting ``launch`` (watching) until a query typed in the page shows
    results; a reason when it cannot be measured."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return "skipped: chromium not installed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "launcher.py"), "launch", "--no-browser", "--hotkey",
           "off", "--port", str(port)]  # fmt: skip
    ui = home / "data" / "ui.json"
    ui.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        key = None
        while key is None:
            if proc.poll() is not None or time.perf_counter() - started > 120:
                return "failed: " + (proc.stderr.read().decode(errors="replace")[-300:]
                                     if proc.stderr else "")  # fmt: skip
            try:
                key = json.loads(ui.read_text())["key"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        from playwright.sync_api import sync_playwright

        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update"]  # fmt: skip
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=args, headless=True)
            page = browser.new_page()
            page.set_default_timeout(300_000)
            page.goto(f"http://127.0.0.1:{port}/?key={key}")
            page.wait_for_selector("#lq input, #lq textarea")
            page.locator("#lq input, #lq textarea").first.type(query, delay=10)
            page.wait_for_selector("#lresults .lrow")
            first = time.perf_counter() - started
            browser.close()
        return first
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_scalep(work: Path, sizes: list[int], add: Callable[..., None]) -> None:
    """The rows, through ``add(key, what, value, target="", ok=None, note="")``."""
    model = tiny_model(work / "scalep-models")
    for n in sizes:
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        home = work / f"home-scalep-{label}"
        tree = work / f"tree-scalep-{label}"
        env = {**os.environ, "LAUNCHER_HOME": str(home), "LAUNCHER_MODEL": str(model),
               "LAUNCHER_MMPROJ": "none", "LAUNCHER_RERANKER": "none",
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        t = time.perf_counter()
        make_tree(tree, n)
        made = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build", str(tree)], env=env, check=True)
        built = time.perf_counter() - t
        note = f"synthetic records ({ROWS_PER_FILE} rows a file), real files on disk"
        print(f"  scalep {label}: tree written in {made:.0f} s, index built in {built:.0f} s",
              flush=True)  # fmt: skip
        opening = sorted(_open_seconds(env) for _ in range(3))[1]
        info, out = _cli(env, "info", "--json")
        assert json.loads(out)["files"] == n, out[:300]
        big = n >= 100_000
        add("sp", f"`info` from a cold process until its answer, {label} files",
            f"{info:.2f} s", note=note)  # fmt: skip
        add("sp", f"opening the index in a cold process (store + vectors), {label} files",
            f"{opening:.2f} s", TARGETS["open_100k"] if big else "",
            (opening <= 1.0) if n == 100_000 else None,
            "part of the `info`/`search` time")  # fmt: skip
        search, out = _cli(env, "search", "harbor lantern", "--json", "--top", "5")
        assert json.loads(out)["results"], out[:300]
        add("sp", f"`search` from a cold process until its answer, {label} files",
            f"{search:.2f} s", note="the tiny model: loading it is ~0.1 s")  # fmt: skip
        first = _launch_first_results(env, home, "harbor lantern")
        if isinstance(first, str):
            add("sp", f"`launch` until the first query's results, {label} files", first)
        else:
            add("sp", f"`launch` until the first query's results show (browser), {label} files",
                f"{first:.1f} s", TARGETS["launch_100k"] if big else "",
                (first <= 10) if n == 100_000 else None, "watching the tree")  # fmt: skip
        rescan, out = _cli(env, "index", "--json")
        report = json.loads(out)
        changed = report["added"] + report["updated"] + report["removed"] + report["failed"]
        add("sp", f"`index` with nothing changed (cold process), {label} real files",
            f"{rescan:.1f} s", TARGETS["rescan_100k"] if big else "",
            (rescan <= 30) if n == 100_000 else None,
            f"{changed} changed, {report['unchanged']:,} unchanged; the run itself "
            f"{report['seconds']:.1f} s")  # fmt: skip
        assert changed == 0 and report["unchanged"] == n, report
        index_dir = home / "data" / "index"
        text_db = index_dir / "text.db"
        words = text_db.stat().st_size if text_db.exists() else 0
        total = disk_bytes(index_dir)
        add("sp", f"the index on disk, {label} files", f"{total / 1e6:.1f} MB",
            note=f"text.db {words / 1e6:.1f} MB of it; the files themselves "
            f"{disk_bytes(tree) / 1e6:.1f} MB")  # fmt: skip
        shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--build"]:
        print(f"  built {build_index(Path(argv[1])):,} records", flush=True)
        return 0
    import tempfile

    sizes = [int(x) for x in (argv[0] if argv else "10000").split(",")]
    work = Path(tempfile.mkdtemp(prefix="launcher-scalep-"))
    try:

        def add(key: str, what: str, value: str, target: str = "", ok: Any = None,
                note: str = "") -> None:  # fmt: skip
            mark = "" if ok is None else (" ✓" if ok else " ✗")
            print(f"  {key:4} {what:70} {value:>10}{mark}  {target}  {note}", flush=True)

        bench_scalep(work, sizes, add)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
