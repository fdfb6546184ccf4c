"""Synthetic Qwen3-VL GGUF models for tests and benchmarks.

This module writes *real* GGUF files that llama.cpp (through llama-cpp-python) loads and
runs: a ``qwen3vl`` text model (embedding / rank-head reranker / plain generative LM) and a
``clip`` multimodal projector of projector type ``qwen3vl_merger``.  The weights are random
(seeded), so the outputs mean nothing, but every code path of the engine (tokenising, chat
framing, last-token pooling, RANK pooling, mtmd image evaluation, deepstack) runs for real.

The file layout follows what llama.cpp's ``convert_hf_to_gguf.py`` writes for
Qwen3-VL-Embedding-2B / Qwen3-VL-Reranker-2B (keys, tensor names and shapes); see
``QWEN3VL_2B_TEXT`` / ``QWEN3VL_2B_VISION`` for the real dimensions, which a benchmark can use
to get a same-cost twin of the real model without downloading it.

Facts baked in here (checked against the vendored llama.cpp of llama-cpp-python 0.3.36):

* RANK pooling (``qwen3vl.pooling_type = 4``) for the ``qwen3vl`` arch takes the hidden state
  of the *last* token (causal model), after the final RMSNorm, multiplies it with
  ``cls.output.weight`` (2 x n_embd, rows = lm-head rows of "yes" and "no", in that order,
  as ``classifier.output_labels = ["yes", "no"]`` says) and applies a softmax.  The engine
  therefore gets ``n_cls_out = 2`` floats per sequence from ``llama_get_embeddings_seq``:
  ``[P(yes), P(no)]`` summing to 1 (no tanh, no bias).
* The text model's input embedding width is ``n_embd * (1 + n_deepstack_layers)``; mtmd's
  image embeddings have that width (main merger output + one slice per deepstack layer).
* ``gguf`` (the llama.cpp gguf-py package) and numpy are imported inside the functions, so
  importing this module costs nothing; ``gguf`` is only a test/bench dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "POOLING_LAST",
    "POOLING_RANK",
    "TOKEN_CONTROL",
    "TOKEN_NORMAL",
    "TOKEN_UNUSED",
    "TOKEN_USER_DEFINED",
    "QWEN3VL_2B_TEXT",
    "QWEN3VL_2B_VISION",
    "QWEN_SPECIAL_TOKENS",
    "QUANT_TEXT",
    "QUANT_TYPES",
    "TINY_TEXT",
    "TINY_VISION",
    "TextShape",
    "VisionShape",
    "Vocab",
    "byte_vocab",
    "bytes_to_unicode",
    "quantize",
    "qwen2_vocab_from_gguf",
    "read_gguf_kv",
    "write_mmproj",
    "write_text_model",
]

Role = Literal["embedding", "rank", "generative"]

# gguf TokenType values (gguf.TokenType), repeated here so Vocab needs no gguf import.
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5

# gguf PoolingType values
POOLING_LAST = 3
POOLING_RANK = 4

# The Qwen2-VL / Qwen3-VL special (CONTROL) tokens, in their real id order (151643..151656).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Added tokens of the real Qwen3 / Qwen3-VL tokenizer after <|video_pad|> (151657..151668).
# The "<|...|>" ones are CONTROL in a converted GGUF, the others USER_DEFINED.
_QWEN3_EXTRA_ADDED: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# What convert_hf_to_gguf.py bakes into a Qwen3 reranker as tokenizer.chat_template.rerank.
RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that "
    "answer the query\n<Query>: {query}\n<Document>: {document}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)


# ----------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextShape:
    """Dimensions of the qwen3vl text decoder."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_deepstack: int
    rope_sections: tuple[int, int, int, int]
    rope_theta: float = 5_000_000.0
    rms_eps: float = 1e-6
    context_length: int = 262_144
    tied_embeddings: bool = True
    f16: bool = False  # store 2-D weights as F16 (norms stay F32)
    size_label: str = "1M"

    def __post_init__(self) -> None:
        if self.n_head % self.n_head_kv:
            raise ValueError("n_head must be a multiple of n_head_kv")
        if not 0 <= self.n_deepstack < self.n_layer:
            raise ValueError("n_deepstack must be in [0, n_layer)")
        if len(self.rope_sections) != 4 or sum(self.rope_sections) > self.head_dim // 2:
            raise ValueError("rope_sections: 4 ints summing to at most head_dim/2")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even")


@dataclass(frozen=True)
class VisionShape:
    """Dimensions of the Qwen3-VL vision tower (clip / qwen3vl_merger)."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    deepstack_layers: tuple[int, ...]
    patch_size: int = 16
    merge_size: int = 2
    n_pos_side: int = 48  # learned position grid side: num_position_embeddings = side**2
    eps: float = 1e-6
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    f16: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 4:
            raise ValueError("vision head_dim must be an integer divisible by 4")
        if any(not 0 <= i < self.n_layer for i in self.deepstack_layers):
            raise ValueError("deepstack layer index out of range")
        if len(set(self.deepstack_layers)) != len(self.deepstack_layers):
            raise ValueError("duplicate deepstack layer index")

    @property
    def image_size(self) -> int:
        return self.n_pos_side * self.patch_size


# sections (3, 3, 2, 0) cover every rotary pair with the t/h/w interleave of llama.cpp's
# IMROPE, so for text tokens llama.cpp's rope equals the plain NEOX rope exactly.
TINY_TEXT = TextShape(
    n_layer=4,
    n_embd=64,
    n_ff=128,
    n_head=4,
    n_head_kv=2,
    head_dim=16,
    n_deepstack=2,
    rope_sections=(3, 3, 2, 0),
    context_length=4096,
)

# The smallest text shape llama.cpp quantizes as it does a real model: K-quants need rows
# of 256 (n_embd, n_ff, n_head * head_dim), weight repacking needs row counts divisible
# by 8. Quantized with ``quantize`` for tests of the kernels users actually run.
QUANT_TEXT = TextShape(
    n_layer=2,
    n_embd=256,
    n_ff=512,
    n_head=4,
    n_head_kv=2,
    head_dim=64,
    n_deepstack=1,
    rope_sections=(11, 11, 10, 0),
    context_length=4096,
)

TINY_VISION = VisionShape(
    n_layer=2,
    n_embd=32,
    n_ff=64,
    n_head=2,
    deepstack_layers=(0, 1),
)

# Qwen3-VL-Embedding-2B / Qwen3-VL-Reranker-2B (Qwen3-VL-2B backbone).
QWEN3VL_2B_TEXT = TextShape(
    n_layer=28,
    n_embd=2048,
    n_ff=6144,
    n_head=16,
    n_head_kv=8,
    head_dim=128,
    n_deepstack=3,
    rope_sections=(24, 20, 20, 0),
    rope_theta=5_000_000.0,
    rms_eps=1e-6,
    context_length=262_144,
    tied_embeddings=True,
    f16=True,
    size_label="2B",
)

QWEN3VL_2B_VISION = VisionShape(
    n_layer=24,
    n_embd=1024,
    n_ff=4096,
    n_head=16,
    deepstack_layers=(5, 11, 17),
    patch_size=16,
    merge_size=2,
    n_pos_side=48,
    eps=1e-6,
    f16=True,
)


# ----------------------------------------------------------------------------------------
# vocabulary
# ----------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map (insertion order = GPT-2's)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@dataclass
class Vocab:
    """A byte-level BPE vocabulary as stored in a GGUF (``tokenizer.ggml.*``).

    ``tokens`` are in GPT-2 byte-to-unicode form (a space is ``Ġ``), ``merges`` are
    ``"left right"`` strings in rank order, ``token_types`` are gguf TokenType values
    (1 normal, 3 control, 4 user-defined, 5 unused).
    """

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    pad_id: int
    pre: str = "qwen2"
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.token_types):
            raise ValueError("tokens and token_types differ in length")
        self._index = {}
        for i, t in enumerate(self.tokens):
            self._index.setdefault(t, i)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def id_of(self, token: str) -> int:
        """Id of a token given in its stored (byte-unicode) form, e.g. ``"Ġthe"``."""
        return self._index[token]

    def get(self, token: str) -> int | None:
        return self._index.get(token)

    def text_token_id(self, text: str) -> int:
        """Id of the single token whose bytes are ``text`` (e.g. ``"yes"``, ``" the"``)."""
        enc = bytes_to_unicode()
        return self._index["".join(enc[b] for b in text.encode("utf-8"))]

    def special_tokens(self) -> dict[str, int]:
        """CONTROL and USER_DEFINED tokens (the ones split out of text before BPE)."""
        return {
            t: i
            for i, (t, ty) in enumerate(zip(self.tokens, self.token_types, strict=True))
            if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
        }


# Words that must come out as single tokens from byte_vocab() (space = leading "Ġ").
_BYTE_VOCAB_WORDS: tuple[str, ...] = (
    "yes",
    "no",
    " yes",
    " no",
    "th",
    "the",
    " the",
    "The",
    " a",
    "in",
    " in",
    "an",
    " an",
    "and",
    " and",
    "er",
    "on",
    " on",
    "is",
    " is",
    "of",
    " of",
    "to",
    " to",
    "it",
    " it",
    "ing",
    "at",
    "re",
    "en",
    "or",
    "es",
    "ed",
    " s",
    " c",
    " w",
    " f",
    " p",
    " b",
    " m",
    " cat",
    " dog",
    " photo",
    " file",
    " image",
    " text",
    "\n\n",
    "  ",
    "user",
    "system",
    "assistant",
    "Query",
    "Document",
    "Instruct",
    "Represent",
)


def _bpe_merge(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
    return parts


def byte_vocab(words: Sequence[str] = _BYTE_VOCAB_WORDS) -> Vocab:
    """A small Qwen-like byte-level BPE vocabulary.

    Ids: 0..255 the byte tokens (GPT-2 order), then one token per merge (so every entry in
    ``words`` is a single token, e.g. ``yes``, ``no``, `` the``), then the Qwen special tokens
    ``<|endoftext|>`` .. ``<|video_pad|>`` as CONTROL tokens.  Like the real Qwen3-VL GGUFs:
    bos = pad = ``<|endoftext|>``, eos = ``<|im_end|>``.
    """
    enc = bytes_to_unicode()
    tokens = [enc[b] for b in enc]  # GPT-2 insertion order
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    known = set(tokens)
    for w in words:
        parts = _bpe_merge([enc[b] for b in w.encode("utf-8")], ranks)
        while len(parts) > 1:
            a, b = parts[0], parts[1]
            ranks[(a, b)] = len(merges)
            merges.append(f"{a} {b}")
            if a + b not in known:
                known.add(a + b)
                tokens.append(a + b)
            parts = [a + b] + parts[2:]
    types = [TOKEN_NORMAL] * len(tokens)
    first_special = len(tokens)
    tokens += list(QWEN_SPECIAL_TOKENS)
    types += [TOKEN_CONTROL] * len(QWEN_SPECIAL_TOKENS)
    endoftext = first_special
    im_end = first_special + 2
    return Vocab(tokens, types, merges, bos_id=endoftext, eos_id=im_end, pad_id=endoftext)


def qwen2_vocab_from_gguf(path: str | Path, *, qwen3_added: bool = True) -> Vocab:
    """Load the real Qwen2 BPE vocabulary (151936 entries) from a vocab-only GGUF.

    ``path`` is e.g. ``vendor/llama.cpp/models/ggml-vocab-qwen2.gguf`` of the llama-cpp-python
    sdist.  That file has ``[PADnnnnn]`` placeholders after ``<|im_end|>``; with
    ``qwen3_added`` (default) ids 151646..151668 are replaced by the real Qwen3-VL added tokens
    (``<|object_ref_start|>`` .. ``<|video_pad|>``, ``<tool_call>`` .. ``</think>``) with the
    types a converted Qwen3-VL GGUF has, so the result matches Qwen3-VL's tokenizer.
    """
    kv = read_gguf_kv(
        path, ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    )
    tokens = [str(t) for t in kv["tokenizer.ggml.tokens"]]
    types = [int(t) for t in kv["tokenizer.ggml.token_type"]]
    merges = [str(m) for m in kv["tokenizer.ggml.merges"]]
    if qwen3_added:
        base = tokens.index("<|endoftext|>")
        added = list(QWEN_SPECIAL_TOKENS[3:]) + list(_QWEN3_EXTRA_ADDED)
        for k, tok in enumerate(added):
            i = base + 3 + k
            tokens[i] = tok
            is_control = tok.startswith("<|") and tok.endswith("|>")
            types[i] = TOKEN_CONTROL if is_control else TOKEN_USER_DEFINED
        for i in range(base + 3 + len(added), len(tokens)):
            if tokens[i].startswith("[PAD"):
                types[i] = TOKEN_UNUSED
    endoftext = tokens.index("<|endoftext|>")
    im_end = tokens.index("<|im_end|>")
    return Vocab(tokens, types, merges, bos_id=endoftext, eos_id=im_end, pad_id=endoftext)


_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def read_gguf_kv(path: str | Path, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Read the metadata key/values of a GGUF file (no gguf package needed, fast on big vocabs).

    Returns ``{key: value}`` for ``keys`` (all keys if None); arrays become Python lists,
    strings are decoded as UTF-8.  Little-endian GGUF v2/v3 only.
    """
    import struct

    wanted = None if keys is None else set(keys)
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} not supported")
    off = 24

    def read_str(o: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, o)
        o += 8
        return data[o : o + n].decode("utf-8", errors="replace"), o + n

    def read_val(t: int, o: int, keep: bool) -> tuple[Any, int]:
        if t == 8:
            if not keep:
                (n,) = struct.unpack_from("<Q", data, o)
                return None, o + 8 + n
            return read_str(o)
        if t == 9:
            (et, n) = struct.unpack_from("<IQ", data, o)
            o += 12
            if et == 8:
                out = []
                for _ in range(n):
                    (ln,) = struct.unpack_from("<Q", data, o)
                    o += 8
                    if keep:
                        out.append(data[o : o + ln].decode("utf-8", errors="replace"))
                    o += ln
                return (out if keep else None), o
            if et == 9:
                raise ValueError("nested GGUF arrays are not supported")
            fmt = _GGUF_SCALARS[et]
            size = struct.calcsize(fmt)
            vals = list(struct.unpack_from("<" + fmt[1] * n, data, o)) if keep else None
            return vals, o + size * n
        fmt = _GGUF_SCALARS[t]
        (v,) = struct.unpack_from(fmt, data, o)
        return v, o + struct.calcsize(fmt)

    result: dict[str, Any] = {}
    for _ in range(n_kv):
        key, off = read_str(off)
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        keep = wanted is None or key in wanted
        val, off = read_val(t, off, keep)
        if keep:
            result[key] = val
    return result


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------

# A tensor to write: (name, numpy shape in torch/row-major order, kind, init_std or fill).
#   kind "mat": 2-D+ weight, F16 if the shape says so, normal(0, std)
#   kind "norm": 1-D norm weight (always F32), 1 + normal(0, std)
#   kind "bias": 1-D bias (always F32), normal(0, std)
#   kind "f32": weight forced to F32, normal(0, std)
_Spec = tuple[str, tuple[int, ...], str, float]


def _stream_write(
    writer: Any,
    specs: Sequence[_Spec],
    *,
    seed: int,
    f16: bool,
    override: Callable[[str, dict[str, np.ndarray]], np.ndarray | None] | None = None,
) -> None:
    """Register all tensor infos, then generate and write the tensors one at a time."""
    import numpy as np

    def dtype_of(kind: str) -> Any:
        return np.float16 if (f16 and kind == "mat") else np.float32

    for name, shape, kind, _ in specs:
        dt = np.dtype(dtype_of(kind))
        writer.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    rng = np.random.default_rng(seed)
    kept: dict[str, np.ndarray] = {}
    for name, shape, kind, std in specs:
        arr = override(name, kept) if override is not None else None
        if arr is None:
            arr = rng.standard_normal(size=shape, dtype=np.float32)
            arr *= np.float32(std)
            if kind == "norm":
                arr += np.float32(1.0)
        arr = np.ascontiguousarray(arr, dtype=dtype_of(kind))
        if name in ("token_embd.weight", "output.weight"):
            kept[name] = arr
        writer.write_tensor_data(arr)
        del arr
    writer.close()


def _general(
    writer: Any,
    *,
    name: str,
    basename: str,
    size_label: str,
    f16: bool,
    type_: str,
    description: str,
) -> None:
    writer.add_string("general.type", type_)
    writer.add_string("general.name", name)
    writer.add_string("general.basename", basename)
    writer.add_string("general.size_label", size_label)
    writer.add_string("general.description", description)
    writer.add_array("general.tags", ["synthetic", "test-model", "qwen3_vl"])
    writer.add_uint32("general.file_type", 1 if f16 else 0)  # MOSTLY_F16 / ALL_F32
    writer.add_uint32("general.quantization_version", 2)


def write_text_model(
    path: str | Path,
    *,
    role: Role = "embedding",
    seed: int = 0,
    shape: TextShape = TINY_TEXT,
    vocab: Vocab | None = None,
    name: str | None = None,
) -> Path:
    """Write a random-weight ``qwen3vl`` text GGUF and return its path.

    * ``role="embedding"``: like Qwen3-VL-Embedding (general.name "... Embedding",
      ``pooling_type = LAST``); the engine reads the last token's final-norm hidden state.
    * ``role="rank"``: like a correctly converted Qwen3-VL-Reranker: ``pooling_type = RANK``,
      ``classifier.output_labels = ["yes", "no"]``, ``cls.output.weight`` = the lm-head rows of
      ``yes`` and ``no`` (so RANK scores = softmax of the generative yes/no logits), and the
      ``tokenizer.chat_template.rerank`` template.
    * ``role="generative"``: a reranker-named plain causal LM (no rank head, no pooling key),
      i.e. what a "plain" conversion of a reranker looks like; score it via logits.

    The lm head is tied to ``token_embd`` unless ``shape.tied_embeddings`` is False.  Weights:
    token embeddings N(0, 0.25^2) (tied-head logits of a few units), projections
    N(0, 1/fan_in), norms 1 + N(0, 0.1^2): values stay O(1) and finite while every component
    visibly influences the output.
    """
    import gguf

    if role not in ("embedding", "rank", "generative"):
        raise ValueError(f"unknown role {role!r}")
    path = Path(path)
    vocab = vocab or byte_vocab()
    s = shape
    kind = "Embedding" if role == "embedding" else "Reranker"
    if name is None:
        name = f"Tiny Qwen3 VL {kind}" if s.size_label != "2B" else f"Synthetic Qwen3 VL {kind} 2B"
    basename = name.replace(" 2B", "").replace(" ", "-")

    w = gguf.GGUFWriter(str(path), "qwen3vl")
    _general(
        w,
        name=name,
        basename=basename,
        size_label=s.size_label,
        f16=s.f16,
        type_="model",
        description=f"random-weight {kind.lower()} test model (qwen3vl)",
    )
    a = "qwen3vl"
    w.add_uint32(f"{a}.block_count", s.n_layer)
    w.add_uint32(f"{a}.context_length", s.context_length)
    w.add_uint32(f"{a}.embedding_length", s.n_embd)
    w.add_uint32(f"{a}.feed_forward_length", s.n_ff)
    w.add_uint32(f"{a}.attention.head_count", s.n_head)
    w.add_uint32(f"{a}.attention.head_count_kv", s.n_head_kv)
    w.add_uint32(f"{a}.attention.key_length", s.head_dim)
    w.add_uint32(f"{a}.attention.value_length", s.head_dim)
    w.add_float32(f"{a}.rope.freq_base", float(s.rope_theta))
    w.add_array(f"{a}.rope.dimension_sections", [int(x) for x in s.rope_sections])
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", float(s.rms_eps))
    w.add_uint32(f"{a}.n_deepstack_layers", s.n_deepstack)
    if role == "embedding":
        w.add_uint32(f"{a}.pooling_type", POOLING_LAST)
    elif role == "rank":
        w.add_uint32(f"{a}.pooling_type", POOLING_RANK)
        w.add_array(f"{a}.classifier.output_labels", ["yes", "no"])

    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", vocab.pre)
    w.add_array("tokenizer.ggml.tokens", vocab.tokens)
    w.add_array("tokenizer.ggml.token_type", [int(t) for t in vocab.token_types])
    w.add_array("tokenizer.ggml.merges", vocab.merges)
    w.add_uint32("tokenizer.ggml.eos_token_id", vocab.eos_id)
    w.add_uint32("tokenizer.ggml.padding_token_id", vocab.pad_id)
    w.add_uint32("tokenizer.ggml.bos_token_id", vocab.bos_id)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_string("tokenizer.chat_template", CHATML_TEMPLATE)
    if role == "rank":
        w.add_string("tokenizer.chat_template.rerank", RERANK_TEMPLATE)
        w.add_array("tokenizer.chat_templates", ["rerank"])

    d, hd, ff = s.n_embd, s.head_dim, s.n_ff
    specs: list[_Spec] = [("token_embd.weight", (vocab.n_vocab, d), "mat", 0.25)]
    for i in range(s.n_layer):
        p = f"blk.{i}."
        specs += [
            (p + "attn_norm.weight", (d,), "norm", 0.1),
            (p + "attn_q.weight", (s.n_head * hd, d), "mat", d**-0.5),
            (p + "attn_k.weight", (s.n_head_kv * hd, d), "mat", d**-0.5),
            (p + "attn_v.weight", (s.n_head_kv * hd, d), "mat", d**-0.5),
            (p + "attn_output.weight", (d, s.n_head * hd), "mat", (s.n_head * hd) ** -0.5),
            (p + "attn_q_norm.weight", (hd,), "norm", 0.1),
            (p + "attn_k_norm.weight", (hd,), "norm", 0.1),
            (p + "ffn_norm.weight", (d,), "norm", 0.1),
            (p + "ffn_gate.weight", (ff, d), "mat", d**-0.5),
            (p + "ffn_up.weight", (ff, d), "mat", d**-0.5),
            (p + "ffn_down.weight", (d, ff), "mat", ff**-0.5),
        ]
    specs.append(("output_norm.weight", (d,), "norm", 0.1))
    if not s.tied_embeddings:
        specs.append(("output.weight", (vocab.n_vocab, d), "mat", d**-0.5))

    override = None
    if role == "rank":
        yes_id, no_id = vocab.text_token_id("yes"), vocab.text_token_id("no")
        specs.append(("cls.output.weight", (2, d), "f32", 0.0))

        def override(tname: str, kept: dict[str, np.ndarray]) -> np.ndarray | None:
            if tname != "cls.output.weight":
                return None
            head = kept.get("output.weight", kept["token_embd.weight"])
            return head[[yes_id, no_id]].astype("float32")

    _stream_write(w, specs, seed=seed, f16=s.f16, override=override)
    return path


# llama.cpp's file types (enum llama_ftype) for ``quantize``. None of these needs an
# importance matrix (llama.cpp asks for one only for IQ1/IQ2 and Q2_K_S).
QUANT_TYPES = {"F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_S": 14, "Q4_K_M": 15, "IQ4_NL": 25}


def quantize(src: str | Path, dst: str | Path, ftype: str = "Q4_K_M", threads: int = 0) -> Path:
    """Quantize a GGUF with llama.cpp's own ``llama_model_quantize`` (written beside ``dst``,
    then renamed, so ``dst`` is whole or absent). Returns ``dst``."""
    import ctypes
    import os

    import llama_cpp.llama_cpp as ll

    params = ll.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[ftype]
    params.nthread = threads
    dst = Path(dst)
    tmp = dst.with_suffix(".tmp")
    rc = ll.llama_model_quantize(os.fsencode(src), os.fsencode(tmp), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {src} to {ftype} failed ({rc})")
    os.replace(tmp, dst)
    return dst


def write_mmproj(
    path: str | Path,
    *,
    text_shape: TextShape = TINY_TEXT,
    seed: int = 0,
    shape: VisionShape = TINY_VISION,
    name: str | None = None,
) -> Path:
    """Write a random-weight Qwen3-VL vision projector (``clip``, ``qwen3vl_merger``).

    ``projection_dim`` is ``text_shape.n_embd`` and the deepstack layer count must equal
    ``text_shape.n_deepstack`` (mtmd checks that the image embedding width equals the text
    model's input width ``n_embd * (1 + n_deepstack)``).  ``v.position_embd.weight`` is F32.
    """
    import gguf

    v, t = shape, text_shape
    if len(v.deepstack_layers) != t.n_deepstack:
        raise ValueError(
            f"vision deepstack layers ({len(v.deepstack_layers)}) != text n_deepstack "
            f"({t.n_deepstack})"
        )
    path = Path(path)
    if name is None:
        name = "Tiny Qwen3 VL Embedding" if t.size_label != "2B" else "Synthetic Qwen3 VL 2B"
    w = gguf.GGUFWriter(str(path), "clip")
    _general(
        w,
        name=name,
        basename=name.replace(" ", "-"),
        size_label=t.size_label,
        f16=v.f16,
        type_="mmproj",
        description="random-weight Qwen3-VL vision projector",
    )
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "qwen3vl_merger")
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.projection_dim", t.n_embd)
    w.add_uint32("clip.vision.image_size", v.image_size)
    w.add_uint32("clip.vision.patch_size", v.patch_size)
    w.add_uint32("clip.vision.embedding_length", v.n_embd)
    w.add_uint32("clip.vision.feed_forward_length", v.n_ff)
    w.add_uint32("clip.vision.block_count", v.n_layer)
    w.add_uint32("clip.vision.attention.head_count", v.n_head)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", float(v.eps))
    w.add_array("clip.vision.image_mean", [float(x) for x in v.image_mean])
    w.add_array("clip.vision.image_std", [float(x) for x in v.image_std])
    w.add_uint32("clip.vision.spatial_merge_size", v.merge_size)
    w.add_array(
        "clip.vision.is_deepstack_layers", [i in v.deepstack_layers for i in range(v.n_layer)]
    )

    h, ff, ps = v.n_embd, v.n_ff, v.patch_size
    hm = h * v.merge_size * v.merge_size  # merged (2x2) feature width
    out = t.n_embd
    specs: list[_Spec] = [
        ("v.patch_embd.weight", (h, 3, ps, ps), "mat", (3 * ps * ps * 2) ** -0.5),
        ("v.patch_embd.weight.1", (h, 3, ps, ps), "mat", (3 * ps * ps * 2) ** -0.5),
        ("v.patch_embd.bias", (h,), "bias", 0.02),
        ("v.position_embd.weight", (v.n_pos_side * v.n_pos_side, h), "f32", 0.5),
    ]
    for i in range(v.n_layer):
        p = f"v.blk.{i}."
        specs += [
            (p + "ln1.weight", (h,), "norm", 0.1),
            (p + "ln1.bias", (h,), "bias", 0.02),
            (p + "attn_qkv.weight", (3 * h, h), "mat", h**-0.5),
            (p + "attn_qkv.bias", (3 * h,), "bias", 0.02),
            (p + "attn_out.weight", (h, h), "mat", h**-0.5),
            (p + "attn_out.bias", (h,), "bias", 0.02),
            (p + "ln2.weight", (h,), "norm", 0.1),
            (p + "ln2.bias", (h,), "bias", 0.02),
            (p + "ffn_up.weight", (ff, h), "mat", h**-0.5),
            (p + "ffn_up.bias", (ff,), "bias", 0.02),
            (p + "ffn_down.weight", (h, ff), "mat", ff**-0.5),
            (p + "ffn_down.bias", (h,), "bias", 0.02),
        ]
    for i in v.deepstack_layers:
        p = f"v.deepstack.{i}."
        specs += [
            (p + "norm.weight", (hm,), "norm", 0.1),
            (p + "norm.bias", (hm,), "bias", 0.02),
            (p + "fc1.weight", (hm, hm), "mat", hm**-0.5),
            (p + "fc1.bias", (hm,), "bias", 0.02),
            (p + "fc2.weight", (out, hm), "mat", hm**-0.5),
            (p + "fc2.bias", (out,), "bias", 0.02),
        ]
    specs += [
        ("v.post_ln.weight", (h,), "norm", 0.1),
        ("v.post_ln.bias", (h,), "bias", 0.02),
        ("mm.0.weight", (hm, hm), "mat", hm**-0.5),
        ("mm.0.bias", (hm,), "bias", 0.02),
        ("mm.2.weight", (out, hm), "mat", hm**-0.5),
        ("mm.2.bias", (out,), "bias", 0.02),
    ]
    _stream_write(w, specs, seed=seed, f16=v.f16)
    return path
