"""`radiogenomics extract COHORT --out FEATURES.parquet`: the feature pipeline from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from radiogenomics.errors import InputError


def extract(
    cohort: Path = typer.Argument(..., help="Cohort folder (patients.csv, images.csv, ...)."),
    out: Path = typer.Option(
        ..., "--out", help="Output Parquet file (data dictionary, failures.csv and summary are written beside it)."
    ),
    params: Path | None = typer.Option(
        None, "--params", help="pyradiomics YAML parameter file used for every modality (default: shipped files)."
    ),
    workers: int = typer.Option(0, "--workers", help="Local worker processes (0 = all CPU cores, 1 = in-process)."),
    dask: str | None = typer.Option(None, "--dask", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Content-addressed cache folder (default: $RADIOGENOMICS_CACHE_DIR or "
        "~/.cache/radiogenomics/features)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Compute everything; read and write no cache."),
    filters: str | None = typer.Option(
        None, "--filters", help="Radiomics filters, comma-separated: original,log,wavelet (default: as in the "
        "parameter files, Original only)."
    ),
    deep: bool = typer.Option(False, "--deep/--no-deep", help="Also compute MONAI deep features."),
    deep_checkpoint: Path | None = typer.Option(
        None, "--deep-checkpoint", help="Encoder weights (torch checkpoint) for the deep features."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with ETA."),
) -> None:
    """Extract radiomic, deep, genomic and dosimetric features into one Parquet table."""
    from radiogenomics.features.pipeline import ExtractOptions
    from radiogenomics.features.pipeline import extract as run_extract

    if not cohort.is_dir():
        raise InputError(f"cohort folder {cohort} does not exist", fix="give the path of a cohort folder")
    if params is not None and not params.is_file():
        raise InputError(f"parameter file {params} does not exist", fix="give a pyradiomics YAML file")
    if deep_checkpoint is not None:
        if not deep_checkpoint.is_file():
            raise InputError(f"checkpoint {deep_checkpoint} does not exist", fix="give a torch checkpoint file")
        deep = True
    if workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}")
    filter_names = tuple(f.strip() for f in filters.split(",") if f.strip()) if filters else None
    options = ExtractOptions(params=params, filters=filter_names, workers=workers, dask_address=dask,
                             cache_dir=cache_dir, use_cache=not no_cache, deep=deep,
                             deep_checkpoint=deep_checkpoint, progress=progress)
    summary = run_extract(cohort, out, options)
    typer.echo(summary.one_line())
    if summary.failed:
        typer.echo(f"{summary.failed} item(s) failed for patient(s) {', '.join(summary.failed_patients)}; "
                   f"reasons in {summary.failures}", err=True)
