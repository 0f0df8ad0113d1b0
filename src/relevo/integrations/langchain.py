"""A LangChain retriever (``langchain_core.retrievers.BaseRetriever``) over relevo.

``pip install 'relevo[langchain]'``::

    from relevo.integrations.langchain import RelevoRetriever

    retriever = RelevoRetriever(collection="idx/scifact", k=5)
    retriever = RelevoRetriever(url="http://127.0.0.1:8000", token="s3cret", k=5)
    docs = retriever.invoke("statins breast cancer")      # or await retriever.ainvoke(...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engine.deps import require
from ._client import Result, Searcher

_WHAT = "relevo's LangChain retriever"
require("langchain_core", extra="langchain", what=_WHAT)

from langchain_core.documents import Document  # noqa: E402 - after the helpful error
from langchain_core.retrievers import BaseRetriever  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )


def to_document(result: Result) -> Document:
    """A LangChain ``Document``: title and text as ``page_content``, the hit in ``metadata``."""
    return Document(page_content=result.content, metadata=result.metadata_dict(), id=result.id)


class RelevoRetriever(BaseRetriever):
    """Documents for a query from a relevo collection or a relevo server, best first.

    The ids and their order are those of ``collection.search(query, k, stages=stages,
    filter=filter)``, i.e. of ``relevo search``. Each ``Document`` has ``id`` set and
    ``metadata = {"id", "score", "rank", "title", **the document's metadata}`` (the
    document's own metadata only in-process: the server's search does not return it).

    Attributes:
        collection: a :class:`~relevo.Collection` or the path of a collection directory
            (loaded once, with ``engine``). Exactly one of ``collection`` and ``url``.
        url: the base URL of ``relevo serve``, e.g. ``http://127.0.0.1:8000``.
        token: the server's ``--token``, sent as ``Authorization: Bearer``.
        k: documents per query.
        filter: a metadata filter, e.g. ``{"year": {"gte": 2020}}``.
        stages: search only these stages (default: all, fused).
        timeout: seconds to wait for the server.
        engine: the :class:`~relevo.Engine` that loads a directory (default ``Engine()``).

    Raises:
        ConfigError: on construction, for neither or both of ``collection`` and ``url``.
        RequestError: a refused search (bad filter, unknown stage, missing token, ...).
        ServiceError: the server could not be reached, timed out or failed.
    """

    collection: Any = None
    url: str | None = None
    token: str | None = None
    k: int = 10
    filter: dict[str, Any] | None = None
    stages: list[str] | None = None
    timeout: float = 30
    engine: Any = None

    _searcher: Searcher | None = None

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # Built here, not in a validator, so a ConfigError is not wrapped in a
        # pydantic ValidationError; _get() builds it for copies made without __init__.
        self._searcher = self._build()

    def _build(self) -> Searcher:
        return Searcher(
            collection=self.collection,
            url=self.url,
            token=self.token,
            timeout=self.timeout,
            engine=self.engine,
            extra="langchain",
            what=_WHAT,
        )

    def _get(self) -> Searcher:
        if self._searcher is None:
            self._searcher = self._build()
        return self._searcher

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self._get().search(query, self.k, filter=self.filter, stages=self.stages)
        return [to_document(r) for r in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = await self._get().asearch(query, self.k, filter=self.filter, stages=self.stages)
        return [to_document(r) for r in hits]


__all__ = ["RelevoRetriever", "to_document"]
