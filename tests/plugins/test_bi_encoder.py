"""``bi-encoder:EMBEDDER``: any embedder as a pointwise reranker (and a MarginMSE teacher)."""

from __future__ import annotations

import numpy as np
import pytest

from relevo import ConfigError, Hit, RelevoError
from relevo.engine.rerank import Reranking
from relevo.plugins.bi_encoder import BiEncoderReranker
from relevo.testing import HashingEmbedder, tiny_corpus

DOCS = [d.content for d in tiny_corpus()]


def test_scores_are_the_cosines_of_query_and_document_embeddings(engine):
    reranker = engine.reranker("bi-encoder:hashing")
    assert isinstance(reranker, BiEncoderReranker)
    query = "a kitten is a small cat"
    emb = HashingEmbedder()
    q = emb.embed([query], kind="query")[0]
    d = emb.embed(DOCS, kind="document")
    want = (d @ q) / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
    assert reranker.score(query, DOCS) == pytest.approx(want.tolist(), abs=1e-6)
    assert reranker.score(query, []) == []
    assert reranker.describe()["embedder"]["name"] == "hashing"


def test_query_and_document_are_embedded_as_such():
    # Prefixes differ per kind: a query equal to a document's text scores below 1
    # because it is embedded with the query prefix.
    emb = HashingEmbedder(query_prefix="zzq zzq zzq ", document_prefix="")
    reranker = BiEncoderReranker(emb)
    plain = BiEncoderReranker(HashingEmbedder())
    assert plain.score(DOCS[0], [DOCS[0]])[0] == pytest.approx(1.0, abs=1e-6)
    assert reranker.score(DOCS[0], [DOCS[0]])[0] < 0.99


def test_document_embeddings_are_cached_and_evicted():
    emb = HashingEmbedder()
    reranker = BiEncoderReranker(emb, cache_size=3)
    first = reranker.score("cat", DOCS[:3])
    calls = emb.calls
    assert reranker.score("cat", DOCS[:3]) == first
    assert emb.calls == calls + 1  # the query only
    reranker.score("cat", DOCS[3:5])  # evicts the two oldest
    assert len(reranker._cache) == 3 and DOCS[0] not in reranker._cache
    # no cache, repeated texts: still one row per input, in order
    nocache = BiEncoderReranker(HashingEmbedder(), cache_size=0)
    got = nocache.score("cat", [DOCS[1], DOCS[0], DOCS[1]])
    assert got[0] == got[2] and got[:2] == first[1::-1] and not nocache._cache


def test_reranks_through_the_host(engine):
    reranker = engine.create("reranker", "bi-encoder", embedder=HashingEmbedder(dim=4096))
    hits = [Hit(id=d.id, score=0.0, rank=i, text=d.content) for i, d in enumerate(tiny_corpus(), 1)]
    result = Reranking(reranker, strategy="pointwise")("kitten small cat purrs", hits)
    assert sorted(h.id for h in result.hits) == sorted(h.id for h in hits)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert result.hits[0].text is not None and "kitten" in result.hits[0].text.lower()


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("bi-encoder", {}, "needs an embedder"),
        ("bi-encoder:hashing", {"cache_size": -1}, "cache_size"),
        ("bi-encoder:hashing", {"batch_size": 0}, "batch_size"),
        ("bi-encoder:no-such-embedder", {}, "no-such-embedder"),
    ],
)
def test_bad_options_are_clear_errors(engine, name, options, message):
    with pytest.raises(RelevoError, match=message):
        engine.create("reranker", name, **options)


def test_an_object_that_is_not_an_embedder_is_refused():
    with pytest.raises(ConfigError, match="must be an embedder"):
        BiEncoderReranker(object())  # type: ignore[arg-type]


def test_document_vectors_persist_across_instances_per_model(tmp_path, monkeypatch):
    monkeypatch.setenv("RELEVO_CACHE_DIR", str(tmp_path))
    first = BiEncoderReranker(HashingEmbedder())
    want = first.score("cat", DOCS)
    stores = list((tmp_path / "text-embeddings").glob("*.sqlite"))
    assert len(stores) == 1
    emb = HashingEmbedder()
    again = BiEncoderReranker(emb)  # new process, in effect: empty memory cache
    assert again.score("cat", DOCS) == pytest.approx(want, abs=1e-7)
    assert emb.calls == 1  # the query; every document came from disk
    # another model (different fingerprint) has its own store, never these vectors
    wide = HashingEmbedder(dim=128)
    BiEncoderReranker(wide).score("cat", DOCS[:2])
    assert wide.calls == 2 and len(list((tmp_path / "text-embeddings").glob("*.sqlite"))) == 2
    # persist=False writes nothing
    monkeypatch.setenv("RELEVO_CACHE_DIR", str(tmp_path / "off"))
    BiEncoderReranker(HashingEmbedder(), persist=False).score("cat", DOCS)
    assert not (tmp_path / "off").exists()


def test_a_damaged_store_is_left_alone_and_scores_still_come(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RELEVO_CACHE_DIR", str(tmp_path))
    want = BiEncoderReranker(HashingEmbedder(), persist=False).score("cat", DOCS)
    BiEncoderReranker(HashingEmbedder()).score("dog", DOCS[:1])
    (store,) = (tmp_path / "text-embeddings").glob("*.sqlite")
    store.write_bytes(b"not a database" * 100)
    emb = HashingEmbedder()
    with caplog.at_level("WARNING"):
        got = BiEncoderReranker(emb).score("cat", DOCS)
    assert got == pytest.approx(want, abs=1e-7) and emb.calls == 2
    assert "text embedding cache" in caplog.text
    assert store.read_bytes() == b"not a database" * 100


def test_an_unusable_cache_folder_only_turns_persistence_off(tmp_path, monkeypatch, caplog):
    # A cache path below a regular file cannot be created (also as root, unlike chmod).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("RELEVO_CACHE_DIR", str(blocker / "cache"))
    with caplog.at_level("WARNING"):
        got = BiEncoderReranker(HashingEmbedder()).score("cat", DOCS)
    assert len(got) == len(DOCS) and "is off" in caplog.text
    assert blocker.read_text() == "x"
