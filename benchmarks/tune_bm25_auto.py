"""How well BM25 ``backend="auto"`` picks MaxScore or term-at-a-time per query, and the fit of its two constants.

``auto`` runs a query term-at-a-time where ``walked * MAXSCORE_COST > taat * (1 + n_docs /
TAAT_CACHE_DOCS)``: ``walked`` is the postings MaxScore would still walk in full after its
threshold pre-pass (its essential lists), ``taat`` the query's postings plus ``n_docs``
where term-at-a-time takes its dense pass (constants in
``src/relevo/indexes/_bm25_numba.py``). This script times both kernels on every query of
the scale benchmark's corpora (``bench_bm25_scale.make_corpus`` / ``make_queries``: the
same Zipfian corpora and queries), records each query's ``walked`` and ``taat``, and
reports, per size, the mean latency of MaxScore alone, term-at-a-time alone, the best of
the two per query (the oracle) and the rule with the shipped constants, plus the grid of
constants that fits the first ``--fit`` queries best and how that choice does on the
others (held out).

Timings are per query (one kernel call, best of ``--repeats``, CPU time of this process,
single-threaded): the same work as a batch, without the batch's amortised set-up.

Usage::

    .venv/bin/python benchmarks/tune_bm25_auto.py [--sizes 20000 100000 200000 1000000]
        [--queries 1000] [--fit 600] [--repeats 3]
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common as common
import bench_bm25_scale as scale

COSTS = (1, 2, 4, 8, 12, 16, 24, 32)
CACHE_DOCS = tuple(1 << p for p in range(12, 21)) + (1 << 40,)
K = 10


def measure(n_docs: int, n_queries: int, repeats: int) -> dict[str, Any]:
    """Per-query MaxScore and term-at-a-time CPU seconds, ``walked`` and ``taat`` work."""
    import numpy as np

    from relevo.indexes import bm25_kernels
    from relevo.indexes.bm25 import BM25Index

    kernels = bm25_kernels.load()
    index = BM25Index(method="lucene", k1=1.2, b=0.75)
    index.add_tokenized(scale.make_corpus(n_docs))
    index._fresh()
    scores = index._scores
    hi, _ = index._term_bounds()
    lengths = np.diff(scores.indptr)
    acc = np.zeros(n_docs, np.float32)
    touched = np.empty(n_docs, np.int64)
    mark = np.zeros(n_docs, np.bool_)
    # term-at-a-time as the auto rule was fitted: without dense columns
    no_cols, no_dense = np.full(len(lengths), -1, np.int64), np.zeros((1, 1), np.float32)
    hs, hp = np.empty(K, np.float32), np.empty(K, np.int64)
    allowed = np.ones(1, np.bool_)
    args = (scores.indptr, scores.indices, scores.data)

    def best(fn: Any) -> float:
        fastest = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            fastest = min(fastest, time.process_time() - t0)
        return fastest

    rows = []
    for q in scale.make_queries()[:n_queries]:
        terms = np.ascontiguousarray(index._query_matrix([q])[1], np.int64)
        if not len(terms):
            continue
        uniq, mult = np.unique(terms, return_counts=True)
        ub = hi[uniq].astype(np.float64) * mult
        order = np.argsort(ub, kind="stable")
        theta = kernels.kth_partial(
            uniq, mult, order, len(uniq), *args, K, allowed, False, acc, touched, hs, hp
        )
        prefix = np.cumsum(ub[order])
        first = int(np.sum(prefix * kernels.SLACK < theta))
        in_order = lengths[uniq][order]
        total = int(in_order.sum())
        walked = int(in_order[first:].sum())
        taat = total + (n_docs if total >= n_docs // 4 else 0)
        t_max = best(
            lambda t=terms: kernels.maxscore_one(
                t, *args, hi, K, allowed, False, hs, hp, acc, touched, False
            )
        )
        t_taat = best(
            lambda t=terms: kernels.taat_one(
                t, *args, hi, K, allowed, False, acc, mark, touched, hs, hp, no_cols, no_dense
            )
        )
        rows.append([t_max, t_taat, walked, taat])
    return {"n_docs": n_docs, "rows": rows}


def evaluate(rows: Any, n_docs: int, cost: float, cache_docs: float) -> dict[str, float]:
    import numpy as np

    a, b, walked, taat = np.asarray(rows, dtype=np.float64).T
    pick = walked * cost > taat * (1.0 + n_docs / cache_docs)
    oracle = np.minimum(a, b).mean()
    return {
        "rule_us": 1e6 * float(np.where(pick, b, a).mean()),
        "rule_over_oracle": float(np.where(pick, b, a).mean() / oracle),
        "taat_share": float(pick.mean()),
    }


def summarise(sizes: list[dict[str, Any]], fit: int) -> dict[str, Any]:
    import numpy as np

    from relevo.indexes import bm25_kernels

    kernels = bm25_kernels.load()
    shipped = (kernels.MAXSCORE_COST, kernels.TAAT_CACHE_DOCS)
    grid = []
    for cost, cache in itertools.product(COSTS, CACHE_DOCS):
        loss = [
            evaluate(s["rows"][:fit], s["n_docs"], cost, cache)["rule_over_oracle"] for s in sizes
        ]
        grid.append((float(np.mean(loss)), cost, cache))
    grid.sort()
    _, best_cost, best_cache = grid[0]
    out = []
    for s in sizes:
        r = np.asarray(s["rows"], dtype=np.float64)
        held = s["rows"][fit:] or s["rows"]
        out.append(
            {
                "n_docs": s["n_docs"],
                "queries": len(r),
                "maxscore_us": 1e6 * float(r[:, 0].mean()),
                "taat_us": 1e6 * float(r[:, 1].mean()),
                "oracle_us": 1e6 * float(np.minimum(r[:, 0], r[:, 1]).mean()),
                "shipped": evaluate(s["rows"], s["n_docs"], *shipped),
                "shipped_held_out": evaluate(held, s["n_docs"], *shipped),
                "fitted_on_fit_queries": evaluate(held, s["n_docs"], best_cost, best_cache),
            }
        )
    return {
        "shipped": {"MAXSCORE_COST": shipped[0], "TAAT_CACHE_DOCS": shipped[1]},
        "fitted": {"MAXSCORE_COST": best_cost, "TAAT_CACHE_DOCS": best_cache},
        "fit_queries": fit,
        "sizes": out,
    }


def markdown(payload: dict[str, Any], path: Path) -> None:
    s = payload["summary"]
    rows = [
        [
            f"{r['n_docs']:,}",
            r["queries"],
            f"{r['maxscore_us']:.1f}",
            f"{r['taat_us']:.1f}",
            f"{r['oracle_us']:.1f}",
            f"{r['shipped']['rule_us']:.1f}",
            f"{r['shipped']['rule_over_oracle']:.3f}",
            f"{100 * r['shipped']['taat_share']:.0f}%",
            f"{r['maxscore_us'] / r['shipped']['rule_us']:.2f}",
            f"{r['shipped_held_out']['rule_over_oracle']:.3f}",
            f"{r['fitted_on_fit_queries']['rule_over_oracle']:.3f}",
        ]
        for r in s["sizes"]
    ]
    lines = [
        "# BM25 `auto`: MaxScore or term-at-a-time per query",
        "",
        "Per-query CPU time (µs, best of "
        f"{payload['repeats']}) of each kernel on the scale benchmark's corpora and queries "
        f"(top-{K}, single-threaded; {payload['machine']}; load {payload['load_before']} → "
        f"{payload['load_after']}). `oracle`: the faster kernel per query. `auto` uses the "
        f"shipped constants (MAXSCORE_COST {s['shipped']['MAXSCORE_COST']}, TAAT_CACHE_DOCS "
        f"{s['shipped']['TAAT_CACHE_DOCS']:,}).",
        "",
        *common.md_table(
            [
                "docs",
                "queries",
                "MaxScore",
                "TAAT",
                "oracle",
                "auto",
                "auto / oracle",
                "auto picks TAAT",
                "× MaxScore alone",
                "auto / oracle (held out)",
                "grid fit / oracle (held out)",
            ],
            rows,
            right=range(1, 11),
        ),
        "",
        f"Grid fit on the first {s['fit_queries']} queries of every size (mean auto / oracle): "
        f"MAXSCORE_COST {s['fitted']['MAXSCORE_COST']}, TAAT_CACHE_DOCS "
        f"{s['fitted']['TAAT_CACHE_DOCS']:,}; the last two columns are measured on the other "
        "queries (the shipped constants and the fit, on the same held-out queries).",
        "",
        f"Produced by `{payload['command']}`.",
        "",
    ]
    path.write_text("\n".join(lines), "utf-8")


def plot(payload: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sizes = payload["summary"]["sizes"]
    xs = [r["n_docs"] for r in sizes]
    for key, label in (("maxscore_us", "MaxScore alone"), ("taat_us", "term-at-a-time alone"),
                       ("oracle_us", "oracle (best per query)")):  # fmt: skip
        ax.plot(xs, [r[key] for r in sizes], marker="o", label=label)
    ax.plot(xs, [r["shipped"]["rule_us"] for r in sizes], marker="s", label="auto (shipped)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("µs per query")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    import shlex

    ap = common.parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 200_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--fit", type=int, default=600)
    ap.add_argument(
        "--render-only", action="store_true", help="re-summarise bm25-auto.json (no timing)"
    )
    common.add_repeats(ap)
    common.add_out(ap)
    args = ap.parse_args()
    if args.render_only:
        saved = json.loads((args.out / "bm25-auto.json").read_text("utf-8"))
        sizes = [{"n_docs": int(n), "rows": v["rows"]} for n, v in saved["per_query"].items()]
        saved["summary"] = summarise(sizes, saved["summary"]["fit_queries"])
        common.write_results(args.out, "bm25-auto", saved, markdown=markdown, plot=plot)
        return
    load_before = common.load_average()
    sizes = []
    for n in args.sizes:
        print(f"[{n}] building and timing", file=sys.stderr, flush=True)
        sizes.append(measure(n, args.queries, args.repeats))
    payload = {
        "command": "python benchmarks/tune_bm25_auto.py " + shlex.join(sys.argv[1:]),
        "machine": common.machine_line(),
        "repeats": args.repeats,
        "load_before": load_before,
        "load_after": common.load_average(),
        "summary": summarise(sizes, args.fit),
        "per_query": {
            str(s["n_docs"]): {
                "columns": ["maxscore_s", "taat_s", "walked", "taat"],
                "rows": s["rows"],
            }
            for s in sizes
        },
    }
    print(
        common.write_results(
            args.out, "bm25-auto", payload, markdown=markdown, plot=plot
        ).read_text("utf-8")
    )


if __name__ == "__main__":
    main()
