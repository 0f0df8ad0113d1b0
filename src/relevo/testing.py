"""Deterministic fakes for testing relevo and relevo plugins. Tests only.

Nothing here is ever a default: the engine never falls back to a fake. Register them
explicitly, e.g. ``Engine(plugins=[relevo.testing.FakePlugin()], load_entrypoints=False)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
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


def write_beir_dataset(
    root: Path,
    docs: Sequence[Document],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    split: str = "test",
) -> Path:
    """Write a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); returns ``root``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in qrels.items():
            for doc_id, rel in judged.items():
                fh.write(f"{qid}\t{doc_id}\t{rel}\n")
    return root


def tiny_bert(path: Path, texts: Sequence[str], *, seed: int = 0) -> Path:
    """Save a random 2-layer, 32-wide BERT encoder with a WordPiece vocabulary of ``texts``.

    A real ``transformers`` model folder (no download): enough to exercise code paths that
    load, run or train encoders and cross-encoders. Needs torch and transformers.
    """
    import inspect

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]  # lazy attribute of transformers 5

    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    # transformers 5 takes ``vocab`` (path or dict); 4.x took ``vocab_file``
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    key = "vocab" if "vocab" in params else "vocab_file"
    tokenizer = BertTokenizerFast(**{key: str(path / "vocab.txt")}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


__all__ = [
    "FakePlugin",
    "HashingEmbedder",
    "ReverseListwiseReranker",
    "WordOverlapReranker",
    "tiny_bert",
    "tiny_corpus",
    "write_beir_dataset",
]
