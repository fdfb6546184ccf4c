"""Thin, guarded wrappers over llama.cpp's C API (``llama_cpp.llama_cpp``, ``mtmd_cpp``).

Everything that can make llama.cpp abort the process (a batch larger than ``n_batch``, a
sequence id past ``n_seq_max``, more tokens than a sequence's KV cells) is checked here in
Python first and raised as a typed error instead.
"""

from __future__ import annotations

import _thread
import collections
import ctypes
import functools
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import EngineError, ModelError

# llama.cpp's log lines, kept for error messages; printed only in verbose mode.
_LOG_LINES: collections.deque[str] = collections.deque(maxlen=200)
_log_state = {"verbose": False}
_log_lock = threading.Lock()
_LOG_CALLBACK: Any = None  # keep a reference: ctypes callbacks must outlive their use
INTERRUPT_AGAIN_S = 0.05  # see _on_log
# Below this many tokens, splitting off the last token costs more than the skipped
# vocabulary projection saves (bench/run.py).
LAST_ONLY_MIN = 48


def _on_log(level: int, text: bytes | None, _user: Any) -> None:
    try:
        line = (text or b"").decode("utf-8", "replace")
        _LOG_LINES.append(line)
        if _log_state["verbose"]:
            sys.stderr.write(line)
    except KeyboardInterrupt:
        # ctypes drops exceptions raised in a callback (with "Exception ignored" noise).
        # Ask for the interrupt again a moment later, from another thread: raised now, it
        # would land in this callback again; later, it lands in Python code once the
        # native call returns (or in a later callback, which asks again).
        timer = threading.Timer(INTERRUPT_AGAIN_S, _thread.interrupt_main)
        timer.daemon = True
        timer.start()


# Ctrl+C during a command: llama_decode stops between graph nodes once this byte is set.
# The abort callback is libc's ``strlen`` over it (true iff the byte is not zero): no
# Python runs per graph node (no GIL to take, no exception to lose in a callback).
_ABORT_FLAG = ctypes.create_string_buffer(2)
_abort_state: dict[str, Any] = {}


def request_abort() -> None:
    """Make every decode in this process stop early (its batch fails): for Ctrl+C only."""
    _ABORT_FLAG[0] = b"\x01"


def _abort_callback() -> Any:
    """The C abort callback, made once; None where no C library's strlen can be found."""
    if "callback" not in _abort_state:
        import llama_cpp.llama_cpp as ll

        try:
            libc = ctypes.CDLL(None) if os.name != "nt" else ctypes.cdll.msvcrt
            _abort_state["callback"] = ctypes.cast(libc.strlen, ll.ggml_abort_callback)
        except (OSError, AttributeError):
            _abort_state["callback"] = None
    return _abort_state["callback"]


def _watch_abort(ctx_ptr: Any) -> None:
    callback = _abort_callback()
    if callback is not None:
        _backend().llama_set_abort_callback(ctx_ptr, callback, ctypes.addressof(_ABORT_FLAG))


def set_verbose(verbose: bool) -> None:
    """Route llama.cpp and mtmd logs: silent (kept for errors) unless ``verbose``."""
    global _LOG_CALLBACK
    with _log_lock:
        _log_state["verbose"] = verbose
        import llama_cpp.llama_cpp as ll
        import llama_cpp.mtmd_cpp as mt

        # Set again each time: other code in the process may have replaced the callback,
        # and error messages need these lines.
        if _LOG_CALLBACK is None:
            _LOG_CALLBACK = ll.llama_log_callback(_on_log)
        ll.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        mt.mtmd_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        mt.mtmd_helper_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def recent_log(n: int = 3, *, errors_only: bool = True) -> str:
    """The last llama.cpp log lines (error-looking ones first), for error messages."""
    lines = [ln.strip() for ln in _LOG_LINES if ln.strip()]
    if errors_only:
        picked = [ln for ln in lines if any(w in ln.lower() for w in ("error", "fail", "invalid"))]
        lines = picked or lines
    return " | ".join(lines[-n:])


def physical_cores() -> int:
    """Physical CPU cores (llama.cpp gains nothing from hyper-threads); at least 1."""
    try:
        cores: set[tuple[str, str]] = set()
        phys = core = ""
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key and (phys or core):
                    cores.add((phys, core))
                    phys = core = ""
        if phys or core:
            cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    count = os.cpu_count() or 1
    return max(1, count // 2) if count > 2 else count


# -- extra buffer types (weight repacking, AMX) -------------------------------------------
#
# llama.cpp can place weights in "extra" CPU buffer types: CPU_REPACK (Q4_0, Q4_K, IQ4_NL...
# rearranged for AVX2/AVX-512/NEON kernels) and, in a build made on a CPU with AMX, the AMX
# buffer, whose matmul kills the process with SIGILL on worker threads (tilezero without
# the thread's own XTILEDATA permission; ggml-org/llama.cpp PR #26954). That case turns them
# off, and so does a Q4_K model on a CPU with AVX-512, where the plain kernels are faster
# (``repack_slower``); elsewhere repacking stays. ``use_extra_bufts`` is the finest switch
# the API has: a tensor override can pick CPU_REPACK per tensor, but forcing it onto a
# tensor it cannot repack aborts.

AMX_PR = "ggml-org/llama.cpp PR #26954"
# The first llama-cpp-python whose llama.cpp contains that fix; set it then and the guard
# lifts for that version and later ones (None: no fixed release yet).
AMX_FIXED_IN: str | None = None


@dataclass(frozen=True)
class ExtraBufts:
    """Whether models load with llama.cpp's extra CPU buffer types, and why."""

    on: bool
    why: str

    def describe(self) -> str:
        return f"{'on' if self.on else 'off'} ({self.why})"


def build_features(system_info: str) -> frozenset[str]:
    """The features llama.cpp's ``llama_print_system_info`` reports as ``NAME = 1``."""
    return frozenset(re.findall(r"([A-Za-z0-9_]+) = 1\b", system_info))


def parse_cpu_flags(cpuinfo: str) -> frozenset[str] | None:
    """The CPU flags of the first ``flags`` line of a /proc/cpuinfo text (None if absent)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def amx_would_run(system_info: str, cpu_flags: frozenset[str] | None) -> bool:
    """True when llama.cpp would use its AMX matmul: the build has ``AMX_INT8 = 1`` and the
    CPU advertises AMX. Unknown CPU flags (no /proc/cpuinfo) count as AMX: such a build
    was made for an AMX CPU, and the guard costs speed, never correctness."""
    if "AMX_INT8" not in build_features(system_info):
        return False
    return cpu_flags is None or bool({"amx_int8", "amx_tile"} & cpu_flags)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def amx_fixed(version: str, fixed_in: str | None) -> bool:
    """Whether llama-cpp-python ``version`` has the AMX fix, first released in ``fixed_in``
    (``AMX_FIXED_IN``; None: not yet)."""
    return fixed_in is not None and _version(version) >= _version(fixed_in)


def amx_crash_risk(system_info: str, cpu_flags: frozenset[str] | None, version: str) -> bool:
    """llama.cpp's AMX path would run, and llama-cpp-python ``version`` lacks the fix."""
    return amx_would_run(system_info, cpu_flags) and not amx_fixed(version, AMX_FIXED_IN)


# Model file types (general.file_type, enum llama_ftype) whose weights are mostly Q4_K.
Q4_K_FTYPES = {14: "Q4_K_S", 15: "Q4_K_M"}


def repack_slower(system_info: str, cpu_flags: frozenset[str] | None, ftype: int | None) -> bool:
    """A Q4_K model on a CPU with AVX-512 (and a build using it): there llama.cpp's plain
    Q4_K kernels decode faster than its repacked ones (bench/run.py sections a and q, AMD
    EPYC with AVX-512 VNNI: Q4_K_M 1.46x faster plain), while Q4_0 and IQ4_NL gain from
    repacking on the same CPU, so only these file types turn it off."""
    if ftype not in Q4_K_FTYPES or "AVX512" not in build_features(system_info):
        return False
    return cpu_flags is None or "avx512f" in cpu_flags


def decide_extra_bufts(
    setting: bool | None,
    source: str,
    system_info: str,
    cpu_flags: frozenset[str] | None,
    version: str,
    ftype: int | None = None,
) -> ExtraBufts:
    """Extra buffer types for a forced ``setting`` (True/False, from ``source``) or, for
    None, automatically: on, unless llama.cpp's AMX path would run and crash, or the model
    (of file type ``ftype``) decodes faster without them on this CPU."""
    risky = amx_crash_risk(system_info, cpu_flags, version)
    if setting is not None:
        warn = f"; AMX may crash, see {AMX_PR}" if setting and risky else ""
        return ExtraBufts(setting, f"forced by {source}{warn}")
    if risky:
        return ExtraBufts(False, f"auto: AMX guard, {AMX_PR}")
    if repack_slower(system_info, cpu_flags, ftype):
        assert ftype is not None
        return ExtraBufts(False, f"auto: plain {Q4_K_FTYPES[ftype]} is faster with AVX-512")
    return ExtraBufts(True, "auto")


@functools.cache
def system_info() -> str:
    """llama.cpp's build features (``CPU : SSE3 = 1 | ... | AMX_INT8 = 1 | ...``)."""
    raw = _backend().llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """This CPU's flags from /proc/cpuinfo; None where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return parse_cpu_flags(fh.read())
    except OSError:
        return None


def llama_cpp_version() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


def amx_guarded() -> bool:
    """Whether extra buffer types would crash in this process (``amx_crash_risk`` here)."""
    return amx_crash_risk(system_info(), cpu_flags(), llama_cpp_version())


def model_ftype(path: Path) -> int | None:
    """A GGUF's ``general.file_type`` (enum llama_ftype); None if absent or unreadable
    (llama.cpp then says what is wrong with the file when it loads it)."""
    from .errors import LauncherError
    from .gguf_meta import read_metadata

    try:
        value = read_metadata(path).get("general.file_type")
    except LauncherError:
        return None
    return value if isinstance(value, int) else None


def _configured(env_name: str, parse: Callable[[str, str], Any], key: str) -> tuple[Any, str]:
    """A setting with no flag: ``$env_name`` (parsed) if set, else ``key`` of the config
    file; with the words that name where it came from (for messages)."""
    from . import config

    env = os.environ.get(env_name, "").strip()
    if env:
        return parse(env, f"${env_name}"), f"${env_name}"
    cfg = config.load_config()
    return getattr(cfg, key), f"{key} in {cfg.path}"


def resolve_extra_bufts(setting: bool | None = None, *, ftype: int | None = None) -> ExtraBufts:
    """The extra-buffer-types decision for a model of file type ``ftype`` in this process:
    ``setting`` if given, else $LAUNCHER_EXTRA_BUFFER_TYPES, else ``extra_buffer_types`` in
    the config file, else auto."""
    from . import config

    source = "the caller"
    if setting is None:
        setting, source = _configured(
            config.EXTRA_BUFFER_TYPES_ENV, config.parse_switch, "extra_buffer_types"
        )
    return decide_extra_bufts(
        setting, source, system_info(), cpu_flags(), llama_cpp_version(), ftype
    )


# -- device: where llama.cpp runs a model (GPU offload) ------------------------------------

GpuSetting = Literal["auto"] | int  # "auto", or n_gpu_layers to give llama.cpp (0: CPU only)


@dataclass(frozen=True)
class Device:
    """Where a model runs. ``layers`` is what llama.cpp gets as ``n_gpu_layers`` (-1: all,
    0: none); ``mmproj_gpu`` is mtmd's ``use_gpu``; ``kind`` is where the layers really
    run ("cpu" when the build cannot offload, whatever was asked); ``why`` says what chose it."""

    kind: Literal["cpu", "gpu"]
    layers: int
    mmproj_gpu: bool
    name: str
    why: str
    isa: str = ""  # the CPU's vector extension llama.cpp uses ("AVX-512")

    def describe(self, threads: int | None = None) -> str:
        """E.g. ``CPU: AMD EPYC (AVX-512, 2 threads)`` or ``GPU: Apple M2 (MTL0), all layers``."""
        named = f"{self.kind.upper()}: {self.name}" if self.name else self.kind.upper()
        if self.kind == "gpu":
            return f"{named}, {'all' if self.layers < 0 else self.layers} layers"
        detail = ", ".join(x for x in (self.isa, f"{threads} threads" if threads else "") if x)
        return named + (f" ({detail})" if detail else "")


@dataclass(frozen=True)
class BackendDevice:
    """One ggml backend device (``ggml_backend_dev_*``): its name ("CUDA0", "MTL0", "CPU"),
    description ("NVIDIA GeForce RTX 4070", "Apple M2", the CPU's model) and type."""

    name: str
    description: str
    type: int  # enum ggml_backend_dev_type: 0 CPU, 1 GPU, 2 integrated GPU, 3 accelerator

    @property
    def is_gpu(self) -> bool:
        return self.type in (1, 2)


def cpu_isa(build: frozenset[str], flags: frozenset[str] | None) -> str:
    """The widest vector extension both llama.cpp's build and this CPU have ("" if none)."""

    def has(feature: str, *cpu: str) -> bool:
        return feature in build and (flags is None or any(c in flags for c in cpu))

    for feature, cpu, label in (
        ("AMX_INT8", ("amx_int8",), "AMX"),
        ("AVX512", ("avx512f",), "AVX-512"),
        ("AVX2", ("avx2",), "AVX2"),
        ("NEON", ("neon", "asimd"), "NEON"),
        ("AVX", ("avx",), "AVX"),
    ):
        if has(feature, *cpu):
            return label
    return ""


def decide_device(
    setting: GpuSetting, source: str, offload: bool, devices: Sequence[BackendDevice], isa: str
) -> Device:
    """The device for ``setting`` (from ``source``) on a build that can (``offload``) or cannot
    offload to a GPU: ``auto`` = every layer and the mmproj on the GPU when it can, else the
    CPU; 0 = the CPU only; N = N layers given to llama.cpp as they are (the mmproj on the GPU
    when N > 0 and the build can offload)."""
    cpus = [d for d in devices if d.type == 0]
    cpu = cpus[0].description if cpus else ""
    gpu = " + ".join(f"{d.description or d.name} ({d.name})" for d in devices if d.is_gpu)
    if isinstance(setting, str):  # "auto"
        if offload:
            return Device("gpu", -1, True, gpu, "auto", isa)
        return Device("cpu", 0, False, cpu, "auto: this llama.cpp build has no GPU offload", isa)
    if setting == 0:
        return Device("cpu", 0, False, cpu, f"off ({source})", isa)
    if offload:
        return Device("gpu", setting, True, gpu, f"{setting} layers ({source})", isa)
    why = f"{source} asks for {setting} GPU layers, but this llama.cpp build has no GPU offload"
    return Device("cpu", setting, False, cpu, why, isa)


@functools.cache
def backend_devices() -> tuple[BackendDevice, ...]:
    """The devices llama.cpp's ggml registered (the CPU, and each GPU the build supports)."""
    _backend()
    try:
        from llama_cpp._ggml import libggml as g

        g.ggml_backend_dev_count.restype = ctypes.c_size_t
        g.ggml_backend_dev_get.restype = ctypes.c_void_p
        g.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for fn in (g.ggml_backend_dev_name, g.ggml_backend_dev_description):
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_void_p]
        g.ggml_backend_dev_type.restype = ctypes.c_int
        g.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        out = []
        for i in range(int(g.ggml_backend_dev_count())):
            dev = g.ggml_backend_dev_get(i)
            name = (g.ggml_backend_dev_name(dev) or b"").decode("utf-8", "replace")
            desc = (g.ggml_backend_dev_description(dev) or b"").decode("utf-8", "replace")
            out.append(BackendDevice(name, desc.strip(), int(g.ggml_backend_dev_type(dev))))
        return tuple(out)
    except (ImportError, AttributeError, OSError):  # bindings without ggml's device API
        return ()


def supports_gpu_offload() -> bool:
    return bool(_backend().llama_supports_gpu_offload())


def resolve_device(setting: GpuSetting | None = None) -> Device:
    """The device for this process: ``setting`` (``--gpu``) if given, else $LAUNCHER_GPU,
    else ``gpu`` in the config file, else auto."""
    from . import config

    source = "--gpu"
    if setting is None:
        setting, source = _configured(config.GPU_ENV, config.parse_gpu, "gpu")
    isa = cpu_isa(build_features(system_info()), cpu_flags())
    return decide_device(setting, source, supports_gpu_offload(), backend_devices(), isa)


_backend_ready = False


def _backend() -> Any:
    global _backend_ready
    import llama_cpp.llama_cpp as ll

    if not _backend_ready:
        set_verbose(_log_state["verbose"])
        ll.llama_backend_init()
        _backend_ready = True
    return ll


class Model:
    """A loaded GGUF language model (weights memory-mapped; layers on a GPU if asked).

    ``extra_bufts`` forces llama.cpp's extra buffer types on or off; None decides as
    ``resolve_extra_bufts`` does (``self.extra_bufts`` says what was used and why).
    ``gpu`` (``--gpu``) picks the device; None decides as ``resolve_device`` does."""

    def __init__(
        self, path: Path, *, extra_bufts: bool | None = None, gpu: GpuSetting | None = None
    ) -> None:
        ll = _backend()
        self.path = path
        self.extra_bufts = resolve_extra_bufts(extra_bufts, ftype=model_ftype(path))
        self.device = resolve_device(gpu)
        params = ll.llama_model_default_params()
        params.n_gpu_layers = self.device.layers
        params.use_extra_bufts = self.extra_bufts.on
        ptr = ll.llama_model_load_from_file(os.fsencode(path), params)
        if not ptr:
            raise ModelError(f"llama.cpp could not load {path}: {recent_log() or 'unknown error'}")
        self.ptr = ptr
        self.vocab = ll.llama_model_get_vocab(ptr)
        self.n_embd = int(ll.llama_model_n_embd(ptr))
        self.n_ctx_train = int(ll.llama_model_n_ctx_train(ptr))
        self.n_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        self.n_cls_out = int(ll.llama_model_n_cls_out(ptr))

    def meta(self, key: str) -> str | None:
        ll = _backend()
        buf = ctypes.create_string_buffer(512)
        n = ll.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def cls_labels(self) -> list[str]:
        ll = _backend()
        out = []
        for i in range(self.n_cls_out):
            label = ll.llama_model_cls_label(self.ptr, i)
            out.append(label.decode("utf-8", "replace") if label else "")
        return out

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Token ids of ``text``; ``special`` parses ``<|...|>`` markers as special tokens."""
        ll = _backend()
        data = text.encode("utf-8", "surrogatepass")
        if not data:
            return []
        cap = len(data) + 8
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, False, special)
        if n < 0:
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, False, special)
        if n < 0:
            raise EngineError(f"tokenization failed ({n})")
        return list(buf[:n])

    def token_to_piece(self, token: int) -> bytes:
        ll = _backend()
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)]

    def token_id(self, piece: str) -> int | None:
        """The id of a text that is exactly one token (e.g. ``yes``), else None."""
        ids = self.tokenize(piece, special=False)
        return ids[0] if len(ids) == 1 else None

    def close(self) -> None:
        if getattr(self, "ptr", None):
            _backend().llama_model_free(self.ptr)
            self.ptr = None


@dataclass(frozen=True)
class ContextShape:
    """KV layout: ``n_seq`` sequences with ``n_ctx_seq`` cells each."""

    n_seq: int
    n_ctx_seq: int


class Context:
    """A llama.cpp context: ``n_seq`` independent sequences of ``n_ctx_seq`` KV cells each."""

    def __init__(
        self,
        model: Model,
        shape: ContextShape,
        *,
        threads: int,
        embeddings: bool,
        pooling: int,
        n_ubatch: int = 512,
    ) -> None:
        ll = _backend()
        self.model = model
        self.shape = shape
        params = ll.llama_context_default_params()
        params.n_seq_max = shape.n_seq
        params.n_ctx = shape.n_seq * shape.n_ctx_seq
        params.n_batch = params.n_ctx  # one decode may carry every cell we own
        params.n_ubatch = min(n_ubatch, params.n_ctx)
        params.n_threads = threads
        params.n_threads_batch = threads
        params.embeddings = embeddings
        params.pooling_type = pooling
        params.kv_unified = False
        # CPU flash attention changes results with the batch layout (~1e-4): keep it off so
        # a vector does not depend on which other inputs shared its batch.
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        if model.device.layers == 0:
            # CPU only: llama.cpp would otherwise still copy weights to a GPU for large
            # batches (op offload) and keep the KV cache there.
            params.offload_kqv = False
            params.op_offload = False
        ptr = ll.llama_init_from_model(model.ptr, params)
        if not ptr:
            raise EngineError(
                f"llama.cpp could not create a context ({shape.n_seq} x {shape.n_ctx_seq} "
                f"cells): {recent_log() or 'out of memory?'}"
            )
        self.ptr = ptr
        _watch_abort(ptr)
        self.n_ctx = int(ll.llama_n_ctx(ptr))
        self.n_batch = int(ll.llama_n_batch(ptr))
        self.n_ctx_seq = self.n_ctx // shape.n_seq
        self.embeddings = embeddings
        self._outputs = True
        # The text tokens each sequence holds in its KV cells from position 0 (prefix reuse).
        self._cached: list[list[int]] = [[] for _ in range(shape.n_seq)]

    def clear(self) -> None:
        ll = _backend()
        ll.llama_memory_clear(ll.llama_get_memory(self.ptr), True)
        self._cached = [[] for _ in range(self.shape.n_seq)]

    def reuse(self, seq: int, tokens: Sequence[int]) -> int:
        """Keep the longest prefix of ``tokens`` that sequence ``seq`` already holds (the
        system turn and instruction, a reranker's query...) and drop the rest of its cells.
        Returns how many tokens need no decoding; at least the last one is always decoded,
        since its output is the one read."""
        ll = _backend()
        cached = self._cached[seq]
        limit = min(len(cached), len(tokens) - 1)
        n = 0
        while n < limit and cached[n] == tokens[n]:
            n += 1
        if not ll.llama_memory_seq_rm(ll.llama_get_memory(self.ptr), seq, n, -1):
            ll.llama_memory_seq_rm(ll.llama_get_memory(self.ptr), seq, -1, -1)
            n = 0
        self._cached[seq] = list(tokens[:n])
        return n

    def remember(self, seq: int, tokens: Sequence[int]) -> None:
        """Record that ``seq`` now holds ``tokens`` from position 0."""
        self._cached[seq] = list(tokens)

    def decode(
        self, seqs: Sequence[Sequence[int]], *, start: Sequence[int] | None = None
    ) -> list[int]:
        """Decode token sequences, one per sequence id 0..n-1, in one ``llama_decode``.

        Returns the batch index of each sequence's last token (its output row).
        """
        ll = _backend()
        if len(seqs) > self.shape.n_seq:
            raise EngineError(f"{len(seqs)} sequences but the context holds {self.shape.n_seq}")
        total = sum(len(s) for s in seqs)
        if total == 0:
            return []
        if total > self.n_batch:
            raise EngineError(f"batch of {total} tokens exceeds n_batch={self.n_batch}")
        starts = list(start) if start is not None else [0] * len(seqs)
        for s, toks in enumerate(seqs):
            if toks and starts[s] + len(toks) > self.n_ctx_seq:
                raise EngineError(
                    f"sequence of {starts[s] + len(toks)} tokens exceeds its {self.n_ctx_seq} cells"
                )
        batch = ll.llama_batch_init(total, 0, 1)
        try:
            last_rows: list[int] = []
            i = 0
            for s, toks in enumerate(seqs):
                for j, tok in enumerate(toks):
                    batch.token[i] = tok
                    batch.pos[i] = starts[s] + j
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = s
                    if self.embeddings:  # pooled embeddings need every token as an output
                        batch.logits[i] = 1 if self._outputs else 0
                    else:
                        batch.logits[i] = 1 if j == len(toks) - 1 else 0
                    i += 1
                last_rows.append(i - 1 if toks else -1)
            batch.n_tokens = total
            rc = ll.llama_decode(self.ptr, batch)
        finally:
            ll.llama_batch_free(batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc}): {recent_log() or 'no details'}")
        return last_rows

    def set_outputs(self, on: bool) -> None:
        """In an embeddings context, whether decodes produce outputs at all. Off, llama.cpp
        skips the vocabulary projection it otherwise runs for every token (about a fifth
        of the compute); the cells are filled the same."""
        if self.embeddings:
            _backend().llama_set_embeddings(self.ptr, on)
            self._outputs = on

    def decode_last(self, tokens: Sequence[int], start: int, *, seq: int = 0) -> int:
        """Decode one sequence's tokens where only the last one's output is read: all but
        the last without outputs, then the last alone. Returns the output row."""
        if self.embeddings and len(tokens) > LAST_ONLY_MIN:
            self.set_outputs(False)
            try:
                self._decode_one(tokens[:-1], start, seq)
            finally:
                self.set_outputs(True)
            return self._decode_one(tokens[-1:], start + len(tokens) - 1, seq)
        return self._decode_one(tokens, start, seq)

    def _decode_one(self, tokens: Sequence[int], start: int, seq: int) -> int:
        seqs: list[Sequence[int]] = [[] for _ in range(seq)] + [tokens]
        starts = [0] * seq + [start]
        return self.decode(seqs, start=starts)[seq]

    def seq_embedding(self, seq: int, n: int) -> np.ndarray:
        """The pooled output of sequence ``seq`` (n floats: n_embd, or n_cls_out for RANK)."""
        ll = _backend()
        ptr = ll.llama_get_embeddings_seq(self.ptr, seq)
        if not ptr:
            raise EngineError(f"no pooled embedding for sequence {seq}")
        return np.ctypeslib.as_array(ptr, shape=(n,)).astype(np.float32, copy=True)

    def logits(self, row: int) -> np.ndarray:
        ll = _backend()
        ptr = ll.llama_get_logits_ith(self.ptr, row)
        if not ptr:
            raise EngineError(f"no logits for output row {row}")
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).astype(np.float32, copy=True)

    def close(self) -> None:
        if getattr(self, "ptr", None):
            _backend().llama_free(self.ptr)
            self.ptr = None


class Vision:
    """mtmd (the vision projector) bound to a text model."""

    def __init__(
        self,
        path: Path,
        model: Model,
        *,
        threads: int,
        min_tokens: int,
        max_tokens: int,
        flash_attn: bool = True,
    ) -> None:
        import llama_cpp.llama_cpp as ll
        import llama_cpp.mtmd_cpp as mt

        _backend()
        self.path = path
        params = mt.mtmd_context_params_default()
        params.use_gpu = model.device.mmproj_gpu
        params.print_timings = False
        params.n_threads = threads
        params.warmup = False  # warmup costs seconds at load and changes nothing we compute
        params.image_min_tokens = min_tokens
        params.image_max_tokens = max_tokens
        # The vision encoder sees one image per pass (a fixed layout), so flash attention
        # gives the same output (1-cos 3e-7 measured) and a 256-token image encodes ~23 %
        # faster on the 2B twin (bench/run.py, row "lev"). Without warmup mtmd would
        # leave AUTO unresolved, i.e. off.
        params.flash_attn_type = (
            ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ptr = mt.mtmd_init_from_file(os.fsencode(path), model.ptr, params)
        if not ptr:
            raise ModelError(f"mtmd could not load {path}: {recent_log() or 'unknown error'}")
        self.ptr = ptr
        if not mt.mtmd_support_vision(ptr):
            self.close()
            raise ModelError(f"{path} has no vision encoder")

    def image_chunks(self, width: int, height: int, rgb: bytes) -> _Chunks:
        """Tokenize one image (mtmd wraps it in <|vision_start|>/<|vision_end|> itself)."""
        import llama_cpp.mtmd_cpp as mt

        if len(rgb) != width * height * 3:
            raise EngineError("image buffer size does not match its dimensions")
        data = (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb)
        bitmap = mt.mtmd_bitmap_init(width, height, data)
        if not bitmap:
            raise EngineError("mtmd could not create a bitmap")
        chunks = mt.mtmd_input_chunks_init()
        try:
            part = mt.mtmd_input_part(text=None, bitmap=bitmap)
            parts = (ctypes.POINTER(mt.mtmd_input_part) * 1)(ctypes.pointer(part))
            rc = mt.mtmd_tokenize_from_parts(self.ptr, chunks, parts, 1, False)
        finally:
            mt.mtmd_bitmap_free(bitmap)
        if rc != 0:
            mt.mtmd_input_chunks_free(chunks)
            raise EngineError(f"mtmd could not tokenize the image ({rc}): {recent_log()}")
        return _Chunks(chunks)

    def eval(
        self, ctx: Context, chunks: _Chunks, n_past: int, seq: int, *, logits_last: bool
    ) -> int:
        """Encode and decode image chunks at ``n_past``; returns the next position."""
        import llama_cpp.llama_cpp as ll
        import llama_cpp.mtmd_cpp as mt

        new_n_past = ll.llama_pos(0)
        rc = mt.mtmd_helper_eval_chunks(
            self.ptr,
            ctx.ptr,
            chunks.ptr,
            n_past,
            seq,
            ctx.n_batch,
            logits_last,
            ctypes.byref(new_n_past),
        )
        if rc != 0:
            raise EngineError(f"mtmd could not evaluate the image ({rc}): {recent_log()}")
        return int(new_n_past.value)

    def close(self) -> None:
        import llama_cpp.mtmd_cpp as mt

        if getattr(self, "ptr", None):
            mt.mtmd_free(self.ptr)
            self.ptr = None


class _Chunks:
    """Owned mtmd input chunks."""

    def __init__(self, ptr: Any) -> None:
        self.ptr = ptr

    @property
    def n_tokens(self) -> int:
        import llama_cpp.mtmd_cpp as mt

        return int(mt.mtmd_helper_get_n_tokens(self.ptr))

    def image_grid(self) -> tuple[int, int] | None:
        """(nx, ny) of the first image chunk, in merged tokens."""
        import llama_cpp.mtmd_cpp as mt

        for i in range(int(mt.mtmd_input_chunks_size(self.ptr))):
            chunk = mt.mtmd_input_chunks_get(self.ptr, i)
            if mt.mtmd_input_chunk_get_type(chunk) == mt.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                tokens = mt.mtmd_input_chunk_get_tokens_image(chunk)
                return int(mt.mtmd_image_tokens_get_nx(tokens)), int(
                    mt.mtmd_image_tokens_get_ny(tokens)
                )
        return None

    def free(self) -> None:
        import llama_cpp.mtmd_cpp as mt

        if self.ptr:
            mt.mtmd_input_chunks_free(self.ptr)
            self.ptr = None
