"""What a server is allowed to accept, where it may listen, and the collection it serves.

Nothing here imports FastAPI: the CLI checks its flags (a non-loopback bind, the
limits) before it needs the ``server`` extra.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.collection import Collection, Stage, check_replaceable, embedder_record
from ..engine.components import Embedder, Index
from ..engine.corpus import corpus_checksum
from ..engine.docstore import DocStore
from ..engine.engine import DEFAULT_EMBEDDER, parse_stage
from ..engine.errors import ConfigError, RequestError

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.engine import Engine

log = logging.getLogger(__name__)

#: Limits whose excess is "too much content" (HTTP 413); the others are a parameter
#: out of range (HTTP 422).
_TOO_LARGE = {
    "max_body_bytes",
    "max_query_chars",
    "max_rerank_documents",
    "max_embedding_inputs",
    "max_write_documents",
}


class LimitError(RequestError):
    """A request over one of the server's :class:`Limits`.

    Attributes:
        limit: the limit's name (a field of :class:`Limits`, e.g. ``"max_k"``).
        value: the limit's value.
        got: what the request asked for.
        status_code: 413 for content that is too large, 422 for a parameter out of range.
    """

    def __init__(self, limit: str, value: int, got: int, what: str) -> None:
        super().__init__(
            f"{what} is {got}, more than the server's limit {limit}={value}; "
            "send less (or start the server with a higher limit)."
        )
        self.limit = limit
        self.value = value
        self.got = got
        self.status_code = 413 if limit in _TOO_LARGE else 422


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask; each excess is a 4xx naming the limit.

    Attributes:
        max_body_bytes: request body size (HTTP 413).
        max_query_chars: characters of a search or rerank query (413).
        max_k: hits per search (422).
        max_rerank_documents: documents in one rerank request (413).
        max_embedding_inputs: texts in one embeddings request (413).
        max_write_documents: documents (or ids) in one write or delete (413).
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_query_chars: int = 10_000
    max_k: int = 1_000
    max_rerank_documents: int = 1_000
    max_embedding_inputs: int = 256
    max_write_documents: int = 1_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"server limit {f.name} must be a positive integer, got {value!r}."
                )

    def check(self, limit: str, got: int, what: str) -> None:
        """Raise :class:`LimitError` if ``got`` exceeds the limit named ``limit``."""
        value = getattr(self, limit)
        if got > value:
            raise LimitError(limit, value, got, what)

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback interface only (``localhost``, 127.0.0.0/8, ``::1``).

    Other host names count as non-loopback: they may resolve to anything.
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, allow_remote: bool) -> None:
    """Refuse a non-loopback bind unless it was asked for explicitly.

    Raises:
        ConfigError: ``host`` is not a loopback address and ``allow_remote`` is False.
    """
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host!r}, which is not a loopback address: other machines could "
            "reach the server. Pass --allow-remote to do it anyway (and set --token), or bind to 127.0.0.1."
        )


def open_collection(
    engine: Engine,
    path: str | Path,
    *,
    create: bool = False,
    stages: Sequence[str] = ("bm25",),
    embedder: str | Embedder | None = None,
) -> Collection:
    """Load the collection at ``path``; with ``create``, start an empty one there if there is none.

    An existing collection is opened as it is (``stages`` and ``embedder`` are then
    ignored), so a service restarted with the same command line keeps its documents.

    Args:
        engine: the engine whose registry creates the indexes and embedders.
        path: the collection directory.
        create: write an empty collection at ``path`` when it is missing or an empty folder.
        stages: index formats of a new collection (``FORMAT@EMBEDDER`` picks an embedder).
        embedder: default embedder of a new collection's dense stages (default ``minilm``).

    Raises:
        IndexFormatError: ``path`` is not a collection (and ``create`` is off), or holds
            other files.
    """
    target = Path(path)
    fresh = not target.exists() or (target.is_dir() and not any(target.iterdir()))
    if not create or not fresh:
        if not target.exists():
            raise ConfigError(
                f"{target} does not exist; build a collection with `relevo index build` "
                "or pass --create to start an empty one."
            )
        if create:
            check_replaceable(target, overwrite=True)  # a folder of other files is refused
        return engine.load(target)
    if not stages:
        raise ConfigError("choose at least one index stage for a new collection, e.g. bm25.")
    built: list[Stage] = []
    for spec in stages:
        name, fmt, emb_name = parse_stage(spec, DEFAULT_EMBEDDER)
        index = engine.create("index", fmt)
        assert isinstance(index, Index)  # noqa: S101 - registry checked the base class
        if index.input == "text":
            if emb_name:
                raise ConfigError(f"index {fmt!r} reads text; it takes no embedder ({spec!r}).")
            built.append(Stage(name, index))
            continue
        choice = emb_name or embedder or DEFAULT_EMBEDDER
        emb = choice if isinstance(choice, Embedder) else engine.embedder(choice)
        built.append(Stage(name, index, emb, embedder_record(emb)))
    collection = Collection(DocStore(), built, corpus_checksum=corpus_checksum([]))
    collection.save(target)
    log.info("created an empty collection at %s (stages %s)", target, list(collection.stages))
    return engine.load(target)


__all__ = ["LimitError", "Limits", "check_bind", "is_loopback", "open_collection"]
