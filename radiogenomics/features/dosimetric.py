"""DVH-derived dose features per structure (mean dose, gEUD, Vx, Dx).

Two sources give the same features: a DOSE grid (Gy) with the ROI masks of the patient (DVH from
:mod:`radiogenomics.radiobiology.dvh`), or precomputed differential DVHs from dvh.csv. Both go through
:func:`dvh_metrics`; gEUD uses :func:`radiogenomics.radiobiology.geud`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from radiogenomics.errors import InputError
from radiogenomics.features import naming

if TYPE_CHECKING:
    from radiogenomics.radiobiology import DVH

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
#: Dose levels (Gy) of the Vx features (percent of the structure volume receiving at least x Gy).
VX_GY: tuple[float, ...] = (5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
#: Volume percentages of the Dx features (minimum dose to the hottest x % of the volume).
DX_PCT: tuple[float, ...] = (2.0, 50.0, 95.0, 98.0)
#: Bin width (Gy) of the differential DVH computed from a dose grid.
BIN_WIDTH_GY = 0.05
#: Relative tolerance (of the structure volume) of the cumulative volume reaching x % in D_x.
_VOLUME_RTOL = 1e-9


@lru_cache(maxsize=1)
def _geud_table() -> dict[str, Any]:
    data = yaml.safe_load((DATA_DIR / "geud_a.yaml").read_text(encoding="utf-8"))
    return dict(data)


def geud_a(structure: str) -> tuple[float, str]:
    """Volume-effect parameter ``a`` for a structure name and its source (data/geud_a.yaml)."""
    table = _geud_table()
    name = naming.structure_slug(structure)
    for key, entry in table["structures"].items():
        if name.startswith(key):
            return float(entry["a"]), str(entry["source"])
    return float(table["default_a"]), str(table["default_source"])


def metric_names(vx_gy: Sequence[float] = VX_GY, dx_pct: Sequence[float] = DX_PCT) -> list[str]:
    """Names of the per-structure metrics, in output order (units in the names)."""
    return (["volume_cc", "mean_gy", "min_gy", "max_gy", "geud_gy"]
            + [f"v{_fmt(x)}gy_pct" for x in vx_gy] + [f"d{_fmt(x)}_gy" for x in dx_pct])


def _fmt(x: float) -> str:
    return f"{x:g}".replace(".", "p")


def dvh_metrics(dose_gy: Any, volume_cc: Any, a: float, *, vx_gy: Sequence[float] = VX_GY,
                dx_pct: Sequence[float] = DX_PCT) -> dict[str, float]:
    """Dose metrics of a differential DVH given as bin-centre doses (Gy) and bin volumes (cc).

    The bins are those of :func:`radiogenomics.radiobiology.dvh_from_table`: the width is inferred from the
    centres (:func:`radiogenomics.radiobiology.dvh.infer_bin_width_gy`), a dose listed twice is one bin (its
    volumes add up); ``min_gy``/``max_gy`` are the lowest/highest occupied bin centres and ``mean_gy`` the
    volume-weighted mean of the centres. The metrics are :func:`dvh_features` of that DVH.
    """
    from radiogenomics.radiobiology import DVH
    from radiogenomics.radiobiology.dvh import infer_bin_width_gy

    dose = np.asarray(dose_gy, dtype=np.float64).ravel()
    vol = np.asarray(volume_cc, dtype=np.float64).ravel()
    if dose.shape != vol.shape or dose.size == 0:
        raise InputError("a DVH needs one volume per dose bin and at least one bin")
    if not (np.isfinite(dose).all() and np.isfinite(vol).all()) or (dose < 0).any() or (vol < 0).any():
        raise InputError("DVH doses and volumes must be finite and non-negative")
    centres, inverse = np.unique(dose, return_inverse=True)
    volumes = np.bincount(inverse.ravel(), weights=vol, minlength=centres.size).astype(np.float64)
    total = float(volumes.sum())
    if total <= 0:
        raise InputError("the DVH has zero volume")
    occupied = centres[volumes > 0]
    dvh = DVH(structure="dvh", dose_gy=centres, volume_cc=volumes, bin_width_gy=infer_bin_width_gy(centres),
              voxel_volume_cc=float("nan"), mean_dose_gy=float((centres * volumes).sum() / total),
              min_dose_gy=float(occupied.min()), max_dose_gy=float(occupied.max()), n_voxels=0)
    return dvh_features(dvh, a, vx_gy=vx_gy, dx_pct=dx_pct)


def dvh_features(dvh: DVH, a: float, *, vx_gy: Sequence[float] = VX_GY,
                 dx_pct: Sequence[float] = DX_PCT) -> dict[str, float]:
    """Dose metrics of a :class:`radiogenomics.radiobiology.DVH` (doses in Gy, volumes in cc).

    One rule for the dose grid, dvh.csv and a DVH scaled to another prescription (docs/features.md,
    "Dose features"). ``min_gy``/``max_gy``/``mean_gy``: the DVH's own (the dose samples of a grid; for
    dvh.csv the extreme occupied bin centres and the centre-weighted mean), the mean kept within
    [min, max]. The cumulative DVH ``V(D)`` spreads each bin's volume uniformly between its edges, the
    edges limited to [min, max] (the extreme bins hold no dose outside the sampled range):
    ``v<x>gy_pct = 100 V(x) / V`` and ``d<x>_gy`` = the highest D with ``V(D) >= x %`` (the dose where the
    cumulative volume, counted from the hottest dose, reaches x %; linear inside the bin). So
    min <= D98 <= D95 <= D50 <= D2 <= max, V_x falls from 100 % at x <= min to 0 % above max, and D_x and
    V_x are inverses. ``geud_gy``: :func:`radiogenomics.radiobiology.geud` of the bin centres limited to
    [min, max], with volume-effect parameter ``a``.
    """
    from radiogenomics.radiobiology import geud

    vol = np.asarray(dvh.volume_cc, dtype=np.float64)
    total = float(vol.sum())
    if total <= 0:
        raise InputError(f"the DVH of {dvh.structure} has zero volume")
    lo, hi = float(dvh.min_dose_gy), float(dvh.max_dose_gy)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 <= lo <= hi):
        raise InputError(f"the DVH of {dvh.structure} has min dose {lo} Gy and max dose {hi} Gy")
    lower, upper = _bounded_bins(np.asarray(dvh.bin_lower_gy), np.asarray(dvh.bin_upper_gy), lo, hi)
    out: dict[str, float] = {
        "volume_cc": total,
        "mean_gy": float(np.clip(dvh.mean_dose_gy, lo, hi)),
        "min_gy": lo,
        "max_gy": hi,
        "geud_gy": float(np.clip(geud(np.clip(dvh.dose_gy, lo, hi), vol, a), lo, hi)),
    }
    for x in vx_gy:
        out[f"v{_fmt(x)}gy_pct"] = float(np.clip(100.0 * (_volume_at_least(lower, upper, vol, x) / total), 0.0, 100.0))
    above = np.append(np.cumsum(vol[::-1])[::-1], 0.0)  # volume in bin i and above: V(lower_i)
    for x in dx_pct:
        out[f"d{_fmt(x)}_gy"] = _dose_at_volume(lower, upper, above, x, lo, hi)
    return out


def _bounded_bins(lower: np.ndarray, upper: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges limited to [lo, hi], ascending and disjoint (a float-noise overlap of neighbours removed)."""
    low = np.maximum.accumulate(np.clip(lower, lo, hi))
    up = np.clip(upper, lo, hi)
    up[:-1] = np.minimum(up[:-1], low[1:])
    return low, np.maximum(up, low)


def _volume_at_least(lower: np.ndarray, upper: np.ndarray, vol: np.ndarray, dose_gy: float) -> float:
    """V(D): volume receiving >= ``dose_gy``, each bin's volume uniform between its edges (a zero-width bin is
    a point dose, counted when it is >= D)."""
    width = upper - lower
    safe = np.where(width > 0, width, 1.0)
    frac = np.where(width > 0, np.clip((upper - dose_gy) / safe, 0.0, 1.0), lower >= dose_gy)
    return float((vol * frac).sum())


def _dose_at_volume(lower: np.ndarray, upper: np.ndarray, above: np.ndarray, pct: float, lo: float,
                    hi: float) -> float:
    """The highest D with V(D) >= ``pct`` % of the volume (linear inside the bin where it is reached)."""
    total = float(above[0])
    target = pct / 100.0 * total
    k = int(np.flatnonzero(above[:-1] >= target - _VOLUME_RTOL * total)[-1])
    step = above[k] - above[k + 1]
    frac = float(np.clip((above[k] - target) / step, 0.0, 1.0)) if step > 0 else 0.0
    dose = lower[k] + frac * (upper[k] - lower[k])
    return float(np.clip(dose, max(lower[k], lo), min(upper[k], hi)))


def structure_dose_features(dose: sitk.Image, masks: Mapping[str, sitk.Image],
                            bin_width_gy: float = BIN_WIDTH_GY) -> dict[str, float]:
    """``{"<structure>.<metric>": value}`` for every structure mask on a dose grid (Gy).

    The DVH comes from :func:`radiogenomics.radiobiology.compute_dvh`: a mask on the dose grid selects dose
    voxels; a mask on its own (e.g. CT) grid gets the dose interpolated trilinearly onto it, surface voxels
    supersampled. Mean, min and max dose come from those dose samples, not the bins; the other metrics from
    the DVH's bins limited to [min, max] (:func:`dvh_features`).
    """
    from radiogenomics.radiobiology import compute_dvh

    out: dict[str, float] = {}
    for roi, mask in masks.items():
        dvh = compute_dvh(dose, mask, structure=roi, bin_width_gy=bin_width_gy)
        a, _ = geud_a(roi)
        for metric, value in dvh_features(dvh, a).items():
            out[f"{naming.structure_slug(roi)}.{metric}"] = float(value)
    return out


def dvh_table_features(dvh: pd.DataFrame) -> pd.DataFrame:
    """Dose features from dvh.csv (long: patient_id, structure, dose_gy, volume_cc; differential bins).

    Returns one row per patient (index patient_id) with ``dose.<structure>.<metric>`` columns. The bins are
    those of :func:`radiogenomics.radiobiology.dvh_from_table` (the optional ``bin_width_gy`` column, else the
    width inferred from the centres); the metrics are :func:`dvh_features` of that DVH.
    """
    from radiogenomics.radiobiology import dvh_from_table
    from radiogenomics.radiobiology.dvh import BIN_WIDTH_COLUMN

    missing = {"patient_id", "structure", "dose_gy", "volume_cc"} - set(dvh.columns)
    if missing:
        raise InputError(f"dvh table lacks column(s) {sorted(missing)}")
    rows: dict[str, dict[str, float]] = {}
    keyed: dict[tuple[str, str], str] = {}
    for (pid, structure), group in dvh.groupby(["patient_id", "structure"], sort=True):
        key = naming.structure_slug(str(structure))
        other = keyed.setdefault((str(pid), key), str(structure))
        if other != str(structure):
            raise InputError(f"dvh.csv structures {other!r} and {structure!r} are the same organ ({key})",
                             patient_id=str(pid), fix="keep one DVH per organ in dvh.csv")
        a, _ = geud_a(str(structure))
        try:
            if (BIN_WIDTH_COLUMN in group.columns and group[BIN_WIDTH_COLUMN].notna().all()
                    and not group["dose_gy"].duplicated().any()):
                metrics = dvh_features(dvh_from_table(group, structure), a)
            else:  # the same bins, inferred from the centres (a dose listed twice is one bin)
                metrics = dvh_metrics(group["dose_gy"].to_numpy(), group["volume_cc"].to_numpy(), a)
        except InputError as exc:
            raise InputError(f"dvh.csv structure {structure}: {exc}", patient_id=str(pid)) from exc
        target = rows.setdefault(str(pid), {})
        for metric, value in metrics.items():
            target[naming.dose_column(str(structure), metric)] = value
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = naming.PATIENT_ID
    return frame
