"""`radiogenomics demo`: the whole product, as far as this release goes, on a synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import typer

from radiogenomics.cli.console import out, progress_bar


def demo(
    out_dir: Path = typer.Option(Path("demo"), "--out", help="Folder for the demo cohort and its outputs."),
    patients: int = typer.Option(40, "--patients", help="Number of synthetic patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    grid_size: int = typer.Option(64, "--grid-size", help="Voxels per axis of the synthetic images."),
) -> None:
    """Generate a synthetic head-and-neck cohort, validate it, and extract its fused feature table.

    Example: radiogenomics demo --out demo --patients 20
    """
    from radiogenomics.cohort import validate_cohort
    from radiogenomics.errors import InputError
    from radiogenomics.synthetic import generate_cohort

    if patients < 1:
        raise InputError(f"--patients must be >= 1 (got {patients}).")
    cohort = out_dir / "cohort"
    steps: list[str] = []
    if cohort.exists() and (cohort / "patients.csv").exists():
        out.print(f"[1/3] reusing the synthetic cohort in {cohort}")
        steps.append(f"reused synthetic cohort {cohort}")
    else:
        with progress_bar("synthesising patients") as update:
            generate_cohort(cohort, n_patients=patients, seed=seed, grid_size=grid_size, workers=2,
                            progress=update)
        steps.append(f"synthesised {patients} patients (seed {seed}, {grid_size}^3 voxels) into {cohort}")
    with progress_bar("validating") as update:
        report = validate_cohort(cohort, progress=update)
    steps.append(f"validated: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    if not report.ok:
        raise InputError(f"the demo cohort failed validation: {report.errors[0].one_line()}")
    from radiogenomics.features.pipeline import ExtractOptions, extract

    summary = extract(cohort, out_dir / "features.parquet", ExtractOptions(workers=2))
    steps.append(f"extracted features: {summary.one_line()}")
    out.print("[bold]demo done:[/bold]")
    for i, step in enumerate(steps, start=1):
        out.print(f"  {i}. {step}")
    out.print("Not in this release yet: train, predict, serve (models, registry and serving land next).")
