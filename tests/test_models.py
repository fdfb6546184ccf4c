"""GGUF header reading, model classification, discovery, resolution, config and pull."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from launcher import cli, config, models, paths  # noqa: E402
from launcher.errors import (  # noqa: E402
    ConfigError,
    DownloadError,
    MmprojMismatch,
    MmprojRequired,
    ModelNotFound,
    NotGGUF,
    WrongArchitecture,
)
from launcher.gguf_meta import SkippedArray, read_metadata  # noqa: E402

# --- writing small GGUF files -----------------------------------------------------------


def write_gguf(
    path: Path,
    arch: str,
    kv: dict[str, Any] | None = None,
    tensors: Sequence[str] = ("token_embd.weight",),
) -> Path:
    """A metadata-only GGUF (plus tiny tensors) written with the gguf library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (kv or {}).items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, list(value))
    for name in tensors:
        w.add_tensor(name, np.zeros((2, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def lm(
    path: Path,
    *,
    name: str = "Qwen3 VL Embedding 2B",
    n_embd: int = 2048,
    tensors: Sequence[str] = ("token_embd.weight",),
    kv: dict[str, Any] | None = None,
) -> Path:
    """A Qwen3-VL language model header (embedding-named by default)."""
    meta: dict[str, Any] = {
        "general.name": name,
        "general.file_type": 15,
        "qwen3vl.embedding_length": n_embd,
        "qwen3vl.block_count": 28,
        "qwen3vl.rope.dimension_sections": [24, 20, 20, 0],
    }
    meta.update(kv or {})
    return write_gguf(path, "qwen3vl", meta, tensors)


def embedding(path: Path, **kw: Any) -> Path:
    return lm(path, **kw)


def reranker(
    path: Path,
    *,
    name: str = "Qwen3 VL Reranker 2B",
    tensors: Sequence[str] = ("token_embd.weight", "cls.output.weight"),
    kv: dict[str, Any] | None = None,
) -> Path:
    """A Qwen3-VL reranker with a rank head, as convert_hf_to_gguf.py writes it."""
    meta: dict[str, Any] = {
        "qwen3vl.pooling_type": 4,
        "qwen3vl.classifier.output_labels": ["yes", "no"],
    }
    meta.update(kv or {})
    return lm(path, name=name, tensors=tensors, kv=meta)


def mmproj(
    path: Path,
    *,
    name: str = "Qwen3 VL Embedding 2B",
    dim: int = 2048,
    kv: dict[str, Any] | None = None,
) -> Path:
    """A Qwen3-VL vision projector header."""
    meta: dict[str, Any] = {
        "general.type": "mmproj",
        "general.name": name,
        "clip.has_vision_encoder": True,
        "clip.projector_type": "qwen3vl_merger",
        "clip.vision.projection_dim": dim,
        "clip.vision.image_mean": [0.5, 0.5, 0.5],
    }
    meta.update(kv or {})
    return write_gguf(path, "clip", meta, ["v.patch_embd.weight"])


@pytest.fixture
def no_repo_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the repo ``models/`` folder at an empty temp dir (real models must not leak in)."""
    repo = tmp_path / "repo-models"
    repo.mkdir()
    monkeypatch.setattr(paths, "repo_models_dir", lambda: repo)
    return repo


# --- gguf_meta ----------------------------------------------------------------------------


def test_read_metadata_keeps_small_arrays_and_skips_big_ones(tmp_path: Path) -> None:
    tokens = [f"tok{i}" for i in range(5000)]
    p = lm(
        tmp_path / "m.gguf",
        kv={
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": list(range(5000)),
            "qwen3vl.classifier.output_labels": ["yes", "no"],
            "clip.vision.image_mean": [0.48, 0.45, 0.40],
            "general.flag": True,
        },
    )
    meta = read_metadata(p)
    assert meta.version == 3
    assert meta.architecture == "qwen3vl"
    assert meta.kv["general.name"] == "Qwen3 VL Embedding 2B"
    assert meta.kv["qwen3vl.embedding_length"] == 2048
    assert meta.kv["qwen3vl.rope.dimension_sections"] == [24, 20, 20, 0]
    assert meta.kv["qwen3vl.classifier.output_labels"] == ["yes", "no"]
    assert meta.kv["clip.vision.image_mean"] == pytest.approx([0.48, 0.45, 0.40])
    assert meta.kv["general.flag"] is True
    assert meta.kv["tokenizer.ggml.tokens"] == SkippedArray("string", 5000)
    assert len(meta.kv["tokenizer.ggml.token_type"]) == 5000
    assert meta.tensor_names == ("token_embd.weight",)
    assert meta.tensor_count == 1
    assert meta.file_size == p.stat().st_size
    assert 0 < meta.header_size < meta.file_size
    assert len(meta.header_bytes_hash) == 64


def test_read_metadata_agrees_with_the_gguf_library(tmp_path: Path) -> None:
    p = reranker(tmp_path / "r.gguf")
    ours = read_metadata(p).kv
    theirs = gguf.GGUFReader(str(p))
    for name, field in theirs.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, float):
            assert ours[name] == pytest.approx(value)
        else:
            assert ours[name] == value, name


def test_header_hash_identifies_the_metadata(tmp_path: Path) -> None:
    a = read_metadata(embedding(tmp_path / "a.gguf"))
    b = read_metadata(embedding(tmp_path / "b.gguf"))
    c = read_metadata(embedding(tmp_path / "c.gguf", n_embd=1024))
    assert a.header_bytes_hash == b.header_bytes_hash
    assert a.header_bytes_hash != c.header_bytes_hash


def test_read_metadata_is_fast_on_a_real_sized_vocabulary(tmp_path: Path) -> None:
    n = 151_936  # Qwen3 vocabulary
    p = lm(
        tmp_path / "vocab.gguf",
        kv={
            "tokenizer.ggml.tokens": [f"t{i}" for i in range(n)],
            "tokenizer.ggml.merges": [f"a{i} b{i}" for i in range(n)],
            "tokenizer.ggml.token_type": [1] * n,
        },
    )
    start = time.perf_counter()
    meta = read_metadata(p)
    elapsed = time.perf_counter() - start
    assert meta.kv["tokenizer.ggml.merges"].length == n
    assert elapsed < 2.0  # typically ~0.05 s; generous for slow CI


def test_missing_file_is_model_not_found(tmp_path: Path) -> None:
    p = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFound, match=f"model file not found: {p}"):
        read_metadata(p)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "only 0 bytes"),
        (b"PK\x03\x04" + b"\0" * 60, "bad magic"),
        (b"GGUF" + struct.pack("<I", 1) + b"\0" * 40, "version 1"),
        (b"GGUF" + struct.pack(">I", 3) + b"\0" * 40, "big-endian"),
    ],
)
def test_not_gguf(tmp_path: Path, content: bytes, why: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    with pytest.raises(NotGGUF, match=why) as err:
        read_metadata(p)
    assert str(err.value).startswith(f"{p} is not a GGUF file")


def test_truncated_header_is_not_gguf(tmp_path: Path) -> None:
    full = embedding(tmp_path / "full.gguf", kv={"tokenizer.ggml.tokens": ["a"] * 100})
    header = read_metadata(full).header_size
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full.read_bytes()[: header // 2])
    with pytest.raises(NotGGUF, match="truncated"):
        read_metadata(cut)


# --- classify -------------------------------------------------------------------------------


def test_classify_embedding_by_name(tmp_path: Path) -> None:
    mf = models.classify(embedding(tmp_path / "x.gguf"))
    assert mf.role == "embedding"
    assert mf.architecture == "qwen3vl"
    assert mf.n_embd == 2048
    assert mf.quant == "Q4_K_M"
    assert mf.name == "Qwen3 VL Embedding 2B"
    assert mf.usable and mf.reason is None


def test_classify_embedding_by_last_pooling(tmp_path: Path) -> None:
    mf = models.classify(lm(tmp_path / "x.gguf", name="Something", kv={"qwen3vl.pooling_type": 3}))
    assert mf.role == "embedding"
    assert mf.pooling_type == 3


def test_classify_uses_metadata_not_file_name(tmp_path: Path) -> None:
    mf = models.classify(reranker(tmp_path / "Qwen3-VL-Embedding-2B-Q8_0.gguf"))
    assert mf.role == "reranker"
    mf = models.classify(mmproj(tmp_path / "Qwen3-VL-Embedding-2B-Q4_K_M.gguf"))
    assert mf.role == "mmproj"


def test_classify_reranker_with_rank_head(tmp_path: Path) -> None:
    mf = models.classify(reranker(tmp_path / "r.gguf"))
    assert mf.role == "reranker"
    assert mf.rank_head and mf.usable
    assert mf.pooling_type == 4


def test_classify_reranker_by_labels_only(tmp_path: Path) -> None:
    p = lm(
        tmp_path / "r.gguf",
        name="custom",
        tensors=["token_embd.weight", "cls.output.weight"],
        kv={"qwen3vl.classifier.output_labels": ["yes", "no"]},
    )
    assert models.classify(p).rank_head


def test_classify_reranker_without_rank_head_is_usable_by_its_logits(tmp_path: Path) -> None:
    mf = models.classify(lm(tmp_path / "r.gguf", name="Qwen3 VL Reranker 2B"))
    assert mf.role == "reranker"
    assert not mf.rank_head and mf.usable and mf.reason is None
    assert "yes/no logits" in mf.describe()


def test_discovery_prefers_a_rank_head_reranker(tmp_path: Path, no_repo_models: Path) -> None:
    plain = lm(no_repo_models / "a-plain.gguf", name="Qwen3 VL Reranker 2B")
    ranked = reranker(no_repo_models / "b-ranked.gguf")
    assert models.resolve(roles=("reranker",)).reranker == ranked
    ranked.unlink()
    assert models.resolve(roles=("reranker",)).reranker == plain


def test_classify_rank_pooling_without_cls_tensor(tmp_path: Path) -> None:
    p = reranker(tmp_path / "r.gguf", tensors=["token_embd.weight"])
    mf = models.classify(p)
    assert mf.role == "reranker" and not mf.rank_head
    assert mf.reason and "cls.output.weight" in mf.reason


def test_classify_name_hint_from_tags(tmp_path: Path) -> None:
    p = lm(
        tmp_path / "x.gguf", name="Qwen3 VL 2B", kv={"general.tags": ["multimodal", "embedding"]}
    )
    assert models.classify(p).role == "embedding"


def test_classify_mmproj(tmp_path: Path) -> None:
    mf = models.classify(mmproj(tmp_path / "m.gguf", dim=1024))
    assert mf.role == "mmproj"
    assert mf.projection_dim == 1024
    assert mf.projector_type == "qwen3vl_merger"
    assert mf.hint == "embedding"


def test_classify_audio_only_projector_is_unknown(tmp_path: Path) -> None:
    p = write_gguf(tmp_path / "a.gguf", "clip", {"clip.has_audio_encoder": True})
    mf = models.classify(p)
    assert mf.role == "unknown"
    assert mf.reason and "vision encoder" in mf.reason


def test_classify_other_architecture_is_unknown(tmp_path: Path) -> None:
    mf = models.classify(write_gguf(tmp_path / "l.gguf", "llama", {"general.name": "Embed Llama"}))
    assert mf.role == "unknown"
    assert mf.reason and "'llama'" in mf.reason


def test_classify_plain_qwen3vl_chat_model_is_unknown(tmp_path: Path) -> None:
    mf = models.classify(lm(tmp_path / "chat.gguf", name="Qwen3 VL 2B Instruct"))
    assert mf.role == "unknown"
    assert mf.reason and "chat model" in mf.reason


# --- discover -------------------------------------------------------------------------------


def test_discover_finds_roles_in_subfolders_and_survives_junk(tmp_path: Path) -> None:
    root = tmp_path / "models"
    embedding(root / "emb.gguf")
    mmproj(root / "sub" / "proj.GGUF")
    reranker(root / "sub" / "rr.gguf")
    embedding(root / "a" / "b" / "c" / "d" / "too-deep.gguf")
    embedding(root / ".hidden" / "skip.gguf")
    (root / "sub" / "loop").symlink_to(root)  # followed once, never in circles
    (root / "broken.gguf").write_bytes(b"not a model at all, just text" * 4)
    (root / "notes.txt").write_text("hello")
    found = models.discover([root, tmp_path / "does-not-exist"])
    by_name = {m.path.name: m for m in found}
    assert set(by_name) == {"emb.gguf", "proj.GGUF", "rr.gguf", "broken.gguf"}
    assert by_name["emb.gguf"].role == "embedding"
    assert by_name["proj.GGUF"].role == "mmproj"
    assert by_name["rr.gguf"].role == "reranker"
    broken = by_name["broken.gguf"]
    assert broken.role == "unknown" and broken.reason and "not a GGUF file" in broken.reason
    assert broken.size_bytes > 0


def test_models_finds_a_model_in_a_folder_named_after_its_hub_repository(
    no_repo_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """models/README.md names each file by its repository, ``DevQuasar/Qwen...-GGUF``: a
    folder made that way is two levels down."""
    repo = no_repo_models / "DevQuasar" / "Qwen.Qwen3-VL-Embedding-2B-GGUF"
    emb = embedding(repo / "Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf")
    proj = mmproj(repo / "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf")
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "No embedding model" not in out
    assert f"{emb} (discovered)" in out and f"{proj} (discovered)" in out


def test_discover_default_dirs(no_repo_models: Path) -> None:
    embedding(no_repo_models / "a.gguf")
    embedding(paths.models_dir() / "b.gguf")
    assert models.default_model_dirs() == [no_repo_models, paths.models_dir()]
    assert [m.path.name for m in models.discover()] == ["a.gguf", "b.gguf"]


# --- resolve ----------------------------------------------------------------------------------


def write_config(text: str) -> Path:
    p = paths.config_file()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def test_resolve_precedence_flag_env_config_discovery(
    tmp_path: Path, no_repo_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = embedding(tmp_path / "flag.gguf")
    env = embedding(tmp_path / "env.gguf")
    cfg = embedding(tmp_path / "cfg.gguf")
    found = embedding(no_repo_models / "found.gguf")
    write_config(f'[models]\nmodel = "{cfg.as_posix()}"\n')
    monkeypatch.setenv("LAUNCHER_MODEL", str(env))

    r = models.resolve(model=flag)
    assert r.model == flag and r.sources["model"] == "--model"
    r = models.resolve()
    assert r.model == env and r.sources["model"] == "$LAUNCHER_MODEL"
    monkeypatch.delenv("LAUNCHER_MODEL")
    r = models.resolve()
    assert r.model == cfg and r.sources["model"].startswith("config")
    paths.config_file().unlink()
    r = models.resolve()
    assert r.model == found and r.sources["model"] == "discovered"
    assert r.require_embedding() == found
    assert r.file("model") is not None and r.file("model").role == "embedding"  # type: ignore[union-attr]


def test_resolve_config_paths_are_relative_to_the_config_file(no_repo_models: Path) -> None:
    cfg_dir = paths.config_file().parent
    p = embedding(cfg_dir / "local" / "m.gguf")
    write_config('threads = 3\n[models]\nmodel = "local/m.gguf"\n')
    r = models.resolve()
    assert r.model == p
    assert r.threads == 3


@pytest.mark.parametrize(
    ("how", "source"),
    [("flag", "--model"), ("env", "$LAUNCHER_MODEL"), ("config", "config")],
)
def test_resolve_missing_explicit_file_names_its_source(
    tmp_path: Path, no_repo_models: Path, monkeypatch: pytest.MonkeyPatch, how: str, source: str
) -> None:
    missing = tmp_path / "missing.gguf"
    kwargs: dict[str, Any] = {}
    if how == "flag":
        kwargs["model"] = missing
    elif how == "env":
        monkeypatch.setenv("LAUNCHER_MODEL", str(missing))
    else:
        write_config(f'[models]\nmodel = "{missing.as_posix()}"\n')
    with pytest.raises(ModelNotFound) as err:
        models.resolve(**kwargs)
    assert f"model file not found: {missing}" in str(err.value)
    assert source in str(err.value)


def test_resolve_not_a_gguf(tmp_path: Path, no_repo_models: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello")
    with pytest.raises(NotGGUF, match=r"is not a GGUF file .*\(from --model\)"):
        models.resolve(model=bad)


def test_resolve_wrong_roles(tmp_path: Path, no_repo_models: Path) -> None:
    proj = mmproj(tmp_path / "p.gguf")
    emb = embedding(tmp_path / "e.gguf")
    llama = write_gguf(tmp_path / "l.gguf", "llama")
    with pytest.raises(WrongArchitecture, match="vision projector .*not an embedding model"):
        models.resolve(model=proj)
    with pytest.raises(WrongArchitecture, match="'llama'"):
        models.resolve(model=llama)
    with pytest.raises(WrongArchitecture, match="not a vision projector"):
        models.resolve(model=emb, mmproj=emb)
    with pytest.raises(WrongArchitecture, match="not a Qwen3-VL reranker"):
        models.resolve(reranker=emb)
    unranked = lm(tmp_path / "u.gguf", name="Qwen3 VL Reranker 2B")
    assert models.resolve(reranker=unranked, roles=("reranker",)).reranker == unranked


def test_resolve_accepts_an_explicit_unmarked_qwen3vl_as_embedding(
    tmp_path: Path, no_repo_models: Path
) -> None:
    chat = lm(tmp_path / "chat.gguf", name="Qwen3 VL 2B Instruct")
    assert models.resolve(model=chat).model == chat
    assert models.resolve().model is None  # but never picks it by itself


def test_resolve_picks_matching_mmprojs(tmp_path: Path, no_repo_models: Path) -> None:
    root = no_repo_models
    emb = embedding(root / "emb" / "Qwen3-VL-Embedding-2B-Q4_K_M.gguf")
    rr = reranker(root / "rr" / "Qwen3-VL-Reranker-2B-Q8_0.gguf")
    # Wrong width but in the model's own folder: never picked.
    mmproj(root / "emb" / "a-small.gguf", dim=1024)
    emb_proj = mmproj(root / "emb" / "b-proj.gguf")
    rr_proj = mmproj(root / "rr" / "proj.gguf", name="Qwen3 VL Reranker 2B")
    r = models.resolve()
    assert r.model == emb and r.mmproj == emb_proj
    assert r.reranker == rr and r.reranker_mmproj == rr_proj
    assert r.sources["mmproj"] == "discovered"
    assert r.require_mmproj() == emb_proj


def test_mmproj_role_hint_beats_folder_and_other_role_is_never_picked(
    no_repo_models: Path,
) -> None:
    root = no_repo_models
    embedding(root / "emb.gguf")
    rr_proj = mmproj(root / "rr-proj.gguf", name="Qwen3 VL Reranker 2B")
    emb_proj = mmproj(root / "sub" / "emb-proj.gguf")
    r = models.resolve()
    assert r.mmproj == emb_proj  # the hint wins over the folder
    emb_proj.unlink()
    r = models.resolve()
    assert r.mmproj is None  # the reranker's projector is not used for the embedding model
    assert r.reranker_mmproj is None
    assert models.resolve(mmproj=rr_proj).mmproj == rr_proj  # unless given explicitly
    with pytest.raises(MmprojRequired, match="--mmproj"):
        models.resolve(mmproj="none").require_mmproj()


def test_mmproj_without_hints_prefers_the_models_folder(no_repo_models: Path) -> None:
    root = no_repo_models
    emb = embedding(root / "e" / "emb.gguf")
    mmproj(root / "a-elsewhere.gguf", name="projector")
    near = mmproj(root / "e" / "z-near.gguf", name="projector")
    assert models.resolve().mmproj == near
    assert emb.exists()


def test_explicit_mmproj_of_wrong_width_is_a_mismatch(tmp_path: Path, no_repo_models: Path) -> None:
    emb = embedding(tmp_path / "emb.gguf")
    small = mmproj(tmp_path / "small.gguf", dim=1024)
    with pytest.raises(MmprojMismatch) as err:
        models.resolve(model=emb, mmproj=small)
    assert str(err.value) == f"mmproj {small} projects to 1024 dims but model {emb} expects 2048"


def test_check_mmproj_fits_projector_type(tmp_path: Path) -> None:
    emb = models.classify(embedding(tmp_path / "emb.gguf"))
    other = models.classify(mmproj(tmp_path / "g.gguf", kv={"clip.projector_type": "gemma3"}))
    with pytest.raises(MmprojMismatch, match="'gemma3' projector"):
        models.check_mmproj_fits(emb, other)
    models.check_mmproj_fits(emb, models.classify(mmproj(tmp_path / "ok.gguf")))


def test_require_embedding_says_where_it_looked(no_repo_models: Path) -> None:
    (no_repo_models / "junk.gguf").write_bytes(b"junk" * 10)
    r = models.resolve()
    with pytest.raises(ModelNotFound) as err:
        r.require_embedding()
    msg = str(err.value)
    assert str(no_repo_models) in msg and str(paths.models_dir()) in msg
    assert "$LAUNCHER_MODEL" in msg and "--model" in msg
    assert "models pull" in msg and "models/" in msg
    assert "1 GGUF file there is not usable" in msg
    with pytest.raises(ModelNotFound, match="no reranker"):
        r.require_reranker()


def test_none_switches_a_slot_off(no_repo_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reranker(no_repo_models / "rr.gguf")
    assert models.resolve().reranker is not None
    monkeypatch.setenv("LAUNCHER_RERANKER", "none")
    r = models.resolve()
    assert r.reranker is None and r.sources["reranker"] == "off"
    with pytest.raises(ModelNotFound, match="switched off"):
        r.require_reranker()


def test_roles_limits_resolution(
    tmp_path: Path, no_repo_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHER_MODEL", str(tmp_path / "missing.gguf"))
    rr = reranker(no_repo_models / "rr.gguf")
    r = models.resolve(roles=("reranker",))
    assert r.reranker == rr and r.model is None
    with pytest.raises(ModelNotFound):
        models.resolve()


def test_discovery_skips_unranked_reranker(no_repo_models: Path) -> None:
    lm(no_repo_models / "a-bad.gguf", name="Qwen3 VL Reranker 2B")
    good = reranker(no_repo_models / "b-good.gguf")
    assert models.resolve().reranker == good


# --- config -----------------------------------------------------------------------------------


def test_missing_config_gives_defaults() -> None:
    cfg = config.load_config()
    assert cfg.path == paths.config_file()
    assert not cfg.exists
    assert cfg.model is None and cfg.threads is None and cfg.raw == {}
    assert cfg.table("index") == {}


def test_broken_toml_names_file_and_line() -> None:
    p = write_config('[models]\nmodel = "a.gguf"\nthreads = = 4\n')
    with pytest.raises(ConfigError) as err:
        config.load_config()
    assert str(p) in str(err.value)
    assert "line 3" in str(err.value)


@pytest.mark.parametrize(
    "text",
    ["[models]\nmodel = 3\n", "threads = 0\n", "threads = true\n", "models = 1\n"],
)
def test_bad_config_values(text: str) -> None:
    write_config(text)
    with pytest.raises(ConfigError):
        config.load_config()


def test_config_tables_for_other_areas() -> None:
    write_config('threads = 2\n[index]\nroots = ["~/docs"]\n[ui]\nhotkey = "ctrl+space"\n')
    cfg = config.load_config()
    assert cfg.threads == 2
    assert cfg.table("index") == {"roots": ["~/docs"]}
    assert cfg.raw["ui"]["hotkey"] == "ctrl+space"
    write_config('ui = "x"\n')
    with pytest.raises(ConfigError, match=r"\[ui\]"):
        config.load_config().table("ui")


def test_save_config_round_trips() -> None:
    raw: dict[str, Any] = {
        "threads": 4,
        "models": {"model": 'C:\\models\\emb "2B".gguf', "reranker": "none"},
        "index": {"roots": ["~/a", "~/b"], "ratio": 0.5, "on": True, "deep": {"x": 1}},
        "weird key": {"tab\there": "line\nbreak"},
        "sources": [{"name": "a"}, {"name": "b"}],
    }
    path = config.save_config(raw)
    assert path == paths.config_file()
    cfg = config.load_config()
    assert cfg.raw == raw
    assert cfg.model == 'C:\\models\\emb "2B".gguf'
    assert not list(path.parent.glob(".config-*"))  # no temp file left behind


# --- pull -------------------------------------------------------------------------------------


def test_pull_offline_says_what_to_put_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import huggingface_hub
    except ImportError:
        huggingface_hub = None  # type: ignore[assignment]
    if huggingface_hub is not None:

        def no_network(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("pull must not touch the network when offline")

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
        monkeypatch.setattr(huggingface_hub, "list_repo_files", no_network)
    dest = tmp_path / "dl"
    with pytest.raises(DownloadError) as err:
        models.pull(dest)
    msg = str(err.value)
    if huggingface_hub is None:
        assert "pip install" in msg and "huggingface_hub" in msg
    else:
        assert "HF_HUB_OFFLINE" in msg
    # one line per file: its URL and the folder it goes in
    for d in models.default_downloads():
        [line] = [x for x in err.value.details if d.url in x]
        assert line.rstrip().endswith(str(dest / d.subdir) + os.sep)
    assert any("--model" in line for line in err.value.details)


def test_pull_without_huggingface_hub_gives_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Any:
        raise ImportError("No module named 'huggingface_hub'")

    monkeypatch.setattr(models, "_import_hub", missing)
    with pytest.raises(DownloadError, match=r"pip install 'launcher\[download\]'") as err:
        models.pull(tmp_path / "dl", include_reranker=False)
    assert "Reranker" not in str(err.value)


def test_pull_keeps_files_already_there_without_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Any:
        raise ImportError

    monkeypatch.setattr(models, "_import_hub", missing)
    dest = tmp_path / "dl"
    for d in models.default_downloads(include_reranker=False):
        (dest / d.subdir).mkdir(parents=True, exist_ok=True)
        (dest / d.subdir / d.filename).write_bytes(b"x")
    got = models.pull(dest, include_reranker=False)
    assert [p.name for p in got] == [
        d.filename for d in models.default_downloads(include_reranker=False)
    ]


class FakeHub:
    """Stands in for huggingface_hub: 'downloads' synthetic GGUFs from a local folder."""

    def __init__(self, source: Path, files: dict[str, list[str]]) -> None:
        self.source = source
        self.files = files
        self.calls: list[tuple[str, str]] = []

    def list_repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
        return self.files[repo_id]

    def hf_hub_download(
        self, repo_id: str, filename: str, *, revision: str | None = None, local_dir: Path
    ) -> str:
        from huggingface_hub import errors

        self.calls.append((repo_id, filename))
        if filename not in self.files[repo_id]:
            raise errors.EntryNotFoundError(f"{filename} not found")
        out = Path(local_dir) / filename
        shutil.copy(self.source / filename, out)
        return str(out)


def test_pull_downloads_verifies_and_falls_back_to_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_repo_models: Path
) -> None:
    pytest.importorskip("huggingface_hub")
    src = tmp_path / "hub"
    emb_name = "Qwen.Qwen3-VL-Embedding-2B-renamed.Q4_K_M.gguf"  # the default name is gone
    embedding(src / emb_name)
    mmproj(src / "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf")
    reranker(src / "Qwen3-VL-Reranker-2B.Q8_0.gguf")
    mmproj(src / "Qwen3-VL-Reranker-2B.mmproj-f16.gguf", name="Qwen3 VL Reranker 2B")
    hub = FakeHub(
        src,
        {
            models.EMBEDDING_REPO: [emb_name, "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf"],
            models.RERANKER_REPO: [
                "Qwen3-VL-Reranker-2B.Q8_0.gguf",
                "Qwen3-VL-Reranker-2B.mmproj-f16.gguf",
            ],
        },
    )
    monkeypatch.setattr(models, "_import_hub", lambda: hub)
    monkeypatch.setattr(models, "_hub_offline", lambda: False)
    monkeypatch.setattr(models, "_hub_resolves", lambda: True)
    got = models.pull(progress=False)
    assert [p.name for p in got] == [
        emb_name,
        "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf",
        "Qwen3-VL-Reranker-2B.Q8_0.gguf",
        "Qwen3-VL-Reranker-2B.mmproj-f16.gguf",
    ]
    assert all(p.is_file() and paths.models_dir() in p.parents for p in got)
    r = models.resolve()
    assert r.model == got[0] and r.mmproj == got[1]
    assert r.reranker == got[2] and r.reranker_mmproj == got[3]


def test_pull_rejects_a_download_of_the_wrong_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("huggingface_hub")
    src = tmp_path / "hub"
    name = "Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf"
    lm(src / name, name="Qwen3 VL Reranker 2B")  # a reranker without a rank head
    hub = FakeHub(src, {models.EMBEDDING_REPO: [name]})
    monkeypatch.setattr(models, "_import_hub", lambda: hub)
    monkeypatch.setattr(models, "_hub_offline", lambda: False)
    monkeypatch.setattr(models, "_hub_resolves", lambda: True)
    with pytest.raises(DownloadError, match="not the expected embedding"):
        models.pull(tmp_path / "dl", include_reranker=False, progress=False)


def test_pull_connection_error_is_a_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import errors

    class Unreachable(FakeHub):
        def hf_hub_download(self, *args: Any, **kwargs: Any) -> str:
            raise errors.LocalEntryNotFoundError("cannot connect")

    monkeypatch.setattr(models, "_import_hub", lambda: Unreachable(tmp_path, {}))
    monkeypatch.setattr(models, "_hub_offline", lambda: False)
    monkeypatch.setattr(models, "_hub_resolves", lambda: True)
    dest = tmp_path / "dl"
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face hub") as err:
        models.pull(dest, progress=False)
    assert str(dest / "Qwen3-VL-Embedding-2B") in "\n".join(err.value.details)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_models_json(
    no_repo_models: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    emb = embedding(no_repo_models / "emb.gguf")
    proj = mmproj(no_repo_models / "proj.gguf")
    (no_repo_models / "junk.gguf").write_bytes(b"junk" * 10)
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    by_path = {Path(r["path"]): r for r in rows}
    assert by_path[emb]["role"] == "embedding" and by_path[emb]["used_as"] == ["model"]
    assert by_path[emb]["n_embd"] == 2048 and by_path[emb]["size_bytes"] == emb.stat().st_size
    assert by_path[proj]["role"] == "mmproj" and by_path[proj]["used_as"] == ["mmproj"]
    junk = by_path[no_repo_models / "junk.gguf"]
    assert junk["role"] == "unknown" and "not a GGUF" in junk["reason"]

    # an explicit file outside the folders is listed too
    other = embedding(tmp_path / "elsewhere" / "other.gguf")
    assert cli.main(["models", "--json", "--model", str(other)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"path": str(other), "used_as": ["model"]}.items() <= rows[-1].items()


def test_cli_models_text_and_errors(
    no_repo_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "No GGUF files" in out and "models pull" in out
    reranker(no_repo_models / "rr.gguf")
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "reranker" in out and "<- reranker" in out
    assert cli.main(["models", "--model", str(no_repo_models / "missing.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("launcher: error: model file not found:") and "--model" in err


def test_cli_models_pull_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dl"
    assert cli.main(["models", "pull", "--no-reranker", "--dest", str(dest)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "launcher: error: HF_HUB_OFFLINE is set, so nothing can be downloaded"
    # one short line per file (URL -> folder), not one 700-character line
    files = [line for line in lines if "https://huggingface.co/" in line]
    assert len(files) == 2
    assert all(line.endswith(str(dest / "Qwen3-VL-Embedding-2B") + os.sep) for line in files)
    assert "Reranker" not in "\n".join(lines)
    assert any("--model" in line for line in lines)


def test_environment_is_isolated() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "LAUNCHER_MODEL" not in os.environ
    assert paths.config_file().is_relative_to(Path(os.environ["LAUNCHER_HOME"]))


def test_pull_fails_at_once_when_the_hub_does_not_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(models, "_hub_offline", lambda: False)

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    called: list[str] = []

    class Hub(FakeHub):
        def hf_hub_download(self, *args: Any, **kwargs: Any) -> str:
            called.append("download")
            raise AssertionError("must not try to download")

    monkeypatch.setattr(models, "_import_hub", lambda: Hub(tmp_path, {}))
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face hub") as err:
        models.pull(tmp_path / "dl", progress=False)
    assert "by hand" in err.value.details[0]
    assert called == []


def test_cli_pull_with_models_in_place_needs_no_network(
    no_repo_models: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = embedding(no_repo_models / "emb.gguf")
    proj = mmproj(no_repo_models / "proj.gguf")
    rr = reranker(no_repo_models / "rr.gguf")

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not download")

    monkeypatch.setattr(models, "pull", no_network)
    assert cli.main(["models", "pull"]) == 0
    out = capsys.readouterr()
    assert "already in place" in out.err
    assert out.out.split() == [str(emb), str(proj), str(rr)]
