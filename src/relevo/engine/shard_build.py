"""Building sharded collections: split, gather BM25 statistics, build and save each shard.

:func:`build_sharded` is what ``relevo index build CORPUS --out DIR --shards K [--ray]``
runs; the layout it writes and the search over it are in :mod:`relevo.engine.sharding`.
Its per-shard work runs through a runner: :class:`LocalRunner` here, one shard after
another, or :class:`relevo.engine.ray_shards.RayRunner`, in parallel Ray tasks, which
recreate the caller's engine from an :class:`EngineSpec` in each worker. The first pass
returns each shard's BM25 statistics (its formats' ``local_statistics()``), merged here;
the second indexes and embeds each shard, sets the merged statistics
(``set_global_statistics``) and saves it inside the new generation of the output
directory, whose top manifest then goes live atomically.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .collection import Fusion
from .components import Embedder, Index, index_items
from .corpus import read_corpus
from .errors import ConfigError, RelevoError
from .generations import live_directory, write_generation
from .manifest import MANIFEST, write_manifest
from .sharding import (
    FORMAT,
    FORMAT_VERSION,
    SHARDS,
    ShardedCollection,
    _sha256,
    check_replaceable_sharded,
    shard_bounds,
)
from .types import Document

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

log = logging.getLogger(__name__)


@dataclass
class EngineSpec:
    """How to recreate an :class:`~relevo.engine.engine.Engine` in another process (a Ray worker).

    The same plugins (bundled, entry points, and the plugin objects given, which must be
    picklable), the same plugin switches, cache folder and embedder defaults.
    """

    plugins: list[Any] = field(default_factory=list)
    bundled: bool = True
    load_entrypoints: bool = True
    load_plugins: list[str] | None = None
    disable_plugins: list[str] = field(default_factory=list)
    strict: bool = False
    cache: str | None = None
    embedder_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def of(cls, engine: Engine) -> EngineSpec:
        host = engine.host
        info = host.info.values()
        return cls(
            plugins=[host.pm.get_plugin(i.name) for i in info if not i.bundled and i.dist is None],
            bundled=any(i.bundled for i in info),
            load_entrypoints=any(not i.bundled and i.dist is not None for i in info),
            load_plugins=host.load_only,
            disable_plugins=sorted(host.disabled),
            strict=host.strict,
            cache=str(engine.cache_dir),
            embedder_defaults={k: dict(v) for k, v in engine.embedder_defaults.items()},
        )

    def engine(self) -> Engine:
        """This process's engine for the spec (made once per process)."""
        from .engine import Engine

        eng = _ENGINES.get(self.token)
        if eng is None:
            eng = Engine(
                plugins=self.plugins,
                bundled=self.bundled,
                load_entrypoints=self.load_entrypoints,
                load_plugins=self.load_plugins,
                disable_plugins=self.disable_plugins,
                strict=self.strict,
                cache=self.cache,
            )
            eng.embedder_defaults.update(self.embedder_defaults)
            _ENGINES[self.token] = eng
        return eng


_ENGINES: dict[str, Any] = {}


def _engine_of(engine: Engine | EngineSpec) -> Engine:
    return engine.engine() if isinstance(engine, EngineSpec) else engine


@dataclass(frozen=True)
class BuildPlan:
    """What every shard is built with (sent to each task)."""

    stages: tuple[str, ...]
    embedder: str | Embedder | None
    index_options: dict[str, dict[str, Any]]
    fusion: Fusion | None


def _statistics_stages(engine: Engine, plan: BuildPlan) -> dict[str, Index]:
    """Stage name -> a fresh index, for the stages whose format takes global statistics."""
    from .engine import parse_stage

    out = {}
    for spec in plan.stages:
        name, fmt, _ = parse_stage(spec, "")
        index = engine.registry.create("index", fmt, **dict(plan.index_options.get(spec, {})))
        if (
            isinstance(index, Index)
            and index.input == "text"
            and hasattr(index, "set_global_statistics")
        ):
            out[name] = index
    return out


def shard_statistics(
    engine: Engine | EngineSpec, docs: Sequence[Document], plan: BuildPlan
) -> dict[str, dict[str, Any]]:
    """First pass over one shard: each statistics-taking stage's local statistics, as dicts."""
    eng = _engine_of(engine)
    out = {}
    for name, index in _statistics_stages(eng, plan).items():
        index.add(index_items(index, list(docs)))
        out[name] = index.local_statistics().to_dict()  # type: ignore[attr-defined]
    return out


def merge_statistics(
    engine: Engine | EngineSpec,
    plan: BuildPlan,
    per_shard: Sequence[Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """The corpus-wide statistics of each stage, merged from the shards' (as dicts)."""
    eng = _engine_of(engine)
    out = {}
    for name, index in _statistics_stages(eng, plan).items():
        cls = type(index.local_statistics())  # type: ignore[attr-defined]
        parts = [cls.from_dict(s[name]) for s in per_shard]
        out[name] = parts[0].merge(*parts[1:]).to_dict()
    return out


def build_shard(
    engine: Engine | EngineSpec,
    docs: Sequence[Document],
    plan: BuildPlan,
    statistics: Mapping[str, Mapping[str, Any]],
    path: str,
) -> dict[str, Any]:
    """Second pass over one shard: index it (global statistics set) and save it to ``path``."""
    eng = _engine_of(engine)
    t0 = time.perf_counter()
    col = eng.index(
        list(docs),
        stages=list(plan.stages),
        embedder=plan.embedder,
        index_options=plan.index_options,
        fusion=plan.fusion,
    )
    for name, stats in statistics.items():
        index = col.stages[name].index
        cls = type(index.local_statistics())  # type: ignore[attr-defined]
        index.set_global_statistics(cls.from_dict(stats))  # type: ignore[attr-defined]
    col.save(path)
    return {
        "count": len(col),
        "corpus_checksum": col.corpus_checksum,
        "manifest_sha256": _sha256(live_directory(path) / MANIFEST),
        "stages": col.manifest()["stages"],
        "fusion": col.fusion.to_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
        "pid": os.getpid(),
    }


class LocalRunner:
    """Runs the per-shard work in this process, one shard after another."""

    name = "local"

    def put(self, obj: Any) -> Any:
        return obj

    def spec(self, engine: Engine) -> Engine | EngineSpec:
        return engine

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        return [fn(*args) for args in calls]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}


def build_sharded(
    engine: Engine,
    corpus: str | os.PathLike[str] | Sequence[Document],
    out: str | os.PathLike[str],
    *,
    shards: int,
    stages: Sequence[str] = ("bm25",),
    embedder: str | Embedder | None = None,
    index_options: Mapping[str, Mapping[str, Any]] | None = None,
    fusion: Fusion | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    runner: Any = None,
    sizes: Sequence[int] | None = None,
) -> ShardedCollection:
    """Split a corpus into ``shards`` contiguous parts, build and save each, and load the result.

    A first pass gathers each shard's BM25 statistics (in parallel under a Ray runner)
    and merges them; the second indexes (and embeds) every shard with those global
    statistics and saves it inside the new generation of ``out``; the top manifest then
    goes live atomically.

    Args:
        engine: resolves formats and embedders (a Ray runner recreates it in each worker).
        corpus: a BEIR ``corpus.jsonl[.gz]`` path / folder, or :class:`Document` objects.
        out: the collection directory to write.
        shards: number of shards K (each must get at least one document).
        stages, embedder, index_options, fusion, limit: as for :meth:`Engine.index`.
        overwrite: replace an existing relevo collection at ``out`` (never anything else).
        runner: :class:`LocalRunner` (default) or a :class:`relevo.engine.ray_shards.RayRunner`.
        sizes: the shards' document counts, in corpus order (default: near-equal).
    """
    out = Path(out)
    check_replaceable_sharded(out, overwrite=overwrite)
    runner = runner or LocalRunner()
    t0 = time.perf_counter()
    if isinstance(corpus, (str, os.PathLike)):
        docs, checksum = read_corpus(corpus, limit=limit)
    else:
        from .corpus import corpus_checksum

        docs = list(corpus)[:limit] if limit is not None else list(corpus)
        checksum = corpus_checksum(docs)
    if not docs:
        raise ConfigError("no documents to index.")
    if not stages:
        raise ConfigError("choose at least one index stage, e.g. stages=['bm25'].")
    if sizes is None:
        bounds = shard_bounds(len(docs), shards)
    else:
        if len(sizes) != shards or sum(sizes) != len(docs) or min(sizes) < 1:
            raise ConfigError(
                f"sizes {list(sizes)} must be {shards} positive counts adding up to {len(docs)}."
            )
        cuts = [0, *itertools.accumulate(sizes)]
        bounds = list(zip(cuts[:-1], cuts[1:], strict=True))
    plan = BuildPlan(
        tuple(stages),
        embedder,
        {k: dict(v) for k, v in (index_options or {}).items()},
        fusion,
    )
    spec = runner.spec(engine)
    parts = [runner.put(docs[a:b]) for a, b in bounds]
    t_split = time.perf_counter()
    local_stats = runner.map(shard_statistics, [(spec, p, plan) for p in parts])
    merged = merge_statistics(engine, plan, local_stats) if local_stats and local_stats[0] else {}
    t_stats = time.perf_counter()
    width = max(2, len(str(shards - 1)))

    def recheck(target: Path) -> None:  # under the writer lock: another writer may have won
        check_replaceable_sharded(target, overwrite=overwrite)

    with write_generation(out, overwrite=overwrite, check=recheck) as tmp:
        rels = [f"{SHARDS}/{i:0{width}d}" for i in range(shards)]
        (tmp / SHARDS).mkdir()
        summaries = runner.map(
            build_shard,
            [(spec, p, plan, merged, str(tmp / r)) for p, r in zip(parts, rels, strict=True)],
        )
        first = summaries[0]
        for i, s in enumerate(summaries):
            if s["stages"] != first["stages"]:
                raise RelevoError(
                    f"shard {i} was built with other stages or embedders than shard 0 "
                    f"({s['stages']} vs {first['stages']}); the workers' installations differ."
                )
        t_build = time.perf_counter()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "count": sum(s["count"] for s in summaries),
            "corpus_checksum": checksum,
            "stages": [{k: v for k, v in s.items() if k != "path"} for s in first["stages"]],
            "fusion": first["fusion"],
            "split": "contiguous",
            "shards": [
                {
                    "path": r,
                    "count": s["count"],
                    "corpus_checksum": s["corpus_checksum"],
                    "manifest_sha256": s["manifest_sha256"],
                }
                for r, s in zip(rels, summaries, strict=True)
            ],
            "bm25_statistics": {
                name: {
                    "n_docs": st["n_docs"],
                    "total_length": st["total_length"],
                    "terms": len(st["doc_freq"]),
                }
                for name, st in merged.items()
            },
            "build": {
                **runner.describe(),
                "shards": shards,
                "seconds": {
                    "read": round(t_split - t0, 3),
                    "statistics": round(t_stats - t_split, 3),
                    "build": round(t_build - t_stats, 3),
                    "per_shard": [s["seconds"] for s in summaries],
                },
                "workers": sorted({s["pid"] for s in summaries}),
            },
        }
        write_manifest(tmp, manifest)
    log.info(
        "built %d shards of %s docs into %s (%s) in %.1fs",
        shards,
        [b - a for a, b in bounds],
        out,
        runner.name,
        time.perf_counter() - t0,
    )
    return ShardedCollection.load(
        out,
        engine.registry,
        make_embedder=lambda name, opts: engine.embedder(name, **opts),
        embedders=_given(engine, embedder),
    )


def _given(engine: Engine, embedder: str | Embedder | None) -> dict[str, Embedder]:
    if isinstance(embedder, Embedder):
        return {getattr(embedder, "instance_name", None) or embedder.name: embedder}
    return {}


__all__ = ["BuildPlan", "EngineSpec", "LocalRunner", "build_sharded"]
