"""Exact dense search with torch: a matrix product and ``torch.topk``, on GPU when present.

:class:`TorchFlatIndex` (``torch-flat``) is the GPU search path that works with a plain
CUDA build of torch, no faiss-gpu needed. On CUDA the corpus lives on the device in
float16 and the candidates are rescored in float32 (so scores are accurate to ~1e-4 and
near-ties are ordered as an fp32 search would order them); on the CPU everything is
float32 and the result equals a brute-force search.

Memory is bounded by scoring the corpus in chunks (at most ``score_budget`` score
entries per chunk, 64M by default = 128 MiB in fp16) and merging each chunk's top-k
into a running top-k. Vectors are saved as ``vectors.npy`` and memory-mapped on load.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..engine.components import Index
from ..engine.deps import require
from ..engine.errors import ConfigError, CorruptIndexError
from ..models.devices import resolve_device
from .csr import require_finite

log = logging.getLogger(__name__)

PAYLOAD = "vectors.npy"
METRICS = ("ip", "l2")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16")
DEFAULT_SCORE_BUDGET = 1 << 26
# Extra candidates taken from the fp16 pass before exact fp32 rescoring.
RESCORE_MARGIN = 32


class TorchFlatIndex(Index):
    """Exact inner-product (or L2) search as a chunked matmul + top-k in torch.

    Args:
        metric: ``"ip"`` (default) or ``"l2"`` (scores are negated squared distances).
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"`` or ``"cuda"``
            (``"cuda:1"`` selects a GPU).
        dtype: ``"auto"`` (float16 on CUDA, float32 on CPU), ``"float32"`` or ``"float16"``
            (CUDA only).
        score_budget: most score-matrix entries computed at once (bounds memory).
        dim: expected vector dimension (otherwise taken from the first add).
    """

    name: ClassVar[str] = "torch-flat"
    input = "vectors"
    extra: ClassVar[str | None] = "torch"
    format_version: ClassVar[int] = 1

    def __init__(
        self,
        *,
        metric: str = "ip",
        device: str = "auto",
        dtype: str = "auto",
        score_budget: int = DEFAULT_SCORE_BUDGET,
        dim: int | None = None,
    ) -> None:
        if metric not in METRICS:
            raise ConfigError(f"torch-flat: metric must be one of {METRICS}, not {metric!r}")
        if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
            raise ConfigError(
                f"torch-flat: device must be one of {DEVICES} (or 'cuda:N'), not {device!r}"
            )
        if dtype not in DTYPES:
            raise ConfigError(f"torch-flat: dtype must be one of {DTYPES}, not {dtype!r}")
        if not isinstance(score_budget, (int, np.integer)) or score_budget < 1:
            raise ConfigError(
                f"torch-flat: score_budget must be a positive integer, not {score_budget!r}"
            )
        super().__init__(
            metric=metric, device=device, dtype=dtype, score_budget=score_budget, dim=dim
        )
        self.metric = metric
        self.device = device
        self.dtype = dtype
        self.score_budget = int(score_budget)
        self.device_used: str | None = None
        self.dtype_used: str | None = None
        self._vectors = np.zeros((0, dim or 0), dtype=np.float32)
        self._pending: list[np.ndarray] = []
        self._n = 0
        # Device copy of the corpus (and squared norms for L2), rebuilt after adds.
        self._dev: Any = None
        self._dev_sqnorms: Any = None
        self._torch: Any = None

    # -- device ---------------------------------------------------------------------
    @property
    def _label(self) -> str:
        return getattr(self, "instance_name", None) or self.name

    def _resolve_device(self) -> tuple[Any, Any]:
        """Return ``(torch, torch.device)`` and fix ``device_used`` / ``dtype_used``."""
        (torch,) = require("torch", extra="torch", what=self._label)
        dev = torch.device(resolve_device(self.device, what=self._label))
        if dev.type == "cpu" and self.dtype == "float16":
            raise ConfigError(
                f"{self._label}: dtype='float16' needs a CUDA device; use 'auto' or 'float32'."
            )
        use_half = dev.type == "cuda" and self.dtype in ("auto", "float16")
        self.device_used = str(dev)
        self.dtype_used = "float16" if use_half else "float32"
        return torch, dev

    def stored_vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._vectors_np()[np.asarray(positions, dtype=np.int64)].astype(np.float32)

    def _vectors_np(self) -> np.ndarray:
        if self._pending:
            parts = ([self._vectors] if len(self._vectors) else []) + self._pending
            self._vectors = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
            self._pending = []
        return self._vectors

    def _device_vectors(self) -> tuple[Any, Any, Any]:
        """``(torch, device, corpus tensor)``; the device is resolved once per upload."""
        if self._dev is not None:
            return self._torch, self._dev.device, self._dev
        torch, dev = self._resolve_device()
        vecs = self._vectors_np()
        with warnings.catch_warnings():
            # A memory-mapped payload is read-only; torch only reads it, and on the
            # CPU in float32 this shares the mapping instead of copying it.
            warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
            host = torch.from_numpy(vecs)
        dtype = torch.float16 if self.dtype_used == "float16" else torch.float32
        self._dev = host.to(device=dev, dtype=dtype)
        self._dev_sqnorms = None
        if self.metric == "l2":
            sq = np.einsum("ij,ij->i", vecs, vecs).astype(np.float32)
            self._dev_sqnorms = torch.from_numpy(sq).to(dev)
        self._torch = torch
        return torch, self._dev.device, self._dev

    # -- Index API ----------------------------------------------------------------------
    def _add(self, items: np.ndarray) -> None:
        self._pending.append(np.array(items, dtype=np.float32, copy=True))
        self._n += len(items)
        self._dev = None
        self._dev_sqnorms = None

    def _count(self) -> int:
        return self._n

    def score_positions(self, queries: Any, positions: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Exact float32 scores of given rows against each query (CPU, from the stored vectors)."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        vectors = self._vectors_np()
        out = []
        for vec, rows in zip(q, positions, strict=True):
            docs = vectors[np.asarray(rows, dtype=np.int64)].astype(np.float32)
            if self.metric == "l2":
                out.append(-((docs - vec) ** 2).sum(axis=1).astype(np.float32))
            else:
                out.append((docs @ vec).astype(np.float32))
        return out

    filters_natively: ClassVar[bool] = True

    def _search_allowed(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._search(queries, k, allowed)

    def _search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        torch, dev, corpus = self._device_vectors()
        # Rows outside the filter score -inf before every top-k (and in the fp16 rescore).
        blocked = None if allowed is None else torch.from_numpy(~allowed).to(dev)
        n, dim = corpus.shape
        half = corpus.dtype == torch.float16
        k_pass = min(n, k + RESCORE_MARGIN) if half else k
        q_batch = min(len(queries), 4096)
        if half:  # rescoring gathers (q_batch, k_pass, dim) vectors
            q_batch = min(q_batch, self.score_budget // (k_pass * dim))
        q_batch = max(1, q_batch)
        chunk = max(k_pass, self.score_budget // q_batch)
        if not queries.flags.writeable:  # torch.from_numpy warns on read-only arrays
            queries = queries.copy()
        results_s, results_p = [], []
        with torch.inference_mode():
            for q0 in range(0, len(queries), q_batch):
                q32 = torch.from_numpy(queries[q0 : q0 + q_batch]).to(dev)
                q = q32 if q32.dtype == corpus.dtype else q32.to(corpus.dtype)
                best_s = best_p = None
                for c0 in range(0, n, chunk):
                    block = corpus if chunk >= n else corpus[c0 : c0 + chunk]
                    scores = self._score(q, block, c0, q32)
                    if blocked is not None:
                        scores = scores.masked_fill(
                            blocked[c0 : c0 + block.shape[0]][None, :], float("-inf")
                        )
                    s, p = torch.topk(scores, min(k_pass, block.shape[0]), dim=1)
                    if best_s is not None:
                        s = torch.cat([best_s, s], dim=1)
                        p = torch.cat([best_p, p + c0], dim=1)
                        s, sel = torch.topk(s, min(k_pass, s.shape[1]), dim=1)
                        p = torch.gather(p, 1, sel)
                    best_s, best_p = s, p
                assert best_s is not None and best_p is not None  # noqa: S101 - n >= 1 here
                if half:
                    best_s, best_p = self._rescore(torch, q32, best_p, k, blocked)
                results_s.append(best_s.float().cpu().numpy())
                results_p.append(best_p.cpu().numpy())
        if len(results_s) == 1:
            return results_s[0], results_p[0]
        return np.concatenate(results_s), np.concatenate(results_p)

    def _score(self, q: Any, block: Any, offset: int, q32: Any) -> Any:
        scores = q @ block.T
        if self.metric == "l2":
            # -(|q|^2 - 2 q.x + |x|^2); in fp32 to keep the subtraction accurate.
            sq = self._dev_sqnorms[offset : offset + block.shape[0]]
            scores = 2 * scores.float() - sq[None, :] - (q32 * q32).sum(dim=1, keepdim=True)
        return scores

    def _rescore(
        self, torch: Any, q32: Any, cand: Any, k: int, blocked: Any = None
    ) -> tuple[Any, Any]:
        """Exact fp32 scores for the fp16 pass's candidates, then the final top-k."""
        vecs = self._dev[cand].float()  # (nq, k_pass, dim)
        scores = torch.einsum("qd,qkd->qk", q32, vecs)
        if self.metric == "l2":
            scores = 2 * scores - self._dev_sqnorms[cand] - (q32 * q32).sum(dim=1, keepdim=True)
        if blocked is not None:
            scores = scores.masked_fill(blocked[cand], float("-inf"))
        s, sel = torch.topk(scores, k, dim=1)
        return s, torch.gather(cand, 1, sel)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "metric": self.metric,
            "device": self.device,
            "device_used": self.device_used,
            "dtype": self.dtype,
            "dtype_used": self.dtype_used,
            "dim": self.dim,
            "ntotal": self._n,
        }

    def save_payload(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        vecs = self._vectors_np()
        if self.dim is not None and vecs.shape[1] != self.dim:
            vecs = vecs.reshape(0, self.dim)
        np.save(directory / PAYLOAD, vecs, allow_pickle=False)
        return {
            "name": self._label,
            "metric": self.metric,
            "device": self.device,
            "dtype": self.dtype,
            "score_budget": self.score_budget,
            "dim": self.dim,
            "ntotal": self._n,
            "file": PAYLOAD,
        }

    @classmethod
    def load_payload(cls, directory: Path, params: Mapping[str, Any]) -> TorchFlatIndex:
        directory = Path(directory)
        try:
            obj = cls(
                metric=params.get("metric", "ip"),
                device=params.get("device", "auto"),
                dtype=params.get("dtype", "auto"),
                score_budget=params.get("score_budget", DEFAULT_SCORE_BUDGET),
                dim=params.get("dim"),
            )
        except ConfigError as exc:
            raise CorruptIndexError(
                f"{directory}: the manifest's torch-flat parameters are invalid ({exc}); rebuild the index."
            ) from exc
        if params.get("name"):
            obj.instance_name = params["name"]  # the host may restamp it
        path = directory / PAYLOAD
        ntotal = int(params.get("ntotal") or 0)
        try:
            vecs = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptIndexError(
                f"{path} is missing or not a readable .npy file ({exc}); rebuild the index."
            ) from exc
        dim = params.get("dim")
        if (
            vecs.dtype != np.float32
            or vecs.ndim != 2
            or vecs.shape[0] != ntotal
            or (dim is not None and vecs.shape[1] != dim)
        ):
            raise CorruptIndexError(
                f"{path} holds a {vecs.dtype} array of shape {vecs.shape}, but the manifest says "
                f"{ntotal} float32 vectors of dimension {dim}; rebuild the index."
            )
        require_finite(vecs, path)
        obj._vectors = vecs
        obj._n = ntotal
        if ntotal:
            obj.dim = int(vecs.shape[1])
        obj._deleted = np.zeros(ntotal, dtype=bool)  # the host restores its tombstones
        return obj


__all__ = ["TorchFlatIndex"]
