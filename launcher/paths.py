"""The one place that decides where the app writes files.

``LAUNCHER_HOME=DIR`` puts everything (config, data, cache, logs) under DIR;
otherwise the platformdirs locations for the app are used.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

APP_NAME = "launcher"
HOME_ENV = "LAUNCHER_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def _pick(sub: str, platform_attr: str) -> Path:
    home = _home()
    if home is not None:
        path = home / sub
    else:
        import platformdirs

        path = Path(getattr(platformdirs, platform_attr)(APP_NAME, appauthor=False))
    return path


def config_dir() -> Path:
    return _pick("config", "user_config_dir")


def data_dir() -> Path:
    return _pick("data", "user_data_dir")


def cache_dir() -> Path:
    return _pick("cache", "user_cache_dir")


def log_dir() -> Path:
    return _pick("logs", "user_log_dir")


def config_file() -> Path:
    return config_dir() / "config.toml"


def models_dir() -> Path:
    """Where downloaded models go: ``<data dir>/models``."""
    return data_dir() / "models"


def repo_models_dir() -> Path:
    """The ``models/`` folder beside ``launcher.py`` (for a source checkout)."""
    return Path(__file__).resolve().parent.parent / "models"


def ensure(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by this user only (0700).

    The app's own folders (config, data, cache, logs) are also narrowed to 0700 when they
    already exist: the index holds text from your files and ``ui.json`` holds the page's key.
    """
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    _narrow(path)
    return path


def _narrow(path: Path) -> None:
    """chmod 0700 the app folders at or above ``path`` that this user owns."""
    if not hasattr(os, "getuid"):  # Windows: the profile folder is private already
        return
    roots = {config_dir(), data_dir(), cache_dir(), log_dir()}
    home = _home()
    if home is not None:
        roots.add(home)
    for folder in (path, *path.parents):
        if folder not in roots:
            continue
        with contextlib.suppress(OSError):
            st = folder.stat()
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                folder.chmod(st.st_mode & 0o700)
