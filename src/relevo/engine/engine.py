"""The Engine: the public entry point that ties plugins, indexes and search together."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cache import EmbeddingCache, cache_dir, key
from .collection import Collection, Fusion, Stage, check_vectors, embedder_record
from .components import (
    Component,
    Embedder,
    Index,
    NegativeMiner,
    QueryGenerator,
    Reranker,
    embed_documents,
    index_items,
)
from .corpus import corpus_checksum, read_corpus
from .docstore import DocStore
from .errors import ConfigError
from .manager import PluginHost
from .progress import progress_bar
from .registry import Registry
from .types import Document, Hits

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "minilm"


def parse_stage(spec: str, default_embedder: str) -> tuple[str, str, str | None]:
    """``"faiss-flat@bge-small"`` -> (stage name, index format, embedder name).

    A dense format without ``@embedder`` uses the collection's default embedder.
    """
    if not spec or spec != spec.strip():
        raise ConfigError(f"invalid index stage {spec!r}")
    fmt, sep, emb = spec.partition("@")
    return spec, fmt, (emb if sep else None) or None


class Engine:
    """A retrieval engine with its own plugin manager.

    Args:
        plugins: plugin objects to register after the bundled ones (tests, apps).
        load_entrypoints: load third-party plugins from the ``relevo`` entry points.
        load_plugins / disable_plugins / strict: see :class:`~relevo.engine.manager.PluginHost`
            (defaults from ``RELEVO_LOAD_PLUGINS``, ``RELEVO_DISABLE_PLUGINS``,
            ``RELEVO_STRICT_PLUGINS``).
        bundled: register the bundled plugins (default True).
        cache: the cache folder for embeddings and eval indexes (default: user cache).
        progress: show progress bars for long work (the CLI turns this on on a TTY).

    ``Engine(plugins=[...], load_entrypoints=False)`` is hermetic.
    """

    def __init__(
        self,
        *,
        plugins: Sequence[Any] = (),
        load_entrypoints: bool = True,
        load_plugins: Iterable[str] | None = None,
        disable_plugins: Iterable[str] | None = None,
        strict: bool | None = None,
        bundled: bool = True,
        cache: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> None:
        self.host = PluginHost(
            plugins=plugins,
            load_entrypoints=load_entrypoints,
            bundled=bundled,
            load_plugins=load_plugins,
            disable_plugins=disable_plugins,
            strict=strict,
        )
        self.cache_dir = cache_dir(cache)
        self.progress = progress
        self._embedders: dict[str, Embedder] = {}
        #: default options per registered embedder name (``{"moe": {"domain": "scifact"}}``),
        #: applied whenever this engine creates one; options given explicitly win.
        self.embedder_defaults: dict[str, dict[str, Any]] = {}

    # -- plugins & components -------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """The component registry (built on first use)."""
        return self.host.registry

    def plugins(self, *, all: bool = False) -> dict[str, Any]:  # noqa: A002 - mirrors `relevo plugins --all`
        """What is loaded: ``{"plugins": [...], "errors": [...]}`` (bundled ones with ``all=True``)."""
        return self.host.describe(include_bundled=all)

    def names(self, kind: str) -> list[str]:
        """Registered names of a component kind (``embedder``, ``index``, ``reranker``, ...)."""
        return self.registry.names(kind)

    def create(self, kind: str, name: str, **options: Any) -> Component:
        """Instantiate a registered component by name, e.g. ``create("index", "faiss-hnsw")``."""
        return self.registry.create(kind, name, **options)

    def embedder(self, name: str = DEFAULT_EMBEDDER, **options: Any) -> Embedder:
        """The embedder registered as ``name`` (cached per name and options)."""
        options = {**self.embedder_defaults.get(name.partition(":")[0], {}), **options}
        cache_key = key(name, repr(sorted(options.items())))
        if cache_key not in self._embedders:
            emb = self.registry.create("embedder", name, **options)
            assert isinstance(emb, Embedder)  # noqa: S101 - registry checked the base class
            self._embedders[cache_key] = emb
        return self._embedders[cache_key]

    def reranker(self, name: str, **options: Any) -> Reranker:
        """A new reranker instance, e.g. ``reranker("cross-encoder:/path/to/model")``."""
        obj = self.registry.create("reranker", name, **options)
        assert isinstance(obj, Reranker)  # noqa: S101 - registry checked the base class
        return obj

    def miner(self, name: str, **options: Any) -> NegativeMiner:
        """A new hard-negative miner, e.g. ``miner("adaptive-margin", teacher="cross-encoder:DIR")``."""
        obj = self.registry.create("negative_miner", name, **options)
        assert isinstance(obj, NegativeMiner)  # noqa: S101 - registry checked the base class
        return obj

    def query_generator(self, name: str, **options: Any) -> QueryGenerator:
        """A new query generator, e.g. ``query_generator("smollm2", examples=[(doc, query)])``."""
        obj = self.registry.create("query_generator", name, **options)
        assert isinstance(obj, QueryGenerator)  # noqa: S101 - registry checked the base class
        return obj

    # -- building -------------------------------------------------------------------------
    def embed_corpus(
        self, embedder: Embedder, docs: Sequence[Document], checksum: str
    ) -> np.ndarray:
        """Document embeddings, from the user cache when this model already encoded this corpus."""
        cache = EmbeddingCache(self.cache_dir)
        parts = [embedder.fingerprint(), checksum, str(len(docs))]
        if embedder.routes_domains:  # documents' domains (metadata) decide their experts
            field = embedder.domain_field
            parts.append(json.dumps([d.metadata.get(field) for d in docs]))
        ckey = key("doc-embeddings", *parts)
        cached = cache.get(ckey, rows=len(docs))
        if cached is not None:
            log.info("embeddings of %d docs from cache %s", len(docs), cache.path(ckey))
            return cached
        with progress_bar(
            len(docs), f"embedding with {embedder.name or 'embedder'}", enabled=self.progress
        ) as adv:
            vecs = embed_documents(embedder, docs, progress=adv)
        check_vectors(vecs, embedder, len(docs))
        cache.put(ckey, vecs)
        return vecs

    def index(
        self,
        documents: Iterable[Document] | str | os.PathLike[str],
        *,
        stages: Sequence[str] = ("bm25",),
        embedder: str | Embedder | None = None,
        index_options: Mapping[str, Mapping[str, Any]] | None = None,
        fusion: Fusion | None = None,
        limit: int | None = None,
    ) -> Collection:
        """Build an in-memory collection; :meth:`save` writes it.

        Args:
            documents: :class:`Document` objects, or a BEIR ``corpus.jsonl[.gz]`` path / folder.
            stages: index formats, e.g. ``["bm25", "faiss-flat"]``; ``"faiss-flat@NAME"``
                picks an embedder per stage. Several stages are fused at search time.
            embedder: default embedder (name or instance) for dense stages.
            index_options: per-stage options, e.g. ``{"faiss-ivf": {"nprobe": 32}}``.
            fusion: how several stages are fused at search time (default: RRF, k=60;
                ``Fusion(method="linear")`` blends normalised scores).
            limit: read only the first ``limit`` documents of a corpus file.
        """
        if isinstance(documents, (str, os.PathLike)):
            docs, checksum = read_corpus(documents, limit=limit)
        else:
            docs = list(documents)[:limit] if limit is not None else list(documents)
            for i, d in enumerate(docs):
                if not isinstance(d, Document):
                    raise ConfigError(
                        f"documents[{i}] is {type(d).__name__}, expected relevo.Document."
                    )
            checksum = corpus_checksum(docs)
        if not docs:
            raise ConfigError("no documents to index.")
        if not stages:
            raise ConfigError("choose at least one index stage, e.g. stages=['bm25'].")
        store = DocStore(docs)
        default_emb = embedder if embedder is not None else DEFAULT_EMBEDDER
        options = dict(index_options or {})
        unknown = set(options) - set(stages)
        if unknown:
            raise ConfigError(
                f"index_options for {sorted(unknown)}, which are not among the stages {list(stages)}."
            )
        built: list[Stage] = []
        texts: list[Any] | None = None
        for spec in stages:
            name, fmt, emb_name = parse_stage(spec, DEFAULT_EMBEDDER)
            index = self.registry.create("index", fmt, **dict(options.get(spec, {})))
            assert isinstance(index, Index)  # noqa: S101 - registry checked the base class
            if index.input == "text":
                if emb_name:
                    raise ConfigError(f"index {fmt!r} reads text; it takes no embedder ({spec!r}).")
                if index.reads_documents:
                    log.info("indexing %d docs into %s", len(docs), fmt)
                    index.add(index_items(index, docs))
                    built.append(Stage(name, index))
                    continue
                if texts is None:
                    texts = [d.content for d in docs]
                log.info("indexing %d docs into %s", len(docs), fmt)
                index.add(texts)
                built.append(Stage(name, index))
            else:
                emb = self._as_embedder(emb_name or default_emb)
                vecs = self.embed_corpus(emb, docs, checksum)
                log.info("adding %d %d-d vectors to %s", *vecs.shape, fmt)
                index.add(vecs)
                built.append(Stage(name, index, emb, embedder_record(emb)))
        return Collection(store, built, corpus_checksum=checksum, fusion=fusion)

    def _as_embedder(self, emb: str | Embedder) -> Embedder:
        if isinstance(emb, Embedder):
            return emb
        return self.embedder(emb)

    # -- persistence & search ---------------------------------------------------------------
    def save(
        self, collection: Collection, path: str | os.PathLike[str], *, overwrite: bool = False
    ) -> Path:
        """Write ``collection`` to ``path`` atomically (a new generation, then ``CURRENT`` swapped)."""
        return collection.save(Path(path), overwrite=overwrite)

    def load(
        self, path: str | os.PathLike[str], *, embedder: str | Embedder | None = None
    ) -> Collection:
        """Load a collection directory.

        Dense stages get the embedder recorded in their manifest; passing ``embedder``
        asserts which one you expect, and a different one is refused with
        :class:`~relevo.IndexMismatchError`. A sharded collection (``relevo index build
        --shards K``) loads as a :class:`~relevo.engine.sharding.ShardedCollection`, whose
        shards are loaded here and searched as one with the same search API (read-only).
        """
        given: dict[str, Embedder] = {}
        if embedder is not None:
            emb = self._as_embedder(embedder)
            given[getattr(emb, "instance_name", None) or emb.name] = emb
        from .sharding import ShardedCollection, is_sharded

        if is_sharded(path):
            # Typed as a Collection for the callers: it has the search API, refuses writes.
            return ShardedCollection.load(  # type: ignore[return-value]
                Path(path),
                self.registry,
                embedders=given,
                make_embedder=lambda name, opts: self.embedder(name, **opts),
            )
        return Collection.load(
            Path(path),
            self.registry,
            embedders=given,
            make_embedder=lambda name, opts: self.embedder(name, **opts),
        )

    # -- writes -------------------------------------------------------------------------
    def _write(self, collection: Collection | str | os.PathLike[str], verb: str, arg: Any) -> Any:
        """``collection.<verb>(arg)``; a directory is loaded first and committed after."""
        on_disk = not isinstance(collection, Collection)
        col = collection if isinstance(collection, Collection) else self.load(collection)
        out = getattr(col, verb)(arg)
        if on_disk:
            col.commit()
        return out

    def add(
        self, collection: Collection | str | os.PathLike[str], documents: Iterable[Document]
    ) -> int:
        """Add new documents (see :meth:`Collection.add`); a directory is updated and committed."""
        return int(self._write(collection, "add", documents))

    def update(
        self, collection: Collection | str | os.PathLike[str], documents: Iterable[Document]
    ) -> int:
        """Replace documents by id (see :meth:`Collection.update`); a directory is committed."""
        return int(self._write(collection, "update", documents))

    def upsert(
        self, collection: Collection | str | os.PathLike[str], documents: Iterable[Document]
    ) -> tuple[int, int]:
        """Add new ids, replace existing ones: ``(added, updated)``; a directory is committed."""
        added, updated = self._write(collection, "upsert", documents)
        return int(added), int(updated)

    def delete(self, collection: Collection | str | os.PathLike[str], ids: Iterable[str]) -> int:
        """Delete documents by id (see :meth:`Collection.delete`); a directory is committed."""
        return int(self._write(collection, "delete", ids))

    def search(
        self,
        collection: Collection | str | os.PathLike[str],
        query: str,
        *,
        k: int = 10,
        stages: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - the API's word
    ) -> Hits:
        """Search one query in a collection (or a collection directory), optionally filtered."""
        if isinstance(collection, (str, os.PathLike)):  # a loaded sharded collection passes too
            collection = self.load(collection)
        return collection.search(query, k, stages=stages, filter=filter)


__all__ = ["DEFAULT_EMBEDDER", "Engine", "parse_stage"]
