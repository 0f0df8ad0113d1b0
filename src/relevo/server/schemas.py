"""Request and response bodies of the HTTP API (pydantic models, shown in /openapi.json).

Unknown request fields are ignored, so clients written for hosted APIs (Cohere / Jina
rerank, OpenAI embeddings) can send their extra options.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    type: str = Field(description="The error class, e.g. RequestError, limit_exceeded.")
    message: str
    limit: str | None = Field(None, description="The server limit that was exceeded, if any.")
    value: int | None = Field(None, description="That limit's value.")
    details: list[Any] | None = Field(None, description="Validation errors, field by field.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- search --------------------------------------------------------------------------


class SearchRequest(BaseModel):
    query: str = Field(description="The query text.")
    k: int = Field(10, ge=1, description="Hits to return.")
    filter: dict[str, Any] | None = Field(
        None,
        description='Metadata filter: {"field": value}, {"field": {"in": [...]}}, '
        '{"field": {"gte": x, "lt": y}}; several fields are ANDed.',
    )
    stages: list[str] | None = Field(
        None, description="Use only these stages (default: all, fused)."
    )
    domain: str | None = Field(
        None,
        max_length=200,
        description="The query's domain, for mixture-of-experts (moe:PATH) stages: its "
        "expert encodes the query (default: the collection's domain, else the router).",
    )


class SearchHit(BaseModel):
    id: str
    score: float
    rank: int
    title: str
    text: str


class SearchResponse(BaseModel):
    hits: list[SearchHit]


# -- rerank ----------------------------------------------------------------------------


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str
    title: str | None = None


class RerankRequest(BaseModel):
    query: str
    documents: list[str | RerankDocument] = Field(
        description='Texts, or objects {"text": ..., "title"?: ...}.'
    )
    top_n: int | None = Field(None, ge=1, description="Results to return (default: all).")
    model: str | None = Field(
        None, description="Accepted for compatibility; the server's reranker is used."
    )
    return_documents: bool = Field(False, description="Echo each document in its result.")


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankResponse(BaseModel):
    results: list[RerankResult]
    model: str


# -- embeddings ------------------------------------------------------------------------


class EmbeddingsRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token arrays are refused)."
    )
    model: str | None = Field(
        None,
        description="Accepted for compatibility; a ':query' or ':document' suffix picks the kind.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Must equal the embedder's dimension if given."
    )
    input_type: str | None = Field(
        None,
        description="query or document (also search_query / search_document, "
        "retrieval.query / retrieval.passage); default document.",
    )
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


# -- documents -------------------------------------------------------------------------


class DocumentIn(BaseModel):
    id: str = Field(min_length=1)
    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(BaseModel):
    documents: list[DocumentIn]


class DocumentsResponse(BaseModel):
    added: int
    updated: int
    documents: int = Field(description="Live documents after the write.")


class DeleteRequest(BaseModel):
    ids: list[str]


class DeleteResponse(BaseModel):
    deleted: int
    documents: int = Field(description="Live documents after the delete.")


# -- service ---------------------------------------------------------------------------


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    documents: int
    stages: list[str]
    version: str
    reranker: str | None = None
    embedder: str | None = None


__all__ = [
    "DeleteRequest",
    "DeleteResponse",
    "DocumentIn",
    "DocumentsRequest",
    "DocumentsResponse",
    "Embedding",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "EmbeddingsUsage",
    "ErrorDetail",
    "ErrorResponse",
    "HealthResponse",
    "RerankDocument",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
]
