"""A LlamaIndex retriever (``llama_index.core.retrievers.BaseRetriever``) over relevo.

``pip install 'relevo[llamaindex]'``::

    from relevo.integrations.llamaindex import RelevoRetriever

    retriever = RelevoRetriever(collection="idx/scifact", k=5)
    retriever = RelevoRetriever(url="http://127.0.0.1:8000", token="s3cret", k=5)
    nodes = retriever.retrieve("statins breast cancer")   # or await retriever.aretrieve(...)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..engine.deps import require
from ._client import Result, Searcher

_WHAT = "relevo's LlamaIndex retriever"
require("llama_index.core", extra="llamaindex", what=_WHAT)

from llama_index.core.callbacks import CallbackManager  # noqa: E402 - after the helpful error
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

#: Per-query numbers a language model or an embedder should not read as document text.
_NOT_CONTENT = ["id", "score", "rank"]


def to_node(result: Result) -> NodeWithScore:
    """A ``NodeWithScore`` of a ``TextNode`` whose ``id_`` is the document id."""
    node = TextNode(
        id_=result.id,
        text=result.content,
        metadata=result.metadata_dict(),
        excluded_llm_metadata_keys=list(_NOT_CONTENT),
        excluded_embed_metadata_keys=list(_NOT_CONTENT),
    )
    return NodeWithScore(node=node, score=result.score)


class RelevoRetriever(BaseRetriever):
    """Nodes for a query from a relevo collection or a relevo server, best first.

    The ids (``node.node_id``) and their order are those of ``collection.search(query, k,
    stages=stages, filter=filter)``, i.e. of ``relevo search``; ``NodeWithScore.score``
    is the hit's score and ``node.metadata = {"id", "score", "rank", "title", **the
    document's metadata}`` (the document's own metadata only in-process: the server's
    search does not return it).

    Args:
        collection: a :class:`~relevo.Collection` or the path of a collection directory
            (loaded once, with ``engine``). Exactly one of ``collection`` and ``url``.
        url: the base URL of ``relevo serve``, e.g. ``http://127.0.0.1:8000``.
        token: the server's ``--token``, sent as ``Authorization: Bearer``.
        k: nodes per query.
        filter: a metadata filter, e.g. ``{"year": {"gte": 2020}}``.
        stages: search only these stages (default: all, fused).
        timeout: seconds to wait for the server.
        engine: the :class:`~relevo.Engine` that loads a directory (default ``Engine()``).
        callback_manager, verbose: LlamaIndex's retriever options.

    Raises:
        ConfigError: neither or both of ``collection`` and ``url``.
        RequestError: a refused search (bad filter, unknown stage, missing token, ...).
        ServiceError: the server could not be reached, timed out or failed.
    """

    def __init__(
        self,
        *,
        collection: Any = None,
        url: str | None = None,
        token: str | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - the API's word
        stages: Sequence[str] | None = None,
        timeout: float = 30,
        engine: Any = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self._searcher = Searcher(
            collection=collection,
            url=url,
            token=token,
            timeout=timeout,
            engine=engine,
            extra="llamaindex",
            what=_WHAT,
        )
        self.k = k
        self.filter = dict(filter) if filter is not None else None
        self.stages = list(stages) if stages else None
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._searcher.search(
            query_bundle.query_str, self.k, filter=self.filter, stages=self.stages
        )
        return [to_node(r) for r in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self._searcher.asearch(
            query_bundle.query_str, self.k, filter=self.filter, stages=self.stages
        )
        return [to_node(r) for r in hits]


__all__ = ["RelevoRetriever", "to_node"]
