"""First-stage effectiveness on the shared BEIR datasets, next to published baselines.

    .venv/bin/python benchmarks/bench_eval.py [--datasets scifact nfcorpus] [--pipelines bm25 dense hybrid]

Runs ``relevo eval``'s code path (indexes and embeddings are cached in the user cache,
so a second run only searches) and writes ``benchmarks/results/effectiveness.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASETS = Path(os.environ.get("RELEVO_DATASETS", HERE.parents[1] / "shared" / "datasets"))

#: nDCG@10 reported elsewhere for the same collections (BEIR paper, Thakur et al. 2021;
#: sentence-transformers' model card / MTEB for all-MiniLM-L6-v2; Anserini's BEIR
#: regressions for flat BM25). Sources also in ../shared/datasets/*/SOURCE.md.
PUBLISHED = {
    ("scifact", "bm25"): (0.665, "BEIR paper BM25 (ES multifield); Anserini flat 0.679"),
    ("nfcorpus", "bm25"): (0.325, "BEIR paper BM25; Anserini flat 0.322"),
    ("scifact", "dense"): (0.645, "all-MiniLM-L6-v2, MTEB SciFact"),
    ("nfcorpus", "dense"): (0.316, "all-MiniLM-L6-v2, MTEB NFCorpus"),
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--pipelines", nargs="+", default=["bm25", "dense", "hybrid"])
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default="effectiveness", help="basename of the result files")
    args = ap.parse_args()

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from relevo import Engine
    from relevo.engine.evaluate import evaluate

    engine = Engine()
    rows = []
    for ds in args.datasets:
        for pipe in args.pipelines:
            t0 = time.perf_counter()
            rep = evaluate(engine, DATASETS / ds, pipeline=pipe, embedder=args.embedder)
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
                    "wall_seconds": time.perf_counter() - t0,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "embedder": args.embedder,
    }
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "| dataset | pipeline | nDCG@10 | MRR@10 | Recall@100 | published nDCG@10 | queries | search QPS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = (
            f"{r['published_ndcg@10']:.3f} ({r['published_source']})"
            if r["published_ndcg@10"]
            else "—"
        )
        lines.append(
            f"| {r['dataset']} | {r['pipeline']} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | {r['recall@100']:.4f} | "
            f"{pub} | {r['queries']} | {r['qps']:.0f} |"
        )
    (args.out / f"{args.name}.md").write_text(
        f"# First-stage effectiveness (test splits, embedder {args.embedder})\n\n"
        + "\n".join(lines)
        + "\n"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(args.pipelines)
    for i, pipe in enumerate(args.pipelines):
        vals = [
            next(r["ndcg@10"] for r in rows if r["dataset"] == ds and r["pipeline"] == pipe)
            for ds in args.datasets
        ]
        ax.bar([x + i * width for x in range(len(args.datasets))], vals, width, label=pipe)
    ax.set_xticks(
        [x + width * (len(args.pipelines) - 1) / 2 for x in range(len(args.datasets))],
        args.datasets,
    )
    ax.set_ylabel("nDCG@10")
    ax.set_title("relevo first stages")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}.png", dpi=120)
    print((args.out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
