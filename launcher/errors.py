"""Typed errors. ``str(err)`` is the one line the CLI shows; the library never prints or exits."""

from __future__ import annotations


class LauncherError(Exception):
    """Base class for every error the CLI turns into a one-line message.

    ``details`` (optional) are further lines, e.g. steps to take, that the CLI prints under
    that line.
    """

    details: tuple[str, ...] = ()


class ModelError(LauncherError):
    """A model file cannot be used."""


class ModelNotFound(ModelError):
    """No model file at the path given, or none configured or discovered."""


class ModelSwitchedOff(ModelNotFound):
    """The slot was set to "none" on purpose (e.g. no reranker wanted)."""


class NotGGUF(ModelError):
    """The file exists but is not a GGUF file."""


class WrongArchitecture(ModelError):
    """A GGUF of another architecture or role than the one expected."""


class MmprojRequired(ModelError):
    """An image was given but no mmproj (vision projector) is configured."""


class MmprojMismatch(ModelError):
    """The mmproj does not fit the language model."""


class InputError(LauncherError):
    """One input item cannot be embedded (its neighbours are unaffected)."""


class ImageError(InputError):
    """An image is unreadable, corrupt, or too large."""


# The reason a file failed because the remote engine could not be reached: such files are
# retried by the next run without --retry-failed.
ENGINE_UNAVAILABLE = "engine unavailable"


class EngineUnavailable(InputError):
    """The remote engine did not answer (after retries): this input was not embedded.
    Its message starts with ``ENGINE_UNAVAILABLE``."""


class EngineUnreachable(LauncherError):
    """The remote engine cannot be used at all (down at start, refuses us, cannot embed)."""


class EngineError(LauncherError):
    """llama.cpp refused to evaluate a batch (decode or encode failed)."""


class ConfigError(LauncherError):
    """The config file cannot be read or has a wrong value."""


class DownloadError(LauncherError):
    """A model download failed (offline, hub unreachable, missing dependency); ``details``
    say which files to fetch by hand and where to put them."""

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.details = details


class StoreError(LauncherError):
    """The index on disk cannot be used (wrong model, damaged beyond recovery)."""


class IndexBusy(StoreError):
    """Another process holds the index's writer lock (``pid`` and ``role`` if known)."""

    def __init__(self, pid: int | None, role: str | None) -> None:
        who = f" (pid {pid}{', ' + role if role else ''})" if pid else ""
        super().__init__(f"another indexing run is in progress{who}; wait for it to finish")
        self.pid = pid
        self.role = role


class IndexMismatch(StoreError):
    """The index was built with another model or settings (``old``/``new`` identities)."""

    def __init__(self, message: str, old: dict[str, object], new: dict[str, object]) -> None:
        super().__init__(message)
        self.old = old
        self.new = new
