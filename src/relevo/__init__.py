"""relevo: a plugin-based retrieval and reranking engine.

``import relevo`` imports no torch, transformers or faiss; plugins import their stack
on first use.
"""

from __future__ import annotations

from .engine.collection import Collection
from .engine.components import (
    ConstrainedDecoder,
    Cost,
    Embedder,
    Index,
    ListwiseReranker,
    NegativeMiner,
    PairwiseReranker,
    PointwiseReranker,
    QueryGenerator,
    Reranker,
)
from .engine.engine import Engine
from .engine.errors import (
    ConfigError,
    CorpusError,
    CorruptIndexError,
    DatasetError,
    DimensionError,
    IndexBusyError,
    IndexFormatError,
    IndexMismatchError,
    IndexWriteError,
    MissingDependencyError,
    PackagedModelMissingError,
    PluginError,
    RegistrationError,
    RelevoError,
    RequestError,
    ServiceError,
    UnknownComponentError,
)
from .engine.hookspecs import hookimpl
from .engine.types import Document, Hit, Hits
from .engine.version import __version__

__all__ = [
    "Collection",
    "Engine",
    "ConfigError",
    "ConstrainedDecoder",
    "Cost",
    "CorpusError",
    "CorruptIndexError",
    "DatasetError",
    "DimensionError",
    "Document",
    "Embedder",
    "Hit",
    "Hits",
    "Index",
    "IndexBusyError",
    "IndexFormatError",
    "IndexMismatchError",
    "IndexWriteError",
    "ListwiseReranker",
    "MissingDependencyError",
    "PackagedModelMissingError",
    "NegativeMiner",
    "PairwiseReranker",
    "PluginError",
    "PointwiseReranker",
    "QueryGenerator",
    "RegistrationError",
    "Reranker",
    "RelevoError",
    "RequestError",
    "ServiceError",
    "UnknownComponentError",
    "__version__",
    "hookimpl",
]
