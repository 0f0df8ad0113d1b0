"""Reranking strategies the host runs around reranker components.

- ``pointwise``: one score per (query, doc), sorted (cross-encoders, LLM 0-10 scores).
- ``window``: RankGPT sliding window, from the bottom of the list up (window, stride,
  passes), each window reordered by ``ListwiseReranker.permute``.
- ``full``: the whole candidate list in one ``permute`` call (single-pass full ranking).
- ``pairwise``: Pairwise Ranking Prompting with ``allpairs``, ``sort`` (heap sort) or
  ``sliding`` (top-k bubble passes from the bottom); both prompt orders are asked and
  averaged to cancel position bias.

``interpolate=w`` (optional, any strategy) blends the reranker's verdict with the
first stage's: both are min-max normalised over the candidate list (a strategy that
only orders documents contributes its rank, ``(n - rank) / (n - 1)``), and the final
score is ``w * reranker + (1 - w) * first_stage``. Out-of-domain rerankers often help
only this way; ``w = 1`` is plain reranking, ``w = 0`` keeps the first stage.

Every permutation a model returns is validated: out-of-range and repeated indices are
dropped, missing ones appended in their previous order, and the repairs are counted.
Each call returns its :class:`~relevo.engine.components.Cost`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .components import Cost, ListwiseReranker, PairwiseReranker, PointwiseReranker, Reranker
from .errors import ConfigError, RequestError
from .fusion import linear
from .types import Hit

STRATEGIES = ("pointwise", "window", "full", "pairwise")
PAIRWISE_METHODS = ("allpairs", "sort", "sliding")
MAX_CANDIDATES = 1000


@dataclass
class Repairs:
    """What permutation validation had to fix."""

    invalid: int = 0
    duplicates: int = 0
    missing: int = 0
    calls_repaired: int = 0

    def merge(self, other: Repairs) -> None:
        self.invalid += other.invalid
        self.duplicates += other.duplicates
        self.missing += other.missing
        self.calls_repaired += other.calls_repaired

    def to_dict(self) -> dict[str, int]:
        return {
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "calls_repaired": self.calls_repaired,
        }


@dataclass
class RerankResult:
    hits: list[Hit]
    cost: Cost
    repairs: Repairs = field(default_factory=Repairs)
    strategy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "hits": [h.to_dict() for h in self.hits],
            "cost": self.cost.to_dict(),
            "repairs": self.repairs.to_dict(),
        }


def repair_permutation(perm: Sequence[Any], n: int) -> tuple[list[int], Repairs]:
    """Make ``perm`` a permutation of ``range(n)``, deterministically.

    Valid indices keep their first occurrence and order; anything out of range or not
    an integer is dropped; repeats are dropped; indices never mentioned are appended in
    ascending order (their previous relative order).
    """
    seen: set[int] = set()
    out: list[int] = []
    rep = Repairs()
    for x in perm:
        if isinstance(x, bool) or not isinstance(x, int) and not (hasattr(x, "__index__")):
            rep.invalid += 1
            continue
        i = int(x)
        if not 0 <= i < n:
            rep.invalid += 1
        elif i in seen:
            rep.duplicates += 1
        else:
            seen.add(i)
            out.append(i)
    missing = [i for i in range(n) if i not in seen]
    rep.missing = len(missing)
    out.extend(missing)
    if rep.invalid or rep.duplicates or rep.missing:
        rep.calls_repaired = 1
    return out, rep


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start offsets of a bottom-up sliding window over ``n`` items.

    The first window covers the last ``window`` items; each next one moves ``stride`` up;
    the last window is clipped at 0, so it can be shorter than ``window`` only when
    ``n < window``. Windows always cover the top of the list.
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window and stride must be >= 1 (got {window}, {stride}).")
    if stride > window:
        raise ConfigError(f"stride ({stride}) larger than window ({window}) would skip documents.")
    if n <= window:
        return [0] if n else []
    starts = []
    start = n - window
    while start > 0:
        starts.append(start)
        start -= stride
    starts.append(0)
    return starts


def _texts(hits: Sequence[Hit]) -> list[str]:
    return [f"{h.title} {h.text}".strip() if h.title else h.text for h in hits]


def _ranked(
    hits: Sequence[Hit], order: Sequence[int], scores: Sequence[float] | None = None
) -> list[Hit]:
    out = []
    n = len(order)
    for rank, i in enumerate(order, 1):
        h = hits[i]
        score = float(scores[i]) if scores is not None else float(n - rank + 1)
        out.append(
            Hit(
                id=h.id,
                score=score,
                rank=rank,
                title=h.title,
                text=h.text,
                stages={"first_stage_rank": h.rank},
            )
        )
    return out


@dataclass(frozen=True)
class RerankOptions:
    """How to rerank a first stage: the strategy, its knobs and how deep to go.

    Attributes:
        strategy: ``pointwise``, ``window``, ``full`` or ``pairwise`` (default: the
            reranker's natural one).
        depth: candidates per query handed to the reranker; the rest keep their order.
        window / stride / passes: the sliding-window strategy's settings (defaults:
            the reranker's ``window_size``, half of it, one pass).
        pairwise_method: ``allpairs``, ``sort`` or ``sliding`` (pairwise strategy).
        top_k: positions PRP sort / sliding settle.
        interpolate: blend with the first stage (see the module docstring); ``"auto"``
            asks the caller to choose the weight on a synthetic dev set
            (:mod:`relevo.engine.autotune`; ``relevo eval`` does).
    """

    strategy: str | None = None
    depth: int = 100
    window: int | None = None
    stride: int | None = None
    passes: int = 1
    pairwise_method: str = "sliding"
    top_k: int = 10
    interpolate: float | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.interpolate, str) and self.interpolate != "auto":
            raise ConfigError(
                f"interpolate is a weight in [0, 1] or 'auto', got {self.interpolate!r}."
            )
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ConfigError(f"rerank depth must be a positive integer, got {self.depth!r}.")

    def runner(self, reranker: Reranker) -> Reranking:
        """A :class:`Reranking` of ``reranker`` with these options (validated there)."""
        return Reranking(
            reranker,
            strategy=self.strategy,
            window=self.window,
            stride=self.stride,
            passes=self.passes,
            pairwise_method=self.pairwise_method,
            top_k=self.top_k,
            interpolate=self.interpolate,
        )


class Reranking:
    """Runs one strategy with one reranker component."""

    def __init__(
        self,
        reranker: Reranker,
        *,
        strategy: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        passes: int = 1,
        pairwise_method: str = "sliding",
        top_k: int = 10,
        interpolate: float | str | None = None,
    ) -> None:
        self.reranker = reranker
        self.strategy = strategy or self.default_strategy(reranker)
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}."
            )
        needs = {
            "pointwise": PointwiseReranker,
            "window": ListwiseReranker,
            "full": ListwiseReranker,
            "pairwise": PairwiseReranker,
        }
        if not isinstance(reranker, needs[self.strategy]):
            name = getattr(reranker, "instance_name", None) or reranker.name
            supported = [s for s, base in needs.items() if isinstance(reranker, base)]
            raise ConfigError(
                f"reranker {name!r} cannot run the {self.strategy!r} strategy (it needs a {needs[self.strategy].__name__}); "
                f"it supports: {', '.join(supported) or 'none'}."
            )
        self.window = int(window or getattr(reranker, "window_size", 20) or 20)
        self.stride = stride or max(1, self.window // 2)
        if passes < 1:
            raise ConfigError(f"passes must be >= 1, got {passes}.")
        self.passes = passes
        if pairwise_method not in PAIRWISE_METHODS:
            raise ConfigError(
                f"unknown pairwise method {pairwise_method!r}; choose {', '.join(PAIRWISE_METHODS)}."
            )
        self.pairwise_method = pairwise_method
        self.top_k = top_k
        if interpolate == "auto":
            raise ConfigError(
                "interpolate='auto' is resolved by the caller (relevo eval / "
                "relevo.engine.autotune.estimate_interpolation) before reranking; give a weight here."
            )
        if interpolate is not None and not 0.0 <= float(interpolate) <= 1.0:
            raise ConfigError(f"interpolate is the reranker's weight in [0, 1], got {interpolate}.")
        self.interpolate: float | None = None if interpolate is None else float(interpolate)

    @staticmethod
    def default_strategy(reranker: Reranker) -> str:
        if isinstance(reranker, PointwiseReranker):
            return "pointwise"
        if isinstance(reranker, ListwiseReranker):
            return "window"
        return "pairwise"

    def __call__(self, query: str, hits: Sequence[Hit]) -> RerankResult:
        if not isinstance(query, str) or not query.strip():
            raise RequestError("rerank needs a non-empty query.")
        if len(hits) > MAX_CANDIDATES:
            raise RequestError(
                f"{len(hits)} candidates is more than the limit of {MAX_CANDIDATES}; lower --depth."
            )
        before = self.reranker.cost.copy()
        t0 = time.perf_counter()
        repairs = Repairs()
        hits = list(hits)
        if not hits:
            ranked: list[Hit] = []
        elif self.strategy == "pointwise":
            ranked = self._pointwise(query, hits)
        elif self.strategy == "window":
            ranked = self._window(query, hits, repairs)
        elif self.strategy == "full":
            ranked = self._listwise_once(query, hits, repairs)
        else:
            ranked = self._pairwise(query, hits)
        if self.interpolate is not None and ranked:
            ranked = interpolate_with_first_stage(
                ranked, hits, self.interpolate, scored=self.strategy == "pointwise"
            )
        cost = self.reranker.cost - before
        cost.seconds = time.perf_counter() - t0
        return RerankResult(ranked, cost, repairs, self.strategy)

    # -- strategies -------------------------------------------------------------------------
    def _pointwise(self, query: str, hits: list[Hit]) -> list[Hit]:
        assert isinstance(self.reranker, PointwiseReranker)  # noqa: S101 - checked in __init__
        texts = _texts(hits)
        scores: list[float] = []
        size = max(1, self.reranker.batch_size)
        for start in range(0, len(texts), size):
            batch = [float(s) for s in self.reranker.score(query, texts[start : start + size])]
            if len(batch) != len(texts[start : start + size]):
                raise RequestError(
                    f"reranker {self.reranker.name!r} returned {len(batch)} scores for {len(texts[start : start + size])} documents."
                )
            scores.extend(batch)
        # stable: equal scores keep first-stage order
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
        return _ranked(hits, order, scores)

    def _permute(self, query: str, hits: list[Hit], repairs: Repairs) -> list[int]:
        assert isinstance(self.reranker, ListwiseReranker)  # noqa: S101 - checked in __init__
        perm, rep = repair_permutation(list(self.reranker.permute(query, _texts(hits))), len(hits))
        repairs.merge(rep)
        return perm

    def _listwise_once(self, query: str, hits: list[Hit], repairs: Repairs) -> list[Hit]:
        order = list(range(len(hits)))
        for _ in range(self.passes):
            perm = self._permute(query, [hits[i] for i in order], repairs)
            order = [order[p] for p in perm]
        return _ranked(hits, order)

    def _window(self, query: str, hits: list[Hit], repairs: Repairs) -> list[Hit]:
        order = list(range(len(hits)))
        for _ in range(self.passes):
            for start in window_starts(len(order), self.window, self.stride):
                segment = order[start : start + self.window]
                perm = self._permute(query, [hits[i] for i in segment], repairs)
                order[start : start + self.window] = [segment[p] for p in perm]
        return _ranked(hits, order)

    def _pref(
        self, query: str, texts: list[str], a: int, b: int, memo: dict[tuple[int, int], float]
    ) -> float:
        """P(a beats b), both prompt orders averaged; memoised per pair."""
        if (a, b) in memo:
            return memo[(a, b)]
        assert isinstance(self.reranker, PairwiseReranker)  # noqa: S101 - checked in __init__
        p_ab = float(self.reranker.compare(query, texts[a], texts[b]))
        p_ba = float(self.reranker.compare(query, texts[b], texts[a]))
        p = (p_ab + (1.0 - p_ba)) / 2.0
        memo[(a, b)] = p
        memo[(b, a)] = 1.0 - p
        return p

    def _pairwise(self, query: str, hits: list[Hit]) -> list[Hit]:
        texts = _texts(hits)
        n = len(hits)
        memo: dict[tuple[int, int], float] = {}
        if self.pairwise_method == "allpairs":
            wins = [0.0] * n
            for a in range(n):
                for b in range(a + 1, n):
                    p = self._pref(query, texts, a, b, memo)
                    wins[a] += p
                    wins[b] += 1.0 - p
            order = sorted(range(n), key=lambda i: (-wins[i], i))
            return _ranked(hits, order, wins)
        if self.pairwise_method == "sort":
            # Heap sort with PRP as the comparator; only the top_k are popped in order, the
            # rest keep their first-stage order after them.
            outer = self

            class Item:
                __slots__ = ("i",)

                def __init__(self, i: int) -> None:
                    self.i = i

                def __lt__(self, other: Item) -> bool:  # "less" = more relevant (min-heap)
                    p = outer._pref(query, texts, self.i, other.i, memo)
                    return p > 0.5 or (p == 0.5 and self.i < other.i)

            heap = [Item(i) for i in range(n)]
            heapq.heapify(heap)
            top = [heapq.heappop(heap).i for _ in range(min(self.top_k, n))]
            rest = sorted(i for i in range(n) if i not in set(top))
            return _ranked(hits, top + rest)
        # sliding: top_k bubble passes from the bottom up, each bubbling the best to the top
        order = list(range(n))
        for pass_no in range(min(self.top_k, n)):
            for j in range(n - 1, pass_no, -1):
                if self._pref(query, texts, order[j], order[j - 1], memo) > 0.5:
                    order[j], order[j - 1] = order[j - 1], order[j]
        return _ranked(hits, order)


def interpolate_with_first_stage(
    ranked: Sequence[Hit], first_stage: Sequence[Hit], weight: float, *, scored: bool
) -> list[Hit]:
    """Blend a reranked list with the first stage it came from (see the module doc).

    ``ranked`` is a permutation of ``first_stage`` (as produced by the strategies);
    ``scored`` says whether ``ranked``'s scores are real model scores (pointwise) or
    only positions. The blend is :func:`relevo.engine.fusion.linear` over the two lists,
    so ties go to the better rank in either list, then the document id.
    """
    n = len(ranked)
    rerank = [(h.id, float(h.score) if scored else float(n - i)) for i, h in enumerate(ranked)]
    first = [(h.id, float(h.score)) for h in first_stage]
    fused = linear(
        {"rerank": rerank, "first_stage": first},
        weights={"rerank": weight, "first_stage": 1.0 - weight},
    )
    by_id = {h.id: h for h in ranked}
    first_score = dict(first)
    out = []
    for rank, (doc_id, score, _) in enumerate(fused, 1):
        h = by_id[doc_id]
        stages = dict(h.stages)
        stages.update(
            rerank_score=h.score, rerank_rank=h.rank, first_stage_score=first_score[doc_id]
        )
        out.append(Hit(id=h.id, score=score, rank=rank, title=h.title, text=h.text, stages=stages))
    return out


def reorder_for_context(hits: Sequence[Hit]) -> list[Hit]:
    """Place the strongest passages at both ends of an LLM context ("lost in the middle").

    Input best-first; output alternates: 1st first, 2nd last, 3rd second, 4th second-to-last...
    Ranks are kept as the relevance ranks (``hit.rank``); only the list order changes.
    """
    front: list[Hit] = []
    back: list[Hit] = []
    for i, h in enumerate(hits):
        (front if i % 2 == 0 else back).append(h)
    return front + back[::-1]


__all__ = [
    "RerankOptions",
    "MAX_CANDIDATES",
    "PAIRWISE_METHODS",
    "STRATEGIES",
    "RerankResult",
    "Repairs",
    "Reranking",
    "reorder_for_context",
    "repair_permutation",
    "window_starts",
]
