"""The search page in Chromium over the real back end: an index built with the tiny models,
the real engine, the live watcher. Only the final OS call of Open is replaced."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_ui import CHROMIUM as CHROMIUM
from test_ui import CHROMIUM_ARGS as ARGS

from launcher import opener, ui
from launcher.app import App
from launcher.cli import main
from launcher.service import LocalService


@pytest.fixture
def live(tmp_path, tiny_models, monkeypatch):
    pytest.importorskip("gradio")
    pytest.importorskip("playwright")
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install chromium)")
    monkeypatch.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
    monkeypatch.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
    monkeypatch.setenv("LAUNCHER_RERANKER", str(tiny_models.rank))
    monkeypatch.setenv("LAUNCHER_RERANKER_MMPROJ", str(tiny_models.mmproj))
    monkeypatch.delenv("DISPLAY", raising=False)
    root = tmp_path / "docs"
    root.mkdir()
    (root / "todo.txt").write_text("call the plumber\ninvoice INV-7731 is overdue\n")
    (root / "garden.md").write_text("# Garden\ntomatoes and basil\n")
    Image.new("RGB", (120, 80), (20, 160, 40)).save(root / "green.png")
    assert main(["index", str(root), "--json"]) == 0
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(opener, "_run", lambda argv, *, wait=None: calls.append(tuple(argv)))
    app = App.create()
    svc = LocalService(app, watch=True, warm=True)
    running = ui.serve(svc, port=0, open_browser=False, hotkey=None)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.set_default_timeout(15_000)
        page.goto(running.open_url)
        page.wait_for_selector("#lq input, #lq textarea")
        try:
            yield page, root, calls, svc
        finally:
            browser.close()
            running.close()
            svc.close()
            app.close()


def first_row(page: Any) -> str:
    return page.eval_on_selector("#lresults .lrow", "r => r.dataset.path")


def test_type_find_and_open_with_the_real_engine(live):
    page, root, calls, _ = live
    page.keyboard.type("INV-7731", delay=30)
    page.wait_for_function(
        "(p) => { const r = document.querySelector('#lresults .lrow');"
        " return r && r.dataset.path === p; }",
        arg=str(root / "todo.txt"),
    )
    assert "exact" in page.inner_text("#lresults .lrow")
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls and calls[-1][-1] == str(root / "todo.txt")


def test_image_upload_finds_the_same_picture(live, tmp_path):
    page, root, _, _ = live
    page.set_input_files("#limg input[type=file]", str(root / "green.png"))
    page.wait_for_function(
        "(p) => { const r = document.querySelector('#lresults .lrow');"
        " return r && r.dataset.path === p; }",
        arg=str(root / "green.png"),
    )


def test_an_edit_shows_up_without_reindexing(live):
    page, root, _, svc = live
    svc.ready.wait(30)
    (root / "new-note.txt").write_text("Ticket QX-4411: the projector is broken")
    deadline = time.monotonic() + 20
    while not svc.is_indexed(str(root / "new-note.txt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    page.keyboard.type("QX-4411", delay=30)
    page.wait_for_function(
        "(p) => { const r = document.querySelector('#lresults .lrow');"
        " return r && r.dataset.path === p; }",
        arg=str(Path(root / "new-note.txt")),
    )


def test_gibberish_shows_weak_matches_under_a_notice(live):
    page, root, _, _ = live
    page.keyboard.type("qwzxv kplmrt", delay=20)
    page.wait_for_selector("#lresults .lnotice")
    assert "No file contains these words" in page.inner_text("#lresults .lnotice")
    rows = page.locator("#lresults .lrow")
    assert rows.count() >= 1 and rows.count() == page.locator("#lresults .lrow.lweak").count()
    opacity = page.eval_on_selector("#lresults .lrow.lweak", "r => getComputedStyle(r).opacity")
    assert float(opacity) < 1  # dimmed
    # a word a file has: no notice, full rows, and the total found
    page.keyboard.press("Escape")
    page.keyboard.type("plumber", delay=20)
    page.wait_for_function(
        "(p) => { const r = document.querySelector('#lresults .lrow');"
        " return r && r.dataset.path === p && !document.querySelector('#lresults .lnotice'); }",
        arg=str(root / "todo.txt"),
    )
    assert page.locator("#lresults .lrow.lweak").count() == 0
    assert "results" in page.inner_text("#lresults .linfo")
