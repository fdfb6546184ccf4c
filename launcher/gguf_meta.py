"""A small, dependency-free reader for the header of a GGUF file (v2/v3, little-endian).

Only the key/value metadata and the tensor directory are read, never the tensor data,
so a 2 GB model is inspected in milliseconds. Large arrays (``tokenizer.ggml.tokens``,
``tokenizer.ggml.merges``, ...) are skipped and kept as :class:`SkippedArray` (type and
length only); small ones such as ``qwen3vl.rope.dimension_sections``,
``qwen3vl.classifier.output_labels`` or ``clip.vision.image_mean`` are kept as lists.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError, ModelNotFound, NotGGUF

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# Arrays longer than these are skipped (their length is kept), shorter ones are read.
MAX_NUMERIC_ARRAY = 4096
MAX_STRING_ARRAY = 64

# Sanity limits: a value above them means a damaged or hostile file, not a real model.
_MAX_KV = 1_000_000
_MAX_TENSORS = 10_000_000
_MAX_DIMS = 8

# GGUF value types -> (name, struct format or None for string/array).
_STRING, _ARRAY = 8, 9
_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    _STRING: ("string", None),
    _ARRAY: ("array", None),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class SkippedArray:
    """Stands in for an array too large to keep in memory (e.g. the tokenizer vocabulary)."""

    element_type: str
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class GGUFMeta:
    """What a GGUF header says about its file.

    ``header_bytes_hash`` is the sha256 of everything before the tensor data (magic, version,
    key/values and tensor directory): it changes whenever the metadata, the tensor names,
    shapes or quantization types change, so it identifies a model file without hashing GBs.
    """

    path: Path
    version: int
    tensor_count: int
    kv: dict[str, Any]
    header_bytes_hash: str
    file_size: int
    header_size: int
    tensor_names: tuple[str, ...] = field(default=(), repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)

    @property
    def architecture(self) -> str | None:
        arch = self.kv.get("general.architecture")
        return arch if isinstance(arch, str) else None


class _Truncated(Exception):
    pass


class _Reader:
    """Cursor over the mapped file; every read checks bounds."""

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated

    def u32(self) -> int:
        self.need(4)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u64(self) -> int:
        self.need(8)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def string(self) -> str:
        n = self.u64()
        self.need(n)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def scalar(self, vtype: int) -> Any:
        fmt = _TYPES[vtype][1]
        assert fmt is not None
        size = struct.calcsize(fmt)
        self.need(size)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        if vtype not in _TYPES:
            raise ValueError(f"unknown value type {vtype}")
        return self.scalar(vtype)

    def array(self) -> list[Any] | SkippedArray:
        etype = self.u32()
        count = self.u64()
        if etype not in _TYPES:
            raise ValueError(f"unknown array element type {etype}")
        name, fmt = _TYPES[etype]
        if fmt is not None:  # fixed-size elements: read or jump in O(1)
            size = struct.calcsize(fmt)
            self.need(count * size)
            if count > MAX_NUMERIC_ARRAY:
                self.pos += count * size
                return SkippedArray(name, count)
            values = list(struct.unpack_from(f"<{count}{fmt[1]}", self.buf, self.pos))
            self.pos += count * size
            return values
        if count > self.size:  # each element takes at least one byte
            raise _Truncated
        if etype == _STRING and count <= MAX_STRING_ARRAY:
            return [self.string() for _ in range(count)]
        if etype == _ARRAY and count <= MAX_STRING_ARRAY:
            return [self.array() for _ in range(count)]
        if etype == _STRING:
            self._skip_strings(count)
        else:
            for _ in range(count):
                self.array()
        return SkippedArray(name, count)

    def _skip_strings(self, count: int) -> None:
        # The hot loop (the vocabulary and merges: ~300k strings for Qwen3): locals only.
        unpack, buf, pos, size = _U64.unpack_from, self.buf, self.pos, self.size
        for _ in range(count):
            if pos + 8 > size:
                raise _Truncated
            pos += 8 + unpack(buf, pos)[0]
        if pos > size:
            raise _Truncated
        self.pos = pos


# (resolved path, size, mtime_ns) -> parsed header; headers do not change without the file.
_CACHE: dict[tuple[str, int, int], GGUFMeta] = {}
_CACHE_MAX = 64
_CACHE_LOCK = threading.Lock()


def read_metadata(path: str | os.PathLike[str]) -> GGUFMeta:
    """Read the GGUF header of ``path``.

    Raises ``ModelNotFound`` if there is no such file, ``NotGGUF`` if it is not a readable
    GGUF v2/v3 little-endian file, ``ModelError`` if it cannot be opened.
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ModelNotFound(f"model file not found: {p}") from None
    except OSError as err:
        raise ModelError(f"cannot read {p}: {err.strerror or err}") from None
    if not p.is_file():
        raise ModelNotFound(f"model file not found: {p} (not a file)")
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    meta = _parse(p, st.st_size)
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = meta
    return meta


def _parse(p: Path, size: int) -> GGUFMeta:
    if size < 24:
        raise NotGGUF(f"{p} is not a GGUF file (only {size} bytes)")
    try:
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse_buffer(p, buf, size)
    except (NotGGUF, ModelError):
        raise
    except OSError as err:
        raise ModelError(f"cannot read {p}: {err.strerror or err}") from None


def _parse_buffer(p: Path, buf: mmap.mmap, size: int) -> GGUFMeta:
    magic = bytes(buf[:4])
    if magic != MAGIC:
        raise NotGGUF(f"{p} is not a GGUF file (bad magic {magic!r})")
    r = _Reader(buf, size)
    r.pos = 4
    version = r.u32()
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFFFF == 0 and (version >> 24) in (1, 2, 3):
            raise NotGGUF(f"{p} is not a GGUF file this reader supports (big-endian GGUF)")
        raise NotGGUF(f"{p} is not a GGUF file this reader supports (GGUF version {version})")
    try:
        tensor_count = r.u64()
        kv_count = r.u64()
        if kv_count > _MAX_KV or tensor_count > _MAX_TENSORS:
            raise NotGGUF(
                f"{p} is not a GGUF file (implausible header: {kv_count} keys, "
                f"{tensor_count} tensors)"
            )
        kv: dict[str, Any] = {}
        for _ in range(kv_count):
            name = r.string()
            vtype = r.u32()
            kv[name] = r.value(vtype)
        names: list[str] = []
        for _ in range(tensor_count):
            names.append(r.string())
            n_dims = r.u32()
            if n_dims > _MAX_DIMS:
                raise ValueError(f"tensor {names[-1]!r} has {n_dims} dimensions")
            r.need(8 * n_dims + 12)
            r.pos += 8 * n_dims + 12  # dims, ggml type (u32), data offset (u64)
    except _Truncated:
        raise NotGGUF(f"{p} is not a GGUF file (truncated header)") from None
    except (ValueError, struct.error) as err:
        raise NotGGUF(f"{p} is not a GGUF file (damaged header: {err})") from None
    digest = hashlib.sha256(buf[: r.pos]).hexdigest()
    return GGUFMeta(
        path=p,
        version=version,
        tensor_count=tensor_count,
        kv=kv,
        header_bytes_hash=digest,
        file_size=size,
        header_size=r.pos,
        tensor_names=tuple(names),
    )
