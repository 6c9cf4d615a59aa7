"""Loader and validator on a hand-written cohort and on a deliberately broken one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cohort_factory import SIZE, make_image, make_labels, write_good_cohort

from radiogenomics.cli.app import main  # noqa: E402
from radiogenomics.cohort import load_cohort, validate_cohort
from radiogenomics.errors import InputError


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    return write_good_cohort(tmp_path / "good")


@pytest.fixture()
def broken(good: Path) -> Path:
    root = good
    with open(root / "patients.csv", "a") as fh:
        fh.write("HN-002,head_neck,B,50,F,neg,T1,60,30,5,0,,,\n")        # duplicate ID
        fh.write("HN-003,head_neck,A,70,M,pos,T2,-5,0,12,2,7,,\n")       # negative dose, 0 fx, lc_event 2, grade 7
        fh.write("HN-004,brain,A,40,X,maybe,T2,7000,35,abc,1,1,,\n")     # site, sex, hpv, cGy dose, months text
    with open(root / "images.csv", "a") as fh:
        fh.write("HN-999,CT,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,GTV,1\n")  # unknown patient
        fh.write("HN-003,CT,images/HN-003/missing.nii.gz,images/HN-003/labels.nii.gz,GTV,1\n")  # missing files
        fh.write("HN-001,PET_FDG,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,GTV,9\n")  # label absent
        fh.write("HN-004,MR_T3,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,GTV,1\n")  # bad modality
    # geometry mismatch for HN-002: labels on another spacing
    sitk.WriteImage(make_image(make_labels(), spacing=(2.0, 2.0, 3.0), pixel=np.uint8),
                    str(root / "images/HN-002/labels.nrrd"))
    # negative dose grid for HN-002
    dose = np.full(SIZE[::-1], -1.0)
    sitk.WriteImage(make_image(dose), str(root / "images/HN-002/dose.mha"))
    expr = pd.read_csv(root / "expression.csv", dtype=str).drop(columns=["IRF1"])
    expr.loc[0, "CA9"] = "abc"
    expr.loc[1, "VEGFA"] = "inf"
    expr.to_csv(root / "expression.csv", index=False)
    return root


def test_good_cohort_loads_typed(good: Path) -> None:
    cohort = load_cohort(good)
    assert cohort.patient_ids == ["HN-001", "HN-002"]
    assert str(cohort.patients["n_fractions"].dtype) == "Int64"
    assert cohort.patients["total_dose_gy"].tolist() == [70.0, 66.0]
    assert pd.isna(cohort.patients.loc[1, "tox_xerostomia"])
    assert "smoker" in cohort.clinical_columns  # unknown columns are kept as covariates
    assert cohort.expression is not None and cohort.expression.loc["HN-002", "ABL1"] > 0
    assert all(Path(p).is_absolute() for p in cohort.images["image"])
    row = cohort.image_rows("HN-001", "CT").iloc[1]
    mask = cohort.read_mask(row)
    assert int(sitk.GetArrayViewFromImage(mask).sum()) == int((make_labels() == 2).sum())
    assert cohort.meta["name"] == "handmade"


def test_good_cohort_validates(good: Path) -> None:
    report = validate_cohort(good)
    assert report.ok, [p.one_line() for p in report.problems]
    assert report.n_patients == 2 and report.n_image_rows == 5


EXPECTED = {
    ("duplicate_patient_id", "HN-002"), ("negative_dose", "HN-003"), ("out_of_range_n_fractions", "HN-003"),
    ("invalid_lc_event", "HN-003"), ("invalid_tox_grade", "HN-003"), ("invalid_site", "HN-004"),
    ("invalid_sex", "HN-004"), ("invalid_hpv", "HN-004"), ("implausible_dose", "HN-004"),
    ("non_numeric", "HN-004"), ("unknown_patient_id", "HN-999"), ("missing_file", "HN-003"),
    ("empty_roi", "HN-001"), ("invalid_modality", "HN-004"), ("geometry_mismatch", "HN-002"),
    ("negative_dose", "HN-002"), ("missing_rsi_gene", None), ("non_numeric_expression", "HN-001"),
    ("non_finite_expression", "HN-002"), ("implausible_dose_per_fraction", "HN-004"),
}


def test_broken_cohort_every_problem_named(broken: Path) -> None:
    report = validate_cohort(broken)
    assert not report.ok
    found = {(p.code, p.patient_id) for p in report.problems}
    assert EXPECTED <= found, EXPECTED - found
    rsi = [p for p in report.problems if p.code == "missing_rsi_gene"]
    assert rsi[0].column == "IRF1" and "IRF1" in rsi[0].message
    geo = next(p for p in report.problems if p.code == "geometry_mismatch")
    assert "labels.nrrd" in geo.message and "ct.nrrd" in geo.message and "spacing" in geo.message
    assert all(p.fix for p in report.problems)
    missing = [p for p in report.problems if p.code == "missing_file"]
    assert {p.column for p in missing} == {"image", "mask"}


def test_load_cohort_raises_with_count(broken: Path) -> None:
    with pytest.raises(InputError, match=r"problem\(s\)"):
        load_cohort(broken)


def test_missing_patients_table_and_folder(tmp_path: Path) -> None:
    assert validate_cohort(tmp_path / "nope").problems[0].code == "not_a_folder"
    (tmp_path / "empty").mkdir()
    report = validate_cohort(tmp_path / "empty")
    assert [p.code for p in report.problems] == ["missing_file"]


def test_missing_required_column_and_bad_yaml(good: Path) -> None:
    (good / "cohort.yaml").write_text("format_version: 2\n")
    df = pd.read_csv(good / "patients.csv", dtype=str).drop(columns=["site"])
    df.to_csv(good / "patients.csv", index=False)
    codes = {p.code for p in validate_cohort(good).problems}
    assert {"missing_column", "unsupported_format_version"} <= codes


def test_corrupt_image_reported(good: Path) -> None:
    (good / "images/HN-001/ct.nii.gz").write_bytes(b"not a nifti file at all")
    report = validate_cohort(good)
    bad = [p for p in report.problems if p.code == "unreadable_image"]
    assert len(bad) == 1 and bad[0].patient_id == "HN-001"


def test_cli_validate_exit_codes_and_json(broken: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(write_good_cohort(tmp_path / "fresh"))]) == 0
    capsys.readouterr()
    assert main(["validate", str(broken), "--json"]) == 2
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["ok"] is False and payload["n_errors"] >= len(EXPECTED)
    assert captured.err.strip().count("\n") == 0 and "invalid" in captured.err


def test_lenient_where_the_contract_is(good: Path) -> None:
    """A CT row without a mask is a warning; PAK2 in the CDK1 slot is a warning with the gene_map fix."""
    with open(good / "images.csv", "a") as fh:
        fh.write("HN-002,PET_FDG,images/HN-002/ct.nrrd,,,\n")
    expr = pd.read_csv(good / "expression.csv", dtype=str).rename(columns={"CDK1": "PAK2"})
    expr.to_csv(good / "expression.csv", index=False)
    report = validate_cohort(good)
    assert report.ok, [p.one_line() for p in report.errors]
    codes = {p.code for p in report.warnings}
    assert codes == {"missing_mask_path", "rsi_slot_substitute"}
    assert "gene_map" in next(p for p in report.warnings if p.code == "rsi_slot_substitute").fix


def test_header_only_patients_table(tmp_path: Path) -> None:
    (tmp_path / "patients.csv").write_text("patient_id,site\n")
    codes = [p.code for p in validate_cohort(tmp_path).problems]
    assert codes == ["no_patients"]


def test_blank_rsi_value_is_a_warning(good: Path) -> None:
    expr = pd.read_csv(good / "expression.csv", dtype=str)
    expr.loc[0, "STAT1"] = ""
    expr.to_csv(good / "expression.csv", index=False)
    report = validate_cohort(good)
    assert report.ok
    assert [(p.code, p.patient_id, p.column) for p in report.warnings] == [("missing_rsi_value", "HN-001", "STAT1")]


def test_truncated_gzip_image_is_reported(good: Path) -> None:
    """ITK zero-fills a truncated .nii.gz; the validator must not call it readable."""
    path = good / "images/HN-001/ct.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    bad = [p for p in validate_cohort(good).problems if p.code == "unreadable_image"]
    assert len(bad) == 1 and bad[0].patient_id == "HN-001" and "truncated" in bad[0].message
