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
directory: it appends them to the live generation's write-ahead journal and fsyncs
(:mod:`relevo.engine.journal`), so a commit costs the size of the batch, not of the
collection. Loading replays the journal. When the journal outgrows
:data:`SNAPSHOT_BYTES`, or the directory has no generation yet, a commit writes a new
snapshot generation instead (see :mod:`relevo.engine.collection`); :meth:`snapshot`
does so on request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .components import embed_documents, index_items
from .errors import CorruptIndexError, RequestError
from .journal import append, decode_vectors, encode_vectors, journal_size
from .types import Document

if TYPE_CHECKING:
    from .collection import Stage
    from .docstore import DocStore

#: Documents one write call may carry.
MAX_WRITE_BATCH = 100_000
#: A commit whose journal has grown past this writes a snapshot generation instead.
SNAPSHOT_BYTES = 64 * 1024 * 1024


class _Reading:
    """The context manager of :meth:`RWLock.read` (a class: cheaper per search than a
    generator-based one)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._cond:
            while lock._writer or lock._waiting:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        lock = self._lock
        with lock._cond:
            lock._readers -= 1
            if not lock._readers:
                lock._cond.notify_all()


class RWLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0
        self._reading = _Reading(self)

    def read(self) -> _Reading:
        """``with lock.read():`` — shared with other readers, excluded by a writer."""
        return self._reading

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


def _check_storable(d: Document, i: int, what: str) -> None:
    """Refuse what the journal or the docstore cannot write and read back.

    Checked before a batch is applied: a document that failed only at ``commit()``
    stayed pending, so every later commit failed too and no write was durable again.
    """
    if not all(isinstance(v, str) for v in (d.id, d.text, d.title)):
        # the docstore would hold a row it refuses to load, or none at all (NOT NULL)
        raise RequestError(f"{what}: item #{i}: id, text and title must be strings.")
    try:
        json.dumps([d.id, d.title, d.text, dict(d.metadata)], ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            f"{what}: document {d.id!r} holds a lone UTF-16 surrogate "
            f"({exc.object[exc.start : exc.end]!r}), which is not text; fix or drop that character."
        ) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise RequestError(
            f"{what}: document {d.id!r} has metadata that is not a JSON object ({exc})."
        ) from exc


def check_documents(docs: Iterable[Document], what: str) -> list[Document]:
    """The batch as a list, refusing non-Documents, repeated ids, oversize batches and
    documents that cannot be stored (:func:`_check_storable`)."""
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
        _check_storable(d, i, what)
        if d.id in seen:
            raise RequestError(f"{what}: document id {d.id!r} appears twice in the batch.")
        seen.add(d.id)
    return batch


def _merge_upserts(
    records: Sequence[tuple[int, Mapping[str, Any]]], stages: Mapping[str, Any]
) -> list[tuple[int, Mapping[str, Any]]]:
    """Consecutive upserts of distinct ids as one record (a replay then adds once per run).

    Merging keeps the outcome: the batches touch different ids and apply in order. A
    record that does not look like an upsert is passed through for ``replay`` to judge.
    """
    out: list[tuple[int, Mapping[str, Any]]] = []
    run: list[tuple[int, Mapping[str, Any]]] = []
    ids: set[str] = set()

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            dense = [name for name in stages if stages[name].index.input != "text"]
            vectors = {
                name: encode_vectors(
                    np.concatenate([decode_vectors(r["vectors"][name]) for _, r in run])
                )
                for name in dense
            }
            docs = [d for _, r in run for d in r["docs"]]
            out.append((run[0][0], {"op": "upsert", "docs": docs, "vectors": vectors}))
        run.clear()
        ids.clear()

    for n, rec in records:
        batch = rec.get("docs") if rec.get("op") == "upsert" else None
        try:
            batch_ids = {str(d["id"]) for d in batch} if isinstance(batch, list) else None
            mergeable = batch_ids is not None and all(
                name in rec.get("vectors", {})
                for name in stages
                if stages[name].index.input != "text"
            )
        except (KeyError, TypeError):
            mergeable = False
        if not mergeable or batch_ids is None:
            flush()
            out.append((n, rec))
            continue
        if ids & batch_ids:
            flush()
        run.append((n, rec))
        ids.update(batch_ids)
    flush()
    return out


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
        """True when writes happened since the last load, save or commit (not yet durable)."""
        return bool(self.__dict__.get("_pending"))

    def _pending_records(self) -> list[dict[str, Any]]:
        return self.__dict__.setdefault("_pending", [])

    @property
    def generation(self) -> str | None:
        """The directory generation this collection was loaded from or last saved as."""
        return self.__dict__.get("_generation")

    def _saved_as(self, generation: str | None) -> None:
        """Called by ``save`` and ``load``: the generation holds every write so far."""
        self.__dict__["_generation"] = generation
        self.__dict__["_pending"] = []
        self.__dict__["_generation_compacted"] = False

    def _encode(self, batch: Sequence[Document]) -> dict[str, Any]:
        """Per stage, what its index's ``add`` takes for ``batch`` (texts or checked vectors)."""
        from .collection import check_vectors

        texts = [d.content for d in batch]
        out: dict[str, Any] = {}
        for name, stage in self.stages.items():
            if stage.index.input == "text":
                out[name] = (
                    index_items(stage.index, batch) if stage.index.reads_documents else texts
                )
                continue
            if stage.embedder is None:
                raise RequestError(
                    f"stage {name!r} is dense but has no embedder to encode documents."
                )
            vecs = np.asarray(embed_documents(stage.embedder, batch), dtype=np.float32)
            check_vectors(vecs, stage.embedder, len(batch))
            if not np.isfinite(vecs).all():
                raise RequestError(
                    f"stage {name!r}: embedder {stage.embedder.name!r} returned NaN or infinite values."
                )
            out[name] = vecs
        return out

    def _apply(
        self,
        batch: Sequence[Document],
        encoded: dict[str, Any],
        replaced: Sequence[int],
        *,
        record: bool = True,
    ) -> None:
        # Called under the write lock; nothing here should fail on valid input.
        for name, stage in self.stages.items():
            if replaced:
                stage.index.remove(replaced)
            stage.index.add(encoded[name])
        self.docstore.extend(batch)
        if record:
            self._pending_records().append(
                {
                    "op": "upsert",
                    "docs": [
                        {"id": d.id, "title": d.title, "text": d.text, "metadata": dict(d.metadata)}
                        for d in batch
                    ],
                    "vectors": {
                        name: encode_vectors(v)
                        for name, v in encoded.items()
                        if self.stages[name].index.input != "text"
                    },
                }
            )

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
            return len(self._delete_rows(wanted, record=True))

    def _delete_rows(self, ids: Sequence[str], *, record: bool) -> list[int]:
        present = [i for i in dict.fromkeys(ids) if self.docstore.position(i) is not None]
        rows = self.docstore.delete(present)
        if rows:
            for stage in self.stages.values():
                stage.index.remove(rows)
            if record:
                self._pending_records().append({"op": "delete", "ids": present})
        return rows

    def replay(self, records: Sequence[tuple[int, Mapping[str, Any]]], source: Path) -> None:
        """Apply journaled writes (``journal.read``'s records) without journaling them again.

        Raises:
            CorruptIndexError: a record of an unknown kind or whose vectors do not fit.
        """
        for n, rec in _merge_upserts(records, self.stages):
            op = rec.get("op")
            if op == "compact":  # journaled so a commit has something to write; rows are by id
                continue
            if op == "delete":
                self._delete_rows([str(i) for i in rec.get("ids", [])], record=False)
                continue
            if op != "upsert":
                raise CorruptIndexError(
                    f"{source}: record {n} has unknown op {op!r}; rebuild the index."
                )
            try:
                batch = [
                    Document(
                        id=str(d["id"]),
                        title=str(d.get("title", "")),
                        text=str(d["text"]),
                        metadata=dict(d.get("metadata", {})),
                    )
                    for d in rec["docs"]
                ]
                encoded: dict[str, Any] = {}
                for name, stage in self.stages.items():
                    if stage.index.input == "text":
                        encoded[name] = index_items(stage.index, batch)
                        continue
                    vecs = decode_vectors(rec["vectors"][name])
                    if (
                        vecs.ndim != 2
                        or vecs.shape[0] != len(batch)
                        or (stage.index.dim is not None and vecs.shape[1] != stage.index.dim)
                    ):
                        raise ValueError(f"stage {name!r} vectors of shape {vecs.shape}")
                    encoded[name] = vecs
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptIndexError(
                    f"{source}: record {n} cannot be replayed ({exc!r}); rebuild the index."
                ) from exc
            old = self.docstore.delete(d.id for d in batch)
            self._apply(batch, encoded, old, record=False)

    def compact(self) -> int:
        """Drop deleted rows from every stage and the docstore; returns how many were dropped.

        Tombstoned rows cost memory and search time (they are fetched and filtered) until
        compaction rebuilds each index from the live documents: lexical and sparse stages
        from the texts, dense stages from their stored vectors (or, for formats that keep
        only compressed codes, by encoding the documents again). Searches wait for it
        (the write lock); results are those of a fresh build of the live documents. On a
        collection with a directory, commit or :meth:`snapshot` afterwards to make it
        durable (the journal replays by id, so either is correct).
        """
        from .docstore import DocStore

        with self.lock.write():
            live = self.docstore.live_mask()
            dropped = int((~live).sum())
            if not dropped:
                return 0
            keep = np.flatnonzero(live)
            docs = [self.docstore.get(int(p)) for p in keep]
            texts = [d.content for d in docs]
            rebuilt = {}
            for name, stage in self.stages.items():
                old = stage.index
                try:
                    fresh = type(old)(**old.options)
                except TypeError as exc:
                    raise RequestError(
                        f"compact: stage {name!r} ({old.name}) cannot be rebuilt from its options ({exc})."
                    ) from exc
                for attr in ("instance_name", "plugin_name"):
                    if hasattr(old, attr):
                        setattr(fresh, attr, getattr(old, attr))
                if old.input == "text":
                    fresh.add(index_items(fresh, docs) if fresh.reads_documents else texts)
                else:
                    try:
                        vecs = old.stored_vectors(keep)
                    except NotImplementedError:
                        if stage.embedder is None:
                            raise RequestError(
                                f"compact: stage {name!r} keeps no vectors and has no embedder."
                            ) from None
                        vecs = np.asarray(embed_documents(stage.embedder, docs), np.float32)
                    if len(docs):
                        fresh.add(vecs)
                rebuilt[name] = fresh
            for name, fresh in rebuilt.items():
                self.stages[name].index = fresh
            self.docstore = DocStore(docs)
            # The next commit writes a snapshot of the compacted rows.
            self.__dict__["_generation_compacted"] = True
            self._pending_records().append({"op": "compact"})
        return dropped

    def commit(self) -> Path:
        """Make every write so far durable in the collection's directory; returns it.

        Appends the writes since the last commit to the live generation's journal and
        fsyncs it (a snapshot generation instead when there is no generation yet or the
        journal is past :data:`SNAPSHOT_BYTES`), under the read lock: searches keep
        running, writes wait. Without writes since the last load, save or commit it
        does nothing.

        Raises:
            RequestError: the collection was never saved or loaded (no directory).
            IndexBusyError: another writer replaced the directory's generation since this
                collection was loaded (reload it; these writes were not saved).
            IndexWriteError: the journal could not be written (nothing acknowledged).
        """
        if self.path is None:
            raise RequestError(
                "commit: this collection has no directory yet; save(path) it once first."
            )
        mutex = self.__dict__.setdefault("_commit_mutex", threading.Lock())
        with mutex, self.lock.read():  # writers wait; searches go on
            pending = self._pending_records()
            if not pending:
                return self.path  # nothing written since the last load, save or commit
            gen = self.generation
            compacted = self.__dict__.get("_generation_compacted", False)
            if gen is None or compacted or journal_size(self.path / gen) > SNAPSHOT_BYTES:
                return self._snapshot_locked()
            append(self.path, gen, pending)
            self.__dict__["_pending"] = []
        return self.path

    def snapshot(self) -> Path:
        """Write the whole collection as a new generation of its directory (compacts the journal)."""
        if self.path is None:
            raise RequestError(
                "snapshot: this collection has no directory yet; save(path) it once first."
            )
        mutex = self.__dict__.setdefault("_commit_mutex", threading.Lock())
        with mutex, self.lock.read():
            return self._snapshot_locked()

    def _snapshot_locked(self) -> Path:
        from .corpus import corpus_checksum

        assert self.path is not None  # noqa: S101 - checked by the callers
        # The manifest's checksum names the live documents (eval caches key on it).
        self.corpus_checksum = corpus_checksum(list(self.docstore))
        return self.save(self.path, overwrite=True)


__all__ = ["MAX_WRITE_BATCH", "SNAPSHOT_BYTES", "RWLock", "WritableCollection", "check_documents"]
