"""Mixture-of-experts embedder vs single-domain, mixed and merged models (issue 10).

    .venv/bin/python benchmarks/bench_moe.py [--steps 100] [--models-dir DIR] [--reuse]
        [--only a b c d e f g]

Variants, each evaluated on the SciFact and NFCorpus **full test splits** (nDCG@10,
Recall@100) with ``relevo eval DATASET --pipeline dense --embedder ...``:

- (a) ``off-the-shelf``: all-MiniLM-L6-v2.
- (b) ``mixed``: one model, ``relevo train embedder scifact nfcorpus --cocitation``.
- (c) ``single``: one model per domain, each trained on its own dataset for that domain's
  share of the steps (the MoE spends its steps on the domains in proportion to their
  batches, so each domain sees as many batches in (c) as in (d)), evaluated on its own.
- (d) ``moe-all``: ``relevo train moe`` with both domains, experts in all 6 layers,
  evaluated with ``--domain`` (queries and documents routed by their known domain).
- (e) ``moe-all-router``: the same model with no ``--domain``: the learned router picks
  each query's and each document's expert.
- (f) ``moe-last``: experts in the last layer only, ``--domain`` routing.
- (g) ``merged``: the two (c) models averaged with ``relevo merge``.

Every trained model sees the same data: the datasets' train queries with one mined BM25
negative each (``static`` miner) plus co-cited document pairs (SciFact: abstracts cited by
one claim; NFCorpus: articles linked from one NutritionFacts page), batch 32, 128 tokens,
lr 5e-5, the judged in-batch mask on.

Also measured: co-citation pair classification F1 per domain (held-out co-cited pairs of
the test split vs as many random pairs; cosine threshold chosen on train-split pairs),
the router's accuracy on each dataset's test queries, encoding throughput of the MoE vs
the dense model on the same 1,000 SciFact abstracts (domain given, best of 3), and size
on disk. Results: ``benchmarks/results/moe.{json,md,png}``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import _common as common
import numpy as np

DOMAINS = ("scifact", "nfcorpus")
COMMON_TRAIN = ["--batch-size", "32", "--max-length", "128", "--lr", "5e-5", "--miner", "static"]
LETTERS = {
    "a": "off-the-shelf",
    "b": "mixed",
    "c": "single",
    "d": "moe-all",
    "e": "moe-all-router",
    "f": "moe-last",
    "g": "merged",
}


relevo_bin = common.relevo_bin
run = common.run_logged


def evaluate(ds: str, embedder: str, domain: str | None, logs: Path, tag: str) -> dict[str, Any]:
    dataset = common.datasets_dir() / ds
    cmd = [relevo_bin(), "eval", str(dataset), "--pipeline", "dense", "--embedder", embedder]
    if domain:
        cmd += ["--domain", domain]
    wall, stdout = run([*cmd, "--json"], logs / f"eval-{ds}-{tag}.log")
    report = json.loads(stdout)
    return {
        "ndcg@10": report["ndcg@10"],
        "recall@100": report["recall@100"],
        "queries": report["queries"],
        "eval_seconds": round(wall, 1),
        "command": shlex.join(cmd[1:]).replace(str(dataset), f"../shared/datasets/{ds}"),
    }


def domain_steps(total: int) -> dict[str, int]:
    """Each domain's share of ``total`` MoE steps: its full batches over all full batches."""
    from relevo.training.cocitation import cocited_groups, partners

    batches = {}
    for ds in DOMAINS:
        root = common.datasets_dir() / ds
        queries = len(common.read_qrels(root, "train"))
        docs = len(partners(cocited_groups(root, "train")))
        batches[ds] = (queries + docs) // 32
    n = sum(batches.values())
    return {ds: max(1, round(total * b / n)) for ds, b in batches.items()}


# -- measurements in this process ------------------------------------------------------------
def _corpus_vectors(engine: Any, embedder: Any, ds: str) -> tuple[dict[str, int], np.ndarray]:
    from relevo.engine.corpus import read_corpus

    docs, checksum = read_corpus(common.datasets_dir() / ds)
    vecs = engine.embed_corpus(embedder, docs, checksum)  # the eval's cached vectors
    return {d.id: i for i, d in enumerate(docs)}, vecs


def cocitation_f1(engine: Any, spec: str, options: dict[str, Any], ds: str) -> dict[str, Any]:
    """F1 of co-cited vs random pairs, threshold from train pairs, scored on test pairs."""
    from relevo.training.cocitation import cocited_groups, cocited_pairs, random_pairs

    emb = engine.embedder(spec, **options)
    rows, vecs = _corpus_vectors(engine, emb, ds)
    root = common.datasets_dir() / ds
    rng = np.random.default_rng(0)

    by_split = {sp: cocited_pairs(cocited_groups(root, sp, known=rows)) for sp in ("train", "test")}
    everything = by_split["train"] | by_split["test"]

    def sample(split: str, seed: int) -> tuple[list[tuple[str, str]], list[int]]:
        pos = sorted(by_split[split])
        if len(pos) > 2000:
            pos = [pos[int(i)] for i in rng.choice(len(pos), 2000, replace=False)]
        neg = random_pairs(sorted(rows), len(pos), everything, seed=seed)
        return pos + neg, [1] * len(pos) + [0] * len(neg)

    def cosines(pairs: list[tuple[str, str]]) -> np.ndarray:
        a = vecs[[rows[x] for x, _ in pairs]]
        b = vecs[[rows[y] for _, y in pairs]]
        return (a * b).sum(1)

    def f1(scores: np.ndarray, labels: np.ndarray, t: float) -> float:
        pred = scores >= t
        tp = float((pred & (labels == 1)).sum())
        fp = float((pred & (labels == 0)).sum())
        fn = float((~pred & (labels == 1)).sum())
        return 2 * tp / max(2 * tp + fp + fn, 1.0)

    train_pairs, train_labels = sample("train", 1)
    test_pairs, test_labels = sample("test", 2)
    ts, tl = cosines(train_pairs), np.asarray(train_labels)
    best = max(np.unique(np.round(ts, 3)), key=lambda t: f1(ts, tl, float(t)))
    es, el = cosines(test_pairs), np.asarray(test_labels)
    # ROC AUC beside F1: on balanced pairs "all co-cited" already scores F1 0.667.
    order = np.argsort(es)
    ranks = np.empty(len(es))
    ranks[order] = np.arange(1, len(es) + 1)
    n_pos, n_neg = int(el.sum()), int((el == 0).sum())
    auc = (ranks[el == 1].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1)
    return {
        "f1": round(f1(es, el, float(best)), 4),
        "auc": round(float(auc), 4),
        "threshold": round(float(best), 3),
        "test_pairs": len(test_pairs),
        "train_pairs": len(train_pairs),
    }


def router_accuracy(path: Path) -> dict[str, Any]:
    from relevo.engine.evaluate import load_dataset
    from relevo.models import moe as moe_models

    moe = moe_models.load(path)
    out = {}
    for i, ds in enumerate(DOMAINS):
        qs = list(load_dataset(common.datasets_dir() / ds, split="test").queries.values())
        picked = moe.route(qs)
        out[ds] = {"queries": len(qs), "accuracy": round(float((picked == i).mean()), 4)}
    return out


def throughput(engine: Any, moe_path: Path, repeats: int = 3) -> dict[str, Any]:
    from relevo.engine.corpus import read_corpus

    docs, _ = read_corpus(common.datasets_dir() / "scifact", limit=1000)
    texts = [d.content for d in docs]
    dense = engine.embedder("minilm", max_length=128)
    moe = engine.embedder(f"moe:{moe_path}", domain="scifact", max_length=128)
    best: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, best of N: the machine is shared
        for name, emb in (("dense", dense), ("moe", moe)):
            t0 = time.perf_counter()
            emb.embed(texts, kind="document")
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    return {
        "texts": len(texts),
        "dense_texts_per_s": round(len(texts) / best["dense"], 1),
        "moe_texts_per_s": round(len(texts) / best["moe"], 1),
        "moe_over_dense_time": round(best["moe"] / best["dense"], 3),
    }


def folder_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


# -- report --------------------------------------------------------------------------------------
def write_markdown(results: dict[str, Any], path: Path) -> None:
    meta = results["meta"]
    headers = ["variant", "SciFact nDCG@10", "NFCorpus nDCG@10", "mean", "SciFact R@100"]
    headers += ["NFCorpus R@100", "F1 / AUC SciFact", "F1 / AUC NFCorpus", "train s"]
    table = []
    for r in results["rows"]:
        ev, f1 = r["eval"], r.get("cocitation_f1", {})
        nd = [ev[d]["ndcg@10"] for d in DOMAINS if d in ev]
        table.append(
            [
                f"({r['letter']}) {r['variant']}",
                *(f"{ev[d]['ndcg@10']:.4f}" if d in ev else "—" for d in DOMAINS),
                f"{np.mean(nd):.4f}" if len(nd) == len(DOMAINS) else "—",
                *(f"{ev[d]['recall@100']:.4f}" if d in ev else "—" for d in DOMAINS),
                *(f"{f1[d]['f1']:.3f} / {f1[d]['auc']:.3f}" if d in f1 else "—" for d in DOMAINS),
                f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "—",
            ]
        )
    extra = results.get("extra", {})
    lines = [
        "# Mixture-of-experts embedder vs single-domain, mixed and merged MiniLM (full test splits)",
        "",
        *common.md_table(headers, table, right=list(range(1, 9))),
        "",
        f"Training: {meta['steps']} steps of 32 for the mixed and MoE models; the single-domain "
        f"models get each domain's share ({meta['domain_steps']}), so every domain sees as many "
        "batches in (c) as in (d). Data for every trained model: train queries with one static "
        "BM25 negative plus co-cited document pairs; 128 tokens, lr 5e-5. (d)/(f) route queries "
        "and documents by their known domain (`--domain`); (e) lets the learned router pick. "
        "F1 / AUC: co-cited vs as many random document pairs of the test split (F1 at the "
        "cosine threshold best on train pairs; on balanced pairs calling every pair co-cited "
        "scores F1 0.667, so AUC is the clearer figure).",
        "",
    ]
    if "router" in extra:
        acc = ", ".join(
            f"{d} {v['accuracy']:.3f} ({v['queries']} queries)" for d, v in extra["router"].items()
        )
        lines.append(f"Router accuracy on the test queries (MoE all layers): {acc}.")
    if "throughput" in extra:
        t = extra["throughput"]
        lines.append(
            f"Encoding {t['texts']} SciFact abstracts (128 tokens, best of 3): dense "
            f"{t['dense_texts_per_s']} texts/s, MoE {t['moe_texts_per_s']} texts/s "
            f"(MoE time / dense time = {t['moe_over_dense_time']})."
        )
    if "sizes_mb" in extra:
        lines.append(
            "Size on disk (MB): "
            + ", ".join(f"{k} {v}" for k, v in extra["sizes_mb"].items())
            + "."
        )
    lines += [
        "",
        f"Machine: {meta['machine']}. Produced by `{meta['command']}`; each row's train and eval "
        "commands are in moe.json.",
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(9, 4))
    xs = np.arange(len(rows))
    for j, ds in enumerate(DOMAINS):
        vals = [r["eval"].get(ds, {}).get("ndcg@10", 0) for r in rows]
        ax.bar(xs + (j - 0.5) * 0.4, vals, 0.4, label=ds)
    ax.set_xticks(xs, [f"({r['letter']}) {r['variant']}" for r in rows], rotation=25, ha="right")
    ax.set_ylabel("nDCG@10 (test)")
    ax.set_title("MoE vs single-domain, mixed and merged MiniLM")
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--models-dir", type=Path, default=Path.home() / ".cache/relevo/bench-moe")
    ap.add_argument("--reuse", action="store_true", help="keep models already trained")
    ap.add_argument("--only", nargs="+", default=list(LETTERS), choices=list(LETTERS))
    ap.add_argument("--render-only", action="store_true")
    common.add_out(ap)
    args = ap.parse_args()
    common.quiet_transformers()
    json_path = args.out / "moe.json"
    if args.render_only:
        saved = json.loads(json_path.read_text("utf-8"))
        write_markdown(saved, args.out / "moe.md")
        write_plot(saved, args.out / "moe.png")
        return

    from relevo import Engine

    engine = Engine()
    models, logs = args.models_dir, args.models_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shares = domain_steps(args.steps)
    previous = {}
    if json_path.exists() and args.reuse:
        previous = {r["letter"]: r for r in json.loads(json_path.read_text("utf-8"))["rows"]}
    results: dict[str, Any] = {
        "meta": {
            "machine": common.machine_line(),
            "steps": args.steps,
            "domain_steps": shares,
            "command": "python benchmarks/bench_moe.py " + shlex.join(sys.argv[1:]),
        },
        "rows": [r for k, r in previous.items() if k not in args.only],
        "extra": json.loads(json_path.read_text("utf-8")).get("extra", {}) if previous else {},
    }
    data = {ds: str(common.datasets_dir() / ds) for ds in DOMAINS}

    def train(name: str, cmd: list[str], out: Path) -> float:
        report = out / "relevo-embedder.json"
        if args.reuse and report.exists():  # trained by an earlier run: its recorded time
            return float(json.loads(report.read_text("utf-8")).get("training_seconds") or 0.0)
        return run(
            [relevo_bin(), *cmd, "--out", str(out), "--overwrite"], logs / f"train-{name}.log"
        )[0]

    def save(row: dict[str, Any]) -> None:
        results["rows"] = [r for r in results["rows"] if r["letter"] != row["letter"]] + [row]
        results["rows"].sort(key=lambda r: r["letter"])
        common.write_results(args.out, "moe", results, markdown=write_markdown, plot=write_plot)
        print(json.dumps(row), file=sys.stderr, flush=True)

    def measure(letter: str, specs: dict[str, tuple[str, str | None]], **row: Any) -> None:
        row.update({"letter": letter, "variant": LETTERS[letter], "eval": {}, "cocitation_f1": {}})
        for ds, (spec, domain) in specs.items():
            row["eval"][ds] = evaluate(ds, spec, domain, logs, f"{letter}-{ds}")
            options = {"domain": domain} if domain else {}
            row["cocitation_f1"][ds] = cocitation_f1(engine, spec, options, ds)
        save(row)

    mixed, moe_all, moe_last = models / "mixed", models / "moe-all", models / "moe-last"
    singles = {ds: models / f"single-{ds}" for ds in DOMAINS}
    moe_cmd = ["train", "moe", *(x for ds in DOMAINS for x in ("--domain", f"{ds}={data[ds]}"))]
    moe_cmd += ["--max-steps", str(args.steps), *COMMON_TRAIN]
    if "a" in args.only:
        measure("a", {ds: ("minilm", None) for ds in DOMAINS})
    if "b" in args.only:
        cmd = ["train", "embedder", *data.values(), "--cocitation", "--max-steps", str(args.steps)]
        secs = train("b", cmd + COMMON_TRAIN, mixed)
        measure(
            "b",
            {ds: (f"sentence-transformers:{mixed}", None) for ds in DOMAINS},
            train_seconds=secs,
            train_command=shlex.join(cmd),
        )
    if "c" in args.only:
        secs = 0.0
        for ds in DOMAINS:
            cmd = ["train", "embedder", data[ds], "--cocitation", "--max-steps", str(shares[ds])]
            secs += train(f"c-{ds}", cmd + COMMON_TRAIN, singles[ds])
        measure(
            "c",
            {ds: (f"sentence-transformers:{singles[ds]}", None) for ds in DOMAINS},
            train_seconds=secs,
        )
    if "d" in args.only or "e" in args.only:
        secs = train("d", moe_cmd + ["--layers", "all"], moe_all)
        if "d" in args.only:
            measure(
                "d",
                {ds: (f"moe:{moe_all}", ds) for ds in DOMAINS},
                train_seconds=secs,
                train_command=shlex.join(moe_cmd + ["--layers", "all"]),
            )
        if "e" in args.only:
            results["extra"]["router"] = router_accuracy(moe_all)
            measure("e", {ds: (f"moe:{moe_all}", None) for ds in DOMAINS}, train_seconds=secs)
        results["extra"]["throughput"] = throughput(engine, moe_all)
    if "f" in args.only:
        secs = train("f", moe_cmd + ["--layers", "last"], moe_last)
        measure(
            "f",
            {ds: (f"moe:{moe_last}", ds) for ds in DOMAINS},
            train_seconds=secs,
            train_command=shlex.join(moe_cmd + ["--layers", "last"]),
        )
    if "g" in args.only:
        merged = models / "merged"
        cmd = ["merge", *(str(p) for p in singles.values()), "--out", str(merged), "--overwrite"]
        secs = run([relevo_bin(), *cmd], logs / "merge.log")[0]
        measure(
            "g",
            {ds: (f"sentence-transformers:{merged}", None) for ds in DOMAINS},
            train_seconds=secs,
        )
    sizes = {
        name: folder_mb(p)
        for name, p in (
            ("dense MiniLM (mixed)", mixed),
            ("MoE all layers", moe_all),
            ("MoE last layer", moe_last),
        )
        if p.exists()
    }
    results["extra"]["sizes_mb"] = sizes
    common.write_results(args.out, "moe", results, markdown=write_markdown, plot=write_plot)
    print((args.out / "moe.md").read_text("utf-8"))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
