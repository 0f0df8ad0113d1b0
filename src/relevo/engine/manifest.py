"""Index-directory manifests: reading, writing, type checks and payload checksums.

An index directory is ``manifest.json`` plus native payloads. A collection directory
keeps them in generation folders behind a ``CURRENT`` pointer
(:mod:`relevo.engine.generations`); :func:`live_directory` is the folder holding the
live manifest, and every reader of files inside a collection directory goes through it.
The collection manifest records a sha256 and size of every payload file (``"files"``),
verified on load by :func:`verify_files`; :func:`validate_collection_manifest` and
:func:`validate_stage_manifest` check every field's type up front, so a damaged or
edited manifest is a :class:`CorruptIndexError` naming the field and the file, never a
traceback.

:func:`atomic_directory` (a temporary sibling renamed into place) remains for flat
folders that other libraries read, such as trained model folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeGuard

from .errors import CorruptIndexError, IndexFormatError
from .fusion import METHODS as FUSION_METHODS
from .generations import live_directory

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REBUILD = (
    "the manifest was edited or damaged. Rebuild the index with `relevo index build --overwrite`."
)
_warned_unverified: set[str] = set()


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
    # ValueError: also a 5,000-digit number; RecursionError: deeply nested arrays
    except (ValueError, RecursionError) as exc:
        raise CorruptIndexError(f"{path} is not valid JSON ({exc}); rebuild the index.") from exc
    except OSError as exc:  # removed meanwhile by a writer, or not readable
        raise CorruptIndexError(
            f"{path} cannot be read ({exc.strerror or exc}); check its permissions or rebuild the index."
        ) from exc
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


# -- safe paths and payload checksums -----------------------------------------------------
def _is_path_text(rel: object) -> TypeGuard[str]:
    """A non-empty string the file system can name: no NUL, no lone surrogate (``"\\ud800"``)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return False
    try:
        os.fsencode(rel)
    except UnicodeEncodeError:  # Path.resolve() raised it
        return False
    return True


def inside(root: Path, rel: object, *, field: str, manifest: Path) -> Path:
    """``root / rel`` for a relative path a manifest names, refused if it leaves ``root``.

    Raises:
        CorruptIndexError: ``rel`` is not a non-empty string, is absolute, has a ``..``
            part or a backslash, or resolves (through symbolic links) outside ``root``.
    """
    if not _is_path_text(rel):
        raise CorruptIndexError(
            f"{manifest}: {field} must be a relative path inside the index directory, found {rel!r}; {_REBUILD}"
        )
    posix = PurePosixPath(rel)
    if (
        posix.is_absolute()
        or PureWindowsPath(rel).is_absolute()
        or PureWindowsPath(rel).drive
        or "\\" in rel
        or ".." in posix.parts
    ):
        raise CorruptIndexError(
            f"{manifest}: {field} {rel!r} points outside the index directory; refusing to read it. {_REBUILD}"
        )
    full = root / posix
    if not full.resolve().is_relative_to(root.resolve()):
        raise CorruptIndexError(
            f"{manifest}: {field} {rel!r} leads outside the index directory (through a symbolic link); "
            f"refusing to read it. {_REBUILD}"
        )
    return full


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_digests(root: Path, entries: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{"relative/path": {"sha256", "bytes"}}`` of every file under the given entries of ``root``."""
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        base = root / entry
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            out[f.relative_to(root).as_posix()] = {"sha256": _sha256(f), "bytes": f.stat().st_size}
    return dict(sorted(out.items()))


def verify_files(root: Path, files: Mapping[str, Mapping[str, Any]] | None, manifest: Path) -> None:
    """Check every payload file against the size and sha256 the manifest recorded.

    A manifest without ``"files"`` (written before checksums) is accepted with one warning.

    Raises:
        CorruptIndexError: a file is missing, has another size or other contents (names it).
    """
    if files is None:
        if str(manifest) not in _warned_unverified:
            _warned_unverified.add(str(manifest))
            log.warning(
                "%s records no payload checksums (written by an older relevo); its files are not "
                "verified. Rebuild the index to add them.",
                manifest,
            )
        return
    for rel, rec in files.items():
        path = inside(root, rel, field=f"files[{rel!r}]", manifest=manifest)
        try:
            size = path.stat().st_size
            digest = _sha256(path) if size == rec["bytes"] else None
        except OSError as exc:
            raise CorruptIndexError(
                f"{path} is missing or unreadable ({exc.strerror or exc}); the index directory is "
                "incomplete. Rebuild the index with `relevo index build --overwrite`."
            ) from exc
        if digest is None:
            raise CorruptIndexError(
                f"{path} is {size} bytes, but {manifest} recorded {rec['bytes']}; the file was truncated "
                "or replaced. Rebuild the index with `relevo index build --overwrite`."
            )
        if digest != rec["sha256"]:
            raise CorruptIndexError(
                f"{path}: contents differ from the sha256 recorded in {manifest}; the file was modified "
                "or damaged. Rebuild the index with `relevo index build --overwrite`."
            )


# -- manifest types -----------------------------------------------------------------------
def _bad(manifest: Path, field: str, want: str, value: Any) -> CorruptIndexError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CorruptIndexError(f"{manifest}: {field} must be {want}, found {shown}; {_REBUILD}")


def _int(
    data: Mapping[str, Any], key: str, manifest: Path, *, field: str = "", low: int = 0
) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(manifest, field or repr(key), f"an integer >= {low}", value)
    return value


def _str(
    data: Mapping[str, Any], key: str, manifest: Path, *, field: str = "", empty: bool = False
) -> str:
    value = data[key]
    if not isinstance(value, str) or (not empty and not value):
        raise _bad(
            manifest, field or repr(key), "a non-empty string" if not empty else "a string", value
        )
    return value


def validate_embedder_record(record: Any, *, field: str, manifest: Path) -> None:
    """An embedder record is ``None`` or ``{"name": str, "dim": int >= 1, "options": {...}, ...}``."""
    if record is None:
        return
    if not isinstance(record, dict):
        raise _bad(manifest, field, "an object (the embedder record) or null", record)
    for key in ("name", "dim"):
        if key not in record:
            raise CorruptIndexError(f"{manifest}: {field} lacks {key!r}; {_REBUILD}")
    _str(record, "name", manifest, field=f"{field}.name")
    _int(record, "dim", manifest, field=f"{field}.dim", low=1)
    if not isinstance(record.get("options", {}), dict):
        raise _bad(manifest, f"{field}.options", "an object", record["options"])
    if not isinstance(record.get("normalized", False), bool):
        raise _bad(manifest, f"{field}.normalized", "true or false", record["normalized"])
    if not isinstance(record.get("fingerprint"), (str, type(None))):
        raise _bad(manifest, f"{field}.fingerprint", "a string or null", record["fingerprint"])


def validate_collection_manifest(data: Mapping[str, Any], manifest: Path) -> None:
    """Check the type of every field of a collection manifest (not its format version).

    Raises:
        CorruptIndexError: naming the first wrong field and ``manifest``.
    """
    _int(data, "format_version", manifest, low=1)
    _int(data, "count", manifest)
    if "rows" in data:  # rows ever added, deleted ones included
        _int(data, "rows", manifest)
    if "corpus_checksum" in data:
        _str(data, "corpus_checksum", manifest, empty=True)
    stages = data["stages"]
    if not isinstance(stages, list) or not stages:
        raise _bad(manifest, "'stages'", "a non-empty list of stage objects", stages)
    names: set[str] = set()
    paths: set[str] = set()
    for i, entry in enumerate(stages):
        where = f"stages[{i}]"
        if not isinstance(entry, dict):
            raise _bad(manifest, where, "an object", entry)
        for key in ("name", "index", "path"):
            if key not in entry:
                raise CorruptIndexError(f"{manifest}: {where} lacks {key!r}; {_REBUILD}")
            _str(entry, key, manifest, field=f"{where}.{key}")
        if entry["name"] in names or entry["path"] in paths:
            raise CorruptIndexError(
                f"{manifest}: {where} repeats the name or path of an earlier stage; {_REBUILD}"
            )
        names.add(entry["name"])
        paths.add(entry["path"])
        inside(manifest.parent, entry["path"], field=f"{where}.path", manifest=manifest)
        validate_embedder_record(
            entry.get("embedder"), field=f"{where}.embedder", manifest=manifest
        )
    fusion = data.get("fusion", {})
    if not isinstance(fusion, dict):
        raise _bad(manifest, "'fusion'", "an object", fusion)
    if (
        not isinstance(fusion.get("method", "rrf"), str)
        or fusion.get("method", "rrf") not in FUSION_METHODS
    ):
        raise _bad(
            manifest, "fusion.method", f"one of {', '.join(FUSION_METHODS)}", fusion["method"]
        )
    if "k" in fusion:
        _int(fusion, "k", manifest, field="fusion.k")
    if "depth" in fusion:
        _int(fusion, "depth", manifest, field="fusion.depth", low=1)
    weights = fusion.get("weights", {})
    if not isinstance(weights, dict) or not all(
        isinstance(k, str)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and v >= 0
        for k, v in weights.items()
    ):
        raise _bad(manifest, "fusion.weights", "an object of stage name -> number >= 0", weights)
    files = data.get("files")
    if files is None:
        return
    if not isinstance(files, dict):
        raise _bad(manifest, "'files'", "an object of path -> {sha256, bytes}", files)
    for rel, rec in files.items():
        where = f"files[{rel!r}]"
        inside(manifest.parent, rel, field=where, manifest=manifest)
        if not isinstance(rec, dict) or "sha256" not in rec or "bytes" not in rec:
            raise _bad(manifest, where, "an object with 'sha256' and 'bytes'", rec)
        if not isinstance(rec["sha256"], str) or not _SHA256.fullmatch(rec["sha256"]):
            raise _bad(manifest, f"{where}.sha256", "64 lowercase hex digits", rec["sha256"])
        _int(rec, "bytes", manifest, field=f"{where}.bytes")


def validate_stage_manifest(data: Mapping[str, Any], manifest: Path) -> None:
    """Check the types of a stage (index) manifest's fields.

    Raises:
        CorruptIndexError: naming the first wrong field and ``manifest``.
    """
    _str(data, "format", manifest)
    _int(data, "format_version", manifest)
    _int(data, "count", manifest)
    if not isinstance(data["params"], dict):
        raise _bad(manifest, "'params'", "an object", data["params"])
    dim = data.get("dim")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise _bad(manifest, "'dim'", "an integer >= 1 or null", dim)
    validate_embedder_record(data.get("embedder"), field="'embedder'", manifest=manifest)


__all__ = [
    "MANIFEST",
    "atomic_directory",
    "file_digests",
    "inside",
    "live_directory",
    "read_manifest",
    "validate_collection_manifest",
    "validate_embedder_record",
    "validate_stage_manifest",
    "verify_files",
    "write_manifest",
]
