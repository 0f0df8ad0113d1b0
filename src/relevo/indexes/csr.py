"""Sparse-matrix kernels and ``.npy`` payload I/O shared by the sparse index formats.

BM25 (:mod:`relevo.indexes.bm25`) and learned sparse vectors
(:mod:`relevo.indexes.sparse`) both keep a term-major CSR matrix (one row per term,
its documents sorted) and score a batch of queries as one sparse product,
``queries @ matrix``, then select the top k per query among the documents that share
a term with it. Both write their arrays as ``.npy`` files (no pickle) and check them
on load, because the product hands them to C code that does no bounds checks.

scipy (the ``relevo[bm25]`` extra) is imported on first use.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.deps import require
from ..engine.errors import CorruptIndexError

#: Queries scored per sparse product: at most this many (query, document) cells.
CHUNK_CELLS = 1 << 24


def import_scipy_sparse() -> Any:
    """``scipy.sparse``, or a MissingDependencyError naming ``relevo[bm25]``."""
    (sparse,) = require("scipy.sparse", extra="bm25", what="sparse index")
    return sparse


def csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> Any:
    sparse = import_scipy_sparse()
    return sparse.csr_matrix((data, indices, indptr), shape=shape, copy=False)


@functools.cache
def raw_matmat() -> Any:
    """scipy's C routine behind sparse ``@``, or None where scipy moved it."""
    import_scipy_sparse()
    try:
        from scipy.sparse._sparsetools import csr_matmat
    except ImportError:  # pragma: no cover - a scipy that reorganised its internals
        return None
    return csr_matmat


def product(
    q_indptr: np.ndarray, q_terms: np.ndarray, scores: Any, q_data: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``queries @ scores`` as CSR arrays ``(indptr, doc positions, summed scores)``.

    ``q_data`` holds one weight per query term (learned sparse queries); without it
    every weight is 1 and a repeated term appears twice (BM25). scipy's own ``@``
    first runs a counting pass over all the postings to size its output; the sum of
    the posting-list lengths is a free upper bound, so we call the C routine directly
    and skip that pass (a third of the product's time). The bound is exact arithmetic
    on validated arrays (``load_payload`` checks every index), so the routine, which
    does no bounds checks, never writes past it. Entries whose scores add up to
    exactly 0 are dropped, as with ``@``.
    """
    m = len(q_indptr) - 1
    n_docs = scores.shape[1]
    if q_data is None:
        q_data = np.ones(len(q_terms), scores.dtype)
    else:
        q_data = np.ascontiguousarray(q_data, dtype=scores.dtype)
    matmat = raw_matmat()
    if matmat is not None:
        lengths = scores.indptr[q_terms + 1] - scores.indptr[q_terms]
        rows = np.repeat(np.arange(m), np.diff(q_indptr))
        per_row = np.bincount(rows, weights=lengths, minlength=m)
        bound = int(np.minimum(per_row, n_docs).sum())
        dtype = scores.indices.dtype
        indptr = np.empty(m + 1, dtype)
        indices = np.empty(bound, dtype)
        data = np.empty(bound, scores.dtype)
        matmat(
            m,
            n_docs,
            q_indptr,
            q_terms,
            q_data,
            scores.indptr,
            scores.indices,
            scores.data,
            indptr,
            indices,
            data,
        )
        return indptr, indices, data
    res = csr(q_data, q_terms, q_indptr, (m, scores.shape[0])) @ scores
    return res.indptr, res.indices, res.data


def keep_columns(
    res: tuple[np.ndarray, np.ndarray, np.ndarray], allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR result ``res`` with only the entries whose column (document) is allowed."""
    indptr, cols, data = res
    nnz = int(indptr[-1])  # the product's buffers may run longer than its entries
    cols, data = cols[:nnz], data[:nnz]
    keep = allowed[cols]
    n_rows = len(indptr) - 1
    row_of = np.repeat(np.arange(n_rows), np.diff(indptr))
    counts = np.bincount(row_of[keep], minlength=n_rows)
    new_indptr = np.zeros_like(indptr)
    np.cumsum(counts, out=new_indptr[1:])
    return new_indptr, cols[keep], data[keep]


def select_topk(
    res: tuple[np.ndarray, np.ndarray, np.ndarray], k: int, out_s: np.ndarray, out_p: np.ndarray
) -> None:
    """Per row of a sparse score matrix: the ``k`` best, score descending then position."""
    # Selection works on the documents that share a term with the query (a few
    # hundred or thousand per query), never on a dense row over the whole corpus.
    indptr, cols, data = res
    bounds = indptr.tolist()
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        n = hi - lo
        if n == 0:
            continue
        d, c = data[lo:hi], cols[lo:hi]
        if n > k:
            # Keep everything tied with the k-th best, then order exactly.
            kth = np.partition(d, n - k)[n - k]
            cand = np.flatnonzero(d >= kth)
            d, c = d[cand], c[cand]
        order = np.lexsort((c, -d))[:k]
        out_s[i, : len(order)] = d[order]
        out_p[i, : len(order)] = c[order]


def save_arrays(directory: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write each array as ``<directory>/<stem>.npy`` (contiguous, no pickle)."""
    for stem, arr in arrays.items():
        np.save(Path(directory) / f"{stem}.npy", np.ascontiguousarray(arr), allow_pickle=False)


def load_array(
    directory: Path, stem: str, dtype: Any, length: int, *, mmap: bool = True
) -> np.ndarray:
    """Read ``<stem>.npy`` and check it is 1-d, of ``length`` and of ``dtype`` (a dtype or a tuple).

    Raises:
        CorruptIndexError: the file is missing, unreadable or of another shape or type.
    """
    path = Path(directory) / f"{stem}.npy"
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptIndexError(
            f"{path}: missing or unreadable ({exc}); rebuild the index."
        ) from exc
    allowed = [np.dtype(d) for d in (dtype if isinstance(dtype, tuple) else (dtype,))]
    if arr.dtype not in allowed or arr.ndim != 1 or len(arr) != length:
        want = " or ".join(str(d) for d in allowed)
        raise CorruptIndexError(
            f"{path}: expected a 1-d {want} array of length {length}, found {arr.dtype} {arr.shape}; "
            "rebuild the index."
        )
    if arr.dtype.kind == "f":
        require_finite(arr, path)
    return arr


def release_pages(arr: np.ndarray) -> None:
    """Drop a read-only memory-mapped array's pages from this process's resident set.

    Checking a mapped payload reads every page once; afterwards the pages are still
    mapped (counted in RSS) though nothing needs them until a query does. The kernel
    reads them back from the page cache or the file on the next access, so this is
    safe for read-only mappings. A no-op for in-memory arrays and where the platform
    has no ``madvise``.
    """
    import mmap as _mmap

    base: Any = arr
    while base is not None and not isinstance(base, _mmap.mmap):
        base = (
            getattr(base, "_mmap", None)
            if isinstance(base, np.memmap)
            else getattr(base, "base", None)
        )
    advice = getattr(_mmap, "MADV_DONTNEED", None)
    if base is None or advice is None or not hasattr(base, "madvise"):
        return
    with contextlib.suppress(OSError, ValueError):  # a closed map, an exotic platform
        base.madvise(advice)


def require_finite(arr: np.ndarray, path: Path, *, chunk: int = 1 << 22) -> None:
    """Refuse NaN or infinite values in a float payload.

    Checked ``chunk`` values at a time, so a memory-mapped array is never copied whole.

    Raises:
        CorruptIndexError: naming ``path``.
    """
    flat = arr.reshape(-1)
    for start in range(0, flat.size, chunk):
        if not np.isfinite(flat[start : start + chunk]).all():
            raise CorruptIndexError(
                f"{path} holds NaN or infinite values; the payload is damaged. "
                "Rebuild the index with `relevo index build --overwrite`."
            )


def check_csr(
    directory: Path, name: str, indptr: np.ndarray, indices: np.ndarray, bound: int
) -> None:
    """Refuse CSR arrays C code could read out of bounds: a bad row pointer or ids outside ``0..bound-1``."""
    nnz = len(indices)
    if (
        int(indptr[0]) != 0
        or int(indptr[-1]) != nnz
        or (len(indptr) > 1 and np.diff(indptr).min() < 0)
    ):
        raise CorruptIndexError(
            f"{Path(directory) / f'{name}.indptr.npy'}: offsets are not a valid CSR row pointer; rebuild the index."
        )
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= bound):
        raise CorruptIndexError(
            f"{Path(directory) / f'{name}.indices.npy'}: holds ids outside 0..{bound - 1}; rebuild the index."
        )


__all__ = [
    "CHUNK_CELLS",
    "check_csr",
    "csr",
    "import_scipy_sparse",
    "load_array",
    "product",
    "raw_matmat",
    "release_pages",
    "save_arrays",
    "select_topk",
]
