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


__all__ = ["EmbeddingCache", "cache_dir", "key"]
