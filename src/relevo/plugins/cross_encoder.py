"""Bundled plugin: cross-encoder and nanoranker pointwise rerankers, and ``relevo train reranker``.

``cross-encoder:PATH_OR_ID`` loads any Hugging Face sequence-classification model (a
folder written by ``relevo train reranker``, or a hub id where the hub is reachable);
a bare name also resolves to ``<relevo cache>/models/NAME``. Scores are raw logits.
``nanoranker`` wraps the ``nanoranker`` package (an ONNX MLP over Universal Sentence
Encoder embeddings plus character n-gram hashes).

Importing this module imports neither torch, transformers nor onnxruntime.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..engine.cache import cache_dir
from ..engine.components import PointwiseReranker
from ..engine.errors import ConfigError
from ..engine.hookspecs import Register, hookimpl
from ..models import check_device, check_dtype, require, resolve_device
from ..models.devices import encoder_dtype
from ..models.hf import load_sequence_classifier

if TYPE_CHECKING:  # pragma: no cover
    import click

    from ..engine.commands import CommandHelpers

log = logging.getLogger(__name__)

REPORT_FILE = "relevo-reranker.json"  # same name as relevo.training.REPORT_FILE (kept import-free)


def resolve_model(model: str) -> tuple[str, Path | None]:
    """``model`` as given, and its local folder when it is one (or a name under the cache's ``models/``)."""
    local = Path(model).expanduser()
    if local.is_dir():
        return model, local
    if "/" not in model and "\\" not in model:
        cached = cache_dir() / "models" / model
        if cached.is_dir():
            return model, cached
    return model, None


class CrossEncoderReranker(PointwiseReranker):
    """A Hugging Face sequence-classification model scoring (query, document) pairs.

    Args:
        model: folder or Hugging Face id (``cross-encoder:PATH``). Folders written by
            ``relevo train reranker`` carry ``relevo-reranker.json``, whose ``max_length``
            becomes the default.
        max_length: tokens per pair (default: the training length, else the tokenizer's, at most 512).
        batch_size: pairs per forward pass.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto`` (float16 on CUDA, float32 elsewhere), ``float32``, ``float16``
            or ``bfloat16`` (the last two on CUDA only).

    The score is the raw logit of a one-label model; for a two-label model it is the
    logit of label 1 minus that of label 0.
    """

    name: ClassVar[str] = "cross-encoder"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "st"

    def __init__(
        self,
        model: str = "",
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError(
                "cross-encoder needs a model: cross-encoder:PATH_OR_HF_ID. Train one with "
                "`relevo train reranker scifact --out DIR`."
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if max_length is not None and max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {max_length}.")
        self.model_id, self.path = resolve_model(model)
        self.batch_size = batch_size  # type: ignore[misc]  # instance override of the class default
        self.device_option = check_device(device)
        self.dtype_option = check_dtype(dtype)
        self.dtype_used: str | None = None
        self._max_length = max_length
        self.training: dict[str, Any] | None = None
        if self.path is not None and (self.path / REPORT_FILE).is_file():
            try:
                self.training = json.loads((self.path / REPORT_FILE).read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"{self.path / REPORT_FILE} is unreadable ({exc}); retrain or remove it."
                ) from exc
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"

    def load(self) -> None:
        if self._model is None:
            self._load()

    def _load(self) -> None:
        require("torch", "transformers", extra="st", what=self.name)
        source = str(self.path) if self.path is not None else self.model_id
        self._device = resolve_device(self.device_option)
        dtype = encoder_dtype(self._device, self.dtype_option)
        log.info("loading cross-encoder %s on %s (%s)", source, self._device, dtype)
        tokenizer, model = load_sequence_classifier(source, self._device, what=self.name)
        if dtype != "float32":
            import torch

            model = model.to(getattr(torch, dtype))
        self.dtype_used = dtype
        if model.config.num_labels not in (1, 2):
            raise ConfigError(
                f"cross-encoder {self.model_id!r} has {model.config.num_labels} labels; a reranker needs 1 (or 2)."
            )
        self._model = model.eval()
        self._tokenizer = tokenizer

    @property
    def max_length(self) -> int:
        if self._max_length is not None:
            return self._max_length
        if self.training and isinstance(self.training.get("max_length"), int):
            return int(self.training["max_length"])
        if self._tokenizer is None:
            self._load()
        limit = getattr(self._tokenizer, "model_max_length", 512) or 512
        return int(min(limit, 512))

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        if self._model is None:
            self._load()
        import torch

        docs = list(docs)
        scores = np.zeros(len(docs), dtype=np.float32)
        # longest first: little padding inside a batch, and memory trouble shows up early
        order = sorted(range(len(docs)), key=lambda i: -len(docs[i]))
        max_length = self.max_length
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self._tokenizer(
                [query] * len(idx),
                [docs[i] for i in idx],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(self._device)
            with torch.inference_mode():
                logits = self._model(**batch).logits.float()
            col = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
            scores[idx] = col.cpu().numpy()
        return scores.tolist()

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "model": self.model_id,
            "path": str(self.path) if self.path else None,
            "max_length": self._max_length,
            "batch_size": self.batch_size,
            "device": self._device if self._model is not None else self.device_option,
            "dtype": self.dtype_used or self.dtype_option,
        }


class NanorankerReranker(PointwiseReranker):
    """The ``nanoranker`` package's reranker (ONNX; multilingual).

    Scores are the MLP's raw outputs for (query, document) embedding pairs, the same
    numbers ``nanoranker.rank(..., normalize_scores=False)`` returns, in input order.
    Embedding a document costs ~50-150 ms on CPU for an abstract-length text (a
    character n-gram hash in pure Python plus the sentence encoder), so document
    embeddings are kept in an LRU cache of ``cache_size`` texts: reranking lists that
    share documents pays for each one once.

    Args:
        cache_size: documents whose embeddings are kept (0 disables the cache).
    """

    name: ClassVar[str] = "nanoranker"
    extra: ClassVar[str | None] = "nanoranker"
    batch_size: ClassVar[int] = 64

    def __init__(self, *, cache_size: int = 10_000) -> None:
        if cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0, got {cache_size}.")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._mod: Any = None

    def load(self) -> None:
        _ = self.module

    @property
    def module(self) -> Any:
        if self._mod is None:
            (self._mod,) = require("nanoranker", extra="nanoranker", what=self.name)
        return self._mod

    def _embed_doc(self, text: str) -> np.ndarray:
        vec = self._cache.get(text)
        if vec is not None:
            self._cache.move_to_end(text)
            return vec
        vec = self.module.embed(text)
        if self.cache_size:
            self._cache[text] = vec
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vec

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        nr = self.module
        docs = list(docs)
        if not docs:
            return []
        q = nr.embed(query)
        d = np.stack([self._embed_doc(text) for text in docs])
        pairs = np.concatenate([np.tile(q, (len(docs), 1)), d], axis=1).astype(np.float32)
        out = nr.reranker_model.run(["output"], {"input": pairs})[0].reshape(-1)
        return [float(x) for x in out]


@hookimpl
def register_rerankers(register: Register) -> None:
    register(
        CrossEncoderReranker,
        "cross-encoder",
        description="Hugging Face cross-encoder (sequence classification): cross-encoder:<folder or hf id>",
    )
    register(
        NanorankerReranker,
        "nanoranker",
        description="nanoranker ONNX reranker over sentence embeddings",
    )


# -- relevo train reranker ---------------------------------------------------------------------
def _reranker_command(helpers: CommandHelpers) -> click.Command:
    import click

    from ..training.cross_encoder import LOSSES, NEGATIVE_METHODS, TrainConfig

    defaults = TrainConfig(datasets=[], out="")

    @click.command("reranker")
    @click.argument("datasets", nargs=-1, required=True)
    @helpers.training_options(defaults)
    @click.option(
        "--base",
        default=None,
        help="Encoder to start from: folder or Hugging Face id. [default: packaged all-MiniLM-L6-v2]",
    )
    @click.option(
        "--negatives",
        type=click.Choice(NEGATIVE_METHODS),
        default=defaults.negatives,
        show_default=True,
        help="First stage that finds hard negatives.",
    )
    @click.option(
        "--miner",
        default=defaults.miner,
        show_default=True,
        help="Registered negative miner (static, star, adaptive-margin, ...).",
    )
    @click.option(
        "--miner-option",
        "miner_option",
        multiple=True,
        help="Miner option KEY=VALUE (JSON values), e.g. z=1.0 or teacher=cross-encoder:DIR.",
    )
    @click.option(
        "--depth",
        type=click.IntRange(min=1),
        default=defaults.depth,
        show_default=True,
        help="Draw negatives from this many top hits.",
    )
    @click.option(
        "--loss",
        type=click.Choice(LOSSES),
        default=defaults.loss,
        show_default=True,
        help="listwise: softmax CE per query group; bce: pointwise.",
    )
    @click.option(
        "--batch-size",
        type=click.IntRange(min=2),
        default=defaults.batch_size,
        show_default=True,
        help="Pairs per step (a multiple of --group-size).",
    )
    @click.option(
        "--group-size",
        type=click.IntRange(min=2),
        default=defaults.group_size,
        show_default=True,
        help="1 positive + N-1 negatives per query.",
    )
    @click.option(
        "--max-length",
        type=click.IntRange(min=8),
        default=defaults.max_length,
        show_default=True,
        help="Tokens per (query, document) pair.",
    )
    @click.option(
        "--head-lr-scale",
        type=click.FloatRange(min=0, min_open=True),
        default=defaults.head_lr_scale,
        show_default=True,
        help="The new scoring head learns this many times faster than the encoder.",
    )
    @click.option(
        "--max-queries",
        type=click.IntRange(min=1),
        default=defaults.max_queries,
        show_default=True,
        help="At most N training queries per dataset (seeded sample).",
    )
    @click.option(
        "--all-queries", is_flag=True, help="Use every training query (no --max-queries cap)."
    )
    @click.option("--keep-checkpoint", is_flag=True, help="Keep OUT/checkpoint after training.")
    def reranker(
        datasets: tuple[str, ...],
        all_queries: bool,
        resume: bool,
        overwrite: bool,
        **opts: Any,
    ) -> None:
        """Train a cross-encoder reranker on BEIR training splits.

        DATASET is a BEIR folder or a dataset name under shared/datasets (or
        RELEVO_DATASETS), e.g. `relevo train reranker scifact nfcorpus --out DIR`.
        Hard negatives are the first stage's top hits that are not judged relevant. The
        result loads as the reranker `cross-encoder:DIR`.
        """
        from ..training.cross_encoder import train_cross_encoder

        if all_queries:
            opts["max_queries"] = None
        opts["miner_options"] = helpers.parse_options(opts.pop("miner_option"))
        config = TrainConfig(datasets=[str(helpers.find_dataset(d)) for d in datasets], **opts)
        t0 = time.perf_counter()
        with helpers.training_progress() as on_step:
            result = train_cross_encoder(
                config,
                resume=resume,
                overwrite=overwrite,
                engine=helpers.engine(),
                on_step=on_step,
            )
        click.echo(
            f"trained {result.steps} steps ({result.report['training_queries']} queries, {config.loss} loss) in "
            f"{result.seconds:.0f}s training / {time.perf_counter() - t0:.0f}s total; final loss {result.final_loss:.4f}. "
            f"Model: {result.path} (use as cross-encoder:{result.path})"
        )

    return reranker


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    group = helpers.group(cli, "train", "Train models (rerankers, embedders) on BEIR datasets.")
    group.add_command(_reranker_command(helpers))


__all__ = ["CrossEncoderReranker", "NanorankerReranker", "resolve_model"]
