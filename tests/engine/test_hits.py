"""The lazy result sequence of a search: same hits as an eager list, made on first read."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from relevo import Document, Engine, Hit, Hits
from relevo.testing import HashingEmbedder

ROWS = [Document(id=f"d{i}", text=f"text {i}", title=f"title {i}") for i in range(6)]


def make(scores: list[float], pos: list[int], *, with_text: bool = True) -> Hits:
    return Hits(np.array([scores], np.float64), np.array([pos], np.int64), 0, ROWS, with_text)


def test_hits_equal_the_eager_list() -> None:
    hits = make([3.0, 2.0, 1.0], [4, 0, 2])
    want = [
        Hit("d4", 3.0, 1, "title 4", "text 4"),
        Hit("d0", 2.0, 2, "title 0", "text 0"),
        Hit("d2", 1.0, 3, "title 2", "text 2"),
    ]
    assert hits == want
    assert list(hits) == want
    assert hits[0] == want[0] and hits[-1] == want[-1]
    assert hits[1:] == want[1:]
    assert len(hits) == 3
    assert hits.ids == ["d4", "d0", "d2"]
    assert hits.scores == [3.0, 2.0, 1.0]
    with pytest.raises(AttributeError):
        hits[0].score = 9.0  # type: ignore[misc]


def test_padding_is_dropped_and_text_is_optional() -> None:
    hits = make([5.0, -np.inf, -np.inf], [1, -1, -1], with_text=False)
    assert len(hits) == 1
    assert hits.ids == ["d1"]
    assert hits == [Hit("d1", 5.0, 1)]
    empty = make([-np.inf], [-1])
    assert len(empty) == 0 and list(empty) == [] and empty == []


def test_nothing_is_made_before_a_read() -> None:
    hits = make([1.0, 0.5], [3, 5])
    _ = hits.ids, hits.scores, len(hits)
    assert hits._hits is None  # ids/scores/len read the arrays only
    first = hits[0]
    assert hits._hits is not None and hits[0] is first  # made once, then kept


def test_pickle_and_of_round_trip() -> None:
    hits = make([2.0, 1.0], [0, 1])
    back = pickle.loads(pickle.dumps(hits))
    assert isinstance(back, Hits) and back == hits
    fused = Hit("d1", 0.5, 1, stages={"bm25": 2, "torch-flat": 1})
    again = pickle.loads(pickle.dumps(fused))
    assert again == fused and dict(again.stages) == {"bm25": 2, "torch-flat": 1}
    with pytest.raises(TypeError):
        again.stages["bm25"] = 3  # type: ignore[index]  # still read-only
    wrapped = Hits.of(list(hits))
    assert wrapped == hits and wrapped.ids == ["d0", "d1"] and wrapped.scores == [2.0, 1.0]
    assert hits != make([2.0, 1.0], [1, 0])
    assert (hits == "d0") is False


def test_collection_results_match_the_index_arrays() -> None:
    engine = Engine(load_entrypoints=False)
    docs = [Document(id=f"doc-{i}", text=f"alpha beta {i} gamma" * (i % 3 + 1)) for i in range(40)]
    emb = HashingEmbedder(dim=16)
    col = engine.index(docs, stages=["torch-flat"], embedder=emb)
    queries = ["alpha 3", "gamma beta 7", "beta"]
    scores, pos = col.stages["torch-flat"].index.search(emb.embed(queries, kind="query"), 5)
    results = col.search_batch(queries, 5)
    for row, hits in enumerate(results):
        assert isinstance(hits, Hits)
        assert hits.ids == [docs[p].id for p in pos[row]]
        np.testing.assert_allclose(hits.scores, scores[row], rtol=1e-6)
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert [h.text for h in hits] == [docs[p].text for p in pos[row]]
    single = col.search("gamma beta 7", 5, with_text=False)
    assert single.ids == results[1].ids and all(h.text == "" for h in single)


def test_embed_reports_progress_for_a_single_batch_too() -> None:
    emb = HashingEmbedder(dim=8)
    seen: list[int] = []
    emb.embed(["one text", "two"], kind="document", progress=seen.append)
    assert seen == [2]
    seen.clear()
    emb.embed([f"t{i}" for i in range(70)], kind="document", batch_size=32, progress=seen.append)
    assert sum(seen) == 70 and len(seen) == 3
