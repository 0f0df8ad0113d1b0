r"""Memory planner: the host (and GPU) bytes a collection takes to build and to serve.

``relevo plan`` and the check inside ``relevo index build`` call :func:`plan`. It walks
the phases :meth:`relevo.Engine.index` and :meth:`Collection.save` run, in their order,
adds up what is alive in each, and compares the highest (the *build peak*) and the
steady state after loading (*serving*) with the memory given. It imports no index
library: the bundled formats are encoded here by name; other formats may describe
themselves (the ``plan_bytes`` hook below).

Resident memory is modelled as *heap* (Python objects: strings, lists, dicts) plus
*arrays* (numpy, faiss, torch buffers). Freed heap stays resident (CPython and
glibc rarely return it) and is reused by later heap objects only, so a phase costs
``highest heap so far + its arrays``. With N documents, D dimensions, W words and B
UTF-8 bytes of ``title text`` per document (constants measured on SciFact, NFCorpus
and TREC DL passages):

- **docstore** (heap): per row a :class:`~relevo.Document` (64 B), its id / title /
  text ``str`` objects (49 B header + ``text_factor`` x B: 1.0 for ASCII, 2-4 when a
  text holds characters beyond Latin-1; ``index build`` measures it), the metadata dict
  (64 B empty) and the store's list / dict slots (70 B). Reading adds the reader's id
  dict (70 B a row), loading the SQLite rows (112 B a row). On disk SQLite takes about
  ``1.05 (B + id + 25)`` a row, ``1.2 (...)`` for rows over 600 B (overflow pages).
- **texts** (heap): the ``title + " " + text`` copies text indexes read (titled
  documents only), alive until the build returns; embedding makes its own copies.
- **embeddings** (arrays): the float32 matrix ``4ND`` (``ND`` more for the finiteness
  check of :meth:`Index.add`), alive until the next dense stage is embedded.
- **bm25**: ``T = 0.72 W`` tokens and ``U = 0.45 W min(1, 250/W)^0.15`` postings per
  document, ``V = 7.5 (NT)^0.6`` terms (Heaps' law). Adding holds token lists (heap,
  ``8T + 56N``) and COO / CSR temporaries (arrays, ``29 T + 122 N``); it keeps int32
  tf and term ids (``8`` per posting ``+ 12 N``) and the vocabulary and stem memo
  (heap, ``360 V``). Saving rebuilds the score matrix (``40.5`` per posting). Serving
  maps the ``.npy`` arrays (``16`` per posting ``+ 12 N + 4 V``) and keeps ``137 V``.
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
  faiss; 222 MiB with torch; 590 MiB with the sentence-transformers MiniLM loaded).
  Other embedders' models are not modelled; a note says so.

Known error (measured at 3,000-20,000 documents; ``tests/engine/test_planner.py`` fails
past 3% for layouts, 20% for the rest): faiss indexes and files, torch-flat and BM25
arrays within 0.5%; BM25 tokens and postings within 6% and vocabulary within 16% on
SciFact, NFCorpus and TREC DL; the docstore's Python objects within 2% and its SQLite
file within 8%. Whole builds (13,113 documents, 384-d), as peak resident set size:
-2% to +14% (BM25, every faiss format, torch-flat, BM25 + faiss-flat); serving after
one query: within 10%, except IVF (+43%: a query touches few of the mapped lists) and
IVF-PQ (-20%). Beyond that the corpus decides: postings and vocabulary follow English
abstracts and passages of 60-250 words, the first 2,000 lines stand for the whole
corpus, and what freed memory the allocator reuses varies. Memory-mapped payloads count
as resident (the pages a warm server touches; the OS may evict them). GPU figures are
arithmetic only, not measured, and exclude the CUDA context.

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
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, RelevoError

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry

log = logging.getLogger(__name__)

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
FINITE_CHUNK = 1 << 22  # values require_finite checks at once (a bool temporary)
FAISS_POINTS, FAISS_MIN_POINTS, FAISS_IVF_BATCH, FAISS_PQ_BATCH = 256, 39, 65536, 32768
FAISS_GPU_SCRATCH, FAISS_TABLE_MAX = 1536 * MIB, 2 * GIB
TORCH_SCORE_BUDGET = 1 << 26
SPLADE_VOCAB, SPLADE_A, SPLADE_B, SPLADE_WORDS_PER_TOKEN = 30522, 6.45, 0.68, 0.75
RUNTIME_BASE, RUNTIME_TORCH = 64 * MIB, 222 * MIB
#: Embedders whose dimension (and loaded runtime) is known without loading them.
KNOWN_EMBEDDERS: dict[str, tuple[int, int | None]] = {
    "minilm": (384, 590 * MIB),
    "bge-small": (384, None),
    "minilm-l3": (384, None),
}
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


# -- sizes ----------------------------------------------------------------------------------
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"2GB"`` or plain bytes -> bytes.

    K, M, G, T, P and KiB, MiB... are powers of 1024; KB, MB, GB... powers of 1000.

    Raises:
        ConfigError: not a positive size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.fullmatch(str(text))
        if not match:
            raise ConfigError(
                f"{text!r} is not a size; give bytes or a number with K, M, G or T "
                "(8G, 512M, 1.5GiB; KB, MB, GB are powers of 1000)."
            )
        number, unit, binary, b = match.groups()
        base = 1000 if (b and not binary and unit) else 1024
        value = int(float(number) * base ** ("kmgtp".find(unit.lower()) + 1 if unit else 0))
    if value <= 0:
        raise ConfigError(f"a memory size must be positive, got {text!r}.")
    return value


def format_size(n: float | None) -> str:
    """Bytes as ``"1.4 GiB"`` (``"-"`` for None)."""
    if n is None:
        return "-"
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


def _proc_kib(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> tuple[int, str]:
    """Host bytes a build may use: available RAM plus what this process already holds.

    The plan counts this process's own runtime, so its resident size is added back to
    ``MemAvailable`` (``/proc/meminfo``, else psutil).

    Raises:
        ConfigError: neither source exists (pass ``--host-mem``).
    """
    own = _proc_kib("/proc/self/status", "VmRSS:") or 0
    available = _proc_kib("/proc/meminfo", "MemAvailable:")
    if available is not None:
        return available + own, "MemAvailable"
    try:
        import psutil  # optional
    except ImportError:
        raise ConfigError(
            "cannot tell how much memory is available (no /proc/meminfo, psutil not "
            "installed); pass --host-mem, e.g. --host-mem 16G."
        ) from None
    return int(psutil.virtual_memory().available) + own, "available (psutil)"


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
    stage.parts = {
        "postings": Part(arrays, arrays, mmap=True, note=f"{nnz:,} postings, {vocab:,} terms"),
        "vocabulary": Part(BM25_VOCAB_BUILD * vocab, BM25_VOCAB_SERVING * vocab),
        "tokenize": Part(lists + temps, note="token lists and COO arrays while adding"),
        "rebuild": Part(int(BM25_REBUILD * nnz), note="score matrix rebuilt when saved"),
        "load / query": Part(0, scratch, note="load checks, one query's product"),
    }
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


# -- the plan -----------------------------------------------------------------------------------
@dataclass
class Plan:
    """The prediction for one build: parts, peak, serving, limits, verdict and alternatives."""

    workload: Workload
    stages: list[StagePlan]
    parts: dict[str, Part]
    build_peak: int
    build_phase: str
    serving: int
    disk: int
    dim: int | None = None
    gpu_build: int | None = None
    gpu_serving: int | None = None
    host_limit: int | None = None
    host_source: str = ""
    gpu_limit: int | None = None
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_peak(self) -> int | None:
        return None if self.gpu_build is None else max(self.gpu_build, self.gpu_serving or 0)

    @property
    def fits(self) -> bool:
        host = self.host_limit is None or max(self.build_peak, self.serving) <= self.host_limit
        return host and (self.gpu_limit is None or (self.gpu_peak or 0) <= self.gpu_limit)

    @property
    def index(self) -> str:
        return "+".join(s.name for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape of ``relevo plan --json`` (see ``relevo plan --help``)."""
        one = len(self.stages) == 1
        gpu = None
        if self.gpu_build is not None:
            gpu_parts = {k: p.gpu for k, p in self.parts.items() if p.gpu}
            gpu = {"build_peak": self.gpu_build, "serving": self.gpu_serving, "parts": gpu_parts}
        return {
            "docs": self.workload.docs,
            "dim": self.dim,
            "index": self.index,
            "options": _jsonable(self.stages[0].options)
            if one
            else {s.name: _jsonable(s.options) for s in self.stages},
            "avg_words": round(self.workload.avg_words, 1),
            "avg_bytes": round(self.workload.avg_bytes, 1),
            "host": {
                "build_peak": self.build_peak,
                "build_phase": self.build_phase,
                "serving": self.serving,
                "parts": {k: p.to_dict() for k, p in self.parts.items()},
            },
            "gpu": gpu,
            "disk": self.disk,
            "fits": self.fits,
            "limit": {
                "host": self.host_limit,
                "host_source": self.host_source,
                "gpu": self.gpu_limit,
            },
            "alternatives": self.alternatives,
            "stages": [s.to_dict() for s in self.stages],
            "notes": self.notes,
        }


def _stage(
    spec: str,
    w: Workload,
    dim: int | None,
    options: Mapping[str, Any],
    registry: Registry | None,
    gpu_mem: int | None,
    embedder: str | None,
    strict: bool,
) -> StagePlan:
    fmt, _, emb = spec.partition("@")
    base = fmt.partition(":")[0]
    cls: Any = None
    if registry is not None:
        reg, _ = registry.get("index", fmt)  # unknown: UnknownComponentError listing the names
        cls, defaults = reg.cls, dict(reg.options)
        bundled = cls.__module__.startswith(_MODULES)
        model = _MODELS.get(cls.__name__) if bundled else None
    elif base in BUNDLED:
        model, defaults = BUNDLED[base][0], dict(BUNDLED[base][1])
    else:
        raise ConfigError(f"unknown index format {fmt!r}; the planner knows {', '.join(BUNDLED)}.")
    dense = model in ("faiss", "torch") or getattr(cls, "input", "text") == "vectors"
    stage = StagePlan(
        spec,
        fmt,
        (emb or embedder) if dense else None,
        dim if dense else None,
        {**defaults, **dict(options)},
        dense,
    )
    if cls is not None and callable(getattr(cls, "plan_bytes", None)):
        _hook_stage(stage, cls, w)
    elif model is None:
        stage.planned = False
        stage.notes.append(
            f"{spec}: {cls.__qualname__} has no plan_bytes; its memory is not planned."
        )
    elif dense and dim is None:
        stage.planned = False
        stage.notes.append(
            f"{spec}: the embedder's dimension is not known without loading it; dense parts not planned."
        )
    elif model == "bm25":
        _bm25_stage(stage, w)
    elif model == "splade":
        _splade_stage(stage, w)
    elif model == "faiss":
        try:
            _faiss_stage(stage, w.docs, int(dim or 0), gpu_mem)
        except ConfigError as exc:
            if strict:
                raise
            stage.planned, stage.notes = False, [f"{spec}: not planned: {exc}"]
    else:
        _torch_stage(stage, w.docs, int(dim or 0), gpu_mem)
    return stage


def plan(
    workload: Workload,
    stages: Sequence[str],
    *,
    dim: int | None = None,
    dims: Mapping[str, int | None] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    registry: Registry | None = None,
    host_mem: int | None = None,
    host_source: str = "--host-mem",
    gpu_mem: int | None = None,
    runtime: int = RUNTIME_BASE,
    embedder: str | None = None,
    alternatives: bool = True,
    strict: bool = True,
) -> Plan:
    """Predict the bytes of building ``stages`` over ``workload`` and of serving them.

    Args:
        workload: the documents and their sizes.
        stages: stage specs as ``relevo index build`` takes them (``faiss-ivf``,
            ``faiss-flat@bge-small``), built in this order.
        dim: vector dimension of dense stages (``dims`` overrides it per stage).
        options: index options per stage, ``{stage: {key: value}}``.
        registry: resolves formats (default options, ``plan_bytes`` hooks); without one
            only the bundled names are known.
        host_mem, gpu_mem: the limits to check (``None``: not checked).
        runtime: the interpreter's and libraries' bytes (the embedder's, when known).
        embedder: the default embedder's name, recorded on dense stages.
        alternatives: when it does not fit, plan variants that might.
        strict: a faiss factory the planner does not model is an error; otherwise that
            stage is left out with a note (what the build check does).

    Raises:
        ConfigError, UnknownComponentError: an unknown format or a bad option.
    """
    if not stages:
        raise ConfigError("plan at least one index stage, e.g. --index bm25.")
    if workload.docs < 1:
        raise ConfigError("there are no documents to plan for.")
    opts = options or {}
    built = [
        _stage(
            s,
            workload,
            (dims or {}).get(s, dim),
            opts.get(s, {}),
            registry,
            gpu_mem,
            embedder,
            strict,
        )
        for s in stages
    ]
    result = _assemble(workload, built, runtime)
    result.dim = next((s.dim for s in built if s.dense and s.dim), None)
    result.host_limit, result.host_source, result.gpu_limit = host_mem, host_source, gpu_mem
    if result.gpu_build is not None and gpu_mem is None:
        result.notes.append("GPU bytes are not checked; pass --gpu-mem to check them.")
    if alternatives and not result.fits:
        kw = {"dims": dims, "dim": dim, "registry": registry, "runtime": runtime}
        result.alternatives = _alternatives(result, list(stages), opts, embedder=embedder, **kw)
    return result


def _assemble(w: Workload, stages: list[StagePlan], runtime: int) -> Plan:
    n = w.docs
    per_doc, disk_per_doc = docstore_bytes(w)
    docstore, texts_bytes = per_doc * n, _texts_bytes(w)
    runtime = max([runtime] + [s.runtime for s in stages if s.planned])
    parts = {
        "runtime": Part(runtime, runtime, note="interpreter and libraries"),
        "docstore": Part(docstore, docstore, note=f"{per_doc} B a document"),
        "corpus reading": Part(READER_PER_DOC * n, LOAD_PER_DOC * n, note="reader / loader rows"),
    }
    high = 0  # freed heap stays resident: each phase costs the highest heap so far + its arrays
    phases: list[tuple[str, int]] = []

    def phase(label: str, heap: int, arrays: int) -> None:
        nonlocal high
        high = max(high, heap)
        phases.append((label, runtime + high + arrays))

    phase("read corpus", docstore + READER_PER_DOC * n, 0)
    texts = vecs = kept = kept_heap = 0
    for s in stages:
        if not s.planned:
            continue
        heap = docstore + texts + kept_heap
        if s.dense:
            matrix, copies = 4 * n * (s.dim or 0), texts_bytes + 56 * n
            phase(f"{s.name}: embed", heap + copies, kept + vecs + matrix)
            vecs = matrix
            key = "embeddings" if "embeddings" not in parts else f"embeddings ({s.name})"
            parts[key] = Part(
                matrix + copies, note=f"{n:,} x {s.dim} float32, the embedder's text copies"
            )
        elif not texts:
            texts = texts_bytes
            heap += texts
            parts["texts"] = Part(texts, note="title + text copies the text indexes read")
        for label, extra_heap, extra in s.phases:
            phase(f"{s.name}: {label}", heap + extra_heap, kept + vecs + extra)
        kept, kept_heap = kept + s.kept, kept_heap + s.kept_heap
        parts.update({f"{s.name}: {k}": p for k, p in s.parts.items()})
    save_extra = max([s.save_extra for s in stages if s.planned] or [0])
    phase("save", docstore + kept_heap, kept + save_extra)
    label, peak = max(phases, key=lambda item: item[1])
    gpu = [s for s in stages if s.planned and (s.gpu_build or any(p.gpu for p in s.parts.values()))]
    serving = sum(p.serving for p in parts.values())
    return Plan(
        workload=w,
        stages=stages,
        parts=parts,
        build_peak=int(peak),
        build_phase=label,
        serving=int(serving),
        disk=int(
            disk_per_doc * n + sum(s.disk for s in stages if s.planned) + 4096 * (1 + len(stages))
        ),
        gpu_build=max(s.gpu_build for s in gpu) if gpu else None,
        gpu_serving=sum(p.gpu for s in gpu for p in s.parts.values()) if gpu else None,
        notes=[note for s in stages for note in s.notes],
    )


# -- alternatives -------------------------------------------------------------------------------
_FP16 = ((r"^Flat$", "SQfp16"), (r",Flat$", ",SQfp16"), (r"^(HNSW\d+)$", r"\1,SQfp16"))


def _alternatives(
    base: Plan, stages: list[str], options: Mapping[str, Mapping[str, Any]], **kw: Any
) -> list[dict[str, Any]]:
    """Variants changing one thing (storage, compression, device, shards), planned alike."""
    kw.update(host_mem=base.host_limit, host_source=base.host_source, gpu_mem=base.gpu_limit)
    dims, dim = kw.pop("dims") or {}, kw.pop("dim")

    def variant(
        what: str, usage: str, i: int = -1, fmt: str = "", shards: int = 0, **change: Any
    ) -> dict[str, Any] | None:
        new, opts = list(stages), {k: dict(v) for k, v in options.items()}
        if i >= 0:
            new[i] = fmt + "".join(stages[i].partition("@")[1:]) if fmt else stages[i]
            opts[new[i]] = {**opts.pop(stages[i], {}), **change}
        docs = math.ceil(base.workload.docs / shards) if shards else base.workload.docs
        w = replace(base.workload, docs=docs)
        new_dims = {b: dims.get(a, dim) for a, b in zip(stages, new, strict=True)}
        try:
            p = plan(w, new, dim=dim, dims=new_dims, options=opts, alternatives=False, **kw)
        except RelevoError:
            return None
        return {
            "what": what,
            "index": p.index,
            "options": {k: _jsonable(v) for k, v in opts.items() if v},
            "docs": w.docs,
            "shards": shards or None,
            "build_peak": p.build_peak,
            "serving": p.serving,
            "gpu": p.gpu_peak,
            "fits": p.fits,
            "usage": usage,
        }

    out = []
    gpu_over = base.gpu_limit is not None and (base.gpu_peak or 0) > base.gpu_limit
    for i, s in enumerate(base.stages):
        if not (s.planned and s.dense and s.dim):
            continue
        factory = "Flat" if s.index == "torch-flat" else str(s.options.get("factory") or "")
        fp16 = next((re.sub(a, b, factory) for a, b in _FP16 if re.search(a, factory)), None)
        spec = "faiss" + "".join(s.name.partition("@")[1:])
        if fp16:
            what = f"{s.name}: float16 vectors (faiss {fp16}), half the size"
            out.append(
                variant(
                    what, f"--index {spec} --option {spec}.factory={fp16}", i, "faiss", factory=fp16
                )
            )
        found = None  # the largest PQ code that fits, else the smallest tried
        for m in [m for m in range(s.dim // 2, 0, -1) if s.dim % m == 0 and m >= s.dim / 64]:
            pq = f"IVF{{nlist}},PQ{m}"
            what = f"{s.name}: IVF-PQ, {m} bytes a vector (approximate; tune nprobe)"
            found = variant(
                what, f"--index {spec} --option '{spec}.factory={pq}'", i, "faiss", factory=pq
            )
            if found is None or found["fits"]:
                break
        out.append(found if factory and "PQ" not in factory else None)
        if gpu_over and s.options.get("device", "auto") != "cpu":
            what = f"{s.name}: keep the index on the CPU"
            out.append(variant(what, f"--option {s.name}.device=cpu", i, device="cpu"))
    n = base.workload.docs

    def shard(k: int) -> dict[str, Any] | None:
        per = math.ceil(n / k)
        what = (
            f"{k} shards of {per:,} documents, one collection each (relevo searches one "
            f"collection at a time; serving all {k} on one machine takes {k} x serving)"
        )
        return variant(what, "split the corpus and build each part", shards=k)

    if n > 1 and (last := shard(n)) is not None and last["fits"]:
        lo, hi = 1, n  # the fewest shards that fit, by bisection
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if (got := shard(mid)) and got["fits"] else (mid, hi)
        out.append(shard(hi))
    mapped = sum(p.serving for p in base.parts.values() if p.mmap)
    limit = base.host_limit
    if limit is not None and mapped and base.build_peak <= limit < base.serving:
        anon = base.serving - mapped
        what = (
            f"serve from the memory-mapped payloads: {format_size(mapped)} of the serving bytes "
            "are file pages the OS can evict (searches then read the disk)"
        )
        out.append(
            {
                "what": what,
                "index": base.index,
                "options": {},
                "docs": n,
                "shards": None,
                "build_peak": base.build_peak,
                "serving": anon,
                "gpu": base.gpu_peak,
                "fits": anon <= limit,
                "usage": "",
            }
        )
    return [a for a in out if a]


# -- embedders, the build check, the table ------------------------------------------------------
def embedder_info(
    registry: Registry, name: str, options: Mapping[str, Any] | None = None
) -> tuple[int | None, int | None]:
    """(dimension, runtime bytes) of an embedder when known without loading it, else None.

    Known packaged models by name; else a ``dim`` option, a class attribute or the
    ``__init__`` default (the test fake's ``dim=64``).
    """
    if name in KNOWN_EMBEDDERS:
        return KNOWN_EMBEDDERS[name]
    reg, spec = registry.get("embedder", name)
    value = {**reg.options, **dict(options or {})}.get("dim")
    if value is None and spec is None:
        attr = inspect.getattr_static(reg.cls, "dim", None)
        try:
            param = inspect.signature(reg.cls).parameters.get("dim")
        except (TypeError, ValueError):
            param = None
        value = attr if isinstance(attr, int) and attr > 0 else getattr(param, "default", None)
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return (int(value) if ok else None), None  # type: ignore[arg-type]


def _is_dense(registry: Registry, spec: str) -> bool:
    return getattr(registry.get("index", spec.partition("@")[0])[0].cls, "input", "") == "vectors"


def plan_command(
    registry: Registry,
    *,
    docs: int,
    indexes: Sequence[str],
    options: Sequence[str] = (),
    dim: int | None = None,
    embedder: str = "minilm",
    avg_words: float | None = None,
    avg_bytes: float | None = None,
    host_mem: str | None = None,
    gpu_mem: str | None = None,
) -> Plan:
    """``relevo plan``: parse its arguments (``KEY=VALUE`` options, sizes) and plan.

    Raises:
        ConfigError: a malformed option or size, or a dense format without a known
            dimension.
    """
    per_stage: dict[str, dict[str, Any]] = {}
    for pair in options:
        left, sep, value = pair.partition("=")
        stage, _, key = left.rpartition(".")
        if not sep or not key or (not stage and len(indexes) > 1):
            raise ConfigError(
                f"--option {pair!r}: expected KEY=VALUE (STAGE.KEY=VALUE with several --index)."
            )
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            parsed = value
        per_stage.setdefault(stage or indexes[0], {})[key] = parsed
    known, runtime = embedder_info(registry, embedder.partition("@")[0])
    dense = [s for s in indexes if _is_dense(registry, s)]
    if dense and (dim or known) is None:
        raise ConfigError(
            f"give --dim: the dimension of embedder {embedder!r} is not known without loading it."
        )
    host, source = (parse_size(host_mem), "--host-mem") if host_mem else available_memory()
    return plan(
        Workload.given(docs, avg_words, avg_bytes),
        list(indexes),
        dim=dim or known,
        options=per_stage,
        registry=registry,
        host_mem=host,
        host_source=source,
        gpu_mem=parse_size(gpu_mem) if gpu_mem else None,
        runtime=(runtime or RUNTIME_BASE) if dense else RUNTIME_BASE,
        embedder=embedder,
    )


def check_build(
    registry: Registry,
    corpus: str | os.PathLike[str],
    *,
    stages: Sequence[str],
    embedder: str,
    index_options: Mapping[str, Mapping[str, Any]] | None = None,
    embedder_defaults: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
    host_mem: int | None = None,
) -> Plan | None:
    """The check ``relevo index build`` runs before any work; refuses what cannot fit.

    N is the corpus's line count (capped by ``limit``), the text sizes those of its
    first lines, D each dense stage's embedder dimension where known cheaply (else its
    dense parts are skipped with a warning). Returns the plan, or None for an empty
    corpus (the reader reports it).

    Raises:
        ConfigError: the build peak or serving exceeds ``host_mem`` (default: available
            memory); the message gives the numbers and the alternatives.
    """
    w = Workload.from_corpus(corpus, limit=limit)
    if w.docs < 1:
        return None
    dims: dict[str, int | None] = {}
    runtime = RUNTIME_BASE
    for spec in stages:
        fmt, _, emb = spec.partition("@")
        if not _is_dense(registry, spec):
            continue
        name = emb or embedder
        defaults = (embedder_defaults or {}).get(name.partition(":")[0])
        dims[spec], stack = embedder_info(registry, name, defaults)
        if stack is None:
            log.info(
                "plan: the model of embedder %s is not counted (not known without loading it)", name
            )
        runtime = max(runtime, stack or 0)
    source = "--host-mem"
    if host_mem is None:
        host_mem, source = available_memory()
    result = plan(
        w,
        list(stages),
        dims=dims,
        options=index_options,
        registry=registry,
        host_mem=host_mem,
        host_source=source,
        runtime=runtime,
        embedder=embedder,
        strict=False,
    )
    for note in result.notes:
        log.warning("plan: %s", note)
    log.info(
        "plan: build peak %s (%s), serving %s, limit %s",
        format_size(result.build_peak),
        result.build_phase,
        format_size(result.serving),
        format_size(host_mem),
    )
    if not result.fits:
        raise ConfigError(refusal(result))
    return result


def refusal(p: Plan) -> str:
    """Why a build does not fit, with the numbers and the alternatives that do."""
    over = []
    if p.host_limit is not None and p.build_peak > p.host_limit:
        over.append(f"building peaks at {format_size(p.build_peak)} (during {p.build_phase})")
    if p.host_limit is not None and p.serving > p.host_limit:
        over.append(f"serving takes {format_size(p.serving)}")
    if p.gpu_limit is not None and (p.gpu_peak or 0) > p.gpu_limit:
        over.append(f"the GPU needs {format_size(p.gpu_peak)} of {format_size(p.gpu_limit)}")
    text = f"{p.workload.docs:,} documents into {p.index} do not fit: {' and '.join(over)}"
    if p.host_limit is not None:
        text += f", but {format_size(p.host_limit)} is available ({p.host_source})"
    fitting = [a for a in p.alternatives if a["fits"]]
    if fitting:
        text += ". Alternatives that fit: " + "; ".join(
            f"{a['what']} (build {format_size(a['build_peak'])}, serving {format_size(a['serving'])}"
            + (f": {a['usage']})" if a["usage"] else ")")
            for a in fitting
        )
    else:
        text += ". No single change fits; the interpreter and libraries alone take "
        text += format_size(p.parts["runtime"].serving)
    return text + ". `relevo plan` shows the table; --no-plan builds anyway."


def render_table(p: Plan) -> str:
    """The readable plan ``relevo plan`` prints."""
    w, fs = p.workload, format_size
    lines = [
        f"relevo plan: {w.docs:,} documents{f' x {p.dim}-d' if p.dim else ''}, {p.index} "
        f"({w.avg_words:.0f} words, {fs(w.avg_bytes)} a document; {w.measured})",
        "",
        f"{'part':<38} {'build':>10} {'serving':>10} {'GPU':>10}",
    ]
    for name, part in p.parts.items():
        if part.build or part.serving or part.gpu:
            cells = [fs(v) if v else "-" for v in (part.build, part.serving, part.gpu)]
            mark = "  mmap" if part.mmap and part.serving else ""
            lines.append(f"{name[:38]:<38} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10}{mark}")
    lines += [
        "-" * 71,
        f"{'build peak / serving':<38} {fs(p.build_peak):>10} {fs(p.serving):>10} {fs(p.gpu_peak):>10}",
        f"build peak while: {p.build_phase}; on disk: {fs(p.disk)}",
    ]
    if p.host_limit is not None:
        gpu = f", GPU {fs(p.gpu_limit)}" if p.gpu_limit is not None else ""
        lines.append(f"limit: host {fs(p.host_limit)} ({p.host_source}){gpu}")
    lines += [f"note: {note}" for note in p.notes]
    if p.fits:
        lines.append("OK: fits" if p.host_limit is not None else "OK (no limit checked)")
        return "\n".join(lines)
    lines.append("REFUSED: " + refusal(p).split(". ")[0].split(": ", 1)[-1])
    for a in p.alternatives:
        lines.append(
            f"  - {a['what']}: build {fs(a['build_peak'])}, serving {fs(a['serving'])}"
            f" ({'fits' if a['fits'] else 'does not fit'})"
            + (f"\n      {a['usage']}" if a["usage"] else "")
        )
    return "\n".join(lines)


__all__ = [
    "BUNDLED",
    "FAISS_GRAMMAR",
    "FaissLayout",
    "Part",
    "Plan",
    "StagePlan",
    "Workload",
    "available_memory",
    "bm25_arrays",
    "bm25_counts",
    "check_build",
    "default_nlist",
    "default_pq_m",
    "docstore_bytes",
    "embedder_info",
    "format_size",
    "parse_faiss_factory",
    "parse_size",
    "plan",
    "plan_command",
    "refusal",
    "render_table",
    "resolve_faiss_factory",
]
