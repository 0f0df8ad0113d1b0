"""torch-flat: exact search as matmul + top-k, checked against numpy brute force."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from relevo.engine.errors import (  # noqa: E402 - after the importorskip
    ConfigError,
    CorruptIndexError,
    DimensionError,
    MissingDependencyError,
)
from relevo.indexes.torch_index import TorchFlatIndex  # noqa: E402

DIM = 48
N_DOCS = 1500
N_QUERIES = 40
K = 10


@pytest.fixture(scope="module")
def data(unit_vectors) -> tuple[np.ndarray, np.ndarray]:
    x = unit_vectors(N_DOCS + N_QUERIES, DIM, seed=3)
    return x[:N_DOCS], x[N_DOCS:]


def save_load(index: TorchFlatIndex, directory: Path) -> TorchFlatIndex:
    directory.mkdir()
    params = json.loads(json.dumps(index.save_payload(directory)))
    return TorchFlatIndex.load_payload(directory, params)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("score_budget", [1 << 26, 997])  # one chunk / ~25 rows per chunk
def test_equals_brute_force(data, metric, score_budget, brute_force, assert_exact):
    docs, queries = data
    index = TorchFlatIndex(metric=metric, device="cpu", score_budget=score_budget)
    index.add(docs[:700])
    index.add(docs[700:])  # several adds are concatenated
    scores, pos = index.search(queries, K)
    assert_exact(
        scores, pos, *brute_force(docs, queries, K, metric), atol=1e-4 if metric == "l2" else 1e-5
    )
    assert index.describe()["dtype_used"] == "float32"
    assert index.describe()["device_used"] == "cpu"


def test_k_larger_than_collection_is_padded(data):
    docs, queries = data
    index = TorchFlatIndex(device="cpu")
    index.add(docs[:5])
    scores, pos = index.search(queries[:2], 8)
    assert (pos[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert sorted(pos[0, :5]) == [0, 1, 2, 3, 4]


def test_save_load_round_trip_is_memory_mapped(data, tmp_path):
    docs, queries = data
    index = TorchFlatIndex(device="cpu")
    index.instance_name = "torch-flat"  # stamped by the host
    index.add(docs)
    before = index.search(queries, K)
    loaded = save_load(index, tmp_path / "ix")
    assert isinstance(loaded._vectors, np.memmap)
    after = loaded.search(queries, K)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert loaded.describe()["name"] == "torch-flat"
    loaded.add(docs[:3])  # appending to a read-only mapping works
    assert loaded.count == N_DOCS + 3
    np.testing.assert_array_equal(loaded.search(queries, K)[1][:, 0], before[1][:, 0])


def test_empty_round_trip(tmp_path):
    index = TorchFlatIndex(dim=DIM)
    loaded = save_load(index, tmp_path / "ix")
    assert loaded.count == 0
    assert (loaded.search(np.zeros((1, DIM), np.float32), 2)[1] == -1).all()


def test_remove(data, brute_force):
    docs, queries = data
    index = TorchFlatIndex(device="cpu")
    index.add(docs)
    _, ref = index.search(queries, K)
    gone = np.unique(ref[:, 0])
    index.remove(gone)
    _, pos = index.search(queries, K)
    assert not np.isin(pos, gone).any() and (pos >= 0).all()
    keep = np.setdiff1d(np.arange(N_DOCS), gone)
    _, _, ref_kept = brute_force(docs[keep], queries, K)
    np.testing.assert_array_equal(pos, keep[ref_kept])


def test_corrupt_payload(data, tmp_path):
    docs, _ = data
    index = TorchFlatIndex(device="cpu")
    index.add(docs)
    directory = tmp_path / "ix"
    directory.mkdir()
    params = index.save_payload(directory)
    with pytest.raises(CorruptIndexError, match="manifest says"):
        TorchFlatIndex.load_payload(directory, {**params, "ntotal": N_DOCS - 1})
    (directory / "vectors.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CorruptIndexError, match=r"vectors\.npy.*rebuild"):
        TorchFlatIndex.load_payload(directory, params)
    np.save(directory / "vectors.npy", np.zeros((N_DOCS, DIM), np.float64))
    with pytest.raises(CorruptIndexError, match="float64"):
        TorchFlatIndex.load_payload(directory, params)


def test_dimension_mismatch(data):
    docs, _ = data
    index = TorchFlatIndex(device="cpu")
    index.add(docs)
    with pytest.raises(DimensionError):
        index.add(np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(DimensionError):
        index.search(np.zeros((2, DIM - 1), np.float32))


def test_option_validation():
    with pytest.raises(ConfigError, match="metric"):
        TorchFlatIndex(metric="cos")
    with pytest.raises(ConfigError, match="device"):
        TorchFlatIndex(device="mps")
    with pytest.raises(ConfigError, match="dtype"):
        TorchFlatIndex(dtype="bfloat16")
    index = TorchFlatIndex(device="cpu", dtype="float16")
    index.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ConfigError, match="float16"):
        index.search(np.eye(4, dtype=np.float32))


def test_cuda_without_gpu_is_a_clear_error(data):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    index = TorchFlatIndex(device="cuda")
    index.add(data[0])
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        index.search(data[1], K)


def test_missing_torch_names_the_extra(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    index = TorchFlatIndex()
    index.add(data[0][:4])
    with pytest.raises(MissingDependencyError, match=r"relevo\[torch\]"):
        index.search(data[1], 2)


@pytest.mark.gpu
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_cuda_fp16_matches_brute_force(data, tmp_path, metric, brute_force, assert_exact):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    docs, queries = data
    full, ref_scores, ref_pos = brute_force(docs, queries, K, metric)
    index = TorchFlatIndex(metric=metric, score_budget=5000)  # auto -> cuda, float16, chunked
    index.add(docs)
    scores, pos = index.search(queries, K)
    assert index.describe()["device_used"].startswith("cuda")
    assert index.describe()["dtype_used"] == "float16"
    # fp16 storage, fp32 rescoring: scores within ~1e-3, ids equal up to near-ties.
    assert_exact(scores, pos, full, ref_scores, ref_pos, atol=2e-3)
    exact = TorchFlatIndex(metric=metric, device="cuda", dtype="float32")
    exact.add(docs)
    assert_exact(*exact.search(queries, K), full, ref_scores, ref_pos, atol=1e-4)
    loaded = save_load(index, tmp_path / f"ix-{metric}")
    np.testing.assert_array_equal(loaded.search(queries, K)[1], pos)
