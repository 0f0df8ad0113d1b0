"""Reranking host: permutation repair, window arithmetic, strategies, cost accounting."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from relevo import (
    ConfigError,
    Engine,
    Hit,
    ListwiseReranker,
    PairwiseReranker,
    PointwiseReranker,
    hookimpl,
)
from relevo.engine.cli import cli
from relevo.engine.rerank import (
    Reranking,
    RerankOptions,
    reorder_for_context,
    repair_permutation,
    window_starts,
)
from relevo.testing import FakePlugin


def hits_for(ids):
    return [
        Hit(id=str(i), score=float(len(ids) - r), rank=r + 1, text=f"doc {i}")
        for r, i in enumerate(ids)
    ]


# -- permutation validation ---------------------------------------------------------------


@given(
    st.integers(0, 40).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(-5, 45), max_size=60))
    )
)
def test_repair_always_yields_a_permutation(case):
    n, raw = case
    perm, rep = repair_permutation(raw, n)
    assert sorted(perm) == list(range(n))
    valid_first = []
    for x in raw:
        if 0 <= x < n and x not in valid_first:
            valid_first.append(x)
    assert perm[: len(valid_first)] == valid_first  # model's valid choices kept in order
    assert rep.invalid == sum(1 for x in raw if not 0 <= x < n)
    assert rep.missing == n - len(valid_first)
    assert rep.duplicates == sum(1 for x in raw if 0 <= x < n) - len(valid_first)


def test_repair_counts_and_is_deterministic():
    perm, rep = repair_permutation([2, 2, "x", 7, 0], 4)
    assert perm == [2, 0, 1, 3]
    assert (rep.invalid, rep.duplicates, rep.missing, rep.calls_repaired) == (2, 1, 2, 1)
    assert repair_permutation([1, 0], 2)[1].calls_repaired == 0


# -- window arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "window", "stride", "expected"),
    [
        (100, 20, 10, [80, 70, 60, 50, 40, 30, 20, 10, 0]),
        (25, 20, 10, [5, 0]),  # irregular: last window starts at 0, overlapping more
        (37, 20, 10, [17, 7, 0]),
        (10, 20, 10, [0]),  # fewer docs than a window
        (0, 20, 10, []),
        (20, 20, 20, [0]),
    ],
)
def test_window_starts(n, window, stride, expected):
    starts = window_starts(n, window, stride)
    assert starts == expected
    covered = set()
    for s in starts:
        covered |= set(range(s, min(s + window, n)))
    assert covered == set(range(n))


def test_window_refuses_gaps():
    with pytest.raises(ConfigError, match="skip"):
        window_starts(50, 10, 20)


class Oracle(ListwiseReranker, PairwiseReranker, PointwiseReranker):
    """Knows the true order: documents named 'doc N' are better for smaller N."""

    name = "oracle"
    window_size = 4

    def __init__(self, tokens_per_doc: int = 10):
        self.seen_windows: list[int] = []
        self.tokens_per_doc = tokens_per_doc

    def _key(self, d):
        return int(d.split()[-1])

    def permute(self, query, docs):
        self.seen_windows.append(len(docs))
        self.cost.add(
            llm_calls=1, input_tokens=self.tokens_per_doc * len(docs), output_tokens=2 * len(docs)
        )
        return sorted(range(len(docs)), key=lambda i: self._key(docs[i]))

    def compare(self, query, a, b):
        self.cost.add(llm_calls=1, input_tokens=2 * self.tokens_per_doc, output_tokens=1)
        return 1.0 if self._key(a) < self._key(b) else 0.0

    def score(self, query, docs):
        return [-self._key(d) for d in docs]


SHUFFLED = [7, 3, 9, 0, 5, 1, 8, 2, 6, 4]


def test_window_strategy_sorts_with_multiple_passes_and_counts_cost():
    oracle = Oracle()
    runner = Reranking(oracle, strategy="window", window=4, stride=2, passes=3)
    t0 = time.perf_counter()
    res = runner("q", hits_for(SHUFFLED))
    wall = time.perf_counter() - t0
    assert [h.id for h in res.hits[:3]] == ["0", "1", "2"]  # one pass bubbles the best up
    per_pass = len(window_starts(10, 4, 2))
    assert res.cost.llm_calls == 3 * per_pass == len(oracle.seen_windows)
    assert res.cost.input_tokens == 10 * sum(oracle.seen_windows)
    assert res.cost.output_tokens == 2 * sum(oracle.seen_windows)
    assert 0 < res.cost.seconds <= wall and res.repairs.calls_repaired == 0
    assert [h.rank for h in res.hits] == list(range(1, 11))
    assert res.hits[0].stages["first_stage_rank"] == SHUFFLED.index(0) + 1


def test_cost_seconds_covers_the_reranker_time():
    class Slow(Oracle):
        def permute(self, query, docs):
            time.sleep(0.005)
            return super().permute(query, docs)

    runner = Reranking(Slow(), strategy="window", window=4, stride=2)
    t0 = time.perf_counter()
    res = runner("q", hits_for(SHUFFLED))
    wall = time.perf_counter() - t0
    calls = len(window_starts(10, 4, 2))
    assert res.cost.llm_calls == calls
    assert calls * 0.005 <= res.cost.seconds <= wall
    # the cost is per call: a second run reports its own calls and time, not a running total
    t0 = time.perf_counter()
    again = runner("q", hits_for(SHUFFLED))
    wall_again = time.perf_counter() - t0
    assert again.cost.llm_calls == calls
    assert calls * 0.005 <= again.cost.seconds <= wall_again


def test_full_strategy_is_one_call_and_exact():
    oracle = Oracle()
    res = Reranking(oracle, strategy="full")("q", hits_for(SHUFFLED))
    assert [h.id for h in res.hits] == [str(i) for i in range(10)]
    assert res.cost.llm_calls == 1 and res.cost.input_tokens == 100


@pytest.mark.parametrize("method", ["allpairs", "sort", "sliding"])
def test_pairwise_methods_find_the_top(method):
    oracle = Oracle()
    res = Reranking(oracle, strategy="pairwise", pairwise_method=method, top_k=3)(
        "q", hits_for(SHUFFLED)
    )
    assert [h.id for h in res.hits[:3]] == ["0", "1", "2"]
    assert sorted(h.id for h in res.hits) == sorted(str(i) for i in SHUFFLED)
    # both prompt orders are asked for every compared pair
    assert res.cost.llm_calls % 2 == 0 and res.cost.llm_calls > 0
    if method == "allpairs":
        assert res.cost.llm_calls == 2 * 45
        assert [h.id for h in res.hits] == [str(i) for i in range(10)]


def test_position_bias_is_cancelled():
    class AlwaysFirst(PairwiseReranker):
        name = "first"

        def compare(self, query, a, b):
            return 0.9  # always prefers whatever is shown first

    res = Reranking(AlwaysFirst(), strategy="pairwise", pairwise_method="allpairs")(
        "q", hits_for([3, 1, 2])
    )
    assert [h.id for h in res.hits] == ["3", "1", "2"]  # pure bias gives ties -> first-stage order


def test_pointwise_is_stable_and_checks_lengths():
    class Const(PointwiseReranker):
        name = "const"
        batch_size = 3

        def score(self, query, docs):
            return [1.0] * len(docs)

    res = Reranking(Const())("q", hits_for(SHUFFLED))
    assert [h.id for h in res.hits] == [str(i) for i in SHUFFLED]

    class Short(PointwiseReranker):
        name = "short"

        def score(self, query, docs):
            return [1.0]

    with pytest.raises(Exception, match="returned 1 scores"):
        Reranking(Short())("q", hits_for([1, 2]))


def test_broken_listwise_output_is_repaired_and_counted():
    class Sloppy(ListwiseReranker):
        name = "sloppy"

        def permute(self, query, docs):
            return [1, 1, 99]

    res = Reranking(Sloppy(), strategy="full")("q", hits_for([5, 6, 7, 8]))
    assert [h.id for h in res.hits] == ["6", "5", "7", "8"]
    assert res.repairs.to_dict() == {
        "invalid": 1,
        "duplicates": 1,
        "missing": 3,
        "calls_repaired": 1,
    }


def test_strategy_must_match_component():
    class OnlyPoint(PointwiseReranker):
        name = "p"

        def score(self, query, docs):
            return [0.0] * len(docs)

    with pytest.raises(ConfigError, match="cannot run the 'window' strategy"):
        Reranking(OnlyPoint(), strategy="window")


class Scores(PointwiseReranker):
    """Scores each doc by a fixed table keyed by its text ("doc <id>")."""

    name = "table"

    def __init__(self, table):
        super().__init__()
        self.table = table

    def score(self, query, docs):
        return [self.table[int(d.split()[1])] for d in docs]


def test_interpolate_blends_normalised_scores():
    # first stage: 1 > 2 > 3 > 4 (scores 4, 3, 2, 1); reranker strongly prefers 4.
    first = hits_for([1, 2, 3, 4])
    table = {1: 0.0, 2: 0.1, 3: 0.2, 4: 10.0}
    pure = Reranking(Scores(table))("q", first)
    assert [h.id for h in pure.hits] == ["4", "3", "2", "1"]
    kept = Reranking(Scores(table), interpolate=0.0)("q", first)
    assert [h.id for h in kept.hits] == ["1", "2", "3", "4"]
    half = Reranking(Scores(table), interpolate=0.5)("q", first)
    # 4: 0.5*1 + 0.5*0 = 0.5; 1: 0.5*0 + 0.5*1 = 0.5 (tie: both ranked 1st somewhere, so
    # the id decides: 1 first); 2: 0.5*0.01 + 0.5*(2/3); 3: 0.5*0.02 + 0.5*(1/3)
    assert [h.id for h in half.hits] == ["1", "4", "2", "3"]
    four = half.hits[1]
    assert four.score == pytest.approx(0.5)
    assert four.stages["rerank_score"] == pytest.approx(10.0)
    assert four.stages["first_stage_score"] == pytest.approx(1.0)
    assert [h.rank for h in half.hits] == [1, 2, 3, 4]


def test_interpolate_uses_ranks_for_listwise_and_checks_range():
    class Reverse(ListwiseReranker):
        name = "rev"

        def permute(self, query, docs):
            return list(reversed(range(len(docs))))

    first = hits_for([1, 2, 3])
    # listwise ranks (1, 0.5, 0) for 3, 2, 1; first stage (1, 0.5, 0) for 1, 2, 3 -> at w=0.75
    # 3: 0.75, 2: 0.5, 1: 0.25
    res = Reranking(Reverse(), strategy="full", interpolate=0.75)("q", first)
    assert [h.id for h in res.hits] == ["3", "2", "1"]
    assert [round(h.score, 6) for h in res.hits] == [0.75, 0.5, 0.25]
    res = Reranking(Reverse(), strategy="full", interpolate=0.25)("q", first)
    assert [h.id for h in res.hits] == ["1", "2", "3"]
    with pytest.raises(ConfigError, match=r"interpolate .* \[0, 1\]"):
        Reranking(Reverse(), interpolate=1.5)


def test_reorder_puts_best_at_both_ends():
    out = reorder_for_context(hits_for([1, 2, 3, 4, 5]))
    assert [h.id for h in out] == ["1", "3", "5", "4", "2"]
    assert reorder_for_context([]) == []


def build_index(engine, corpus_file, out):
    r = CliRunner().invoke(
        cli, ["index", "build", str(corpus_file), "--out", str(out)], obj={"engine": engine}
    )
    assert r.exit_code == 0, r.output
    return out


def test_inline_listwise_plugin_through_host_and_cli(tmp_path, corpus_file):
    class FixedPermutation(ListwiseReranker):
        """Puts the last candidate first and keeps the rest in order; records each call."""

        name = "fixed-perm"
        calls: list[list[str]] = []

        def permute(self, query, docs):
            type(self).calls.append(list(docs))
            self.cost.add(llm_calls=1)
            n = len(docs)
            return [n - 1, *range(n - 1)]

    class ListwisePlugin:
        __name__ = "inline-listwise"

        @hookimpl
        def register_rerankers(self, register):
            register(FixedPermutation)

    engine = Engine(plugins=[FakePlugin(), ListwisePlugin()], load_entrypoints=False)
    assert isinstance(engine.create("reranker", "fixed-perm"), FixedPermutation)
    (entry,) = [p for p in engine.plugins()["plugins"] if p["name"] == "inline-listwise"]
    assert entry["components"] == {"reranker": ["fixed-perm"]}

    out = build_index(engine, corpus_file, tmp_path / "idx")
    query = "programming language"
    first = [h.id for h in engine.load(out).search(query, 5)]
    assert sorted(first) == ["d4", "d5", "d6"]  # the only BM25 matches
    r = CliRunner().invoke(
        cli,
        ["rerank", str(out), query, "--reranker", "fixed-perm", "--strategy", "full"]
        + ["--depth", "5", "--json"],
        obj={"engine": engine},
    )
    assert r.exit_code == 0, r.output
    payload = json.loads(r.output)
    assert payload["strategy"] == "full"
    perm = [len(first) - 1, *range(len(first) - 1)]
    assert [h["id"] for h in payload["hits"]] == [first[i] for i in perm]
    assert [h["rank"] for h in payload["hits"]] == [1, 2, 3]
    assert len(FixedPermutation.calls) == 1  # full strategy: one call over all candidates
    assert len(FixedPermutation.calls[0]) == len(first)
    assert payload["cost"]["llm_calls"] == 1
    assert payload["repairs"]["calls_repaired"] == 0


def test_cli_rerank_pointwise_json_and_reorder(tmp_path, corpus_file):
    engine = Engine(plugins=[FakePlugin()], load_entrypoints=False)
    out = build_index(engine, corpus_file, tmp_path / "idx")

    def rerank(*extra):
        r = CliRunner().invoke(
            cli,
            ["rerank", str(out), "programming language", "--reranker", "word-overlap"]
            + ["--depth", "5", "--json", *extra],
            obj={"engine": engine},
        )
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    plain, reordered = rerank(), rerank("--reorder")
    assert plain["strategy"] == "pointwise" and plain["reordered"] is False
    assert reordered["reordered"] is True
    assert set(plain["cost"]) == {"llm_calls", "input_tokens", "output_tokens", "seconds"}
    assert {h["id"] for h in plain["hits"]} == {"d4", "d5", "d6"}  # the only BM25 matches
    ranked = [h["id"] for h in plain["hits"]]
    # best at both ends: 1st, 3rd, ..., then ..., 4th, 2nd
    assert [h["id"] for h in reordered["hits"]] == ranked[0::2] + ranked[1::2][::-1]


def test_eval_with_rerank_reports_cost(engine, tiny_dataset):
    from relevo.engine.evaluate import evaluate

    report = evaluate(
        engine,
        tiny_dataset,
        pipeline="bm25",
        rerank="reverse",
        reranking=RerankOptions(strategy="window", depth=5),
    )
    assert set(report["cost"]) == {"llm_calls", "input_tokens", "output_tokens", "seconds"}
    assert report["first_stage"]["ndcg@10"] > report["ndcg@10"]  # reversing the top 5 hurts
    good = evaluate(
        engine,
        tiny_dataset,
        pipeline="bm25",
        rerank="word-overlap",
        reranking=RerankOptions(depth=10),
    )
    assert good["rerank"]["strategy"] == "pointwise" and good["ndcg@10"] > 0.5


def test_eval_interpolate_zero_keeps_the_first_stage(engine, tiny_dataset):
    from relevo.engine.evaluate import evaluate

    kw = {"pipeline": "bm25", "rerank": "reverse"}
    window = {"strategy": "window", "depth": 5}
    kept = evaluate(engine, tiny_dataset, reranking=RerankOptions(interpolate=0.0, **window), **kw)
    assert kept["rerank"]["interpolate"] == 0.0
    assert kept["ndcg@10"] == pytest.approx(kept["first_stage"]["ndcg@10"])
    reversed_ = evaluate(engine, tiny_dataset, reranking=RerankOptions(**window), **kw)
    assert reversed_["ndcg@10"] < kept["ndcg@10"]


def test_eval_loads_the_reranker_before_timing(tiny_dataset):
    from relevo.engine.evaluate import evaluate

    class Lazy(PointwiseReranker):
        name = "lazy"
        loads = 0

        def load(self):
            time.sleep(0.02)  # a measurable "weight load"
            type(self).loads += 1

        def score(self, query, docs):
            assert type(self).loads == 1  # loaded before the first timed call
            return [float(len(d)) for d in docs]

    class P:
        __name__ = "lazy-plugin"

        @hookimpl
        def register_rerankers(self, register):
            register(Lazy)

    engine = Engine(plugins=[FakePlugin(), P()], load_entrypoints=False)
    t0 = time.perf_counter()
    report = evaluate(
        engine, tiny_dataset, pipeline="bm25", rerank="lazy", reranking=RerankOptions(depth=5)
    )
    wall = time.perf_counter() - t0
    assert Lazy.loads == 1
    load = report["rerank"]["load_seconds"]
    assert 0.02 <= load <= wall  # the load is timed on its own ...
    assert report["cost"]["seconds"] < load  # ... and kept out of the per-query cost
