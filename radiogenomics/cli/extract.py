"""`radiogenomics extract COHORT --out FEATURES.parquet`: the feature pipeline from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from radiogenomics.errors import InputError


def extract(
    cohort: Path = typer.Argument(..., help="Cohort folder (patients.csv, images.csv, ...)."),
    out: Path = typer.Option(..., "--out", help="Output Parquet file (a data dictionary is written beside it)."),
    params: Path | None = typer.Option(
        None, "--params", help="pyradiomics YAML parameter file used for every modality (default: shipped files)."
    ),
    workers: int = typer.Option(0, "--workers", help="Local worker processes (0 = number of CPU cores)."),
    dask: str | None = typer.Option(None, "--dask", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Content-addressed cache folder (default: <out>.cache beside the output)."
    ),
    deep: bool = typer.Option(False, "--deep/--no-deep", help="Also compute MONAI deep features."),
) -> None:
    """Extract radiomic, deep, genomic and dosimetric features into one Parquet table."""
    raise InputError("feature extraction is not implemented yet")
