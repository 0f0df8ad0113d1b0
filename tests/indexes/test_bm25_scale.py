"""BM25 at scale: compiled kernels == scipy path, memory-mapped loads, global statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relevo.engine.errors import ConfigError, CorruptIndexError
from relevo.indexes.bm25 import BM25Index, BM25Statistics, Tokenizer, corpus_statistics

pytest.importorskip("numba")

BACKENDS = ("auto", "numba", "numba-taat")


def corpus(n_docs: int, vocab: int, seed: int, zipf: float = 1.3) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [
        [f"t{i}" for i in np.minimum(rng.zipf(zipf, size=int(rng.integers(0, 40))), vocab) - 1]
        for _ in range(n_docs)
    ]


def queries(n: int, vocab: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    out = [
        [f"t{i}" for i in rng.integers(0, vocab, size=int(rng.integers(0, 7)))] for _ in range(n)
    ]
    out.append(["t0", "t0", "t1", "t1", "t1", "nope"])  # repeated and unknown terms
    out.append([])
    return out


def built(docs, **options) -> BM25Index:
    index = BM25Index(**options)
    index.add_tokenized(docs)
    return index


def same(a, b) -> None:
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_docs=st.integers(1, 120),
    vocab=st.integers(2, 60),
    k=st.sampled_from([1, 3, 10, 200]),
    method=st.sampled_from(["lucene", "okapi", "atire"]),
    epsilon=st.sampled_from([0.25, -0.5]),
)
def test_kernels_equal_scipy_path(seed, n_docs, vocab, k, method, epsilon):
    docs = corpus(n_docs, vocab, seed)
    qs = queries(12, vocab + 2, seed + 1)
    rng = np.random.default_rng(seed + 2)
    removed = rng.choice(n_docs, size=int(rng.integers(0, n_docs // 3 + 1)), replace=False)
    allowed = rng.random(n_docs) < 0.6
    ref = built(docs, method=method, epsilon=epsilon, backend="scipy")
    ref.remove(removed)
    want = ref.search_tokenized(qs, k)
    want_f = (
        ref.search_tokenized(qs, k) if not allowed.any() else ref.search(qs, k, allowed=allowed)
    )
    for backend in BACKENDS:
        index = built(docs, method=method, epsilon=epsilon, backend=backend)
        index.remove(removed)
        same(index.search_tokenized(qs, k), want)
        if allowed.any():
            same(index.search(qs, k, allowed=allowed), want_f)
    # Padding: more slots than matches come back as -inf / -1.
    s, p = want
    assert ((p == -1) == np.isneginf(s)).all()


def test_kernels_with_ties_and_padding():
    docs = [["a", "b"], ["b", "a"], ["a"], ["a"], ["c"], []] * 5  # many exact ties
    qs = [["a"], ["a", "b"], ["c", "c"], ["zzz"], []]
    want = built(docs, backend="scipy").search_tokenized(qs, 40)
    for backend in BACKENDS:
        got = built(docs, backend=backend).search_tokenized(qs, 40)
        same(got, want)
    assert (want[1][3] == -1).all() and np.isneginf(want[0][4]).all()


def zipf_corpus(n_docs: int, vocab: int, seed: int) -> list[list[str]]:
    """Lengths 5..60 over a Zipfian vocabulary (exponent 1.07, as the scale benchmark)."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -1.07
    p /= p.sum()
    lengths = rng.integers(5, 60, n_docs)
    ids = rng.choice(vocab, size=int(lengths.sum()), p=p)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [[f"w{i}" for i in ids[bounds[j] : bounds[j + 1]]] for j in range(n_docs)]


def zipf_queries(n: int, vocab: int, rng: np.random.Generator, shortest: int) -> list[list[str]]:
    """``shortest``..8 words from the same Zipfian vocabulary as :func:`zipf_corpus`."""
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -1.07
    p /= p.sum()
    return [
        [f"w{i}" for i in rng.choice(vocab, int(rng.integers(shortest, 9)), p=p)] for _ in range(n)
    ]


@pytest.mark.parametrize("method", ["lucene", "okapi"])
def test_kernels_bit_identical_on_a_zipfian_corpus(method):
    """MaxScore's threshold pre-pass and auto's per-query choice, at a size where both act."""
    docs = zipf_corpus(4000, 3000, 21)
    rng = np.random.default_rng(22)
    qs = zipf_queries(300, 3000, rng, shortest=1)
    qs += [["w0"] * 3 + ["w1"], ["w2999", "w0"], []]
    allowed = rng.random(len(docs)) < 0.7
    ref = built(docs, method=method, backend="scipy")
    ref.remove(rng.choice(len(docs), 200, replace=False))
    for k in (1, 10, 100):
        want = ref.search_tokenized(qs, k)
        want_f = ref.search(qs, k, allowed=allowed)
        for backend in BACKENDS:
            index = built(docs, method=method, backend=backend)
            index.remove(np.flatnonzero(ref._tombstones))
            for got, exp in (
                (index.search_tokenized(qs, k), want),
                (index.search(qs, k, allowed=allowed), want_f),
            ):
                np.testing.assert_array_equal(got[1], exp[1])
                np.testing.assert_array_equal(got[0], exp[0])


def test_kernels_bit_identical_where_the_prepass_cap_binds():
    """Past 65,536 documents MaxScore's pre-pass stops at its cap (not n/8): still exact."""
    docs = zipf_corpus(70_000, 20_000, 31)
    rng = np.random.default_rng(32)
    qs = zipf_queries(150, 20_000, rng, shortest=2)
    want = built(docs, backend="scipy").search_tokenized(qs, 10)
    for backend in ("auto", "numba"):
        got = built(docs, backend=backend).search_tokenized(qs, 10)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


def reference_arrays(docs: list[list[str]], index: BM25Index) -> dict[str, np.ndarray]:
    """The tf and score arrays as the scipy COO -> CSR -> CSC build made them."""
    from scipy import sparse

    vocab: dict[str, int] = {}
    for d in docs:
        for t in d:
            vocab.setdefault(t, len(vocab))
    lengths = np.array([len(d) for d in docs], np.int64)
    rows = np.repeat(np.arange(len(docs)), lengths)
    cols = np.array([vocab[t] for d in docs for t in d], np.int64)
    tf = sparse.csr_matrix(
        (np.ones(len(cols), np.int32), (rows, cols)), shape=(len(docs), len(vocab))
    )
    tf.sum_duplicates()
    df = np.bincount(tf.indices, minlength=len(vocab)).astype(np.float64)
    n = len(docs)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    avgdl = lengths.sum() / n
    norm = index.k1 * (1 - index.b + index.b * lengths / avgdl)
    doc_of = np.repeat(np.arange(n), np.diff(tf.indptr))
    f = tf.data.astype(np.float64)
    contrib = (idf[tf.indices] * (f * (index.k1 + 1) / (f + norm[doc_of]))).astype(np.float32)
    csc = sparse.csr_matrix((contrib, tf.indices, tf.indptr), shape=tf.shape).tocsc()
    return {
        "terms": np.array(list(vocab)),
        "tf.data": tf.data,
        "tf.indices": tf.indices,
        "tf.indptr": tf.indptr,
        "scores.data": csc.data,
        "scores.indices": csc.indices,
        "scores.indptr": csc.indptr,
    }


@pytest.mark.parametrize("chunks", [False, True])
def test_chunked_build_equals_the_scipy_build(monkeypatch, chunks):
    import relevo.indexes.bm25 as bm25

    if chunks:  # many add and rebuild steps, a document straddling none of them
        monkeypatch.setattr(bm25, "_ADD_CHUNK_TOKENS", 97)
        monkeypatch.setattr(bm25, "_REBUILD_CHUNK", 61)
        monkeypatch.setattr(bm25, "_CHECK_CHUNK", 7)
    docs = zipf_corpus(700, 400, 5) + [[]] + zipf_corpus(50, 900, 6)
    want = reference_arrays(docs, BM25Index())
    one = built(docs)
    several = built(docs[:100])
    several.add_tokenized(docs[100:101])
    several.add_tokenized(docs[101:])
    for index in (one, several):
        index._fresh()
        assert index._terms == want["terms"].tolist()
        assert index.vocab == {t: i for i, t in enumerate(index._terms)}
        np.testing.assert_array_equal(index._tf_data, want["tf.data"])
        np.testing.assert_array_equal(index._tf_indices, want["tf.indices"])
        np.testing.assert_array_equal(index._tf_indptr, want["tf.indptr"])
        for name in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(index._scores, name), want[f"scores.{name}"])
        assert index._tf_data.dtype == index._tf_indices.dtype == np.int32
        assert index._scores.indices.dtype == index._scores.indptr.dtype == np.int32


def test_add_tokenized_refuses_bad_lists_and_changes_nothing(monkeypatch):
    import relevo.indexes.bm25 as bm25

    monkeypatch.setattr(bm25, "_CHECK_CHUNK", 3)
    index = built([["a", "b"]])
    before = (index._terms[:], index._tf_data.copy(), index._count())
    from relevo.engine.errors import RequestError

    for bad, number in (([["a"]] * 7 + [["x", 3]], 7), ([["a"], "ab"], 1), ([["a"], None], 1)):
        with pytest.raises(RequestError, match=f"#{number}"):
            index.add_tokenized(bad)
        assert (index._terms, index._tf_data.tolist(), index._count()) == (
            before[0],
            before[1].tolist(),
            before[2],
        )
    index.add_tokenized([("c", "a"), ["a"]])  # tuples are lists of tokens too
    assert index._terms == ["a", "b", "c"]


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="backend"):
        BM25Index(backend="gpu")


# -- memory-mapped load ---------------------------------------------------------------------
def saved(tmp_path, index):
    directory = tmp_path / "idx"
    directory.mkdir()
    params = index.save(directory)
    return directory, json.loads(json.dumps(params))


def mapped(arr) -> bool:
    """True where ``arr`` is a view of a file mapping (not a copy in memory)."""
    import mmap

    base = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def test_mmap_load_is_identical_and_mapped(tmp_path):
    docs = corpus(300, 80, 3)
    qs = queries(30, 82, 4)
    index = built(docs)
    index.remove([1, 5, 7])
    want = index.search_tokenized(qs, 10)
    directory, params = saved(tmp_path, index)
    loaded = BM25Index.load(directory, params)
    for arr in (loaded._scores.data, loaded._scores.indices, loaded._tf_data, loaded._tf_indices):
        assert mapped(arr)
    same(loaded.search_tokenized(qs, 10), want)
    eager = BM25Index.load(directory, params, mmap=False)
    assert not mapped(eager._scores.data)
    same(eager.search_tokenized(qs, 10), want)
    # Writes on a mapped index work (they copy what they change).
    loaded.add_tokenized([["t0", "t1"]])
    index.add_tokenized([["t0", "t1"]])
    same(loaded.search_tokenized(qs, 10), index.search_tokenized(qs, 10))


def test_truncated_payload_is_corrupt(tmp_path):
    directory, params = saved(tmp_path, built(corpus(50, 20, 5)))
    path = directory / "scores.data.npy"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CorruptIndexError, match="rebuild the index"):
        BM25Index.load(directory, params)


def test_index_saved_without_bounds_still_loads(tmp_path):
    index = built(corpus(80, 30, 6))
    qs = queries(10, 32, 7)
    want = index.search_tokenized(qs, 5)
    directory, params = saved(tmp_path, index)
    for name in ("scores.max.npy", "scores.min.npy"):
        (directory / name).unlink()
    params.pop("term_bounds")  # the format before this change
    same(BM25Index.load(directory, params).search_tokenized(qs, 5), want)


# -- global statistics ----------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_shards=st.integers(1, 4),
    method=st.sampled_from(["lucene", "okapi", "atire"]),
)
def test_sharded_topk_equals_single_index(seed, n_shards, method):
    docs = corpus(150, 50, seed, zipf=1.5)
    qs = queries(15, 52, seed + 1)
    whole = built(docs, method=method, backend="scipy")
    want_s, want_p = whole.search_tokenized(qs, 10)
    shard_of = np.random.default_rng(seed).integers(0, n_shards, len(docs))
    shards, rows = [], []
    for s in range(n_shards):
        rows.append(np.flatnonzero(shard_of == s))
        shards.append(built([docs[i] for i in rows[-1]], method=method))
    stats = shards[0].local_statistics().merge(*(x.local_statistics() for x in shards[1:]))
    assert stats == whole.local_statistics()
    for shard in shards:
        shard.set_global_statistics(stats)
    for qi, q in enumerate(qs):
        hits = []
        for shard, r in zip(shards, rows, strict=True):
            s, p = shard.search_tokenized([q], 10)
            hits += [(-float(a), int(r[b])) for a, b in zip(s[0], p[0], strict=True) if b >= 0]
        hits.sort()
        got_p = [d for _, d in hits[:10]]
        got_s = [-a for a, _ in hits[:10]]
        n = int((want_p[qi] >= 0).sum())
        np.testing.assert_allclose(got_s, want_s[qi][:n], rtol=1e-5)
        # Same documents in the same order, except among scores equal up to float32
        # rounding (the shards sum the same contributions, rounded per index).
        want_ids = want_p[qi][:n].tolist()
        for rank in range(n):
            if got_p[rank] != want_ids[rank]:
                assert got_s[rank] == pytest.approx(float(want_s[qi][rank]), rel=1e-5)


def test_statistics_round_trip_and_corpus_statistics():
    texts = ["The cat sat", "a dog and a cat", "", "cats and dogs"]
    tok = Tokenizer()
    stats = corpus_statistics(iter(texts), tok)
    index = BM25Index(tokenizer=tok)
    index.add(texts)
    assert stats == index.local_statistics()
    assert BM25Statistics.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    with pytest.raises(ConfigError):
        BM25Statistics.from_dict({"n_docs": 1, "total_length": 3, "doc_freq": {"x": 5}})
    with pytest.raises(ConfigError):
        BM25Statistics.from_dict({"n_docs": 1})


def test_global_statistics_persist_and_stay_fixed(tmp_path):
    docs = corpus(120, 40, 9)
    qs = queries(12, 42, 10)
    whole = built(docs)
    stats = whole.local_statistics()
    shard = built(docs[:60])
    shard.set_global_statistics(stats)
    want = shard.search_tokenized(qs, 10)
    assert shard.avgdl == pytest.approx(stats.total_length / stats.n_docs)
    directory, params = saved(tmp_path, shard)
    loaded = BM25Index.load(directory, params)
    assert loaded.global_statistics == stats
    same(loaded.search_tokenized(qs, 10), want)
    # Removals and adds keep the global statistics until they are set again.
    loaded.remove([0, 1])
    assert loaded.avgdl == pytest.approx(stats.total_length / stats.n_docs)
    loaded.set_global_statistics(None)
    local = built(docs[:60])
    local.remove([0, 1])
    same(loaded.search_tokenized(qs, 10), local.search_tokenized(qs, 10))


def test_dense_columns_hold_the_frequent_terms_postings_within_budget():
    from relevo.indexes import bm25_kernels as bk

    docs = zipf_corpus(3000, 2000, 41)
    index = built(docs, backend="numba-taat")
    index._fresh()
    sc = index._scores
    col_of, dense = bk.dense_columns(sc.indptr, sc.indices, sc.data, sc.shape[1])
    lengths = np.diff(sc.indptr)
    cols = np.flatnonzero(col_of >= 0)
    assert len(cols) >= 5  # a Zipfian vocabulary has terms in most documents
    assert (lengths[cols] * bk.DENSE_DIV >= sc.shape[1]).all()
    # the most frequent terms first: no term left out is more frequent than one kept
    assert lengths[col_of < 0].max() <= lengths[cols].min()
    assert dense.nbytes <= bk.DENSE_BUDGET * (sc.data.nbytes + sc.indices.nbytes)
    for t in cols[:10]:
        want = np.zeros(sc.shape[1], np.float32)
        a, b = sc.indptr[t], sc.indptr[t + 1]
        want[sc.indices[a:b]] = sc.data[a:b]
        np.testing.assert_array_equal(dense[col_of[t]], want)
    # past DENSE_MAX_DOCS, or with no budget, no columns
    none_of, none = bk.dense_columns(sc.indptr, sc.indices, sc.data, bk.DENSE_MAX_DOCS + 1)
    assert (none_of == -1).all() and none.shape == (1, 1)


@pytest.mark.parametrize(
    ("method", "epsilon"), [("lucene", 0.25), ("okapi", 0.25), ("okapi", -0.5)]
)
def test_dense_columns_change_no_score_bit(monkeypatch, method, epsilon):
    """Term-at-a-time with and without the frequent terms' dense columns: identical.

    ``okapi`` with a negative epsilon gives the frequent terms negative contributions:
    the split's bound must not sum those (a document need not hold every term).
    """
    from relevo.indexes import bm25_kernels as bk

    docs = zipf_corpus(3000, 2000, 43)
    rng = np.random.default_rng(44)
    qs = zipf_queries(200, 2000, rng, shortest=1) + [["w0", "w0", "w5"], ["w1999", "w0"]]
    allowed = rng.random(len(docs)) < 0.5
    removed = rng.choice(len(docs), 100, replace=False)
    results = {}
    for dense in (True, False):
        if not dense:
            monkeypatch.setattr(bk, "DENSE_MAX_DOCS", 0)
        for backend in ("numba-taat", "auto"):
            index = built(docs, method=method, epsilon=epsilon, backend=backend)
            index.remove(removed)
            results[dense, backend] = (
                index.search_tokenized(qs, 10),
                index.search(qs, 10, allowed=allowed),
            )
            assert (index._dense[0] >= 0).any() == dense
    for backend in ("numba-taat", "auto"):
        for got, want in zip(results[True, backend], results[False, backend], strict=True):
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])


def test_planner_knows_the_dense_columns():
    from relevo.engine import planner_formats as pf
    from relevo.indexes import bm25_kernels as bk

    assert (pf.BM25_DENSE_MAX_DOCS, pf.BM25_DENSE_BUDGET) == (bk.DENSE_MAX_DOCS, bk.DENSE_BUDGET)
