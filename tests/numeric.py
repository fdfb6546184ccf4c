"""Vector comparisons that hold on any CPU.

llama.cpp picks its kernels by CPU (AVX2, AVX-512, VNNI, NEON...) and by batch shape, so
the same computation can differ in the last float32 bits from one machine to the next
(an Intel AVX-512 box put one of 64 elements 1.2e-5 away from another CPU's). An absolute
per-element tolerance is a bet on the kernel; the direction of a vector is what search
uses. These helpers compare by ``1 - cosine``:

* ``SAME`` (1e-6): the same computation by another path (batch layout, cached prefix,
  split decode). Even every element of a unit vector off by 1e-4 stays below it, while
  a vector read from the wrong token, sequence or prompt is off by more than 1e-3.
* ``DIFFERENT`` (1e-4): two inputs that must give distinguishable vectors are at least
  this far apart.
"""

from __future__ import annotations

import numpy as np

SAME = 1e-6
DIFFERENT = 1e-4


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors, in float64."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cosine`` per row of two equally shaped arrays (one row for 1-D)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    assert a.shape == b.shape, (a.shape, b.shape)
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.asarray(1.0 - cos)


def assert_same_direction(a: np.ndarray, b: np.ndarray, max_gap: float = SAME) -> None:
    """Every row of ``a`` points where the same row of ``b`` does (1 - cos <= max_gap)."""
    g = gap(a, b)
    assert np.all(np.isfinite(g)) and float(g.max()) <= max_gap, (
        f"1 - cos up to {float(g.max()):.3g} (allowed {max_gap:.3g}) in rows "
        f"{np.flatnonzero(~(g <= max_gap)).tolist()}"
    )
