"""Reciprocal-rank fusion of several ranked lists (Cormack et al., SIGIR 2009)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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
        raise ValueError(f"RRF k must be >= 0, got {k}")
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


__all__ = ["rrf"]
