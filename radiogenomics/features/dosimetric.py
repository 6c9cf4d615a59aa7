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
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from radiogenomics.errors import InputError
from radiogenomics.features import naming

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
#: Dose levels (Gy) of the Vx features (percent of the structure volume receiving at least x Gy).
VX_GY: tuple[float, ...] = (5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
#: Volume percentages of the Dx features (minimum dose to the hottest x % of the volume).
DX_PCT: tuple[float, ...] = (2.0, 50.0, 95.0, 98.0)
#: Bin width (Gy) of the differential DVH computed from a dose grid.
BIN_WIDTH_GY = 0.05


@lru_cache(maxsize=1)
def _geud_table() -> dict[str, Any]:
    data = yaml.safe_load((DATA_DIR / "geud_a.yaml").read_text(encoding="utf-8"))
    return dict(data)


def geud_a(structure: str) -> tuple[float, str]:
    """Volume-effect parameter ``a`` for a structure name and its source (data/geud_a.yaml)."""
    table = _geud_table()
    name = naming.slug(structure)
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
    """Dose metrics of a differential DVH (bin-centre doses in Gy, bin volumes in cc).

    ``mean_gy`` volume-weighted mean; ``min_gy``/``max_gy`` lowest/highest occupied bin; ``geud_gy`` from
    :func:`radiogenomics.radiobiology.geud` with volume-effect parameter ``a``; ``v<x>gy_pct`` percent of
    the volume receiving at least x Gy; ``d<x>_gy`` the minimum dose to the hottest x % of the volume.
    """
    from radiogenomics.radiobiology import geud

    dose = np.asarray(dose_gy, dtype=np.float64).ravel()
    vol = np.asarray(volume_cc, dtype=np.float64).ravel()
    if dose.shape != vol.shape or dose.size == 0:
        raise InputError("a DVH needs one volume per dose bin and at least one bin")
    if not (np.isfinite(dose).all() and np.isfinite(vol).all()) or (dose < 0).any() or (vol < 0).any():
        raise InputError("DVH doses and volumes must be finite and non-negative")
    total = float(vol.sum())
    if total <= 0:
        raise InputError("the DVH has zero volume")
    occupied = vol > 0
    order = np.argsort(dose)[::-1]  # hottest first
    cum_pct = 100.0 * np.cumsum(vol[order]) / total
    out: dict[str, float] = {
        "volume_cc": total,
        "mean_gy": float((dose * vol).sum() / total),
        "min_gy": float(dose[occupied].min()),
        "max_gy": float(dose[occupied].max()),
        "geud_gy": float(geud(dose, vol, a)),
    }
    for x in vx_gy:
        out[f"v{_fmt(x)}gy_pct"] = float(100.0 * vol[dose >= x - 1e-9].sum() / total)
    for x in dx_pct:
        idx = int(np.searchsorted(cum_pct, x - 1e-9))
        out[f"d{_fmt(x)}_gy"] = float(dose[order][min(idx, dose.size - 1)])
    return out


def structure_dose_features(dose: sitk.Image, masks: Mapping[str, sitk.Image],
                            bin_width_gy: float = BIN_WIDTH_GY) -> dict[str, float]:
    """``{"<structure>.<metric>": value}`` for every structure mask on a dose grid (Gy).

    The DVH comes from :func:`radiogenomics.radiobiology.compute_dvh`: a mask on the dose grid selects dose
    voxels; a mask on its own (e.g. CT) grid gets the dose interpolated trilinearly onto it, surface voxels
    supersampled. Mean, min and max dose come from those dose samples, not the bins.
    """
    from radiogenomics.radiobiology import compute_dvh

    out: dict[str, float] = {}
    for roi, mask in masks.items():
        dvh = compute_dvh(dose, mask, structure=roi, bin_width_gy=bin_width_gy)
        a, _ = geud_a(roi)
        metrics = dvh_metrics(dvh.dose_gy, dvh.volume_cc, a)
        metrics.update(mean_gy=dvh.mean_dose_gy, min_gy=dvh.min_dose_gy, max_gy=dvh.max_dose_gy)
        for metric, value in metrics.items():
            out[f"{naming.slug(roi)}.{metric}"] = float(value)
    return out


def dvh_table_features(dvh: pd.DataFrame) -> pd.DataFrame:
    """Dose features from dvh.csv (long: patient_id, structure, dose_gy, volume_cc; differential bins).

    Returns one row per patient (index patient_id) with ``dose.<structure>.<metric>`` columns.
    """
    missing = {"patient_id", "structure", "dose_gy", "volume_cc"} - set(dvh.columns)
    if missing:
        raise InputError(f"dvh table lacks column(s) {sorted(missing)}")
    rows: dict[str, dict[str, float]] = {}
    for (pid, structure), group in dvh.groupby(["patient_id", "structure"], sort=True):
        a, _ = geud_a(str(structure))
        try:
            metrics = dvh_metrics(group["dose_gy"].to_numpy(), group["volume_cc"].to_numpy(), a)
        except InputError as exc:
            raise InputError(f"dvh.csv structure {structure}: {exc}", patient_id=str(pid)) from exc
        target = rows.setdefault(str(pid), {})
        for metric, value in metrics.items():
            target[naming.dose_column(str(structure), metric)] = value
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = naming.PATIENT_ID
    return frame
