"""`radiogenomics handoff`: per patient, the record, objectives.json and the PET dose map for a plan optimizer.

Contract section 7 (``radiogenomics.planning.handoff``). The token for ``--api-url`` is read from the
environment variable named by ``--token-env`` (default ``RADIOGENOMICS_TOKEN``), never from a command-line
value, which would end up in the shell history and the process list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from radiogenomics.errors import InputError

DEFAULT_TOKEN_ENV = "RADIOGENOMICS_TOKEN"


def summary_table(result: object) -> Table:
    """One row per patient: alpha, recommended dose (n x d), target effect per fraction, map range, flags.

    The map's mean over the target equals the recommended total by construction, so the range is shown.
    """
    table = Table(title=f"handoff -> {getattr(result, 'out_dir', '')}")
    for name in ("patient", "alpha", "Gy (n x d)", "effect", "map Gy"):
        table.add_column(name, justify="left" if name == "patient" else "right", no_wrap=True)
    table.add_column("flags", overflow="fold", min_width=16)
    for p in getattr(result, "patients", []):
        figure = f"{p.map_min_dose_gy:.1f}-{p.map_max_dose_gy:.1f}" if p.map_mean_dose_gy is not None else "-"
        table.add_row(p.patient_id, f"{p.alpha_per_gy:.3f}",
                      f"{p.recommended_total_dose_gy:.1f} ({p.recommended_n_fractions:.0f}x"
                      f"{p.recommended_dose_per_fraction_gy:.2f})", f"{p.effect_per_fraction:.3f}", figure,
                      " ".join(p.flags) or "-")
    return table


def _patients(value: str | None) -> list[str] | None:
    if value is None:
        return None
    ids = [p.strip() for p in value.split(",") if p.strip()]
    if not ids:
        raise InputError("--patients lists no patient id", fix="give comma-separated ids, e.g. --patients P1,P2")
    return ids


def handoff(
    model: str | None = typer.Option(None, "--model",
                                     help="MLflow model URI, e.g. models:/radiogenomics-prescriber@champion."),
    features: Path | None = typer.Option(None, "--features",
                                         help="Feature table (Parquet from `radiogenomics extract`)."),
    out: Path = typer.Option(..., "--out", help="Hand-off folder: DIR/<patient_id>/ per patient."),
    patients: str | None = typer.Option(None, "--patients", help="Comma-separated patient ids (default: all)."),
    cohort: Path | None = typer.Option(None, "--cohort", help="Cohort folder: PET for the dose-prescription maps, "
                                                              "OAR names from images.csv."),
    api_url: str | None = typer.Option(None, "--api-url", help="Predict through a `radiogenomics serve` API."),
    token_env: str = typer.Option(DEFAULT_TOKEN_ENV, "--token-env",
                                  help="Environment variable holding the API token (never pass the token itself)."),
    site: str | None = typer.Option(None, "--site", help="Treatment site for the rails (default: clinical.site)."),
    target_gard: float | None = typer.Option(None, "--target-gard", help="Target GARD (default: the model's)."),
    n_fractions: int | None = typer.Option(None, "--n-fractions", help="Regimen: number of fractions."),
    dose_per_fraction_gy: float | None = typer.Option(None, "--dose-per-fraction-gy", help="Regimen: Gy/fraction."),
    adapted: Path | None = typer.Option(None, "--adapted", help="Hand off the adapted records of `radiogenomics "
                                                                "adapt` (.json/.csv; needs --cohort): objectives "
                                                                "and map for the remaining fractions."),
) -> None:
    """Write prescription.json, objectives.json and (with PET) dose_prescription.nii.gz/.dcm per patient."""
    from radiogenomics.cli.console import out as console
    from radiogenomics.outputs import output_file
    from radiogenomics.planning.handoff import handoff as run_handoff
    from radiogenomics.planning.handoff import handoff_adapted

    if adapted is not None:
        given = [name for name, value in (("--model", model), ("--features", features), ("--api-url", api_url),
                                          ("--site", site), ("--target-gard", target_gard),
                                          ("--n-fractions", n_fractions),
                                          ("--dose-per-fraction-gy", dose_per_fraction_gy)) if value is not None]
        if given:
            raise InputError(f"--adapted takes the records as adapt wrote them: {', '.join(given)} cannot be used "
                             "with it", fix="leave them out (the model and regimen are in the adapted records)")
        if cohort is None or not cohort.is_dir():
            raise InputError("--adapted needs --cohort, the cohort folder the records were adapted from",
                             fix="add --cohort COHORT (planning and mid-treatment PET, structures)")
        output_file(out.resolve() / "handoff.json", "hand-off folder")
        _show(handoff_adapted(adapted, out, cohort=cohort, patients=_patients(patients)), console)
        return
    if model is None or features is None:
        raise InputError("handoff needs --model and --features (or --adapted with --cohort)",
                         fix="e.g. --model models:/radiogenomics-prescriber@champion --features features.parquet")
    if not features.is_file():
        raise InputError(f"feature table {features} does not exist", file=str(features),
                         fix="give the Parquet table written by `radiogenomics extract`")
    if cohort is not None and not cohort.is_dir():
        raise InputError(f"cohort folder {cohort} does not exist", fix="give the path of a cohort folder")
    token = None
    if api_url is not None:
        token = os.environ.get(token_env)
        if not token:
            raise InputError(f"--api-url needs a token in the environment variable {token_env}",
                             fix=f"export {token_env}=<token from `radiogenomics token create`>")
    output_file(out.resolve() / "handoff.json", "hand-off folder")
    result = run_handoff(model, features, out, patients=_patients(patients), cohort=cohort, api_url=api_url,
                         token=token, n_fractions=n_fractions, dose_per_fraction_gy=dose_per_fraction_gy,
                         target_gard=target_gard, site=site)
    _show(result, console)


def _show(result: Any, console: Any) -> None:
    console.print(summary_table(result))
    typer.echo(f"{len(result.patients)} patient(s) from {result.model_uri} (version {result.model_version}, "
               f"{result.source}) -> {result.out_dir}")
    if result.failures:
        shown = "; ".join(f"{pid}: {reason}" for pid, reason in result.failures[:3])
        typer.echo(f"{len(result.failures)} patient(s) failed ({shown}{' ...' if len(result.failures) > 3 else ''});"
                   f" all reasons in {result.failures_csv}", err=True)
