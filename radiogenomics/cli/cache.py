"""`radiogenomics cache prune`: keep the content-addressed feature cache within an age and a size."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

cache_app = typer.Typer(help="Manage the content-addressed feature cache.", no_args_is_help=True)

#: --max-size is in decimal gigabytes (1 GB = 10^9 bytes).
BYTES_PER_GB = 1e9


def _size(n_bytes: float) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.1f} {unit}"
    return f"{int(n_bytes)} B"


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


@cache_app.command("prune")
def prune(
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Cache folder (default: as extract, $RADIOGENOMICS_CACHE_DIR or "
        "~/.cache/radiogenomics/features)."
    ),
    older_than: float | None = typer.Option(
        None, "--older-than", help="Remove entries last used more than DAYS days ago.", metavar="DAYS"
    ),
    max_size: float | None = typer.Option(
        None, "--max-size", help="Then remove the least recently used entries until the cache holds at most "
        "GB gigabytes (10^9 bytes).", metavar="GB"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
) -> None:
    """Remove old entries, then the least recently used ones until the cache is under a size."""
    from radiogenomics.features.cache import prune as prune_cache
    from radiogenomics.features.pipeline import default_cache_dir

    for name, value in (("--older-than", older_than), ("--max-size", max_size)):
        if value is not None and not value >= 0:  # also rejects NaN
            raise InputError(f"{name} must be a number >= 0, got {value}", fix=f"give {name} 0 or more")
    root = Path(cache_dir or default_cache_dir())
    if root.exists() and not root.is_dir():
        raise InputError(f"the cache folder {root} is a file.", file=str(root), fix="give --cache-dir a folder.")
    if not root.exists():
        typer.echo(f"cache {root} does not exist: nothing to prune")
        return
    if older_than is None and max_size is None:
        log.info("cache prune: neither --older-than nor --max-size given; only stale temporary files go")
    now = time.time()
    report = prune_cache(root, older_than_days=older_than,
                         max_size_bytes=None if max_size is None else int(max_size * BYTES_PER_GB),
                         dry_run=dry_run, now=now)
    verb = "would remove" if dry_run else "removed"
    for entry in report.removed:
        age_days = (now - entry.last_used) / 86400.0
        typer.echo(f"{verb} {entry.path.relative_to(root)} ({_size(entry.size_bytes)}, last used "
                   f"{age_days:.1f} days ago)")
    typer.echo(f"cache {root}: {_entries(report.n_before)}, {_size(report.size_before_bytes)} -> "
               f"{_entries(report.n_after)}, {_size(report.size_after_bytes)}"
               + (" (dry run: nothing removed)" if dry_run else ""))
