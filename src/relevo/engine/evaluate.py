"""Evaluation on BEIR-layout datasets: build or reuse indexes, run queries, score the run.

Metrics come from ``ir-measures`` (trec_eval underneath): nDCG@10, MRR@10 (RR@10) and
Recall@100. Every judged query of the split counts; a query with no hits scores 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import key
from .collection import Collection, Fusion
from .corpus import read_corpus, read_qrels, read_queries, resolve_corpus
from .errors import ConfigError, DatasetError, IndexFormatError, MissingDependencyError
from .types import Hit

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

log = logging.getLogger(__name__)

#: Named pipelines: a stage spec, or a fusion spec (``hybrid:`` = RRF, ``linear:`` =
#: weighted sum of normalised scores) over stages. Plugins' formats and embedders are
#: accepted directly too (see :func:`parse_pipeline`).
PIPELINES: dict[str, str] = {
    "bm25": "bm25",
    "dense": "faiss-flat",
    "hybrid": "hybrid:bm25+faiss-flat",
    # PromptReps fuses its dense and sparse halves by score, as in the paper; rank fusion
    # loses to the sparse half alone (benchmarks in README).
    "promptreps": "linear:promptreps-sparse+promptreps",
}


@dataclass
class Dataset:
    """A BEIR-layout dataset folder: corpus, queries and qrels of one split."""

    path: Path
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str

    @property
    def name(self) -> str:
        return self.path.name


def load_dataset(path: str | Path, *, split: str = "test") -> Dataset:
    """Read queries and qrels of ``split``; only judged queries that have text are kept."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} does not exist (expected BEIR layout: corpus.jsonl[.gz], queries.jsonl, qrels/)."
        )
    corpus = resolve_corpus(root)
    queries = read_queries(root / "queries.jsonl")
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    missing = [q for q in qrels if q not in queries]
    if missing:
        log.warning(
            "%d judged queries of %s have no text in queries.jsonl; skipped", len(missing), split
        )
    judged = {q: queries[q] for q in qrels if q in queries}
    if not judged:
        raise DatasetError(f"{root}: no query of split {split!r} has text in queries.jsonl.")
    return Dataset(root, corpus, judged, {q: qrels[q] for q in judged}, split)


def parse_pipeline(
    pipeline: str, registry: Any, embedder: str, _expanding: frozenset[str] = frozenset()
) -> tuple[list[str], Fusion]:
    """Turn a pipeline spec into stage specs and a fusion.

    Accepts a named pipeline (``bm25``, ``dense``, ``hybrid``, or one a plugin's name
    matches), a registered index format (``faiss-hnsw``, ``splade``), a registered
    embedder name (a flat dense index over it, e.g. ``bge-small``), ``FORMAT@EMBEDDER``,
    or a fusion ``hybrid:A+B+...`` (reciprocal-rank fusion) / ``linear:A+B`` (weighted
    sum of min-max-normalised scores) of any of those, with optional per-stage weights
    ``A*0.5``.
    """

    pipeline = pipeline.strip()
    method = None
    for prefix, m in (("hybrid:", "rrf"), ("linear:", "linear")):
        if pipeline.startswith(prefix):
            method, body = m, pipeline[len(prefix) :]
    if method is not None:
        parts = [p.strip() for p in body.split("+") if p.strip()]
        if len(parts) < 2:
            raise ConfigError(
                f"{pipeline!r}: a fusion needs at least two stages, e.g. hybrid:bm25+dense."
            )
        stages: list[str] = []
        weights: dict[str, float] = {}
        for part in parts:
            name, star, weight = part.partition("*")
            try:
                w = float(weight) if star else 1.0
            except ValueError as exc:
                raise ConfigError(
                    f"{pipeline!r}: weight {weight!r} of {name!r} is not a number."
                ) from exc
            if w < 0:
                raise ConfigError(f"{pipeline!r}: weights must be >= 0.")
            sub_stages, _ = parse_pipeline(name, registry, embedder, _expanding)
            for st in sub_stages:
                if st not in stages:
                    stages.append(st)
                weights[st] = w
        explicit = weights if any(v != 1.0 for v in weights.values()) else {}
        return stages, Fusion(method=method, weights=explicit)
    if pipeline in PIPELINES and PIPELINES[pipeline] != pipeline and pipeline not in _expanding:
        # A named pipeline may mention a component of the same name ("promptreps").
        return parse_pipeline(PIPELINES[pipeline], registry, embedder, _expanding | {pipeline})
    fmt = pipeline.partition("@")[0]
    if fmt in registry.names("index"):
        reg, _ = registry.get("index", fmt)
        if reg.cls.input == "vectors" and "@" not in pipeline:
            return [f"{pipeline}@{embedder}"], Fusion()
        return [pipeline], Fusion()
    if pipeline.partition(":")[0] in registry.names("embedder"):
        return [f"faiss-flat@{pipeline}"], Fusion()
    names = sorted(PIPELINES) + registry.names("index") + registry.names("embedder")
    raise ConfigError(
        f"unknown pipeline {pipeline!r}; choose one of {', '.join(dict.fromkeys(names))}, "
        "or a fusion such as hybrid:bm25+bge-small*0.5."
    )


def pipeline_stages(pipeline: str, registry: Any, embedder: str) -> list[str]:
    """The stage specs of a pipeline (see :func:`parse_pipeline`)."""
    return parse_pipeline(pipeline, registry, embedder)[0]


def score_run(
    run: Mapping[str, Sequence[Hit]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    rel_level: int = 1,
) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@100 averaged over every judged query (missing = 0)."""
    try:
        import ir_measures
        from ir_measures import RR, R, nDCG
    except ImportError as exc:
        raise MissingDependencyError("ir-measures", "eval", "relevo eval") from exc
    measures = {
        "ndcg@10": nDCG @ 10,
        "mrr@10": RR(rel=rel_level) @ 10,
        "recall@100": R(rel=rel_level) @ 100,
    }
    # Scores handed to trec_eval are rank-derived: it breaks ties by doc id, which would
    # silently reorder fused lists with equal scores.
    scored = {
        qid: {h.id: float(len(hits) - i) for i, h in enumerate(hits)}
        for qid, hits in run.items()
        if hits
    }
    totals = dict.fromkeys(measures, 0.0)
    qrels_clean = {q: dict(d) for q, d in qrels.items()}
    for m in ir_measures.iter_calc(list(measures.values()), qrels_clean, scored):
        for name, measure in measures.items():
            if m.measure == measure:
                totals[name] += float(m.value)
    n = len(qrels)
    return {name: (total / n if n else 0.0) for name, total in totals.items()}


def write_trec_run(path: Path, run: Mapping[str, Sequence[Hit]], tag: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for qid, hits in run.items():
            for h in hits:
                fh.write(f"{qid} Q0 {h.id} {h.rank} {h.score:.6f} {tag}\n")


def collection_for(
    engine: Engine,
    dataset: Dataset,
    stages: Sequence[str],
    *,
    embedder: str,
    rebuild: bool = False,
    fusion: Fusion | None = None,
) -> tuple[Collection, float, bool]:
    """Load the cached collection for (corpus, stages, embedder) or build and cache it.

    The fusion is not part of the cache key: it only affects search, so it is applied
    to a cached collection as given.
    """
    docs, checksum = read_corpus(dataset.corpus)
    ckey = key("collection", checksum, "|".join(stages), embedder)
    path = engine.cache_dir / "collections" / f"{dataset.name}-{ckey}"
    if path.exists() and not rebuild:
        try:
            cached = engine.load(path)
            if fusion is not None:
                cached.fusion = fusion
            return cached, 0.0, True
        except IndexFormatError as exc:
            log.warning("rebuilding cached index %s: %s", path, exc)
    t0 = time.perf_counter()
    collection = engine.index(docs, stages=stages, embedder=embedder, fusion=fusion)
    seconds = time.perf_counter() - t0
    collection.save(path, overwrite=True)
    return collection, seconds, False


def first_stage_from_run(
    dataset: Dataset, run_path: Path, qids: Sequence[str], depth: int
) -> tuple[list[list[Hit]], float]:
    """Candidates from a TREC run file, with titles/texts from the dataset's corpus."""
    from .docstore import DocStore
    from .corpus import read_trec_run

    t0 = time.perf_counter()
    docs, _ = read_corpus(dataset.corpus)
    store = DocStore(docs)
    run = read_trec_run(run_path)
    out: list[list[Hit]] = []
    missing_docs = 0
    for qid in qids:
        hits: list[Hit] = []
        for doc_id, score in run.get(qid, [])[:depth]:
            doc = store.by_id(doc_id)
            if doc is None:
                missing_docs += 1
                continue
            hits.append(
                Hit(id=doc_id, score=score, rank=len(hits) + 1, title=doc.title, text=doc.text)
            )
        out.append(hits)
    if missing_docs:
        log.warning("%d run entries name documents absent from the corpus; skipped", missing_docs)
    return out, time.perf_counter() - t0


def evaluate(
    engine: Engine,
    dataset_dir: str | Path,
    *,
    pipeline: str = "bm25",
    split: str = "test",
    embedder: str = "minilm",
    limit: int | None = None,
    k: int = 100,
    rel_level: int = 1,
    rebuild: bool = False,
    run_out: str | Path | None = None,
    run: str | Path | None = None,
    rerank: str | None = None,
    rerank_options: Mapping[str, Any] | None = None,
    strategy: str | None = None,
    depth: int = 100,
    window: int | None = None,
    stride: int | None = None,
    passes: int = 1,
    pairwise_method: str = "sliding",
    pairwise_top_k: int = 10,
    interpolate: float | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Evaluate a first stage (a pipeline or a TREC run file), optionally reranked.

    With ``rerank``, the top ``depth`` candidates of each query are reordered by the
    reranker using ``strategy`` and the rest keep their first-stage order; the report
    then holds the reranked metrics, the first stage's under ``first_stage``, and the
    summed ``cost`` (``llm_calls``, ``input_tokens``, ``output_tokens``, ``seconds``).
    ``interpolate=w`` blends reranker and first-stage scores (see :mod:`relevo.engine.rerank`).
    """
    from .components import Cost
    from .rerank import Repairs, Reranking

    t_start = time.perf_counter()
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}.")
    if k < 100:
        raise ConfigError("k must be at least 100 so Recall@100 is defined.")
    if depth < 1:
        raise ConfigError(f"--depth must be >= 1, got {depth}.")
    dataset = load_dataset(dataset_dir, split=split)
    qids = list(dataset.queries)[:limit] if limit else list(dataset.queries)
    index_seconds, reused = 0.0, True
    stages: list[str] = []
    if run is not None:
        results, search_seconds = first_stage_from_run(dataset, Path(run), qids, max(k, depth))
        source = f"run:{Path(run).name}"
    else:
        stages, fusion = parse_pipeline(pipeline, engine.registry, embedder)
        collection, index_seconds, reused = collection_for(
            engine, dataset, stages, embedder=embedder, rebuild=rebuild, fusion=fusion
        )
        t0 = time.perf_counter()
        results = collection.search_batch(
            [dataset.queries[q] for q in qids], max(k, depth), with_text=rerank is not None
        )
        search_seconds = time.perf_counter() - t0
        source = pipeline
    qrels = {q: dataset.qrels[q] for q in qids}
    first = dict(zip(qids, results, strict=True))
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "split": split,
        "pipeline": source,
        "stages": stages,
    }
    final = first
    if rerank is not None:
        reranker = engine.reranker(rerank, **dict(rerank_options or {}))
        runner = Reranking(
            reranker,
            strategy=strategy,
            window=window,
            stride=stride,
            passes=passes,
            pairwise_method=pairwise_method,
            top_k=pairwise_top_k,
            interpolate=interpolate,
        )
        # Weights load before the clock starts, so seconds per query are steady-state
        # (the load is reported on its own).
        t_load = time.perf_counter()
        reranker.load()
        load_seconds = time.perf_counter() - t_load
        total, repairs = Cost(), Repairs()
        final = {}
        for qid in qids:
            hits = first[qid]
            res = runner(dataset.queries[qid], hits[:depth])
            tail = [
                Hit(id=h.id, score=h.score, rank=depth + i + 1, title=h.title, text=h.text)
                for i, h in enumerate(hits[depth:])
            ]
            final[qid] = res.hits + tail
            total = total + res.cost
            repairs.merge(res.repairs)
            if progress is not None:
                progress(1)
        report["first_stage"] = score_run(first, qrels, rel_level=rel_level)
        report["rerank"] = {
            "reranker": rerank,
            "strategy": runner.strategy,
            "depth": depth,
            "window": runner.window if runner.strategy == "window" else None,
            "stride": runner.stride if runner.strategy == "window" else None,
            "passes": passes,
            "pairwise_method": pairwise_method if runner.strategy == "pairwise" else None,
            "pairwise_top_k": pairwise_top_k if runner.strategy == "pairwise" else None,
            "interpolate": interpolate,
            "repairs": repairs.to_dict(),
            "load_seconds": load_seconds,
        }
        report["cost"] = total.to_dict()
        report["seconds_per_query"] = total.seconds / len(qids) if qids else 0.0
    metrics = score_run(final, qrels, rel_level=rel_level)
    if run_out is not None:
        write_trec_run(Path(run_out), final, f"relevo-{source}" + (f"-{rerank}" if rerank else ""))
    report.update(metrics)
    report.update(
        {
            "queries": len(qids),
            "seconds": time.perf_counter() - t_start,
            "search_seconds": search_seconds,
            "index_seconds": index_seconds,
            "index_reused": reused,
            "qps": len(qids) / search_seconds if search_seconds > 0 else None,
        }
    )
    return report


__all__ = [
    "PIPELINES",
    "Dataset",
    "evaluate",
    "first_stage_from_run",
    "load_dataset",
    "parse_pipeline",
    "pipeline_stages",
    "score_run",
    "write_trec_run",
]
