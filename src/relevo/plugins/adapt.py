"""Bundled plugin: label-free adaptation commands.

``relevo generate-queries CORPUS --out queries.jsonl`` writes synthetic queries with a
registered query generator and keeps those that pass the round-trip check
(:mod:`relevo.engine.synthetic`). ``relevo adapt CORPUS --out DIR`` runs the whole
label-free loop — synthetic queries, mined negatives, a reranker teacher's margins,
MarginMSE fine-tuning of the bi-encoder, optionally the cross-encoder, and the
``--interpolate auto`` estimate on held-out synthetic queries
(:mod:`relevo.training.adapt`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..engine.commands import CommandHelpers
from ..engine.hookspecs import hookimpl


def _corpus(helpers: CommandHelpers, spec: str) -> Path:
    """A corpus file or BEIR folder by path, or a dataset by name."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    return helpers.find_dataset(spec)


@contextlib.contextmanager
def _doc_progress(
    helpers: CommandHelpers, description: str
) -> Iterator[Callable[[int, int], None]]:
    """``progress(done, total)`` drawing a bar that starts at the first call."""
    with contextlib.ExitStack() as stack:
        state: dict[str, Any] = {}

        def progress(done: int, total: int) -> None:
            if "bar" not in state:
                state["bar"] = stack.enter_context(
                    helpers.progress(total, description, completed=done, log_every=64)
                )
                state["done"] = done
                return
            state["bar"](done - state["done"])
            state["done"] = done

        yield progress


def _generation_options(f: Any, *, filter_embedder: bool = True) -> Any:
    options = [
        click.option(
            "--model",
            default="smollm2",
            show_default=True,
            help="Query generator: smollm2, llm:ID (Hugging Face id, folder or .gguf), or a model path.",
        ),
        click.option(
            "--examples",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help='Up to 8 few-shot examples of the target task: JSONL {"query", "document"} lines '
            "(default: a generic prompt).",
        ),
        click.option(
            "--per-doc",
            default=1,
            show_default=True,
            type=click.IntRange(min=1),
            help="Queries sampled per document.",
        ),
        click.option(
            "--sample",
            type=click.IntRange(min=1),
            help="Generate for a seeded sample of N documents (default: all).",
        ),
        click.option("--seed", default=42, show_default=True, type=int),
        click.option(
            "--batch-size",
            default=16,
            show_default=True,
            type=click.IntRange(min=1),
            help="Documents per generation batch.",
        ),
        click.option(
            "--filter-pipeline",
            default="bm25",
            show_default=True,
            help="First stage of the round-trip check (any `relevo eval --pipeline`; `none` keeps every query).",
        ),
        click.option(
            "--filter-k",
            default=20,
            show_default=True,
            type=click.IntRange(min=1),
            help="Keep a query whose source document is in this many top hits.",
        ),
        click.option(
            "--embedder",
            default="minilm",
            show_default=True,
            help="Embedder of dense filter pipelines.",
        )
        if filter_embedder
        else None,
        click.option(
            "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."
        ),
    ]
    for option in reversed(options):
        if option is not None:
            f = option(f)
    return f


def _adapt_generation_options(f: Any) -> Any:
    """The generation options without ``--embedder`` (adapt's names the bi-encoder)."""
    return _generation_options(f, filter_embedder=False)


def _gen_config(corpus: Path, out: Path, opts: dict[str, Any]) -> Any:
    from ..engine.synthetic import QueryGenConfig

    pipeline = opts.pop("filter_pipeline")
    return QueryGenConfig(
        corpus=corpus,
        out=out,
        filter_pipeline=None if pipeline.lower() == "none" else pipeline,
        **opts,
    )


def _generate_command(helpers: CommandHelpers) -> click.Command:
    @click.command("generate-queries")
    @click.argument("corpus")
    @click.option(
        "--out",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The queries file to write (.jsonl; a report is written next to it).",
    )
    @_generation_options
    @click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def generate_queries_cmd(
        corpus: str, out: Path, overwrite: bool, as_json: bool, **opts: Any
    ) -> None:
        """Write synthetic queries for an unlabelled CORPUS (a file, a BEIR folder or a dataset name).

        A causal LM writes queries few-shot (up to 8 --examples of the target task, else
        a generic prompt), in batches, sampled with --seed. A query is kept only if the
        round-trip check finds its source document in the --filter-k top hits of
        --filter-pipeline. Raw generations go to OUT's `.raw.jsonl` sibling as they are
        made, so an interrupted run resumes where it stopped; OUT and its `.report.json`
        (kept / dropped counts, docs/s, samples) are written at the end.
        """
        from ..engine.synthetic import generate_queries

        cfg = _gen_config(_corpus(helpers, corpus), out, opts)
        cfg.overwrite = overwrite
        with _doc_progress(helpers, "writing queries") as progress:
            report = generate_queries(cfg, engine=helpers.engine(), progress=progress)
        if as_json:
            click.echo(json.dumps(report, indent=2, ensure_ascii=False))
            return
        rate = report["docs_per_second"]
        click.echo(
            f"kept {report['kept']} of {report['generated']} queries ({report['kept_fraction']:.0%}); "
            f"dropped {report['dropped']}; {report['documents_used']} documents"
            + (f", {rate:.2f} docs/s" if rate else "")
            + f"\nwrote {report['out']} (report: {Path(report['out']).with_suffix('').name}.report.json)"
        )
        for q in report["sample_kept"][:3]:
            click.echo(f"  {q['source_id']}: {q['text']}")

    return generate_queries_cmd


def _adapt_command(helpers: CommandHelpers) -> click.Command:
    @click.command("adapt")
    @click.argument("corpus")
    @click.option(
        "--out",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for the synthetic data, the adapted models and the report.",
    )
    @click.option(
        "--embedder",
        default="minilm",
        show_default=True,
        help="Bi-encoder to adapt: minilm, sentence-transformers:PATH, or a folder.",
    )
    @click.option(
        "--reranker",
        default=None,
        help="Teacher (pointwise reranker, e.g. cross-encoder:DIR) whose margins the bi-encoder "
        "learns (MarginMSE). Without it the bi-encoder trains on the synthetic pairs (MNRL).",
    )
    @click.option(
        "--queries",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Synthetic queries from `relevo generate-queries` (default: generate them into OUT).",
    )
    @_adapt_generation_options
    @click.option(
        "--miner",
        default="static",
        show_default=True,
        help="Registered negative miner for the synthetic queries.",
    )
    @click.option("--miner-option", "miner_options", multiple=True, help="Miner option KEY=VALUE.")
    @click.option(
        "--first-stage",
        default="bm25",
        show_default=True,
        help="Pipeline the negatives are mined from and the reranker is judged on.",
    )
    @click.option(
        "--loss",
        type=click.Choice(["auto", "margin-mse", "mnrl"]),
        default="auto",
        show_default=True,
        help="margin-mse: learn the teacher's margins; mnrl: the synthetic pairs; auto: "
        "margin-mse when the teacher alone ranks the held-out queries at least as well "
        "as the first stage, else mnrl.",
    )
    @click.option(
        "--max-steps",
        default=100,
        show_default=True,
        type=click.IntRange(min=1),
        help="Bi-encoder optimizer steps.",
    )
    @click.option(
        "--batch-size-train",
        "train_batch_size",
        default=32,
        show_default=True,
        type=click.IntRange(min=2),
    )
    @click.option(
        "--lr", default=2e-5, show_default=True, type=click.FloatRange(min=0, min_open=True)
    )
    @click.option(
        "--train-reranker",
        is_flag=True,
        help="Also fine-tune the cross-encoder (--reranker cross-encoder:DIR) on the synthetic pairs.",
    )
    @click.option(
        "--reranker-steps",
        default=60,
        show_default=True,
        type=click.IntRange(min=1),
        help="Cross-encoder optimizer steps (with --train-reranker).",
    )
    @click.option(
        "--dev-queries",
        "dev_size",
        default=100,
        show_default=True,
        type=click.IntRange(min=0),
        help="Synthetic queries held out of training (whole documents); the half that copies "
        "least from its source judges the adapted models' --interpolate auto weight.",
    )
    @click.option(
        "--depth",
        default=30,
        show_default=True,
        type=click.IntRange(min=1),
        help="Rerank depth of the estimate.",
    )
    @click.option("--overwrite", is_flag=True, help="Replace finished models in OUT.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def adapt_cmd(corpus: str, out: Path, **opts: Any) -> None:
        """Adapt a bi-encoder (and optionally a cross-encoder) to an unlabelled CORPUS.

        Synthetic queries (generated, or --queries) are split into training and held-out
        dev queries; negatives are mined from --first-stage with --miner; the --reranker
        teacher labels (query, positive, negative) margins and the bi-encoder learns
        them with MarginMSE. The held-out queries then estimate, without labels, how far
        to trust each reranker on this corpus (`--interpolate auto`). Outputs:
        OUT/embedder (loads as --embedder sentence-transformers:OUT/embedder),
        OUT/reranker with --train-reranker (--rerank cross-encoder:OUT/reranker) and
        OUT/relevo-adapt.json.
        """
        from ..training.adapt import AdaptConfig, adapt

        as_json = opts.pop("as_json")
        gen_keys = (
            "model", "examples", "per_doc", "sample", "seed", "batch_size", "filter_pipeline",
            "filter_k", "device",
        )  # fmt: skip
        gen = {k: opts.pop(k) for k in gen_keys}
        cfg = AdaptConfig(
            corpus=_corpus(helpers, corpus),
            out=out,
            miner_options=helpers.parse_options(opts.pop("miner_options")),
            seed=gen["seed"],
            device=gen["device"],
            generation=_gen_config(Path(corpus), out / "queries.jsonl", gen),
            **opts,
        )
        with _doc_progress(helpers, "writing queries") as progress:
            report = adapt(
                cfg,
                engine=helpers.engine(),
                progress=progress,
                training_progress=helpers.training_progress,
            )
        if as_json:
            click.echo(json.dumps(report, indent=2, ensure_ascii=False))
            return
        click.echo(f"adapted models in {out} (bi-encoder loss {report['loss']['used']}):")
        for name, path in report["outputs"].items():
            click.echo(f"  {name}: {path}")
        for name, est in report.get("interpolate_auto", {}).items():
            chosen = est["curve"][f"{est['weight']:.1f}"]
            click.echo(
                f"  --interpolate auto for {name}: {est['weight']:.1f} "
                f"(dev MRR@10 {est['first_stage']:.3f} first stage -> {chosen:.3f})"
            )

    return adapt_cmd


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    cli.add_command(_generate_command(helpers))
    cli.add_command(_adapt_command(helpers))


__all__: list[str] = []
