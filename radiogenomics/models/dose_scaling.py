"""Dose features of a plan scaled to another prescription ("what if the dose changes").

A plan scaled by f multiplies every voxel dose by f. Mean, min, max, gEUD and D_x of every structure are
homogeneous of degree 1 (gEUD: Niemierko, Med Phys 1997;24:103) and are scaled exactly; V_x (percent of the
structure receiving at least x Gy) needs the DVH and is recomputed from ``DVH.scaled(f)`` with the
extraction's own rule (:func:`radiogenomics.features.dosimetric.dvh_metrics`). Used by
:meth:`radiogenomics.models.toxicity.ToxicityClassifier.predict_proba_at_dose`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.radiobiology import DVH, dvh_from_table

_LINEAR = re.compile(r"^(mean|min|max|geud)_gy$|^d[0-9p]+_gy$")
_VX = re.compile(r"^v([0-9p]+)gy_pct$")
#: The dose metric that does not change with the prescription (structure volume).
VOLUME_METRIC = "volume_cc"
#: Treatment columns that are doses: scaled with the plan in the what-if.
PRESCRIPTION_DOSE_COLUMNS = ("clinical.total_dose_gy", "clinical.dose_per_fraction_gy")


def split_dose_column(column: str) -> tuple[str, str] | None:
    """``(structure, metric)`` of a ``dose.<structure>.<metric>`` column, else None."""
    ns, _, rest = column.partition(".")
    if ns != naming.DOSE or rest.count(".") != 1:
        return None
    structure, metric = rest.split(".")
    return structure, metric


def is_linear_dose_metric(metric: str) -> bool:
    """True for the metrics that scale exactly with the plan: mean, min, max, gEUD, D_x (Gy)."""
    return bool(_LINEAR.match(metric))


def vx_threshold_gy(metric: str) -> float | None:
    """x (Gy) of a ``v<x>gy_pct`` metric, else None."""
    match = _VX.match(metric)
    return float(match.group(1).replace("p", ".")) if match else None


def dose_scale_factors(X: pd.DataFrame, *, prescription_gy: Any = None, scale: Any = None) -> np.ndarray:
    """One plan-scaling factor per patient from a new prescription (``/ clinical.total_dose_gy``) or a scale."""
    if (prescription_gy is None) == (scale is None):
        raise InputError("give exactly one of prescription_gy and scale",
                         fix="prescription_gy=70 (Gy) or scale=1.1 (the delivered plan x 1.1)")
    if scale is not None:
        factor = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(X),)).copy()
        name = "scale"
    else:
        delivered_col = naming.clinical_column("total_dose_gy")
        if delivered_col not in X.columns:
            raise InputError(f"prescription_gy needs the delivered prescription {delivered_col}",
                             fix="add total_dose_gy to patients.csv, or pass scale= instead")
        delivered = pd.to_numeric(X[delivered_col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(delivered) & (delivered > 0))
        if bad.any():
            pid = str(_patient_ids(X)[int(np.flatnonzero(bad)[0])])
            raise InputError(f"{delivered_col} must be a positive dose to scale the plan", patient_id=pid,
                             fix="fill total_dose_gy, or pass scale= instead")
        factor = np.broadcast_to(np.asarray(prescription_gy, dtype=np.float64), (len(X),)) / delivered
        name = "prescription_gy"
    if not (np.isfinite(factor) & (factor > 0)).all():
        raise InputError(f"{name} must give positive finite plan-scaling factors", fix=f"pass {name} > 0")
    return factor


def _patient_ids(X: pd.DataFrame) -> list[str]:
    ids = X[naming.PATIENT_ID] if naming.PATIENT_ID in X.columns else X.index.to_series()
    return [str(p) for p in ids]


#: One structure's V_x columns: ``(structure, ((column, metric), ...))``.
_VxGroup = tuple[str, tuple[tuple[str, str], ...]]


@lru_cache(maxsize=64)
def _dose_columns(columns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[_VxGroup, ...]]:
    """(linear dose columns, ((structure, ((V_x column, metric), ...)), ...)) among ``columns``: classified once
    per column set (a request's table has the model's ~1,400 columns every time)."""
    linear: list[str] = []
    vx_columns: dict[str, list[tuple[str, str]]] = {}
    for column in columns:
        parts = split_dose_column(column)
        if parts is not None and is_linear_dose_metric(parts[1]):
            linear.append(column)
        elif parts is not None and vx_threshold_gy(parts[1]) is not None:
            vx_columns.setdefault(parts[0], []).append((column, parts[1]))
    linear += [c for c in PRESCRIPTION_DOSE_COLUMNS if c in columns]
    return tuple(linear), tuple((k, tuple(v)) for k, v in vx_columns.items())


def scale_dose_features(X: pd.DataFrame, factor: Any, *, dvhs: Mapping[str, Mapping[str, DVH]] | None = None,
                        required: Sequence[str] = (), columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The feature table of the same plans scaled by ``factor`` (scalar or one per patient).

    Linear dose metrics (``mean/min/max/geud_gy``, ``d<x>_gy``) of every ``dose.*`` column and the dose
    columns of the prescription (``clinical.total_dose_gy``, ``clinical.dose_per_fraction_gy``) are
    multiplied by the factor: exact for a scaled plan (gEUD is homogeneous of degree 1, Niemierko 1997).
    ``volume_cc`` and ``n_fractions`` are unchanged. V_x (``v<x>gy_pct``) is recomputed from
    ``dvhs[patient][structure].scaled(f)`` with the same rule as the extraction
    (:func:`radiogenomics.features.dosimetric.dvh_metrics`; structure names are matched after slugging); a
    V_x column without a DVH becomes NaN, or raises an ``InputError`` when it is in ``required``.
    ``columns`` limits the scaling to these columns (a model's inputs); the others are returned unchanged.
    """
    from radiogenomics.features.dosimetric import dvh_metrics, geud_a
    from radiogenomics.features.preprocessing import numeric_matrix, with_columns

    f = np.broadcast_to(np.asarray(factor, dtype=np.float64), (len(X),))
    names = tuple(X.columns.tolist())
    if columns is not None:
        wanted = set(columns)
        names = tuple(c for c in names if c in wanted)
    linear_columns, vx_columns = _dose_columns(names)
    linear = list(linear_columns)
    out = with_columns(X, linear, numeric_matrix(X[linear]) * f[:, None]) if linear else X.copy()
    ids = _patient_ids(X)
    needed = set(required)
    vx_names: list[str] = []
    vx_values: list[np.ndarray] = []
    for structure, structure_columns in vx_columns:
        values = np.full((len(X), len(structure_columns)), np.nan)
        thresholds_gy = [vx_threshold_gy(m) for _, m in structure_columns]
        for row, pid in enumerate(ids):
            patient = {naming.slug(s): d for s, d in (dvhs or {}).get(pid, {}).items()}
            dvh = patient.get(structure)
            if dvh is None:
                missing = [c for c, _ in structure_columns if c in needed]
                if missing:
                    raise InputError(f"the model uses {missing[0]}, a V_x metric that needs the DVH of "
                                     f"{structure!r} to be recomputed at another dose", patient_id=pid,
                                     fix="pass dvhs={patient_id: {structure: DVH}} (e.g. dvhs_from_table(dvh.csv)),"
                                         " or fit the model with dose_metrics='linear'")
                continue
            scaled = dvh.scaled(float(f[row]))
            metrics = dvh_metrics(scaled.dose_gy, scaled.volume_cc, geud_a(structure)[0],
                                  vx_gy=[v for v in thresholds_gy if v is not None], dx_pct=())
            values[row] = [metrics[m] for _, m in structure_columns]
        vx_names += [column for column, _ in structure_columns]
        vx_values.append(values)
    return with_columns(out, vx_names, np.hstack(vx_values)) if vx_names else out


def dvhs_from_table(table: pd.DataFrame) -> dict[str, dict[str, DVH]]:
    """``{patient_id: {structure: DVH}}`` from a cohort ``dvh.csv`` table (``dvh_from_table`` per pair)."""
    result: dict[str, dict[str, DVH]] = {}
    for (pid, structure), rows in table.groupby(["patient_id", "structure"], sort=True):
        result.setdefault(str(pid), {})[str(structure)] = dvh_from_table(rows, str(structure))
    return result
