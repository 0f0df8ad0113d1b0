"""``--interpolate auto``: the weight a synthetic dev set supports, with stand-in rerankers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relevo import ConfigError, Engine
from relevo.engine.autotune import (
    WEIGHTS,
    choose_weight,
    dev_candidates,
    dev_set,
    estimate_interpolation,
    parse_interpolate,
    word_overlap,
)
from relevo.engine.evaluate import evaluate
from relevo.engine.hookspecs import hookimpl
from relevo.engine.rerank import RerankOptions
from relevo.engine.synthetic import SyntheticQuery
from relevo.testing import FakePlugin, OracleReranker, tiny_corpus, write_beir_dataset

# (query, source): BM25 ranks d12 and d11 below other documents for the first two, and
# the source first for the others, so the first stage alone is good but not perfect.
DEV = [
    ("interest rates rise", "d12"),
    ("prices rise over time inflation", "d11"),
    ("kittens sleep and purr a lot", "d3"),
    ("green pigment that absorbs sunlight", "d8"),
    ("rust memory safety", "d5"),
]
TEXT = {d.id: d.content for d in tiny_corpus()}


def test_choose_weight_rules():
    assert choose_weight({0.0: 0.5, 0.5: 0.7, 1.0: 0.7}) == 1.0  # ties: the largest weight
    assert choose_weight({0.0: 0.7, 0.5: 0.7, 1.0: 0.7}) == 0.0  # no gain: do not rerank
    assert choose_weight({0.0: 0.70, 0.5: 0.71}, min_gain=0.02) == 0.0
    assert choose_weight({0.0: 0.9, 0.3: 0.95, 1.0: 0.2}) == 0.3
    with pytest.raises(ConfigError):
        choose_weight({})


def test_word_overlap():
    assert word_overlap("Interest rates RISE", "bond prices fall when interest rates rise") == 1.0
    assert word_overlap("prices rise over time inflation", "rates slow inflation") == 0.2
    assert word_overlap("café crème brûlée", "une crème brûlée") == pytest.approx(2 / 3)
    assert word_overlap("a b", "anything") == 1.0  # no word of 3+ characters: nothing to copy


def test_dev_set_keeps_the_queries_that_copy_least_in_file_order():
    texts = {"d1": "alpha beta gamma delta", "d2": "epsilon zeta eta theta"}
    qs = [
        SyntheticQuery("q0", "alpha beta gamma", "d1"),  # 1.0
        SyntheticQuery("q1", "alpha omega sigma", "d1"),  # 1/3
        SyntheticQuery("q2", "epsilon zeta kappa", "d2"),  # 2/3
        SyntheticQuery("q3", "lambda omicron", "d2"),  # 0
        SyntheticQuery("q4", "unknown source", "d9"),  # skipped
    ]
    assert [q.id for q in dev_set(qs, texts.get)] == ["q1", "q3"]
    assert [q.id for q in dev_set(qs, texts.get, share=0.75)] == ["q1", "q2", "q3"]
    assert [q.id for q in dev_set(qs[:1], texts.get)] == ["q0"]  # never empty
    assert dev_set(qs[4:], texts.get) == []
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="share"):
            dev_set(qs, texts.get, share=bad)


def test_parse_interpolate():
    assert parse_interpolate("AUTO") == "auto"
    assert parse_interpolate("0.3") == 0.3
    assert parse_interpolate(None) is None
    for bad in ("2", "half"):
        with pytest.raises(ConfigError):
            parse_interpolate(bad)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    queries = {"t1": "interest rates", "t2": "purring cats"}
    qrels = {"t1": {"d11": 1, "d12": 1}, "t2": {"d1": 1, "d3": 1}}
    return write_beir_dataset(tmp_path / "tiny", tiny_corpus(), queries, qrels)


def _rows(engine, corpus_dir):
    return dev_candidates(engine, corpus_dir, DEV, pipeline="bm25", depth=6)


def test_first_stage_of_the_dev_set_is_imperfect(engine, corpus_dir):
    ranks = [[h.id for h in hits].index(src) + 1 for _, hits, src in _rows(engine, corpus_dir)]
    assert 1 in ranks and max(ranks) > 1  # otherwise the tests below prove nothing


@pytest.mark.parametrize(("invert", "expected"), [(False, 1.0), (True, 0.0)])
def test_auto_picks_1_for_a_reranker_that_matches_and_0_for_one_that_inverts(
    engine, corpus_dir, invert, expected
):
    oracle = OracleReranker({q: TEXT[s] for q, s in DEV}, invert=invert)
    est = estimate_interpolation(
        RerankOptions(depth=6).runner(oracle), _rows(engine, corpus_dir), depth=6
    )
    assert est.weight == expected
    assert set(est.curve) == set(WEIGHTS)
    if invert:
        assert est.curve[1.0] < est.curve[0.0] and not est.rerank
    else:
        assert est.curve[1.0] == pytest.approx(1.0)
        assert est.curve[0.0] < 1.0


def test_auto_refuses_an_empty_dev_set(corpus_dir):
    with pytest.raises(ConfigError, match="generate-queries"):
        estimate_interpolation(RerankOptions().runner(OracleReranker()), [], depth=5)


def test_a_runner_never_receives_auto():
    with pytest.raises(ConfigError, match="resolved by the caller"):
        RerankOptions(interpolate="auto").runner(OracleReranker())
    with pytest.raises(ConfigError):
        RerankOptions(interpolate="sometimes")


class OraclePlugin(FakePlugin):
    __name__ = "test-oracle"

    @hookimpl
    def register_rerankers(self, register):
        register(OracleReranker)


@pytest.fixture
def oracle_engine() -> Engine:
    return Engine(plugins=[OraclePlugin()], load_entrypoints=False)


@pytest.mark.parametrize("invert", [False, True])
def test_eval_with_interpolate_auto(oracle_engine, corpus_dir, tmp_path, invert):
    dev = tmp_path / "dev.jsonl"
    dev.write_text(
        "".join(
            json.dumps({"_id": f"s{i}", "text": q, "source_id": s}) + "\n"
            for i, (q, s) in enumerate(DEV)
        ),
        encoding="utf-8",
    )
    answers = {q: TEXT[s] for q, s in DEV}
    report = evaluate(
        oracle_engine,
        corpus_dir,
        rerank="oracle",
        reranker_options={"answers": answers, "invert": invert},
        reranking=RerankOptions(depth=6, interpolate="auto"),
        dev_queries=dev,
    )
    est = report["interpolate_auto"]
    # the dev set is the half of the queries that copies least from its source: here the
    # two whose source BM25 does not rank first
    assert est["generated_queries"] == len(DEV) and est["source"] == str(dev)
    assert est["dev_queries"] == len(DEV) // 2
    assert est["weight"] == (0.0 if invert else 1.0)
    assert report["rerank"]["skipped"] is invert
    assert report["rerank"]["interpolate"] == est["weight"]
    if invert:  # not reranked: exactly the first stage
        assert report["ndcg@10"] == report["first_stage"]["ndcg@10"]
        assert report["cost"]["seconds"] == 0.0


def test_eval_refuses_interpolate_without_a_reranker(engine, corpus_dir):
    with pytest.raises(ConfigError, match="--rerank"):
        evaluate(engine, corpus_dir, reranking=RerankOptions(interpolate=0.5))


def test_cli_accepts_auto_and_rejects_nonsense(run, corpus_dir, tmp_path):
    result = run(
        "eval", str(corpus_dir), "--rerank", "word-overlap", "--interpolate", "2", ok=False
    )
    assert result.exit_code == 2 and "not in [0, 1]" in result.output
    dev = tmp_path / "dev.jsonl"
    dev.write_text(
        json.dumps({"_id": "s", "text": "interest rates rise", "source_id": "d12"}) + "\n"
    )
    result = run(
        "eval", str(corpus_dir), "--rerank", "word-overlap", "--depth", "6",
        "--interpolate", "auto", "--dev-queries", str(dev), "--json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["interpolate_auto"]["dev_queries"] == 1
    assert 0.0 <= report["rerank"]["interpolate"] <= 1.0
