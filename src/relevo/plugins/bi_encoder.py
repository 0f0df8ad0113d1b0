"""Bundled plugin: any registered embedder as a pointwise reranker (``bi-encoder:EMBEDDER``).

``bi-encoder:bge-small`` scores a (query, document) pair by the cosine of the two
embeddings of the embedder named after the colon (``bi-encoder:minilm``,
``bi-encoder:sentence-transformers:PATH``, ...), the query embedded as a query (with
its prompt / prefix) and the document as a document. Uses:

- a **teacher** for MarginMSE distillation (``relevo train embedder --loss margin-mse
  --teacher bi-encoder:bge-small``, ``relevo adapt --reranker bi-encoder:bge-small``):
  a stronger (or differently trained) bi-encoder's margins are learnt by the student,
  which a cross-encoder trained on other data cannot always offer;
- a second stage over a cheap first stage (``--rerank bi-encoder:bge-small`` over BM25),
  or a teacher for the ``adaptive-margin`` miner.

Scores are cosines in [-1, 1]: when used as a MarginMSE teacher, train the student
with ``--scale 1`` (its own cosine margins, the teacher's units); the trainer does so
by default for this teacher. Document embeddings are kept in an LRU cache of
``cache_size`` texts (distillation and reranking score the same documents many times)
and, with ``persist`` (the default), in the user cache folder keyed by the embedder's
fingerprint and each text's SHA-256 (:class:`relevo.engine.cache.TextEmbeddingStore`),
so another process (the next eval, an ``adapt`` run's dev check and its training)
reads a document's vector instead of re-encoding it.

Importing this module imports no model library.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from ..engine.cache import TextEmbeddingStore, cache_dir, key
from ..engine.components import Embedder, PointwiseReranker
from ..engine.errors import ConfigError
from ..engine.hookspecs import Register, hookimpl


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


class BiEncoderReranker(PointwiseReranker):
    """Cosine of query and document embeddings of one embedder.

    Args:
        embedder: the embedder (or its registered name, ``bi-encoder:NAME``).
        cache_size: documents whose embeddings are kept in memory (0: none).
        batch_size: documents per embedding call (default: the embedder's).
        persist: also keep document vectors on disk under the user cache folder.
    """

    name: ClassVar[str] = "bi-encoder"
    spec_option: ClassVar[str | None] = "embedder"
    component_options: ClassVar[Mapping[str, str]] = {"embedder": "embedder"}
    #: What :meth:`score` returns; the embedder trainer reads it to pick MarginMSE's scale.
    similarity: ClassVar[str] = "cosine"

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        cache_size: int = 100_000,
        batch_size: int | None = None,
        persist: bool = True,
    ) -> None:
        if embedder is None:
            raise ConfigError(
                "bi-encoder needs an embedder: name it after the colon, e.g. "
                "bi-encoder:bge-small or bi-encoder:sentence-transformers:PATH."
            )
        if not isinstance(embedder, Embedder):
            raise ConfigError(
                f"bi-encoder: embedder must be an embedder (or its registered name), got "
                f"{type(embedder).__name__}."
            )
        if getattr(embedder, "routes_domains", False):
            raise ConfigError(
                f"bi-encoder: {getattr(embedder, 'instance_name', embedder.name)!r} routes by "
                "domain and needs each document's domain; rerank with it through a dense index instead."
            )
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError(
                f"bi-encoder: cache_size must be an integer >= 0, got {cache_size!r}."
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ConfigError(
                f"bi-encoder: batch_size must be an integer >= 1, got {batch_size!r}."
            )
        self.embedder = embedder
        self.cache_size = cache_size
        self.embed_batch_size = batch_size
        self.persist = bool(persist)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._store: TextEmbeddingStore | None = None

    def _disk(self) -> TextEmbeddingStore | None:
        """The on-disk store, once the embedder's dimension is known."""
        if self._store is None and self.persist and self.embedder.dim:
            name = key("bi-encoder-documents", self.embedder.fingerprint())
            self._store = TextEmbeddingStore(cache_dir(), name, self.embedder.dim)
        return self._store

    def load(self) -> None:
        load = getattr(self.embedder, "load", None)
        if callable(load):
            load()

    def describe(self) -> dict[str, object]:
        out = dict(super().describe())
        out["embedder"] = self.embedder.describe()
        return out

    def _documents(self, docs: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in docs if t not in self._cache))
        store = self._disk() if missing else None
        fresh = store.get_many(missing) if store is not None else {}
        todo = [t for t in missing if t not in fresh]
        if todo:
            vecs = _unit(
                self.embedder.embed(todo, kind="document", batch_size=self.embed_batch_size)
            )
            computed = dict(zip(todo, vecs, strict=True))
            fresh.update(computed)
            store = self._disk()
            if store is not None:
                store.put_many(computed)
        rows = []
        for text in docs:
            vec = fresh.get(text)
            if vec is None:
                vec = self._cache[text]
                self._cache.move_to_end(text)
            rows.append(vec)
        if self.cache_size:
            for text, vec in fresh.items():
                self._cache[text] = vec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return np.stack(rows)

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        docs = list(docs)
        if not docs:
            return []
        q = _unit(self.embedder.embed([query], kind="query"))[0]
        return [float(x) for x in self._documents(docs) @ q]


@hookimpl
def register_rerankers(register: Register) -> None:
    register(
        BiEncoderReranker,
        "bi-encoder",
        description="any registered embedder as a pointwise reranker (cosine): bi-encoder:<embedder>",
    )
