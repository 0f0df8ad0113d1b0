"""Collection directories as generations behind an atomically replaced pointer.

::

    DIR/CURRENT        "gen-000007": the live generation (replaced atomically)
    DIR/.lock          flock-ed by the one process writing DIR; holds its pid and host
    DIR/gen-000006/    the previous generation, kept for readers still reading it
    DIR/gen-000007/    the live one: manifest.json, docstore.sqlite, stages/..., WRITER, COMPLETE

A writer takes the lock, writes ``gen-N+1`` completely (every file and folder
fsynced), marks it ``COMPLETE``, points ``CURRENT`` at it (temporary file, fsync,
``os.replace``, fsync of DIR) and removes the generations older than the previous
one. A reader resolves ``CURRENT`` once and reads only that generation. So DIR holds a
loadable collection at every instant, and a killed writer leaves at worst an
unfinished ``gen-*`` folder (or a ``CURRENT.tmp-*`` file), removed by the next save or
load that can take the lock, i.e. when no writer is running.

Directories written before generations existed (``manifest.json`` directly in DIR)
still load: :func:`live_directory` returns DIR itself when there is no ``CURRENT``; the
next save converts them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import CorruptIndexError, IndexBusyError, IndexFormatError, IndexWriteError

try:  # POSIX; elsewhere writers run unlocked (logged), see _lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # absent module: locking is skipped

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
LOCK = ".lock"
WRITER = "WRITER"
COMPLETE = "COMPLETE"
#: Files of the flat layout that a conversion to generations removes once CURRENT is live.
LEGACY_ENTRIES = ("manifest.json", "docstore.sqlite", "docstore.sqlite-journal", "stages")

_GEN = re.compile(r"gen-(\d{6,})")
_TMP_CURRENT = re.compile(re.escape(CURRENT) + r"\.tmp-\d+")
_UNLOCKED = -1  # _lock's answer when the filesystem cannot lock


def _gen_name(number: int) -> str:
    return f"gen-{number:06d}"


def _gen_number(name: str) -> int | None:
    m = _GEN.fullmatch(name)
    return int(m.group(1)) if m else None


def resolve(path: str | os.PathLike[str]) -> tuple[str | None, Path]:
    """``(generation name or None, folder holding the live manifest)`` of a collection directory.

    ``CURRENT`` is read once, so the folder returned is one consistent generation.

    Raises:
        CorruptIndexError: ``CURRENT`` is unreadable, names no generation, or names a
            generation folder that does not exist.
    """
    path = Path(path)
    pointer = path / CURRENT
    try:
        raw = pointer.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, path  # the flat layout, or not an index at all (read_manifest says which)
    except OSError as exc:
        raise CorruptIndexError(
            f"{pointer} cannot be read ({exc.strerror or exc}); check the permissions of {path}."
        ) from exc
    name = raw.decode("ascii", "replace").strip()
    if _gen_number(name) is None:
        raise CorruptIndexError(
            f"{pointer} holds {raw[:40]!r}, not the name of a generation folder (gen-NNNNNN); "
            "the file was edited or damaged. Rebuild the index with `relevo index build --overwrite`."
        )
    live = path / name
    if not live.is_dir():
        raise CorruptIndexError(
            f"{pointer} names {name}, but {live} does not exist; the directory was damaged or "
            "partly copied. Rebuild the index with `relevo index build --overwrite`."
        )
    return name, live


def live_directory(path: str | os.PathLike[str]) -> Path:
    """The folder holding the live ``manifest.json`` of collection directory ``path``.

    ``path/gen-NNNNNN`` as ``path/CURRENT`` names it, or ``path`` itself for the flat
    layout written before generations. Every reader of files inside a collection
    directory goes through this.
    """
    return resolve(path)[1]


def current_generation(path: str | os.PathLike[str]) -> str | None:
    """The generation ``CURRENT`` names, ``None`` without one (or when it is unreadable)."""
    try:
        return resolve(path)[0]
    except IndexFormatError:
        return None


def _is_ours(folder: Path) -> bool:
    """A ``gen-*`` folder relevo wrote: it has our marker, or it is empty (killed before the marker)."""
    try:
        return (folder / WRITER).is_file() or (folder.is_dir() and not any(folder.iterdir()))
    except OSError:
        return False


def own_entries(directory: Path) -> set[str]:
    """Names in ``directory`` that the generation layout made (lock, pointer, ``gen-*`` folders)."""
    out = set()
    with contextlib.suppress(OSError):
        for p in directory.iterdir():
            name = p.name
            if (
                name in (LOCK, CURRENT)
                or _TMP_CURRENT.fullmatch(name)
                or (_gen_number(name) is not None and _is_ours(p))
            ):
                out.add(name)
    return out


def _generations(directory: Path) -> list[tuple[int, Path]]:
    out = []
    with contextlib.suppress(OSError):
        for p in directory.iterdir():
            n = _gen_number(p.name)
            if n is not None and p.is_dir():
                out.append((n, p))
    return sorted(out)


# -- durability ---------------------------------------------------------------------------
def _fsync(path: Path, *, directory: bool = False) -> None:
    if directory and os.name == "nt":  # pragma: no cover - Windows cannot open folders
        return
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems refuse fsync on folders; the data files were synced already.
        if not (directory and exc.errno in (errno.EINVAL, errno.EBADF, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (children first), then ``root``."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            _fsync(Path(dirpath) / name)
        _fsync(Path(dirpath), directory=True)


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _point_current(directory: Path, name: str) -> None:
    """Make ``CURRENT`` name ``name`` atomically and durably."""
    tmp = directory / f"{CURRENT}.tmp-{os.getpid()}"
    _write_durable(tmp, name + "\n")
    os.replace(tmp, directory / CURRENT)
    _fsync(directory, directory=True)


def _writer_record() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _writer_gone(folder: Path) -> bool:
    """The ``WRITER`` of ``folder`` was a process on this host that no longer runs."""
    try:
        rec = json.loads((folder / WRITER).read_text("utf-8"))
        pid, host = int(rec["pid"]), rec["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


# -- the writer lock ----------------------------------------------------------------------
def _lock(directory: Path, *, wait: bool, create: bool = True) -> int | None:
    """Take the exclusive lock on ``directory/.lock``.

    Returns the descriptor; ``None`` when another holder has it and ``wait`` is false
    (or the lock file is absent and ``create`` is false); ``_UNLOCKED`` when the
    filesystem cannot lock. Handles a lock file unlinked between ``open`` and ``flock``
    (a failed first write removes its folder) by opening it again.
    """
    path = directory / LOCK
    if fcntl is None:  # pragma: no cover - Windows
        return _UNLOCKED
    while True:
        try:
            fd = os.open(
                path, os.O_RDWR | (os.O_CREAT if create else 0) | getattr(os, "O_CLOEXEC", 0), 0o644
            )
        except FileNotFoundError:
            if not create:
                return None
            directory.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                log.warning(
                    "%s: the filesystem does not support file locks (%s); writing without one, so "
                    "two writers at once are not detected",
                    directory,
                    exc.strerror,
                )
                return _UNLOCKED
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file that was unlinked meanwhile: lock the new one


def _unlock(fd: int | None) -> None:
    if fd is not None and fd != _UNLOCKED:
        os.close(fd)  # closing the descriptor releases the flock


def _holder(directory: Path) -> str:
    try:
        rec = json.loads((directory / LOCK).read_text("utf-8"))
        return f"pid {rec['pid']} on host {rec['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# -- readers ------------------------------------------------------------------------------
@contextlib.contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[tuple[str | None, Path]]:
    """Resolve ``CURRENT`` once and hold the live generation against removal while reading it.

    Yields ``(generation name or None, folder)`` like :func:`resolve`. The reader holds a
    shared lock on the generation's ``WRITER`` file; writers and clean-ups skip a
    generation someone reads (it is removed by a later save or load). A generation removed
    before the lock was taken shows as missing files: the caller retries.
    """
    generation, live = resolve(path)
    fd = None
    if generation is not None and fcntl is not None:
        try:
            fd = os.open(live / WRITER, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:  # removed meanwhile, or no locks here: read without it
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield generation, live
    finally:
        if fd is not None:
            os.close(fd)


def _in_use(folder: Path) -> int | None:
    """Lock ``folder`` exclusively for removal; ``None`` when a reader holds it (or it is gone)."""
    if fcntl is None:  # pragma: no cover - Windows
        return _UNLOCKED
    try:
        fd = os.open(folder / WRITER, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return _UNLOCKED  # an empty folder of ours (killed before its marker): nobody reads it
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        pass  # no locks on this filesystem: remove as before
    return fd


# -- clean-up -----------------------------------------------------------------------------
def _remove_generation(folder: Path) -> bool:
    """Remove a generation folder of ours unless a reader is reading it."""
    fd = _in_use(folder)
    if fd is None:
        log.info("keeping %s for now: a reader is reading it", folder)
        return False
    try:
        _remove(folder)
    finally:
        _unlock(fd)
    return True


def _remove(entry: Path) -> None:
    log.info("removing %s (left by an interrupted or superseded write)", entry)
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def _sweep(directory: Path, *, locked: bool) -> list[str]:
    """Remove our stray generations and pointer temporaries; see :func:`remove_strays`."""
    try:
        current, _ = resolve(directory)
    except IndexFormatError:
        return []  # never guess what is live
    gens = _generations(directory)
    cur_n = _gen_number(current) if current else None
    previous = None
    if cur_n is not None:
        older = [n for n, p in gens if n < cur_n and (p / COMPLETE).is_file()]
        previous = max(older) if older else None
    removed = []
    for n, p in gens:
        if n in (cur_n, previous) or not _is_ours(p):
            continue
        unfinished = cur_n is None or n > cur_n
        if unfinished and not (locked or _writer_gone(p)):
            continue  # perhaps a writer is still at it
        if _remove_generation(p):
            removed.append(p.name)
    with contextlib.suppress(OSError):
        for p in directory.iterdir():
            if _TMP_CURRENT.fullmatch(p.name) and locked:
                _remove(p)
                removed.append(p.name)
    return removed


def remove_strays(directory: str | os.PathLike[str]) -> list[str]:
    """Remove what killed writers left in a collection directory; returns the names removed.

    Only when the writer lock is free (no writer runs) and only folders that are
    provably ours (``gen-*`` with our ``WRITER`` marker, or empty): unfinished
    generations newer than ``CURRENT``, generations older than the previous one, and
    ``CURRENT.tmp-*`` files. The live and the previous generation are never touched.
    Best effort: it never raises, and it creates no lock file in a folder that has none.
    """
    directory = Path(directory)
    try:
        fd = _lock(directory, wait=False, create=False)
    except OSError:
        return []
    if fd is None:
        return []
    try:
        return _sweep(directory, locked=fd != _UNLOCKED)
    except OSError as exc:  # pragma: no cover - best effort
        log.debug("clean-up of %s stopped: %s", directory, exc)
        return []
    finally:
        _unlock(fd)


# -- the writer ---------------------------------------------------------------------------
def _write_error(target: Path, exc: OSError, doing: str) -> IndexWriteError:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return IndexWriteError(
        f"cannot {doing} {target}: {exc.strerror or exc}{where}. Check that the path is a "
        "writable folder with free space, or choose another output directory; the previous "
        "index there (if any) is unchanged."
    )


@contextlib.contextmanager
def write_generation(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    check: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Yield a new, empty generation folder of ``target``; it goes live only on success.

    Takes the writer lock (waits for it with ``overwrite``, refuses otherwise), runs
    ``check(target)`` under it, removes strays, then yields ``target/gen-N+1``. After the
    body returns, every file is fsynced, ``COMPLETE`` written, ``CURRENT`` swapped, and
    generations older than the previous one removed (as is the flat layout's payload, once
    the new generation is live). On an exception the new folder is removed, ``CURRENT`` is
    untouched, and a folder this call created is removed again.

    Raises:
        IndexBusyError: another writer holds the lock and ``overwrite`` is false.
        IndexWriteError: an OS error while creating or writing (names the reason).
    """
    target = Path(target).absolute()
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd = _lock(target, wait=False)
        if fd is None:
            if not overwrite:
                raise IndexBusyError(
                    f"{target} is being written by {_holder(target)}; wait for it to finish, then "
                    "pass overwrite=True (CLI: --overwrite) to replace its index, or choose another "
                    "output directory. Nothing was written."
                )
            log.info("waiting for %s to finish writing %s", _holder(target), target)
            fd = _lock(target, wait=True)
    except OSError as exc:
        raise _write_error(target, exc, "create the index directory") from exc
    gen: Path | None = None
    committed = False
    try:
        if fd is not None and fd != _UNLOCKED:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_writer_record()).encode(), 0)
        if check is not None:
            check(target)
        _sweep(target, locked=fd != _UNLOCKED)
        current = current_generation(target)
        was_flat = current is None and (target / "manifest.json").is_file()
        numbers = [n for n, _ in _generations(target)]
        gen = target / _gen_name(max(numbers, default=0) + 1)
        gen.mkdir()
        _write_durable(gen / WRITER, json.dumps(_writer_record()) + "\n")
        yield gen
        fsync_tree(gen)
        _write_durable(gen / COMPLETE, "")
        _fsync(gen, directory=True)
        _point_current(target, gen.name)
        committed = True
        _prune(target, keep={gen.name, *([current] if current else [])}, flat=was_flat)
    except OSError as exc:
        if isinstance(exc, IndexFormatError):
            raise
        raise _write_error(target, exc, "write the index directory") from exc
    finally:
        if not committed:
            if gen is not None:
                shutil.rmtree(gen, ignore_errors=True)
            if created and fd != _UNLOCKED:
                # Nothing of ours is live: leave no empty folder behind (still locked, so
                # a writer waiting on this lock file notices it was unlinked).
                with contextlib.suppress(OSError):
                    if {p.name for p in target.iterdir()} <= {LOCK}:
                        (target / LOCK).unlink()
                        target.rmdir()
        _unlock(fd)


def _prune(target: Path, *, keep: set[str], flat: bool) -> None:
    """After a commit: drop our generations except ``keep``, and a converted flat layout."""
    for _n, p in _generations(target):
        if p.name not in keep and _is_ours(p):
            _remove_generation(p)
    if flat:
        for name in LEGACY_ENTRIES:
            if (target / name).exists():
                _remove(target / name)


__all__ = [
    "COMPLETE",
    "CURRENT",
    "LOCK",
    "WRITER",
    "current_generation",
    "fsync_tree",
    "live_directory",
    "own_entries",
    "reading",
    "remove_strays",
    "resolve",
    "write_generation",
]
