"""Bundled plugin: the ``bm25`` index format (lexical, over texts).

Importing this module is cheap: scipy and PyStemmer are imported by the index on
first use, and a missing one raises an error naming the ``relevo[bm25]`` extra.
"""

from __future__ import annotations

from ..engine.hookspecs import Register, hookimpl
from ..indexes.bm25 import BM25Index


@hookimpl
def register_indexes(register: Register) -> None:
    register(
        BM25Index,
        "bm25",
        description="BM25 over stemmed, stopword-filtered tokens (lucene / okapi / atire idf), sparse matrix scoring",
    )
