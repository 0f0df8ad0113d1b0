"""Import-or-raise for the model stacks (see :func:`relevo.engine.deps.require`)."""

from __future__ import annotations

from types import ModuleType

from ..engine.deps import require


def require_torch(
    what: str | None = None, *, extra: str = "torch"
) -> tuple[ModuleType, ModuleType]:
    """``(torch, transformers)``; the usual pair for the Hugging Face model code."""
    torch, transformers = require("torch", "transformers", extra=extra, what=what)
    return torch, transformers


__all__ = ["require", "require_torch"]
