"""llama.cpp's ``llama-server``: build it from the llama.cpp our llama-cpp-python vendors,
and run it the way ``--engine`` expects (for the tests, the benchmark and the manual).

The binary is built once per llama-cpp-python version and CMake options into
``~/.cache/launcher/llama-server/<version>-<options hash>/`` (``$LAUNCHER_BUILD_CACHE``
moves it; ``$LAUNCHER_LLAMA_SERVER`` names a binary to use instead). Parallel builds wait
on a lock. The sources come from the llama-cpp-python sdist on PyPI (``pip download``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import LauncherError

BINARY_ENV = "LAUNCHER_LLAMA_SERVER"
CACHE_ENV = "LAUNCHER_BUILD_CACHE"
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
)
CTX_PER_SLOT = 8192  # the official MAX_LENGTH: every input fits a slot whole


class BuildUnavailable(LauncherError):
    """llama-server cannot be built here (no cmake or compiler, no network for the sdist)."""


def llama_cpp_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def build_dir(version: str | None = None) -> Path:
    """Where the binary for this llama-cpp-python version and CMAKE_OPTIONS lives."""
    version = version or llama_cpp_version()
    key = hashlib.sha256("\n".join(CMAKE_OPTIONS).encode()).hexdigest()[:10]
    base = os.environ.get(CACHE_ENV)
    if base:
        root = Path(base).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("launcher")) / "llama-server"
    return root / f"{version}-{key}"


def missing_tools() -> list[str]:
    """Build tools that are not on PATH (empty when a build can be tried)."""
    need = ["cmake", "c++" if shutil.which("c++") else "g++"]
    return [t for t in need if shutil.which(t) is None]


def server_binary(*, build: bool = True, log: Path | None = None) -> Path:
    """The llama-server binary: ``$LAUNCHER_LLAMA_SERVER``, else the cached build, else
    (``build``) built now, which takes a while (tens of minutes on 2 cores)."""
    given = os.environ.get(BINARY_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise BuildUnavailable(f"${BINARY_ENV} names {path}, which does not exist")
        return path
    folder = build_dir()
    binary = folder / "llama-server"
    if binary.is_file():
        return binary
    if not build:
        raise BuildUnavailable(f"llama-server is not built yet ({binary})")
    missing = missing_tools()
    if missing:
        raise BuildUnavailable(f"cannot build llama-server: {', '.join(missing)} not found")
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        if not binary.is_file():  # another process may have built it while we waited
            _build(folder, binary, log or folder / "build.log")
    return binary


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(folder: Path, binary: Path, log: Path) -> None:
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="llama-server-", dir=folder) as tmp,
        open(log, "w") as out,
    ):
        work = Path(tmp)
        version = llama_cpp_version()
        pip = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}"]
        pip += ["--no-binary", ":all:", "--no-deps", "-d", str(work)]
        _run(pip, out, "downloading the llama-cpp-python sdist")
        sdists = list(work.glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise BuildUnavailable("pip downloaded no llama-cpp-python sdist")
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(work, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(work, members=members)  # noqa: S202 - PyPI's own sdist
        (source,) = work.glob("llama_cpp_python-*/vendor/llama.cpp")
        build = work / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        _run(
            ["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_OPTIONS], out, "cmake"
        )
        jobs = str(os.cpu_count() or 2)
        _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], out, "build")
        (built,) = build.glob("bin/llama-server")
        shutil.copy2(built, binary.with_suffix(".tmp"))
        os.replace(binary.with_suffix(".tmp"), binary)
    (folder / "build.json").write_text(
        json.dumps(
            {
                "version": version,
                "options": CMAKE_OPTIONS,
                "seconds": round(time.monotonic() - started),
            }
        )
        + "\n"  # fmt: skip
    )


def _run(cmd: Sequence[str], out: IO[str], what: str) -> None:
    proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise BuildUnavailable(f"building llama-server failed at {what} (see the build log)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(
    binary: Path,
    model: Path,
    mmproj: Path | None = None,
    *,
    port: int,
    parallel: int = 1,
    threads: int | None = None,
    ctx_per_slot: int = CTX_PER_SLOT,
    repack: bool = True,
) -> list[str]:
    """The command line ``--engine`` expects: embeddings with LAST pooling, every slot holds
    a whole input (batch = ubatch = slot context), images taken at the size we send.
    ``repack=False`` adds ``--no-repack`` (no extra buffer types: see
    ``native.resolve_extra_bufts``)."""
    cmd = [
        str(binary), "-m", str(model), "--embeddings", "--pooling", "last",
        "--host", "127.0.0.1", "--port", str(port), "--parallel", str(parallel),
        "-c", str(ctx_per_slot * parallel), "-b", str(ctx_per_slot), "-ub", str(ctx_per_slot),
        "--image-min-tokens", "4", "--image-max-tokens", "1800", "--no-webui",
    ]  # fmt: skip
    if mmproj is not None:
        cmd += ["--mmproj", str(mmproj)]
    if threads:
        cmd += ["-t", str(threads)]
    if not repack:
        cmd.append("--no-repack")
    return cmd


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the thread that started it ends (a crashed
    test run or benchmark leaves no server behind); start it from a long-lived thread."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class LlamaServer:
    """A running llama-server on 127.0.0.1 (``stop`` ends it)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    command: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    model: Path,
    mmproj: Path | None = None,
    *,
    binary: Path | None = None,
    port: int | None = None,
    parallel: int = 1,
    threads: int | None = None,
    ctx_per_slot: int = CTX_PER_SLOT,
    log: Path,
    ready_seconds: float = 300.0,
    repack: bool | None = None,
) -> LlamaServer:
    """Start llama-server and wait until it answers /health (raises with its log's tail).
    ``repack`` None: the decision launcher makes for this model in-process (off where the
    AMX path would crash, and for Q4_K models on AVX-512, where plain kernels are faster)."""
    from ..native import model_ftype, resolve_extra_bufts

    binary = binary or server_binary()
    port = port or free_port()
    if repack is None:
        repack = resolve_extra_bufts(ftype=model_ftype(model)).on
    cmd = server_command(
        binary, model, mmproj, port=port, parallel=parallel, threads=threads,
        ctx_per_slot=ctx_per_slot, repack=repack,
    )  # fmt: skip
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    server = LlamaServer(proc, port, log, cmd)
    deadline = time.monotonic() + ready_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise LauncherError(f"llama-server exited ({proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    server.stop()
    raise LauncherError(f"llama-server did not become ready in {ready_seconds:.0f} s (log: {log})")
