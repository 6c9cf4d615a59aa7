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
    assert m["v20gy_pct"] == pytest.approx(75.0)
    assert m["v30gy_pct"] == pytest.approx(50.0)
    assert m["v40gy_pct"] == 0.0
    assert m["d50_gy"] == 30.0 and m["d95_gy"] == 10.0
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
