"""`radiogenomics plan`: each hand-off patient planned with photon IMRT on their own CT and structures (contract §7).

Writes ``PLANS/<patient_id>/plan_dose.nii.gz`` (+ RTDOSE), ``uniform_reference_dose.nii.gz`` and
``plan_evaluation.json`` (``radiogenomics.planning.run``); prints the TCP / NTCP / rails table.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from radiogenomics.cli.handoff import _patients
from radiogenomics.errors import InputError


def plan_table(result: object) -> Table:
    """One row per patient: regimen, TCP (standard uniform -> planned), worst NTCP, rails, iterations, flags."""
    table = Table(title=f"plan -> {getattr(result, 'out_dir', '')}")
    for name in ("patient", "regimen", "TCP uniform", "TCP planned", "NTCP max", "rails", "s"):
        table.add_column(name, justify="left" if name in ("patient", "regimen") else "right", no_wrap=True)
    table.add_column("flags", overflow="fold", min_width=16)
    for p in getattr(result, "plans", []):
        e = p.evaluation
        tcp = e.get("tcp") or {}
        planned = (tcp.get("planned") or {}).get("tcp")
        uniform = (tcp.get("uniform_reference") or {}).get("tcp")
        ntcp = max((n["ntcp"] for n in e.get("ntcp", [])), default=None)
        hard = [v for v in e.get("violations", []) if v["hard"]]
        rails = "met" if not e.get("violations") else (f"{len(hard)} hard" if hard else "soft exceeded")
        table.add_row(p.patient_id, f"{e['regimen']['n_fractions']}x{e['regimen']['dose_per_fraction_gy']:.2f}",
                      "-" if uniform is None else f"{uniform:.3f}", "-" if planned is None else f"{planned:.3f}",
                      "-" if ntcp is None else f"{ntcp:.3f}", rails,
                      "reused" if p.reused else f"{e['optimizer']['seconds']:.0f}",
                      " ".join(e.get("flags", [])) or "-")
    return table


def plan(
    handoff: Path = typer.Option(..., "--handoff", help="Hand-off folder written by `radiogenomics handoff`."),
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder with the patients' CT and structures."),
    out: Path = typer.Option(..., "--out", help="Plans folder: PLANS/<patient_id>/ per patient."),
    patients: str | None = typer.Option(None, "--patients", help="Comma-separated patient ids (default: all)."),
    beams: int = typer.Option(7, "--beams", help="Equispaced coplanar photon beams."),
    bixel_width_mm: float = typer.Option(5.0, "--bixel-width-mm", help="Beamlet width (mm)."),
    dose_grid_mm: float = typer.Option(3.0, "--dose-grid-mm", help="Dose grid resolution (mm; the CT's if coarser)."),
    max_iter: int = typer.Option(400, "--max-iter", help="Optimizer iterations at most."),
    uniform_reference: bool = typer.Option(True, "--uniform-reference/--no-uniform-reference",
                                           help="Also plan the site's standard uniform regimen for comparison."),
    optimizer: str = typer.Option("pyradplan", "--optimizer", help="Plan optimizer (pyradplan)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Re-plan patients whose inputs have not changed."),
) -> None:
    """Plan each patient on their own CT and structures; write the planned dose and plan_evaluation.json."""
    import sys

    from radiogenomics.cli.console import out as console
    from radiogenomics.outputs import output_file
    from radiogenomics.planning.optimizers.base import PlanSettings
    from radiogenomics.planning.run import plan_cohort
    from radiogenomics.progress import progress_bar

    if not handoff.is_dir():
        raise InputError(f"hand-off folder {handoff} does not exist", fix="run `radiogenomics handoff` first")
    if not cohort.is_dir():
        raise InputError(f"cohort folder {cohort} does not exist", fix="give the path of a cohort folder")
    settings = PlanSettings(beams=beams, bixel_width_mm=bixel_width_mm, dose_grid_mm=dose_grid_mm, max_iter=max_iter)
    output_file(out.resolve() / "plans.json", "plans folder")
    with progress_bar("plan") as update:
        result = plan_cohort(handoff, cohort, out, patients=_patients(patients), settings=settings,
                             optimizer=optimizer, uniform_reference=uniform_reference, overwrite=overwrite,
                             progress=lambda done, total, note: update(done, total, note),
                             show_progress=sys.stderr.isatty())
    console.print(plan_table(result))
    typer.echo(f"{len(result.plans)} plan(s) -> {result.out_dir}; table: {result.summary_csv}")
    if result.failures:
        shown = "; ".join(f"{pid}: {reason}" for pid, reason in result.failures[:3])
        typer.echo(f"{len(result.failures)} patient(s) failed ({shown}{' ...' if len(result.failures) > 3 else ''});"
                   f" all reasons in {result.out_dir / 'failures.csv'}", err=True)
