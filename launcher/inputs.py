"""Typed records that cross module boundaries: what goes into the engine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Union

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .errors import InputError

# An image can be given as a path, the file's bytes, or a PIL image.
ImageSource = Union[str, "os.PathLike[str]", bytes, "Image.Image"]


@dataclass(frozen=True)
class EmbedInput:
    """One item to embed: text, one or more images, or both.

    ``instruction`` overrides the engine's default instruction for this item only.
    An item with neither text nor images embeds the text ``NULL`` (as the official code does).
    """

    text: str | None = None
    images: tuple[ImageSource, ...] = field(default=())
    instruction: str | None = None

    @classmethod
    def of(cls, item: EmbedInput | str | ImageSource) -> EmbedInput:
        """A str is text; bytes, a path object or a PIL image is one image."""
        if isinstance(item, EmbedInput):
            return item
        if isinstance(item, str):
            return cls(text=item)
        return cls(images=(item,))


@dataclass(frozen=True)
class RerankDoc:
    """A document for the reranker: text, images, or both."""

    text: str | None = None
    images: tuple[ImageSource, ...] = field(default=())

    @classmethod
    def of(cls, item: RerankDoc | str | ImageSource) -> RerankDoc:
        """A str is text; bytes, a path object or a PIL image is one image."""
        if isinstance(item, RerankDoc):
            return item
        if isinstance(item, str):
            return cls(text=item)
        return cls(images=(item,))


class Embedder(Protocol):
    """What the index and search need from an embedding engine (the test seam).

    ``embed_each`` returns one outcome per item, in order: a unit-norm float32 vector,
    or the ``InputError`` that item raised. One bad item never shifts or drops another.
    """

    @property
    def dim(self) -> int: ...

    @property
    def supports_images(self) -> bool: ...

    def embed_each(
        self, items: Sequence[EmbedInput | str], *, dims: int | None = None
    ) -> list[np.ndarray | InputError]: ...

    def count_tokens(self, text: str) -> int: ...
