"""What a caller may send the prescriber, checked at the boundary (contract sections 2 and 6).

* :func:`check_columns`: columns the model does not know are refused, naming each and the closest known name
  (``genomic.RSI`` -> ``genomic.rsi``), except the safety gate's inputs (:func:`is_gate_column`): ``dose.*``
  columns of any structure (OAR limits also for organs the model does not use), ``clinical.site``,
  ``clinical.total_dose_gy``, ``clinical.n_fractions``.
* :func:`check_impossible_values`: values no patient can have (an age of 5000 years, a negative dose, a
  fraction count of 0 or 2.5, a site the rails do not know) are an InputError naming the patient and the field
  (422 in the API, exit 2 in the CLI). Values that are merely unusual are the training domain's business
  (:mod:`radiogenomics.models.domain`). The bounds are the cohort validator's (:mod:`radiogenomics.cohort.schema`).
* :func:`oar_doses_of_rows`: each row's ``dose.<structure>.{mean_gy,max_gy,volume_cc}`` as OAR doses of the
  reference plan for the gate's OAR limits.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.cohort import schema as cohort_schema
from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.radiobiology.oar_checks import OARDose

SITE_COLUMN = naming.clinical_column("site")
TOTAL_DOSE_COLUMN = naming.clinical_column("total_dose_gy")
N_FRACTIONS_COLUMN = naming.clinical_column("n_fractions")
AGE_COLUMN = naming.clinical_column("age_years")
#: Clinical columns the gate reads whether or not the model uses them.
GATE_COLUMNS: tuple[str, ...] = (SITE_COLUMN, TOTAL_DOSE_COLUMN, N_FRACTIONS_COLUMN)
#: The Eschrich RSI's theoretical range (sum of the 10 coefficients times ranks 1..10; radiobiology.md).
RSI_THEORETICAL_RANGE: tuple[float, float] = (-0.61, 1.22)
#: Dose metrics of a structure that make an OAR dose (the rest, D_x and V_x, are model features only).
_OAR_METRICS = {"mean_gy": "mean_gy", "max_gy": "max_gy", "volume_cc": "volume_cc"}
#: A dose in Gy no structure can receive in a course (twice the cohort validator's largest plausible prescription).
MAX_POSSIBLE_DOSE_GY = 2.0 * cohort_schema.MAX_PLAUSIBLE_TOTAL_DOSE_GY


def is_gate_column(column: str) -> bool:
    """A column the safety gate reads even when the model has no such feature: ``dose.<structure>.<metric>``
    and :data:`GATE_COLUMNS`."""
    if column in GATE_COLUMNS:
        return True
    parts = column.split(".")
    return len(parts) == 3 and parts[0] == naming.DOSE and all(parts)


def closest_name(column: str, known: Collection[str]) -> str | None:
    """The known column a misspelt one most likely meant: the same name in another case, else the closest by
    :func:`difflib.get_close_matches` (ratio >= 0.75); None when nothing is close."""
    for name in known:
        if name.lower() == column.lower():
            return name
    return next(iter(difflib.get_close_matches(column, list(known), n=1, cutoff=0.75)), None)


def check_columns(columns: Sequence[str], known: Collection[str], allowed: Collection[str] = (), *,
                  gate: bool = True) -> None:
    """InputError for columns that are neither ``known`` (the schema), ``allowed`` (regimen columns) nor, with
    ``gate``, the safety gate's input, naming the first ten and, for each, the closest known name."""
    known_set = set(known) | set(allowed)
    unknown = [str(c) for c in columns if c not in known_set and not (gate and is_gate_column(str(c)))]
    if not unknown:
        return
    shown = []
    for column in unknown[:10]:
        close = closest_name(column, known_set)
        shown.append(f"{column} (did you mean {close}?)" if close else column)
    more = f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
    raise InputError(f"unknown feature column(s) {', '.join(shown)}{more}: the model was trained without them",
                     fix="send only columns of the model's feature schema (GET /v1/model), dose.* columns, "
                         "or the regimen columns n_fractions, dose_per_fraction_gy, target_gard")


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _first_bad(frame: pd.DataFrame, column: str, ids: Sequence[str], bad: np.ndarray, what: str, fix: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = frame[column].iloc[i]
        shown = f"{float(value):g}" if isinstance(value, int | float | np.number) and not isinstance(value, bool) \
            else repr(value)
        raise InputError(f"{column} = {shown} is impossible ({what})", patient_id=ids[i], fix=fix)


def check_impossible_values(frame: pd.DataFrame, ids: Sequence[str], sites: Collection[str]) -> None:
    """InputError naming the patient and the field for a value no patient can have (see the module docstring)."""
    with np.errstate(invalid="ignore"):
        if SITE_COLUMN in frame.columns:
            given = frame[SITE_COLUMN]
            bad = np.array([v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) not in sites
                            for v in given.tolist()], dtype=bool)
            _first_bad(frame, SITE_COLUMN, ids, bad, f"not a site of the rails: {', '.join(sorted(sites))}",
                       "use one of the contract's sites (head_neck, lung, breast, prostate, other)")
        bounds = {AGE_COLUMN: (0.0, cohort_schema.MAX_PLAUSIBLE_AGE_YEARS, "an age in years"),
                  TOTAL_DOSE_COLUMN: (0.0, cohort_schema.MAX_PLAUSIBLE_TOTAL_DOSE_GY, "a total dose in Gy"),
                  N_FRACTIONS_COLUMN: (1.0, float(cohort_schema.MAX_PLAUSIBLE_N_FRACTIONS), "a number of fractions"),
                  naming.RSI_COLUMN: (*RSI_THEORETICAL_RANGE, "the 10-gene RSI's range (Eschrich 2009)")}
        for column, (low, high, what) in bounds.items():
            if column in frame.columns:
                values = _numbers(frame, column)
                bad = ~np.isnan(values) & ((values < low) | (values > high))
                if column == TOTAL_DOSE_COLUMN:
                    bad |= values == 0.0
                if column == N_FRACTIONS_COLUMN:
                    bad |= ~np.isnan(values) & (values != np.round(values))
                _first_bad(frame, column, ids, bad, f"{what} must lie in [{low:g}, {high:g}]",
                           f"check {column}: units and value")
        for column in (c for c in frame.columns if is_gate_column(str(c)) and str(c).startswith(f"{naming.DOSE}.")):
            values = _numbers(frame, str(column))
            metric = str(column).rsplit(".", 1)[1]
            high = 100.0 if metric.endswith("_pct") else math.inf if metric == "volume_cc" else MAX_POSSIBLE_DOSE_GY
            bad = ~np.isnan(values) & ((values < 0) | (values > high * (1.0 + 1e-9)))  # round-off of 100 %
            _first_bad(frame, str(column), ids, bad, f"must lie in [0, {high:g}]",
                       "doses in Gy (not cGy), volumes in cc, V_x in percent")


def oar_doses_of_rows(frame: pd.DataFrame) -> list[dict[str, OARDose]]:
    """Per row, ``{structure: OARDose}`` from ``dose.<structure>.{mean_gy,max_gy,volume_cc}`` (structures with
    a mean or a maximum dose only)."""
    by_structure: dict[str, dict[str, str]] = {}
    for column in (str(c) for c in frame.columns):
        parts = column.split(".")
        if len(parts) == 3 and parts[0] == naming.DOSE and parts[2] in _OAR_METRICS:
            by_structure.setdefault(parts[1], {})[parts[2]] = column
    values = {c: _numbers(frame, c) for columns in by_structure.values() for c in columns.values()}
    out: list[dict[str, OARDose]] = []
    for i in range(len(frame)):
        row: dict[str, OARDose] = {}
        for structure, columns in by_structure.items():
            metric = {m: float(values[c][i]) for m, c in columns.items()}
            if math.isfinite(metric.get("mean_gy", math.nan)) or math.isfinite(metric.get("max_gy", math.nan)):
                row[structure] = OARDose(structure, metric.get("mean_gy", math.nan), metric.get("max_gy", math.nan),
                                         metric.get("volume_cc", math.nan))
        out.append(row)
    return out


def numbers_of(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric column (NaN where missing, absent or not a number)."""
    return _numbers(frame, column) if column in frame.columns else np.full(len(frame), np.nan)


def finite_number(value: Any) -> float | None:
    """A finite float from a number or numeric text (``"55.0"``); None for anything else (booleans included)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def first_text(values: Sequence[Any]) -> list[str | None]:
    """Text values as str, missing (None, NaN, empty) as None."""
    return [str(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) else None
            for v in values]
