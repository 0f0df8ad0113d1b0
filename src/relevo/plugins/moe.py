"""Bundled plugin: the mixture-of-experts embedder (``moe:PATH``) and ``relevo train moe``.

An MoE model (written by ``relevo train moe``, see :mod:`relevo.models.moe`) holds one
expert per domain in its feed-forward blocks. Each text is embedded through one expert:

- the text's own domain: ``domains=`` per text (documents: their metadata field
  ``domain_field``, default ``domain``);
- else the embedder's ``domain`` option (``--domain NAME`` on the CLI);
- else the model's learned router (a linear classifier over the input word embeddings).

A collection over several domains therefore *routes*: every document is stored once, as
its own expert encodes it, and a query is encoded once, by the expert its domain (or the
router) picks — the dense model's cost. The alternative, fusing the rankings of a query
encoded by every expert, costs N encodings and N searches per query to hedge against a
wrong routing; it is not implemented. Routing errors are not free: on SciFact +
NFCorpus (benchmarks/results/moe.md) the router picks the right expert for 91.7% /
97.8% of the test queries, and letting it route queries *and* documents costs SciFact
0.6629 -> 0.6034 nDCG@10 against the known domain. Give documents a ``domain``
metadata field, and searches a ``domain``, wherever they are known.

Importing this module imports neither torch nor sentence-transformers.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..engine.components import Embedder, EmbedKind
from ..engine.errors import ConfigError, RequestError
from ..engine.hookspecs import Register, hookimpl
from ..models import check_device, resolve_device, weights_digest

if TYPE_CHECKING:  # pragma: no cover
    import click

    from ..engine.commands import CommandHelpers

log = logging.getLogger(__name__)


class MoEEmbedder(Embedder):
    """A mixture-of-experts bi-encoder folder written by ``relevo train moe``.

    Args:
        path: the model folder (``moe.json`` + a sentence-transformers folder).
        domain: default domain of texts that bring none (``None``: the router decides).
        domain_field: document metadata field naming a document's domain.
        normalize: L2-normalise vectors.
        max_length: truncate inputs to this many tokens (default: the model's).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        batch_size: texts per forward pass.
    """

    name: ClassVar[str] = "moe"
    spec_option: ClassVar[str | None] = "path"
    extra: ClassVar[str | None] = "st"
    routes_domains: ClassVar[bool] = True

    def __init__(
        self,
        path: str = "",
        *,
        domain: str | None = None,
        domain_field: str = "domain",
        normalize: bool = True,
        max_length: int | None = None,
        device: str = "auto",
        batch_size: int = 32,
    ) -> None:
        from ..models.moe import read_config

        if not isinstance(path, str) or not path:
            raise ConfigError("the moe embedder needs a model folder: moe:PATH.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.path = Path(path).expanduser().absolute()
        if not self.path.is_dir():
            raise ConfigError(
                f"moe:{path}: no such folder. Train one with `relevo train moe --domain NAME=DATASET ... --out DIR`."
            )
        self.config = read_config(self.path)
        self.domains = [str(d) for d in self.config["domains"]]
        self.domain = domain or None
        if self.domain is not None and self.domain not in self.domains:
            raise ConfigError(
                f"--domain {domain!r}: this MoE model has experts for {', '.join(self.domains)}."
            )
        self.domain_field = domain_field
        self.normalized = bool(normalize)
        self._max_length = max_length
        self.device_option = check_device(device)
        self.batch_size = batch_size  # type: ignore[misc]  # instance override of the class default
        self._moe: Any = None
        #: texts per expert and how their expert was chosen, over this instance's life
        self.routed: Counter[tuple[str, str]] = Counter()

    @property
    def moe(self) -> Any:
        if self._moe is None:
            from ..models.moe import load

            self._moe = load(self.path, resolve_device(self.device_option))
            if self._max_length is not None:
                self._moe.model.max_seq_length = int(self._max_length)
        return self._moe

    @property
    def dim(self) -> int:  # type: ignore[override]
        return int(self.moe.dimension)

    @property
    def max_length(self) -> int | None:  # type: ignore[override]
        return int(self.moe.model.max_seq_length) if self._moe is not None else self._max_length

    def for_domain(self, domain: str | None) -> MoEEmbedder:
        """This embedder (same loaded model) with another default domain, for queries."""
        import copy

        if domain is not None and domain not in self.domains:
            raise ConfigError(
                f"--domain {domain!r}: this MoE model has experts for {', '.join(self.domains)}."
            )
        other = copy.copy(self)
        other.domain = domain or None
        other.routed = Counter()
        return other

    def experts_for(self, texts: Sequence[str], domains: Sequence[str | None] | None) -> np.ndarray:
        """The expert of every text: its domain, else the default domain, else the router."""
        n = len(texts)
        if domains is not None and len(domains) != n:
            raise RequestError(f"{len(domains)} domains given for {n} texts.")
        given = list(domains) if domains is not None else [None] * n
        experts = np.full(n, -1, dtype=np.int64)
        for i, d in enumerate(given):
            d = d or self.domain
            if d is not None:
                if d not in self.domains:
                    raise RequestError(
                        f"text #{i}: unknown domain {d!r}; this MoE model has experts for "
                        f"{', '.join(self.domains)}."
                    )
                experts[i] = self.domains.index(d)
                self.routed[(d, "given")] += 1
        todo = np.nonzero(experts < 0)[0]
        if len(todo):
            picked = self.moe.route([texts[int(i)] for i in todo])
            experts[todo] = picked
            for e in picked.tolist():
                self.routed[(self.domains[e], "router")] += 1
        return experts

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: EmbedKind = "query",
        batch_size: int | None = None,
        progress: Any = None,
        domains: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Embed ``texts``, each through the expert of its domain (see the class doc)."""
        if kind not in ("query", "document"):
            raise RequestError(f"kind must be 'query' or 'document', not {kind!r}")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise RequestError(f"text #{i} is {type(t).__name__}, expected str")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        experts = self.experts_for(texts, domains)
        size = batch_size or self.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        chunk = max(size, 512)  # progress granularity; each chunk is one expert's texts
        for e in np.unique(experts).tolist():
            idx = np.nonzero(experts == e)[0]
            for start in range(0, len(idx), chunk):
                part = idx[start : start + chunk]
                out[part] = self.moe.encode(
                    [texts[i] for i in part], int(e), normalize=self.normalized, batch_size=size
                )
                if progress is not None:
                    progress(len(part))
        return out

    def embed_batch(self, texts: Sequence[str], *, kind: EmbedKind) -> np.ndarray:
        return self.embed(texts, kind=kind)

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "path": str(self.path),
            "domains": self.domains,
            "layers": self.config.get("layers"),
            "domain": self.domain,
            "domain_field": self.domain_field,
            "normalize": self.normalized,
            "max_length": self._max_length,
        }

    def fingerprint(self) -> str:
        parts = [
            weights_digest(self.path),
            str(self.domain),
            self.domain_field,
            str(self.normalized),
            str(self._max_length),
        ]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@hookimpl
def register_embedders(register: Register) -> None:
    register(
        MoEEmbedder,
        "moe",
        description="mixture-of-experts bi-encoder (one expert per domain): moe:<folder from relevo train moe>",
    )


# -- relevo train moe -------------------------------------------------------------------------
def _parse_domains(values: Sequence[str], helpers: CommandHelpers) -> tuple[list[str], list[str]]:
    names, datasets = [], []
    for v in values:
        name, sep, dataset = v.partition("=")
        if not sep or not name or not dataset:
            raise ConfigError(f"--domain {v!r}: write NAME=DATASET, e.g. --domain scifact=scifact.")
        names.append(name)
        datasets.append(str(helpers.find_dataset(dataset)))
    return names, datasets


def _moe_command(helpers: CommandHelpers) -> click.Command:
    import time

    import click

    from ..training.embedder import DISTILLATION, LOSSES, EmbedderConfig

    defaults = EmbedderConfig(datasets=[], out="", loss="mnrl", cocitation=True)

    @click.command("moe")
    @click.option(
        "--domain",
        "domain_specs",
        multiple=True,
        required=True,
        metavar="NAME=DATASET",
        help="A domain and its BEIR training dataset (repeat: one expert each).",
    )
    @helpers.training_options(defaults, model="MoE embedder")
    @click.option(
        "--base",
        default=defaults.base,
        show_default=True,
        help="Dense model converted into experts: minilm, a sentence-transformers folder or a HF id.",
    )
    @click.option(
        "--layers",
        "moe_layers",
        default="all",
        show_default=True,
        help="Layers whose feed-forward block becomes experts: all, last, or 0,3,5.",
    )
    @click.option("--miner", default=defaults.miner, show_default=True, help="Negative miner.")
    @click.option(
        "--miner-option", multiple=True, metavar="KEY=VALUE", help="Option for the miner."
    )
    @click.option("--first-stage", default=None, help="Pipeline the negatives are mined from.")
    @click.option(
        "--loss",
        type=click.Choice([x for x in LOSSES if x not in DISTILLATION]),
        default="mnrl",
        show_default=True,
        help="In-batch softmax (cached-mnrl: with a gradient cache).",
    )
    @click.option(
        "--cocitation/--no-cocitation",
        default=True,
        show_default=True,
        help="Also train on co-cited document pairs (SciFact citations, NFCorpus pages).",
    )
    @click.option(
        "--batch-size", type=click.IntRange(min=2), default=defaults.batch_size, show_default=True
    )
    @click.option(
        "--mini-batch-size",
        type=click.IntRange(min=1),
        default=defaults.mini_batch_size,
        show_default=True,
    )
    @click.option(
        "--negatives-per-query",
        type=click.IntRange(min=1),
        default=defaults.negatives_per_query,
        show_default=True,
    )
    @click.option(
        "--mask-judged/--no-mask-judged",
        default=True,
        show_default=True,
        help="Leave in-batch documents judged relevant to a query out of its negatives.",
    )
    @click.option("--max-length", type=click.IntRange(min=8), default=None, help="Tokens per text.")
    @click.option(
        "--max-examples",
        type=click.IntRange(min=1),
        default=None,
        help="At most N queries per dataset.",
    )
    def moe(
        domain_specs: tuple[str, ...],
        resume: bool,
        overwrite: bool,
        miner_option: tuple[str, ...],
        moe_layers: str,
        **opts: Any,
    ) -> None:
        """Train a mixture-of-experts embedder: one expert per domain, routing enforced.

        Each --domain NAME=DATASET adds an expert; the chosen layers' feed-forward blocks
        are copied once per domain and every training batch (one domain's queries and
        co-cited document pairs) goes through its domain's expert. A router for texts
        without a domain is fitted at the end. Use the result as `--embedder moe:DIR`
        with `--domain NAME` (or let the router decide).
        """
        from ..training.embedder import MoESpec, train_embedder

        names, datasets = _parse_domains(domain_specs, helpers)
        config = EmbedderConfig(
            datasets=datasets,
            miner_options=helpers.parse_options(miner_option),
            moe=MoESpec(domains=names, layers=moe_layers),
            **opts,
        )
        t0 = time.perf_counter()
        with helpers.training_progress(show_lr=False) as on_step:
            result = train_embedder(
                config, resume=resume, overwrite=overwrite, engine=helpers.engine(), on_step=on_step
            )
        router = result.report.get("router") or {}
        click.echo(
            f"trained {result.steps} steps ({result.report['training_examples']} examples, "
            f"{len(names)} experts on layers {result.report['moe']['layers']}) in {result.seconds:.0f}s "
            f"training / {time.perf_counter() - t0:.0f}s total; final loss {result.final_loss:.4f}; "
            f"router held-out accuracy {router.get('heldout_accuracy')}. Model: {result.path} "
            f"(use as --embedder moe:{result.path} [--domain NAME])"
        )

    return moe


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    group = helpers.group(cli, "train", "Train models (rerankers, embedders) on BEIR datasets.")
    group.add_command(_moe_command(helpers))
