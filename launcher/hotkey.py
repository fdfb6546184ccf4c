"""A global hotkey (pynput) that brings the search page to the front.

What each desktop needs:

- **X11** (Linux, BSD): works as is; the X server needs the RECORD extension (all common
  servers have it).
- **macOS**: the terminal (or Python) that runs ``launcher.py launch`` needs the
  Accessibility permission (System Settings > Privacy & Security > Accessibility);
  without it no key reaches the app and a message says so.
- **Wayland**: programs cannot watch global keys. Under XWayland the hotkey only fires
  while an X11 window has focus. Instead bind ``launcher.py launch`` to a shortcut in the
  desktop's keyboard settings: it brings a running UI to the front (or starts one).
- **Windows**: works as is.

``start_hotkey`` never raises into the UI: it returns a ``HotkeyUnavailable`` with the
reason instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_HOTKEY = "<ctrl>+<alt>+<space>"
WINDOW_TITLE = "Launcher Search"  # the page title: how the browser window is found again
READY_TIMEOUT = 5.0  # seconds to wait for the key listener to start
REPEAT_GAP = 0.4  # ignore presses closer together than this (key repeat)

_ALIASES = {
    "control": "ctrl",
    "ctl": "ctrl",
    "option": "alt",
    "opt": "alt",
    "command": "cmd",
    "super": "cmd",
    "win": "cmd",
    "meta": "cmd",
    "return": "enter",
    "escape": "esc",
    "spacebar": "space",
}

WAYLAND_HINT = (
    "bind `launcher.py launch` to a shortcut in your desktop's keyboard settings "
    "(it brings a running UI to the front)"
)


@dataclass(frozen=True)
class HotkeyUnavailable:
    """No global hotkey: why, in one line (the UI keeps working without it)."""

    combo: str
    reason: str

    def __str__(self) -> str:
        return f"global hotkey {self.combo} unavailable: {self.reason}"


class HotkeyHandle:
    """A running global hotkey; ``stop()`` releases it."""

    def __init__(
        self, combo: str, listener: Any, note: str = "", stopped: threading.Event | None = None
    ) -> None:
        self.combo = combo
        self.note = note  # a caveat, e.g. XWayland
        self._listener = listener
        self._stopped = stopped or threading.Event()

    @property
    def running(self) -> bool:
        return bool(self._listener.running)

    def stop(self, timeout: float = 0.5) -> None:
        """Stop listening (no more callbacks). The listener thread may linger, harmless,
        until the next key event on X11."""
        self._stopped.set()
        self._listener.stop()
        _flush_x(self._listener)
        if self._listener is not threading.current_thread() and self._listener.is_alive():
            threading.Thread.join(self._listener, timeout)

    def __str__(self) -> str:
        text = f"global hotkey {self.combo}"
        return f"{text} ({self.note})" if self.note else text


def _flush_x(listener: Any) -> None:
    """pynput's X backend queues its stop request without sending it (the listener would
    only notice at the next key event); flush it so the thread ends now."""
    display = getattr(listener, "_display_record", None)
    if display is None:
        return
    try:
        display.flush()
    except Exception:  # the connection may already be gone
        log.debug("flushing the X connection failed", exc_info=True)


def normalize_combo(combo: str) -> str:
    """``"Ctrl+Alt+Space"`` -> ``"<ctrl>+<alt>+<space>"`` (pynput's syntax).

    Single characters stay bare (``"<cmd>+k"``); key names get angle brackets.
    Raises ``ValueError`` for an empty or malformed combo.
    """
    text = combo.strip()
    if not text:
        raise ValueError("empty hotkey")
    parts = []
    for raw in text.split("+"):
        part = raw.strip().lower()
        if part.startswith("<") and part.endswith(">"):
            part = part[1:-1].strip()
        if not part:
            raise ValueError(f"malformed hotkey: {combo!r}")
        part = _ALIASES.get(part, part)
        parts.append(part if len(part) == 1 else f"<{part}>")
    return "+".join(parts)


def display_problem(env: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why no global hotkey can work in this session, or None if it may."""
    env = dict(os.environ) if env is None else env
    platform = sys.platform if platform is None else platform
    if platform in ("darwin", "win32"):
        return None
    if env.get("DISPLAY"):
        return None
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        return f"Wayland without X11 (no DISPLAY): global keys cannot be watched; {WAYLAND_HINT}"
    return "no display (DISPLAY is not set): run the UI in a desktop session"


def _wayland_note(env: dict[str, str]) -> str:
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        return f"Wayland session: fires only while an X11 window has focus; {WAYLAND_HINT}"
    return ""


def _x_server_problem() -> str | None:
    """Check the X server the listener will use: reachable, with the RECORD extension."""
    try:
        import Xlib.display
        import Xlib.error
    except ImportError:
        return "python-xlib is missing (pip install pynput)"
    try:
        display = Xlib.display.Display()
    except (Xlib.error.DisplayError, OSError) as err:
        return f"cannot connect to the X server {os.environ.get('DISPLAY', '')}: {err}"
    try:
        if not display.has_extension("RECORD"):
            return "the X server has no RECORD extension (needed to watch keys)"
    finally:
        display.close()
    return None


def _import_keyboard() -> Any:
    from pynput import keyboard

    return keyboard


def start_hotkey(combo: str, on_press: Callable[[], object]) -> HotkeyHandle | HotkeyUnavailable:
    """Watch ``combo`` globally and call ``on_press`` (on its own thread) when pressed."""
    try:
        combo = normalize_combo(combo)
    except ValueError as err:
        return HotkeyUnavailable(combo, str(err))
    problem = display_problem()
    if problem:
        return HotkeyUnavailable(combo, problem)
    uses_x = sys.platform not in ("darwin", "win32")
    if uses_x:
        problem = _x_server_problem()
        if problem:
            return HotkeyUnavailable(combo, problem)
    try:
        keyboard = _import_keyboard()
    except ImportError as err:  # pynput missing, or no backend for this session
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "pynput missing"
        return HotkeyUnavailable(combo, f"pynput cannot start: {reason}")

    last = [0.0]
    stopped = threading.Event()

    def fire() -> None:
        if stopped.is_set():
            return
        now = time.monotonic()
        if now - last[0] < REPEAT_GAP:
            return
        last[0] = now
        threading.Thread(target=_call, args=(on_press,), name="hotkey-action", daemon=True).start()

    try:
        listener = keyboard.GlobalHotKeys({combo: fire})
    except ValueError as err:
        return HotkeyUnavailable(combo, f"not a key combination pynput knows: {err}")
    listener.start()
    if not _wait_ready(listener, READY_TIMEOUT):
        stopped.set()  # not listener.stop(): on a listener that never got ready it blocks
        return HotkeyUnavailable(combo, "the keyboard listener did not start")
    if getattr(listener, "IS_TRUSTED", True) is False:  # macOS without Accessibility
        listener.stop()
        return HotkeyUnavailable(
            combo,
            "macOS has not given this terminal/Python the Accessibility permission "
            "(System Settings > Privacy & Security > Accessibility)",
        )
    note = _wayland_note(dict(os.environ)) if uses_x else ""
    return HotkeyHandle(combo, listener, note, stopped)


def _wait_ready(listener: Any, timeout: float) -> bool:
    ready = threading.Event()

    def waiter() -> None:
        listener.wait()
        ready.set()

    threading.Thread(target=waiter, name="hotkey-wait", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if not listener.is_alive() or time.monotonic() > deadline:
            return False
    return True


def _call(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # a failing action must not kill the listener
        log.exception("hotkey action failed")


def _run_quiet(argv: list[str], timeout: float = 3.0) -> int:
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        ).returncode
    except (OSError, subprocess.TimeoutExpired):
        return -1


def focus_window(title: str = WINDOW_TITLE) -> bool:
    """Raise a browser window whose title starts with ``title`` (X11 with xdotool only)."""
    if sys.platform in ("darwin", "win32") or not os.environ.get("DISPLAY"):
        return False
    if not shutil.which("xdotool"):
        return False
    argv = ["xdotool", "search", "--limit", "1", "--name", title_pattern(title), "windowactivate"]
    return _run_quiet(argv) == 0


def title_pattern(title: str = WINDOW_TITLE) -> str:
    """xdotool's regex for windows whose title starts with ``title``."""
    return "^" + "".join(c if c.isalnum() or c == " " else "\\" + c for c in title)


class Focuser:
    """Brings the page at ``url`` to the front: opens it the first time, then re-focuses.

    Re-focusing raises the existing browser window where the OS allows it (X11 with
    xdotool); elsewhere it opens the URL again (the browser comes to the front). ``url``
    may be a function that makes a new URL for each opening (a single-use link).
    """

    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        opened: bool = False,
        title: str = WINDOW_TITLE,
    ) -> None:
        self.url = url
        self.title = title
        self.opened = opened
        self._lock = threading.Lock()

    def _open(self) -> None:
        webbrowser.open(self.url() if callable(self.url) else self.url)

    def __call__(self) -> str:
        """Returns what was done: "opened", "focused" or "reopened"."""
        with self._lock:
            if not self.opened:
                self._open()
                self.opened = True
                return "opened"
            if focus_window(self.title):
                return "focused"
            self._open()
            return "reopened"


def bring_to_front(url: str, *, opened: bool = True) -> str:
    """One-shot ``Focuser``: for a second ``launch`` while a UI is already running."""
    return Focuser(url, opened=opened)()
