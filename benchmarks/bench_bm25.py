"""BM25 benchmark: relevo's BM25Index against rank_bm25 and bm25s on BEIR test splits.

Every system gets the same token lists (relevo's tokenizer: lowercase, ``\\w\\w+``,
bm25s's English stopwords, Snowball English stems), so index time and query
throughput measure the BM25 implementations, not their tokenizers. Query throughput
is top-100 retrieval for all test queries in one call (one query at a time for
rank_bm25, which has no batch API), single process; the best of ``--repeats`` repeats
for relevo and bm25s, one run for rank_bm25 (it is slow: that is the point). A repeat
loops the whole batch for ~0.3 s and takes the mean, so that a 5 ms batch is not timed
once, and the systems are timed in turn within each repeat, so that they all see the
same background load on a shared machine.

Systems:

- ``relevo okapi``: ``BM25Index(method="okapi", k1=1.5, b=0.75, epsilon=0.25)``, the
  rank_bm25 defaults; its top-10 is compared with rank_bm25's.
- ``rank_bm25``: ``BM25Okapi`` with the same parameters, ``get_scores`` + ``argsort``.
- ``bm25s robertson``: ``bm25s.BM25(method="robertson", k1=1.5, b=0.75)``, its default
  numpy backend (bm25.json records it). Its idf clamps negative values to 0 where rank_bm25 uses
  ``epsilon * mean idf``; the two differ only on terms in more than half the corpus.
- ``relevo lucene`` / ``bm25s lucene``: ``k1=1.2, b=0.75``, the usual effectiveness setting.

Usage::

    .venv/bin/python benchmarks/bench_bm25.py [--datasets scifact nfcorpus] [--out benchmarks/results]
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as common
import numpy as np

from relevo.indexes.bm25 import BM25Index, Tokenizer, tokenize

K = 100
TIE_RTOL = 1e-6


def load_beir(
    root: Path,
) -> tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """Doc ids, doc texts (title + " " + text), test query ids, query texts, test qrels."""
    doc_ids, texts = [], []
    for doc in common.read_corpus(root):
        doc_ids.append(str(doc["_id"]))
        texts.append(f"{doc.get('title') or ''} {doc.get('text') or ''}")
    qrels = common.read_qrels(root, "test")
    queries = common.read_queries(root, only=qrels)
    return doc_ids, texts, [q for q, _ in queries], [t for _, t in queries], qrels


def to_run(
    q_ids: list[str], doc_ids: list[str], scores: np.ndarray, pos: np.ndarray
) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for qid, srow, prow in zip(q_ids, scores, pos, strict=True):
        run[qid] = {doc_ids[p]: float(s) for s, p in zip(srow, prow, strict=True) if p >= 0}
    return run


def top10_agreement(
    ref_scores: np.ndarray, ref_top: np.ndarray, pos: np.ndarray
) -> tuple[float, float]:
    """Fraction of queries whose top-10 equals rank_bm25's: strictly, and up to ties.

    Tie-aware: at every rank the document's rank_bm25 score equals (within 1e-6
    relative) the score rank_bm25 has at that rank, so the lists differ only in the
    order of tied documents. A padded slot (no hit) matches a zero rank_bm25 score,
    i.e. rank_bm25 filled it with a document that shares no term with the query.
    """
    strict = tie = 0
    for i in range(len(pos)):
        mine, theirs = pos[i, :10], ref_top[i, :10]
        strict += bool(np.array_equal(mine, theirs))
        want = ref_scores[i][theirs]
        got = np.where(mine >= 0, ref_scores[i][np.clip(mine, 0, None)], 0.0)
        tie += bool(np.all(np.abs(got - want) <= TIE_RTOL * np.maximum(np.abs(want), 1e-12)))
    n = len(pos)
    return strict / n, tie / n


def thread_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": common.machine_info()["cpus"],
        "env": common.thread_env("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"),
        "note": (
            "Every system runs its queries in this one process, single-threaded: scipy's sparse "
            "product and numpy's partition/sort are single-threaded, bm25s uses n_threads=0 "
            "(its default), rank_bm25 has no threads. BLAS is not on any of these code paths."
        ),
    }
    try:
        import threadpoolctl

        info["numpy_blas_pools"] = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "version")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        info["numpy_blas_pools"] = "threadpoolctl not installed"
    return info


def run_dataset(name: str, root: Path, repeats: int) -> dict[str, Any]:
    import bm25s
    import ir_measures
    import rank_bm25

    doc_ids, texts, q_ids, q_texts, qrels = load_beir(root)
    tok = Tokenizer()
    docs, tokenize_s = common.timed(tokenize, texts, tok)
    queries = tokenize(q_texts, tok)
    nq = len(queries)
    measures = [ir_measures.nDCG @ 10, ir_measures.R @ 100]
    systems: dict[str, dict[str, Any]] = {}

    def evaluate(label: str, run: dict[str, dict[str, float]]) -> None:
        agg = ir_measures.calc_aggregate(measures, qrels, run)
        systems[label]["ndcg@10"] = round(float(agg[ir_measures.nDCG @ 10]), 4)
        systems[label]["recall@100"] = round(float(agg[ir_measures.R @ 100]), 4)

    def relevo_build(options: dict[str, Any]) -> Callable[[], BM25Index]:
        def build() -> BM25Index:
            index = BM25Index(**options)
            index.add_tokenized(docs)
            return index

        return build

    def bm25s_build(method: str, k1: float, b: float) -> Callable[[], Any]:
        def build() -> Any:
            retriever = bm25s.BM25(method=method, k1=k1, b=b)
            retriever.index(docs, show_progress=False)
            return retriever

        return build

    params: dict[str, dict[str, Any]] = {
        "relevo okapi": {"method": "okapi", "k1": 1.5, "b": 0.75, "epsilon": 0.25},
        "bm25s robertson": {"method": "robertson", "k1": 1.5, "b": 0.75},
        "relevo lucene": {"method": "lucene", "k1": 1.2, "b": 0.75},
        "bm25s lucene": {"method": "lucene", "k1": 1.2, "b": 0.75},
    }
    builders = {
        label: relevo_build(p) if label.startswith("relevo") else bm25s_build(**p)
        for label, p in params.items()
    }
    built = common.interleaved_best(builders, repeats)
    searchers: dict[str, Callable[[], Any]] = {}
    for label, (_, _, obj) in built.items():
        if label.startswith("relevo"):
            searchers[label] = functools.partial(obj.search_tokenized, queries, k=K)
            # End to end: query texts in, tokenization included.
            searchers[f"{label} e2e"] = functools.partial(obj.search, q_texts, k=K)
        else:
            searchers[label] = functools.partial(
                obj.retrieve, queries, k=K, show_progress=False, n_threads=0
            )
    searched = common.interleaved_best(searchers, repeats)
    for label, p in params.items():
        index_s, index_cpu_s, obj = built[label]
        query_s, query_cpu_s, out = searched[label]
        systems[label] = {
            "params": dict(p),
            "index_s": round(index_s, 4),
            "index_cpu_s": round(index_cpu_s, 4),
            "qps": round(nq / query_s, 1),
            "qps_cpu": round(nq / query_cpu_s, 1),
        }
        if label.startswith("relevo"):
            scores, pos = out
            systems[label]["qps_with_tokenization"] = round(nq / searched[f"{label} e2e"][0], 1)
        else:
            systems[label]["params"]["backend"] = obj.backend
            scores, pos = out.scores, out.documents
        evaluate(label, to_run(q_ids, doc_ids, scores, pos))
    okapi_scores, okapi_pos = searched["relevo okapi"][2]
    bm25s_pos = searched["bm25s robertson"][2].documents

    ref, ref_index_s, ref_index_cpu_s = common.timed_cpu(
        rank_bm25.BM25Okapi, docs, k1=1.5, b=0.75, epsilon=0.25
    )

    def ref_search() -> tuple[np.ndarray, np.ndarray]:
        ref_scores = np.empty((nq, len(docs)))
        ref_top = np.empty((nq, K), np.int64)
        for i, q in enumerate(queries):
            ref_scores[i] = ref.get_scores(q)
            ref_top[i] = np.argsort(ref_scores[i])[::-1][:K]
        return ref_scores, ref_top

    (ref_scores, ref_top), ref_query_s, ref_query_cpu_s = common.timed_cpu(ref_search)
    systems["rank_bm25"] = {
        "params": {"k1": 1.5, "b": 0.75, "epsilon": 0.25},
        "index_s": round(ref_index_s, 4),
        "index_cpu_s": round(ref_index_cpu_s, 4),
        "qps": round(nq / ref_query_s, 1),
        "qps_cpu": round(nq / ref_query_cpu_s, 1),
    }
    evaluate(
        "rank_bm25",
        {q_ids[i]: {doc_ids[d]: float(ref_scores[i, d]) for d in ref_top[i]} for i in range(nq)},
    )
    order = ["relevo okapi", "rank_bm25", "bm25s robertson", "relevo lucene", "bm25s lucene"]
    systems = {label: systems[label] for label in order}

    hit = okapi_pos >= 0
    want = np.take_along_axis(ref_scores, np.clip(okapi_pos, 0, None), axis=1)[hit]
    max_rel_err = float(np.max(np.abs(okapi_scores[hit] - want) / np.maximum(np.abs(want), 1e-12)))
    strict, tie = top10_agreement(ref_scores, ref_top, okapi_pos)
    s_strict, s_tie = top10_agreement(ref_scores, ref_top, bm25s_pos)

    def ratios(label: str, other: str, *, suffix: str) -> None:
        mine, theirs = systems[label], systems[other]
        mine[f"qps_vs_{suffix}"] = round(mine["qps"] / theirs["qps"], 2)
        mine[f"qps_cpu_vs_{suffix}"] = round(mine["qps_cpu"] / theirs["qps_cpu"], 2)
        mine[f"index_speedup_vs_{suffix}"] = round(theirs["index_s"] / mine["index_s"], 2)
        mine[f"index_cpu_speedup_vs_{suffix}"] = round(
            theirs["index_cpu_s"] / mine["index_cpu_s"], 2
        )

    ratios("relevo okapi", "rank_bm25", suffix="rank_bm25")
    ratios("relevo okapi", "bm25s robertson", suffix="bm25s")
    ratios("relevo lucene", "bm25s lucene", suffix="bm25s")
    okapi = systems["relevo okapi"]
    okapi["top10_equal_rank_bm25_strict"] = round(strict, 4)
    okapi["top10_equal_rank_bm25_tie_aware"] = round(tie, 4)
    okapi["max_rel_score_error_vs_rank_bm25"] = float(f"{max_rel_err:.3g}")
    systems["bm25s robertson"]["top10_equal_rank_bm25_strict"] = round(s_strict, 4)
    systems["bm25s robertson"]["top10_equal_rank_bm25_tie_aware"] = round(s_tie, 4)
    return {
        "n_docs": len(docs),
        "n_queries": nq,
        "n_tokens": int(sum(map(len, docs))),
        "vocab_size": len({t for d in docs for t in d}),
        "tokenize_corpus_s": round(tokenize_s, 4),
        "systems": systems,
    }


def fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def write_markdown(results: dict[str, Any], path: Path) -> None:
    load = results["load_average_before"][0], results["load_average_after"][0]
    lines = [
        "# BM25: relevo vs rank_bm25 vs bm25s",
        "",
        f"Top-{K} retrieval over each dataset's test queries, same tokens for every system "
        "(relevo tokenizer: lowercase, `\\w\\w+`, bm25s English stopwords, Snowball English). "
        f"Best of {results['repeats']} repeats (each ≥ {common.MIN_REPEAT_S} s of back-to-back runs, mean "
        "per run, systems timed in turn) for relevo and bm25s, 1 run for rank_bm25; every system "
        f"single-threaded; {results['threads']['cpu_count']} CPUs shared with other work "
        f"(1-min load average {load[0]} before, {load[1]} after).",
        "",
        "Wall-clock QPS is what a user sees on this busy machine; QPS per CPU-second counts only "
        "the time the process was running, so it is closer to an idle machine. Ratios use CPU time.",
        "",
    ]
    headers = [
        "dataset",
        "system",
        "index s (wall / CPU)",
        "QPS wall",
        "QPS per CPU-s",
        "×rank_bm25",
        "×bm25s",
        "top-10 = rank_bm25 (strict / tie-aware)",
        "nDCG@10",
        "R@100",
    ]
    table = []
    for name, ds in results["datasets"].items():
        for label, r in ds["systems"].items():
            agree = ""
            if "top10_equal_rank_bm25_strict" in r:
                agree = (
                    f"{r['top10_equal_rank_bm25_strict']:.1%} / "
                    f"{r['top10_equal_rank_bm25_tie_aware']:.1%}"
                )
            table.append(
                [
                    name,
                    label,
                    f"{r['index_s']:.3f} / {r['index_cpu_s']:.3f}",
                    f"{r['qps']:,.0f}",
                    f"{r['qps_cpu']:,.0f}",
                    fmt(r.get("qps_cpu_vs_rank_bm25"), ".0f"),
                    fmt(r.get("qps_cpu_vs_bm25s"), ".2f"),
                    agree,
                    f"{r['ndcg@10']:.4f}",
                    f"{r['recall@100']:.4f}",
                ]
            )
    lines += common.md_table(headers, table, right=range(2, 10))
    lines += [
        "",
        "- ×: QPS per CPU-second of relevo okapi over rank_bm25 and bm25s robertson (k1=1.5, b=0.75), "
        "and of relevo lucene over bm25s lucene (k1=1.2, b=0.75). Wall-clock ratios and index-time "
        "ratios are in bm25.json.",
        "- Tie-aware: the lists differ only in the order of documents whose rank_bm25 scores are equal "
        "within 1e-6 relative (a padded relevo slot matches a zero rank_bm25 score: relevo returns "
        "only documents sharing a term with the query, rank_bm25 fills its list with zero scores).",
        "- bm25s robertson clamps negative idf to 0, rank_bm25 floors it at epsilon × mean idf; "
        "relevo okapi reproduces rank_bm25.",
        "- QPS excludes query tokenization for every system; relevo's end-to-end QPS (texts in) is "
        "`qps_with_tokenization` in bm25.json.",
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    names = list(results["datasets"])
    labels = list(next(iter(results["datasets"].values()))["systems"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    width = 0.8 / len(labels)
    for ax, key, title in (
        (axes[0], "qps", "wall clock (shared machine)"),
        (axes[1], "qps_cpu", "per CPU-second"),
    ):
        for j, label in enumerate(labels):
            qps = [results["datasets"][n]["systems"][label][key] for n in names]
            xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(names))]
            bars = ax.bar(xs, qps, width, label=label, color=f"C{j}")
            ax.bar_label(
                bars, labels=[f"{q:,.0f}" for q in qps], fontsize=7, rotation=90, padding=2
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"BM25 top-{K} queries/s, {title}", fontsize=10)
    axes[0].set_ylabel("queries / second (log scale)")
    axes[0].set_ylim(top=axes[0].get_ylim()[1] * 10)
    axes[0].legend(fontsize=8, ncol=2, loc="upper center")
    fig.tight_layout()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__, summary_only=True)
    common.add_datasets(parser, ["scifact", "nfcorpus"])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="BEIR datasets root (default: $RELEVO_DATASETS or ../shared/datasets)",
    )
    common.add_out(parser)
    common.add_repeats(parser)
    args = parser.parse_args(argv)
    root = args.data_dir or common.datasets_dir()
    import bm25s
    import rank_bm25  # noqa: F401 - fail early if the bench extra is missing
    import scipy

    info = common.machine_info()
    results: dict[str, Any] = {
        "k": K,
        "repeats": args.repeats,
        "machine": {k: info[k] for k in ("machine", "processor", "python")},
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "bm25s": bm25s.__version__,
            "rank_bm25": common.dist_version("rank-bm25"),
            "relevo": common.dist_version("relevo"),
        },
        "threads": thread_info(),
        # The machine is shared: the load average says how much else was running.
        "load_average_before": common.load_average(),
        "datasets": {},
    }
    for name in args.datasets:
        print(f"{name} ...", file=sys.stderr, flush=True)
        results["datasets"][name] = run_dataset(name, root / name, args.repeats)
        for label, r in results["datasets"][name]["systems"].items():
            print(
                f"  {label:16s} index {r['index_s']:7.3f}s  {r['qps']:10,.1f} QPS  "
                f"{r['qps_cpu']:10,.1f} QPS/CPU-s  nDCG@10 {r['ndcg@10']:.4f}",
                file=sys.stderr,
            )
    results["load_average_after"] = common.load_average()
    common.write_results(args.out, "bm25", results, markdown=write_markdown, plot=write_plot)
    print(f"wrote {args.out / 'bm25.json'}, bm25.md, bm25.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
