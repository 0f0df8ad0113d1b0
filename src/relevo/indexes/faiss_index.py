"""Dense index formats backed by FAISS: flat, IVF, HNSW and PQ from one class.

:class:`FaissIndex` wraps any ``faiss.index_factory`` string. The bundled plugin
registers it four times with a default ``factory`` option:

=============  ======================  ===================================================
name           factory                 what it is
=============  ======================  ===================================================
faiss-flat     ``Flat``                exact search; the reference the others are tested against
faiss-ivf      ``IVF{nlist},Flat``     inverted lists over k-means cells; ``nprobe`` trades speed for recall
faiss-hnsw     ``HNSW32``              graph search (efConstruction 80); no training, fast, more memory
faiss-pq       ``IVF{nlist},PQ{m}``    compressed codes (``m`` bytes per vector at 8 bits per code)
faiss          (required)              any factory string, e.g. ``OPQ48,IVF{nlist},PQ48``
=============  ======================  ===================================================

``faiss-pq`` uses IVF + PQ rather than a plain ``PQ{m}`` index: the PQ then encodes the
residual to the cell centroid, which is a smaller signal than the raw vector, so the
same code size gives clearly better recall (and search only scans ``nprobe`` cells
instead of the whole collection). ``m`` defaults to about one sub-quantizer per 8
dimensions (48 for 384-d vectors), i.e. a 8x compression of float32.

Placeholders resolved at the first :meth:`add` (the index is built and trained there,
on the vectors given):

- ``{nlist}``: about ``4 * sqrt(n)`` cells, lowered so each cell gets at least 39
  training points (faiss's own minimum for a sound k-means), at least 1; the ``nlist``
  option overrides it.
- ``{m}``: the divisor of ``dim`` closest to ``dim / 8`` (PQ needs ``dim % m == 0``).

PQ codebooks need ``39 * 2**nbits`` training points; with fewer vectors the number of
bits per code is lowered (``PQ48`` becomes ``PQ48x6`` for 2,500 vectors) so small
collections still build. The factory that was actually built is recorded in the
manifest and in :meth:`FaissIndex.describe`.

Scores are "higher is better": inner products for ``metric="ip"`` (cosine on
normalized vectors, the default use), negated squared distances for ``metric="l2"``.

GPU: with ``device="auto"`` (default) or ``"cuda"``, and a faiss build with GPU support
(``pip install 'relevo[gpu]'``) that sees a GPU, the index is cloned to GPU 0 for
add and search and copied back to the CPU to save. Index types faiss cannot run on a
GPU (HNSW) stay on the CPU under ``"auto"`` and are an error under ``"cuda"``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..engine.components import Index
from ..engine.deps import require
from ..engine.errors import ConfigError, CorruptIndexError, RequestError
from ..models.devices import auto_device_override
from .csr import require_finite

log = logging.getLogger(__name__)

PAYLOAD = "index.faiss"
METRICS = ("ip", "l2")
DEVICES = ("auto", "cpu", "cuda")
# faiss warns below 39 training points per centroid; we size things to stay above it.
MIN_POINTS_PER_CENTROID = 39
# Largest k the faiss GPU k-selection kernels support.
GPU_MAX_K = 2048
FAISS_SEED = 1234

_gpu_resources: Any = None


def faiss_has_gpu(faiss: Any) -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:  # a broken CUDA driver reads as "no GPU"
        return False


def _shared_gpu_resources(faiss: Any, tempmem: int | None = None) -> Any:
    # StandardGpuResources reserves scratch memory on the device; one per process is
    # what faiss recommends, and it is safe to share between indexes. ``tempmem`` (bytes)
    # sizes that scratch space (faiss' default: ~18% of the GPU's memory); it only takes
    # effect before the first GPU index of the process is made.
    global _gpu_resources
    if _gpu_resources is None:
        _gpu_resources = faiss.StandardGpuResources()
        if tempmem is not None:
            _gpu_resources.setTempMemory(int(tempmem))
    return _gpu_resources


def default_nlist(n: int) -> int:
    """Number of IVF cells for ``n`` training vectors: ~4·sqrt(n), >= 39 points per cell."""
    nlist = int(round(4 * math.sqrt(max(n, 1))))
    nlist = min(nlist, n // MIN_POINTS_PER_CENTROID)
    return max(1, nlist)


def default_pq_m(dim: int) -> int:
    """Divisor of ``dim`` closest to ``dim / 8`` (about 8 dimensions per sub-quantizer)."""
    target = dim / 8
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), -m))


def pq_nbits_for(n: int, nbits: int = 8) -> int:
    """Bits per PQ code such that ``n`` training points give >= 39 per centroid when possible."""
    while nbits > 1 and n < MIN_POINTS_PER_CENTROID * 2**nbits:
        nbits -= 1
    return nbits


_PQ_COMPONENT = re.compile(r"PQ(\d+)(?:x(\d+))?")


def resolve_factory(factory: str, n: int, dim: int, *, nlist: int | None = None) -> str:
    """Fill ``{nlist}`` and ``{m}`` and lower PQ bits for small ``n``; see the module docs."""
    resolved = factory.replace("{nlist}", str(nlist or default_nlist(n)))
    resolved = resolved.replace("{m}", str(default_pq_m(dim)))
    if "{" in resolved or "}" in resolved:
        raise ConfigError(
            f"faiss factory {factory!r} has an unknown placeholder; only {{nlist}} and {{m}} are filled in."
        )
    parts = resolved.split(",")
    for i, part in enumerate(parts):
        # Only plain PQ components: fast-scan ("PQ32x4fs") and friends have fixed bits.
        match = _PQ_COMPONENT.fullmatch(part)
        if match:
            bits = int(match.group(2) or 8)
            new_bits = pq_nbits_for(n, bits)
            if new_bits != bits:
                parts[i] = f"PQ{match.group(1)}x{new_bits}"
    return ",".join(parts)


class FaissIndex(Index):
    """Dense vectors in a FAISS index built from an ``index_factory`` string.

    Args:
        factory: a ``faiss.index_factory`` string, with optional ``{nlist}`` / ``{m}``
            placeholders (see the module docs). Required for the generic ``faiss`` format.
        metric: ``"ip"`` (inner product, default; cosine on normalized vectors) or ``"l2"``.
        nprobe: IVF cells visited per query (clamped to ``nlist``); more is slower and
            more exact, ``nprobe == nlist`` is exhaustive.
        ef_search: HNSW candidate-list size at search time.
        ef_construction: HNSW candidate-list size while building.
        nlist: fixed number of IVF cells instead of the size-derived default.
        device: ``"auto"`` (GPU when faiss has one; ``$RELEVO_DEVICE=cpu`` / ``relevo
            --cpu`` keep it on the CPU), ``"cpu"`` or ``"cuda"``.
        gpu_float16: on the GPU, store flat / IVF-Flat vectors in float16 (half the GPU
            memory; scores to ~1e-3). IVF-PQ always uses float16 lookup tables there.
        gpu_tempmem: bytes of GPU scratch memory faiss reserves (default: faiss' ~18%
            of the device); lower it when several processes share a GPU.
        dim: expected vector dimension (otherwise taken from the first add).
    """

    name: ClassVar[str] = "faiss"
    input = "vectors"
    extra: ClassVar[str | None] = "faiss"
    format_version: ClassVar[int] = 1

    def __init__(
        self,
        *,
        factory: str | None = None,
        metric: str = "ip",
        nprobe: int = 16,
        ef_search: int = 128,
        ef_construction: int = 80,
        nlist: int | None = None,
        device: str = "auto",
        gpu_float16: bool = False,
        gpu_tempmem: int | None = None,
        dim: int | None = None,
    ) -> None:
        if not factory or not isinstance(factory, str):
            raise ConfigError(
                "the 'faiss' index needs a factory option (a faiss index_factory string such as "
                "'IVF{nlist},Flat' or 'HNSW32'); or use faiss-flat, faiss-ivf, faiss-hnsw or faiss-pq."
            )
        if "IDMap" in factory:
            raise ConfigError(
                f"faiss factory {factory!r}: drop the IDMap; relevo maps row positions to document ids itself."
            )
        if metric not in METRICS:
            raise ConfigError(f"faiss index: metric must be one of {METRICS}, not {metric!r}")
        if device not in DEVICES:
            raise ConfigError(f"faiss index: device must be one of {DEVICES}, not {device!r}")
        for opt, value in (
            ("nprobe", nprobe),
            ("ef_search", ef_search),
            ("ef_construction", ef_construction),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"faiss index: {opt} must be a positive integer, not {value!r}")
        if nlist is not None and (not isinstance(nlist, (int, np.integer)) or nlist < 1):
            raise ConfigError(f"faiss index: nlist must be a positive integer, not {nlist!r}")
        if not isinstance(gpu_float16, (bool, np.bool_)):
            raise ConfigError(
                f"faiss index: gpu_float16 must be true or false, not {gpu_float16!r}"
            )
        if gpu_tempmem is not None and (
            not isinstance(gpu_tempmem, (int, np.integer))
            or isinstance(gpu_tempmem, bool)
            or gpu_tempmem < 0
        ):
            raise ConfigError(
                f"faiss index: gpu_tempmem must be a number of bytes (>= 0), not {gpu_tempmem!r}"
            )
        super().__init__(
            factory=factory,
            metric=metric,
            nprobe=int(nprobe),
            ef_search=int(ef_search),
            ef_construction=int(ef_construction),
            nlist=nlist,
            device=device,
            **({"gpu_float16": True} if gpu_float16 else {}),
            **({"gpu_tempmem": int(gpu_tempmem)} if gpu_tempmem is not None else {}),
            dim=dim,
        )
        self.factory = factory
        self.metric = metric
        self.nprobe = int(nprobe)
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        self.nlist = None if nlist is None else int(nlist)
        self.device = device
        self.gpu_float16 = bool(gpu_float16)
        self.gpu_tempmem = None if gpu_tempmem is None else int(gpu_tempmem)
        self.resolved_factory: str | None = None
        self.device_used: str | None = None
        self._index: Any = None
        self._on_gpu = False
        # A file read with IO_FLAG_MMAP_IFC holds views of the file; faiss aborts the
        # process (not an exception) if such an index is appended to, so copy first.
        self._mapped = False
        self._ntotal = 0

    # -- helpers ----------------------------------------------------------------------
    @property
    def _label(self) -> str:
        return getattr(self, "instance_name", None) or self.name

    def _faiss(self) -> Any:
        return require("faiss", extra="faiss", what=self._label)[0]

    def _faiss_metric(self, faiss: Any) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def _want_gpu(self, faiss: Any) -> bool:
        if self.device == "cpu" or (self.device == "auto" and auto_device_override() == "cpu"):
            return False
        has_gpu = faiss_has_gpu(faiss)
        if self.device == "cuda" and not has_gpu:
            why = (
                "this faiss build has no GPU support (faiss-cpu is installed)"
                if not hasattr(faiss, "StandardGpuResources")
                else "faiss sees no GPU"
            )
            raise ConfigError(
                f"{self._label}: device='cuda' was requested but {why}. Install the GPU build with "
                "pip install 'relevo[gpu]' on a machine with CUDA, or use device='auto' or 'cpu'. "
                "(The torch-flat index also searches on a CUDA GPU.)"
            )
        return has_gpu

    def _to_device(self, faiss: Any, cpu_index: Any) -> Any:
        """Clone ``cpu_index`` to GPU 0 when wanted and possible; record the device used."""
        if not self._want_gpu(faiss):
            self._on_gpu = False
            self.device_used = "cpu"
            return cpu_index
        options = faiss.GpuClonerOptions()
        ivf = faiss.try_extract_index_ivf(cpu_index)
        if ivf is not None and hasattr(faiss.downcast_index(ivf), "pq"):
            # GPU IVF-PQ needs float16 lookup tables to fit many sub-quantizers in shared
            # memory; flat storage keeps the default (float32, exact).
            options.useFloat16 = True
        elif self.gpu_float16:
            options.useFloat16 = True
        try:
            resources = _shared_gpu_resources(faiss, self.gpu_tempmem)
            gpu_index = faiss.index_cpu_to_gpu(resources, 0, cpu_index, options)
        except RuntimeError as exc:
            if self.device == "cuda":
                raise ConfigError(
                    f"{self._label}: faiss cannot run {self.resolved_factory!r} on a GPU ({exc}). "
                    "Use device='cpu' or 'auto', or a GPU-capable factory (Flat, IVF...,Flat, IVF...,PQ...)."
                ) from exc
            log.info(
                "%s: %s has no GPU version, searching on the CPU",
                self._label,
                self.resolved_factory,
            )
            self._on_gpu = False
            self.device_used = "cpu"
            return cpu_index
        self._on_gpu = True
        self.device_used = "cuda:0"
        return gpu_index

    def _cpu_index(self) -> Any:
        if self._index is None:
            return None
        if self._on_gpu:
            return self._faiss().index_gpu_to_cpu(self._index)
        return self._index

    def _apply_search_params(self) -> None:
        """Set nprobe / efSearch on the live index (after build, load and GPU moves)."""
        faiss = self._faiss()
        index = self._index
        ivf = None
        if not self._on_gpu:
            ivf = faiss.try_extract_index_ivf(index)
        space = faiss.GpuParameterSpace() if self._on_gpu else faiss.ParameterSpace()
        nlist = getattr(ivf if ivf is not None else faiss.downcast_index(index), "nlist", None)
        nprobe = min(self.nprobe, int(nlist)) if nlist else self.nprobe
        for param, value in (("nprobe", nprobe), ("efSearch", self.ef_search)):
            try:
                space.set_index_parameter(index, param, value)
            except RuntimeError as exc:
                # The parameter does not apply to this index type (nprobe on HNSW...).
                if "could not set parameter" not in str(exc):
                    raise

    def _build(self, faiss: Any, vecs: np.ndarray) -> Any:
        """Create and train the index on the first batch of vectors."""
        n, dim = vecs.shape
        factory = resolve_factory(self.factory, n, dim, nlist=self.nlist)
        try:
            index = faiss.index_factory(dim, factory, self._faiss_metric(faiss))
        except RuntimeError as exc:
            raise ConfigError(
                f"{self._label}: faiss cannot build {factory!r} for {dim}-d vectors ({_faiss_msg(exc)}). "
                "Check the factory string (faiss wiki: 'The index factory'); PQ m must divide the dimension."
            ) from exc
        self.resolved_factory = factory
        self._prepare_training(faiss, index)
        hnsw = _find_hnsw(faiss, index)
        if hnsw is not None:
            hnsw.efConstruction = self.ef_construction
        if not index.is_trained:
            needed = _min_train_points(faiss, index)
            if n < needed:
                raise RequestError(
                    f"{self._label}: {factory!r} needs at least {needed} vectors to train on its first add, "
                    f"got {n}. Add the whole collection at once, lower nlist / the PQ size, or use faiss-flat "
                    "or faiss-hnsw, which need no training."
                )
        return index

    @staticmethod
    def _prepare_training(faiss: Any, index: Any) -> None:
        # faiss already defaults to seed 1234; setting it explicitly keeps builds
        # reproducible even if that default changes.
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.seed = FAISS_SEED
        inner = faiss.downcast_index(ivf if ivf is not None else _unwrap(faiss, index))
        pq = getattr(inner, "pq", None)
        if pq is not None:
            pq.cp.seed = FAISS_SEED
        if getattr(inner, "do_polysemous_training", False):
            # The factory turns this on, but it only serves polysemous (Hamming-filtered)
            # search, which relevo does not use, and it makes PQ training 50-100x slower.
            inner.do_polysemous_training = False

    # -- Index API ----------------------------------------------------------------------
    def _add(self, items: np.ndarray) -> None:
        faiss = self._faiss()
        if self._index is None:
            cpu_index = self._build(faiss, items)
            index = self._to_device(faiss, cpu_index)
            if not index.is_trained:
                try:
                    index.train(items)
                except RuntimeError as exc:
                    raise RequestError(
                        f"{self._label}: training {self.resolved_factory!r} on {len(items)} vectors failed: "
                        f"{_faiss_msg(exc)}. Add more vectors at once or use a smaller factory."
                    ) from exc
            self._index = index
            self._apply_search_params()
        elif self._mapped:
            self._index = faiss.deserialize_index(faiss.serialize_index(self._index))
            self._mapped = False
            self._apply_search_params()
        self._index.add(items)
        # Cached: reading ntotal through SWIG costs more than the rest of a small search.
        self._ntotal = int(self._index.ntotal)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._on_gpu and k > GPU_MAX_K:
            raise RequestError(
                f"{self._label}: faiss on GPU returns at most {GPU_MAX_K} results per query, asked for {k}."
            )
        dist, labels = self._index.search(queries, k)
        if self.metric == "l2":
            np.negative(dist, out=dist)
        if labels.size and labels.min() < 0:  # fewer hits than k (IVF / HNSW)
            dist[labels < 0] = -np.inf
        return dist, labels

    @property
    def filters_natively(self) -> bool:  # type: ignore[override]
        """CPU indexes filter with an ``IDSelectorBitmap``; faiss GPU indexes take no selector."""
        return not self._on_gpu

    def _search_allowed(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss()
        bitmap = np.packbits(allowed, bitorder="little")  # must outlive the search call
        sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        base = faiss.downcast_index(self._index)
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            params: Any = faiss.SearchParametersIVF(sel=sel, nprobe=int(ivf.nprobe))
        elif isinstance(base, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=int(base.hnsw.efSearch))
        else:
            params = faiss.SearchParameters(sel=sel)
        dist, labels = self._index.search(queries, k, params=params)
        del bitmap
        if self.metric == "l2":
            np.negative(dist, out=dist)
        if labels.size and labels.min() < 0:  # fewer allowed hits than k
            dist[labels < 0] = -np.inf
        return dist, labels

    def _count(self) -> int:
        return self._ntotal

    def stored_vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Vectors of flat storage (Flat, HNSW*Flat, IVF*Flat); compressed codes refuse."""
        index = self._cpu_index()
        pos = np.asarray(positions, dtype=np.int64)
        if index is None or not len(pos):
            return np.zeros((len(pos), self.dim or 0), np.float32)
        faiss = self._faiss()
        if any(
            code in (self.resolved_factory or self.factory or "")
            for code in ("PQ", "SQ", "LSH", "PCA", "OPQ", "RR")
        ):
            raise NotImplementedError(f"{self._label} stores lossy codes, not the vectors")
        with contextlib.suppress(RuntimeError, AttributeError, TypeError):
            faiss.extract_index_ivf(index).make_direct_map()
        try:
            return np.stack([index.reconstruct(int(r)) for r in pos]).astype(np.float32)
        except RuntimeError as exc:
            raise NotImplementedError(f"{self._label} cannot reconstruct vectors: {exc}") from exc

    def score_positions(self, queries: Any, positions: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Exact scores of given rows: the stored vectors (reconstructed) against each query.

        Compressed formats (PQ) give the scores of their reconstructions, which is what
        their search ranks by, approximately.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        index = self._cpu_index()
        if index is None:
            return [np.zeros(len(p), np.float32) for p in positions]
        faiss = self._faiss()
        # IVF needs a direct map to reconstruct; other indexes reconstruct as they are.
        with contextlib.suppress(RuntimeError, AttributeError, TypeError):
            faiss.extract_index_ivf(index).make_direct_map()
        out = []
        for vec, rows in zip(q, positions, strict=True):
            if not len(rows):
                out.append(np.zeros(0, np.float32))
                continue
            try:
                docs = np.stack([index.reconstruct(int(r)) for r in rows])
            except RuntimeError as exc:
                raise NotImplementedError(
                    f"{self._label} cannot reconstruct vectors: {exc}"
                ) from exc
            if self.metric == "l2":
                out.append(-((docs - vec) ** 2).sum(axis=1).astype(np.float32))
            else:
                out.append((docs @ vec).astype(np.float32))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "factory": self.factory,
            "resolved_factory": self.resolved_factory,
            "metric": self.metric,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "ef_construction": self.ef_construction,
            "device": self.device,
            "device_used": self.device_used,
            "dim": self.dim,
            "ntotal": self._count(),
        }

    def save_payload(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        params: dict[str, Any] = {
            "name": self._label,
            "factory": self.resolved_factory or self.factory,
            "requested_factory": self.factory,
            "metric": self.metric,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "ef_construction": self.ef_construction,
            "nlist": self.nlist,
            "device": self.device,
            "dim": self.dim,
            "ntotal": self._count(),
            "file": PAYLOAD if self._index is not None else None,
        }
        if self._index is not None:
            path = directory / PAYLOAD
            self._faiss().write_index(self._cpu_index(), str(path))
            # Checked on load: a memory-mapped read of a truncated IVF file can succeed.
            params["file_bytes"] = path.stat().st_size
        return params

    @classmethod
    def load_payload(cls, directory: Path, params: Mapping[str, Any]) -> FaissIndex:
        directory = Path(directory)
        try:
            obj = cls(
                factory=params.get("requested_factory") or params["factory"],
                metric=params.get("metric", "ip"),
                nprobe=params.get("nprobe", 16),
                ef_search=params.get("ef_search", 128),
                ef_construction=params.get("ef_construction", 80),
                nlist=params.get("nlist"),
                device=params.get("device", "auto"),
                dim=params.get("dim"),
            )
        except (KeyError, ConfigError) as exc:
            raise CorruptIndexError(
                f"{directory}: the manifest's faiss parameters are invalid ({exc}); rebuild the index."
            ) from exc
        if params.get("name"):
            obj.instance_name = params["name"]  # the host may restamp it
        ntotal = int(params.get("ntotal") or 0)
        if params.get("file") is None and ntotal == 0:
            return obj  # saved before anything was added
        path = directory / PAYLOAD
        faiss = obj._faiss()
        expected_bytes = params.get("file_bytes")
        if path.is_file() and expected_bytes is not None and path.stat().st_size != expected_bytes:
            raise CorruptIndexError(
                f"{path} is {path.stat().st_size} bytes, the manifest recorded {expected_bytes}; the file is "
                "truncated or was replaced. Rebuild the index with `relevo index build`."
            )
        index, mapped = _read_index(faiss, path)
        if index.ntotal != ntotal or (obj.dim is not None and index.d != obj.dim):
            raise CorruptIndexError(
                f"{path} holds {index.ntotal} vectors of dimension {index.d}, but the manifest says "
                f"{ntotal} of dimension {obj.dim}; the payload was replaced or truncated. Rebuild the index."
            )
        if index.metric_type != obj._faiss_metric(faiss):
            raise CorruptIndexError(
                f"{path} uses faiss metric {index.metric_type}, but the manifest says {obj.metric!r}; rebuild the index."
            )
        flat = faiss.downcast_index(index)
        if isinstance(flat, faiss.IndexFlat) and index.ntotal:
            # Cheap for flat storage (a view, no copy): a NaN vector would poison every score.
            require_finite(faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d), path)
        obj.dim = int(index.d)
        obj.resolved_factory = params["factory"]
        obj._index = obj._to_device(faiss, index)
        obj._ntotal = int(index.ntotal)
        obj._mapped = mapped and not obj._on_gpu
        obj._deleted = np.zeros(ntotal, dtype=bool)  # the host restores its tombstones
        obj._apply_search_params()
        return obj


def _faiss_msg(exc: BaseException) -> str:
    """The useful last line of a faiss C++ exception message."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _unwrap(faiss: Any, index: Any) -> Any:
    """The innermost index below IndexPreTransform / IndexRefine wrappers."""
    index = faiss.downcast_index(index)
    while True:
        inner = getattr(index, "index", None) or getattr(index, "base_index", None)
        if inner is None:
            return index
        index = faiss.downcast_index(inner)


def _find_hnsw(faiss: Any, index: Any) -> Any:
    inner = _unwrap(faiss, index)
    return getattr(inner, "hnsw", None)


def _min_train_points(faiss: Any, index: Any) -> int:
    """The fewest training vectors faiss accepts: one per IVF cell / PQ centroid."""
    needed = 1
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        needed = max(needed, int(ivf.nlist))
    inner = faiss.downcast_index(ivf if ivf is not None else _unwrap(faiss, index))
    pq = getattr(inner, "pq", None)
    if pq is not None:
        needed = max(needed, 2 ** int(pq.nbits))
    return needed


def _read_index(faiss: Any, path: Path) -> tuple[Any, bool]:
    """Read ``path``, memory-mapping the stored vectors/codes where faiss can."""
    if not path.is_file():
        raise CorruptIndexError(
            f"{path} is missing; the index directory is incomplete. Rebuild the index."
        )
    errors = []
    flags = [getattr(faiss, "IO_FLAG_MMAP_IFC", None), 0]
    for flag in flags:
        if flag is None:
            continue
        try:
            index = faiss.read_index(str(path), flag) if flag else faiss.read_index(str(path))
        except (RuntimeError, MemoryError) as exc:
            errors.append(_faiss_msg(exc))
            continue
        return index, bool(flag)
    raise CorruptIndexError(
        f"{path} is not a readable faiss index ({errors[-1]}); the file is corrupt or truncated. "
        "Rebuild the index with `relevo index build`."
    )


__all__ = [
    "FaissIndex",
    "default_nlist",
    "default_pq_m",
    "faiss_has_gpu",
    "pq_nbits_for",
    "resolve_factory",
]
