"""Synthetic queries for an unlabelled corpus (``relevo generate-queries``).

Few-shot prompted generation in the manner of Promptagator (Dai et al. 2022): a
registered :class:`~relevo.QueryGenerator` (the bundled ``smollm2`` / ``llm:ID`` ones
prompt a causal LM with up to 8 (document, query) examples of the target task as earlier
chat turns, then one corpus document) writes the queries. Without examples the prompt
carries three hand-written, domain-neutral examples (:data:`GENERIC_EXAMPLES`), so no
label of any dataset enters it. Each generated query is then checked for *round-trip
consistency*: it is searched with a first stage over the same corpus (any relevo
pipeline, ``bm25`` by default) and kept only if its source document is in the top
``filter_k``.

Determinism and resuming. Documents are visited in a fixed order (the corpus order, or
a seeded sample of it); batch ``b`` is sampled with a torch generator seeded by
``(seed, b)``, so a batch's queries do not depend on which batches ran before it. Raw
generations are appended batch by batch to ``OUT.raw.jsonl`` (flushed, each batch one
line); a rerun with the same settings skips the batches already there, so an
interrupted run resumes. The final file ``OUT`` (BEIR ``queries.jsonl`` lines with
``source_id`` and ``round_trip_rank``), ``OUT.dropped.jsonl`` (the queries the round trip
dropped, same lines, for inspection and ``benchmarks/bench_autotune.py``) and
``OUT.report.json`` are written to temporary siblings and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, DatasetError

if TYPE_CHECKING:  # pragma: no cover
    from .components import QueryGenerator
    from .engine import Engine
    from .types import Document

log = logging.getLogger(__name__)

#: (document, query) pairs on topics far from any benchmark: the generic prompt's examples.
GENERIC_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Tea and sleep. Caffeine in black and green tea delays sleep onset by about 20 "
        "minutes in adults who drink it in the evening; herbal teas had no effect.",
        "does drinking tea at night keep you awake",
    ),
    (
        "Lithium-ion battery ageing. Capacity fade in lithium-ion cells is driven mainly by "
        "growth of the solid electrolyte interphase, which accelerates at high temperature.",
        "why do lithium batteries lose capacity over time",
    ),
    (
        "The Treaty of Westphalia. Signed in 1648, the treaties ended the Thirty Years' War "
        "and established the principle of state sovereignty in Europe.",
        "what did the peace of westphalia establish",
    ),
)

SYSTEM_PROMPT = (
    "You write the search query a person would type to find the given document. "
    "Reply with the query only."
)

#: at most this many few-shot examples (Promptagator's 8)
MAX_EXAMPLES = 8

_WS = re.compile(r"\s+")


@dataclass
class QueryGenConfig:
    """Everything that defines a ``relevo generate-queries`` run.

    Attributes:
        corpus: a BEIR corpus file or folder.
        out: the queries file to write (``.jsonl``).
        model: a registered query generator: ``smollm2`` (packaged SmolLM2-135M-Instruct),
            ``llm:ID`` (any causal LM id, folder or ``.gguf``), or a model path.
        examples: a JSONL file of up to 8 ``{"query", "document"}`` (or ``"text"``) pairs.
        per_doc: queries sampled per document.
        sample: generate for a seeded sample of this many documents (default: all).
        seed: seeds the sample and the sampling.
        batch_size: documents per generation batch.
        doc_tokens: a document is cut to this many tokens in the prompt.
        max_new_tokens: longest query, in tokens.
        temperature / top_p: the sampling distribution.
        filter_pipeline: the first stage of the round-trip check (a ``relevo eval
            --pipeline``), or ``None`` to keep every query.
        filter_k: keep a query whose source document is in this many top hits.
        embedder: embedder of dense filter pipelines.
        min_words: documents with fewer words are skipped (nothing to ask about).
        device: ``auto``, ``cpu``, ``cuda``...
    """

    corpus: str | os.PathLike[str]
    out: str | os.PathLike[str]
    model: str = "smollm2"
    examples: str | os.PathLike[str] | None = None
    per_doc: int = 1
    sample: int | None = None
    seed: int = 42
    batch_size: int = 16
    doc_tokens: int = 128
    max_new_tokens: int = 32
    temperature: float = 0.7
    top_p: float = 0.95
    filter_pipeline: str | None = "bm25"
    filter_k: int = 20
    embedder: str = "minilm"
    min_words: int = 5
    device: str = "auto"
    overwrite: bool = False

    def validate(self) -> None:
        for name in ("per_doc", "batch_size", "doc_tokens", "max_new_tokens", "filter_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.sample is not None and (not isinstance(self.sample, int) or self.sample < 1):
            raise ConfigError(f"--sample must be a positive integer, got {self.sample!r}.")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")
        if Path(self.out).suffix != ".jsonl":
            raise ConfigError(f"--out {self.out}: give a .jsonl file name for the queries.")

    def generator_name(self) -> str:
        """The registered generator ``model`` names (a path becomes ``llm:PATH``)."""
        spec = self.model.strip()
        if not spec:
            raise ConfigError("--model is empty; give smollm2, llm:ID or a model path.")
        local = Path(spec).expanduser()
        if ":" not in spec and ("/" in spec or spec.startswith((".", "~"))) and local.exists():
            return f"llm:{local}"
        return spec

    def generation_key(
        self, corpus_checksum: str, generator: QueryGenerator, examples: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        """The settings that decide the raw generations (compared when resuming)."""
        keep = ("per_doc", "sample", "seed", "batch_size", "min_words")
        data: dict[str, Any] = {k: v for k, v in asdict(self).items() if k in keep}
        data["corpus_checksum"] = corpus_checksum
        data["generator"] = generator.fingerprint()
        data["examples"] = [list(e) for e in examples]
        return data


@dataclass
class SyntheticQuery:
    """One generated query and where it came from."""

    id: str
    text: str
    source_id: str
    round_trip_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "text": self.text,
            "source_id": self.source_id,
            "round_trip_rank": self.round_trip_rank,
        }


def read_examples(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Few-shot examples: JSONL lines ``{"query": ..., "document": ...}`` (or ``"text"``)."""
    from .corpus import iter_jsonl

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--examples {p}: no such file (JSONL of {{'query', 'document'}} pairs).")
    out = []
    for lineno, obj in iter_jsonl(p):
        query, doc = obj.get("query"), obj.get("document", obj.get("text"))
        if (
            not isinstance(query, str)
            or not isinstance(doc, str)
            or not query.strip()
            or not doc.strip()
        ):
            raise ConfigError(
                f'{p}:{lineno}: an example needs non-empty string "query" and "document" fields.'
            )
        out.append((doc.strip(), query.strip()))
    if not out:
        raise ConfigError(f"--examples {p} holds no example.")
    if len(out) > MAX_EXAMPLES:
        raise ConfigError(
            f"--examples {p} holds {len(out)} examples; the prompt takes at most {MAX_EXAMPLES}."
        )
    return out


def read_synthetic_queries(path: str | os.PathLike[str]) -> list[SyntheticQuery]:
    """Read a file written by ``relevo generate-queries`` (or any JSONL with ``source_id``)."""
    from .corpus import iter_jsonl

    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"synthetic queries file {p} does not exist.")
    out: list[SyntheticQuery] = []
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(p):
        qid, text, source = obj.get("_id", obj.get("id")), obj.get("text"), obj.get("source_id")
        if (
            not isinstance(qid, (str, int))
            or not isinstance(text, str)
            or not isinstance(source, (str, int))
        ):
            raise DatasetError(
                f'{p}:{lineno}: a synthetic query needs "_id", "text" and "source_id" '
                "(the document it was written for); write the file with `relevo generate-queries`."
            )
        if str(qid) in seen:
            raise DatasetError(f"{p}:{lineno}: duplicate query id {qid!r}.")
        seen.add(str(qid))
        rank = obj.get("round_trip_rank")
        out.append(
            SyntheticQuery(str(qid), text, str(source), rank if isinstance(rank, int) else None)
        )
    if not out:
        raise DatasetError(f"synthetic queries file {p} holds no query.")
    return out


def clean_query(text: str) -> str:
    """The first line of a generation, without quotes, labels and surrounding blanks."""
    line = text.strip().split("\n", 1)[0]
    line = re.sub(r"^(search )?(query|question)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = _WS.sub(" ", line).strip().strip("\"'“”`").strip()
    return line


# -- the run -------------------------------------------------------------------------------
def _doc_text(doc: Document) -> str:
    return f"{doc.title}. {doc.text}".strip(". ") if doc.title else doc.text


def _chosen(docs: Sequence[Document], cfg: QueryGenConfig) -> tuple[list[Document], int]:
    """Documents to generate for (sample order), and how many were too short."""
    usable = [d for d in docs if len(_doc_text(d).split()) >= cfg.min_words]
    short = len(docs) - len(usable)
    if cfg.sample is not None and cfg.sample < len(usable):
        rng = np.random.default_rng(cfg.seed)
        picked = np.sort(rng.choice(len(usable), size=cfg.sample, replace=False))
        usable = [usable[i] for i in picked]
    return usable, short


def _read_raw(path: Path, key: dict[str, Any]) -> dict[int, list[list[str]]]:
    """Batches already generated with these settings (a torn last line is ignored)."""
    if not path.is_file():
        return {}
    done: dict[int, list[list[str]]] = {}
    with path.open("r", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    try:
        head = json.loads(lines[0])
    except (json.JSONDecodeError, IndexError):
        return {}
    if head.get("settings") != key:
        return {}
    for line in lines[1:]:
        try:
            obj = json.loads(line)
            done[int(obj["batch"])] = obj["queries"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return done


@contextlib.contextmanager
def _raw_writer(
    path: Path, key: dict[str, Any], fresh: bool
) -> Iterator[Callable[[int, list[list[str]]], None]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "w" if fresh else "a"
    with path.open(mode, encoding="utf-8") as fh:
        if fresh:
            fh.write(json.dumps({"settings": key}, ensure_ascii=False) + "\n")
            fh.flush()

        def write(batch: int, queries: list[list[str]]) -> None:
            fh.write(json.dumps({"batch": batch, "queries": queries}, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

        yield write


def round_trip_filter(
    engine: Engine,
    corpus: str | os.PathLike[str],
    queries: Sequence[SyntheticQuery],
    *,
    pipeline: str = "bm25",
    k: int = 20,
    embedder: str = "minilm",
) -> tuple[list[SyntheticQuery], list[SyntheticQuery], dict[str, Any]]:
    """Split ``queries`` into (kept, dropped): kept ones retrieve their source in the top ``k``.

    The first stage is any ``relevo eval`` pipeline over ``corpus``, built once and cached
    like ``relevo eval``'s indexes. Every query gets its ``round_trip_rank`` (1-based,
    ``None`` when the source is not in the top ``k``).
    """
    from .evaluate import corpus_collection

    t0 = time.perf_counter()
    collection = corpus_collection(engine, corpus, pipeline, embedder=embedder)
    index_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = collection.search_batch([q.text for q in queries], k) if queries else []
    kept: list[SyntheticQuery] = []
    dropped: list[SyntheticQuery] = []
    for q, hits in zip(queries, results, strict=True):
        ranks = [i for i, h in enumerate(hits, 1) if h.id == q.source_id]
        q.round_trip_rank = ranks[0] if ranks else None
        (kept if ranks else dropped).append(q)
    facts = {
        "pipeline": pipeline,
        "k": k,
        "index_seconds": round(index_seconds, 2),
        "search_seconds": round(time.perf_counter() - t0, 2),
    }
    return kept, dropped, facts


def write_jsonl_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def report_path(out: str | os.PathLike[str]) -> Path:
    """``queries.jsonl`` -> ``queries.report.json``."""
    p = Path(out)
    return p.with_name(p.name[: -len(".jsonl")] + ".report.json")


def dropped_path(out: str | os.PathLike[str]) -> Path:
    """``OUT.dropped.jsonl``: the queries the round-trip check dropped, with their sources."""
    p = Path(out)
    return p.with_name(p.name[: -len(".jsonl")] + ".dropped.jsonl")


def raw_path(out: str | os.PathLike[str]) -> Path:
    p = Path(out)
    return p.with_name(p.name[: -len(".jsonl")] + ".raw.jsonl")


def generate_queries(
    cfg: QueryGenConfig,
    *,
    engine: Engine | None = None,
    progress: Callable[[int, int], Any] | None = None,
    generator: QueryGenerator | None = None,
) -> dict[str, Any]:
    """Generate, clean and round-trip filter queries for ``cfg.corpus``; returns the report.

    Args:
        cfg: the run's settings (validated here).
        engine: builds the filter's first stage (default: a fresh :class:`Engine`).
        progress: ``progress(done_docs, total_docs)`` after every batch (and once at the
            start with the documents a resumed run already has).
        generator: a ready :class:`~relevo.QueryGenerator` (default: the registered
            ``cfg.model`` built by :func:`make_generator`).
    """
    from .corpus import read_corpus

    cfg.validate()
    out = Path(cfg.out).expanduser()
    if out.exists() and not cfg.overwrite:
        raise ConfigError(
            f"{out} exists; pass --overwrite to replace it (its raw generations are reused)."
        )
    if engine is None:
        from .engine import Engine

        engine = Engine()
    examples = read_examples(cfg.examples) if cfg.examples else list(GENERIC_EXAMPLES)
    docs, checksum = read_corpus(cfg.corpus)
    chosen, short = _chosen(docs, cfg)
    if not chosen:
        raise DatasetError(
            f"{cfg.corpus}: no document has the {cfg.min_words} words a query can be written from."
        )
    t_start = time.perf_counter()
    if generator is None:
        generator = make_generator(engine, cfg, examples)
    generator.load()
    load_seconds = time.perf_counter() - t_start
    key = cfg.generation_key(checksum, generator, examples)
    raw = raw_path(out)
    done = _read_raw(raw, key)  # same settings: the same queries, so reuse them
    size = cfg.batch_size
    starts = list(range(0, len(chosen), size))
    resumed_docs = sum(min(size, len(chosen) - starts[b]) for b in done if b < len(starts))
    if progress is not None:
        progress(resumed_docs, len(chosen))
    t_gen = time.perf_counter()
    generated_docs = 0
    with _raw_writer(raw, key, fresh=not done) as write:
        for b, start in enumerate(starts):
            if b in done:
                continue
            batch = chosen[start : start + size]
            texts = [_doc_text(d) for d in batch]
            per: list[list[str]] = [[] for _ in batch]
            for j in range(cfg.per_doc):
                for i, q in enumerate(generator.generate(texts, (cfg.seed, b, j))):
                    per[i].append(q)
            write(b, per)
            done[b] = per
            generated_docs += len(batch)
            if progress is not None:
                progress(resumed_docs + generated_docs, len(chosen))
    gen_seconds = time.perf_counter() - t_gen
    # -- clean ------------------------------------------------------------------------
    candidates: list[SyntheticQuery] = []
    dropped: dict[str, list[dict[str, Any]]] = {"empty": [], "duplicate": [], "round_trip": []}
    for b, start in enumerate(starts):
        for i, doc in enumerate(chosen[start : start + size]):
            seen: set[str] = set()
            for j, rawq in enumerate(done[b][i]):
                text = clean_query(rawq)
                entry = {"source_id": doc.id, "text": text or rawq}
                if len(text) < 3:
                    dropped["empty"].append(entry)
                    continue
                if text.lower() in seen:
                    dropped["duplicate"].append(entry)
                    continue
                seen.add(text.lower())
                candidates.append(SyntheticQuery(f"syn-{start + i:06d}-{j}", text, doc.id))
    # -- round trip ---------------------------------------------------------------------
    filter_facts: dict[str, Any] | None = None
    lost: list[SyntheticQuery] = []
    if cfg.filter_pipeline and candidates:
        kept, lost, filter_facts = round_trip_filter(
            engine, cfg.corpus, candidates, pipeline=cfg.filter_pipeline, k=cfg.filter_k,
            embedder=cfg.embedder,
        )  # fmt: skip
        dropped["round_trip"] = [{"source_id": q.source_id, "text": q.text} for q in lost]
    else:
        kept = candidates
    if not kept:
        log.warning("no generated query survived the round-trip check")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out, [q.to_json() for q in kept])
    # The drops are written too, for inspection (what the filter threw away, and why a
    # dev set of them misleads: relevo.engine.autotune).
    dropped_file = dropped_path(out)
    write_jsonl_atomic(dropped_file, [q.to_json() for q in lost])
    total = sum(len(done[b][i]) for b in done for i in range(len(done[b])))
    report = {
        "corpus": str(cfg.corpus),
        "corpus_checksum": checksum,
        "out": str(out),
        "dropped_file": str(dropped_file),
        "model": cfg.model,
        "generator": generator.describe(),
        "examples": "generic" if not cfg.examples else str(cfg.examples),
        "documents": len(docs),
        "documents_too_short": short,
        "documents_used": len(chosen),
        "documents_resumed": resumed_docs,
        "generated": total,
        "kept": len(kept),
        "kept_fraction": len(kept) / total if total else 0.0,
        "dropped": {k: len(v) for k, v in dropped.items()},
        "round_trip": filter_facts,
        "round_trip_ranks": _rank_histogram(kept),
        "load_seconds": round(load_seconds, 2),
        "generation_seconds": round(gen_seconds, 2),
        "docs_per_second": round(generated_docs / gen_seconds, 3) if generated_docs else None,
        **_earlier_speed(report_path(out), key, generated_docs),
        "sample_kept": [q.to_json() for q in kept[:10]],
        "sample_dropped": {k: v[:5] for k, v in dropped.items()},
        "settings": {k: v for k, v in key.items() if k != "examples"},
    }
    write_json_atomic(report_path(out), report)
    return report


def _earlier_speed(path: Path, key: dict[str, Any], generated_docs: int) -> dict[str, Any]:
    """A rerun that generated nothing (every batch reused) keeps the speed measured before."""
    if generated_docs or not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    same = old.get("settings") == {k: v for k, v in key.items() if k != "examples"}
    if not same or not old.get("docs_per_second"):
        return {}
    return {
        "docs_per_second_earlier": old["docs_per_second"],
        "generation_seconds_earlier": old.get("generation_seconds"),
    }


def cached_dev_set(
    engine: Engine,
    corpus: str | os.PathLike[str],
    *,
    sample: int | None = None,
    model: str = "smollm2",
    seed: int = 42,
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[list[SyntheticQuery], Path]:
    """Synthetic dev queries for ``corpus``, generated once and kept in the user cache.

    What ``--interpolate auto`` uses without ``--dev-queries``: ``sample`` documents
    (default :data:`relevo.engine.autotune.AUTO_SAMPLE`), one query each, round-trip
    checked with BM25; the file is keyed by the corpus checksum, the generator and the
    seed (``<cache>/synthetic/``), so later runs reuse it.
    """
    from .autotune import AUTO_SAMPLE
    from .cache import key
    from .corpus import read_corpus

    if sample is None:
        sample = AUTO_SAMPLE
    _, checksum = read_corpus(corpus)
    folder = engine.cache_dir / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"dev-{key(checksum, model, str(seed), str(sample))}.jsonl"
    if not out.is_file():
        log.info(
            "--interpolate auto: writing %d synthetic dev queries for %s (once)", sample, corpus
        )
        generate_queries(
            QueryGenConfig(corpus=corpus, out=out, model=model, sample=sample, seed=seed),
            engine=engine,
            progress=progress,
        )
    return read_synthetic_queries(out), out


def make_generator(
    engine: Engine, cfg: QueryGenConfig, examples: Sequence[tuple[str, str]]
) -> QueryGenerator:
    """The registered generator ``cfg.model`` with the run's prompt and sampling settings."""
    return engine.query_generator(
        cfg.generator_name(),
        examples=[tuple(e) for e in examples],
        doc_tokens=cfg.doc_tokens,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        device=cfg.device,
    )


def _rank_histogram(kept: Sequence[SyntheticQuery]) -> dict[str, int]:
    hist = {"1": 0, "2-5": 0, "6-10": 0, "11+": 0}
    for q in kept:
        r = q.round_trip_rank or 0
        hist["1" if r == 1 else "2-5" if r <= 5 else "6-10" if r <= 10 else "11+"] += 1
    return hist


__all__ = [
    "GENERIC_EXAMPLES",
    "QueryGenConfig",
    "SyntheticQuery",
    "cached_dev_set",
    "clean_query",
    "generate_queries",
    "make_generator",
    "raw_path",
    "read_examples",
    "dropped_path",
    "read_synthetic_queries",
    "report_path",
    "write_json_atomic",
    "write_jsonl_atomic",
    "round_trip_filter",
]
