"""`radiogenomics synth OUT --patients N --seed S`: write a synthetic head-and-neck cohort."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.console import Console

from radiogenomics.errors import InputError
from radiogenomics.outputs import output_dir


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def synth(
    out: Path = typer.Argument(..., help="Output cohort folder (created; must be empty unless --overwrite)."),
    patients: int = typer.Option(200, "--patients", help="Number of synthetic patients (>= 1)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (>= 0); the same seed gives the same cohort."),
    grid_size: str = typer.Option("64", "--grid-size",
                                  help="Voxels per image axis (16-512), or X,Y,Z voxels (e.g. 512,512,150); without "
                                       "--spacing-mm the field of view stays 128x128x160 mm."),
    spacing_mm: str = typer.Option("", "--spacing-mm",
                                   help="Voxel spacing X,Y,Z in mm (e.g. 0.98,0.98,3.0, anisotropic clinical CT); "
                                        "the field of view is then grid size x spacing, the patient the same."),
    workers: int = typer.Option(_default_workers(), "--workers", help="Worker processes (default: min(2, CPUs))."),
    mid_treatment_fraction: int = typer.Option(0, "--mid-treatment-fraction", metavar="K",
                                               help="Also write FDG and FMISO PET after K delivered fractions "
                                                    "(images.csv timepoint fraction_K; 0 = off, the default)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the generator's files (tables, cohort.yaml, images/) in a "
                                        "non-empty OUT."),
) -> None:
    """Write a synthetic head-and-neck cohort (format v1) plus truth.csv, the latent ground truth.

    Each patient gets CT, FDG PET, FMISO PET, a dose grid, an ROI label map, gene expression and outcomes.

    Deterministic by --seed whatever --workers. The model and its sources: docs/synthetic-cohort.md.

    Example: radiogenomics synth cohort --patients 200 --seed 0

    Clinical size: radiogenomics synth big --patients 2 --grid-size 512,512,150 --spacing-mm 0.98,0.98,3.0

    Mid-treatment PET (week 2): radiogenomics synth adaptive --patients 20 --mid-treatment-fraction 10
    """
    from radiogenomics.cli.console import out as console
    from radiogenomics.cli.console import progress_bar
    from radiogenomics.synthetic import generate_cohort
    from radiogenomics.synthetic.generate import _check_args, _check_out_dir, check_mid_treatment_fraction
    from radiogenomics.synthetic.model import SynthParameters

    if patients < 1:
        raise InputError(f"--patients must be >= 1 (got {patients}).")
    if seed < 0:
        raise InputError(f"--seed must be >= 0 (got {seed}).")
    if workers < 1:
        raise InputError(f"--workers must be >= 1 (got {workers}).")
    # every refusal before anything is created: no empty folder is left behind
    _check_args(patients, seed, grid_size, workers, spacing_mm or None)
    if mid_treatment_fraction < 0:
        raise InputError(f"--mid-treatment-fraction must be >= 1, or 0 for none (got {mid_treatment_fraction}).")
    mid = mid_treatment_fraction or None
    check_mid_treatment_fraction(mid, SynthParameters())
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("OUT exists and is not empty.", file=str(out),
                         fix="choose a new folder, or pass --overwrite to replace the cohort in it.")
    _check_out_dir(out, overwrite)
    output_dir(out, "cohort folder", create=False)
    start = time.perf_counter()
    with progress_bar("synthesising patients") as update:
        path = generate_cohort(out, n_patients=patients, seed=seed, grid_size=grid_size, workers=workers,
                               progress=update, overwrite=overwrite, spacing_mm=spacing_mm or None,
                               mid_treatment_fraction=mid)
    seconds = time.perf_counter() - start
    _summary(path, seconds, console)


def _summary(path: Path, seconds: float, console: Console) -> None:
    import pandas as pd

    patients = pd.read_csv(path / "patients.csv")
    truth = pd.read_csv(path / "truth.csv")
    n = len(patients)
    centres = ", ".join(f"{c} {k}" for c, k in patients["center"].value_counts().sort_index().items())
    console.print(f"[bold]synthetic cohort[/bold] {path}: {n} patients in {seconds:.1f} s "
                  f"({n / max(seconds, 1e-9) * 60:.0f} patients/min)")
    console.print(f"  centres: {centres}")
    console.print(f"  HPV+ {100 * (patients['hpv'] == 'pos').mean():.0f} %, T stages "
                  + ", ".join(f"{t} {k}" for t, k in patients["t_stage"].value_counts().sort_index().items()))
    console.print(f"  local failures observed: {int(patients['lc_event'].sum())} "
                  f"({100 * patients['lc_event'].mean():.0f} %), mean true TCP {truth['tcp_true'].mean():.2f}, "
                  f"median follow-up {patients['lc_months'].median():.1f} months")
    console.print(f"  grade >= 2 xerostomia {100 * (patients['tox_xerostomia'] >= 2).mean():.0f} %, "
                  f"dysphagia {100 * (patients['tox_dysphagia'] >= 2).mean():.0f} %")
    if "mid_fraction" in truth.columns:
        k = int(truth["mid_fraction"].iloc[0])
        console.print(f"  mid-treatment PET after {k} fractions (timepoint fraction_{k}): hypoxic fraction "
                      f"{truth['hypoxic_fraction_baseline'].mean():.2f} -> {truth['hypoxic_fraction_mid'].mean():.2f}"
                      f" (mean), FDG SUV {truth['fdg_suv_mean_baseline'].mean():.1f} -> "
                      f"{truth['fdg_suv_mean_mid'].mean():.1f}")
    console.print("  tables: patients.csv, images.csv, expression.csv, dvh.csv; truth.csv is for evaluation only")
    console.print(f"  check it with: radiogenomics validate {path}", highlight=False)
