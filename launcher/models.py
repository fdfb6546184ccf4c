"""Which GGUF files are which, which ones to use, and how to get them.

Files are told apart by their GGUF metadata, never by their names:

* ``general.architecture == "clip"`` with ``clip.has_vision_encoder`` -> ``mmproj`` (vision
  projector); ``clip.vision.projection_dim`` is the width of what it feeds the model.
* ``general.architecture == "qwen3vl"`` -> a language model:

  - a rank head (``qwen3vl.pooling_type == 4`` (RANK) or ``qwen3vl.classifier.output_labels``,
    written by llama.cpp's ``convert_hf_to_gguf.py`` for Qwen3-VL-Reranker) -> ``reranker``;
  - ``qwen3vl.pooling_type == 3`` (LAST, from a sentence-transformers pooling config) ->
    ``embedding``;
  - otherwise ``general.name`` / ``general.basename`` / ``general.finetune`` / ``general.tags``
    containing "rerank" or "embed" decide. A reranker without a rank head (a plain generative
    conversion) is scored from its ``yes``/``no`` logits; discovery prefers one with a rank
    head.

* anything else -> ``unknown`` with the reason.

Which files are used (``resolve``): command-line flag > environment variable
(``$LAUNCHER_MODEL``, ``$LAUNCHER_MMPROJ``, ``$LAUNCHER_RERANKER``,
``$LAUNCHER_RERANKER_MMPROJ``) > config file ``[models]`` > discovery in ``models/`` beside
``launcher.py`` and then ``paths.models_dir()``. The value ``none`` switches a slot off.

The mmproj for a model is picked among the discovered ones whose ``projection_dim`` equals
the model's ``n_embd``. Qwen3-VL-Embedding-2B and Qwen3-VL-Reranker-2B both have
``n_embd == 2048`` but their vision towers are different weights, so among those that fit:
an mmproj whose metadata names the same role ("embed" / "rerank") scores highest (+4), one in
the same folder as the model next (+2), one whose ``general.name`` equals the model's (+1);
an mmproj named for the *other* role is never picked automatically (give it explicitly to
force it). Ties go to discovery order.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import paths
from .config import Config, is_off, load_config
from .errors import (
    DownloadError,
    LauncherError,
    MmprojMismatch,
    MmprojRequired,
    ModelError,
    ModelNotFound,
    ModelSwitchedOff,
    WrongArchitecture,
)
from .gguf_meta import GGUFMeta, read_metadata
from .walk import plural

if TYPE_CHECKING:
    from types import ModuleType

Role = Literal["embedding", "reranker", "mmproj", "unknown"]
Slot = Literal["model", "mmproj", "reranker", "reranker_mmproj"]

LM_ARCHITECTURES = ("qwen3vl",)
QWEN3VL_PROJECTORS = ("qwen3vl_merger",)
POOLING_LAST = 3
POOLING_RANK = 4
RANK_HEAD_TENSORS = ("cls.output.weight", "cls.weight")

SLOTS: tuple[Slot, ...] = ("model", "mmproj", "reranker", "reranker_mmproj")
FLAGS: dict[Slot, str] = {
    "model": "--model",
    "mmproj": "--mmproj",
    "reranker": "--reranker",
    "reranker_mmproj": "--reranker-mmproj",
}
ENV_VARS: dict[Slot, str] = {
    "model": "LAUNCHER_MODEL",
    "mmproj": "LAUNCHER_MMPROJ",
    "reranker": "LAUNCHER_RERANKER",
    "reranker_mmproj": "LAUNCHER_RERANKER_MMPROJ",
}
PULL_HINT = "run `launcher.py models pull` or put the GGUF files in models/"

# general.file_type (llama_ftype) -> usual quantization label
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip


@dataclass(frozen=True)
class ModelFile:
    """One GGUF file and what its metadata says it is.

    ``reason`` explains an ``unknown`` role, or warns about a usable-looking file (e.g. a
    reranker without a rank head). ``identity`` is the sha256 of the GGUF header.
    """

    path: Path
    role: Role
    architecture: str | None = None
    name: str | None = None
    size_bytes: int = 0
    n_embd: int | None = None
    projection_dim: int | None = None
    projector_type: str | None = None
    pooling_type: int | None = None
    rank_head: bool = False
    quant: str | None = None
    hint: Literal["embedding", "reranker"] | None = None
    reason: str | None = None
    identity: str | None = None

    @property
    def usable(self) -> bool:
        """True if ``resolve`` would pick this file by itself."""
        return self.role in ("embedding", "reranker", "mmproj") and not (
            self.role == "reranker" and self.reason
        )

    def describe(self) -> str:
        """A short phrase: "an embedding model", "a reranker", ..."""
        if self.role == "embedding":
            return "an embedding model"
        if self.role == "reranker":
            return "a reranker" if self.rank_head else "a reranker (scored by its yes/no logits)"
        if self.role == "mmproj":
            return "a vision projector (mmproj)"
        return f"not a usable model ({self.reason})" if self.reason else "not a usable model"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "role": self.role,
            "architecture": self.architecture,
            "name": self.name,
            "size_bytes": self.size_bytes,
            "quant": self.quant,
            "n_embd": self.n_embd,
            "projection_dim": self.projection_dim,
            "projector_type": self.projector_type,
            "pooling_type": self.pooling_type,
            "rank_head": self.rank_head,
            "hint": self.hint,
            "reason": self.reason,
            "identity": self.identity,
        }


# --- classification ---------------------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _role_hint(meta: GGUFMeta) -> Literal["embedding", "reranker"] | None:
    """ "rerank" / "embed" in the name fields (then the tags); the first field that says wins."""
    fields: list[Any] = [
        meta.get(k) for k in ("general.name", "general.basename", "general.finetune")
    ]
    tags = meta.get("general.tags")
    if isinstance(tags, list):
        fields.append(" ".join(t for t in tags if isinstance(t, str)))
    for value in fields:
        if not isinstance(value, str):
            continue
        low = value.lower()
        if "rerank" in low:
            return "reranker"
        if "embed" in low:
            return "embedding"
    return None


def classify(path: str | os.PathLike[str]) -> ModelFile:
    """What ``path`` is, from its GGUF metadata.

    Raises ``ModelNotFound`` / ``NotGGUF`` / ``ModelError`` for missing, non-GGUF or
    unreadable files; any readable GGUF gets a ``ModelFile`` (role ``unknown`` if unusable).
    """
    meta = read_metadata(path)
    arch = meta.architecture
    base: dict[str, Any] = {
        "path": meta.path,
        "architecture": arch,
        "name": _str(meta.get("general.name")) or meta.path.stem,
        "size_bytes": meta.file_size,
        "quant": _FILE_TYPES.get(_int(meta.get("general.file_type")) or -1),
        "hint": _role_hint(meta),
        "identity": meta.header_bytes_hash,
    }
    if arch == "clip" or meta.get("general.type") == "mmproj":
        projector = _str(meta.get("clip.projector_type")) or _str(
            meta.get("clip.vision.projector_type")
        )
        if meta.get("clip.has_vision_encoder") is not True:
            return ModelFile(
                role="unknown",
                projector_type=projector,
                reason="a projector without a vision encoder (audio only?)",
                **base,
            )
        return ModelFile(
            role="mmproj",
            projection_dim=_int(meta.get("clip.vision.projection_dim")),
            projector_type=projector,
            **base,
        )
    if arch in LM_ARCHITECTURES:
        return _classify_lm(meta, arch, base)
    what = f"architecture {arch!r}" if arch else "no general.architecture"
    return ModelFile(
        role="unknown",
        reason=f"{what} is not supported (expected a Qwen3-VL model or its mmproj)",
        **base,
    )


def _classify_lm(meta: GGUFMeta, arch: str, base: dict[str, Any]) -> ModelFile:
    n_embd = _int(meta.get(f"{arch}.embedding_length"))
    pooling = _int(meta.get(f"{arch}.pooling_type"))
    labels = meta.get(f"{arch}.classifier.output_labels")
    declares_rank = pooling == POOLING_RANK or (isinstance(labels, list) and bool(labels))
    has_cls = any(t in meta.tensor_names for t in RANK_HEAD_TENSORS)
    common: dict[str, Any] = {"n_embd": n_embd, "pooling_type": pooling, **base}
    if declares_rank:
        if has_cls or meta.tensor_count == 0:
            return ModelFile(role="reranker", rank_head=True, **common)
        return ModelFile(
            role="reranker",
            reason="declares rank pooling but has no cls.output.weight tensor",
            **common,
        )
    if pooling == POOLING_LAST:
        return ModelFile(role="embedding", **common)
    if base["hint"] == "reranker":
        return ModelFile(role="reranker", **common)  # generative: yes/no logits
    if base["hint"] == "embedding":
        return ModelFile(role="embedding", **common)
    return ModelFile(
        role="unknown",
        reason="a Qwen3-VL model without embedding or reranker markers (a chat model?)",
        **common,
    )


# --- discovery --------------------------------------------------------------------------


def default_model_dirs() -> list[Path]:
    """Where discovery looks: ``models/`` beside ``launcher.py``, then ``paths.models_dir()``."""
    out: list[Path] = []
    for d in (paths.repo_models_dir(), paths.models_dir()):
        if d not in out:
            out.append(d)
    return out


MODEL_DIR_DEPTH = 3  # subfolder levels discovery looks into: models/<org>/<repo>/x.gguf


def _gguf_files(root: Path) -> Iterator[Path]:
    """``*.gguf`` in ``root`` and its non-hidden subfolders, up to ``MODEL_DIR_DEPTH`` levels
    down (a folder named after a hub repository, ``DevQuasar/Qwen...-GGUF``, is two), sorted,
    a folder's files before its subfolders'. Symlinked folders are followed once."""
    visited: set[Path] = set()

    def walk(folder: Path, depth: int) -> Iterator[Path]:
        try:
            key = folder.resolve()
            entries = sorted(folder.iterdir())
        except OSError:
            return
        if key in visited:
            return
        visited.add(key)
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                subdirs.append(entry)
            elif entry.suffix.lower() == ".gguf":
                yield entry
        if depth < MODEL_DIR_DEPTH:
            for sub in subdirs:
                yield from walk(sub, depth + 1)

    yield from walk(root, 0)


def discover(dirs: Iterable[str | os.PathLike[str]] | None = None) -> list[ModelFile]:
    """Every ``*.gguf`` in ``dirs`` (default ``default_model_dirs()``), classified.

    Never raises for a bad file: unreadable or non-GGUF files come back as ``unknown``.
    """
    roots = [Path(d).expanduser() for d in dirs] if dirs is not None else default_model_dirs()
    seen: set[Path] = set()
    found: list[ModelFile] = []
    for root in roots:
        for f in _gguf_files(root):
            try:
                key = f.resolve()
            except OSError:
                key = f
            if key in seen:
                continue
            seen.add(key)
            try:
                found.append(classify(f))
            except (LauncherError, OSError) as err:
                try:
                    size = f.stat().st_size
                except OSError:
                    size = 0
                found.append(ModelFile(path=f, role="unknown", size_bytes=size, reason=str(err)))
    return found


# --- resolution -------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModels:
    """The model files to use, as paths (``None``: not found or switched off).

    ``files`` holds the ``ModelFile`` of each chosen slot; ``sources`` says where each came
    from ("--model", "$LAUNCHER_MODEL", "config ...", "discovered"; "off" if switched off).
    """

    model: Path | None = None
    mmproj: Path | None = None
    reranker: Path | None = None
    reranker_mmproj: Path | None = None
    files: dict[str, ModelFile] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    searched: tuple[Path, ...] = ()
    config_path: Path | None = None
    threads: int | None = None
    discovered: tuple[ModelFile, ...] = field(default=(), repr=False)

    def file(self, slot: Slot) -> ModelFile | None:
        """The ``ModelFile`` chosen for ``slot`` ("model", "mmproj", ...), if any."""
        return self.files.get(slot)

    def _not_found(self, what: str, slot: Slot) -> ModelNotFound:
        if self.sources.get(slot) == "off":
            return ModelSwitchedOff(f'the {what} is switched off ("none")')
        where = ", ".join(str(d) for d in self.searched) or "no folders"
        cfg = f"[models] {slot} in {self.config_path}" if self.config_path else "the config file"
        unusable = [m for m in self.discovered if not m.usable]
        extra = (
            f"; {plural(len(unusable), 'GGUF file')} there "
            f"{'is' if len(unusable) == 1 else 'are'} not usable (see `launcher.py models`)"
            if unusable
            else ""
        )
        return ModelNotFound(
            f"no {what} found: looked at {FLAGS[slot]}, ${ENV_VARS[slot]}, {cfg} and in "
            f"{where}{extra}; {PULL_HINT}"
        )

    def require_embedding(self) -> Path:
        """The embedding model, or ``ModelNotFound`` saying where it looked and what to do."""
        if self.model is None:
            raise self._not_found("embedding model (Qwen3-VL-Embedding GGUF)", "model")
        return self.model

    def require_reranker(self) -> Path:
        """The reranker, or ``ModelNotFound`` (as ``require_embedding``)."""
        if self.reranker is None:
            raise self._not_found("reranker (Qwen3-VL-Reranker GGUF)", "reranker")
        return self.reranker

    def require_mmproj(self) -> Path:
        """The embedding model's mmproj, or ``MmprojRequired`` (images need one)."""
        if self.mmproj is None:
            model = self.model or "the embedding model"
            raise MmprojRequired(
                f"images need a vision projector (mmproj GGUF) for {model}: pass --mmproj, set "
                f"$LAUNCHER_MMPROJ, or put the mmproj file next to the model; {PULL_HINT}"
            )
        return self.mmproj


def check_mmproj_fits(model: ModelFile, mmproj: ModelFile) -> None:
    """``MmprojMismatch`` unless ``mmproj`` is a vision projector that fits ``model``."""
    if mmproj.role != "mmproj":
        raise WrongArchitecture(f"{mmproj.path} is {mmproj.describe()}, not an mmproj")
    if (
        mmproj.projection_dim is not None
        and model.n_embd is not None
        and mmproj.projection_dim != model.n_embd
    ):
        raise MmprojMismatch(
            f"mmproj {mmproj.path} projects to {mmproj.projection_dim} dims but model "
            f"{model.path} expects {model.n_embd}"
        )
    if (
        model.architecture == "qwen3vl"
        and mmproj.projector_type
        and mmproj.projector_type not in QWEN3VL_PROJECTORS
    ):
        raise MmprojMismatch(
            f"mmproj {mmproj.path} is a {mmproj.projector_type!r} projector but model "
            f"{model.path} needs a Qwen3-VL one ({', '.join(QWEN3VL_PROJECTORS)})"
        )


def _choice(
    slot: Slot, flag: str | os.PathLike[str] | None, config: Config
) -> tuple[str, Path | None] | None:
    """(source, path or None for "off") from flag > env > config; None if unset."""
    if flag is not None and str(flag).strip():
        value = str(flag).strip()
        return FLAGS[slot], None if is_off(value) else Path(value).expanduser()
    env = os.environ.get(ENV_VARS[slot], "").strip()
    if env:
        return f"${ENV_VARS[slot]}", None if is_off(env) else Path(env).expanduser()
    if getattr(config, slot) is not None:
        return f"config {config.path} [models] {slot}", config.model_path(slot)
    return None


def _load(path: Path, source: str) -> ModelFile:
    if not path.exists():
        raise ModelNotFound(f"model file not found: {path} (from {source})")
    try:
        return classify(path)
    except ModelError as err:
        raise type(err)(f"{err} (from {source})") from None


def _expect(mf: ModelFile, role: Role, source: str) -> ModelFile:
    if role == "embedding":
        # An explicit Qwen3-VL file without markers is accepted: the user said so.
        ok = mf.role == "embedding" or (
            mf.role == "unknown" and mf.architecture in LM_ARCHITECTURES
        )
        what = "an embedding model"
    elif role == "reranker":
        ok = mf.role == "reranker" and not mf.reason
        what = "a Qwen3-VL reranker"
    else:
        ok = mf.role == "mmproj"
        what = "a vision projector (mmproj)"
    if not ok:
        detail = f": {mf.reason}" if mf.reason and mf.role == "reranker" else ""
        raise WrongArchitecture(f"{mf.path} (from {source}) is {mf.describe()}, not {what}{detail}")
    return mf


def _same_name(a: ModelFile, b: ModelFile) -> bool:
    def norm(s: str | None) -> str:
        return re.sub(r"[^a-z0-9]", "", (s or "").lower())

    return bool(a.name) and norm(a.name) == norm(b.name)


def pick_mmproj(lm: ModelFile, candidates: Sequence[ModelFile]) -> ModelFile | None:
    """The best-fitting discovered mmproj for ``lm`` (see the module docstring), or None."""
    role = "reranker" if lm.role == "reranker" else "embedding"
    other = "embedding" if role == "reranker" else "reranker"
    scored: list[tuple[int, int, ModelFile]] = []
    for i, m in enumerate(candidates):
        if m.role != "mmproj" or m.hint == other:
            continue
        try:
            check_mmproj_fits(lm, m)
        except ModelError:
            continue
        score = 4 * (m.hint == role) + 2 * (m.path.parent == lm.path.parent) + _same_name(lm, m)
        scored.append((-score, i, m))
    return min(scored, key=lambda t: (t[0], t[1]))[2] if scored else None


REMEMBERED = "the index (built with it)"


def _recall(
    remembered: dict[str, Any], slot: str, discovered: Callable[[], list[ModelFile]]
) -> ModelFile:
    """The model file the index was built with: at its remembered path, or discovered
    elsewhere with the same identity (moved); else an error naming the file it needs."""
    ident = remembered.get("identity") or {}
    path = Path(str(remembered[slot]))
    size = ident.get("model_size") if slot == "model" else None
    digest = ident.get("model_header_hash") if slot == "model" else None
    name = ident.get("model_file" if slot == "model" else "mmproj_file") or path.name
    what = "model" if slot == "model" else "vision projector (mmproj)"
    need = f"{path}" + (f" ({size:,} bytes)" if isinstance(size, int) else "")

    def same(mf: ModelFile) -> bool:
        if digest is not None:
            return mf.identity == digest and (size is None or mf.size_bytes == size)
        return mf.path.name == name and mf.role == "mmproj"

    if path.is_file():
        try:
            mf = classify(path)
        except ModelError as err:
            raise type(err)(f"{err} (the index's {what})") from None
        if digest is not None and not same(mf):
            raise ModelError(
                f"the index was built with the {what} {need}, and that file has changed "
                "since; put the original back, or re-index with this one: "
                f"launcher.py index --rebuild --model {path}"
            )
        return mf
    for mf in discovered():
        if same(mf):
            return mf  # moved into a models folder
    raise ModelNotFound(
        f"the index was built with the {what} {need}, which is gone; put it back (or in "
        f"models/), pass --{'model' if slot == 'model' else 'mmproj'} FILE with it, or "
        "re-index with another one: launcher.py index --rebuild --model FILE"
    )


def resolve(
    model: str | os.PathLike[str] | None = None,
    mmproj: str | os.PathLike[str] | None = None,
    reranker: str | os.PathLike[str] | None = None,
    reranker_mmproj: str | os.PathLike[str] | None = None,
    *,
    config: Config | None = None,
    dirs: Iterable[str | os.PathLike[str]] | None = None,
    roles: Collection[str] = ("embedding", "reranker"),
    remembered: dict[str, Any] | None = None,
) -> ResolvedModels:
    """Decide which model files to use: flags > env > config > the files the index was
    built with (``remembered``, from ``store.read_models``) > discovery (see module doc).

    Explicit paths are validated (``ModelNotFound`` naming where the path came from,
    ``NotGGUF``, ``WrongArchitecture``, ``MmprojMismatch``). Discovery only runs for slots
    that are not set. ``roles`` limits the work (and the errors) to the embedding pair
    (model + mmproj) and/or the reranker pair. A missing model is not an error here; call
    ``require_embedding()`` / ``require_reranker()``.
    """
    cfg = config if config is not None else load_config()
    roots = (
        tuple(Path(d).expanduser() for d in dirs)
        if dirs is not None
        else tuple(default_model_dirs())
    )
    flags: dict[Slot, Any] = {
        "model": model,
        "mmproj": mmproj,
        "reranker": reranker,
        "reranker_mmproj": reranker_mmproj,
    }
    pool: list[ModelFile] | None = None

    def discovered() -> list[ModelFile]:
        nonlocal pool
        if pool is None:
            pool = discover(roots)
        return pool

    chosen: dict[str, ModelFile] = {}
    sources: dict[str, str] = {}
    slot_roles: dict[Slot, Role] = {
        "model": "embedding",
        "reranker": "reranker",
        "mmproj": "mmproj",
        "reranker_mmproj": "mmproj",
    }
    pairs: list[tuple[Slot, Slot]] = []
    if "embedding" in roles:
        pairs.append(("model", "mmproj"))
    if "reranker" in roles:
        pairs.append(("reranker", "reranker_mmproj"))
    for lm_slot, mm_slot in pairs:
        lm_choice = _choice(lm_slot, flags[lm_slot], cfg)
        lm: ModelFile | None = None
        recalled = lm_slot == "model" and lm_choice is None and remembered is not None
        if recalled:
            assert remembered is not None
            lm = _recall(remembered, "model", discovered)
            sources[lm_slot] = REMEMBERED
        elif lm_choice is None:
            found = [m for m in discovered() if m.role == slot_roles[lm_slot] and m.usable]
            # a rank head gives P(yes) directly; a plain conversion needs its yes/no logits
            found.sort(key=lambda m: not m.rank_head)
            lm = found[0] if found else None
            if lm is not None:
                sources[lm_slot] = "discovered"
        elif lm_choice[1] is None:
            sources[lm_slot] = "off"
        else:
            lm = _expect(_load(lm_choice[1], lm_choice[0]), slot_roles[lm_slot], lm_choice[0])
            sources[lm_slot] = lm_choice[0]
        if lm is not None:
            chosen[lm_slot] = lm

        mm_choice = _choice(mm_slot, flags[mm_slot], cfg)
        mm: ModelFile | None = None
        if recalled and mm_choice is None:
            # the index's model with the index's projector (or none, as it was built)
            assert remembered is not None
            if remembered.get("mmproj"):
                mm = _recall(remembered, "mmproj", discovered)
                if lm is not None:
                    check_mmproj_fits(lm, mm)
                sources[mm_slot] = REMEMBERED
            else:
                sources[mm_slot] = "off"
        elif mm_choice is not None and mm_choice[1] is None:
            sources[mm_slot] = "off"
        elif mm_choice is not None:
            assert mm_choice[1] is not None
            mm = _expect(_load(mm_choice[1], mm_choice[0]), "mmproj", mm_choice[0])
            if lm is not None:
                check_mmproj_fits(lm, mm)
            sources[mm_slot] = mm_choice[0]
        elif lm is not None:
            mm = pick_mmproj(lm, discovered())
            if mm is not None:
                sources[mm_slot] = "discovered"
        if mm is not None:
            chosen[mm_slot] = mm

    def path(slot: str) -> Path | None:
        mf = chosen.get(slot)
        return mf.path if mf is not None else None

    return ResolvedModels(
        model=path("model"),
        mmproj=path("mmproj"),
        reranker=path("reranker"),
        reranker_mmproj=path("reranker_mmproj"),
        files=chosen,
        sources=sources,
        searched=roots,
        config_path=cfg.path,
        threads=cfg.threads,
        discovered=tuple(pool or ()),
    )


# --- download ---------------------------------------------------------------------------

# Default downloads. Sources (public material found while writing this, not a hub listing):
# - Embedding: DevQuasar/Qwen.Qwen3-VL-Embedding-2B-GGUF, files
#   "Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf" (1,107,410,528 bytes) and
#   "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf" (819,395,136 bytes), as recorded (with sha256)
#   by a project that ran them under llama-server --embedding --pooling last, at revision
#   6a1b927414664e0e17dd379913e3416a1ae1b48d; Q5_K_M and other quants follow the same naming.
#   No official Qwen GGUF of Qwen3-VL-Embedding-2B was found.
# - Reranker: bealore/Qwen3-VL-Reranker-2B-GGUF (model card: converted with llama.cpp's
#   convert_hf_to_gguf.py, verified qwen3vl.pooling_type=4, classifier.output_labels
#   ["yes","no"], cls.output.weight), files "Qwen3-VL-Reranker-2B.Q8_0.gguf" (~1.9 GB),
#   "Qwen3-VL-Reranker-2B.f16.gguf" and "Qwen3-VL-Reranker-2B.mmproj-f16.gguf". Several other
#   community conversions lack the rank head and give meaningless scores.
# If a file name has changed, ``pull`` lists the repository and picks by pattern instead.
EMBEDDING_REPO = "DevQuasar/Qwen.Qwen3-VL-Embedding-2B-GGUF"
RERANKER_REPO = "bealore/Qwen3-VL-Reranker-2B-GGUF"
DEFAULT_QUANT = "Q4_K_M"
RERANKER_QUANT = "Q8_0"


@dataclass(frozen=True)
class Download:
    """One file ``pull`` fetches: ``repo_id``/``filename`` into ``<dest>/<subdir>/``."""

    role: Role
    repo_id: str
    filename: str
    subdir: str
    pattern: str  # fallback glob (case-insensitive) if ``filename`` is not in the repo
    revision: str | None = None

    @property
    def url(self) -> str:
        rev = self.revision or "main"
        return f"https://huggingface.co/{self.repo_id}/resolve/{rev}/{self.filename}"


def default_downloads(
    *, include_reranker: bool = True, quant: str = DEFAULT_QUANT
) -> list[Download]:
    """The files ``pull`` fetches by default (embedding ``quant`` + its mmproj, reranker Q8_0
    + its mmproj), each pair in its own subfolder so the mmproj sits next to its model."""
    files = [
        Download(
            "embedding",
            EMBEDDING_REPO,
            f"Qwen.Qwen3-VL-Embedding-2B.{quant}.gguf",
            "Qwen3-VL-Embedding-2B",
            f"*{quant}*.gguf",
        ),
        Download(
            "mmproj",
            EMBEDDING_REPO,
            "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf",
            "Qwen3-VL-Embedding-2B",
            "*mmproj*f16*.gguf",
        ),
    ]
    if include_reranker:
        files += [
            Download(
                "reranker",
                RERANKER_REPO,
                f"Qwen3-VL-Reranker-2B.{RERANKER_QUANT}.gguf",
                "Qwen3-VL-Reranker-2B",
                f"*{RERANKER_QUANT}*.gguf",
            ),
            Download(
                "mmproj",
                RERANKER_REPO,
                "Qwen3-VL-Reranker-2B.mmproj-f16.gguf",
                "Qwen3-VL-Reranker-2B",
                "*mmproj*f16*.gguf",
            ),
        ]
    return files


def _manual(dest: Path, files: Sequence[Download]) -> tuple[str, ...]:
    """What to do by hand, one line per file: its URL and the folder to put it in."""
    return (
        "download these files by hand, each into the folder shown:",
        *(f"  {d.url}  ->  {dest / d.subdir}{os.sep}" for d in files),
        f"any subfolder of {dest} or {paths.repo_models_dir()} works too (files are "
        "recognized by their metadata)",
        "files placed anywhere else work with --model, --mmproj and --reranker",
        "then check with `launcher.py models`",
    )


def _hub_offline() -> bool:
    truthy = ("1", "on", "yes", "true")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in truthy:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _import_hub() -> ModuleType:
    import huggingface_hub

    return huggingface_hub


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's error base classes (requests before huggingface_hub 1.0, httpx after)."""
    found: list[type[BaseException]] = []
    try:
        from huggingface_hub import errors

        http_error = getattr(errors, "HTTPError", None)
        if isinstance(http_error, type):
            found.append(http_error)
    except ImportError:
        pass
    try:
        import requests

        found.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    try:
        import httpx

        found.append(httpx.HTTPError)
    except ImportError:
        pass
    return tuple(found)


def _pick_by_pattern(hub: ModuleType, d: Download) -> str:
    files = hub.list_repo_files(d.repo_id, revision=d.revision)
    matches = sorted(
        f
        for f in files
        if fnmatch.fnmatch(f.lower(), d.pattern.lower())
        and (d.role == "mmproj") == ("mmproj" in f.lower())
    )
    if not matches:
        raise DownloadError(f"{d.repo_id} has no file matching {d.pattern!r} (for the {d.role})")
    return str(matches[0])


def _fetch(hub: ModuleType, d: Download, target: Path) -> Path:
    from huggingface_hub import errors

    try:
        try:
            return Path(
                hub.hf_hub_download(d.repo_id, d.filename, revision=d.revision, local_dir=target)
            )
        except errors.LocalEntryNotFoundError:
            raise
        except errors.EntryNotFoundError:
            name = _pick_by_pattern(hub, d)
            return Path(hub.hf_hub_download(d.repo_id, name, revision=d.revision, local_dir=target))
    except (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError) as err:
        raise DownloadError(f"cannot reach the Hugging Face hub ({type(err).__name__})") from None
    except (
        errors.RepositoryNotFoundError,
        errors.RevisionNotFoundError,
        errors.GatedRepoError,
    ) as err:
        raise DownloadError(f"{d.repo_id} is not available: {_first_line(err)}") from None
    except errors.HfHubHTTPError as err:
        raise DownloadError(
            f"the Hugging Face hub refused {d.repo_id}/{d.filename}: {_first_line(err)}"
        ) from None
    except _transport_errors() as err:
        raise DownloadError(f"cannot reach the Hugging Face hub: {_first_line(err)}") from None
    except OSError as err:
        raise DownloadError(f"cannot write {target / d.filename}: {err}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def pull(
    dest: str | os.PathLike[str] | None = None,
    *,
    include_reranker: bool = True,
    progress: bool = True,
    quant: str = DEFAULT_QUANT,
) -> list[Path]:
    """Download the default GGUF files into ``dest`` (default ``paths.models_dir()``).

    Files already there are kept (no network needed then); downloads resume after an
    interruption and show tqdm progress bars unless ``progress`` is False. Raises
    ``DownloadError`` (saying which files to fetch by hand and where to put them) when
    huggingface_hub is missing, the hub is unreachable or ``HF_HUB_OFFLINE`` is set.
    """
    root = Path(dest).expanduser() if dest is not None else paths.models_dir()
    plan = default_downloads(include_reranker=include_reranker, quant=quant)
    missing = [d for d in plan if not (root / d.subdir / d.filename).is_file()]
    if not missing:
        return [root / d.subdir / d.filename for d in plan]
    try:
        hub = _import_hub()
    except ImportError:
        raise DownloadError(
            "downloading needs huggingface_hub: pip install 'launcher[download]' (or pip install "
            "huggingface_hub); or",
            _manual(root, missing),
        ) from None
    if _hub_offline():
        raise DownloadError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded", _manual(root, missing)
        )
    if not _hub_resolves():
        # Fail at once instead of letting huggingface_hub retry for half a minute.
        raise DownloadError("cannot reach the Hugging Face hub (offline?)", _manual(root, missing))

    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    out: list[Path] = []
    try:
        for d in plan:
            target = paths.ensure(root / d.subdir)
            existing = target / d.filename
            if existing.is_file():
                out.append(existing)
                continue
            try:
                local = _fetch(hub, d, target)
            except DownloadError as err:
                raise DownloadError(str(err), _manual(root, missing)) from None
            _verify(local, d)
            out.append(local)
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    return out


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves (a quick offline check; sends no request)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    if not host:
        return True
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _verify(path: Path, d: Download) -> None:
    try:
        mf = classify(path)
    except ModelError as err:
        raise DownloadError(f"downloaded {path} but cannot use it: {err}") from None
    if mf.role != d.role or not mf.usable:
        raise DownloadError(
            f"downloaded {path} from {d.repo_id} but it is {mf.describe()}, not the expected "
            f"{d.role}; the repository may have changed; pick another file by hand"
        )
