"""Training relevo's own models (cross-encoder rerankers), on CPU or GPU.

Importing this package is cheap: torch and transformers are imported when training
starts. The CLI front end is ``relevo train reranker`` (bundled ``cross_encoder`` plugin).
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

__all__ = [
    "LOSSES",
    "NEGATIVE_METHODS",
    "REPORT_FILE",
    "TrainConfig",
    "TrainResult",
    "default_base_model",
    "train_cross_encoder",
]
