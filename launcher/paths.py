"""The one place that decides where the app writes files.

``LAUNCHER_HOME=DIR`` puts everything (config, data, cache, logs) under DIR;
otherwise the platformdirs locations for the app are used.
"""

from __future__ import annotations

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
    path.mkdir(parents=True, exist_ok=True)
    return path
