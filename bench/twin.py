"""The benchmark's "shape twin" of Qwen3-VL-Embedding-2B and -Reranker-2B.

Random weights in the real dimensions (28 layers, hidden 2048, ...; vision 24 layers,
hidden 1024, ...) with the real Qwen2 tokenizer, so token counts and compute are realistic;
the text models are quantized to Q4_K_M with llama.cpp's own ``llama_model_quantize``, the
mmproj stays F16 (as published). Generated once into the cache dir, never committed.

    python bench/twin.py            # build (or reuse) and print the paths
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from launcher import paths, synth

VOCAB_ENV = "LAUNCHER_QWEN2_VOCAB"


@dataclass(frozen=True)
class Twin:
    embedding: Path
    mmproj: Path
    reranker: Path


def qwen2_vocab_file() -> Path:
    """``models/ggml-vocab-qwen2.gguf`` from llama.cpp's source tree, as shipped inside the
    llama-cpp-python sdist (downloaded from PyPI when not given by $LAUNCHER_QWEN2_VOCAB)."""
    if os.environ.get(VOCAB_ENV):
        return Path(os.environ[VOCAB_ENV])
    target = paths.cache_dir() / "bench" / "ggml-vocab-qwen2.gguf"
    if target.exists():
        return target
    import subprocess
    import tarfile
    import tempfile

    import llama_cpp

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", f"llama-cpp-python=={llama_cpp.__version__}", "-d", tmp],
            check=True,
        )  # fmt: skip
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(
                m for m in tar.getmembers() if m.name.endswith("models/ggml-vocab-qwen2.gguf")
            )
            data = tar.extractfile(member)
            assert data is not None
            paths.ensure(target.parent)
            target.write_bytes(data.read())
    return target


def ensure_twin(folder: Path | None = None, *, log=print) -> Twin:  # type: ignore[no-untyped-def]
    folder = paths.ensure(folder or paths.cache_dir() / "bench")
    twin = Twin(
        embedding=folder / "twin-embedding-2b-Q4_K_M.gguf",
        mmproj=folder / "twin-mmproj-2b-F16.gguf",
        reranker=folder / "twin-reranker-2b-Q4_K_M.gguf",
    )
    vocab = None
    for role, out in (("embedding", twin.embedding), ("rank", twin.reranker)):
        if out.exists():
            continue
        vocab = vocab or synth.qwen2_vocab_from_gguf(qwen2_vocab_file())
        f16 = folder / f"twin-{role}-f16.gguf"
        started = time.monotonic()
        synth.write_text_model(f16, role=role, seed=7, shape=synth.QWEN3VL_2B_TEXT, vocab=vocab)  # type: ignore[arg-type]
        synth.quantize(f16, out, "Q4_K_M")
        f16.unlink()
        log(f"built {out.name} in {time.monotonic() - started:.0f} s")
    if not twin.mmproj.exists():
        started = time.monotonic()
        synth.write_mmproj(
            twin.mmproj, text_shape=synth.QWEN3VL_2B_TEXT, shape=synth.QWEN3VL_2B_VISION, seed=8
        )
        log(f"built {twin.mmproj.name} in {time.monotonic() - started:.0f} s")
    return twin


if __name__ == "__main__":
    t = ensure_twin()
    for name in ("embedding", "mmproj", "reranker"):
        p = getattr(t, name)
        print(f"{name:10} {p} ({p.stat().st_size / 1e9:.2f} GB)")
