"""Shared rich console objects of the CLI, the one-line error writer and the progress bar."""

from __future__ import annotations

import typer
from rich.console import Console

from radiogenomics.progress import progress_bar

out = Console()

__all__ = ["fail_line", "out", "progress_bar"]


def fail_line(message: str) -> None:
    """Write `error: message` as exactly one line on stderr (the contract's one-line reason)."""
    typer.echo("error: " + " ".join(message.split()), err=True)
