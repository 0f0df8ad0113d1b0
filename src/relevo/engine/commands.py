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
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from .errors import DatasetError, RelevoError
from .progress import Advance, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

ENV_DATASETS = "RELEVO_DATASETS"

_F = TypeVar("_F", bound=Callable[..., Any])


class TrainingStep(Protocol):
    """What a trainer's ``on_step`` callback receives (e.g. :class:`relevo.training.checkpoints.StepInfo`)."""

    @property
    def step(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def loss(self) -> float: ...
    @property
    def lr(self) -> float: ...


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


def parse_options(pairs: Sequence[str], *, param_hint: str = "--miner-option") -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict: values parsed as JSON where they are, else kept as strings.

    Raises:
        click.BadParameter: a pair without ``=`` or without a key.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint=param_hint)
        try:
            out[key] = json.loads(value)
        except (ValueError, RecursionError):  # not JSON (or a huge number, deep nesting): text
            out[key] = value
    return out


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

    A training command (``relevo train ...``) adds the options every trainer shares
    and reports its steps on a bar::

            @group.command("mymodel")
            @click.argument("datasets", nargs=-1, required=True)
            @helpers.training_options(MyConfig(datasets=[], out=""))
            def mymodel(datasets, resume, overwrite, **opts):
                with helpers.training_progress() as on_step:
                    train(MyConfig(datasets=datasets, **opts), on_step=on_step)
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

    @contextlib.contextmanager
    def training_progress(
        self, description: str = "training", *, log_every: int = 10, show_lr: bool = True
    ) -> Iterator[Callable[[TrainingStep], None]]:
        """An ``on_step(info)`` callback for a trainer that draws its steps on a progress bar.

        The bar starts at the first step, when the total and the resume point
        (``info.total``, ``info.start``) are known; it shows the mean loss of the last
        10 steps and, with ``show_lr``, the learning rate. Off a terminal a status line
        is printed every ``log_every`` steps. The bar is closed when the block exits.
        """
        fields = ("loss", "lr") if show_lr else ("loss",)
        with contextlib.ExitStack() as stack:
            bar: list[Advance] = []
            recent: list[float] = []

            def on_step(info: TrainingStep) -> None:
                if not bar:
                    bar.append(
                        stack.enter_context(
                            self.progress(
                                info.total,
                                description,
                                completed=info.start,
                                fields=fields,
                                log_every=log_every,
                            )
                        )
                    )
                recent[:] = (recent + [info.loss])[-10:]
                shown = {"loss": f"{sum(recent) / len(recent):.4f}"}
                if show_lr:
                    shown["lr"] = f"{info.lr:.2e}"
                bar[0](1, **shown)

            yield on_step

    def training_options(self, defaults: Any, *, model: str = "model") -> Callable[[_F], _F]:
        """A decorator adding the click options every ``relevo train`` command shares.

        ``--out`` (required folder), ``--max-steps``, ``--epochs``, ``--lr``,
        ``--warmup-ratio``, ``--split``, ``--checkpoint-every``, ``--resume``,
        ``--overwrite``, ``--seed`` and ``--device``. The defaults come from
        ``defaults``, an instance of the command's config dataclass (attributes
        ``max_steps``, ``epochs``, ``lr``, ``warmup_ratio``, ``split``,
        ``checkpoint_every``, ``seed``, ``device``); ``model`` names the trained thing
        in ``--overwrite``'s help. The command receives them as keyword arguments of
        the same names (``out``, ``max_steps``, ..., ``resume``, ``overwrite``).
        """
        positive_float = click.FloatRange(min=0, min_open=True)
        options = [
            click.option(
                "--out",
                "out",
                required=True,
                type=click.Path(file_okay=False, path_type=Path),
                help="Folder for the trained model (and its checkpoint while training).",
            ),
            click.option(
                "--max-steps",
                type=click.IntRange(min=1),
                default=defaults.max_steps,
                help="Optimizer steps (overrides --epochs).",
            ),
            click.option(
                "--epochs",
                type=click.IntRange(min=1),
                default=defaults.epochs,
                show_default=True,
            ),
            click.option("--lr", type=positive_float, default=defaults.lr, show_default=True),
            click.option(
                "--warmup-ratio",
                type=click.FloatRange(0, 1, max_open=True),
                default=defaults.warmup_ratio,
                show_default=True,
            ),
            click.option(
                "--split",
                default=defaults.split,
                show_default=True,
                help="qrels split to train on.",
            ),
            click.option(
                "--checkpoint-every",
                type=click.IntRange(min=0),
                default=defaults.checkpoint_every,
                show_default=True,
                help="Steps between checkpoints in OUT/checkpoint (0: none).",
            ),
            click.option(
                "--resume",
                is_flag=True,
                help="Continue from OUT/checkpoint with the same settings.",
            ),
            click.option(
                "--overwrite",
                is_flag=True,
                help=f"Replace a finished {model} or an unfinished checkpoint in OUT.",
            ),
            click.option("--seed", type=int, default=defaults.seed, show_default=True),
            click.option(
                "--device",
                default=defaults.device,
                show_default=True,
                help="auto, cpu, cuda, cuda:N or mps.",
            ),
        ]

        def decorate(f: _F) -> _F:
            for option in reversed(options):  # click lists them in the order above
                f = option(f)
            return f

        return decorate

    def parse_options(
        self, pairs: Sequence[str], *, param_hint: str = "--miner-option"
    ) -> dict[str, Any]:
        """``KEY=VALUE`` strings (a ``multiple=True`` option) as a dict; JSON values, else strings.

        Raises:
            click.BadParameter: a pair without ``=`` or without a key.
        """
        return parse_options(pairs, param_hint=param_hint)

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
    "TrainingStep",
    "datasets_dir",
    "find_dataset",
    "invocation_engine",
    "is_tty",
    "parse_options",
]
