"""Where embeddings are computed: in this process (``launcher.embedder.Embedder`` on
llama.cpp) or on an inference server (``remote.RemoteEmbedder``: llama.cpp's
``llama-server`` or vLLM). Both offer the ``Engine`` interface the indexer, search and
the page use; ``open_engine`` picks one from ``EngineSettings``.

Nothing leaves the machine unless a URL is configured (``--engine URL``,
``$LAUNCHER_ENGINE`` or ``[engine] url`` in the config file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Config, load_config
from ..errors import ConfigError
from ..inputs import Embedder as EmbedderSeam
from ..inputs import EmbedInput

if TYPE_CHECKING:
    import numpy as np

    from ..embedder import ModelIdentity

ENGINE_ENV = "LAUNCHER_ENGINE"
ENGINE_KEY_ENV = "LAUNCHER_ENGINE_KEY"
LOCAL = ("local", "none", "off", "")


class Engine(EmbedderSeam, Protocol):
    """An embedding engine: what ``Indexer``, ``Searcher`` and ``launch`` call."""

    def embed(
        self, items: Sequence[EmbedInput | str], *, dims: int | None = None
    ) -> np.ndarray: ...

    def identity(self, dims: int | None = None) -> ModelIdentity: ...

    def prompt_text(self, item: EmbedInput | str) -> str: ...

    def release_vision(self) -> None: ...

    def fork(self) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSettings:
    """A remote engine: its URL and how to talk to it.

    ``concurrency``: requests in flight (None: the server's slot count, llama-server's
    ``--parallel``); ``batch``: inputs per request; ``timeout``: seconds per request;
    ``retries``: attempts for a request that meets a network error, a timeout, HTTP 429
    or 5xx (with exponential backoff). The API key is read from ``$LAUNCHER_ENGINE_KEY``
    (or the variable ``key_env`` names) and sent as ``Authorization: Bearer``.
    """

    url: str
    key: str | None = None
    concurrency: int | None = None
    batch: int = 4
    timeout: float = 600.0
    retries: int = 5


def engine_settings(flag: str | None = None, config: Config | None = None) -> EngineSettings | None:
    """The remote engine to use, or None for the local one: ``--engine`` > ``$LAUNCHER_ENGINE``
    > ``[engine] url``. ``local`` (or ``none``) anywhere in that order means this machine."""
    cfg = config if config is not None else load_config()
    table = cfg.table("engine")
    url = flag if flag is not None else os.environ.get(ENGINE_ENV)
    if url is None:
        url = table.get("url")
        if url is not None and not isinstance(url, str):
            raise ConfigError(f"{cfg.path}: [engine] url must be a string (http://host:port)")
    if url is None or url.strip().lower() in LOCAL:
        return None
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the engine URL must start with http:// or https://, not {url!r}")
    key_env = table.get("key_env", ENGINE_KEY_ENV)
    if not isinstance(key_env, str):
        raise ConfigError(f"{cfg.path}: [engine] key_env must be the name of a variable")
    return EngineSettings(
        url=url.rstrip("/"),
        key=os.environ.get(key_env) or None,
        concurrency=_number(table, "concurrency", cfg, None),
        batch=_number(table, "batch", cfg, 4) or 4,
        timeout=float(_number(table, "timeout", cfg, 600) or 600),
        retries=_number(table, "retries", cfg, 5) or 5,
    )


def _number(table: dict[str, Any], key: str, cfg: Config, default: int | None) -> int | None:
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{cfg.path}: [engine] {key} must be a whole number >= 1")
    return value
