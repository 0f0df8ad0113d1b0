"""SQLite document store: position -> (id, title, text, metadata, live).

Row ``position`` is the row number every index of a collection uses, so the store is
also the id map. Rows are append-only: deleting a document marks its row dead (the
indexes tombstone the same position), and updating one is a delete plus a new row, so
positions never move under a running search. A deleted id may be added again; it gets
a new row. Metadata is JSON text; nothing is pickled.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorpusError, CorruptIndexError
from .types import Document

FILENAME = "docstore.sqlite"

# ``id`` is not UNIQUE: a deleted row keeps its id and the id may live again in a
# later row. At most one live row per id is checked on load.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    live INTEGER NOT NULL DEFAULT 1
);
"""


class DocStore:
    """In-memory rows of documents (live or deleted) that save to / load from SQLite."""

    def __init__(self, docs: Iterable[Document] = ()) -> None:
        self._docs: list[Document] = []
        self._live: list[bool] = []
        self._pos: dict[str, int] = {}  # live documents only
        self._ids_cache: list[str] = []
        self.extend(docs)

    def __len__(self) -> int:
        """Live documents."""
        return len(self._pos)

    @property
    def rows(self) -> int:
        """Rows ever added (deleted ones included): the indexes' position range."""
        return len(self._docs)

    def ids_view(self) -> list[str]:
        """Position -> id list, cached (rows are append-only; dead rows keep their id)."""
        if len(self._ids_cache) != len(self._docs):
            self._ids_cache = [d.id for d in self._docs]
        return self._ids_cache

    def rows_view(self) -> list[Document]:
        """Every row's document, deleted ones included, by position (do not modify)."""
        return self._docs

    def live_mask(self) -> np.ndarray:
        """One bool per row: True where the row is a live document."""
        return np.fromiter(self._live, dtype=bool, count=len(self._live))

    def extend(self, docs: Iterable[Document]) -> None:
        """Append documents as new live rows; an id that is live already is refused."""
        batch = list(docs)
        seen: dict[str, int] = {}
        for i, d in enumerate(batch):
            if d.id in self._pos or d.id in seen:
                first = self._pos.get(d.id, seen.get(d.id))
                raise CorpusError(
                    f"duplicate document id {d.id!r} (documents #{first} and #{len(self._docs) + i}); "
                    "document ids must be unique: rename or drop one of them."
                )
            seen[d.id] = len(self._docs) + i
        for d in batch:
            self._pos[d.id] = len(self._docs)
            self._docs.append(d)
            self._live.append(True)

    def delete(self, ids: Iterable[str]) -> list[int]:
        """Mark the live rows of ``ids`` dead; their positions (unknown ids are skipped)."""
        out = []
        for doc_id in dict.fromkeys(ids):
            p = self._pos.pop(doc_id, None)
            if p is not None:
                self._live[p] = False
                out.append(p)
        return out

    def position(self, doc_id: str) -> int | None:
        """The row of the live document ``doc_id`` (``None`` if absent or deleted)."""
        return self._pos.get(doc_id)

    def get(self, position: int) -> Document:
        return self._docs[position]

    def is_live(self, position: int) -> bool:
        return self._live[position]

    def by_id(self, doc_id: str) -> Document | None:
        p = self._pos.get(doc_id)
        return None if p is None else self._docs[p]

    def __iter__(self) -> Iterator[Document]:
        """Live documents, in row order."""
        return (d for d, live in zip(self._docs, self._live, strict=True) if live)

    def save(self, directory: Path) -> None:
        path = directory / FILENAME
        conn = sqlite3.connect(path)
        try:
            conn.executescript(_SCHEMA)
            conn.executemany(
                "INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        i,
                        d.id,
                        d.title,
                        d.text,
                        json.dumps(dict(d.metadata), ensure_ascii=False),
                        int(live),
                    )
                    for i, (d, live) in enumerate(zip(self._docs, self._live, strict=True))
                ),
            )
            conn.commit()
        finally:
            conn.close()

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        expected_count: int | None = None,
        expected_rows: int | None = None,
    ) -> DocStore:
        """Read ``directory/docstore.sqlite``, checking it row by row.

        Args:
            expected_count: live documents the manifest records.
            expected_rows: rows (live and deleted) the manifest records.

        Raises:
            CorruptIndexError: missing or unreadable file, non-contiguous positions,
                bad metadata JSON, an id live twice, or counts that differ from the manifest.
        """
        path = directory / FILENAME
        if not path.is_file():
            raise CorruptIndexError(f"{path} is missing; rebuild the index.")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                columns = {r[1] for r in conn.execute("PRAGMA table_info(docs)")}
                live_col = "live" if "live" in columns else "1"  # stores before deletions
                rows: Sequence[tuple[Any, ...]] = conn.execute(
                    f"SELECT position, id, title, text, metadata, {live_col} FROM docs ORDER BY position"  # noqa: S608 - a column name or a literal
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise CorruptIndexError(
                f"{path} is not a readable SQLite docstore ({exc}); rebuild the index."
            ) from exc
        store = cls()
        for i, (pos, doc_id, title, text, meta, live) in enumerate(rows):
            if pos != i:
                raise CorruptIndexError(
                    f"{path}: positions are not contiguous at row {i}; rebuild the index."
                )
            if not all(isinstance(v, str) for v in (doc_id, title, text, meta)):
                raise CorruptIndexError(
                    f"{path}: row {i} has a non-text id, title, text or metadata; rebuild the index."
                )
            try:
                metadata = json.loads(meta)
            except json.JSONDecodeError as exc:
                raise CorruptIndexError(
                    f"{path}: row {i} (id {doc_id!r}) has invalid metadata JSON ({exc}); rebuild the index."
                ) from exc
            if not isinstance(metadata, dict):
                raise CorruptIndexError(
                    f"{path}: row {i} (id {doc_id!r}) metadata is {type(metadata).__name__}, "
                    "expected a JSON object; rebuild the index."
                )
            doc = Document(id=doc_id, title=title, text=text, metadata=metadata)
            if live not in (0, 1):
                raise CorruptIndexError(
                    f"{path}: row {i} has live flag {live!r}; rebuild the index."
                )
            if live:
                if doc_id in store._pos:
                    raise CorruptIndexError(
                        f"{path}: id {doc_id!r} is live in rows {store._pos[doc_id]} and {i}; rebuild the index."
                    )
                store._pos[doc_id] = i
            store._docs.append(doc)
            store._live.append(bool(live))
        if expected_rows is not None and store.rows != expected_rows:
            raise CorruptIndexError(
                f"{path} holds {store.rows} rows but the manifest says {expected_rows}; rebuild the index."
            )
        if expected_count is not None and len(store) != expected_count:
            raise CorruptIndexError(
                f"{path} holds {len(store)} documents but the manifest says {expected_count}; rebuild the index."
            )
        return store


__all__ = ["FILENAME", "DocStore"]
