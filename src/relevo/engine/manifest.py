"""Index-directory manifests and crash-safe directory writes.

An index directory is ``manifest.json`` plus native payloads. It is always written
into a temporary sibling directory and renamed into place, so a crash or a bad input
never leaves a half-written index where a reader would find it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import CorruptIndexError, IndexFormatError

MANIFEST = "manifest.json"


def relevo_version() -> str:
    from .version import __version__

    return __version__


def write_manifest(directory: Path, data: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` (sorted keys, UTF-8) into ``directory``."""
    payload = {"relevo_version": relevo_version(), **data}
    (directory / MANIFEST).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", "utf-8")


def read_manifest(
    directory: str | os.PathLike[str],
    *,
    expected_format: str | None = None,
    required: tuple[str, ...] = ("format", "format_version"),
) -> dict[str, Any]:
    """Read and sanity-check a manifest; every problem is a :class:`CorruptIndexError`."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise IndexFormatError(
            f"{directory} is not an index directory (it does not exist or is a file). "
            "Build one with `relevo index build CORPUS --out DIR`."
        )
    if not path.is_file():
        raise CorruptIndexError(
            f"{directory} has no {MANIFEST}; it is not a relevo index or its build was interrupted. "
            "Rebuild it with `relevo index build`."
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptIndexError(f"{path} is not valid JSON ({exc}); rebuild the index.") from exc
    if not isinstance(data, dict):
        raise CorruptIndexError(
            f"{path} must hold a JSON object, found {type(data).__name__}; rebuild the index."
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise CorruptIndexError(f"{path} lacks required keys {missing}; rebuild the index.")
    if expected_format is not None and data["format"] != expected_format:
        raise CorruptIndexError(
            f"{path} describes a {data['format']!r} index, expected {expected_format!r}."
        )
    return data


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` only on success.

    The temporary directory is a sibling of ``target`` (same filesystem, so the final
    rename is atomic). On any exception it is deleted and ``target`` is untouched.
    """
    target = Path(target).absolute()
    if target.exists() and not overwrite:
        raise IndexFormatError(
            f"{target} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            backup.rmdir()
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["MANIFEST", "atomic_directory", "read_manifest", "write_manifest"]
