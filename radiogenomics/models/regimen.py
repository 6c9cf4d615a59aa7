"""The regimen each record refers to, and where it came from (contract section 2, ``regimen_source``).

Per patient, each of ``n_fractions`` and ``dose_per_fraction_gy`` comes from, in order:

1. ``request``: the caller's explicit regimen (a row's ``n_fractions`` / ``dose_per_fraction_gy`` column, the
   CLI's ``--n-fractions`` / ``--dose-per-fraction-gy``, the API's ``regimen``, the pyfunc's ``params``);
2. ``patient``: the patient's own regimen, ``clinical.n_fractions`` and ``clinical.total_dose_gy`` of the row
   (patients.csv, or the request's features): ``dose_per_fraction_gy = total / n``;
3. ``default``: the standard regimen of the patient's site in the rails (``standard_total_dose_gy`` in
   ``standard_n_fractions``).

``regimen_source`` is ``request`` when any part came from the request, else ``patient`` when any came from
the patient, else ``default``. ``target_gard``: the row's column, else the caller's, else the model's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.radiobiology import Rails

#: Optional per-row regimen columns of the prescriber's input (contract section 4).
REGIMEN_COLUMNS: tuple[str, ...] = ("n_fractions", "dose_per_fraction_gy", "target_gard")
N_FRACTIONS_COLUMN = naming.clinical_column("n_fractions")
TOTAL_DOSE_COLUMN = naming.clinical_column("total_dose_gy")
#: ``regimen_source`` values.
SOURCE_REQUEST, SOURCE_PATIENT, SOURCE_DEFAULT = "request", "patient", "default"


def check_regimen_value(value: Any, name: str, patient_id: str | None) -> float:
    """A regimen value as a float: finite, positive (``target_gard``: non-negative), whole for ``n_fractions``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", patient_id=patient_id) from None
    if not math.isfinite(number) or number < 0 or (number == 0 and name != "target_gard"):
        raise InputError(f"{name} must be a finite {'non-negative' if name == 'target_gard' else 'positive'} "
                         f"number, got {number!r}", patient_id=patient_id, fix=f"give a valid {name}")
    if name == "n_fractions" and number != round(number):
        raise InputError(f"n_fractions must be a whole number, got {number!r}", patient_id=patient_id,
                         fix="give a whole number of fractions")
    return number


def _column(frame: pd.DataFrame, name: str, ids: Sequence[str], what: str) -> np.ndarray:
    """A numeric column of ``frame`` (NaN where missing or absent); text that is not a number is an InputError."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    raw = pd.to_numeric(frame[name], errors="coerce")
    bad = frame[name].notna() & raw.isna()
    if bad.any():
        pid = ids[int(np.flatnonzero(bad.to_numpy())[0])]
        raise InputError(f"{what} is not a number", patient_id=pid, fix=f"give {what} as a number")
    return raw.to_numpy(dtype=np.float64, na_value=np.nan)


def resolve_regimens(frame: pd.DataFrame, ids: Sequence[str], sites: Sequence[str], *, rails: Rails,
                     request: Mapping[str, float | None], default_target_gard: float) -> pd.DataFrame:
    """Per row: ``n_fractions``, ``dose_per_fraction_gy``, ``target_gard`` and ``regimen_source`` (see the module
    docstring). ``frame``: the caller's rows as sent (regimen columns and the patient's clinical columns);
    ``request``: the caller's keyword regimen (None = not given)."""
    given = {name: (None if request.get(name) is None else check_regimen_value(request[name], name, None))
             for name in REGIMEN_COLUMNS}
    asked = {name: _column(frame, name, ids, name).copy() for name in REGIMEN_COLUMNS}
    for name, values in asked.items():
        if given[name] is not None:
            values[np.isnan(values)] = given[name]
    patient_n = _column(frame, N_FRACTIONS_COLUMN, ids, N_FRACTIONS_COLUMN)
    patient_total = _column(frame, TOTAL_DOSE_COLUMN, ids, TOTAL_DOSE_COLUMN)
    rows: list[dict[str, Any]] = []
    for i, (pid, site) in enumerate(zip(ids, sites, strict=True)):
        standard = rails.site(site)
        own = math.isfinite(patient_n[i]) and math.isfinite(patient_total[i]) and patient_n[i] > 0 \
            and patient_total[i] > 0
        n, d = asked["n_fractions"][i], asked["dose_per_fraction_gy"][i]
        source = SOURCE_REQUEST if not (math.isnan(n) and math.isnan(d)) else SOURCE_PATIENT if own \
            else SOURCE_DEFAULT
        if math.isnan(n):
            n = patient_n[i] if own else float(standard.standard_n_fractions)
        if math.isnan(d):
            d = patient_total[i] / patient_n[i] if own else standard.standard_dose_per_fraction_gy
        target = asked["target_gard"][i]
        rows.append({"n_fractions": check_regimen_value(n, "n_fractions", pid),
                     "dose_per_fraction_gy": check_regimen_value(d, "dose_per_fraction_gy", pid),
                     "target_gard": check_regimen_value(default_target_gard if math.isnan(target) else target,
                                                        "target_gard", pid),
                     "regimen_source": source})
    return pd.DataFrame(rows, columns=[*REGIMEN_COLUMNS, "regimen_source"])
