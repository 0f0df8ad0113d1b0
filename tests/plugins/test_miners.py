"""Hard-negative miners on the tiny corpus: never a positive, deterministic, reports add up."""

from __future__ import annotations

import json

import numpy as np
import pytest

import relevo
from relevo import Document, Engine, PluginError
from relevo.engine.mining import mine_dataset, report_paths, write_mining
from relevo.plugins.miners import AdaptiveMarginMiner, StaticMiner
from relevo.testing import FakePlugin, WordOverlapReranker

MINERS = ["static", "star", "adaptive-margin"]


@pytest.fixture
def collection(engine, docs):
    return engine.index(docs, stages=["bm25"])


def queries_and_positives():
    queries = {
        "q1": "cat purr kitten",
        "q2": "programming language memory safety",
        "q3": "plants sunlight photosynthesis",
    }
    positives = {"q1": ["d3"], "q2": ["d5"], "q3": ["d7", "d8"]}
    return queries, positives


def mine(engine, collection, docs, name, **options):
    queries, positives = queries_and_positives()
    miner = engine.miner(name, **options)
    return miner.mine(queries, positives, {d.id: d for d in docs}, retriever=collection)


@pytest.mark.parametrize("name", MINERS)
def test_miners_never_return_positives_and_are_deterministic(engine, collection, docs, name):
    first = mine(engine, collection, docs, name, num_negatives=3, seed=7)
    again = mine(engine, collection, docs, name, num_negatives=3, seed=7)
    _, positives = queries_and_positives()
    assert [q.to_dict() for q in first.queries] == [q.to_dict() for q in again.queries]
    for q in first.queries:
        assert not set(q.negative_ids) & set(positives[q.query_id])
        assert len(q.negative_ids) == len(set(q.negative_ids)) <= 3
        assert len(q.scores) == len(q.negative_ids)
    rep = first.report.to_dict()
    assert rep["queries"] == 3 and rep["miner"] == name
    assert rep["kept"] == sum(len(q.negative_ids) for q in first.queries)
    assert rep["dropped_total"] == sum(rep["dropped"].values())
    assert rep["kept"] + rep["dropped_total"] <= rep["candidates"] + (
        3 * 3 if name == "star" else 0  # random negatives come from outside the candidates
    )


def test_static_rank_range_and_margins(engine, collection, docs):
    full = mine(engine, collection, docs, "static", num_negatives=10)
    ranged = mine(engine, collection, docs, "static", num_negatives=10, min_rank=3, max_rank=3)
    for q_full, q_ranged in zip(full.queries, ranged.queries, strict=True):
        assert set(q_ranged.negative_ids) <= set(q_full.negative_ids)
    hits = {q: collection.search(t, 10) for q, t in queries_and_positives()[0].items()}
    for q in ranged.queries:
        ranks = {h.id: h.rank for h in hits[q.query_id]}
        assert all(ranks[d] == 3 for d in q.negative_ids)
    pos = queries_and_positives()[1]
    below = sum(
        1 for q, hs in hits.items() for h in hs if h.rank < 3 and h.id not in pos[q]
    )  # non-positive candidates ranked above min_rank, counted independently
    assert below == 2 and ranged.report.dropped["outside the rank range"] == below
    margin = mine(engine, collection, docs, "static", num_negatives=10, absolute_margin=0.0)
    for q in margin.queries:
        top = max(
            h.score for h in hits[q.query_id] if h.id in queries_and_positives()[1][q.query_id]
        )
        assert all(s <= top for s in q.scores)


def test_star_mixes_random_negatives(engine, collection, docs):
    res = mine(engine, collection, docs, "star", num_negatives=4, random_ratio=0.5, seed=1)
    randoms = [s for q in res.queries for s in q.scores if s is None]
    assert len(randoms) == 2 * len(res.queries)
    other = mine(engine, collection, docs, "star", num_negatives=4, random_ratio=0.5, seed=2)
    assert [q.negative_ids for q in res.queries] != [q.negative_ids for q in other.queries]


def test_adaptive_margin_drops_a_planted_near_duplicate_of_the_positive(engine):
    positive = Document("pos", "Statins lower cholesterol and reduce heart attack risk in adults.")
    near_dup = Document(
        "dup", "Statins lower cholesterol and reduce heart attack risk in older adults."
    )
    negatives = [
        Document(f"n{i}", text)
        for i, text in enumerate(
            [
                "Cholesterol is carried in the blood by lipoproteins.",
                "Heart rate rises during exercise.",
                "Adults need seven hours of sleep.",
                "Risk factors for stroke include smoking.",
                "Statins are a class of drugs.",
            ]
        )
    ]
    docs = [positive, near_dup, *negatives]
    col = engine.index(docs, stages=["bm25"])
    corpus = {d.id: d for d in docs}
    query = {"q": "do statins reduce heart attack risk by lowering cholesterol"}
    res = AdaptiveMarginMiner(num_negatives=10, z=1.0).mine(
        query, {"q": ["pos"]}, corpus, retriever=col
    )
    kept = res.queries[0].negative_ids
    assert "dup" not in kept and kept  # the near-duplicate goes, true negatives stay
    assert {"n0", "n4"} <= set(kept)
    assert res.report.dropped["within the adaptive margin of the positive"] >= 1
    assert any(s["doc_id"] == "dup" for s in res.report.samples)
    # the plain static miner keeps the near-duplicate as its hardest negative
    static = StaticMiner(num_negatives=10).mine(query, {"q": ["pos"]}, corpus, retriever=col)
    assert static.queries[0].negative_ids[0] == "dup"


def test_adaptive_margin_with_a_teacher_rescored_by_name(docs):
    engine = Engine(plugins=[FakePlugin()], load_entrypoints=False)
    col = engine.index(docs, stages=["bm25"])
    miner = engine.miner("adaptive-margin", teacher="word-overlap", num_negatives=5, z=0.0)
    assert isinstance(miner.teacher, WordOverlapReranker)
    queries, positives = queries_and_positives()
    res = miner.mine(queries, positives, {d.id: d for d in docs}, retriever=col)
    teacher = WordOverlapReranker()
    for q in res.queries:
        pos_text = next(d for d in docs if d.id == positives[q.query_id][0]).content
        pos_score = teacher.score(queries[q.query_id], [pos_text])[0]
        assert all(s < pos_score for s in q.scores)  # z=0: strictly below the positive
    assert res.report.options["teacher_name"] == "word-overlap"


def test_a_miner_returning_a_positive_is_refused(engine, collection, docs):
    class Leaky(StaticMiner):
        name = "leaky"

        def select(self, query, rng):
            sel = super().select(query, rng)
            sel.kept = [(query.positive_ids[0], 1.0), *sel.kept]
            return sel

    with pytest.raises(PluginError, match="returned positives"):
        Leaky().mine(*queries_and_positives(), {d.id: d for d in docs}, retriever=collection)


def test_mining_streams_in_batches(engine, collection, docs, monkeypatch):
    calls = []
    real = collection.search_batch

    def spy(queries, k, **kw):
        calls.append(len(queries))
        return real(queries, k, **kw)

    monkeypatch.setattr(collection, "search_batch", spy)
    miner = StaticMiner(num_negatives=2)
    monkeypatch.setattr(StaticMiner, "batch_size", 2)
    miner.mine(*queries_and_positives(), {d.id: d for d in docs}, retriever=collection)
    assert calls == [2, 1]  # batches of queries, never the whole query set x corpus


def test_bad_options_are_config_errors(engine):
    for bad in ({"num_negatives": 0}, {"min_rank": 5, "max_rank": 2}, {"sampling": "best"}):
        with pytest.raises(relevo.ConfigError):
            engine.miner("static", **bad)
    with pytest.raises(relevo.ConfigError):
        engine.miner("star", random_ratio=2)
    with pytest.raises(relevo.UnknownComponentError, match="adaptive-margin"):
        engine.miner("adaptiv")


def test_mine_dataset_and_written_files(engine, tiny_dataset, tmp_path):
    res = mine_dataset(engine, tiny_dataset, "static", split="test", max_positives=1)
    out = tmp_path / "negatives.jsonl"
    written = write_mining(res, out)
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [set(d) for d in lines] == [{"query_id", "positive_ids", "negative_ids", "scores"}] * 4
    assert all(len(d["positive_ids"]) == 1 for d in lines)  # --max-positives 1: highest grade
    assert lines[0]["positive_ids"] == ["d3"]  # q1 judges d3 = 2 above d1 = 1
    report = json.loads(report_paths(out)[0].read_text("utf-8"))
    assert report["queries"] == 4 and report["dataset"] == "tiny" and report["max_positives"] == 1
    assert written["report"].name == "negatives.report.json"
    # d1 (judged 1 for q1) is not handed to the miner, so it may be mined: that is what
    # the false-negative measurement counts
    assert np.isfinite([s for d in lines for s in d["scores"]]).all()


def test_relevo_mine_command(engine, tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from relevo.engine.cli import cli
    from relevo.engine.commands import CommandHelpers

    engine.host.call_commands(cli, CommandHelpers())
    out = tmp_path / "neg.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "mine",
            str(tiny_dataset),
            "--miner",
            "static",
            "--split",
            "test",
            "--option",
            "num_negatives=2",
            "--out",
            str(out),
        ],
        obj={"engine": engine},
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "4 queries" in res.output and out.is_file() and (tmp_path / "neg.report.json").is_file()
    bad = CliRunner().invoke(
        cli,
        ["mine", str(tiny_dataset), "--miner", "nope", "--split", "test", "--out", str(out)],
        obj={"engine": engine},
    )
    assert bad.exit_code != 0 and "unknown negative miner 'nope'" in bad.output


def test_adore_refresh_re_retrieves_with_the_given_query_encoder(engine, docs):
    col = engine.index(docs, stages=["faiss-flat"], embedder="hashing")
    queries, positives = queries_and_positives()
    miner = engine.miner("adore", num_negatives=3, refresh_every=1)
    first = miner.mine(queries, positives, {d.id: d for d in docs}, retriever=col)
    stage = next(iter(col.stages.values()))
    same = miner.refresh(lambda texts: stage.embedder.embed(texts, kind="query"), step=1)
    # the same query encoder re-retrieves the same negatives from the fixed document index
    assert same.negatives() == first.negatives()
    assert same.report.extra["refreshed_at_step"] == 1

    rng = np.random.default_rng(0)

    def moved(texts):  # an "updated" encoder: other query vectors, same space
        return rng.normal(size=(len(texts), stage.index.dim)).astype(np.float32)

    changed = miner.refresh(moved, step=2)
    assert changed.negatives() != first.negatives()
    for q in changed.queries:
        assert not set(q.negative_ids) & set(positives[q.query_id])


def test_adore_needs_a_dense_first_stage(engine, collection, docs):
    with pytest.raises(relevo.ConfigError, match="dense"):
        mine(engine, collection, docs, "adore")
