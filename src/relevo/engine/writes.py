"""Document writes on a collection: add, update, upsert, delete, commit.

Every index format takes the same writes: new documents become new rows in the
docstore and in each stage (texts for lexical / learned-sparse stages, vectors from the
stage's own embedder for dense ones); a delete tombstones the rows everywhere (BM25
also drops them from its statistics, so its scores stay those of a fresh build of the
live documents); an update is a delete plus a new row. Positions never move, so a
search running next to a write maps rows to ids correctly, and a read-write lock keeps
searches from seeing half a batch: a batch is applied to every stage and the docstore
under the write lock, after everything that can fail (validation, embedding) is done.

:meth:`WritableCollection.commit` makes the writes so far durable in the collection's
directory by saving a new generation (see :mod:`relevo.engine.collection`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import RequestError
from .types import Document

if TYPE_CHECKING:
    from .collection import Stage
    from .docstore import DocStore

#: Documents one write call may carry.
MAX_WRITE_BATCH = 100_000


class RWLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def check_documents(docs: Iterable[Document], what: str) -> list[Document]:
    """The batch as a list, refusing non-Documents, repeated ids and oversize batches."""
    if isinstance(docs, (Document, str)):
        raise RequestError(f"{what}: pass a list of documents, not a single {type(docs).__name__}.")
    batch = list(docs)
    if len(batch) > MAX_WRITE_BATCH:
        raise RequestError(
            f"{what}: {len(batch)} documents in one call, more than the limit of {MAX_WRITE_BATCH}; "
            "split the batch."
        )
    seen: set[str] = set()
    for i, d in enumerate(batch):
        if not isinstance(d, Document):
            raise RequestError(
                f"{what}: item #{i} is {type(d).__name__}, expected relevo.Document."
            )
        if d.id in seen:
            raise RequestError(f"{what}: document id {d.id!r} appears twice in the batch.")
        seen.add(d.id)
    return batch


class WritableCollection:
    """The write half of :class:`~relevo.engine.collection.Collection` (a mixin)."""

    docstore: DocStore
    stages: dict[str, Stage]
    path: Path | None
    corpus_checksum: str

    if TYPE_CHECKING:

        def save(self, path: str | Path, *, overwrite: bool = False) -> Path: ...

    @property
    def lock(self) -> RWLock:
        """The collection's read-write lock (searches read, writes write)."""
        lock = self.__dict__.get("_rwlock")
        if lock is None:
            lock = self.__dict__.setdefault("_rwlock", RWLock())
        return lock

    @property
    def dirty(self) -> bool:
        """True when writes happened since the last load, save or commit."""
        return bool(self.__dict__.get("_dirty", False))

    def _encode(self, batch: Sequence[Document]) -> dict[str, Any]:
        """Per stage, what its index's ``add`` takes for ``batch`` (texts or checked vectors)."""
        from .collection import check_vectors

        texts = [d.content for d in batch]
        out: dict[str, Any] = {}
        for name, stage in self.stages.items():
            if stage.index.input == "text":
                out[name] = texts
                continue
            if stage.embedder is None:
                raise RequestError(
                    f"stage {name!r} is dense but has no embedder to encode documents."
                )
            vecs = np.asarray(stage.embedder.embed(texts, kind="document"), dtype=np.float32)
            check_vectors(vecs, stage.embedder, len(batch))
            if not np.isfinite(vecs).all():
                raise RequestError(
                    f"stage {name!r}: embedder {stage.embedder.name!r} returned NaN or infinite values."
                )
            out[name] = vecs
        return out

    def _apply(
        self, batch: Sequence[Document], encoded: dict[str, Any], replaced: Sequence[int]
    ) -> None:
        # Called under the write lock; nothing here should fail on valid input.
        for name, stage in self.stages.items():
            if replaced:
                stage.index.remove(replaced)
            stage.index.add(encoded[name])
        self.docstore.extend(batch)
        self.__dict__["_dirty"] = True

    def add(self, documents: Iterable[Document]) -> int:
        """Add new documents to every stage; returns how many were added.

        Raises:
            RequestError: an id that is already in the collection (use :meth:`update`
                or :meth:`upsert`), a repeated id, a non-Document, an oversize batch.
        """
        batch = check_documents(documents, "add")
        present = [d.id for d in batch if self.docstore.position(d.id) is not None]
        if present:
            raise RequestError(
                f"add: {len(present)} document(s) already exist (e.g. {present[0]!r}); "
                "use update() or upsert() to replace them."
            )
        if not batch:
            return 0
        encoded = self._encode(batch)
        with self.lock.write():
            self._apply(batch, encoded, [])
        return len(batch)

    def update(self, documents: Iterable[Document]) -> int:
        """Replace existing documents (text, title and metadata); returns how many.

        Raises:
            RequestError: an id the collection does not hold (use :meth:`add`).
        """
        batch = check_documents(documents, "update")
        missing = [d.id for d in batch if self.docstore.position(d.id) is None]
        if missing:
            raise RequestError(
                f"update: {len(missing)} document(s) are not in the collection (e.g. {missing[0]!r}); "
                "use add() or upsert() for new documents."
            )
        if not batch:
            return 0
        encoded = self._encode(batch)
        with self.lock.write():
            old = self.docstore.delete(d.id for d in batch)
            self._apply(batch, encoded, old)
        return len(batch)

    def upsert(self, documents: Iterable[Document]) -> tuple[int, int]:
        """Add new ids and replace existing ones in one batch; ``(added, updated)``."""
        batch = check_documents(documents, "upsert")
        if not batch:
            return 0, 0
        encoded = self._encode(batch)
        with self.lock.write():
            old = self.docstore.delete(d.id for d in batch)
            self._apply(batch, encoded, old)
        return len(batch) - len(old), len(old)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many existed (unknown ids are ignored)."""
        if isinstance(ids, str):
            raise RequestError("delete: pass a list of ids, not a single string.")
        wanted = list(ids)
        if len(wanted) > MAX_WRITE_BATCH:
            raise RequestError(
                f"delete: {len(wanted)} ids in one call, more than the limit of {MAX_WRITE_BATCH}."
            )
        for i, doc_id in enumerate(wanted):
            if not isinstance(doc_id, str):
                raise RequestError(f"delete: id #{i} is {type(doc_id).__name__}, expected str.")
        with self.lock.write():
            rows = self.docstore.delete(wanted)
            if rows:
                for stage in self.stages.values():
                    stage.index.remove(rows)
                self.__dict__["_dirty"] = True
        return len(rows)

    def commit(self) -> Path:
        """Make every write so far durable in the collection's directory; returns it.

        Saves a new generation of the directory (atomically, see ``save``) under the
        read lock, so searches keep running and writes wait for it. Without writes
        since the last load, save or commit it does nothing.

        Raises:
            RequestError: the collection was never saved or loaded (no directory).
        """
        if self.path is None:
            raise RequestError(
                "commit: this collection has no directory yet; save(path) it once first."
            )
        if not self.dirty:
            return self.path  # nothing written since the last load, save or commit
        from .corpus import corpus_checksum

        with self.lock.read():
            # The manifest's checksum names the live documents (eval caches key on it).
            self.corpus_checksum = corpus_checksum(list(self.docstore))
            out = self.save(self.path, overwrite=True)
            self.__dict__["_dirty"] = False
        return out


__all__ = ["MAX_WRITE_BATCH", "RWLock", "WritableCollection", "check_documents"]
