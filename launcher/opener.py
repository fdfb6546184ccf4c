"""Open a file with its default application, or show it in the file manager.

Every OS call goes through ``_run(argv)`` (tests replace it). Callers check that a path
is in the index first (the UI does, through ``SearchService.is_indexed``). An opener that
exits with an error (xdg-open 4: no application for the file, macOS ``open`` 1) raises
``OpenError`` with a hint; one still running after ``OPEN_WAIT`` seconds has started the
application (some openers run it in the foreground) and counts as success.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import LauncherError


class OpenError(LauncherError):
    """A file cannot be opened or revealed (missing, no opener, or the opener failed)."""


DBUS_TIMEOUT = 3.0  # seconds to wait for the file manager to answer ShowItems
OPEN_WAIT = 2.0  # seconds to wait for an opener's verdict (failures exit at once)


@dataclass(frozen=True)
class OpenResult:
    """What was done: the command run and its exit code (None: still running, or detached)."""

    path: str
    argv: tuple[str, ...]
    exit_code: int | None = None


def _run(argv: Sequence[str], *, wait: float | None = None) -> int | None:
    """The final OS call: start ``argv`` without a shell.

    Detached by default (returns None); with ``wait`` seconds, waits and returns the exit
    code (None if it is still running then). ``argv[0] == "startfile"`` means
    ``os.startfile(argv[1])`` (returns 0; Windows raises when no application is registered).
    """
    if argv and argv[0] == "startfile":
        try:
            os.startfile(argv[1])  # type: ignore[attr-defined]  # Windows only
        except OSError as err:
            raise OpenError(
                f"Windows cannot open {Path(argv[1]).name}: {err.strerror or err}; "
                "choose a default app for this type of file (Settings > Apps > Default apps)"
            ) from err
        return 0
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=sys.platform != "win32",
            close_fds=True,
        )
    except OSError as err:
        tip = "; install xdg-utils" if argv[0] == "xdg-open" else ""
        raise OpenError(f"cannot run {argv[0]}: {err.strerror or err}{tip}") from err
    if wait is None:
        return None
    try:
        return proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        return None  # still running: reaped by subprocess later


# What an opener's exit code means, and what the user can do about it.
_XDG_OPEN_CODES = {
    1: "bad command line",
    2: "the file does not exist",
    3: "a tool it needs is missing",
    4: "no application could open it",
}


def _hint(argv: Sequence[str]) -> str:
    if argv[0] == "xdg-open":
        return (
            "set a default application for this type of file (your file manager's "
            "'Open With', or `xdg-mime default APP.desktop TYPE`), or use Copy path"
        )
    if argv[0] == "open":
        return "choose an application in Finder (Get Info > Open with), or use Copy path"
    return "use Copy path and open it yourself"


def _checked(path: str, argv: tuple[str, ...], code: int | None, verb: str) -> OpenResult:
    """``OpenResult`` if the opener succeeded (or is still running), else ``OpenError``."""
    if code is None or code == 0:
        return OpenResult(path, argv, code)
    meaning = _XDG_OPEN_CODES.get(code, "") if argv[0] == "xdg-open" else ""
    why = f"exit {code}: {meaning}" if meaning else f"exit {code}"
    raise OpenError(f"could not {verb} {Path(path).name}: {argv[0]} failed ({why}); {_hint(argv)}")


def _existing(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.is_absolute():
        raise OpenError(f"not an absolute path: {path}")
    if not p.exists():
        raise OpenError(f"no such file: {path}")
    return str(p)


def open_argv(path: str) -> tuple[str, ...]:
    """The command that opens ``path`` with its default application on this OS."""
    if sys.platform == "darwin":
        return ("open", path)
    if sys.platform == "win32":
        return ("startfile", path)
    return ("xdg-open", path)


def _dbus_show_items_argv(path: str) -> tuple[str, ...] | None:
    """freedesktop ``FileManager1.ShowItems`` through dbus-send or gdbus, if installed."""
    uri = Path(path).as_uri()
    if shutil.which("dbus-send"):
        return (
            "dbus-send",
            "--session",
            "--print-reply=literal",
            "--dest=org.freedesktop.FileManager1",
            "/org/freedesktop/FileManager1",
            "org.freedesktop.FileManager1.ShowItems",
            f"array:string:{uri}",
            "string:",
        )
    if shutil.which("gdbus"):
        return (
            "gdbus",
            "call",
            "--session",
            "--dest",
            "org.freedesktop.FileManager1",
            "--object-path",
            "/org/freedesktop/FileManager1",
            "--method",
            "org.freedesktop.FileManager1.ShowItems",
            f"['{uri}']",
            "",
        )
    return None


def _file_manager_available() -> bool:
    """True if a session bus is reachable (the file manager is then started on demand)."""
    return bool(os.environ.get("DBUS_SESSION_BUS_ADDRESS"))


def reveal_argv(path: str) -> tuple[str, ...]:
    """The command that shows ``path`` selected in the file manager on this OS.

    On Linux this is the freedesktop D-Bus call if a session bus is there; ``reveal_path``
    falls back to opening the folder when that call fails.
    """
    if sys.platform == "darwin":
        return ("open", "-R", path)
    if sys.platform == "win32":
        return ("explorer", f"/select,{path}")
    if _file_manager_available():
        argv = _dbus_show_items_argv(path)
        if argv is not None:
            return argv
    return _folder_argv(path)


def _folder_argv(path: str) -> tuple[str, ...]:
    return ("xdg-open", str(Path(path).parent))  # the folder, without selecting the file


def open_path(path: str | os.PathLike[str]) -> OpenResult:
    """Open ``path`` with the default application (raises ``OpenError``)."""
    p = _existing(path)
    argv = open_argv(p)
    return _checked(p, argv, _run(argv, wait=OPEN_WAIT), "open")


def reveal_path(path: str | os.PathLike[str]) -> OpenResult:
    """Show ``path`` in the file manager, selected where the OS supports it."""
    p = _existing(path)
    argv = reveal_argv(p)
    if argv[0] in ("dbus-send", "gdbus"):
        if _run(argv, wait=DBUS_TIMEOUT) == 0:
            return OpenResult(p, argv, 0)
        argv = _folder_argv(p)  # no file manager implements ShowItems
    if argv[0] == "explorer":  # explorer /select exits 1 even when it worked
        return OpenResult(p, argv, _run(argv))
    return _checked(p, argv, _run(argv, wait=OPEN_WAIT), "show")
