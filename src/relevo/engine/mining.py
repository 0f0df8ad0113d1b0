"""Hard-negative mining: the contract's value objects, the streaming loop and the report.

A :class:`~relevo.NegativeMiner` plugin writes one method, ``select``: given one
query's first-stage candidates (best first, positives included and marked), keep some
as negatives and say why the others were dropped. The host supplies the rest in
:meth:`NegativeMiner.mine`: it searches the retriever (any relevo
:class:`~relevo.Collection`: BM25, a dense index, a fusion) in batches of queries,
so memory holds ``batch_size x depth`` candidates, never a queries x corpus matrix;
it checks that no positive is ever returned as a negative, and it counts everything
in a :class:`MiningReport`.

On disk (``relevo mine ... --out negatives.jsonl``) one JSON line per query
``{"query_id", "positive_ids", "negative_ids", "scores"}``, and beside it
``negatives.report.json`` (+ ``negatives.report.png``: score histograms).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Dropped candidates kept as examples in a report (per reason).
SAMPLES_PER_REASON = 20


@dataclass(frozen=True)
class Candidate:
    """One first-stage candidate of a query: document id, first-stage score, 1-based rank."""

    id: str
    score: float
    rank: int


@dataclass
class MiningQuery:
    """What a miner's ``select`` sees for one query.

    Attributes:
        query_id / text: the query.
        positive_ids: its judged positives handed to the miner (best graded first).
        positive_score: the best first-stage score among the positives: retrieved
            within the search depth, else scored exactly where the first stage can
            (single-stage bm25 / splade / faiss / torch-flat), else ``None``.
        candidates: the first stage's hits, best first, positives removed.
        floor: the lowest retrieved score (an upper bound of an unretrieved positive's score).
        positive_rank: the best positive's first-stage rank, ``None`` when no positive
            was retrieved within the search depth.
    """

    query_id: str
    text: str
    positive_ids: list[str]
    positive_score: float | None
    candidates: list[Candidate]
    floor: float | None
    positive_rank: int | None = None


@dataclass
class Selection:
    """A miner's verdict on one query: the negatives kept and the candidates dropped, with reasons.

    ``kept`` is ``[(doc id, score)]`` in the order they should be used; ``dropped`` is
    ``[(doc id, score, reason)]``. Candidates a miner neither keeps nor drops (below
    the number wanted) are simply not used and are not counted as dropped.
    """

    kept: Sequence[tuple[str, float | None]] = field(default_factory=list)
    dropped: list[tuple[str, float, str]] = field(default_factory=list)


@dataclass
class MinedQuery:
    """One output line: the query's positives, its negatives and their scores."""

    query_id: str
    positive_ids: list[str]
    negative_ids: list[str]
    #: first-stage (or teacher) score per negative; ``None`` for one the first stage did
    #: not retrieve (a random negative).
    scores: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "positive_ids": self.positive_ids,
            "negative_ids": self.negative_ids,
            "scores": [None if s is None else round(float(s), 6) for s in self.scores],
        }


@dataclass
class MiningReport:
    """Counts kept / dropped and why, score distributions, and examples of dropped candidates."""

    miner: str
    options: dict[str, Any] = field(default_factory=dict)
    queries: int = 0
    queries_without_negatives: int = 0
    positives_unretrieved: int = 0
    candidates: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    positive_scores: list[float] = field(default_factory=list, repr=False)
    kept_scores: list[float] = field(default_factory=list, repr=False)
    dropped_scores: list[float] = field(default_factory=list, repr=False)
    samples: list[dict[str, Any]] = field(default_factory=list, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, query: MiningQuery, selection: Selection, texts: Mapping[str, str]) -> None:
        self.queries += 1
        self.candidates += len(query.candidates)
        self.kept += len(selection.kept)
        if not selection.kept:
            self.queries_without_negatives += 1
        if query.positive_score is None:
            self.positives_unretrieved += 1
        else:
            self.positive_scores.append(float(query.positive_score))
        self.kept_scores.extend(float(s) for _, s in selection.kept if s is not None)
        for doc_id, score, reason in selection.dropped:
            self.dropped[reason] += 1
            self.dropped_scores.append(float(score))
            if self.dropped[reason] <= SAMPLES_PER_REASON:
                self.samples.append(
                    {
                        "query_id": query.query_id,
                        "query": query.text,
                        "doc_id": doc_id,
                        "score": round(float(score), 6),
                        "positive_score": None
                        if query.positive_score is None
                        else round(float(query.positive_score), 6),
                        "reason": reason,
                        "text": texts.get(doc_id, "")[:500],
                    }
                )

    @staticmethod
    def _summary(values: Sequence[float]) -> dict[str, float] | None:
        if not values:
            return None
        arr = np.asarray(values, dtype=np.float64)
        q = np.percentile(arr, [5, 25, 50, 75, 95])
        return {
            "n": int(arr.size),
            "mean": float(arr.mean()),
            "p5": float(q[0]),
            "p25": float(q[1]),
            "median": float(q[2]),
            "p75": float(q[3]),
            "p95": float(q[4]),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "miner": self.miner,
            "options": self.options,
            "queries": self.queries,
            "queries_without_negatives": self.queries_without_negatives,
            "positives_unretrieved": self.positives_unretrieved,
            "candidates": self.candidates,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": int(sum(self.dropped.values())),
            "scores": {
                "positive": self._summary(self.positive_scores),
                "kept": self._summary(self.kept_scores),
                "dropped": self._summary(self.dropped_scores),
            },
            "samples": self.samples,
            **self.extra,
        }


@dataclass
class MiningResult:
    """What :meth:`NegativeMiner.mine` returns: one :class:`MinedQuery` per query, and the report."""

    queries: list[MinedQuery]
    report: MiningReport

    def negatives(self) -> dict[str, list[str]]:
        """``{query id: negative ids}``."""
        return {q.query_id: q.negative_ids for q in self.queries}


def batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def report_paths(out: Path) -> tuple[Path, Path]:
    """``(negatives.report.json, negatives.report.png)`` beside ``negatives.jsonl``."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.report.json"), out.with_name(f"{stem}.report.png")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_mining(result: MiningResult, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``out`` (JSON lines), the report JSON and, where matplotlib is installed, the PNG.

    Every file is written to a temporary sibling and renamed, so an interrupted run
    leaves the previous files as they were.
    """
    out = Path(out)
    lines = "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in result.queries)
    _atomic_write_text(out, lines)
    report_json, report_png = report_paths(out)
    report = result.report.to_dict()
    written = {"negatives": out, "report": report_json}
    if _plot(result.report, report_png):
        report["plot"] = report_png.name
        written["plot"] = report_png
    _atomic_write_text(report_json, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return written


def _plot(report: MiningReport, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed; no score histogram for %s", path)
        return False
    series = [
        ("positives", report.positive_scores),
        ("kept negatives", report.kept_scores),
        ("dropped candidates", report.dropped_scores),
    ]
    values = [v for _, vals in series for v in vals]
    if not values:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [float(b) for b in np.histogram_bin_edges(np.asarray(values), bins=40)]
    for label, vals in series:
        if vals:
            ax.hist(vals, bins=bins, alpha=0.5, label=f"{label} ({len(vals)})")
    ax.set_xlabel("first-stage (or teacher) score")
    ax.set_ylabel("count")
    ax.set_title(f"{report.miner}: {report.kept} kept, {sum(report.dropped.values())} dropped")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return True


def judged_positives(
    qrels: Mapping[str, Mapping[str, int]], *, max_positives: int | None = None
) -> dict[str, list[str]]:
    """Judged positives (relevance > 0) per query, highest grade first (ties by doc id), capped."""
    out: dict[str, list[str]] = {}
    for qid, rels in qrels.items():
        pos = sorted((d for d, r in rels.items() if r > 0), key=lambda d: (-rels[d], d))
        if max_positives is not None:
            pos = pos[:max_positives]
        if pos:
            out[qid] = pos
    return out


def mine_dataset(
    engine: Any,
    dataset_dir: str | os.PathLike[str],
    miner: Any,
    *,
    first_stage: str = "bm25",
    split: str = "train",
    embedder: str = "minilm",
    limit: int | None = None,
    max_positives: int | None = None,
    depth: int | None = None,
    progress: Any = None,
) -> MiningResult:
    """Mine a BEIR dataset split: positives from its qrels, candidates from ``first_stage``.

    Args:
        engine: the :class:`~relevo.Engine` that builds (or reuses, from the cache) the
            first stage and owns the registry.
        dataset_dir: a BEIR-layout folder.
        miner: a :class:`~relevo.NegativeMiner` instance or a registered miner name.
        first_stage: a pipeline as ``relevo eval --pipeline`` takes it.
        split: the qrels split whose positives are used.
        embedder: default embedder of dense stages.
        limit: only the first ``limit`` queries that have positives.
        max_positives: hand the miner only the N highest-graded positives per query.
        depth: candidates per query (default: the miner's ``depth``).
        progress: ``advance(n)`` per query done.
    """
    from .errors import ConfigError
    from .evaluate import collection_for, load_dataset, parse_pipeline

    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}.")
    if max_positives is not None and max_positives < 1:
        raise ConfigError(f"max_positives must be >= 1, got {max_positives}.")
    if isinstance(miner, str):
        miner = engine.miner(miner)
    dataset = load_dataset(Path(dataset_dir), split=split)
    positives = judged_positives(dataset.qrels, max_positives=max_positives)
    qids = [q for q in dataset.queries if q in positives]
    if limit is not None:
        qids = qids[:limit]
    stages, fusion = parse_pipeline(first_stage, engine.registry, embedder)
    collection, _seconds, _reused = collection_for(
        engine, dataset, stages, embedder=embedder, fusion=fusion
    )
    corpus = _DocstoreMapping(collection.docstore)
    result = miner.mine(
        {q: dataset.queries[q] for q in qids},
        {q: positives[q] for q in qids},
        corpus,
        retriever=collection,
        k=depth,
        progress=progress,
    )
    result.report.extra.update(
        {
            "dataset": dataset.name,
            "split": split,
            "first_stage": first_stage,
            "max_positives": max_positives,
            "corpus_size": len(collection),
        }
    )
    return result


class _DocstoreMapping(Mapping[str, Any]):
    """A collection's docstore as ``{doc id: Document}`` without copying it."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getitem__(self, key: str) -> Any:
        doc = self._store.by_id(key)
        if doc is None:
            raise KeyError(key)
        return doc

    def __iter__(self) -> Any:
        return iter(self._store.ids_view())

    def __len__(self) -> int:
        return len(self._store)


__all__ = [
    "Candidate",
    "MinedQuery",
    "MiningQuery",
    "MiningReport",
    "MiningResult",
    "Selection",
    "judged_positives",
    "mine_dataset",
    "report_paths",
    "write_mining",
]
