"""Sharded builds on Ray: single process vs ``--ray --shards 2`` on a local 2-worker cluster.

For each case the same documents are indexed twice: by ``Engine.index`` + ``save`` in this
process, and by ``build_sharded(..., shards=2, runner=RayRunner(num_cpus=2))``, what
``relevo index build CORPUS --out DIR --ray --shards 2`` runs (the local Ray instance's
start-up is inside the timed build and reported apart). Both directories are then loaded
and searched with the same queries, top 10: the sharded collection fans out to its two
shards in this process and merges. Reported per case: build wall seconds, search queries
per second (best of ``--repeats`` timings of the whole query batch), the fraction of
queries whose top-10 ids are identical, and the largest score difference over them.

Cases:

- ``scifact bm25``: SciFact's 5,183 documents, its 300 test queries.
- ``scifact dense``: the same with ``faiss-flat`` over the packaged MiniLM (``minilm``)
  embeddings; the embedding dominates the build.
- ``synthetic bm25``: ``--synthetic-docs`` (200,000) documents of Zipf(1.1) words over a
  50,000-word vocabulary, lengths Poisson(40); 1,000 queries of 2-4 words from the
  same distribution. (Dense on 200k documents with MiniLM takes hours here: left out.)

Every build gets a fresh, empty embedding-cache folder, so no run reuses another's
vectors. Torch and BLAS threads are whatever the environment says (run it with
``OMP_NUM_THREADS=1``: the single process then embeds on one core, each Ray worker on
its own). The load average before and after is recorded: on a shared machine the
speed-up is bounded by the cores the other jobs leave.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray.py [--synthetic-docs 200000] [--skip-dense]
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common
import numpy as np

from relevo import Document, Engine
from relevo.engine.ray_shards import RayRunner
from relevo.engine.shard_build import build_sharded

K = 10
CASES = ("scifact bm25", "scifact dense", "synthetic bm25")
SHARDS = 2
WORKERS = 2


def scifact() -> tuple[list[Document], list[str]]:
    root = common.datasets_dir() / "scifact"
    docs = [
        Document(id=str(r["_id"]), text=r.get("text") or "", title=r.get("title") or "")
        for r in common.read_corpus(root)
    ]
    queries = [t for _, t in common.read_queries(root, only=common.read_qrels(root, "test"))]
    return docs, queries


def synthetic(n: int, seed: int = 0) -> tuple[list[Document], list[str]]:
    rng = np.random.default_rng(seed)
    vocab = 50_000
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    words = np.array([f"w{i}" for i in range(vocab)])
    lengths = np.maximum(1, rng.poisson(40, n))
    flat = words[rng.choice(vocab, size=int(lengths.sum()), p=p)]
    cuts = np.concatenate([[0], np.cumsum(lengths)])
    docs = [
        Document(id=f"s{i}", text=" ".join(flat[cuts[i] : cuts[i + 1]].tolist())) for i in range(n)
    ]
    queries = [
        " ".join(words[rng.choice(vocab, size=int(rng.integers(2, 5)), p=p)].tolist())
        for _ in range(1000)
    ]
    return docs, queries


def qps(collection: Any, queries: list[str], repeats: int) -> float:
    collection.search_batch(queries[:8], K, with_text=False)  # warm (kernels, lazy loads)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        collection.search_batch(queries, K, with_text=False)
        best = min(best, time.perf_counter() - t0)
    return len(queries) / best


def compare(single: Any, sharded: Any, queries: list[str]) -> dict[str, Any]:
    a = single.search_batch(queries, K, with_text=False)
    b = sharded.search_batch(queries, K, with_text=False)
    same = sum([h.id for h in x] == [h.id for h in y] for x, y in zip(a, b, strict=True))
    diffs = [
        abs(h.score - g.score)
        for x, y in zip(a, b, strict=True)
        for h, g in zip(x, y, strict=False)
    ]
    return {
        "queries": len(queries),
        "top10_ids_identical": same / len(queries),
        "max_score_diff": max(diffs, default=0.0),
    }


def run_case(
    name: str, docs: list[Document], queries: list[str], stages: list[str], work: Path, repeats: int
) -> dict[str, Any]:
    print(f"[{name}] {len(docs):,} docs, {len(queries)} queries, stages {stages}", file=sys.stderr)
    row: dict[str, Any] = {"case": name, "docs": len(docs), "stages": stages}
    # single process
    load_before = common.load_average()
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    eng = Engine(cache=cache)
    t0 = time.perf_counter()
    col = eng.index(docs, stages=stages, embedder="minilm")
    eng.save(col, work / f"{name}-single")
    row["single_build_s"] = round(time.perf_counter() - t0, 2)
    del col
    gc.collect()
    print(f"  single build {row['single_build_s']}s", file=sys.stderr)
    # sharded on a local 2-worker Ray instance (its start-up timed too)
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    eng2 = Engine(cache=cache)
    t0 = time.perf_counter()
    runner = RayRunner(num_cpus=WORKERS, object_store_memory=1024**3)
    runner.start()
    row["ray_start_s"] = round(time.perf_counter() - t0, 2)
    try:
        sharded = build_sharded(
            eng2,
            docs,
            work / f"{name}-sharded",
            shards=SHARDS,
            stages=stages,
            embedder="minilm",
            runner=runner,
        )
    finally:
        runner.close()
    row["sharded_build_s"] = round(time.perf_counter() - t0, 2)
    row["sharded_phases_s"] = sharded.manifest()["build"]["seconds"]
    row["ray_workers_used"] = len(sharded.manifest()["build"]["workers"])
    row["load_average_build"] = [load_before, common.load_average()]
    print(f"  ray build {row['sharded_build_s']}s (start {row['ray_start_s']}s)", file=sys.stderr)
    # search, both loaded from disk
    single = eng.load(work / f"{name}-single")
    loaded = eng.load(work / f"{name}-sharded")
    row["load_average_search"] = common.load_average()
    row["single_qps"] = round(qps(single, queries, repeats), 1)
    row["sharded_qps"] = round(qps(loaded, queries, repeats), 1)
    row.update(compare(single, loaded, queries))
    row["speedup_build"] = round(row["single_build_s"] / row["sharded_build_s"], 2)
    print(f"  {row}", file=sys.stderr)
    for p in work.glob(f"{name}-*"):
        shutil.rmtree(p, ignore_errors=True)
    return row


def write_markdown(res: dict[str, Any], path: Path) -> None:
    lines = [
        "# Sharded builds on Ray",
        "",
        f"Single process vs `--ray --shards {SHARDS}` on a local {WORKERS}-worker Ray cluster "
        f"({res['machine']}; threads {res['threads']}; ray {res['ray']}). Top-{K} search, "
        "queries per second over the whole batch (the sharded collection fans out in-process). "
        "Each build starts with an empty embedding cache. Load average (1, 5, 15 min): "
        f"{res['load_average']['start']} at the start, {res['load_average']['end']} at the end.",
        "",
        *common.md_table(
            [
                "case",
                "docs",
                "single build s",
                f"ray x{SHARDS} build s (start)",
                "speed-up",
                "single QPS",
                "sharded QPS",
                "top-10 ids identical",
                "max score diff",
                "load avg (build start, end)",
            ],
            [
                (
                    r["case"],
                    f"{r['docs']:,}",
                    r["single_build_s"],
                    f"{r['sharded_build_s']} ({r['ray_start_s']})",
                    f"{r['speedup_build']}x",
                    r["single_qps"],
                    r["sharded_qps"],
                    f"{r['top10_ids_identical']:.0%} of {r['queries']}",
                    f"{r['max_score_diff']:.2e}",
                    f"{r['load_average_build'][0][0]}, {r['load_average_build'][1][0]}",
                )
                for r in res["rows"]
            ],
            right=range(1, 10),
        ),
        "",
        "Build phases of the Ray runs (seconds): "
        + "; ".join(f"{r['case']}: {r['sharded_phases_s']}" for r in res["rows"])
        + ". `statistics` is the first pass (BM25 statistics of each shard, in parallel, "
        "including the workers' start); `build` the second (index, embed, save).",
        "",
        *(f"- {n}" for n in res.get("notes", [])),
        "",
        "Command: `" + res["command"] + "`",
        "",
    ]
    path.write_text("\n".join(lines), "utf-8")


def write_plot(res: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    rows = res["rows"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["single_build_s"] for r in rows], 0.4, label="single process")
    ax.bar(x + 0.2, [r["sharded_build_s"] for r in rows], 0.4, label=f"Ray, {SHARDS} shards")
    ax.set_xticks(x, [r["case"] for r in rows])
    ax.set_ylabel("build wall seconds")
    ax.set_title(f"Sharded build on a local {WORKERS}-worker Ray cluster")
    ax.legend()
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> int:
    ap = common.parser(__doc__)
    common.add_out(ap)
    common.add_repeats(ap, 3)
    ap.add_argument("--synthetic-docs", type=int, default=200_000)
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument(
        "--cases",
        nargs="+",
        choices=CASES,
        default=list(CASES),
        help="Run only these cases; the other rows of an existing ray.json are kept.",
    )
    args = ap.parse_args()
    import ray

    cases = [c for c in args.cases if not (args.skip_dense and c == "scifact dense")]
    start_load = common.load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        for case in cases:
            docs, queries = (
                scifact() if case.startswith("scifact") else synthetic(args.synthetic_docs)
            )
            stages = ["faiss-flat"] if case.endswith("dense") else ["bm25"]
            row = run_case(case, docs, queries, stages, work, args.repeats)
            row["command"] = (
                "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray.py "
                + " ".join(sys.argv[1:])
            )
            row["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            rows.append(row)
    old = args.out / "ray.json"
    if set(cases) != set(CASES) and old.is_file():  # keep the rows not re-run
        kept = {r["case"]: r for r in json.loads(old.read_text("utf-8"))["rows"]}
        kept.update({r["case"]: r for r in rows})
        rows = [kept[c] for c in CASES if c in kept]
    res = {
        "machine": common.machine_line(),
        "threads": common.thread_env("OMP_NUM_THREADS", "MKL_NUM_THREADS"),
        "ray": ray.__version__,
        "shards": SHARDS,
        "workers": WORKERS,
        "k": K,
        "embedding_cache": "a fresh empty cache folder per build",
        "load_average": {"start": start_load, "end": common.load_average()},
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray.py "
        + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    common.write_results(args.out, "ray", res, markdown=write_markdown, plot=write_plot)
    print(f"wrote {args.out / 'ray.json'}, ray.md, ray.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
