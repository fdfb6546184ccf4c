"""Prompt layout of the official Qwen3-VL-Embedding and Qwen3-VL-Reranker code.

A prompt is a list of parts. ``Special`` parts are chat-template markers and are tokenized
with special tokens parsed; ``Text`` parts carry user or file content and are tokenized
without, so a file containing ``<|im_end|>`` cannot end the turn. ``Image`` parts stand
where the official template puts ``<|vision_start|><|image_pad|><|vision_end|>``
(mtmd adds the vision start/end tokens itself).

Parts are split where Hugging Face's tokenizer splits (at special tokens), so tokenizing
each part on its own gives the same ids as the official ``apply_chat_template`` output.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

DEFAULT_INSTRUCTION = "Represent the user's input."
RERANK_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".'
)
DEFAULT_RERANK_INSTRUCTION = (
    "Given a search query, retrieve relevant candidates that answer the query."
)
EMPTY_INPUT = "NULL"

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


@dataclass(frozen=True)
class Special:
    """Template text with special tokens (tokenized with ``parse_special=True``)."""

    text: str


@dataclass(frozen=True)
class Text:
    """Content text (tokenized with ``parse_special=False``).

    ``keep`` is the length of the leading characters that must survive truncation; when it
    is shorter than ``text``, the rest is user content that may be cut from the end to fit.
    """

    text: str
    keep: int | None = None

    @property
    def truncatable(self) -> bool:
        return self.keep is not None and self.keep < len(self.text)


@dataclass(frozen=True)
class Image:
    """The place of image number ``index`` of the item."""

    index: int


Part = Special | Text | Image


def normalize_instruction(instruction: str | None, default: str) -> str:
    """Strip, fall back to ``default`` when empty, and end with punctuation (adds ``.``)."""
    text = (instruction or "").strip()
    if not text:
        return default
    if not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text


def _turn_start(role: str) -> list[Part]:
    return [Special(IM_START), Text(f"{role}\n")]


def _merge_text(parts: list[Part]) -> list[Part]:
    """Join neighbouring Text parts: the official tokenizer sees them as one run.

    Only the last piece of a run may be content that can be cut (``keep`` marks where it
    starts), so truncation from the end never touches the template.
    """
    out: list[Part] = []
    for part in parts:
        prev = out[-1] if out else None
        if isinstance(part, Text) and isinstance(prev, Text):
            keep = len(prev.text) + (part.keep if part.keep is not None else len(part.text))
            out[-1] = Text(prev.text + part.text, keep=keep)
        elif isinstance(part, Text) and part.keep is None:
            out.append(Text(part.text, keep=len(part.text)))
        else:
            out.append(part)
    return out


def embedding_prompt(text: str | None, n_images: int, instruction: str | None) -> list[Part]:
    """``<|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{images}{text}...``"""
    system = normalize_instruction(instruction, DEFAULT_INSTRUCTION)
    parts: list[Part] = [*_turn_start("system"), Text(system), Special(IM_END), Text("\n")]
    parts += _turn_start("user")
    parts += [Image(i) for i in range(n_images)]
    if text:
        parts.append(Text(text, keep=0))
    elif n_images == 0:
        parts.append(Text(EMPTY_INPUT))
    parts += [Special(IM_END), Text("\n"), *_turn_start("assistant")]
    return _merge_text(parts)


def rerank_prompt(
    query: str | None,
    query_images: int,
    doc: str | None,
    doc_images: int,
    instruction: str | None,
) -> list[Part]:
    """The Qwen3-VL-Reranker prompt; the answer token follows the returned parts.

    Images come after ``<Query>:``/``<Document>:`` and before their text, as in the
    official ``format_mm_content``; an empty query or document is the text ``NULL``.
    """
    instr = (instruction or "").strip() or DEFAULT_RERANK_INSTRUCTION
    parts: list[Part] = [*_turn_start("system"), Text(RERANK_SYSTEM), Special(IM_END), Text("\n")]
    parts += _turn_start("user")
    parts.append(Text(f"<Instruct>: {instr}<Query>:"))
    parts += [Image(i) for i in range(query_images)]
    if query:
        parts.append(Text(query))
    elif query_images == 0:
        parts.append(Text(EMPTY_INPUT))
    parts.append(Text("\n<Document>:"))
    parts += [Image(query_images + i) for i in range(doc_images)]
    if doc:
        parts.append(Text(doc, keep=0))
    elif doc_images == 0:
        parts.append(Text(EMPTY_INPUT))
    parts += [Special(IM_END), Text("\n"), *_turn_start("assistant")]
    return _merge_text(parts)


def render(
    parts: list[Part], image_marker: str = "<|vision_start|><|image_pad|><|vision_end|>"
) -> str:
    """The prompt as one string (for display and golden tests)."""
    out = []
    for part in parts:
        out.append(image_marker if isinstance(part, Image) else part.text)
    return "".join(out)
