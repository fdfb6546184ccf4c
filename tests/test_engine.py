"""The embedding engine on the real llama.cpp, with tiny generated Qwen3-VL models."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from numeric import DIFFERENT, assert_same_direction, cosine
from PIL import Image

from launcher import images
from launcher.embedder import Embedder
from launcher.errors import (
    ImageError,
    InputError,
    MmprojMismatch,
    MmprojRequired,
    ModelNotFound,
    NotGGUF,
    WrongArchitecture,
)
from launcher.inputs import EmbedInput


@pytest.fixture(scope="module")
def emb(tiny_models):
    with Embedder(tiny_models.embedding, tiny_models.mmproj, threads=2) as e:
        yield e


def picture(seed: int, size=(96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_unit_norm_float32_and_shape(emb):
    out = emb.embed(["hello", "a longer sentence about files on a disk", ""])
    assert out.dtype == np.float32 and out.shape == (3, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_deterministic(emb, tiny_models):
    a = emb.embed(["same text"])
    b = emb.embed(["same text"])  # the cached prefix is reused: same vector within float noise
    assert_same_direction(a, b)
    with (
        Embedder(tiny_models.embedding, threads=2) as fresh1,
        Embedder(tiny_models.embedding, threads=2) as fresh2,
    ):
        assert np.array_equal(fresh1.embed(["same text"]), fresh2.embed(["same text"]))


def test_prefix_reuse_equals_a_full_pass(tiny_models):
    items = [
        "first input",
        "first input, longer",
        EmbedInput(text="other instruction", instruction="Find code"),
        "",
        "first input",
        EmbedInput(text="caption", images=(picture(9),)),
        "after the image",
    ]
    with (
        Embedder(tiny_models.embedding, tiny_models.mmproj, threads=2) as cached,
        Embedder(tiny_models.embedding, tiny_models.mmproj, threads=2) as full,
    ):
        full.prefix_cache = False
        for item in items:  # one at a time, so each call can reuse the previous prefix
            assert_same_direction(cached.embed([item]), full.embed([item]))


def test_different_texts_differ(emb):
    a, b = emb.embed(["invoice for March", "holiday photos from Lisbon"])
    assert 1 - cosine(a, b) > 1e-3


def test_dims_truncate_then_renormalise(emb):
    full = emb.embed(["matryoshka"])[0]
    for dims in (32, 16, 8):
        short = emb.embed(["matryoshka"], dims=dims)[0]
        assert short.shape == (dims,)
        expected = full[:dims] / np.linalg.norm(full[:dims])
        assert_same_direction(short, expected)
        assert abs(float(np.linalg.norm(short)) - 1.0) < 1e-5


def test_dims_out_of_range(emb):
    with pytest.raises(Exception, match="dims must be between 1 and"):
        emb.embed(["x"], dims=emb.dim + 1)


def test_batched_equals_one_by_one(emb, monkeypatch):
    monkeypatch.setattr(emb, "batch_seqs", 8)
    texts = [f"text number {i} " + "word " * (i * 7) for i in range(11)] + ["", "x"]
    together = emb.embed(texts)
    for i, text in enumerate(texts):
        alone = emb.embed([text])[0]
        assert_same_direction(together[i], alone)


def test_each_vector_belongs_to_its_input(emb, monkeypatch):
    monkeypatch.setattr(emb, "batch_seqs", 8)
    texts = ["alpha", "beta gamma", "delta epsilon zeta", "eta"]
    forward = emb.embed(texts)
    backward = emb.embed(texts[::-1])[::-1]
    assert_same_direction(forward, backward)


def test_instruction_changes_the_vector(emb):
    a = emb.embed([EmbedInput(text="cat")])[0]
    b = emb.embed([EmbedInput(text="cat", instruction="Retrieve images of animals")])[0]
    assert 1 - cosine(a, b) > DIFFERENT
    # per-item instruction equals an engine whose default is that instruction
    c = emb.embed([EmbedInput(text="cat", instruction="Retrieve images of animals.")])[0]
    assert_same_direction(b, c)


def test_empty_input_is_the_text_NULL(emb):
    empty = emb.embed([EmbedInput()])[0]
    null = emb.embed(["NULL"])[0]
    assert_same_direction(empty, null)


def test_content_cannot_end_the_turn(emb):
    im_end = emb.model.tokenize("<|im_end|>", special=True)
    assert len(im_end) == 1
    from launcher import prompt

    parts = prompt.embedding_prompt("before <|im_end|> after", 0, None)
    runs = emb.tokenize_parts(parts, [])
    tokens = [t for r in runs for t in r]
    # only the template's two <|im_end|> are the special token; the file's is plain text
    assert tokens.count(im_end[0]) == 2
    a = emb.embed(["before <|im_end|> after"])[0]
    b = emb.embed(["before "])[0]
    assert 1 - cosine(a, b) > DIFFERENT


def test_image_from_path_bytes_and_pil_agree(emb, tmp_path):
    pic = picture(1)
    path = tmp_path / "p.png"
    pic.save(path)
    a, b, c = emb.embed([path, path.read_bytes(), pic])
    assert_same_direction(np.stack([a, a]), np.stack([b, c]))  # the same pixels
    np.testing.assert_allclose(np.linalg.norm(a), 1.0, rtol=1e-5)


def test_different_images_differ(emb):
    a, b = emb.embed([picture(1), picture(2)])
    assert 1 - cosine(a, b) > DIFFERENT


def test_image_and_text_differs_from_image_alone(emb):
    pic = picture(3)
    a = emb.embed([EmbedInput(images=(pic,))])[0]
    b = emb.embed([EmbedInput(text="a caption", images=(pic,))])[0]
    assert 1 - cosine(a, b) > DIFFERENT


def test_two_images_in_one_item(emb):
    one = emb.embed([EmbedInput(images=(picture(4),))])[0]
    two = emb.embed([EmbedInput(images=(picture(4), picture(5)))])[0]
    assert 1 - cosine(one, two) > DIFFERENT


def test_mtmd_keeps_our_image_size(emb):
    """mtmd must not resize a second time: its token grid is our size / 32."""
    vision = emb._vision_ctx()
    for w, h in [(96, 64), (64, 64), (160, 32), (128, 96)]:
        prepared = images.prepare_image(picture(0, (w, h)))
        chunks = vision.image_chunks(prepared.width, prepared.height, prepared.rgb)
        try:
            assert chunks.image_grid() == (prepared.width // 32, prepared.height // 32)
            assert chunks.n_tokens == prepared.tokens + 2  # + <|vision_start|>, <|vision_end|>
        finally:
            chunks.free()


def test_bad_input_in_a_batch_does_not_shift_the_others(emb, tmp_path, monkeypatch):
    monkeypatch.setattr(emb, "batch_seqs", 8)
    truncated = io.BytesIO()
    picture(6, (200, 200)).save(truncated, "JPEG")
    broken = truncated.getvalue()[:300]
    fake = tmp_path / "fake.png"
    fake.write_text("not a png")
    items = ["first text", broken, "second text", picture(7), fake, "third"]
    out = emb.embed_each(items)
    assert isinstance(out[1], ImageError) and "truncated" in str(out[1])
    assert isinstance(out[4], ImageError) and "not an image" in str(out[4])
    for i in (0, 2, 3, 5):
        assert isinstance(out[i], np.ndarray)
        alone = emb.embed([items[i]])[0]
        assert_same_direction(out[i], alone)
    with pytest.raises(ImageError):
        emb.embed(items)


def test_long_text_is_truncated_keeping_the_template(tiny_models, caplog):
    with Embedder(tiny_models.embedding, threads=2, max_tokens=64) as small:
        long_text = "word " * 500
        with caplog.at_level(logging.WARNING, logger="launcher"):
            v = small.embed([long_text])[0]
        assert "truncated" in caplog.text
        from launcher import prompt

        runs = small.tokenize_parts(prompt.embedding_prompt(long_text, 0, None), [])
        tokens = runs[0]
        assert len(tokens) == 64
        tail = small.model.tokenize("<|im_end|>\n<|im_start|>assistant\n", special=True)
        assert tokens[-len(tail) :] == tail
        assert np.isfinite(v).all()


def test_image_too_big_for_the_token_limit_is_an_input_error(tiny_models):
    with Embedder(tiny_models.embedding, tiny_models.mmproj, threads=2, max_tokens=40) as small:
        out = small.embed_each([picture(8, (320, 320)), "short"])
        assert isinstance(out[0], InputError) and "limit" in str(out[0])
        assert isinstance(out[1], np.ndarray)


def test_image_without_mmproj(tiny_models):
    with (
        Embedder(tiny_models.embedding, threads=2) as e,
        pytest.raises(MmprojRequired, match="mmproj"),
    ):
        e.embed([picture(1)])


def test_model_file_errors(tmp_path, tiny_models):
    with pytest.raises(ModelNotFound, match="not found"):
        Embedder(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file at all")
    with pytest.raises(NotGGUF, match="not a GGUF"):
        Embedder(junk)
    with pytest.raises(WrongArchitecture, match="'clip'.*qwen3vl"):
        Embedder(tiny_models.mmproj)


def test_mmproj_errors(tmp_path, tiny_models):
    with pytest.raises(MmprojMismatch, match="projects to"):
        Embedder(tiny_models.embedding, tiny_models.mmproj_other_width)
    with pytest.raises(WrongArchitecture, match="vision projector"):
        Embedder(tiny_models.embedding, tiny_models.embedding)


def test_last_token_only_output_equals_full_output(tiny_models, monkeypatch):
    """Decoding all but the last token without outputs (no vocabulary projection) gives
    the same vector as a decode where every token is an output."""
    from launcher import native

    long_text = "a long note about the budget and the garden " * 20
    pic = picture(11)
    items = [long_text, EmbedInput(text=long_text, images=(pic,))]
    with Embedder(tiny_models.embedding, tiny_models.mmproj, threads=2) as e:
        e.prefix_cache = False
        monkeypatch.setattr(native, "LAST_ONLY_MIN", 10**9)  # never split
        whole = [e.embed([x])[0] for x in items]
        monkeypatch.setattr(native, "LAST_ONLY_MIN", 1)  # always split
        split = [e.embed([x])[0] for x in items]
    assert_same_direction(np.stack(whole), np.stack(split))


def test_vision_flash_attention_gives_the_same_vectors(tiny_models, monkeypatch):
    """Flash attention in the vision encoder is a speed lever only: image embeddings match
    the plain attention path, for several image shapes."""
    import llama_cpp.llama_cpp as ll
    import llama_cpp.mtmd_cpp as mt

    seen = []
    real_init = mt.mtmd_init_from_file

    def init(path, model, params):  # records what mtmd was asked for
        seen.append(params.flash_attn_type)
        return real_init(path, model, params)

    monkeypatch.setattr(mt, "mtmd_init_from_file", init)
    pics = [picture(3, (64, 64)), picture(4, (96, 64)), picture(5, (40, 130))]
    items = [EmbedInput(images=(p,)) for p in pics] + [EmbedInput(text="a cat", images=(pics[0],))]
    out = {}
    for flash in (False, True):
        with Embedder(tiny_models.embedding, tiny_models.mmproj, threads=2) as e:
            e.vision_flash_attn = flash
            out[flash] = e.embed(items)
    assert seen == [ll.LLAMA_FLASH_ATTN_TYPE_DISABLED, ll.LLAMA_FLASH_ATTN_TYPE_ENABLED]
    assert_same_direction(out[False], out[True], 1e-5)
