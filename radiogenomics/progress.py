"""The one progress bar every slow job uses (rich, on stderr, with count, elapsed time and ETA).

It is drawn only when stderr is a terminal, so scripts, CI and the CLI's one-line error contract see a
clean stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ProgressUpdate = Callable[..., None]


@contextmanager
def progress_bar(description: str, *, enabled: bool = True) -> Iterator[ProgressUpdate]:
    """Yield `update(done, total, note="")`; a no-op when disabled or when stderr is not a terminal."""
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console, transient=False,
                  disable=not (enabled and console.is_terminal)) as bar:
        task = bar.add_task(description, total=None, note="")

        def update(done: int, total: int, note: str = "") -> None:
            bar.update(task, completed=done, total=total, note=note)

        yield update
