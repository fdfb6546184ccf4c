"""Tiny Qwen3-VL GGUF models generated once per test session (real llama.cpp runs them)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from launcher import synth


@dataclass(frozen=True)
class TinyModels:
    embedding: Path
    mmproj: Path
    rank: Path
    generative: Path
    mmproj_other_width: Path  # a projector for a different text width (does not fit)


def build_tiny_models(folder: Path) -> TinyModels:
    folder.mkdir(parents=True, exist_ok=True)
    other = replace(synth.TINY_TEXT, n_embd=96)
    return TinyModels(
        embedding=synth.write_text_model(folder / "tiny-embedding.gguf", role="embedding", seed=11),
        mmproj=synth.write_mmproj(folder / "tiny-mmproj.gguf", seed=12),
        rank=synth.write_text_model(folder / "tiny-rank.gguf", role="rank", seed=13),
        generative=synth.write_text_model(folder / "tiny-gen.gguf", role="generative", seed=14),
        mmproj_other_width=synth.write_mmproj(
            folder / "other-mmproj.gguf", text_shape=other, seed=15
        ),
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


# Everyday words for generated notes: the same on every run, none of them rare.
FILLER_WORDS = tuple(
    [
        "river",
        "stone",
        "lantern",
        "harbor",
        "meadow",
        "copper",
        "violet",
        "engine",
        "garden",
        "orbit",
        "velvet",
        "canyon",
        "pepper",
        "marble",
        "signal",
        "ladder",
        "timber",
        "falcon",
        "prairie",
        "quartz",
        "ribbon",
        "saddle",
        "thistle",
        "walnut",
        "basket",
        "cobalt",
        "dune",
        "ember",
        "fjord",
        "glacier",
        "hollow",
        "island",
        "jasper",
        "kettle",
    ]  # noqa: SIM905
)
