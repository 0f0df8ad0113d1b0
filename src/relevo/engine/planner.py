r"""Memory planner: the host (and GPU) bytes a collection takes to build and to serve.

``relevo plan`` and the check inside ``relevo index build`` call :func:`plan`. It walks
the phases :meth:`relevo.Engine.index` and :meth:`Collection.save` run, in their order,
adds up what is alive in each, and compares the highest (the *build peak*) and the
steady state after loading (*serving*) with the memory given. It imports no index
library: what each format takes (and the ``plan_bytes`` hook other formats may describe
themselves with) is :mod:`relevo.engine.planner_formats`, whose names are re-exported
here; this module assembles the plan, proposes alternatives, and runs the command and
the build check.

Resident memory is modelled as *heap* (Python objects: strings, lists, dicts) plus
*arrays* (numpy, faiss, torch buffers). Freed heap stays resident (CPython and
glibc rarely return it) and is reused by later heap objects only, so a phase costs
``highest heap so far + its arrays``. Besides each format's parts, with N documents and
D dimensions:

- **embeddings** (arrays): the float32 matrix ``4ND`` (``ND`` more for the finiteness
  check of :meth:`Index.add`), alive until the next dense stage is embedded.
- **runtime**: interpreter and libraries (the formats' figures; 590 MiB with the
  sentence-transformers MiniLM loaded). Other embedders' models are not modelled; a
  note says so.

Known error: each part's in :mod:`relevo.engine.planner_formats`. Whole builds (13,113
documents, 384-d), as peak resident set size: -2% to +14% (BM25, every faiss format,
torch-flat, BM25 + faiss-flat); serving after one query: within 10%, except IVF (+43%:
a query touches few of the mapped lists) and IVF-PQ (-20%). Beyond that the corpus
decides, and what freed memory the allocator reuses varies. Memory-mapped payloads
count as resident (the pages a warm server touches; the OS may evict them). GPU
figures are arithmetic only, not measured, and exclude the CUDA context.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, RelevoError
from .planner_formats import *  # noqa: F403  (re-export: every public name stays importable here)
from .planner_formats import (
    _MODELS,
    _MODULES,
    BUNDLED,
    FAISS_GRAMMAR,
    LOAD_PER_DOC,
    MIB,
    READER_PER_DOC,
    RUNTIME_BASE,
    FaissLayout,
    Part,
    StagePlan,
    Workload,
    _bm25_stage,
    _faiss_stage,
    _hook_stage,
    _jsonable,
    _splade_stage,
    _texts_bytes,
    _torch_stage,
    bm25_arrays,
    bm25_counts,
    default_nlist,
    default_pq_m,
    docstore_bytes,
    parse_faiss_factory,
    resolve_faiss_factory,
)

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry

log = logging.getLogger(__name__)

#: Embedders whose dimension (and loaded runtime) is known without loading them.
KNOWN_EMBEDDERS: dict[str, tuple[int, int | None]] = {
    "minilm": (384, 590 * MIB),
    "bge-small": (384, None),
    "minilm-l3": (384, None),
}


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
