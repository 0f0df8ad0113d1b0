"""Learned sparse retrieval: documents as sparse term-weight vectors over a model vocabulary.

:class:`SparseVectorIndex` stores one sparse vector per document (term ids are a
model's token ids) and scores a query by the dot product of its own sparse vector with
every document. It shares BM25's machinery (:mod:`relevo.indexes.csr`): the document
vectors are transposed into a term-major CSR matrix, a batch of queries is one call of
scipy's C sparse product (with the query weights as data) over a bounded chunk of
queries, and top-k selection runs on the documents that share a term with the query.

The index itself holds no model. Encoder-backed formats subclass it and implement
:meth:`SparseVectorIndex.encode` (texts -> :class:`SparseRows`): the bundled
``splade`` plugin (a masked LM) and ``promptreps`` plugin (a causal LM). Their document
vectors can be kept in :class:`SparseRowsCache`, keyed by the weights' fingerprint and
:func:`texts_digest` of the texts.

On disk: ``doc.data.npy`` / ``doc.indices.npy`` / ``doc.indptr.npy`` (the document-major
CSR arrays, no pickle); the term-major matrix is rebuilt on load (one C-level
transpose) so that it can never disagree with the document vectors. scipy is imported
on first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from ..engine.components import Index
from ..engine.errors import CorruptIndexError, IndexMismatchError, RequestError
from .csr import (
    CHUNK_CELLS,
    check_csr,
    csr,
    import_scipy_sparse,
    keep_columns,
    load_array,
    product,
    save_arrays,
    select_topk,
)

log = logging.getLogger(__name__)

#: Term ids must fit the int32 index arrays scipy's C routines are handed.
MAX_TERM_ID = np.iinfo(np.int32).max - 1


class SparseRows(NamedTuple):
    """CSR arrays of ``n`` sparse vectors: row ``i`` is ``indices/data[indptr[i]:indptr[i+1]]``."""

    data: np.ndarray  # float32 weights
    indices: np.ndarray  # int32 term ids, sorted and unique within a row
    indptr: np.ndarray  # int64, length n + 1

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> dict[int, float]:
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        return dict(zip(self.indices[lo:hi].tolist(), self.data[lo:hi].tolist(), strict=True))


def empty_rows() -> SparseRows:
    return SparseRows(np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64))


def concat_rows(parts: Sequence[SparseRows]) -> SparseRows:
    """Stack several blocks of rows into one."""
    if not parts:
        return empty_rows()
    data = np.concatenate([p.data for p in parts]).astype(np.float32, copy=False)
    indices = np.concatenate([p.indices for p in parts]).astype(np.int32, copy=False)
    offsets, total = [np.zeros(1, np.int64)], 0
    for p in parts:
        offsets.append(np.asarray(p.indptr[1:], np.int64) - int(p.indptr[0]) + total)
        total += int(p.indptr[-1]) - int(p.indptr[0])
    return SparseRows(data, indices, np.concatenate(offsets))


def to_rows(vectors: Any, what: str = "vector") -> SparseRows:
    """Canonical CSR rows from a scipy sparse matrix or a sequence of ``{term id: weight}``.

    Duplicate ids are summed, zero weights dropped, ids sorted within each row. Ids must
    be non-negative integers and weights finite.
    """
    sparse = import_scipy_sparse()
    if isinstance(vectors, SparseRows):
        data, indices, indptr = vectors.data, vectors.indices, vectors.indptr
        n = vectors.rows
    elif sparse.issparse(vectors):
        m = sparse.csr_matrix(vectors)
        data, indices, indptr, n = m.data, m.indices, m.indptr, m.shape[0]
    else:
        if isinstance(vectors, (Mapping, str, bytes)):
            raise RequestError(
                f"expected a list of {what}s ({{term id: weight}} mappings), got one {type(vectors).__name__}"
            )
        ids: list[int] = []
        weights: list[float] = []
        lengths: list[int] = []
        for i, row in enumerate(vectors):
            if not isinstance(row, Mapping):
                raise RequestError(
                    f"{what} #{i} is {type(row).__name__}, expected a {{term id: weight}} mapping"
                )
            for t in row:
                if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                    raise RequestError(f"{what} #{i}: term ids must be integers, got {t!r}")
            ids.extend(int(t) for t in row)
            weights.extend(float(w) for w in row.values())
            lengths.append(len(row))
        n = len(lengths)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.asarray(ids, np.int64)
        data = np.asarray(weights, np.float64)
    indices = np.asarray(indices)
    data = np.asarray(data)
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) > MAX_TERM_ID):
        raise RequestError(f"{what}s hold term ids outside 0..{MAX_TERM_ID}")
    if not np.isfinite(data).all():
        raise RequestError(f"{what}s hold NaN or infinite weights")
    width = int(indices.max()) + 1 if indices.size else 0
    m = csr(
        data.astype(np.float32), indices.astype(np.int32), np.asarray(indptr, np.int64), (n, width)
    )
    m = m.copy()
    m.sum_duplicates()  # also sorts ids within each row
    m.eliminate_zeros()
    return SparseRows(
        m.data.astype(np.float32, copy=False),
        m.indices.astype(np.int32, copy=False),
        m.indptr.astype(np.int64, copy=False),
    )


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over a list of texts (order and boundaries included)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class SparseRowsCache:
    """Sparse rows as ``.npz`` files of CSR arrays in the user cache, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root / "sparse"

    def path(self, cache_key: str) -> Path:
        return self.root / f"{cache_key}.npz"

    def get(self, cache_key: str, *, rows: int, extra: Sequence[str] = ()) -> dict[str, Any] | None:
        """The cached arrays (``rows`` sparse rows plus ``extra`` arrays), or None."""
        p = self.path(cache_key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                out = {name: z[name] for name in ("data", "indices", "indptr", *extra)}
        except (OSError, ValueError, KeyError, EOFError) as exc:
            log.warning("ignoring unreadable sparse cache %s (%s)", p, exc)
            return None
        data, indices, indptr = out["data"], out["indices"], out["indptr"]
        ok = (
            data.dtype == np.float32
            and indices.dtype == np.int32
            and indptr.dtype == np.int64
            and indptr.shape == (rows + 1,)
            and data.shape == indices.shape == (int(indptr[-1]),)
            and int(indptr[0]) == 0
            and (rows == 0 or np.diff(indptr).min() >= 0)
            and (not indices.size or int(indices.min()) >= 0)
            and bool(np.isfinite(data).all())
        )
        if not ok:
            log.warning("ignoring sparse cache %s: arrays do not hold %d valid rows", p, rows)
            return None
        return out

    def put(self, cache_key: str, rows: SparseRows, **extra: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                arrays: dict[str, Any] = {
                    "data": rows.data,
                    "indices": rows.indices,
                    "indptr": rows.indptr,
                    **extra,
                }
                np.savez(fh, allow_pickle=False, **arrays)
            os.replace(tmp, self.path(cache_key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class SparseVectorIndex(Index):
    """Documents as sparse term-weight vectors; score = query vector · document vector.

    Vectors are added with :meth:`add_vectors` and searched with :meth:`search_vectors`
    (a scipy sparse matrix, or a list of ``{term id: weight}`` mappings). Subclasses
    that own an encoder (:class:`SpladeIndex`) implement :meth:`encode`, and then
    ``add`` / ``search`` take texts. Term ids outside the indexed vocabulary are ignored
    at search; documents sharing no term with the query are not returned (their slots
    are padded with ``-inf`` / ``-1``).
    """

    name: ClassVar[str] = "sparse"
    input: ClassVar[Literal["text", "vectors"]] = "text"
    extra: ClassVar[str | None] = "bm25"
    format_version: ClassVar[int] = 1

    def __init__(self, **options: Any) -> None:
        super().__init__(metric="dot", **options)
        self._data = np.zeros(0, np.float32)
        self._indices = np.zeros(0, np.int32)
        self._indptr = np.zeros(1, np.int64)
        self._n_terms = 0
        self._matrix: Any = None  # term-major CSR (terms x docs), rebuilt lazily after adds
        #: Optional ``advance(n)`` called as documents are encoded.
        self.progress: Callable[[int], None] | None = None

    # -- what encoder-backed subclasses write -----------------------------------------------
    def encode(self, texts: Sequence[str], *, kind: Literal["query", "document"]) -> SparseRows:
        """Sparse vectors of ``texts``; this index holds pre-encoded vectors only."""
        raise RequestError(
            f"{self.name}: this index holds pre-encoded sparse vectors; use add_vectors() and "
            "search_vectors(), or an index with an encoder such as 'splade'."
        )

    def encode_documents(self, texts: Sequence[str]) -> SparseRows:
        """Document vectors for ``add``; subclasses add caching here."""
        return self.encode(texts, kind="document")

    def encoder_params(self) -> dict[str, Any]:
        """JSON parameters that recreate the encoder (stored in the manifest)."""
        return {}

    def fingerprint(self) -> str | None:
        """Changes whenever the encoder's vectors would (weights); None without an encoder."""
        return None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SparseVectorIndex:
        """An empty index configured from :meth:`encoder_params`."""
        return cls()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.encoder_params()}

    # -- indexing -------------------------------------------------------------------------------
    def _add(self, items: Sequence[str]) -> None:
        rows = self.encode_documents(list(items))
        if rows.rows != len(items):
            raise RequestError(
                f"{self.name}: the encoder returned {rows.rows} vectors for {len(items)} texts"
            )
        self._append(to_rows(rows, "document vector"))

    def add_vectors(self, vectors: Any) -> None:
        """Append pre-encoded document vectors (scipy sparse rows or ``{term id: weight}`` maps)."""
        rows = to_rows(vectors, "document vector")
        if rows.rows == 0:
            return
        self._append(rows)
        self._deleted = np.concatenate([self._deleted, np.zeros(rows.rows, dtype=bool)])

    def _append(self, rows: SparseRows) -> None:
        self._data = np.concatenate([self._data, rows.data])
        self._indices = np.concatenate([self._indices, rows.indices])
        self._indptr = np.concatenate([self._indptr, rows.indptr[1:] + self._indptr[-1]])
        if rows.indices.size:
            self._n_terms = max(self._n_terms, int(rows.indices.max()) + 1)
        self._matrix = None

    def _count(self) -> int:
        return len(self._indptr) - 1

    @property
    def nnz(self) -> int:
        """Stored (document, term) weights."""
        return len(self._data)

    def document_vector(self, position: int) -> dict[int, float]:
        """The stored vector of row ``position`` as ``{term id: weight}``."""
        if not 0 <= position < self._count():
            raise RequestError(f"{self.name}: position {position} out of range")
        return SparseRows(self._data, self._indices, self._indptr).row(position)

    def _term_major(self) -> Any:
        if self._matrix is None:
            n_docs = self._count()
            doc_major = csr(self._data, self._indices, self._indptr, (n_docs, self._n_terms))
            # As in bm25: the CSC arrays of (docs x terms) are the CSR arrays of
            # (terms x docs), one row per term with its documents sorted.
            csc = doc_major.tocsc()
            self._matrix = csr(csc.data, csc.indices, csc.indptr, (self._n_terms, n_docs))
        return self._matrix

    # -- search -----------------------------------------------------------------------------------
    def search_vectors(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with pre-encoded query vectors (same forms as :meth:`add_vectors`)."""
        rows = to_rows(queries, "query vector")
        return self.search([_Encoded(rows, i) for i in range(rows.rows)], k)

    filters_natively: ClassVar[bool] = True

    def _search_allowed(
        self, queries: Sequence[Any], k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._search(queries, k, allowed)

    def _search(
        self, queries: Sequence[Any], k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        texts = [(i, q) for i, q in enumerate(queries) if isinstance(q, str)]
        encoded = self.encode([q for _, q in texts], kind="query") if texts else empty_rows()
        if encoded.rows != len(texts):
            raise RequestError(
                f"{self.name}: the encoder returned {encoded.rows} vectors for {len(texts)} queries"
            )
        slot = {i: j for j, (i, _) in enumerate(texts)}
        parts: list[SparseRows] = []
        for i, q in enumerate(queries):
            if i in slot:
                j = slot[i]
                lo, hi = int(encoded.indptr[j]), int(encoded.indptr[j + 1])
                parts.append(
                    SparseRows(encoded.data[lo:hi], encoded.indices[lo:hi], np.array([0, hi - lo]))
                )
            elif isinstance(q, _Encoded):
                parts.append(q.slice())
            else:
                raise RequestError(
                    f"{self.name}: query #{i} is {type(q).__name__}, expected str (use search_vectors for vectors)"
                )
        return self._search_rows(concat_rows(parts), k, allowed)

    def _search_rows(
        self, queries: SparseRows, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        nq = queries.rows
        n_docs = self._count()
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_p = np.full((nq, k), -1, np.int64)
        if nq == 0 or n_docs == 0:
            return out_s, out_p
        matrix = self._term_major()
        # Terms no document holds cannot score; dropping them keeps ids inside the matrix.
        keep = queries.indices < self._n_terms
        owner = np.repeat(np.arange(nq), np.diff(queries.indptr))
        counts = np.bincount(owner[keep], minlength=nq)
        dtype = matrix.indices.dtype
        q_indptr = np.zeros(nq + 1, dtype)
        np.cumsum(counts, out=q_indptr[1:])
        q_terms = queries.indices[keep].astype(dtype)
        q_data = queries.data[keep].astype(np.float32)
        kk = min(k, n_docs)
        chunk = max(1, CHUNK_CELLS // n_docs)
        for start in range(0, nq, chunk):
            stop = min(start + chunk, nq)
            indptr = q_indptr[start : stop + 1]
            lo, hi = int(indptr[0]), int(indptr[-1])
            res = product(indptr - indptr[0], q_terms[lo:hi], matrix, q_data[lo:hi])
            if allowed is not None:
                res = keep_columns(res, allowed)
            select_topk(res, kk, out_s[start:stop], out_p[start:stop])
        return out_s, out_p

    # -- persistence ------------------------------------------------------------------------------
    def save_payload(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        arrays: dict[str, np.ndarray] = {
            "doc.data": self._data,
            "doc.indices": self._indices,
            "doc.indptr": self._indptr,
        }
        save_arrays(directory, arrays)
        params = {
            "n_docs": self._count(),
            "n_terms": self._n_terms,
            "nnz": self.nnz,
            **self.encoder_params(),
        }
        fp = self.fingerprint()
        if fp is not None:
            params["fingerprint"] = fp
        return params

    @classmethod
    def load_payload(cls, directory: Path, params: Mapping[str, Any]) -> SparseVectorIndex:
        directory = Path(directory)
        try:
            n_docs = int(params["n_docs"])
            n_terms = int(params["n_terms"])
            nnz = int(params["nnz"])
            index = cls.from_params(params)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(
                f"{directory}: {cls.name} build parameters are missing or invalid ({exc!r}); rebuild the index."
            ) from exc
        if n_docs < 0 or nnz < 0 or not 0 <= n_terms <= MAX_TERM_ID + 1:
            raise CorruptIndexError(
                f"{directory}: {cls.name} build parameters are out of range; rebuild the index."
            )
        recorded = params.get("fingerprint")
        if recorded is not None:
            current = index.fingerprint()
            if current != recorded:
                raise IndexMismatchError(
                    f"{directory} was encoded by {cls.name} model {params.get('model')!r} with other weights "
                    f"(fingerprint {str(recorded)[:12]}, now {str(current)[:12]}); queries would be encoded "
                    "differently from the documents. Rebuild the index, or install the original model."
                )

        indptr = load_array(directory, "doc.indptr", np.int64, n_docs + 1)
        data = load_array(directory, "doc.data", np.float32, nnz)
        indices = load_array(directory, "doc.indices", np.int32, nnz)
        # The sparse product hands these arrays to C code without bounds checks: check them.
        check_csr(directory, "doc", indptr, indices, n_terms)
        if not np.isfinite(data).all():
            raise CorruptIndexError(
                f"{directory / 'doc.data.npy'}: holds NaN or infinite weights; rebuild the index."
            )
        index._data, index._indices, index._indptr = data, indices, indptr
        index._n_terms = n_terms
        index._deleted = np.zeros(n_docs, dtype=bool)  # Index.load restores the tombstones
        return index


class _Encoded:
    """One row of pre-encoded query vectors, passed through ``Index.search``."""

    __slots__ = ("i", "rows")

    def __init__(self, rows: SparseRows, i: int) -> None:
        self.rows, self.i = rows, i

    def slice(self) -> SparseRows:
        lo, hi = int(self.rows.indptr[self.i]), int(self.rows.indptr[self.i + 1])
        return SparseRows(self.rows.data[lo:hi], self.rows.indices[lo:hi], np.array([0, hi - lo]))


__all__ = [
    "MAX_TERM_ID",
    "SparseRows",
    "SparseRowsCache",
    "SparseVectorIndex",
    "concat_rows",
    "empty_rows",
    "texts_digest",
    "to_rows",
]
