"""images.csv ``timepoint`` (contract section 8): parsing, validation, the Cohort helpers, and that mid-treatment
rows never reach the feature table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cohort_factory import SIZE, make_image, write_good_cohort
from test_features_helpers import write_fast_params

from radiogenomics.cli.app import main
from radiogenomics.cohort import load_cohort, validate_cohort
from radiogenomics.cohort.schema import fraction_timepoint, parse_timepoint, timepoint_fraction
from radiogenomics.errors import InputError
from radiogenomics.features.pipeline import ExtractOptions, extract
from radiogenomics.features.schema import read_feature_table

MID_ROWS = """\
HN-001,CT,images/HN-001/ct_fx10.nii.gz,images/HN-001/labels.nii.gz,GTV,1,fraction_10
HN-001,CT,images/HN-001/ct_fx10.nii.gz,images/HN-001/labels.nii.gz,parotid_l,2,fraction_10
HN-001,DOSE,images/HN-001/dose_fx10.mha,,,,fraction_10
"""


def _add_timepoints(root: Path, extra: str = MID_ROWS, planning: str = "") -> Path:
    """Add a timepoint column (``planning`` cells blank or as given) and the ``extra`` rows."""
    lines = (root / "images.csv").read_text().splitlines()
    out = [lines[0] + ",timepoint"] + [line + f",{planning}" for line in lines[1:]]
    (root / "images.csv").write_text("\n".join(out) + "\n" + extra)
    folder = root / "images" / "HN-001"
    rng = np.random.default_rng(5)
    sitk.WriteImage(make_image(rng.normal(0.0, 30.0, size=SIZE[::-1])), str(folder / "ct_fx10.nii.gz"))
    sitk.WriteImage(make_image(np.full(SIZE[::-1], 3.0)), str(folder / "dose_fx10.mha"))
    return root


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    return write_good_cohort(tmp_path / "cohort")


def _codes(root: Path, check_images: bool = False) -> dict[str, list]:
    found: dict[str, list] = {}
    for p in validate_cohort(root, check_images=check_images).problems:
        found.setdefault(p.code, []).append(p)
    return found


def test_timepoint_vocabulary() -> None:
    assert parse_timepoint("") == parse_timepoint(None) == parse_timepoint(" Planning ") == "planning"
    assert parse_timepoint("fraction_10") == parse_timepoint("Fraction_010") == "fraction_10"
    for bad in ("week2", "fraction_0", "fraction_-1", "fraction_x", "fraction_", "baseline", "fraction_1.5",
                "fraction_" + "9" * 5000):  # beyond int()'s digit limit: None, not ValueError
        assert parse_timepoint(bad) is None, bad
    assert timepoint_fraction("fraction_12") == 12 and timepoint_fraction("planning") is None
    assert fraction_timepoint(3) == "fraction_3"
    with pytest.raises(ValueError):
        fraction_timepoint(0)
    with pytest.raises(ValueError):
        timepoint_fraction("week2")


def test_a_cohort_without_the_column_reads_as_before(good: Path) -> None:
    cohort = load_cohort(good)
    assert cohort.images is cohort.all_images
    assert set(cohort.images["timepoint"]) == {"planning"}
    assert len(cohort.image_rows()) == 5 and len(cohort.image_rows("HN-001", "CT")) == 2
    assert cohort.timepoints("HN-001") == ["planning"] and cohort.timepoints("nobody") == []
    assert validate_cohort(good).ok


def test_mid_treatment_rows_are_kept_apart(good: Path) -> None:
    cohort = load_cohort(_add_timepoints(good))
    assert len(cohort.all_images) == 8 and len(cohort.images) == 5
    assert set(cohort.images["timepoint"]) == {"planning"}
    assert list(cohort.images.index) == list(range(5))
    assert len(cohort.image_rows("HN-001", "CT")) == 2  # the default is the planning timepoint
    mid = cohort.image_rows("HN-001", "CT", timepoint="Fraction_10")
    assert list(mid["roi"]) == ["GTV", "parotid_l"] and mid["image"].iloc[0].name == "ct_fx10.nii.gz"
    assert len(cohort.image_rows("HN-001", timepoint=None)) == 6
    assert cohort.image_rows(timepoint="fraction_11").empty
    with pytest.raises(ValueError):
        cohort.image_rows(timepoint="week2")
    assert cohort.timepoints("HN-001") == ["planning", "fraction_10"]
    assert cohort.timepoints("HN-002") == ["planning"] and cohort.timepoints() == ["planning", "fraction_10"]
    # the regimen's first 10 fractions (70 Gy / 35), or what patients.csv says was delivered
    course = cohort.delivered_course("HN-001", "fraction_10")
    assert course.n_fractions == 10 and course.dose_gy == pytest.approx(20.0) and course.source == "timepoint"
    with pytest.raises(ValueError):
        cohort.delivered_course("HN-001", "planning")
    report = validate_cohort(good)
    assert report.ok and report.n_image_rows == 8
    assert [p.code for p in report.problems] == []  # same grid as the planning CT: nothing to note
    assert any(s.get("timepoint") == "fraction_10" for s in report.structures)
    assert all("timepoint" not in s for s in report.structures if s["file"] != "images/HN-001/labels.nii.gz")


def test_explicit_planning_cells_are_the_same_as_blank(good: Path) -> None:
    cohort = load_cohort(_add_timepoints(good, planning="planning"))
    assert len(cohort.images) == 5 and cohort.timepoints("HN-001") == ["planning", "fraction_10"]


def test_bad_timepoints_name_patient_file_row_and_fix(good: Path) -> None:
    extra = MID_ROWS + ("HN-002,CT,images/HN-002/ct.nrrd,images/HN-002/labels.nrrd,GTV,,week2\n"
                        "HN-002,CT,images/HN-002/ct.nrrd,images/HN-002/labels.nrrd,GTV,,fraction_0\n"
                        "HN-002,CT,images/HN-002/ct.nrrd,images/HN-002/labels.nrrd,GTV,,fraction_33\n"
                        "HN-001,CT,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,GTV,1,\n"
                        "HN-001,CT,images/HN-001/ct_fx10.nii.gz,images/HN-001/labels.nii.gz,GTV,1,fraction_10\n")
    found = _codes(_add_timepoints(good, extra))
    invalid = found["invalid_timepoint"]
    assert [(p.row, p.patient_id, p.file, p.column) for p in invalid] == [
        (9, "HN-002", "images.csv", "timepoint"), (10, "HN-002", "images.csv", "timepoint")]
    assert "'week2'" in invalid[0].message and "fraction_10" in invalid[0].fix
    after = found["timepoint_after_course"]  # HN-002 has 33 fractions
    assert [(p.row, p.patient_id) for p in after] == [(11, "HN-002")] and "33" in after[0].message
    dupes = found["duplicate_image_row"]  # a second planning GTV row, a second fraction_10 GTV row
    assert [(p.row, p.patient_id) for p in dupes] == [(12, "HN-001"), (13, "HN-001")]
    assert "planning image in row 1" in dupes[0].message and "fraction_10 image in row 6" in dupes[1].message
    with pytest.raises(InputError, match="invalid_timepoint"):
        load_cohort(good)


def test_delivered_columns(good: Path) -> None:
    text = (good / "patients.csv").read_text().splitlines()
    rows = [text[0] + ",delivered_n_fractions,delivered_dose_gy",
            text[1] + ",10,20", text[2] + ",,"]
    (good / "patients.csv").write_text("\n".join(rows) + "\n")
    cohort = load_cohort(_add_timepoints(good))
    assert str(cohort.patients["delivered_n_fractions"].dtype) == "Int64"
    assert cohort.patients["delivered_dose_gy"].tolist()[0] == 20.0
    course = cohort.delivered_course("HN-001", "fraction_10")
    assert (course.n_fractions, course.dose_gy, course.source) == (10, 20.0, "patients.csv")
    assert validate_cohort(good).ok

    def codes(n: str, dose: str, timepoint_k: int = 10) -> dict[str, list]:
        lines = [text[0] + ",delivered_n_fractions,delivered_dose_gy", text[1] + f",{n},{dose}", text[2] + ",,"]
        (good / "patients.csv").write_text("\n".join(lines) + "\n")
        images = (good / "images.csv").read_text().replace("fraction_10", f"fraction_{timepoint_k}")
        (good / "images.csv").write_text(images)
        return _codes(good)

    assert [p.severity for p in codes("-1", "20")["out_of_range_delivered_n_fractions"]] == ["error"]
    assert codes("10", "-2")["negative_dose"][0].column == "delivered_dose_gy"
    outside = codes("10", "30")["delivered_dose_per_fraction_outside_rails"]  # 3 Gy/fx, head_neck rails 1.6-2.4
    assert outside[0].severity == "warning" and outside[0].patient_id == "HN-001" and outside[0].row == 1
    assert codes("10", "4000")["implausible_dose"][0].column == "delivered_dose_gy"  # cGy typed as Gy
    assert codes("36", "72")["delivered_exceeds_course"][0].severity == "error"  # 36 of 35 fractions
    late = codes("8", "16", timepoint_k=12)["timepoint_after_delivered"]  # imaging after 12, 8 delivered
    assert late[0].row == 6 and late[0].patient_id == "HN-001" and "delivered_n_fractions = 8" in late[0].message


def test_grid_change_and_missing_baseline_are_noted(good: Path) -> None:
    root = _add_timepoints(good, MID_ROWS + "HN-002,PET_FDG,images/HN-002/pet_fx5.nii.gz,,,,fraction_5\n")
    moved = make_image(np.zeros(SIZE[::-1]), origin=(-10.0, -13.5, -18.0))
    sitk.WriteImage(moved, str(root / "images/HN-002/pet_fx5.nii.gz"))
    sitk.WriteImage(make_image(np.zeros(SIZE[::-1]), spacing=(2.0, 1.5, 3.0)),
                    str(root / "images/HN-001/ct_fx10.nii.gz"))
    found = _codes(root, check_images=True)
    noted = found["timepoint_grid_differs"]
    assert [(p.severity, p.patient_id, p.row, p.file) for p in noted] == [
        ("warning", "HN-001", 6, "images/HN-001/ct_fx10.nii.gz")]
    assert "spacing" in noted[0].message and "images/HN-001/ct.nii.gz" in noted[0].message
    missing = found["no_planning_image"]
    assert [(p.severity, p.patient_id, p.row) for p in missing] == [("warning", "HN-002", 9)]
    # the mask of a mid-treatment row must still match its own image
    assert {p.patient_id for p in found["geometry_mismatch"]} == {"HN-001"}


def test_cli_validate_reports_timepoint_problems(good: Path, capsys: pytest.CaptureFixture) -> None:
    _add_timepoints(good, MID_ROWS + "HN-002,CT,images/HN-002/ct.nrrd,images/HN-002/labels.nrrd,GTV,,fraction_40\n")
    assert main(["validate", str(good), "--json"]) == 2
    payload = json.loads(capsys.readouterr().out)
    codes = {(p["code"], p["patient_id"], p["row"]) for p in payload["problems"]}
    assert ("timepoint_after_course", "HN-002", 9) in codes and payload["n_image_rows"] == 9


def test_mid_treatment_rows_never_enter_the_feature_table(good: Path, tmp_path: Path) -> None:
    """extract on the cohort with fraction_10 CT and DOSE rows gives the table of the cohort without them."""
    with_mid = tmp_path / "with_mid"
    shutil.copytree(good, with_mid)
    _add_timepoints(with_mid)
    params = write_fast_params(tmp_path / "fast.yaml")
    tables = {}
    for name, root in (("plain", good), ("mid", with_mid)):
        out = tmp_path / f"{name}.parquet"
        extract(root, out, ExtractOptions(workers=1, cache_dir=tmp_path / f"cache_{name}", params=params))
        tables[name] = read_feature_table(out)
    pd.testing.assert_frame_equal(tables["plain"], tables["mid"])
    assert any(c.startswith("dose.") for c in tables["mid"].columns)
