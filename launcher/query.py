"""Typed records of search: what the UI and CLI ask, what they get back.

``SearchService`` is the seam between the UI and everything behind it (index, engine,
reranker, watcher): the UI talks only to this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from .extract import KINDS as FILE_KINDS
from .inputs import ImageSource

# One vocabulary of kinds: what `info`, results and filters call a file (FILE_KINDS, decided
# by extract.sniff), plus names for groups of them that filters also accept.
KIND_GROUPS: dict[str, frozenset[str]] = {"document": frozenset({"markdown", "html", "office"})}
KINDS: tuple[str, ...] = (*FILE_KINDS, *KIND_GROUPS)  # what --kind and the page's filter accept


@dataclass(frozen=True)
class Query:
    """A search: text and/or an image, with optional filters."""

    text: str = ""
    image: ImageSource | None = None
    instruction: str | None = None
    kinds: frozenset[str] = field(default_factory=frozenset)  # empty = all kinds
    folder: Path | None = None  # only files under this folder
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    min_score: float = 0.0
    top: int = 20
    rerank: bool = False


@dataclass(frozen=True)
class Hit:
    """One file in the results (chunks of a file are folded into one hit)."""

    path: str
    name: str
    folder: str
    kind: str
    score: float  # cosine similarity of the best piece (or the reranker's P(yes))
    snippet: str  # the matching text, or "" for images
    exact: bool = False  # the query text appears as typed in the name, path or text
    page: int | None = None  # best chunk's PDF page (1-based)
    line_start: int | None = None  # best chunk's line range (1-based)
    line_end: int | None = None
    mtime: float = 0.0
    size: int = 0
    rerank_score: float | None = None
    rerank_error: str | None = None  # why the reranker could not score it (left unscored)
    has_thumbnail: bool = False  # image files and PDF pages
    queued: bool = False  # found by name; its content is not embedded yet
    # Added by the full-text index (see LAUNCHER_README, "How results are ranked"):
    marks: tuple[tuple[int, int], ...] = ()  # spans of ``snippet`` that match the query
    relevance: float = 0.0  # 0..1 from the fused rank: 1 = first by words and by meaning
    matched: str = ""  # why it is here: "words", "meaning" or "words+meaning"


class Results(list[Hit]):
    """Hits, best first, and how many files the search found in all (a plain list
    elsewhere: ``len`` is the number shown, ``total`` the number found)."""

    def __init__(
        self,
        hits: Sequence[Hit] = (),
        *,
        total: int | None = None,
        capped: bool = False,
        by_words: int | None = None,
    ) -> None:
        super().__init__(hits)
        self.total = len(self) if total is None else max(total, len(self))
        self.capped = capped  # the search stopped looking: ``total`` is a lower bound
        self.by_words = by_words  # files found by their words (None: words not searched)


@dataclass(frozen=True)
class IndexStatus:
    files: int
    pending: int
    failed: int
    indexing: bool = False
    queued: int = 0  # files found but not embedded yet (searchable by name only)
    message: str = ""  # e.g. "watching 3 folders", "watch limit reached: polling"
    device: str = ""  # where the model runs, e.g. "CPU: AMD EPYC (AVX-512, 2 threads)"


class SearchService(Protocol):
    """What the UI needs from the back end."""

    def search(self, query: Query) -> list[Hit]: ...

    def rerank(self, query: Query, hits: Sequence[Hit]) -> list[Hit]:
        """The same hits re-scored by the reranker, best first (raises if unavailable)."""
        ...

    @property
    def can_rerank(self) -> bool: ...

    def status(self) -> IndexStatus: ...

    def reindex(self) -> None:
        """Start a re-index of all roots in the background."""
        ...

    def is_indexed(self, path: str) -> bool:
        """True only for files in the index: the only files the UI may serve."""
        ...

    def thumbnail(self, path: str, size: int = 256) -> bytes | None:
        """PNG thumbnail of an indexed image or PDF (first/best page), else None."""
        ...
