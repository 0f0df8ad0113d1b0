"""``Collection.score_documents`` gives the scores a search would: the positive scores margins need."""

from __future__ import annotations

import pytest

from relevo import RequestError


@pytest.mark.parametrize("stage", ["bm25", "faiss-flat", "torch-flat", "faiss-ivf"])
def test_scores_of_given_documents_equal_the_search_scores(engine, docs, stage):
    col = engine.index(docs, stages=[stage], embedder="hashing")
    queries = ["kitten purr", "interest rates inflation"]
    hits = col.search_batch(queries, len(docs))
    ids = [[h.id for h in row][::-1] + ["no-such-doc"] for row in hits]  # any order, unknown ids
    scored = col.score_documents(queries, ids)
    for row, got in zip(hits, scored, strict=True):
        want = {h.id: h.score for h in row}
        assert got[-1] is None
        for doc_id, score in zip([h.id for h in row][::-1], got, strict=False):
            assert score == pytest.approx(want[doc_id], rel=1e-4, abs=1e-5)


def test_documents_outside_the_results_score_zero_in_bm25(engine, docs):
    col = engine.index(docs, stages=["bm25"])
    returned = {h.id for h in col.search("kitten purr", len(docs))}
    others = [d.id for d in docs if d.id not in returned]
    assert others and col.score_documents(["kitten purr"], [others]) == [[0.0] * len(others)]


def test_a_fused_collection_refuses(engine, docs):
    col = engine.index(docs, stages=["bm25", "faiss-flat"], embedder="hashing")
    with pytest.raises(RequestError, match="single-stage"):
        col.score_documents(["cats"], [["d1"]])
