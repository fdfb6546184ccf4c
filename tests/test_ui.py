"""The search page: rendering, queries, Open/Reveal, exposure, and the page in Chromium.

Browser tests drive Debian's Chromium (``/usr/bin/chromium``, headless) with Playwright's
sync API; they are skipped, with the reason, when Chromium or Playwright is missing.
Only the final OS call (``launcher.opener._run``) is replaced.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ui_fake import FakeService

from launcher import opener, ui
from launcher.hotkey import DEFAULT_HOTKEY, HotkeyUnavailable
from launcher.query import Hit, IndexStatus, Results
from launcher.ui import bind as ui_bind

HAVE_GRADIO = importlib.util.find_spec("gradio") is not None
HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

needs_gradio = pytest.mark.skipif(
    not HAVE_GRADIO, reason="gradio not installed (pip install gradio)"
)


def _hit(name: str = "a.txt", **kw: Any) -> Hit:
    base = {
        "path": f"/data/{name}",
        "name": name,
        "folder": "/data",
        "kind": "text",
        "score": 0.5,
        "snippet": "hello world",
    }
    base.update(kw)
    return Hit(**base)


# --------------------------------------------------------------------------- rendering


def test_render_escapes_everything_from_the_hit() -> None:
    evil = '<img src=x onerror="alert(1)"> {{value}} ${x} `y`'
    out = ui.render_hit(
        _hit(name=evil, path="/d/" + evil, folder="/d/<b>", snippet="<script>x</script>"), 0
    )
    assert "<img src=x" not in out and "<script>" not in out and "<b>" not in out
    assert "{{" not in out and "${" not in out and "`" not in out
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in out


def test_render_row_parts() -> None:
    now = time.time()
    hit = _hit(
        name="report.pdf",
        kind="pdf",
        page=3,
        exact=True,
        mtime=now - 3 * 86400,
        rerank_score=0.91,
        score=0.734,
        has_thumbnail=True,
    )
    out = ui.render_results([hit], query_text="hello")
    assert "<mark>hello</mark>" in out
    assert "3 days ago" in out and "p. 3" in out and "0.73" in out
    assert "exact" in out and "rerank 0.91" in out
    assert "/thumb?path=%2Fdata%2Freport.pdf" in out
    assert 'data-path="/data/report.pdf"' in out
    assert "No matches" in ui.render_results([])


def test_highlight_marks_word_starts_and_skips_stop_words() -> None:
    out = ui.highlight(
        "Invoices for them: the hotkey opens INV-2024-0917 <b>", "the invoice key INV-2024-0917"
    )
    assert "<mark>Invoices</mark>" not in out and "<mark>Invoice</mark>s" in out  # word start
    assert "<mark>the</mark>" not in out and "<mark>the</mark>m" not in out  # stop word
    assert "hot<mark>key</mark>" not in out  # not inside a word
    assert "<mark>INV-2024-0917</mark>" in out  # the query's code as typed, whole
    assert "&lt;b&gt;" in out  # still escaped


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (5, "just now"),
        (120, "2 minutes ago"),
        (3600, "1 hour ago"),
        (86400 * 1.5, "yesterday"),
        (86400 * 3, "3 days ago"),
        (86400 * 15, "2 weeks ago"),
        (86400 * 65, "2 months ago"),
        (86400 * 800, "2 years ago"),
    ],
)
def test_relative_time(ago: float, text: str) -> None:
    now = 1_700_000_000.0
    assert ui.relative_time(now - ago, now) == text
    assert ui.relative_time(0) == ""


def test_short_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    assert ui.short_folder("/home/me/Documents") == "~/Documents"
    assert ui.short_folder("/home/meow") == "/home/meow"
    long = "/srv/" + "/".join(f"folder{i}" for i in range(20))
    short = ui.short_folder(long)
    assert len(short) <= 64 and "…" in short and short.endswith("folder19")


def test_status_html() -> None:
    out = ui.render_status(
        IndexStatus(files=1234, pending=5, failed=2, indexing=True, message="watching <3> folders")
    )
    assert "1,234 files" in out and "5 pending" in out and "2 failed" in out
    assert "indexing" in out and "&lt;3&gt;" in out and "queued" not in out
    out = ui.render_status(IndexStatus(files=10, pending=0, failed=0, queued=7))
    assert "7 queued" in out


def test_results_say_the_total_and_offer_more() -> None:
    hits = [_hit(f"f{i}.txt") for i in range(2)]
    q = ui.build_query("hello", top=2)
    assert q is not None
    out = ui.render_results(hits, info=ui.found(Results(hits, total=57), q))
    assert "2 of 57 results" in out and 'class="lmore" data-shown="2"' in out
    out = ui.render_results(hits, info=ui.found(Results(hits, total=2, capped=True), q))
    assert "2 of 2+ results" in out and "lmore" in out  # the search stopped counting
    out = ui.render_results(hits, info=ui.found(Results(hits, total=2), q))
    assert "2 results" in out and "lmore" not in out
    one = ui.render_results(hits[:1], info=ui.found(Results(hits[:1]), q))
    assert ">1 result<" in one
    filtered = ui.build_query("hello", kinds=["pdf"])
    assert filtered is not None
    assert "No matches with the filters above" in ui.render_results(
        [], info=ui.found(Results(), filtered)
    )
    assert "No matches." in ui.render_results([])


def test_weak_matches_are_dimmed_under_a_notice() -> None:
    q = ui.build_query("qwzxv kplmrt")
    assert q is not None
    weak = [_hit(f"f{i}.txt", matched="meaning", relevance=1.0, score=0.12) for i in range(3)]
    info = ui.found(weak, q)
    assert info.weak
    out = ui.render_results(weak, info=info)
    assert ui.WEAK_NOTICE in out and out.count("lweak") == 3
    assert "0.12" in out and "1.00" not in out  # similarity, not a rank that reads 1.00
    reranked = [replace(weak[0], rerank_score=0.83)]
    assert "rerank 0.83" in ui.render_results(reranked, info=ui.found(reranked, q))
    # one file has the words, or one matches exactly, or no words at all: not weak
    worded = [*weak, _hit("w.txt", matched="words+meaning", relevance=0.5)]
    assert not ui.found(worded, q).weak
    assert not ui.found([replace(weak[0], exact=True)], q).weak
    assert not ui.found(Results(weak, by_words=2), q).weak
    assert ui.found(Results([replace(h, matched="") for h in weak], by_words=0), q).weak
    picture = ui.build_query("", object())
    assert picture is not None and not ui.found(weak, picture).weak
    assert not ui.found([replace(h, matched="") for h in weak], q).weak  # unknown: say nothing


def test_page_limit_is_whole_pages_within_bounds() -> None:
    assert ui.page_limit(None, 20) == 20
    assert ui.page_limit("40", 20) == 40
    assert ui.page_limit(41, 20) == 60
    assert ui.page_limit(-5, 20) == 20
    assert ui.page_limit(float("nan"), 20) == 20
    assert ui.page_limit(float("inf"), 20) == 20
    assert ui.page_limit(10**12, 20) == ui.MAX_RESULTS


def test_filter_chips_name_each_active_filter() -> None:
    assert ui.render_chips() == "" and ui.render_chips([], "  ", "any time", None, None, 0) == ""
    out = ui.render_chips(
        ["pdf", "bogus", "image"],
        "/data/<b>x</b>",
        "past week",
        datetime(2024, 5, 1),
        "2024-06-30",
        0.25,
    )
    names = re.findall(r'data-clear="([^"]+)"', out)
    assert names == ["kinds", "folder", "when", "after", "before", "min_score"]
    assert "kind: pdf, image" in out and "bogus" not in out and "<b>" not in out
    assert "after 2024-05-01" in out and "before 2024-06-30" in out and "0.25" in out
    assert ui.render_chips(min_score=float("nan")) == ""


def test_queued_hit_says_its_content_is_still_being_indexed() -> None:
    assert "lqueued" not in ui.render_hit(_hit("a.txt"), 0)
    queued = ui.render_hit(_hit("a.txt", queued=True, score=0.0), 0)
    assert "lqueued" in queued and "0.00" not in queued  # no similarity to show yet


# --------------------------------------------------------------------------- queries


def test_build_query_filters() -> None:
    now = datetime(2024, 5, 10, 15, 30)
    q = ui.build_query(
        "  invoice ",
        None,
        kinds=["pdf", "bogus"],
        folder="~/docs",
        when="past week",
        before=datetime(2024, 5, 9),
        min_score=0.3,
        top=7,
        now=now,
    )
    assert q is not None
    assert q.text == "invoice" and q.kinds == frozenset({"pdf"}) and q.top == 7
    assert q.folder == Path(os.path.expanduser("~/docs"))
    assert q.modified_after == now - timedelta(days=7)
    assert q.modified_before == datetime(2024, 5, 10)  # the whole of the 9th
    assert q.min_score == 0.3 and q.rerank is False
    today = ui.build_query("x", when="today", now=now)
    assert today is not None and today.modified_after == datetime(2024, 5, 10)
    assert ui.build_query("   ", None) is None
    assert ui.build_query("", object()) is not None  # an image alone is a query


def test_servable_path_refuses_tricks(tmp_path: Path) -> None:
    svc = FakeService(tmp_path / "root")
    good = sorted(svc.paths)[0]
    assert ui.servable_path(svc, good) == good
    parent = str(Path(good).parent)
    for bad in [
        "",
        "relative/path.txt",
        good + "\x00",
        parent + "/../" + Path(parent).name + "/" + Path(good).name,
        parent + "//" + Path(good).name,
        "/etc/passwd",
        None,
        42,
        [good],
        "x" * 5000,
    ]:
        assert ui.servable_path(svc, bad) is None, bad


def test_search_stream_reranks_after_embedding_results(tmp_path: Path) -> None:
    svc = FakeService(tmp_path / "root")
    q = ui.build_query("holiday plans lisbon invoice total file")
    embed = [h.path for h in svc.search(q)]  # type: ignore[arg-type]
    frames = list(ui.search_stream(svc, q, rerank=True, batch=2))
    assert len(frames) >= 3
    assert 'data-state="reranking"' in frames[0] and 'data-state="reranked"' in frames[-1]
    first = _paths_in(frames[0])
    last = _paths_in(frames[-1])
    assert first == embed
    assert sorted(last) == sorted(embed) and last != embed
    assert all(call[0].rerank for call in svc.rerank_calls)
    assert [len(c[1]) for c in svc.rerank_calls][0] == 2
    # only the first rerank_top hits go to the reranker; the rest stay below, in order
    svc.rerank_calls.clear()
    frames = list(ui.search_stream(svc, q, rerank=True, batch=0, rerank_top=2))
    assert [len(c[1]) for c in svc.rerank_calls] == [2]
    last = _paths_in(frames[-1])
    assert sorted(last[:2]) == sorted(embed[:2]) and last[2:] == embed[2:]


def test_search_stream_without_reranker_and_errors(tmp_path: Path) -> None:
    svc = FakeService(tmp_path / "root", can_rerank=False)
    q = ui.build_query("holiday plans")
    frames = list(ui.search_stream(svc, q, rerank=True))
    assert len(frames) == 1 and "no reranker available" in frames[0] and _paths_in(frames[0])
    svc.fail_next = "model file missing: /models/x.gguf"
    frames = list(ui.search_stream(svc, q, rerank=False))
    assert "model file missing" in frames[0] and "lerror" in frames[0]
    assert list(ui.search_stream(svc, None, rerank=False)) == [ui.HINT_HTML]


def _paths_in(html_text: str) -> list[str]:
    import html as html_mod
    import re

    return [html_mod.unescape(m) for m in re.findall(r'data-path="([^"]*)"', html_text)]


# --------------------------------------------------------------------------- opener


@pytest.fixture
def os_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Replace the final OS call; record argv."""
    calls: list[tuple[str, ...]] = []

    def fake_run(argv: Any, *, wait: float | None = None) -> int | None:
        calls.append(tuple(argv))
        return 0 if wait is not None else None

    monkeypatch.setattr(opener, "_run", fake_run)
    return calls


@pytest.mark.parametrize(
    ("platform", "open_cmd", "reveal_cmd"),
    [
        ("darwin", ("open", "{p}"), ("open", "-R", "{p}")),
        ("win32", ("startfile", "{p}"), ("explorer", "/select,{p}")),
        ("linux", ("xdg-open", "{p}"), ("xdg-open", "{d}")),
    ],
)
def test_opener_commands(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    os_calls: list[tuple[str, ...]],
    platform: str,
    open_cmd: tuple[str, ...],
    reveal_cmd: tuple[str, ...],
) -> None:
    f = tmp_path / "a file.txt"
    f.write_text("x")
    monkeypatch.setattr(opener.sys, "platform", platform)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    opener.open_path(f)
    opener.reveal_path(f)
    fill = {"p": str(f), "d": str(tmp_path)}
    assert os_calls == [
        tuple(a.format(**fill) for a in open_cmd),
        tuple(a.format(**fill) for a in reveal_cmd),
    ]


def test_reveal_linux_dbus_then_folder_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "b.txt"
    f.write_text("x")
    monkeypatch.setattr(opener.sys, "platform", "linux")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    monkeypatch.setattr(opener.shutil, "which", lambda name: f"/usr/bin/{name}")
    calls: list[tuple[str, ...]] = []
    answer = [0]

    def fake_run(argv: Any, *, wait: float | None = None) -> int | None:
        calls.append(tuple(argv))
        return answer[0] if argv[0] == "dbus-send" else 0  # xdg-open on the folder works

    monkeypatch.setattr(opener, "_run", fake_run)
    opener.reveal_path(f)
    assert calls[0][0] == "dbus-send" and f.as_uri() in calls[0][-2] and len(calls) == 1
    calls.clear()
    answer[0] = 1  # no file manager answers ShowItems
    opener.reveal_path(f)
    assert calls[0][0] == "dbus-send" and calls[1] == ("xdg-open", str(tmp_path))


def test_opener_refuses_missing_and_relative(os_calls: list[tuple[str, ...]]) -> None:
    with pytest.raises(opener.OpenError):
        opener.open_path("/no/such/file.txt")
    with pytest.raises(opener.OpenError):
        opener.reveal_path("relative.txt")
    assert os_calls == []


def test_act_refuses_files_not_in_the_index(
    tmp_path: Path, os_calls: list[tuple[str, ...]]
) -> None:
    svc = FakeService(tmp_path / "root")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    for path in (str(outside), "/etc/passwd", "../../etc/passwd", ["x", "y"]):
        assert ui._act(svc, "open", path)["ok"] is False
        assert ui._act(svc, "reveal", path)["ok"] is False
    assert os_calls == []
    good = sorted(svc.paths)[0]
    assert ui._act(svc, "open", good)["ok"] is True
    assert ui._act(svc, "open", [good])["ok"] is True  # Gradio may wrap the argument
    assert len(os_calls) == 2


# --------------------------------------------------------------------------- the server


@dataclass
class Served:
    svc: FakeService
    ui: ui.RunningUI
    root: Path
    secret: Path
    secret_text: str
    upload_dir: Path
    outbound: list[Any]
    indexed: list[str]  # what the service has indexed (the exposure tests need a .png, a .txt)

    @property
    def base(self) -> str:
        return self.ui.url.rstrip("/")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET ``path`` as the page's own client would (with the run's key)."""
        return _get(self.base + path, {**self.ui.key_header, **(headers or {})})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not HAVE_GRADIO:
        pytest.skip("gradio not installed (pip install gradio)")
    tmp = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAUNCHER_HOME", str(tmp / "home"))
        mp.delenv("DISPLAY", raising=False)  # the UI must work without a hotkey
        mp.delenv("WAYLAND_DISPLAY", raising=False)
        root = tmp / "index"
        svc = FakeService(root, rerank_delay=0.15)
        secret = tmp / "outside" / "secret.txt"
        secret.parent.mkdir()
        secret_text = "TOP-SECRET-" + os.urandom(8).hex()
        secret.write_text(secret_text)
        (root / "notes" / "link.txt").symlink_to(secret)  # inside the root, not indexed
        outbound: list[Any] = []
        real_connect = socket.socket.connect

        def watch_connect(sock: socket.socket, address: Any) -> Any:
            host = address[0] if isinstance(address, tuple) else address
            local = isinstance(host, str) and (host.startswith("127.") or host == "::1")
            if not local and not _PROBING:
                outbound.append(address)
            return real_connect(sock, address)

        mp.setattr(socket.socket, "connect", watch_connect)
        started = time.monotonic()
        running = ui.serve(svc, port=0, open_browser=False, hotkey=DEFAULT_HOTKEY)
        print(f"\nUI started in {time.monotonic() - started:.2f} s at {running.url}")
        assert running.upload_dir is not None
        upload_dir = running.upload_dir
        (upload_dir / "evil-link.txt").symlink_to(secret)  # a symlink in Gradio's own dir
        indexed = sorted(svc.paths)
        served = Served(svc, running, root, secret, secret_text, upload_dir, outbound, indexed)
        try:
            yield served
        finally:
            running.close()
        assert not upload_dir.exists(), "close() leaves the run's uploads behind"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (no client-side normalisation)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname == "127.0.0.1"  # never talk to anything else
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    target = parts.path + ("?" + parts.query if parts.query else "")
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_served_without_hotkey_when_no_display(served: Served) -> None:
    assert isinstance(served.ui.hotkey, HotkeyUnavailable)
    assert "display" in served.ui.hotkey.reason
    status, body = served.get("/")
    assert status == 200 and b"<html" in body.lower()
    config = json.loads(served.get("/config")[1])
    assert config["analytics_enabled"] is False
    assert "fonts.googleapis" not in json.dumps(config)


_PROBING: list[bool] = []  # set while the loopback test itself connects outward


def _non_loopback_address() -> str | None:
    """This machine's outward address, found without sending a packet (UDP connect)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 9))  # no traffic: only picks a route
        addr = s.getsockname()[0]
        if not addr.startswith("127.") and addr != "0.0.0.0":
            return addr
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
        for addr in out.stdout.split():
            if "." in addr and not addr.startswith("127."):
                return addr
    return None


def _listening_sockets_of_this_process() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket this process listens on (Linux /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A = LISTEN
                    continue
                hex_ip, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_ip)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def test_listens_on_loopback_only(served: Served) -> None:
    assert served.ui.host == "127.0.0.1"
    assert served.ui.address == ("127.0.0.1", served.ui.port)
    if sys.platform.startswith("linux"):  # nothing else (no SSR node server, no 2nd port)
        listening = _listening_sockets_of_this_process()
        assert ("127.0.0.1", served.ui.port) in listening
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening
    with socket.create_connection(("127.0.0.1", served.ui.port), timeout=2):
        pass
    _PROBING.append(True)
    try:
        addr = _non_loopback_address()
        if addr is None:
            pytest.skip("this machine has no non-loopback IPv4 address to try")
        with pytest.raises(OSError), socket.create_connection((addr, served.ui.port), timeout=2):
            pass
    finally:
        _PROBING.clear()


def test_thumbnail_only_for_indexed_files(served: Served) -> None:
    image = next(p for p in served.indexed if p.endswith(".png"))
    status, body = served.get(ui.thumb_url(image))
    assert status == 200 and body.startswith(b"\x89PNG")
    text = next(p for p in served.indexed if p.endswith(".txt"))
    assert served.get(ui.thumb_url(text))[0] == 404  # indexed, but no thumbnail


def _trick_urls(s: Served) -> list[str]:
    secret = str(s.secret)
    q = urllib.parse.quote
    indexed_dir = str(s.root / "notes")
    rel = os.path.relpath(secret, indexed_dir)  # ../../outside/secret.txt
    up = str(s.upload_dir)
    up_rel = os.path.relpath(secret, up)
    enc = rel.replace(".", "%2e").replace("/", "%2f")
    urls = [
        f"/thumb?path={q(secret, safe='')}",
        f"/thumb?path={q(indexed_dir + '/' + rel, safe='')}",
        f"/thumb?path={q(indexed_dir, safe='')}%2f{enc}",
        f"/thumb?path={q(q(indexed_dir + '/' + rel, safe=''), safe='')}",  # double-encoded
        f"/thumb?path={q(str(s.root / 'notes' / 'link.txt'), safe='')}",  # symlink out
        f"/thumb?path={q(secret, safe='')}%00.png",
        f"/thumb?path=file://{q(secret)}",
        f"/thumb?path={q('//' + secret.lstrip('/'), safe='')}",
        "/thumb?path=" + q(secret.replace("/", "\\"), safe=""),
    ]
    for prefix in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/file/"):
        urls += [
            prefix + secret,
            prefix + q(secret),
            prefix + q(secret, safe=""),
            prefix + up + "/" + up_rel,
            prefix + q(up + "/" + up_rel, safe=""),
            prefix + up + "/" + up_rel.replace(".", "%2e"),
            prefix + up + "/" + up_rel.replace("/", "%2f"),
            prefix + up + "/evil-link.txt",  # symlink inside Gradio's upload dir
            prefix + "file://" + secret,
            prefix + f"http://127.0.0.1:{s.ui.port}/thumb?path={q(secret, safe='')}",
            prefix + q(rel),
        ]
    urls += [
        "/static/" + "../" * 12 + secret.lstrip("/"),
        "/static/" + "%2e%2e%2f" * 12 + q(secret.lstrip("/")),
        "/assets/" + "..%2f" * 12 + q(secret.lstrip("/")),
        "/gradio_api/proxy=" + "http://127.0.0.1:1/",
        "/gradio_api/file=" + q(q(secret, safe=""), safe=""),
        "/" + "..%2f" * 12 + q(secret.lstrip("/")),
        "/favicon.ico/../" + "../" * 10 + secret.lstrip("/"),
    ]
    return urls


def test_path_tricks_never_read_outside_the_index(served: Served) -> None:
    leaked = []
    for path in _trick_urls(served):
        status, body = served.get(path)
        if served.secret_text.encode() in body:
            leaked.append((path, status))
        assert status >= 400 or served.secret_text.encode() not in body
    assert leaked == []
    asked = getattr(served.svc, "thumbnail_calls", [])  # the service never saw the tricks
    assert all(p in served.indexed for p in asked), asked


def test_gradio_uploads_still_served(served: Served) -> None:
    """The guard lets this run's uploads through (the image-query preview needs it)."""
    own = served.upload_dir / "own" / "query.txt"
    own.parent.mkdir(exist_ok=True)
    own.write_text("mine")
    status, body = served.get("/gradio_api/file=" + str(own))
    assert status == 200 and body == b"mine"


def test_foreign_host_and_cross_site_requests_refused(served: Served) -> None:
    image = next(p for p in served.indexed if p.endswith(".png"))
    url = ui.thumb_url(image)
    assert served.get(url, {"Host": "evil.example"})[0] == 403  # DNS rebinding
    assert served.get(url, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert served.get(url, {"Origin": "http://evil.example"})[0] == 403
    assert served.get(url, {"Sec-Fetch-Site": "same-origin"})[0] == 200
    # a cross-site form post to the server-function route must not open anything
    parts = urllib.parse.urlsplit(served.base)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=10)
    body = json.dumps(
        {"component_id": 1, "fn_name": "open_file", "data": image, "session_hash": "x"}
    )
    conn.request(
        "POST",
        "/gradio_api/component_server",
        body=body,
        headers={
            "Content-Type": "text/plain",
            "Origin": "http://evil.example",
            **served.ui.key_header,
        },
    )
    assert conn.getresponse().status == 403
    conn.close()


def test_component_server_refuses_unindexed_paths(
    served: Served, os_calls: list[tuple[str, ...]]
) -> None:
    _, cfg = served.get("/config")
    comp = next(
        c for c in json.loads(cfg)["components"] if c.get("props", {}).get("elem_id") == "lresults"
    )
    parts = urllib.parse.urlsplit(served.base)
    results = []
    for fn, path in (
        ("open_file", str(served.secret)),
        ("reveal_file", "/etc/passwd"),
        ("open_file", str(served.root / "notes" / "link.txt")),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=10)
        body = json.dumps(
            {"component_id": comp["id"], "fn_name": fn, "data": path, "session_hash": "t"}
        )
        conn.request(
            "POST",
            "/gradio_api/component_server",
            body=body,
            headers={"Content-Type": "application/json", **served.ui.key_header},
        )
        resp = conn.getresponse()
        results.append((resp.status, resp.read()))
        conn.close()
    assert all(b"not in the index" in body for _, body in results), results
    assert os_calls == []


def test_running_instance_roundtrip(served: Served) -> None:
    ui.write_instance(served.ui)
    link = ui.running_instance()
    assert link is not None and link.startswith(served.ui.url + "?key=")
    assert link != ui.running_instance()  # a new single-use link each time
    path = link[len(served.base) :]
    assert _get(served.base + path)[0] == 303  # opens the page once
    assert _get(served.base + path)[0] == 401  # and only once
    ui.clear_instance(served.ui)
    assert ui.running_instance() is None


# --------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    if not HAVE_PLAYWRIGHT:
        pytest.skip("playwright not installed (pip install playwright)")
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, served: Served, os_calls: list[tuple[str, ...]]) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1000, "height": 760})
    with contextlib.suppress(Exception):
        ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.base)
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    foreign: list[str] = []
    pg.on(
        "request",
        lambda r: (
            foreign.append(r.url) if not r.url.startswith((served.base, "data:", "blob:")) else None
        ),
    )
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(served.ui.open_url)
    pg.wait_for_selector("#lq input, #lq textarea")
    pg.wait_for_function("window.__launcher && window.__launcher.installed")
    pg.foreign_requests = foreign  # type: ignore[attr-defined]
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()
    assert foreign == [], f"the page talked to other hosts: {foreign}"
    assert errors == [], errors


def _search_box(page: Any) -> Any:
    return page.locator("#lq input, #lq textarea").first


def _wait_rows(page: Any, paths: list[str], timeout: float = 10_000) -> None:
    page.wait_for_function(
        """(want) => {
            const got = Array.from(document.querySelectorAll('#lresults .lrow'))
                .map(r => r.dataset.path);
            return JSON.stringify(got) === JSON.stringify(want);
        }""",
        arg=paths,
        timeout=timeout,
    )


def _row_paths(page: Any) -> list[str]:
    return page.eval_on_selector_all("#lresults .lrow", "rs => rs.map(r => r.dataset.path)")


def _expected(svc: FakeService, text: str, **kw: Any) -> list[str]:
    q = ui.build_query(text, **kw)
    assert q is not None
    return [h.path for h in svc.search(q)]


def _wait_calls(calls: list[tuple[str, ...]], n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(calls) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_focus_typing_shows_results_debounced(page: Any, served: Served) -> None:
    assert page.evaluate("!!document.activeElement.closest('#lq')"), "search box not focused"
    assert "Type to search" in page.inner_text("#lresults")
    text = "invoice total"
    want = _expected(served.svc, text)
    before = len(served.svc.queries)
    page.keyboard.type(text, delay=40)  # faster than the debounce
    typed = time.monotonic()
    _wait_rows(page, want)
    latency = time.monotonic() - typed
    sent = [q.text for q in served.svc.queries[before:]]
    print(f"\nresults {latency * 1000:.0f} ms after the last key; searches sent: {sent}")
    assert sent[-1] == text and len(sent) <= 2, sent
    assert page.locator("#lresults .lrow.sel").count() == 1
    assert "exact" in page.inner_text("#lresults")


def test_typing_right_after_load_still_searches(browser: Any, served: Served) -> None:
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        pg.goto(served.ui.open_url)
        box = pg.wait_for_selector("#lq input, #lq textarea")
        box.type("groceries")  # maybe before the page's script is in place
        _wait_rows(pg, _expected(served.svc, "groceries"))
    finally:
        ctx.close()


def test_arrows_and_enter_open_the_selected_file(
    page: Any, served: Served, os_calls: list[tuple[str, ...]]
) -> None:
    want = _expected(served.svc, "holiday plans lisbon invoice total file")
    assert len(want) >= 3
    _search_box(page).type("holiday plans lisbon invoice total file")
    _wait_rows(page, want)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    assert page.get_attribute("#lresults .lrow.sel", "data-path") == want[1]
    page.keyboard.press("Enter")
    _wait_calls(os_calls, 1)
    assert os_calls == [("xdg-open", want[1])]
    page.wait_for_selector("#ltoast:has-text('Opened')")
    # Ctrl+Enter reveals the selected file (the folder, without a file manager on D-Bus)
    page.keyboard.press("ArrowDown")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
        page.keyboard.press("Control+Enter")
        _wait_calls(os_calls, 2)
    assert os_calls[1] == ("xdg-open", str(Path(want[2]).parent))


def test_type_then_enter_at_once_opens_the_new_top_hit(
    page: Any, served: Served, os_calls: list[tuple[str, ...]]
) -> None:
    _search_box(page).type("holiday lisbon")
    _wait_rows(page, _expected(served.svc, "holiday lisbon"))
    page.keyboard.press("Escape")
    want = _expected(served.svc, "groceries coffee")
    page.keyboard.type("groceries coffee")
    page.keyboard.press("Enter")  # before the debounce fires
    _wait_calls(os_calls, 1)
    assert os_calls == [("xdg-open", want[0])]


def test_buttons_reveal_open_and_copy(
    page: Any, served: Served, os_calls: list[tuple[str, ...]]
) -> None:
    want = _expected(served.svc, "holiday lisbon")
    _search_box(page).type("holiday lisbon")
    _wait_rows(page, want)
    row = page.locator("#lresults .lrow").first
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
        row.locator("button[data-act=reveal]").click()
        _wait_calls(os_calls, 1)
    assert os_calls == [("xdg-open", str(Path(want[0]).parent))]
    row.locator("button[data-act=open]").click()
    _wait_calls(os_calls, 2)
    assert os_calls[1] == ("xdg-open", want[0])
    row.locator("button[data-act=copy]").click()
    page.wait_for_function("window.__launcher.copied")
    assert page.evaluate("window.__launcher.copied") == want[0]
    with contextlib.suppress(Exception):  # clipboard access depends on the browser build
        assert page.evaluate("navigator.clipboard.readText()") == want[0]
    # double-click opens too
    page.locator("#lresults .lrow .lname").first.dblclick()
    _wait_calls(os_calls, 3)
    assert os_calls[2] == ("xdg-open", want[0])


def test_escape_clears(page: Any, served: Served) -> None:
    _search_box(page).type("groceries")
    _wait_rows(page, _expected(served.svc, "groceries"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#lresults .lhint")
    assert _search_box(page).input_value() == ""
    assert page.evaluate("!!document.activeElement.closest('#lq')")


def test_file_names_are_not_markup(page: Any, served: Served) -> None:
    want = _expected(served.svc, "weird markup")
    _search_box(page).type("weird markup")
    _wait_rows(page, want)
    names = page.locator("#lresults .lname").all_inner_texts()
    assert any("<i>weird<i> {{name}} ${x} &amp;" in n for n in names), names
    assert page.locator("#lresults i, #lresults script").count() == 0


def test_image_upload_runs_an_image_query(page: Any, served: Served, tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "query.png"
    Image.new("RGB", (40, 30), (250, 120, 30)).save(img)
    before = len(served.svc.queries)
    page.set_input_files("#limg input[type=file]", str(img))
    page.wait_for_function(
        "document.querySelector('#lresults .lrow') &&"
        " document.querySelector('#lresults .lrow').dataset.path.endsWith('beach sunset.png')"
    )
    image_queries = [q for q in served.svc.queries[before:] if q.image is not None]
    assert image_queries, "no image query"
    sent = image_queries[-1].image  # the upload's path, checked, in this run's folder
    assert Path(sent).is_relative_to(served.upload_dir)
    with Image.open(sent) as got:
        assert got.size == (40, 30)
    # the thumbnail of the image hit loads through /thumb
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#lresults img.lthumb'))"
        ".some(i => i.complete && i.naturalWidth > 0)"
    )


@pytest.mark.parametrize("how", ["paste", "drop"])
def test_image_paste_and_drop_anywhere(page: Any, served: Served, how: str) -> None:
    before = len(served.svc.queries)
    page.evaluate(
        """async (how) => {
            const c = document.createElement('canvas'); c.width = 20; c.height = 10;
            c.getContext('2d').fillRect(0, 0, 20, 10);
            const blob = await new Promise(r => c.toBlob(r, 'image/png'));
            const dt = new DataTransfer();
            dt.items.add(new File([blob], 'pasted.png', {type: 'image/png'}));
            const target = document.querySelector('#lresults');
            if (how === 'paste') {
                target.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt,
                                                                  bubbles: true}));
            } else {
                target.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
            }
        }""",
        how,
    )
    page.wait_for_function(
        "document.querySelector('#lresults .lrow') &&"
        " document.querySelector('#lresults .lrow').dataset.path.endsWith('beach sunset.png')"
    )
    image_queries = [q for q in served.svc.queries[before:] if q.image is not None]
    assert image_queries, "no image query"
    from PIL import Image

    with Image.open(image_queries[-1].image) as got:
        assert got.size == (20, 10)


def test_rerank_toggle_reorders(page: Any, served: Served) -> None:
    text = "holiday plans lisbon invoice total file"
    q = ui.build_query(text)
    assert q is not None
    embed = [h.path for h in served.svc.search(q)]
    reranked = [h.path for h in served.svc.rerank(q, served.svc.search(q))]
    assert embed != reranked
    page.evaluate("""() => {
        window.__frames = [];
        new MutationObserver(() => {
            const info = document.querySelector('#lresults .linfo');
            const rows = Array.from(document.querySelectorAll('#lresults .lrow'))
                .map(r => r.dataset.path);
            if (info) window.__frames.push({state: info.dataset.state, rows});
        }).observe(document.querySelector('#lresults'), {childList: true, subtree: true});
    }""")
    page.locator("#lrerank input[type=checkbox]").check()
    _search_box(page).click()
    _search_box(page).type(text)
    page.wait_for_selector('#lresults .linfo[data-state="reranked"]')
    frames = page.evaluate("window.__frames")
    states = [f["state"] for f in frames if f["rows"]]
    assert "reranking" in states and states[-1] == "reranked"
    first = next(f for f in frames if f["state"] == "reranking")
    assert first["rows"] == embed  # embedding results show at once
    assert _row_paths(page) == reranked
    assert page.locator("#lresults .lrr").count() == len(reranked)


def test_filters_kind(page: Any, served: Served) -> None:
    page.locator("#lfilters").get_by_text("Filters").first.click()
    page.locator("#lkinds").get_by_label("image").check()
    _search_box(page).type("notes plans file sunset")
    want = _expected(served.svc, "notes plans file sunset", kinds=["image"])
    _wait_rows(page, want)
    assert served.svc.queries[-1].kinds == frozenset({"image"})


def test_status_and_reindex(page: Any, served: Served) -> None:
    page.wait_for_function("document.querySelector('#lstatus').innerText.includes('files')")
    status = page.inner_text("#lstatus")
    assert f"{len(served.svc.paths)} files" in status
    assert "2 pending" in status and "1 failed" in status
    before = served.svc.reindex_calls
    page.click("#lreindex")
    deadline = time.monotonic() + 5
    while served.svc.reindex_calls == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.svc.reindex_calls == before + 1


def test_search_error_is_shown(page: Any, served: Served) -> None:
    served.svc.fail_next = "no embedding model: run `launcher.py models download`"
    _search_box(page).type("anything")
    page.wait_for_selector("#lresults .lerror:has-text('no embedding model')")


def test_no_reranker_is_explained(browser: Any, tmp_path: Path) -> None:
    svc = FakeService(tmp_path / "root", can_rerank=False)
    with ui.serve(svc, port=0, open_browser=False, hotkey=None) as running:
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.goto(running.open_url)
        pg.wait_for_selector("#lq input, #lq textarea")
        assert pg.locator("#lrerank input[type=checkbox]").is_disabled()
        assert "no reranker" in pg.inner_text("#lrerank")
        _search_box(pg).type("holiday")
        _wait_rows(pg, _expected(svc, "holiday"))
        ctx.close()


def test_screenshot_of_the_page(page: Any, served: Served) -> None:
    """Leaves a screenshot for people reviewing the look (in the temp dir)."""
    _search_box(page).type("notes plans file invoice")
    _wait_rows(page, _expected(served.svc, "notes plans file invoice"))
    out = Path(tempfile.gettempdir()) / "launcher-ui-test.png"
    page.screenshot(path=str(out))
    assert out.stat().st_size > 1000


def _open(browser: Any, running: ui.RunningUI, width: int = 1000) -> tuple[Any, Any]:
    ctx = browser.new_context(viewport={"width": width, "height": 760})
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors  # type: ignore[attr-defined]
    pg.goto(running.open_url)
    pg.wait_for_selector("#lq input, #lq textarea")
    pg.wait_for_function("window.__launcher && window.__launcher.installed")
    return ctx, pg


def _chips(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#lchips .lchip", "cs => cs.map(c => c.dataset.filter + ':' + c.innerText.trim())"
    )


def test_filter_chips_show_active_filters_and_remove_them(page: Any, served: Served) -> None:
    assert _chips(page) == []
    page.locator("#lfilters").get_by_text("Filters").first.click()
    page.locator("#lkinds").get_by_label("pdf").check()
    folder = page.locator("#lfolder input, #lfolder textarea").first
    folder.fill(str(served.root / "docs"))
    folder.press("Enter")
    page.locator("#lfilters").get_by_text("Filters").first.click()  # closed again
    page.wait_for_function("document.querySelectorAll('#lchips .lchip').length === 2")
    chips = _chips(page)
    assert chips[0].startswith("kinds:kind: pdf") and chips[1].startswith("folder:in ")
    assert "docs" in chips[1]
    text = "notes plans file invoice total"
    _search_box(page).click()
    _search_box(page).type(text)
    _wait_rows(page, _expected(served.svc, text, kinds=["pdf"], folder=str(served.root / "docs")))
    # the kind chip's x (keyboard: it is a button) clears the kind and searches again
    page.locator('#lchips button[data-clear="kinds"]').focus()
    page.keyboard.press("Enter")
    _wait_rows(page, _expected(served.svc, text, folder=str(served.root / "docs")))
    assert served.svc.queries[-1].kinds == frozenset()
    page.wait_for_function("document.querySelectorAll('#lchips .lchip').length === 1")
    assert [c.split(":")[0] for c in _chips(page)] == ["folder"]
    assert not page.locator("#lkinds").get_by_label("pdf").is_checked()
    # the folder chip (a filter searched on Enter) clears and searches too
    page.locator('#lchips button[data-clear="folder"]').click()
    _wait_rows(page, _expected(served.svc, text))
    page.wait_for_function("!document.querySelector('#lchips .lchip')")
    assert served.svc.queries[-1].folder is None
    assert folder.input_value() == ""


def test_status_line_fits_and_never_flashes(page: Any, served: Served) -> None:
    served.svc.message = "indexing: embedding 1234/56789 · watching 12 folders · " + "x" * 80
    served.svc.queued = 4321
    try:
        page.wait_for_function("document.querySelector('#lstatus').innerText.includes('4,321')")
        page.evaluate("""() => {
            window.__seen = [];
            const el = document.querySelector('#lstatus');
            new MutationObserver(() => window.__seen.push(el.innerText.trim()))
                .observe(el, {childList: true, subtree: true, characterData: true,
                              attributes: true});
        }""")
        time.sleep(3.5)  # one status refresh (UIOptions.status_every = 3 s) or more
        seen = page.evaluate("window.__seen")
        assert seen, "the status line never refreshed"
        assert all(s.startswith(f"{len(served.svc.paths)} files") for s in seen), seen
        box = page.evaluate("""() => {
            const s = document.querySelector('#lstatus .lstat');
            const r = s.getBoundingClientRect();
            return {right: r.right, width: window.innerWidth, title: s.title,
                    clipped: s.scrollWidth > s.clientWidth,
                    ellipsis: getComputedStyle(s).textOverflow,
                    reindex: document.querySelector('#lreindex').getBoundingClientRect().left};
        }""")
        assert box["right"] <= box["reindex"] <= box["width"], box  # not under the button
        assert box["ellipsis"] == "ellipsis" and box["clipped"]
        assert "4,321 queued" in box["title"] and "x" * 80 in box["title"]
    finally:
        served.svc.message = "watching 1 folder"
        served.svc.queued = 0


def test_status_shows_the_current_count_at_once(browser: Any, tmp_path: Path) -> None:
    svc = FakeService(tmp_path / "root")
    opts = ui.UIOptions(status_every=3600)  # no refresh while the test runs
    with ui.serve(svc, port=0, open_browser=False, hotkey=None, options=opts) as running:
        svc.paths |= {f"/later/{i}.txt" for i in range(5)}  # indexed after launch
        ctx, pg = _open(browser, running)
        try:
            want = f"{len(svc.paths)} files"
            pg.wait_for_function(
                "(w) => document.querySelector('#lstatus').innerText.includes(w)", arg=want
            )
        finally:
            ctx.close()


def test_show_more_loads_the_next_page(browser: Any, tmp_path: Path) -> None:
    svc = FakeService(tmp_path / "root")
    text = "invoice total milk tax sunset cat weird plans"
    every = _expected(svc, text, top=50)
    assert len(every) >= 5
    with ui.serve(
        svc, port=0, open_browser=False, hotkey=None, options=ui.UIOptions(top=2)
    ) as running:
        ctx, pg = _open(browser, running)
        try:
            _search_box(pg).type(text)
            _wait_rows(pg, every[:2])
            assert f"2 of {len(every)} results" in pg.inner_text("#lresults .linfo")
            # keyboard: down past the last row reaches "Show more", Enter loads the next page
            pg.keyboard.press("ArrowDown")
            pg.keyboard.press("ArrowDown")
            assert pg.evaluate("document.activeElement.classList.contains('lmore')")
            pg.keyboard.press("Enter")
            _wait_rows(pg, every[:4])
            assert svc.queries[-1].top == 4
            assert pg.get_attribute("#lresults .lrow.sel", "data-path") == every[2]
            assert pg.evaluate("!!document.activeElement.closest('#lq')")
            while pg.locator("#lresults .lmore").count():  # the mouse works too
                n = len(_row_paths(pg))
                pg.click("#lresults .lmore")
                _wait_rows(pg, every[: n + 2])
            assert _row_paths(pg) == every
            assert f"{len(every)} results" in pg.inner_text("#lresults .linfo")
            # a new query starts again at one page
            pg.keyboard.press("Escape")
            _search_box(pg).type("invoice")
            _wait_rows(pg, _expected(svc, "invoice", top=2))
            assert svc.queries[-1].top == 2
            assert pg.errors == []  # type: ignore[attr-defined]
        finally:
            ctx.close()


def test_no_outbound_connections(served: Served) -> None:
    """Nothing the server did (start, searches, thumbnails, the browser tests) left this machine."""
    assert served.outbound == []


def _launch_args(**kw: Any) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    ui.add_launch_arguments(parser)
    args = parser.parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_launch_focuses_a_running_ui(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    ui.write_instance(served.ui)
    opened: list[str] = []
    monkeypatch.setattr("launcher.hotkey.webbrowser.open", lambda url: opened.append(url))
    monkeypatch.setattr("launcher.hotkey.focus_window", lambda title=None: False)
    lines: list[str] = []

    def factory() -> Any:
        raise AssertionError("a second back end must not start")

    try:
        assert ui.run_launch(factory, _launch_args(), echo=lines.append) == 0
    finally:
        ui.clear_instance(served.ui)
    assert len(opened) == 1 and opened[0].startswith(served.ui.url + "?key=")
    assert "already running" in lines[0]


def test_launch_serves_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _launch_args()
    assert (args.port, args.host, args.no_browser) == (None, "127.0.0.1", False)
    assert args.hotkey == DEFAULT_HOTKEY
    seen: dict[str, Any] = {}

    class Stub(ui.RunningUI):
        def wait(self, timeout: float | None = None) -> None:
            seen["written"] = ui.instance_file().exists()
            raise KeyboardInterrupt

        def close(self) -> None:
            seen["closed"] = True

    def fake_serve(service: Any, **kw: Any) -> ui.RunningUI:
        seen["serve"] = kw
        return Stub(
            url="http://127.0.0.1:9/",
            host="127.0.0.1",
            port=9,
            hotkey=HotkeyUnavailable("<ctrl>+<alt>+<space>", "no display"),
            warnings=["listening on 0.0.0.0"],
            instance="abc",
        )

    class Svc:
        closed = False

        def close(self) -> None:
            Svc.closed = True

    monkeypatch.setattr(ui, "serve", fake_serve)
    bound: list[socket.socket] = []
    monkeypatch.setattr(
        ui, "bind", lambda host, port, default: bound.append(ui_bind("127.0.0.1", 0)) or bound[-1]
    )
    lines: list[str] = []
    args = _launch_args(no_browser=True, hotkey="off", host="0.0.0.0")
    rc = ui.run_launch(Svc, args, echo=lines.append)
    assert rc == 0 and seen["written"] and seen["closed"] and Svc.closed
    assert seen["serve"]["hotkey"] is None and seen["serve"]["open_browser"] is False
    assert not ui.instance_file().exists()
    assert seen["serve"]["sock"] is bound[0]
    bound[0].close()
    text = "\n".join(lines)
    assert "WARNING" in text and "http://127.0.0.1:9/" in text and "no display" in text
