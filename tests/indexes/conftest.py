"""Reference helpers shared by the dense-index tests: test vectors and exact brute-force top-k.

The helpers are plain functions; each is also offered as a (session-scoped) fixture of the
same name, so test modules take them as arguments instead of importing this conftest.
"""

from __future__ import annotations

import numpy as np
import pytest


def _unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` independent Gaussian vectors scaled to unit length, float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def _embeddings(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors with the structure of real embeddings: clustered, low intrinsic rank."""
    rng = np.random.default_rng(seed)
    intrinsic = 12
    centers = rng.standard_normal((20, intrinsic)) * 1.5
    z = centers[rng.integers(0, 20, n)] + rng.standard_normal((n, intrinsic))
    x = z @ (rng.standard_normal((intrinsic, dim)) / np.sqrt(intrinsic))
    x += 0.15 * rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def _brute_force(docs: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip"):
    """Exact search in float64: ``(all scores, top-k scores, top-k positions)``.

    ``metric="ip"`` scores by inner product, ``"l2"`` by negated squared distance; ties
    keep the lower position (stable sort).
    """
    d64, q64 = docs.astype(np.float64), queries.astype(np.float64)
    full = q64 @ d64.T if metric == "ip" else -((q64[:, None, :] - d64[None, :, :]) ** 2).sum(-1)
    order = np.argsort(-full, axis=1, kind="stable")[:, :k]
    return full, np.take_along_axis(full, order, 1), order


def _assert_exact(scores, pos, full, ref_scores, ref_pos, atol=1e-5) -> None:
    """``(scores, pos)`` from an index equal the brute-force reference, up to near-ties."""
    np.testing.assert_allclose(scores, ref_scores, atol=atol)
    # Every returned row really has the score reported for it.
    np.testing.assert_allclose(np.take_along_axis(full, pos, 1), scores, atol=atol)
    # Ids equal brute force except where two reference scores are closer than float32 noise.
    tie = np.zeros_like(ref_scores, dtype=bool)
    gaps = np.abs(np.diff(ref_scores, axis=1)) < atol
    tie[:, 1:] |= gaps
    tie[:, :-1] |= gaps
    assert np.array_equal(pos[~tie], ref_pos[~tie])


def _recall(pos: np.ndarray, ref_pos: np.ndarray) -> float:
    """Mean fraction of the reference top-k found in ``pos``, per query."""
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(pos, ref_pos, strict=True)])
    )


@pytest.fixture(scope="session")
def unit_vectors():
    return _unit_vectors


@pytest.fixture(scope="session")
def embeddings():
    return _embeddings


@pytest.fixture(scope="session")
def brute_force():
    return _brute_force


@pytest.fixture(scope="session")
def assert_exact():
    return _assert_exact


@pytest.fixture(scope="session")
def recall():
    return _recall
