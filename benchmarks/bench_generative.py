"""Generative retrieval on SciFact: docid-trie zero-shot and trained, next to BM25 and dense.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generative.py \\
        [--configs zs-title zs-semantic trained-title trained-semantic] \\
        [--trained-title DIR] [--trained-semantic DIR] [--beams 100] [--query-batch 8] \\
        [--limit N] [--work DIR] [--render-only]

Every configuration is a ``docid-trie`` collection over the whole SciFact corpus
(5,183 documents), searched for every test query (300) at k = ``--beams`` (100: the
Recall@100 cut) with relevo's batched, exactly pruned constrained beam search:

- ``zs-title`` / ``zs-semantic``: the packaged SmolLM2-135M-Instruct, not trained on
  SciFact, generating title identifiers (first 12 words of the title) / semantic
  identifiers (hierarchical k-means of MiniLM vectors, DSI-style digit strings);
- ``trained-title`` / ``trained-semantic``: the models ``relevo train generative scifact
  --docid title|semantic`` wrote (``--trained-title`` / ``--trained-semantic``); their
  training time, steps and final loss come from each model's ``relevo-generative.json``.

Next to them: BM25 and MiniLM dense (relevo's cached collections, as ``relevo eval``),
and each generative run fused with BM25 by relevo's RRF (k = 60, top 100 of each) — the
``generative-hybrid`` pipeline's fusion — against BM25 alone. Runs are appended query by
query to ``WORK/runs/NAME.jsonl`` (a killed run resumes where it stopped; delete the file
to re-measure). ``--limit N`` scores only the first N test queries (reading them from the
same run files) and labels every row as a subset. Writes ``benchmarks/results/generative.{json,md,png}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

CONFIGS = ("zs-title", "zs-semantic", "trained-title", "trained-semantic")
PUBLISHED = {"BM25 (BEIR paper, Anserini)": 0.665}


def default_work() -> Path:
    from relevo.engine.cache import cache_dir

    return cache_dir() / "gen-bench"


def options(name: str, args: Any) -> dict[str, Any]:
    docid = name.split("-", 1)[1]
    opts: dict[str, Any] = {"beams": args.beams, "query_batch": args.query_batch, "device": "cpu"}
    if name.startswith("trained-"):
        model = getattr(args, f"trained_{docid}")
        if model is None or not (Path(model) / "relevo-generative.json").is_file():
            raise SystemExit(
                f"{name}: pass --trained-{docid} DIR, a finished `relevo train generative "
                f"scifact --docid {docid} --out DIR`."
            )
        opts["model"] = str(model)  # the index reads the identifier options from it
    else:
        opts["docid"] = docid
    return opts


def collection(engine: Any, corpus: Path, name: str, args: Any, work: Path) -> tuple[Any, float]:
    """The config's docid-trie collection, built once and kept under WORK/collections."""
    path = work / "collections" / name
    if path.is_dir():
        return engine.load(path), 0.0
    t0 = time.perf_counter()
    col = engine.index(
        corpus, stages=["docid-trie"], index_options={"docid-trie": options(name, args)}
    )
    seconds = time.perf_counter() - t0
    col.save(path, overwrite=True)
    return col, seconds


def read_run(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a torn last line of a killed run: measured again
            continue
        out[rec["qid"]] = rec
    return out


def search_all(
    col: Any, queries: list[tuple[str, str]], k: int, run_path: Path, batch: int
) -> None:
    """Append every query's hits (and its share of the batch's seconds) to ``run_path``."""
    done = read_run(run_path)
    todo = [(q, t) for q, t in queries if q not in done]
    run_path.parent.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    with open(run_path, "a", encoding="utf-8") as fh:
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            t0, c0 = time.perf_counter(), time.process_time()
            results = col.search_batch([t for _, t in chunk], k)
            share = (time.perf_counter() - t0) / len(chunk)
            cpu = (time.process_time() - c0) / len(chunk)
            for (qid, _), hits in zip(chunk, results, strict=True):
                rec = {
                    "qid": qid,
                    "seconds": share,
                    "cpu_seconds": cpu,
                    "hits": [[h.id, float(h.score)] for h in hits],
                }
                fh.write(json.dumps(rec) + "\n")
            fh.flush()
            n = start + len(chunk)
            rate = (time.perf_counter() - t_all) / n
            print(
                f"  {run_path.stem}: {len(done) + n}/{len(queries)} queries, "
                f"{rate:.1f} s/query, eta {rate * (len(todo) - n) / 60:.0f} min",
                file=sys.stderr,
                flush=True,
            )


def as_hits(ranked: list[tuple[str, float]]) -> list[Any]:
    from relevo import Hit

    return [Hit(id=d, score=s, rank=i) for i, (d, s) in enumerate(ranked, 1)]


def metrics(
    run: dict[str, list[tuple[str, float]]], qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    from relevo.engine.evaluate import score_run

    return score_run({q: as_hits(run.get(q, [])) for q in qrels}, qrels)


def baseline_runs(
    engine: Any, root: Path, queries: list[tuple[str, str]]
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    from relevo.engine.evaluate import collection_for, load_dataset

    dataset = load_dataset(root)
    out: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for label, stages in (("BM25", ["bm25"]), ("dense (MiniLM)", ["faiss-flat@minilm"])):
        col, _, _ = collection_for(engine, dataset, stages, embedder="minilm")
        results = col.search_batch([t for _, t in queries], 100)
        out[label] = {
            qid: [(h.id, float(h.score)) for h in hits]
            for (qid, _), hits in zip(queries, results, strict=True)
        }
    return out


def fused(
    a: dict[str, list[tuple[str, float]]], b: dict[str, list[tuple[str, float]]]
) -> dict[str, list[tuple[str, float]]]:
    from relevo.engine.fusion import rrf

    return {
        q: [(d, s) for d, s, _ in rrf({"bm25": a.get(q, []), "gen": b.get(q, [])}, limit=100)]
        for q in a
    }


def training_facts(model: Path) -> dict[str, Any]:
    """What ``relevo-generative.json`` says of the run: steps, epochs, seconds, losses."""
    report = json.loads((model / "relevo-generative.json").read_text("utf-8"))
    recipe = report.get("recipe", {})
    facts = {k: recipe.get(k) for k in ("steps", "epochs", "batch_size", "max_length", "lr")}
    facts["tuning"] = recipe.get("tuning")
    for k in ("training_seconds", "first_loss", "final_loss", "training_examples", "device"):
        facts[k] = report.get(k)
    return facts


def measure(args: Any) -> dict[str, Any]:
    from relevo import Engine

    C.quiet_transformers()
    root = C.datasets_dir() / "scifact"
    qrels = C.read_qrels(root, "test")
    queries = C.read_queries(root, only=qrels)
    if args.limit:
        queries = queries[: args.limit]
        qrels = {q: qrels[q] for q, _ in queries}
    work = args.work
    engine = Engine()
    base = baseline_runs(engine, root, queries)
    rows: list[dict[str, Any]] = []
    for label, run in base.items():
        rows.append({"system": label, "kind": "baseline", **metrics(run, qrels)})
    for name in args.configs:
        col, build_s = collection(engine, root, name, args, work)
        # one run file per configuration: queries go in file order, so a --limit run reads
        # (or extends) the first queries of the full run
        run_path = work / "runs" / f"{name}.jsonl"
        print(f"{name}: searching {len(queries)} queries", file=sys.stderr, flush=True)
        search_all(col, queries, args.beams, run_path, args.query_batch)
        recs = read_run(run_path)
        run = {q: [(d, s) for d, s in recs[q]["hits"]] for q, _ in queries}
        seconds = [recs[q]["seconds"] for q, _ in queries]
        cpu = [recs[q].get("cpu_seconds") for q, _ in queries]
        row: dict[str, Any] = {
            "system": f"generative {name}",
            "kind": "generative",
            **metrics(run, qrels),
            "s_per_query": sum(seconds) / len(seconds),
            # CPU seconds (one thread), where recorded: immune to other work on the machine
            "cpu_s_per_query": sum(cpu) / len(cpu) if all(c is not None for c in cpu) else None,
            "build_seconds": build_s or None,
            "ids_per_query": sum(len(run[q]) for q in run) / len(run),
        }
        if name.startswith("trained-"):
            row["training"] = training_facts(
                Path(getattr(args, f"trained_{name.split('-', 1)[1]}"))
            )
        rows.append(row)
        rows.append({
            "system": f"BM25 + generative {name} (RRF)",
            "kind": "fusion",
            **metrics(fused(base["BM25"], run), qrels),
        })  # fmt: skip
    return {
        "dataset": "scifact",
        "split": "test",
        "queries": len(queries),
        "subset": bool(args.limit),
        "beams": args.beams,
        "query_batch": args.query_batch,
        "rows": rows,
        "published": PUBLISHED,
        "machine": C.machine_info(),
        "machine_line": C.machine_line(),
        "threads": C.thread_env("OMP_NUM_THREADS"),
        "load_average": C.load_average(),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generative.py "
        + " ".join(sys.argv[1:]),
    }


def fmt(x: Any, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(payload: dict[str, Any], path: Path) -> None:
    subset = (
        " (SUBSET: first {} test queries)".format(payload["queries"]) if payload["subset"] else ""
    )
    lines = [
        f"# Generative retrieval on SciFact{subset}",
        "",
        f"{payload['queries']} test queries; every generative row searches with "
        f"{payload['beams']} beams (k = {payload['beams']}), {payload['query_batch']} queries "
        "per batched beam search. Command: `" + payload["command"] + "`.",
        f"Machine: {payload.get('machine_line', '')}, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in payload['load_average'])}.",
        "",
        *C.md_table(
            ["system", "nDCG@10", "MRR@10", "Recall@100", "s/query", "CPU s/query", "ids/query"],
            [
                [
                    r["system"],
                    fmt(r["ndcg@10"]),
                    fmt(r["mrr@10"]),
                    fmt(r["recall@100"]),
                    fmt(r.get("s_per_query"), 1),
                    fmt(r.get("cpu_s_per_query"), 1),
                    fmt(r.get("ids_per_query"), 1),
                ]
                for r in payload["rows"]
            ],
            right=range(1, 7),
        ),
        "",
        "*s/query*: wall seconds per query (its share of a batch's), on a 2-core machine "
        "that ran other jobs alongside (trainings, the other configurations), so read it "
        "as an upper bound; *CPU s/query*: the process's CPU seconds (one thread), where "
        "the run recorded them; *ids/query*: distinct identifiers returned (k = beams).",
        "",
        "Published BM25 nDCG@10 on SciFact: "
        + ", ".join(f"{k} {v}" for k, v in payload["published"].items())
        + ".",
    ]
    trained = [r for r in payload["rows"] if "training" in r]
    if trained:
        lines += ["", "## Training on this machine", ""]
        keys = [
            "steps", "epochs", "batch_size", "max_length", "lr", "tuning",
            "training_seconds", "first_loss", "final_loss",
        ]  # fmt: skip
        lines += C.md_table(
            ["model", *keys],
            [[r["system"], *(fmt(r["training"].get(k)) for k in keys)] for r in trained],
        )
    path.write_text("\n".join(lines) + "\n", "utf-8")


def plot(payload: dict[str, Any], path: Path) -> None:
    plt = C.pyplot()
    rows = payload["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    names = [r["system"] for r in rows]
    y = range(len(rows))
    ax.barh([i - 0.2 for i in y], [r["ndcg@10"] for r in rows], height=0.4, label="nDCG@10")
    ax.barh([i + 0.2 for i in y], [r["recall@100"] for r in rows], height=0.4, label="Recall@100")
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    title = "Generative retrieval, SciFact test"
    if payload["subset"]:
        title += f" (subset: {payload['queries']} queries)"
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    C.save_figure(fig, path)


def main() -> None:
    ap = C.parser(__doc__)
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--trained-title", type=Path)
    ap.add_argument("--trained-semantic", type=Path)
    ap.add_argument("--beams", type=int, default=100)
    ap.add_argument("--query-batch", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--render-only", action="store_true", help="redraw from the saved JSON")
    C.add_out(ap)
    args = ap.parse_args()
    args.work = args.work or default_work()
    name = "generative" if not args.limit else f"generative-limit{args.limit}"
    if args.render_only:
        payload = json.loads((args.out / f"{name}.json").read_text("utf-8"))
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        payload = measure(args)
    md = C.write_results(args.out, name, payload, markdown=markdown, plot=plot)
    print(md.read_text("utf-8"))


if __name__ == "__main__":
    main()
