"""relevo over HTTP: an ASGI app (FastAPI) serving one collection, and its limits.

``from relevo.server import create_app`` builds the app (it needs the ``server``
extra: ``pip install 'relevo[server]'``); :class:`Limits`, :func:`check_bind` and
:func:`open_collection` import no web stack, so the CLI checks its flags first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import LimitError, Limits, check_bind, is_loopback, open_collection

if TYPE_CHECKING:  # pragma: no cover
    from .app import create_app


def __getattr__(name: str) -> Any:
    # FastAPI is imported on first use only, with an error naming the extra.
    if name == "create_app":
        from ..engine.deps import require

        require("fastapi", "pydantic", extra="server", what="relevo's HTTP server")
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LimitError", "Limits", "check_bind", "create_app", "is_loopback", "open_collection"]
