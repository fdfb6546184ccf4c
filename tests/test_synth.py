"""The synthetic GGUF models load and run in the real llama.cpp, and agree with the numpy
reference (tests/reference.py) on the text path."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as L
import llama_cpp.mtmd_cpp as M
import numpy as np
import pytest
import reference as R
from numeric import cosine

from launcher import synth

TEXTS = [
    "<|im_start|>user\nthe cat said yes, no<|im_end|>",
    "Hello world, it's 2024!  The dog\n\n ran.\tdone ",
    "yes",
    "<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n"
    "A photo of a cat<|im_end|>\n<|im_start|>assistant\n",
    "mixed 123 ünïcödé 日本語 <|vision_start|><|image_pad|><|vision_end|> '" + "x" * 40,
]


# ----------------------------------------------------------------------------------------
# low-level llama.cpp helpers
# ----------------------------------------------------------------------------------------


@L.llama_log_callback
def _silent(level: int, text: bytes, user: ctypes.c_void_p) -> None:  # pragma: no cover
    pass


def _load(path: Path) -> L.llama_model_p:
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = L.llama_model_load_from_file(str(path).encode(), mp)
    assert model, f"llama.cpp failed to load {path}"
    return model


def _context(model, *, embeddings: bool, pooling: int, n_ctx: int = 512):
    cp = L.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = n_ctx
    cp.n_ubatch = n_ctx
    cp.n_seq_max = 1
    cp.n_threads = 2
    cp.n_threads_batch = 2
    cp.embeddings = embeddings
    cp.pooling_type = pooling
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = L.llama_init_from_model(model, cp)
    assert ctx, "llama_init_from_model failed"
    return ctx


def _tokenize(model, text: str, *, parse_special: bool = True) -> list[int]:
    vocab = L.llama_model_get_vocab(model)
    raw = text.encode("utf-8")
    buf = (L.llama_token * (len(raw) + 8))()
    n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), False, parse_special)
    assert n >= 0
    return list(buf[:n])


def _decode(ctx, tokens: list[int]) -> None:
    L.llama_memory_clear(L.llama_get_memory(ctx), True)
    n = len(tokens)
    batch = L.llama_batch_init(n, 0, 1)
    try:
        batch.n_tokens = n
        for i, t in enumerate(tokens):
            batch.token[i] = t
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i == n - 1 else 0
        assert L.llama_decode(ctx, batch) == 0
    finally:
        L.llama_batch_free(batch)


def _seq_embedding(ctx, n: int) -> np.ndarray:
    ptr = L.llama_get_embeddings_seq(ctx, 0)
    assert ptr
    return np.ctypeslib.as_array(ptr, shape=(n,)).astype(np.float64)


def _last_logits(ctx, n_vocab: int) -> np.ndarray:
    ptr = L.llama_get_logits_ith(ctx, -1)
    assert ptr
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)


def _meta(model, key: str) -> str | None:
    buf = ctypes.create_string_buffer(512)
    n = L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return None if n < 0 else buf.value.decode()


# ----------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("synth")
    untied = replace(synth.TINY_TEXT, tied_embeddings=False)
    return {
        "embedding": synth.write_text_model(d / "emb.gguf", role="embedding", seed=1),
        "rank": synth.write_text_model(d / "rank.gguf", role="rank", seed=2),
        "generative": synth.write_text_model(d / "gen.gguf", role="generative", seed=3),
        "untied": synth.write_text_model(
            d / "untied.gguf", role="generative", seed=4, shape=untied
        ),
        "mmproj": synth.write_mmproj(d / "mmproj.gguf", seed=5),
    }


@pytest.fixture(scope="module")
def models(files: dict[str, Path]) -> Iterator[dict[str, Any]]:
    L.llama_backend_init()
    L.llama_log_set(_silent, None)
    loaded = {k: _load(p) for k, p in files.items() if k != "mmproj"}
    yield loaded
    for m in loaded.values():
        L.llama_model_free(m)


@pytest.fixture(scope="module")
def tok() -> R.BPETokenizer:
    return R.BPETokenizer(synth.byte_vocab())


# ----------------------------------------------------------------------------------------
# vocabulary / files
# ----------------------------------------------------------------------------------------


def test_byte_vocab_layout() -> None:
    v = synth.byte_vocab()
    assert v.tokens[:256] == list(synth.bytes_to_unicode().values())
    tk = R.BPETokenizer(v)
    for word in ("yes", "no", " the", "the", "th", " yes"):
        assert len(tk.encode(word)) == 1, word
    assert v.tokens[v.eos_id] == "<|im_end|>"
    assert v.tokens[v.bos_id] == v.tokens[v.pad_id] == "<|endoftext|>"
    specials = v.special_tokens()
    assert list(specials) == list(synth.QWEN_SPECIAL_TOKENS)
    assert all(v.token_types[i] == synth.TOKEN_CONTROL for i in specials.values())
    assert tk.decode(tk.encode(TEXTS[4])) == TEXTS[4]


def test_shape_validation() -> None:
    with pytest.raises(ValueError):
        replace(synth.TINY_TEXT, n_deepstack=synth.TINY_TEXT.n_layer)
    with pytest.raises(ValueError):
        replace(synth.TINY_TEXT, rope_sections=(8, 8, 8, 0))
    with pytest.raises(ValueError):
        replace(synth.TINY_VISION, n_embd=20, n_head=2)  # head_dim 10 is not divisible by 4
    with pytest.raises(ValueError):
        synth.write_mmproj(Path(os.devnull), text_shape=replace(synth.TINY_TEXT, n_deepstack=1))


def test_metadata_seen_by_llama_cpp(models: dict, files: dict[str, Path]) -> None:
    emb, rank, gen = models["embedding"], models["rank"], models["generative"]
    assert _meta(emb, "general.architecture") == "qwen3vl"
    assert "Embedding" in (_meta(emb, "general.name") or "")
    assert "Embedding" in (_meta(emb, "general.basename") or "")
    assert "Reranker" in (_meta(rank, "general.name") or "")
    assert "Reranker" in (_meta(gen, "general.name") or "")
    assert _meta(emb, "qwen3vl.pooling_type") == "3"
    assert _meta(rank, "qwen3vl.pooling_type") == "4"
    assert _meta(gen, "qwen3vl.pooling_type") is None
    assert L.llama_model_n_cls_out(rank) == 2
    assert [L.llama_model_cls_label(rank, i) for i in range(2)] == [b"yes", b"no"]
    assert L.llama_model_n_embd(emb) == synth.TINY_TEXT.n_embd
    assert L.llama_vocab_n_tokens(L.llama_model_get_vocab(emb)) == synth.byte_vocab().n_vocab


def test_tokenizer_matches_llama_cpp(models: dict, tok: R.BPETokenizer) -> None:
    emb = models["embedding"]
    for text in TEXTS:
        assert tok.encode(text) == _tokenize(emb, text), text
        assert tok.encode(text, parse_special=False) == _tokenize(emb, text, parse_special=False)


# ----------------------------------------------------------------------------------------
# numerics against the reference
# ----------------------------------------------------------------------------------------


def test_last_pooled_embedding_matches_reference(models: dict, files: dict, tok) -> None:
    ctx = _context(models["embedding"], embeddings=True, pooling=L.LLAMA_POOLING_TYPE_LAST)
    try:
        for text in TEXTS:
            ids = tok.encode(text)
            _decode(ctx, ids)
            got = _seq_embedding(ctx, synth.TINY_TEXT.n_embd)
            hid, _ = R.forward(files["embedding"], ids)
            assert np.isfinite(got).all()
            assert cosine(got, hid) > 0.9999, text
            # not L2-normalised by llama.cpp: the raw final-norm state, same scale
            assert np.linalg.norm(got) == pytest.approx(np.linalg.norm(hid), rel=1e-2)
        # the pooled state really depends on the whole sequence (attention works)
        a = R.forward(files["embedding"], tok.encode("the cat"))[0]
        b = R.forward(files["embedding"], tok.encode("a cat"))[0]
        assert cosine(a, b) < 0.999
    finally:
        L.llama_free(ctx)


@pytest.mark.parametrize("which", ["generative", "untied"])
def test_logits_match_reference(models: dict, files: dict, tok, which: str) -> None:
    n_vocab = synth.byte_vocab().n_vocab
    ctx = _context(models[which], embeddings=False, pooling=L.LLAMA_POOLING_TYPE_NONE)
    try:
        for text in TEXTS:
            ids = tok.encode(text)
            _decode(ctx, ids)
            got = _last_logits(ctx, n_vocab)
            _, ref = R.forward(files[which], ids)
            assert cosine(got, ref) > 0.9999, text
            assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
            assert int(got.argmax()) == int(ref.argmax())
    finally:
        L.llama_free(ctx)


def test_rank_scores_match_reference(models: dict, files: dict, tok) -> None:
    v = synth.byte_vocab()
    yes, no = v.text_token_id("yes"), v.text_token_id("no")
    rank_ctx = _context(models["rank"], embeddings=True, pooling=L.LLAMA_POOLING_TYPE_RANK)
    gen_ctx = _context(models["rank"], embeddings=False, pooling=L.LLAMA_POOLING_TYPE_NONE)
    try:
        seen = []
        for text in TEXTS:
            ids = tok.encode(text)
            _decode(rank_ctx, ids)
            got = _seq_embedding(rank_ctx, 2)  # n_cls_out floats: [P(yes), P(no)]
            ref = R.rank_scores(files["rank"], ids)
            assert got.sum() == pytest.approx(1.0, abs=1e-5)
            assert np.abs(got - ref).max() < 2e-3, text
            # the rank head is the lm-head rows of yes/no: same as softmax of those logits
            _decode(gen_ctx, ids)
            logits = _last_logits(gen_ctx, v.n_vocab)
            via_logits = R.softmax(np.array([logits[yes], logits[no]]))
            assert np.abs(got - via_logits).max() < 1e-4
            seen.append(got[0])
        assert max(seen) - min(seen) > 0.05  # scores are not constant
    finally:
        L.llama_free(rank_ctx)
        L.llama_free(gen_ctx)


# ----------------------------------------------------------------------------------------
# vision projector through mtmd
# ----------------------------------------------------------------------------------------


def _mtmd_embed(mctx, lctx, rgb: np.ndarray, prompt: str) -> tuple[np.ndarray, list]:
    ny, nx, _ = rgb.shape
    buf = (ctypes.c_uint8 * rgb.size).from_buffer_copy(np.ascontiguousarray(rgb).tobytes())
    bmp = M.mtmd_bitmap_init(nx, ny, buf)
    assert bmp
    chunks = M.mtmd_input_chunks_init()
    try:
        text = M.mtmd_input_text()
        raw = prompt.encode()
        text.text, text.text_len, text.add_special, text.parse_special = raw, len(raw), False, True
        bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bmp)
        assert M.mtmd_tokenize(mctx, chunks, ctypes.byref(text), bitmaps, 1) == 0
        desc: list[tuple[Any, ...]] = []
        for i in range(M.mtmd_input_chunks_size(chunks)):
            ch = M.mtmd_input_chunks_get(chunks, i)
            if M.mtmd_input_chunk_get_type(ch) == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                p = M.mtmd_input_chunk_get_tokens_text(ch, ctypes.byref(n))
                desc.append(("text", [p[j] for j in range(n.value)]))
            else:
                img = M.mtmd_input_chunk_get_tokens_image(ch)
                desc.append(
                    (
                        "image",
                        M.mtmd_image_tokens_get_n_tokens(img),
                        M.mtmd_image_tokens_get_nx(img),
                        M.mtmd_image_tokens_get_ny(img),
                    )
                )
        L.llama_memory_clear(L.llama_get_memory(lctx), True)
        n_past = L.llama_pos(0)
        rc = M.mtmd_helper_eval_chunks(mctx, lctx, chunks, 0, 0, 512, True, ctypes.byref(n_past))
        assert rc == 0
        return _seq_embedding(lctx, synth.TINY_TEXT.n_embd), desc
    finally:
        M.mtmd_input_chunks_free(chunks)
        M.mtmd_bitmap_free(bmp)


def test_mmproj_image_embedding(models: dict, files: dict) -> None:
    M.mtmd_log_set(_silent, None)
    M.mtmd_helper_log_set(_silent, None)
    params = M.mtmd_context_params_default()
    params.use_gpu = False
    params.warmup = False
    params.print_timings = False
    params.n_threads = 2
    params.image_min_tokens = 4
    params.image_max_tokens = 1800
    model = models["embedding"]
    mctx = M.mtmd_init_from_file(str(files["mmproj"]).encode(), model, params)
    assert mctx, "mtmd_init_from_file failed"
    lctx = _context(model, embeddings=True, pooling=L.LLAMA_POOLING_TYPE_LAST)
    try:
        assert M.mtmd_support_vision(mctx)
        v = synth.byte_vocab()
        prompt = f"<|im_start|>user\n{M.mtmd_default_marker().decode()}a photo<|im_end|>\n"
        rng = np.random.default_rng(0)
        img_a = rng.integers(0, 256, size=(96, 64, 3), dtype=np.uint8)  # 64 wide, 96 high
        img_b = rng.integers(0, 256, size=(96, 64, 3), dtype=np.uint8)
        ea, desc = _mtmd_embed(mctx, lctx, img_a, prompt)
        eb, _ = _mtmd_embed(mctx, lctx, img_b, prompt)
        assert np.isfinite(ea).all() and np.isfinite(eb).all()
        assert cosine(ea, eb) < 0.9999  # the image content matters
        kinds = [d[0] for d in desc]
        assert kinds == ["text", "image", "text"]
        # 64x96 px -> 2x3 merged 32x32 tokens; mtmd wraps it in vision_start / vision_end
        assert desc[1][1:] == (6, 2, 3)
        assert desc[0][1][-1] == v.id_of("<|vision_start|>")
        assert desc[2][1][0] == v.id_of("<|vision_end|>")
        # tiny images are scaled up to image_min_tokens
        _, desc_small = _mtmd_embed(mctx, lctx, img_a[:10, :10], prompt)
        assert desc_small[1][1] == 4
    finally:
        L.llama_free(lctx)
        M.mtmd_free(mctx)


# ----------------------------------------------------------------------------------------
# the real Qwen2 vocabulary (only where the llama-cpp-python sdist is unpacked)
# ----------------------------------------------------------------------------------------


def _qwen2_vocab_path() -> Path | None:
    env = os.environ.get("LAUNCHER_QWEN2_VOCAB")
    candidates = [Path(env)] if env else []
    pattern = "llama_cpp_python-*/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf"
    candidates += sorted(Path("/tmp/sdist").glob(pattern))
    return next((c for c in candidates if c.is_file()), None)


def test_reference_tokenizer_on_real_qwen2_vocab() -> None:
    path = _qwen2_vocab_path()
    if path is None:
        pytest.skip("ggml-vocab-qwen2.gguf not available (set LAUNCHER_QWEN2_VOCAB)")
    vocab = synth.qwen2_vocab_from_gguf(path)
    assert vocab.n_vocab == 151936
    assert vocab.text_token_id("yes") == 9693 and vocab.text_token_id("no") == 2152
    assert vocab.id_of("<|im_end|>") == 151645 == vocab.eos_id
    assert vocab.id_of("<|vision_start|>") == 151652
    assert vocab.id_of("<|image_pad|>") == 151655
    assert vocab.id_of("</think>") == 151668
    tk = R.BPETokenizer(vocab)
    inp = path.with_name(path.name + ".inp").read_text(encoding="utf-8")
    out = path.with_name(path.name + ".out").read_text(encoding="utf-8")
    cases = inp.split("\n__ggml_vocab_test__\n")
    expected = out.split("\n")[: len(cases)]
    assert len(cases) > 30
    for text, exp in zip(cases, expected, strict=True):
        want = [int(x) for x in exp.split()]
        assert tk.encode(text, parse_special=False) == want, repr(text)


def test_llama_cpp_imrope_for_text_tokens(tmp_path: Path, models: dict, tok) -> None:
    """llama.cpp's IMROPE feeds text tokens (p, p, p, 0): rotary pairs that no t/h/w section
    claims get the 4th position 0, i.e. are not rotated.  Made visible with a low theta."""
    shape = replace(synth.TINY_TEXT, rope_sections=(4, 2, 2, 0), rope_theta=100.0)
    path = synth.write_text_model(tmp_path / "rope.gguf", shape=shape, seed=6)
    model = _load(path)
    cp = L.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 256
    cp.n_threads = cp.n_threads_batch = 2
    cp.embeddings = True
    cp.pooling_type = L.LLAMA_POOLING_TYPE_LAST
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cp.type_k = cp.type_v = 0  # GGML_TYPE_F32 KV cache: agreement to float32 precision
    ctx = L.llama_init_from_model(model, cp)
    try:
        ids = tok.encode("the quick brown fox jumps over the lazy dog " * 3)
        _decode(ctx, ids)
        got = _seq_embedding(ctx, shape.n_embd)
        exact = R.forward(path, ids, rope="llama.cpp")[0]
        plain = R.forward(path, ids, rope="hf")[0]
        assert 1 - cosine(got, exact) < 1e-7  # float32 noise on any CPU: ~1e-10
        assert 1 - cosine(got, plain) > 1e-4
    finally:
        L.llama_free(ctx)
        L.llama_model_free(model)
