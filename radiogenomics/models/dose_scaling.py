"""Dose features of a plan scaled to another prescription ("what if the dose changes"), and on the EQD2 scale.

A plan scaled by f multiplies every voxel dose by f. Mean, min, max, gEUD and D_x of every structure are
homogeneous of degree 1 (gEUD: Niemierko, Med Phys 1997;24:103) and are scaled exactly; V_x (percent of the
structure receiving at least x Gy) needs the DVH and is recomputed from ``DVH.scaled(f)`` with the
extraction's own rule (:func:`radiogenomics.features.dosimetric.dvh_features`). Used by
:meth:`radiogenomics.models.toxicity.ToxicityClassifier.predict_proba_at_dose`.

:func:`eqd2_dose_features` puts the same linear metrics on a fractionation-independent scale: the EQD2 at
the organ's alpha/beta (:func:`structure_alpha_beta_gy`) for the organ's own dose per fraction ``D/n``
(Fowler, Br J Radiol 1989;62:679).
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
from radiogenomics.radiobiology import DVH, dvh_from_table, eqd2
from radiogenomics.radiobiology.tissues import load_tissues

_LINEAR = re.compile(r"^(mean|min|max|geud)_gy$|^d[0-9p]+_gy$")
_VX = re.compile(r"^v([0-9p]+)gy_pct$")
#: The dose metric that does not change with the prescription (structure volume).
VOLUME_METRIC = "volume_cc"
#: Treatment columns that are doses: scaled with the plan in the what-if.
PRESCRIPTION_DOSE_COLUMNS = ("clinical.total_dose_gy", "clinical.dose_per_fraction_gy")
#: The plan's number of fractions in the feature table (patients.csv ``n_fractions``).
N_FRACTIONS_COLUMN = "clinical.n_fractions"
#: alpha/beta (Gy) of a dose structure without a row in the tissue table (a target volume, an unknown name):
#: generic late-responding normal tissue, the value ``radiobiology/data/tissues.yaml`` gives the same way.
GENERIC_ALPHA_BETA_GY = 3.0
GENERIC_ALPHA_BETA_SOURCE = ("generic late-responding normal tissue, alpha/beta ~3 Gy (Joiner & van der Kogel "
                             "(eds), Basic Clinical Radiobiology, 4th ed. 2009, ch. 8)")


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


def structure_alpha_beta_gy(structure: str) -> tuple[float, str | None]:
    """(alpha/beta in Gy, None) of a dose structure from the tissue table, or (3 Gy generic, why) without a row.

    ``structure`` is the name in the ``dose.<structure>.<metric>`` column (a slug such as ``parotid_l``,
    ``submandibular_gland_r``, ``pharyngeal_constrictors``); the tissue table resolves it through the TG-263
    alias table (``parotid_l`` -> Parotid_L -> the Parotid row). A name that is not an organ at risk of that
    table (a target volume such as ``gtv``, an unknown organ) gets :data:`GENERIC_ALPHA_BETA_GY` and the
    reason as the second element, for the caller to log: never silently.
    """
    try:
        tissue, _ = load_tissues().lookup(structure)
    except InputError as exc:
        return GENERIC_ALPHA_BETA_GY, f"{exc.reason}: generic {GENERIC_ALPHA_BETA_SOURCE}"
    return tissue.alpha_beta_gy, None


def n_fractions_per_row(X: pd.DataFrame, n_fractions: Any = None) -> np.ndarray:
    """The number of fractions of each row: ``n_fractions`` (scalar or one per row; must be finite and > 0,
    whole or not) when given, else the table's ``clinical.n_fractions`` with NaN where it is missing, not a
    number or not positive (such a row has no EQD2)."""
    if n_fractions is not None:
        try:
            n = np.broadcast_to(np.asarray(n_fractions, dtype=np.float64), (len(X),)).copy()
        except (TypeError, ValueError):
            raise InputError(f"n_fractions must be a number or one number per patient ({len(X)}), got "
                             f"{n_fractions!r}", fix="pass n_fractions=35 or an array of one value per row") from None
        if not (np.isfinite(n) & (n > 0)).all():
            raise InputError("n_fractions must be finite and > 0", fix="pass a positive number of fractions")
        return n
    if N_FRACTIONS_COLUMN not in X.columns:
        return np.full(len(X), np.nan)
    n = pd.to_numeric(X[N_FRACTIONS_COLUMN], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(n) & (n > 0), n, np.nan)


def eqd2_dose_features(X: pd.DataFrame, n_fractions: Any, alpha_beta_gy: Mapping[str, float], *,
                       columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The feature table with every linear dose metric of ``dose.<structure>.*`` as EQD2 (Gy).

    For a metric D (mean, min, max, gEUD, D_x) of an organ over ``n`` fractions the organ's dose per
    fraction is ``D/n`` (not the target's), so ``EQD2 = D (D/n + a/b) / (2 + a/b)`` with ``a/b =
    alpha_beta_gy[structure]`` (:func:`radiogenomics.radiobiology.eqd2`; Fowler, Br J Radiol 1989;62:679).
    ``n_fractions``: one value per row (or a scalar); a row whose n is NaN gets NaN for every converted metric
    (its dose on this scale is unknown: never imputed here). ``columns`` limits the conversion to these
    columns (a model's inputs); everything else is returned unchanged: ``volume_cc``, V_x (``v<x>gy_pct``, a
    volume above a physical dose threshold: stays physical) and the prescription columns.

    Min, max and D_x are order statistics of the voxel doses and EQD2 is increasing in D, so their EQD2 is
    exactly the min / max / D_x of the voxel EQD2 distribution. The EQD2 of a mean or gEUD is an
    approximation of the mean (gEUD) of the voxel EQD2s: exact for a uniform dose, otherwise lower (EQD2 is
    convex in D, Jensen's inequality) by ``var(D) / (n (2 + a/b))`` for the mean. Converting a DVH bin by bin
    would be exact but needs the DVH in training and in prediction alike; the feature table has only the
    metrics, so the conversion is done on the metrics, the same way in fit and in prediction.
    """
    from radiogenomics.features.preprocessing import numeric_matrix, with_columns

    names = tuple(X.columns.tolist())
    if columns is not None:
        wanted = set(columns)
        names = tuple(c for c in names if c in wanted)
    structures = {c: parts[0] for c in _dose_columns(names)[0] if (parts := split_dose_column(c)) is not None}
    if not structures:
        return X.copy()
    missing_ab = sorted({s for s in structures.values() if s not in alpha_beta_gy})
    if missing_ab:
        raise InputError(f"no alpha/beta for the dose structure(s) {missing_ab}",
                         fix="give alpha_beta_gy a value for each (structure_alpha_beta_gy)")
    converted = list(structures)
    n = np.broadcast_to(np.asarray(n_fractions, dtype=np.float64), (len(X),))
    dose = numeric_matrix(X[converted])
    ab = np.array([alpha_beta_gy[structures[c]] for c in converted], dtype=np.float64)
    negative = dose < 0
    if negative.any():
        row, col = (int(i[0]) for i in np.nonzero(negative))
        raise InputError(f"{converted[col]} is negative ({dose[row, col]:g} Gy)", patient_id=_patient_ids(X)[row],
                         fix="dose metrics are >= 0: check the dose features")
    valid = np.isfinite(dose) & np.isfinite(n)[:, None]
    out = np.full(dose.shape, np.nan)
    out[np.isposinf(dose) & np.isfinite(n)[:, None]] = np.inf  # left for the model's own input check to refuse
    if valid.any():
        out[valid] = eqd2(dose[valid], np.broadcast_to(n[:, None], dose.shape)[valid],
                          np.broadcast_to(ab[None, :], dose.shape)[valid])
    return with_columns(X, converted, out)


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
    (:func:`radiogenomics.features.dosimetric.dvh_features`; structure names are matched after slugging); a
    V_x column without a DVH becomes NaN, or raises an ``InputError`` when it is in ``required``.
    ``columns`` limits the scaling to these columns (a model's inputs); the others are returned unchanged.
    """
    from radiogenomics.features.dosimetric import dvh_features, geud_a
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
            patient = {naming.structure_slug(s): d for s, d in (dvhs or {}).get(pid, {}).items()}
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
            metrics = dvh_features(scaled, geud_a(structure)[0], vx_gy=[v for v in thresholds_gy if v is not None],
                                   dx_pct=())
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
