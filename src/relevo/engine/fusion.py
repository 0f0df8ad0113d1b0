"""Reciprocal-rank fusion of several ranked lists (Cormack et al., SIGIR 2009)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import ConfigError


def rrf(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
    limit: int | None = None,
) -> list[tuple[str, float, dict[str, float]]]:
    """Fuse ranked lists: ``score(d) = sum_s w_s / (k + rank_s(d))``.

    Args:
        rankings: stage name -> ``[(doc_id, score), ...]`` best first.
        k: the RRF constant (60 in the paper); larger flattens the rank discount.
        weights: per-stage weights (default 1.0).
        limit: keep the best ``limit`` fused documents.

    Returns:
        ``[(doc_id, fused_score, {stage: rank})]`` best first; ties broken by the best
        single-stage rank, then by doc id, so output is deterministic.
    """
    if k < 0:
        raise ConfigError(f"RRF k must be >= 0, got {k}; 60 is the usual constant.")
    fused: dict[str, float] = {}
    ranks: dict[str, dict[str, float]] = {}
    for stage, hits in rankings.items():
        w = 1.0 if weights is None else float(weights.get(stage, 1.0))
        for rank, (doc_id, _score) in enumerate(hits, 1):
            if doc_id in ranks and stage in ranks[doc_id]:
                continue  # a stage listing a doc twice counts once, at its best rank
            fused[doc_id] = fused.get(doc_id, 0.0) + w / (k + rank)
            ranks.setdefault(doc_id, {})[stage] = rank
    order = sorted(fused, key=lambda d: (-fused[d], min(ranks[d].values()), d))
    if limit is not None:
        order = order[:limit]
    return [(d, fused[d], ranks[d]) for d in order]


def linear(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    *,
    weights: Mapping[str, float] | None = None,
    limit: int | None = None,
) -> list[tuple[str, float, dict[str, float]]]:
    """Convex combination of per-stage min-max-normalised scores.

    Each stage's scores are scaled to [0, 1] over its own list for this query; a document
    a stage did not return contributes 0 from it. Used where scores are comparable in
    shape, e.g. PromptReps' dense + sparse halves. Returns what :func:`rrf` returns,
    with each stage's rank in the third element.
    """
    fused: dict[str, float] = {}
    ranks: dict[str, dict[str, float]] = {}
    for stage, hits in rankings.items():
        if not hits:
            continue
        w = 1.0 if weights is None else float(weights.get(stage, 1.0))
        scores = [s for _, s in hits]
        lo, hi = min(scores), max(scores)
        span = hi - lo
        for rank, (doc_id, score) in enumerate(hits, 1):
            if doc_id in ranks and stage in ranks[doc_id]:
                continue
            norm = (score - lo) / span if span > 0 else 1.0
            fused[doc_id] = fused.get(doc_id, 0.0) + w * norm
            ranks.setdefault(doc_id, {})[stage] = rank
    order = sorted(fused, key=lambda d: (-fused[d], min(ranks[d].values()), d))
    if limit is not None:
        order = order[:limit]
    return [(d, fused[d], ranks[d]) for d in order]


METHODS = ("rrf", "linear")

__all__ = ["METHODS", "linear", "rrf"]
