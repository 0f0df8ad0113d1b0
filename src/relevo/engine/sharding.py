"""Sharded collections: one corpus split into K collection directories, searched as one.

On disk a sharded collection is a directory of generations like any collection (see
:mod:`relevo.engine.generations`), whose live generation holds a top manifest and the
shards, each an ordinary collection directory::

    DIR/CURRENT
    DIR/gen-NNNNNN/manifest.json        format "relevo-sharded-collection": count, corpus
                                        checksum, stages, fusion, the BM25 statistics used,
                                        and per shard its path, count, corpus checksum and
                                        the sha256 of its live manifest
    DIR/gen-NNNNNN/shards/00/           a collection directory (CURRENT, gen-*/...)
    DIR/gen-NNNNNN/shards/01/ ...

The corpus is split into contiguous, near-equal runs of documents, so shard ``s``
position ``p`` is corpus position ``offset(s) + p``.

**Exact merging.** A shard's BM25 stages score with the *global* statistics (document
count, total length, document frequencies of the whole corpus, gathered in a first pass
and merged), so a document scores the same in its shard as in a single index over the
corpus; dense scores do not depend on the other documents anyway. Each shard returns its
top ``k`` per stage; the merge keeps the global top ``k`` ordered by score, ties broken
by shard order then position in the shard, i.e. by corpus position, as a single index
breaks them. A fused collection merges every stage's per-shard rankings at the fusion
depth first, then fuses the global rankings with the collection's :class:`Fusion`, so the
result is the unsharded collection's.

Building is :func:`relevo.engine.shard_build.build_sharded` (in this process, or as
parallel Ray tasks through :class:`relevo.engine.ray_shards.RayRunner`); nothing here
imports Ray. Searching fans
out to shard backends: collections loaded in this process (:class:`LocalShard`), or Ray
actors holding them (:func:`relevo.engine.ray_shards.load_on_ray`).

Sharded collections are read-only for now: add, update and delete raise
:class:`~relevo.engine.errors.RequestError`; rebuild to change them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .collection import MAX_K, Collection, Fusion, Stage, check_replaceable
from .components import Embedder
from .errors import (
    ConfigError,
    CorruptIndexError,
    IndexFormatError,
    IndexMismatchError,
    RequestError,
)
from .filters import Filter, parse_filter
from .generations import current_generation, live_directory, reading
from .manifest import MANIFEST, inside, read_manifest
from .types import Document, Hit, Hits

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry

log = logging.getLogger(__name__)

FORMAT = "relevo-sharded-collection"
FORMAT_VERSION = 1
SHARDS = "shards"
#: Loads tried when a writer replaces the live generation while a reader reads it.
LOAD_ATTEMPTS = 5
_REBUILD = "Rebuild it with `relevo index build CORPUS --out DIR --shards K --overwrite`."
_READ_ONLY = (
    "sharded collections are read-only for now; rebuild the collection with "
    "`relevo index build CORPUS --out DIR --shards K --overwrite` to change its documents."
)


# -- splitting and merging --------------------------------------------------------------------
def shard_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous, near-equal ``(start, stop)`` runs covering ``range(n)``.

    Raises:
        ConfigError: ``k < 1`` or more shards than documents (a shard would be empty).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"the number of shards must be a positive integer, got {k!r}.")
    if k > n:
        raise ConfigError(
            f"{k} shards for {n} documents would leave a shard empty; choose at most {n} shards."
        )
    cuts = [(i * n) // k for i in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


#: One query's ranking from one shard: ``(ids, scores)``, best first.
Ranking = tuple[list[str], list[float]]


def merge_rankings(per_shard: Sequence[Ranking], limit: int) -> list[tuple[int, str, float]]:
    """The best ``limit`` of several shards' rankings of one query: ``[(shard, id, score)]``.

    Each shard's ranking must be ordered as its index ranks (score descending, ties by
    position). Order: score descending, then shard order, then the shard's own order, so
    for a contiguous split ties fall as a single index over the corpus breaks them.
    """
    pooled = [
        (-score, s, r, doc_id)
        for s, (ids, scores) in enumerate(per_shard)
        for r, (doc_id, score) in enumerate(zip(ids, scores, strict=True))
    ]
    pooled.sort(key=lambda t: t[:3])
    return [(s, doc_id, -neg) for neg, s, _, doc_id in pooled[:limit]]


def _ranking(hits: Sequence[Hit]) -> Ranking:
    ids, scores = getattr(hits, "ids", None), getattr(hits, "scores", None)
    if ids is not None and scores is not None:  # Hits: no Hit objects made
        return list(ids), [float(x) for x in scores]
    return [h.id for h in hits], [float(h.score) for h in hits]


# -- shard backends ---------------------------------------------------------------------------
class LocalShard:
    """One shard loaded in this process: the calls a :class:`ShardedCollection` fans out.

    Ray actors wrap the same class (:mod:`relevo.engine.ray_shards`), so both backends
    answer with the same values.
    """

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def count(self) -> int:
        return len(self.collection)

    def stage_rankings(
        self,
        queries: Sequence[str],
        fetch: int,
        names: Sequence[str],
        flt: Filter | None,
        domain: str | None,
    ) -> dict[str, list[Ranking]]:
        """Per stage, each query's top ``fetch`` ``(ids, scores)`` in this shard (that stage alone)."""
        return {
            n: [
                _ranking(hits)
                for hits in self.collection.search_batch(
                    queries, fetch, stages=[n], with_text=False, filter=flt, domain=domain
                )
            ]
            for n in names
        }

    def documents(self, ids: Sequence[str]) -> list[tuple[str, str] | None]:
        """``(title, text)`` of each id held here, ``None`` for the others."""
        out: list[tuple[str, str] | None] = []
        for doc_id in ids:
            doc = self.collection.docstore.by_id(doc_id)
            out.append(None if doc is None else (doc.title, doc.text))
        return out

    def score_documents(
        self, queries: Sequence[str], doc_ids: Sequence[Sequence[str]]
    ) -> list[list[float | None]]:
        return self.collection.score_documents(queries, doc_ids)

    def set_query_domain(self, domain: str) -> None:
        self.collection.set_query_domain(domain)


#: The sharded search running in this thread: query encodings are shared within it only.
_SEARCH = threading.local()
_SEARCH_IDS = itertools.count()


class _QueryMemo:
    """An embedder proxy that encodes a batch of queries once for all shards of one search.

    In-process shards loaded by one engine share its embedder instance; without this,
    every shard would encode the same queries again. Encodings are reused only inside
    one :meth:`ShardedCollection.search_batch` call (the fan-out runs in its thread), so
    a search always pays for its own query encoding, as an unsharded one does.
    """

    def __init__(self, inner: Embedder, size: int = 4) -> None:
        self._inner = inner
        self._size = size
        self._memo: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_memo", "_lock", "_size"):
            raise AttributeError(name)  # (copy / pickle probe these before __init__ ran)
        return getattr(self._inner, name)

    def embed(self, texts: Sequence[str], **kw: Any) -> Any:
        search = getattr(_SEARCH, "id", None)
        if search is None:  # not inside a sharded search
            return self._inner.embed(texts, **kw)
        key = (
            search,
            tuple(texts),
            tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items())),
        )
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                return hit.copy()  # callers may normalise in place
        vecs = self._inner.embed(texts, **kw)
        with self._lock:
            self._memo[key] = vecs.copy()
            while len(self._memo) > self._size:
                self._memo.popitem(last=False)
        return vecs


def _share_query_encoding(collections: Sequence[Collection]) -> None:
    memos: dict[int, _QueryMemo] = {}
    for col in collections:
        for stage in col.stages.values():
            emb = stage.embedder
            if emb is None or isinstance(emb, _QueryMemo):
                continue
            memo = memos.setdefault(id(emb), _QueryMemo(emb))
            stage.embedder = cast("Embedder", memo)


class LocalFanout:
    """Calls on in-process shards, one after another; results in shard order.

    :class:`relevo.engine.ray_shards.ActorFanout` is the same over Ray actors.
    """

    def __init__(self, shards: Sequence[LocalShard]) -> None:
        self.shards = list(shards)

    def all(self, method: str, args: tuple[Any, ...]) -> list[Any]:
        """``shard.method(*args)`` on every shard."""
        return [getattr(s, method)(*args) for s in self.shards]

    def each(self, method: str, per_shard: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``shard.method(*per_shard[i])`` on shard ``i``."""
        return [getattr(s, method)(*a) for s, a in zip(self.shards, per_shard, strict=True)]


# -- the collection ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StageInfo:
    """What a sharded collection knows of a stage without loading it (Ray-held shards)."""

    name: str
    index: str
    embedder_record: dict[str, Any] | None = None
    embedder: Embedder | None = None

    @property
    def dense(self) -> bool:
        return self.embedder_record is not None


class ShardedCollection:
    """K shard collections searched as one, with exact merging; see the module docstring.

    Has the search API of :class:`~relevo.engine.collection.Collection` (``search``,
    ``search_batch``, ``score_documents``, ``len()``, ``manifest()``); writes raise
    :class:`~relevo.engine.errors.RequestError`.
    """

    def __init__(
        self,
        manifest: Mapping[str, Any],
        fanout: Any,
        *,
        path: Path | None = None,
        local: Sequence[Collection] = (),
        generation: str | None = None,
    ) -> None:
        self._manifest = dict(manifest)
        self._generation = generation
        self._fanout = fanout
        self.path = path
        self.local_shards = list(local)
        fcfg = self._manifest.get("fusion", {})
        self.fusion = Fusion(
            method=str(fcfg.get("method", "rrf")),
            k=int(fcfg.get("k", 60)),
            depth=int(fcfg.get("depth", 100)),
            weights=dict(fcfg.get("weights", {})),
        )
        self.corpus_checksum = str(self._manifest.get("corpus_checksum", ""))
        self._names = [s["name"] for s in self._manifest["stages"]]

    # -- what it is -----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._manifest["count"])

    def __repr__(self) -> str:
        return f"ShardedCollection({len(self)} docs, {self.n_shards} shards, stages={self._names})"

    @property
    def n_shards(self) -> int:
        return len(self._manifest["shards"])

    @property
    def stages(self) -> dict[str, Stage | StageInfo]:
        """The stages, as shard 0 has them (in-process), else as the manifest records them."""
        if self.local_shards:
            return dict(self.local_shards[0].stages)
        return {
            s["name"]: StageInfo(s["name"], s["index"], s.get("embedder"))
            for s in self._manifest["stages"]
        }

    @property
    def generation(self) -> str | None:
        """The directory generation the top manifest was read from."""
        return self._generation

    def manifest(self) -> dict[str, Any]:
        """The top manifest (format ``relevo-sharded-collection``)."""
        return dict(self._manifest)

    # -- search ---------------------------------------------------------------------------
    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        stages: Sequence[str] | None = None,
        depth: int | None = None,
        with_text: bool = True,
        filter: Mapping[str, Any] | Filter | None = None,  # noqa: A002 - the API's word
        domain: str | None = None,
    ) -> list[Hits]:
        """Search every shard and merge exactly; the options are those of
        :meth:`Collection.search_batch <relevo.engine.collection.Collection.search_batch>`.
        """
        if isinstance(queries, str):
            raise RequestError("pass a list of queries (or use search() for one query).")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise RequestError(f"k must be an integer from 1 to {MAX_K}, got {k!r}.")
        names = list(stages) if stages else list(self._names)
        unknown = [n for n in names if n not in self._names]
        if unknown:
            raise RequestError(f"unknown stage(s) {unknown}; this collection has {self._names}.")
        queries = list(queries)
        if not queries:
            return []
        flt = parse_filter(filter)
        single = len(names) == 1
        fetch = k if single else max(k, depth or self.fusion.depth)
        outer = getattr(_SEARCH, "id", None)
        _SEARCH.id = next(_SEARCH_IDS)
        try:
            per_shard = self._fanout.all("stage_rankings", (queries, fetch, names, flt, domain))
        finally:
            _SEARCH.id = outer
        # (id, score, per-stage ranks or None, owning shard) per query, best first
        rows: list[list[tuple[str, float, dict[str, float] | None, int]]] = []
        for qi in range(len(queries)):
            if single:
                merged = merge_rankings([r[names[0]][qi] for r in per_shard], k)
                rows.append([(d, sc, None, s) for s, d, sc in merged])
                continue
            owner: dict[str, int] = {}
            rankings: dict[str, list[tuple[str, float]]] = {}
            for n in names:
                merged = merge_rankings([r[n][qi] for r in per_shard], fetch)
                rankings[n] = [(d, sc) for _, d, sc in merged]
                owner.update((d, s) for s, d, _ in merged)
            fused = self.fusion.fuse(rankings, k)
            rows.append([(d, sc, ranks, owner[d]) for d, sc, ranks in fused])
        texts: dict[str, tuple[str, str]] = {}
        if with_text:
            wanted: list[list[str]] = [[] for _ in range(self.n_shards)]
            for row in rows:
                for d, _, _, s in row:
                    wanted[s].append(d)
            found = self._fanout.each("documents", [(ids,) for ids in wanted])
            for ids, docs in zip(wanted, found, strict=True):
                texts.update((d, t) for d, t in zip(ids, docs, strict=True) if t is not None)
        out = []
        for row in rows:
            hits = []
            for rank, (d, sc, ranks, _) in enumerate(row, 1):
                title, text = texts.get(d, ("", ""))
                hits.append(
                    Hit(d, sc, rank, title, text)
                    if ranks is None
                    else Hit(d, sc, rank, title, text, stages=ranks)
                )
            out.append(Hits.of(hits))
        return out

    def search(self, query: str, k: int = 10, **kwargs: Any) -> Hits:
        """Search one query; see :meth:`search_batch` for the options."""
        if not isinstance(query, str):
            raise RequestError(f"query must be a string, got {type(query).__name__}.")
        return self.search_batch([query], k, **kwargs)[0]

    def score_documents(
        self, queries: Sequence[str], doc_ids: Sequence[Sequence[str]]
    ) -> list[list[float | None]]:
        """Scores of given documents per query (single-stage collections), from their shards."""
        per_shard = self._fanout.all("score_documents", (list(queries), [list(r) for r in doc_ids]))
        out: list[list[float | None]] = []
        for qi, row in enumerate(doc_ids):
            vals: list[float | None] = []
            for j in range(len(row)):
                vals.append(next((r[qi][j] for r in per_shard if r[qi][j] is not None), None))
            out.append(vals)
        return out

    def set_query_domain(self, domain: str) -> None:
        """Encode queries of domain-routing stages with ``domain``'s expert (every shard)."""
        self._fanout.all("set_query_domain", (domain,))

    # -- writes: not yet ------------------------------------------------------------------
    def add(self, documents: Iterable[Document]) -> int:
        raise RequestError(_READ_ONLY)

    def update(self, documents: Iterable[Document]) -> int:
        raise RequestError(_READ_ONLY)

    def upsert(self, documents: Iterable[Document]) -> tuple[int, int]:
        raise RequestError(_READ_ONLY)

    def delete(self, ids: Iterable[str]) -> int:
        raise RequestError(_READ_ONLY)

    def commit(self) -> Path | None:
        """Nothing to make durable: a sharded collection takes no writes."""
        return self.path

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        registry: Registry,
        *,
        embedders: Mapping[str, Embedder] | None = None,
        make_embedder: Any = None,
    ) -> ShardedCollection:
        """Load a sharded collection directory, its shards into this process.

        Raises:
            CorruptIndexError: the top manifest is damaged, a shard directory is missing
                or damaged, or a shard differs from what the top manifest recorded.
        """
        path = Path(path)

        def load_shards(man: Mapping[str, Any], dirs: Sequence[Path]) -> list[Collection]:
            out = []
            for i, sdir in enumerate(dirs):
                col = _load_shard(
                    sdir,
                    i,
                    path,
                    lambda p: Collection.load(
                        p, registry, embedders=embedders, make_embedder=make_embedder
                    ),
                )
                check_shard(man, i, sdir, len(col), [s.name for s in col.stages.values()])
                out.append(col)
            return out

        man, collections, generation = read_sharded(path, load_shards)
        _share_query_encoding(collections)
        fanout = LocalFanout([LocalShard(c) for c in collections])
        return cls(man, fanout, path=path, local=collections, generation=generation)


def read_sharded(
    path: Path, load: Callable[[dict[str, Any], list[Path]], Any]
) -> tuple[dict[str, Any], Any, str | None]:
    """Resolve and check the top manifest of ``path``, then ``load(manifest, shard dirs)``.

    Holds the live generation against removal while loading (retrying when a writer
    replaced it meanwhile), as :meth:`Collection.load` does.
    """
    attempt = 0
    while True:
        attempt += 1
        generation: str | None = None
        try:
            with reading(path) as (generation, gen_dir):
                man = read_top_manifest(gen_dir)
                dirs = [
                    inside(
                        gen_dir, s["path"], field=f"shards[{i}].path", manifest=gen_dir / MANIFEST
                    )
                    for i, s in enumerate(man["shards"])
                ]
                for i, sdir in enumerate(dirs):
                    _check_shard_manifest(man, i, sdir, path)
                return man, load(man, dirs), generation
        except CorruptIndexError:
            if attempt < LOAD_ATTEMPTS and current_generation(path) != generation:
                log.info("%s was replaced while loading it; loading it again", path)
                continue
            raise


def read_top_manifest(gen_dir: Path) -> dict[str, Any]:
    """The checked top manifest in ``gen_dir``; every problem is a :class:`CorruptIndexError`."""
    man = read_manifest(
        gen_dir,
        expected_format=FORMAT,
        required=("format", "format_version", "count", "stages", "shards"),
    )
    where = gen_dir / MANIFEST
    if not isinstance(man["format_version"], int) or man["format_version"] < 1:
        raise CorruptIndexError(f"{where}: format_version must be a positive integer. {_REBUILD}")
    if man["format_version"] > FORMAT_VERSION:
        raise CorruptIndexError(
            f"{where} was written by a newer relevo (sharded format {man['format_version']}); upgrade relevo."
        )
    shards, stages = man["shards"], man["stages"]
    if (
        not isinstance(shards, list)
        or not shards
        or not all(
            isinstance(s, dict)
            and isinstance(s.get("path"), str)
            and isinstance(s.get("count"), int)
            and isinstance(s.get("manifest_sha256"), str)
            for s in shards
        )
    ):
        raise CorruptIndexError(
            f"{where}: 'shards' must be a non-empty list of {{path, count, manifest_sha256}}; "
            f"the manifest was edited or damaged. {_REBUILD}"
        )
    if (
        not isinstance(stages, list)
        or not stages
        or not all(
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and isinstance(s.get("index"), str)
            for s in stages
        )
    ):
        raise CorruptIndexError(
            f"{where}: 'stages' must be a non-empty list of {{name, index}}. {_REBUILD}"
        )
    fusion = man.get("fusion", {})
    try:
        Fusion(**fusion)
    except (ConfigError, TypeError) as exc:
        raise CorruptIndexError(f"{where}: 'fusion' is invalid ({exc}). {_REBUILD}") from exc
    if not isinstance(man["count"], int) or man["count"] != sum(s["count"] for s in shards):
        raise CorruptIndexError(
            f"{where}: count {man['count']!r} is not the sum of the shards' counts. {_REBUILD}"
        )
    return man


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_shard_manifest(man: Mapping[str, Any], i: int, sdir: Path, top: Path) -> None:
    if not sdir.is_dir():
        raise CorruptIndexError(
            f"{top}: shard {i} ({sdir}) is missing; the directory was damaged or partly copied. {_REBUILD}"
        )
    try:
        live = live_directory(sdir)
        digest = _sha256(live / MANIFEST)
    except (IndexFormatError, OSError) as exc:
        raise CorruptIndexError(
            f"{top}: shard {i} ({sdir}) has no readable manifest ({exc}). {_REBUILD}"
        ) from exc
    if digest != man["shards"][i]["manifest_sha256"]:
        raise CorruptIndexError(
            f"{top}: shard {i} ({sdir}) is not the shard this collection was built with (its "
            f"manifest changed); shards were replaced, edited or mixed from two builds. {_REBUILD}"
        )


def check_shard(
    man: Mapping[str, Any], i: int, sdir: Path, count: int, names: Sequence[str]
) -> None:
    """Refuse a loaded shard whose size or stages differ from the top manifest's record."""
    want = man["shards"][i]["count"]
    if count != want:
        raise CorruptIndexError(
            f"{sdir}: shard {i} holds {count} documents, the top manifest says {want}. {_REBUILD}"
        )
    expected = [s["name"] for s in man["stages"]]
    if list(names) != expected:
        raise CorruptIndexError(
            f"{sdir}: shard {i} has stages {list(names)}, the top manifest says {expected}. {_REBUILD}"
        )


def _load_shard(sdir: Path, i: int, top: Path, load: Callable[[Path], Collection]) -> Collection:
    try:
        return load(sdir)
    except (IndexMismatchError, CorruptIndexError):
        raise
    except IndexFormatError as exc:
        raise CorruptIndexError(f"{top}: shard {i} ({sdir}) cannot be loaded: {exc}") from exc


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s live manifest is a sharded collection's (False when unreadable)."""
    try:
        man = read_manifest(live_directory(path), required=("format",))
    except IndexFormatError:
        return False
    return man.get("format") == FORMAT


def check_replaceable_sharded(path: str | Path, *, overwrite: bool) -> None:
    """:func:`~relevo.engine.collection.check_replaceable`, also accepting a sharded collection."""
    if is_sharded(path):
        if not overwrite:
            raise IndexFormatError(
                f"{path} already exists (a sharded relevo collection); pass overwrite=True "
                "(CLI: --overwrite) to replace it."
            )
        return
    check_replaceable(path, overwrite=overwrite)


__all__ = [
    "FORMAT",
    "LocalShard",
    "ShardedCollection",
    "check_replaceable_sharded",
    "is_sharded",
    "merge_rankings",
    "shard_bounds",
]
