"""Bundled plugin: hard-negative miners (static, STAR, adaptive margin, ADORE) and ``relevo mine``.

Every miner sees one query at a time: its first-stage candidates (any relevo
collection: BM25, a dense index, a fusion), best first, with the judged positives
removed and the best positive's score noted (see :mod:`relevo.engine.mining`).

- ``static``: the top candidates inside a rank range, optionally dropping those within
  an absolute or relative margin of the positive's score, or above a maximum score
  (the fixed thresholds other libraries offer, kept for comparison).
- ``star``: static hard negatives mixed with uniformly random corpus documents
  (Zhan et al., SIGIR 2021), ``random_ratio`` of them random.
- ``adaptive-margin``: per query, drops candidates whose score is within ``z`` standard
  deviations *of that query's candidate scores* of the positive, or above it; the
  scores can come from a teacher (any pointwise reranker, e.g. ``cross-encoder:DIR``),
  which also scores the positive exactly.
- ``adore``: static negatives from a dense first stage to start with, then, during
  training, :meth:`AdoreMiner.refresh` re-encodes the training queries with the
  *current* query encoder and re-retrieves from the same fixed document index
  (documents encoded once, as in Zhan et al., SIGIR 2021).

When the positive is not among the retrieved candidates its score is unknown; margin
filters then use the lowest retrieved score, an upper bound of the positive's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..engine.components import NegativeMiner, PointwiseReranker
from ..engine.errors import ConfigError
from ..engine.hookspecs import Register, hookimpl
from ..engine.mining import MiningQuery, MiningResult, Selection

if TYPE_CHECKING:  # pragma: no cover
    import click

    from ..engine.commands import CommandHelpers
    from ..engine.types import Document

log = logging.getLogger(__name__)

OUT_OF_RANGE = "outside the rank range"
ABOVE_MAX = "above max_score"
ABSOLUTE = "within absolute_margin of the positive"
RELATIVE = "within relative_margin of the positive"
ADAPTIVE = "within the adaptive margin of the positive"
TEACHER_ADAPTIVE = "within the adaptive margin of the positive (teacher scores)"


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
    return value


def _optional_float(name: str, value: Any, *, low: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number, got {value!r}.")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}.")
    return float(value)


def _reference(query: MiningQuery) -> float | None:
    """The positive's score, or the floor of the retrieved scores when it was not retrieved."""
    return query.positive_score if query.positive_score is not None else query.floor


class StaticMiner(NegativeMiner):
    """Top-k hard negatives from the first stage, inside a rank range, with optional fixed margins.

    Args:
        num_negatives: negatives per query.
        min_rank / max_rank: 1-based first-stage ranks candidates must lie in
            (``max_rank`` is also the search depth).
        sampling: ``top`` (the best survivors) or ``random`` (uniform among survivors).
        absolute_margin: drop candidates scoring above ``positive - absolute_margin``.
        relative_margin: drop candidates scoring above ``positive * (1 - relative_margin)``
            (sentence-transformers' ``relative_margin``; meant for positive scores).
        max_score: drop candidates scoring above this.
        seed: seeds ``random`` sampling (per query, independent of batching).
    """

    name: ClassVar[str] = "static"

    def __init__(
        self,
        *,
        num_negatives: int = 5,
        min_rank: int = 1,
        max_rank: int = 100,
        sampling: str = "top",
        absolute_margin: float | None = None,
        relative_margin: float | None = None,
        max_score: float | None = None,
        seed: int = 0,
    ) -> None:
        self.num_negatives = _positive_int("num_negatives", num_negatives)
        self.min_rank = _positive_int("min_rank", min_rank)
        self.max_rank = _positive_int("max_rank", max_rank)
        if self.max_rank < self.min_rank:
            raise ConfigError(f"max_rank ({max_rank}) must be >= min_rank ({min_rank}).")
        if sampling not in ("top", "random"):
            raise ConfigError(f"sampling must be 'top' or 'random', got {sampling!r}.")
        self.sampling = sampling
        self.absolute_margin = _optional_float("absolute_margin", absolute_margin)
        self.relative_margin = _optional_float("relative_margin", relative_margin, low=0.0)
        self.max_score = _optional_float("max_score", max_score)
        self.seed = int(seed)
        self.depth = self.max_rank

    def filter(
        self, query: MiningQuery
    ) -> tuple[list[tuple[str, float]], list[tuple[str, float, str]]]:
        """Candidates surviving the rank range and the fixed thresholds, and those dropped."""
        ref = _reference(query)
        keep: list[tuple[str, float]] = []
        dropped: list[tuple[str, float, str]] = []
        for c in query.candidates:
            if not self.min_rank <= c.rank <= self.max_rank:
                dropped.append((c.id, c.score, OUT_OF_RANGE))
            elif self.max_score is not None and c.score > self.max_score:
                dropped.append((c.id, c.score, ABOVE_MAX))
            elif (
                self.absolute_margin is not None
                and ref is not None
                and c.score > ref - self.absolute_margin
            ):
                dropped.append((c.id, c.score, ABSOLUTE))
            elif (
                self.relative_margin is not None
                and ref is not None
                and c.score > ref * (1.0 - self.relative_margin)
            ):
                dropped.append((c.id, c.score, RELATIVE))
            else:
                keep.append((c.id, c.score))
        return keep, dropped

    def pick(
        self, survivors: Sequence[tuple[str, float]], n: int, rng: np.random.Generator
    ) -> list[tuple[str, float]]:
        if self.sampling == "top" or len(survivors) <= n:
            return list(survivors[:n])
        idx = np.sort(rng.choice(len(survivors), n, replace=False))
        return [survivors[int(i)] for i in idx]

    def select(self, query: MiningQuery, rng: np.random.Generator) -> Selection:
        keep, dropped = self.filter(query)
        return Selection(self.pick(keep, self.num_negatives, rng), dropped)


class StarMiner(StaticMiner):
    """STAR: static hard negatives plus uniformly random corpus documents.

    Args:
        random_ratio: share of the ``num_negatives`` drawn at random from the corpus
            (rounded; the rest are the static hard negatives).
        Other options: as for ``static``.

    Random negatives are never positives nor already-chosen hard negatives; their
    score is ``None`` (the first stage did not retrieve them).
    """

    name: ClassVar[str] = "star"

    def __init__(self, *, random_ratio: float = 0.5, **options: Any) -> None:
        super().__init__(**options)
        ratio = _optional_float("random_ratio", random_ratio, low=0.0)
        if ratio is None or ratio > 1.0:
            raise ConfigError(f"random_ratio must be in [0, 1], got {random_ratio!r}.")
        self.random_ratio = ratio
        self._ids: list[str] = []

    def prepare(
        self, queries: Any, positives: Any, corpus: Mapping[str, Document], retriever: Any
    ) -> None:
        self._ids = list(corpus)

    def select(self, query: MiningQuery, rng: np.random.Generator) -> Selection:
        n_random = int(round(self.num_negatives * self.random_ratio))
        keep, dropped = self.filter(query)
        hard = self.pick(keep, self.num_negatives - n_random, rng)
        taken = {d for d, _ in hard} | set(query.positive_ids)
        randoms: list[tuple[str, Any]] = []
        pool = len(self._ids)
        tries = 0
        while len(randoms) < n_random and pool and tries < 20 * (n_random + 1):
            tries += 1
            doc = self._ids[int(rng.integers(pool))]
            if doc not in taken:
                taken.add(doc)
                randoms.append((doc, None))
        return Selection(hard + randoms, dropped)


class AdaptiveMarginMiner(StaticMiner):
    """Drops candidates too close to the positive, with a margin set per query.

    The margin is ``z`` standard deviations of *this query's* candidate scores:
    a candidate is dropped when ``score >= positive - z * std(candidate scores)``. A
    query whose candidates are spread widely tolerates a wider gap than one whose
    candidates bunch together, which a single global constant cannot do.

    Args:
        z: the margin in standard deviations of the query's candidate scores.
        teacher: a pointwise reranker (or its registered name, e.g.
            ``cross-encoder:DIR``) that rescores the positive and the top
            ``teacher_depth`` candidates; the margin then applies to teacher scores.
        teacher_depth: candidates rescored by the teacher (the rest are not used).
        Other options: as for ``static`` (rank range, fixed margins also apply).
    """

    name: ClassVar[str] = "adaptive-margin"
    component_options: ClassVar[Mapping[str, str]] = {"teacher": "reranker"}

    def __init__(
        self,
        *,
        z: float = 1.0,
        teacher: PointwiseReranker | None = None,
        teacher_depth: int = 30,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        z_value = _optional_float("z", z, low=0.0)
        assert z_value is not None  # noqa: S101 - a number was checked above
        self.z = z_value
        if teacher is not None and not isinstance(teacher, PointwiseReranker):
            raise ConfigError(
                f"teacher must be a pointwise reranker (e.g. cross-encoder:DIR), got {type(teacher).__name__}."
            )
        self.teacher = teacher
        self.teacher_name = getattr(teacher, "instance_name", None) if teacher else None
        self.teacher_depth = _positive_int("teacher_depth", teacher_depth)
        self._corpus: Mapping[str, Document] = {}
        #: queries left unfiltered because the first stage did not retrieve their positive
        self.unjudged = 0

    def prepare(
        self, queries: Any, positives: Any, corpus: Mapping[str, Document], retriever: Any
    ) -> None:
        self._corpus = corpus
        if self.teacher is not None:
            self.teacher.load()

    def _teacher_scores(self, query: MiningQuery, ids: Sequence[str]) -> list[float]:
        assert self.teacher is not None  # noqa: S101 - only called with a teacher
        texts = [self._corpus[d].content for d in ids]
        return [float(s) for s in self.teacher.score(query.text, texts)]

    def select(self, query: MiningQuery, rng: np.random.Generator) -> Selection:
        keep, dropped = self.filter(query)
        reason = ADAPTIVE
        if self.teacher is not None:
            keep = keep[: self.teacher_depth]
            if not keep:
                return Selection([], dropped)
            scored = self._teacher_scores(query, [query.positive_ids[0], *(d for d, _ in keep)])
            ref: float | None = scored[0]
            keep = [(d, s) for (d, _), s in zip(keep, scored[1:], strict=True)]
            reason = TEACHER_ADAPTIVE
        elif query.positive_rank is None:
            # The first stage ranks the positive below every candidate: its scores cannot
            # tell a false negative from a true one here, so nothing is judged (a teacher can).
            self.unjudged += 1
            return Selection(self.pick(keep, self.num_negatives, rng), dropped)
        else:
            ref = query.positive_score
        if ref is None or not keep:
            return Selection(self.pick(keep, self.num_negatives, rng), dropped)
        spread = float(np.std([s for _, s in keep])) if len(keep) > 1 else 0.0
        threshold = ref - self.z * spread
        survivors = [(d, s) for d, s in keep if s < threshold]
        dropped += [(d, s, reason) for d, s in keep if s >= threshold]
        if self.teacher is not None:  # best first by the teacher's judgement
            survivors.sort(key=lambda x: -x[1])
        return Selection(self.pick(survivors, self.num_negatives, rng), dropped)

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in super().options().items() if k not in ("teacher", "unjudged")}

    def mine(self, *args: Any, **kwargs: Any) -> MiningResult:
        result = super().mine(*args, **kwargs)
        result.report.extra["queries_unjudged_positive_not_retrieved"] = self.unjudged
        return result


class AdoreMiner(StaticMiner):
    """ADORE: negatives re-retrieved with the current query encoder from a fixed document index.

    :meth:`mine` gives the initial (static) negatives from a dense first stage and
    remembers the queries; :meth:`refresh` is the training callback: it encodes the
    training queries with the encoder being trained and searches the *same* document
    vectors (the document side stays frozen, as in the paper), then applies the
    static selection again.

    Args:
        refresh_every: training steps between refreshes (read by the trainer).
        Other options: as for ``static``.
    """

    name: ClassVar[str] = "adore"

    def __init__(self, *, refresh_every: int = 100, **options: Any) -> None:
        super().__init__(**options)
        self.refresh_every = _positive_int("refresh_every", refresh_every)
        self._state: dict[str, Any] = {}

    def prepare(
        self,
        queries: Mapping[str, str],
        positives: Mapping[str, Sequence[str]],
        corpus: Any,
        retriever: Any,
    ) -> None:
        dense = [s for s in getattr(retriever, "stages", {}).values() if s.dense]
        if len(dense) != 1:
            raise ConfigError(
                "adore re-retrieves from a fixed dense document index: give it a first stage with "
                "exactly one dense stage, e.g. --first-stage dense (or faiss-flat@<embedder>)."
            )
        self._state = {
            "queries": dict(queries),
            "positives": {q: list(p) for q, p in positives.items()},
            "corpus": corpus,
            "retriever": retriever,
            "stage": dense[0],
        }

    def refresh(
        self, encode_queries: Callable[[list[str]], np.ndarray], *, step: int = 0
    ) -> MiningResult:
        """Negatives re-retrieved with ``encode_queries`` (the current query encoder).

        Args:
            encode_queries: texts -> float32 ``(n, dim)`` query vectors, the same space
                as the fixed document index.
            step: the training step (recorded in the report).
        """
        if not self._state:
            raise ConfigError(
                "adore.refresh() needs the initial mine() first (it fixes the document index)."
            )
        state = self._state
        stage = state["stage"]
        retriever = _VectorRetriever(state["retriever"], stage, encode_queries)
        result = NegativeMiner.mine(
            _NoPrepare(self),
            state["queries"],
            state["positives"],
            state["corpus"],
            retriever=retriever,
            k=self.depth,
        )
        result.report.extra["refreshed_at_step"] = step
        return result


class _NoPrepare(NegativeMiner):
    """Runs ``mine`` with another miner's selection but without re-running its ``prepare``."""

    def __init__(self, inner: NegativeMiner) -> None:
        self._inner = inner
        self.depth, self.seed, self.name = inner.depth, inner.seed, inner.name  # type: ignore[misc]
        self.instance_name = inner.instance_name
        self.plugin_name = inner.plugin_name

    def select(self, query: MiningQuery, rng: np.random.Generator) -> Selection:
        return self._inner.select(query, rng)

    def options(self) -> dict[str, Any]:
        return self._inner.options()


class _VectorRetriever:
    """``search_batch`` over a collection's dense stage with query vectors from a given encoder."""

    def __init__(
        self, collection: Any, stage: Any, encode: Callable[[list[str]], np.ndarray]
    ) -> None:
        self.collection, self.stage, self.encode = collection, stage, encode
        self.stages = collection.stages

    def search_batch(
        self, queries: Sequence[str], k: int, *, with_text: bool = False
    ) -> list[list[Any]]:
        from ..engine.types import Hit

        vecs = np.asarray(self.encode(list(queries)), dtype=np.float32)
        scores, positions = self.stage.index.search(vecs, k)
        ids = self.collection.docstore.ids_view()
        out = []
        for srow, prow in zip(scores, positions, strict=True):
            hits = [(ids[p], float(s)) for s, p in zip(srow, prow, strict=True) if p >= 0]
            out.append([Hit(id=d, score=s, rank=i + 1) for i, (d, s) in enumerate(hits)])
        return out


@hookimpl
def register_negative_miners(register: Register) -> None:
    register(
        StaticMiner,
        description="top-k first-stage negatives in a rank range, optional fixed margins",
    )
    register(
        StarMiner, description="STAR: static hard negatives mixed with random corpus negatives"
    )
    register(
        AdaptiveMarginMiner,
        description="drops candidates within a per-query margin of the positive (optionally teacher-scored)",
    )
    register(
        AdoreMiner, description="ADORE: re-retrieves with the current query encoder during training"
    )


# -- relevo mine --------------------------------------------------------------------------------
def _mine_command(helpers: CommandHelpers) -> click.Command:
    import click

    from ..engine.mining import mine_dataset, write_mining

    @click.command("mine")
    @click.argument("dataset")
    @click.option(
        "--miner", "miner_name", default="static", show_default=True, help="Registered miner name."
    )
    @click.option(
        "--first-stage",
        default="bm25",
        show_default=True,
        help="Pipeline the candidates come from (as for eval).",
    )
    @click.option(
        "--split", default="train", show_default=True, help="qrels split whose positives are used."
    )
    @click.option(
        "--embedder", default="minilm", show_default=True, help="Embedder of dense first stages."
    )
    @click.option(
        "--limit", type=click.IntRange(min=1), help="Only the first N queries with positives."
    )
    @click.option(
        "--max-positives",
        type=click.IntRange(min=1),
        help="Hand the miner only the N highest-graded positives per query.",
    )
    @click.option(
        "--depth", type=click.IntRange(min=1), help="Candidates per query (default: the miner's)."
    )
    @click.option(
        "--option", "options", multiple=True, help="Miner option KEY=VALUE (JSON values)."
    )
    @click.option(
        "--out",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="negatives.jsonl to write (report beside it).",
    )
    def mine(
        dataset: str,
        miner_name: str,
        first_stage: str,
        split: str,
        embedder: str,
        limit: int | None,
        max_positives: int | None,
        depth: int | None,
        options: tuple[str, ...],
        out: Path,
    ) -> None:
        """Mine hard negatives for a BEIR dataset split.

        Writes one JSON line per query, {"query_id", "positive_ids", "negative_ids",
        "scores"}, and NAME.report.json (+ .png) beside --out: counts kept / dropped and
        why, score summaries and examples of dropped candidates.
        """

        engine = helpers.engine()
        opts = helpers.parse_options(options, param_hint="--option")
        miner = engine.miner(miner_name, **opts)
        folder = helpers.find_dataset(dataset)
        from ..engine.evaluate import load_dataset
        from ..engine.mining import judged_positives

        ds = load_dataset(folder, split=split)
        judged = judged_positives(ds.qrels)
        total = sum(1 for q in ds.queries if q in judged)
        total = min(total, limit) if limit else total
        with helpers.progress(total, f"mining with {miner_name}", log_every=500) as advance:
            result = mine_dataset(
                engine,
                folder,
                miner,
                first_stage=first_stage,
                split=split,
                embedder=embedder,
                limit=limit,
                max_positives=max_positives,
                depth=depth,
                progress=advance,
            )
        written = write_mining(result, out)
        rep = result.report
        click.echo(
            f"{rep.queries} queries: {rep.kept} negatives kept, {sum(rep.dropped.values())} candidates dropped "
            f"({', '.join(f'{n} {r}' for r, n in sorted(rep.dropped.items())) or 'none'}); "
            f"{rep.queries_without_negatives} queries without negatives. Wrote {written['negatives']} and "
            f"{written['report'].name}"
            + (f" + {written['plot'].name}" if "plot" in written else "")
        )

    return mine


@hookimpl
def register_commands(cli: click.Group, helpers: CommandHelpers) -> None:
    cli.add_command(_mine_command(helpers))


__all__ = ["AdaptiveMarginMiner", "AdoreMiner", "StarMiner", "StaticMiner"]
