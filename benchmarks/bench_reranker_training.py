"""Cross-encoders trained with different miners, reranking BM25 top-100 (full test splits).

    .venv/bin/python benchmarks/bench_reranker_training.py --models ce-star [ce-adaptive ...]
        [--datasets scifact nfcorpus] [--interpolate 0.5] [--queries N]

A model is a folder written by ``relevo train reranker`` (or a name under the user
cache's ``models/`` folder). For every dataset it reranks relevo's BM25 top-100 of each
test query once, pointwise, and scores three runs: BM25 alone, the cross-encoder alone,
and the cross-encoder blended with BM25 at weight ``--interpolate`` — the blend is
:func:`relevo.engine.rerank.interpolate_with_first_stage`, exactly what ``relevo eval
--rerank cross-encoder:DIR --interpolate 0.5`` computes. The training recipe and wall
time are read from the model's ``relevo-reranker.json``. It also reports, per dataset,
the correlation between the cross-encoder's scores and the judged relevance over the
candidates (a model that learned to prefer *lexically distant* documents shows a
negative one). Writes ``benchmarks/results/NAME.{json,md,png}`` (``--name``, default
``reranker-training``); rows of models not re-run are kept from the previous JSON.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import _common as common

DATASETS = common.datasets_dir()


def model_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    return Path.home() / ".cache" / "relevo" / "models" / name


def recipe(path: Path) -> dict[str, Any]:
    meta = json.loads((path / "relevo-reranker.json").read_text("utf-8"))
    keep = ("negatives", "loss", "steps", "batch_size", "group_size", "lr", "training_seconds")
    out = {k: meta.get(k) for k in keep}
    out["datasets"] = [d.get("name") for d in meta.get("datasets", [])]
    return out


def run_model(engine: Any, model: str, dataset: str, args: Any) -> dict[str, Any]:
    import numpy as np

    from relevo.engine.evaluate import collection_for, load_dataset, parse_pipeline, score_run
    from relevo.engine.rerank import Reranking, interpolate_with_first_stage

    path = model_dir(model)
    ds = load_dataset(DATASETS / dataset)
    qids = list(ds.queries)[: args.queries] if args.queries else list(ds.queries)
    stages, fusion = parse_pipeline("bm25", engine.registry, "minilm")
    col, _, _ = collection_for(engine, ds, stages, embedder="minilm", fusion=fusion)
    first = col.search_batch([ds.queries[q] for q in qids], args.depth)
    reranker = engine.reranker(f"cross-encoder:{path}")
    reranker.load()
    runner = Reranking(reranker, strategy="pointwise")
    pure: dict[str, Any] = {}
    blended: dict[str, Any] = {}
    corr = []

    def rerank_all() -> None:
        for qid, hits in zip(qids, first, strict=True):
            ranked = runner(ds.queries[qid], hits).hits
            pure[qid] = ranked
            blended[qid] = interpolate_with_first_stage(ranked, hits, args.interpolate, scored=True)
            rel = [ds.qrels[qid].get(h.id, 0) for h in ranked]
            if len(set(rel)) > 1:
                corr.append(float(np.corrcoef([h.score for h in ranked], rel)[0, 1]))

    _, seconds = common.timed(rerank_all)
    qrels = {q: ds.qrels[q] for q in qids}
    return {
        "dataset": dataset,
        "model": model,
        "recipe": recipe(path),
        "queries": len(qids),
        "bm25": score_run(dict(zip(qids, first, strict=True)), qrels),
        "cross_encoder": score_run(pure, qrels),
        "blended": score_run(blended, qrels),
        "interpolate": args.interpolate,
        "score_relevance_correlation": float(np.mean(corr)) if corr else None,
        "seconds_per_query": seconds / len(qids),
        "load_average": common.load_average(),
    }


def write_markdown(results: dict[str, Any], path: Path) -> None:
    headers = [
        "dataset",
        "model (miner)",
        "train s",
        "BM25 nDCG@10",
        "CE alone",
        "blended",
        "blended R@100",
        "corr(score, rel)",
        "s/query",
    ]
    rows = []
    for r in results["rows"]:
        rec = r["recipe"]
        neg = rec.get("negatives") or {}
        opts = ", ".join(f"{k}={v}" for k, v in (neg.get("miner_options") or {}).items())
        miner = f"{neg.get('method', '?')} {neg.get('miner', '?')}" + (f" {opts}" if opts else "")
        rows.append(
            [
                r["dataset"],
                f"{r['model']} ({miner}, {rec.get('steps')} steps)",
                f"{rec.get('training_seconds') or 0:.0f}",
                f"{r['bm25']['ndcg@10']:.4f}",
                f"{r['cross_encoder']['ndcg@10']:.4f}",
                f"{r['blended']['ndcg@10']:.4f}",
                f"{r['blended']['recall@100']:.4f}",
                "—"
                if r["score_relevance_correlation"] is None
                else f"{r['score_relevance_correlation']:+.3f}",
                f"{r['seconds_per_query']:.2f}",
            ]
        )
    lines = [
        "# Cross-encoders trained with different miners (BM25 top-100, full test splits)",
        "",
        *common.md_table(headers, rows, right=list(range(2, 9))),
        "",
        f"`blended` = cross-encoder x {results['meta']['interpolate']} + BM25 x "
        f"{1 - results['meta']['interpolate']:.1f} (min-max normalised per query, as "
        "`relevo eval --interpolate`). `corr(score, rel)`: mean per-query Pearson correlation "
        "of the cross-encoder's scores with the judged grades over the 100 candidates. "
        "Each model's recipe (miner, loss, steps, batch, training wall time) is in the JSON. "
        f"Machine: {results['meta']['machine']}.",
        "",
        f"Produced by `{results['meta']['command']}` (rows of other models from earlier runs).",
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['dataset']}\n{r['model']}" for r in rows]
    xs = range(len(rows))
    for off, key, label in (
        (-0.27, "bm25", "BM25"),
        (0, "cross_encoder", "CE"),
        (0.27, "blended", "blended"),
    ):
        ax.bar([x + off for x in xs], [r[key]["ndcg@10"] for r in rows], 0.27, label=label)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("nDCG@10 (test)")
    ax.set_title("trained cross-encoders reranking BM25 top-100")
    ax.legend()
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--models", nargs="+", required=True)
    common.add_datasets(ap, ["scifact", "nfcorpus"])
    ap.add_argument("--interpolate", type=float, default=0.5)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--queries", type=int, default=None, help="first N test queries (a subset)")
    ap.add_argument("--name", default="reranker-training")
    common.add_out(ap)
    args = ap.parse_args()
    common.quiet_transformers()
    from relevo import Engine

    engine = Engine()
    json_path = args.out / f"{args.name}.json"
    planned = {(d, m) for d in args.datasets for m in args.models}
    rows = []
    if json_path.exists():
        rows = [
            r
            for r in json.loads(json_path.read_text("utf-8"))["rows"]
            if (r["dataset"], r["model"]) not in planned
        ]
    meta = {
        "machine": common.machine_line(),
        "interpolate": args.interpolate,
        "depth": args.depth,
        "command": "python benchmarks/bench_reranker_training.py " + shlex.join(sys.argv[1:]),
    }
    results = {"meta": meta, "rows": rows}
    for ds in args.datasets:
        for model in args.models:
            row = run_model(engine, model, ds, args)
            rows.append(row)
            rows.sort(key=lambda r: (r["dataset"], r["model"]))
            print(json.dumps({k: row[k] for k in ("dataset", "model", "blended")}), file=sys.stderr)
            common.write_results(
                args.out, args.name, results, markdown=write_markdown, plot=write_plot
            )
    print((args.out / f"{args.name}.md").read_text("utf-8"))


if __name__ == "__main__":
    main()
