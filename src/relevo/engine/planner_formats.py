r"""Per-format arithmetic of the memory planner (:mod:`relevo.engine.planner`).

The calibration constants, the workload and its text statistics, and the bytes each
bundled index format (and a format's own ``plan_bytes`` hook) takes: one
:class:`StagePlan` per stage, whose parts and phases :func:`relevo.engine.planner.plan`
adds up. It imports no index library: the bundled formats are encoded here by name.

With N documents, D dimensions, W words and B UTF-8 bytes of ``title text`` per
document (constants measured on SciFact, NFCorpus and TREC DL passages):

- **docstore** (heap): per row a :class:`~relevo.Document` (64 B), its id / title /
  text ``str`` objects (49 B header + ``text_factor`` x B: 1.0 for ASCII, 2-4 when a
  text holds characters beyond Latin-1; ``index build`` measures it), the metadata dict
  (64 B empty) and the store's list / dict slots (70 B). Reading adds the reader's id
  dict (70 B a row), loading the SQLite rows (112 B a row). On disk SQLite takes about
  ``1.05 (B + id + 25)`` a row, ``1.2 (...)`` for rows over 600 B (overflow pages).
- **texts** (heap): the ``title + " " + text`` copies text indexes read (titled
  documents only), alive until the build returns; embedding makes its own copies.
- **bm25**: ``T = 0.72 W`` tokens and ``U = 0.45 W min(1, 250/W)^0.15`` postings per
  document, ``V = 7.5 (NT)^0.6`` terms (Heaps' law). Adding holds token lists (heap,
  ``8T + 56N``) and COO / CSR temporaries (arrays, ``29 T + 122 N``); it keeps int32
  tf and term ids (``8`` per posting ``+ 12 N``) and the vocabulary and stem memo
  (heap, ``360 V``). Saving rebuilds the score matrix (``40.5`` per posting). Serving
  maps the ``.npy`` arrays (``16`` per posting ``+ 12 N + 4 V``) and keeps ``137 V``;
  up to ``262,144`` documents the query kernels add dense columns of the frequent
  terms, at most half the score postings' bytes (the bound is what is planned).
- **faiss**: the factory resolved as :mod:`relevo.indexes.faiss_index` does (``{nlist}``
  ~ ``4 sqrt(N)`` with >= 39 points a cell, ``{m}`` = divisor of D nearest D/8, PQ bits
  lowered for small N). Codes per vector: Flat ``4D``, SQfp16 ``2D``, SQ8 ``D``, SQ4
  ``D/2``, ``PQm[xb]`` ``mb/8``; ``8`` per IVF id; HNSW links ``4 (2M + M/(M-1)) + 12``;
  coarse centroids, codebooks, an L2 IVF-PQ's precomputed table. Training holds its
  sample (at most 256 points a centroid), residuals and assignments; adding the coarse
  assignment and one batch (IVF-PQ: 32,768 residuals, plus distance tables when a
  sub-vector has 16+ dimensions). IVF lists grow by doubling, but the reserved
  capacity is never touched, so it is not resident.
- **torch-flat**: a float32 copy of the vectors, concatenated again when saved;
  serving maps ``vectors.npy``; on CUDA a float16 device copy.
- **splade**: ``6.45 W'^0.68`` terms per document (W' capped at the truncation
  length), per-document rows (heap) then two concatenations (8 B a term), the
  term-major copy made on first search, the masked LM's logits per batch
  (``batch_size x max_length x 30,522 x 4``).
- **runtime**: interpreter and libraries (measured: 64 MiB with numpy, scipy and
  faiss; 222 MiB with torch).

Known error (measured at 3,000-20,000 documents; ``tests/engine/test_planner.py`` fails
past 3% for layouts, 20% for the rest): faiss indexes and files, torch-flat and BM25
arrays within 0.5%; BM25 tokens and postings within 6% and vocabulary within 16% on
SciFact, NFCorpus and TREC DL; the docstore's Python objects within 2% and its SQLite
file within 8%. Postings and vocabulary follow English abstracts and passages of
60-250 words, and the first 2,000 lines stand for the whole corpus.

Third-party index formats may describe themselves with an optional classmethod::

    @classmethod
    def plan_bytes(cls, n: int, dim: int | None, **options) -> Mapping[str, int]: ...

called with the document count, the dimension (``None`` for text formats) and the
stage's options, plus ``avg_words`` / ``avg_bytes`` when its signature names them. It
returns ``"index"`` (resident bytes once built; required) and optionally
``"build_extra"`` (temporary bytes while adding), ``"disk"`` and ``"gpu"``. A registered
format without the hook is skipped with a warning; an unknown name is an error that
lists the known ones.
"""

from __future__ import annotations

import gzip
import inspect
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

MIB, GIB = 1 << 20, 1 << 30
# -- calibration (see the module docstring) ------------------------------------------------
DOC_FIXED, STORE_PER_DOC, READER_PER_DOC, LOAD_PER_DOC = 72, 70, 70, 112
STR_HEADER, DEFAULT_TEXT_FACTOR, DEFAULT_ID_CHARS = 49, 1.25, 8
DEFAULT_WORDS, BYTES_PER_WORD = 200, 6.5
SQLITE_SMALL, SQLITE_LARGE, SQLITE_ROW = 1.05, 1.2, 25  # rows past ~600 B spill over pages
TOKENS_PER_WORD, DISTINCT_PER_WORD, DISTINCT_KNEE, DISTINCT_DECAY = 0.72, 0.45, 250.0, 0.15
HEAPS_K, HEAPS_BETA = 7.5, 0.6
BM25_ADD_TOKEN, BM25_ADD_DOC, BM25_VOCAB_BUILD, BM25_VOCAB_SERVING = 37.2, 178, 360, 137
BM25_REBUILD, BM25_LOAD = 40.5, 13.4
# The numba kernels' dense columns of frequent terms (relevo.indexes.bm25_kernels'
# DENSE_MAX_DOCS / DENSE_BUDGET; a test keeps these equal): at most this share of the
# score postings' bytes, on indexes of at most this many documents.
BM25_DENSE_MAX_DOCS, BM25_DENSE_BUDGET = 1 << 18, 0.5
FINITE_CHUNK = 1 << 22  # values require_finite checks at once (a bool temporary)
FAISS_POINTS, FAISS_MIN_POINTS, FAISS_IVF_BATCH, FAISS_PQ_BATCH = 256, 39, 65536, 32768
FAISS_GPU_SCRATCH, FAISS_TABLE_MAX = 1536 * MIB, 2 * GIB
TORCH_SCORE_BUDGET = 1 << 26
SPLADE_VOCAB, SPLADE_A, SPLADE_B, SPLADE_WORDS_PER_TOKEN = 30522, 6.45, 0.68, 0.75
RUNTIME_BASE, RUNTIME_TORCH = 64 * MIB, 222 * MIB
#: Bundled formats: name -> (model, default options; a registry's options win).
BUNDLED: dict[str, tuple[str, dict[str, Any]]] = {
    "bm25": ("bm25", {}),
    "faiss-flat": ("faiss", {"factory": "Flat"}),
    "faiss-ivf": ("faiss", {"factory": "IVF{nlist},Flat"}),
    "faiss-hnsw": ("faiss", {"factory": "HNSW32", "ef_construction": 80}),
    "faiss-pq": ("faiss", {"factory": "IVF{nlist},PQ{m}"}),
    "faiss": ("faiss", {}),
    "torch-flat": ("torch", {}),
    "splade": ("splade", {}),
}
_MODELS = {
    "BM25Index": "bm25",
    "FaissIndex": "faiss",
    "TorchFlatIndex": "torch",
    "SpladeIndex": "splade",
}
_MODULES = ("relevo.indexes.", "relevo.plugins.")


# -- the workload -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """N documents of W words / B bytes (``title text``) each.

    Attributes:
        docs: number of documents.
        avg_words: whitespace-separated words per document.
        avg_bytes: UTF-8 bytes per document.
        text_factor: Python ``str`` bytes per UTF-8 byte (1.0 for ASCII, up to 4).
        titled: share of documents with a title (text indexes read a joined copy).
        id_chars: average id length.
        metadata_bytes: Python bytes of a document's metadata dict.
        measured: where the averages come from.
    """

    docs: int
    avg_words: float = DEFAULT_WORDS
    avg_bytes: float = DEFAULT_WORDS * BYTES_PER_WORD
    text_factor: float = DEFAULT_TEXT_FACTOR
    titled: float = 1.0
    id_chars: float = DEFAULT_ID_CHARS
    metadata_bytes: float = 64
    measured: str = "assumed"

    @classmethod
    def given(
        cls, docs: int, avg_words: float | None = None, avg_bytes: float | None = None
    ) -> Workload:
        """From the command line; a missing one of words / bytes follows from the other."""
        if docs < 1:
            raise ConfigError(f"--docs must be at least 1, got {docs}.")
        for name, value in (("--avg-words", avg_words), ("--avg-bytes", avg_bytes)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}.")
        words = avg_words or (avg_bytes / BYTES_PER_WORD if avg_bytes else DEFAULT_WORDS)
        how = "given" if (avg_words or avg_bytes) else "assumed"
        return cls(docs, words, avg_bytes or words * BYTES_PER_WORD, measured=how)

    @classmethod
    def from_corpus(
        cls, path: str | os.PathLike[str], *, limit: int | None = None, sample: int = 2000
    ) -> Workload:
        """Count a BEIR corpus's lines (N) and measure the averages on the first ``sample``.

        One pass over the bytes; only the sample is parsed. Averages are scaled by the
        whole file's bytes per line. Malformed lines are left for the reader to report.
        """
        from .corpus import resolve_corpus

        p = resolve_corpus(path)
        n = total = sampled_bytes = 0
        stats: list[dict[str, float]] = []
        opener: Any = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                n, total = n + 1, total + len(raw)
                if len(stats) < sample and (row := _line_stats(raw)) is not None:
                    stats.append(row)
                    sampled_bytes += len(raw)
                if limit is not None and n >= limit:
                    break
        if not stats:
            per = total / max(n, 1)
            return cls(n, per / BYTES_PER_WORD, per, measured=str(p))
        scale = (total / n) / (sampled_bytes / len(stats))
        mean = {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}
        content = mean["bytes"] * len(stats)
        return cls(
            docs=n,
            avg_words=mean["words"] * scale,
            avg_bytes=mean["bytes"] * scale,
            text_factor=sum(s["str"] for s in stats) / content if content else 1.0,
            titled=mean["titled"],
            id_chars=mean["id"],
            metadata_bytes=mean["meta"],
            measured=f"{p}: {n} lines, sizes of the first {len(stats)}",
        )


def _deep_size(obj: Any) -> int:
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k) + _deep_size(v) for k, v in obj.items())
    elif isinstance(obj, list):
        size += sum(_deep_size(v) for v in obj)
    return size


def _line_stats(raw: bytes) -> dict[str, float] | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    text, title = (
        (obj.get("text") or "", obj.get("title") or "") if isinstance(obj, dict) else (0, 0)
    )
    if not isinstance(text, str) or not isinstance(title, str):
        return None
    meta = obj.get("metadata") or {}
    content = f"{title} {text}" if title else text
    return {
        "bytes": len(content.encode("utf-8", "replace")),
        "words": len(content.split()),
        "str": sum(sys.getsizeof(s) - STR_HEADER for s in (text, title) if s),
        "titled": 1.0 if title else 0.0,
        "id": len(str(obj.get("_id", obj.get("id", "")))),
        "meta": _deep_size(meta) if isinstance(meta, dict) else 64,
    }


# -- parts and stages ---------------------------------------------------------------------------
@dataclass
class Part:
    """One allocation: the most it holds while building, once served, on the GPU."""

    build: int = 0
    serving: int = 0
    mmap: bool = False
    gpu: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"build": int(self.build), "serving": int(self.serving)}
        out.update({"mmap": True} if self.mmap else {})
        out.update({"gpu": int(self.gpu)} if self.gpu else {})
        out.update({"note": self.note} if self.note else {})
        return out


@dataclass
class StagePlan:
    """One index stage: its parts, its build phases and what it keeps."""

    name: str
    index: str
    embedder: str | None = None
    dim: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dense: bool = False
    planned: bool = True
    parts: dict[str, Part] = field(default_factory=dict)
    #: (label, heap, arrays) on top of what is alive when the stage starts, in order.
    phases: list[tuple[str, int, int]] = field(default_factory=list)
    kept_heap: int = 0
    kept: int = 0  # arrays held once built, until the build process ends
    save_extra: int = 0
    gpu_build: int = 0
    disk: int = 0
    runtime: int = RUNTIME_BASE
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "embedder": self.embedder,
            "dim": self.dim,
            "options": _jsonable(self.options),
            "planned": self.planned,
            "disk": int(self.disk),
        }


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    plain = (str, int, float, bool, type(None))
    return {k: v if isinstance(v, plain) else repr(v) for k, v in options.items()}


def docstore_bytes(w: Workload) -> tuple[int, int]:
    """(Python bytes per document held by the docstore, SQLite bytes per document)."""
    strings = 2 * STR_HEADER + w.id_chars + STR_HEADER * w.titled + w.text_factor * w.avg_bytes
    memory = DOC_FIXED + w.metadata_bytes + STORE_PER_DOC + strings
    factor = SQLITE_SMALL if w.avg_bytes <= 600 else SQLITE_LARGE
    return int(memory), int(factor * (w.avg_bytes + w.id_chars + SQLITE_ROW))


def _texts_bytes(w: Workload) -> int:
    """``[d.content for d in docs]``: list slots plus the joined strings of titled documents."""
    return int(w.docs * (8 + w.titled * (STR_HEADER + w.text_factor * w.avg_bytes)))


def bm25_counts(w: Workload) -> tuple[int, int, int]:
    """(tokens, postings, vocabulary) predicted for ``w``; see the module docstring."""
    words = max(w.avg_words, 1e-9)
    tokens = int(w.docs * TOKENS_PER_WORD * words)
    distinct = DISTINCT_PER_WORD * words * min(1.0, DISTINCT_KNEE / words) ** DISTINCT_DECAY
    vocab = int(min(tokens, HEAPS_K * tokens**HEAPS_BETA))
    return tokens, int(w.docs * distinct), vocab


def bm25_arrays(n: int, nnz: int, vocab: int) -> int:
    """Bytes of BM25's saved numpy arrays: tf and score CSR matrices, document lengths."""
    idx = 4 if max(nnz, vocab) < 2**31 else 8  # scipy's index dtype for the score matrix
    return 8 * nnz + 12 * n + 8 + (4 + idx) * nnz + idx * (vocab + 1)


def _bm25_stage(stage: StagePlan, w: Workload) -> None:
    n = w.docs
    tokens, nnz, vocab = bm25_counts(w)
    arrays = bm25_arrays(n, nnz, vocab)
    lists = 8 * tokens + 56 * n
    temps = int(BM25_ADD_TOKEN * tokens + BM25_ADD_DOC * n) - lists
    scratch = max(int(BM25_LOAD * nnz), 8 * min(n, 1 << 24), min(nnz, FINITE_CHUNK))
    idx = 4 if max(nnz, vocab) < 2**31 else 8
    dense = int(BM25_DENSE_BUDGET * (4 + idx) * nnz) if n <= BM25_DENSE_MAX_DOCS else 0
    stage.parts = {
        "postings": Part(arrays, arrays, mmap=True, note=f"{nnz:,} postings, {vocab:,} terms"),
        "vocabulary": Part(BM25_VOCAB_BUILD * vocab, BM25_VOCAB_SERVING * vocab),
        "tokenize": Part(lists + temps, note="token lists and COO arrays while adding"),
        "rebuild": Part(int(BM25_REBUILD * nnz), note="score matrix rebuilt when saved"),
        "load / query": Part(0, scratch, note="load checks, one query's product"),
    }
    if dense:
        stage.parts["dense columns"] = Part(0, dense, note="frequent terms' columns (numba)")
    stage.kept_heap, stage.kept = BM25_VOCAB_BUILD * vocab, 8 * nnz + 12 * n
    stage.phases = [("add", lists + stage.kept_heap, temps)]
    stage.save_extra = int(BM25_REBUILD * nnz)
    stage.disk = arrays + 7 * 128 + int(10.5 * vocab) + n + 128


# -- faiss --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaissLayout:
    """What a resolved faiss factory string stores."""

    code_size: int  # bytes per vector of the stored codes
    dim: int
    nlist: int = 0
    hnsw: int = 0
    pq_m: int = 0
    pq_bits: int = 0
    sq: str = ""
    flat: bool = False  # exact float32 vectors


def default_nlist(n: int) -> int:
    """``relevo.indexes.faiss_index.default_nlist`` (the tests check they agree)."""
    return max(1, min(int(round(4 * math.sqrt(max(n, 1)))), n // FAISS_MIN_POINTS))


def default_pq_m(dim: int) -> int:
    """``relevo.indexes.faiss_index.default_pq_m``: the divisor of dim nearest dim / 8."""
    return min((m for m in range(1, dim + 1) if dim % m == 0), key=lambda m: (abs(m - dim / 8), -m))


def resolve_faiss_factory(factory: str, n: int, dim: int, *, nlist: int | None = None) -> str:
    """The factory relevo builds for ``n`` vectors: placeholders filled, PQ bits lowered."""
    resolved = factory.replace("{nlist}", str(nlist or default_nlist(n)))
    resolved = resolved.replace("{m}", str(default_pq_m(dim)))
    if "{" in resolved or "}" in resolved:
        raise ConfigError(f"faiss factory {factory!r}: only {{nlist}} and {{m}} are filled in.")
    parts = resolved.split(",")
    for i, part in enumerate(parts):
        if match := re.fullmatch(r"PQ(\d+)(?:x(\d+))?", part):
            bits = new = int(match.group(2) or 8)
            while new > 1 and n < FAISS_MIN_POINTS * 2**new:
                new -= 1
            parts[i] = part if new == bits else f"PQ{match.group(1)}x{new}"
    return ",".join(parts)


_SQ = {"SQfp16": 2.0, "SQbf16": 2.0, "SQ8": 1.0, "SQ6": 0.75, "SQ4": 0.5}
FAISS_GRAMMAR = (
    "Flat | SQfp16 | SQ8 | SQ6 | SQ4 | PQm[xb] | HNSWm[,Flat | ,SQ.. | ,PQm] | "
    "IVFn,Flat | IVFn,SQ.. | IVFn,PQm[xb]"
)


def parse_faiss_factory(factory: str, dim: int) -> FaissLayout:
    """Storage of a resolved factory string (the forms in :data:`FAISS_GRAMMAR`).

    Raises:
        ConfigError: a form the planner does not model.
    """
    parts = [p.strip() for p in factory.split(",")]
    nlist = hnsw = 0
    if m := re.fullmatch(r"IVF(\d+)", parts[0]):
        nlist, parts = int(m.group(1)), parts[1:]
    elif m := re.fullmatch(r"HNSW(\d+)(?:_(PQ\d+(?:x\d+)?))?", parts[0]):
        hnsw, parts = int(m.group(1)), ([m.group(2)] if m.group(2) else []) + parts[1:]
        parts = parts or ["Flat"]
    kw: dict[str, Any] = {"dim": dim, "nlist": nlist, "hnsw": hnsw}
    storage = parts[0] if len(parts) == 1 else ""
    if storage == "Flat":
        return FaissLayout(code_size=4 * dim, flat=True, **kw)
    if storage in _SQ:
        return FaissLayout(code_size=math.ceil(_SQ[storage] * dim), sq=storage, **kw)
    if m := re.fullmatch(r"PQ(\d+)(?:x(\d+))?", storage):
        pq_m, bits = int(m.group(1)), int(m.group(2) or 8)
        if dim % pq_m:
            raise ConfigError(
                f"faiss factory {factory!r}: PQ{pq_m} must divide the dimension {dim}."
            )
        return FaissLayout(code_size=math.ceil(pq_m * bits / 8), pq_m=pq_m, pq_bits=bits, **kw)
    raise ConfigError(
        f"the planner does not model the faiss factory {factory!r}; it knows {FAISS_GRAMMAR}."
    )


def _on_gpu(options: Mapping[str, Any], gpu_mem: int | None) -> bool:
    device = str(options.get("device", "auto"))
    return device.startswith("cuda") or (device == "auto" and gpu_mem is not None)


def _faiss_stage(stage: StagePlan, n: int, dim: int, gpu_mem: int | None) -> None:
    opts = stage.options
    if not isinstance(opts.get("factory"), str) or not opts["factory"]:
        raise ConfigError(
            "the 'faiss' index needs a factory option, e.g. --option factory='IVF{nlist},PQ48' "
            "(or use faiss-flat, faiss-ivf, faiss-hnsw or faiss-pq)."
        )
    resolved = resolve_faiss_factory(opts["factory"], n, dim, nlist=opts.get("nlist"))
    lay = parse_faiss_factory(resolved, dim)
    d, ksub = lay.dim, 2**lay.pq_bits
    codes, ids = lay.code_size * n, (8 * n if lay.nlist else 0)
    centroids = 4 * d * lay.nlist
    books = 4 * d * ksub if lay.pq_m else (8 * d if lay.sq[2:3].isdigit() else 0)
    table = 4 * lay.nlist * lay.pq_m * ksub if lay.nlist and opts.get("metric") == "l2" else 0
    table = table if table <= FAISS_TABLE_MAX else 0
    graph = int((4 * (2 * lay.hnsw + lay.hnsw / (lay.hnsw - 1)) + 12) * n) if lay.hnsw > 1 else 0
    exact = codes + ids + graph + centroids + books
    train = 0
    if lay.nlist:  # k-means: a sample when N exceeds 256 points a centroid, assignments
        nt = min(n, FAISS_POINTS * lay.nlist)
        train = (4 * d * nt if nt < n else 0) + 12 * nt
    if lay.pq_m or (lay.sq and lay.nlist):  # the encoder's sample, its residuals
        nt = min(n, FAISS_POINTS * ksub) if lay.pq_m else min(n, 100_000)
        enc = (4 * d * nt if nt < n else 0) + ((4 * d + 8) * nt if lay.nlist else 0)
        train = max(train, enc + (12 * nt + 4 * nt * d // lay.pq_m if lay.pq_m else 0))
    add = 8 * n if lay.nlist else (os.cpu_count() or 1) * n if graph else 0
    if lay.pq_m and lay.nlist:  # residuals of one batch, and distance tables for long sub-vectors
        batch = min(n, FAISS_PQ_BATCH)
        add += batch * (4 * d + lay.code_size + (4 * ksub * lay.pq_m if d // lay.pq_m >= 16 else 0))
    check = min(n * dim, FINITE_CHUNK) if lay.flat and not (lay.hnsw or lay.nlist) else 0
    gpu = _on_gpu(opts, gpu_mem)
    if gpu and lay.hnsw:
        if str(opts.get("device")).startswith("cuda"):
            raise ConfigError(f"{stage.name}: faiss cannot run {resolved!r} (HNSW) on a GPU.")
        stage.notes.append(f"{stage.name}: HNSW stays on the CPU even with a GPU.")
        gpu = False
    index = Part(exact, exact, mmap=True, note=resolved)
    stage.parts = {"index": index}
    stage.parts.update({"precomputed table": Part(table, table)} if table else {})
    stage.parts.update({"train": Part(train)} if train else {})
    stage.parts.update({"add": Part(add)} if add else {})
    stage.parts.update({"load check": Part(0, check)} if check else {})
    stage.options = {**opts, "resolved_factory": resolved}
    if gpu:
        index.build = index.serving = 0
        index.gpu = codes + ids + centroids + books + table
        stage.parts["gpu scratch"] = Part(
            gpu=FAISS_GPU_SCRATCH, note="StandardGpuResources temp memory"
        )
        stage.parts["save copy"] = Part(exact, note="the index copied back to the host to write it")
        stage.gpu_build = index.gpu + FAISS_GPU_SCRATCH + 4 * d * min(n, FAISS_IVF_BATCH)
        stage.phases, stage.save_extra = [("train", 0, train), ("add (GPU)", 0, 0)], exact
    else:
        stage.phases = [("check", 0, n * dim), ("train", 0, train), ("add", 0, exact + table + add)]
        stage.kept = exact + table
    stage.disk = exact + 8 * lay.nlist + 64 + n + 128


def _torch_stage(stage: StagePlan, n: int, dim: int, gpu_mem: int | None) -> None:
    opts = stage.options
    vecs = 4 * n * dim
    budget = int(opts.get("score_budget", TORCH_SCORE_BUDGET))
    sqnorms = 4 * n if opts.get("metric") == "l2" else 0
    gpu = _on_gpu(opts, gpu_mem)
    check = min(n * dim, FINITE_CHUNK)
    stage.runtime = RUNTIME_TORCH
    stage.parts = {
        "vectors": Part(vecs, vecs, mmap=True),
        "concatenate on save": Part(vecs),
        "load / query": Part(0, check + (0 if gpu else 4 * min(n, budget) + sqnorms)),
    }
    if gpu:
        half = 2 if opts.get("dtype", "auto") in ("auto", "float16") else 4
        stage.parts["device copy"] = Part(gpu=half * n * dim + sqnorms + half * min(n, budget))
        stage.gpu_build = 4 * n * dim + half * n * dim  # the float32 upload, then the cast
    stage.phases = [("check", 0, n * dim), ("add", 0, vecs)]
    stage.kept = stage.save_extra = vecs
    stage.disk = vecs + 128 + n + 128


def _splade_stage(stage: StagePlan, w: Workload) -> None:
    opts, n = stage.options, w.docs
    max_length, batch = int(opts.get("max_length", 256)), int(opts.get("batch_size", 16))
    per_doc = opts.get("terms_per_doc")
    if per_doc is None:
        words = min(w.avg_words, max_length * SPLADE_WORDS_PER_TOKEN)
        per_doc = SPLADE_A * max(words, 1.0) ** SPLADE_B
    nnz = int(n * float(per_doc))
    rows, logits = 8 * nnz + 8 * (n + 1), batch * max_length * SPLADE_VOCAB * 4
    stage.runtime = RUNTIME_TORCH
    stage.parts = {
        "document vectors": Part(
            2 * rows + 450 * n, rows, mmap=True, note=f"{per_doc:.0f} terms a document"
        ),
        "term-major matrix": Part(0, 8 * nnz + 4 * (SPLADE_VOCAB + 1)),
        "logits": Part(logits, note=f"batch_size {batch} x max_length {max_length}"),
    }
    stage.phases = [("encode", rows + 450 * n, logits), ("add", 0, 2 * rows)]
    stage.kept = rows
    stage.disk = rows + 3 * 128 + n + 128


def _hook_stage(stage: StagePlan, cls: Any, w: Workload) -> None:
    hook = cls.plan_bytes
    named = inspect.signature(hook).parameters
    extra = {
        k: v for k, v in (("avg_words", w.avg_words), ("avg_bytes", w.avg_bytes)) if k in named
    }
    try:
        got = dict(hook(w.docs, stage.dim, **{**stage.options, **extra}))
        index, build = int(got["index"]), int(got.get("build_extra", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{stage.index}: {cls.__qualname__}.plan_bytes must return a mapping with an "
            f"integer 'index' ({exc!r})."
        ) from exc
    stage.parts = {"index": Part(index + build, index, gpu=int(got.get("gpu", 0)))}
    stage.phases = [("add", 0, index + build)]
    stage.kept, stage.disk = index, int(got.get("disk", index))


__all__ = [
    "BM25_ADD_DOC",
    "BM25_ADD_TOKEN",
    "BM25_LOAD",
    "BM25_REBUILD",
    "BM25_VOCAB_BUILD",
    "BM25_VOCAB_SERVING",
    "BUNDLED",
    "BYTES_PER_WORD",
    "DEFAULT_ID_CHARS",
    "DEFAULT_TEXT_FACTOR",
    "DEFAULT_WORDS",
    "DISTINCT_DECAY",
    "DISTINCT_KNEE",
    "DISTINCT_PER_WORD",
    "DOC_FIXED",
    "FAISS_GPU_SCRATCH",
    "FAISS_GRAMMAR",
    "FAISS_IVF_BATCH",
    "FAISS_MIN_POINTS",
    "FAISS_POINTS",
    "FAISS_PQ_BATCH",
    "FAISS_TABLE_MAX",
    "FINITE_CHUNK",
    "FaissLayout",
    "GIB",
    "HEAPS_BETA",
    "HEAPS_K",
    "LOAD_PER_DOC",
    "MIB",
    "Part",
    "READER_PER_DOC",
    "RUNTIME_BASE",
    "RUNTIME_TORCH",
    "SPLADE_A",
    "SPLADE_B",
    "SPLADE_VOCAB",
    "SPLADE_WORDS_PER_TOKEN",
    "SQLITE_LARGE",
    "SQLITE_ROW",
    "SQLITE_SMALL",
    "STORE_PER_DOC",
    "STR_HEADER",
    "StagePlan",
    "TOKENS_PER_WORD",
    "TORCH_SCORE_BUDGET",
    "Workload",
    "bm25_arrays",
    "bm25_counts",
    "default_nlist",
    "default_pq_m",
    "docstore_bytes",
    "parse_faiss_factory",
    "resolve_faiss_factory",
]
