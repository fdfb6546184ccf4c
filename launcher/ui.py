"""The search page: Gradio on 127.0.0.1, talking only to a ``SearchService``.

``build_app`` makes the Gradio Blocks, ``create_server_app`` wraps it in a FastAPI app
that adds the thumbnail route and the guards, ``serve`` runs that on a loopback port in
the background and ``run_launch`` is the ``launch`` command's body.

Exposure rules: the server binds to 127.0.0.1 unless a host is given explicitly; the only
files read on a request's behalf are thumbnails of files in the index
(``service.is_indexed``); Gradio's own file routes serve only this run's uploads; requests
whose Host header is not the loopback address (DNS rebinding) or that another web site
makes the browser send (CSRF: Origin / Sec-Fetch-Site) are refused.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import html
import itertools
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths
from .errors import LauncherError
from .hotkey import DEFAULT_HOTKEY, WINDOW_TITLE, Focuser, HotkeyHandle, HotkeyUnavailable
from .query import KINDS, Hit, IndexStatus, Query, Results, SearchService
from .walk import plural

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7733  # tried first so the URL is stable; any free port if taken
DEBOUNCE_MS = 250
THUMB_SIZE = 96
MAX_PATH_CHARS = 4096
MAX_RESULTS = 1000  # "Show more" stops here (each page is UIOptions.top more)
MAX_QUERY_CHARS = 2000  # longer text is cut (a 1 MB query took half a minute to embed)
QUERY_IMAGE_PIXELS = 50_000_000  # query images above this are refused before decoding
MAX_IMAGE_BYTES = 50 * 1000 * 1000  # a query image file
SNIPPET_CHARS = 240
WHEN_CHOICES = ("any time", "today", "past week", "past month", "past year")
_WHEN_DAYS = {"past week": 7, "past month": 31, "past year": 366}
KIND_COLORS = {  # the icon's colour per kind
    "text": "#7f8c8d",
    "code": "#2e86de",
    "document": "#16a085",
    "pdf": "#d63031",
    "image": "#8e44ad",
    "video": "#e67e22",
}


class UIError(LauncherError):
    """The UI cannot start (port taken, bad host)."""


@dataclass(frozen=True)
class UIOptions:
    """Knobs of the page (defaults suit a person at a keyboard)."""

    top: int = 20
    debounce_ms: int = DEBOUNCE_MS
    rerank_batch: int = 5  # reranker scores arrive in batches of this many (0: all at once)
    rerank_top: int = 10  # rerank this many of the embedding results (0: all)
    status_every: float = 3.0  # seconds between index-status refreshes
    title: str = WINDOW_TITLE
    upload_request_bytes: int = 50 * 1000 * 1000  # one upload request (one query image)
    upload_total_bytes: int = 200 * 1000 * 1000  # this run's uploads together


# --------------------------------------------------------------------------- gradio import


def _ui_cache() -> Path:
    return paths.cache_dir() / "ui"


_UPLOADS: list[Path] = []  # the process's upload folder, fixed at the first use


def _uploads_root() -> Path:
    """Where every run's upload folder goes. Gradio accepts a file named in a request only
    inside its "upload folder", which it reads from GRADIO_TEMP_DIR per request: that
    variable names this folder for the whole process."""
    if not _UPLOADS:
        given = os.environ.get("GRADIO_TEMP_DIR")
        _UPLOADS.append(Path(given) if given else _ui_cache() / "uploads")
        os.environ["GRADIO_TEMP_DIR"] = str(_UPLOADS[0])
    return _UPLOADS[0]


def _prepare_gradio_env() -> None:
    """Analytics off, Gradio's files in our cache dir (not /tmp/gradio, not $HOME)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(_ui_cache() / "examples"))
    _uploads_root()


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl+C there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_run_dirs() -> list[Path]:
    """Delete upload folders of runs that ended without cleaning up (crash, kill -9)."""
    removed = []
    base = _uploads_root()
    for old in base.glob("run-*") if base.is_dir() else ():
        pid = old.name.split("-")[1] if old.name.count("-") >= 2 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    cutoff = time.time() - 86400  # folders of older versions (no pid in the name)
    legacy = _ui_cache()
    for old in legacy.glob("run-*") if legacy.is_dir() else ():
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
    return removed


def _new_run_dir() -> Path:
    """A private folder (0700) for this run's uploads (query images)."""
    base = paths.ensure(_uploads_root())
    remove_stale_run_dirs()
    return Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base))


@contextlib.contextmanager
def _gradio_temp(folder: Path) -> Iterator[None]:
    """Gradio reads GRADIO_TEMP_DIR when components and the app are made: point it here."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before


def _gradio() -> Any:
    _prepare_gradio_env()
    import gradio as gr

    return gr


# --------------------------------------------------------------------------- rendering


def esc(text: object) -> str:
    """HTML-escape, also ``{ } $ `` ` so no template syntax survives in file names."""
    out = html.escape(str(text), quote=True)
    return (
        out.replace("{", "&#123;")
        .replace("}", "&#125;")
        .replace("$", "&#36;")
        .replace("`", "&#96;")
    )


def visible(text: str) -> str:
    """``text`` as it may be shown: bytes of a file name that are not valid UTF-8 (kept
    by Python as lone surrogates, which JSON cannot carry) as ``\\xNN``, and control,
    bidi and invisible characters as ``<U+202E>``, so a name cannot pose as another
    (a right-to-left override makes "invoice<U+202E>fdp.exe" read "invoiceexe.pdf")."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
            continue
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: one undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(f"<U+{code:04X}>")
    return "".join(out)


_REF_PREFIX = "fs:"


def path_ref(path: str) -> str:
    """How the page names a file to the server: the path itself, or ``fs:`` and the
    path's bytes in base64 for a path that is not valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return _REF_PREFIX + base64.urlsafe_b64encode(os.fsencode(path)).decode("ascii")
    return path


def path_from_ref(ref: str) -> str | None:
    """The path a ``path_ref`` names (None if it is malformed)."""
    if not ref.startswith(_REF_PREFIX):
        return ref
    try:
        return os.fsdecode(base64.urlsafe_b64decode(ref[len(_REF_PREFIX) :].encode("ascii")))
    except (ValueError, UnicodeError):
        return None


def relative_time(mtime: float, now: float | None = None) -> str:
    """``"3 days ago"``; ``""`` for an unknown time."""
    if not mtime:
        return ""
    now = time.time() if now is None else now
    delta = now - mtime
    if delta < 0:
        return "in the future"
    steps = (
        (60, None, "just now"),
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (7 * 86400, 86400, "day"),
        (31 * 86400, 7 * 86400, "week"),
        (365 * 86400, 30 * 86400, "month"),
        (math.inf, 365 * 86400, "year"),
    )
    for limit, unit, name in steps:
        if delta < limit:
            if unit is None:
                return name
            n = max(1, int(delta // unit))
            if name == "day" and n == 1:
                return "yesterday"
            return f"{n} {name}{'s' if n != 1 else ''} ago"
    return ""  # pragma: no cover


# Words too common to be worth marking in a snippet (a query is often a sentence).
_STOPWORD_LIST = (
    "a an and are as at be by can do does for from has have how i in is it its me my no "
    "not of on or our so that the their them then there these this to was we were what "
    "when where which who why will with you your"
)
_STOPWORDS = frozenset(_STOPWORD_LIST.split())


def _terms(text: str) -> list[str]:
    """What to mark: the whole query as typed (codes such as INV-2024-0917) and its words
    of 2+ characters that are not stop words; longest first."""
    lower = text.lower()
    words = set(re.findall(r"\w{2,}", lower))
    # tokens with inner punctuation (INV-2024-0917, foo.py) and the whole query, as typed
    words |= {t for t in (w.strip(".,;:!?()[]{}'\"") for w in lower.split()) if len(t) >= 3}
    whole = " ".join(lower.split())
    if len(whole) >= 3:
        words.add(whole)
    words -= _STOPWORDS
    return sorted(words, key=len, reverse=True)


def highlight(text: str, query_text: str) -> str:
    """Escaped ``text`` with the query's words wrapped in ``<mark>`` where a word of the
    text starts with them ("invoice" marks "invoices", "key" does not mark "hotkey")."""
    terms = _terms(query_text)
    if not terms:
        return esc(text)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + ")", re.I)
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append(esc(text[pos : m.start()]))
        out.append(f"<mark>{esc(m.group(0))}</mark>")
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


def marked(text: str, marks: Sequence[tuple[int, int]]) -> str:
    """Escaped ``text`` with the given spans (from the full-text index) in ``<mark>``."""
    out, pos = [], 0
    for start, end in marks:
        if start < pos or end > len(text):
            continue
        out += [esc(text[pos:start]), f"<mark>{esc(text[start:end])}</mark>"]
        pos = end
    out.append(esc(text[pos:]))
    return "".join(out)


WEAK_NOTICE = "No file contains these words — closest by meaning:"


def _score(hit: Hit, weak: bool = False) -> tuple[str, str]:
    """The one number a row shows, and what it means. A weak match (nothing has the
    query's words) shows its similarity: its rank-based relevance would read 1.00."""
    if weak and not hit.queued:
        return f"{hit.score:.2f}", "similarity by meaning (no file contains these words)"
    if hit.relevance:
        how = {"words": "its words", "meaning": "its meaning"}.get(hit.matched, "words and meaning")
        return f"{hit.relevance:.2f}", f"relevance (found by {how})"
    return ("", "") if hit.queued else (f"{hit.score:.2f}", "similarity")


def _snippet(hit: Hit) -> str:
    text = visible(" ".join(hit.snippet.split()))
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def _where(hit: Hit) -> str:
    if hit.page:
        return f"p. {hit.page}"
    if hit.line_start:
        if hit.line_end and hit.line_end != hit.line_start:
            return f"lines {hit.line_start}–{hit.line_end}"
        return f"line {hit.line_start}"
    return ""


def _icon(hit: Hit) -> str:
    """A file-type tile: the extension on the kind's colour (no emoji fonts needed)."""
    ext = Path(visible(hit.name)).suffix.lstrip(".").upper()[:4] or hit.kind[:4].upper()
    color = KIND_COLORS.get(hit.kind, KIND_COLORS["text"])
    return f'<span class="licon" style="background:{color}" aria-hidden="true">{esc(ext)}</span>'


def short_folder(folder: str, limit: int = 64) -> str:
    """``~`` for the home folder, and the middle elided when long: ``~/a/…/c/d``
    (control and bidi characters shown, see ``visible``)."""
    folder = visible(folder)
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and (folder == home or folder.startswith(home + os.sep)):
        folder = "~" + folder[len(home) :]
    if len(folder) <= limit:
        return folder
    parts = folder.split(os.sep)
    head, tail = parts[:2], parts[2:]
    while tail and len(os.sep.join([*head, "…", *tail])) > limit:
        tail = tail[1:]
    if not tail:
        return "…" + folder[-(limit - 1) :]
    return os.sep.join([*head, "…", *tail])


def thumb_url(path: str, size: int = THUMB_SIZE) -> str:
    return "/thumb?" + urllib.parse.urlencode({"path": path_ref(path), "size": size})


def render_hit(
    hit: Hit, index: int, query_text: str = "", now: float | None = None, *, weak: bool = False
) -> str:
    """One result row (everything from the hit is escaped); ``weak``: shown dimmed, found
    by meaning only although the query has words no file contains."""
    icon = _icon(hit)
    if hit.has_thumbnail:
        visual = (
            f'<img class="lthumb" loading="lazy" alt="" src="{esc(thumb_url(hit.path))}" '
            "onerror=\"this.style.display='none';this.nextElementSibling.style.display=''\">"
            f'<span style="display:none">{icon}</span>'
        )
    else:
        visual = icon
    badges = []
    if hit.exact:
        badges.append('<span class="lbadge lexact" title="the query appears as typed">exact</span>')
    if hit.rerank_score is not None:
        badges.append(
            f'<span class="lbadge lrr" title="reranker score">rerank {hit.rerank_score:.2f}</span>'
        )
    if hit.queued:
        badges.append(
            '<span class="lbadge lqueued" title="found by name; its content is still being '
            'indexed">indexing…</span>'
        )
    where = _where(hit)
    snippet = _snippet(hit)
    if hit.marks:  # the full-text index says which words matched (accents, prefixes too)
        snip_html = marked(hit.snippet, hit.marks)
    else:
        snip_html = highlight(snippet, query_text) if snippet else ""
    if where:
        snip_html = f'<span class="lwhere">{esc(where)}</span> {snip_html}'
    score_text, score_title = _score(hit, weak)
    modified = relative_time(hit.mtime, now)
    exact_time = datetime.fromtimestamp(hit.mtime).strftime("%Y-%m-%d %H:%M") if hit.mtime else ""
    sel = (" sel" if index == 0 else "") + (" lweak" if weak else "")
    ref = path_ref(hit.path)
    # data-path: what Copy path copies; data-ref: how Open/Reveal name the file
    copy = hit.path if ref == hit.path else visible(hit.path)
    ref_attr = "" if ref == hit.path else f' data-ref="{esc(ref)}"'
    return (
        f'<div class="lrow{sel}" role="option" aria-selected="{str(index == 0).lower()}" '
        f'data-i="{index}" data-path="{esc(copy)}"{ref_attr} title="{esc(visible(hit.path))}">'
        f'<div class="lvis">{visual}</div>'
        '<div class="lmain">'
        f'<div class="lline"><span class="lname">{highlight(visible(hit.name), query_text)}'
        "</span>"
        f'{"".join(badges)}<span class="lfolder">{esc(short_folder(hit.folder))}</span></div>'
        f'<div class="lsnip">{snip_html}</div>'
        "</div>"
        '<div class="lmeta">'
        f'<span class="lscore" title="{esc(score_title)}">{score_text}</span>'
        f'<span class="ltime" title="{esc(exact_time)}">{esc(modified)}</span>'
        '<span class="lacts">'
        '<button type="button" data-act="open" title="Open (Enter)">Open</button>'
        '<button type="button" data-act="reveal" title="Reveal in folder (Ctrl+Enter)">'
        "Reveal</button>"
        '<button type="button" data-act="copy" title="Copy path (Ctrl+Shift+C)">Copy path</button>'
        "</span></div></div>"
    )


@dataclass(frozen=True)
class Found:
    """What the page says about a result list besides its rows."""

    total: int = 0  # files the search found (more than it shows, with "Show more")
    capped: bool = False  # the search stopped counting: ``total`` is a lower bound
    weak: bool = False  # no file has the query's words: the rows are closest by meaning
    more: bool = False  # a next page exists: show "Show more"
    filtered: bool = False  # filters narrowed the search (said when nothing is found)


def found(hits: Sequence[Hit], query: Query) -> Found:
    """``Found`` for the hits of ``query`` (a ``Results`` knows its total; a plain list
    counts only itself)."""
    total, capped, by_words = len(hits), False, None
    if isinstance(hits, Results):
        total, capped, by_words = hits.total, hits.capped, hits.by_words
    if by_words is None and any(h.matched for h in hits):
        by_words = sum("words" in h.matched for h in hits)
    weak = bool(query.text.strip() and hits and by_words == 0 and not any(h.exact for h in hits))
    return Found(
        total=total,
        capped=capped,
        weak=weak,
        more=len(hits) >= query.top and (total > len(hits) or capped),
        filtered=bool(
            query.kinds
            or query.folder
            or query.modified_after
            or query.modified_before
            or query.min_score > 0
        ),
    )


def _count(n: int, capped: bool = False) -> str:
    return f"{n:,}{'+' if capped else ''} result{'s' if n != 1 or capped else ''}"


def render_results(
    hits: Sequence[Hit],
    *,
    query_text: str = "",
    note: str = "",
    elapsed_ms: float | None = None,
    state: str = "done",
    info: Found | None = None,
) -> str:
    """The result list (``state``: "done", "reranking" or "reranked"), with the total
    found, a notice when all rows are weak matches, and "Show more" when there is more."""
    info = info or Found(total=len(hits))
    parts = []
    if hits:
        total = max(info.total, len(hits))
        if total > len(hits) or info.capped:
            parts.append(f"{len(hits):,} of {_count(total, info.capped)}")
        else:
            parts.append(_count(total))
    if elapsed_ms is not None:
        parts.append(f"{elapsed_ms:.0f} ms")
    if note:
        parts.append(note)
    head = f'<div class="linfo" data-state="{esc(state)}">{esc(visible(" · ".join(parts)))}</div>'
    if not hits:
        why = " with the filters above" if info.filtered else ""
        return head + f'<div class="lempty">No matches{why}.</div>'
    if info.weak:
        head += f'<div class="lnotice" role="note">{esc(WEAK_NOTICE)}</div>'
    now = time.time()
    rows = "".join(render_hit(h, i, query_text, now, weak=info.weak) for i, h in enumerate(hits))
    more = ""
    if info.more:
        more = (
            f'<button type="button" class="lmore" data-shown="{len(hits)}" '
            'title="Load the next results (Tab to reach, Enter)">Show more</button>'
        )
    return f'{head}<div class="llist" role="listbox" data-count="{len(hits)}">{rows}</div>{more}'


HINT_HTML = (
    '<div class="lhint">Type to search by meaning, or drop / paste an image.'
    "<br><kbd>↑</kbd><kbd>↓</kbd> move · <kbd>Enter</kbd> open · "
    "<kbd>Ctrl</kbd>+<kbd>Enter</kbd> reveal · <kbd>Ctrl</kbd>+<kbd>Shift</kbd>+<kbd>C</kbd> "
    "copy path · <kbd>Esc</kbd> clear</div>"
)


def message_html(text: str, kind: str = "error") -> str:
    return f'<div class="lmsg l{esc(kind)}">{esc(visible(text))}</div>'


EMPTY_INDEX_HINT = (
    "nothing indexed yet: run <code>launcher.py index FOLDER</code> "
    "(e.g. <code>launcher.py index ~/Documents</code>)"
)


def render_status(status: IndexStatus) -> str:
    """The status line (one line: cut with an ellipsis, the whole text in its tooltip)."""
    parts = [
        f'<span data-k="files">{plural(status.files, "file")}</span>',
        f'<span data-k="pending">{status.pending:,} pending</span>',
        f'<span data-k="failed" class="{"lbad" if status.failed else ""}">'
        f"{status.failed:,} failed</span>",
    ]
    if status.queued:
        parts.insert(
            1,
            f'<span data-k="queued" title="found, findable by name; content not indexed yet">'
            f"{status.queued:,} queued</span>",
        )
    if not status.files and not status.indexing:
        parts.append(f'<span data-k="empty">{EMPTY_INDEX_HINT}</span>')
    if status.indexing:
        parts.append('<span class="lbusy">indexing…</span>')
    if status.message:
        parts.append(f"<span>{esc(visible(status.message))}</span>")
    if status.device:
        parts.append(f'<span data-k="device">{esc(visible(status.device))}</span>')
    line = " · ".join(parts)
    whole = re.sub(r"<[^>]*>", "", line)  # the parts are escaped: this is their text
    return f'<div class="lstat" title="{whole}">{line}</div>'


FILTERS = ("kinds", "folder", "when", "after", "before", "min_score")  # chip names


def render_chips(
    kinds: Sequence[str] | None = None,
    folder: str | None = None,
    when: str | None = None,
    after: Any = None,
    before: Any = None,
    min_score: float | None = None,
) -> str:
    """The active filters as chips (seen with the Filters panel closed); each chip's
    button names the filter it removes (``FILTERS``)."""
    chips: list[tuple[str, str]] = []
    wanted = [k for k in (kinds or ()) if k in KINDS]
    if wanted:
        chips.append(("kinds", "kind: " + ", ".join(wanted)))
    if folder and folder.strip():
        chips.append(("folder", "in " + short_folder(os.path.expanduser(folder.strip()))))
    if when and when != "any time":
        chips.append(("when", f"modified {when}"))
    for name, value in (("after", after), ("before", before)):
        day = _as_datetime(value)
        if day is not None:
            chips.append((name, f"modified {name} {day:%Y-%m-%d}"))
    score = float(min_score or 0.0)
    if score > 0:  # NaN is not > 0
        chips.append(("min_score", f"score ≥ {score:.2f}"))
    if not chips:
        return ""
    out = [
        f'<span class="lchip" data-filter="{name}">{esc(visible(text))}'
        f'<button type="button" data-clear="{name}" title="Remove this filter" '
        f'aria-label="Remove filter: {esc(visible(text))}">×</button></span>'
        for name, text in chips
    ]
    return '<div class="lchips" role="group" aria-label="Active filters">' + "".join(out) + "</div>"


# --------------------------------------------------------------------------- queries


def servable_path(service: SearchService, path: object) -> str | None:
    """The path named by ``path`` (a ``path_ref``) if the UI may act on it (a canonical
    absolute path in the index, still a plain file), else None."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        return None
    path = path_from_ref(path)
    if path is None or "\x00" in path:
        return None
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        return None  # no "..", no "//", no relative paths: only what the index stores
    try:
        return path if service.is_indexed(path) else None
    except Exception:  # a broken index must not open files
        log.exception("is_indexed failed")
        return None


def build_query(
    text: str | None,
    image: Any = None,
    *,
    kinds: Sequence[str] | None = None,
    folder: str | None = None,
    when: str | None = None,
    after: datetime | float | None = None,
    before: datetime | float | None = None,
    min_score: float | None = 0.0,
    top: int = 20,
    now: datetime | None = None,
) -> Query | None:
    """A ``Query`` from the page's controls; None when there is nothing to search."""
    text = (text or "").strip()
    if not text and image is None:
        return None
    now = now or datetime.now()
    modified_after = _as_datetime(after)
    if when == "today":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        modified_after = max(modified_after, start) if modified_after else start
    elif when in _WHEN_DAYS:
        start = now - timedelta(days=_WHEN_DAYS[when])
        modified_after = max(modified_after, start) if modified_after else start
    modified_before = _as_datetime(before)
    if modified_before is not None and modified_before.time() == datetime.min.time():
        modified_before += timedelta(days=1)  # a date means "up to the end of that day"
    folder_path = None
    if folder and folder.strip():
        folder_path = Path(os.path.expanduser(folder.strip()))
    return Query(
        text=text,
        image=image,
        kinds=frozenset(k for k in (kinds or ()) if k in KINDS),
        folder=folder_path,
        modified_after=modified_after,
        modified_before=modified_before,
        min_score=float(min_score or 0.0),
        top=top,
        rerank=False,
    )


def _as_datetime(value: datetime | float | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value)
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _join(*notes: str) -> str:
    return " · ".join(n for n in notes if n)


def _reranked_order(hits: Sequence[Hit], scored: dict[str, Hit]) -> list[Hit]:
    """Scored hits first (best first), then the rest in embedding order."""
    done = sorted(scored.values(), key=lambda h: -(h.rerank_score or 0.0))
    return done + [h for h in hits if h.path not in scored]


def search_stream(
    service: SearchService,
    query: Query | None,
    *,
    rerank: bool,
    batch: int = 5,
    rerank_top: int = 10,
    note: str = "",
) -> Iterator[str]:
    """HTML for the result list: embedding results at once, then reordered as reranker
    scores arrive (the first ``rerank_top`` hits, ``batch`` at a time; the rest keep their
    embedding order below them). ``note`` is shown with the first results."""
    if query is None:
        yield HINT_HTML
        return
    started = time.perf_counter()
    try:
        hits = service.search(query)
    except LauncherError as err:
        yield message_html(str(err))
        return
    except Exception as err:  # show, don't crash the page
        log.exception("search failed")
        yield message_html(f"search failed: {err}")
        return
    elapsed = (time.perf_counter() - started) * 1000
    text = query.text
    info = found(hits, query)
    if not rerank or not hits:
        yield render_results(hits, query_text=text, elapsed_ms=elapsed, note=note, info=info)
        return
    if not _can_rerank(service):
        why = "no reranker available: embedding order"
        yield render_results(
            hits, query_text=text, elapsed_ms=elapsed, note=_join(note, why), info=info
        )
        return
    yield render_results(
        hits,
        query_text=text,
        elapsed_ms=elapsed,
        note=_join(note, "reranking…"),
        state="reranking",
        info=info,
    )
    rq = replace(query, rerank=True)
    head = hits[: rerank_top if rerank_top > 0 else len(hits)]
    size = batch if batch > 0 else len(head)
    scored: dict[str, Hit] = {}
    for start in range(0, len(head), size):
        try:
            for h in service.rerank(rq, head[start : start + size]):
                scored[h.path] = h
        except Exception as err:  # LauncherError or worse: keep what we have
            if not isinstance(err, LauncherError):
                log.exception("rerank failed")
            yield render_results(
                _reranked_order(hits, scored),
                query_text=text,
                note=f"rerank failed: {err}",
                info=info,
            )
            return
        done = start + size >= len(head)
        elapsed = (time.perf_counter() - started) * 1000
        yield render_results(
            _reranked_order(hits, scored),
            query_text=text,
            elapsed_ms=elapsed,
            note="reranked" if done else f"reranking {len(scored)}/{len(head)}…",
            state="reranked" if done else "reranking",
            info=info,
        )


# --------------------------------------------------------------------------- page

CSS = """
footer { display: none !important; }
.gradio-container { max-width: 820px !important; margin: 0 auto !important; }
#lapp { gap: 8px; padding-top: 4vh; }
#lbar { align-items: stretch; gap: 8px; }
#lq textarea, #lq input {
  font-size: 22px !important; line-height: 1.3 !important; padding: 14px 16px !important;
  border-radius: 12px !important;
}
#limg {
  flex: 0 0 64px !important; min-width: 64px !important; min-height: 0 !important;
  border: 1px dashed var(--border-color-primary) !important; border-radius: 12px !important;
  overflow: hidden; background: var(--background-fill-secondary) !important;
}
#limg .image-container, #limg .upload-container { min-height: 0 !important; height: 100%; }
#limg .prompt, #limg .or, #limg .source-selection { display: none !important; }
#limg .icon-wrap { width: 20px !important; height: 20px !important; margin: 0 auto !important; }
#limg .upload-container button .wrap::after {
  content: "image"; display: block; font-size: 11px; color: var(--body-text-color-subdued);
}
#limg img { max-height: 64px; object-fit: contain; }
#lctl { align-items: center; gap: 12px; flex-wrap: nowrap; }
#lrerank { border: none !important; background: none !important; padding: 0 4px !important;
  box-shadow: none !important; flex: 0 0 auto !important; width: auto !important; }
#lstatus { flex: 1 1 0 !important; min-width: 0 !important; overflow: hidden; }
#lstatus > *, #lstatus .prose { min-width: 0; max-width: 100%; }
#lstatus .lstat {
  display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
}
/* the status refreshes every few seconds: never gradio's timer or spinner over it */
#lstatus .wrap, #lstatus .progress-text, #lstatus .eta-bar, #lstatus .meta-text,
#lstatus .meta-text-center, #lstatus .progress-bar-wrap { display: none !important; }
#lstatus.pending, #lstatus .pending { opacity: 1 !important; }
#lchips:not(:has(.lchip)), #lclears { display: none !important; }  /* no empty gap */
#lchips .lchips { display: flex; flex-wrap: wrap; gap: 6px; margin: 0 2px; }
#lchips .lchip {
  display: inline-flex; align-items: center; gap: 2px; font-size: 12px;
  padding: 1px 2px 1px 10px; border-radius: 999px; background: var(--color-accent-soft);
  border: 1px solid var(--color-accent); color: var(--body-text-color);
}
#lchips .lchip button {
  border: none; background: none; cursor: pointer; font-size: 14px; line-height: 1;
  padding: 0 6px; border-radius: 999px; color: var(--body-text-color-subdued);
}
#lchips .lchip button:hover, #lchips .lchip button:focus-visible {
  background: var(--background-fill-secondary); color: var(--body-text-color);
}
#lfilters { padding: 2px 12px !important; }
#lstatus { font-size: 12px; color: var(--body-text-color-subdued); }
#lstatus .lbad { color: var(--error-text-color, #c0392b); }
#lresults .linfo { font-size: 12px; color: var(--body-text-color-subdued); margin: 2px 4px 6px; }
#lresults .llist { display: flex; flex-direction: column; gap: 2px; }
#lresults .lrow {
  display: flex; gap: 12px; align-items: center; padding: 8px 10px; border-radius: 10px;
  cursor: default; border: 1px solid transparent;
}
#lresults .lrow:hover { background: var(--background-fill-secondary); }
#lresults .lrow.sel {
  background: var(--color-accent-soft); border-color: var(--color-accent);
}
#lresults .lvis {
  width: 44px; height: 44px; flex: none; display: flex; align-items: center;
  justify-content: center; border-radius: 8px; overflow: hidden;
  background: var(--background-fill-secondary);
}
#lresults .lthumb { width: 44px; height: 44px; object-fit: cover; }
#lresults .licon {
  width: 44px; height: 44px; display: flex; align-items: center; justify-content: center;
  color: #fff; font: 700 11px/1 system-ui, sans-serif; letter-spacing: .03em;
}
#lresults .lmain { flex: 1; min-width: 0; }
#lresults .lline { display: flex; gap: 8px; align-items: baseline; white-space: nowrap; }
#lresults .lname { font-weight: 700; overflow: hidden; text-overflow: ellipsis; }
#lresults .lfolder {
  color: var(--body-text-color-subdued); font-size: 12px; overflow: hidden;
  text-overflow: ellipsis;
}
#lresults .lsnip {
  font-size: 13px; color: var(--body-text-color-subdued); overflow: hidden;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
}
#lresults .lwhere { font-size: 11px; opacity: .8; margin-right: 4px; }
#lresults mark { background: none; color: inherit; font-weight: 700; padding: 0; }
#lresults .lbadge {
  font-size: 10px; padding: 1px 6px; border-radius: 999px; flex: none;
  border: 1px solid var(--border-color-primary); color: var(--body-text-color-subdued);
}
#lresults .lexact { border-color: var(--color-accent); color: var(--color-accent); }
#lresults .lqueued { font-style: italic; }
#lresults .lnotice { font-size: 13px; margin: 2px 4px 6px; color: var(--body-text-color); }
#lresults .lrow.lweak { opacity: .6; }
#lresults .lrow.lweak.sel { opacity: .85; }
#lresults .lmore {
  display: block; margin: 8px auto; padding: 4px 16px; border-radius: 8px; font-size: 13px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-primary);
  color: var(--body-text-color); cursor: pointer;
}
#lresults .lmore:focus-visible { outline: 2px solid var(--color-accent); }
#lresults .lmeta {
  display: flex; flex-direction: column; align-items: flex-end; gap: 2px; flex: none;
  font-size: 12px; color: var(--body-text-color-subdued); min-width: 92px;
}
#lresults .lscore { font-variant-numeric: tabular-nums; }
#lresults .lacts { display: none; gap: 4px; }
#lresults .lrow.sel .lacts, #lresults .lrow:hover .lacts { display: flex; }
#lresults .lacts button {
  font-size: 11px; padding: 1px 6px; border-radius: 6px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-primary);
  color: var(--body-text-color); cursor: pointer;
}
#lresults .lrow.sel .ltime, #lresults .lrow:hover .ltime { display: none; }
#lresults .lhint, #lresults .lempty, #lresults .lmsg {
  padding: 18px 8px; color: var(--body-text-color-subdued); text-align: center;
}
#lresults .lerror { color: var(--error-text-color, #c0392b); }
#lresults kbd {
  font-size: 11px; padding: 0 4px; border-radius: 4px; margin: 0 1px;
  border: 1px solid var(--border-color-primary);
}
#ltoast {
  position: fixed; bottom: 18px; left: 50%; transform: translateX(-50%); z-index: 1000;
  padding: 6px 14px; border-radius: 8px; font-size: 13px;
  background: var(--background-fill-secondary); color: var(--body-text-color);
  border: 1px solid var(--border-color-primary); box-shadow: 0 4px 16px rgba(0,0,0,.15);
}
#ltoast.bad { color: var(--error-text-color, #c0392b); }
"""

# Runs once when the result list mounts. ``element``, ``trigger``, ``server`` and ``watch``
# are Gradio's; everything else lives in window.__launcher.
JS_ON_LOAD = r"""
const L = (window.__launcher = window.__launcher || {});
L.root = element;
L.sel = 0;
const DEBOUNCE = __DEBOUNCE__;
const PAGE = __PAGE__;
const box = () => document.querySelector('#lq textarea, #lq input');
const rows = () => Array.from(L.root.querySelectorAll('.lrow'));
function select(i, scroll) {
  const rs = rows();
  if (!rs.length) { L.sel = -1; return; }
  i = Math.max(0, Math.min(rs.length - 1, i));
  rs.forEach((r, j) => {
    r.classList.toggle('sel', j === i);
    r.setAttribute('aria-selected', j === i ? 'true' : 'false');
  });
  L.sel = i;
  if (scroll !== false) rs[i].scrollIntoView({block: 'nearest'});
}
const current = () => rows()[L.sel] || null;
function toast(msg, bad) {
  let t = document.getElementById('ltoast');
  if (!t) { t = document.createElement('div'); t.id = 'ltoast'; t.setAttribute('role', 'status');
            document.body.appendChild(t); }
  t.textContent = msg; t.className = bad ? 'bad' : ''; t.style.display = 'block';
  clearTimeout(L.toastTimer);
  L.toastTimer = setTimeout(() => { t.style.display = 'none'; }, 2500);
}
async function copyText(text) {
  try { await navigator.clipboard.writeText(text); return true; } catch (e) {}
  const ta = document.createElement('textarea');
  ta.value = text; ta.style.position = 'fixed'; ta.style.opacity = '0';
  document.body.appendChild(ta); ta.select();
  let ok = false; try { ok = document.execCommand('copy'); } catch (e) {}
  ta.remove(); return ok;
}
async function act(op, row) {
  if (!row) return;
  const path = row.dataset.path;
  if (op === 'copy') {
    const ok = await copyText(path);
    L.copied = path;
    toast(ok ? 'Copied ' + path : 'Could not copy', !ok);
    return;
  }
  try {
    const r = await server[op === 'open' ? 'open_file' : 'reveal_file'](row.dataset.ref || path);
    toast(r && r.message ? r.message : op, !(r && r.ok));
  } catch (e) { toast(op + ' failed: ' + e, true); }
}
L.act = act;
function search() { clearTimeout(L.timer); L.timer = null; L.waiting = true; trigger('submit'); }
function more(btn) {  // the next page: the search asks for PAGE more (see JS_LIMIT)
  const shown = Number(btn.dataset.shown) || 0;
  L.nextLimit = shown + PAGE;
  L.keepSel = shown;  // then select the first new row
  btn.disabled = true; btn.textContent = 'Loading…';
  search();
}
function schedule() {
  clearTimeout(L.timer); L.waiting = true; L.timer = setTimeout(search, DEBOUNCE);
}
function clearImage() {
  const img = document.querySelector('#limg');
  if (!img || !img.querySelector('img')) return false;
  const b = img.querySelector('button[aria-label*="lear" i], button[aria-label*="emove" i]');
  if (b) { b.click(); return true; }
  return false;
}
function feedImage(files) {
  const input = document.querySelector('#limg input[type=file]');
  const f = Array.from(files || []).find(x => x.type && x.type.startsWith('image/'));
  if (!input || !f) return false;
  const dt = new DataTransfer(); dt.items.add(f);
  input.files = dt.files;
  input.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
}
function inOurPlace(el) {
  return !el || el === document.body || el === box() || (L.root && L.root.contains(el));
}
function onKey(e) {
  const b = box();
  if (e.key === 'Escape') {
    if (document.querySelector('.options, [role=listbox].options')) return;  // open dropdown
    e.preventDefault();
    if (b && b.value) { b.value = ''; b.dispatchEvent(new Event('input', {bubbles: true})); }
    else clearImage();
    if (b) b.focus();
    return;
  }
  if (!inOurPlace(document.activeElement)) return;
  const a = document.activeElement;
  if (a && a.tagName === 'BUTTON' && (e.key === 'Enter' || e.key === ' ')) return;  // press it
  if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    const m = L.root.querySelector('button.lmore');
    if (m && a === m) {  // on "Show more": up goes back to the list
      if (e.key === 'ArrowUp') { e.preventDefault(); const b = box(); if (b) b.focus(); }
      return;
    }
    if (!rows().length) return;
    e.preventDefault();
    if (e.key === 'ArrowDown' && m && L.sel === rows().length - 1) {  // past the last row
      m.focus(); m.scrollIntoView({block: 'nearest'}); return;
    }
    select((L.sel < 0 ? -1 : L.sel) + (e.key === 'ArrowDown' ? 1 : -1));
  } else if (e.key === 'Enter' && !e.shiftKey && !e.altKey) {
    e.preventDefault(); e.stopPropagation();
    const op = (e.ctrlKey || e.metaKey) ? 'reveal' : 'open';
    if (L.waiting) {  // typed, then Enter at once: act on the new results when they come
      L.after = op;
      clearTimeout(L.afterTimer);
      L.afterTimer = setTimeout(() => { L.after = null; }, 10000);
      if (L.timer) search();
      return;
    }
    const row = current();
    if (row) act(op, row);
  } else if ((e.ctrlKey || e.metaKey) && e.shiftKey && (e.key === 'C' || e.key === 'c')) {
    const row = current();
    if (row) { e.preventDefault(); act('copy', row); }
  }
}
if (!L.installed) {
  L.installed = true;
  document.addEventListener('keydown', e => L.onKey(e), true);
  document.addEventListener('paste', e => {
    const files = e.clipboardData && e.clipboardData.files;
    if (files && files.length && !(e.target.closest && e.target.closest('#limg'))) {
      if (L.feedImage(files)) e.preventDefault();
    }
  });
  document.addEventListener('dragover', e => { e.preventDefault(); });
  document.addEventListener('drop', e => {
    if (e.target.closest && e.target.closest('#limg')) return;
    e.preventDefault();
    L.feedImage(e.dataTransfer && e.dataTransfer.files);
  });
  window.addEventListener('focus', () => { const b = box(); if (b) { b.focus(); b.select(); } });
}
L.onKey = onKey;
L.feedImage = feedImage;
L.search = search;
element.addEventListener('click', e => {
  const m = e.target.closest('button.lmore');
  if (m) { e.preventDefault(); more(m); return; }
  const row = e.target.closest('.lrow');
  if (!row) return;
  select(Number(row.dataset.i), false);
  const btn = e.target.closest('button[data-act]');
  if (btn) { e.preventDefault(); act(btn.dataset.act, row); }
});
element.addEventListener('dblclick', e => {
  const row = e.target.closest('.lrow');
  if (row && !e.target.closest('button')) act('open', row);
});
(function hook() {
  const b = box();
  if (!b) { setTimeout(hook, 50); return; }
  if (!b.dataset.lhooked) {
    b.dataset.lhooked = '1';
    b.setAttribute('autocomplete', 'off');
    b.setAttribute('spellcheck', 'false');
    b.addEventListener('input', schedule);
    if (b.value) schedule();  // typed before this script ran
  }
  b.focus();
})();
watch('value', () => {
  L.waiting = false;
  const keep = L.keepSel; L.keepSel = null;
  if (keep != null && rows().length > keep) {  // after "Show more": on the first new row
    select(keep, true);
    const b = box(); if (b) b.focus();
  } else { L.sel = 0; select(0, false); }
  if (L.after) {
    const op = L.after; L.after = null;
    const row = current();
    if (row) act(op, row);
  }
});
"""

# Runs in the browser before each search is sent: the hidden limit input (the last of
# __N__) becomes the number "Show more" asked for, else one page.
JS_LIMIT = r"""
(...args) => {
  const L = (window.__launcher = window.__launcher || {});
  const out = args.slice(0, __N__);
  out[__N__ - 1] = L.nextLimit || __PAGE__;
  L.nextLimit = 0;
  return out;
}
"""

# The filter chips: a chip's button presses the hidden button that resets its filter.
JS_CHIPS = r"""
element.addEventListener('click', e => {
  const b = e.target.closest('button[data-clear]');
  if (!b) return;
  e.preventDefault();
  const el = document.getElementById('lclear-' + b.dataset.clear);
  const target = el && (el.tagName === 'BUTTON' ? el : el.querySelector('button'));
  if (target) target.click();
  const q = document.querySelector('#lq textarea, #lq input');
  if (q) q.focus();
});
"""


def query_image(path: object, uploads: Path | None) -> str:
    """The path of the query image the page uploaded, once checked: only a regular file
    in this run's upload folder, its pixel count read from its header (a 20 KB PNG can
    claim 13000x13000 pixels) before anything decodes it. Raises ``ImageError``."""
    from .errors import ImageError
    from .images import check_pixels

    if not isinstance(path, str) or uploads is None or not _inside(path, uploads):
        raise ImageError("the query image was not uploaded through this page")
    try:
        st = os.lstat(path)
    except OSError as err:
        raise ImageError(f"the query image cannot be read ({err.strerror})") from err
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("the query image is not a file")
    if st.st_size > MAX_IMAGE_BYTES:
        raise ImageError(f"the query image is larger than {MAX_IMAGE_BYTES // 1_000_000} MB")
    check_pixels(path, QUERY_IMAGE_PIXELS, what="query image")
    return path


def _cap_query(text: str | None) -> tuple[str | None, str]:
    """A query cut to ``MAX_QUERY_CHARS``, and the note saying so."""
    if text is None or len(text) <= MAX_QUERY_CHARS:
        return text, ""
    return text[:MAX_QUERY_CHARS], f"searched the first {MAX_QUERY_CHARS:,} characters"


def build_app(
    service: SearchService, *, options: UIOptions | None = None, uploads: Path | None = None
) -> gr.Blocks:
    """The Gradio page; serve it with ``serve`` (or ``create_server_app``). ``uploads``:
    the only folder a query image may come from (this run's uploads)."""
    gr = _gradio()
    opts = options or UIOptions()
    renders = itertools.count(1)

    def open_file(path: Any) -> dict[str, Any]:
        return _act(service, "open", path)

    def reveal_file(path: Any) -> dict[str, Any]:
        return _act(service, "reveal", path)

    def run_search(
        text: str | None,
        image: Any,
        kinds: list[str] | None,
        folder: str | None,
        when: str | None,
        after: Any,
        before: Any,
        min_score: float | None,
        rerank: bool,
        limit: Any = None,
    ) -> Iterator[str]:
        text, note = _cap_query(text)
        try:
            picture = query_image(image, uploads) if image is not None else None
        except LauncherError as err:
            yield message_html(str(err))
            return
        try:
            query = build_query(
                text,
                picture,
                kinds=kinds,
                folder=folder,
                when=when,
                after=after,
                before=before,
                min_score=min_score,
                top=page_limit(limit, opts.top),
            )
        except (ValueError, OSError) as err:
            yield message_html(f"bad filter: {err}")
            return
        frames = search_stream(
            service,
            query,
            rerank=bool(rerank),
            batch=opts.rerank_batch,
            rerank_top=opts.rerank_top,
            note=note,
        )
        try:
            for frame in frames:
                yield f"<!-- {next(renders)} -->{frame}"  # always a new value: the page hears it
        finally:
            if picture is not None:
                from .images import release_memory

                release_memory()  # its decoded pixels are garbage now

    def chips_html(*values: Any) -> str:
        return render_chips(*values)

    def status_html() -> str:
        try:
            return render_status(service.status())
        except Exception as err:
            log.exception("status failed")
            return f'<div class="lstat lbad">status unavailable: {esc(err)}</div>'

    def reindex() -> str:
        try:
            service.reindex()
        except Exception as err:
            log.exception("reindex failed")
            return f'<div class="lstat lbad">re-index failed: {esc(err)}</div>'
        return status_html()

    can_rerank = _can_rerank(service)
    with gr.Blocks(title=opts.title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        with gr.Column(elem_id="lapp"):
            with gr.Row(elem_id="lbar", equal_height=True):
                query = gr.Textbox(
                    elem_id="lq",
                    show_label=False,
                    container=False,
                    lines=1,
                    max_lines=1,
                    placeholder="Search your files…",
                    autofocus=True,
                    scale=6,
                )
                image = gr.Image(
                    elem_id="limg",
                    type="filepath",  # decoded by the search, after query_image checks it
                    image_mode=None,  # so gradio itself only reads the header
                    sources=["upload", "clipboard"],
                    show_label=False,
                    container=False,
                    height=64,
                    scale=0,
                    min_width=64,
                    buttons=[],
                    label="Image query (drop, paste or click)",
                )
            with gr.Row(elem_id="lctl"):
                rerank = gr.Checkbox(
                    label="Rerank" if can_rerank else "Rerank (no reranker available)",
                    value=False,
                    interactive=can_rerank,
                    elem_id="lrerank",
                    container=False,
                    scale=0,
                    min_width=120,
                )
                # filled when the page loads (not the count at launch), then every few seconds
                status = gr.HTML('<div class="lstat">…</div>', elem_id="lstatus", js_on_load=None)
                reindex_btn = gr.Button(
                    "Re-index", size="sm", elem_id="lreindex", scale=0, min_width=90
                )
            chips = gr.HTML("", elem_id="lchips", js_on_load=JS_CHIPS, apply_default_css=False)
            with gr.Row(visible="hidden", elem_id="lclears"):  # pressed by the chips' x
                clear_btns = {
                    name: gr.Button(elem_id=f"lclear-{name}", visible="hidden") for name in FILTERS
                }
            with gr.Accordion("Filters", open=False, elem_id="lfilters"):
                kinds = gr.CheckboxGroup(list(KINDS), label="Kind", elem_id="lkinds")
                with gr.Row():
                    folder = gr.Textbox(
                        label="Folder", placeholder="only under this folder", elem_id="lfolder"
                    )
                    when = gr.Dropdown(
                        list(WHEN_CHOICES), value="any time", label="Modified", elem_id="lwhen"
                    )
                with gr.Row():
                    after = gr.DateTime(
                        label="Modified after",
                        include_time=False,
                        type="datetime",
                        elem_id="lafter",
                    )
                    before = gr.DateTime(
                        label="Modified before",
                        include_time=False,
                        type="datetime",
                        elem_id="lbefore",
                    )
                    min_score = gr.Slider(
                        0.0, 1.0, value=0.0, step=0.01, label="Min score", elem_id="lminscore"
                    )
            results = gr.HTML(
                HINT_HTML,
                elem_id="lresults",
                js_on_load=JS_ON_LOAD.replace("__DEBOUNCE__", str(int(opts.debounce_ms))).replace(
                    "__PAGE__", str(int(opts.top))
                ),
                server_functions=[open_file, reveal_file],
                apply_default_css=False,
            )
        # the number of results to ask for: the page's script sets it ("Show more"); it
        # travels as the value of a hidden component, filled in by JS_LIMIT
        limit = gr.Number(opts.top, precision=0, visible="hidden", elem_id="llimit")
        filters = [kinds, folder, when, after, before, min_score]
        inputs = [query, image, kinds, folder, when, after, before, min_score, rerank, limit]
        common: dict[str, Any] = {
            "inputs": inputs,
            "outputs": results,
            "concurrency_id": "search",
            "concurrency_limit": 1,
            "api_visibility": "private",
            "show_progress": "hidden",
            "js": JS_LIMIT.replace("__N__", str(len(inputs))).replace(
                "__PAGE__", str(int(opts.top))
            ),
        }
        searches = [results.submit(run_search, trigger_mode="always_last", **common)]
        for comp in (image, kinds, when, rerank, min_score):
            searches.append(comp.change(run_search, trigger_mode="always_last", **common))
        for comp in (folder, after, before):
            searches.append(comp.submit(run_search, trigger_mode="always_last", **common))
        # a keystroke stops a running search (e.g. a slow rerank) before the debounced one
        query.input(None, None, None, cancels=searches, api_visibility="private")
        quiet: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
        for comp in filters:
            comp.change(chips_html, filters, chips, **quiet)
        # a chip's x: reset that filter; kind, dates-ago and score search on change, the
        # others (searched on Enter) search here
        defaults: dict[str, Any] = {
            "kinds": [],
            "folder": "",
            "when": "any time",
            "after": None,
            "before": None,
            "min_score": 0.0,
        }
        for name, comp in zip(FILTERS, filters, strict=True):
            cleared = clear_btns[name].click(_constant(defaults[name]), None, comp, **quiet)
            if name in ("folder", "after", "before"):
                searches.append(cleared.then(run_search, trigger_mode="always_last", **common))
        timer = gr.Timer(opts.status_every)
        timer.tick(status_html, None, status, **quiet)
        demo.load(status_html, None, status, **quiet)
        reindex_btn.click(reindex, None, status, **quiet)
    return demo


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def page_limit(value: Any, page: int) -> int:
    """How many results to ask for: ``value`` (from the page) as a whole number of pages
    of ``page``, from one page to ``MAX_RESULTS``."""
    try:
        n = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return page
    pages = max(1, -(-n // max(1, page)))
    return max(page, min(MAX_RESULTS, pages * page))


def _can_rerank(service: SearchService) -> bool:
    try:
        return bool(service.can_rerank)
    except Exception:
        log.exception("can_rerank failed")
        return False


def _act(service: SearchService, op: str, path: Any) -> dict[str, Any]:
    """Open or reveal ``path`` if it is in the index; a message for the page either way."""
    from . import opener

    if isinstance(path, (list, tuple)) and len(path) == 1:
        path = path[0]
    ok_path = servable_path(service, path)
    if ok_path is None:
        return {"ok": False, "message": "not in the index"}
    try:
        name = visible(Path(ok_path).name)
        if op == "open":
            opener.open_path(ok_path)
            return {"ok": True, "message": f"Opened {name}"}
        opener.reveal_path(ok_path)
        return {"ok": True, "message": f"Revealed {name}"}
    except LauncherError as err:
        return {"ok": False, "message": visible(str(err))}


def page_kwargs() -> dict[str, Any]:
    """Theme and CSS for mounting the page (Gradio 6 takes them at launch/mount time)."""
    gr = _gradio()
    system = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "monospace"]
    theme = gr.themes.Default(font=system, font_mono=mono, radius_size="md")
    return {"theme": theme, "css": CSS}


# --------------------------------------------------------------------------- server app

_FILE_ROUTE = re.compile(r"^/(?:gradio_api/)?file[=/](.*)$", re.IGNORECASE | re.DOTALL)
_UPLOAD_ROUTE = re.compile(r"^/(?:gradio_api/)?upload/?$", re.IGNORECASE)
_BLOCKED_ROUTE = re.compile(
    r"^/(?:gradio_api/)?(?:proxy=|mcp|monitoring|docs|redoc|openapi\.json|vibe|undo-vibe"
    r"|process_recording|deep_link|run-history|profiling|dev/reload)",
    re.IGNORECASE,
)
OPEN_ROUTES = frozenset({"/healthz"})  # answer without the key (they reveal nothing)
TICKET_ROUTE = "/ticket"  # POST with the key header: a single-use link for a browser
KEY_HEADER = "x-launcher-key"
_KEY_PARAM = "key"
_NEEDS_KEY_HTML = (
    "<!doctype html><meta charset=utf-8><title>Launcher Search</title>"
    "<body style='font:16px system-ui;margin:20vh auto;max-width:32em;color:#555'>"
    "<p>This search page opens only through its own link, which holds a key.</p>"
    "<p>Press the launcher's hotkey (Ctrl+Alt+Space) or run <code>launcher.py launch</code>"
    " again to open it.</p></body>"
)


def _inside(path: str, folder: Path) -> bool:
    if not path or "\x00" in path or "://" in path or path.startswith("//"):
        return False
    try:
        base = folder.resolve()
        raw = Path(os.path.abspath(path))
        real = raw.resolve()
    except (OSError, ValueError, RuntimeError):
        return False
    return raw.is_relative_to(base) and real.is_relative_to(base)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def host_checker(host: str) -> Callable[[str], bool]:
    """Which Host headers the server answers: loopback names, and the address it was told
    to listen on. A wildcard (0.0.0.0, ::) also admits IP addresses and this machine's
    name. Never an arbitrary name (DNS rebinding: a web page whose name resolves here)."""
    given = host.strip().strip("[]").lower()
    wildcard = given in ("0.0.0.0", "::", "")
    names = {given}
    if wildcard:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def ok(header: str) -> bool:
        value = header.strip().lower()
        if value.startswith("["):  # [::1]:port
            name = value[1 : value.find("]")] if "]" in value else value
        else:
            name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
        if not name:
            return False
        return is_loopback(name) or name in names or (wildcard and _is_ip(name))

    return ok


@dataclass
class _UploadBudget:
    """Upload limits: bytes per request, and this run's folder plus requests in flight."""

    folder: Path
    per_request: int
    total: int
    in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _usage(self) -> list[tuple[float, int, Path]]:
        files = []
        for path in self.folder.rglob("*"):
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    files.append((st.st_mtime, st.st_size, path))
        return sorted(files)

    def admit(self, size: int) -> str | None:
        """None if ``size`` more bytes may come in (old uploads are deleted to make room),
        else why not. Runs in a worker thread (it walks the folder)."""
        if size > self.per_request:
            mb = self.per_request / 1e6
            return f"upload refused: larger than {mb:g} MB (this page takes images up to that)"
        if size > self.total:
            return f"upload refused: larger than {self.total / 1e6:g} MB"
        with self._lock:
            files = self._usage()
            used = sum(size for _, size, _ in files) + self.in_flight
            for _, old_size, old in files:  # oldest first: earlier query images
                if used + size <= self.total:
                    break
                with contextlib.suppress(OSError):
                    old.unlink()
                    used -= old_size
            if used + size > self.total:
                return "upload refused: too many uploads at once; try again in a moment"
            self.in_flight += size
        return None

    def release(self, size: int) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - size)


class Tickets:
    """Single-use keys for the links handed to a browser. A link is passed to the browser
    on its command line, which every local user can read (``ps``) for as long as that
    browser runs; once used (or after ``ttl`` seconds) it opens nothing."""

    def __init__(self, ttl: float = 600.0) -> None:
        self.ttl = ttl
        self._live: dict[str, float] = {}
        self._lock = threading.Lock()

    def mint(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._live = {t: end for t, end in self._live.items() if end > now}
            self._live[token] = now + self.ttl
        return token

    def redeem(self, token: str) -> bool:
        with self._lock:
            end = self._live.pop(token, None)
        return end is not None and end > time.monotonic()


class _Guard:
    """ASGI middleware in front of every route (a plain ASGI class, not Starlette's
    ``BaseHTTPMiddleware``, so streams end cleanly on shutdown).

    In order: the Host header (DNS rebinding), cross-site requests (CSRF), the run's key
    (the ``key`` URL parameter, the key or a single-use ticket, is swapped for an
    HttpOnly SameSite=Strict cookie; scripts send the ``X-Launcher-Key`` header),
    Gradio's file routes (this run's uploads only), routes the page does not use, and
    the upload limits.
    """

    def __init__(
        self,
        app: Any,
        *,
        key: str,
        cookie: str,
        host_ok: Callable[[str], bool],
        folder: Path,
        budget: _UploadBudget,
        tickets: Tickets,
    ) -> None:
        self.app = app
        self.key = key
        self.tickets = tickets
        self.cookie = cookie
        self.host_ok = host_ok
        self.folder = folder
        self.budget = budget

    def _has_key(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(str(value).encode(), self.key.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        from starlette.requests import HTTPConnection

        conn = HTTPConnection(scope)
        refusal = self._refusal(conn)
        if refusal is not None:
            await self._refuse(scope, receive, send, *refusal)
            return
        path = scope.get("path", "")
        if (
            scope["type"] == "http"
            and path not in OPEN_ROUTES  # their key parameter was never checked
            and scope.get("method") in ("GET", "HEAD")
            and _KEY_PARAM in conn.query_params
        ):
            await self._login(conn, scope, receive, send)
            return
        size = 0
        if scope["type"] == "http" and scope.get("method") == "POST" and _UPLOAD_ROUTE.match(path):
            size, why = await self._admit_upload(conn)
            if why is not None:
                await self._refuse(scope, receive, send, 413, why)
                return
        try:
            await self.app(scope, receive, self._with_headers(send))
        finally:
            if size:
                self.budget.release(size)

    def _refusal(self, conn: Any) -> tuple[int, str] | None:
        headers = conn.headers
        if not self.host_ok(headers.get("host", "")):
            return 403, "forbidden host"  # DNS rebinding
        if not _same_origin(headers):
            return 403, "cross-site request refused"  # CSRF
        path = conn.scope.get("path", "")
        if path in OPEN_ROUTES:
            return None
        link = conn.query_params.get(_KEY_PARAM)
        if link is not None:  # a link: the key (printed by launch) or a single-use ticket
            ok = self._has_key(link) or self.tickets.redeem(link)
        else:
            ok = self._has_key(headers.get(KEY_HEADER) or conn.cookies.get(self.cookie))
        if not ok:
            return 401, "this page needs its key: open it with the hotkey or `launcher.py launch`"
        m = _FILE_ROUTE.match(path)
        if m and not _inside(urllib.parse.unquote(m.group(1)), self.folder):
            return 404, "not found"
        if m and not _inside(m.group(1), self.folder):
            return 404, "not found"
        if _BLOCKED_ROUTE.match(path):
            return 404, "not found"
        return None

    async def _admit_upload(self, conn: Any) -> tuple[int, str | None]:
        from starlette.concurrency import run_in_threadpool

        length = conn.headers.get("content-length", "")
        if not length.isdigit():
            return 0, "upload refused: no Content-Length"
        size = int(length)
        return size, await run_in_threadpool(self.budget.admit, size)

    async def _login(self, conn: Any, scope: Any, receive: Any, send: Any) -> None:
        """``?key=`` (checked already): set the cookie and send the browser to the same
        URL without the key, so it stays out of history, bookmarks and Referer headers."""
        from starlette.responses import RedirectResponse

        query = urllib.parse.urlencode(
            [(k, v) for k, v in conn.query_params.multi_items() if k != _KEY_PARAM]
        )
        path = scope.get("path", "/")
        if not path.startswith("/") or path.startswith("//") or "\\" in path:
            path = "/"  # never a redirect off this server ("//evil.example/")
        target = path + (f"?{query}" if query else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            self.cookie, self.key, httponly=True, samesite="strict", path="/", secure=False
        )
        response.headers["Cache-Control"] = "no-store"
        await response(scope, receive, self._with_headers(send))

    async def _refuse(self, scope: Any, receive: Any, send: Any, code: int, text: str) -> None:
        if scope["type"] == "websocket":
            from starlette.websockets import WebSocketClose

            await WebSocketClose(code=1008, reason=text)(scope, receive, send)
            return
        from starlette.responses import HTMLResponse, PlainTextResponse

        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        response: Any
        if code == 401 and b"text/html" in accept:
            response = HTMLResponse(_NEEDS_KEY_HTML, status_code=401)
        else:
            response = PlainTextResponse(text, status_code=code)
        await response(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Any) -> Any:
        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                for k, v in (
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ):
                    if k not in names:
                        headers.append((k, v))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


def key_cookie(port: int) -> str:
    """The cookie that holds the key (per port: cookies do not tell ports apart)."""
    return f"launcher-key-{port}"


def create_server_app(
    service: SearchService,
    blocks: gr.Blocks | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    instance: str = "",
    key: str = "",
    upload_dir: Path | None = None,
    options: UIOptions | None = None,
    tickets: Tickets | None = None,
) -> FastAPI:
    """FastAPI app: ``/thumb``, ``/healthz``, the guard, and the page mounted at ``/``.

    Every route but ``/healthz`` needs ``key`` (a new random one if empty). Gradio's
    uploads go to ``upload_dir`` (a new private folder if None); its file routes serve
    nothing else, and a file named in a request is accepted only from there.
    """
    gr = _gradio()
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    opts = options or UIOptions()
    folder = upload_dir or _new_run_dir()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    budget = _UploadBudget(folder, opts.upload_request_bytes, opts.upload_total_bytes)
    app.add_middleware(
        _Guard,
        key=key or secrets.token_urlsafe(32),
        cookie=key_cookie(port),
        host_ok=host_checker(host),
        folder=folder,
        budget=budget,
        tickets=tickets if tickets is not None else Tickets(),
    )

    @app.get("/thumb", response_model=None)
    def thumb(path: str = "", size: int = THUMB_SIZE):  # a worker thread, not the event loop
        ok_path = servable_path(service, path)
        if ok_path is None:
            return Response("not found", status_code=404)
        try:
            data = service.thumbnail(ok_path, max(16, min(int(size), 512)))
        except Exception:
            log.exception("thumbnail failed")
            data = None
        if not data:
            return Response("not found", status_code=404)
        headers = {"Cache-Control": "private, max-age=300"}
        return Response(data, media_type="image/png", headers=headers)

    @app.get("/healthz", response_model=None)
    def healthz():
        return JSONResponse({"app": "launcher", "instance": instance})

    if tickets is not None:

        @app.post(TICKET_ROUTE, response_model=None)
        def ticket():  # for a second `launch`, which knows the key from ui.json
            return JSONResponse({"ticket": tickets.mint()})

    with _gradio_temp(folder):  # the components and Gradio's app take their upload dir now
        blocks = blocks if blocks is not None else build_app(service, options=opts, uploads=folder)
        gr.mount_gradio_app(
            app,
            blocks,
            path="/",
            server_name=host,
            server_port=port,
            footer_links=[],
            run_history=False,
            allowed_paths=[],
            blocked_paths=[],
            show_error=False,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            enable_monitoring=False,
            max_file_size=opts.upload_request_bytes,
            **page_kwargs(),
        )
    # Gradio checks that a file named in a request (FileData) is one of its uploads only
    # once the app "has launched"; launch() sets that, mount_gradio_app() does not.
    blocks.has_launched = True
    return app


def _same_origin(headers: Any) -> bool:
    """Refuse what another web site makes the browser send (forms, images, fetches).

    Browsers label requests with Sec-Fetch-Site and Origin; clients without them pass.
    """
    site = headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    return urllib.parse.urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


# --------------------------------------------------------------------------- serving


@dataclass
class RunningUI:
    """A page being served in the background."""

    url: str  # the page's address, without the key
    host: str
    port: int
    hotkey: HotkeyHandle | HotkeyUnavailable | None = None
    warnings: list[str] = field(default_factory=list)
    instance: str = ""
    upload_dir: Path | None = None  # this run's uploads, deleted by close()
    focuser: Focuser | None = None
    key: str = ""  # this run's secret: every route but /healthz needs it
    app: Any = None  # the ASGI app served (its routes, for tests and audits)
    tickets: Tickets | None = None
    _server: Any = None
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    @property
    def key_url(self) -> str:
        """``url`` with the key (what ``launch`` prints; it opens the page any number of
        times): the page swaps it for a cookie at once."""
        return with_key(self.url, self.key)

    @property
    def open_url(self) -> str:
        """A new single-use link that opens the page in a browser (see ``Tickets``)."""
        if self.tickets is None:
            return self.key_url
        return with_key(self.url, self.tickets.mint())

    @property
    def key_header(self) -> dict[str, str]:
        """The header that lets a script (not a browser) call the server."""
        return {KEY_HEADER: self.key}

    @property
    def address(self) -> tuple[str, int] | None:
        """The address the listening socket is bound to (None once closed)."""
        if self._sock is None or self._sock.fileno() < 0:
            return None
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def focus(self) -> str:
        """Bring the page to the front (open it the first time)."""
        if self.focuser is None:
            self.focuser = Focuser(lambda: self.open_url)
        return self.focuser()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the server stops (Ctrl+C raises KeyboardInterrupt here)."""
        if self._thread is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return
            self._thread.join(0.2)

    def close(self) -> None:
        """Stop the hotkey and the server."""
        if isinstance(self.hotkey, HotkeyHandle):
            self.hotkey.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self.upload_dir is not None:
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    def __enter__(self) -> RunningUI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_key(url: str, key: str) -> str:
    return url.split("?", 1)[0] + "?" + urllib.parse.urlencode({_KEY_PARAM: key})


def bind(host: str, port: int | None, default: int = DEFAULT_PORT) -> socket.socket:
    """A listening socket: on ``port``, or when None on ``default`` if free, else any
    free port. Raises ``UIError`` (port taken, bad address)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    addr = host.strip("[]")
    candidates = [port] if port is not None else [default, 0]
    last: OSError | None = None
    for p in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        if sys.platform.startswith("linux"):  # rebind over TIME_WAIT; never share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr, p))
        except OSError as err:
            sock.close()
            last = err
            continue
        sock.listen(128)
        return sock
    if port is not None:
        raise UIError(f"cannot listen on {host}:{port}: {last.strerror if last else ''}")
    raise UIError(f"cannot listen on {host}: {last}")


_STARTING_HTML = (
    b"<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=1>"
    b"<title>Launcher Search</title><body style='font:16px system-ui;margin:20vh auto;"
    b"max-width:30em;color:#555'>Starting the search page\xe2\x80\xa6</body>"
)


class _StartingPage:
    """Answers every request on ``sock`` with a self-reloading "starting" page (503) until
    ``stop()``; the listening socket itself is left open for the real server."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._stop = threading.Event()
        sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, name="ui-starting", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(1.0)
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; "
                    b"charset=utf-8\r\nRetry-After: 1\r\nCache-Control: no-store\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n"
                    % len(_STARTING_HTML)
                    + _STARTING_HTML
                )

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=2)
            self._sock.settimeout(None)


def serve(
    service: SearchService,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    open_browser: bool = True,
    hotkey: str | None = DEFAULT_HOTKEY,
    options: UIOptions | None = None,
    start_timeout: float = 60.0,
    sock: socket.socket | None = None,
) -> RunningUI:
    """Serve the page in a background thread; returns once it answers. ``sock``: an
    already listening socket (from ``bind``) to serve on instead of ``port``."""
    import uvicorn

    opts = options or UIOptions()
    instance = secrets.token_hex(8)
    key = secrets.token_urlsafe(32)
    tickets = Tickets()
    sock = sock if sock is not None else bind(host, port)
    # Importing gradio takes seconds: meanwhile a "starting" page answers on the socket
    # (reloading itself), so a browser opened by the hotkey never meets a refused port.
    starting = _StartingPage(sock)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    if host in ("0.0.0.0", "::"):
        url_host = "127.0.0.1"
    url = f"http://{url_host}:{bound_port}/"
    warnings: list[str] = []
    if not is_loopback(host):
        warnings.append(
            f"listening on {host}:{bound_port}: anyone who can reach this address and has "
            "the link with its key can search and open your files; the key travels "
            "unencrypted (plain HTTP)"
        )
    run_dir = _new_run_dir()
    try:
        app = create_server_app(
            service, host=host, port=bound_port, instance=instance, key=key, upload_dir=run_dir,
            options=opts, tickets=tickets,
        )  # fmt: skip
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
        server = uvicorn.Server(config)
    except BaseException:
        starting.stop()
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    starting.stop()  # uvicorn takes over the socket (and any connection waiting on it)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="launcher-ui", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise UIError("the UI server did not start (see the log)")
        time.sleep(0.02)
    ui = RunningUI(
        url=url,
        host=host,
        port=bound_port,
        warnings=warnings,
        instance=instance,
        upload_dir=run_dir,
        key=key,
        app=app,
        tickets=tickets,
        _server=server,
        _thread=thread,
        _sock=sock,
    )
    ui.focuser = Focuser(lambda: ui.open_url)
    if hotkey:
        from .hotkey import start_hotkey

        ui.hotkey = start_hotkey(hotkey, ui.focus)
    if open_browser:
        ui.focus()
    return ui


# --------------------------------------------------------------------------- one instance


def instance_file() -> Path:
    """Where ``launch`` records the running page (URL and key; readable by you only)."""
    return paths.data_dir() / "ui.json"


def write_instance(ui: RunningUI, path: Path | None = None) -> None:
    path = path or instance_file()
    paths.ensure(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        if hasattr(os, "fchmod"):
            os.fchmod(fh.fileno(), 0o600)  # an older file of the same name kept its mode
        info = {"url": ui.url, "instance": ui.instance, "pid": os.getpid(), "key": ui.key}
        fh.write(json.dumps(info))
    os.replace(tmp, path)


def clear_instance(ui: RunningUI, path: Path | None = None) -> None:
    path = path or instance_file()
    try:
        if json.loads(path.read_text()).get("instance") == ui.instance:
            path.unlink()
    except (OSError, ValueError):
        pass


def running_instance(timeout: float = 1.0, path: Path | None = None) -> str | None:
    """A single-use link to the UI already running for this user, if it answers /healthz
    with the instance recorded in ``path`` and gives a ticket for its key; else None."""
    try:
        info = json.loads((path or instance_file()).read_text())
        url, token, key = str(info["url"]), str(info["instance"]), str(info["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname or not is_loopback(parsed.hostname):
        return None  # only ever probe our own loopback server
    try:
        req = urllib.request.Request(url.rstrip("/") + "/healthz")
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            data = json.loads(resp.read(4096))
    except (OSError, ValueError):
        return None
    if data.get("app") != "launcher" or data.get("instance") != token:
        return None
    try:
        req = urllib.request.Request(
            url.rstrip("/") + TICKET_ROUTE, data=b"", method="POST", headers={KEY_HEADER: key}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            ticket = str(json.loads(resp.read(4096))["ticket"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return with_key(url, ticket)


# --------------------------------------------------------------------------- command


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``launch`` command's flags."""
    parser.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT}, else any free)")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default 127.0.0.1; anything else exposes your files)",
    )
    parser.add_argument("--no-browser", action="store_true", help="don't open a browser")
    parser.add_argument(
        "--hotkey",
        default=DEFAULT_HOTKEY,
        metavar="COMBO",
        help=f"global hotkey, pynput syntax (default {DEFAULT_HOTKEY}; 'off' to disable)",
    )


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM (``kill``, logout, systemd) and SIGHUP (the terminal closed) end ``launch``
    the way Ctrl+C does: through its cleanup (uploads deleted, ui.json removed)."""
    import signal

    if threading.current_thread() is not threading.main_thread() or os.name == "nt":
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signals = [signal.SIGTERM, signal.SIGHUP]
    before = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def run_launch(
    service_factory: Callable[[], SearchService],
    args: argparse.Namespace,
    *,
    echo: Callable[[str], None] | None = None,
    instance_path: Path | None = None,
    default_port: int = DEFAULT_PORT,
) -> int:
    """``launch``: focus a running UI, or start one and serve until Ctrl+C or SIGTERM.

    ``instance_path`` and ``default_port`` keep another front end (the demo) apart from
    the user's own ``launch``.
    """
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    record = instance_path or instance_file()
    existing = running_instance(path=record)
    if existing and args.port is None:
        how = Focuser(existing, opened=True)() if not args.no_browser else "found"
        say(f"launcher: already running at {existing.split('?', 1)[0]} ({how})")
        return 0
    host = args.host or DEFAULT_HOST
    combo = None if str(args.hotkey).lower() in ("off", "none", "") else args.hotkey
    sock = bind(host, args.port, default_port)  # before the model loads: a taken port fails fast
    if args.port is None and sock.getsockname()[1] != default_port:
        say(f"launcher: port {default_port} is in use; using port {sock.getsockname()[1]}")
    with _sigterm_stops():
        try:
            service = service_factory()
        except BaseException:
            sock.close()
            raise
        try:
            ui = serve(
                service, host=host, sock=sock, open_browser=not args.no_browser, hotkey=combo
            )
        except BaseException:
            _close_service(service)
            raise
        try:
            for warning in ui.warnings:
                say(f"launcher: WARNING: {warning}")
            say(f"launcher: search at {ui.key_url}  (Ctrl+C to stop)")
            if ui.hotkey is not None:
                say(f"launcher: {ui.hotkey}")
            write_instance(ui, record)
            ui.wait()
        except KeyboardInterrupt:
            pass
        finally:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl+C: still clean up
                ui.close()
            clear_instance(ui, record)
            _close_service(service)
    return 0


def _close_service(service: SearchService) -> None:
    close = getattr(service, "close", None)
    if callable(close):
        with contextlib.suppress(KeyboardInterrupt):
            close()
