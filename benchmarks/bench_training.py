"""Fine-tuned embedders (issue 9): each miner, distillation and crops, on SciFact and NFCorpus.

    .venv/bin/python benchmarks/bench_training.py [--datasets scifact nfcorpus]
        [--variants static star adore adaptive-margin distill crops distill-bi-kl ...]
        [--max-steps 40]
        [--teacher cross-encoder:DIR] [--bi-teacher bi-encoder:bge-small] [--models-dir DIR]
        [--reuse]

For every dataset and variant this runs ``relevo train embedder DATASET ...`` (MiniLM
base, the dataset's own train split, or its corpus alone for ``crops``) in a subprocess,
timing it, then ``relevo eval DATASET --pipeline dense|hybrid --embedder
sentence-transformers:MODEL --json`` on the **full test split** (nDCG@10, Recall@100).
The off-the-shelf MiniLM rows use the same eval commands. Models go to
``--models-dir`` (default: the user cache, never the work tree); ``--reuse`` keeps a
model already trained there, so an interrupted run picks up where it stopped (its
training time is then the one recorded when it was trained, read from the previous
JSON, or the model's own ``relevo-embedder.json``: training plus data seconds, where
its recipe matches this run's). Results are rewritten after every row to ``benchmarks/results/training.{json,md,png}``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import _common as common

DISTILL_BI = ["--miner", "static", "--loss", "margin-mse", "--negatives-per-query", "2"]
DISTILL_KL = ["--miner", "static", "--loss", "kl-div", "--negatives-per-query", "2"]
VARIANTS: dict[str, list[str]] = {
    # negatives from BM25 (the trainer's default first stage) unless the variant says
    "static": ["--miner", "static"],
    "star": ["--miner", "star"],
    "adore": ["--miner", "adore", "--miner-option", "refresh_every=10"],
    "adaptive-margin": ["--miner", "adaptive-margin"],
    "distill": ["--miner", "adaptive-margin", "--loss", "margin-mse"],  # + --teacher
    # MarginMSE from a stronger bi-encoder's cosines (+ --bi-teacher; student at scale 1)
    "distill-bi": [*DISTILL_BI, "--scale", "1"],
    # the same with the student's margins scaled by 0.5 / 0.25 (hand-picked: bge-small's
    # cosine margins spread about half as wide as MiniLM's on NFCorpus train pairs)
    "distill-bi-half": [*DISTILL_BI, "--scale", "0.5"],
    "distill-bi-quarter": [*DISTILL_BI, "--scale", "0.25"],
    # the trainer's default for a bi-encoder teacher: calibrated from the margin spreads
    "distill-bi-auto": [*DISTILL_BI, "--scale", "auto"],
    # listwise: KL divergence to the teacher's softmax over every document of the batch
    # (student at inverse temperature 20, the teacher's calibrated by the trainer)
    "distill-bi-kl": DISTILL_KL,
    # the same with 30% of the target on the qrels (uniform over the judged batch documents)
    "distill-bi-kl-labels": [*DISTILL_KL, "--label-weight", "0.3"],
    "crops": ["--unsupervised", "crops"],
}

#: nDCG@10 of all-MiniLM-L6-v2 off the shelf (MTEB) and the issue's targets.
PUBLISHED = {"scifact": 0.645, "nfcorpus": 0.316}
TARGETS = {"scifact": 0.70, "nfcorpus": 0.34}
HYBRID_TARGET = {"scifact": 0.74}


relevo_bin = common.relevo_bin
run = common.run_logged


def evaluate(dataset: Path, pipeline: str, embedder: str, log_dir: Path) -> dict[str, Any]:
    log = log_dir / f"eval-{dataset.name}-{pipeline}-{Path(embedder).name}.log"
    cmd = [relevo_bin(), "eval", str(dataset), "--pipeline", pipeline, "--embedder", embedder]
    wall, stdout = run([*cmd, "--json"], log)
    report = json.loads(stdout)
    return {
        "ndcg@10": report["ndcg@10"],
        "recall@100": report["recall@100"],
        "queries": report["queries"],
        "eval_seconds": wall,
        "command": shlex.join(cmd[1:]).replace(str(dataset), f"../shared/datasets/{dataset.name}"),
    }


def train_command(dataset: Path, variant: str, out: Path, args: Any) -> list[str]:
    cmd = [relevo_bin(), "train", "embedder", str(dataset), "--out", str(out)]
    cmd += ["--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size)]
    cmd += ["--lr", str(args.lr), "--max-length", str(args.max_length), "--overwrite"]
    cmd += VARIANTS[variant]
    if variant == "distill":
        cmd += ["--teacher", args.teacher]
    if variant.startswith("distill-bi"):
        cmd += ["--teacher", args.bi_teacher]
    return cmd


def trained_seconds(out: Path, dataset: Path, cmd: list[str]) -> float | None:
    """Training + data seconds of a finished model in ``out`` trained by ``cmd``, else None.

    The model's report must name this dataset only and the recipe ``cmd`` asks for
    (steps, batch, lr, length, loss, miner, negatives, teacher), so a reused row is the
    row this run would have trained.
    """
    path = out / "relevo-embedder.json"
    if not (out / "config.json").exists() or not path.exists():
        return None
    report = json.loads(path.read_text("utf-8"))
    recipe = report["recipe"]
    opts = dict(zip(cmd, cmd[1:], strict=False))
    want = {
        "steps": int(opts["--max-steps"]),
        "batch_size": int(opts["--batch-size"]),
        "lr": float(opts["--lr"]),
        "max_length": int(opts["--max-length"]),
        "loss": opts.get("--loss", "mnrl"),
        "negatives_per_query": int(opts.get("--negatives-per-query", 1)),
    }
    if "--miner" in opts:
        want["miner"] = opts["--miner"]
    if "--teacher" in opts:
        want["teacher"] = opts["--teacher"]
    if opts.get("--scale") == "auto":
        if "scale_calibration" not in recipe:
            return None
    elif "--scale" in opts:
        want["scale"] = float(opts["--scale"])
    if any(recipe.get(k) != v for k, v in want.items()):
        return None
    if [Path(d["path"]).resolve() for d in report["datasets"]] != [dataset.resolve()]:
        return None
    return float(report["training_seconds"]) + float(report.get("data_seconds") or 0.0)


def row_order(r: dict[str, Any]) -> tuple[Any, ...]:
    names = ["off-the-shelf", *VARIANTS]
    v = r["variant"]
    return (r["dataset"], r.get("steps") or 0, names.index(v) if v in names else len(names), v)


def teachers(results: dict[str, Any]) -> str:
    rows = [r for r in results["rows"] if r["variant"] == "distill"]
    return (
        "; ".join(f"{r['dataset']}: `{r.get('teacher', results['meta']['teacher'])}`" for r in rows)
        or "none"
    )


def write_markdown(results: dict[str, Any], path: Path) -> None:
    meta = results["meta"]
    headers = ["dataset", "model", "steps", "nDCG@10", "Recall@100", "hybrid nDCG@10", "train s"]
    table = []
    for r in results["rows"]:
        table.append(
            [
                r["dataset"],
                r["variant"] + (f" ({r['note']})" if r.get("note") else ""),
                r.get("steps") or "—",
                f"{r['dense']['ndcg@10']:.4f}",
                f"{r['dense']['recall@100']:.4f}",
                f"{r['hybrid']['ndcg@10']:.4f}" if r.get("hybrid") else "—",
                (f"{r['train_seconds']:.0f}" + ("*" if r.get("train_seconds_from") else ""))
                if r.get("train_seconds")
                else "—",
            ]
        )
    lines = [
        "# Fine-tuned MiniLM embedders (full test splits)",
        "",
        *common.md_table(headers, table, right=[2, 3, 4, 5, 6]),
        "",
        f"Base all-MiniLM-L6-v2 (published nDCG@10: SciFact {PUBLISHED['scifact']}, NFCorpus "
        f"{PUBLISHED['nfcorpus']}); each model trained on its dataset's train split for "
        f"the given steps of {meta['batch_size']} queries (crops: documents), "
        f"lr {meta['lr']}, {meta['max_length']} tokens, 1 mined negative per query and step "
        f"(BM25 first stage; ADORE re-retrieves from the off-the-shelf dense index every 10 steps). "
        "`distill` is MarginMSE from a cross-encoder teacher (per row in training.json: "
        f"{teachers(results)}); `distill-bi` is MarginMSE from a bi-encoder's cosines "
        "(static BM25 negatives, 2 per query and step; the student's cosine margins, scale 1; "
        "`distill-bi-half` / `-quarter`: scale 0.5 / 0.25; `distill-bi-auto`: `--scale auto`, "
        "calibrated by the trainer from the teacher's and MiniLM's margin spreads on the "
        "first batches, the default for a bi-encoder teacher; `distill-bi-kl`: `--loss kl-div`, "
        "the KL divergence between the teacher's and the student's softmax over every document "
        "of the batch, the teacher's temperature calibrated the same way; `distill-bi-kl-labels`: "
        "the same with `--label-weight 0.3`, 30% of the target uniform over the batch documents "
        "the train qrels judge relevant to the query): "
        "`bi-encoder:bge-small`, BAAI/bge-small-en-v1.5 int8 ONNX, off the shelf "
        "SciFact 0.7112 / NFCorpus 0.3429 (`embedders.md`). `hybrid` is the model fused with BM25 "
        f"(relevo's default hybrid fusion). Targets: SciFact dense >= {TARGETS['scifact']}, NFCorpus "
        f">= {TARGETS['nfcorpus']}, SciFact hybrid >= {HYBRID_TARGET['scifact']}. Machine: "
        f"{meta['machine']}; training time is wall time of the `relevo train embedder` "
        "subprocess (mining included); * marks a model trained earlier by the same command "
        "and reused (`--reuse`): its training + data seconds from its own report.",
        "",
        "Produced by `python benchmarks/bench_training.py` runs (the last: "
        f"`{meta['command']}`); each row's train and eval commands are in training.json.",
    ]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    plt = common.pyplot()
    rows = results["rows"]
    datasets = common.unique(r["dataset"] for r in rows)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == ds]
        xs = range(len(mine))
        ax.bar([x - 0.2 for x in xs], [r["dense"]["ndcg@10"] for r in mine], 0.4, label="dense")
        ax.bar(
            [x + 0.2 for x in xs],
            [r["hybrid"]["ndcg@10"] if r.get("hybrid") else 0 for r in mine],
            0.4,
            label="hybrid (+BM25)",
        )
        if ds in TARGETS:
            ax.axhline(TARGETS[ds], color="k", ls="--", lw=0.8, label="dense target")
        labels = [
            f"{r['variant']} ({r['steps']})" if r.get("steps") else r["variant"] for r in mine
        ]
        ax.set_xticks(list(xs), labels, rotation=30, ha="right")
        ax.set_title(ds)
        ax.set_ylabel("nDCG@10 (test)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    common.save_figure(fig, path)


def main() -> None:
    ap = common.parser(__doc__)
    common.add_datasets(ap, ["scifact", "nfcorpus"])
    ap.add_argument("--variants", nargs="+", default=["off-the-shelf", *VARIANTS])
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument(
        "--teacher",
        default="cross-encoder:" + str(Path.home() / ".cache/relevo/models/ce-adaptive"),
    )
    ap.add_argument("--bi-teacher", default="bi-encoder:bge-small")
    ap.add_argument("--models-dir", type=Path, default=Path.home() / ".cache/relevo/bench-training")
    ap.add_argument("--reuse", action="store_true", help="keep models already trained")
    ap.add_argument(
        "--render-only", action="store_true", help="rewrite training.md/png from training.json"
    )
    common.add_out(ap)
    args = ap.parse_args()
    common.quiet_transformers()

    json_path = args.out / "training.json"
    if args.render_only:
        saved = json.loads(json_path.read_text("utf-8"))
        write_markdown(saved, args.out / "training.md")
        write_plot(saved, args.out / "training.png")
        return
    # Rows of earlier runs (other datasets, variants or step counts) stay in the report.
    previous: dict[tuple[str, str, int | None], dict[str, Any]] = {}
    if json_path.exists():
        for r in json.loads(json_path.read_text("utf-8"))["rows"]:
            previous[(r["dataset"], r["variant"], r.get("steps"))] = r
    info = common.machine_info()
    meta = {
        "machine": common.machine_line(),
        "python": info["python"],
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_length": args.max_length,
        "teacher": args.teacher.replace(str(Path.home()), "~"),
        "command": "python benchmarks/bench_training.py " + shlex.join(sys.argv[1:]),
    }
    planned = {
        (ds, v, None if v == "off-the-shelf" else args.max_steps)
        for ds in args.datasets
        for v in args.variants
    }
    kept = [r for key, r in previous.items() if key not in planned]
    results: dict[str, Any] = {"meta": meta, "rows": kept}
    logs = args.models_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for ds in args.datasets:
        dataset = common.datasets_dir() / ds
        for variant in args.variants:
            steps = None if variant == "off-the-shelf" else args.max_steps
            row: dict[str, Any] = {"dataset": ds, "variant": variant, "steps": steps}
            if variant == "off-the-shelf":
                embedder = "minilm"
            else:
                out = args.models_dir / f"{ds}-{variant}-{steps}"
                cmd = train_command(dataset, variant, out, args)
                row["train_command"] = shlex.join(cmd[1:]).replace(str(args.models_dir), "MODELS")
                if variant == "distill":
                    row["teacher"] = args.teacher.replace(str(Path.home()), "~")
                if variant.startswith("distill-bi"):
                    row["teacher"] = args.bi_teacher
                old = previous.get((ds, variant, steps))
                reused = trained_seconds(out, dataset, cmd) if args.reuse else None
                if (
                    args.reuse
                    and (out / "config.json").exists()
                    and old
                    and old.get("train_seconds")
                ):
                    row["train_seconds"] = old["train_seconds"]
                elif reused is not None:
                    row["train_seconds"] = reused
                    row["train_seconds_from"] = "the model's relevo-embedder.json (training + data)"
                else:
                    row["train_seconds"] = run(cmd, logs / f"train-{ds}-{variant}.log")[0]
                embedder = f"sentence-transformers:{out}"
            row["dense"] = evaluate(dataset, "dense", embedder, logs)
            row["hybrid"] = evaluate(dataset, "hybrid", embedder, logs)
            row["load_average"] = common.load_average()
            results["rows"].append(row)
            results["rows"].sort(key=row_order)
            print(json.dumps(row), file=sys.stderr, flush=True)
            common.write_results(
                args.out, "training", results, markdown=write_markdown, plot=write_plot
            )
    print((args.out / "training.md").read_text("utf-8"))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
