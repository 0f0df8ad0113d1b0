"""Run files rank exactly as relevo ranked, so standard tools score what relevo printed.

Regression: tied scores (frequent after fusion) were written as they are, and trec_eval
orders ties by document id, so a run file scored lower or higher than ``relevo eval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import relevo
from relevo import Engine, Hit, Index
from relevo.engine.evaluate import evaluate, run_scores
from relevo.testing import FakePlugin

ir_measures = pytest.importorskip("ir_measures")

#: Neither ascending nor descending by id, so any tie-breaking by id changes the ranking.
ORDER = ["d5", "d7", "d3", "d11", "d8", "d1", "d2", "d4", "d6", "d9", "d10", "d12"]


class TiedIndex(Index):
    """Every document scores 1.0; the order is the fixed ``ORDER`` (ties everywhere).

    The tiny corpus holds ``d1``..``d12`` at positions 0..11.
    """

    name: ClassVar[str] = "tied"
    input: ClassVar[Any] = "text"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.n = 0

    def _add(self, items):
        self.n += len(items)

    def _search(self, queries, k):
        n = self.n
        rank = {doc: i for i, doc in enumerate(ORDER)}
        positions = sorted(range(n), key=lambda p: rank.get(f"d{p + 1}", n))[:k]
        pos = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        pos[:, : len(positions)] = positions
        scores[:, : len(positions)] = 1.0
        return scores, pos

    def _count(self):
        return self.n

    def save_payload(self, directory: Path) -> dict[str, Any]:
        return {"n": self.n}

    @classmethod
    def load_payload(cls, directory: Path, params: Mapping[str, Any]) -> TiedIndex:
        index = cls()
        index.n = int(params["n"])
        return index


class TiedPlugin:
    __name__ = "tied-plugin"

    @relevo.hookimpl
    def register_indexes(self, register):
        register(TiedIndex)


def file_metrics(path: Path, qrels_file: Path) -> dict[str, float]:
    qrels = list(ir_measures.read_trec_qrels(str(qrels_file)))
    run = list(ir_measures.read_trec_run(str(path)))
    agg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.RR @ 10], qrels, run)
    return {"ndcg@10": agg[ir_measures.nDCG @ 10], "mrr@10": agg[ir_measures.RR @ 10]}


def trec_qrels(dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "qrels.trec"
    lines = (dataset / "qrels" / "test.tsv").read_text("utf-8").splitlines()[1:]
    out.write_text(
        "".join(f"{q} 0 {d} {r}\n" for q, d, r in (line.split("\t") for line in lines)), "utf-8"
    )
    return out


@pytest.mark.parametrize("pipeline", ["tied", "hybrid:tied+bm25"])
def test_run_file_scores_what_eval_printed(tiny_dataset, tmp_path, pipeline):
    engine = Engine(plugins=[FakePlugin(), TiedPlugin()], load_entrypoints=False)
    run_out = tmp_path / "run.trec"
    report = evaluate(engine, tiny_dataset, pipeline=pipeline, run_out=run_out)
    lines = [line.split() for line in run_out.read_text("utf-8").splitlines()]
    by_query: dict[str, list[float]] = {}
    for qid, _q0, _doc, _rank, score, _tag in lines:
        by_query.setdefault(qid, []).append(float(score))
    for scores in by_query.values():  # strictly decreasing: no tie left for a tool to break
        assert (np.diff(scores) < 0).all()
    if pipeline == "tied":
        assert [d for q, _, d, *_ in lines if q == "q1"][:6] == ORDER[:6]
    got = file_metrics(run_out, trec_qrels(tiny_dataset, tmp_path))
    assert got["ndcg@10"] == pytest.approx(report["ndcg@10"], abs=1e-9)
    assert got["mrr@10"] == pytest.approx(report["mrr@10"], abs=1e-9)


def test_ties_would_have_changed_the_score(tiny_dataset, tmp_path):
    """The fixture is strong enough: with the raw tied scores, trec_eval disagrees."""
    engine = Engine(plugins=[FakePlugin(), TiedPlugin()], load_entrypoints=False)
    report = evaluate(engine, tiny_dataset, pipeline="tied")
    naive = tmp_path / "naive.trec"
    naive.write_text(
        "".join(
            f"{q} Q0 {d} {i + 1} 1.0 x\n"
            for q in ("q1", "q2", "q3", "q4")
            for i, d in enumerate(ORDER)
        ),
        "utf-8",
    )
    assert file_metrics(naive, trec_qrels(tiny_dataset, tmp_path))["ndcg@10"] != pytest.approx(
        report["ndcg@10"]
    )


def test_run_scores_keep_scores_where_they_already_decrease():
    hits = [
        Hit(id=d, score=s, rank=i + 1)
        for i, (d, s) in enumerate(
            [("a", 3.25), ("b", 3.25), ("c", 3.25), ("d", -1.0), ("e", -0.5), ("f", -2.0000004)]
        )
    ]
    out = run_scores(hits)
    assert [d for d, _ in out] == list("abcdef")
    assert [s for _, s in out] == [
        "3.250000",
        "3.249999",
        "3.249998",
        "-1.000000",
        "-1.000001",
        "-2.000000",
    ]
    assert run_scores([]) == []
