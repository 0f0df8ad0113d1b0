"""Which synthetic dev set makes ``--interpolate auto`` track the true best weight?

    .venv/bin/python benchmarks/bench_autotune.py [--datasets scifact nfcorpus trec-dl-2019]
        [--rerankers bi-encoder:bge-small bi-encoder:minilm-l3] [--work DIR]

``--interpolate auto`` scores the blend of a first stage and a reranker at every weight on
synthetic queries whose source document is known, and keeps the best weight (0 unless it
beats the first stage by more than the noise margin). Which synthetic queries form that
dev set decides what it measures. This benchmark compares dev sets drawn from the same
SmolLM2 generations (``bench_adapt.py``'s: 600 documents per corpus, generic prompt,
seed 42, BM25 round trip top 20), against the true nDCG@10 curve on the full test split:

- ``kept``: the queries the round trip kept — the dev set relevo used so far. They are
  the queries BM25 already answers, so they favour first stages built on BM25.
- ``all``: kept + dropped (``OUT.dropped.jsonl``): every generated query.
- ``low-overlap``: of all, the half whose words appear least in their source document
  (the generator copies words; real queries copy fewer).
- ``kept-low-overlap``: of the kept, the half whose words appear least in their source.
- ``dropped``: only the queries the round trip dropped.

No label of the evaluated dataset is used by any dev set; the test labels only draw the
true curve. Every (query, candidates) pair is reranked once and every weight blended
from that pass with :func:`relevo.engine.rerank.interpolate_with_first_stage`, the
function ``--interpolate`` uses; weights are chosen with the library's
:func:`relevo.engine.autotune.choose_weight` and :func:`default_min_gain`.

Reads the generations under ``<cache>/adapt-bench/<dataset>/queries.jsonl`` (run
``bench_adapt.py`` or ``relevo generate-queries DATASET --sample 600 --seed 42`` first).
Writes ``benchmarks/results/autotune.{json,md,png}``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import bench_adapt as A

DEV_SETS = ("kept", "all", "low-overlap", "kept-low-overlap", "dropped")
STAGES = ("bm25", "hybrid")
_WORD = re.compile(r"[a-z0-9]{3,}")


def overlap(query: str, doc: str) -> float:
    """Share of the query's words (3+ characters) that occur in the document."""
    words = set(_WORD.findall(query.lower()))
    if not words:
        return 1.0
    return len(words & set(_WORD.findall(doc.lower()))) / len(words)


def dev_sets(work: Path, ds: str, texts: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    from relevo.engine.synthetic import dropped_path, read_synthetic_queries

    out = work / ds / "queries.jsonl"
    kept = read_synthetic_queries(out)
    lost_file = dropped_path(out)
    if not lost_file.is_file():
        raise SystemExit(
            f"{lost_file} is missing: rerun `relevo generate-queries ... --out {out} --overwrite` "
            "(it reuses the raw generations) so the dropped queries are written."
        )
    lost = read_synthetic_queries(lost_file)
    every = [(q.text, q.source_id) for q in kept + lost]
    pairs = [(q.text, q.source_id) for q in kept]

    def low(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
        ranked = sorted(rows, key=lambda x: overlap(x[0], texts.get(x[1], "")))
        return ranked[: len(ranked) // 2]

    return {
        "kept": pairs,
        "all": every,
        "low-overlap": low(every),
        "kept-low-overlap": low(pairs),
        "dropped": [(q.text, q.source_id) for q in lost],
    }


def dev_rr(runner: Any, rows: list, depth: int) -> dict[tuple[str, str], dict[float, float]]:
    """Reciprocal rank of the source at every weight, per (query, source)."""
    from relevo.engine.autotune import WEIGHTS, reciprocal_rank
    from relevo.engine.rerank import interpolate_with_first_stage

    out: dict[tuple[str, str], dict[float, float]] = {}
    for query, hits, source in rows:
        top = list(hits[:depth])
        ranked = runner(query, top).hits if top else []
        out[(query, source)] = {
            w: reciprocal_rank(interpolate_with_first_stage(ranked, top, w, scored=True), source)
            if top
            else 0.0
            for w in WEIGHTS
        }
    return out


def true_curve(runner: Any, dataset: Any, first: dict[str, list], depth: int) -> dict[float, float]:
    reranked = {q: runner(dataset.queries[q], hits[:depth]).hits for q, hits in first.items()}
    return A.weight_curve(reranked, first, depth, dataset)


def evaluate_dataset(ds: str, work: Path, rerankers: list[str]) -> dict[str, Any]:
    from relevo import Engine
    from relevo.engine.autotune import choose_weight, default_min_gain, dev_candidates
    from relevo.engine.corpus import read_corpus
    from relevo.engine.evaluate import load_dataset
    from relevo.engine.rerank import RerankOptions

    engine = Engine()
    root = C.datasets_dir() / ds
    dataset = load_dataset(root, split="test")
    texts = {d.id: d.content for d in read_corpus(dataset.corpus)[0]}
    sets = dev_sets(work, ds, texts)
    every = sets["all"]
    qids = list(dataset.queries)
    depth = A.DEPTH[ds]
    row: dict[str, Any] = {
        "dataset": ds,
        "queries": len(qids),
        "depth": depth,
        "dev_sizes": {k: len(v) for k, v in sets.items()},
        "overlap_median": {
            k: sorted(overlap(q, texts.get(s, "")) for q, s in v)[len(v) // 2] if v else None
            for k, v in sets.items()
        },
        "runs": [],
    }
    for stage in STAGES:
        first = A.first_stage(engine, dataset, qids, stage, "minilm")
        base = A.score(first, dataset)["ndcg@10"]
        dev_rows = dev_candidates(engine, dataset.corpus, every, pipeline=stage, depth=depth)
        for spec in rerankers:
            component = engine.reranker(spec)
            component.load()
            runner = RerankOptions(depth=depth).runner(component)
            t0 = time.perf_counter()
            truth = true_curve(runner, dataset, first, depth)
            rr = dev_rr(runner, dev_rows, depth)
            best = max(truth, key=lambda w: (truth[w], -w))
            run: dict[str, Any] = {
                "first_stage": stage,
                "reranker": spec,
                "first_stage_ndcg@10": base,
                "true_curve": {f"{w:.1f}": v for w, v in truth.items()},
                "true_best_weight": best,
                "true_best": truth[best],
                "seconds": time.perf_counter() - t0,
                "estimates": {},
            }
            for name, dev in sets.items():
                if not dev:
                    continue
                curve = {w: sum(rr[x][w] for x in dev) / len(dev) for w in truth}
                gain = default_min_gain(len(dev))
                w = choose_weight(curve, min_gain=gain)
                run["estimates"][name] = {
                    "weight": w,
                    "ndcg@10": truth[w],
                    "regret": truth[best] - truth[w],
                    "vs_first_stage": truth[w] - base,
                    "dev_curve": {f"{k:.1f}": round(v, 4) for k, v in curve.items()},
                    "dev_queries": len(dev),
                    "min_gain": gain,
                }
            row["runs"].append(run)
            print(
                json.dumps(
                    {
                        "dataset": ds, "stage": stage, "reranker": spec, "best": best,
                        **{k: e["weight"] for k, e in run["estimates"].items()},
                    }
                ),
                file=sys.stderr,
                flush=True,
            )  # fmt: skip
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for name in DEV_SETS:
        ests = [r["estimates"][name] for row in rows for r in row["runs"] if name in r["estimates"]]
        if ests:
            out[name] = {
                "runs": len(ests),
                "mean_regret": sum(e["regret"] for e in ests) / len(ests),
                "worst_regret": max(e["regret"] for e in ests),
                "mean_vs_first_stage": sum(e["vs_first_stage"] for e in ests) / len(ests),
                "worst_vs_first_stage": min(e["vs_first_stage"] for e in ests),
                "below_first_stage": sum(e["vs_first_stage"] < -1e-9 for e in ests),
            }
    return out


def markdown(payload: dict[str, Any], path: Path) -> None:
    rows = payload["rows"]
    lines = [
        "# `--interpolate auto`: which synthetic dev set tracks the true best weight "
        "(nDCG@10, full test splits)",
        "",
        "Per first stage and reranker: the weight each dev set chooses and the test nDCG@10 "
        "at it, next to the first stage alone and the true best weight (from the labels, "
        "which no dev set sees).",
        "",
    ]
    headers = ["dataset", "first stage", "reranker", "first stage nDCG", "true best (w)"]
    headers += [f"{d} (w)" for d in DEV_SETS]
    table = []
    for row in rows:
        for r in row["runs"]:
            cells = [row["dataset"], r["first_stage"], f"`{r['reranker']}`"]
            cells += [
                f"{r['first_stage_ndcg@10']:.4f}",
                f"{r['true_best']:.4f} ({r['true_best_weight']:.1f})",
            ]
            for d in DEV_SETS:
                e = r["estimates"].get(d)
                cells.append("—" if e is None else f"{e['ndcg@10']:.4f} ({e['weight']:.1f})")
            table.append(cells)
    lines += C.md_table(headers, table, right=range(3, len(headers)))
    lines += ["", "## Summary over all runs", ""]
    s = payload["summary"]
    table = [
        [
            d, s[d]["runs"], f"{s[d]['mean_regret']:.4f}", f"{s[d]['worst_regret']:.4f}",
            f"{s[d]['mean_vs_first_stage']:+.4f}", f"{s[d]['worst_vs_first_stage']:+.4f}",
            s[d]["below_first_stage"],
        ]
        for d in DEV_SETS
        if d in s
    ]  # fmt: skip
    lines += C.md_table(
        ["dev set", "runs", "mean regret", "worst regret", "mean vs first stage",
         "worst vs first stage", "runs below first stage"],
        table,
        right=range(1, 7),
    )  # fmt: skip
    lines += ["", "## Dev sets", ""]
    table = [
        [row["dataset"], *(row["dev_sizes"].get(d, 0) for d in DEV_SETS),
         *(f"{row['overlap_median'][d]:.2f}" if row["overlap_median"].get(d) is not None else "—"
           for d in DEV_SETS)]
        for row in rows
    ]  # fmt: skip
    lines += C.md_table(
        [
            "dataset",
            *(f"{d} queries" for d in DEV_SETS),
            *(f"{d} median overlap" for d in DEV_SETS),
        ],
        table,
        right=range(1, 1 + 2 * len(DEV_SETS)),
    )
    lines += [
        "",
        "Regret: nDCG@10 at the true best weight minus at the chosen one. Overlap: share of "
        "a query's words found in its source document. Depth: SciFact / NFCorpus 30, TREC DL "
        "2019 100 (BM25: its official top-100 run for the test queries); hybrid is BM25 + "
        "MiniLM (relevo's default fusion).",
        "",
        f"Machine: {payload['meta']['machine']}. Produced by `{payload['meta']['command']}`.",
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def plot(payload: dict[str, Any], path: Path) -> None:
    plt = C.pyplot()
    runs = [(row["dataset"], r) for row in payload["rows"] for r in row["runs"]]
    cols = max(1, min(4, len(runs)))
    nrows = -(-len(runs) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    for k, (ds, r) in enumerate(runs):
        ax = axes[k // cols][k % cols]
        ws = [float(w) for w in r["true_curve"]]
        ax.plot(ws, list(r["true_curve"].values()), color="black", lw=2, label="test nDCG@10")
        ax2 = ax.twinx()
        colors = ("tab:red", "tab:blue", "tab:green", "tab:olive", "tab:orange")
        for d, color in zip(DEV_SETS, colors, strict=True):
            e = r["estimates"].get(d)
            if e is None:
                continue
            ax2.plot(ws, list(e["dev_curve"].values()), color=color, ls="--", label=f"dev {d}")
            ax.axvline(e["weight"], color=color, ls=":")
        ax.set_title(f"{ds} {r['first_stage']} + {r['reranker'].split(':')[-1]}", fontsize=8)
        ax.set_xlabel("reranker weight", fontsize=7)
        if k == 0:
            ax2.legend(fontsize=6, loc="lower right")
    for k in range(len(runs), nrows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    C.save_figure(fig, path)


def main() -> None:
    ap = C.parser(__doc__, summary_only=True)
    C.add_datasets(ap, ["scifact", "nfcorpus", "trec-dl-2019"])
    ap.add_argument(
        "--rerankers", nargs="+", default=["bi-encoder:bge-small", "bi-encoder:minilm-l3"]
    )
    ap.add_argument("--work", type=Path, default=None, help="default: <cache>/adapt-bench")
    ap.add_argument("--fresh", action="store_true", help="re-score datasets scored before")
    C.add_out(ap)
    args = ap.parse_args()
    C.quiet_transformers()
    from relevo.engine.cache import cache_dir

    work = args.work or cache_dir() / "adapt-bench"
    rows = []
    for ds in args.datasets:
        # a dataset scored before with the same rerankers and dev sets is reused
        cached = work / ds / "autotune-row.json"
        row = json.loads(cached.read_text("utf-8")) if cached.is_file() and not args.fresh else None
        if (
            row is None
            or row.get("rerankers") != args.rerankers
            or list(row["dev_sizes"]) != list(DEV_SETS)
        ):
            row = evaluate_dataset(ds, work, args.rerankers)
            row["rerankers"] = args.rerankers
            cached.write_text(json.dumps(row), "utf-8")
        rows.append(row)
        payload = {
            "meta": {
                "machine": C.machine_line(),
                "command": "python benchmarks/bench_autotune.py " + " ".join(sys.argv[1:]),
                "rerankers": args.rerankers,
                "dev_sets": list(DEV_SETS),
            },
            "rows": rows,
            "summary": summary(rows),
        }
        C.write_results(args.out, "autotune", payload, markdown=markdown, plot=plot)


if __name__ == "__main__":
    main()
