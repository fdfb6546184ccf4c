"""What a file says: its kind by content, its card, and its token-budgeted chunks.

``sniff(path)`` decides the kind from magic bytes first (PDF, images, video, audio,
ZIP-based office files by the zip's own content type), then by telling text from binary
(NUL bytes, control characters, decoding), and only then uses the extension, to tell
code from Markdown from plain text.

``extract(path, kind, settings, count_tokens)`` returns an ``Extracted``: one ``card``
(name, folder, type and the first tokens of text, or the image itself) that every file
gets, and ``chunks`` when the text is longer than the card holds. A file is one search
result whatever its number of chunks; each chunk's ``Locator`` (page, line range, sheet)
lets the UI show where the best match is.

Failures raise ``ExtractError`` with a short reason; an empty file is not a failure (it
gets a name-only card), nor is a video or audio file (name-only: frames are not read).
Every file is bounded: a ``Budget`` (time, cancellation) is checked between pages, rows and
frames, and expanded text, rendered pages and decoded pixels are capped.
pypdfium2 is not thread-safe: every use of it holds ``PDFIUM_LOCK`` (indexing and the
page's thumbnails run in different threads).
"""

from __future__ import annotations

import codecs
import functools
import math
import os
import re
import struct
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from xml.etree import ElementTree as ET

from .errors import InputError
from .inputs import EmbedInput
from .walk import IndexSettings

if TYPE_CHECKING:
    from PIL import Image

Kind = Literal["text", "code", "markdown", "html", "pdf", "image", "video", "audio", "office"]
Role = Literal["card", "chunk"]
KINDS: tuple[Kind, ...] = (
    "text", "code", "markdown", "html", "pdf", "image", "video", "audio", "office",
)  # fmt: skip
TokenCounter = Callable[[str], int]


class ExtractError(InputError):
    """A file's content cannot be read; ``reason`` is the short text recorded in the index."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Unsupported(ExtractError):
    """A binary file of a format that is not read: indexed by name and counted as skipped."""


TOO_SLOW = "too slow"
TOO_LARGE = "too large"
# pdfium keeps global state (and its last error): one thread at a time, in every module.
PDFIUM_LOCK = threading.RLock()
THUMB_LOCK_WAIT = 15.0  # seconds a thumbnail waits for pdfium before giving up


class Interrupted(Exception):
    """The run was cancelled while a file was being read (not the file's failure)."""


class Budget:
    """How long one file may take and whether the run was cancelled; ``check()`` is called
    between pages, rows and frames, so an abandoned extraction stops at its next step."""

    def __init__(self, seconds: float = 0.0, cancel: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds if seconds > 0 else math.inf
        self.cancel = cancel

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted()
        if time.monotonic() > self.deadline:
            raise ExtractError(f"{TOO_SLOW} (over {self.seconds:g} s to read)")


def estimate_tokens(text: str) -> int:
    """A model-free token estimate (about 4 characters a token) for tests and dry runs."""
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class Locator:
    """Where a piece is in its file; all 1-based, ``None`` when not meaningful."""

    page: int | None = None  # PDF page or slide
    page_end: int | None = None
    line_start: int | None = None  # text line, or spreadsheet row
    line_end: int | None = None
    section: str | None = None  # spreadsheet sheet name

    def label(self) -> str:
        """Human text such as ``page 3``, ``pages 3–4``, ``lines 10–42``, ``Sheet1, rows 2–9``."""
        parts = []
        if self.section:
            parts.append(self.section)
        if self.page is not None:
            if self.page_end is not None and self.page_end != self.page:
                parts.append(f"pages {self.page}–{self.page_end}")
            else:
                parts.append(f"page {self.page}")
        if self.line_start is not None:
            word = "rows" if self.section else "lines"
            if self.line_end is not None and self.line_end != self.line_start:
                parts.append(f"{word} {self.line_start}–{self.line_end}")
            else:
                parts.append(f"{word[:-1]} {self.line_start}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, int | str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> Locator:
        return cls(**{k: data[k] for k in _LOCATOR_FIELDS if data.get(k) is not None})


_LOCATOR_FIELDS = ("page", "page_end", "line_start", "line_end", "section")


@dataclass(frozen=True, eq=False)
class Piece:
    """One thing to embed: text, an image, or both (an image with its caption)."""

    role: Role
    text: str | None
    image: Image.Image | None = None
    locator: Locator = field(default_factory=Locator)
    preview: str = ""

    def to_input(self, instruction: str | None = None) -> EmbedInput:
        images = (self.image,) if self.image is not None else ()
        return EmbedInput(text=self.text, images=images, instruction=instruction)


@dataclass(frozen=True)
class TextLayer:
    """A file's whole extracted text and where its parts start (offset -> locator), for the
    full-text index: the same units the chunks are cut from, with no model involved."""

    body: str
    spans: tuple[tuple[int, Locator], ...] = ()


@dataclass(frozen=True, eq=False)
class Extracted:
    """A file's card, its chunks (empty when the card holds everything) and what was found."""

    kind: Kind
    card: Piece
    chunks: list[Piece]
    title: str | None = None
    pages: int | None = None
    truncated: bool = False  # content past the limits was left out
    text: TextLayer | None = None  # only from ``extract(..., text_only=True)``

    @property
    def pieces(self) -> list[Piece]:
        return [self.card, *self.chunks]


# --- sniffing -----------------------------------------------------------------------------

SNIFF_BYTES = 8192
CODE_LANGUAGES = {
    ".py": "Python", ".pyi": "Python", ".js": "JavaScript", ".mjs": "JavaScript",
    ".cjs": "JavaScript", ".jsx": "JavaScript", ".ts": "TypeScript", ".tsx": "TypeScript",
    ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++",
    ".hh": "C++", ".cs": "C#", ".java": "Java", ".kt": "Kotlin", ".kts": "Kotlin",
    ".scala": "Scala", ".go": "Go", ".rs": "Rust", ".rb": "Ruby", ".php": "PHP",
    ".swift": "Swift", ".m": "Objective-C", ".mm": "Objective-C++", ".pl": "Perl",
    ".pm": "Perl", ".lua": "Lua", ".r": "R", ".jl": "Julia", ".dart": "Dart",
    ".ex": "Elixir", ".exs": "Elixir", ".erl": "Erlang", ".hs": "Haskell", ".ml": "OCaml",
    ".fs": "F#", ".clj": "Clojure", ".el": "Emacs Lisp", ".lisp": "Lisp", ".scm": "Scheme",
    ".zig": "Zig", ".nim": "Nim", ".v": "Verilog", ".vhd": "VHDL", ".sql": "SQL",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".fish": "shell", ".ps1": "PowerShell",
    ".bat": "batch", ".cmd": "batch", ".css": "CSS", ".scss": "SCSS", ".less": "Less",
    ".vue": "Vue", ".svelte": "Svelte", ".json": "JSON", ".yaml": "YAML", ".yml": "YAML",
    ".toml": "TOML", ".ini": "INI", ".cfg": "config", ".xml": "XML", ".svg": "SVG",
    ".gradle": "Gradle", ".cmake": "CMake", ".mk": "Makefile", ".proto": "Protobuf",
    ".graphql": "GraphQL", ".tf": "Terraform", ".nix": "Nix", ".ipynb": "Jupyter notebook",
}  # fmt: skip
CODE_NAMES = {"Makefile": "Makefile", "Dockerfile": "Dockerfile", "CMakeLists.txt": "CMake"}
MARKDOWN_EXTS = {
    ".md": "Markdown", ".markdown": "Markdown", ".mdx": "Markdown", ".rst": "reStructuredText",
    ".org": "Org", ".adoc": "AsciiDoc", ".tex": "LaTeX", ".typ": "Typst",
}  # fmt: skip
HTML_EXTS = {".html", ".htm", ".xhtml", ".shtml"}
_EXT_KINDS: dict[str, Kind] = {
    ".pdf": "pdf", **dict.fromkeys(
        (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif",
         ".avif"), "image"),
    **dict.fromkeys((".docx", ".pptx", ".xlsx", ".odt", ".odp", ".ods", ".epub"), "office"),
}  # fmt: skip
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
               b"msf1"}  # fmt: skip
AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13, 27, 8})


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def sniff(path: str | os.PathLike[str]) -> Kind | None:
    """The file's kind from its content (extension only as a hint), or None for binary."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as err:
        raise ExtractError(os_reason(err)) from err
    if not head:
        return _EXT_KINDS.get(_ext(path)) or _text_kind(path, "")
    kind = _magic(head)
    if kind == "zip":
        return "office" if _office_format_of(path) else None
    if kind is not None:
        return kind
    text = _head_text(head, full=len(head) < SNIFF_BYTES)
    return None if text is None else _text_kind(path, text)


def _magic(head: bytes) -> Kind | Literal["zip"] | None:
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")):
        return "image"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image"
    bmp_dib_sizes = (12, 40, 52, 56, 64, 108, 124)  # "BM" alone is too weak a sign
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in bmp_dib_sizes:
        return "image"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "image", b"AVI ": "video", b"WAVE": "audio"}.get(head[8:12])  # type: ignore[return-value]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in HEIF_BRANDS or brand in (b"avif", b"avis"):
            return "image"
        return "audio" if brand in AUDIO_BRANDS else "video"
    if head.startswith((b"\x1a\x45\xdf\xa3", b"FLV\x01", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")):
        return "video"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "video"  # MPEG program / elementary stream
    if head.startswith((b"ID3", b"fLaC", b"OggS", b"FORM")) or head[:2] in (
        b"\xff\xfb",
        b"\xff\xf3",
    ):
        return "audio"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return None


def _head_text(head: bytes, *, full: bool) -> str | None:
    """The decoded start of a text file, or None when it looks binary."""
    try:
        return decode_text(head, truncated=not full)
    except ExtractError:
        return None


def _text_kind(path: str, text: str) -> Kind:
    name = os.path.basename(path)
    ext = _ext(path)
    if ext in MARKDOWN_EXTS:
        return "markdown"
    start = text.lstrip()[:64].lower()
    if ext in HTML_EXTS or start.startswith(("<!doctype html", "<html")):
        return "html"
    if ext in CODE_LANGUAGES or name in CODE_NAMES or text.startswith("#!"):
        return "code"
    return "text"


def _utf16_without_bom(data: bytes) -> str | None:
    """Windows tools write UTF-16 without a BOM; mostly-ASCII text shows as every other NUL."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    for zeros, other, enc in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if zeros.count(0) > 0.9 * len(zeros) and other.count(0) < 0.1 * len(other):
            return enc
    return None


def decode_text(data: bytes, *, truncated: bool = False, declared: str | None = None) -> str:
    """Decode a text file's bytes: BOM, declared charset, UTF-8, then detection.

    Raises ``ExtractError("binary file")`` when the bytes do not look like text.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, "replace")
    if b"\x00" in data[:SNIFF_BYTES]:
        utf16 = _utf16_without_bom(data)
        if utf16 is None:
            raise ExtractError("binary file")
        return data.decode(utf16, "replace")
    sample = data[:SNIFF_BYTES]
    if sample and sum(sample.count(b) for b in _CONTROL) > 0.05 * len(sample):
        raise ExtractError("binary file")
    if declared:
        try:
            return data.decode(codecs.lookup(declared).name, "replace")
        except LookupError:
            pass  # an unknown charset name in a meta tag: detect instead
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        # A read cut short in the middle of a character is still UTF-8.
        if truncated and err.start >= len(data) - 3:
            return data[: err.start].decode("utf-8", "replace")
    import charset_normalizer

    results = charset_normalizer.from_bytes(data[:65536])
    best = results.best()
    if best is None:
        raise ExtractError("binary file")
    encoding = best.encoding
    if encoding.startswith("mac_"):
        # Old Mac code pages score well on short samples but are rare on disks today;
        # a Windows code page that fits about as well is the likelier truth.
        for match in results:
            if (
                match.encoding.startswith("cp125")
                and match.chaos <= best.chaos + 0.05
                and match.coherence >= best.coherence - 0.15
            ):
                encoding = match.encoding
                break
    return data.decode(encoding, "replace")


# --- extraction ---------------------------------------------------------------------------


TEXT_BEARING: frozenset[Kind] = frozenset({"text", "code", "markdown", "html", "pdf", "office"})


def extract(
    path: str | os.PathLike[str],
    kind: Kind | None,
    settings: IndexSettings | None = None,
    count_tokens: TokenCounter = estimate_tokens,
    budget: Budget | None = None,
    *,
    text_only: bool = False,
) -> Extracted:
    """Read one file into a card and chunks; raises ``ExtractError`` with a short reason
    (``Unsupported`` for a binary format that is not read).

    ``text_only``: just the words (``Extracted.text``), for the full-text index: no token
    counting, no card or chunks, no picture decoded or page rendered.
    """
    path = os.fspath(path)
    settings = settings or IndexSettings()
    if kind is None:
        expected = _EXT_KINDS.get(_ext(path)) or (
            "text" if _ext(path) == ".txt" or _text_kind(path, "") != "text" else None
        )
        if expected is None:
            raise Unsupported("unsupported format (binary file)")
        # Named like a file we read, but it is not one: damaged or mislabelled.
        raise ExtractError(f"not a readable {expected} file (binary content)")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    doc = _Doc(path, kind, settings, count_tokens, budget or Budget(), text_only=text_only)
    try:
        size = os.stat(path).st_size
        if size == 0:
            return name_card(path, kind, settings, label="empty file")
        if text_only and kind not in TEXT_BEARING:
            return name_card(path, kind, settings)
        if kind == "audio" or (kind == "video" and (settings.video_frames == 0 or not _av())):
            return name_card(path, kind, settings)
        if size > settings.max_file_bytes and kind != "video":  # a video: a few frames read
            raise ExtractError(f"{TOO_LARGE} (over the size limit)")
        return _EXTRACTORS[kind](doc)
    except OSError as err:
        raise ExtractError(os_reason(err)) from err
    except MemoryError as err:
        raise ExtractError(f"{TOO_LARGE} to extract (out of memory)") from err


def name_card(
    path: str | os.PathLike[str],
    kind: Kind | None,
    settings: IndexSettings | None = None,
    *,
    label: str | None = None,
) -> Extracted:
    """A card with only the name, folder and type: for empty, media and unreadable files."""
    path = os.fspath(path)
    doc = _Doc(path, kind or "text", settings or IndexSettings(), estimate_tokens)
    ext = _ext(path)[1:].upper()
    label = label or (_type_label(path, kind) if kind else f"file ({ext})" if ext else "file")
    text = doc.card_header(label, None)
    return Extracted(kind=kind or "text", card=Piece("card", text, preview=label), chunks=[])


def os_reason(err: OSError) -> str:
    """A short failure reason for an OS error reading a file."""
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileNotFoundError):
        return "file vanished"
    if isinstance(err, IsADirectoryError):
        return "not a file"
    return f"read error: {(err.strerror or str(err)).lower()}"


def _type_label(path: str, kind: Kind) -> str:
    ext = _ext(path)
    name = os.path.basename(path)
    if kind == "code":
        lang = CODE_LANGUAGES.get(ext) or CODE_NAMES.get(name)
        return f"{lang} source code" if lang else "source code"
    if kind == "markdown":
        return f"{MARKDOWN_EXTS.get(ext, 'Markdown')} document"
    fixed = {"text": "text file", "html": "web page", "pdf": "PDF document", "image": "image",
             "video": "video", "audio": "audio", "office": "document"}  # fmt: skip
    label = fixed[kind]
    if kind in ("video", "audio", "image") and ext:
        label = f"{label} ({ext[1:].upper()})"
    return label


def _clean(text: str) -> str:
    """Text the tokenizer accepts: undecodable name bytes become U+FFFD, no NUL or controls."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SPACES_RE = re.compile(r"\s+")


def preview_of(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, whitespace collapsed."""
    flat = _SPACES_RE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


@dataclass
class _Unit:
    """A line (or a part of a long one) with where it came from; tokens counted lazily."""

    text: str
    line: int | None = None
    page: int | None = None
    section: str | None = None
    tokens: int = -1


class _Doc:
    """One extraction: the file's naming facts and the card and chunk builders."""

    def __init__(
        self,
        path: str,
        kind: Kind,
        settings: IndexSettings,
        count: TokenCounter,
        budget: Budget | None = None,
        *,
        text_only: bool = False,
    ):
        self.path, self.kind, self.s, self.count = path, kind, settings, count
        self.budget = budget or Budget()
        self.text_only = text_only
        self.name = _clean(os.path.basename(path))
        folder = os.path.dirname(path)
        home = os.path.expanduser("~")
        if home not in ("~", os.sep) and (folder == home or folder.startswith(home + os.sep)):
            folder = "~" + folder[len(home) :]
        self.folder = _clean(folder)

    def card_header(self, label: str, title: str | None) -> str:
        lines = [self.name, f"Folder: {self.folder}", f"Type: {label}"]
        if title and title.strip() and title.strip() != os.path.splitext(self.name)[0]:
            lines.append(f"Title: {preview_of(_clean(title), 200)}")
        return "\n".join(lines)

    # -- token budgeting ----------------------------------------------------------------

    def _tokens(self, units: list[_Unit], i: int, limit: int) -> int:
        """Tokens of ``units[i]``, splitting it in place first when it exceeds ``limit``."""
        unit = units[i]
        if unit.tokens < 0:
            unit.tokens = self.count(unit.text) if unit.text.strip() else 0
            if unit.tokens > limit:
                parts = self._split(unit.text, unit.tokens, limit)
                units[i : i + 1] = [
                    _Unit(p, unit.line, unit.page, unit.section, t) for p, t in parts
                ]
        return units[i].tokens

    def _split(self, text: str, tokens: int, limit: int, depth: int = 0) -> list[tuple[str, int]]:
        """Cut a long line at spaces into parts of at most ``limit`` tokens (approximately)."""
        n = math.ceil(tokens / (limit * 0.9))
        size = max(1, len(text) // n)
        parts: list[tuple[str, int]] = []
        start = 0
        while start < len(text):
            end = min(len(text), start + size)
            if end < len(text):
                space = text.rfind(" ", start + size // 2, end)
                end = space + 1 if space > 0 else end
            part = text[start:end]
            count = self.count(part)
            if count > limit and depth < 4 and len(part) > 1:
                parts.extend(self._split(part, count, limit, depth + 1))
            else:
                parts.append((part, count))
            start = end
        return parts

    def _truncate(self, text: str, limit: int) -> str:
        """The start of ``text`` within ``limit`` tokens, cut at a space."""
        for _ in range(4):
            tokens = self.count(text)
            if tokens <= limit:
                return text
            cut = max(1, int(len(text) * limit / tokens * 0.95))
            space = text.rfind(" ", cut // 2, cut)
            text = text[: space if space > 0 else cut]
        return text

    # -- cards and chunks -----------------------------------------------------------------

    def document(
        self,
        units: list[_Unit],
        *,
        label: str,
        title: str | None = None,
        truncated: bool = False,
        pages: int | None = None,
        images: Sequence[Piece] = (),
        card_image: Image.Image | None = None,
    ) -> Extracted:
        """Card (header + first tokens) and, when the text goes on, overlapping chunks."""
        units = _tidy(units)
        if self.text_only:
            card = Piece("card", self.card_header(label, title), preview=label)
            return Extracted(self.kind, card, [], title=title, pages=pages, truncated=truncated,
                             text=_text_layer(units))  # fmt: skip
        header = self.card_header(label, title)
        budget = self.s.card_tokens
        chunk_budget = max(8, self.s.chunk_tokens - self.count(self.name) - 8)
        body: list[str] = []
        used, i = 0, 0
        while i < len(units):
            tokens = self._tokens(units, i, chunk_budget)
            if used + tokens > budget:
                if not body:  # the first line alone is longer than the card
                    body.append(self._truncate(units[i].text, budget))
                break
            body.append(units[i].text)
            used += tokens
            i += 1
        rest = i < len(units)
        body_text = "\n".join(body).strip()
        card_text = f"{header}\n\n{body_text}" if body_text else header
        card_preview = preview_of(body_text) if body_text else label
        card = Piece("card", card_text, image=card_image, preview=card_preview)
        room = max(0, self.s.max_chunks - len(images))
        chunks: list[Piece] = []
        if rest and room:
            chunks, cut = self._chunks(units, room, chunk_budget)
            truncated = truncated or cut
        elif rest:
            truncated = True  # page images took every chunk slot
        if images:
            chunks = sorted([*chunks, *images], key=lambda p: p.locator.page or 0)
        return Extracted(self.kind, card, chunks, title=title, pages=pages, truncated=truncated)

    def _chunks(self, units: list[_Unit], max_chunks: int, budget: int) -> tuple[list[Piece], bool]:
        """Greedy packing of whole lines up to the budget, each chunk starting with the tail
        (``chunk_overlap`` tokens) of the one before, so a passage cut at a boundary is whole
        in one of them. ``budget`` leaves room for the name header. Returns the chunks and
        whether text was left out."""
        overlap = self.s.chunk_overlap
        chunks: list[Piece] = []
        i = 0
        while i < len(units):
            self.budget.check()
            if len(chunks) == max_chunks:
                return chunks, True
            j, total = i, 0
            while j < len(units):
                tokens = self._tokens(units, j, budget)
                if total + tokens > budget and j > i:
                    break
                total += tokens
                j += 1
            piece = self._chunk_piece(units[i:j])
            if piece is not None:
                chunks.append(piece)
            if j >= len(units):
                break
            # Whole lines until the overlap is reached; a line longer than the overlap is
            # still taken if it fits in half a chunk (else long lines would get none).
            k, back = j, 0
            while k - 1 > i and back < overlap and back + units[k - 1].tokens <= budget // 2:
                k -= 1
                back += units[k].tokens
            i = k
        return chunks, False

    def _chunk_piece(self, group: list[_Unit]) -> Piece | None:
        body_units = [u for u in group if u.text.strip()]
        if not body_units:
            return None
        first, last = body_units[0], body_units[-1]
        pages = [u.page for u in body_units if u.page is not None]
        lines = [u.line for u in body_units if u.line is not None]
        locator = Locator(
            page=pages[0] if pages else None,
            page_end=pages[-1] if pages and pages[-1] != pages[0] else None,
            line_start=min(lines) if lines else None,
            line_end=max(lines) if lines else None,
            section=first.section if first.section == last.section else None,
        )
        body = "\n".join(u.text for u in group).strip()
        where = locator.label()
        text = f"{self.name} ({where})\n{body}" if where else f"{self.name}\n{body}"
        return Piece("chunk", text, locator=locator, preview=preview_of(body))


def _tidy(units: list[_Unit]) -> list[_Unit]:
    """Clean each line, drop leading blanks and runs of blank lines (keep paragraph breaks)."""
    out: list[_Unit] = []
    for unit in units:
        unit.text = _clean(unit.text).rstrip()
        blank = not unit.text.strip()
        if blank and (not out or not out[-1].text.strip()):
            continue
        out.append(unit)
    while out and not out[-1].text.strip():
        out.pop()
    return out


SPAN_LINES = 20  # lines of a text file one full-text locator covers


def _text_layer(units: list[_Unit]) -> TextLayer:
    """The units' text as one body, with a span at every page or section change and every
    SPAN_LINES lines: what a full-text hit's locator points at."""
    parts: list[str] = []
    spans: list[tuple[int, Locator]] = []
    offset = 0
    group: list[_Unit] = []

    def close_group() -> None:
        lines = [u.line for u in group if u.line is not None]
        first = group[0]
        spans.append((start, Locator(
            page=first.page, section=first.section,
            line_start=min(lines) if lines else None, line_end=max(lines) if lines else None,
        )))  # fmt: skip

    start = 0
    for unit in units:
        if group and (
            unit.page != group[0].page
            or unit.section != group[0].section
            or len(group) >= SPAN_LINES
        ):
            close_group()
            group = []
            start = offset
        group.append(unit)
        parts.append(unit.text)
        offset += len(unit.text) + 1
    if group:
        close_group()
    return TextLayer("\n".join(parts), tuple(spans))


def _lines(text: str, **where) -> list[_Unit]:
    return [_Unit(line, line=n, **where) for n, line in enumerate(text.splitlines(), 1)]


def _read_limited(path: str, limit: int) -> tuple[bytes, bool]:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return data[:limit], len(data) > limit


# --- text, code, Markdown, HTML -----------------------------------------------------------


def _text(doc: _Doc) -> Extracted:
    data, truncated = _read_limited(doc.path, doc.s.max_text_bytes)
    text = decode_text(data, truncated=truncated)
    return doc.document(_lines(text), label=_type_label(doc.path, doc.kind), truncated=truncated)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.I)


def html_charset(data: bytes) -> str | None:
    """The charset an HTML file declares in a ``<meta>`` tag near its start."""
    m = _META_CHARSET.search(data[:4096])
    return m.group(1).decode("ascii") if m else None


class _HTMLText(HTMLParser):
    """Visible text of an HTML page, one block element a line, plus its ``<title>``."""

    # Not "head": its end tag is optional, and its only text is the title, taken apart.
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe"})
    BLOCK = frozenset(
        {
            "p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
            "section", "article", "header", "footer", "nav", "aside", "main", "table", "ul",
            "ol", "pre", "blockquote", "hr", "dt", "dd", "figcaption", "form", "body",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.skip = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in self.SKIP:
            self.skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in self.SKIP and self.skip:
            self.skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.parts.append(data)


def html_to_text(markup: str) -> tuple[str, str | None]:
    """(visible text, title) of an HTML document."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    text = "\n".join(line for line in lines if line)
    title = " ".join("".join(parser.title).split()) or None
    return text, title


def _html(doc: _Doc) -> Extracted:
    data, truncated = _read_limited(doc.path, doc.s.max_text_bytes)
    markup = decode_text(data, truncated=truncated, declared=html_charset(data))
    text, title = html_to_text(markup)
    return doc.document(
        [_Unit(line) for line in text.splitlines()],
        label="web page",
        title=title,
        truncated=truncated,
    )


# --- images -------------------------------------------------------------------------------


@functools.cache
def _av() -> Any:
    """PyAV (FFmpeg's decoders, from its wheel), or None: without it videos are found by
    name only (``pip install 'launcher[video]'``)."""
    try:
        import av
    except ImportError:
        return None
    return av


def _video(doc: _Doc) -> Extracted:
    """A few frames, evenly spread, as pictures: the card is the middle one."""
    av = _av()
    try:
        container = av.open(doc.path)
    except (av.error.FFmpegError, OSError) as err:
        raise ExtractError("not a readable video") from err
    try:
        doc.budget.check()
        if not container.streams.video:
            raise ExtractError("no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
        if width * height > doc.s.max_image_pixels:
            raise ExtractError(f"{TOO_LARGE} (video frames of {width}×{height} pixels)")
        seconds = float(container.duration / 1_000_000) if container.duration else 0.0
        if not seconds and stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        n = max(1, doc.s.video_frames)
        frames: list[tuple[float, Image.Image]] = []
        for i in range(n):
            doc.budget.check()
            at = seconds * (i + 0.5) / n
            if stream.time_base:
                container.seek(int(at / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                image = frame.to_image()
                image.thumbnail((doc.s.image_max_side, doc.s.image_max_side))
                frames.append((at, image.convert("RGB")))
                break
            if not seconds:
                break
    except av.error.FFmpegError as err:
        raise ExtractError(f"corrupt video ({preview_of(str(err), 60)})") from err
    finally:
        container.close()
    if not frames:
        raise ExtractError("no decodable video frames")
    length = f"{int(seconds // 60)}:{int(seconds % 60):02}"
    label = f"video ({length}, {stream.codec_context.name or 'video'})"

    def when(t: float) -> str:
        return f"at {int(t // 60)}:{int(t % 60):02}"

    middle = len(frames) // 2
    card = Piece("card", None, image=frames[middle][1], preview=label,
                 locator=Locator(section=when(frames[middle][0])))  # fmt: skip
    chunks = [
        Piece(
            "chunk",
            f"{doc.name} ({when(t)})",
            image=img,
            preview=f"frame {when(t)}",
            locator=Locator(section=when(t)),
        )  # fmt: skip
        for i, (t, img) in enumerate(frames)
        if i != middle
    ]
    return Extracted("video", card, chunks)


def _heif_opener() -> bool:
    """Register pillow-heif's HEIC/HEIF opener once; False when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _exif_date(im: Image.Image) -> str | None:
    try:
        exif = im.getexif()
        value = exif.get_ifd(0x8769).get(36867) or exif.get(306)  # DateTimeOriginal, DateTime
    except (OSError, ValueError, TypeError, KeyError, SyntaxError, struct.error):
        return None  # a damaged EXIF block only means no date on the card
    if isinstance(value, str) and re.match(r"\d{4}:\d\d:\d\d", value):
        return value[:10].replace(":", "-")
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB on a white background: transparent pixels often hold black, which misleads."""
    from PIL import Image

    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if im.mode.startswith("I;16") or im.mode == "I":
        im = _eight_bit(im)  # 16-bit scans: scale, don't clip
    return im if im.mode == "RGB" else im.convert("RGB")


def _eight_bit(im: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grey image as 8-bit "L", its top byte kept. Through
    NumPy: Pillow's ``point`` refuses big-endian ``I;16B``."""
    import numpy as np
    from PIL import Image

    values = np.asarray(im).astype(np.int64) >> 8
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def load_image(
    path: str, max_side: int, max_pixels: int
) -> tuple[Image.Image, str, tuple[int, int], str | None]:
    """Decode an image fully (so a truncated or fake one fails here, typed), upright, RGB,
    downscaled to ``max_side``. Returns (image, format, original size, EXIF date)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS and not _heif_opener():
        raise ExtractError("HEIC image: install pillow-heif to index it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size = im.size
                if size[0] * size[1] > max_pixels:
                    raise ExtractError(f"image too large ({size[0]}×{size[1]} pixels)")
                fmt = im.format or "image"
                im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
                im.load()
                date = _exif_date(im)
                upright = ImageOps.exif_transpose(im) or im
                rgb = _to_rgb(upright)
    except (FileNotFoundError, PermissionError):
        raise
    except UnidentifiedImageError as err:
        raise ExtractError("not a readable image") from err
    except Image.DecompressionBombError as err:
        raise ExtractError("image too large") from err
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        if "truncated" in str(err).lower():
            raise ExtractError("truncated image") from err
        raise ExtractError(f"corrupt image ({preview_of(str(err), 60)})") from err
    rgb.thumbnail((max_side, max_side))
    return rgb, fmt, size, date


def fit_image(image: Image.Image, max_side: int) -> Image.Image:
    """What indexing does to a decoded image (RGB on white, at most ``max_side``): a query
    image goes through it too, so an indexed image finds itself."""
    rgb = _to_rgb(image)
    if max(rgb.size) > max_side:
        rgb = rgb.copy()
        rgb.thumbnail((max_side, max_side))
    return rgb


def _image(doc: _Doc) -> Extracted:
    img, fmt, (w, h), date = load_image(doc.path, doc.s.image_max_side, doc.s.max_image_pixels)
    label = f"image ({fmt}, {w}×{h})" + (f", taken {date}" if date else "")
    # The card is the picture alone: name and folder are found by the exact-match path,
    # and "more like this" with an indexed image finds that image first.
    card = Piece("card", None, image=img, preview=label)
    return Extracted("image", card, [])


# --- PDF ----------------------------------------------------------------------------------


def _blank(img: Image.Image) -> bool:
    low, high = img.convert("L").getextrema()  # one band: two numbers
    return float(high) - float(low) < 8  # type: ignore[arg-type]


BLANK_PROBE_PX = 48  # a page is first rendered this small: blank ones cost next to nothing


def _render(page: Any, longest: int) -> Image.Image:
    """One PDF page as RGB, its longer side ``longest`` pixels (caller holds the lock)."""
    width, height = page.get_size()
    scale = longest / max(width, height, 1)
    bitmap = page.render(scale=scale)
    try:
        return bitmap.to_pil().convert("RGB")  # a copy: the bitmap's memory is freed below
    finally:
        bitmap.close()


def _pdf_error(path: str) -> ExtractError:
    """Why a PDF does not open, from the file itself: pdfium's last error is global, so its
    message can be the previous file's."""
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if b"/Encrypt" in tail + block:
                return ExtractError("password-protected PDF")
            tail = block[-16:]
    return ExtractError("corrupt PDF")


def _pdf(doc: _Doc) -> Extracted:
    import pypdfium2 as pdfium

    s = doc.s
    units: list[_Unit] = []
    images: list[Piece] = []
    chars, truncated, renders = 0, False, 0
    # Blank pages count too: a 5,000-page empty PDF must not render 5,000 pages.
    max_images = min(s.max_rendered_pages, s.max_chunks)
    max_renders = 2 * max_images
    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(doc.path)
        except pdfium.PdfiumError as err:
            raise _pdf_error(doc.path) from err
    try:
        with PDFIUM_LOCK:
            pages = len(pdf)
            title = (pdf.get_metadata_dict().get("Title") or "").strip() or None
        for index in range(pages):
            doc.budget.check()
            number = index + 1
            with PDFIUM_LOCK:
                page = pdf[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        text = textpage.get_text_bounded()
                    finally:
                        textpage.close()
                    img = None
                    if len(text.strip()) < s.pdf_render_min_chars and not doc.text_only:
                        if len(images) < max_images and renders < max_renders:
                            renders += 1
                            if not _blank(_render(page, BLANK_PROBE_PX)):
                                img = _render(page, s.pdf_render_px)
                        else:
                            truncated = True
                finally:
                    page.close()
            if img is not None and not _blank(img):
                caption = f"{doc.name} (page {number})"
                if text.strip():  # the little text there is goes with it
                    caption += "\n" + _clean(text).strip()
                images.append(
                    Piece("chunk", caption, image=img, locator=Locator(page=number),
                          preview=preview_of(text) or f"page {number} (image)")
                )  # fmt: skip
            if text.strip():  # page numbers locate PDF text; lines within a page do not
                units.extend(_Unit(line, page=number) for line in text.splitlines())
                units.append(_Unit("", page=number))  # a page break is a paragraph break
            chars += len(text)
            if chars > s.max_text_bytes:
                truncated = number < pages
                break
    except pdfium.PdfiumError as err:
        raise ExtractError(f"corrupt PDF ({preview_of(str(err), 60)})") from err
    finally:
        with PDFIUM_LOCK:
            pdf.close()
    card_image = None
    if images and not any(u.text.strip() for u in units):
        card_image = images[0].image  # a scan: the first page is the card
        images = images[1:]
    return doc.document(
        units,
        label=f"PDF document, {pages} page{'s' if pages != 1 else ''}",
        title=title,
        truncated=truncated,
        pages=pages,
        images=images,
        card_image=card_image,
    )


def pdf_page_image(source: str | BinaryIO, page: int, longest: int) -> Image.Image | None:
    """Page ``page`` (1-based) of a PDF (a path, or a file opened by the caller) as RGB
    (thumbnails), or None when it has no such page or cannot be read. Holds
    ``PDFIUM_LOCK`` like indexing does."""
    import pypdfium2 as pdfium

    # Bounded wait: indexing holds the lock a page at a time, but a page stuck in pdfium
    # must not pile up the page's requests behind it.
    if not PDFIUM_LOCK.acquire(timeout=THUMB_LOCK_WAIT):
        return None
    try:
        try:
            pdf = pdfium.PdfDocument(source)
        except pdfium.PdfiumError:
            return None
        try:
            if not 1 <= page <= len(pdf):
                return None
            p = pdf[page - 1]
            try:
                return _render(p, longest)
            finally:
                p.close()
        except (pdfium.PdfiumError, ValueError):  # e.g. "Crop exceeds page dimensions"
            return None
        finally:
            pdf.close()
    finally:
        PDFIUM_LOCK.release()


# --- office documents (zip + XML, text only) ----------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PR = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_OPF = "{http://www.idpf.org/2007/opf}"
_ODF_TYPES = {
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.presentation": "odp",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
    b"application/epub+zip": "epub",
}
_OOXML_TYPES = {
    b"wordprocessingml.document": "docx",
    b"presentationml.presentation": "pptx",
    b"spreadsheetml.sheet": "xlsx",
    b"wordprocessingml.template": "docx",
    b"presentationml.slideshow": "pptx",
    b"spreadsheetml.template": "xlsx",
    b"ms-excel.sheet.macroEnabled": "xlsx",
    b"ms-word.document.macroEnabled": "docx",
    b"ms-powerpoint.presentation.macroEnabled": "pptx",
}
_OFFICE_LABELS = {
    "docx": "Word document", "odt": "text document", "pptx": "presentation",
    "odp": "presentation", "xlsx": "spreadsheet", "ods": "spreadsheet", "epub": "e-book",
}  # fmt: skip
_XML_PART_LIMIT = 32 * 1000 * 1000  # decompressed bytes of one XML part (zip bomb guard)
_ODF_SPACES = 64  # <text:s text:c="N"/>: longer runs of spaces say nothing more


def _office_format(zf: zipfile.ZipFile) -> str | None:
    names = set(zf.namelist())
    if "mimetype" in names:
        with zf.open("mimetype") as f:
            kind = _ODF_TYPES.get(f.read(100).strip())  # never the whole (maybe huge) entry
        if kind:
            return kind
    if "[Content_Types].xml" in names:
        types = _zip_bytes(zf, "[Content_Types].xml")
        for marker, kind in _OOXML_TYPES.items():
            if marker in types:
                return kind
    return None


def _office_format_of(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            return _office_format(zf)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError):
        return None
    except OSError as err:
        raise ExtractError(os_reason(err)) from err


def _zip_bytes(zf: zipfile.ZipFile, name: str) -> bytes:
    with zf.open(name) as f:
        data = f.read(_XML_PART_LIMIT + 1)
    if len(data) > _XML_PART_LIMIT:
        raise ExtractError(f"{TOO_LARGE} (an office document part expands past the limit)")
    return data


def _xml(zf: zipfile.ZipFile, name: str) -> ET.Element:
    data = _zip_bytes(zf, name)
    # Office parts never declare entities; refusing them rules out entity-expansion bombs.
    if b"<!ENTITY" in data:
        raise ExtractError("office document with XML entities")
    return ET.fromstring(data)


def _core_title(zf: zipfile.ZipFile, name: str) -> str | None:
    if name not in zf.namelist():
        return None
    el = _xml(zf, name).find(f".//{_DC}title")
    return (el.text or "").strip() or None if el is not None else None


def _docx(zf: zipfile.ZipFile) -> tuple[list[_Unit], str | None]:
    root = _xml(zf, "word/document.xml")
    units: list[_Unit] = []
    for p in root.iter(f"{_W}p"):
        parts = []
        for el in p.iter():
            if el.tag == f"{_W}t":
                parts.append(el.text or "")
            elif el.tag == f"{_W}tab":
                parts.append("\t")
            elif el.tag in (f"{_W}br", f"{_W}cr"):
                parts.append("\n")
        units.extend(_Unit(line) for line in "".join(parts).split("\n"))
    return units, _core_title(zf, "docProps/core.xml")


def _numbered(names: Iterable[str], pattern: str) -> list[tuple[int, str]]:
    rx = re.compile(pattern)
    found = [(int(m.group(1)), n) for n in names if (m := rx.fullmatch(n))]
    return sorted(found)


def _pptx(zf: zipfile.ZipFile) -> tuple[list[_Unit], str | None]:
    units = []
    for number, name in _numbered(zf.namelist(), r"ppt/slides/slide(\d+)\.xml"):
        root = _xml(zf, name)
        for p in root.iter(f"{_A}p"):
            line = "".join(t.text or "" for t in p.iter(f"{_A}t"))
            units.append(_Unit(line, page=number))
        units.append(_Unit("", page=number))
    return units, _core_title(zf, "docProps/core.xml")


def _xlsx(zf: zipfile.ZipFile, limit: int) -> tuple[list[_Unit], str | None, bool]:
    names = set(zf.namelist())
    shared: list[str] = []
    if "xl/sharedStrings.xml" in names:
        for si in _xml(zf, "xl/sharedStrings.xml").iter(f"{_S}si"):
            shared.append("".join(t.text or "" for t in si.iter(f"{_S}t")))
    sheets: list[tuple[str, str]] = []
    try:
        rels = {
            r.get("Id"): r.get("Target", "")
            for r in _xml(zf, "xl/_rels/workbook.xml.rels").iter(f"{_PR}Relationship")
        }
        for sheet in _xml(zf, "xl/workbook.xml").iter(f"{_S}sheet"):
            target = rels.get(sheet.get(f"{_R}id"), "").lstrip("/")
            target = target if target.startswith("xl/") else f"xl/{target}"
            if target in names:
                sheets.append((sheet.get("name") or target, target))
    except KeyError:  # no workbook relations: take the sheet files in number order
        pass
    if not sheets:
        sheets = [
            (f"Sheet{n}", name) for n, name in _numbered(names, r"xl/worksheets/sheet(\d+)\.xml")
        ]
    units: list[_Unit] = []
    chars = 0
    for sheet_name, part in sheets:
        for row in _xml(zf, part).iter(f"{_S}row"):
            cells = []
            for c in row.iter(f"{_S}c"):
                kind, v = c.get("t"), c.find(f"{_S}v")
                if kind == "s" and v is not None and (v.text or "").isdigit():
                    index = int(v.text or 0)
                    cells.append(shared[index] if index < len(shared) else "")
                elif kind == "inlineStr":
                    cells.append("".join(t.text or "" for t in c.iter(f"{_S}t")))
                elif v is not None:
                    cells.append(v.text or "")
            line = "\t".join(cells).rstrip("\t")
            number = int(row.get("r") or 0) or None
            units.append(_Unit(line, line=number, section=sheet_name))
            chars += len(line)
            if chars > limit:
                return units, _core_title(zf, "docProps/core.xml"), True
    return units, _core_title(zf, "docProps/core.xml"), False


def _odf_text(el: ET.Element) -> str:
    out = [el.text or ""]
    for child in el:
        if child.tag == f"{_TEXT}s":
            count = child.get(f"{_TEXT}c", "1")
            out.append(" " * min(int(count) if count.isdigit() else 1, _ODF_SPACES))
        elif child.tag == f"{_TEXT}tab":
            out.append("\t")
        elif child.tag == f"{_TEXT}line-break":
            out.append("\n")
        else:
            out.append(_odf_text(child))
        out.append(child.tail or "")
    return "".join(out)


def _odf(zf: zipfile.ZipFile, fmt: str) -> tuple[list[_Unit], str | None]:
    root = _xml(zf, "content.xml")
    title = _core_title(zf, "meta.xml")
    blocks = (f"{_TEXT}p", f"{_TEXT}h")
    units: list[_Unit] = []
    if fmt == "odp":
        for number, page in enumerate(root.iter(f"{_DRAW}page"), 1):
            units.extend(
                _Unit(line, page=number)
                for el in page.iter()
                if el.tag in blocks
                for line in _odf_text(el).split("\n")
            )
            units.append(_Unit("", page=number))
        return units, title
    for el in root.iter():
        if el.tag in blocks:
            units.extend(_Unit(line) for line in _odf_text(el).split("\n"))
    return units, title


def _epub(zf: zipfile.ZipFile) -> tuple[list[_Unit], str | None]:
    names = zf.namelist()
    title = None
    order: list[str] = []
    opf = next((n for n in names if n.endswith(".opf")), None)
    if opf:
        root = _xml(zf, opf)
        title_el = root.find(f".//{_DC}title")
        title = (title_el.text or "").strip() or None if title_el is not None else None
        base = os.path.dirname(opf)
        items = {i.get("id"): i.get("href", "") for i in root.iter(f"{_OPF}item")}
        for ref in root.iter(f"{_OPF}itemref"):
            href = items.get(ref.get("idref"))
            if href:
                order.append(f"{base}/{href}" if base else href)
    if not order:
        order = sorted(n for n in names if n.lower().endswith((".xhtml", ".html", ".htm")))
    units: list[_Unit] = []
    for name in order:
        if name not in names:
            continue
        markup = decode_text(_zip_bytes(zf, name))
        text, _ = html_to_text(markup)
        units.extend(_Unit(line) for line in text.splitlines())
        units.append(_Unit(""))
    return units, title


def _office(doc: _Doc) -> Extracted:
    truncated = False
    try:
        with zipfile.ZipFile(doc.path) as zf:
            fmt = _office_format(zf)
            if fmt == "docx":
                units, title = _docx(zf)
            elif fmt == "pptx":
                units, title = _pptx(zf)
            elif fmt == "xlsx":
                units, title, truncated = _xlsx(zf, doc.s.max_text_bytes)
            elif fmt in ("odt", "odp", "ods"):
                units, title = _odf(zf, fmt)
            elif fmt == "epub":
                units, title = _epub(zf)
            else:
                raise ExtractError("not an office document")
    except zipfile.BadZipFile as err:
        raise ExtractError("corrupt office document (bad zip)") from err
    except KeyError as err:
        raise ExtractError(f"corrupt office document (missing {err.args[0]!s})") from err
    except ET.ParseError as err:
        raise ExtractError("corrupt office document (bad XML)") from err
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as err:
        raise ExtractError(f"unreadable office document ({preview_of(str(err), 60)})") from err
    units, cut = _cap_units(units, doc.s.max_text_bytes)
    truncated = truncated or cut
    pages = len({u.page for u in units if u.page is not None}) or None
    return doc.document(
        units, label=_OFFICE_LABELS[fmt], title=title, truncated=truncated, pages=pages
    )


def _cap_units(units: list[_Unit], limit: int) -> tuple[list[_Unit], bool]:
    """The units within ``limit`` characters of text, and whether some were left out."""
    chars = 0
    for i, unit in enumerate(units):
        chars += len(unit.text)
        if chars > limit:
            return units[:i], True
    return units, False


_EXTRACTORS: dict[str, Callable[[_Doc], Extracted]] = {
    "text": _text,
    "code": _text,
    "markdown": _text,
    "html": _html,
    "image": _image,
    "pdf": _pdf,
    "office": _office,
    "video": _video,
}
