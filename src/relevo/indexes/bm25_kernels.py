"""Compiled (numba) BM25 query kernels over the term-major contribution matrix.

Two exact top-k algorithms, both giving the scores and order of the scipy path
(:func:`relevo.indexes.csr.product` then :func:`~relevo.indexes.csr.select_topk`) bit
for bit: a document's score is the float32 sum of its contributions in query-term
order (a repeated term adds twice), documents whose score is exactly 0 are dropped,
and ties are broken by the lower position.

- **MaxScore** (Turtle & Flood 1995), document-at-a-time over the posting lists, used
  when every contribution of the query's terms is >= 0 (always for ``lucene``): the
  terms whose summed upper bounds (each term's largest contribution) cannot beat the
  current k-th score are only probed (galloping search) for candidates the others
  produce, so the long lists of common terms are mostly skipped. Bounds are compared
  with a relative slack of 1e-5, far above float32 rounding, so pruning never drops a
  document the exhaustive path would return.
  Before the walk, a pre-pass accumulates the shortest lists with the largest bounds
  (at most ``n_docs / 8`` postings, and at most ``PREPASS_CAP``) and starts the threshold at the k-th largest of
  those partial sums (a lower bound of the final k-th score, all contributions being
  >= 0), so that the long lists are skipped from the first document on, not only
  once k documents have been scored.
- **Term-at-a-time** accumulation into a reused dense float32 buffer with a list of
  touched documents and a size-k heap over those only, for the other queries
  (``okapi`` with a negative idf floor) or on request.

- **Dense columns for the frequent terms** (indexes of up to ``DENSE_MAX_DOCS``
  documents): every term found in at least ``1 / DENSE_DIV`` of the documents also
  gets a float32 column of its contributions, most frequent first, within
  ``DENSE_BUDGET`` times the postings' bytes (built from the postings on the first
  search). Term-at-a-time then (a) *splits* a query that mixes frequent and other
  terms: only the documents the other terms list are scored (their postings plus one
  column lookup per frequent term, in query order), and that top-k stands where its
  k-th score beats the sum of the frequent terms' bounds — no other document can
  reach it; (b) otherwise adds each column in one sequential vector pass instead of
  scattered writes. ``auto`` runs these queries term-at-a-time. On the scale
  benchmark's 20k-document corpus this took a query from ~51 to ~21 µs.

``strategy="auto"`` (the default backend) picks per query: after MaxScore's pre-pass,
if the lists it would still walk in full cost more (``MAXSCORE_COST`` per
posting) than a term-at-a-time pass over all the query's postings (plus its dense
scan of the documents where it takes one; weighed up with the corpus size,
``TAAT_CACHE_DOCS``), the query runs term-at-a-time. The two constants are fitted to
per-query timings of both kernels by ``benchmarks/tune_bm25_auto.py``
(``benchmarks/results/bm25-auto.md``: how the rule does against the per-query best).

The tuning constants (``SLACK``, ``MAXSCORE_COST``, ``PREPASS_CAP``, ...) live in
``_bm25_numba.py`` itself: numba freezes globals into the compiled code and its
on-disk cache is invalidated only by changes to that file.

numba is imported by :func:`load`, never at relevo import time. Compiled code is cached
on disk (``cache=True``); where the package folder is not writable and
``NUMBA_CACHE_DIR`` is unset, the cache goes under relevo's user cache folder
(:func:`relevo.engine.cache.cache_dir` ``/ "numba"``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np


def _set_cache_dir() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).resolve().parent
    if os.access(here, os.W_OK):
        return  # numba writes __pycache__ beside this file
    from ..engine.cache import cache_dir

    target = cache_dir() / "numba"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # numba falls back to its own user-wide cache folder
    os.environ["NUMBA_CACHE_DIR"] = str(target)
    import sys

    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba already imported: it read the variable at import
        config.CACHE_DIR = str(target)  # type: ignore[attr-defined]


def available() -> bool:
    """True where numba can be imported."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def load() -> Any:
    """The compiled kernels (a namespace with ``search``), compiling or loading them on first call.

    Raises:
        ImportError: numba is not installed.
    """
    _set_cache_dir()
    from . import _bm25_numba

    return _bm25_numba


#: Kernel strategies: per-query choice, MaxScore (where every contribution is >= 0), TAAT.
STRATEGIES = {"auto": 0, "maxscore": 1, "taat": 2}

#: Terms found in at least ``1 / DENSE_DIV`` of the documents also get a dense float32
#: column of their contributions (0 where absent): term-at-a-time adds it in one
#: sequential vector pass instead of scattered writes into the accumulator ...
DENSE_DIV = 8
#: ... on indexes of at most ``DENSE_MAX_DOCS`` documents, most frequent terms first, the
#: columns together at most ``DENSE_BUDGET`` times the bytes of the postings. Measured
#: on the scale benchmark's corpora (1,000 queries, top-10, one core, columns on vs
#: off): 51 -> 21 us a query at 20k documents, 160 -> 90 at 100k, 282 -> 192 at 200k,
#: but 1,356 -> 2,490 at 1M, where MaxScore (which ``auto`` gives up for queries with a
#: column) prunes more; hence the cap.
DENSE_MAX_DOCS = 1 << 18
DENSE_BUDGET = 0.5


def dense_columns(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_docs: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(col_of, dense)``: per term its row of ``dense`` (-1: none), and the columns.

    ``dense[col_of[t], d]`` is term ``t``'s contribution to document ``d``, the value its
    posting holds (0 without one), so adding the column gives the sums the postings give.
    Without columns ``dense`` is a ``(1, 1)`` placeholder.
    """
    n_terms = len(indptr) - 1
    col_of = np.full(n_terms, -1, np.int64)
    none = (col_of, np.zeros((1, 1), np.float32))
    if n_docs == 0 or n_docs > DENSE_MAX_DOCS or n_terms == 0:
        return none
    lengths = np.diff(np.asarray(indptr, dtype=np.int64))
    frequent = np.flatnonzero(lengths * DENSE_DIV >= n_docs)
    budget = DENSE_BUDGET * (np.asarray(data).nbytes + np.asarray(indices).nbytes)
    n_cols = int(min(len(frequent), budget // (4 * n_docs)))
    if n_cols == 0:
        return none
    chosen = np.sort(frequent[np.argsort(-lengths[frequent], kind="stable")[:n_cols]])
    dense = np.zeros((n_cols, n_docs), np.float32)
    for c, t in enumerate(chosen):
        a, b = int(indptr[t]), int(indptr[t + 1])
        np.add.at(dense[c], indices[a:b], data[a:b])  # a listed-twice document adds twice
        col_of[t] = c
    return col_of, dense


def term_bounds(indptr: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest contribution per term (row), 0 for a term with no postings."""
    n_terms = len(indptr) - 1
    hi = np.zeros(n_terms, np.float32)
    lo = np.zeros(n_terms, np.float32)
    lengths = np.diff(indptr)
    rows = np.flatnonzero(lengths > 0)
    if len(rows):
        starts = np.asarray(indptr[rows], dtype=np.int64)
        hi[rows] = np.maximum.reduceat(data, starts)
        lo[rows] = np.minimum.reduceat(data, starts)
    return hi, lo


__all__ = [
    "STRATEGIES",
    "available",
    "dense_columns",
    "load",
    "term_bounds",
]
