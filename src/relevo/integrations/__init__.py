"""Retrievers for LangChain and LlamaIndex over a relevo collection or a relevo server.

Each is an optional extra and a module of its own, imported on first use (importing
``relevo.integrations`` imports neither framework)::

    from relevo.integrations.langchain import RelevoRetriever    # pip install 'relevo[langchain]'
    from relevo.integrations.llamaindex import RelevoRetriever   # pip install 'relevo[llamaindex]'

Both take ``collection=`` (a :class:`~relevo.Collection` or a collection directory) or
``url=`` (``relevo serve``, with ``token=``), and return the hits of
``collection.search(query, k, stages=..., filter=...)`` in order: the ids of ``relevo search``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = ("langchain", "llamaindex")


def __getattr__(name: str) -> ModuleType:
    # `relevo.integrations.langchain` without importing LangChain when the package loads.
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["langchain", "llamaindex"]
