"""Bundled plugin: ``torch-flat``, exact dense search as a torch matmul + top-k.

Separate from the faiss plugin so that either can be disabled alone
(``RELEVO_DISABLE_PLUGINS=faiss`` keeps ``torch-flat``). torch is imported by the
index on first use; a missing one raises an error naming ``relevo[torch]``.
"""

from __future__ import annotations

from ..engine.hookspecs import Register, hookimpl
from ..indexes.torch_index import TorchFlatIndex


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        TorchFlatIndex,
        "torch-flat",
        description="Exact dense search as a torch matmul + top-k; float16 on a CUDA GPU, float32 on CPU.",
    )
