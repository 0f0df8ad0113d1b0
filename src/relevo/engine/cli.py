"""The ``relevo`` command line. ``relevo COMMAND --help`` is the reference for each command."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .commands import CommandHelpers, RelevoGroup, datasets_dir, invocation_engine, is_tty
from .errors import CorruptIndexError, RelevoError

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

log = logging.getLogger("relevo.cli")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON (or a huge number, deep nesting): text
        return text


def _parse_options(pairs: tuple[str, ...], what: str) -> dict[str, dict[str, Any]]:
    """``STAGE.KEY=VALUE`` pairs -> ``{stage: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        left, sep, value = pair.partition("=")
        stage, dot, opt = left.rpartition(".")
        if not sep or not dot or not stage or not opt:
            raise click.BadParameter(
                f"{pair!r}: expected STAGE.KEY=VALUE, e.g. faiss-ivf.nprobe=32", param_hint=what
            )
        out.setdefault(stage, {})[opt] = _parse_value(value)
    return out


def _engine(ctx: click.Context) -> Engine:
    return invocation_engine(ctx)


@click.group(cls=RelevoGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option(
    "--cpu",
    "force_cpu",
    is_flag=True,
    help="Run everything on the CPU even where a GPU is visible (sets RELEVO_DEVICE=cpu).",
)
@click.version_option(package_name="relevo")
@click.pass_context
def cli(ctx: click.Context, verbose: int, force_cpu: bool) -> None:
    """relevo: plugin-based retrieval and reranking."""
    if force_cpu:
        from .deps import DEVICE_ENV

        os.environ[DEVICE_ENV] = "cpu"
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # The CLI (never the library) quiets model-loading chatter unless asked for detail.
    if verbose == 0:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ctx.ensure_object(dict)


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the bundled plugins.")
@click.pass_context
def plugins_cmd(ctx: click.Context, show_all: bool) -> None:
    """Print loaded plugins, their components and load errors as JSON."""
    engine = _engine(ctx)
    click.echo(json.dumps(engine.plugins(all=show_all), indent=2))


@cli.group("index", cls=RelevoGroup)
def index_group() -> None:
    """Build and inspect index directories."""


@index_group.command("build")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="Index directory to write."
)
@click.option(
    "--index",
    "indexes",
    multiple=True,
    default=("bm25",),
    show_default=True,
    help="Index format(s): bm25, faiss-flat, faiss-ivf, faiss-hnsw, faiss-pq, torch-flat, or FORMAT@EMBEDDER. Repeat to build several stages, fused at search time.",
)
@click.option("--embedder", default="minilm", show_default=True, help="Embedder for dense formats.")
@click.option(
    "--domain",
    default=None,
    help="Domain-routing (moe:PATH) embedders: route texts without a metadata domain to this expert.",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    help="Index option STAGE.KEY=VALUE, e.g. faiss-ivf.nprobe=32.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Index only the first N documents.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing relevo index directory (never anything else).",
)
@click.option(
    "--host-mem",
    metavar="SIZE",
    help="Memory the build may use (8G, 512M, bytes); default: the available RAM.",
)
@click.option("--no-plan", is_flag=True, help="Skip the memory check (`relevo plan`) run first.")
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    help="Split the corpus into K contiguous shards, one collection each, searched as one "
    "with exact merging (BM25 with corpus-wide statistics). Without --ray they are built "
    "one after another in this process.",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Build the shards in parallel Ray tasks (needs --shards; pip install 'relevo[ray]').",
)
@click.option(
    "--ray-address",
    metavar="ADDRESS",
    help="Ray cluster to join (auto, ray://HOST:10001); default: start a local Ray instance. "
    "On several machines DIR must be on a file system all of them see.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def index_build(
    ctx: click.Context,
    corpus: Path,
    out: Path,
    indexes: tuple[str, ...],
    embedder: str,
    domain: str | None,
    options: tuple[str, ...],
    limit: int | None,
    overwrite: bool,
    host_mem: str | None,
    no_plan: bool,
    shards: int | None,
    use_ray: bool,
    ray_address: str | None,
    as_json: bool,
) -> None:
    """Build an index directory from a BEIR corpus.jsonl[.gz] (or a folder holding one).

    Before any work, the memory planner predicts the build's peak and serving bytes
    from the corpus's line count and text sizes and refuses a build that cannot fit,
    naming the alternatives (`--no-plan` skips the check). With --shards K it plans one
    shard (the largest), which is what each task holds.

    `--shards K [--ray [--ray-address ADDRESS]]` writes a sharded collection: K shard
    collections plus a top manifest; `relevo search`, `eval` and `serve` load it like any
    index directory and merge the shards' results exactly (read-only for now).
    """
    from .sharding import check_replaceable_sharded

    if use_ray and shards is None:
        raise click.UsageError("--ray builds shards in parallel: give --shards K as well.")
    if ray_address is not None and not use_ray:
        raise click.UsageError("--ray-address is for --ray builds; add --ray.")
    # Checked before the (possibly long) build; the save checks again.
    check_replaceable_sharded(out, overwrite=overwrite)
    engine = _engine(ctx)
    _route_domain(engine, domain, embedder)
    index_options = _parse_options(options, "--option")
    if not no_plan:
        from .planner import check_build, parse_size

        plan_limit = limit
        if shards:
            from .planner_formats import Workload

            n = Workload.from_corpus(corpus, limit=limit).docs
            plan_limit = -(-n // shards) if n else limit  # the largest shard
        budget = parse_size(host_mem) if host_mem else None
        at_once = 1
        if shards and use_ray and ray_address is None:
            # a local Ray instance builds up to one shard per CPU at the same time, all on
            # this machine's memory: each may use its share of it
            from .planner import available_memory

            at_once = min(shards, os.cpu_count() or 1)
            budget = (budget or available_memory()[0]) // at_once
        try:
            check_build(
                engine.registry,
                corpus,
                stages=list(indexes),
                embedder=embedder,
                index_options=index_options,
                embedder_defaults=engine.embedder_defaults,
                limit=plan_limit,
                host_mem=budget,
            )
        except RelevoError as exc:
            if at_once > 1:
                raise type(exc)(
                    f"{exc}\n(The local Ray build runs {at_once} shards at once, so each shard "
                    f"was planned against 1/{at_once} of the memory; more shards, or "
                    "--ray-address with a cluster, lower that.)"
                ) from exc
            raise
    t0 = time.perf_counter()
    if shards is not None:
        _build_sharded(
            engine, corpus, out, shards, list(indexes), embedder, index_options, limit,
            overwrite, use_ray, ray_address, as_json, t0,
        )  # fmt: skip
        return
    collection = engine.index(
        corpus, stages=list(indexes), embedder=embedder, index_options=index_options, limit=limit
    )
    engine.save(collection, out, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    if as_json:
        click.echo(
            json.dumps({**collection.manifest(), "path": str(out), "seconds": seconds}, indent=2)
        )
    else:
        click.echo(
            f"indexed {len(collection)} documents into {out} ({', '.join(collection.stages)}) in {seconds:.1f}s"
        )


def _build_sharded(
    engine: Engine,
    corpus: Path,
    out: Path,
    shards: int,
    indexes: list[str],
    embedder: str,
    index_options: dict[str, dict[str, Any]],
    limit: int | None,
    overwrite: bool,
    use_ray: bool,
    ray_address: str | None,
    as_json: bool,
    t0: float,
) -> None:
    """``index build --shards K [--ray]``: build, save and report a sharded collection."""
    from .shard_build import build_sharded

    runner: Any = None
    if use_ray:
        from .ray_shards import RayRunner

        runner = RayRunner(address=ray_address)
    try:
        collection = build_sharded(
            engine, corpus, out, shards=shards, stages=indexes, embedder=embedder,
            index_options=index_options, limit=limit, overwrite=overwrite, runner=runner,
        )  # fmt: skip
    finally:
        if runner is not None:
            runner.close()
    seconds = time.perf_counter() - t0
    if as_json:
        click.echo(
            json.dumps({**collection.manifest(), "path": str(out), "seconds": seconds}, indent=2)
        )
        return
    how = f"{'Ray tasks' if use_ray else 'in this process'}"
    click.echo(
        f"indexed {len(collection)} documents into {out} ({', '.join(collection.stages)}) as "
        f"{shards} shards ({how}) in {seconds:.1f}s"
    )


@cli.command("plan")
@click.option("--docs", required=True, type=click.IntRange(min=1), help="Number of documents.")
@click.option(
    "--dim", type=click.IntRange(min=1), help="Vector dimension (default: the embedder's)."
)
@click.option(
    "--index",
    "indexes",
    multiple=True,
    default=("bm25",),
    show_default=True,
    help="Index format, as for `index build`; repeat to plan several stages.",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    help="Index option KEY=VALUE (STAGE.KEY=VALUE with several --index).",
)
@click.option("--embedder", default="minilm", show_default=True, help="Embedder of dense formats.")
@click.option("--avg-words", type=click.FloatRange(min=0, min_open=True), help="Words a document.")
@click.option(
    "--avg-bytes",
    type=click.FloatRange(min=0, min_open=True),
    help="UTF-8 bytes of title + text a document (default 6.5 a word; 200 words).",
)
@click.option(
    "--host-mem", metavar="SIZE", help="Host memory (8G, 512M, bytes); default: available."
)
@click.option("--gpu-mem", metavar="SIZE", help="GPU memory; plans device=auto formats on the GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan_cmd(ctx: click.Context, as_json: bool, **args: Any) -> None:
    """Predict the host (and GPU) bytes of building and serving an index, and whether they fit.

    Counts vectors, index structures, BM25 postings, the docstore and the build's peak
    (the embedding matrix beside the index being filled, training samples); exits 1
    when the peak or serving exceeds --host-mem, listing alternatives (IVF-PQ, float16
    storage, shards). --json prints {"docs", "dim", "index", "options", "host":
    {"build_peak", "build_phase", "serving", "parts"}, "gpu", "disk", "fits", "limit",
    "alternatives", "stages", "notes"}. The model and its known error are described in
    relevo.engine.planner.
    """
    from .planner import plan_command, render_table

    result = plan_command(_engine(ctx).registry, **args)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_table(result))
    if not result.fits:
        ctx.exit(1)


@index_group.command("add")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print {"added", "updated", "documents"}.')
@click.pass_context
def index_add(ctx: click.Context, directory: Path, corpus: Path, as_json: bool) -> None:
    """Add (or replace, by id) the documents of a corpus.jsonl[.gz] in an index directory.

    Every stage is updated (dense ones encode the new documents with their recorded
    embedder); the directory's new generation is written atomically before this returns.
    """
    from .corpus import read_corpus

    docs, _ = read_corpus(corpus)
    engine = _engine(ctx)
    collection = engine.load(directory)
    added, updated = collection.upsert(docs)
    collection.commit()
    out = {"added": added, "updated": updated, "documents": len(collection)}
    click.echo(
        json.dumps(out)
        if as_json
        else f"added {added}, updated {updated}; {len(collection)} documents in {directory}"
    )


@index_group.command("delete")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"deleted", "documents"}.')
@click.pass_context
def index_delete(ctx: click.Context, directory: Path, ids: tuple[str, ...], as_json: bool) -> None:
    """Delete documents by id from an index directory (unknown ids are reported, not fatal)."""
    engine = _engine(ctx)
    collection = engine.load(directory)
    deleted = collection.delete(list(ids))
    if deleted:
        collection.commit()
    out = {"deleted": deleted, "documents": len(collection)}
    if as_json:
        click.echo(json.dumps(out))
    else:
        missing = len(set(ids)) - deleted
        note = f" ({missing} id(s) not found)" if missing else ""
        click.echo(f"deleted {deleted}{note}; {len(collection)} documents in {directory}")


@index_group.command("info")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def index_info(directory: Path) -> None:
    """Print an index directory's manifest (and each stage's) as JSON.

    A sharded collection prints its top manifest with each shard's manifest under
    ``shard_manifests`` (in shard order).
    """
    from .generations import resolve
    from .manifest import MANIFEST, read_manifest, validate_collection_manifest
    from .sharding import is_sharded

    generation, live = resolve(directory)
    if is_sharded(directory):
        top = read_manifest(live, required=("format", "shards"))
        top["generation"] = generation
        shards = []
        for shard in top["shards"]:
            path = (live / str(shard.get("path", ""))).resolve()
            if not path.is_relative_to(live.resolve()) or not path.is_dir():
                raise CorruptIndexError(
                    f"{live / MANIFEST}: shard path {shard.get('path')!r} is missing or outside "
                    "the collection; rebuild it with `relevo index build ... --overwrite`."
                )
            _, shard_live = resolve(path)
            shards.append(read_manifest(shard_live))
        top["shard_manifests"] = shards
        click.echo(json.dumps(top, indent=2))
        return
    man = read_manifest(live, required=("format", "format_version", "count", "stages"))
    validate_collection_manifest(man, live / MANIFEST)  # stage paths stay inside the folder
    man["generation"] = generation
    from . import journal

    # Writes acknowledged since this generation's snapshot (replayed on load).
    man["journal"] = {
        "records": len(journal.read(live)),
        "bytes": journal.journal_size(live),
    }
    man["stage_manifests"] = {s["name"]: read_manifest(live / s["path"]) for s in man["stages"]}
    click.echo(json.dumps(man, indent=2))


@cli.command("search")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("query")
@click.option(
    "-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Number of hits."
)
@click.option(
    "--stage", "stages", multiple=True, help="Use only these stages (default: all, fused)."
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Only documents whose metadata FIELD equals VALUE (JSON scalar or text); repeat to AND.",
)
@click.option(
    "--filter-json",
    metavar="JSON",
    help='A metadata filter object, e.g. \'{"year": {"gte": 2020}, "lang": {"in": ["en", "de"]}}\'.',
)
@click.option(
    "--domain",
    default=None,
    help="Collections built with a domain-routing (moe:PATH) embedder: encode the query with this domain's expert (default: the recorded domain, else the router).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"query", "hits": [{id, score, rank, title, text}]}.',
)
@click.pass_context
def search_cmd(
    ctx: click.Context,
    directory: Path,
    query: str,
    k: int,
    stages: tuple[str, ...],
    filters: tuple[str, ...],
    filter_json: str | None,
    domain: str | None,
    as_json: bool,
) -> None:
    """Search an index directory for QUERY (optionally only documents matching a filter)."""
    from .filters import parse_filter, parse_filter_options

    spec: dict[str, Any] = {}
    if filter_json is not None:
        try:
            loaded = json.loads(filter_json)
        except (ValueError, RecursionError) as exc:  # also a 5,000-digit number, deep nesting
            raise click.BadParameter(f"not JSON ({exc})", param_hint="--filter-json") from exc
        if not isinstance(loaded, dict):
            raise click.BadParameter("a JSON object of fields", param_hint="--filter-json")
        spec.update(loaded)
    for field, value in parse_filter_options(filters).items():
        if field in spec:
            raise click.BadParameter(
                f"{field!r} is in --filter-json already", param_hint="--filter"
            )
        spec[field] = value
    flt = parse_filter(spec)  # checked before the index loads
    engine = _engine(ctx)
    collection = engine.load(directory)
    hits = collection.search(query, k, stages=list(stages) or None, filter=flt, domain=domain)
    if as_json:
        click.echo(
            json.dumps(
                {"query": query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False, indent=2
            )
        )
        return
    if not hits:
        click.echo("no hits")
    for h in hits:
        snippet = (h.title + " — " if h.title else "") + h.text
        click.echo(f"{h.rank:>3}. {h.score:8.4f}  {h.id}  {snippet[:150]}")


_STRATEGY_KEYS = ("strategy", "window", "stride", "passes", "pairwise_method", "interpolate")


class InterpolateType(click.ParamType):
    """``--interpolate``: a weight in [0, 1] or ``auto``."""

    name = "W|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | str:
        from .autotune import parse_interpolate
        from .errors import ConfigError

        try:
            parsed = parse_interpolate(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        assert parsed is not None  # noqa: S101 - click passes no None to convert
        return parsed


def strategy_options(f: Any) -> Any:
    """The reranking-strategy options shared by ``relevo eval`` and ``relevo rerank``.

    The command receives them gathered in one ``strategy_kw`` dict (keyword arguments of
    :class:`~relevo.engine.rerank.RerankOptions`) instead of six parameters.
    """

    @functools.wraps(f)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        kwargs["strategy_kw"] = {key: kwargs.pop(key) for key in _STRATEGY_KEYS}
        kwargs["dev_queries"] = kwargs.pop("dev_queries")
        return f(*args, **kwargs)

    options = [
        click.option(
            "--rerank-option", "rerank_options", multiple=True, help="Reranker option KEY=VALUE."
        ),
        click.option(
            "--strategy",
            type=click.Choice(["pointwise", "window", "full", "pairwise"]),
            help="Reranking strategy (default: the reranker's natural one).",
        ),
        click.option(
            "--window", type=click.IntRange(min=1), help="Sliding-window size (window strategy)."
        ),
        click.option(
            "--stride", type=click.IntRange(min=1), help="Sliding-window stride (window strategy)."
        ),
        click.option(
            "--passes",
            default=1,
            show_default=True,
            type=click.IntRange(min=1),
            help="Listwise passes.",
        ),
        click.option(
            "--pairwise-method",
            default="sliding",
            show_default=True,
            type=click.Choice(["allpairs", "sort", "sliding"]),
            help="PRP method (pairwise strategy).",
        ),
        click.option(
            "--interpolate",
            type=InterpolateType(),
            help="Blend with the first stage: W * reranker + (1 - W) * first stage "
            "(min-max normalised; ranks for listwise/pairwise). `auto`: choose W (or no "
            "reranking) on synthetic dev queries of this corpus, without labels.",
        ),
        click.option(
            "--dev-queries",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Synthetic dev queries (`relevo generate-queries`) for --interpolate auto "
            "(default: 64 generated once per corpus and cached).",
        ),
    ]
    for option in reversed(options):
        gathered = option(gathered)
    return gathered


def _route_domain(engine: Engine, domain: str | None, embedder: str) -> None:
    """``--domain``: the default domain of the domain-routing embedder ``embedder``."""
    from .errors import ConfigError

    if domain is None:
        return
    name = embedder.partition(":")[0]
    reg = engine.registry.get("embedder", name)[0] if name in engine.names("embedder") else None
    if reg is None or not getattr(reg.cls, "routes_domains", False):
        raise ConfigError(
            f"--domain routes texts between the experts of a mixture-of-experts embedder "
            f"(--embedder moe:PATH); {embedder!r} has no domains."
        )
    engine.embedder_defaults[name] = {"domain": domain}


def _parse_kv(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs -> dict, values parsed as JSON where they parse."""
    return {k: _parse_value(v) for k, _, v in (p.partition("=") for p in pairs)}


@cli.command("eval")
@click.argument(
    "dataset_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--pipeline",
    default="bm25",
    show_default=True,
    help="bm25 | dense | hybrid | an index format | an embedder name | hybrid:A+B",
)
@click.option(
    "--split", default="test", show_default=True, help="qrels/<split>.tsv to score against."
)
@click.option("--embedder", default="minilm", show_default=True, help="Embedder of dense stages.")
@click.option(
    "--domain",
    default=None,
    help="Domain-routing (moe:PATH) embedders: route texts without a metadata domain to this expert.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Evaluate only the first N queries of the split."
)
@click.option(
    "--run-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the TREC run file here.",
)
@click.option(
    "--rel-level",
    default=1,
    show_default=True,
    help="Minimum relevance counted by MRR/Recall (2 for TREC DL).",
)
@click.option("--rebuild", is_flag=True, help="Rebuild the cached indexes instead of reusing them.")
@click.option(
    "--run",
    "run_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="First-stage TREC run file replacing --pipeline.",
)
@click.option(
    "--rerank", "reranker", help="Reranker name, e.g. cross-encoder:DIR, nanoranker, smollm2."
)
@strategy_options
@click.option(
    "--depth",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Candidates reranked per query.",
)
@click.option(
    "--pairwise-top-k",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Positions PRP sort/sliding settle.",
)
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="OLD.json NEW.json",
    help="Compare two saved `relevo eval --json` reports instead of evaluating: which of "
    "stack, models, index, data and parameters differ, and how the metrics moved.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    dataset_dir: Path | None,
    pipeline: str,
    split: str,
    embedder: str,
    domain: str | None,
    limit: int | None,
    run_out: Path | None,
    rel_level: int,
    rebuild: bool,
    run_file: Path | None,
    reranker: str | None,
    rerank_options: tuple[str, ...],
    strategy_kw: dict[str, Any],
    dev_queries: Path | None,
    depth: int,
    pairwise_top_k: int,
    compare: tuple[Path, Path] | None,
    as_json: bool,
) -> None:
    """Evaluate a retrieval pipeline (optionally reranked) on a BEIR dataset: nDCG@10, MRR@10, Recall@100.

    Every report carries a run manifest (library versions, model digests, index
    checksums, data digests, parameters); `relevo eval --compare OLD.json NEW.json`
    says which of them differ between two saved reports.
    """
    from .evaluate import evaluate, load_dataset
    from .progress import progress_bar
    from .rerank import RerankOptions

    if compare:
        _compare_reports(*compare, as_json=as_json)
        return
    if dataset_dir is None:
        raise click.UsageError("give a DATASET_DIR to evaluate (or --compare OLD.json NEW.json).")

    engine = _engine(ctx)
    _route_domain(engine, domain, embedder)
    opts = _parse_kv(rerank_options)
    n_queries = len(load_dataset(dataset_dir, split=split).queries) if reranker else 0
    n_queries = min(n_queries, limit) if limit else n_queries
    with progress_bar(
        n_queries, f"reranking with {reranker}", enabled=engine.progress and reranker is not None
    ) as adv:
        report = evaluate(
            engine,
            dataset_dir,
            pipeline=pipeline,
            split=split,
            embedder=embedder,
            limit=limit,
            rel_level=rel_level,
            rebuild=rebuild,
            run_out=run_out,
            run=run_file,
            rerank=reranker,
            reranker_options=opts,
            reranking=RerankOptions(depth=depth, top_k=pairwise_top_k, **strategy_kw),
            progress=adv,
            dev_queries=dev_queries,
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    line = (
        f"{report['dataset']} [{split}] {report['pipeline']}: nDCG@10 {report['ndcg@10']:.4f}  MRR@10 {report['mrr@10']:.4f}  "
        f"Recall@100 {report['recall@100']:.4f}  ({report['queries']} queries, {report['seconds']:.1f}s)"
    )
    if "interpolate_auto" in report:
        est = report["interpolate_auto"]
        chosen = est["curve"][f"{est['weight']:.1f}"]
        line += (
            f"\n  --interpolate auto: weight {est['weight']:.1f} on {est['dev_queries']} synthetic dev "
            f"queries (dev MRR@10 {est['first_stage']:.4f} first stage -> {chosen:.4f})"
            + ("; reranking skipped" if not est["rerank"] else "")
        )
    if reranker and report["rerank"].get("skipped"):
        line += f"\n  not reranked by {reranker}: the synthetic dev set found no weight above 0 that helps"
    elif reranker:
        fs, cost = report["first_stage"], report["cost"]
        line += (
            f"\n  reranked by {reranker} ({report['rerank']['strategy']}, depth {depth}); first stage nDCG@10 "
            f"{fs['ndcg@10']:.4f}; cost: {cost['llm_calls']} LLM calls, {cost['input_tokens']} input / "
            f"{cost['output_tokens']} output tokens, {report['seconds_per_query']:.2f}s per query"
        )
    click.echo(line)


def _compare_reports(old_path: Path, new_path: Path, *, as_json: bool) -> None:
    from .errors import ConfigError
    from .runinfo import compare

    reports = []
    for path in (old_path, new_path):
        try:
            reports.append(json.loads(path.read_text("utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not a readable JSON report ({exc}).") from exc
        if not isinstance(reports[-1], dict):
            raise ConfigError(f"{path} is not a `relevo eval --json` report (not an object).")
    try:
        result = compare(reports[0], reports[1])
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(result["verdict"])
    for m, v in result["metrics"].items():
        click.echo(f"  {m}: {v['old']:.4f} -> {v['new']:.4f} ({v['delta']:+.4f})")
    for section, diffs in result["differences"].items():
        for d in diffs[:20]:
            click.echo(f"  {section}: {d}")
        if len(diffs) > 20:
            click.echo(f"  {section}: ... {len(diffs) - 20} more")


@cli.command("rerank")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("query")
@click.option(
    "--reranker",
    "reranker",
    required=True,
    help="Reranker name, e.g. cross-encoder:DIR, nanoranker, smollm2.",
)
@strategy_options
@click.option(
    "--depth",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="First-stage candidates to rerank.",
)
@click.option(
    "-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Hits to print."
)
@click.option(
    "--reorder",
    is_flag=True,
    help="Order the output for an LLM context: strongest passages at both ends.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print hits, cost and permutation repairs as JSON."
)
@click.pass_context
def rerank_cmd(
    ctx: click.Context,
    directory: Path,
    query: str,
    reranker: str,
    rerank_options: tuple[str, ...],
    strategy_kw: dict[str, Any],
    dev_queries: Path | None,
    depth: int,
    k: int,
    reorder: bool,
    as_json: bool,
) -> None:
    """Search DIR for QUERY and rerank the top --depth candidates.

    `--interpolate auto --dev-queries FILE` first scores the reranker on the synthetic
    dev queries of this index's corpus and blends at the weight they support (or does
    not rerank).
    """
    from .errors import ConfigError
    from .rerank import RerankOptions, reorder_for_context

    engine = _engine(ctx)
    collection = engine.load(directory)
    candidates = collection.search(query, depth)
    opts = _parse_kv(rerank_options)
    component = engine.reranker(reranker, **opts)
    options = RerankOptions(depth=depth, top_k=k, **strategy_kw)
    estimate = None
    if options.interpolate == "auto":
        from dataclasses import replace

        from .autotune import dev_set, docstore_text, estimate_interpolation, pairs, search_dev
        from .synthetic import read_synthetic_queries

        if dev_queries is None:
            raise ConfigError(
                "--interpolate auto needs this corpus's synthetic dev queries here: "
                "`relevo generate-queries CORPUS --out dev.jsonl --sample 128`, then --dev-queries dev.jsonl."
            )
        dev = pairs(dev_set(read_synthetic_queries(dev_queries), docstore_text(collection)))
        rows = search_dev(collection, dev, depth)
        estimate = estimate_interpolation(
            replace(options, interpolate=None).runner(component), rows, depth=depth,
            source=str(dev_queries),
        )  # fmt: skip
        options = replace(options, interpolate=estimate.weight)
    if estimate is not None and not estimate.rerank:
        from .components import Cost
        from .rerank import RerankResult

        result = RerankResult(list(candidates), Cost(), strategy="skipped (--interpolate auto: 0)")
    else:
        result = options.runner(component)(query, candidates)
    hits = result.hits[:k]
    if reorder:
        hits = reorder_for_context(hits)
    if as_json:
        payload = {
            "query": query,
            **result.to_dict(),
            "hits": [h.to_dict() for h in hits],
            "reordered": reorder,
        }
        if estimate is not None:
            payload["interpolate_auto"] = estimate.to_dict()
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    for h in hits:
        snippet = (h.title + " — " if h.title else "") + h.text
        click.echo(
            f"{h.rank:>3}. {h.id}  (was {h.stages.get('first_stage_rank', '?')})  {snippet[:140]}"
        )
    c = result.cost
    click.echo(
        f"cost: {c.llm_calls} LLM calls, {c.input_tokens} input / {c.output_tokens} output tokens, {c.seconds:.2f}s",
        err=True,
    )


@cli.command("demo")
@click.option(
    "--dataset",
    "dataset_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="BEIR dataset folder (default: SciFact from shared/datasets).",
)
@click.option(
    "--pipeline", default="hybrid", show_default=True, help="Retrieval pipeline to demonstrate."
)
@click.option(
    "--examples",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Example queries to show.",
)
@click.pass_context
def demo_cmd(ctx: click.Context, dataset_dir: Path | None, pipeline: str, examples: int) -> None:
    """Index SciFact with the default pipeline, show example results and nDCG@10."""
    from .evaluate import collection_for, evaluate, load_dataset, parse_pipeline

    if dataset_dir is None:
        root = datasets_dir()
        if root is None or not (root / "scifact").is_dir():
            raise click.ClickException(
                "SciFact not found: pass --dataset DIR or set RELEVO_DATASETS to the folder holding scifact/."
            )
        dataset_dir = root / "scifact"
    engine = _engine(ctx)
    dataset = load_dataset(dataset_dir)
    stages, fusion = parse_pipeline(pipeline, engine.registry, "minilm")
    click.echo(f"relevo demo: {dataset.name}, pipeline {pipeline} ({' + '.join(stages)})", err=True)
    collection, seconds, reused = collection_for(
        engine, dataset, stages, embedder="minilm", fusion=fusion
    )
    how = "reused cached index" if reused else f"built index in {seconds:.1f}s"
    click.echo(f"{len(collection)} documents, {how}\n")
    for qid in list(dataset.queries)[:examples]:
        query = dataset.queries[qid]
        click.echo(f"Q{qid}: {query}")
        for h in collection.search(query, 3):
            mark = "*" if dataset.qrels[qid].get(h.id, 0) > 0 else " "
            click.echo(f"  {mark}{h.rank}. [{h.id}] {(h.title or h.text)[:100]}")
        click.echo("")
    report = evaluate(engine, dataset_dir, pipeline=pipeline)
    click.echo(
        f"{dataset.name} test, {pipeline}: nDCG@10 = {report['ndcg@10']:.4f}, MRR@10 = {report['mrr@10']:.4f}, "
        f"Recall@100 = {report['recall@100']:.4f} over {report['queries']} queries "
        "(* marks a judged-relevant hit)"
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: adds plugin commands, then runs the CLI."""
    from .engine import Engine

    try:
        engine = Engine(progress=is_tty())
        engine.host.call_commands(cli, CommandHelpers())
    except RelevoError as exc:  # strict mode and a broken plugin
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="relevo", obj={"engine": engine})


__all__ = ["cli", "main"]
