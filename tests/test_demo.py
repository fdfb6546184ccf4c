"""demo_launcher.py end to end on the tiny models: its own index, never the user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from launcher import paths
from launcher.store import default_dir

ROOT = Path(__file__).resolve().parents[1]


def _demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "demo_launcher.py"), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_indexes_its_sample_into_its_own_index(tiny_models):
    models = ["--model", str(tiny_models.embedding), "--mmproj", str(tiny_models.mmproj)]
    first = _demo("--index-only", *models, env={})
    assert first.returncode == 0, first.stderr
    sample = paths.data_dir() / "demo" / "sample"
    n = sum(1 for p in sample.rglob("*") if p.is_file())
    assert n >= 8  # notes, code, a PDF and pictures
    assert f"demo: {n} files indexed ({n} new, 0 failed)" in first.stderr
    assert not default_dir().exists()  # the user's own index is not touched
    again = _demo("--index-only", *models, env={})
    assert again.returncode == 0 and f"{n} files indexed (0 new, 0 failed)" in again.stderr


def test_demo_without_a_model_says_how_to_get_one():
    out = _demo("--index-only", env={"LAUNCHER_MODEL": "none"})
    assert out.returncode == 1
    assert "models pull" in out.stderr and "Traceback" not in out.stderr
