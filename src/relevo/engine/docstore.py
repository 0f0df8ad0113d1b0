"""SQLite document store: position -> (id, title, text, metadata).

Row ``position`` is the row number every index of a collection uses, so the store is
also the id map. Metadata is JSON text; nothing is pickled.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .errors import CorpusError, CorruptIndexError
from .types import Document

FILENAME = "docstore.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
"""


class DocStore:
    """In-memory list of documents that saves to / loads from SQLite."""

    def __init__(self, docs: Iterable[Document] = ()) -> None:
        self._docs: list[Document] = []
        self._pos: dict[str, int] = {}
        self._ids_cache: list[str] = []
        self.extend(docs)

    def __len__(self) -> int:
        return len(self._docs)

    def ids_view(self) -> list[str]:
        """Position -> id list, cached (documents are append-only)."""
        if len(self._ids_cache) != len(self._docs):
            self._ids_cache = [d.id for d in self._docs]
        return self._ids_cache

    def extend(self, docs: Iterable[Document]) -> None:
        for d in docs:
            if d.id in self._pos:
                raise CorpusError(
                    f"duplicate document id {d.id!r} (documents #{self._pos[d.id]} and #{len(self._docs)}); "
                    "document ids must be unique: rename or drop one of them."
                )
            self._pos[d.id] = len(self._docs)
            self._docs.append(d)

    def position(self, doc_id: str) -> int | None:
        return self._pos.get(doc_id)

    def get(self, position: int) -> Document:
        return self._docs[position]

    def by_id(self, doc_id: str) -> Document | None:
        p = self._pos.get(doc_id)
        return None if p is None else self._docs[p]

    def __iter__(self) -> Iterator[Document]:
        return iter(self._docs)

    def save(self, directory: Path) -> None:
        path = directory / FILENAME
        conn = sqlite3.connect(path)
        try:
            conn.executescript(_SCHEMA)
            conn.executemany(
                "INSERT INTO docs VALUES (?, ?, ?, ?, ?)",
                (
                    (i, d.id, d.title, d.text, json.dumps(dict(d.metadata), ensure_ascii=False))
                    for i, d in enumerate(self._docs)
                ),
            )
            conn.commit()
        finally:
            conn.close()

    @classmethod
    def load(cls, directory: Path, *, expected_count: int | None = None) -> DocStore:
        path = directory / FILENAME
        if not path.is_file():
            raise CorruptIndexError(f"{path} is missing; rebuild the index.")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                rows: Sequence[tuple[int, str, str, str, str]] = conn.execute(
                    "SELECT position, id, title, text, metadata FROM docs ORDER BY position"
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise CorruptIndexError(
                f"{path} is not a readable SQLite docstore ({exc}); rebuild the index."
            ) from exc
        store = cls()
        for i, (pos, doc_id, title, text, meta) in enumerate(rows):
            if pos != i:
                raise CorruptIndexError(
                    f"{path}: positions are not contiguous at row {i}; rebuild the index."
                )
            store.extend([Document(id=doc_id, title=title, text=text, metadata=json.loads(meta))])
        if expected_count is not None and len(store) != expected_count:
            raise CorruptIndexError(
                f"{path} holds {len(store)} documents but the manifest says {expected_count}; rebuild the index."
            )
        return store


__all__ = ["FILENAME", "DocStore"]
