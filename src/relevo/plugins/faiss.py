"""Bundled plugin: FAISS dense index formats (flat / IVF / HNSW / PQ / any factory string).

Importing this module is cheap: faiss is imported by the index class on first use, and
a missing one raises an error naming ``relevo[faiss]``. It also declares the named
pipelines built on a flat FAISS stage: ``dense`` and ``hybrid`` (BM25 + dense, RRF).
"""

from __future__ import annotations

from ..engine.hookspecs import Register, hookimpl
from ..indexes.faiss_index import FaissIndex


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        FaissIndex,
        "faiss-flat",
        options={"factory": "Flat"},
        pipelines={"dense": "faiss-flat", "hybrid": "hybrid:bm25+faiss-flat"},
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
