"""Prescription records for the hand-off: from the model registry in-process, or from the REST API.

Both return ``(records, failures)``: one contract record per patient that could be predicted and
``(patient_id, reason)`` for each one that could not (bad input for that patient); the others complete.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.features import naming

log = logging.getLogger(__name__)

#: Patients per POST /v1/prescriptions request (well under the server's default max_patients of 1000).
API_BATCH = 32
Failures = list[tuple[str, str]]


def from_registry(model_uri: str, table: pd.DataFrame, regimen: Mapping[str, float | None], *,
                  cohort: Path | None = None, oar_dvhs: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> tuple[list[dict[str, Any]], Failures]:
    """Records from ``models:/...`` loaded in-process. ``cohort``: the
    patients' images, for a model that reads images itself; ``oar_dvhs``: the patients' DVHs for the OAR limits."""
    from radiogenomics.training.registry.prediction import load_prescriber, predict_isolating_failures

    prescriber, info = load_prescriber(model_uri)
    records, failures = predict_isolating_failures(prescriber, table, info, cohort=cohort, oar_dvhs=oar_dvhs,
                                                   **regimen)
    return records, failures


def with_dose_summaries(table: pd.DataFrame, dvhs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """``table`` with ``dose.<structure>.{mean_gy,max_gy,volume_cc}`` of each patient's DVHs where the table has
    no value: what the API's safety gate reads for the OAR limits (``POST /v1/prescriptions`` takes dose.* columns
    of any structure)."""
    values: dict[str, list[float]] = {}
    ids = [str(p) for p in table[naming.PATIENT_ID]]
    for i, pid in enumerate(ids):
        for structure, dvh in (dvhs.get(pid) or {}).items():
            for metric, value in (("mean_gy", dvh.mean_dose_gy), ("max_gy", dvh.max_dose_gy),
                                  ("volume_cc", float(dvh.volume_cc.sum()))):
                column = naming.dose_column(structure, metric)
                values.setdefault(column, [float("nan")] * len(ids))[i] = float(value)
    summaries = pd.DataFrame(values, index=table.index, dtype="float64")
    for column in summaries.columns.intersection(table.columns):  # the table's own value first
        summaries[column] = pd.to_numeric(table[column], errors="coerce").fillna(summaries[column])
    return pd.concat([table.drop(columns=list(summaries.columns.intersection(table.columns))), summaries], axis=1)


def patient_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """``{"patient_id", "features"}`` of one feature-table row: missing values left out, numpy as Python."""
    from radiogenomics.jsonio import json_safe

    features: dict[str, Any] = {}
    for name, value in row.items():
        missing = value is None or value is pd.NA or (isinstance(value, float) and value != value)
        if name == naming.PATIENT_ID or missing:
            continue
        value = json_safe(value)
        features[str(name)] = int(value) if isinstance(value, bool) else value
    return {"patient_id": str(row[naming.PATIENT_ID]), "features": features}


def _detail(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300]
    if isinstance(detail, list):
        return "; ".join(f"{'/'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}" for d in detail[:5])
    return str(detail)


def _call(client: Any, method: str, path: str, **options: Any) -> Any:
    """One request to the API; InputError when it cannot be reached or refuses the token, RuntimeError for a
    server error."""
    import httpx

    try:
        response = client.request(method, path, **options)
    except httpx.HTTPError as exc:
        raise InputError(f"cannot reach the API at {client.base_url}: {exc}",
                         fix="check --api-url and that `radiogenomics serve` runs there") from exc
    if response.status_code == 401:
        raise InputError("the API refused the token (401)", fix="create one with `radiogenomics token create NAME "
                         "--tokens FILE` and pass it in the environment variable named by --token-env")
    if response.status_code >= 500:
        raise RuntimeError(f"{method} {path} answered {response.status_code}: {_detail(response)}")
    return response


def _post(client: Any, payloads: Sequence[dict[str, Any]], extra: Mapping[str, Any]) -> Any:
    return _call(client, "POST", "/v1/prescriptions", json={"patients": list(payloads), **extra})


def _served_columns(client: Any) -> list[str]:
    """The feature columns the API's model accepts (``GET /v1/model``), plus ``patient_id``."""
    response = _call(client, "GET", "/v1/model")
    if response.status_code != 200:
        raise RuntimeError(f"GET /v1/model answered {response.status_code}: {_detail(response)}")
    return [naming.PATIENT_ID, *(f["column"] for f in response.json()["features"])]


def from_api(client: Any, table: pd.DataFrame, regimen: Mapping[str, float | None]) -> tuple[list[dict[str, Any]],
                                                                                              Failures]:
    """Records from ``POST /v1/prescriptions`` of an httpx client (base URL and Bearer token set).

    A batch answered 422 is retried patient by patient so that one bad patient does not stop the others.
    """
    extra: dict[str, Any] = {}
    reg = {k: regimen.get(k) for k in ("n_fractions", "dose_per_fraction_gy") if regimen.get(k) is not None}
    if reg:
        extra["regimen"] = {k: int(v) if k == "n_fractions" else float(v) for k, v in reg.items() if v is not None}
    if regimen.get("target_gard") is not None:
        extra["target_gard"] = float(regimen["target_gard"])  # type: ignore[arg-type]
    from radiogenomics.training.registry.prediction import known_columns_only

    table = known_columns_only(table, _served_columns(client), what="the feature table")
    payloads = [patient_payload(r) for r in table.astype(object).to_dict(orient="records")]
    records: list[dict[str, Any]] = []
    failures: Failures = []
    for start in range(0, len(payloads), API_BATCH):
        batch = payloads[start:start + API_BATCH]
        response = _post(client, batch, extra)
        if response.status_code == 200:
            records.extend(response.json()["records"])
            continue
        if response.status_code != 422 or len(batch) == 1:
            failures.extend((p["patient_id"], f"API {response.status_code}: {_detail(response)}") for p in batch)
            continue
        log.info("handoff: the API refused a batch (%s); sending patient by patient", _detail(response))
        for payload in batch:
            single = _post(client, [payload], extra)
            if single.status_code == 200:
                records.extend(single.json()["records"])
            else:
                failures.append((payload["patient_id"], f"API {single.status_code}: {_detail(single)}"))
    return records, failures
