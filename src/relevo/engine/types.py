"""Small frozen value objects passed between the engine, plugins and callers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, overload

import numpy as np

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Document:
    """A corpus entry.

    Attributes:
        id: unique document id (the BEIR ``_id``).
        text: body text.
        title: optional title; indexes that read text see ``title + " " + text``.
        metadata: free-form JSON-serialisable mapping, stored in the docstore.
    """

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    @property
    def content(self) -> str:
        """The text an index or embedder reads: title and body joined by a space."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result.

    Attributes:
        id: document id.
        score: the score of the stage that produced the ranking (fused score for hybrid).
        rank: 1-based position in the result list.
        title, text: filled from the docstore when the collection has one.
        stages: per-stage ranks/scores for fused results, e.g. ``{"bm25": 3}``.
    """

    id: str
    score: float
    rank: int
    title: str = ""
    text: str = ""
    stages: Mapping[str, float] = field(default_factory=lambda: _EMPTY)

    def __reduce__(self) -> tuple[Any, ...]:
        # the default fails on the read-only ``stages`` mapping (a mappingproxy)
        return (_hit, (self.id, self.score, self.rank, self.title, self.text, dict(self.stages)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "rank": self.rank,
            "title": self.title,
            "text": self.text,
        }


def _hit(
    id: str,  # noqa: A002 - the field's name
    score: float,
    rank: int,
    title: str,
    text: str,
    stages: Mapping[str, float],
) -> Hit:
    """Unpickle a :class:`Hit` (its stages read-only again)."""
    return Hit(id, score, rank, title, text, MappingProxyType(dict(stages)) if stages else _EMPTY)


# A frozen dataclass's __init__ goes through object.__setattr__ once per field; the slot
# descriptors' own setters are about twice as fast, which is most of the cost of a
# search's results when thousands of hits per second are made.
_SET_FIELDS = tuple(
    getattr(Hit, f).__set__ for f in ("id", "score", "rank", "title", "text", "stages")
)


def _bulk_hits(
    scores: Sequence[float], pos: Sequence[int], rows: Sequence[Document], with_text: bool
) -> list[Hit]:
    """``Hit(rows[p].id, score, rank[, title, text])`` for each result, made in bulk."""
    new = object.__new__
    set_id, set_score, set_rank, set_title, set_text, set_stages = _SET_FIELDS
    out: list[Hit] = []
    for rank, (s, p) in enumerate(zip(scores, pos, strict=True), 1):
        d = rows[p]
        h = new(Hit)
        set_id(h, d.id)
        set_score(h, s)
        set_rank(h, rank)
        set_title(h, d.title if with_text else "")
        set_text(h, d.text if with_text else "")
        set_stages(h, _EMPTY)
        out.append(h)
    return out


class Hits(Sequence[Hit]):
    """One query's results: a read-only sequence of :class:`Hit`, ranks 1, 2, ...

    A search hands back its index's ``(scores, positions)`` arrays and the docstore's
    rows; the :class:`Hit` objects are made on first access, in bulk. So a caller who
    needs only ids and scores (an evaluation, a fusion, a server writing JSON) reads
    :attr:`ids` and :attr:`scores` and never pays for them, and a batch search costs
    what its index costs. It compares equal to a list of the same hits.
    """

    __slots__ = ("_hits", "_pos", "_row", "_rows", "_scores", "_with_text")

    def __init__(
        self,
        scores: np.ndarray,
        positions: np.ndarray,
        row: int,
        rows: Sequence[Document],
        with_text: bool = True,
    ) -> None:
        """Row ``row`` of a search's ``scores`` / ``positions`` arrays (position ``-1``
        pads a row with fewer matches than k); ``rows``: the docstore's documents by
        position (append-only, so positions stay valid while the collection grows)."""
        self._scores = scores
        self._pos = positions
        self._row = row
        self._rows = rows
        self._with_text = with_text
        self._hits: list[Hit] | None = None

    @classmethod
    def of(cls, hits: Sequence[Hit]) -> Hits:
        """Wrap hits made already (a fused ranking, a reranked list)."""
        out = cls.__new__(cls)
        out._hits = list(hits)
        out._scores = out._pos = None  # type: ignore[assignment]
        out._row = 0
        out._rows = ()
        out._with_text = True
        return out

    def _valid(self) -> tuple[list[float], list[int]]:
        # .tolist() first: numpy scalars cost ~10x more per item
        scores, pos = self._scores[self._row].tolist(), self._pos[self._row].tolist()
        if pos and min(pos) < 0:  # padding (-1) of a row with fewer matches than k
            kept = [(s, p) for s, p in zip(scores, pos, strict=True) if p >= 0]
            scores, pos = [s for s, _ in kept], [p for _, p in kept]
        return scores, pos

    def _materialize(self) -> list[Hit]:
        hits = self._hits
        if hits is None:
            scores, pos = self._valid()
            hits = self._hits = _bulk_hits(scores, pos, self._rows, self._with_text)
        return hits

    @property
    def ids(self) -> list[str]:
        """Document ids, best first (no :class:`Hit` is made)."""
        if self._hits is not None:
            return [h.id for h in self._hits]
        rows = self._rows
        return [rows[p].id for p in self._valid()[1]]

    @property
    def scores(self) -> list[float]:
        """Scores, best first."""
        if self._hits is not None:
            return [h.score for h in self._hits]
        return self._valid()[0]

    def __len__(self) -> int:
        if self._hits is not None:
            return len(self._hits)
        return len(self._valid()[1])

    @overload
    def __getitem__(self, i: int) -> Hit: ...
    @overload
    def __getitem__(self, i: slice) -> list[Hit]: ...
    def __getitem__(self, i: int | slice) -> Hit | list[Hit]:
        return self._materialize()[i]

    def __iter__(self) -> Iterator[Hit]:
        return iter(self._materialize())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hits):
            return self._materialize() == other._materialize()
        if isinstance(other, list):
            return self._materialize() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking equality, like list

    def __repr__(self) -> str:
        return f"Hits({self._materialize()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Hits.of, (self._materialize(),))


__all__ = ["Document", "Hit", "Hits"]
