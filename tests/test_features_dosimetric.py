"""Dose features per structure from dose grids and from dvh.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.features import dosimetric


def test_dvh_metrics_by_hand() -> None:
    m = dosimetric.dvh_metrics([10.0, 20.0, 30.0], [1.0, 1.0, 2.0], a=1.0)
    assert m["volume_cc"] == 4.0
    assert m["mean_gy"] == pytest.approx(22.5)
    assert m["geud_gy"] == pytest.approx(22.5)  # a = 1: mean dose
    assert m["min_gy"] == 10.0 and m["max_gy"] == 30.0
    # Centres 10, 20, 30 Gy: 10 Gy bins, each bin's volume uniform between its edges, the edges limited to
    # [min, max] = [10, 30] Gy: [10, 15), [15, 25), [25, 30]. (Before issue 16.5 V_x counted whole bins by
    # their centre and D_x was a bin centre: v20 75 %, v30 50 %, d50 30 Gy, d95 10 Gy.)
    assert m["v20gy_pct"] == pytest.approx(62.5)  # half of [15, 25) + all of [25, 30]
    assert m["v30gy_pct"] == 0.0  # the top bin ends at the max, 30 Gy
    assert m["v10gy_pct"] == 100.0 and m["v40gy_pct"] == 0.0
    assert m["d50_gy"] == pytest.approx(25.0)  # the hottest 2 cc: the whole [25, 30] bin
    assert m["d95_gy"] == pytest.approx(11.0)  # 3.8 cc: 0.8 cc of the 1 cc in [10, 15) -> 10 + 0.2 * 5
    assert m["d2_gy"] == pytest.approx(29.8) and m["d98_gy"] == pytest.approx(10.4)
    serial = dosimetric.dvh_metrics([10.0, 20.0, 30.0], [1.0, 1.0, 2.0], a=40.0)
    assert 28.0 < serial["geud_gy"] <= 30.0  # large a tends to the maximum
    target = dosimetric.dvh_metrics([10.0, 20.0, 30.0], [1.0, 1.0, 2.0], a=-10.0)
    assert 10.0 <= target["geud_gy"] < 14.0  # negative a tends to the minimum
    assert list(m) == dosimetric.metric_names()


def test_dvh_metrics_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        dosimetric.dvh_metrics([1.0, 2.0], [1.0], a=1.0)
    with pytest.raises(InputError):
        dosimetric.dvh_metrics([1.0], [0.0], a=1.0)
    with pytest.raises(InputError):
        dosimetric.dvh_metrics([-1.0], [1.0], a=1.0)


def test_geud_parameter_lookup() -> None:
    assert dosimetric.geud_a("parotid_l")[0] == 1.0
    assert dosimetric.geud_a("Spinal Cord")[0] == 20.0
    assert dosimetric.geud_a("GTV")[0] < 0
    a, source = dosimetric.geud_a("brainstem")
    assert a == 1.0 and "mean dose" in source


def test_structure_features_on_a_known_grid() -> None:
    arr = np.zeros((10, 10, 10), dtype=np.float32)
    arr[:, :, :] = np.arange(10, dtype=np.float32)[None, None, :] * 5.0  # dose rises along x: 0..45 Gy
    dose = sitk.GetImageFromArray(arr)
    dose.SetSpacing((2.0, 2.0, 2.0))
    mask_arr = np.zeros((10, 10, 10), dtype=np.uint8)
    mask_arr[2:4, 2:4, 4:8] = 1  # x = 4..7 -> 20, 25, 30, 35 Gy, equal volumes
    mask = sitk.GetImageFromArray(mask_arr)
    mask.CopyInformation(dose)
    feats = dosimetric.structure_dose_features(dose, {"parotid_l": mask})
    assert feats["parotid_l.mean_gy"] == pytest.approx(27.5)
    assert feats["parotid_l.max_gy"] == pytest.approx(35.0)
    assert feats["parotid_l.volume_cc"] == pytest.approx(16 * 0.008)
    assert feats["parotid_l.v30gy_pct"] == pytest.approx(50.0)
    assert feats["parotid_l.geud_gy"] == pytest.approx(27.5, abs=0.05)
    # Exact at the bin edges: the hottest 25 % is the 35 Gy voxels, 50 % reaches 30 Gy, all of it 20 Gy.
    assert feats["parotid_l.d2_gy"] == pytest.approx(35.0)
    assert feats["parotid_l.d50_gy"] == pytest.approx(30.0)  # V(30 Gy) = 50 %: the 30 and 35 Gy voxels
    assert feats["parotid_l.d98_gy"] == pytest.approx(20.0, abs=0.05)


def test_dx_never_above_the_max_on_a_low_dose_grid() -> None:
    """Issue 16.5: a body far from the beam (max 0.0073 Gy) had d2 = 0.025 Gy, the centre of the first bin."""
    rng = np.random.default_rng(5)
    arr = rng.uniform(0.0, 0.0073, (6, 6, 6)).astype(np.float32)
    arr[0, 0, 0] = 0.0073
    dose = sitk.GetImageFromArray(arr)
    mask = sitk.GetImageFromArray(np.ones((6, 6, 6), dtype=np.uint8))
    mask.CopyInformation(dose)
    f = dosimetric.structure_dose_features(dose, {"body": mask})
    assert f["body.d2_gy"] <= f["body.max_gy"] == pytest.approx(0.0073)
    assert f["body.min_gy"] <= f["body.d98_gy"] <= f["body.d50_gy"] <= f["body.d2_gy"]
    assert f["body.min_gy"] <= f["body.geud_gy"] <= f["body.max_gy"]
    assert f["body.v5gy_pct"] == 0.0


def test_dvh_table_features_use_the_bin_width_column() -> None:
    """A dvh.csv written by DVH.to_frame carries each bin's width; D_x and V_x use those bins."""
    from radiogenomics.radiobiology import compute_dvh

    dose = np.array([[[10.02, 10.07, 19.0, 19.96]]])
    dvh = compute_dvh(dose, np.ones(dose.shape, np.uint8), voxel_volume_cc=0.5, bin_width_gy=1.0)
    table = dvh.to_frame("P1")
    assert set(table["bin_width_gy"]) == {1.0}
    feats = dosimetric.dvh_table_features(table).loc["P1"]
    # bins [10, 11) (1 cc) and [19, 20) (1 cc); min/max the occupied centres 10.5 and 19.5 Gy
    assert feats["dose.roi.min_gy"] == 10.5 and feats["dose.roi.max_gy"] == 19.5
    assert feats["dose.roi.d50_gy"] == pytest.approx(19.0)
    assert feats["dose.roi.v10gy_pct"] == 100.0 and feats["dose.roi.v20gy_pct"] == 0.0
    without = dosimetric.dvh_table_features(table.drop(columns="bin_width_gy")).loc["P1"]
    # without the column the width is inferred from the centres 10.5 and 19.5: 3 Gy ([18, 21) -> [18, 19.5])
    assert without["dose.roi.d50_gy"] == pytest.approx(18.0)


def test_dvh_csv_and_dose_grid_agree(synth_cohort: Path) -> None:
    from radiogenomics.cohort import load_cohort

    cohort = load_cohort(synth_cohort)
    assert cohort.dvh is not None
    table = dosimetric.dvh_table_features(cohort.dvh)
    pid = cohort.patients["patient_id"].iloc[0]
    rows = cohort.images[cohort.images["patient_id"] == pid]
    dose_row = rows[rows["modality"] == "DOSE"].iloc[0]
    ct = rows[(rows["modality"] == "CT") & (rows["roi"] == "parotid_l")].iloc[0]
    dose = cohort.read_image(dose_row)
    grid = dosimetric.structure_dose_features(dose, {"parotid_l": cohort.read_mask(ct)})
    assert grid["parotid_l.mean_gy"] == pytest.approx(table.loc[pid, "dose.parotid_l.mean_gy"], abs=0.2)
    assert grid["parotid_l.volume_cc"] == pytest.approx(table.loc[pid, "dose.parotid_l.volume_cc"], rel=0.02)
    assert grid["parotid_l.v30gy_pct"] == pytest.approx(table.loc[pid, "dose.parotid_l.v30gy_pct"], abs=2.0)


def test_dvh_table_needs_columns() -> None:
    with pytest.raises(InputError):
        dosimetric.dvh_table_features(pd.DataFrame({"patient_id": ["P"], "dose_gy": [1.0]}))
