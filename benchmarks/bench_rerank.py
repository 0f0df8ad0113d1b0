"""Reranking effectiveness vs cost: relevo's strategies and the libraries a user would pick.

    .venv/bin/python benchmarks/bench_rerank.py [--cross-encoder NAME_OR_PATH] [--llm-queries 5] [--llm-depth 20]
    .venv/bin/python benchmarks/bench_rerank.py --llm-only --llm-depth 100 --llm-window 20 --llm-stride 10 \
        --llm-strategies window full --datasets trec-dl-2019 --name rerank-llm-depth100

For TREC DL 2019 (the shared BM25 top-100 run; graded qrels, relevance >= 2 for
binary measures) and SciFact (relevo BM25 top-100), it reports nDCG@10 before and
after reranking, input/output tokens and seconds per query for:

- the cross-encoder relevo trained (``relevo train reranker``), pointwise, all queries,
  side by side with the ``rerankers`` package running the same model on the same
  candidates (nDCG@10 and seconds/query ratios);
- nanoranker, pointwise, all queries;
- the packaged SmolLM2 with every strategy (window, full, pairwise, pointwise) on the
  first ``--llm-queries`` queries and top ``--llm-depth`` candidates: a 135M model on
  two CPU cores is slow, so the LLM rows use a subset (the first-stage row for that
  subset is reported next to them).

rank_llm is not run: its listwise models need vLLM (CUDA) and open-weight RankZephyr /
RankVicuna checkpoints from the Hugging Face hub, neither of which is available offline
on a CPU machine. Results go to ``benchmarks/results/NAME.{json,md,png}`` (``--name``,
default ``rerank``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import _common as common

DATASETS = common.datasets_dir()


def rerankers_baseline(
    model_path: str,
    dataset: Path,
    *,
    run: Path | None,
    rel_level: int,
    limit: int | None,
    max_length: int,
):
    """The `rerankers` package's cross-encoder on relevo's first-stage candidates."""
    from rerankers.models.transformer_ranker import TransformerRanker

    from relevo import Engine, Hit
    from relevo.engine.evaluate import (
        collection_for,
        first_stage_from_run,
        load_dataset,
        parse_pipeline,
        score_run,
    )

    ds = load_dataset(dataset)
    qids = list(ds.queries)[:limit] if limit else list(ds.queries)
    if run is not None:
        cands, _ = first_stage_from_run(ds, run, qids, 100)
    else:
        engine = Engine()
        stages, fusion = parse_pipeline("bm25", engine.registry, "minilm")
        col, _, _ = collection_for(engine, ds, stages, embedder="minilm", fusion=fusion)
        cands = col.search_batch([ds.queries[q] for q in qids], 100)
    ranker = TransformerRanker(
        model_path,
        device="cpu",
        batch_size=32,
        verbose=0,
        tokenizer_kwargs={"model_max_length": max_length},
    )

    def rank_all() -> dict[str, list[Hit]]:
        out = {}
        for qid, hits in zip(qids, cands, strict=True):
            docs = [f"{h.title} {h.text}".strip() for h in hits]
            res = ranker.rank(ds.queries[qid], docs, doc_ids=list(range(len(hits))))
            out[qid] = [
                Hit(id=hits[r.document.doc_id].id, score=float(r.score), rank=i + 1)
                for i, r in enumerate(res.results)
            ]
        return out

    out, seconds = common.timed(rank_all)
    return score_run(out, {q: ds.qrels[q] for q in qids}, rel_level=rel_level), seconds / len(qids)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument(
        "--cross-encoder",
        default="cross-encoder-minilm-scifact-nfcorpus",
        help="trained model folder, or a name under the user cache's models/ folder",
    )
    ap.add_argument("--llm-queries", type=int, default=5)
    ap.add_argument("--llm-depth", type=int, default=20)
    ap.add_argument("--llm-window", type=int, default=10)
    ap.add_argument("--llm-stride", type=int, default=5)
    ap.add_argument(
        "--llm-pairwise-top-k", type=int, default=3, help="PRP sliding passes (top-k placed)"
    )
    ap.add_argument("--llm-datasets", nargs="+", default=["trec-dl-2019", "scifact"])
    ap.add_argument(
        "--queries",
        type=int,
        default=None,
        help="first N queries per dataset for the non-LLM rows (default all)",
    )
    ap.add_argument(
        "--interpolate",
        type=float,
        default=0.5,
        help="also report the cross-encoder blended with BM25 at this reranker weight "
        "(fixed a priori, not tuned on the test queries; <0 to skip)",
    )
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument(
        "--llm-only", action="store_true", help="only the LLM rows (no cross-encoder/nanoranker)"
    )
    ap.add_argument(
        "--llm-strategies",
        nargs="+",
        choices=["window", "full", "pairwise", "pointwise"],
        default=["window", "full", "pairwise", "pointwise"],
    )
    ap.add_argument("--name", default="rerank", help="results file stem")
    common.add_datasets(ap, ["trec-dl-2019", "scifact"])
    common.add_out(ap)
    args = ap.parse_args()
    common.quiet_transformers()

    from relevo import Engine
    from relevo.engine.evaluate import evaluate
    from relevo.engine.rerank import RerankOptions
    from relevo.plugins.cross_encoder import resolve_model

    engine = Engine()
    _, ce_path = resolve_model(args.cross_encoder)
    rows: list[dict] = []

    def record(ds: str, label: str, rep: dict, **extra) -> None:
        cost = rep.get("cost", {})
        row = {
            "dataset": ds,
            "system": label,
            "queries": rep["queries"],
            "ndcg@10": rep["ndcg@10"],
            "first_stage_ndcg@10": rep.get("first_stage", {}).get("ndcg@10", rep["ndcg@10"]),
            "recall@100": rep["recall@100"],
            "llm_calls": cost.get("llm_calls", 0),
            "input_tokens_per_query": cost.get("input_tokens", 0) / rep["queries"],
            "output_tokens_per_query": cost.get("output_tokens", 0) / rep["queries"],
            "seconds_per_query": rep.get("seconds_per_query", 0.0),
            **extra,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    for ds in args.datasets:
        root = DATASETS / ds
        trec = ds == "trec-dl-2019"
        first = {"run": root / "runs" / "bm25_top100.trec"} if trec else {"pipeline": "bm25"}
        rel = 2 if trec else 1
        lim_all = args.queries
        if not args.llm_only:
            base = evaluate(engine, root, rel_level=rel, limit=lim_all, **first)
            record(ds, "first stage (BM25)", base)
        if ce_path is not None and not args.llm_only:
            ce = {"rel_level": rel, "limit": lim_all, **first}
            ce["rerank"] = f"cross-encoder:{ce_path}"
            rep = evaluate(engine, root, reranking=RerankOptions(strategy="pointwise"), **ce)
            record(ds, "relevo cross-encoder (pointwise)", rep, depth=100)
            if args.interpolate >= 0:
                blended = RerankOptions(strategy="pointwise", interpolate=args.interpolate)
                rep_i = evaluate(engine, root, reranking=blended, **ce)
                label = f"relevo cross-encoder, blended with BM25 (w={args.interpolate})"
                record(ds, label, rep_i, depth=100)
            max_len = (
                int(
                    json.loads((ce_path / "relevo-reranker.json").read_text()).get(
                        "max_length", 256
                    )
                )
                if (ce_path / "relevo-reranker.json").is_file()
                else 256
            )
            metrics, spq = rerankers_baseline(
                str(ce_path),
                root,
                run=first.get("run"),
                rel_level=rel,
                limit=lim_all,
                max_length=max_len,
            )
            rows.append(
                {
                    "dataset": ds,
                    "system": "rerankers package, same cross-encoder",
                    "queries": rep["queries"],
                    "ndcg@10": metrics["ndcg@10"],
                    "first_stage_ndcg@10": base["ndcg@10"],
                    "recall@100": metrics["recall@100"],
                    "llm_calls": 0,
                    "input_tokens_per_query": 0,
                    "output_tokens_per_query": 0,
                    "seconds_per_query": spq,
                    "depth": 100,
                    "relevo_speedup": spq / rep["seconds_per_query"]
                    if rep["seconds_per_query"]
                    else None,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if not args.llm_only:
            rep = evaluate(engine, root, rel_level=rel, limit=lim_all, rerank="nanoranker", **first)
            record(ds, "nanoranker (pointwise)", rep, depth=100)
        if args.skip_llm or ds not in args.llm_datasets:
            continue
        lim, depth = args.llm_queries, args.llm_depth
        sub = evaluate(engine, root, rel_level=rel, limit=lim, **first)
        llm_args = {"rel_level": rel, "limit": lim, "rerank": "smollm2", **first}
        record(ds, f"first stage, first {lim} queries", sub, depth=depth)
        for strategy, label, kw in [
            (
                "window",
                f"smollm2 window (w={args.llm_window}, s={args.llm_stride})",
                {"strategy": "window", "window": args.llm_window, "stride": args.llm_stride},
            ),
            ("full", "smollm2 full (single pass)", {"strategy": "full"}),
            (
                "pairwise",
                f"smollm2 pairwise (PRP sliding, top-{args.llm_pairwise_top_k})",
                {
                    "strategy": "pairwise",
                    "pairwise_method": "sliding",
                    "top_k": args.llm_pairwise_top_k,
                },
            ),
            (
                "pointwise",
                "smollm2 pointwise (ERank 0-10 expected value)",
                {"strategy": "pointwise"},
            ),
        ]:
            if strategy not in args.llm_strategies:
                continue
            rep = evaluate(engine, root, reranking=RerankOptions(depth=depth, **kw), **llm_args)
            record(ds, label, rep, depth=depth)

    training = None
    if ce_path is not None and (ce_path / "relevo-reranker.json").is_file():
        report = json.loads((ce_path / "relevo-reranker.json").read_text())
        training = {k: v for k, v in report.items() if k not in ("loss_curve", "datasets")}
    meta = {
        "python": common.python_version(),
        "cpus": common.machine_info()["cpus"],
        "cross_encoder": str(ce_path),
        "cross_encoder_training": training,
        "interpolate": args.interpolate,
        "llm_queries": args.llm_queries,
        "llm_depth": args.llm_depth,
        "llm_window": args.llm_window,
        "llm_stride": args.llm_stride,
        "command": " ".join(sys.argv),
    }
    md = common.write_results(
        args.out,
        args.name,
        {"meta": meta, "rows": rows},
        markdown=write_markdown,
        plot=write_plot,
    )
    print(md.read_text("utf-8"))


def write_markdown(results: dict[str, Any], path: Path) -> None:
    rows = results["rows"]
    headers = [
        "dataset",
        "system",
        "queries",
        "depth",
        "nDCG@10 (before → after)",
        "input tok/q",
        "output tok/q",
        "s/q",
    ]
    table = [
        [
            r["dataset"],
            r["system"],
            r["queries"],
            r.get("depth", "—"),
            f"{r['first_stage_ndcg@10']:.4f} → {r['ndcg@10']:.4f}",
            f"{r['input_tokens_per_query']:.0f}",
            f"{r['output_tokens_per_query']:.0f}",
            f"{r['seconds_per_query']:.2f}",
        ]
        for r in rows
    ]
    notes = []
    for ds in common.unique(r["dataset"] for r in rows):
        win = next(
            (r for r in rows if r["dataset"] == ds and r["system"].startswith("smollm2 window")),
            None,
        )
        full = next(
            (r for r in rows if r["dataset"] == ds and r["system"].startswith("smollm2 full")), None
        )
        if win and full and win["input_tokens_per_query"]:
            notes.append(
                f"- {ds}: full / window input tokens = {full['input_tokens_per_query'] / win['input_tokens_per_query']:.2f}; nDCG@10 full {full['ndcg@10']:.4f} vs window {win['ndcg@10']:.4f}."
            )
        rr = next(
            (r for r in rows if r["dataset"] == ds and r["system"].startswith("rerankers")), None
        )
        if rr and rr.get("relevo_speedup"):
            notes.append(
                f"- {ds}: relevo cross-encoder is {rr['relevo_speedup']:.2f}x the speed of the rerankers package on the same model and candidates."
            )
    path.write_text(
        "# Reranking: effectiveness vs cost\n\n"
        + "\n".join(common.md_table(headers, table))
        + "\n\n"
        + "\n".join(notes)
        + "\n",
        "utf-8",
    )


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results["rows"]:
        if r["seconds_per_query"] <= 0:
            continue
        ax.scatter(r["seconds_per_query"], r["ndcg@10"], label=f"{r['dataset']}: {r['system']}")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per query (log)")
    ax.set_ylabel("nDCG@10")
    ax.legend(fontsize=6)
    fig.tight_layout()
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
