"""Content fingerprints of model weights: one function for folders and single files.

A fingerprint changes whenever the weights (or configs and tokenizer) change, and
never because of where they live: a model copied to another folder, a read-only
mount or a path under ``~/.cache`` fingerprints the same. Paths are only ever
filtered *relative to the model folder* (a ``.cache/`` folder that hub downloads
leave inside it holds no weights); a ``.cache`` above the folder does not matter.

Digests are memoised in-process per file stamp (path, size, mtime), and the sha256
of a large single file (a GGUF) is also remembered in the user cache, so warm loads
do not re-read hundreds of megabytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path

from ..engine.cache import cache_dir as default_cache_dir

log = logging.getLogger(__name__)

#: Files whose bytes are hashed; every other file contributes its name and size.
CONTENT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".onnx",
    ".pt",
    ".pth",
    ".gguf",
    ".model",  # sentencepiece
    "config.json",
    "tokenizer.json",
)
#: Folder names skipped *inside* a model folder (metadata that tools write there).
SKIPPED_DIRS = frozenset({".cache", ".git", "__pycache__"})
#: Single files at least this large get their digest remembered on disk.
PERSIST_BYTES = 16 << 20


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return _sha256_file(path)


@lru_cache(maxsize=16)
def _folder_digest(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, size, _mtime in stamp:
        h.update(f"{name}:{size}\n".encode())
        if name.endswith(CONTENT_SUFFIXES):
            with open(os.path.join(folder, name), "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
    return h.hexdigest()


def _stamped_file_digest(path: Path, cache_root: Path | None) -> str:
    st = path.stat()
    if st.st_size < PERSIST_BYTES:
        return _file_digest(str(path), st.st_size, st.st_mtime_ns)
    stamp = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    stamp_file = (cache_root or default_cache_dir()) / "models" / "stamps" / stamp.hexdigest()[:32]
    try:
        digest = stamp_file.read_text("ascii").strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = _file_digest(str(path), st.st_size, st.st_mtime_ns)
    try:
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest, "ascii")
        os.replace(tmp, stamp_file)
    except OSError as exc:  # a read-only cache only costs the re-hash next time
        log.debug("could not record the checksum of %s: %s", path, exc)
    return digest


def folder_files(folder: Path) -> list[Path]:
    """Files of a model folder, skipping tool metadata folders *inside* it (see SKIPPED_DIRS)."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if SKIPPED_DIRS.intersection(rel.parts[:-1]) or not p.is_file():
            continue
        out.append(p)
    return out


def weights_digest(path: str | os.PathLike[str], *, cache_root: Path | None = None) -> str:
    """sha256 fingerprint of model weights at ``path`` (a folder or a single file).

    A file: the sha256 of its bytes. A folder: sha256 over every file's path relative
    to the folder and size, plus the bytes of weights, configs and tokenizers
    (:data:`CONTENT_SUFFIXES`). Both are independent of where the model is stored.

    Args:
        path: a model folder or file.
        cache_root: where large-file digests are remembered (default: the user cache).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return _stamped_file_digest(p, cache_root)
    if not p.is_dir():
        raise FileNotFoundError(f"no model file or folder at {p}")
    stamp = tuple(
        sorted(
            (f.relative_to(p).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
            for f in folder_files(p)
        )
    )
    return _folder_digest(str(p), stamp)


__all__ = ["CONTENT_SUFFIXES", "SKIPPED_DIRS", "folder_files", "weights_digest"]
