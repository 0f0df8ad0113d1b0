"""Label-free adaptation: synthetic queries, ``relevo adapt`` and ``--interpolate auto``.

    .venv/bin/python benchmarks/bench_adapt.py [--datasets scifact nfcorpus trec-dl-2019]
        [--sample 600] [--steps 100] [--reranker-steps 50] [--work DIR]
        [--teacher RERANKER --tag NAME [--no-train-reranker] [--loss auto|margin-mse|mnrl]]

For every dataset, no label of it is used for training or tuning:

1. ``relevo generate-queries DATASET --sample N`` (SmolLM2, generic prompt, BM25
   round-trip check, top 20): synthetic queries, docs/s and the kept fraction.
2. ``relevo adapt DATASET --queries ... --reranker cross-encoder:OTHER --train-reranker``:
   OTHER is a cross-encoder trained by ``relevo train reranker`` on the *other* datasets'
   train splits (SciFact -> NFCorpus-only, NFCorpus -> SciFact-only, TREC DL -> both);
   whole documents (100 synthetic queries) are held out; the dev sets are
   :func:`relevo.engine.autotune.dev_set`'s choice (the half of the kept queries that
   copies least from its source) over the held-out documents (adapted models) or over
   every query (the teacher / other CE).
3. Scored on the full test split (TREC DL 2019: the BM25 top-100 run, qrels at level 2):
   BM25; hybrid (BM25 + MiniLM, relevo's RRF); OTHER over BM25 plain, blended 0.5 and
   ``--interpolate auto`` (the weight :func:`relevo.engine.autotune.estimate_interpolation`
   picks on the held-out synthetic queries — what ``relevo eval --interpolate auto
   --dev-queries`` runs); the adapted bi-encoder alone and in the hybrid; the adapted
   cross-encoder over BM25 and over the adapted hybrid (auto). "adapted pipeline" is
   fixed in advance: adapted hybrid reranked by the adapted cross-encoder at the auto
   weight.

Every reranker scores each query's candidates once; the blends at all weights
(``WEIGHTS``) come from that one pass through
:func:`relevo.engine.rerank.interpolate_with_first_stage` — the function ``--interpolate``
uses — so the true nDCG@10 curve over weights sits next to the dev curve and the auto
choice. Writes ``benchmarks/results/adapt.{json,md,png}``.

``--teacher RERANKER --tag NAME`` runs the same protocol with one teacher for every
dataset (e.g. ``bi-encoder:bge-small``, an off-the-shelf embedder none of whose training
data is these test sets) in place of OTHER; its adapt runs go to ``adapt-NAME/`` beside
the queries (the same synthetic queries) and its results to ``adapt-NAME.{json,md,png}``.
With ``--no-train-reranker`` no cross-encoder is trained and the adapted pipeline reranks
the adapted hybrid with the teacher itself at its auto weight. A control row reranks
the *un-adapted* hybrid with the same teacher at its auto weight, so the gain from
adapting the bi-encoder stands apart from the gain of reranking.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

OTHER_CE = {"scifact": "ce-nfcorpus-only", "nfcorpus": "ce-scifact-only", "trec-dl-2019": "ce-star"}
DEPTH = {"scifact": 30, "nfcorpus": 30, "trec-dl-2019": 100}
REL_LEVEL = {"trec-dl-2019": 2}
RUN_FILE = {"trec-dl-2019": "runs/bm25_top100.trec"}
PUBLISHED = {  # BM25 nDCG@10 (BEIR paper, Anserini; TREC DL 2019 BM25 default)
    "scifact": 0.665,
    "nfcorpus": 0.325,
    "trec-dl-2019": 0.506,
}


def models_dir() -> Path:
    from relevo.engine.cache import cache_dir

    return cache_dir() / "models"


def generate(ds: str, root: Path, work: Path, sample: int) -> dict[str, Any]:
    out = work / ds / "queries.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        cmd = [C.relevo_bin(), "generate-queries", str(root), "--out", str(out)]
        cmd += ["--sample", str(sample), "--seed", "42"]
        C.run_logged(cmd, work / ds / "generate.log")
    return json.loads(out.with_name("queries.report.json").read_text("utf-8"))


def teacher_for(ds: str, args: Any) -> str:
    return args.teacher or f"cross-encoder:{models_dir() / OTHER_CE[ds]}"


def suffix(args: Any) -> str:
    return f"-{args.tag}" if args.tag else ""


def run_adapt(ds: str, root: Path, work: Path, args: Any) -> dict[str, Any]:
    out = work / ds / f"adapt{suffix(args)}"
    cmd = [C.relevo_bin(), "adapt", str(root), "--out", str(out)]
    cmd += ["--queries", str(work / ds / "queries.jsonl"), "--reranker", teacher_for(ds, args)]
    if not args.no_train_reranker:
        cmd += ["--train-reranker", "--reranker-steps", str(args.reranker_steps)]
    cmd += ["--max-steps", str(args.steps), "--loss", args.loss]
    cmd += ["--dev-queries", "100", "--depth", str(DEPTH[ds]), "--json"]
    C.run_logged(cmd, work / ds / f"adapt{suffix(args)}.log")
    return json.loads((out / "relevo-adapt.json").read_text("utf-8"))


def first_stage(
    engine: Any, dataset: Any, qids: list[str], pipeline: str, embedder: str
) -> dict[str, list]:
    from relevo.engine.evaluate import collection_for, first_stage_from_run, parse_pipeline

    name = dataset.path.name
    if pipeline == "bm25" and name in RUN_FILE:
        hits, _ = first_stage_from_run(dataset, dataset.path / RUN_FILE[name], qids, 100)
        return dict(zip(qids, hits, strict=True))
    stages, fusion = parse_pipeline(pipeline, engine.registry, embedder)
    collection, _, _ = collection_for(engine, dataset, stages, embedder=embedder, fusion=fusion)
    hits = collection.search_batch([dataset.queries[q] for q in qids], 100, with_text=True)
    return dict(zip(qids, hits, strict=True))


def score(run: dict[str, list], dataset: Any) -> dict[str, float]:
    from relevo.engine.evaluate import score_run

    level = REL_LEVEL.get(dataset.path.name, 1)
    return score_run(run, dataset.qrels, rel_level=level)


def weight_curve(
    reranked: dict[str, list], first: dict[str, list], depth: int, dataset: Any
) -> dict[float, float]:
    """Test nDCG@10 of the reranked top ``depth`` blended with the first stage, per weight."""
    from relevo.engine.autotune import WEIGHTS
    from relevo.engine.rerank import interpolate_with_first_stage

    curve = {}
    for w in WEIGHTS:
        run = {
            q: interpolate_with_first_stage(reranked[q], hits[:depth], w, scored=True)
            + hits[depth:]
            for q, hits in first.items()
        }
        curve[w] = score(run, dataset)["ndcg@10"]
    return curve


def rerank_curve(
    engine: Any,
    dataset: Any,
    first: dict[str, list],
    reranker: str,
    depth: int,
    dev_rows: list,
) -> dict[str, Any]:
    """One reranking pass; nDCG@10 at every weight, the dev estimate, and the auto row."""
    from relevo.engine.autotune import estimate_interpolation
    from relevo.engine.rerank import RerankOptions

    component = engine.reranker(reranker)
    component.load()
    runner = RerankOptions(depth=depth).runner(component)
    t0 = time.perf_counter()
    reranked = {q: runner(dataset.queries[q], hits[:depth]).hits for q, hits in first.items()}
    seconds = time.perf_counter() - t0
    true_curve = weight_curve(reranked, first, depth, dataset)
    est = estimate_interpolation(runner, dev_rows, depth=depth)
    best = max(true_curve, key=lambda w: (true_curve[w], -w))
    return {
        "reranker": reranker,
        "depth": depth,
        "seconds_per_query": seconds / max(len(first), 1),
        "plain": true_curve[1.0],
        "blended_0.5": true_curve[0.5],
        "auto": true_curve[est.weight],
        "auto_weight": est.weight,
        "true_best_weight": best,
        "true_best": true_curve[best],
        "true_curve": {f"{w:.1f}": v for w, v in true_curve.items()},
        "dev_curve": {f"{w:.1f}": v for w, v in est.curve.items()},
        "dev_queries": est.dev_queries,
    }


def choose_auto(x: dict[str, Any]) -> None:
    """The auto weight from the stored dev curve, with the library's rule and default margin."""
    from relevo.engine.autotune import choose_weight, default_min_gain

    dev = {float(w): v for w, v in x["dev_curve"].items()}
    x["min_gain"] = default_min_gain(x["dev_queries"])
    x["auto_weight"] = choose_weight(dev, min_gain=x["min_gain"])
    x["auto"] = x["true_curve"][f"{x['auto_weight']:.1f}"]


def evaluate_dataset(
    ds: str, root: Path, work: Path, adapted: dict[str, Any], args: Any
) -> dict[str, Any]:
    from relevo import Engine
    from relevo.engine.autotune import dev_candidates
    from relevo.engine.evaluate import load_dataset
    from relevo.engine.synthetic import read_synthetic_queries

    engine = Engine()
    dataset = load_dataset(root, split="test")
    qids = list(dataset.queries)
    depth = DEPTH[ds]
    # held-out documents' dev set (for the adapted models) and the teacher's, chosen from
    # every synthetic query (the teacher and the other CE trained on none of them)
    dev = [(q.text, q.source_id) for q in read_synthetic_queries(adapted["queries"]["dev_file"])]
    teacher_file = adapted["queries"].get("teacher_dev_file") or adapted["queries"]["dev_file"]
    teacher_dev = [(q.text, q.source_id) for q in read_synthetic_queries(teacher_file)]
    emb = adapted["outputs"]["embedder"]
    row: dict[str, Any] = {"dataset": ds, "queries": len(qids), "depth": depth}
    bm25 = first_stage(engine, dataset, qids, "bm25", "minilm")
    row["bm25"] = score(bm25, dataset)
    hybrid = first_stage(engine, dataset, qids, "hybrid", "minilm")
    row["hybrid"] = score(hybrid, dataset)
    row["adapted_dense"] = score(first_stage(engine, dataset, qids, "dense", emb), dataset)
    adapted_hybrid = first_stage(engine, dataset, qids, "hybrid", emb)
    row["adapted_hybrid"] = score(adapted_hybrid, dataset)
    dev_bm25 = dev_candidates(engine, dataset.corpus, dev, pipeline="bm25", depth=depth)
    teacher_bm25 = dev_candidates(engine, dataset.corpus, teacher_dev, pipeline="bm25", depth=depth)
    dev_hybrid = dev_candidates(
        engine, dataset.corpus, dev, pipeline="hybrid", depth=depth, embedder=emb
    )
    other = teacher_for(ds, args)
    mine = adapted["outputs"].get("reranker")  # None: no cross-encoder was trained
    # A reranking pass over BM25 depends only on the reranker's weights and the dev set:
    # reuse one from an earlier scoring of this dataset when neither changed since.
    prev_path = work / ds / f"row{suffix(args)}.prev.json"
    prev = json.loads(prev_path.read_text("utf-8")) if prev_path.is_file() else {}
    for key, spec, judged, rows in (
        ("other_ce", other, teacher_dev, teacher_bm25),
        ("adapted_ce", mine, dev, dev_bm25),
    ):
        if spec is None:
            continue
        folder = Path(spec.split(":", 1)[1])
        old = prev.get(key)
        fresh = (
            old is not None
            and spec.startswith("cross-encoder:")
            and old.get("reranker") == spec
            and old.get("dev_set") == [list(x) for x in judged]
            and prev_path.stat().st_mtime > (folder / "relevo-reranker.json").stat().st_mtime
        )
        row[key] = old if fresh else rerank_curve(engine, dataset, bm25, spec, depth, rows)
        row[key]["dev_set"] = [list(x) for x in judged]
        row[key]["reused"] = bool(fresh)
    if args.tag:  # control: the same teacher over the un-adapted hybrid
        dev_plain = dev_candidates(
            engine, dataset.corpus, teacher_dev, pipeline="hybrid", depth=depth, embedder="minilm"
        )
        row["hybrid_teacher"] = rerank_curve(engine, dataset, hybrid, other, depth, dev_plain)
    row["adapted_pipeline"] = rerank_curve(
        engine, dataset, adapted_hybrid, mine or other, depth, dev_hybrid
    )
    return row


def auto_cell(x: dict[str, Any] | None) -> str:
    return "—" if x is None else f"{x['auto']:.4f} ({x['auto_weight']:.1f})"


RERANK_KEYS = ("other_ce", "adapted_ce", "hybrid_teacher", "adapted_pipeline")


def markdown(payload: dict[str, Any], path: Path) -> None:
    rows = payload["rows"]
    meta = payload["meta"]
    if meta.get("teacher"):
        return markdown_teacher(payload, path)
    lines = [
        "# Adapting to a corpus with no labels (nDCG@10, full test splits)",
        "",
        "No label of the evaluated dataset is used for training or tuning. `other CE`: a "
        "cross-encoder trained by relevo on the other datasets' train splits. `auto`: the "
        "weight `--interpolate auto` chose on "
        + dev_words(payload["meta"])
        + " (0 = do not rerank). `adapted`: after `relevo adapt` (synthetic queries, mined negatives, the "
        "other CE as MarginMSE teacher when the dev set trusts it, cross-encoder fine-tuned "
        "on the synthetic pairs). `adapted pipeline` (fixed in advance): adapted hybrid "
        "reranked by the adapted CE at its auto weight.",
        "",
    ]
    headers = ["dataset", "BM25", "hybrid", "other CE", "other CE 0.5", "other CE auto (w)",
               "adapted dense", "adapted hybrid", "adapted CE auto (w)", "adapted pipeline (w)"]  # fmt: skip
    body = []
    for r in rows:
        o, a, p = r["other_ce"], r["adapted_ce"], r["adapted_pipeline"]
        body.append([
            r["dataset"], f"{r['bm25']['ndcg@10']:.4f}", f"{r['hybrid']['ndcg@10']:.4f}",
            f"{o['plain']:.4f}", f"{o['blended_0.5']:.4f}", f"{o['auto']:.4f} ({o['auto_weight']:.1f})",
            f"{r['adapted_dense']['ndcg@10']:.4f}", f"{r['adapted_hybrid']['ndcg@10']:.4f}",
            f"{a['auto']:.4f} ({a['auto_weight']:.1f})", f"{p['auto']:.4f} ({p['auto_weight']:.1f})",
        ])  # fmt: skip
    lines += C.md_table(headers, body, right=range(1, len(headers)))
    lines += summary_lines(rows)
    lines += auto_table(rows) + synthetic_table(rows)
    lines += ["", f"Published BM25 nDCG@10 for reference: {PUBLISHED}. Machine: {payload['meta']['machine']}.",
              "", f"Produced by `{payload['meta']['command']}`."]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", "utf-8")


def dev_words(meta: dict[str, Any]) -> str:
    """What the dev set of these results was."""
    if meta.get("dev_set") == "least-overlap":
        return (
            "the synthetic dev set of `relevo.engine.autotune.dev_set` (of the queries the "
            "round trip kept, the half that copies fewest words from its source document; "
            "for the adapted models only held-out documents' queries, for the teacher and "
            "the other CE every query)"
        )
    return "100 held-out synthetic queries kept by the round trip"


def markdown_teacher(payload: dict[str, Any], path: Path) -> None:
    """The ``--teacher`` variant: one teacher for every dataset, and the control row."""
    rows, meta = payload["rows"], payload["meta"]
    t = meta["teacher"]
    lines = [
        f"# Adapting to a corpus with no labels, teacher `{t}` (nDCG@10, full test splits)",
        "",
        f"No label of the evaluated dataset is used for training or tuning. Teacher: `{t}` "
        "for every dataset, off the shelf. `auto`: the weight `--interpolate auto` chose on "
        + dev_words(meta)
        + " (0 = do not rerank). `adapted`: after `relevo adapt "
        f"--reranker {t}` (the same synthetic queries as `adapt.md`, mined negatives, "
        + ("MarginMSE against the teacher's margins, asked for with `--loss margin-mse`"
           if meta.get("loss") == "margin-mse"
           else "MarginMSE against the teacher's margins when the dev set trusts it, else MNRL")
        + "). `hybrid + teacher`: the "
        "**un-adapted** hybrid reranked by the teacher at its auto weight (the control: what "
        "reranking alone gives). `adapted pipeline` (fixed in advance): the adapted hybrid "
        + ("reranked by the adapted CE" if any(r.get("adapted_ce") for r in rows) else "reranked by the teacher")
        + " at its auto weight.",
        "",
    ]  # fmt: skip
    headers = ["dataset", "BM25", "hybrid", "teacher", "teacher 0.5", "teacher auto (w)",
               "hybrid + teacher auto (w)", "adapted dense", "adapted hybrid", "adapted pipeline (w)"]  # fmt: skip
    body = []
    for r in rows:
        o = r["other_ce"]
        body.append([
            r["dataset"], f"{r['bm25']['ndcg@10']:.4f}", f"{r['hybrid']['ndcg@10']:.4f}",
            f"{o['plain']:.4f}", f"{o['blended_0.5']:.4f}", auto_cell(o), auto_cell(r.get("hybrid_teacher")),
            f"{r['adapted_dense']['ndcg@10']:.4f}", f"{r['adapted_hybrid']['ndcg@10']:.4f}",
            auto_cell(r["adapted_pipeline"]),
        ])  # fmt: skip
    lines += C.md_table(headers, body, right=range(1, len(headers)))
    lines += summary_lines(rows)
    if rows and all(r.get("hybrid_teacher") for r in rows):
        ctrl = sum(r["hybrid_teacher"]["auto"] - r["hybrid"]["ndcg@10"] for r in rows) / len(rows)
        own = sum(r["adapted_pipeline"]["auto"] - r["hybrid_teacher"]["auto"] for r in rows) / len(
            rows
        )
        lines += [
            f"Of it, reranking the un-adapted hybrid with the teacher gives {ctrl:+.4f}; adapting "
            f"the bi-encoder adds {own:+.4f} on top (adapted pipeline minus `hybrid + teacher`)."
        ]  # fmt: skip
    lines += auto_table(rows) + synthetic_table(rows)
    lines += ["", f"Published BM25 nDCG@10 for reference: {PUBLISHED}. Machine: {meta['machine']}.",
              "", f"Produced by `{meta['command']}`."]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", "utf-8")


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    if rows:
        mean = lambda f: sum(f(r) for r in rows) / len(rows)  # noqa: E731
        gain = mean(lambda r: r["adapted_pipeline"]["auto"] - r["hybrid"]["ndcg@10"])
        lines += [
            "",
            f"Mean gain of the adapted pipeline over the un-adapted hybrid: {gain:+.4f} nDCG@10.",
        ]
        base = {"other_ce": "bm25", "adapted_ce": "bm25", "hybrid_teacher": "hybrid",
                "adapted_pipeline": "adapted_hybrid"}  # fmt: skip
        worst = min(
            r[k]["auto"] - r[base[k]]["ndcg@10"] for r in rows for k in RERANK_KEYS if r.get(k)
        )
        lines += [f"Worst `auto` minus its own first stage over all rows: {worst:+.4f}."]
    return lines


def auto_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Does the auto weight track the true best weight?", ""]
    headers = [
        "dataset",
        "reranker",
        "auto w",
        "true best w",
        "nDCG@10 at auto",
        "at true best",
        "gap",
    ]
    body = []
    for r in rows:
        for key in RERANK_KEYS:
            x = r.get(key)
            if x is None:
                continue
            body.append([r["dataset"], key, f"{x['auto_weight']:.1f}", f"{x['true_best_weight']:.1f}",
                         f"{x['auto']:.4f}", f"{x['true_best']:.4f}", f"{x['auto'] - x['true_best']:+.4f}"])  # fmt: skip
    lines += C.md_table(headers, body, right=range(2, len(headers)))
    return lines


def docs_per_second(g: dict[str, Any]) -> str:
    """The generation speed, or the one a rerun that reused every batch carried over."""
    if g.get("docs_per_second"):
        return f"{g['docs_per_second']}"
    if g.get("docs_per_second_earlier"):
        return f"{g['docs_per_second_earlier']} (earlier run)"
    return "— (all batches reused; `adapt.md` measured them)"


def synthetic_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Synthetic queries", ""]
    headers = [
        "dataset",
        "documents",
        "generated",
        "kept",
        "kept %",
        "docs/s",
        "bi-encoder loss",
        "sample",
    ]
    body = []
    for r in rows:
        g, ad = r["generation"], r["adapt"]
        sample = g["sample_kept"][0]["text"] if g["sample_kept"] else ""
        body.append([r["dataset"], g["documents_used"], g["generated"], g["kept"],
                     f"{g['kept_fraction']:.0%}", docs_per_second(g), ad["loss"]["used"], sample[:90]])  # fmt: skip
    lines += C.md_table(headers, body, right=range(1, 6))
    return lines


def plot(payload: dict[str, Any], path: Path) -> None:
    plt = C.pyplot()
    rows = payload["rows"]
    fig, axes = plt.subplots(1, 1 + len(rows), figsize=(5 + 4 * len(rows), 4.2))
    ax = axes[0] if len(rows) else axes
    teacher = bool(payload["meta"].get("teacher"))
    other = "BM25 + teacher auto" if teacher else "other CE auto"
    names = ["BM25", "hybrid", other, "adapted hybrid", "adapted pipeline"]
    if teacher:
        names.insert(3, "hybrid + teacher auto")
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        vals = []
        for r in rows:
            vals.append({
                "BM25": r["bm25"]["ndcg@10"], "hybrid": r["hybrid"]["ndcg@10"],
                other: r["other_ce"]["auto"], "adapted hybrid": r["adapted_hybrid"]["ndcg@10"],
                "adapted pipeline": r["adapted_pipeline"]["auto"],
                "hybrid + teacher auto": (r.get("hybrid_teacher") or {}).get("auto", 0.0),
            }[n])  # fmt: skip
        ax.bar([j + i * width for j in range(len(rows))], vals, width, label=n)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [r["dataset"] for r in rows])
    ax.set_ylabel("nDCG@10")
    ax.legend(fontsize=7)
    for k, r in enumerate(rows, 1):
        a = axes[k]
        for key, color in (("other_ce", "tab:red"), ("adapted_ce", "tab:green"),
                           ("hybrid_teacher", "tab:purple")):  # fmt: skip
            x = r.get(key)
            if x is None:
                continue
            ws = [float(w) for w in x["true_curve"]]
            a.plot(ws, list(x["true_curve"].values()), color=color, label=f"{key} test nDCG@10")
            a.plot(
                ws, list(x["dev_curve"].values()), color=color, ls="--", label=f"{key} dev MRR@10"
            )
            a.axvline(x["auto_weight"], color=color, ls=":")
        a.set_title(r["dataset"])
        a.set_xlabel("reranker weight")
        a.legend(fontsize=6)
    fig.tight_layout()
    C.save_figure(fig, path)


def main() -> None:
    ap = C.parser(__doc__, summary_only=True)
    C.add_datasets(ap, ["scifact", "nfcorpus", "trec-dl-2019"])
    ap.add_argument("--sample", type=int, default=600)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reranker-steps", type=int, default=50)
    ap.add_argument("--work", type=Path, default=None, help="default: <cache>/adapt-bench")
    ap.add_argument("--fresh", action="store_true", help="re-score datasets scored before")
    ap.add_argument("--teacher", default=None, help="one teacher for every dataset (needs --tag)")
    ap.add_argument("--tag", default=None, help="name of this variant's runs and results")
    ap.add_argument("--no-train-reranker", action="store_true")
    ap.add_argument(
        "--loss", default="auto", choices=["auto", "margin-mse", "mnrl"], help="relevo adapt --loss"
    )
    C.add_out(ap)
    args = ap.parse_args()
    if bool(args.teacher) != bool(args.tag):
        ap.error("--teacher and --tag go together")
    C.quiet_transformers()
    from relevo.engine.cache import cache_dir

    work = args.work or cache_dir() / "adapt-bench"
    rows = []
    for ds in args.datasets:
        root = C.datasets_dir() / ds
        gen = generate(ds, root, work, args.sample)
        cached = work / ds / f"row{suffix(args)}.json"
        done = work / ds / f"adapt{suffix(args)}" / "relevo-adapt.json"
        if cached.is_file() and done.is_file() and not args.fresh:
            # scored after the last adapt run: reuse (the auto rows are re-derived below)
            adapted = json.loads(done.read_text("utf-8"))
            row = json.loads(cached.read_text("utf-8"))
        else:
            adapted = run_adapt(ds, root, work, args)
            row = evaluate_dataset(ds, root, work, adapted, args)
            cached.write_text(json.dumps(row), "utf-8")
        for key in RERANK_KEYS:
            if row.get(key):
                choose_auto(row[key])
        row["generation"] = {k: gen.get(k) for k in ("documents_used", "generated", "kept", "kept_fraction",
                                                  "docs_per_second", "docs_per_second_earlier",
                                                  "dropped", "sample_kept")}  # fmt: skip
        row["adapt"] = {
            k: adapted.get(k)
            for k in ("queries", "loss", "embedder", "reranker", "interpolate_auto", "seconds")
        }
        rows.append(row)
        print(
            json.dumps({k: row[k] for k in ("dataset", "bm25", "hybrid", "adapted_hybrid")}),
            file=sys.stderr,
            flush=True,
        )
        payload = {
            "meta": {
                "machine": C.machine_line(),
                "command": "python benchmarks/bench_adapt.py " + " ".join(sys.argv[1:]),
                "sample": args.sample, "steps": args.steps, "reranker_steps": args.reranker_steps,
                "other_ce": OTHER_CE, "published_bm25": PUBLISHED,
                "teacher": args.teacher, "tag": args.tag,
                "train_reranker": not args.no_train_reranker, "loss": args.loss,
                "dev_set": "least-overlap",
            },
            "rows": rows,
        }  # fmt: skip
        C.write_results(args.out, "adapt" + suffix(args), payload, markdown=markdown, plot=plot)


if __name__ == "__main__":
    main()
