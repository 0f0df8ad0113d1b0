"""Train a causal LM for generative retrieval (``relevo train generative``), DSI / CorpusBrain style.

The model learns to generate a document's identifier after the ``docid-trie`` prompt
(``"Query: {query}\\nTitle:"``), so that the bundled ``docid-trie`` index, which
constrains generation to the identifiers of its collection, can use it as its ``model``.
The identifiers are assigned by :mod:`relevo.indexes.docids`, the code the index
itself runs, with the same options (``docid``, ``max_words``; ``branching``, ``leaf``,
the embedder and the k-means seed for ``semantic``): a model trained here generates
exactly the identifiers an index built on the same corpus with the same options holds.

Examples. Each is a (prompt, target) pair: the prompt is the docid-trie prompt with a
pseudo-query in place of ``{query}``; the target is ``" " + identifier`` followed by
the tokenizer's EOS, tokenised as the index tokenises its trie. Four kinds:

- ``indexing`` (DSI): the document's text (its first 64 words) -> its identifier;
- ``first-sentence`` (CorpusBrain's inner sentence selection): its first sentence;
- ``span`` (CorpusBrain's random passages): a random span of 8-32 words of its text,
  drawn afresh every epoch from ``numpy.random.default_rng([seed, epoch, example])``;
- ``query``: every query of the dataset's ``split`` (``qrels/train.tsv`` by default,
  relevance > 0) -> the identifier of each of its positives; none when the split's
  qrels file is absent (a corpus alone trains the first three kinds).

All examples form one pool, visited in a seeded order per epoch. Long pseudo-queries
lose their last words until prompt + target fit ``max_length``; the target is never
cut.

Loss. Causal-LM cross-entropy over the target tokens only: prompt and padding have
label -100 (batches are right-padded with an attention mask), averaged over the batch's
target tokens.

Full fine-tuning or LoRA. ``lora=False`` (default) trains every weight in float32;
``lora=True`` trains rank-``lora_rank`` adapters on every linear layer with ``peft``
(``pip install 'relevo[lora]'``) and merges them into the weights before the final save,
so the output is always a plain model folder.

Optimisation, checkpoints and resume follow :mod:`relevo.training.cross_encoder`:
AdamW (no decay on biases and norms), linear warm-up then decay
(:func:`~relevo.training.checkpoints.lr_lambda`), gradient clipping at 1.0;
``OUT/checkpoint/`` every ``checkpoint_every`` steps (model or adapters, optimizer,
scheduler and torch RNG states, safetensors + JSON), and a resumed run continues
bit-for-bit (the data of any step is a function of seed and step). The finished model
(``save_pretrained``: safetensors + tokenizer) replaces ``OUT`` atomically, with
``relevo-generative.json`` describing the run.

Heavy imports (torch, transformers, peft) happen inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.errors import ConfigError, DatasetError
from ..indexes.docids import (
    ANCHOR,
    ASSIGNMENT_DIR,
    DEFAULT_PROMPT,
    DOCIDS,
    DocidAssigner,
    eos_token_id,
    identifier_tokens,
    words,
)
from ..models import check_device, require, require_torch, resolve_device
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
    from ..engine.types import Document

log = logging.getLogger(__name__)

KINDS = ("indexing", "first-sentence", "span", "query")
REPORT_FILE = "relevo-generative.json"
FORMAT = "relevo-generative"
FORMAT_VERSION = 1
CHECKPOINT_KIND = "generative"
#: words of the document text in an ``indexing`` example (and at most in a first sentence)
INDEXING_WORDS = 64
#: words of a ``span`` example, inclusive bounds
SPAN_WORDS = (8, 32)
MAX_QUERY_CHARS = 4000
WHAT = "relevo train generative"

#: Fields of :class:`GenerativeConfig` that do not change which model a run produces.
_RUN_ONLY_FIELDS = frozenset({"out", "checkpoint_every", "device", "semantic_device"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class GenerativeConfig:
    """Everything that defines a generative-retrieval training run.

    Attributes:
        dataset: a BEIR-layout folder (corpus.jsonl[.gz]; queries.jsonl and
            qrels/SPLIT.tsv for query examples).
        out: output folder for the model (and ``checkpoint/`` while training).
        base: the causal LM to start from: ``smollm2`` (packaged SmolLM2-135M-Instruct),
            a model folder, a ``.gguf`` file or a Hugging Face id.
        docid: ``title``, ``prefix`` or ``semantic``: the docid-trie ``docid`` option.
        max_words / branching / leaf / semantic_embedder / kmeans_seed: the docid-trie
            options ``max_words``, ``branching``, ``leaf``, ``embedder`` and ``seed`` the
            identifiers depend on (give the index the same ones).
        prompt: the docid-trie ``prompt`` (with ``{query}``, ending with ``"Title:"``).
        split: qrels split whose queries become ``query`` examples.
        epochs: passes over the examples (ignored when ``max_steps`` is set).
        max_steps: optimizer steps; overrides ``epochs``.
        batch_size: examples per step.
        max_length: tokens per example (prompt + target).
        lr / weight_decay / warmup_ratio: AdamW with linear warm-up and decay.
        lora: train LoRA adapters (needs ``peft``) instead of every weight.
        lora_rank: the adapters' rank (alpha = 2 x rank, dropout 0.05).
        seed: seeds the data order, the spans, LoRA's initialisation and dropout.
        checkpoint_every: steps between checkpoints (0: none).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        semantic_device: device of the ``semantic`` embedder (the index's ``device``).
    """

    dataset: str | os.PathLike[str]
    out: str | os.PathLike[str]
    base: str = "smollm2"
    docid: str = "title"
    max_words: int = 12
    branching: int = 10
    leaf: int = 100
    semantic_embedder: str = "minilm"
    kmeans_seed: int = 0
    prompt: str = DEFAULT_PROMPT
    split: str = "train"
    # Not measured yet (benchmarks to come): a short full fine-tune of a 135M model.
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 16
    max_length: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    lora: bool = False
    lora_rank: int = 16
    seed: int = 42
    checkpoint_every: int = 50
    device: str = "auto"
    semantic_device: str = "auto"

    def validate(self) -> None:
        if self.docid not in DOCIDS:
            raise ConfigError(f"docid must be one of {', '.join(DOCIDS)}, not {self.docid!r}.")
        if "{query}" not in self.prompt or not self.prompt.endswith(ANCHOR):
            raise ConfigError(
                f"prompt must contain {{query}} and end with {ANCHOR!r} (the identifier follows it)."
            )
        positive: dict[str, Any] = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_words": self.max_words,
            "leaf": self.leaf,
            "lora_rank": self.lora_rank,
        }
        if self.max_steps is not None:
            positive["max_steps"] = self.max_steps
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        for name, low in (("branching", 2), ("max_length", 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if isinstance(self.checkpoint_every, bool) or self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}.")
        check_device(self.device)
        check_device(self.semantic_device)

    def resolved_base(self) -> str:
        """``base`` with a local path made absolute (aliases and hub ids as given)."""
        local = Path(self.base).expanduser()
        return str(local.absolute()) if local.exists() else self.base

    def fingerprint(self) -> dict[str, Any]:
        """The fields that decide the trained weights (compared when resuming)."""
        data = {k: v for k, v in asdict(self).items() if k not in _RUN_ONLY_FIELDS}
        data["dataset"] = str(Path(self.dataset).expanduser().absolute())
        data["base"] = self.resolved_base()
        if self.docid != "semantic":  # these shape semantic identifiers only
            for k in ("branching", "leaf", "semantic_embedder", "kmeans_seed"):
                data.pop(k)
        return data

    def index_options(self) -> dict[str, Any]:
        """The docid-trie options (besides ``model``) that differ from the index's defaults."""
        wanted: dict[str, Any] = {"docid": self.docid, "max_words": self.max_words}
        if self.docid == "semantic":
            wanted.update(
                branching=self.branching,
                leaf=self.leaf,
                embedder=self.semantic_embedder,
                seed=self.kmeans_seed,
            )
        wanted["prompt"] = self.prompt
        defaults = {
            "docid": "title",
            "max_words": 12,
            "branching": 10,
            "leaf": 100,
            "embedder": "minilm",
            "seed": 0,
            "prompt": DEFAULT_PROMPT,
        }
        return {k: v for k, v in wanted.items() if defaults[k] != v}


@dataclass
class GenerativeResult:
    """What :func:`train_generative` produced."""

    path: Path
    steps: int
    seconds: float
    final_loss: float
    losses: list[float] = field(repr=False)
    report: dict[str, Any] = field(repr=False)


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One (pseudo-query, identifier) pair.

    ``text`` is the pseudo-query, except for ``span`` examples: there it is the document
    text a span is cut from at every epoch (:meth:`GenerativeData.query`).
    """

    kind: str
    row: int  # the document's corpus row
    text: str
    identifier: str


@dataclass
class GenerativeData:
    """The corpus, its identifiers and the training examples."""

    docs: list[Document]
    ids: list[str]  # row -> identifier, as the docid-trie index assigns them
    examples: list[Example]
    checksum: str
    report: dict[str, Any]
    seconds: float = 0.0
    assigner: DocidAssigner | None = None  # its state: the identifiers and centroid tree

    def counts(self) -> dict[str, int]:
        return {k: sum(e.kind == k for e in self.examples) for k in KINDS}

    def query(self, index: int, epoch: int, seed: int) -> str:
        """The pseudo-query of example ``index`` in ``epoch`` (spans are drawn here)."""
        ex = self.examples[index]
        if ex.kind != "span":
            return ex.text
        rng = np.random.default_rng([seed, epoch, index])
        return random_span(ex.text.split(), rng)


def random_span(tokens: Sequence[str], rng: np.random.Generator) -> str:
    """A random run of ``SPAN_WORDS`` words (all of them when there are fewer)."""
    n = len(tokens)
    lo, hi = SPAN_WORDS
    length = min(n, int(rng.integers(lo, hi + 1)))
    start = int(rng.integers(0, n - length + 1))
    return " ".join(tokens[start : start + length])


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (``.``, ``!``, ``?`` then space), at most 64 words."""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return words(head, INDEXING_WORDS)


def _body(doc: Document) -> str:
    """What pseudo-queries are cut from: the text, or the title of a document without one."""
    return doc.text if doc.text.strip() else doc.title


def _assigner(config: GenerativeConfig) -> DocidAssigner:
    return DocidAssigner(
        docid=config.docid,
        max_words=config.max_words,
        branching=config.branching,
        leaf=config.leaf,
        embedder=config.semantic_embedder,
        device=config.semantic_device,
        seed=config.kmeans_seed,
    )


def _query_examples(
    root: Path, split: str, rows: dict[str, int], ids: list[str]
) -> tuple[list[Example], dict[str, Any]]:
    from ..engine.corpus import read_qrels, read_queries

    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        log.info("%s: no %s, so no query examples", root.name, qrels_file.name)
        return [], {"split": split, "queries": 0, "qrels_file": None}
    qrels = read_qrels(qrels_file)
    queries = read_queries(root / "queries.jsonl")
    out: list[Example] = []
    used = 0
    for qid, rels in qrels.items():
        text = queries.get(qid, "")
        if not text.strip() or len(text) > MAX_QUERY_CHARS:
            continue
        positives = [d for d, r in rels.items() if r > 0 and d in rows]
        used += bool(positives)
        out.extend(Example("query", rows[d], text, ids[rows[d]]) for d in positives)
    return out, {"split": split, "queries": used, "qrels_file": str(qrels_file)}


def load_examples(config: GenerativeConfig) -> GenerativeData:
    """Read the dataset, assign identifiers as the docid-trie index does, build the examples.

    Raises:
        DatasetError: the dataset is not a folder or its corpus has no document.
    """
    from ..engine.corpus import read_corpus
    from ..engine.errors import CorpusError

    t0 = time.perf_counter()
    root = Path(config.dataset).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"training dataset {root} is not a folder (BEIR layout expected).")
    try:
        docs, checksum = read_corpus(root)
    except CorpusError as exc:
        if "contains no documents" in str(exc):
            raise DatasetError(
                f"{root}: the corpus has no documents; generative retrieval needs some to name."
            ) from exc
        raise
    assigner = _assigner(config)
    ids = assigner.assign(docs)
    rows = {d.id: i for i, d in enumerate(docs)}
    examples: list[Example] = []
    for i, (d, ident) in enumerate(zip(docs, ids, strict=True)):
        body = _body(d)
        if not body.strip():  # neither title nor text: nothing to ask about it
            continue
        examples.append(Example("indexing", i, words(body, INDEXING_WORDS), ident))
        examples.append(Example("first-sentence", i, first_sentence(body), ident))
        examples.append(Example("span", i, body, ident))
    queries, query_report = _query_examples(root, config.split, rows, ids)
    examples.extend(queries)
    if not examples:
        raise DatasetError(f"{root}: no document has a title or text to train on.")
    report = {
        "name": root.name,
        "path": str(root),
        "corpus_checksum": checksum,
        "documents": len(docs),
        "identifiers": config.docid,
        **query_report,
    }
    data = GenerativeData(
        docs, ids, examples, checksum, report, time.perf_counter() - t0, assigner=assigner
    )
    log.info("%s: %d documents, examples %s", root.name, len(docs), data.counts())
    return data


# -- tokens -------------------------------------------------------------------------------
def encode_example(
    tokenizer: Any, prompt: str, query: str, identifier: str, eos: int, max_length: int
) -> tuple[list[int], list[int]]:
    """``(prompt tokens, target tokens)`` of one example, exactly as the index decodes.

    The prompt is tokenised alone (the index feeds it so) and the target is
    :func:`~relevo.indexes.docids.identifier_tokens`. When both exceed ``max_length``
    the query loses words from its end; the target is never cut.
    """
    target = identifier_tokens(tokenizer, identifier, eos)
    q = query.split()
    while True:
        ids = list(
            tokenizer(prompt.format(query=" ".join(q)), add_special_tokens=False)["input_ids"]
        )
        if len(ids) + len(target) <= max_length or not q:
            return ids, target
        budget = max(0, max_length - len(target))
        q = q[: min(len(q) - 1, len(q) * budget // max(1, len(ids)))]


def collate(
    torch: Any, pairs: Sequence[tuple[list[int], list[int]]], pad_token_id: int
) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 but on targets)."""
    width = max(len(p) + len(t) for p, t in pairs)
    ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for i, (p, t) in enumerate(pairs):
        n = len(p) + len(t)
        ids[i, :n] = torch.tensor(p + t, dtype=torch.long)
        mask[i, :n] = 1
        labels[i, len(p) : n] = torch.tensor(t, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_loss(torch: Any, logits: Any, labels: Any) -> Any:
    """Next-token cross-entropy over the positions whose label is not -100."""
    shifted = logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


# -- model --------------------------------------------------------------------------------
@dataclass
class _Trainee:
    """The model under training and everything a checkpoint saves with it."""

    tokenizer: Any
    model: Any
    optimizer: Any
    scheduler: Any
    names: list[str]  # trainable parameters in optimizer order
    device: str
    eos: int
    pad: int
    lora: bool

    def save(self, folder: Path) -> None:
        """The model (adapters only, for LoRA) and tokenizer, as a checkpoint holds them."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


def _peft() -> Any:
    (peft,) = require("peft", extra="lora", what=f"{WHAT} --lora")
    return peft


def _no_decay(name: str) -> bool:
    # Llama-style models name their norms input_layernorm / post_attention_layernorm / norm.
    return no_decay(name) or "norm" in name.rpartition(".")[0].rpartition(".")[2].lower()


def _build_trainee(
    torch: Any,
    transformers: Any,
    config: GenerativeConfig,
    base: str,
    ckpt: Path | None,
    device: str,
    total: int,
    warmup: int,
) -> _Trainee:
    torch.manual_seed(config.seed)
    full_source = str(ckpt) if ckpt is not None and not config.lora else base
    tok_source = str(ckpt) if ckpt is not None else base
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(tok_source)
        model = transformers.AutoModelForCausalLM.from_pretrained(full_source, dtype=torch.float32)
    except OSError as exc:
        raise ConfigError(
            f"{WHAT}: cannot load the causal LM {full_source!r} ({exc}); give smollm2, a model "
            "folder, a .gguf file or a reachable Hugging Face id."
        ) from exc
    if config.lora:
        peft = _peft()
        if ckpt is not None:
            model = peft.PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
        else:
            lora = peft.LoraConfig(
                r=config.lora_rank,
                lora_alpha=2 * config.lora_rank,
                lora_dropout=0.05,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            model = peft.get_peft_model(model, lora)
    model.to(device)
    eos = eos_token_id(tokenizer, config.base, who=WHAT)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = []
    names: list[str] = []
    for undecayed in (False, True):
        members = [(n, p) for n, p in named if _no_decay(n) == undecayed]
        if members:
            names.extend(n for n, _ in members)
            groups.append(
                {
                    "params": [p for _, p in members],
                    "weight_decay": 0.0 if undecayed else config.weight_decay,
                }
            )
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, warmup))
    return _Trainee(
        tokenizer, model, optimizer, scheduler, names, device, eos, int(pad), config.lora
    )


# -- training -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Schedule:
    steps_per_epoch: int
    total: int
    warmup: int


@dataclass
class _Progress:
    """Where training stands: restored from a checkpoint, written into the next one."""

    fingerprint: dict[str, Any]
    checksum: str
    total: int
    start: int = 0
    losses: list[float] = field(default_factory=list)
    seconds_before: float = 0.0

    def state(self, step: int, seconds: float) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "step": step,
            "total_steps": self.total,
            "config": self.fingerprint,
            "corpus_checksum": self.checksum,
            "losses": self.losses,
            "train_seconds": seconds,
        }


def _schedule(config: GenerativeConfig, n_examples: int) -> _Schedule:
    steps_per_epoch = n_examples // config.batch_size
    if steps_per_epoch == 0:
        raise DatasetError(
            f"{n_examples} training examples cannot fill one batch of {config.batch_size}; lower --batch-size."
        )
    total = config.max_steps if config.max_steps is not None else config.epochs * steps_per_epoch
    return _Schedule(steps_per_epoch, total, int(total * config.warmup_ratio))


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def _train_step(
    torch: Any, trainee: _Trainee, pairs: Sequence[tuple[list[int], list[int]]]
) -> tuple[float, float]:
    """One optimizer step; returns its loss and the learning rate it used."""
    batch = {k: v.to(trainee.device) for k, v in collate(torch, pairs, trainee.pad).items()}
    labels = batch.pop("labels")
    logits = trainee.model(**batch).logits
    loss = target_loss(torch, logits, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in trainee.model.parameters() if p.requires_grad], 1.0)
    lr = float(trainee.scheduler.get_last_lr()[0])
    trainee.optimizer.step()
    trainee.scheduler.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), lr


def _save_checkpoint(out: Path, trainee: _Trainee, state: dict[str, Any]) -> None:
    save_checkpoint(
        out,
        state,
        optimizer=trainee.optimizer,
        scheduler=trainee.scheduler,
        names=trainee.names,
        save_model=trainee.save,
    )


def _train(
    torch: Any,
    trainee: _Trainee,
    data: GenerativeData,
    config: GenerativeConfig,
    schedule: _Schedule,
    progress: _Progress,
    out: Path,
    on_step: Callable[[StepInfo], None] | None,
) -> float:
    """Run the steps from ``progress.start`` on; returns the training seconds of all sessions."""
    trainee.model.train()
    t0 = time.perf_counter()
    plan_epoch, order = -1, []
    size = config.batch_size
    for step in range(progress.start, schedule.total):
        epoch, idx = divmod(step, schedule.steps_per_epoch)
        if epoch != plan_epoch:
            order, plan_epoch = _epoch_order(len(data.examples), config.seed, epoch), epoch
        pairs = [
            encode_example(
                trainee.tokenizer,
                config.prompt,
                data.query(i, epoch, config.seed),
                data.examples[i].identifier,
                trainee.eos,
                config.max_length,
            )
            for i in order[idx * size : (idx + 1) * size]
        ]
        loss, lr = _train_step(torch, trainee, pairs)
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


def _restore(ckpt: Path, prior: dict[str, Any], trainee: _Trainee, progress: _Progress) -> None:
    """Load the checkpoint's optimizer, scheduler and RNG states and its step and losses."""
    load_optimizer_state(
        ckpt,
        prior,
        optimizer=trainee.optimizer,
        scheduler=trainee.scheduler,
        names=trainee.names,
        device=trainee.device,
    )
    progress.start = int(prior["step"])
    progress.losses = [float(x) for x in prior.get("losses", [])]
    progress.seconds_before = float(prior.get("train_seconds", 0.0))
    log.info("resuming from %s at step %d of %d", ckpt, progress.start, progress.total)


def _use(config: GenerativeConfig, out: Path) -> str:
    """How to search with the model: the docid-trie options its identifiers need."""
    pairs = {"model": str(out), **config.index_options()}
    index = "--index docid-trie" + "".join(
        " --option " + shlex.quote(f"docid-trie.{k}={v if isinstance(v, str) else json.dumps(v)}")
        for k, v in pairs.items()
    )
    return (
        index if len(pairs) > 1 else f"--pipeline {shlex.quote(f'generative:{out}')} (or {index})"
    )


def _report(
    config: GenerativeConfig,
    data: GenerativeData,
    schedule: _Schedule,
    progress: _Progress,
    resumed: bool,
    device: str,
    train_seconds: float,
    out: Path,
) -> dict[str, Any]:
    """The contents of ``relevo-generative.json``."""
    import torch
    import transformers

    from ..engine.manifest import relevo_version

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "generative",
        "relevo_version": relevo_version(),
        "base_model": config.resolved_base(),
        "recipe": {
            "examples": list(KINDS),
            "indexing_words": INDEXING_WORDS,
            "span_words": list(SPAN_WORDS),
            "steps": schedule.total,
            "epochs": round(schedule.total / schedule.steps_per_epoch, 3),
            "batch_size": config.batch_size,
            "max_length": config.max_length,
            "lr": config.lr,
            "weight_decay": config.weight_decay,
            "warmup_steps": schedule.warmup,
            "tuning": f"lora (rank {config.lora_rank}, merged)" if config.lora else "full",
            "seed": config.seed,
        },
        "dataset": data.report,
        "corpus_checksum": data.checksum,
        "docid": config.docid,
        "index_options": {"docid": config.docid, **config.index_options()},
        "prompt": config.prompt,
        "examples": data.counts(),
        "training_examples": len(data.examples),
        "device": device,
        "training_seconds": round(train_seconds, 1),
        "data_seconds": round(data.seconds, 1),
        "resumed_from_step": progress.start if resumed else None,
        **loss_summary(progress.losses),
        "use": _use(config, out),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


def _write_model(
    out: Path, trainee: _Trainee, report: dict[str, Any], data: GenerativeData
) -> None:
    """Write the finished model (LoRA merged) and its report to ``out`` atomically.

    Semantic identifiers also go into ``out/docids/`` (:data:`ASSIGNMENT_DIR`): the
    identifiers the model learned, the centroid tree and the corpus's document ids. An
    index over the same documents takes them from there instead of clustering again,
    since k-means over embeddings computed on another machine, device or thread count
    can come out differently, and the model would then generate the wrong names.
    """
    from ..engine.manifest import atomic_directory

    model = trainee.model.merge_and_unload() if trainee.lora else trainee.model
    with atomic_directory(out, overwrite=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        model.save_pretrained(str(tmp))
        trainee.tokenizer.save_pretrained(str(tmp))
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2), "utf-8")
        if data.assigner is not None and data.assigner.docid == "semantic":
            folder = tmp / ASSIGNMENT_DIR
            folder.mkdir()
            data.assigner.save_state(folder)
            corpus = {"corpus_checksum": data.checksum, "doc_ids": [d.id for d in data.docs]}
            (folder / "corpus.json").write_text(json.dumps(corpus, ensure_ascii=False), "utf-8")


def train_generative(
    config: GenerativeConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    engine: Engine | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> GenerativeResult:
    """Train a causal LM to generate docid-trie identifiers; see the module docstring.

    Args:
        config: the run's settings.
        resume: continue from ``OUT/checkpoint/`` (its settings must match ``config``).
        overwrite: replace a finished model or an unfinished checkpoint in ``OUT``.
        engine: unused (the data needs no first stage); accepted like the other trainers.
        on_step: called after every optimizer step with a :class:`StepInfo`.

    Returns:
        a :class:`GenerativeResult`; the folder is the docid-trie ``model`` option
        (``--pipeline generative:PATH`` for title identifiers).
    """
    del engine  # the examples come from the corpus and qrels alone
    config.validate()
    out = Path(config.out).expanduser().absolute()
    ckpt = check_out(
        out,
        resume=resume,
        overwrite=overwrite,
        report_file=REPORT_FILE,
        model="generative model",
        folder="relevo generative training folder",
        kind=CHECKPOINT_KIND,
    )
    fingerprint = config.fingerprint()
    prior = read_checkpoint_state(ckpt, fingerprint)
    # Before the data: a missing stack should fail fast, not after embedding a corpus.
    torch, transformers = require_torch(WHAT, extra="llm")
    if config.lora:
        _peft()
    device = resolve_device(config.device, what=WHAT)
    data = load_examples(config)
    if ckpt is not None and prior.get("corpus_checksum") != data.checksum:
        raise ConfigError(
            f"checkpoint {ckpt} was made on another version of the corpus of {config.dataset}; "
            "start over with --overwrite."
        )
    schedule = _schedule(config, len(data.examples))
    from ..models.causal_lm import resolve_source

    base = resolve_source(config.base)  # a GGUF (the packaged smollm2) is converted once
    trainee = _build_trainee(
        torch, transformers, config, base, ckpt, device, schedule.total, schedule.warmup
    )
    progress = _Progress(fingerprint, data.checksum, schedule.total)
    if ckpt is not None:
        _restore(ckpt, prior, trainee, progress)
    seconds = _train(torch, trainee, data, config, schedule, progress, out, on_step)
    trainee.model.eval()
    report = _report(config, data, schedule, progress, ckpt is not None, device, seconds, out)
    _write_model(out, trainee, report, data)
    log.info(
        "trained %d steps in %.0fs, final loss %.4f -> %s",
        schedule.total,
        seconds,
        report["final_loss"],
        out,
    )
    return GenerativeResult(
        out, schedule.total, seconds, report["final_loss"], progress.losses, report
    )


__all__ = [
    "KINDS",
    "REPORT_FILE",
    "Example",
    "GenerativeConfig",
    "GenerativeData",
    "GenerativeResult",
    "StepInfo",
    "collate",
    "encode_example",
    "load_examples",
    "train_generative",
]
