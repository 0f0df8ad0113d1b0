"""The ASGI app: FastAPI routes over one collection, a reranker and an embedder.

Blocking relevo calls run in FastAPI's threadpool (the routes are plain ``def``), so
searches run concurrently; writes take one lock, so they are applied one at a time,
and each is acknowledged only after ``collection.commit()`` made it durable. Errors are
JSON ``{"error": {"type", "message", ...}}``: a relevo error is a 4xx with its message,
a limit names itself and its value, and nothing answers with a traceback.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from ..engine.collection import Collection
from ..engine.components import Embedder, EmbedKind, Reranker
from ..engine.engine import Engine
from ..engine.errors import (
    ConfigError,
    CorpusError,
    DimensionError,
    IndexFormatError,
    RelevoError,
    RequestError,
    UnknownComponentError,
)
from ..engine.rerank import Reranking
from ..engine.types import Document, Hit
from ..engine.version import __version__
from . import schemas
from .config import LimitError, Limits

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: relevo error class -> HTTP status (the most specific class wins; others are 400).
STATUS: tuple[tuple[type[RelevoError], int], ...] = (
    (UnknownComponentError, 404),
    (RequestError, 422),
    (DimensionError, 422),
    (CorpusError, 422),
    (IndexFormatError, 409),
    (ConfigError, 400),
)

_QUERY_INPUT_TYPES = {"query", "search_query", "retrieval.query"}
_DOCUMENT_INPUT_TYPES = {"document", "search_document", "passage", "retrieval.passage", "doc"}
_WORDS = re.compile(r"\w+|[^\w\s]")


def _name(component: Any) -> str:
    return str(getattr(component, "instance_name", None) or component.name)


@dataclass
class ServerState:
    """What the routes share; ``app.state.relevo`` of an app from :func:`create_app`."""

    collection: Collection
    engine: Engine
    limits: Limits
    reranker: Reranker | None = None
    embedder: Embedder | None = None
    token: str | None = None
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    _reranking: Reranking | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def run_manifest(self) -> dict[str, Any]:
        """What this server runs: library versions, model digests, index checksums, limits."""
        from ..engine.runinfo import collection_facts, digest, reranker_facts, stack

        models, index = collection_facts(self.collection)
        if self.reranker is not None:
            models["reranker"] = reranker_facts(self.reranker)
        if self.embedder is not None:
            models["embeddings"] = {
                "embedder": _name(self.embedder),
                "fingerprint": digest(self.embedder.fingerprint()),
            }
        return {
            "stack": stack(),
            "models": models,
            "index": index,
            "params": {"limits": asdict(self.limits), "auth": self.token is not None},
        }

    def reranking(self) -> Reranking:
        """The pointwise / listwise / pairwise runner of :attr:`reranker` (built once)."""
        if self.reranker is None:
            raise NotConfigured(
                "this server has no reranker; start it with --reranker NAME "
                "(e.g. cross-encoder:DIR) to use /v1/rerank."
            )
        if self._reranking is None:
            self._reranking = Reranking(self.reranker)
        return self._reranking

    def flush(self) -> None:
        """Make every write durable (``collection.commit()``); called on shutdown."""
        commit = getattr(self.collection, "commit", None)
        if commit is None or self.collection.path is None:
            return
        with self.write_lock:
            commit()
        log.info("flushed collection %s", self.collection.path)


class NotConfigured(RelevoError):
    """The endpoint needs a component the server was not started with."""


def _json_safe(value: Any) -> Any:
    """``value`` with what strict UTF-8 JSON cannot hold made printable.

    A validation error echoes the request's input, which JSON parsing lets hold NaN,
    infinities and lone surrogate escapes (``"\\ud800"``); rendered as they are they
    turned a 422 into a 500. Non-finite floats become their names, surrogates escapes.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": type_, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return JSONResponse(
        {"error": _json_safe(jsonable_encoder(body))}, status_code=status, headers=headers
    )


def status_of(exc: RelevoError) -> int:
    if isinstance(exc, LimitError):
        return exc.status_code
    if isinstance(exc, NotConfigured):
        return 404
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400


class BodyLimit:
    """Pure ASGI middleware: answers 413 for a body over ``max_bytes`` before any route reads it.

    A declared ``Content-Length`` is checked first; a streamed (chunked) body is read up
    to the limit and handed on whole, so memory stays bounded by the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "limit_exceeded",
            f"the request body is larger than the server's limit max_body_bytes={self.max_bytes}; "
            "send less (or start the server with a higher limit).",
            limit="max_body_bytes",
            value=self.max_bytes,
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                await error_response(400, "bad_request", "invalid Content-Length header")(
                    scope, receive, send
                )
                return
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _install_error_handlers(app: FastAPI) -> None:
    async def relevo_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RelevoError)  # noqa: S101 - registered for RelevoError
        extra: dict[str, Any] = {}
        type_ = type(exc).__name__
        if isinstance(exc, LimitError):
            extra = {"limit": exc.limit, "value": exc.value}
            type_ = "limit_exceeded"
        return error_response(status_of(exc), type_, str(exc), **extra)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it
        errors = jsonable_encoder(exc.errors())
        ctype = request.headers.get("content-type", "")
        if request.method != "GET" and "json" not in ctype.lower():
            # FastAPI parses JSON only when declared (a browser form cannot pose as an API call)
            return error_response(
                422,
                "validation_error",
                f"the body must be JSON sent with 'Content-Type: application/json' (got {ctype or 'none'!r}).",
                details=errors,
            )
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:5]
        )
        return error_response(422, "validation_error", f"invalid request: {shown}", details=errors)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)  # noqa: S101 - registered for it
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, "http_error", str(exc.detail), headers=headers)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(
            500, "internal_error", "internal server error (the server log has the details)"
        )

    app.add_exception_handler(RelevoError, relevo_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


def _auth_dependency(token: str) -> Callable[..., Awaitable[None]]:
    bearer = HTTPBearer(auto_error=False, description="The server's --token.")
    expected = token.encode("utf-8")

    async def check(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008 - FastAPI's idiom
    ) -> None:
        given = credentials.credentials.encode("utf-8") if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401,
                "missing or wrong bearer token: send the header 'Authorization: Bearer TOKEN'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def _embed_kind(req: schemas.EmbeddingsRequest) -> EmbedKind:
    if req.input_type is not None:
        kind = req.input_type.strip().lower()
        if kind in _QUERY_INPUT_TYPES:
            return "query"
        if kind in _DOCUMENT_INPUT_TYPES:
            return "document"
        raise RequestError(
            f"input_type {req.input_type!r} is not one of query, document "
            "(or search_query, search_document, retrieval.query, retrieval.passage)."
        )
    suffix = (req.model or "").rpartition(":")[2].strip().lower()
    return "query" if suffix == "query" else "document"


def _routes(state: ServerState) -> APIRouter:
    router = APIRouter()
    limits = state.limits
    col = state.collection
    # The write verbs (add / update / delete / commit) are typed loosely here so this
    # module does not pin their exact signatures.
    writer: Any = col

    @router.post("/v1/search", response_model=schemas.SearchResponse, tags=["search"])
    def search(req: schemas.SearchRequest) -> dict[str, Any]:
        """Search the collection: the top ``k`` hits, fused over its stages."""
        limits.check("max_query_chars", len(req.query), "the query length in characters")
        limits.check("max_k", req.k, "k")
        kwargs: dict[str, Any] = {}
        if req.filter is not None:
            kwargs["filter"] = req.filter
        if req.stages:
            kwargs["stages"] = req.stages
        if req.domain is not None:
            kwargs["domain"] = req.domain
        hits = col.search(req.query, req.k, **kwargs)
        return {"hits": [h.to_dict() for h in hits]}

    @router.post(
        "/v1/rerank",
        response_model=schemas.RerankResponse,
        response_model_exclude_none=True,
        tags=["rerank"],
    )
    def rerank(req: schemas.RerankRequest) -> dict[str, Any]:
        """Rerank documents for a query (the shape of the hosted Cohere / Jina rerank APIs)."""
        runner = state.reranking()
        limits.check("max_query_chars", len(req.query), "the query length in characters")
        limits.check("max_rerank_documents", len(req.documents), "the number of documents")
        given: list[dict[str, Any]] = []
        hits = []
        for i, doc in enumerate(req.documents):
            if isinstance(doc, str):
                given.append({"text": doc})
                content = doc
            else:
                given.append(doc.model_dump(exclude_none=True))
                content = f"{doc.title} {doc.text}" if doc.title else doc.text
            hits.append(Hit(id=str(i), score=0.0, rank=i + 1, text=content))
        result = runner(req.query, hits)
        ranked = result.hits[: req.top_n] if req.top_n else result.hits
        results = []
        for h in ranked:
            item: dict[str, Any] = {"index": int(h.id), "relevance_score": float(h.score)}
            if req.return_documents:
                item["document"] = given[int(h.id)]
            results.append(item)
        return {"results": results, "model": _name(runner.reranker)}

    @router.post("/v1/embeddings", response_model=schemas.EmbeddingsResponse, tags=["embeddings"])
    def embeddings(req: schemas.EmbeddingsRequest) -> dict[str, Any]:
        """OpenAI-compatible embeddings (``document`` kind unless ``input_type`` says query)."""
        if state.embedder is None:
            raise NotConfigured(
                "this server has no embedder: its collection has no dense stage. Start it with "
                "--embedder NAME to use /v1/embeddings."
            )
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if any(not isinstance(t, str) for t in texts):
            raise RequestError("token arrays are not supported; send the input as text.")
        limits.check("max_embedding_inputs", len(texts), "the number of inputs")
        kind = _embed_kind(req)
        vecs = state.embedder.embed([str(t) for t in texts], kind=kind)
        if req.dimensions is not None and req.dimensions != vecs.shape[1]:
            raise RequestError(
                f"dimensions={req.dimensions} is not available: {_name(state.embedder)} "
                f"produces {vecs.shape[1]}-d vectors."
            )
        data = []
        for i, row in enumerate(vecs):
            if req.encoding_format == "base64":
                packed = np.ascontiguousarray(row, dtype="<f4").tobytes()
                value: Any = base64.b64encode(packed).decode("ascii")
            else:
                value = row.astype(np.float32).tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(len(_WORDS.findall(str(t))) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": _name(state.embedder),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @router.post("/v1/documents", response_model=schemas.DocumentsResponse, tags=["documents"])
    def write_documents(req: schemas.DocumentsRequest) -> dict[str, Any]:
        """Add new ids and update existing ones; answers once the write is durable."""
        limits.check("max_write_documents", len(req.documents), "the number of documents")
        seen: set[str] = set()
        for d in req.documents:
            if d.id in seen:
                raise RequestError(f"document id {d.id!r} appears twice in one request.")
            seen.add(d.id)
        docs = [
            Document(id=d.id, text=d.text, title=d.title, metadata=d.metadata)
            for d in req.documents
        ]
        with state.write_lock:
            new = [d for d in docs if col.docstore.by_id(d.id) is None]
            old = [d for d in docs if col.docstore.by_id(d.id) is not None]
            added = writer.add(new) if new else 0
            updated = writer.update(old) if old else 0
            writer.commit()
            count = len(col)
        return {"added": int(added), "updated": int(updated), "documents": count}

    @router.delete("/v1/documents", response_model=schemas.DeleteResponse, tags=["documents"])
    def delete_documents(req: schemas.DeleteRequest) -> dict[str, Any]:
        """Delete documents by id (unknown ids are skipped); answers once durable."""
        limits.check("max_write_documents", len(req.ids), "the number of ids")
        with state.write_lock:
            deleted = writer.delete(list(req.ids))
            writer.commit()
            count = len(col)
        return {"deleted": int(deleted), "documents": count}

    @router.get("/v1/plugins", tags=["service"])
    def plugins(all: bool = False) -> dict[str, Any]:  # noqa: A002 - mirrors `relevo plugins --all`
        """Loaded plugins, their components and load errors (as `relevo plugins`)."""
        out: dict[str, Any] = json.loads(json.dumps(state.engine.plugins(all=all), default=str))
        return out

    return router


def create_app(
    collection: Collection | str | os.PathLike[str],
    *,
    engine: Engine | None = None,
    reranker: Reranker | str | None = None,
    embedder: Embedder | str | None = None,
    token: str | None = None,
    limits: Limits | None = None,
    title: str = "relevo",
) -> FastAPI:
    """An ASGI app serving ``collection``; mount it in another app or run it with uvicorn.

    Args:
        collection: a :class:`~relevo.Collection` or a collection directory (loaded
            with ``engine``).
        engine: the engine for loading, components and ``/v1/plugins`` (default ``Engine()``).
        reranker: the reranker of ``/v1/rerank`` (an instance or a registered name);
            without one the endpoint answers 404.
        embedder: the embedder of ``/v1/embeddings`` (default: the embedder of the
            collection's first dense stage; without either the endpoint answers 404).
        token: require ``Authorization: Bearer TOKEN`` on every route but ``/healthz``
            (and the OpenAPI docs).
        limits: request limits (default :class:`Limits()`).
        title: the OpenAPI title.

    Writes become durable on ``commit()``; the app's lifespan calls it on shutdown. A
    host app that mounts this one (Starlette does not run a mounted app's lifespan)
    should call ``app.state.relevo.flush()`` from its own shutdown.
    """
    engine = engine or Engine()
    if not isinstance(collection, Collection):
        collection = engine.load(collection)
    if isinstance(reranker, str):
        reranker = engine.reranker(reranker)
    if isinstance(embedder, str):
        embedder = engine.embedder(embedder)
    if embedder is None:
        embedder = next((s.embedder for s in collection.stages.values() if s.dense), None)
    if token is not None and not token:
        raise ConfigError("the server token is empty; give a non-empty token or none.")
    state = ServerState(
        collection, engine, limits or Limits(), reranker=reranker, embedder=embedder, token=token
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.manifest = await run_in_threadpool(state.run_manifest)
        log.info("serving %s: %s", state.collection.path, json.dumps(state.manifest))
        yield
        try:
            await run_in_threadpool(state.flush)
        except Exception:  # noqa: BLE001 - shutdown goes on; the log says what was not flushed
            log.exception("could not flush the collection on shutdown")

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": schemas.ErrorResponse, "description": what}
        for code, what in (
            (400, "Bad request"),
            (409, "The index directory is busy or cannot be written"),
            (401, "Missing or wrong bearer token"),
            (404, "Not configured or unknown name"),
            (413, "Over a size limit"),
            (422, "Invalid request or a parameter out of range"),
        )
    }
    app = FastAPI(
        title=title,
        version=__version__,
        description="relevo: search, rerank, embed and update a collection over HTTP.",
        lifespan=lifespan,
        responses=error_responses,
    )
    app.state.relevo = state
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=state.limits.max_body_bytes)

    @app.get("/healthz", response_model=schemas.HealthResponse, tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness and what is served (no token needed)."""
        return {
            "status": "ok",
            "documents": len(state.collection),
            "stages": list(state.collection.stages),
            "version": __version__,
            "reranker": _name(state.reranker) if state.reranker is not None else None,
            "embedder": _name(state.embedder) if state.embedder is not None else None,
        }

    dependencies = [Depends(_auth_dependency(token))] if token else []

    @app.get("/v1/manifest", tags=["service"], dependencies=dependencies)
    def manifest() -> dict[str, Any]:
        """The run manifest recorded at start (versions, model digests, index checksum, limits)."""
        return state.manifest or state.run_manifest()

    app.include_router(_routes(state), dependencies=dependencies)
    return app


__all__ = ["BodyLimit", "ServerState", "create_app", "status_of"]
