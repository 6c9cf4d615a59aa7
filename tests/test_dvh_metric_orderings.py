"""Issue 16.5: the dose metrics of every DVH keep their orderings (docs/features.md, "Dose features").

min <= D98 <= D95 <= D50 <= D2 <= max, min <= mean <= max, min <= gEUD <= max, V_x in [0, 100] and falling in
x (100 % at x <= min, 0 % above max), D_x falling in x, and V(D_x) >= x %: over random dose grids and masks
(masks on the dose grid and on a finer grid of their own) and random dvh.csv tables (regular, sparse, with
and without the bin_width_gy column, irregular centres, a dose listed twice).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from radiogenomics.errors import InputError
from radiogenomics.features import dosimetric
from radiogenomics.radiobiology import DVH, compute_dvh, dvh_from_table

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Dose scales (Gy) of the random grids: a body far from the beam (the issue's 0.0073 Gy), a few bins, a plan.
SCALES = (1e-4, 0.0073, 0.3, 2.0, 80.0)


def check_orderings(m: dict[str, float], where: str = "") -> None:
    lo, hi = m["min_gy"], m["max_gy"]
    assert 0.0 <= lo <= hi, (where, m)
    assert lo <= m["d98_gy"] <= m["d95_gy"] <= m["d50_gy"] <= m["d2_gy"] <= hi, (where, m)
    assert lo <= m["mean_gy"] <= hi, (where, m)
    assert lo <= m["geud_gy"] <= hi, (where, m)
    vx = [m[f"v{dosimetric._fmt(x)}gy_pct"] for x in dosimetric.VX_GY]
    assert all(0.0 <= v <= 100.0 for v in vx), (where, m)
    assert all(a >= b for a, b in zip(vx, vx[1:], strict=False)), (where, m)


def v_at(dvh: DVH, dose_gy: float) -> float:
    """V(dose) in % (one threshold per call: close doses would share a metric name)."""
    return dosimetric.dvh_features(dvh, 1.0, vx_gy=[dose_gy], dx_pct=())[f"v{dosimetric._fmt(dose_gy)}gy_pct"]


def d_at(dvh: DVH, pct: float) -> float:
    return dosimetric.dvh_features(dvh, 1.0, vx_gy=(), dx_pct=[pct])[f"d{dosimetric._fmt(pct)}_gy"]


def check_dense(dvh: DVH) -> None:
    """V_x on a dense dose grid and D_x on a dense volume grid: monotone, bounded, and inverses."""
    lo, hi = float(dvh.min_dose_gy), float(dvh.max_dose_gy)
    doses = np.array(sorted({*np.linspace(0.0, 1.25 * hi + 1e-3, 41).tolist(), lo, hi}))
    pcts = np.linspace(0.5, 100.0, 41)
    v = np.array([v_at(dvh, float(x)) for x in doses])
    d = np.array([d_at(dvh, float(p)) for p in pcts])
    assert ((v >= 0) & (v <= 100)).all() and (np.diff(v) <= 0).all(), v
    assert (v[doses <= lo] == 100.0).all() and (v[doses > hi] == 0.0).all(), (lo, hi, v)
    assert ((d >= lo) & (d <= hi)).all() and (np.diff(d) <= 0).all(), (lo, hi, d)
    for dose, pct in zip(d, pcts, strict=True):
        assert v_at(dvh, float(dose)) >= pct - 1e-6, (dose, pct)


@st.composite
def grids(draw: Any) -> tuple[sitk.Image, sitk.Image, float]:
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=3, max_size=3)))
    scale = draw(st.sampled_from(SCALES))
    unit = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0)))
    if draw(st.booleans()):  # a few dose levels: many voxels at the same dose, on and near bin edges
        unit = np.round(unit * 4) / 4
    arr = (unit * scale).astype(np.float32)
    dose = sitk.GetImageFromArray(arr)
    dose.SetSpacing((2.0, 2.0, 3.0))
    sel = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
    assume(sel.any())
    width = draw(st.sampled_from((0.05, 0.1, 0.5, 1.0)))
    if draw(st.booleans()):  # the mask on the dose grid
        mask = sitk.GetImageFromArray(sel.astype(np.uint8))
        mask.CopyInformation(dose)
        return dose, mask, width
    # the mask on a finer grid of its own inside the dose grid: the dose is interpolated onto it
    fine = np.repeat(np.repeat(np.repeat(sel, 2, axis=0), 2, axis=1), 2, axis=2)[: 2 * shape[0] - 1,
                                                                                 : 2 * shape[1] - 1,
                                                                                 : 2 * shape[2] - 1]
    assume(fine.any())
    mask = sitk.GetImageFromArray(fine.astype(np.uint8))
    mask.SetSpacing((1.0, 1.0, 1.5))
    mask.SetOrigin(dose.GetOrigin())
    return dose, mask, width


@SETTINGS
@given(grids())
def test_grid_dose_features_keep_their_orderings(case: tuple[sitk.Image, sitk.Image, float]) -> None:
    dose, mask, width = case
    try:
        dvh = compute_dvh(dose, mask, structure="roi", bin_width_gy=width)
    except InputError:  # a fine mask whose supersampled surface leaves the dose grid
        assume(False)
        raise
    feats = dosimetric.structure_dose_features(dose, {"roi": mask}, bin_width_gy=width)
    check_orderings({k.split(".", 1)[1]: v for k, v in feats.items()}, "grid")
    check_dense(dvh)


@st.composite
def dvh_tables(draw: Any) -> pd.DataFrame:
    n = draw(st.integers(1, 12))
    kind = draw(st.sampled_from(("regular", "irregular", "duplicate")))
    if kind == "irregular":  # centres off any bin grid anchored at 0 Gy
        centres = np.array(sorted(draw(st.sets(st.floats(0.0, 90.0, allow_subnormal=False), min_size=n,
                                               max_size=n))))
        centres = np.unique(np.round(centres, 4))
    else:
        width = draw(st.sampled_from((0.01, 0.05, 0.1, 0.5, 1.0, 2.5)))
        bins = sorted(draw(st.sets(st.integers(0, 400), min_size=n, max_size=n)))  # sparse: non-empty bins only
        centres = np.round((np.array(bins) + 0.5) * width, 4)
    vols = np.array(draw(st.lists(st.floats(0.0, 50.0, allow_subnormal=False), min_size=centres.size,
                                  max_size=centres.size)))
    assume(vols.sum() > 1e-6)
    frame = pd.DataFrame({"patient_id": "P1", "structure": "Parotid_L", "dose_gy": centres, "volume_cc": vols})
    if kind == "duplicate":
        frame = pd.concat([frame, frame.iloc[:1].assign(volume_cc=1.0)], ignore_index=True)
    elif kind == "regular" and draw(st.booleans()):
        frame["bin_width_gy"] = width
    return frame


@SETTINGS
@given(dvh_tables())
def test_dvh_csv_dose_features_keep_their_orderings(table: pd.DataFrame) -> None:
    row = dosimetric.dvh_table_features(table).loc["P1"]
    check_orderings({k.split(".", 2)[2]: float(v) for k, v in row.items()}, "dvh.csv")
    if not table["dose_gy"].duplicated().any():
        dvh = dvh_from_table(table, "Parotid_L")
        check_dense(dvh)
        check_dense(dvh.scaled(1.37))  # the what-if of another prescription (models.dose_scaling)


@pytest.mark.parametrize("x", [2.0, 50.0, 95.0, 98.0])
def test_dx_scales_with_the_plan(x: float) -> None:
    """D_x of a plan scaled by f is f D_x (the what-if scales d<x>_gy linearly, models.dose_scaling)."""
    rng = np.random.default_rng(3)
    dose = rng.uniform(0.0, 66.0, (1, 4, 50))
    dvh = compute_dvh(dose, np.ones(dose.shape, np.uint8), voxel_volume_cc=0.01, bin_width_gy=0.05)
    name = f"d{dosimetric._fmt(x)}_gy"
    base = dosimetric.dvh_features(dvh, 1.0, dx_pct=[x])[name]
    assert dosimetric.dvh_features(dvh.scaled(1.1), 1.0, dx_pct=[x])[name] == pytest.approx(1.1 * base, rel=1e-12)
