"""`radiogenomics report --out R.html [--cohort C] [--model URI] [--predictions P] [--features F] [--handoff D]
[--plans D]`."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    out: Path = typer.Option(..., "--out", help="The HTML file to write (self-contained)."),
    cohort: Path | None = typer.Option(None, "--cohort", help="Cohort folder: overview and Kaplan-Meier by GARD."),
    model: str | None = typer.Option(None, "--model", help="Registered model URI: performance from its MLflow "
                                     "training run, e.g. models:/radiogenomics-prescriber@champion."),
    predictions: Path | None = typer.Option(None, "--predictions", help="Records written by radiogenomics "
                                            "predict (.csv, .parquet or .json)."),
    features: Path | None = typer.Option(None, "--features", help="Feature table to predict with --model when "
                                         "--predictions is not given."),
    handoff: Path | None = typer.Option(None, "--handoff", help="Folder written by radiogenomics handoff (its "
                                        "dose_prescription.nii.gz maps)."),
    plans: Path | None = typer.Option(None, "--plans", help="Folder written by radiogenomics plan (planned doses, "
                                      "evaluations, the standard-vs-personalised table)."),
) -> None:
    """Write one self-contained HTML report: cohort, model performance, local control by GARD, prescriptions,
    a dose-prescription map, the plans. Sections without their inputs say what to pass."""
    from radiogenomics.report import build_report

    result = build_report(out, cohort=cohort, model_uri=model, predictions=predictions, features=features,
                          handoff=handoff, plans=plans)
    typer.echo(f"report: {len(result.sections)} sections, {result.size_bytes / 1e6:.1f} MB -> {result.path}")
    for title, reason in result.missing.items():
        typer.echo(f"  not shown: {title}: {reason}", err=True)
