"""Bundled plugin: dense index formats (FAISS flat / IVF / HNSW / PQ, torch exact search).

Importing this module is cheap: faiss and torch are imported by the index classes on
first use, and a missing one raises an error naming ``relevo[faiss]`` / ``relevo[torch]``.
"""

from __future__ import annotations

from relevo.engine.hookspecs import Register, hookimpl
from relevo.indexes.faiss_index import FaissIndex
from relevo.indexes.torch_index import TorchFlatIndex


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        FaissIndex,
        "faiss-flat",
        options={"factory": "Flat"},
        description="Exact dense search with faiss (IndexFlat); GPU when faiss-gpu sees one.",
    )
    register(
        FaissIndex,
        "faiss-ivf",
        options={"factory": "IVF{nlist},Flat"},
        description="faiss inverted-file index (k-means cells, nlist ~ 4*sqrt(n)); tune nprobe for recall.",
    )
    register(
        FaissIndex,
        "faiss-hnsw",
        options={"factory": "HNSW32", "ef_construction": 80},
        description="faiss HNSW graph (M=32, efConstruction 80); no training, tune ef_search for recall.",
    )
    register(
        FaissIndex,
        "faiss-pq",
        options={"factory": "IVF{nlist},PQ{m}"},
        description="faiss IVF + product quantization (~1 byte per 8 dims): compact, approximate.",
    )
    register(
        FaissIndex,
        "faiss",
        description="Any faiss index_factory string: --option factory='OPQ48,IVF{nlist},PQ48'.",
    )
    register(
        TorchFlatIndex,
        "torch-flat",
        description="Exact dense search as a torch matmul + top-k; float16 on a CUDA GPU, float32 on CPU.",
    )
