"""Predicting from a registered prescriber: load it, predict a batch with per-patient failures, write records.

The library behind ``radiogenomics predict``, ``handoff``, ``report``, ``demo`` and the REST API's model state
(no package imports the CLI).

* :func:`load_prescriber`: the :class:`~radiogenomics.models.prescriber.Prescriber` and its registry entry
  of a pyfunc ``radiogenomics-prescriber`` model URI;
* :func:`predict_isolating_failures`: records for a batch; when one patient's input is bad, the others still
  get theirs and the bad one is reported with its reason;
* :func:`write_reference_schema`: an empty Parquet table carrying a model's feature schema (``extract
  --schema-from``);
* :func:`write_records`: records as CSV, Parquet or JSON, written atomically.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)


def load_prescriber(uri: str) -> tuple[Any, Any]:
    """(Prescriber, ModelInfo) of a pyfunc ``radiogenomics-prescriber`` model; InputError when it cannot load."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    from radiogenomics.training.config import TrackingConfig
    from radiogenomics.training.registry.pyfunc import PrescriberModel

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


def known_columns_only(table: Any, known: Any, *, what: str = "the feature table") -> Any:
    """``table`` without the columns a model does not know (its feature schema, the regimen columns and the safety
    gate's input are kept), with one warning naming the first ten dropped and how to avoid them.

    A feature table made for another model (``extract`` without ``--schema-from``, another ROI set) carries
    features this model was not trained on; every route that reads a table (``predict``, ``handoff``, ``report``,
    the demo) drops the same columns the same way. A direct caller (the API, the pyfunc) is refused instead: a
    column it names is one it means (contract section 6).
    """
    from radiogenomics.models.inputs import closest_name, is_gate_column
    from radiogenomics.models.regimen import REGIMEN_COLUMNS

    known_set = set(known) | set(REGIMEN_COLUMNS)
    dropped = [str(c) for c in table.columns if c not in known_set and not is_gate_column(str(c))]
    if not dropped:
        return table
    shown = []
    for column in dropped[:10]:
        close = closest_name(column, known_set)
        shown.append(f"{column} (did you mean {close}?)" if close else column)
    more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
    log.warning("%s has %d column(s) the model was not trained on, left out: %s%s. To match the model exactly, "
                "extract with `radiogenomics extract COHORT --schema-from <the model's schema table>` (predict "
                "writes one as <out>.model-schema.parquet)", what, len(dropped), ", ".join(shown), more)
    return table.drop(columns=dropped)


def predict_isolating_failures(prescriber: Any, table: Any, info: Any, cohort: Path | None = None,
                               oar_dvhs: Any = None, **regimen: Any) -> tuple[list[dict[str, Any]],
                                                                              list[tuple[str, str]]]:
    """Records for all rows; when the batch raises InputError, row by row, collecting (patient_id, reason).
    ``cohort``: the folder with the patients' images, for a model that reads images itself; ``oar_dvhs``:
    ``{patient_id: {structure: DVH}}`` of the patients' dose distributions for the OAR limits
    (:func:`radiogenomics.features.patient_dvhs.cohort_dvhs`)."""
    options = {"cohort": cohort, "oar_dvhs": oar_dvhs, **regimen}
    table = known_columns_only(table, [*prescriber.schema.names, "patient_id"])
    try:
        return prescriber.predict_records(table, model=info, **options), []
    except InputError as exc:
        log.info("predict: batch failed (%s); predicting patient by patient", exc)
    records: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for i in range(len(table)):
        row = table.iloc[[i]]
        pid = str(row["patient_id"].iloc[0]) if "patient_id" in row.columns else str(i)
        try:
            records.extend(prescriber.predict_records(row, model=info, **options))
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
    frame["oar_checks"] = [json.dumps(_json_ready(list(c))) for c in frame["oar_checks"]]
    frame["flags"] = [json.dumps(list(f)) for f in frame["flags"]]
    frame["notes"] = [json.dumps(list(n)) for n in frame["notes"]]
    if out.suffix == ".csv":
        atomic_write_bytes(out, frame.to_csv(index=False).encode("utf-8"))
    else:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(out, buffer.getvalue())
