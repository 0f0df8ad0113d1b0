"""Small frozen value objects passed between the engine, plugins and callers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "rank": self.rank,
            "title": self.title,
            "text": self.text,
        }


__all__ = ["Document", "Hit"]
