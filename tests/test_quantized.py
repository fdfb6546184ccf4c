"""Quantized models, the kernels users actually run (issue 14).

A small F32 model whose rows allow K-quants (``synth.QUANT_TEXT``) is quantized in the
test by llama.cpp's own ``llama_model_quantize`` to Q4_K_M, Q4_0 and Q8_0, then embeds and
reranks through the engine with llama.cpp's extra buffer types (weight repacking; AMX on
a CPU that has it, unless the guard turns them off) on and off. Outputs are compared with
the F32 model by cosine, at tolerances measured on these models with a wide margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import reference as R
from numeric import assert_same_direction, gap

from launcher import native, prompt, synth
from launcher.config import EXTRA_BUFFER_TYPES_ENV
from launcher.embedder import Embedder
from launcher.errors import ConfigError
from launcher.reranker import RANK_HEAD, Reranker

QUANTS = ("Q4_K_M", "Q4_0", "Q8_0")
REPACKED = ("Q4_K_M", "Q4_0")  # what llama.cpp repacks for AVX2 / AVX-512 / ARM dot product
# Random weights suffer from 4-bit rounding more than trained ones. Measured here (AMD EPYC,
# AVX-512, repack on and off alike), bounds ~3x above:
# 1 - cos to the F32 model's vector: Q8_0 3.8e-4, Q4_K_M 0.027, Q4_0 0.044 (while two
# different texts are >= 0.31 apart, so each stays nearest to its own F32 vector).
F32_GAP = {"Q8_0": 2e-3, "Q4_K_M": 0.08, "Q4_0": 0.12}
# 1 - cos between the engine on a quantized file and the float64 reference on that file's
# dequantized weights: only the activations' 8-bit rounding in the dot products (3.4e-4);
# also the gap between repacked and plain weights (1e-4). A broken kernel is off by > 0.1.
KERNEL_GAP = 2e-3
# The reranker on the logit scale, log(P(yes) / P(no)) (P(yes) of a random model is
# ~0.001-0.03, where absolute differences say little). To the same file's reference: 0.36
# measured; to the F32 model: Q8_0 0.19, Q4_K_M 1.2, Q4_0 2.9 (4-bit rounding of the
# yes/no head rows shifts every margin alike).
RANK_REF_MARGIN = 1.0
RANK_F32_MARGIN = {"Q8_0": 0.75, "Q4_K_M": 3.0, "Q4_0": 6.0}

TEXTS = [
    "invoice 2024-0917 for the plumber, paid in March",
    "holiday photos from Lisbon: trams, soup and the river at sunset",
    "def connect(host, port):\n    return socket.create_connection((host, port), timeout=3)",
    "",
    "the quarterly budget meeting moved to Thursday",
]
QUERY = "budget meeting"


@dataclass(frozen=True)
class QuantModels:
    embedding: dict[str, Path]  # "F32" and each of QUANTS
    rank: dict[str, Path]


@pytest.fixture(scope="session")
def quant_models(tmp_path_factory: pytest.TempPathFactory) -> QuantModels:
    d = tmp_path_factory.mktemp("quant-models")
    out: dict[str, dict[str, Path]] = {}
    for role, seed in (("embedding", 21), ("rank", 22)):
        f32 = synth.write_text_model(
            d / f"small-{role}-F32.gguf", role=role, seed=seed, shape=synth.QUANT_TEXT
        )
        out[role] = {"F32": f32}
        for q in QUANTS:
            out[role][q] = synth.quantize(f32, d / f"small-{role}-{q}.gguf", q, threads=2)
    return QuantModels(embedding=out["embedding"], rank=out["rank"])


def repack_expected() -> bool:
    """Whether this build and CPU repack Q4_0 weights (x86 AVX2; ARM dot product)."""
    features = native.build_features(native.system_info())
    return "REPACK" in features and bool({"AVX2", "DOTPROD", "MATMUL_INT8"} & features)


def extra_bufts_safe() -> bool:
    """Whether extra buffer types are safe here: not on an AMX machine whose llama.cpp
    would crash (issue 14)."""
    return not native.amx_guarded()


def avx512_here() -> bool:
    flags = native.cpu_flags()
    avx512_cpu = flags is None or "avx512f" in flags
    return "AVX512" in native.build_features(native.system_info()) and avx512_cpu


def auto_on(quant: str) -> bool:
    """Extra buffer types under "auto": where safe, except Q4_K models with AVX-512."""
    return extra_bufts_safe() and not (quant.startswith("Q4_K") and avx512_here())


# "auto" is what users get: on where safe (repacking runs), off on an AMX machine.
EXTRA = pytest.mark.parametrize("extra", [None, False], ids=["auto", "no-extra-bufts"])


def load_log(fn):  # type: ignore[no-untyped-def]
    """Run ``fn`` and return what llama.cpp logged meanwhile."""
    native._LOG_LINES.clear()
    result = fn()
    return result, "".join(native._LOG_LINES)


@pytest.fixture(scope="module")
def f32_vectors(quant_models: QuantModels) -> np.ndarray:
    with Embedder(quant_models.embedding["F32"], threads=2) as emb:
        return emb.embed(TEXTS)


@EXTRA
@pytest.mark.parametrize("quant", QUANTS)
def test_quantized_embeddings_follow_f32(quant_models, f32_vectors, quant, extra):
    path = quant_models.embedding[quant]
    emb, log = load_log(lambda: Embedder(path, threads=2, extra_bufts=extra))
    with emb:
        on = emb.model.extra_bufts.on
        assert on is (auto_on(quant) if extra is None else extra)
        if quant in REPACKED and repack_expected():
            # the repack kernels run exactly when extra buffer types are on
            assert ("CPU_REPACK" in log) is on, log[-2000:]
        got = emb.embed(TEXTS)
        tokens = [emb.tokenize_parts(prompt.embedding_prompt(t, 0, None), [])[0] for t in TEXTS]
    assert got.shape == f32_vectors.shape and np.isfinite(got).all()
    g = gap(got, f32_vectors)
    assert g.max() <= F32_GAP[quant], g
    # each quantized vector is still nearest to its own text's F32 vector
    assert (np.argmax(got @ f32_vectors.T, axis=1) == np.arange(len(TEXTS))).all()
    # against the float64 reference on the same file's (dequantized) weights
    ref = np.stack([R.forward(path, ids)[0] for ids in tokens])
    assert_same_direction(got, ref, KERNEL_GAP)


def margin(p: list[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


@EXTRA
@pytest.mark.parametrize("quant", QUANTS)
def test_quantized_reranker_follows_f32(quant_models, quant, extra):
    with Reranker(quant_models.rank["F32"], threads=2) as rr:
        expected = margin(rr.score(QUERY, TEXTS))
    path = quant_models.rank[quant]
    with Reranker(path, threads=2, extra_bufts=extra) as rr:
        assert rr.method == RANK_HEAD
        assert rr.model.extra_bufts.on is (auto_on(quant) if extra is None else extra)
        got = margin(rr.score(QUERY, TEXTS))
        tokens = [
            rr.tokenize_parts(prompt.rerank_prompt(QUERY, 0, t, 0, rr.instruction), [])[0]
            for t in TEXTS
        ]
    ref = margin([R.rank_scores(path, ids)[0] for ids in tokens])
    assert np.abs(got - ref).max() <= RANK_REF_MARGIN, (got, ref)
    assert np.abs(got - expected).max() <= RANK_F32_MARGIN[quant], (got, expected)
    assert np.argmax(got) == np.argmax(expected)  # the same document comes first


def test_repacked_and_plain_weights_agree(quant_models):
    """Extra buffer types change where weights live and which kernel runs, not the result
    beyond rounding."""
    if not extra_bufts_safe():
        pytest.skip("extra buffer types crash on this CPU (AMX, ggml-org/llama.cpp PR #26954)")
    out = {}
    for extra in (True, False):
        with Embedder(quant_models.embedding["Q4_0"], threads=2, extra_bufts=extra) as emb:
            out[extra] = emb.embed(TEXTS)
    assert_same_direction(out[True], out[False], KERNEL_GAP)


# -- the AMX guard ---------------------------------------------------------------------------

# Real `llama_print_system_info` texts: an AMX build (Xeon Sapphire Rapids) and this kind
# of AVX-512 machine without AMX.
INFO_AMX = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
INFO_NO_AMX = INFO_AMX.replace("AMX_INT8 = 1 | ", "")
CPUINFO_AMX = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 "
    "amx_tile amx_int8\n\nprocessor\t: 1\nflags\t\t: fpu avx2 amx_tile amx_int8\n"
)
CPUINFO_NO_AMX = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f\n"


def test_cpu_flags_and_build_features_parse():
    flags = native.parse_cpu_flags(CPUINFO_AMX)
    assert flags is not None and {"amx_int8", "amx_tile", "avx2"} <= flags
    assert native.parse_cpu_flags("processor : 0\nFeatures : fp asimd\n") is None
    assert "AMX_INT8" in native.build_features(INFO_AMX)
    assert "AMX_INT8" not in native.build_features(INFO_NO_AMX)
    assert "AMX_INT8" not in native.build_features("CPU : AMX_INT8 = 0 | AVX2 = 1 |")


@pytest.mark.parametrize(
    "info,cpuinfo,runs",
    [
        (INFO_AMX, CPUINFO_AMX, True),  # the crashing case: AMX build on an AMX CPU
        (INFO_AMX, CPUINFO_NO_AMX, False),  # AMX build, CPU without AMX: buffer never used
        (INFO_NO_AMX, CPUINFO_AMX, False),  # build without AMX kernels
        (INFO_NO_AMX, CPUINFO_NO_AMX, False),
        (INFO_AMX, None, True),  # no /proc/cpuinfo: assume the CPU the build was made for
    ],
)
def test_amx_detection(info, cpuinfo, runs):
    flags = native.parse_cpu_flags(cpuinfo) if cpuinfo is not None else None
    assert native.amx_would_run(info, flags) is runs
    auto = native.decide_extra_bufts(None, "auto", info, flags, "0.3.36")
    assert auto.on is not runs
    assert ("PR #26954" in auto.why) is runs


def test_amx_guard_is_forced_either_way_and_lifted_by_a_fixed_version(monkeypatch):
    flags = native.parse_cpu_flags(CPUINFO_AMX)
    forced_on = native.decide_extra_bufts(True, "$X", INFO_AMX, flags, "0.3.36")
    assert forced_on.on and "$X" in forced_on.why and "AMX may crash" in forced_on.why
    assert not native.decide_extra_bufts(False, "$X", INFO_NO_AMX, flags, "0.3.36").on
    assert not native.amx_fixed("9.9.9", None)  # no fixed release known: the guard stays
    assert native.amx_fixed("0.3.40", "0.3.40") and native.amx_fixed("0.4.1", "0.3.40")
    assert not native.amx_fixed("0.3.39", "0.3.40")
    monkeypatch.setattr(native, "AMX_FIXED_IN", "0.3.40")
    assert native.decide_extra_bufts(None, "auto", INFO_AMX, flags, "0.3.41").on
    assert not native.decide_extra_bufts(None, "auto", INFO_AMX, flags, "0.3.39").on


def test_auto_keeps_plain_q4_k_weights_on_avx512_and_repacks_the_rest():
    """Measured on an AVX-512 CPU without AMX (bench/run.py section q): plain Q4_K decodes
    faster than repacked Q4_K, while repacked Q4_0 / IQ4_NL is faster than plain."""
    no_amx = native.parse_cpu_flags(CPUINFO_NO_AMX)
    avx2_only = frozenset({"avx2", "fma"})
    info_avx2 = "CPU : AVX = 1 | AVX2 = 1 | FMA = 1 | REPACK = 1 | "

    def auto(info, flags, ftype):  # type: ignore[no-untyped-def]
        return native.decide_extra_bufts(None, "auto", info, flags, "0.3.36", ftype)

    for ftype in (14, 15):  # Q4_K_S, Q4_K_M
        d = auto(INFO_NO_AMX, no_amx, ftype)
        assert not d.on and "AVX-512" in d.why and native.Q4_K_FTYPES[ftype] in d.why
        assert auto(info_avx2, avx2_only, ftype).on  # AVX2 only: the repack kernels help
        assert auto(INFO_NO_AMX, avx2_only, ftype).on  # an AVX-512 build on an AVX2 CPU
    for ftype in (2, 25, 7, 1, None):  # Q4_0, IQ4_NL, Q8_0, F16, unknown
        assert auto(INFO_NO_AMX, no_amx, ftype).on
    forced = native.decide_extra_bufts(True, "$X", INFO_NO_AMX, no_amx, "0.3.36", 15)
    assert forced.on and "$X" in forced.why


def test_the_model_file_type_reaches_the_decision(quant_models):
    assert native.model_ftype(quant_models.embedding["Q4_K_M"]) == 15
    assert native.model_ftype(quant_models.embedding["Q4_0"]) == 2
    with Embedder(quant_models.embedding["Q4_K_M"], threads=2) as emb:
        assert emb.model.extra_bufts.on is auto_on("Q4_K_M")


@pytest.fixture()
def amx_machine(monkeypatch):
    """Pretend llama.cpp and the CPU both have AMX (this test machine may not)."""
    monkeypatch.setattr(native, "system_info", lambda: INFO_AMX)
    monkeypatch.setattr(native, "cpu_flags", lambda: native.parse_cpu_flags(CPUINFO_AMX))
    monkeypatch.delenv(EXTRA_BUFFER_TYPES_ENV, raising=False)


def test_the_guard_applies_in_the_load_path(quant_models, amx_machine):
    """On an AMX machine a model loads without extra buffer types (so neither AMX nor
    repack buffers hold its weights) and still embeds."""
    path = quant_models.embedding["Q4_0"]
    emb, log = load_log(lambda: Embedder(path, threads=2))
    with emb:
        assert not emb.model.extra_bufts.on and "PR #26954" in emb.model.extra_bufts.why
        assert "CPU_REPACK" not in log
        assert np.isfinite(emb.embed(["still works"])).all()


def test_setting_precedence_env_then_config_then_auto(amx_machine, isolated_home, monkeypatch):
    assert not native.resolve_extra_bufts().on  # auto: guarded
    cfg = isolated_home / "config" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("extra_buffer_types = true\n")
    d = native.resolve_extra_bufts()
    assert d.on and "config" in d.why
    monkeypatch.setenv(EXTRA_BUFFER_TYPES_ENV, "off")
    d = native.resolve_extra_bufts()
    assert not d.on and EXTRA_BUFFER_TYPES_ENV in d.why
    assert native.resolve_extra_bufts(True).on  # an explicit argument wins
    monkeypatch.setenv(EXTRA_BUFFER_TYPES_ENV, "auto")
    assert native.resolve_extra_bufts().on is False  # auto from the env: guarded again
    cfg.write_text('extra_buffer_types = "sometimes"\n')
    monkeypatch.delenv(EXTRA_BUFFER_TYPES_ENV)
    with pytest.raises(ConfigError, match="extra_buffer_types must be on, off or auto"):
        native.resolve_extra_bufts()
    monkeypatch.setenv(EXTRA_BUFFER_TYPES_ENV, "maybe")
    with pytest.raises(ConfigError, match=EXTRA_BUFFER_TYPES_ENV):
        native.resolve_extra_bufts()


def test_models_shows_whether_extra_buffer_types_are_on(amx_machine, capsys):
    from launcher import cli

    assert cli.main(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "extra buffer types" in ln)
    assert "off (auto: AMX guard, ggml-org/llama.cpp PR #26954)" in line
