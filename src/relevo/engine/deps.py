"""Import-or-raise for optional stacks: the one helper every room uses.

A missing package becomes a :class:`~relevo.MissingDependencyError` naming the
``relevo[extra]`` that installs it and the component that needed it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

#: Environment variable naming what ``device="auto"`` means for every component
#: (``cpu`` forces the CPU; ``relevo --cpu`` sets it). Read by :mod:`relevo.models.devices`.
DEVICE_ENV = "RELEVO_DEVICE"

#: Import name -> the name pip knows it by, where they differ.
_PIP_NAMES = {
    "sklearn": "scikit-learn",
    "Stemmer": "PyStemmer",
    "ir_measures": "ir-measures",
    "faiss": "faiss-cpu",
    "langchain_core": "langchain-core",
    "llama_index": "llama-index-core",
    "llama_index.core": "llama-index-core",
}


def require(*modules: str, extra: str, what: str | None = None) -> tuple[ModuleType, ...]:
    """Import ``modules`` in order and return them; the first missing one raises.

    Args:
        modules: import names, e.g. ``"torch", "transformers"``.
        extra: the ``relevo[extra]`` that installs them.
        what: the component or command that needs them (named in the message).

    Raises:
        MissingDependencyError: a module (or one it imports) is not installed.
    """
    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except ImportError as exc:
            missing = getattr(exc, "name", None) or name
            raise MissingDependencyError(_PIP_NAMES.get(missing, missing), extra, what) from exc
    return tuple(out)


__all__ = ["require"]
