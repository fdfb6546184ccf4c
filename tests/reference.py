"""Independent numpy reference for the Qwen3-VL TEXT path (tokenizer + decoder + heads).

Nothing here uses llama.cpp: the tokenizer is a pure-Python byte-level BPE over a
:class:`launcher.synth.Vocab`, and :func:`forward` reads the GGUF weights with
``gguf.GGUFReader`` and runs the Qwen3 decoder in float64.  Tests compare llama.cpp's
outputs (LAST-pooled embedding, logits, RANK scores) against this.

Conventions (those of Hugging Face Qwen3-VL and of llama.cpp, which agree here):

* pre-tokenizer: the Qwen2 regex ``(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|
  \\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+``, implemented by hand with
  ``unicodedata`` categories (no ``regex`` dependency); added/special tokens are split out
  of the text first, longest first.
* decoder: RMSNorm -> q/k/v -> per-head q_norm/k_norm -> RoPE (rotate-half / NEOX pairs
  ``(i, i + d/2)``, theta from ``rope.freq_base``) -> causal GQA attention with scale
  ``1/sqrt(head_dim)`` -> o_proj -> residual -> RMSNorm -> SwiGLU -> residual; final RMSNorm.
* M-RoPE for text: all of t/h/w positions equal the token position, which makes Qwen3-VL's
  interleaved M-RoPE the plain rope.  llama.cpp's IMROPE additionally feeds a 4th ("e")
  position that is 0 for text tokens to the rotary pairs that none of the t/h/w sections
  claims (for the real sections [24, 20, 20, 0]: pairs 61 and 62 of 64, frequencies ~1e-6, so
  the difference is invisible); ``rope="llama.cpp"`` reproduces that exactly, ``rope="hf"``
  (default) is the plain rope.  With the TINY_TEXT sections (3, 3, 2, 0) both are identical.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from launcher.synth import (
    TOKEN_CONTROL,
    TOKEN_USER_DEFINED,
    Vocab,
    bytes_to_unicode,
)

__all__ = [
    "BPETokenizer",
    "Weights",
    "forward",
    "load_weights",
    "pretokenize",
    "rank_scores",
    "softmax",
]


# ----------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------


def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


def _is_number(c: str) -> bool:
    return unicodedata.category(c).startswith("N")


def _is_space(c: str) -> bool:
    return c.isspace()


def _match_at(s: str, i: int) -> int:
    """Length of the Qwen2 pre-tokenizer match at ``s[i]`` (regex alternatives tried in order)."""
    n = len(s)
    c = s[i]
    # 1. contractions (case-insensitive)
    if c == "'" and i + 1 < n:
        two = s[i + 1 : i + 3].lower()
        if two in ("re", "ve", "ll"):
            return 3
        if s[i + 1].lower() in "stmd":
            return 2
    # 2. [^\r\n\p{L}\p{N}]?\p{L}+
    j = i
    if (
        c not in "\r\n"
        and not _is_letter(c)
        and not _is_number(c)
        and i + 1 < n
        and _is_letter(s[i + 1])
    ):
        j = i + 1
    if _is_letter(s[j]):
        k = j
        while k < n and _is_letter(s[k]):
            k += 1
        return k - i
    # 3. \p{N}
    if _is_number(c):
        return 1

    # 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    def other(ch: str) -> bool:
        return not _is_space(ch) and not _is_letter(ch) and not _is_number(ch)

    j = i + 1 if (c == " " and i + 1 < n and other(s[i + 1])) else i
    if other(s[j]):
        k = j
        while k < n and other(s[k]):
            k += 1
        while k < n and s[k] in "\r\n":
            k += 1
        return k - i
    # whitespace run [i, k)
    k = i
    while k < n and _is_space(s[k]):
        k += 1
    if k == i:  # unreachable: every char is letter, number, space or "other"
        return 1
    # 5. \s*[\r\n]+  -> ends after the last \r or \n of the run
    last_nl = max((p for p in range(i, k) if s[p] in "\r\n"), default=-1)
    if last_nl >= 0:
        return last_nl + 1 - i
    # 6. \s+(?!\S)
    if k == n:
        return k - i
    if k - 1 > i:
        return k - 1 - i
    # 7. \s+
    return k - i


def pretokenize(text: str) -> list[str]:
    """Split text (without special tokens) into Qwen2 pre-tokens."""
    out = []
    i = 0
    while i < len(text):
        m = _match_at(text, i)
        out.append(text[i : i + m])
        i += m
    return out


class BPETokenizer:
    """Byte-level BPE over a :class:`Vocab`, like Hugging Face's Qwen2 tokenizer.

    ``encode(text, parse_special=True)``: CONTROL tokens are recognised in the text only
    with ``parse_special`` (llama.cpp's flag of the same name); USER_DEFINED added tokens
    (``<think>`` ...) always are.  No BOS/EOS is added (Qwen: ``add_bos_token = false``).
    """

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.byte_enc = bytes_to_unicode()
        self.byte_dec = {c: b for b, c in self.byte_enc.items()}
        self.ranks: dict[tuple[str, str], int] = {}
        for r, m in enumerate(vocab.merges):
            a, b = m.split(" ", 1)
            self.ranks.setdefault((a, b), r)
        specials = [
            (t, i, ty)
            for i, (t, ty) in enumerate(zip(vocab.tokens, vocab.token_types, strict=True))
            if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
        ]
        specials.sort(key=lambda x: -len(x[0]))  # longest first
        self.specials = specials
        self._cache: dict[str, list[int]] = {}

    def _bpe(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        parts = [self.byte_enc[b] for b in piece.encode("utf-8")]
        while len(parts) > 1:
            best_r, best_i = None, -1
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_r is None or r < best_r):
                    best_r, best_i = r, i
            if best_r is None:
                break
            parts = parts[:best_i] + [parts[best_i] + parts[best_i + 1]] + parts[best_i + 2 :]
        ids: list[int] = []
        for p in parts:
            tid = self.vocab.get(p)
            if tid is None:  # cannot happen with a complete byte alphabet
                ids.extend(self.vocab.id_of(ch) for ch in p)
            else:
                ids.append(tid)
        self._cache[piece] = ids
        return ids

    def _split_specials(self, text: str, parse_special: bool) -> list[tuple[str, int | None]]:
        active = [(t, i) for t, i, ty in self.specials if parse_special or ty == TOKEN_USER_DEFINED]
        out: list[tuple[str, int | None]] = []
        pos = 0
        start = 0
        while pos < len(text):
            hit = None
            if text[pos] == "<":
                for t, i in active:
                    if text.startswith(t, pos):
                        hit = (t, i)
                        break
            if hit is None:
                pos += 1
                continue
            if start < pos:
                out.append((text[start:pos], None))
            out.append(hit)
            pos += len(hit[0])
            start = pos
        if start < len(text):
            out.append((text[start:], None))
        return out

    def encode(self, text: str, *, parse_special: bool = True) -> list[int]:
        ids: list[int] = []
        for chunk, sid in self._split_specials(text, parse_special):
            if sid is not None:
                ids.append(sid)
                continue
            for piece in pretokenize(chunk):
                ids.extend(self._bpe(piece))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        out = bytearray()
        for i in ids:
            tok = self.vocab.tokens[i]
            if self.vocab.token_types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
                out += tok.encode("utf-8")
            else:
                out += bytes(self.byte_dec[c] for c in tok)
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------


@dataclass
class Weights:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_theta: float
    rope_sections: tuple[int, int, int, int]
    eps: float
    tensors: dict[str, np.ndarray]  # float64, numpy (torch) layout: W[out, in]

    def get(self, name: str) -> np.ndarray | None:
        return self.tensors.get(name)


def _field_value(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


@lru_cache(maxsize=8)
def _load_weights_cached(path: str, mtime_ns: int, size: int) -> Weights:
    import gguf

    r = gguf.GGUFReader(path)
    arch = _field_value(r, "general.architecture")
    a = str(arch)
    n_embd = int(_field_value(r, f"{a}.embedding_length"))
    n_head = int(_field_value(r, f"{a}.attention.head_count"))
    n_head_kv = int(_field_value(r, f"{a}.attention.head_count_kv") or n_head)
    head_dim = int(_field_value(r, f"{a}.attention.key_length") or n_embd // n_head)
    sections = _field_value(r, f"{a}.rope.dimension_sections") or [0, 0, 0, 0]
    tensors: dict[str, np.ndarray] = {}
    for t in r.tensors:
        data = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        tensors[t.name] = data.reshape(shape)
    return Weights(
        n_layer=int(_field_value(r, f"{a}.block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        rope_theta=float(_field_value(r, f"{a}.rope.freq_base") or 10000.0),
        rope_sections=tuple(int(x) for x in sections),  # type: ignore[arg-type]
        eps=float(_field_value(r, f"{a}.attention.layer_norm_rms_epsilon")),
        tensors=tensors,
    )


def load_weights(gguf_path: str | Path) -> Weights:
    """Read and dequantize a qwen3 / qwen3vl text GGUF into float64 arrays (cached)."""
    p = Path(gguf_path)
    st = p.stat()
    return _load_weights_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


# ----------------------------------------------------------------------------------------
# decoder
# ----------------------------------------------------------------------------------------


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _rope_angles(
    pos: np.ndarray, head_dim: int, theta: float, sections: Sequence[int], mode: str
) -> np.ndarray:
    """Angles [n_tok, head_dim/2] for text tokens (t = h = w = pos)."""
    half = head_dim // 2
    inv = theta ** (-2.0 * np.arange(half, dtype=np.float64) / head_dim)
    ang = pos[:, None].astype(np.float64) * inv[None, :]
    if mode == "llama.cpp" and any(sections):
        # llama.cpp IMROPE: pairs not claimed by t/h/w use the 4th position, 0 for text.
        s0, s1, s2, s3 = sections
        sect_dims = s0 + s1 + s2 + s3
        for i in range(half):
            sector = i % sect_dims
            claimed = (
                (sector % 3 == 1 and sector < 3 * s1)
                or (sector % 3 == 2 and sector < 3 * s2)
                or (sector % 3 == 0 and sector < 3 * s0)
            )
            if not claimed:
                ang[:, i] = 0.0
    return ang


def _apply_rope(x: np.ndarray, ang: np.ndarray) -> np.ndarray:
    """x: [n_tok, n_heads, head_dim]; NEOX pairs (i, i + d/2)."""
    half = x.shape[-1] // 2
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def hidden_states(
    gguf_path: str | Path,
    token_ids: Sequence[int],
    *,
    rope: Literal["hf", "llama.cpp"] = "hf",
) -> np.ndarray:
    """Final-norm hidden states [n_tok, n_embd] of the decoder for one causal sequence."""
    w = load_weights(gguf_path)
    T = w.tensors
    ids = np.asarray(list(token_ids), dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError("token_ids must be a non-empty sequence")
    n = len(ids)
    H, KV, D = w.n_head, w.n_head_kv, w.head_dim
    group = H // KV
    x = T["token_embd.weight"][ids]
    ang = _rope_angles(np.arange(n), D, w.rope_theta, w.rope_sections, rope)
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    scale = 1.0 / np.sqrt(D)
    for il in range(w.n_layer):
        p = f"blk.{il}."
        h = _rms(x, T[p + "attn_norm.weight"], w.eps)
        q = (h @ T[p + "attn_q.weight"].T).reshape(n, H, D)
        k = (h @ T[p + "attn_k.weight"].T).reshape(n, KV, D)
        v = (h @ T[p + "attn_v.weight"].T).reshape(n, KV, D)
        q = _rms(q, T[p + "attn_q_norm.weight"], w.eps)
        k = _rms(k, T[p + "attn_k_norm.weight"], w.eps)
        q = _apply_rope(q, ang)
        k = _apply_rope(k, ang)
        out = np.empty((n, H, D))
        for hh in range(H):
            kv = hh // group
            s = (q[:, hh, :] @ k[:, kv, :].T) * scale + mask
            out[:, hh, :] = softmax(s, axis=-1) @ v[:, kv, :]
        x = x + out.reshape(n, H * D) @ T[p + "attn_output.weight"].T
        h = _rms(x, T[p + "ffn_norm.weight"], w.eps)
        g = h @ T[p + "ffn_gate.weight"].T
        u = h @ T[p + "ffn_up.weight"].T
        x = x + (_silu(g) * u) @ T[p + "ffn_down.weight"].T
    return _rms(x, T["output_norm.weight"], w.eps)


def forward(
    gguf_path: str | Path,
    token_ids: Sequence[int],
    *,
    rope: Literal["hf", "llama.cpp"] = "hf",
) -> tuple[np.ndarray, np.ndarray]:
    """(hidden_last [n_embd], logits_last [n_vocab]) for one causal sequence.

    ``hidden_last`` is what LAST pooling returns (final RMSNorm applied, not L2-normalised);
    ``logits_last`` uses ``output.weight`` or, when absent, the tied ``token_embd.weight``.
    """
    w = load_weights(gguf_path)
    hid = hidden_states(gguf_path, token_ids, rope=rope)[-1]
    head = w.get("output.weight")
    if head is None:
        head = w.tensors["token_embd.weight"]
    return hid, head @ hid


def rank_scores(
    gguf_path: str | Path,
    token_ids: Sequence[int],
    *,
    rope: Literal["hf", "llama.cpp"] = "hf",
) -> np.ndarray:
    """RANK-pooling output as llama.cpp computes it for qwen3 / qwen3vl.

    llama.cpp (``llm_graph_context::build_pooling``, ``LLAMA_POOLING_TYPE_RANK``): take the
    last token's final-norm hidden state (causal model -> last, not first token), apply the
    optional ``cls`` dense+tanh head (absent for Qwen3), then ``cls.output.weight`` (+ bias if
    present), then -- for the qwen3 / qwen3vl archs only -- a softmax over the
    ``classifier.output_labels``.  Returns ``n_cls_out`` floats, here [P(yes), P(no)].
    """
    w = load_weights(gguf_path)
    hid = hidden_states(gguf_path, token_ids, rope=rope)[-1]
    cur = hid
    cls = w.get("cls.weight")
    if cls is not None:
        cur = cls @ cur
        b = w.get("cls.bias")
        if b is not None:
            cur = cur + b
        cur = np.tanh(cur)
    out_w = w.get("cls.output.weight")
    if out_w is None:
        raise ValueError(f"{gguf_path} has no cls.output.weight (not a rank-head model)")
    cur = out_w @ cur
    b = w.get("cls.output.bias")
    if b is not None:
        cur = cur + b
    return softmax(cur)
