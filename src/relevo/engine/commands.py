"""The public surface for CLI commands, bundled or third-party.

``register_commands(cli, helpers)`` hands every plugin a :class:`CommandHelpers`;
the bundled commands use the same object, so a plugin command behaves like a
built-in one: relevo's errors become one-line messages (no traceback), it shares the
invocation's :class:`~relevo.Engine` (same plugins, cache and progress setting),
shows a progress bar on a terminal and finds datasets by name.

Plugins must use this module, never private names of :mod:`relevo.engine.cli`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import DatasetError, RelevoError
from .progress import Advance, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

ENV_DATASETS = "RELEVO_DATASETS"


class RelevoGroup(click.Group):
    """A click group that turns relevo's own errors into clean one-line CLI errors (no traceback).

    Use it as ``cls=`` for any group a plugin adds (:meth:`CommandHelpers.group` does).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RelevoError as exc:
            raise click.ClickException(str(exc)) from exc


def is_tty() -> bool:
    """Whether stderr is a terminal (progress bars are drawn there only then)."""
    return sys.stderr.isatty()


def datasets_dir() -> Path | None:
    """``RELEVO_DATASETS``, else a ``shared/datasets`` folder beside or above the working directory."""
    env = os.environ.get(ENV_DATASETS)
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for base in (here, *here.parents):
        for cand in (base / "shared" / "datasets", base.parent / "shared" / "datasets"):
            if cand.is_dir():
                return cand
    return None


def find_dataset(spec: str | os.PathLike[str]) -> Path:
    """A BEIR dataset folder from a path, or a name under :func:`datasets_dir` (``scifact``).

    Raises:
        DatasetError: neither a folder nor a known dataset name.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    root = datasets_dir()
    if root is not None and (root / str(spec)).is_dir():
        return root / str(spec)
    where = (
        f" or a name under {root}"
        if root is not None
        else f" (set {ENV_DATASETS} to name datasets by folder name)"
    )
    raise DatasetError(f"dataset {str(spec)!r} not found: give a BEIR folder{where}.")


def invocation_engine(ctx: click.Context | None = None, **kwargs: Any) -> Engine:
    """The Engine of the current ``relevo`` invocation, created on first use.

    ``relevo``'s entry point creates it before plugin commands are added and keeps it
    in the root context, so every command of one invocation shares one Engine.
    """
    from .engine import Engine

    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    if "engine" not in obj:
        obj["engine"] = Engine(progress=is_tty(), **kwargs)
        root.obj = obj
    engine: Engine = obj["engine"]
    return engine


class CommandHelpers:
    """What ``register_commands`` implementations may use; one instance per CLI start.

    Example::

        @relevo.hookimpl
        def register_commands(cli, helpers):
            group = helpers.group(cli, "mine", "Mine hard negatives.")

            @group.command("static")
            @click.argument("dataset")
            def static(dataset):
                engine = helpers.engine()
                folder = helpers.find_dataset(dataset)
                with helpers.progress(100, "mining") as advance:
                    ...
    """

    #: The click group class that turns relevo errors into clean messages.
    group_class = RelevoGroup

    def engine(self) -> Engine:
        """The Engine of the running invocation (call it inside a command)."""
        return invocation_engine()

    def progress(
        self,
        total: int,
        description: str,
        *,
        completed: int = 0,
        fields: Sequence[str] = (),
        log_every: int = 0,
    ) -> contextlib.AbstractContextManager[Advance]:
        """A progress bar on a terminal; see :func:`relevo.engine.progress.progress_bar`.

        Off a terminal, ``log_every=N`` prints a status line every N steps instead.
        """
        return progress_bar(
            total,
            description,
            enabled=is_tty(),
            completed=completed,
            fields=fields,
            log_every=log_every,
        )

    def find_dataset(self, spec: str | os.PathLike[str]) -> Path:
        """A BEIR dataset folder by path or by name under ``shared/datasets`` / ``RELEVO_DATASETS``."""
        return find_dataset(spec)

    def datasets_dir(self) -> Path | None:
        """The folder datasets are looked up in by name, if there is one."""
        return datasets_dir()

    def group(self, cli: click.Group, name: str, help: str) -> click.Group:  # noqa: A002 - click's word
        """The subcommand group ``name`` of ``cli``, created (as a :class:`RelevoGroup`) if absent.

        Several plugins can add commands to one group (``relevo train reranker``,
        ``relevo train embedder``).

        Raises:
            click.UsageError: ``name`` is already a plain command, not a group.
        """
        existing = cli.commands.get(name)
        if isinstance(existing, click.Group):
            return existing
        if existing is not None:
            raise click.UsageError(f"`relevo {name}` is already a command, not a group.")
        group = RelevoGroup(name, help=help)
        cli.add_command(group)
        return group


__all__ = [
    "CommandHelpers",
    "RelevoGroup",
    "datasets_dir",
    "find_dataset",
    "invocation_engine",
    "is_tty",
]
