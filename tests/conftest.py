"""Shared test setup: every test runs with its own LAUNCHER_HOME and no model overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_fixtures import tiny_models  # noqa: F401  (session fixture: generated GGUF models)

from launcher import paths

MODEL_ENV_VARS = (
    "LAUNCHER_MODEL",
    "LAUNCHER_MMPROJ",
    "LAUNCHER_RERANKER",
    "LAUNCHER_RERANKER_MMPROJ",
    "LAUNCHER_ENGINE",
    "LAUNCHER_ENGINE_KEY",
    "LAUNCHER_GPU",  # the device: auto unless a test sets it
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LAUNCHER_HOME in a temp dir, model env vars cleared, the Hugging Face hub offline,
    strict about our own bugs."""
    home = tmp_path / "launcher-home"
    monkeypatch.setenv("LAUNCHER_HOME", str(home))
    for name in MODEL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Our own programming errors propagate out of the per-file boundary (launcher.indexer).
    monkeypatch.setenv("LAUNCHER_STRICT", "1")
    # Discovery must not pick up GGUF files a developer keeps in the checkout's models/.
    empty_models = tmp_path / "repo-models"
    monkeypatch.setattr(paths, "repo_models_dir", lambda: empty_models)
    return home
