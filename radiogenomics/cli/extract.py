"""`radiogenomics extract COHORT --out FEATURES.parquet`: the feature pipeline from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from radiogenomics.errors import InputError
from radiogenomics.outputs import output_file


def extract(
    cohort: Path = typer.Argument(..., help="Cohort folder (patients.csv, images.csv, ...)."),
    out: Path = typer.Option(
        ..., "--out", help="Output Parquet file (<stem>.dictionary.csv, <stem>.failures.csv, "
        "<stem>.summary.json and the run's log <stem>.log are written beside it)."
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
    rsi_gene_map: list[str] | None = typer.Option(
        None, "--rsi-gene-map", metavar="SLOT=GENE", help="Read an RSI slot from another expression column, e.g. "
        "CDK1=PAK2 (the authors' probe for CDK1). Repeatable or comma-separated; overrides cohort.yaml's "
        "rsi_gene_map slot by slot."
    ),
    schema_from: Path | None = typer.Option(
        None, "--schema-from", help="Reference feature table (Parquet written by extract): reuse its extraction "
        "parameters and write exactly its columns, in its order (missing -> NaN, availability 0; extra dropped)."
    ),
) -> None:
    """Extract radiomic, deep, genomic and dosimetric features into one Parquet table."""
    from radiogenomics.cli.logs import run_log
    from radiogenomics.cohort.rsi_gene_map import parse_gene_map_args
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
    gene_map = parse_gene_map_args(rsi_gene_map) if rsi_gene_map else None
    options = ExtractOptions(params=params, filters=filter_names, workers=workers, dask_address=dask,
                             cache_dir=cache_dir, use_cache=not no_cache, deep=deep,
                             deep_checkpoint=deep_checkpoint, progress=progress,
                             schema_from=schema_from, rsi_gene_map=gene_map)
    log_path = None
    if out.suffix == ".parquet":  # else the pipeline refuses the path
        log_path = output_file(out.resolve(), "feature table").with_suffix(".log")
    with run_log(log_path):
        summary = run_extract(cohort, out, options)
    typer.echo(summary.one_line())
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if summary.failed:
        typer.echo(f"{summary.failed} item(s) failed for patient(s) {', '.join(summary.failed_patients)}; "
                   f"reasons in {summary.failures}", err=True)
