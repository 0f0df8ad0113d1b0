"""Deterministic fakes for testing relevo and relevo plugins. Tests only.

Nothing here is ever a default: the engine never falls back to a fake. Register them
explicitly, e.g. ``Engine(plugins=[relevo.testing.FakePlugin()], load_entrypoints=False)``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .engine.components import Embedder, EmbedKind, ListwiseReranker, PointwiseReranker
from .engine.hookspecs import hookimpl
from .engine.types import Document

_TOKEN = re.compile(r"\w+")


class HashingEmbedder(Embedder):
    """Bag-of-words feature hashing into ``dim`` signed buckets, L2-normalised.

    Texts sharing words get similar vectors, so retrieval behaves sensibly on toy
    corpora, and results are identical on every machine (no model, no randomness).
    """

    name: ClassVar[str] = "hashing"

    def __init__(self, dim: int = 64, *, query_prefix: str = "", document_prefix: str = "") -> None:
        self.dim = int(dim)
        self.normalized = True
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.calls = 0

    def embed_batch(self, texts: Sequence[str], *, kind: EmbedKind) -> np.ndarray:
        self.calls += 1
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for tok in _TOKEN.findall((prefix + text).lower()):
                digest = hashlib.blake2b(tok.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "instance_name", None) or self.name,
            "dim": self.dim,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
        }


class WordOverlapReranker(PointwiseReranker):
    """Scores a document by the fraction of query words it contains."""

    name: ClassVar[str] = "word-overlap"

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        q = set(_TOKEN.findall(query.lower()))
        return [len(q & set(_TOKEN.findall(d.lower()))) / max(len(q), 1) for d in docs]


class ReverseListwiseReranker(ListwiseReranker):
    """Returns the window reversed: an obviously-wrong but valid permutation for tests."""

    name: ClassVar[str] = "reverse"

    def permute(self, query: str, docs: Sequence[str]) -> list[int]:
        return list(range(len(docs)))[::-1]


class FakePlugin:
    """A plugin object registering the fakes above under their names."""

    __name__ = "relevo.testing"

    @hookimpl
    def register_embedders(self, register: Any) -> None:
        register(
            HashingEmbedder, "hashing", description="feature-hashing bag of words (tests only)"
        )

    @hookimpl
    def register_rerankers(self, register: Any) -> None:
        register(WordOverlapReranker)
        register(ReverseListwiseReranker)


def tiny_corpus() -> list[Document]:
    """Twelve short documents on four topics, for quick end-to-end tests."""
    rows = [
        ("d1", "Cats", "Cats are small domesticated carnivorous mammals that purr."),
        ("d2", "Dogs", "Dogs are loyal domesticated mammals descended from wolves."),
        ("d3", "Kittens", "A kitten is a juvenile cat; kittens sleep and purr a lot."),
        ("d4", "Python", "Python is a programming language with dynamic typing."),
        ("d5", "Rust", "Rust is a systems programming language focused on memory safety."),
        ("d6", "Compilers", "A compiler translates a programming language into machine code."),
        ("d7", "Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose."),
        ("d8", "Chlorophyll", "Chlorophyll is the green pigment that absorbs sunlight in plants."),
        ("d9", "Roots", "Plant roots absorb water and minerals from the soil."),
        ("d10", "Inflation", "Inflation is the rate at which prices for goods rise over time."),
        ("d11", "Interest rates", "Central banks raise interest rates to slow inflation."),
        ("d12", "Bonds", "Bond prices fall when interest rates rise."),
    ]
    return [Document(id=i, title=t, text=x, metadata={"topic": i}) for i, t, x in rows]


__all__ = [
    "FakePlugin",
    "HashingEmbedder",
    "ReverseListwiseReranker",
    "WordOverlapReranker",
    "tiny_corpus",
]
