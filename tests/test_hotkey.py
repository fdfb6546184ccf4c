"""The global hotkey: combo parsing, no-display messages, and a real press under Xvfb."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from launcher import hotkey
from launcher.hotkey import (
    DEFAULT_HOTKEY,
    Focuser,
    HotkeyHandle,
    HotkeyUnavailable,
    display_problem,
    normalize_combo,
    start_hotkey,
    title_pattern,
)


@pytest.mark.parametrize(
    ("combo", "expected"),
    [
        ("<ctrl>+<alt>+space", "<ctrl>+<alt>+<space>"),
        ("Ctrl+Alt+Space", "<ctrl>+<alt>+<space>"),
        ("<cmd>+k", "<cmd>+k"),
        ("control + option + return", "<ctrl>+<alt>+<enter>"),
        ("super+shift+F1", "<cmd>+<shift>+<f1>"),
        (DEFAULT_HOTKEY, DEFAULT_HOTKEY),
    ],
)
def test_normalize_combo(combo: str, expected: str) -> None:
    assert normalize_combo(combo) == expected


@pytest.mark.parametrize("combo", ["", "ctrl++k", "+"])
def test_normalize_combo_rejects(combo: str) -> None:
    with pytest.raises(ValueError):
        normalize_combo(combo)


def test_display_problem_messages() -> None:
    assert display_problem({"DISPLAY": ":0"}, "linux") is None
    assert display_problem({}, "darwin") is None
    assert display_problem({}, "win32") is None
    msg = display_problem({}, "linux")
    assert msg and "no display" in msg
    msg = display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert msg and "Wayland" in msg and "launcher.py launch" in msg


def test_no_display_gives_a_message_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hotkey.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    result = start_hotkey("ctrl+alt+space", lambda: None)
    assert isinstance(result, HotkeyUnavailable)
    assert "Wayland" in str(result) and result.combo == "<ctrl>+<alt>+<space>"


def test_bad_combo_is_unavailable() -> None:
    result = start_hotkey("ctrl++", lambda: None)
    assert isinstance(result, HotkeyUnavailable)


def test_pynput_import_error_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hotkey.sys, "platform", "win32")  # skip the X checks

    def broken() -> None:
        raise ImportError("this platform is not supported: no backend")

    monkeypatch.setattr(hotkey, "_import_keyboard", broken)
    result = start_hotkey("ctrl+alt+space", lambda: None)
    assert isinstance(result, HotkeyUnavailable)
    assert "pynput cannot start" in result.reason


def test_focuser_opens_then_refocuses(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(hotkey.webbrowser, "open", lambda url: opened.append(url))
    focused = [False]
    monkeypatch.setattr(hotkey, "focus_window", lambda title=None: focused[0])
    f = Focuser("http://127.0.0.1:1/")
    assert f() == "opened"
    assert f() == "reopened"  # no window found: open the URL again
    focused[0] = True
    assert f() == "focused"
    assert opened == ["http://127.0.0.1:1/"] * 2


def test_focus_window_runs_xdotool(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(hotkey.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(hotkey.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(hotkey, "_run_quiet", lambda argv, timeout=3.0: calls.append(argv) or 0)
    assert hotkey.focus_window("Launcher Search")
    assert calls == [
        ["xdotool", "search", "--limit", "1", "--name", "^Launcher Search", "windowactivate"]
    ]
    assert title_pattern("a.b (c)") == "^a\\.b \\(c\\)"


# --------------------------------------------------------------------------- under Xvfb


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A private X server on a free display number (Xvfb picks it: -displayfd)."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb not installed (apt-get install xvfb)")
    if not shutil.which("xdotool"):
        pytest.skip("xdotool not installed (apt-get install xdotool)")
    if importlib.util.find_spec("pynput") is None:  # importing it needs a display
        pytest.skip("pynput not installed (pip install pynput)")
    r, w = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    number = b""
    deadline = time.monotonic() + 10
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(r, 16)
        if not chunk:
            break
        number += chunk
    os.close(r)
    if not number.strip():
        proc.kill()
        pytest.skip("Xvfb did not start")
    display = ":" + number.decode().strip()
    try:
        yield display
    finally:
        _xdotool(display, "key", "shift")  # lets stopped pynput listeners notice and exit
        time.sleep(0.2)
        proc.terminate()
        proc.wait(5)


def _xdotool(display: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPLAY": display}
    return subprocess.run(
        ["xdotool", *args], env=env, capture_output=True, text=True, timeout=10, check=False
    )


def test_hotkey_fires_under_xvfb(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    pressed = threading.Event()
    calls: list[float] = []

    def on_press() -> None:
        calls.append(time.monotonic())
        pressed.set()

    handle = start_hotkey(DEFAULT_HOTKEY, on_press)
    assert isinstance(handle, HotkeyHandle), str(handle)
    try:
        assert handle.running
        assert _xdotool(xvfb, "key", "ctrl+alt+space").returncode == 0
        assert pressed.wait(5), "the hotkey callback did not run"
        # another combo does not fire it
        pressed.clear()
        assert _xdotool(xvfb, "key", "ctrl+space").returncode == 0
        assert not pressed.wait(0.5)
        assert len(calls) == 1
    finally:
        handle.stop()
    assert not handle.running


def test_custom_hotkey_under_xvfb(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    pressed = threading.Event()
    handle = start_hotkey("ctrl+shift+k", pressed.set)
    assert isinstance(handle, HotkeyHandle), str(handle)
    try:
        assert _xdotool(xvfb, "key", "ctrl+shift+k").returncode == 0
        assert pressed.wait(5)
    finally:
        handle.stop()


def test_the_x_server_keeps_a_client_while_the_hotkey_starts(
    xvfb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare X server (Xvfb without -noreset, as here) resets when its last client leaves;
    the probe used to close before pynput connected, resetting the server under it. Every
    connection this process makes is counted: it never drops to none while starting."""
    import Xlib.display

    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    live = [0]
    counts: list[int] = []
    real = Xlib.display.Display

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            live[0] += 1
            counts.append(live[0])

        def close(self) -> None:
            live[0] -= 1
            counts.append(live[0])
            super().close()

    monkeypatch.setattr(Xlib.display, "Display", Counted)
    pressed = threading.Event()
    handle = start_hotkey("ctrl+shift+j", pressed.set)
    assert isinstance(handle, HotkeyHandle), str(handle)
    try:
        assert counts and 0 not in counts, counts
        assert _xdotool(xvfb, "key", "ctrl+shift+j").returncode == 0
        assert pressed.wait(5)
    finally:
        handle.stop()


def test_wrong_display_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("Xlib") is None:
        pytest.skip("python-xlib not installed (pip install pynput)")
    monkeypatch.setattr(hotkey.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":4242")  # nothing listens there
    result = start_hotkey(DEFAULT_HOTKEY, lambda: None)
    assert isinstance(result, HotkeyUnavailable)
    assert "X server" in result.reason


def test_title_pattern_finds_the_browser_window(xvfb: str) -> None:
    """The xdotool search finds the page's window, not a terminal running `launch`."""
    from Xlib import X, display

    d = display.Display(xvfb)
    try:
        screen = d.screen()
        windows = []
        for title in ("Launcher Search - Chromium", "python launcher.py launch"):
            win = screen.root.create_window(0, 0, 50, 50, 0, screen.root_depth, X.InputOutput)
            win.set_wm_name(title)
            win.map()
            windows.append(win)
        d.sync()
        found = _xdotool(xvfb, "search", "--name", title_pattern())
        ids = {int(x) for x in found.stdout.split()}
        assert ids == {windows[0].id}
    finally:
        d.close()
