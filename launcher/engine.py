"""What the embedder and the reranker share: model checks, prompt tokenization, batching,
context sizing and the image path through mtmd.

An input becomes a list of *runs* in prompt order: token lists (template and content) and
prepared images. Text-only inputs are packed several to one ``llama_decode``, one sequence
id each, so each output provably comes from its own sequence; inputs with images go one at a
time through mtmd. Subclasses only say how to read an output (``_read``).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import images as img
from . import native, prompt
from .errors import (
    EngineError,
    InputError,
    MmprojMismatch,
    MmprojRequired,
    ModelNotFound,
    WrongArchitecture,
)
from .gguf_meta import GGUFMeta
from .inputs import ImageSource

log = logging.getLogger("launcher")

TEXT_ARCH = "qwen3vl"
MMPROJ_PROJECTORS = ("qwen3vl_merger",)
DEFAULT_MAX_TOKENS = 8192  # the official MAX_LENGTH
BATCH_CELLS = 2048  # KV cells per packed text batch (several short inputs share one decode)

Run = list[int] | img.PreparedImage
T = TypeVar("T")
E = TypeVar("E", bound="QwenEngine")


def next_pow2(n: int, floor: int = 256) -> int:
    size = floor
    while size < n:
        size *= 2
    return size


def check_gguf(path: Path, *, expect: str, what: str) -> GGUFMeta:
    """Read a GGUF's metadata and check its architecture."""
    from .gguf_meta import read_metadata

    if not Path(path).is_file():
        raise ModelNotFound(f"{what} file not found: {path}")
    meta = read_metadata(Path(path))
    arch = meta.architecture
    if arch != expect:
        raise WrongArchitecture(
            f"{path} is a GGUF of architecture {arch!r}; expected {what} (architecture {expect!r})"
        )
    return meta


def check_mmproj(path: Path, n_embd: int, model_path: Path) -> None:
    """Raise unless ``path`` is a Qwen3-VL vision projector whose output fits ``n_embd``."""
    kv = check_gguf(path, expect="clip", what="a vision projector (mmproj)").kv
    projector = kv.get("clip.projector_type")
    if not kv.get("clip.has_vision_encoder", False) or projector not in MMPROJ_PROJECTORS:
        raise MmprojMismatch(
            f"{path} is not a Qwen3-VL vision projector (projector {projector!r}; "
            f"expected {MMPROJ_PROJECTORS[0]!r})"
        )
    proj_dim = kv.get("clip.vision.projection_dim")
    if proj_dim is not None and int(proj_dim) != n_embd:
        raise MmprojMismatch(
            f"mmproj {path} projects to {proj_dim} dims but model {model_path} expects {n_embd}"
        )


@dataclass
class Prepared:
    """One input, tokenized: runs in prompt order."""

    index: int
    runs: list[Run] = field(default_factory=list)

    @property
    def has_images(self) -> bool:
        return any(isinstance(r, img.PreparedImage) for r in self.runs)

    @property
    def n_tokens(self) -> int:
        return sum(run_len(r) for r in self.runs)


def run_len(run: Run) -> int:
    return len(run) if isinstance(run, list) else run.tokens + 2  # + vision start/end


def tokenize_parts(
    parts: list[prompt.Part],
    images: Sequence[img.PreparedImage],
    tokenize: Callable[[str, bool], list[int]],
    max_tokens: int,
) -> list[Run]:
    """Token runs in prompt order; truncates content (never the template) to fit
    ``max_tokens``. ``tokenize(text, special)`` is the model's tokenizer (local or a
    server's): template parts with special tokens parsed, content without."""
    runs: list[Run] = []
    cut_index: int | None = None
    keep_tokens = 0
    for part in parts:
        if isinstance(part, prompt.Image):
            runs.append(images[part.index])
            continue
        tokens = tokenize(part.text, isinstance(part, prompt.Special))
        if isinstance(part, prompt.Text) and part.truncatable:
            cut_index = len(runs)
            keep_tokens = len(tokenize(part.text[: part.keep], False))
        runs.append(tokens)
    total = sum(run_len(r) for r in runs)
    if total > max_tokens:
        over = total - max_tokens
        cut = 0
        if cut_index is not None:
            run = runs[cut_index]
            assert isinstance(run, list)
            cut = min(over, len(run) - keep_tokens)
            runs[cut_index] = run[: len(run) - cut]
        if over > cut:
            raise InputError(
                f"input needs {total} tokens but the limit is {max_tokens} "
                "(an image takes (width/32) x (height/32) tokens)"
            )
        log.warning("input truncated from %d to %d tokens to fit the limit", total, total - cut)
    merged: list[Run] = []
    for r in runs:
        if isinstance(r, list) and merged and isinstance(merged[-1], list):
            merged[-1] = merged[-1] + r
        else:
            merged.append(r)
    return merged


class QwenEngine:
    """A Qwen3-VL GGUF on llama.cpp with an optional, lazily loaded mmproj."""

    what = "a Qwen3-VL model"

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        threads: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        min_pixels: int = img.MIN_PIXELS,
        max_pixels: int = img.MAX_PIXELS,
        verbose: bool = False,
        extra_bufts: bool | None = None,
        gpu: native.GpuSetting | None = None,
    ) -> None:
        native.set_verbose(verbose)
        self.model_path = Path(model_path)
        self.mmproj_path = Path(mmproj_path) if mmproj_path else None
        self.meta = check_gguf(self.model_path, expect=TEXT_ARCH, what=self.what)
        self.threads = threads or native.physical_cores()
        self.min_pixels = min_pixels
        self.max_pixels = max(min_pixels, min(max_pixels, img.MAX_PIXELS))
        self.model = native.Model(self.model_path, extra_bufts=extra_bufts, gpu=gpu)
        if not self.model.extra_bufts.on:
            log.info("extra buffer types off: %s", self.model.extra_bufts.why)
        log.info("%s runs on %s (%s)", self.model_path.name, self.device_text, self.device.why)
        self._owns_model = True
        self.max_tokens = min(max_tokens, self.model.n_ctx_train or max_tokens)
        if self.mmproj_path is not None:
            check_mmproj(self.mmproj_path, self.model.n_embd, self.model_path)
        self._vision: native.Vision | None = None
        self._ctx: native.Context | None = None
        # One caller at a time per engine (its contexts are not thread-safe); use fork()
        # for a second thread that should not wait (e.g. queries while indexing).
        self._busy = threading.RLock()

    def fork(self: E) -> E:
        """Another engine on the same loaded weights with its own contexts: safe to use
        from another thread at the same time. The original keeps owning the model."""
        twin = copy.copy(self)
        twin._owns_model = False
        twin._vision = None
        twin._ctx = None
        twin._busy = threading.RLock()
        return twin

    # subclasses: context kind and how to read one sequence's output
    embeddings_mode = True
    # Keep each sequence's KV cells between inputs and decode only what differs from the
    # previous input (the system turn, a reranker's query): same outputs, less compute.
    prefix_cache = True
    # Text inputs packed into one llama_decode, one sequence each. On a 2-core CPU the
    # model is compute bound and packing 8 was 2x slower than one at a time with prefix
    # reuse (bench/run.py measures it), so the default is 1.
    batch_seqs = 1
    # Flash attention in the vision encoder: same image embeddings, faster (native.Vision).
    vision_flash_attn = True

    def _pooling(self) -> int:
        raise NotImplementedError

    def _read(self, ctx: native.Context, seq: int, row: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def device(self) -> native.Device:
        return self.model.device

    @property
    def device_text(self) -> str:
        """Where the model runs, for people: ``CPU: AMD EPYC (AVX-512, 2 threads)``."""
        return self.device.describe(self.threads)

    @property
    def supports_images(self) -> bool:
        return self.mmproj_path is not None

    def release_vision(self) -> None:
        """Free the vision encoder (its weights are copied out of the file, hundreds of
        MB); it loads again, in about a second, for the next picture."""
        with self._busy:
            if self._vision is not None:
                self._vision.close()
                self._vision = None

    def close(self) -> None:
        with self._busy:
            for res in (self._ctx, self._vision):
                if res is not None:
                    res.close()
            self._ctx = None
            self._vision = None
            if self._owns_model:
                self.model.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- preparation ------------------------------------------------------------------

    def _require_vision(self, n_images: int) -> None:
        if n_images and self.mmproj_path is None:
            raise MmprojRequired(
                "an image was given but no vision projector (mmproj) is configured: "
                "pass --mmproj, set LAUNCHER_MMPROJ, or put the mmproj GGUF in models/"
            )

    def prepare_image(self, source: ImageSource) -> img.PreparedImage:
        return img.prepare_image(source, min_pixels=self.min_pixels, max_pixels=self.max_pixels)

    def tokenize_parts(
        self, parts: list[prompt.Part], images: Sequence[img.PreparedImage]
    ) -> list[Run]:
        """Token runs in prompt order; truncates content (never the template) to fit."""
        return tokenize_parts(
            parts, images, lambda text, special: self.model.tokenize(text, special=special),
            self.max_tokens,
        )  # fmt: skip

    # -- evaluation -------------------------------------------------------------------

    def _context(self, n_seq: int, n_cells: int) -> native.Context:
        """A context with at least ``n_seq`` sequences of ``n_cells`` cells (reused)."""
        ctx = self._ctx
        n_cells = next_pow2(n_cells)
        if ctx is not None and ctx.shape.n_seq >= n_seq and ctx.n_ctx_seq >= n_cells:
            return ctx
        if ctx is not None:
            # Grow to cover both shapes while that stays small, so alternating text
            # batches and images do not rebuild the context each time.
            grown = (max(n_seq, ctx.shape.n_seq), max(n_cells, ctx.n_ctx_seq))
            if grown[0] * grown[1] <= max(BATCH_CELLS, n_seq * n_cells):
                n_seq, n_cells = grown
            ctx.close()
            self._ctx = None
        self._ctx = native.Context(
            self.model,
            native.ContextShape(n_seq, n_cells),
            threads=self.threads,
            embeddings=self.embeddings_mode,
            pooling=self._pooling(),
        )
        return self._ctx

    def _vision_ctx(self) -> native.Vision:
        if self._vision is None:
            assert self.mmproj_path is not None
            self._vision = native.Vision(
                self.mmproj_path,
                self.model,
                threads=self.threads,
                min_tokens=img.MIN_TOKENS,
                max_tokens=img.MAX_TOKENS,
                flash_attn=self.vision_flash_attn,
            )
        return self._vision

    def run_all(self, prepared: Sequence[Prepared]) -> dict[int, np.ndarray | InputError]:
        """Evaluate prepared inputs; one output (or InputError) per ``Prepared.index``."""
        with self._busy:
            return self._run_all(prepared)

    def _run_all(self, prepared: Sequence[Prepared]) -> dict[int, np.ndarray | InputError]:
        out: dict[int, np.ndarray | InputError] = {}
        text_items = [p for p in prepared if not p.has_images]
        for group in self._pack(text_items):
            for p, result in zip(group, self._run_text_group(group), strict=True):
                out[p.index] = result
        for p in prepared:
            if p.has_images:
                out[p.index] = self._guard(self._run_mixed, p)
        return out

    def _pack(self, items: list[Prepared]) -> list[list[Prepared]]:
        """Group text inputs so a group fits BATCH_CELLS cells (or is a single input)."""
        groups: list[list[Prepared]] = []
        current: list[Prepared] = []
        longest = 0
        for p in sorted(items, key=lambda q: q.n_tokens):
            cells = next_pow2(max(longest, p.n_tokens))
            fits = (len(current) + 1) * cells <= BATCH_CELLS and len(current) < self.batch_seqs
            if current and not fits:
                groups.append(current)
                current, longest = [], 0
            current.append(p)
            longest = max(longest, p.n_tokens)
        if current:
            groups.append(current)
        return groups

    def _run_text_group(self, group: list[Prepared]) -> list[np.ndarray | InputError]:
        seqs: list[list[int]] = []
        for p in group:
            assert len(p.runs) == 1 and isinstance(p.runs[0], list)
            seqs.append(p.runs[0])
        try:
            ctx = self._context(len(seqs), max(len(s) for s in seqs))
            if self.prefix_cache:
                starts = [ctx.reuse(i, toks) for i, toks in enumerate(seqs)]
            else:
                ctx.clear()
                starts = [0] * len(seqs)
            if len(seqs) == 1:
                rows = [ctx.decode_last(seqs[0][starts[0] :], starts[0])]
            else:
                rows = ctx.decode([t[k:] for t, k in zip(seqs, starts, strict=True)], start=starts)
            for i, toks in enumerate(seqs):
                ctx.remember(i, toks)
            return [self._read(ctx, s, rows[s]) for s in range(len(seqs))]
        except EngineError as err:
            if self._ctx is not None:
                self._ctx.clear()
            if len(group) == 1:
                return [InputError(f"the model could not process this input: {err}")]
            # Isolate the failing input: every other one still gets its own output.
            return [self._run_text_group([p])[0] for p in group]

    def _run_mixed(self, item: Prepared) -> np.ndarray:
        """Text and images of one input on sequence 0: text by llama_decode, images by mtmd."""
        vision = self._vision_ctx()
        chunks: list[Any] = []
        try:
            total = 0
            for run in item.runs:
                if isinstance(run, list):
                    total += len(run)
                else:
                    chunk = vision.image_chunks(run.width, run.height, run.rgb)
                    chunks.append(chunk)
                    total += chunk.n_tokens
            ctx = self._context(1, total)
            n_past, row = 0, -1
            pending = iter(chunks)
            last = len(item.runs) - 1
            for i, run in enumerate(item.runs):
                if isinstance(run, list):
                    skip = 0
                    if i == 0 and self.prefix_cache:  # the system turn is often cached
                        skip = ctx.reuse(0, run)
                    elif i == 0:
                        ctx.clear()
                    if i == last:
                        row = ctx.decode_last(run[skip:], n_past + skip)
                    else:
                        ctx.set_outputs(False)  # nothing before the last token is read
                        try:
                            row = ctx.decode([run[skip:]], start=[n_past + skip])[0]
                        finally:
                            ctx.set_outputs(True)
                    if i == 0:
                        ctx.remember(0, run)
                    n_past += len(run)
                else:
                    if i == 0:
                        ctx.clear()
                    ctx.set_outputs(False)
                    try:
                        n_past = vision.eval(ctx, next(pending), n_past, 0, logits_last=False)
                    finally:
                        ctx.set_outputs(True)
                    row = -1
            return self._read(ctx, 0, row)
        except EngineError:
            if self._ctx is not None:
                self._ctx.clear()
            raise
        finally:
            for chunk in chunks:
                chunk.free()

    @staticmethod
    def _guard(fn: Callable[[Prepared], np.ndarray], item: Prepared) -> np.ndarray | InputError:
        try:
            return fn(item)
        except InputError as err:
            return err
        except EngineError as err:
            return InputError(f"the model could not process this input: {err}")
