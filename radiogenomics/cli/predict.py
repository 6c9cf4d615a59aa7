"""`radiogenomics predict COHORT --model URI --out P.csv|.parquet|.json`: one prescription record per patient.

Steps: load the pyfunc prescriber from the registry; extract the cohort's features with the model's feature
schema (``--schema-from`` a reference table written from the model's schema; extraction is cached, so a
re-run is cheap); predict; write the records atomically. Files beside the output:

* ``<stem>.features.parquet`` (+ its extract side files) and ``<stem>.model-schema.parquet`` (the reference);
* ``<stem>.failures.csv``: ``patient_id, reason`` of every patient without a record (header only when none).

CSV and Parquet hold ``toxicity`` and ``flags`` as JSON strings (``{"xerostomia_grade_ge2": 0.12}``,
``["missing_genomics"]``); JSON output is ``{"records": [...]}`` with missing numbers as ``null``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", ".parquet", ".json")
FAILURE_COLUMNS = ["patient_id", "reason"]


def output_stem(out: Path) -> str:
    """The output's name without its suffix (``P.csv`` -> ``P``)."""
    return out.name[: -len(out.suffix)] if out.suffix else out.name


def load_prescriber(uri: str) -> tuple[Any, Any]:
    """(Prescriber, ModelInfo) of a pyfunc ``radiogenomics-prescriber`` model; InputError when it cannot load."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    from radiogenomics.serving.pyfunc import PrescriberModel
    from radiogenomics.training.config import TrackingConfig

    if not is_tracking_uri_set():  # neither MLFLOW_TRACKING_URI nor set_tracking_uri: the store `train` uses
        mlflow.set_tracking_uri(TrackingConfig().tracking_uri())
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise InputError(f"cannot load the model {uri}: {' '.join(str(exc).split())[:300]}",
                         fix="give a model URI such as models:/radiogenomics-prescriber@champion and set "
                             "MLFLOW_TRACKING_URI to its tracking server or store") from exc
    python_model = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else None
    if not isinstance(python_model, PrescriberModel):
        raise InputError(f"the model {uri} is not a radiogenomics prescriber",
                         fix="use models:/radiogenomics-prescriber@champion (or another version of it)")
    return python_model.prescriber, python_model.info


def write_reference_schema(schema: Any, path: Path) -> None:
    """An empty Parquet table carrying ``schema`` in its metadata (the ``--schema-from`` reference)."""
    import pandas as pd

    from radiogenomics.features.fusion import write_parquet

    empty = pd.DataFrame({c.name: pd.Series([], dtype=_dtype(c.dtype)) for c in schema.columns})
    write_parquet(empty, path, schema.to_metadata())


def _dtype(name: str) -> str:
    import pandas as pd

    try:
        pd.Series([], dtype=name)
    except (TypeError, ValueError):
        return "float64"
    return name


def predict_isolating_failures(prescriber: Any, table: Any, info: Any, cohort: Path | None = None,
                               **regimen: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Records for all rows; when the batch raises InputError, row by row, collecting (patient_id, reason).
    ``cohort``: the folder with the patients' images, for a model that reads images itself."""
    try:
        return prescriber.predict_records(table, model=info, cohort=cohort, **regimen), []
    except InputError as exc:
        log.info("predict: batch failed (%s); predicting patient by patient", exc)
    records: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for i in range(len(table)):
        row = table.iloc[[i]]
        pid = str(row["patient_id"].iloc[0]) if "patient_id" in row.columns else str(i)
        try:
            records.extend(prescriber.predict_records(row, model=info, cohort=cohort, **regimen))
        except InputError as exc:
            failures.append((pid, " ".join(str(exc).split())))
    return records, failures


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def write_records(records: Sequence[dict[str, Any]], out: Path) -> None:
    """Write records atomically as CSV, Parquet (toxicity/flags as JSON strings) or JSON ``{"records": [...]}``."""
    import io

    from radiogenomics.features.cache import atomic_write_bytes
    from radiogenomics.models.prescriber import records_frame

    if out.suffix == ".json":
        body = {"records": [_json_ready(dict(r)) for r in records]}
        atomic_write_bytes(out, json.dumps(body, indent=1, allow_nan=False).encode("utf-8"))
        return
    frame = records_frame(records)
    frame["toxicity"] = [json.dumps(_json_ready(t), sort_keys=True) for t in frame["toxicity"]]
    frame["flags"] = [json.dumps(list(f)) for f in frame["flags"]]
    if out.suffix == ".csv":
        atomic_write_bytes(out, frame.to_csv(index=False).encode("utf-8"))
    else:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(out, buffer.getvalue())


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
    import pandas as pd

    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_table
    from radiogenomics.outputs import output_file

    if not cohort.is_dir():
        raise InputError(f"cohort folder {cohort} does not exist", fix="give the path of a cohort folder")
    if out.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"the output must end in {', '.join(OUTPUT_SUFFIXES)}, got {out.name}",
                         fix="use --out PRESCRIPTIONS.csv, .parquet or .json")
    if workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}")
    out = output_file(out.resolve(), "prescription file")
    stem = output_stem(out)
    regimen = {"n_fractions": n_fractions, "dose_per_fraction_gy": dose_per_fraction_gy, "target_gard": target_gard}
    prescriber, info = load_prescriber(model)
    reference = out.with_name(f"{stem}.model-schema.parquet")
    features_path = out.with_name(f"{stem}.features.parquet")
    write_reference_schema(prescriber.schema, reference)
    summary = extract(cohort, features_path, ExtractOptions(workers=workers, schema_from=reference))
    if summary.failed:
        typer.echo(f"warning: feature extraction failed for {summary.failed} item(s) of patient(s) "
                   f"{', '.join(summary.failed_patients)}; reasons in {summary.failures}", err=True)
    table = read_feature_table(features_path)
    records, failures = predict_isolating_failures(prescriber, table, info, cohort=cohort, **regimen)
    failures_path = out.with_name(f"{stem}.failures.csv")
    from radiogenomics.features.cache import atomic_write_bytes

    atomic_write_bytes(failures_path, pd.DataFrame(failures, columns=FAILURE_COLUMNS).to_csv(index=False).encode())
    if not records:
        raise InputError(f"no patient could be predicted ({len(failures)} failed); reasons in {failures_path}",
                         fix="see the reasons and correct the cohort or the regimen options")
    write_records(records, out)
    typer.echo(f"{len(records)} prescription record(s) from {info.uri or model} -> {out}")
    if failures:
        shown = "; ".join(f"{pid}: {reason}" for pid, reason in failures[:3])
        typer.echo(f"{len(failures)} patient(s) failed ({shown}{' ...' if len(failures) > 3 else ''}); "
                   f"all reasons in {failures_path}", err=True)
