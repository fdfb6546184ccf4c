"""Open and Reveal check what the system opener answered (a real process on PATH)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from ui_fake import FakeService

from launcher import opener, ui

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake openers are shell scripts")


def fake_opener(folder: Path, name: str, body: str) -> Path:
    """An executable ``name`` in ``folder`` that records its arguments and runs ``body``."""
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/calls"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder / "calls"


@pytest.fixture
def linux(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Linux without a session bus (Reveal opens the folder with xdg-open); PATH starts with
    a folder for fake openers."""
    bin_dir = tmp_path / "bin"
    monkeypatch.setattr(opener.sys, "platform", "linux")
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def test_an_opener_that_fails_is_reported_with_a_hint(linux: Path, tmp_path: Path) -> None:
    calls = fake_opener(linux, "xdg-open", "exit 4")  # xdg-open 4: "the action failed"
    f = tmp_path / "report.xyz"
    f.write_text("x")
    with pytest.raises(opener.OpenError) as err:
        opener.open_path(f)
    msg = str(err.value)
    assert "report.xyz" in msg and "exit 4" in msg and "default application" in msg
    with pytest.raises(opener.OpenError, match="exit 4"):
        opener.reveal_path(f)
    assert calls.read_text().splitlines() == [str(f), str(tmp_path)]


def test_an_opener_that_succeeds_or_keeps_running_is_success(
    linux: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("x")
    fake_opener(linux, "xdg-open", "exit 0")
    assert opener.open_path(f).exit_code == 0
    # some openers run the application in the foreground: still running means it started
    monkeypatch.setattr(opener, "OPEN_WAIT", 0.3)
    fake_opener(linux, "xdg-open", "sleep 5")
    result = opener.open_path(f)
    assert result.exit_code is None and result.argv == ("xdg-open", str(f))


def test_no_opener_installed(linux: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(linux))  # nothing there
    f = tmp_path / "a.txt"
    f.write_text("x")
    with pytest.raises(opener.OpenError, match="cannot run xdg-open.*xdg-utils"):
        opener.open_path(f)


def test_the_page_shows_the_failure(linux: Path, tmp_path: Path) -> None:
    fake_opener(linux, "xdg-open", "exit 4")
    svc = FakeService(tmp_path / "root")
    path = sorted(svc.paths)[0]
    for op in ("open", "reveal"):
        answer = ui._act(svc, op, path)
        assert answer["ok"] is False and "exit 4" in answer["message"], answer
    fake_opener(linux, "xdg-open", "exit 0")
    answer = ui._act(svc, "open", path)
    assert answer == {"ok": True, "message": f"Opened {Path(path).name}"}
