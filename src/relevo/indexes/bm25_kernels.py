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
    "load",
    "term_bounds",
]
