"""``--gpu auto|off|N`` (issue 12 item 1): which device llama.cpp runs the models on.

On this CPU-only build of llama.cpp, ``auto`` resolves to 0 layers and N layers are passed
through (llama.cpp then runs them on the CPU): asserted on the parameters the real
llama.cpp receives, with the real tiny models loaded. The parity test compares a GPU run
with the CPU's and runs only where llama.cpp was built with a GPU backend.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from numeric import assert_same_direction
from PIL import Image

from launcher import cli, native
from launcher.config import GPU_ENV, parse_gpu
from launcher.embedder import Embedder
from launcher.errors import ConfigError
from launcher.inputs import EmbedInput

# A GPU is another path through the same computation, but not the CPU's kernels: its
# reductions run in another order (warp shuffles, split-K), and the CUDA/Metal matmuls of
# F16 weights (the mmproj) may round activations to F16 (a relative 5e-4 per element),
# so numeric.SAME (1e-6, made for the CPU's own paths) is too tight. 1e-4 is the
# cosine >= 0.9999 that issue 12 asks of a remote server, the same order as the 1e-4 the
# vLLM ports report against transformers; it stays at numeric.DIFFERENT, the floor of the
# gap between two different inputs, and a wrong offload (a layer skipped or read twice)
# moves a vector by far more. Not measured here: this machine has no GPU.
GPU_SAME = 1e-4

OFFLOAD = native.supports_gpu_offload()
CPU_I5 = native.BackendDevice("CPU", "Intel Core i5", 0)
RTX = native.BackendDevice("CUDA0", "NVIDIA GeForce RTX 4070", 1)


@pytest.fixture(autouse=True)
def no_gpu_env(monkeypatch):
    monkeypatch.delenv(GPU_ENV, raising=False)


def write_config(home, text: str) -> None:
    cfg = home / "config" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(text)


@pytest.mark.parametrize(
    "value, want",
    [("auto", "auto"), ("AUTO", "auto"), ("off", 0), ("0", 0), ("12", 12), (7, 7), (0, 0)],
)
def test_gpu_setting_values(value, want):
    assert parse_gpu(value, "gpu") == want


@pytest.mark.parametrize("value", ["all", "-1", "1.5", "", "on", True, False, -3, 2.0])
def test_bad_gpu_settings_are_refused_with_what_is_allowed(value):
    with pytest.raises(ConfigError, match="gpu must be auto, off or a number of layers"):
        parse_gpu(value, "gpu")


def test_bad_gpu_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["info", "--gpu", "lots"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --gpu: must be auto, off or a number of layers" in err and "'lots'" in err


def test_bad_gpu_in_config_or_env_is_a_clear_error(isolated_home, monkeypatch, capsys):
    write_config(isolated_home, 'gpu = "fast"\n')
    assert cli.main(["info"]) == 1
    assert "gpu must be auto, off or a number of layers" in capsys.readouterr().err
    write_config(isolated_home, "gpu = 4\n")
    monkeypatch.setenv(GPU_ENV, "-2")
    assert cli.main(["info"]) == 1
    assert f"${GPU_ENV} must be auto, off" in capsys.readouterr().err


def test_decide_device_on_a_gpu_build():
    devices = [CPU_I5, RTX]
    auto = native.decide_device("auto", "auto", True, devices, "AVX2")
    assert (auto.kind, auto.layers, auto.mmproj_gpu) == ("gpu", -1, True)
    assert auto.describe(4) == "GPU: NVIDIA GeForce RTX 4070 (CUDA0), all layers"
    some = native.decide_device(10, "--gpu", True, devices, "AVX2")
    assert (some.kind, some.layers, some.mmproj_gpu) == ("gpu", 10, True)
    assert some.describe() == "GPU: NVIDIA GeForce RTX 4070 (CUDA0), 10 layers"
    off = native.decide_device(0, "--gpu", True, devices, "AVX2")
    assert (off.kind, off.layers, off.mmproj_gpu) == ("cpu", 0, False)
    assert off.describe(4) == "CPU: Intel Core i5 (AVX2, 4 threads)" and "--gpu" in off.why


def test_decide_device_on_a_cpu_only_build():
    auto = native.decide_device("auto", "auto", False, [CPU_I5], "AVX-512")
    assert (auto.kind, auto.layers, auto.mmproj_gpu) == ("cpu", 0, False)
    assert "no GPU offload" in auto.why
    # N is given to llama.cpp as it is (it runs those layers on the CPU); the mmproj stays
    # on the CPU, and the reason says why nothing went to a GPU
    some = native.decide_device(5, "$LAUNCHER_GPU", False, [CPU_I5], "AVX-512")
    assert (some.kind, some.layers, some.mmproj_gpu) == ("cpu", 5, False)
    assert "$LAUNCHER_GPU asks for 5 GPU layers" in some.why
    assert some.describe(2) == "CPU: Intel Core i5 (AVX-512, 2 threads)"
    assert native.decide_device("auto", "auto", False, [], "").describe() == "CPU"
    assert native.decide_device("auto", "auto", True, [], "").describe() == "GPU, all layers"


def test_cpu_isa_needs_both_the_build_and_the_cpu():
    build = frozenset({"AVX2", "AVX512", "AMX_INT8"})
    assert native.cpu_isa(build, frozenset({"avx2", "avx512f", "amx_int8"})) == "AMX"
    assert native.cpu_isa(build, frozenset({"avx2", "avx512f"})) == "AVX-512"
    assert native.cpu_isa(frozenset({"AVX2"}), frozenset({"avx2", "avx512f"})) == "AVX2"
    assert native.cpu_isa(frozenset({"NEON"}), None) == "NEON"  # macOS: no /proc/cpuinfo


@pytest.mark.skipif(OFFLOAD, reason="this llama.cpp build can offload to a GPU")
def test_auto_is_the_cpu_on_this_build():
    device = native.resolve_device()
    assert (device.kind, device.layers, device.mmproj_gpu) == ("cpu", 0, False)
    assert device.why.startswith("auto") and device.describe(2).startswith("CPU: ")


def test_precedence_flag_then_env_then_config_then_auto(isolated_home, monkeypatch):
    assert native.resolve_device().why.startswith("auto")
    write_config(isolated_home, "gpu = 3\n")
    d = native.resolve_device()
    assert d.layers == 3 and "config.toml" in d.why
    write_config(isolated_home, '[models]\ngpu = "off"\n')  # inside [models] too, like threads
    assert native.resolve_device().layers == 0
    monkeypatch.setenv(GPU_ENV, "9")
    d = native.resolve_device()
    assert d.layers == 9 and GPU_ENV in d.why
    d = native.resolve_device(2)  # the flag wins
    assert d.layers == 2 and "--gpu" in d.why
    d = native.resolve_device("auto")  # an explicit auto wins over env and config too
    assert d.layers == (-1 if OFFLOAD else 0) and d.why.startswith("auto")


@pytest.fixture()
def llama_calls(monkeypatch):
    """What the real llama.cpp receives: model, context and mtmd parameters (then the real
    call runs)."""
    import llama_cpp.llama_cpp as ll
    import llama_cpp.mtmd_cpp as mt

    seen: dict[str, list] = {"model": [], "context": [], "mtmd": []}

    def spy(module, name, key, pick):  # type: ignore[no-untyped-def]
        real = getattr(module, name)

        def wrapper(*args):  # type: ignore[no-untyped-def]
            seen[key].append(pick(*args))
            return real(*args)

        monkeypatch.setattr(module, name, wrapper)

    spy(ll, "llama_model_load_from_file", "model", lambda _p, params: params.n_gpu_layers)
    spy(ll, "llama_init_from_model", "context",
        lambda _m, params: (params.op_offload, params.offload_kqv))  # fmt: skip
    spy(mt, "mtmd_init_from_file", "mtmd", lambda _p, _m, params: params.use_gpu)
    return seen


def picture() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))


INPUTS = ["a note about the garden", EmbedInput(text="a chart", images=(picture(),))]


def embed_on(tiny_models, gpu):  # type: ignore[no-untyped-def]
    with Embedder(tiny_models.embedding, tiny_models.mmproj, threads=2, gpu=gpu) as emb:
        return emb.embed(INPUTS), emb.device


@pytest.mark.skipif(OFFLOAD, reason="on a GPU build N layers really go to the GPU")
def test_layers_reach_llama_cpp_and_a_cpu_build_runs_them_on_the_cpu(tiny_models, llama_calls):
    cpu, device = embed_on(tiny_models, 0)
    assert device.kind == "cpu" and llama_calls["model"] == [0]
    assert llama_calls["mtmd"] == [False]
    assert all(c == (False, False) for c in llama_calls["context"])  # nothing to a GPU
    for key in llama_calls:
        llama_calls[key].clear()
    seven, device = embed_on(tiny_models, 7)
    assert llama_calls["model"] == [7] and device.layers == 7 and device.kind == "cpu"
    assert llama_calls["mtmd"] == [False]  # no GPU to put the mmproj on
    assert_same_direction(seven, cpu)  # the same CPU kernels either way
    for key in llama_calls:
        llama_calls[key].clear()
    _, device = embed_on(tiny_models, "auto")
    assert llama_calls["model"] == [0] and llama_calls["mtmd"] == [False]


def test_the_device_is_not_part_of_the_index_identity(tiny_models, tmp_path, capsys):
    """An index built on one device is searched on another without a rebuild."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("the garden gate needs oil")
    flags = ["--model", str(tiny_models.embedding), "--mmproj", str(tiny_models.mmproj)]
    assert cli.main(["index", str(tmp_path / "notes"), "--gpu", "off", *flags]) == 0
    capsys.readouterr()
    assert cli.main(["search", "garden gate", "--json", "--gpu", "3", *flags]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert [h["path"] for h in hits] == [str(tmp_path / "notes" / "a.txt")]


def test_models_and_info_say_which_device_runs_the_model(isolated_home, capsys):
    write_config(isolated_home, "gpu = 0\nthreads = 3\n")
    assert cli.main(["models"]) == 0
    line = next(
        ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("device")
    )
    assert "CPU: " in line and "3 threads" in line and "off (gpu in " in line
    assert cli.main(["info", "--json", "--gpu", "auto"]) == 0
    device = json.loads(capsys.readouterr().out)["device"]
    assert device["layers"] == (-1 if OFFLOAD else 0) and device["why"].startswith("auto")
    assert device["text"].startswith("GPU: " if OFFLOAD else "CPU: ")


def test_the_status_line_shows_the_device():
    from launcher.query import IndexStatus
    from launcher.ui import render_status

    html = render_status(
        IndexStatus(files=3, pending=0, failed=0, device="CPU: X (AVX2, 2 threads)")
    )
    assert '<span data-k="device">CPU: X (AVX2, 2 threads)</span>' in html


@pytest.mark.skipif(not OFFLOAD, reason="this llama.cpp build has no GPU backend (CPU only)")
def test_gpu_vectors_match_the_cpu(tiny_models, llama_calls):
    """Text and image vectors from all layers (and the mmproj) on the GPU point where the
    CPU's do."""
    cpu, device = embed_on(tiny_models, "off")
    assert device.kind == "cpu"
    gpu, device = embed_on(tiny_models, "auto")
    assert device.kind == "gpu" and llama_calls["model"][-1] == -1 and llama_calls["mtmd"][-1]
    assert np.isfinite(gpu).all()
    assert_same_direction(gpu, cpu, GPU_SAME)
