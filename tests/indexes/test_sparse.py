"""SparseVectorIndex: scores equal a dense numpy dot product; payloads round-trip and are validated."""

from __future__ import annotations

import numpy as np
import pytest

sparse = pytest.importorskip("scipy.sparse")

from relevo import CorruptIndexError, RequestError  # noqa: E402
from relevo.indexes.sparse import SparseVectorIndex, to_rows  # noqa: E402


def random_rows(n: int, vocab: int, density: float, seed: int):
    m = sparse.random(n, vocab, density=density, format="csr", random_state=seed, dtype=np.float32)
    m.data *= 3.0
    return m


def reference(q, d, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense top-k: score descending, then position; documents scoring 0 are not hits."""
    width = max(q.shape[1], d.shape[1])
    qd = np.zeros((q.shape[0], width), np.float64)
    qd[:, : q.shape[1]] = q.toarray()
    dd = np.zeros((d.shape[0], width), np.float64)
    dd[:, : d.shape[1]] = d.toarray()
    full = qd @ dd.T
    out_s = np.full((q.shape[0], k), -np.inf)
    out_p = np.full((q.shape[0], k), -1)
    for i, row in enumerate(full):
        hit = np.flatnonzero(row != 0)
        order = hit[np.lexsort((hit, -row[hit]))][:k]
        out_s[i, : len(order)] = row[order]
        out_p[i, : len(order)] = order
    return out_s, out_p


@pytest.fixture
def docs():
    return random_rows(300, 500, 0.03, 1)


@pytest.fixture
def queries():
    # wider than the documents' vocabulary: unknown term ids must be ignored
    return random_rows(40, 520, 0.02, 2)


def test_scores_equal_dense_numpy(docs, queries):
    index = SparseVectorIndex()
    index.add_vectors(docs)
    assert index.count == 300 and index.nnz == docs.nnz
    scores, pos = index.search_vectors(queries, 10)
    ref_s, ref_p = reference(queries, docs, 10)
    np.testing.assert_array_equal(pos, ref_p)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5)


def test_mapping_input_batches_and_removal(docs, queries):
    rows = [
        dict(zip(docs[i].indices.tolist(), docs[i].data.tolist(), strict=True)) for i in range(300)
    ]
    index = SparseVectorIndex()
    index.add_vectors(rows[:120])
    index.add_vectors(rows[120:])  # two adds equal one
    whole = SparseVectorIndex()
    whole.add_vectors(docs)
    a = index.search_vectors(queries, 7)
    b = whole.search_vectors(queries, 7)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    top = int(a[1][0, 0])
    assert index.remove([top]) == 1
    s2, p2 = index.search_vectors(queries[:1], 7)
    assert top not in p2[0]
    assert index.document_vector(0) == pytest.approx(rows[0])


def test_rows_are_canonicalised_and_validated():
    rows = to_rows([{3: 1.0, 1: 2.0, 5: 0.0}, {}])
    assert rows.indices.tolist() == [1, 3] and rows.indptr.tolist() == [0, 2, 2]
    assert rows.data.dtype == np.float32 and rows.indices.dtype == np.int32
    for bad in ([{-1: 1.0}], [{1: float("nan")}], [{"cat": 1.0}], {1: 1.0}, [[1, 2]]):
        with pytest.raises(RequestError):
            to_rows(bad)
    index = SparseVectorIndex()
    with pytest.raises(RequestError, match="pre-encoded"):
        index.add(["a text needs an encoder"])


def test_empty_and_unmatched_queries():
    index = SparseVectorIndex()
    s, p = index.search_vectors([{1: 1.0}], 3)
    assert (p == -1).all() and np.isneginf(s).all()
    index.add_vectors([{1: 1.0}, {2: 2.0}])
    s, p = index.search_vectors([{7: 1.0}, {}, {2: 0.5, 1: 1.0}], 3)
    assert (p[:2] == -1).all()
    assert p[2].tolist() == [0, 1, -1] and s[2, :2].tolist() == [1.0, 1.0]


def test_save_load_round_trip(tmp_path, docs, queries):
    index = SparseVectorIndex()
    index.add_vectors(docs)
    index.remove([5])
    params = index.save(tmp_path)
    assert params["n_docs"] == 300 and params["nnz"] == docs.nnz
    assert not list(tmp_path.glob("*.pkl"))
    loaded = SparseVectorIndex.load(tmp_path, params)
    assert loaded.count == 299
    a, b = index.search_vectors(queries, 10), loaded.search_vectors(queries, 10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    loaded.add_vectors(docs[:3])  # a loaded (memory-mapped) index still grows
    assert loaded.count == 302


@pytest.mark.parametrize(
    ("stem", "corrupt"),
    [
        ("doc.indices", lambda a: np.where(a == a.max(), 10**6, a).astype(np.int32)),
        ("doc.indices", lambda a: a.astype(np.int64)),
        ("doc.indptr", lambda a: a[::-1].copy()),
        ("doc.data", lambda a: np.where(np.arange(len(a)) == 0, np.nan, a).astype(np.float32)),
        ("doc.data", lambda a: a[:-1]),
        ("deleted", None),
    ],
)
def test_corrupt_payload_refused(tmp_path, docs, stem, corrupt):
    index = SparseVectorIndex()
    index.add_vectors(docs)
    params = index.save(tmp_path)
    path = tmp_path / f"{stem}.npy"
    if corrupt is None:
        path.unlink()
    else:
        np.save(path, corrupt(np.load(path)), allow_pickle=False)
    with pytest.raises(CorruptIndexError):
        SparseVectorIndex.load(tmp_path, params)


def test_bad_params_refused(tmp_path, docs):
    index = SparseVectorIndex()
    index.add_vectors(docs)
    params = index.save(tmp_path)
    with pytest.raises(CorruptIndexError):
        SparseVectorIndex.load(tmp_path, {**params, "n_terms": 3})
    with pytest.raises(CorruptIndexError):
        SparseVectorIndex.load(tmp_path, {k: v for k, v in params.items() if k != "nnz"})
