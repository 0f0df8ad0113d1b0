"""Hard-negative mining: false negatives on NFCorpus train (part A), peak memory at scale (part B).

    .venv/bin/python benchmarks/bench_mining.py [--parts a b] [--first-stages bm25 faiss-flat@minilm]
        [--limit N] [--teacher nanoranker] [--teacher-limit N] [--no-st]
        [--docs 100000 --queries 10000 --depth 50]

Part A mines NFCorpus train (about 43 judged-relevant documents per query) with
``max_positives=1``: each query hands the miner only its highest-graded positive (all
train grades are 1, so the first by document id), and every *other* judged-relevant
document that ends up among the kept negatives is a false negative. Each miner's
``select`` is instrumented to record which candidates it dropped, so a filter gets a
precision (dropped candidates that are judged relevant) and a recall (judged-relevant
candidates that it dropped, out of all those among the top-100 candidates).
sentence-transformers' ``mine_hard_negatives`` runs on the same queries, positives and
corpus texts with the packaged MiniLM (the same model as ``faiss-flat@minilm``).

Part B measures peak RSS and seconds of mining synthetic documents (random normal,
L2-normalised 384-d float32 vectors, one planted positive per query) with relevo
(``faiss-flat`` / ``torch-flat`` collections fed by an embedder that returns the
precomputed vectors) and with ``mine_hard_negatives`` (a stand-in model whose encode
returns the same vectors), each in its own subprocess.

Results go to ``benchmarks/results/mining.{json,md,png}``; running one part keeps the
other part's rows from the previous JSON (each part records its own command line).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import _common as common

DATASETS = common.datasets_dir()
DATASET = "nfcorpus"
SPLIT = "train"
NUM_NEGATIVES = 10
DEPTH = 100
TEACHER_DEPTH = 30
#: Absolute margins per first stage, in that stage's score units (BM25 points, cosine).
ABSOLUTE_MARGINS = {"bm25": (1.0, 3.0), "dense": (0.02, 0.05)}
RELATIVE_MARGINS = (0.05, 0.1)
ADAPTIVE_Z = (0.5, 1.0, 2.0)
TEACHER_Z = (0.5, 1.0)
DIM = 384


def command_line() -> str:
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(common.REPO))
    except ValueError:
        exe_s = str(exe)
    script = Path(sys.argv[0])
    try:
        script_s = str(script.resolve().relative_to(common.REPO))
    except ValueError:
        script_s = str(script)
    return shlex.join([exe_s, script_s, *sys.argv[1:]])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


# -- part A: false negatives on NFCorpus train --------------------------------------------------


class MemoRetriever:
    """A collection whose ``search_batch`` / ``score_documents`` answers are kept per query.

    Every configuration of one first stage sees exactly the same candidates, and the
    first stage (BM25, or MiniLM query encoding + faiss) runs once, not once per miner.
    """

    def __init__(self, collection: Any) -> None:
        self._col = collection
        self._hits: dict[tuple[str, int], list[Any]] = {}
        self._scores: dict[tuple[str, tuple[str, ...]], list[float | None]] = {}

    def search_batch(self, queries: Sequence[str], k: int, **kwargs: Any) -> list[list[Any]]:
        todo = list(dict.fromkeys(q for q in queries if (q, k) not in self._hits))
        if todo:
            for q, hits in zip(todo, self._col.search_batch(todo, k, with_text=False), strict=True):
                self._hits[(q, k)] = hits
        return [self._hits[(q, k)] for q in queries]

    def score_documents(
        self, queries: Sequence[str], doc_ids: Sequence[Sequence[str]]
    ) -> list[list[float | None]]:
        keys = [(q, tuple(ids)) for q, ids in zip(queries, doc_ids, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self._scores]
        if todo:
            got = self._col.score_documents([queries[i] for i in todo], [doc_ids[i] for i in todo])
            for i, row in zip(todo, got, strict=True):
                self._scores[keys[i]] = row
        return [self._scores[k] for k in keys]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._col, name)


def instrument(miner: Any) -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
    """Record, per query, the candidate ids the miner saw and the ``(id, reason)`` it dropped."""
    seen: dict[str, tuple[list[str], list[tuple[str, str]]]] = {}
    inner = miner.select

    def select(query: Any, rng: Any) -> Any:
        selection = inner(query, rng)
        seen[query.query_id] = (
            [c.id for c in query.candidates],
            [(d, reason) for d, _, reason in selection.dropped],
        )
        return selection

    miner.select = select
    return seen


def relevo_configs(kind: str, teacher: Any, teacher_limit: int | None) -> list[dict[str, Any]]:
    """``{"label", "miner", "options", "limit"}`` for one first stage (``kind``: bm25 / dense)."""
    base = {"num_negatives": NUM_NEGATIVES, "max_rank": DEPTH}
    out: list[dict[str, Any]] = [
        {"label": "static top-10, ranks 1-100", "miner": "static", "options": {}},
        {"label": "static ranks 11-100", "miner": "static", "options": {"min_rank": 11}},
        {"label": "static ranks 31-100", "miner": "static", "options": {"min_rank": 31}},
    ]
    for m in ABSOLUTE_MARGINS[kind]:
        out.append(
            {
                "label": f"static absolute_margin {m:g}",
                "miner": "static",
                "options": {"absolute_margin": m},
            }
        )
    for m in RELATIVE_MARGINS:
        out.append(
            {
                "label": f"static relative_margin {m:g}",
                "miner": "static",
                "options": {"relative_margin": m},
            }
        )
    for z in ADAPTIVE_Z:
        out.append(
            {"label": f"adaptive-margin z={z:g}", "miner": "adaptive-margin", "options": {"z": z}}
        )
    if teacher is not None:
        for z in TEACHER_Z:
            out.append(
                {
                    "label": f"adaptive-margin z={z:g} + nanoranker teacher (top {TEACHER_DEPTH})",
                    "miner": "adaptive-margin",
                    "options": {"z": z, "teacher": teacher, "teacher_depth": TEACHER_DEPTH},
                    "limit": teacher_limit,
                }
            )
    for c in out:
        c["options"] = {**base, **c["options"]}
    return out


def st_configs(kind: str) -> list[dict[str, Any]]:
    """mine_hard_negatives settings matching the static rows (range_min skips candidates)."""
    out: list[dict[str, Any]] = [
        {"label": "top-10, range 0-100", "options": {"range_max": DEPTH}},
        {"label": "range_min 10, range_max 100", "options": {"range_min": 10, "range_max": DEPTH}},
        {"label": "range_min 30, range_max 100", "options": {"range_min": 30, "range_max": DEPTH}},
    ]
    for m in ABSOLUTE_MARGINS[kind]:
        out.append(
            {
                "label": f"absolute_margin {m:g}",
                "options": {"absolute_margin": m, "range_max": DEPTH},
            }
        )
    for m in RELATIVE_MARGINS:
        out.append(
            {
                "label": f"relative_margin {m:g}",
                "options": {"relative_margin": m, "range_max": DEPTH},
            }
        )
    return out


def fn_counts(
    negatives: Mapping[str, Sequence[str]], others: Mapping[str, set[str]]
) -> tuple[int, int]:
    """(negatives kept, of which judged relevant)."""
    kept = sum(len(v) for v in negatives.values())
    fn = sum(1 for q, v in negatives.items() for d in v if d in others[q])
    return kept, fn


def run_part_a(args: argparse.Namespace) -> dict[str, Any]:
    common.quiet_transformers()
    from relevo import Engine
    from relevo.engine.corpus import read_corpus
    from relevo.engine.evaluate import collection_for, load_dataset, parse_pipeline
    from relevo.engine.mining import judged_positives

    root = DATASETS / DATASET
    engine = Engine()
    ds = load_dataset(root, split=SPLIT)
    positives = judged_positives(ds.qrels, max_positives=1)
    qids = [q for q in ds.queries if q in positives]
    if args.limit:
        qids = qids[: args.limit]
    relevant = {q: {d for d, g in ds.qrels[q].items() if g > 0} for q in qids}
    others = {q: relevant[q] - set(positives[q]) for q in qids}
    docs, _checksum = read_corpus(ds.corpus)
    corpus = {d.id: d for d in docs}
    log(
        f"{DATASET} {SPLIT}: {len(qids)} queries, {len(docs)} docs, "
        f"{sum(len(v) for v in others.values()) / len(qids):.1f} other judged-relevant docs per query"
    )

    teacher = None
    if args.teacher and args.teacher != "none":
        teacher = engine.reranker(args.teacher)  # one instance: its document cache is shared

    rows: list[dict[str, Any]] = []
    stage_info: list[dict[str, Any]] = []
    for fs in args.first_stages:
        kind = "bm25" if fs == "bm25" else "dense"
        stages, fusion = parse_pipeline(fs, engine.registry, args.embedder)
        (col, build_s, reused), wall = common.timed(
            collection_for, engine, ds, stages, embedder=args.embedder, fusion=fusion
        )
        retriever = MemoRetriever(col)
        texts = [ds.queries[q] for q in qids]
        _, search_s = common.timed(retriever.search_batch, texts, DEPTH)
        cand_rel = cand_n = 0
        for q in qids:
            hits = retriever.search_batch([ds.queries[q]], DEPTH)[0]
            ids = [h.id for h in hits if h.id not in positives[q]]
            cand_n += len(ids)
            cand_rel += sum(1 for d in ids if d in others[q])
        info = {
            "first_stage": fs,
            "collection_seconds": round(wall, 2),
            "collection_reused": bool(reused),
            "search_seconds": round(search_s, 2),
            "candidates": cand_n,
            "candidates_judged_relevant": cand_rel,
            "candidate_relevant_share": ratio(cand_rel, cand_n),
        }
        stage_info.append(info)
        log(f"{fs}: {json.dumps(info)}")

        for cfg in relevo_configs(kind, teacher, args.teacher_limit):
            miner = engine.miner(cfg["miner"], **cfg["options"])
            seen = instrument(miner)
            sub = qids[: cfg["limit"]] if cfg.get("limit") else qids
            result, secs = common.timed(
                miner.mine,
                {q: ds.queries[q] for q in sub},
                {q: positives[q] for q in sub},
                corpus,
                retriever=retriever,
                k=DEPTH,
            )
            negs = result.negatives()
            kept, fn = fn_counts(negs, others)
            dropped_n = dropped_rel = c_rel = 0
            for q in sub:
                cands, dropped = seen[q]
                c_rel += sum(1 for d in cands if d in others[q])
                dropped_n += len(dropped)
                dropped_rel += sum(1 for d, _ in dropped if d in others[q])
            rep = result.report.to_dict()
            row = {
                "first_stage": fs,
                "system": "relevo",
                "config": cfg["label"],
                "miner": cfg["miner"],
                "options": {
                    k: (v if not hasattr(v, "describe") else v.describe())
                    for k, v in cfg["options"].items()
                },
                "queries": len(sub),
                "subset": len(sub) < len(qids),
                "kept": kept,
                "kept_per_query": kept / len(sub),
                "queries_without_negatives": rep["queries_without_negatives"],
                "false_negatives": fn,
                "fn_rate": ratio(fn, kept),
                "dropped": dropped_n,
                "dropped_by_reason": rep["dropped"],
                "dropped_judged_relevant": dropped_rel,
                "candidates_judged_relevant": c_rel,
                "precision": ratio(dropped_rel, dropped_n),
                "recall": ratio(dropped_rel, c_rel) if dropped_n else None,
                "queries_unjudged": rep.get("queries_unjudged_positive_not_retrieved"),
                "positive_scores": rep.get("positive_scores"),
                "seconds": round(secs, 2),
            }
            rows.append(row)
            log(
                f"{fs} | {cfg['label']}: kept {kept}, FN {row['fn_rate']:.3f}, "
                f"dropped {dropped_n} (P {row['precision']}, R {row['recall']}), {secs:.1f}s"
            )

        if not args.no_st and kind == "dense" and args.embedder == "minilm":
            rows += run_st(ds, qids, positives, relevant, docs, kind)

    return {
        "meta": {
            "command": command_line(),
            "dataset": DATASET,
            "split": SPLIT,
            "max_positives": 1,
            "num_negatives": NUM_NEGATIVES,
            "depth": DEPTH,
            "queries": len(qids),
            "documents": len(docs),
            "teacher": args.teacher,
            "teacher_limit": args.teacher_limit,
            "first_stages": stage_info,
            "load_average_end": common.load_average(),
        },
        "rows": rows,
    }


def run_st(
    ds: Any,
    qids: Sequence[str],
    positives: Mapping[str, Sequence[str]],
    relevant: Mapping[str, set[str]],
    docs: Sequence[Any],
    kind: str,
) -> list[dict[str, Any]]:
    """sentence-transformers' mine_hard_negatives on the same queries, positives and texts."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    import relevo.models

    folder = relevo.models.locate(relevo.models.MINILM, required=True)
    model = SentenceTransformer(str(folder), device="cpu")
    content = {d.id: d.content for d in docs}
    text_ids: dict[str, set[str]] = {}
    for d in docs:
        text_ids.setdefault(d.content, set()).add(d.id)
    anchor_qids: dict[str, list[str]] = {}
    for q in qids:
        anchor_qids.setdefault(ds.queries[q], []).append(q)
    # mine_hard_negatives merges duplicate query texts (their positives pooled).
    anchor_others = {
        a: set().union(*(relevant[q] for q in qs)) - {p for q in qs for p in positives[q]}
        for a, qs in anchor_qids.items()
    }
    dataset = Dataset.from_dict(
        {
            "query": [ds.queries[q] for q in qids],
            "positive": [content[positives[q][0]] for q in qids],
        }
    )
    cache = Path(os.environ.get("RELEVO_CACHE_DIR") or Path.home() / ".cache" / "relevo")
    cache = cache / "bench-mining-st"
    rows = []
    for cfg in st_configs(kind):
        out, secs = common.timed(
            mine_hard_negatives,
            dataset,
            model,
            corpus=[d.content for d in docs],
            num_negatives=NUM_NEGATIVES,
            sampling_strategy="top",
            output_format="labeled-list",
            batch_size=32,
            cache_folder=str(cache),
            verbose=False,
            **cfg["options"],
        )
        kept = fn = 0
        done: set[str] = set()
        for row in out:
            anchor = row["query"]
            if anchor in done:  # one row per positive of a merged query: count it once
                continue
            done.add(anchor)
            negs = row["positive"][1:]
            kept += len(negs)
            fn += sum(1 for t in negs if text_ids.get(t, set()) & anchor_others[anchor])
        rows.append(
            {
                "first_stage": "st: minilm exact",
                "system": "sentence-transformers",
                "config": f"mine_hard_negatives {cfg['label']}",
                "miner": "mine_hard_negatives",
                "options": {**cfg["options"], "num_negatives": NUM_NEGATIVES},
                "queries": len(anchor_qids),
                "subset": False,
                "kept": kept,
                "kept_per_query": kept / len(anchor_qids),
                "queries_without_negatives": len(anchor_qids) - len(done),
                "false_negatives": fn,
                "fn_rate": ratio(fn, kept),
                "dropped": None,
                "precision": None,
                "recall": None,
                "seconds": round(secs, 2),
            }
        )
        log(
            f"st | {cfg['label']}: kept {kept}, FN {rows[-1]['fn_rate']:.3f}, {secs:.1f}s "
            f"({len(anchor_qids)} unique query texts)"
        )
    return rows


# -- part B: peak memory ------------------------------------------------------------------------

SYSTEMS = ("data-only", "relevo-faiss-flat", "relevo-torch-flat", "st-torch", "st-faiss")


def synthetic(n_docs: int, n_queries: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """Unit-norm random doc vectors, and queries = unit(doc[p] + unit noise): cos(q, p) ~ 0.7."""
    import numpy as np

    rng = np.random.default_rng(seed)
    docs = np.empty((n_docs, DIM), dtype=np.float32)
    for start in range(0, n_docs, 8192):  # chunks: generation never doubles the peak
        block = rng.standard_normal((min(8192, n_docs - start), DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        docs[start : start + len(block)] = block
    pos = rng.choice(n_docs, n_queries, replace=False)
    noise = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = docs[pos] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return docs, queries, pos


def proc_status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def rows_of(texts: Sequence[str]) -> Any:
    import numpy as np

    return np.fromiter((int(t[1:]) for t in texts), dtype=np.int64, count=len(texts))


def child(system: str, n_docs: int, n_queries: int, depth: int, negatives: int) -> dict[str, Any]:
    """One part-B measurement, run in its own process; returns what it measured."""
    t0 = time.perf_counter()
    if system.startswith("relevo"):
        make = relevo_child(system.removeprefix("relevo-"), depth, negatives)
    elif system.startswith("st"):
        make = st_child(system == "st-faiss", depth, negatives)
    else:

        def make(docs: Any, queries: Any, pos: Any) -> dict[str, Any]:
            return {}

    docs, queries, pos = synthetic(n_docs, n_queries)
    before = proc_status()
    start = time.perf_counter()
    extra = make(docs, queries, pos)
    secs = time.perf_counter() - start
    after = proc_status()
    return {
        "system": system,
        "docs": n_docs,
        "queries": n_queries,
        "depth": depth,
        "num_negatives": negatives,
        "rss_before_mb": before["VmRSS"],
        "hwm_before_mb": before["VmHWM"],
        "peak_rss_mb": after["VmHWM"],
        "seconds": secs,
        "process_seconds": time.perf_counter() - t0,
        **extra,
    }


def relevo_child(fmt: str, depth: int, negatives: int) -> Callable[[Any, Any, Any], dict[str, Any]]:
    from relevo import Document, Embedder, Engine

    class Precomputed(Embedder):
        """Returns the planted vectors: documents ``d<row>``, queries ``q<row>``."""

        name = "precomputed"
        batch_size = 8192

        def __init__(self, docs: Any, queries: Any) -> None:
            self.docs, self.queries = docs, queries
            self.dim = DIM
            self.normalized = True

        def embed_batch(self, texts: Sequence[str], *, kind: str) -> Any:
            src = self.queries if kind == "query" else self.docs
            return src[rows_of(texts)]

    def make(docs: Any, queries: Any, pos: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-mining-") as tmp:
            engine = Engine(cache=tmp)
            corpus = [Document(id=f"d{i}", text=f"d{i}") for i in range(len(docs))]
            emb = Precomputed(docs, queries)
            col, build_s = common.timed(engine.index, corpus, stages=[fmt], embedder=emb)
            miner = engine.miner("static", num_negatives=negatives, max_rank=depth)
            result, mine_s = common.timed(
                miner.mine,
                {f"q{i}": f"q{i}" for i in range(len(queries))},
                {f"q{i}": [f"d{int(p)}"] for i, p in enumerate(pos)},
                {d.id: d for d in corpus},
                retriever=col,
                k=depth,
            )
            negs = result.negatives()
            kept = sum(len(v) for v in negs.values())
            planted = {f"q{i}": f"d{int(p)}" for i, p in enumerate(pos)}
            leaked = sum(1 for q, v in negs.items() if planted[q] in v)
            found = result.report.queries - result.report.positives_unretrieved
            return {
                "build_seconds": build_s,
                "mine_seconds": mine_s,
                "kept": kept,
                "positives_returned_as_negatives": leaked,
                "positives_retrieved": found,
            }

    return make


def st_child(
    use_faiss: bool, depth: int, negatives: int
) -> Callable[[Any, Any, Any], dict[str, Any]]:
    import torch
    from datasets import Dataset
    from sentence_transformers.util import cos_sim, mine_hard_negatives, pairwise_cos_sim

    class PrecomputedModel:
        """What mine_hard_negatives calls on a SentenceTransformer, over planted vectors."""

        device = torch.device("cpu")

        def __init__(self, docs: Any, queries: Any) -> None:
            self.docs, self.queries = docs, queries

        def encode_document(self, texts: Sequence[str], **_: Any) -> Any:
            return self.docs[rows_of(texts)]

        def encode_query(self, texts: Sequence[str], **_: Any) -> Any:
            return self.queries[rows_of(texts)]

        def similarity(self, a: Any, b: Any) -> Any:  # all-MiniLM-L6-v2: cosine
            return cos_sim(a, b)

        def similarity_pairwise(self, a: Any, b: Any) -> Any:
            return pairwise_cos_sim(a, b)

        def get_embedding_dimension(self) -> int:
            return DIM

    def make(docs: Any, queries: Any, pos: Any) -> dict[str, Any]:
        model = PrecomputedModel(docs, queries)
        dataset = Dataset.from_dict(
            {
                "query": [f"q{i}" for i in range(len(queries))],
                "positive": [f"d{int(p)}" for p in pos],
            }
        )
        out = mine_hard_negatives(
            dataset,
            model,  # type: ignore[arg-type]
            corpus=[f"d{i}" for i in range(len(docs))],
            range_max=depth,
            num_negatives=negatives,
            sampling_strategy="top",
            output_format="n-tuple",
            use_faiss=use_faiss,
            verbose=False,
        )
        cols = [c for c in out.column_names if c.startswith("negative_")]
        kept = len(out) * len(cols)
        planted = {f"q{i}": f"d{int(p)}" for i, p in enumerate(pos)}
        leaked = sum(1 for row in out for c in cols if row[c] == planted[row["query"]])
        return {"kept": kept, "positives_returned_as_negatives": leaked, "rows": len(out)}

    return make


def run_child_process(system: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        system,
        "--docs",
        str(args.docs),
        "--queries",
        str(args.queries),
        "--depth",
        str(args.depth),
        "--negatives",
        str(args.negatives),
    ]
    log(f"part B: {system} ({args.docs} docs x {args.queries} queries)")
    import threading

    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        timer = threading.Timer(args.child_timeout, proc.kill)
        timer.start()
        try:
            # wait4: this child's own rusage (ru_maxrss in KiB on Linux)
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        return {
            "system": system,
            "error": f"exit {proc.returncode}: " + " ".join(stderr.strip().splitlines()[-1:]),
        }
    row = json.loads(stdout.strip().splitlines()[-1])
    row["wall_seconds"] = time.perf_counter() - start
    row["ru_maxrss_mb"] = usage.ru_maxrss / 1024
    log(f"part B: {json.dumps(row)}")
    return row


def run_part_b(args: argparse.Namespace) -> dict[str, Any]:
    rows = [run_child_process(s, args) for s in args.systems]
    base = next((r for r in rows if r["system"] == "data-only" and "error" not in r), None)
    relevo = next(
        (r for r in rows if r["system"] == "relevo-faiss-flat" and "error" not in r), None
    )
    for r in rows:
        if "error" in r:
            continue
        r["mining_rss_mb"] = r["peak_rss_mb"] - (base["peak_rss_mb"] if base else 0.0)
        if relevo and r["system"] != "data-only":
            r["peak_vs_relevo_faiss"] = r["peak_rss_mb"] / relevo["peak_rss_mb"]
    return {
        "meta": {
            "command": command_line(),
            "docs": args.docs,
            "queries": args.queries,
            "dim": DIM,
            "depth": args.depth,
            "num_negatives": args.negatives,
            "versions": {
                "relevo": common.dist_version("relevo"),
                "sentence-transformers": common.dist_version("sentence-transformers"),
                "faiss-cpu": common.dist_version("faiss-cpu"),
                "torch": common.dist_version("torch"),
                "datasets": common.dist_version("datasets"),
            },
            "load_average_end": common.load_average(),
        },
        "rows": rows,
    }


# -- result files -------------------------------------------------------------------------------


def fmt(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = ["# Hard-negative mining", ""]
    a = results.get("part_a")
    if a:
        m = a["meta"]
        lines += [
            f"## A. False negatives: {m['dataset']} {m['split']}, max_positives=1, "
            f"{m['num_negatives']} negatives per query, top-{m['depth']} candidates",
            "",
            f"`{m['command']}`",
            "",
            f"{m['queries']} queries, {m['documents']} documents. Only each query's first positive is "
            "handed to the miner; a kept negative that is among the query's other judged-relevant "
            "documents is a false negative (FN). Precision: dropped candidates that are judged "
            "relevant; recall: judged-relevant top-100 candidates that were dropped.",
            "",
        ]
        for info in m["first_stages"]:
            lines.append(
                f"- `{info['first_stage']}`: {fmt(info['candidate_relevant_share'])} of the top-100 "
                f"candidates are judged relevant (the precision of dropping at random); "
                f"first-stage search {info['search_seconds']} s"
            )
        lines.append("")
        headers = [
            "first stage",
            "configuration",
            "queries",
            "kept / query",
            "FN rate",
            "dropped / query",
            "precision",
            "recall",
            "seconds",
        ]
        table = []
        for r in a["rows"]:
            label = r["config"] + (f" **(subset: {r['queries']} queries)**" if r["subset"] else "")
            table.append(
                [
                    r["first_stage"],
                    label,
                    r["queries"],
                    f"{r['kept_per_query']:.2f}",
                    fmt(r["fn_rate"]),
                    "—" if r["dropped"] is None else f"{r['dropped'] / r['queries']:.1f}",
                    fmt(r["precision"]),
                    fmt(r["recall"]),
                    f"{r['seconds']:.1f}",
                ]
            )
        lines += common.md_table(headers, table, right=range(2, 9))
        unjudged = [
            f"{r['first_stage']} {r['config']}: {r['queries_unjudged']}"
            for r in a["rows"]
            if r.get("queries_unjudged")
        ]
        lines += [
            "",
            "Queries the adaptive margin leaves unfiltered because the first stage did not "
            "retrieve their positive in the top 100 (without a teacher it cannot judge them): "
            + ("; ".join(unjudged) if unjudged else "none")
            + ".",
            "",
            "Seconds are the miner's own (first-stage results are computed once per first stage "
            "and shared); the first sentence-transformers row includes embedding the corpus and "
            "queries (later rows load them from its cache_folder). Recall counts all judged-relevant "
            "candidates in the top 100, also those beyond the teacher's top 30. "
            "`mine_hard_negatives` merges duplicate query texts, so it counts unique texts.",
            "",
        ]
    b = results.get("part_b")
    if b:
        m = b["meta"]
        lines += [
            f"## B. Peak memory: {m['docs']:,} docs x {m['queries']:,} queries, {m['dim']}-d, "
            f"top-{m['depth']} candidates, {m['num_negatives']} negatives",
            "",
            f"`{m['command']}`",
            "",
            "Each row is one subprocess: imports, the synthetic vectors "
            f"({m['docs'] * m['dim'] * 4 / 2**20:.0f} MiB of documents), then mining. Peak RSS "
            "is the process's VmHWM at its end; ru_maxrss (from wait4) is beside it as a check (it "
            "also counts the parent's image at fork, so part B runs before part A); 'over data-only' subtracts the data-only process's peak; 'over own "
            "pre-mining RSS' subtracts what the process held once its imports and the vectors "
            "were in memory (relevo imports faiss / torch lazily, inside mining; "
            "sentence-transformers imports torch and datasets up front).",
            "",
        ]
        headers = [
            "system",
            "peak RSS MiB",
            "ru_maxrss MiB",
            "over data-only MiB",
            "over own pre-mining RSS MiB",
            "x relevo faiss-flat",
            "seconds",
            "negatives kept",
            "planted positive returned",
        ]
        table = []
        for r in b["rows"]:
            if "error" in r:
                table.append([r["system"], f"error: {r['error']}", *[""] * 7])
                continue
            table.append(
                [
                    r["system"],
                    f"{r['peak_rss_mb']:.0f}",
                    f"{r['ru_maxrss_mb']:.0f}",
                    f"{r['mining_rss_mb']:.0f}" if r["system"] != "data-only" else "—",
                    f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f}"
                    if r["system"] != "data-only"
                    else "—",
                    fmt(r.get("peak_vs_relevo_faiss"), ".2f"),
                    f"{r['seconds']:.1f}" if r["system"] != "data-only" else "—",
                    r.get("kept", "—"),
                    r.get("positives_returned_as_negatives", "—"),
                ]
            )
        lines += common.md_table(headers, table, right=range(1, 9))
        lines += [
            "",
            "relevo: `Engine.index(..., stages=[FORMAT])` with an embedder returning the vectors "
            "(seconds include building the index and writing the embedding cache to a temporary "
            "folder), then `static` miner `mine()`, which searches 256 queries per call "
            "(`NegativeMiner.batch_size`). sentence-transformers "
            f"{m['versions']['sentence-transformers']}: `mine_hard_negatives(range_max="
            f"{m['depth']}, num_negatives={m['num_negatives']}, output_format='n-tuple')` with a "
            "stand-in model whose encode returns the same vectors; `st-torch` is `use_faiss=False` "
            "(its default; one similarity block of faiss_batch_size=16384 queries x all documents), "
            "`st-faiss` is `use_faiss=True`.",
            "",
        ]
    path.write_text("\n".join(lines), "utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    a, b = results.get("part_a"), results.get("part_b")
    panels = (2 if a else 0) + (1 if b else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(6 * max(panels, 1), 5.5))
    axes = list(axes) if panels > 1 else [axes]
    i = 0
    if a:
        rows = a["rows"]
        ax = axes[i]
        labels = [f"{r['first_stage'][:10]} | {r['config'][:38]}" for r in rows]
        colors = ["tab:blue" if r["system"] == "relevo" else "tab:orange" for r in rows]
        ax.barh(range(len(rows)), [r["fn_rate"] or 0 for r in rows], color=colors)
        ax.set_yticks(range(len(rows)), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("false-negative rate of kept negatives")
        ax.set_title("A. FN rate (blue relevo, orange sentence-transformers)", fontsize=9)
        ax = axes[i + 1]
        for fs in common.unique(r["first_stage"] for r in rows):
            pts = [r for r in rows if r["first_stage"] == fs and r["precision"] is not None]
            if not pts:
                continue
            ax.scatter([r["recall"] for r in pts], [r["precision"] for r in pts], label=fs)
            for r in pts:
                ax.annotate(
                    r["config"].replace("static ", "")[:24],
                    (r["recall"], r["precision"]),
                    fontsize=5,
                )
        for info in a["meta"]["first_stages"]:
            if info["candidate_relevant_share"] is not None:
                ax.axhline(info["candidate_relevant_share"], ls=":", lw=0.8, color="grey")
        ax.set_xlabel("recall (judged-relevant candidates dropped)")
        ax.set_ylabel("precision (dropped that are judged relevant)")
        ax.set_title("A. filters against the qrels (dotted: dropping at random)", fontsize=9)
        ax.legend(fontsize=7)
        i += 2
    if b:
        rows = [r for r in b["rows"] if "error" not in r]
        ax = axes[i]
        ax.bar(range(len(rows)), [r["peak_rss_mb"] for r in rows], color="tab:green")
        ax.set_xticks(range(len(rows)), [r["system"] for r in rows], rotation=20, fontsize=7)
        ax.set_ylabel("peak RSS (MiB)")
        m = b["meta"]
        ax.set_title(f"B. {m['docs']:,} docs x {m['queries']:,} queries", fontsize=9)
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--parts", nargs="+", choices=["a", "b"], default=["a", "b"])
    ap.add_argument("--first-stages", nargs="+", default=["bm25", "faiss-flat@minilm"])
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--limit", type=int, help="part A: only the first N queries")
    ap.add_argument(
        "--teacher", default="nanoranker", help="part A teacher reranker ('none': skip)"
    )
    ap.add_argument("--teacher-limit", type=int, help="part A: teacher rows on the first N queries")
    ap.add_argument("--no-st", action="store_true", help="part A: skip mine_hard_negatives")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--negatives", type=int, default=NUM_NEGATIVES)
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    ap.add_argument("--child-timeout", type=int, default=900)
    ap.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    common.add_out(ap)
    ap.add_argument("--name", default="mining", help="basename of the result files")
    args = ap.parse_args()

    if args.child:
        row = child(args.child, args.docs, args.queries, args.depth, args.negatives)
        print(json.dumps(row))
        return

    previous: dict[str, Any] = {}
    old = args.out / f"{args.name}.json"
    if old.exists():
        previous = json.loads(old.read_text("utf-8"))
    results = {k: previous[k] for k in ("part_a", "part_b") if k in previous}
    # Part B first: its subprocesses are forked from this process, and Linux carries the
    # parent's peak into a child's ru_maxrss across exec, so the parent must still be small.
    if "b" in args.parts:
        results["part_b"] = run_part_b(args)
    if "a" in args.parts:
        results["part_a"] = run_part_a(args)
    results["machine"] = {**common.machine_info(), "machine_line": common.machine_line()}
    md = common.write_results(
        args.out, args.name, results, markdown=write_markdown, plot=write_plot
    )
    print(md.read_text("utf-8"))


if __name__ == "__main__":
    main()
