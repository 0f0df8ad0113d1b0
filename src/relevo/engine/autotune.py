"""``--interpolate auto``: how much to trust a reranker on a corpus, without labels.

Synthetic queries whose source document is known (``relevo generate-queries``) are the
corpus's own development set. Every dev query is searched with the first stage that
will be reranked, its top ``depth`` candidates are reranked once, and the reranked list
is blended with the first stage at each weight of :data:`WEIGHTS` exactly as
``--interpolate W`` blends (:func:`relevo.engine.rerank.interpolate_with_first_stage`).
The weight whose blend ranks the source documents best (MRR@10) is chosen; among equal
scores the largest weight wins, and a weight is only chosen when it beats the first
stage alone (weight 0) by more than ``min_gain`` (default: half a reciprocal-rank
point per dev query, i.e. more than one query moving from first to second place) —
otherwise the answer is *do not rerank*, so a reranker that disagrees with the corpus
is switched off rather than trusted.

Which synthetic queries form the dev set decides what it measures. A generated query
copies words from its source document, so a lexical first stage finds the source far
more easily than it finds a real query's relevant documents, and over such queries a
semantic reranker looks worse than it is. :func:`dev_set` therefore keeps, of the
queries the round trip kept, the :data:`DEV_SHARE` whose words appear *least* in their
source document (:func:`word_overlap`) — a choice that looks at each query and its
source only, never at a retrieval system. Measured against the true best weight over 12
(dataset, first stage, reranker) runs on SciFact, NFCorpus and TREC DL 2019
(``benchmarks/results/autotune.md``): mean nDCG@10 lost to the chosen weight 0.0102
(all kept queries: 0.0130), worst 0.0324 (0.0608), never below the first stage. Taking
the round trip's drops too (``OUT.dropped.jsonl``) lowers the mean further but falls
below the first stage twice: a query its first stage missed favours any second opinion.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .errors import ConfigError
from .rerank import Reranking, interpolate_with_first_stage
from .types import Hit

log = logging.getLogger(__name__)


class _Synthetic(Protocol):
    text: str
    source_id: str


Q = TypeVar("Q", bound=_Synthetic)

#: the weights the dev set is scored at
WEIGHTS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))

#: documents ``--interpolate auto`` generates a dev set for when none is given
AUTO_SAMPLE = 128

#: share of the generated queries :func:`dev_set` keeps: those that copy the fewest words
#: from their source document
DEV_SHARE = 0.5

_WORD = re.compile(r"[^\W_]{3,}")


@dataclass
class InterpolationEstimate:
    """The chosen weight and the dev curve it came from."""

    weight: float
    curve: dict[float, float]
    dev_queries: int
    metric: str = "mrr@10"
    source: str = ""
    min_gain: float = 0.0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rerank(self) -> bool:
        """Whether reranking helps at all (weight > 0)."""
        return self.weight > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "rerank": self.rerank,
            "metric": self.metric,
            "first_stage": self.curve.get(0.0),
            "best": max(self.curve.values()) if self.curve else None,
            "curve": {f"{w:.1f}": round(v, 4) for w, v in sorted(self.curve.items())},
            "dev_queries": self.dev_queries,
            "source": self.source,
            "min_gain": self.min_gain,
            "seconds": round(self.seconds, 2),
            **self.extra,
        }


def parse_interpolate(value: str | float | None) -> float | str | None:
    """``--interpolate``: ``None``, a weight in [0, 1], or ``"auto"``."""
    if value is None or isinstance(value, float):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        w = float(text)
    except ValueError:
        raise ConfigError(f"{value!r} is neither a weight in [0, 1] nor 'auto'.") from None
    if not 0.0 <= w <= 1.0:
        raise ConfigError(f"{w} is not in [0, 1].")
    return w


def choose_weight(curve: Mapping[float, float], *, min_gain: float = 0.0) -> float:
    """The best weight of a dev curve; 0 unless it beats weight 0 by more than ``min_gain``."""
    if not curve:
        raise ConfigError("no dev curve to choose an interpolation weight from.")
    best = max(curve.values())
    base = curve.get(0.0, float("-inf"))
    if best - base <= min_gain + 1e-12:
        return 0.0
    return max(w for w, v in curve.items() if v >= best - 1e-12)


def word_overlap(query: str, document: str) -> float:
    """Share of the query's words (3+ letters or digits, case-folded) found in the document."""
    words = set(_WORD.findall(query.casefold()))
    if not words:
        return 1.0
    return len(words & set(_WORD.findall(document.casefold()))) / len(words)


def dev_set(
    queries: Sequence[Q],
    text_of: Callable[[str], str | None],
    *,
    share: float = DEV_SHARE,
) -> list[Q]:
    """The ``share`` of ``queries`` that copy the fewest words from their source document.

    ``queries`` are synthetic queries (``.text``, ``.source_id``) the round trip kept;
    ``text_of(doc_id)`` is the source's text (``None``: not in the corpus, the query is
    skipped). Ties keep the input order, and so does the result.
    """
    if not 0 < share <= 1:
        raise ConfigError(f"dev share must be in (0, 1], got {share}.")
    scored: list[tuple[float, int]] = []
    for i, q in enumerate(queries):
        text = text_of(q.source_id)
        if text is not None:
            scored.append((word_overlap(q.text, text), i))
    keep = max(1, int(len(scored) * share)) if scored else 0
    return [queries[i] for i in sorted(i for _, i in sorted(scored)[:keep])]


def pairs(queries: Sequence[Any]) -> list[tuple[str, str]]:
    """``(text, source id)`` of synthetic queries, the shape :func:`dev_candidates` takes."""
    return [(q.text, q.source_id) for q in queries]


def reciprocal_rank(hits: Sequence[Hit], source: str, k: int = 10) -> float:
    for i, h in enumerate(hits[:k], 1):
        if h.id == source:
            return 1.0 / i
    return 0.0


def dev_curve(
    runner: Reranking,
    dev: Sequence[tuple[str, Sequence[Hit], str]],
    *,
    depth: int,
    weights: Sequence[float] = WEIGHTS,
    progress: Callable[[int], Any] | None = None,
) -> dict[float, float]:
    """MRR@10 of the source documents at every weight.

    Args:
        runner: the reranking to judge, *without* interpolation.
        dev: ``(query, first-stage hits with text, source document id)`` per dev query.
        depth: candidates reranked per query (as the real run will).
    """
    if runner.interpolate is not None:
        raise ConfigError("dev_curve needs the reranking without --interpolate.")
    scored = runner.strategy == "pointwise"
    sums = dict.fromkeys(weights, 0.0)
    for query, hits, source in dev:
        top = list(hits[:depth])
        if top:
            ranked = runner(query, top).hits
            for w in weights:
                blended = interpolate_with_first_stage(ranked, top, w, scored=scored)
                sums[w] += reciprocal_rank(blended, source)
        if progress is not None:
            progress(1)
    n = max(len(dev), 1)
    return {w: s / n for w, s in sums.items()}


def dev_candidates(
    engine: Any,
    corpus: Any,
    dev: Sequence[tuple[str, str]],
    *,
    pipeline: str,
    depth: int,
    embedder: str = "minilm",
) -> list[tuple[str, list[Hit], str]]:
    """``(query, first-stage hits with text, source id)`` for ``(query, source id)`` pairs.

    The first stage is ``pipeline`` over ``corpus`` (the cached collection ``relevo eval``
    uses).
    """
    from .evaluate import corpus_collection

    collection = corpus_collection(engine, corpus, pipeline, embedder=embedder)
    return search_dev(collection, dev, depth)


def search_dev(
    collection: Any, dev: Sequence[tuple[str, str]], depth: int
) -> list[tuple[str, list[Hit], str]]:
    """``(query, hits with text, source id)``: each dev pair searched in ``collection``."""
    hits = collection.search_batch([q for q, _ in dev], depth, with_text=True) if dev else []
    return [(q, list(h), src) for (q, src), h in zip(dev, hits, strict=True)]


def docstore_text(collection: Any) -> Callable[[str], str | None]:
    """``text_of(doc_id)`` for :func:`dev_set`, read from a collection's docstore."""
    store = collection.docstore

    def text_of(doc_id: str) -> str | None:
        doc = store.by_id(doc_id)
        return None if doc is None else doc.content

    return text_of


def dev_rows(
    engine: Any,
    corpus: Any,
    queries: Sequence[Any],
    *,
    pipeline: str,
    depth: int,
    embedder: str = "minilm",
) -> list[tuple[str, list[Hit], str]]:
    """:func:`dev_set` of synthetic ``queries``, searched with ``pipeline`` over ``corpus``.

    One cached collection (the one ``relevo eval`` uses) gives both the source texts and
    the candidates.
    """
    from .evaluate import corpus_collection

    collection = corpus_collection(engine, corpus, pipeline, embedder=embedder)
    chosen = pairs(dev_set(queries, docstore_text(collection)))
    return search_dev(collection, chosen, depth)


def default_min_gain(dev_queries: int) -> float:
    """The smallest dev gain that counts: more than one query moving from rank 1 to rank 2."""
    return 0.5 / max(dev_queries, 1)


def estimate_interpolation(
    runner: Reranking,
    dev: Sequence[tuple[str, Sequence[Hit], str]],
    *,
    depth: int,
    min_gain: float | None = None,
    source: str = "",
    progress: Callable[[int], Any] | None = None,
) -> InterpolationEstimate:
    """Score the dev set at every weight of :data:`WEIGHTS` and choose one.

    ``min_gain`` (MRR@10 over weight 0) defaults to :func:`default_min_gain`: a weight
    that wins by less than one query's move from first to second place is noise.
    """
    if not dev:
        raise ConfigError(
            "--interpolate auto found no usable dev query (synthetic queries with a source "
            "document in this corpus); generate some with `relevo generate-queries`."
        )
    t0 = time.perf_counter()
    if min_gain is None:
        min_gain = default_min_gain(len(dev))
    curve = dev_curve(runner, dev, depth=depth, progress=progress)
    weight = choose_weight(curve, min_gain=min_gain)
    est = InterpolationEstimate(
        weight=weight,
        curve=curve,
        dev_queries=len(dev),
        source=source,
        min_gain=min_gain,
        seconds=time.perf_counter() - t0,
    )
    log.info(
        "--interpolate auto: weight %.1f (dev MRR@10 %.4f at 0, %.4f chosen; %d queries)",
        weight,
        curve[0.0],
        curve[weight],
        len(dev),
    )
    return est


__all__ = [
    "AUTO_SAMPLE",
    "DEV_SHARE",
    "WEIGHTS",
    "InterpolationEstimate",
    "choose_weight",
    "default_min_gain",
    "dev_set",
    "dev_candidates",
    "dev_curve",
    "dev_rows",
    "docstore_text",
    "estimate_interpolation",
    "pairs",
    "parse_interpolate",
    "reciprocal_rank",
    "search_dev",
    "word_overlap",
]
