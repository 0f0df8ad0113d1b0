"""The write-ahead journal of a collection generation: writes made durable without a snapshot.

``DIR/gen-N/JOURNAL`` holds the writes acknowledged since generation N was written, one
JSON line per write batch::

    {"n": 3, "sum": "<sha256 of rec>", "rec": {"op": "upsert", "docs": [...], "vectors": {...}}}
    {"n": 4, "sum": "...", "rec": {"op": "delete", "ids": ["a", "b"]}}

:func:`append` writes batches under the directory's writer lock, after checking that
``CURRENT`` still names the generation the collection was loaded from (a snapshot by
another writer would otherwise swallow them), and fsyncs before returning: a write is
acknowledged only once this returns. Dense stages' vectors are journaled (base64
float32), so a replay never re-encodes and gives bit-identical indexes.

:func:`read` returns the records in order. A last line that is cut short or fails its
checksum is a write the crash interrupted before it was acknowledged: it is dropped
(with a warning). A damaged line before the last one is corruption, refused naming the
line. A new snapshot (``save``) starts an empty journal in its new generation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptIndexError, IndexBusyError, IndexWriteError
from .generations import _fsync, _lock, _unlock, current_generation

log = logging.getLogger(__name__)

JOURNAL = "JOURNAL"


def _digest(rec: Mapping[str, Any]) -> tuple[str, str]:
    body = json.dumps(rec, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return body, hashlib.sha256(body.encode("utf-8")).hexdigest()


def encode_vectors(vecs: np.ndarray) -> dict[str, Any]:
    """A float32 matrix as JSON: shape and little-endian base64 bytes."""
    arr = np.ascontiguousarray(vecs, dtype="<f4")
    return {"shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_vectors(obj: Mapping[str, Any]) -> np.ndarray:
    shape = tuple(int(x) for x in obj["shape"])
    raw = base64.b64decode(obj["b64"], validate=True)
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def journal_size(gen_dir: Path) -> int:
    """Bytes in ``gen_dir``'s journal (0 when it has none)."""
    try:
        return (gen_dir / JOURNAL).stat().st_size
    except FileNotFoundError:
        return 0


def append(directory: Path, generation: str, records: Sequence[Mapping[str, Any]]) -> int:
    """Durably append ``records`` to ``directory/generation/JOURNAL``; returns the last ``n``.

    Raises:
        IndexBusyError: ``CURRENT`` no longer names ``generation`` (another writer
            snapshotted the directory since this collection was loaded).
        IndexWriteError: an OS error while writing (nothing was acknowledged).
    """
    directory = Path(directory)
    try:
        fd = _lock(directory, wait=True)
    except OSError as exc:
        raise IndexWriteError(f"cannot lock {directory} to journal writes: {exc}") from exc
    try:
        live = current_generation(directory)
        if live != generation:
            raise IndexBusyError(
                f"{directory} now holds generation {live}, written by another writer after this "
                f"collection was loaded from {generation}; these writes were not saved. Load the "
                "collection again and repeat them."
            )
        path = directory / generation / JOURNAL
        existed = path.exists()
        last = _last_number(path) if existed else 0
        lines = []
        for i, rec in enumerate(records, 1):
            body, digest = _digest(rec)
            lines.append(f'{{"n":{last + i},"sum":"{digest}","rec":{body}}}\n')
        data = "".join(lines).encode("utf-8")
        try:
            jfd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(jfd, view)
                    view = view[written:]
                os.fsync(jfd)
            finally:
                os.close(jfd)
            if not existed:
                _fsync(path.parent, directory=True)
            _LAST[str(path)] = (path.stat().st_size, last + len(records))
        except OSError as exc:
            raise IndexWriteError(
                f"cannot write the journal {path}: {exc.strerror or exc}; the writes were not "
                "acknowledged (check free space and permissions)."
            ) from exc
        return last + len(records)
    finally:
        _unlock(fd)


#: path -> (file size, last record number) after our own last append or read.
_LAST: dict[str, tuple[int, int]] = {}


def _last_number(path: Path) -> int:
    """The last complete record's number; an incomplete tail (a crash) is cut off first."""
    size = path.stat().st_size
    cached = _LAST.get(str(path))
    if cached and cached[0] == size:
        return cached[1]
    recs, valid = _scan(path)
    if valid < size:  # appending after a torn line would bury it mid-file
        os.truncate(path, valid)
        log.warning("%s: cut off %d bytes of an unacknowledged write", path, size - valid)
    return int(recs[-1][0]) if recs else 0


def read(gen_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(n, record)`` of every complete journal line, in order (see the module docstring).

    Raises:
        CorruptIndexError: a damaged line before the last, or numbers out of sequence.
    """
    return _scan(Path(gen_dir) / JOURNAL)[0]


def _scan(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """The records and the byte length of the complete ones."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise CorruptIndexError(
            f"{path} is unreadable ({exc}); restore the file or rebuild."
        ) from exc
    lines = raw.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a write cut short
    out: list[tuple[int, dict[str, Any]]] = []
    valid = 0
    for lineno, line in enumerate(lines, 1):
        rec = _parse(line)
        if rec is None:
            if lineno == len(lines) and not tail:
                log.warning(
                    "%s: line %d is incomplete (an unacknowledged write); ignored", path, lineno
                )
                break
            raise CorruptIndexError(
                f"{path}: line {lineno} is damaged (bad JSON or checksum) and later writes follow; "
                "restore the file from a backup or rebuild the index."
            )
        n, body = rec
        if n != len(out) + 1:
            raise CorruptIndexError(
                f"{path}: line {lineno} has number {n}, expected {len(out) + 1}; rebuild the index."
            )
        out.append((n, body))
        valid += len(line) + 1
    if tail:
        log.warning("%s: its last write is incomplete (not acknowledged); ignored", path)
    return out, valid


def _parse(line: bytes) -> tuple[int, dict[str, Any]] | None:
    try:
        obj = json.loads(line)
        n, digest, rec = obj["n"], obj["sum"], obj["rec"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(n, int) or not isinstance(rec, dict) or _digest(rec)[1] != digest:
        return None
    return n, rec


__all__ = ["JOURNAL", "append", "decode_vectors", "encode_vectors", "journal_size", "read"]
