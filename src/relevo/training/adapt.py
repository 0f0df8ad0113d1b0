"""The label-free adaptation loop (``relevo adapt CORPUS --out DIR``).

GPL-style (Wang et al. 2022) with Promptagator's round-trip filter:

1. **Queries.** Synthetic queries for the corpus: ``--queries FILE`` from ``relevo
   generate-queries``, or generated now into ``OUT/queries.jsonl`` (resumable).
2. **Split.** Queries are grouped by source document and a seeded share of the
   documents (``dev_size`` queries at most, a fifth of them at least one) is held out,
   never trained on. The dev set is :func:`relevo.engine.autotune.dev_set`'s choice of
   those documents' queries: the half that copies least from its source
   (``OUT/dev-queries.jsonl``). The teacher, trained on none of them, is judged on the
   same choice over *every* query (``OUT/teacher-dev-queries.jsonl``).
3. **Data.** ``OUT/data/`` is a BEIR folder: the corpus (a link to the user's file, or
   a copy where links are refused), the queries, ``qrels/train.tsv`` and
   ``qrels/dev.tsv`` (query -> source document). Every later step reads it like any
   training set, so the registered miners, losses and trainers run unchanged.
4. **Teacher check.** With ``reranker``, its dev set (chosen from every query) measures
   how far to trust it on this corpus (:func:`relevo.engine.autotune.estimate_interpolation`).
5. **Bi-encoder.** ``relevo train embedder`` on ``OUT/data``: negatives mined from
   ``first_stage`` with ``miner``; ``margin-mse`` against the teacher's (query, positive,
   negative) margins (the pseudo-labels) when the teacher alone ranks the dev set at
   least as well as the first stage (or ``loss="margin-mse"``), else MNRL on the
   synthetic pairs. Output ``OUT/embedder``.
6. **Cross-encoder** (``train_reranker``): the teacher (a ``cross-encoder:DIR``, or
   MiniLM without one) fine-tuned on the synthetic pairs with mined negatives; output
   ``OUT/reranker``, and its own dev estimate.
7. **Report.** ``OUT/relevo-adapt.json``: counts, the generation report, the estimates
   (``--interpolate auto`` weights), the training results and the outputs' specs.

A rerun reuses what is finished (queries, data, models) and resumes an interrupted
training from its checkpoint; ``overwrite`` retrains the models.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.errors import ConfigError, DatasetError
from ..engine.synthetic import (
    QueryGenConfig,
    SyntheticQuery,
    generate_queries,
    read_synthetic_queries,
    write_json_atomic,
    write_jsonl_atomic,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.engine import Engine

log = logging.getLogger(__name__)

REPORT_FILE = "relevo-adapt.json"
DEV_FILE = "dev-queries.jsonl"
#: the teacher's dev set: chosen from every synthetic query (the teacher trains on none)
TEACHER_DEV_FILE = "teacher-dev-queries.jsonl"


@dataclass
class AdaptConfig:
    """Everything that defines a ``relevo adapt`` run.

    Attributes:
        corpus: the unlabelled corpus (file or BEIR folder).
        out: output folder.
        embedder: bi-encoder to adapt: ``minilm``, ``sentence-transformers:PATH`` or a folder.
        reranker: teacher, a registered pointwise reranker (``cross-encoder:DIR``).
        queries: synthetic queries to use instead of generating them.
        generation: settings of the generation when ``queries`` is not given.
        miner / miner_options: negative miner for the synthetic queries.
        first_stage: pipeline negatives are mined from and rerankers are judged on.
        loss: ``margin-mse`` (learn the teacher's margins), ``mnrl`` (the synthetic pairs
            with in-batch and mined negatives), or ``auto``: margin-mse when the dev set
            says the teacher *alone* ranks this corpus's candidates at least as well as
            the first stage (MarginMSE copies the teacher's raw scores, not a blend),
            else mnrl — a teacher worse than BM25 here would only teach its mistakes.
        max_steps / train_batch_size / lr: the bi-encoder's training.
        train_reranker / reranker_steps: fine-tune the cross-encoder too.
        reranker_model: the cross-encoder ``train_reranker`` starts from (default: the
            ``cross-encoder:DIR`` teacher's folder, else MiniLM with a new head).
        dev_size: synthetic queries held out (at most) for the estimates.
        depth: candidates the estimates rerank per dev query.
        overwrite: retrain finished models.
    """

    corpus: str | os.PathLike[str]
    out: str | os.PathLike[str]
    embedder: str = "minilm"
    reranker: str | None = None
    queries: str | os.PathLike[str] | None = None
    generation: QueryGenConfig | None = None
    miner: str = "static"
    miner_options: dict[str, Any] = field(default_factory=dict)
    first_stage: str = "bm25"
    loss: str = "auto"
    max_steps: int = 100
    train_batch_size: int = 32
    lr: float = 2e-5
    train_reranker: bool = False
    reranker_steps: int = 60
    reranker_model: str | None = None
    dev_size: int = 100
    depth: int = 30
    seed: int = 42
    overwrite: bool = False
    device: str = "auto"

    def validate(self) -> None:
        for name in ("max_steps", "train_batch_size", "reranker_steps", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.train_batch_size < 2:
            raise ConfigError("train_batch_size must be >= 2 (in-batch negatives).")
        if self.loss not in ("auto", "margin-mse", "mnrl"):
            raise ConfigError(f"loss must be auto, margin-mse or mnrl, not {self.loss!r}.")
        if self.loss == "margin-mse" and not self.reranker:
            raise ConfigError("--loss margin-mse learns a teacher's margins: give --reranker.")
        if self.dev_size < 0:
            raise ConfigError(f"dev_size must be >= 0, got {self.dev_size}.")

    def embedder_base(self) -> str:
        """The ``--base`` of ``relevo train embedder`` for :attr:`embedder`."""
        spec = self.embedder
        for prefix in ("sentence-transformers:", "st:"):
            if spec.startswith(prefix):
                return spec[len(prefix) :]
        if ":" in spec and not Path(spec).exists():
            raise ConfigError(
                f"--embedder {spec}: adapt fine-tunes a sentence-transformers model; give minilm, "
                "sentence-transformers:PATH or a model folder."
            )
        return spec

    def reranker_base(self) -> str | None:
        """The cross-encoder to fine-tune: :attr:`reranker_model`, the teacher's folder, or MiniLM (``None``)."""
        if self.reranker_model:
            return self.reranker_model
        if self.reranker and self.reranker.startswith("cross-encoder:"):
            return self.reranker.split(":", 1)[1]
        return None


def split_dev(
    queries: Sequence[SyntheticQuery], dev_size: int, seed: int
) -> tuple[list[SyntheticQuery], list[SyntheticQuery]]:
    """(train, dev): whole source documents go to dev until it holds ``dev_size`` queries.

    At most a fifth of the queries are held out, so a small set still trains; grouping
    by source keeps a document's other queries out of training when one is a dev query.
    """
    if dev_size == 0 or len(queries) < 2:
        return list(queries), []
    target = min(dev_size, max(1, len(queries) // 5))
    sources = sorted({q.source_id for q in queries})
    order = np.random.default_rng(seed).permutation(len(sources))
    held: set[str] = set()
    count = 0
    by_source: dict[str, int] = {}
    for q in queries:
        by_source[q.source_id] = by_source.get(q.source_id, 0) + 1
    for i in order:
        if count >= target:
            break
        held.add(sources[i])
        count += by_source[sources[i]]
    train = [q for q in queries if q.source_id not in held]
    dev = [q for q in queries if q.source_id in held]
    return train, dev


def _link_or_copy(src: Path, dst: Path) -> str:
    try:
        dst.symlink_to(src.absolute())
        return "link"
    except OSError:
        shutil.copyfile(src, dst)
        return "copy"


def write_training_folder(
    folder: Path, corpus: Path, train: Sequence[SyntheticQuery], dev: Sequence[SyntheticQuery]
) -> dict[str, Any]:
    """``folder`` as a BEIR dataset of the synthetic queries (replaced atomically)."""
    from ..engine.corpus import resolve_corpus

    src = resolve_corpus(corpus)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "qrels").mkdir(parents=True)
    try:
        how = _link_or_copy(
            src, tmp / ("corpus.jsonl.gz" if src.suffix == ".gz" else "corpus.jsonl")
        )
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as fh:
            for q in [*train, *dev]:
                fh.write(json.dumps({"_id": q.id, "text": q.text}, ensure_ascii=False) + "\n")
        for split, rows in (("train", train), ("dev", dev)):
            with (tmp / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as fh:
                fh.write("query-id\tcorpus-id\tscore\n")
                for q in rows:
                    fh.write(f"{q.id}\t{q.source_id}\t1\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"corpus": how, "train": len(train), "dev": len(dev)}


def estimate_for(
    engine: Engine,
    reranker: str,
    dev_rows: Sequence[tuple[str, Any, str]],
    *,
    depth: int,
    source: str,
) -> dict[str, Any]:
    """The ``--interpolate auto`` estimate of ``reranker`` on the dev rows."""
    from ..engine.autotune import estimate_interpolation
    from ..engine.rerank import RerankOptions

    component = engine.reranker(reranker)
    load = getattr(component, "load", None)
    if callable(load):
        load()
    runner = RerankOptions(depth=depth).runner(component)
    return estimate_interpolation(runner, dev_rows, depth=depth, source=source).to_dict()


def _queries(
    cfg: AdaptConfig, out: Path, engine: Engine, progress: Any
) -> tuple[list[SyntheticQuery], dict[str, Any] | None]:
    if cfg.queries is not None:
        return read_synthetic_queries(cfg.queries), None
    target = out / "queries.jsonl"
    if target.is_file():
        from ..engine.synthetic import report_path

        rp = report_path(target)
        report = json.loads(rp.read_text("utf-8")) if rp.is_file() else None
        return read_synthetic_queries(target), report
    gen = cfg.generation or QueryGenConfig(corpus=cfg.corpus, out=target)
    gen.corpus, gen.out = cfg.corpus, target
    report = generate_queries(gen, engine=engine, progress=progress)
    if not report["kept"]:
        raise DatasetError(
            "no synthetic query passed the round-trip check; try --per-doc 3, a larger --sample, "
            "--filter-k 50, or --examples of the target task."
        )
    return read_synthetic_queries(target), report


def adapt(
    cfg: AdaptConfig,
    *,
    engine: Engine | None = None,
    progress: Callable[[int, int], Any] | None = None,
    on_step: Callable[[Any], None] | None = None,
    training_progress: Callable[[str], ContextManager[Callable[[Any], None]]] | None = None,
) -> dict[str, Any]:
    """Run the loop of the module docstring; returns (and writes) the report.

    Args:
        cfg: the run's settings.
        engine: miners, teacher and first stages come from it (default: a new Engine).
        progress: ``progress(done, total)`` while queries are generated.
        on_step: called after every optimizer step of either training.
        training_progress: ``training_progress(description)`` -> a context manager
            yielding an ``on_step`` for one training (the CLI's progress bars); used
            instead of ``on_step`` when given.
    """
    from ..engine.autotune import dev_candidates, dev_set, pairs
    from ..engine.corpus import read_corpus
    from .embedder import EmbedderConfig, train_embedder

    cfg.validate()
    if engine is None:
        from ..engine.engine import Engine

        engine = Engine()
    t0 = time.perf_counter()
    out = Path(cfg.out).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    docs, checksum = read_corpus(cfg.corpus)
    known = {d.id for d in docs}
    queries, gen_report = _queries(cfg, out, engine, progress)
    usable = [q for q in queries if q.source_id in known]
    if len(usable) < 2:
        raise DatasetError(
            f"{len(usable)} of {len(queries)} synthetic queries name a document of {cfg.corpus}; "
            "adapt needs at least 2 (were the queries written for another corpus?)."
        )
    train, held_out = split_dev(usable, cfg.dev_size, cfg.seed)
    # Dev sets (relevo.engine.autotune.dev_set): the half of the queries that copies least
    # from its source. The adapted models are judged on held-out documents only; the
    # teacher, trained on none of these queries, on all of them.
    texts = {d.id: d.content for d in docs}
    dev = dev_set(held_out, texts.get)
    teacher_dev = dev_set(usable, texts.get)
    data = out / "data"
    data_facts = write_training_folder(data, Path(cfg.corpus), train, dev)
    write_jsonl_atomic(out / DEV_FILE, [q.to_json() for q in dev])
    write_jsonl_atomic(out / TEACHER_DEV_FILE, [q.to_json() for q in teacher_dev])
    report: dict[str, Any] = {
        "format": "relevo-adapt",
        "corpus": str(cfg.corpus),
        "corpus_checksum": checksum,
        "queries": {
            "total": len(queries),
            "unknown_source": len(queries) - len(usable),
            "train": len(train),
            "held_out": len(held_out),
            "dev": len(dev),
            "dev_file": str(out / DEV_FILE),
            "teacher_dev": len(teacher_dev),
            "teacher_dev_file": str(out / TEACHER_DEV_FILE),
        },
        "generation": None
        if gen_report is None
        else {
            k: gen_report.get(k)
            for k in ("generated", "kept", "kept_fraction", "dropped", "docs_per_second", "model")
        },
        "data": data_facts,
        "interpolate_auto": {},
        "outputs": {},
    }
    dev_rows = (
        dev_candidates(engine, cfg.corpus, pairs(dev), pipeline=cfg.first_stage, depth=cfg.depth)
        if dev and cfg.train_reranker
        else []
    )
    if cfg.reranker and teacher_dev:
        teacher_rows = dev_candidates(
            engine, cfg.corpus, pairs(teacher_dev), pipeline=cfg.first_stage, depth=cfg.depth
        )
        report["interpolate_auto"]["teacher"] = estimate_for(
            engine, cfg.reranker, teacher_rows, depth=cfg.depth, source=str(out / TEACHER_DEV_FILE)
        )
    # -- bi-encoder ---------------------------------------------------------------------
    loss = cfg.loss
    if loss == "auto":
        teacher_est = report["interpolate_auto"].get("teacher")
        if not cfg.reranker:
            loss = "mnrl"
        elif teacher_est is None:  # no dev set to judge the teacher: trust it (GPL)
            loss = "margin-mse"
        else:  # MarginMSE copies the teacher's own scores: judge the teacher alone
            alone, first = teacher_est["curve"]["1.0"], teacher_est["curve"]["0.0"]
            loss = "margin-mse" if alone >= first else "mnrl"
    report["loss"] = {"asked": cfg.loss, "used": loss}
    emb_out = out / "embedder"
    ecfg = EmbedderConfig(
        datasets=[data],
        out=emb_out,
        base=cfg.embedder_base(),
        loss=loss,
        teacher=cfg.reranker if loss == "margin-mse" else None,
        miner=cfg.miner,
        miner_options=dict(cfg.miner_options),
        first_stage=cfg.first_stage,
        split="train",
        max_steps=cfg.max_steps,
        batch_size=cfg.train_batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        device=cfg.device,
    )
    with _stepper(training_progress, "training the bi-encoder", on_step) as step:
        report["embedder"] = _train_once(
            lambda resume, overwrite: train_embedder(
                ecfg, resume=resume, overwrite=overwrite, engine=engine, on_step=step
            ),
            emb_out,
            "relevo-embedder.json",
            cfg.overwrite,
        )
    report["outputs"]["embedder"] = f"sentence-transformers:{emb_out}"
    # -- cross-encoder ------------------------------------------------------------------
    if cfg.train_reranker:
        from .cross_encoder import TrainConfig, train_cross_encoder

        ce_out = out / "reranker"
        ccfg = TrainConfig(
            datasets=[data],
            out=ce_out,
            base=cfg.reranker_base(),
            split="train",
            max_steps=cfg.reranker_steps,
            seed=cfg.seed,
            device=cfg.device,
            miner=cfg.miner,
            miner_options=dict(cfg.miner_options),
            max_queries=None,
            # 4 query groups of 8 per step, fewer when there are fewer training queries
            batch_size=8 * max(1, min(4, len(train))),
        )
        with _stepper(training_progress, "training the cross-encoder", on_step) as step:
            report["reranker"] = _train_once(
                lambda resume, overwrite: train_cross_encoder(
                    ccfg, resume=resume, overwrite=overwrite, engine=engine, on_step=step
                ),
                ce_out,
                "relevo-reranker.json",
                cfg.overwrite,
            )
        report["outputs"]["reranker"] = f"cross-encoder:{ce_out}"
        if dev_rows:
            report["interpolate_auto"]["reranker"] = estimate_for(
                engine,
                f"cross-encoder:{ce_out}",
                dev_rows,
                depth=cfg.depth,
                source=str(out / DEV_FILE),
            )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out / REPORT_FILE, report)
    return report


def _stepper(
    factory: Callable[[str], ContextManager[Callable[[Any], None]]] | None,
    description: str,
    on_step: Callable[[Any], None] | None,
) -> ContextManager[Callable[[Any], None] | None]:
    if factory is not None:
        return factory(description)
    return contextlib.nullcontext(on_step)


def _train_once(
    run: Callable[[bool, bool], Any], folder: Path, report_file: str, overwrite: bool
) -> dict[str, Any]:
    """Train unless ``folder`` holds a finished model; resume an unfinished checkpoint."""
    done = folder / report_file
    if done.is_file() and not overwrite:
        prior = json.loads(done.read_text("utf-8"))
        return {"path": str(folder), "reused": True, "steps": prior.get("steps")}
    resume = (folder / "checkpoint").is_dir() and not overwrite
    result = run(resume, overwrite)
    return {
        "path": str(result.path),
        "reused": False,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "final_loss": result.final_loss,
    }


__all__ = [
    "DEV_FILE",
    "REPORT_FILE",
    "TEACHER_DEV_FILE",
    "AdaptConfig",
    "adapt",
    "estimate_for",
    "split_dev",
    "write_training_folder",
]
