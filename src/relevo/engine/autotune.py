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

The dev set is biased towards queries the first stage already answers (a query is kept
when the round-trip check finds its source), which makes the estimate conservative: it
measures whether the reranker improves the order *within* the candidates, where a
harmful reranker shows as a curve that falls from weight 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .rerank import Reranking, interpolate_with_first_stage
from .types import Hit

log = logging.getLogger(__name__)

#: the weights the dev set is scored at
WEIGHTS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))

#: documents ``--interpolate auto`` generates a dev set for when none is given
AUTO_SAMPLE = 64


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
    hits = collection.search_batch([q for q, _ in dev], depth, with_text=True) if dev else []
    return [(q, list(h), src) for (q, src), h in zip(dev, hits, strict=True)]


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
    "WEIGHTS",
    "InterpolationEstimate",
    "choose_weight",
    "default_min_gain",
    "dev_candidates",
    "dev_curve",
    "estimate_interpolation",
    "parse_interpolate",
    "reciprocal_rank",
]
