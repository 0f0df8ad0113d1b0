"""The user cache folder (converted models, embeddings, eval indexes), keyed by checksum.

``RELEVO_CACHE_DIR`` wins, then ``$XDG_CACHE_HOME/relevo``, then ``~/.cache/relevo``.
Nothing is ever cached inside the work tree.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    if override is not None:
        root = Path(override)
    elif os.environ.get("RELEVO_CACHE_DIR"):
        root = Path(os.environ["RELEVO_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "relevo"
    else:
        root = Path.home() / ".cache" / "relevo"
    return root


def key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


class EmbeddingCache:
    """float32 matrices stored as ``.npy`` files (no pickle), written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root / "embeddings"

    def path(self, cache_key: str) -> Path:
        return self.root / f"{cache_key}.npy"

    def get(self, cache_key: str, *, rows: int) -> np.ndarray | None:
        p = self.path(cache_key)
        if not p.is_file():
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable embedding cache %s (%s)", p, exc)
            return None
        if arr.ndim != 2 or arr.shape[0] != rows or arr.dtype != np.float32:
            log.warning(
                "ignoring embedding cache %s with shape %s (expected %d rows)", p, arr.shape, rows
            )
            return None
        return arr

    def put(self, cache_key: str, array: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, self.path(cache_key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class TextEmbeddingStore:
    """Per-text float32 vectors of one model in an SQLite file: ``root/text-embeddings/NAME.sqlite``.

    Rows are keyed by the SHA-256 of the text, so a text embedded once (by any
    process) is read back instead of re-encoded; ``name`` must change whenever the
    vectors would (e.g. :func:`key` of the embedder's fingerprint and the text kind).
    Writes are SQLite transactions: a crash leaves the rows before it, never a torn
    one. Any SQLite failure (a read-only folder, a damaged file) turns the store off
    for this process with one warning — the caller then just computes every vector —
    and the file is left as it is.
    """

    def __init__(self, root: Path, name: str, dim: int) -> None:
        self.path = root / "text-embeddings" / f"{name}.sqlite"
        self.dim = int(dim)
        self._db: Any = None
        self.disabled = False

    def _connect(self) -> Any:
        if self._db is None and not self.disabled:
            import sqlite3

            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30)
                db.execute("CREATE TABLE IF NOT EXISTS vec (h BLOB PRIMARY KEY, v BLOB NOT NULL)")
                db.commit()
                self._db = db
            except (OSError, sqlite3.Error) as exc:
                self._off(exc)
        return self._db

    def _off(self, exc: BaseException) -> None:
        log.warning("text embedding cache %s is off (%s); vectors are recomputed", self.path, exc)
        self.disabled = True
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001 - closing a broken handle; the store is off anyway
                log.debug("closing %s failed", self.path, exc_info=True)
        self._db = None

    @staticmethod
    def _hash(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def get_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ``texts`` that have one."""
        db = self._connect()
        if db is None or not texts:
            return {}
        import sqlite3

        by_hash = {self._hash(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        hashes = list(by_hash)
        try:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for h, blob in db.execute(f"SELECT h, v FROM vec WHERE h IN ({marks})", chunk):  # noqa: S608 - placeholders only
                    if len(blob) == 4 * self.dim:
                        found[by_hash[bytes(h)]] = np.frombuffer(blob, dtype=np.float32).copy()
        except sqlite3.Error as exc:
            self._off(exc)
            return {}
        return found

    def put_many(self, rows: dict[str, np.ndarray]) -> None:
        db = self._connect()
        if db is None or not rows:
            return
        import sqlite3

        items = [
            (self._hash(t), np.ascontiguousarray(v, dtype=np.float32).tobytes())
            for t, v in rows.items()
            if v.shape == (self.dim,)
        ]
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO vec (h, v) VALUES (?, ?)", items)
        except sqlite3.Error as exc:
            self._off(exc)


__all__ = ["EmbeddingCache", "TextEmbeddingStore", "cache_dir", "key"]
