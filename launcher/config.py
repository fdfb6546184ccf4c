"""The TOML config file at ``paths.config_file()``.

Example::

    threads = 4

    [models]
    model = "~/models/Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf"
    mmproj = "~/models/mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf"
    reranker = "none"          # "none" turns the reranker off (no discovery)
    reranker_mmproj = "..."

``threads = 4`` (CPU threads) goes at the top, before any table; inside ``[models]`` it is
accepted too (a key written after ``[models]`` lands there). So does
``extra_buffer_types = "auto"``: ``true``/``false`` force llama.cpp's weight repacking and
AMX buffers on or off; ``$LAUNCHER_EXTRA_BUFFER_TYPES`` overrides it
(``native.resolve_extra_bufts``). ``gpu = "auto"`` (or ``"off"``, or a number of layers)
says where the model runs; ``--gpu`` and ``$LAUNCHER_GPU`` override it
(``native.resolve_device``).

Relative paths are relative to the folder of the config file; ``~`` is expanded.
A missing file means defaults. Other areas read their own tables from ``Config.raw``
(``config.table("index")``, ``config.table("ui")``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal

from . import paths
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MODEL_KEYS = ("model", "mmproj", "reranker", "reranker_mmproj")
EXTRA_BUFFER_TYPES_ENV = "LAUNCHER_EXTRA_BUFFER_TYPES"
GPU_ENV = "LAUNCHER_GPU"
_SWITCH = {"auto": None, "on": True, "true": True, "yes": True, "1": True}
_SWITCH.update({"off": False, "false": False, "no": False, "0": False})


@dataclass(frozen=True)
class Config:
    """The parsed config file. Model entries are paths, or the string ``"none"`` (off)."""

    path: Path
    exists: bool = False
    model: str | None = None
    mmproj: str | None = None
    reranker: str | None = None
    reranker_mmproj: str | None = None
    threads: int | None = None
    extra_buffer_types: bool | None = None  # None: automatic
    gpu: Literal["auto"] | int = "auto"  # GPU layers: "auto" (all if the build can), 0 = CPU
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def table(self, name: str) -> dict[str, Any]:
        """The ``[name]`` table (empty if absent); ``ConfigError`` if it is not a table."""
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: '{name}' must be a table ([{name}])")
        return value

    def model_path(self, key: str) -> Path | None:
        """``[models] <key>`` as a path (relative to the config folder), None if unset/"none"."""
        value = getattr(self, key)
        if value is None or is_off(value):
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.path.parent / p


def is_off(value: str | None) -> bool:
    """True for the values that switch a model slot off ("none", "off", "false")."""
    return value is not None and value.strip().lower() in ("none", "off", "false")


def parse_switch(value: object, where: str) -> bool | None:
    """An on/off/auto setting: True, False, or None for "auto"; ``ConfigError`` otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _SWITCH:
        return _SWITCH[value.strip().lower()]
    raise ConfigError(f"{where} must be on, off or auto (true/false), not {value!r}")


def parse_gpu(value: object, where: str) -> Literal["auto"] | int:
    """A ``gpu`` setting: "auto", or the number of layers to offload ("off" = 0)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "off"):
            return "auto" if text == "auto" else 0
        value = int(text) if text.isdigit() else value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(
        f"{where} must be auto, off or a number of layers to put on the GPU (0 or more), "
        f"not {value!r}"
    )


def load_config(path: Path | None = None) -> Config:
    """Read the config file (default ``paths.config_file()``); a missing file gives defaults."""
    path = path or paths.config_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path=path)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {_toml_error(err)}") from None
    return _from_raw(path, raw)


def _toml_error(err: Exception) -> str:
    msg = str(err)
    lineno = getattr(err, "lineno", None)  # Python >= 3.14 has it; older only in the text
    if lineno is not None and "line" not in msg:
        msg = f"{msg} (at line {lineno})"
    return msg


def _from_raw(path: Path, raw: dict[str, Any]) -> Config:
    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: 'models' must be a table ([models])")
    values: dict[str, Any] = {}
    for key in MODEL_KEYS:
        value = models.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{path}: [models] {key} must be a file path (a string)")
        values[key] = value.strip() if isinstance(value, str) else None
    threads = raw.get("threads", models.get("threads"))
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"{path}: threads must be a whole number >= 1")
    bufts = raw.get("extra_buffer_types", models.get("extra_buffer_types"))
    extra = None if bufts is None else parse_switch(bufts, f"{path}: extra_buffer_types")
    gpu = raw.get("gpu", models.get("gpu"))
    return Config(
        path=path, exists=True, threads=threads, extra_buffer_types=extra, raw=raw,
        gpu="auto" if gpu is None else parse_gpu(gpu, f"{path}: gpu"), **values,
    )  # fmt: skip


def save_config(raw: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write ``raw`` as TOML, atomically (temp file, fsync, rename). Returns the path.

    Supports tables, arrays of tables, strings, numbers, booleans, dates and arrays.
    Comments in an existing file are not kept.
    """
    path = path or paths.config_file()
    text = dumps(raw)
    paths.ensure(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"cannot write config file {path}: {err}") from None
    return path


# --- a small TOML writer (tomli_w is not a dependency) ---------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def dumps(raw: Mapping[str, Any]) -> str:
    """Serialize a dict as TOML (the subset ``load_config`` reads back identically)."""
    lines: list[str] = []
    _table(raw, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, Path):
        return _string(str(v))
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x, where) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x, where)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} value for '{where}' to the config file")


def _table(tbl: Mapping[str, Any], prefix: tuple[str, ...], lines: list[str]) -> None:
    subtables = []
    for k, v in tbl.items():
        if not isinstance(k, str):
            raise ConfigError(f"config keys must be strings, not {k!r}")
        if isinstance(v, Mapping) or _is_table_array(v):
            subtables.append((k, v))
        elif v is not None:
            lines.append(f"{_key(k)} = {_value(v, '.'.join((*prefix, k)))}")
    for k, v in subtables:
        name = (*prefix, k)
        header = ".".join(_key(x) for x in name)
        if isinstance(v, Mapping):
            lines.extend(("", f"[{header}]"))
            _table(v, name, lines)
        else:
            for item in v:
                lines.extend(("", f"[[{header}]]"))
                _table(item, name, lines)
