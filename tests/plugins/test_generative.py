"""Generative retrieval (docid-trie) with a tiny random causal LM: only live identifiers come out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relevo import ConfigError, Document, Engine
from relevo.testing import FakePlugin, tiny_causal_lm, tiny_corpus

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    texts = [f"{d.title} {d.text}" for d in tiny_corpus()] * 3 + ["Query: Title:"] * 3
    return tiny_causal_lm(tmp_path_factory.mktemp("lm") / "lm", texts, vocab_size=400)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(plugins=[FakePlugin()], load_entrypoints=False)


def build(engine: Engine, lm: Path, docs=None, **opts):
    options = {"docid-trie": {"model": str(lm), "device": "cpu", "beams": 6, **opts}}
    return engine.index(docs or tiny_corpus(), stages=["docid-trie"], index_options=options)


def test_title_identifiers_generated_under_the_trie(engine, lm):
    col = build(engine, lm)
    index = col.stages["docid-trie"].index
    assert index.ids[:3] == ["Cats", "Dogs", "Kittens"]
    assert len(index.trie) == len(tiny_corpus())
    hits = col.search("a kitten purrs", 5)
    assert 1 <= len(hits) <= 5
    ids = {d.id for d in tiny_corpus()}
    assert all(h.id in ids for h in hits)
    assert len({h.id for h in hits}) == len(hits)  # distinct identifiers
    assert all(np.isfinite(h.score) and h.score <= 0 for h in hits)  # log-probabilities
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_deleted_document_is_never_generated_and_additions_are(engine, lm, tmp_path):
    col = build(engine, lm, beams=12)
    everyone = {h.id for h in col.search("cats", 12)}
    assert len(everyone) == 12  # the beam reaches every identifier of the tiny corpus
    col.delete(["d1", "d3"])
    after = {h.id for h in col.search("cats", 12)}
    assert not after & {"d1", "d3"} and len(after) == 10
    col.add([Document("n1", "Lions roar loudly in the savanna", title="Lions")])
    assert "n1" in {h.id for h in col.search("lions", 12)}
    # duplicate titles get distinct identifiers
    col.add([Document("n2", "another text", title="Lions")])
    index = col.stages["docid-trie"].index
    assert index.ids[-2:] == ["Lions", "Lions #2"]
    # save -> load: the same identifiers, the deletions kept
    engine.save(col, tmp_path / "idx")
    again = engine.load(tmp_path / "idx")
    loaded = again.stages["docid-trie"].index
    assert loaded.ids == index.ids and len(loaded.trie) == len(index.trie)
    got = {h.id for h in again.search("cats", 14)}
    assert not got & {"d1", "d3"} and {"n1", "n2"} <= got


def test_prefix_and_semantic_identifiers(engine, lm):
    col = build(engine, lm, docid="prefix", max_words=3)
    assert col.stages["docid-trie"].index.ids[0] == "Cats are small"
    sem = build(engine, lm, docid="semantic", branching=3, leaf=4)
    ids = sem.stages["docid-trie"].index.ids
    assert len(set(ids)) == len(ids) and all(set(i) <= set("0123456789-") for i in ids)
    assert max(len(i.split("-")) for i in ids) >= 2  # 12 documents, leaves of 4: two levels
    sem.add([Document("z", "Kittens purr and sleep", title="Kitten naps")])
    new = sem.stages["docid-trie"].index.ids[-1]
    assert new not in ids[:-1] and len(new.split("-")) >= 2  # descended the centroid tree
    assert {h.id for h in sem.search("kittens", 13)} >= {"z"}


def test_diverse_and_awrs_decoding(engine, lm):
    col = build(engine, lm, decoding="diverse", beams=6, groups=3)
    hits = col.search("programming language", 6)
    assert len({h.id for h in hits}) == len(hits) >= 2
    aw = build(engine, lm, decoding="awrs", samples=24)
    hits = aw.search("programming language", 5)
    assert hits and all(h.score <= 0 for h in hits)


def test_bad_options_are_refused(engine, lm):
    with pytest.raises(ConfigError, match="docid must be"):
        build(engine, lm, docid="isbn")
    with pytest.raises(ConfigError, match="end with"):
        build(engine, lm, prompt="{query} ->")


def test_batched_queries_give_each_querys_own_hits(engine, lm):
    col = build(engine, lm, beams=8, query_batch=3)
    queries = ["a kitten purrs", "dogs bark", "programming language", "cats", "x"]
    batched = col.search_batch(queries, 5)  # two model batches: 3 + 2 queries
    for q, hits in zip(queries, batched, strict=True):
        alone = col.search(q, 5)
        assert [h.id for h in hits] == [h.id for h in alone]
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone], abs=1e-4)
    with pytest.raises(ConfigError, match="query_batch"):
        build(engine, lm, query_batch=0)
