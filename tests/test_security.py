"""The search server as an attacker on the same machine sees it (issue 9), and how
``launch`` starts and stops (ports, signals, leftovers).

Every test talks to a real server (uvicorn + Gradio) over loopback. A client without
the run's key is refused everywhere; a client with it still cannot make the server read
a file it did not index or upload, stall it, or blow up its memory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Mount
from test_ui import CHROMIUM, CHROMIUM_ARGS, HAVE_GRADIO, HAVE_PLAYWRIGHT
from ui_fake import FakeService

from launcher import opener, ui
from launcher.query import Hit, Query

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not HAVE_GRADIO, reason="gradio not installed")


# --------------------------------------------------------------------------- helpers


def request(
    port: int,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1:``port``, the target sent exactly as written."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def png_of_zeros(path: Path, width: int, height: int, channels: int = 1) -> Path:
    """A valid PNG of ``width`` x ``height`` black pixels, written without ever holding
    the pixels in memory (a 13000x13000 one is about 170 KB: a decompression bomb)."""
    color = {1: 0, 3: 2}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" * (1 + width * channels)
    comp = zlib.compressobj(9)
    parts = []
    for _ in range(height):
        out = comp.compress(row)
        if out:
            parts.append(out)
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )
    return path


def enumerate_routes(routes: Any, prefix: str = "") -> Iterator[tuple[str, frozenset[str]]]:
    """Every (path, methods) the app routes, through mounts and included routers."""
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's included router
            inner = prefix + route.include_context.prefix
            yield from enumerate_routes(route.original_router.routes, inner)
        elif isinstance(route, Mount):
            yield from enumerate_routes(route.routes, prefix + route.path)
        else:
            methods = getattr(route, "methods", None) or {"GET"}
            yield prefix + route.path, frozenset(methods)


def fill(path: str) -> str:
    """A concrete URL for a route template: each {param} becomes a harmless value."""
    out, depth, name = [], 0, ""
    for ch in path:
        if ch == "{":
            depth, name = 1, ""
        elif ch == "}" and depth:
            depth = 0
            out.append("x.png" if "file" in name or "path" in name else "1")
        elif depth:
            name += ch
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class Server:
    ui: ui.RunningUI
    svc: Any

    @property
    def port(self) -> int:
        return self.ui.port

    def get(self, target: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return request(
            self.port, "GET", target, headers={**self.ui.key_header, **(headers or {})}, **kw
        )

    def upload(self, name: str, data: bytes, key: bool = True) -> tuple[int, bytes]:
        boundary = "----launcher" + secrets.token_hex(8)
        body = (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="files"; filename="{name}"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if key:
            headers.update(self.ui.key_header)
        status, _, out = request(
            self.port, "POST", "/gradio_api/upload", headers=headers, body=body
        )
        return status, out

    def search(self, text: str = "", image: Any = None, timeout: float = 60) -> dict[str, Any]:
        """The page's search event through Gradio's queue; the final message."""
        session = secrets.token_hex(8)
        cfg = json.loads(self.get("/config")[2])
        dep = next(d for d in cfg["dependencies"] if d.get("api_name") == "run_search")
        data = [text, image, [], "", "any time", None, None, 0, False, 20]  # 20: results wanted
        body = json.dumps(
            {"data": data, "fn_index": dep["id"], "session_hash": session, "event_data": None,
             "trigger_id": dep["targets"][0][0]}
        ).encode()  # fmt: skip
        headers = {"Content-Type": "application/json", **self.ui.key_header}
        status, _, out = request(
            self.port, "POST", "/gradio_api/queue/join", headers=headers, body=body
        )
        assert status == 200, out
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(
                "GET", f"/gradio_api/queue/data?session_hash={session}", headers=self.ui.key_header
            )
            resp = conn.getresponse()
            last: dict[str, Any] = {}
            while True:
                line = resp.fp.readline()
                if not line:
                    return last
                if line.startswith(b"data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        return msg
                    last = msg
        finally:
            conn.close()


def file_data(path: str) -> dict[str, Any]:
    return {"path": path, "orig_name": "query.png", "meta": {"_type": "gradio.FileData"}}


def output_text(msg: dict[str, Any]) -> str:
    return json.dumps(msg.get("output", msg))


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("sec")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAUNCHER_HOME", str(tmp / "home"))
        mp.delenv("DISPLAY", raising=False)
        svc = FakeService(tmp / "index")
        running = ui.serve(svc, port=0, open_browser=False, hotkey=None)
        try:
            yield Server(running, svc)
        finally:
            running.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-" + secrets.token_hex(8))
    return secret


# --------------------------------------------------------------------------- 1. the key


def test_every_route_refuses_a_client_without_the_key(fake: Server) -> None:
    routes = sorted(set(enumerate_routes(fake.ui.app.routes)))
    paths = {p for p, _ in routes}
    for needed in ("/thumb", "/", "/gradio_api/queue/join", "/gradio_api/upload",
                   "/gradio_api/component_server", "/gradio_api/file={path_or_url:path}",
                   "/config", "/gradio_api/info"):  # fmt: skip
        assert needed in paths, f"route enumeration missed {needed}"
    assert len(routes) > 40
    open_ = []
    for path, methods in [*routes, ("/no-such-route", frozenset({"GET", "POST"}))]:
        target = fill(path)
        for method in sorted(methods):
            sep = "&" if "?" in target else "?"
            for headers, url in (
                ({}, target),
                ({ui.KEY_HEADER: "wrong"}, target),
                ({"Cookie": f"{ui.key_cookie(fake.port)}=x"}, target),
                ({}, f"{target}{sep}key=wrong"),
            ):
                status, got, body = request(fake.port, method, url, headers=headers, body=b"{}")
                if fake.ui.key.encode() in body or "set-cookie" in got:
                    open_.append((method, url, headers, status, "gave the key away"))
                if path in ui.OPEN_ROUTES:
                    continue
                if status not in (401, 403):
                    open_.append((method, url, headers, status, body[:80]))
    assert open_ == []
    status, _, body = request(fake.port, "GET", "/healthz")  # the one open route
    assert status == 200 and set(json.loads(body)) == {"app", "instance"}


def test_the_link_sets_a_strict_httponly_cookie_and_a_clean_url(fake: Server) -> None:
    status, headers, _ = request(fake.port, "GET", f"/?key={fake.ui.key}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{ui.key_cookie(fake.port)}={fake.ui.key}")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    jar = {"Cookie": cookie.split(";", 1)[0]}
    assert request(fake.port, "GET", "/", headers=jar)[0] == 200
    assert request(fake.port, "GET", "/?key=wrong")[0] == 401
    status, headers, _ = request(fake.port, "GET", f"//evil.example/?key={fake.ui.key}")
    assert status == 303 and headers["location"] == "/"  # never off this server
    assert request(fake.port, "GET", "/", headers={"Accept": "text/html"})[0] == 401
    assert b"hotkey" in request(fake.port, "GET", "/", headers={"Accept": "text/html"})[2]


def test_links_handed_to_a_browser_open_the_page_once(
    fake: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser gets its link on its command line, which other users can read (ps):
    the hotkey and a second launch hand it single-use tickets, never the key."""
    opened: list[str] = []
    monkeypatch.setattr("launcher.hotkey.webbrowser.open", opened.append)
    monkeypatch.setattr("launcher.hotkey.focus_window", lambda title=None: False)
    fake.ui.focuser = None
    fake.ui.focus()
    fake.ui.focus()
    assert len(opened) == 2 and opened[0] != opened[1]
    for url in opened:
        assert fake.ui.key not in url
        target = url[len(fake.ui.url) - 1 :]
        assert request(fake.port, "GET", target)[0] == 303
        assert request(fake.port, "GET", target)[0] == 401  # used up
    assert request(fake.port, "POST", ui.TICKET_ROUTE)[0] == 401


def test_the_key_is_not_guessable_and_differs_per_run(fake: Server, tmp_path: Path) -> None:
    assert len(fake.ui.key) >= 40  # 32 random bytes
    with ui.serve(FakeService(tmp_path / "r"), port=0, open_browser=False, hotkey=None) as other:
        assert other.key != fake.ui.key
        assert request(other.port, "GET", "/config", headers=fake.ui.key_header)[0] == 401


# --------------------------------------------------------------------------- 2. named paths


def test_filedata_naming_a_file_outside_is_refused_and_not_copied(
    fake: Server, outside: Path
) -> None:
    secret = outside.read_text()
    msg = fake.search(image=file_data(str(outside)))
    assert secret not in output_text(msg)
    assert fake.ui.upload_dir is not None
    for path in fake.ui.upload_dir.rglob("*"):
        assert not (path.is_file() and secret in path.read_text(errors="replace")), path
    assert fake.get("/gradio_api/file=" + str(outside))[0] == 404


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_dev_zero_named_in_a_request_does_not_stall_the_server(
    fake: Server, tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
        link = tmp_path / "pipe.png"
        link.symlink_to(target)
        named = str(link)
    else:
        named = "/dev/zero"
    done: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: done.append(fake.search(image=file_data(named))))
    worker.daemon = True
    worker.start()
    try:
        time.sleep(0.5)  # the request is in
        started = time.monotonic()
        status, _, _ = request(fake.port, "GET", "/healthz", timeout=1.0)
        assert status == 200 and time.monotonic() - started < 1.0
        assert fake.get(ui.thumb_url(named), timeout=1.0)[0] == 404
        worker.join(10)
        assert done, "the request naming it never finished"
    finally:
        if kind == "fifo":  # release a reader, if the server ever opened it
            with contextlib.suppress(OSError):
                fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)


# --------------------------------------------------------------------------- 3. images


def test_decompression_bomb_is_refused_before_decoding(fake: Server, tmp_path: Path) -> None:
    bomb = png_of_zeros(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 300_000
    before = rss_mb()
    status, out = fake.upload("bomb.png", bomb.read_bytes())
    assert status == 200, out
    uploaded = json.loads(out)[0]
    msg = fake.search(image=file_data(uploaded))
    text = output_text(msg)
    assert "image too large" in text and "13000x13000" in text, text
    assert rss_mb() - before < 100, "the bomb was decoded"


# --------------------------------------------------------------------------- 6. limits


def test_long_queries_are_cut_with_a_message(fake: Server) -> None:
    msg = fake.search(text="invoice " * 1000)
    assert "searched the first 2,000 characters" in output_text(msg)
    assert len(fake.svc.queries[-1].text) <= ui.MAX_QUERY_CHARS


def test_upload_limits_per_request_and_in_total(tmp_path: Path) -> None:
    opts = ui.UIOptions(upload_request_bytes=300_000, upload_total_bytes=1_000_000)
    svc = FakeService(tmp_path / "r")
    with ui.serve(svc, port=0, open_browser=False, hotkey=None, options=opts) as running:
        server = Server(running, svc)
        status, out = server.upload("big.png", b"x" * 400_000)
        assert status == 413 and b"larger than 0.3 MB" in out
        assert server.upload("small.png", b"x" * 1000, key=False)[0] == 401
        results: list[int] = []

        def one(i: int) -> None:
            results.append(server.upload(f"{i}.png", os.urandom(250_000))[0])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert running.upload_dir is not None
        total = sum(p.stat().st_size for p in running.upload_dir.rglob("*") if p.is_file())
        assert total <= 1_000_000, total
        assert 200 in results
        assert set(results) <= {200, 413}


# --------------------------------------------------------------------------- 5. --host


def test_host_check_allows_exactly_the_given_host_and_loopback() -> None:
    ok = ui.host_checker("192.168.1.20")
    assert ok("192.168.1.20:7733") and ok("127.0.0.1:7733") and ok("localhost:1") and ok("[::1]:2")
    assert not ok("evil.example:7733") and not ok("192.168.1.21:7733") and not ok("")
    wild = ui.host_checker("0.0.0.0")
    assert wild("10.0.0.5:7733") and wild(f"{socket.gethostname()}:7733")
    assert not wild("evil.example:7733") and not wild("attacker.rebind.network")


def test_with_host_the_key_is_still_required_and_the_warning_stays(tmp_path: Path) -> None:
    svc = FakeService(tmp_path / "r")
    with ui.serve(svc, host="0.0.0.0", port=0, open_browser=False, hotkey=None) as running:
        assert any("key" in w for w in running.warnings)
        port = running.port
        assert request(port, "GET", "/config")[0] == 401
        assert request(port, "GET", "/config", headers=running.key_header)[0] == 200
        evil = {"Host": f"evil.example:{port}", **running.key_header}
        assert request(port, "GET", "/config", headers=evil)[0] == 403


# --------------------------------------------------------------------------- the real back end


@dataclass
class Real:
    server: Server
    root: Path
    secret: Path
    calls: list[tuple[str, ...]]
    odd: str  # a file name that is not valid UTF-8
    bidi: str  # a file name with U+202E


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, tiny_models: Any) -> Iterator[Real]:
    from PIL import Image

    from launcher.app import App
    from launcher.cli import main
    from launcher.service import LocalService

    tmp = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAUNCHER_HOME", str(tmp / "home"))
        mp.setenv("LAUNCHER_MODEL", str(tiny_models.embedding))
        mp.setenv("LAUNCHER_MMPROJ", str(tiny_models.mmproj))
        mp.delenv("LAUNCHER_RERANKER", raising=False)
        mp.delenv("DISPLAY", raising=False)
        root = tmp / "docs"
        root.mkdir()
        (root / "victim.txt").write_text("quarterly note INV-5150 alpha\n")
        Image.new("RGB", (60, 40), (200, 30, 30)).save(root / "pic.png")
        Image.new("RGB", (60, 40), (30, 30, 200)).save(root / "pic2.png")
        odd = os.fsdecode(str(root).encode() + b"/caf\xe9 men\xfc INV-7001.txt")
        Path(odd).write_text("menu of the day, ticket INV-7001\n")
        bidi = str(root / "invoice\u202etxt.exe")
        Path(bidi).write_text("payment order INV-8118\n")
        secret = tmp / "outside" / "secret.txt"
        secret.parent.mkdir()
        secret.write_text("INV-5150 TOPSECRET-" + secrets.token_hex(6) + "\n")
        Image.new("RGB", (60, 40), (0, 255, 0)).save(secret.parent / "secret.png")
        assert main(["index", str(root)]) == 0
        calls: list[tuple[str, ...]] = []
        mp.setattr(opener, "_run", lambda argv, *, wait=None: calls.append(tuple(argv)))
        app = App.create()
        svc = LocalService(app, watch=False)  # the swaps below must not be re-indexed
        running = ui.serve(svc, port=0, open_browser=False, hotkey=None)
        try:
            yield Real(Server(running, svc), root, secret, calls, odd, bidi)
        finally:
            running.close()
            svc.close()
            app.close()


def _component_call(server: Server, fn: str, path: str) -> bytes:
    cfg = json.loads(server.get("/config")[2])
    comp = next(c for c in cfg["components"] if c.get("props", {}).get("elem_id") == "lresults")
    body = json.dumps(
        {"component_id": comp["id"], "fn_name": fn, "data": path, "session_hash": "s"}
    ).encode()
    headers = {"Content-Type": "application/json", **server.ui.key_header}
    return request(server.port, "POST", "/gradio_api/component_server", headers=headers, body=body)[
        2
    ]


def test_a_symlink_swapped_in_after_indexing_is_not_followed(real: Real) -> None:
    server, root = real.server, real.root
    victim, pic = root / "victim.txt", root / "pic.png"
    assert server.get(ui.thumb_url(str(pic)))[0] == 200  # before: served
    token = real.secret.read_text().split()[1]
    victim.unlink()
    victim.symlink_to(real.secret)
    pic.unlink()
    pic.symlink_to(real.secret.parent / "secret.png")
    try:
        assert server.get(ui.thumb_url(str(pic)))[0] == 404
        hits = server.svc.search(Query(text=token, top=20))
        for hit in hits:
            assert token not in hit.snippet, hit
            assert not hit.exact, "the exact badge reads the symlink's target"
        hits = server.svc.search(Query(text="INV-5150", top=20))
        assert all("TOPSECRET" not in h.snippet for h in hits)
        for fn in ("open_file", "reveal_file"):
            assert b"not in the index" in _component_call(server, fn, str(victim))
        assert real.calls == []
    finally:
        victim.unlink()
        victim.write_text("quarterly note INV-5150 alpha\n")


def test_a_fifo_swapped_in_is_refused_at_once(real: Real) -> None:
    pic2 = real.root / "pic2.png"
    saved = pic2.read_bytes()
    pic2.unlink()
    os.mkfifo(pic2)
    try:
        started = time.monotonic()
        assert real.server.get(ui.thumb_url(str(pic2)), timeout=2)[0] == 404
        assert request(real.server.port, "GET", "/healthz", timeout=1)[0] == 200
        assert time.monotonic() - started < 2
    finally:
        pic2.unlink()
        pic2.write_bytes(saved)


def test_memory_returns_after_a_large_query_image(real: Real, tmp_path: Path) -> None:
    big = png_of_zeros(tmp_path / "big.png", 6500, 6500, channels=3)  # 42 MP, 127 MB decoded
    server = real.server
    status, out = server.upload("big.png", big.read_bytes())
    assert status == 200, out
    path = json.loads(out)[0]
    small = png_of_zeros(tmp_path / "small.png", 64, 64, channels=3)
    status, out = server.upload("small.png", small.read_bytes())
    server.search(image=file_data(json.loads(out)[0]))  # the vision encoder is loaded now
    before = rss_mb()
    msg = server.search(image=file_data(path))
    assert "lrow" in output_text(msg) or "No matches" in output_text(msg), output_text(msg)
    assert rss_mb() - before < 60, f"{rss_mb() - before:.0f} MB kept after one query image"


def test_non_utf8_and_bidi_names_render_in_chromium(real: Real) -> None:
    if not (HAVE_PLAYWRIGHT and CHROMIUM):
        pytest.skip("playwright or chromium missing")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(real.server.ui.open_url)
            assert page.url == real.server.ui.url  # the key is gone from the address bar
            assert page.evaluate("document.cookie") == ""  # HttpOnly
            box = page.locator("#lq input, #lq textarea").first
            box.fill("INV-7001")
            page.wait_for_selector("#lresults .lrow")
            name = page.inner_text("#lresults .lrow .lname")
            assert "caf\\xe9 men\\xfc" in name, name
            assert "Error" not in page.inner_text("#lresults")
            page.keyboard.press("Enter")
            deadline = time.monotonic() + 5
            while not real.calls and time.monotonic() < deadline:
                time.sleep(0.05)
            assert real.calls and real.calls[-1][-1] == real.odd  # the real bytes
            box.fill("INV-8118")
            page.wait_for_function(
                "document.querySelector('#lresults .lname') &&"
                " document.querySelector('#lresults .lname').innerText.includes('U+202E')"
            )
        finally:
            real.calls.clear()
            browser.close()


# --------------------------------------------------------------------------- rendering


def test_visible_shows_undecodable_bytes_and_bidi_controls() -> None:
    odd = os.fsdecode(b"caf\xe9.txt")
    assert ui.visible(odd) == "caf\\xe9.txt"
    assert ui.visible("invoice\u202etxt.exe") == "invoice<U+202E>txt.exe"
    assert ui.visible("tab\there") == "tab<U+0009>here"
    assert ui.visible("plain ünïcode name.txt") == "plain ünïcode name.txt"
    assert ui.path_from_ref(ui.path_ref(odd)) == odd
    assert ui.path_ref("/a/b.txt") == "/a/b.txt"
    html = ui.render_hit(
        Hit(path="/d/" + odd, name=odd, folder="/d", kind="text", score=0.5, snippet=odd), 0
    )
    html.encode("utf-8")  # no lone surrogates left: JSON can carry it
    assert "caf\\xe9" in html and 'data-ref="fs:' in html


# --------------------------------------------------------------------------- launch itself


def _launch_env(tiny_models: Any, home: Path) -> dict[str, str]:
    mine = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}  # set by serve()
    return {
        **mine,
        "PYTHONPATH": str(ROOT),
        "LAUNCHER_HOME": str(home),
        "LAUNCHER_MODEL": str(tiny_models.embedding),
        "LAUNCHER_MMPROJ": str(tiny_models.mmproj),
        "HF_HUB_OFFLINE": "1",
        "DISPLAY": "",
    }


def _start_launch(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launcher.py"), "launch", "--no-browser", "--hotkey", "off",
         *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_instance(home: Path, proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    path = home / "data" / "ui.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"launch exited {proc.returncode}: {proc.communicate()}")
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    raise AssertionError("launch did not start")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_launch_stops_cleanly_with_a_tab_connected(
    tiny_models: Any, tmp_path: Path, how: signal.Signals
) -> None:
    home = tmp_path / "home"
    env = _launch_env(tiny_models, home)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello")
    subprocess.run([sys.executable, str(ROOT / "launcher.py"), "index", str(docs)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    crashed = home / "cache" / "ui" / "uploads" / "run-999999-old"
    crashed.mkdir(parents=True)
    (crashed / "left.png").write_bytes(b"x")
    proc = _start_launch(env, "--port", "0")
    try:
        info = _wait_instance(home, proc)
        port = urllib.parse.urlsplit(info["url"]).port
        assert port
        assert not crashed.exists(), "a crashed run's uploads are left behind"
        runs = list((home / "cache" / "ui" / "uploads").glob(f"run-{proc.pid}-*"))
        assert len(runs) == 1
        for folder in (home / "data", home / "cache", home / "data" / "index"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert stat.S_IMODE((home / "data" / "ui.json").stat().st_mode) == 0o600
        # a tab: the page's event stream stays open
        tab = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        tab.request("GET", "/gradio_api/heartbeat/tab1", headers={ui.KEY_HEADER: info["key"]})
        assert tab.getresponse().status == 200
        time.sleep(0.5)
        proc.send_signal(how)
        out, err = proc.communicate(timeout=30)
        tab.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "RuntimeError" not in err, err
    assert not (home / "data" / "ui.json").exists(), "a stale ui.json"
    assert not runs[0].exists(), "the run's uploads are left behind"


def test_launch_on_a_busy_port_says_so_and_exits_1(tiny_models: Any, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = _launch_env(tiny_models, tmp_path / "home")
        proc = _start_launch(env, "--port", str(port))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (proc.returncode, err)
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_a_busy_port_fails_before_the_back_end_starts() -> None:
    """The segfault on a busy port: the model was loading in a thread while the process
    exited. Now the port is taken first, so nothing has started when it fails."""
    import argparse

    parser = argparse.ArgumentParser()
    ui.add_launch_arguments(parser)
    started: list[bool] = []

    def factory() -> Any:
        started.append(True)
        raise AssertionError("the back end must not start")

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        args = parser.parse_args(["--no-browser", "--port", str(busy.getsockname()[1])])
        with pytest.raises(ui.UIError, match="cannot listen"):
            ui.run_launch(factory, args, echo=lambda line: None)
    assert started == []


def test_a_busy_default_port_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Stub(ui.RunningUI):
        def wait(self, timeout: float | None = None) -> None:
            raise KeyboardInterrupt

    def fake_serve(service: Any, **kw: Any) -> ui.RunningUI:
        seen.update(kw)
        port = kw["sock"].getsockname()[1]
        return Stub(url=f"http://127.0.0.1:{port}/", host="127.0.0.1", port=port, key="k")

    monkeypatch.setattr(ui, "serve", fake_serve)
    import argparse

    parser = argparse.ArgumentParser()
    ui.add_launch_arguments(parser)
    args = parser.parse_args(["--no-browser"])
    lines: list[str] = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        assert ui.run_launch(lambda: FakeService.__new__(FakeService), args, echo=lines.append,
                             default_port=taken) == 0  # fmt: skip
    seen["sock"].close()
    assert any(f"port {taken} is in use; using port" in line for line in lines), lines
    assert any("?key=" in line for line in lines)  # the printed link opens the page


def test_the_demo_has_its_own_port_and_instance_file(
    tiny_models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    sys.path.insert(0, str(ROOT))
    try:
        import demo_launcher
    finally:
        sys.path.remove(str(ROOT))
    seen: dict[str, Any] = {}

    def fake_run_launch(factory: Any, args: Any, **kw: Any) -> int:
        seen.update(kw)
        return 0

    monkeypatch.setattr(ui, "run_launch", fake_run_launch)
    args = argparse.Namespace(
        model=str(tiny_models.embedding), mmproj=str(tiny_models.mmproj), reranker=None,
        no_browser=True, port=None, hotkey="off", index_only=False,
    )  # fmt: skip
    assert demo_launcher.run(args) == 0
    assert seen["instance_path"] != ui.instance_file()
    assert seen["default_port"] != ui.DEFAULT_PORT
