"""The composition root: builds models, settings, store, engine and indexer, and closes them.

Commands (CLI, UI, demo) get everything from an ``App``; nothing else wires modules.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .embedder import Embedder, ModelIdentity, model_identity
from .engines import Engine, EngineSettings, engine_settings
from .errors import IndexBusy, IndexMismatch, LauncherError, ModelError
from .fulltext import FullText, FullTextUnavailable
from .indexer import Indexer, Progress
from .models import REMEMBERED, ResolvedModels, resolve
from .native import GpuSetting
from .reranker import Reranker
from .store import Store, read_models
from .walk import IndexSettings, load_settings

log = logging.getLogger("launcher")


@dataclass
class App:
    """Everything a command needs, created lazily; ``close()`` releases it all."""

    models: ResolvedModels
    settings: IndexSettings
    threads: int | None = None
    gpu: GpuSetting | None = None  # --gpu (None: $LAUNCHER_GPU, config, auto)
    verbose: bool = False
    index_dir: Path | None = None
    engine: EngineSettings | None = None  # a remote engine (--engine URL); None: this machine
    engine_mmproj: str | None = None  # the projector name a remote identity carries
    engine_mmproj_path: str | None = None  # its file here, if known (remembered for local use)
    _embedder: Engine | None = field(default=None, repr=False)
    _reranker: Reranker | None = field(default=None, repr=False)
    reranker_path: str | None = None  # --reranker as given
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _told_no_fts: bool = field(default=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        model: str | None = None,
        mmproj: str | None = None,
        reranker: str | None = None,
        reranker_mmproj: str | None = None,
        threads: int | None = None,
        gpu: GpuSetting | None = None,
        verbose: bool = False,
        roles: tuple[str, ...] = ("embedding",),
        index_dir: Path | None = None,
        remember: bool = True,
        engine: str | None = None,
    ) -> App:
        """``remember``: without a flag, env var or config naming a model, use the files
        the index was built with (models.json) before discovery. ``engine``: ``--engine``
        (a URL, or "local"); with a URL (flag, env or config) no local embedding model is
        needed."""
        remote = engine_settings(engine)
        if remote is not None:
            remembered = read_models(index_dir) if remember else None
            ident = (remembered or {}).get("identity") or {}
            models = resolve(roles=())  # (the config's threads; no local embedding model)
            return cls(
                models=models, settings=load_settings(), threads=threads or models.threads,
                verbose=verbose, index_dir=index_dir, reranker_path=reranker, engine=remote,
                engine_mmproj=Path(mmproj).name if mmproj else ident.get("mmproj_file"),
                engine_mmproj_path=(
                    str(Path(mmproj).absolute()) if mmproj else (remembered or {}).get("mmproj")
                ),
            )  # fmt: skip
        models = resolve(
            model=model, mmproj=mmproj, reranker=reranker, reranker_mmproj=reranker_mmproj,
            roles=roles, remembered=read_models(index_dir) if remember else None,
        )  # fmt: skip
        return cls(models=models, settings=load_settings(), threads=threads or models.threads,
                   gpu=gpu, verbose=verbose, index_dir=index_dir,
                   reranker_path=reranker)  # fmt: skip

    @property
    def model_path(self) -> Path:
        return self.models.require_embedding()

    def identity(self) -> ModelIdentity:
        if self.engine is not None:
            return self.embedder().identity()
        return model_identity(
            self.model_path, self.models.mmproj, max_pixels=self.settings.image_pixel_budget
        )

    def open_store(
        self,
        *,
        writable: bool = True,
        rebuild: bool = False,
        role: str = "index",
        wait: Callable[[IndexBusy], bool] | None = None,
        create: bool = True,
    ) -> Store:
        """The index for these models (``Store.open``); a writer remembers the model files
        in it, so later commands need no flags."""
        identity = self.identity()
        try:
            return Store.open(
                self.index_dir,
                identity=identity,
                dims=identity.dims,
                rebuild=rebuild,
                writable=writable,
                commit_every_files=self.settings.commit_every_files,
                commit_every_seconds=self.settings.commit_every_seconds,
                role=role,
                wait=wait,
                create=create,
                model_files=self._model_files(),
            )
        except IndexMismatch as err:
            if self.engine is not None:
                raise IndexMismatch(
                    f"{err}; the engine at {self.engine.url} serves another model than the one "
                    f"the index was built with ({err.old.get('model_file')}): serve that one, "
                    "or index with it locally (--engine local)",
                    err.old,
                    err.new,
                ) from None
            if self.models.sources.get("model") == REMEMBERED:
                raise  # the index's own files with other settings: the message says which
            need = err.old.get("model_file")
            raise IndexMismatch(
                f"{err}; or, to keep this index, use the model it was built with ({need}) "
                f"instead of {self.model_path} (from {self.models.sources.get('model')})",
                err.old,
                err.new,
            ) from None

    def _model_files(self) -> dict[str, str | None]:
        """What models.json remembers: the files (a remote engine's model path is the
        server's; the same file here makes the two interchangeable)."""
        if self.engine is not None:
            from .engines.remote import RemoteEmbedder

            remote = self.embedder()
            assert isinstance(remote, RemoteEmbedder)
            model = remote.info.model
            if model and not os.path.isabs(model) and os.path.isfile(model):
                model = os.path.abspath(model)  # (the server's path, relative to our folder too)
            return {"model": model, "mmproj": self.engine_mmproj_path, "engine": self.engine.url}
        mmproj = self.models.mmproj
        return {
            "model": str(self.model_path.absolute()),
            "mmproj": str(mmproj.absolute()) if mmproj else None,
        }

    def device_text(self) -> str:
        """Where the models run (``--gpu``, $LAUNCHER_GPU, config), without loading them."""
        from .native import physical_cores, resolve_device

        if self.engine is not None:  # the embedding model runs on the server
            return f"engine: {self.engine.url}"
        return resolve_device(self.gpu).describe(self.threads or physical_cores())

    def check_model(self) -> None:
        """Load the embedding model and embed one input: a broken or wrong file fails here,
        before anything touches the index."""
        try:
            self.embedder().embed(["launcher model check"])
        except ModelError:
            raise
        except LauncherError as err:
            where = self.engine.url if self.engine is not None else self.model_path
            raise ModelError(f"the model {where} cannot embed: {err}") from None

    def open_text(self, store: Store, *, writable: bool | None = None) -> FullText | None:
        """The full-text index beside ``store`` (a writer only if the store is one); None
        (said once) when this Python's sqlite3 has no FTS5: search by meaning and by name
        still works."""
        try:
            return FullText.open(store.directory, writable=store.writable and writable is not False)
        except FullTextUnavailable as err:
            if not self._told_no_fts:
                log.warning("%s", err)
                self._told_no_fts = True
            return None

    def embedder(self) -> Engine:
        """The embedding engine, loaded (or connected) on first use and kept until ``close``."""
        with self._lock:
            if self._embedder is None and self.engine is not None:
                from .engines.remote import RemoteEmbedder

                self._embedder = RemoteEmbedder(
                    self.engine, max_pixels=self.settings.image_pixel_budget,
                    mmproj_name=self.engine_mmproj,
                )  # fmt: skip
            if self._embedder is None:
                self._embedder = Embedder(
                    self.model_path,
                    self.models.mmproj,
                    threads=self.threads,
                    gpu=self.gpu,
                    verbose=self.verbose,
                    max_pixels=self.settings.image_pixel_budget,
                )
            return self._embedder

    def release_vision(self) -> None:
        """Free the embedding engine's vision encoder, if loaded (``Embedder.release_vision``)."""
        with self._lock:
            if self._embedder is not None:
                self._embedder.release_vision()

    def reranker(self) -> Reranker:
        """The reranker, resolved and loaded on first use (raises if there is none)."""
        with self._lock:
            if self._reranker is None:
                found = resolve(reranker=self.reranker_path, roles=("reranker",))
                self._reranker = Reranker(
                    found.require_reranker(), found.reranker_mmproj, threads=self.threads,
                    gpu=self.gpu, verbose=self.verbose, max_pixels=self.settings.image_pixel_budget,
                )  # fmt: skip
            return self._reranker

    def indexer(
        self,
        store: Store,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Indexer:
        return Indexer(
            store, self.embedder, self.settings, on_progress=on_progress, cancel=cancel,
            text=self.open_text(store),
        )  # fmt: skip

    def close(self) -> None:
        with self._lock:
            for engine in (self._embedder, self._reranker):
                if engine is not None:
                    engine.close()
            self._embedder = None
            self._reranker = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
