"""Qwen3-VL-Embedding on llama.cpp: text, images, or both, to unit vectors.

The prompt and image preprocessing follow the official implementation (``prompt.py``,
``images.py``); pooling is the hidden state of the last token (llama.cpp's LAST pooling,
forced whatever the GGUF says), then L2 normalisation; ``dims`` truncates (Matryoshka)
and renormalises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import images as img
from . import native, prompt
from .engine import Prepared, QwenEngine
from .errors import InputError, LauncherError
from .inputs import EmbedInput


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two vectors comparable: same weights, prompt and image settings."""

    model_file: str
    model_size: int
    model_header_hash: str
    mmproj_file: str | None
    dims: int
    instruction: str
    min_pixels: int
    max_pixels: int


def model_identity(
    model_path: Path,
    mmproj_path: Path | None,
    *,
    instruction: str | None = None,
    min_pixels: int = img.MIN_PIXELS,
    max_pixels: int = img.MAX_PIXELS,
    dims: int | None = None,
) -> ModelIdentity:
    """The identity vectors made with these files and settings carry (no model load)."""
    from .gguf_meta import read_metadata

    meta = read_metadata(model_path)
    n_embd = int(meta.get(f"{meta.architecture}.embedding_length", 0))
    return ModelIdentity(
        model_file=model_path.name,
        model_size=meta.file_size,
        model_header_hash=meta.header_bytes_hash,
        mmproj_file=mmproj_path.name if mmproj_path else None,
        dims=dims or n_embd,
        instruction=prompt.normalize_instruction(instruction, prompt.DEFAULT_INSTRUCTION),
        min_pixels=min_pixels,
        max_pixels=max(min_pixels, min(max_pixels, img.MAX_PIXELS)),
    )


class Embedder(QwenEngine):
    """Embeds text and images with a Qwen3-VL-Embedding GGUF (and its mmproj, lazily)."""

    what = "a Qwen3-VL embedding model"
    embeddings_mode = True

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        instruction: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_path, mmproj_path, **kwargs)
        self.instruction = prompt.normalize_instruction(instruction, prompt.DEFAULT_INSTRUCTION)

    def _pooling(self) -> int:
        import llama_cpp.llama_cpp as ll

        return int(ll.LLAMA_POOLING_TYPE_LAST)

    def _read(self, ctx: native.Context, seq: int, row: int) -> np.ndarray:
        return ctx.seq_embedding(seq, self.model.n_embd)

    @property
    def dim(self) -> int:
        return self.model.n_embd

    def identity(self, dims: int | None = None) -> ModelIdentity:
        return model_identity(
            self.model_path,
            self.mmproj_path,
            instruction=self.instruction,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            dims=dims or self.dim,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text, special=False))

    def prompt_text(self, item: EmbedInput | str) -> str:
        """The prompt an item becomes, as a string (images shown as the official marker)."""
        x = EmbedInput.of(item)
        return prompt.render(
            prompt.embedding_prompt(x.text, len(x.images), x.instruction or self.instruction)
        )

    def embed(self, items: Sequence[EmbedInput | str], *, dims: int | None = None) -> np.ndarray:
        """A float32 (n, dims) array of unit vectors; raises the first failing item's error."""
        return stack_vectors(self.embed_each(items, dims=dims), lambda: dims or self.dim)

    def embed_each(
        self, items: Sequence[EmbedInput | str], *, dims: int | None = None
    ) -> list[np.ndarray | InputError]:
        """One outcome per item, in order: a unit vector or that item's ``InputError``."""
        if dims is not None and not 1 <= dims <= self.dim:
            raise LauncherError(f"dims must be between 1 and {self.dim}, got {dims}")
        inputs = [EmbedInput.of(x) for x in items]
        self._require_vision(sum(len(x.images) for x in inputs))
        results: dict[int, np.ndarray | InputError] = {}
        prepared: list[Prepared] = []
        for i, item in enumerate(inputs):
            try:
                images = [self.prepare_image(src) for src in item.images]
                parts = prompt.embedding_prompt(
                    item.text, len(images), item.instruction or self.instruction
                )
                prepared.append(Prepared(i, self.tokenize_parts(parts, images)))
            except InputError as err:
                results[i] = err
        results.update(self.run_all(prepared))
        return [_finish(results[i], dims) for i in range(len(inputs))]


def stack_vectors(
    out: Sequence[np.ndarray | InputError], empty_dims: Callable[[], int]
) -> np.ndarray:
    """``embed_each``'s outcomes as one float32 (n, dims) array; raises the first error.
    ``empty_dims`` is asked only for no outcomes (a remote engine learns its width late)."""
    for result in out:
        if isinstance(result, LauncherError):
            raise result
    if not out:
        return np.zeros((0, empty_dims()), np.float32)
    return np.stack(out).astype(np.float32)  # type: ignore[arg-type]


def _finish(result: np.ndarray | InputError, dims: int | None) -> np.ndarray | InputError:
    """Matryoshka truncation, then L2 normalisation."""
    if isinstance(result, InputError):
        return result
    v = np.asarray(result, dtype=np.float32)
    if dims is not None:
        v = v[:dims]
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        return InputError("the model produced a zero or non-finite vector for this input")
    return (v / norm).astype(np.float32)
