"""Collections end to end on the tiny corpus: build, search, fuse, save, load, refuse bad input."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from relevo import (
    ConfigError,
    CorruptIndexError,
    Document,
    Engine,
    IndexFormatError,
    IndexMismatchError,
    RequestError,
)
from relevo.engine.fusion import rrf
from relevo.engine.manifest import live_directory
from relevo.testing import HashingEmbedder
from relevo.testing import tiny_corpus as tiny_docs

ALL_FORMATS = ["bm25", "faiss-flat", "faiss-hnsw", "torch-flat"]


def test_bm25_collection_finds_the_obvious_document(engine, docs):
    col = engine.index(docs, stages=["bm25"])
    hits = col.search("kitten purr", k=3)
    assert hits[0].id == "d3"
    assert {h.id for h in hits} == {"d1", "d3"}  # the only documents with a query term
    assert [h.rank for h in hits] == [1, 2]
    assert hits[0].title == "Kittens" and "juvenile" in hits[0].text


def test_dense_and_hybrid_with_hashing_embedder(engine, docs):
    col = engine.index(docs, stages=["bm25", "faiss-flat"], embedder="hashing")
    dense = col.search("interest rates inflation", k=3, stages=["faiss-flat"])
    assert dense[0].id in {"d10", "d11", "d12"}
    fused = col.search("interest rates inflation", k=5)
    bm25 = col.search("interest rates inflation", k=5, stages=["bm25"])
    # fused scores are RRF sums over both stages
    top = fused[0]
    expected = sum(1 / (60 + r) for r in top.stages.values())
    assert top.score == pytest.approx(expected)
    assert set(top.stages) == {"bm25", "faiss-flat"}
    assert {h.id for h in fused[:2]} & {h.id for h in bm25[:2]}


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_save_load_round_trip(engine, docs, tmp_path, fmt):
    col = engine.index(docs, stages=[fmt], embedder="hashing")
    before = col.search_batch(["cats purr", "programming language", "sunlight plants"], k=5)
    path = engine.save(col, tmp_path / "idx")
    loaded = engine.load(path)
    after = loaded.search_batch(["cats purr", "programming language", "sunlight plants"], k=5)
    assert [[h.id for h in r] for r in after] == [[h.id for h in r] for r in before]
    for a, b in zip(after, before, strict=True):
        assert np.allclose([h.score for h in a], [h.score for h in b])
    man = json.loads((live_directory(path) / "manifest.json").read_text())
    assert man["format"] == "relevo-collection" and man["count"] == len(docs)
    assert man["corpus_checksum"] == col.corpus_checksum
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dirs left


def test_manifest_records_embedder_and_refuses_other(engine, docs, tmp_path):
    col = engine.index(docs, stages=["faiss-flat"], embedder="hashing")
    path = engine.save(col, tmp_path / "idx")
    stages = live_directory(path) / "stages"
    stage_man = json.loads(next(stages.iterdir()).joinpath("manifest.json").read_text())
    assert stage_man["embedder"]["name"] == "hashing" and stage_man["dim"] == 64
    with pytest.raises(IndexMismatchError, match="built with embedder 'hashing'"):
        engine.load(path, embedder="minilm")
    # same name, other dimension -> refused as well
    other = HashingEmbedder(dim=32)
    other.instance_name = "hashing"
    with pytest.raises(IndexMismatchError, match="64-d"):
        engine.load(path, embedder=other)


def test_dimension_mismatch_on_add_is_clear(engine):
    index = engine.create("index", "faiss-flat")
    index.add(np.eye(4, 8, dtype=np.float32))
    with pytest.raises(Exception, match="8-d") as info:
        index.add(np.eye(2, 5, dtype=np.float32))
    assert type(info.value).__name__ == "DimensionError"


def test_corrupt_manifest_is_refused(engine, docs, tmp_path):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    live = live_directory(path)
    (live / "manifest.json").write_text("{not json", "utf-8")
    with pytest.raises(CorruptIndexError, match="not valid JSON"):
        engine.load(path)
    (live / "manifest.json").unlink()
    with pytest.raises(CorruptIndexError, match="no manifest.json"):
        engine.load(path)
    with pytest.raises(IndexFormatError, match="not an index directory"):
        engine.load(tmp_path / "missing")


def test_count_mismatch_and_corrupt_docstore(engine, docs, tmp_path):
    path = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx")
    man = json.loads((live_directory(path) / "manifest.json").read_text())
    man["count"] = 99
    (live_directory(path) / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CorruptIndexError, match="manifest says 99"):
        engine.load(path)
    path2 = engine.save(engine.index(docs, stages=["bm25"]), tmp_path / "idx2")
    (live_directory(path2) / "docstore.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(CorruptIndexError, match="docstore"):
        engine.load(path2)


def test_failed_build_leaves_nothing_and_keeps_old_index(engine, docs, tmp_path, monkeypatch):
    path = engine.save(engine.index(docs[:3], stages=["bm25"]), tmp_path / "idx")
    col = engine.index(docs, stages=["bm25"])
    stage = next(iter(col.stages.values()))

    def explode(directory):
        (directory / "partial.bin").write_bytes(b"x")
        raise OSError("disk full")

    monkeypatch.setattr(stage.index, "save_payload", explode)
    with pytest.raises(OSError, match="disk full"):
        engine.save(col, path, overwrite=True)
    assert len(engine.load(path)) == 3  # the old index is intact
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # and no temporary directory is left
    with pytest.raises(IndexFormatError, match="already exists"):
        engine.save(engine.index(docs, stages=["bm25"]), path)


def test_remove_hides_documents(engine, docs):
    col = engine.index(docs, stages=["bm25"])
    stage = col.stages["bm25"]
    assert col.search("kitten", k=1)[0].id == "d3"
    stage.index.remove([col.docstore.position("d3")])
    assert "d3" not in [h.id for h in col.search("kitten purr", k=10)]


def test_bad_requests_are_refused(engine, docs):
    col = engine.index(docs, stages=["bm25"])
    for bad_k in (0, -1, 10**6):
        with pytest.raises(RequestError, match="k"):
            col.search("cats", k=bad_k)
    with pytest.raises(RequestError, match="empty"):
        col.search("   ")
    with pytest.raises(RequestError, match="unknown stage"):
        col.search("cats", stages=["faiss-flat"])
    with pytest.raises(RequestError, match="expected str"):
        col.search_batch(["ok", 3])
    # k beyond the corpus is not an error: BM25 returns every document that matches ("cats"
    # stems to "cat": d1 "Cats ..." and d3 "... a juvenile cat"), and nothing else
    matching = [d.id for d in docs if re.search(r"\bcats?\b", d.content.lower())]
    assert matching == ["d1", "d3"]
    assert sorted(h.id for h in col.search("cats", k=500)) == matching
    # a dense stage scores every document, so it returns the whole corpus
    dense = engine.index(docs, stages=["faiss-flat"], embedder="hashing")
    assert sorted(h.id for h in dense.search("cats", k=500)) == sorted(d.id for d in docs)


def test_index_refuses_bad_configuration(engine, docs):
    with pytest.raises(ConfigError, match="at least one"):
        engine.index(docs, stages=[])
    with pytest.raises(ConfigError, match="not among the stages"):
        engine.index(docs, stages=["bm25"], index_options={"faiss-ivf": {"nprobe": 2}})
    with pytest.raises(ConfigError, match="expected relevo.Document"):
        engine.index([{"id": "x"}], stages=["bm25"])
    with pytest.raises(ConfigError, match="takes no embedder"):
        engine.index(docs, stages=["bm25@hashing"])


def test_embeddings_are_cached_per_corpus_and_model(engine, docs):
    emb = engine.embedder("hashing")
    engine.index(docs, stages=["faiss-flat"], embedder="hashing")
    calls = emb.calls
    engine.index(docs, stages=["faiss-flat", "torch-flat"], embedder="hashing")
    assert emb.calls == calls  # second build re-used the cached document embeddings
    changed = docs[:-1] + [Document(id="d12", text="something else entirely")]
    engine.index(changed, stages=["faiss-flat"], embedder="hashing")
    assert emb.calls > calls  # a different corpus is re-encoded


def test_rrf_contract():
    fused = rrf({"a": [("x", 9.0), ("y", 8.0)], "b": [("y", 1.0), ("z", 0.5)]}, k=60)
    assert [d for d, _, _ in fused] == ["y", "x", "z"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    weighted = rrf({"a": [("x", 1.0)], "b": [("y", 1.0)]}, weights={"b": 2.0})
    assert weighted[0][0] == "y"
    with pytest.raises(ValueError):
        rrf({}, k=-1)


def test_copy_of_index_directory_still_loads(engine, docs, tmp_path):
    path = engine.save(
        engine.index(docs, stages=["bm25", "faiss-flat"], embedder="hashing"), tmp_path / "a"
    )
    shutil.copytree(path, tmp_path / "b")
    assert engine.load(tmp_path / "b").search("bonds", k=1)[0].id == "d12"


def test_pipeline_specs_with_weights_and_linear_fusion(engine):
    from relevo.engine.evaluate import parse_pipeline

    stages, fusion = parse_pipeline("hybrid", engine.registry, "hashing")
    assert (
        stages == ["bm25", "faiss-flat@hashing"] and fusion.method == "rrf" and not fusion.weights
    )
    stages, fusion = parse_pipeline("linear:bm25*0.3+hashing", engine.registry, "minilm")
    assert stages == ["bm25", "faiss-flat@hashing"]
    assert fusion.method == "linear" and fusion.weights == {"bm25": 0.3, "faiss-flat@hashing": 1.0}
    assert parse_pipeline("faiss-hnsw", engine.registry, "hashing")[0] == ["faiss-hnsw@hashing"]
    with pytest.raises(ConfigError, match="at least two"):
        parse_pipeline("hybrid:bm25", engine.registry, "hashing")
    with pytest.raises(ConfigError, match="not a number"):
        parse_pipeline("hybrid:bm25*x+dense", engine.registry, "hashing")


def test_linear_fusion_normalises_and_weights():
    from relevo.engine.fusion import linear

    fused = linear(
        {"a": [("x", 10.0), ("y", 0.0)], "b": [("y", 3.0), ("x", 1.0)]},
        weights={"a": 1.0, "b": 3.0},
    )
    scores = {d: s for d, s, _ in fused}
    assert scores == {"x": pytest.approx(1.0), "y": pytest.approx(3.0)}


def test_fusion_survives_save_and_load(engine, docs, tmp_path):
    from relevo.engine.collection import Fusion

    col = engine.index(
        docs,
        stages=["bm25", "faiss-flat"],
        embedder="hashing",
        fusion=Fusion(method="linear", weights={"bm25": 2.0}),
    )
    loaded = engine.load(engine.save(col, tmp_path / "idx"))
    assert loaded.fusion.method == "linear" and loaded.fusion.weights == {"bm25": 2.0}
    assert [h.id for h in loaded.search("interest rates")] == [
        h.id for h in col.search("interest rates")
    ]
    with pytest.raises(ConfigError, match="unknown fusion method"):
        Fusion(method="borda")


def test_named_pipeline_may_mention_a_component_of_the_same_name():
    from relevo import hookimpl
    from relevo.engine.evaluate import parse_pipeline

    class SameName:
        __name__ = "same-name"

        @hookimpl
        def register_embedders(self, register):
            # the pipeline "hashing" fuses BM25 with the embedder "hashing"
            register(HashingEmbedder, "hashing", pipelines={"hashing": "linear:bm25+hashing"})

    engine = Engine(plugins=[SameName()], load_entrypoints=False)
    assert engine.registry.pipelines()["hashing"] == "linear:bm25+hashing"
    stages, fusion = parse_pipeline("hashing", engine.registry, "minilm")
    assert stages == ["bm25", "faiss-flat@hashing"] and fusion.method == "linear"


def test_manifest_prefixes_are_enforced_at_query_time(tmp_path):
    """Queries are encoded with the prefixes the index was built with, never others."""
    from relevo.testing import FakePlugin

    engine = Engine(plugins=[FakePlugin()], load_entrypoints=False)
    emb = engine.embedder("hashing", query_prefix="query: ", document_prefix="passage: ")
    col = engine.index(tiny_docs(), stages=["faiss-flat"], embedder=emb)
    path = engine.save(col, tmp_path / "idx")
    stages = live_directory(path) / "stages"
    stage_man = json.loads(next(stages.iterdir()).joinpath("manifest.json").read_text())
    assert stage_man["embedder"]["options"] == {
        "query_prefix": "query: ",
        "document_prefix": "passage: ",
    }
    fresh = Engine(plugins=[FakePlugin()], load_entrypoints=False)
    loaded = fresh.load(path)  # re-creates the embedder from the manifest, prefixes included
    stage_emb = loaded.stages["faiss-flat"].embedder
    assert stage_emb.query_prefix == "query: " and stage_emb.document_prefix == "passage: "
    assert [h.id for h in loaded.search("bond prices")] == [h.id for h in col.search("bond prices")]
    other = HashingEmbedder(query_prefix="search: ", document_prefix="passage: ")
    other.instance_name = "hashing"
    with pytest.raises(IndexMismatchError, match="different configuration"):
        fresh.load(path, embedder=other)
