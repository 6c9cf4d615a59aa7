"""`radiogenomics validate COHORT`: report every problem of a cohort folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from radiogenomics.cli.console import fail_line, out, progress_bar


def validate(
    cohort: Path = typer.Argument(..., help="Cohort folder (format v1)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable JSON report on stdout."),
    images: bool = typer.Option(True, "--images/--no-images", help="Also read every image, mask and dose grid."),
) -> None:
    """Check a cohort folder and report every problem (patient, file, fix). Exit 2 if anything is invalid.

    Example: radiogenomics validate demo/cohort --json
    """
    from radiogenomics.cohort import validate_cohort

    if as_json:
        report = validate_cohort(cohort, check_images=images)
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        with progress_bar("validating images") as update:
            report = validate_cohort(cohort, check_images=images, progress=update)
        if report.problems:
            table = Table(title=f"{len(report.problems)} problem(s) in {report.root}", show_lines=False)
            for col in ("severity", "code", "patient", "where", "message", "fix"):
                table.add_column(col, overflow="fold")
            for p in report.problems:
                where = (p.file or "") + (f" row {p.row}" if p.row is not None else "") + (
                    f" [{p.column}]" if p.column else "")
                table.add_row(p.severity, p.code, p.patient_id or "", where, p.message, p.fix)
            out.print(table)
        if report.structures:
            out.print("structure roles (images.csv roi -> the structure in the mask file):", highlight=False)
            for s in report.structures:
                at = f" ({s['timepoint']})" if s.get("timepoint") else ""
                out.print(f"  {s['patient_id']} {s['modality']}{at}: {s['role']} -> {s['structure']} ({s['how']}; "
                          f"{s['kind']})", markup=False, highlight=False, soft_wrap=True)
        out.print(f"{report.n_patients} patients, {report.n_image_rows} image rows, tables: "
                  f"{', '.join(report.tables) or 'none'}; {len(report.errors)} error(s), "
                  f"{len(report.warnings)} warning(s).")
    if not report.ok:
        fail_line(f"cohort {report.root} is invalid: {len(report.errors)} error(s) "
                  f"(first: {report.errors[0].one_line()})")
        raise typer.Exit(2)
