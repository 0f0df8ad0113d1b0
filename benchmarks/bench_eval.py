"""First-stage effectiveness on the shared BEIR datasets, next to published baselines.

    .venv/bin/python benchmarks/bench_eval.py [--datasets scifact nfcorpus] [--pipelines bm25 dense hybrid]

Runs ``relevo eval``'s code path (indexes and embeddings are cached in the user cache,
so a second run only searches) and writes ``benchmarks/results/effectiveness.{json,md,png}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import _common as common

DATASETS = common.datasets_dir()

#: nDCG@10 reported elsewhere for the same collections (BEIR paper, Thakur et al. 2021;
#: sentence-transformers' model card / MTEB for all-MiniLM-L6-v2; Anserini's BEIR
#: regressions for flat BM25). Sources also in ../shared/datasets/*/SOURCE.md.
PUBLISHED = {
    ("scifact", "bm25"): (0.665, "BEIR paper BM25 (ES multifield); Anserini flat 0.679"),
    ("nfcorpus", "bm25"): (0.325, "BEIR paper BM25; Anserini flat 0.322"),
    ("scifact", "dense"): (0.645, "all-MiniLM-L6-v2, MTEB SciFact"),
    ("nfcorpus", "dense"): (0.316, "all-MiniLM-L6-v2, MTEB NFCorpus"),
}


def write_markdown(results: dict[str, Any], path: Path) -> None:
    headers = [
        "dataset",
        "pipeline",
        "nDCG@10",
        "MRR@10",
        "Recall@100",
        "published nDCG@10",
        "queries",
        "search QPS",
    ]
    table = []
    for r in results["rows"]:
        pub = (
            f"{r['published_ndcg@10']:.3f} ({r['published_source']})"
            if r["published_ndcg@10"]
            else "—"
        )
        table.append(
            [
                r["dataset"],
                r["pipeline"],
                f"{r['ndcg@10']:.4f}",
                f"{r['mrr@10']:.4f}",
                f"{r['recall@100']:.4f}",
                pub,
                r["queries"],
                f"{r['qps']:.0f}",
            ]
        )
    path.write_text(
        f"# First-stage effectiveness (test splits, embedder {results['meta']['embedder']})\n\n"
        + "\n".join(common.md_table(headers, table))
        + "\n",
        "utf-8",
    )


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    rows = results["rows"]
    datasets = common.unique(r["dataset"] for r in rows)
    pipelines = common.unique(r["pipeline"] for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(pipelines)
    for i, pipe in enumerate(pipelines):
        vals = [
            next(r["ndcg@10"] for r in rows if r["dataset"] == ds and r["pipeline"] == pipe)
            for ds in datasets
        ]
        ax.bar([x + i * width for x in range(len(datasets))], vals, width, label=pipe)
    ax.set_xticks([x + width * (len(pipelines) - 1) / 2 for x in range(len(datasets))], datasets)
    ax.set_ylabel("nDCG@10")
    ax.set_title("relevo first stages")
    ax.legend()
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    ap = common.parser(__doc__)
    common.add_datasets(ap, ["scifact", "nfcorpus"])
    ap.add_argument("--pipelines", nargs="+", default=["bm25", "dense", "hybrid"])
    ap.add_argument("--embedder", default="minilm")
    common.add_out(ap)
    ap.add_argument("--name", default="effectiveness", help="basename of the result files")
    args = ap.parse_args()

    common.quiet_transformers()
    from relevo import Engine
    from relevo.engine.evaluate import evaluate

    engine = Engine()
    rows = []
    for ds in args.datasets:
        for pipe in args.pipelines:
            rep, wall = common.timed(
                evaluate, engine, DATASETS / ds, pipeline=pipe, embedder=args.embedder
            )
            pub = PUBLISHED.get((ds, pipe))
            rows.append(
                {
                    "dataset": ds,
                    "pipeline": pipe,
                    "stages": rep["stages"],
                    "ndcg@10": rep["ndcg@10"],
                    "mrr@10": rep["mrr@10"],
                    "recall@100": rep["recall@100"],
                    "queries": rep["queries"],
                    "qps": rep["qps"],
                    "index_seconds": rep["index_seconds"],
                    "index_reused": rep["index_reused"],
                    "published_ndcg@10": pub[0] if pub else None,
                    "published_source": pub[1] if pub else None,
                    "wall_seconds": wall,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)

    info = common.machine_info()
    meta = {
        "python": info["python"],
        "machine": info["machine"],
        "cpus": info["cpus"],
        "embedder": args.embedder,
    }
    md = common.write_results(
        args.out,
        args.name,
        {"meta": meta, "rows": rows},
        markdown=write_markdown,
        plot=write_plot,
    )
    print(md.read_text("utf-8"))


if __name__ == "__main__":
    main()
