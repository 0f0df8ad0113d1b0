"""Training relevo's own models (cross-encoder rerankers, bi-encoder embedders), on CPU or GPU.

Importing this package is cheap: torch, transformers and sentence-transformers are
imported when training starts. The CLI front ends are ``relevo train reranker``
(bundled ``cross_encoder`` plugin), ``relevo train embedder`` (bundled
``sentence_transformers`` plugin), ``relevo train moe`` (bundled ``moe`` plugin: the same
embedder trainer with :class:`MoESpec`), ``relevo train generative`` (bundled
``generative`` plugin: a causal LM for the ``docid-trie`` index) and ``relevo merge``
(bundled ``merge`` plugin).
"""

from __future__ import annotations

from .cross_encoder import (
    LOSSES,
    NEGATIVE_METHODS,
    REPORT_FILE,
    TrainConfig,
    TrainResult,
    default_base_model,
    train_cross_encoder,
)
from .embedder import CURRICULA as EMBEDDER_CURRICULA
from .embedder import LOSSES as EMBEDDER_LOSSES
from .embedder import REPORT_FILE as EMBEDDER_REPORT_FILE
from .embedder import EmbedderConfig, EmbedderResult, MoESpec, train_embedder
from .generative import REPORT_FILE as GENERATIVE_REPORT_FILE
from .generative import GenerativeConfig, GenerativeResult, train_generative
from .merge import MergeResult, merge_embedders

__all__ = [
    "EMBEDDER_CURRICULA",
    "EMBEDDER_LOSSES",
    "EMBEDDER_REPORT_FILE",
    "GENERATIVE_REPORT_FILE",
    "LOSSES",
    "NEGATIVE_METHODS",
    "REPORT_FILE",
    "EmbedderConfig",
    "EmbedderResult",
    "GenerativeConfig",
    "GenerativeResult",
    "MergeResult",
    "MoESpec",
    "TrainConfig",
    "TrainResult",
    "default_base_model",
    "merge_embedders",
    "train_cross_encoder",
    "train_embedder",
    "train_generative",
]
