"""Reading a file of the index on a request's behalf: only the file that was indexed.

A path in the index may have been replaced since it was indexed (by a symlink to a secret,
a FIFO, a device, a swapped parent folder). The search page must not follow it. A file
qualifies when it is a regular file, not a symlink (unless the index follows symlinks),
with the size and modification time the index recorded. Reads open the file without
following a final symlink and without blocking, and check the open file itself, so a swap
between the check and the read is caught too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from .errors import LauncherError
from .store import FileRecord

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once (and is then refused)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class ChangedFile(LauncherError):
    """The file at an indexed path is not the file that was indexed."""


def matches(rec: FileRecord, st: os.stat_result) -> bool:
    """``st`` is a regular file with the size and mtime the index recorded for ``rec``."""
    return stat.S_ISREG(st.st_mode) and st.st_size == rec.size and st.st_mtime_ns == rec.mtime_ns


def is_plain_file(path: str, *, follow_symlinks: bool = False) -> bool:
    """``path`` is a regular file now (and not a symlink unless ``follow_symlinks``)."""
    try:
        st = os.stat(path) if follow_symlinks else os.lstat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode)


def unchanged(rec: FileRecord, *, follow_symlinks: bool = False) -> bool:
    """The file at ``rec.path`` is still the one indexed (see the module docstring)."""
    try:
        st = os.stat(rec.path) if follow_symlinks else os.lstat(rec.path)
    except (OSError, ValueError):
        return False
    return matches(rec, st)


@contextlib.contextmanager
def open_indexed(
    rec: FileRecord, limit: int | None = None, *, follow_symlinks: bool = False
) -> Iterator[BinaryIO]:
    """The indexed file, open for reading; ``ChangedFile`` when it is not the one indexed
    or larger than ``limit`` bytes, ``OSError`` when it cannot be opened."""
    flags = _OPEN_FLAGS & ~getattr(os, "O_NOFOLLOW", 0) if follow_symlinks else _OPEN_FLAGS
    try:
        fd = os.open(rec.path, flags)
    except ValueError as err:  # a NUL in the path
        raise ChangedFile(f"{rec.path!r}: not a file path") from err
    try:
        st = os.fstat(fd)
        if not matches(rec, st):
            raise ChangedFile(f"{rec.path}: changed since it was indexed")
        if limit is not None and st.st_size > limit:
            raise ChangedFile(f"{rec.path}: larger than {limit:,} bytes")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle
