"""BM25 index: scores against rank_bm25 and a direct numpy formula, persistence, removal."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from relevo.engine.errors import ConfigError, CorruptIndexError, RequestError
from relevo.indexes.bm25 import STOPWORDS_EN, BM25Index, Tokenizer, tokenize

rank_bm25 = pytest.importorskip("rank_bm25")

DATASETS = Path(
    os.environ.get("RELEVO_DATASETS") or Path(__file__).resolve().parents[3] / "shared" / "datasets"
)
SCIFACT = DATASETS / "scifact"


def synthetic_corpus(n_docs: int = 300, vocab: int = 400, seed: int = 0) -> list[list[str]]:
    """Zipf-distributed token lists: a few terms occur in most documents (negative okapi idf)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        length = int(rng.integers(0, 60))  # includes empty documents
        ids = np.minimum(rng.zipf(1.3, size=length), vocab) - 1
        docs.append([f"t{i}" for i in ids])
    return docs


def full_scores(index: BM25Index, queries: list[list[str]]) -> np.ndarray:
    """Score of every document for every query (0 where the index returns no hit)."""
    n = index.count
    scores, pos = index.search_tokenized(queries, k=n)
    out = np.zeros((len(queries), n))
    for i in range(len(queries)):
        hit = pos[i] >= 0
        assert len(set(pos[i][hit].tolist())) == hit.sum()
        out[i, pos[i][hit]] = scores[i][hit]
    return out


def reference_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k by score descending, ties by lower position (the index's documented order)."""
    return np.argsort(-scores, kind="stable")[:k]


def okapi_index(docs: list[list[str]], **options) -> BM25Index:
    index = BM25Index(method="okapi", **options)
    index.add_tokenized(docs)
    return index


# -- (a) okapi == rank_bm25.BM25Okapi -------------------------------------------------
# b < 1: with b == 1 rank_bm25 divides 0 by 0 for empty documents (its scores are NaN).
@pytest.mark.parametrize("k1,b,epsilon", [(1.5, 0.75, 0.25), (0.9, 0.4, 0.5), (2.0, 0.3, 0.0)])
def test_okapi_matches_rank_bm25_on_synthetic_corpus(k1, b, epsilon):
    docs = synthetic_corpus()
    ref = rank_bm25.BM25Okapi(docs, k1=k1, b=b, epsilon=epsilon)
    floor = epsilon * ref.average_idf
    assert sum(v == floor for v in ref.idf.values()) >= 2  # the epsilon floor is exercised
    index = okapi_index(docs, k1=k1, b=b, epsilon=epsilon)
    rng = np.random.default_rng(1)
    queries = [
        [f"t{i}" for i in rng.integers(0, 60, size=int(rng.integers(1, 8)))] for _ in range(40)
    ]
    queries.append(["t0", "t0", "t3", "unknown-term"])  # repeated and unknown tokens
    got = full_scores(index, queries)
    want = np.array([ref.get_scores(q) for q in queries])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_okapi_matches_rank_bm25_with_negative_average_idf():
    # Every term is in most documents, so the mean idf and the epsilon floor are negative.
    docs = [["a", "b"], ["a", "c"], ["a", "b", "c"], ["b", "c", "a"], ["a"]]
    ref = rank_bm25.BM25Okapi(docs)
    assert ref.average_idf < 0
    index = okapi_index(docs, k1=1.5, b=0.75, epsilon=0.25)
    queries = [["a"], ["b", "c"], ["c", "c", "a"]]
    np.testing.assert_allclose(
        full_scores(index, queries), [ref.get_scores(q) for q in queries], rtol=1e-5, atol=1e-6
    )


def _read_scifact(n_docs: int, n_queries: int) -> tuple[list[str], list[str]]:
    if not (SCIFACT / "corpus.jsonl.gz").is_file():
        pytest.skip(f"SciFact not found under {DATASETS} (set RELEVO_DATASETS)")
    texts = []
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append(f"{doc.get('title') or ''} {doc.get('text') or ''}")
            if len(texts) == n_docs:
                break
    test_ids = {
        line.split("\t")[0]
        for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]
    }
    queries = []
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if q["_id"] in test_ids:
                queries.append(q["text"])
            if len(queries) == n_queries:
                break
    return texts, queries


def test_okapi_matches_rank_bm25_on_scifact():
    texts, queries = _read_scifact(500, 20)
    tok = Tokenizer()
    docs, qtoks = tokenize(texts, tok), tokenize(queries, tok)
    ref = rank_bm25.BM25Okapi(docs)  # k1=1.5, b=0.75, epsilon=0.25
    index = okapi_index(docs, k1=1.5, b=0.75, epsilon=0.25)
    want = np.array([ref.get_scores(q) for q in qtoks])
    got = full_scores(index, qtoks)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    scores, pos = index.search_tokenized(qtoks, k=10)
    for i in range(len(qtoks)):
        assert pos[i].tolist() == reference_top(want[i], 10).tolist()
    # The text path tokenizes the same way.
    text_index = BM25Index(method="okapi", k1=1.5, b=0.75)
    text_index.add(texts)
    s2, p2 = text_index.search(queries, k=10)
    np.testing.assert_array_equal(p2, pos)
    np.testing.assert_allclose(s2, scores)


# -- (b) lucene / atire == the formula written out with numpy -----------------------------
def direct_bm25(docs, queries, *, k1, b, method):
    terms = sorted({t for d in docs for t in d})
    col = {t: j for j, t in enumerate(terms)}
    tf = np.zeros((len(docs), len(terms)))
    for i, d in enumerate(docs):
        for t, c in Counter(d).items():
            tf[i, col[t]] = c
    n = len(docs)
    df = (tf > 0).sum(0)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)) if method == "lucene" else np.log(n / df)
    dl = tf.sum(1)
    denom = tf + k1 * (1 - b + b * dl / dl.mean())[:, None]
    part = np.divide(tf * (k1 + 1), denom, out=np.zeros_like(tf), where=tf > 0) * idf
    out = np.zeros((len(queries), n))
    for qi, q in enumerate(queries):
        for t in q:
            if t in col:
                out[qi] += part[:, col[t]]
    return out


@pytest.mark.parametrize("method", ["lucene", "atire"])
@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (0.9, 0.4), (0.0, 0.5)])
def test_lucene_and_atire_match_direct_formula(method, k1, b):
    docs = synthetic_corpus(seed=3)
    index = BM25Index(method=method, k1=k1, b=b)
    index.add_tokenized(docs)
    rng = np.random.default_rng(4)
    queries = [
        [f"t{i}" for i in rng.integers(0, 80, size=int(rng.integers(1, 6)))] for _ in range(30)
    ]
    queries.append(["t1", "t1", "nope"])
    want = direct_bm25(docs, queries, k1=k1, b=b, method=method)
    np.testing.assert_allclose(full_scores(index, queries), want, rtol=1e-5, atol=1e-6)
    scores, pos = index.search_tokenized(queries, k=10)
    for i in range(len(queries)):
        n_hits = int((pos[i] >= 0).sum())
        assert pos[i][:n_hits].tolist() == reference_top(want[i], 10)[:n_hits].tolist()
        assert n_hits == min(10, int((want[i] > 0).sum()))


def test_ties_are_broken_by_lower_position():
    docs = [["x", "y"], ["z"], ["x", "y"], ["x", "y"], ["w"]]
    index = BM25Index()
    index.add_tokenized(docs)
    scores, pos = index.search_tokenized([["x"]], k=2)
    assert pos.tolist() == [[0, 2]]
    assert scores[0, 0] == scores[0, 1]


# -- (c) persistence -------------------------------------------------------------------------
def build_small_index() -> tuple[BM25Index, list[str]]:
    texts = [
        "The quick brown fox jumps over the lazy dog",
        "Foxes are running in the forest",
        "A dog runs faster than a cat",
        "Stemming reduces running and runs to run",
        "Nothing relevant here at all",
    ]
    index = BM25Index(k1=1.2, b=0.75, method="lucene")
    index.add(texts)
    index.remove([4])
    return index, ["running fox", "dog cat", "forest", "unknownword"]


def save(index: BM25Index, directory: Path) -> dict:
    directory.mkdir()
    params = index.save(directory)
    return json.loads(json.dumps(params))  # the manifest stores them as JSON


def test_save_load_round_trip(tmp_path):
    index, queries = build_small_index()
    params = save(index, tmp_path / "idx")
    assert not list((tmp_path / "idx").glob("*.pkl"))
    loaded = BM25Index.load(tmp_path / "idx", params)
    assert loaded.count == index.count == 4
    for k in (1, 3, 10):
        s1, p1 = index.search(queries, k=k)
        s2, p2 = loaded.search(queries, k=k)
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(s1, s2)
    # A loaded index can still grow, and then matches an index built in one go.
    loaded.add(["another fox document"])
    fresh, _ = build_small_index()
    fresh.add(["another fox document"])
    np.testing.assert_array_equal(loaded.search(queries, k=5)[1], fresh.search(queries, k=5)[1])


PAYLOAD_FILES = [
    "vocab.json",
    "scores.data.npy",
    "scores.indices.npy",
    "scores.indptr.npy",
    "scores.max.npy",
    "scores.min.npy",
    "tf.data.npy",
    "tf.indices.npy",
    "tf.indptr.npy",
    "doc_lengths.npy",
    "deleted.npy",
]


@pytest.mark.parametrize("name", PAYLOAD_FILES)
def test_missing_payload_file_is_corrupt_index(tmp_path, name):
    index, _ = build_small_index()
    params = save(index, tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted(PAYLOAD_FILES)
    (tmp_path / "idx" / name).unlink()
    with pytest.raises(CorruptIndexError, match="rebuild the index") as info:
        BM25Index.load(tmp_path / "idx", params)
    assert name in str(info.value)


def test_out_of_range_payload_is_refused(tmp_path):
    index, _ = build_small_index()
    params = save(index, tmp_path / "idx")
    indices = np.load(tmp_path / "idx" / "scores.indices.npy")
    indices[0] = 10_000  # would make the C scoring routine write out of bounds
    np.save(tmp_path / "idx" / "scores.indices.npy", indices, allow_pickle=False)
    with pytest.raises(CorruptIndexError, match=r"scores\.indices\.npy.*rebuild the index"):
        BM25Index.load(tmp_path / "idx", params)


def test_garbled_payload_and_params_are_refused(tmp_path):
    index, _ = build_small_index()
    params = save(index, tmp_path / "idx")
    (tmp_path / "idx" / "tf.data.npy").write_bytes(b"not numpy")
    with pytest.raises(CorruptIndexError, match=r"tf\.data\.npy"):
        BM25Index.load(tmp_path / "idx", params)
    with pytest.raises(CorruptIndexError, match="rebuild the index"):
        BM25Index.load(tmp_path / "idx", {k: v for k, v in params.items() if k != "vocab_size"})


# -- (d) removal ---------------------------------------------------------------------------
def test_remove_hides_documents():
    docs = synthetic_corpus(n_docs=60, seed=5)
    index = okapi_index(docs)
    q = [["t0", "t1", "t2"]]
    _, ranking = index.search_tokenized(q, k=60)
    n_hits = int((ranking[0] >= 0).sum())
    assert n_hits > 13
    gone = ranking[0, [0, 2, 5]].tolist()
    assert index.remove(gone) == 3
    assert index.remove(gone[:1]) == 0  # already removed
    _, after = index.search_tokenized(q, k=10)
    expected = [p for p in ranking[0].tolist() if p not in gone][:10]
    assert after[0].tolist() == expected  # over-fetching refills all 10 slots
    assert index.count == 57


# -- (e) add twice == add once -----------------------------------------------------------------
@pytest.mark.parametrize("method", ["lucene", "okapi", "atire"])
def test_add_twice_equals_add_once(method):
    docs = synthetic_corpus(n_docs=200, seed=6)
    once = BM25Index(method=method)
    once.add_tokenized(docs)
    twice = BM25Index(method=method)
    twice.add_tokenized(docs[:70])
    twice.add_tokenized(docs[70:])
    queries = [["t0", "t5"], ["t12", "t3", "t3"], ["t250"], ["zzz"]]
    np.testing.assert_allclose(full_scores(twice, queries), full_scores(once, queries), rtol=1e-6)
    s1, p1 = once.search_tokenized(queries, k=20)
    s2, p2 = twice.search_tokenized(queries, k=20)
    np.testing.assert_array_equal(p1, p2)


# -- (f) tokenizer -------------------------------------------------------------------------------
def test_tokenizer_stems_lowercases_and_drops_stopwords():
    tok = Tokenizer()
    assert tok(["running Runs", "The cat and the hat"]) == [["run", "run"], ["cat", "hat"]]
    assert tok(["a I x"]) == [[]]  # single characters never match \w\w+
    assert "the" in STOPWORDS_EN
    assert Tokenizer(stopwords=False)(["the Cats"]) == [["the", "cat"]]
    assert Tokenizer(stemmer=None)(["the Cats running"]) == [["cats", "running"]]
    assert Tokenizer(lowercase=False, stemmer=None, stopwords=False)(["The Cats"]) == [
        ["The", "Cats"]
    ]
    assert Tokenizer(token_pattern=r"[a-z]+")(["co-operate 42"]) == [["co", "oper"]]


def test_tokenizer_config_round_trips_and_validates():
    tok = Tokenizer(stopwords=False, stemmer="porter", token_pattern=r"\w+")
    assert Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict()))) == tok
    with pytest.raises(ConfigError, match="unknown stemmer"):
        Tokenizer(stemmer="klingon")(["text"])
    with pytest.raises(ConfigError, match="capture groups"):
        Tokenizer(token_pattern=r"(\w+)")
    with pytest.raises(ConfigError, match="unknown tokenizer options"):
        Tokenizer.from_dict({"lower": True})
    with pytest.raises(RequestError):
        Tokenizer()("a single string")


def test_tokenizer_matches_bm25s():
    bm25s = pytest.importorskip("bm25s")
    stemmer = pytest.importorskip("Stemmer").Stemmer("english")
    texts = [
        "The runners were running quickly, and RAN-ning again!",
        "Cells' proliferation in vivo (2019)",
    ]
    theirs = bm25s.tokenize(
        texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
    )
    assert tokenize(texts) == [list(t) for t in theirs]


# -- (g) padding and other edges ----------------------------------------------------------------
def test_k_larger_than_corpus_pads_with_minus_one():
    index = BM25Index()
    index.add(["apple banana", "banana cherry", "cherry durian"])
    scores, pos = index.search(["banana", "kiwi"], k=5)
    assert pos.shape == scores.shape == (2, 5)
    assert sorted(pos[0, :2].tolist()) == [0, 1]
    assert pos[0, 2:].tolist() == [-1, -1, -1]
    assert np.isneginf(scores[0, 2:]).all()
    assert pos[1].tolist() == [-1] * 5  # no known term: no hits
    assert np.isneginf(scores[1]).all()


def test_empty_index_and_bad_options():
    assert BM25Index().search(["anything"], k=3)[1].tolist() == [[-1, -1, -1]]
    with pytest.raises(ConfigError, match="unknown method"):
        BM25Index(method="bm42")
    with pytest.raises(ConfigError):
        BM25Index(b=1.5)
    with pytest.raises(RequestError):
        BM25Index().add_tokenized(["not a token list"])


def test_plugin_registers_index_and_imports_cheaply():
    from relevo.plugins import bm25 as plugin

    seen = []
    plugin.register_indexes(lambda cls, name=None, **kw: seen.append((cls, name, kw)))
    assert seen[0][:2] == (BM25Index, "bm25") and seen[0][2]["description"]
    code = "import sys, relevo.plugins.bm25; print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'Stemmer')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_scipy_product_gives_the_same_results(monkeypatch):
    import relevo.indexes.csr as csr_module

    docs = synthetic_corpus(n_docs=120, seed=8)
    index = okapi_index(docs)
    queries = [["t0", "t4", "t4"], ["t9", "t30"], ["missing"]]
    fast = index.search_tokenized(queries, k=15)
    monkeypatch.setattr(csr_module, "raw_matmat", lambda: None)
    slow = index.search_tokenized(queries, k=15)
    np.testing.assert_array_equal(fast[1], slow[1])
    np.testing.assert_array_equal(fast[0], slow[0])
