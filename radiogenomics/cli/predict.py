"""`radiogenomics predict COHORT --model URI --out P.csv|.parquet|.json`: one prescription record per patient.

Steps: load the pyfunc prescriber from the registry; extract the cohort's features with the model's feature
schema (``--schema-from`` a reference table written from the model's schema; extraction is cached, so a
re-run is cheap); predict; write the records atomically. Files beside the output:

* ``<stem>.features.parquet`` (+ its extract side files) and ``<stem>.model-schema.parquet`` (the reference);
* ``<stem>.failures.csv``: ``patient_id, reason`` of every patient without a record (header only when none).

CSV and Parquet hold ``toxicity``, ``oar_checks`` and ``flags`` as JSON strings (``{"xerostomia_grade_ge2": 0.12}``,
``[{"structure": "SpinalCord", ...}]``, ``["missing_genomics"]``); JSON output is ``{"records": [...]}`` with
missing numbers as ``null``. The OAR limits are checked on every organ of the patients' dose grids (or dvh.csv),
also those the model has no feature of.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from radiogenomics.errors import InputError

OUTPUT_SUFFIXES = (".csv", ".parquet", ".json")
FAILURE_COLUMNS = ["patient_id", "reason"]


def output_stem(out: Path) -> str:
    """The output's name without its suffix (``P.csv`` -> ``P``)."""
    return out.name[: -len(out.suffix)] if out.suffix else out.name


def predict(
    cohort: Path = typer.Argument(..., help="Cohort folder (format v1)."),
    model: str = typer.Option(..., "--model", help="MLflow model URI, e.g. models:/radiogenomics-prescriber@champion."),
    out: Path = typer.Option(..., "--out", help="Prescription records: .csv, .parquet or .json."),
    target_gard: float | None = typer.Option(None, "--target-gard", help="Target GARD (default: the model's)."),
    n_fractions: int | None = typer.Option(None, "--n-fractions", help="Regimen: number of fractions."),
    dose_per_fraction_gy: float | None = typer.Option(None, "--dose-per-fraction-gy", help="Regimen: Gy/fraction."),
    workers: int = typer.Option(0, "--workers", help="Feature extraction processes (0 = all cores, 1 = in-process)."),
) -> None:
    """Write one prescription record per patient from a registered model (failures listed beside the output)."""
    from radiogenomics.training.registry.prediction import write_records

    records, failures, info, failures_path = predict_cohort(cohort, model, out, workers=workers, **regimen_options(
        n_fractions, dose_per_fraction_gy, target_gard))
    write_records(records, out)
    typer.echo(f"{len(records)} prescription record(s) from {info.uri or model} -> {out}")
    report_failures(failures, failures_path)


def regimen_options(n_fractions: int | None, dose_per_fraction_gy: float | None,
                    target_gard: float | None) -> dict[str, Any]:
    return {"n_fractions": n_fractions, "dose_per_fraction_gy": dose_per_fraction_gy, "target_gard": target_gard}


def report_failures(failures: list[tuple[str, str]], failures_path: Path) -> None:
    if failures:
        shown = "; ".join(f"{pid}: {reason}" for pid, reason in failures[:3])
        typer.echo(f"{len(failures)} patient(s) failed ({shown}{' ...' if len(failures) > 3 else ''}); "
                   f"all reasons in {failures_path}", err=True)


def predict_cohort(cohort: Path, model: str, out: Path, *, workers: int, **regimen: Any
                   ) -> tuple[list[dict[str, Any]], list[tuple[str, str]], Any, Path]:
    """`predict`'s steps up to the records (also `adapt`'s baseline): (records, failures, model info, failures file).

    Writes the side files beside ``out`` (features, model schema, failures); InputError when no patient could be
    predicted."""
    import pandas as pd

    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_table
    from radiogenomics.outputs import output_file
    from radiogenomics.training.registry.prediction import (
        load_prescriber,
        predict_isolating_failures,
        write_reference_schema,
    )

    if not cohort.is_dir():
        raise InputError(f"cohort folder {cohort} does not exist", fix="give the path of a cohort folder")
    if out.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"the output must end in {', '.join(OUTPUT_SUFFIXES)}, got {out.name}",
                         fix="use --out FILE.csv, .parquet or .json")
    if workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}")
    out = output_file(out.resolve(), "prescription file")
    stem = output_stem(out)
    prescriber, info = load_prescriber(model)
    reference = out.with_name(f"{stem}.model-schema.parquet")
    features_path = out.with_name(f"{stem}.features.parquet")
    write_reference_schema(prescriber.schema, reference)
    summary = extract(cohort, features_path, ExtractOptions(workers=workers, schema_from=reference))
    if summary.failed:
        typer.echo(f"warning: feature extraction failed for {summary.failed} item(s) of patient(s) "
                   f"{', '.join(summary.failed_patients)}; reasons in {summary.failures}", err=True)
    table = read_feature_table(features_path)
    from radiogenomics.features.patient_dvhs import cohort_dvhs

    dvhs = cohort_dvhs(cohort, [str(p) for p in table["patient_id"]])  # every organ's dose: the OAR limits
    records, failures = predict_isolating_failures(prescriber, table, info, cohort=cohort, oar_dvhs=dvhs, **regimen)
    failures_path = out.with_name(f"{stem}.failures.csv")
    from radiogenomics.features.cache import atomic_write_bytes

    atomic_write_bytes(failures_path, pd.DataFrame(failures, columns=FAILURE_COLUMNS).to_csv(index=False).encode())
    if not records:
        raise InputError(f"no patient could be predicted ({len(failures)} failed); reasons in {failures_path}",
                         fix="see the reasons and correct the cohort or the regimen options")
    return records, failures, info, failures_path
