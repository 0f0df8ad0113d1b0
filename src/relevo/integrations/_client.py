"""The search both retrievers share: in-process over a collection, or over HTTP.

:class:`Searcher` answers one query with :class:`Result` objects, the same hits as
``collection.search(query, k, stages=..., filter=...)`` (and so as ``relevo search``),
whether the collection is in this process or behind ``relevo serve``
(``POST {url}/v1/search``, see :mod:`relevo.server.app`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.deps import require
from ..engine.errors import ConfigError, RequestError, ServiceError

if TYPE_CHECKING:  # pragma: no cover
    import httpx

#: Keys every result's metadata carries; a document's own metadata cannot override them.
RESERVED = ("id", "score", "rank", "title")


@dataclass(frozen=True)
class Result:
    """One hit, in the shape both integrations turn into their document type.

    Attributes:
        id, score, rank, title, text: those of the :class:`~relevo.Hit`.
        metadata: the document's metadata from the docstore (in-process only: the
            server's ``/v1/search`` does not return metadata).
    """

    id: str
    score: float
    rank: int
    title: str = ""
    text: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str:
        """Title and text separated by a blank line (the text alone without a title)."""
        return f"{self.title}\n\n{self.text}" if self.title else self.text

    def metadata_dict(self) -> dict[str, Any]:
        """``{"id", "score", "rank", "title", **document metadata}``."""
        out: dict[str, Any] = {"id": self.id, "score": self.score, "rank": self.rank}
        out["title"] = self.title
        out.update((k, v) for k, v in self.metadata.items() if k not in RESERVED)
        return out


class Searcher:
    """Search a collection in this process or a relevo server; one of the two.

    Args:
        collection: a :class:`~relevo.Collection` (anything with its ``search``) or the
            path of a collection directory, loaded once with ``engine``.
        url: the base URL of ``relevo serve`` (``http://127.0.0.1:8000``).
        token: sent as ``Authorization: Bearer TOKEN`` (URL only).
        timeout: seconds to wait for the server (URL only).
        engine: the :class:`~relevo.Engine` that loads a directory (default ``Engine()``).
        extra: the ``relevo[extra]`` named when httpx is missing.
        what: the integration, named in errors.

    Raises:
        ConfigError: neither or both of ``collection`` and ``url``, or a bad option.
    """

    def __init__(
        self,
        *,
        collection: Any = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30,
        engine: Any = None,
        extra: str,
        what: str,
    ) -> None:
        if (collection is None) == (url is None):
            raise ConfigError(
                f"{what} needs exactly one of collection= (a relevo.Collection or a "
                "collection directory) or url= (a relevo server, e.g. http://127.0.0.1:8000)."
            )
        if not timeout > 0:
            raise ConfigError(f"{what}: timeout must be a positive number of seconds.")
        self.what = what
        self.token = token
        self.timeout = timeout
        self.url: str | None = None
        self.collection: Any = None
        if url is not None:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigError(f"{what}: url must start with http:// or https://, got {url!r}.")
            require("httpx", extra=extra, what=what)
            self.url = url.rstrip("/")
        elif isinstance(collection, (str, os.PathLike)):
            if engine is None:
                from ..engine.engine import Engine

                engine = Engine()
            self.collection = engine.load(collection)
        elif callable(getattr(collection, "search", None)):
            self.collection = collection
        else:
            raise ConfigError(
                f"{what}: collection must be a relevo.Collection or a collection directory, "
                f"got {type(collection).__name__}."
            )

    def __repr__(self) -> str:
        where = self.url if self.url is not None else repr(self.collection)
        return f"Searcher({where})"

    # -- in-process ---------------------------------------------------------------------
    def _local(
        self,
        query: str,
        k: int,
        filter: Mapping[str, Any] | None,  # noqa: A002 - the API's word
        stages: Sequence[str] | None,
    ) -> list[Result]:
        col = self.collection
        hits = col.search(query, k, stages=list(stages) if stages else None, filter=filter)
        docstore = getattr(col, "docstore", None)
        out = []
        for h in hits:
            doc = docstore.by_id(h.id) if docstore is not None else None
            meta = doc.metadata if doc is not None else {}
            out.append(Result(h.id, float(h.score), int(h.rank), h.title, h.text, dict(meta)))
        return out

    # -- over HTTP ----------------------------------------------------------------------
    def _request(
        self,
        query: str,
        k: int,
        filter: Mapping[str, Any] | None,  # noqa: A002 - the API's word
        stages: Sequence[str] | None,
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        body: dict[str, Any] = {"query": query, "k": k}
        if filter is not None:
            body["filter"] = dict(filter)
        if stages:
            body["stages"] = list(stages)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return f"{self.url}/v1/search", body, headers

    def _transport_error(self, endpoint: str, exc: Exception) -> ServiceError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return ServiceError(
                f"{self.what}: the relevo server at {endpoint} did not answer within "
                f"{self.timeout}s; raise timeout= or check the server."
            )
        return ServiceError(
            f"{self.what}: could not reach a relevo server at {endpoint} "
            f"({type(exc).__name__}: {exc}); is `relevo serve` running there?"
        )

    def _parse(self, endpoint: str, response: httpx.Response) -> list[Result]:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and error.get("message"):
                detail = f"{error.get('type', 'error')}: {error['message']}"
            else:
                detail = (response.text or response.reason_phrase)[:300]
            msg = f"{self.what}: the relevo server at {endpoint} answered HTTP {status} ({detail})"
            if status == 401:
                msg += "; pass the server's token as token=."
            if status < 500:
                raise RequestError(msg)
            raise ServiceError(msg)
        bad = ServiceError(
            f"{self.what}: {endpoint} did not answer like a relevo server "
            f'(expected {{"hits": [{{"id", "score", "rank", ...}}]}}, got {response.text[:200]!r}).'
        )
        hits = body.get("hits") if isinstance(body, dict) else None
        if not isinstance(hits, list):
            raise bad
        try:
            return [
                Result(
                    str(h["id"]),
                    float(h["score"]),
                    int(h["rank"]),
                    str(h.get("title") or ""),
                    str(h.get("text") or ""),
                )
                for h in hits
            ]
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise bad from exc

    # -- the two entry points -----------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - the API's word
        stages: Sequence[str] | None = None,
    ) -> list[Result]:
        """The top ``k`` hits for ``query``, best first.

        Raises:
            RequestError: the engine or the server refused the request (bad k, bad
                filter, unknown stage, missing or wrong token, ...).
            ServiceError: the server could not be reached, timed out or failed.
        """
        if self.url is None:
            return self._local(query, k, filter, stages)
        import httpx

        endpoint, body, headers = self._request(query, k, filter, stages)
        try:
            response = httpx.post(endpoint, json=body, headers=headers, timeout=self.timeout)
        except httpx.TransportError as exc:
            raise self._transport_error(endpoint, exc) from exc
        return self._parse(endpoint, response)

    async def asearch(
        self,
        query: str,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - the API's word
        stages: Sequence[str] | None = None,
    ) -> list[Result]:
        """:meth:`search` without blocking the event loop (httpx's async client for a URL,
        a worker thread for a collection in this process)."""
        if self.url is None:
            return await asyncio.to_thread(self._local, query, k, filter, stages)
        import httpx

        endpoint, body, headers = self._request(query, k, filter, stages)
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(endpoint, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise self._transport_error(endpoint, exc) from exc
        return self._parse(endpoint, response)


__all__ = ["Result", "Searcher"]
