"""Bundled plugin: ``relevo serve DIR``, the HTTP server over one collection.

The command checks the bind address and the limits before it imports the web stack
(FastAPI + uvicorn, the ``server`` extra), so a refused flag never needs them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..engine.errors import ConfigError
from ..engine.hookspecs import hookimpl
from ..server.config import Limits, check_bind, is_loopback, open_collection

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.commands import CommandHelpers

log = logging.getLogger(__name__)

_DEFAULTS = Limits()


def _split(values: tuple[str, ...]) -> list[str]:
    """``--stages bm25 --stages faiss-flat`` and ``--stages bm25,faiss-flat`` alike."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _serve_command(helpers: CommandHelpers) -> click.Command:
    positive = click.IntRange(min=1)

    @click.command("serve")
    @click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option(
        "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
    )
    @click.option(
        "--token",
        envvar="RELEVO_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' (default: $RELEVO_TOKEN; /healthz stays open).",
    )
    @click.option(
        "--create",
        is_flag=True,
        help="Start an empty collection at DIR if there is none (an existing one is opened as is).",
    )
    @click.option(
        "--stages",
        multiple=True,
        default=("bm25",),
        show_default=True,
        help="Index stages of a --create'd collection (repeat, or comma-separated; FORMAT@EMBEDDER).",
    )
    @click.option(
        "--embedder",
        help="Embedder of /v1/embeddings (default: the collection's dense stage's) and of a "
        "--create'd collection's dense stages (default minilm).",
    )
    @click.option("--reranker", help="Reranker of /v1/rerank, e.g. cross-encoder:DIR.")
    @click.option(
        "--rerank-option", "rerank_options", multiple=True, help="Reranker option KEY=VALUE."
    )
    @click.option(
        "--allow-remote",
        is_flag=True,
        help="Allow a non-loopback --host (other machines can connect; set --token).",
    )
    @click.option(
        "--max-body-bytes",
        type=positive,
        default=_DEFAULTS.max_body_bytes,
        show_default=True,
        help="Largest request body.",
    )
    @click.option(
        "--max-query-chars",
        type=positive,
        default=_DEFAULTS.max_query_chars,
        show_default=True,
        help="Longest query.",
    )
    @click.option(
        "--max-k", type=positive, default=_DEFAULTS.max_k, show_default=True, help="Most hits."
    )
    @click.option(
        "--max-rerank-documents",
        type=positive,
        default=_DEFAULTS.max_rerank_documents,
        show_default=True,
        help="Most documents per rerank request.",
    )
    @click.option(
        "--max-embedding-inputs",
        type=positive,
        default=_DEFAULTS.max_embedding_inputs,
        show_default=True,
        help="Most texts per embeddings request.",
    )
    @click.option(
        "--max-write-documents",
        type=positive,
        default=_DEFAULTS.max_write_documents,
        show_default=True,
        help="Most documents (or ids) per write or delete.",
    )
    @click.option(
        "--log-level",
        type=click.Choice(["critical", "error", "warning", "info", "debug"]),
        default="info",
        show_default=True,
        help="uvicorn's log level.",
    )
    def serve(
        directory: Path,
        host: str,
        port: int,
        token: str | None,
        create: bool,
        stages: tuple[str, ...],
        embedder: str | None,
        reranker: str | None,
        rerank_options: tuple[str, ...],
        allow_remote: bool,
        log_level: str,
        **limit_values: int,
    ) -> None:
        """Serve the collection DIR over HTTP (search, rerank, embeddings, document writes).

        Endpoints: POST /v1/search, /v1/rerank, /v1/embeddings, /v1/documents;
        DELETE /v1/documents; GET /healthz, /v1/plugins, /openapi.json (/docs shows
        them). Listens on loopback unless --allow-remote; Ctrl-C (SIGINT / SIGTERM)
        finishes the requests in flight and flushes the collection.
        """
        try:
            check_bind(host, allow_remote=allow_remote)
            limits = Limits(**limit_values)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        if not is_loopback(host) and not token:
            click.echo(
                f"warning: serving on {host} without --token: anyone who can reach it can read "
                "and change the collection.",
                err=True,
            )
        from ..engine.deps import require

        require("fastapi", "uvicorn", extra="server", what="relevo serve")
        import uvicorn

        from ..server.app import create_app

        engine = helpers.engine()
        collection = open_collection(
            engine, directory, create=create, stages=_split(stages), embedder=embedder
        )
        ranker: Any = None
        if reranker:
            ranker = engine.reranker(
                reranker, **helpers.parse_options(rerank_options, param_hint="--rerank-option")
            )
            ranker.load()  # fail at start, not on the first request
        app = create_app(
            collection,
            engine=engine,
            reranker=ranker,
            embedder=engine.embedder(embedder) if embedder else None,
            token=token or None,
            limits=limits,
        )
        shown = f"[{host}]" if ":" in host else host
        click.echo(
            f"serving {directory} ({len(collection)} documents, stages {', '.join(collection.stages)}) "
            f"on http://{shown}:{port}" + (" (token required)" if token else ""),
            err=True,
        )
        # Keep-alive longer than uvicorn's 5 s: a client reusing a pooled connection the
        # server has just closed gets a connection reset (one ReadError in 513 requests at
        # 32 clients in benchmarks/results/server.md before this).
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=30,
            timeout_keep_alive=75,
        )

    return serve


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    cli.add_command(_serve_command(helpers))


__all__: list[str] = []
