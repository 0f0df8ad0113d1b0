"""Metadata filters: parsed strictly, applied inside every index, never leaking a document."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relevo import Document, RequestError
from relevo.engine.filters import parse_filter, parse_filter_options

FORMATS = ["bm25", "faiss-flat", "faiss-hnsw", "faiss-ivf", "torch-flat"]


def meta_docs(n: int = 60) -> list[Document]:
    topics = ["cats", "code", "plants", "money"]
    words = ["cat", "purr", "code", "language", "plant", "sun", "water", "money", "rate", "bond"]
    return [
        Document(
            f"doc-{i}",
            " ".join(words[(i * j + i) % len(words)] for j in range(1, 6)),
            metadata={
                "topic": topics[i % 4],
                "year": 2000 + i % 25,
                "lang": "en" if i % 3 else "de",
            },
        )
        for i in range(n)
    ]


def test_parse_filter_forms_and_errors():
    f = parse_filter({"topic": "cats", "year": {"gte": 2010, "lt": 2020}, "lang": {"in": ["en"]}})
    assert [t.op for t in f.terms] == ["eq", "gte", "lt", "in"]
    assert parse_filter({}) is None and parse_filter(None) is None
    for bad, msg in [
        ("topic=cats", "JSON object"),
        ({"x": {"like": "a"}}, "unknown operator"),
        ({"x": {"in": "a"}}, "list of values"),
        ({"x": {"gte": True}}, "numbers or strings"),
        ({"x": [1, 2]}, "string, number"),
        ({"x": {}}, "empty condition"),
        ({"x": float("nan")}, "finite"),
    ]:
        with pytest.raises(RequestError, match=msg):
            parse_filter(bad)
    assert parse_filter_options(["year=2020", "lang=en", "ok=true"]) == {
        "year": 2020,
        "lang": "en",
        "ok": True,
    }
    with pytest.raises(RequestError, match="FIELD=VALUE"):
        parse_filter_options(["year"])


def test_types_do_not_coerce():
    f = parse_filter({"year": 2020})
    assert f.matches(Document("a", "", metadata={"year": 2020}))
    assert not f.matches(Document("a", "", metadata={"year": "2020"}))
    assert not parse_filter({"flag": 1}).matches(Document("a", "", metadata={"flag": True}))
    assert not parse_filter({"year": {"ne": 1}}).matches(Document("a", ""))


@pytest.mark.parametrize("fmt", FORMATS)
def test_k_hits_from_the_matching_documents(engine, fmt):
    docs = meta_docs()
    col = engine.index(docs, stages=[fmt], embedder="hashing")
    flt = {"topic": "plants", "lang": "de"}  # 5 of 60 documents
    match = {d.id for d in docs if d.metadata["topic"] == "plants" and d.metadata["lang"] == "de"}
    hits = col.search("plant sun water cat", 3, filter=flt)
    assert hits and {h.id for h in hits} <= match
    if fmt != "faiss-hnsw":  # exact formats fill k from the matches
        assert len(hits) == 3
        # the best matches of the unfiltered ranking, with their scores (corpus statistics
        # such as BM25's idf stay those of the whole collection, as in Lucene)
        full = [h for h in col.search("plant sun water cat", len(docs)) if h.id in match][:3]
        assert [round(h.score, 4) for h in hits] == [round(h.score, 4) for h in full]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    topic=st.sampled_from(["cats", "code", "plants", "money", "none"]),
    lo=st.integers(1995, 2026),
    span=st.integers(0, 30),
    langs=st.lists(st.sampled_from(["en", "de", "fr"]), max_size=3),
    k=st.integers(1, 40),
    deleted=st.lists(st.integers(0, 59), max_size=10),
)
def test_filtered_search_never_returns_an_excluded_id(engine, topic, lo, span, langs, k, deleted):
    docs = meta_docs()
    col = _shared_collection(engine, docs)
    col.delete([f"doc-{i}" for i in deleted])
    try:
        spec: dict = {"topic": {"ne": topic}, "year": {"gte": lo, "lte": lo + span}}
        if langs:
            spec["lang"] = {"in": langs}
        flt = parse_filter(spec)
        gone = {f"doc-{i}" for i in deleted}
        allowed = {d.id for d in docs if flt.matches(d) and d.id not in gone}
        for stages in (["bm25"], ["faiss-flat"], ["torch-flat"], ["bm25", "faiss-flat"]):
            hits = col.search("cat code plant money rate", k, stages=stages, filter=spec)
            assert {h.id for h in hits} <= allowed
            if stages == ["faiss-flat"] or stages == ["torch-flat"]:  # dense: everything scores
                assert len(hits) == min(k, len(allowed))
    finally:
        col.add([d for d in docs if d.id in {f"doc-{i}" for i in deleted}])


_CACHE: dict = {}


def _shared_collection(engine, docs):
    if "col" not in _CACHE:
        _CACHE["col"] = engine.index(
            docs, stages=["bm25", "faiss-flat", "torch-flat"], embedder="hashing"
        )
    return _CACHE["col"]


def test_fused_filters_and_index_masks(engine):
    docs = meta_docs()
    col = engine.index(docs, stages=["bm25", "faiss-flat"], embedder="hashing")
    hits = col.search("money rate bond", 10, filter={"year": {"lt": 2003}})
    assert hits and all(col.docstore.by_id(h.id).metadata["year"] < 2003 for h in hits)
    assert col.search("money", 5, filter={"topic": "nothing"}) == []
    index = col.stages["bm25"].index
    with pytest.raises(RequestError, match="one per row"):
        index.search(["money"], 3, allowed=np.ones(3, bool))
