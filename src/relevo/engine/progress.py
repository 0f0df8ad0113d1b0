"""Progress reporting for long work: a rich bar on a terminal, status lines or nothing elsewhere.

The library only reports progress when asked (``Engine(progress=True)``, which the CLI
sets on a terminal); it never configures logging or prints otherwise.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol


class Advance(Protocol):
    """``advance(n=1, **fields)``: ``n`` more items done; ``fields`` update extra columns (``loss="0.91"``)."""

    def __call__(self, n: int = 1, **fields: Any) -> None: ...


class _LineReporter:
    """Status lines on stderr every ``every`` items (for logs and non-terminal runs)."""

    def __init__(self, total: int, description: str, completed: int, every: int) -> None:
        self.total, self.description, self.every = total, description, every
        self.start = self.done = completed
        self.t0 = time.perf_counter()
        self.fields: dict[str, Any] = {}

    def __call__(self, n: int = 1, **fields: Any) -> None:
        before = self.done
        self.done += n
        self.fields.update(fields)
        crossed = self.done // self.every != before // self.every
        if crossed or self.done >= self.total or before == self.start:
            elapsed = time.perf_counter() - self.t0
            rate = elapsed / max(self.done - self.start, 1)
            eta = rate * max(self.total - self.done, 0)
            extra = "".join(f"  {k} {v}" for k, v in self.fields.items())
            sys.stderr.write(
                f"{self.description} {self.done}/{self.total}{extra}  {elapsed:.0f}s, eta {eta:.0f}s\n"
            )
            sys.stderr.flush()


@contextlib.contextmanager
def progress_bar(
    total: int,
    description: str,
    *,
    enabled: bool,
    completed: int = 0,
    fields: Sequence[str] = (),
    log_every: int = 0,
) -> Iterator[Advance]:
    """Yield ``advance(n=1, **fields)`` for ``total`` items, ``completed`` of them already done.

    Args:
        total: items in all.
        description: the text before the bar.
        enabled: draw a rich bar on stderr (when rich is installed).
        completed: items done before (a resumed run).
        fields: names of extra columns shown after the counts (``("loss",)``);
            ``advance(loss="0.91")`` updates them.
        log_every: when no bar is drawn, write a status line to stderr every this many
            items (0: stay silent).
    """
    bar = _rich_bar(total, description, completed, fields) if enabled and total > 0 else None
    if bar is not None:
        with bar as (progress, task):

            def advance(n: int = 1, **values: Any) -> None:
                progress.update(task, advance=n, **values)

            yield advance
        return
    if log_every > 0 and total > 0:
        yield _LineReporter(total, description, completed, log_every)
        return

    def nothing(n: int = 1, **values: Any) -> None:
        return None

    yield nothing


@contextlib.contextmanager
def _rich_bar_cm(
    total: int, description: str, completed: int, fields: Sequence[str]
) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        blank: dict[str, Any] = dict.fromkeys(fields, "")
        task = progress.add_task(description, total=total, completed=completed, **blank)
        yield progress, task


def _rich_bar(total: int, description: str, completed: int, fields: Sequence[str]) -> Any:
    try:
        import rich.progress  # noqa: F401 - only to know whether a bar can be drawn
    except ImportError:
        return None
    return _rich_bar_cm(total, description, completed, fields)


__all__ = ["Advance", "progress_bar"]
