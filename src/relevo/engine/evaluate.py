"""Evaluation on BEIR-layout datasets: build or reuse indexes, run queries, score the run.

Metrics come from ``ir-measures`` (trec_eval underneath): nDCG@10, MRR@10 (RR@10) and
Recall@100. Every judged query of the split counts; a query with no hits scores 0.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import key
from .collection import Collection, Fusion, check_replaceable
from .components import Cost
from .corpus import read_corpus, read_qrels, read_queries, resolve_corpus
from .errors import ConfigError, DatasetError, IndexFormatError
from .rerank import Repairs, RerankOptions
from .types import Hit

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

log = logging.getLogger(__name__)

#: Accepted by every registry: a single index format or embedder is a pipeline of its own.
#: Named pipelines (``dense``, ``hybrid``, ``promptreps``...) are declared by the plugins
#: whose components they use (``register(..., pipelines={...})``), see
#: :meth:`relevo.engine.registry.Registry.pipelines`.


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

    Accepts a named pipeline a plugin declares (``dense``, ``hybrid``, ``promptreps``
    with the bundled plugins), a registered index format (``faiss-hnsw``, ``splade``), a registered
    embedder name (a flat dense index over it, e.g. ``bge-small``), ``FORMAT@EMBEDDER``,
    or a fusion ``hybrid:A+B+...`` (reciprocal-rank fusion) / ``linear:A+B`` (weighted
    sum of min-max-normalised scores) of any of those, with optional per-stage weights
    ``A*0.5``.
    """

    pipeline = pipeline.strip()
    named = registry.pipelines()
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
    if pipeline in named and named[pipeline] != pipeline and pipeline not in _expanding:
        # A named pipeline may mention a component of the same name ("promptreps").
        return parse_pipeline(named[pipeline], registry, embedder, _expanding | {pipeline})
    head, colon, spec = pipeline.partition(":")
    if colon and head in named and named[head] in registry.names("index"):
        # a named single-format pipeline with a spec: generative:PATH -> docid-trie:PATH
        return [f"{named[head]}:{spec}"], Fusion()
    if colon and head in registry.names("index"):  # a format with a spec: docid-trie:PATH
        return [pipeline], Fusion()
    fmt = pipeline.partition("@")[0]
    if fmt in registry.names("index"):
        reg, _ = registry.get("index", fmt)
        if reg.cls.input == "vectors" and "@" not in pipeline:
            return [f"{pipeline}@{embedder}"], Fusion()
        return [pipeline], Fusion()
    if pipeline.partition(":")[0] in registry.names("embedder"):
        return [f"faiss-flat@{pipeline}"], Fusion()
    names = sorted(named) + registry.names("index") + registry.names("embedder")
    raise ConfigError(
        f"unknown pipeline {pipeline!r}; choose one of {', '.join(dict.fromkeys(names))}, "
        "or a fusion such as hybrid:bm25+bge-small*0.5."
    )


def run_scores(hits: Sequence[Hit]) -> list[tuple[str, str]]:
    """``(doc id, score text)`` per hit, scores strictly decreasing in relevo's order.

    trec_eval and every tool built on it order a run by score and break ties by
    document id, not by the order of the lines. Fused and reranked lists tie often, so
    the written scores are the hits' own scores (6 decimals) made strictly decreasing:
    a score that does not fall below the one before is lowered to one millionth under
    it. Evaluating these exact values (:func:`score_run`) and writing them
    (:func:`write_trec_run`) give every tool the ranking relevo returned.
    """
    out: list[tuple[str, str]] = []
    prev: int | None = None
    for h in hits:
        micro = round(float(h.score) * 1_000_000)
        if prev is not None and micro >= prev:
            micro = prev - 1
        prev = micro
        sign = "-" if micro < 0 else ""
        whole, frac = divmod(abs(micro), 1_000_000)
        out.append((h.id, f"{sign}{whole}.{frac:06d}"))
    return out


def score_run(
    run: Mapping[str, Sequence[Hit]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    rel_level: int = 1,
) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@100 averaged over every judged query (missing = 0).

    The run is scored with the scores :func:`write_trec_run` writes, so a run file
    scored by trec_eval gives the same numbers.
    """
    from .deps import require

    (ir_measures,) = require("ir_measures", extra="eval", what="relevo eval")
    from ir_measures import RR, R, nDCG

    measures = {
        "ndcg@10": nDCG @ 10,
        "mrr@10": RR(rel=rel_level) @ 10,
        "recall@100": R(rel=rel_level) @ 100,
    }
    scored = {
        qid: {doc: float(score) for doc, score in run_scores(hits)}
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
    """Write a TREC run file (``qid Q0 doc rank score tag``) atomically, scores from :func:`run_scores`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for qid, hits in run.items():
                for rank, (doc, score) in enumerate(run_scores(hits), 1):
                    fh.write(f"{qid} Q0 {doc} {rank} {score} {tag}\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    parts = ["collection", checksum, "|".join(stages), embedder]
    if engine.embedder_defaults:  # e.g. an MoE embedder's --domain
        parts.append(json.dumps(engine.embedder_defaults, sort_keys=True))
    ckey = key(*parts)
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
    try:
        check_replaceable(path, overwrite=True)
    except IndexFormatError:
        # A cache entry of ours that is no longer a readable collection: it holds nothing
        # of the user's, and save() rightly refuses to replace what it cannot recognise.
        shutil.rmtree(path)
    collection.save(path, overwrite=True)
    return collection, seconds, False


def corpus_collection(
    engine: Engine,
    corpus: str | os.PathLike[str],
    pipeline: str,
    *,
    embedder: str = "minilm",
) -> Collection:
    """The cached collection of ``pipeline`` over a corpus file or BEIR folder.

    The same cache entry ``relevo eval`` uses for that corpus, so round-trip checks and
    dev sets over a dataset reuse its indexes.
    """
    path = resolve_corpus(corpus)
    stages, fusion = parse_pipeline(pipeline, engine.registry, embedder)
    name = (path.parent.name if path.name.startswith("corpus.") else path.stem) or "corpus"
    dataset = Dataset(
        path.parent if path.name.startswith("corpus.") else path.parent / name, path, {}, {}, ""
    )
    collection, _, _ = collection_for(engine, dataset, stages, embedder=embedder, fusion=fusion)
    return collection


def first_stage_from_run(
    dataset: Dataset, run_path: Path, qids: Sequence[str], depth: int
) -> tuple[list[list[Hit]], float]:
    """Candidates from a TREC run file, with titles/texts from the dataset's corpus."""
    from .corpus import read_trec_run
    from .docstore import DocStore

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


def _first_stage(
    engine: Engine,
    dataset: Dataset,
    qids: Sequence[str],
    *,
    pipeline: str,
    embedder: str,
    run: str | Path | None,
    fetch: int,
    rebuild: bool,
    with_text: bool,
) -> tuple[dict[str, Sequence[Hit]], dict[str, Any]]:
    """Candidates per query from a run file or a (cached) pipeline, and facts for the report."""
    if run is not None:
        results, search_seconds = first_stage_from_run(dataset, Path(run), qids, fetch)
        from .runinfo import digest

        facts = {"pipeline": f"run:{Path(run).name}", "stages": [], "index_seconds": 0.0}
        _, checksum = read_corpus(dataset.corpus)
        return dict(zip(qids, results, strict=True)), {
            **facts,
            "search_seconds": search_seconds,
            "index_reused": True,
            "models": {},
            "index": {"run_file": Path(run).name, "run_digest": digest(Path(run).read_bytes())},
            "corpus_checksum": checksum,
        }
    stages, fusion = parse_pipeline(pipeline, engine.registry, embedder)
    collection, index_seconds, reused = collection_for(
        engine, dataset, stages, embedder=embedder, rebuild=rebuild, fusion=fusion
    )
    t0 = time.perf_counter()
    found = collection.search_batch([dataset.queries[q] for q in qids], fetch, with_text=with_text)
    from .runinfo import collection_facts

    models, index = collection_facts(collection)
    return dict(zip(qids, found, strict=True)), {
        "pipeline": pipeline,
        "stages": stages,
        "index_seconds": index_seconds,
        "search_seconds": time.perf_counter() - t0,
        "index_reused": reused,
        "models": models,
        "index": index,
        "corpus_checksum": collection.corpus_checksum,
    }


def _rerank_all(
    dataset: Dataset,
    first: Mapping[str, Sequence[Hit]],
    name: str,
    reranker: Any,
    load_seconds: float,
    options: RerankOptions,
    progress: Any,
    *,
    skip: bool = False,
) -> tuple[dict[str, Sequence[Hit]], dict[str, Any]]:
    """Rerank the top ``options.depth`` of every query; the rest keep their first-stage order.

    ``skip`` (``--interpolate auto`` found that reranking does not help): the first
    stage is returned as it is and the settings say so.
    """
    from .runinfo import reranker_facts

    runner = options.runner(reranker)
    depth = options.depth
    total, repairs = Cost(), Repairs()
    final: dict[str, Sequence[Hit]] = {}
    for qid, hits in first.items():
        if skip:
            final[qid] = hits
            if progress is not None:
                progress(1)
            continue
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
    strategy = runner.strategy
    settings = {
        "reranker": name,
        "strategy": strategy,
        "depth": depth,
        "window": runner.window if strategy == "window" else None,
        "stride": runner.stride if strategy == "window" else None,
        "passes": options.passes,
        "pairwise_method": options.pairwise_method if strategy == "pairwise" else None,
        "pairwise_top_k": options.top_k if strategy == "pairwise" else None,
        "interpolate": options.interpolate,
        "skipped": skip,
        "repairs": repairs.to_dict(),
        "load_seconds": load_seconds,
        "model": reranker_facts(reranker),
    }
    n = len(first)
    return final, {
        "rerank": settings,
        "cost": total.to_dict(),
        "seconds_per_query": total.seconds / n if n else 0.0,
    }


def _auto_interpolation(
    engine: Engine,
    dataset: Dataset,
    reranker: Any,
    options: RerankOptions,
    *,
    pipeline: str,
    embedder: str,
    dev_queries: str | Path | None,
) -> Any:
    """``--interpolate auto``: the weight the corpus's synthetic dev set supports."""
    from .autotune import dev_rows, estimate_interpolation
    from .synthetic import cached_dev_set, read_synthetic_queries

    if dev_queries is not None:
        generated = read_synthetic_queries(dev_queries)
        source = str(dev_queries)
    else:
        generated, path = cached_dev_set(engine, dataset.corpus)
        source = str(path)
    rows = dev_rows(
        engine, dataset.corpus, generated, pipeline=pipeline, depth=options.depth, embedder=embedder
    )
    runner = replace(options, interpolate=None).runner(reranker)
    estimate = estimate_interpolation(runner, rows, depth=options.depth, source=source)
    estimate.extra["pipeline"] = pipeline
    estimate.extra["generated_queries"] = len(generated)
    return estimate


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
    reranker_options: Mapping[str, Any] | None = None,
    reranking: RerankOptions | None = None,
    progress: Any = None,
    dev_queries: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a first stage (a pipeline or a TREC run file), optionally reranked.

    Args:
        engine: the Engine whose plugins build indexes and rerankers.
        dataset_dir: a BEIR-layout folder.
        pipeline: see :func:`parse_pipeline` (ignored when ``run`` is given).
        split: the qrels split scored.
        embedder: the default embedder of dense stages.
        limit: only the first ``limit`` judged queries.
        k: hits per query kept in the run (at least 100, for Recall@100).
        rel_level: minimum relevance MRR and Recall count (2 for TREC DL).
        rebuild: rebuild the cached indexes.
        run_out: write the final run here (TREC format, scores strictly decreasing).
        run: a TREC run file to use as the first stage.
        rerank: a reranker name; its top ``reranking.depth`` candidates are reordered.
        reranker_options: keyword options for the reranker's constructor.
        reranking: strategy, depth, window... (default :class:`RerankOptions`).
        progress: ``advance(n)`` called once per reranked query.
        dev_queries: synthetic queries with their source documents (``relevo
            generate-queries``) for ``interpolate="auto"``; default: a small set generated
            once per corpus and cached (:func:`relevo.engine.synthetic.cached_dev_set`).

    Returns:
        The report: ``ndcg@10``, ``mrr@10``, ``recall@100``, ``queries``, ``seconds`` and
        timings; with ``rerank`` also ``first_stage`` (its metrics), ``rerank`` (the
        settings and permutation repairs), ``cost`` (``llm_calls``, ``input_tokens``,
        ``output_tokens``, ``seconds``) and ``seconds_per_query``.
    """
    t_start = time.perf_counter()
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}.")
    if k < 100:
        raise ConfigError("k must be at least 100 so Recall@100 is defined.")
    options = reranking or RerankOptions()
    dataset = load_dataset(dataset_dir, split=split)
    qids = list(dataset.queries)[:limit] if limit else list(dataset.queries)
    first, facts = _first_stage(
        engine,
        dataset,
        qids,
        pipeline=pipeline,
        embedder=embedder,
        run=run,
        fetch=max(k, options.depth),
        rebuild=rebuild,
        with_text=rerank is not None,
    )
    qrels = {q: dataset.qrels[q] for q in qids}
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "split": split,
        "pipeline": facts["pipeline"],
        "stages": facts["stages"],
    }
    final = first
    if rerank is None and options.interpolate is not None:
        raise ConfigError("--interpolate blends a reranker with the first stage: give --rerank.")
    if rerank is not None:
        reranker = engine.reranker(rerank, **dict(reranker_options or {}))
        # Weights load before the clock starts, so seconds per query are steady-state
        # (the load is reported on its own).
        t_load = time.perf_counter()
        reranker.load()
        load_seconds = time.perf_counter() - t_load
        skip = False
        if options.interpolate == "auto":
            estimate = _auto_interpolation(
                engine, dataset, reranker, options,
                pipeline=pipeline if run is None else "bm25", embedder=embedder,
                dev_queries=dev_queries,
            )  # fmt: skip
            report["interpolate_auto"] = estimate.to_dict()
            skip = not estimate.rerank
            options = replace(options, interpolate=estimate.weight)
        final, rerank_facts = _rerank_all(
            dataset, first, rerank, reranker, load_seconds, options, progress, skip=skip
        )
        report["first_stage"] = score_run(first, qrels, rel_level=rel_level)
        report.update(rerank_facts)
    report.update(score_run(final, qrels, rel_level=rel_level))
    if run_out is not None:
        tag = f"relevo-{facts['pipeline']}" + (f"-{rerank}" if rerank else "")
        write_trec_run(Path(run_out), final, tag.replace(" ", "_"))
    search_seconds = facts["search_seconds"]
    report.update(
        {
            "queries": len(qids),
            "seconds": time.perf_counter() - t_start,
            "search_seconds": search_seconds,
            "index_seconds": facts["index_seconds"],
            "index_reused": facts["index_reused"],
            "qps": len(qids) / search_seconds if search_seconds > 0 else None,
        }
    )
    from .runinfo import data_facts, stack

    models = dict(facts["models"])
    if rerank is not None:
        models["reranker"] = report["rerank"]["model"]
    report["manifest"] = {
        "stack": stack(),
        "models": models,
        "index": facts["index"],
        "data": data_facts(dataset, qids, facts["corpus_checksum"]),
        "params": {
            "pipeline": facts["pipeline"],
            "embedder": embedder,
            "split": split,
            "limit": limit,
            "k": k,
            "rel_level": rel_level,
            "rerank": None
            if rerank is None
            else {
                key: v
                for key, v in report["rerank"].items()
                if key not in ("repairs", "load_seconds", "model")
            }
            | {"options": dict(reranker_options or {})},
        },
    }
    return report


__all__ = [
    "Dataset",
    "corpus_collection",
    "evaluate",
    "first_stage_from_run",
    "load_dataset",
    "parse_pipeline",
    "run_scores",
    "score_run",
    "write_trec_run",
]
