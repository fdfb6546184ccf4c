"""A small in-memory ``SearchService`` for the UI tests (no model, no index on disk).

It indexes real files under a root it creates (so thumbnails and opening have something
to point at) and records what the UI asked for.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from launcher.errors import LauncherError
from launcher.query import Hit, IndexStatus, Query, Results

TEXT_FILES = {
    "notes/holiday plans.md": "Trip to Lisbon in May: flights, hotel near Alfama, pastel de nata.",
    "notes/groceries.txt": "milk, eggs, bread, coffee beans, oranges",
    "code/parser.py": "def parse_invoice(text):\n    # read the invoice total and due date\n",
    "docs/tax return 2023.pdf": "Annual tax return, income statement, deductions for 2023.",
    "docs/invoice-0042.pdf": "Invoice 0042: total due 1,250 EUR by 30 June.",
    "notes/<i>weird<i> {{name}} ${x} &amp;.txt": "a name with markup: <script>alert(1)</script>",
}
IMAGE_FILES = {
    "photos/beach sunset.png": (240, 120, 40),
    "photos/cat on sofa.png": (90, 90, 90),
}


class FakeService:
    """Word-overlap search over a few files; rerank reverses the embedding order."""

    def __init__(self, root: Path, *, can_rerank: bool = True, rerank_delay: float = 0.0):
        from PIL import Image

        self.root = root
        self._can_rerank = can_rerank
        self.rerank_delay = rerank_delay
        self.queries: list[Query] = []
        self.rerank_calls: list[tuple[Query, list[str]]] = []
        self.reindex_calls = 0
        self.thumbnail_calls: list[str] = []
        self.fail_next: str | None = None
        self.message = "watching 1 folder"  # what status() says
        self.queued = 0
        self._lock = threading.Lock()
        self.texts: dict[str, str] = {}
        now = time.time()
        for i, (rel, text) in enumerate(TEXT_FILES.items()):
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            self.texts[str(p)] = text
            _touch(p, now - (i + 1) * 3 * 86400)
        for rel, color in IMAGE_FILES.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 48), color).save(p)
            self.texts[str(p)] = ""
            _touch(p, now - 3600)
        self.paths = set(self.texts)

    # --- SearchService
    def search(self, query: Query) -> list[Hit]:
        with self._lock:
            self.queries.append(query)
            if self.fail_next:
                msg, self.fail_next = self.fail_next, None
                raise LauncherError(msg)
        words = set(re.findall(r"\w+", query.text.lower()))
        hits = []
        for path, text in self.texts.items():
            p = Path(path)
            kind = _kind(p)
            if query.kinds and kind not in query.kinds:
                continue
            if query.folder and not p.is_relative_to(query.folder):
                continue
            mtime = p.stat().st_mtime
            if query.modified_after and mtime < query.modified_after.timestamp():
                continue
            if query.modified_before and mtime >= query.modified_before.timestamp():
                continue
            hay = set(re.findall(r"\w+", (p.name + " " + text).lower()))
            score = len(words & hay) / max(1, len(words)) if words else 0.0
            if query.image is not None and kind == "image":
                score = max(score, 0.9 if "sunset" in p.name else 0.6)
            if score <= 0 or score < query.min_score:
                continue
            hits.append(
                Hit(
                    path=path,
                    name=p.name,
                    folder=str(p.parent),
                    kind=kind,
                    score=round(score * 0.8, 4),
                    snippet=text[:200],
                    exact=bool(query.text) and query.text.lower() in (p.name + text).lower(),
                    page=1 if kind == "pdf" else None,
                    line_start=1 if kind == "code" else None,
                    line_end=2 if kind == "code" else None,
                    mtime=mtime,
                    size=p.stat().st_size,
                    has_thumbnail=kind == "image",
                )
            )
        hits.sort(key=lambda h: (-h.score, h.name))
        return Results(hits[: query.top], total=len(hits))

    def rerank(self, query: Query, hits: Sequence[Hit]) -> list[Hit]:
        if not self._can_rerank:
            raise LauncherError("no reranker")
        with self._lock:
            self.rerank_calls.append((query, [h.path for h in hits]))
        if self.rerank_delay:
            time.sleep(self.rerank_delay)
        # lower embedding score -> higher rerank score: the order visibly flips
        out = [replace(h, rerank_score=round(1.0 - h.score / 2, 4)) for h in hits]
        return sorted(out, key=lambda h: -(h.rerank_score or 0))

    @property
    def can_rerank(self) -> bool:
        return self._can_rerank

    def status(self) -> IndexStatus:
        return IndexStatus(
            files=len(self.paths), pending=2, failed=1, queued=self.queued, message=self.message
        )

    def reindex(self) -> None:
        with self._lock:
            self.reindex_calls += 1

    def is_indexed(self, path: str) -> bool:
        return path in self.paths

    def thumbnail(self, path: str, size: int = 256) -> bytes | None:
        from PIL import Image

        self.thumbnail_calls.append(path)
        if path not in self.paths or _kind(Path(path)) != "image":
            return None
        with Image.open(path) as im:
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
        return buf.getvalue()


def _kind(p: Path) -> str:
    return {".png": "image", ".pdf": "pdf", ".py": "code", ".md": "document"}.get(p.suffix, "text")


def _touch(p: Path, mtime: float) -> None:
    import os

    os.utime(p, (mtime, mtime))
