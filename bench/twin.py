"""The benchmark's "shape twin" of Qwen3-VL-Embedding-2B and -Reranker-2B.

Random weights in the real dimensions (28 layers, hidden 2048, ...; vision 24 layers,
hidden 1024, ...) with the real Qwen2 tokenizer, so token counts and compute are realistic;
the text models are quantized to Q4_K_M with llama.cpp's own ``llama_model_quantize``, the
mmproj stays F16 (as published). Generated once into the cache dir, never committed.

    python bench/twin.py            # build (or reuse) and print the paths
    python bench/twin.py --quants   # the embedding twin in F16 and each quantization of QUANTS
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


# The quantizations compared by bench/run.py section q (issue 12 item 5).
QUANTS = ("F16", "Q8_0", "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_NL")


def f16_twin(folder: Path, vocab=None, *, log=print) -> Path:  # type: ignore[no-untyped-def]
    """The embedding twin's F16 weights (seed 7: every quantization of the bench comes from
    these, the Q4_K_M of ``ensure_twin`` included). About 3.5 GB; kept once made."""
    out = folder / "twin-embedding-2b-F16.gguf"
    if not out.exists():
        started = time.monotonic()
        tmp = out.with_suffix(".part")
        vocab = vocab or synth.qwen2_vocab_from_gguf(qwen2_vocab_file())
        synth.write_text_model(
            tmp, role="embedding", seed=7, shape=synth.QWEN3VL_2B_TEXT, vocab=vocab
        )  # type: ignore[arg-type]
        tmp.replace(out)
        log(f"built {out.name} in {time.monotonic() - started:.0f} s")
    return out


def ensure_quants(folder: Path | None = None, quants=QUANTS, *, log=print) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The embedding twin in each of ``quants``, each made from the F16 twin by llama.cpp's
    own ``llama_model_quantize`` (cached beside the other twins)."""
    folder = paths.ensure(folder or paths.cache_dir() / "bench")
    f16 = f16_twin(folder, log=log)
    out = {"F16": f16}
    for q in quants:
        if q == "F16":
            continue
        target = folder / f"twin-embedding-2b-{q}.gguf"
        if not target.exists():
            started = time.monotonic()
            synth.quantize(f16, target, q)
            log(f"built {target.name} in {time.monotonic() - started:.0f} s")
        out[q] = target
    return {q: out[q] for q in quants}


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
    if sys.argv[1:] == ["--quants"]:
        for q, p in ensure_quants().items():
            print(f"{q:10} {p} ({p.stat().st_size / 1e9:.2f} GB)")
        raise SystemExit(0)
    t = ensure_twin()
    for name in ("embedding", "mmproj", "reranker"):
        p = getattr(t, name)
        print(f"{name:10} {p} ({p.stat().st_size / 1e9:.2f} GB)")
