"""The synthetic cohort is a valid format-v1 cohort with the promised content (uses the session fixture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from radiogenomics.radiobiology import RSI_GENES, alpha_from_rsi
from radiogenomics.synthetic.generate import PATIENT_COLUMNS, TRUTH_COLUMNS
from radiogenomics.synthetic.genomics import HYPOXIA_GENES, TOXICITY_GENES, all_genes

ROIS = {"GTV": 1, "parotid_l": 2, "parotid_r": 3, "spinal_cord": 4}


@pytest.fixture(scope="module")
def tables(synth_cohort: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(synth_cohort / f"{name}.csv", dtype={"patient_id": str})
            for name in ("patients", "images", "expression", "truth", "dvh")}


def test_cohort_validates(synth_cohort: Path) -> None:
    from radiogenomics.cohort.validate import validate_cohort

    report = validate_cohort(synth_cohort)
    assert report.ok, [p.one_line() for p in report.problems]
    assert report.problems == []
    assert report.n_patients == 12
    assert report.n_image_rows == 12 * (3 * 4 + 1)


def test_cohort_yaml(synth_cohort: Path) -> None:
    meta = yaml.safe_load((synth_cohort / "cohort.yaml").read_text())
    assert meta["format_version"] == 1
    assert meta["generator"]["seed"] == 7 and meta["generator"]["n_patients"] == 12
    assert meta["generator"]["grid_size"] == 32


def test_patients_table(tables: dict[str, pd.DataFrame]) -> None:
    p = tables["patients"]
    assert tuple(p.columns) == PATIENT_COLUMNS
    assert p["patient_id"].tolist() == [f"SYN{i:04d}" for i in range(1, 13)]
    assert set(p["site"]) == {"head_neck"}
    assert set(p["sex"]) <= {"F", "M"} and set(p["hpv"]) <= {"pos", "neg"}
    assert set(p["t_stage"]) <= {"T1", "T2", "T3", "T4"}
    assert p["total_dose_gy"].between(66, 70).all() and p["n_fractions"].between(30, 35).all()
    assert set(p["lc_event"]) <= {0, 1} and (p["lc_months"] > 0).all()
    for col in ("tox_xerostomia", "tox_dysphagia"):
        assert p[col].dtype.kind == "i" and p[col].between(0, 5).all()
    assert p["tox_xerostomia"].max() <= 3  # CTCAE xerostomia has no grade 4


def test_images_table_and_files(synth_cohort: Path, tables: dict[str, pd.DataFrame]) -> None:
    im = tables["images"]
    assert list(im.columns) == ["patient_id", "modality", "image", "mask", "roi", "label"]
    for pid, rows in im.groupby("patient_id"):
        dose = rows[rows["modality"] == "DOSE"]
        assert len(dose) == 1 and dose["mask"].isna().all() and dose["roi"].isna().all()
        for modality in ("CT", "PET_FDG", "PET_FMISO"):
            sub = rows[rows["modality"] == modality]
            assert dict(zip(sub["roi"], sub["label"], strict=True)) == ROIS, (pid, modality)
            assert sub["mask"].nunique() == 1  # one label map per patient
    pid = "SYN0001"
    rows = im[im["patient_id"] == pid]
    labels = sitk.ReadImage(str(synth_cohort / rows["mask"].dropna().iloc[0]))
    assert labels.GetPixelID() == sitk.sitkUInt8
    arr = sitk.GetArrayFromImage(labels)
    for label in ROIS.values():
        assert (arr == label).sum() > 0
    dtypes = {"CT": sitk.sitkInt16, "PET_FDG": sitk.sitkFloat32, "PET_FMISO": sitk.sitkFloat32,
              "DOSE": sitk.sitkFloat32}
    for modality, pixel in dtypes.items():
        image = sitk.ReadImage(str(synth_cohort / rows.loc[rows["modality"] == modality, "image"].iloc[0]))
        assert image.GetPixelID() == pixel, modality
        assert image.GetSize() == labels.GetSize() == (32, 32, 32)
        assert image.GetSpacing() == pytest.approx(labels.GetSpacing())
        assert image.GetOrigin() == pytest.approx(labels.GetOrigin())
        assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    # field of view stays ~13-16 cm whatever the grid
    fov = np.array(labels.GetSpacing()) * np.array(labels.GetSize())
    assert fov == pytest.approx([128.0, 128.0, 160.0])


def test_image_values_are_physical(synth_cohort: Path) -> None:
    folder = synth_cohort / "images" / "SYN0002"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "ct.nii.gz")))
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "dose.nii.gz")))
    fdg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pet_fdg.nii.gz")))
    assert ct.min() <= -950 and ct.max() >= 500  # air and bone
    assert -60 < np.median(ct[labels == 1]) < 150  # soft-tissue tumour
    patients = pd.read_csv(synth_cohort / "patients.csv").set_index("patient_id")
    rx = patients.at["SYN0002", "total_dose_gy"]
    assert np.mean(dose[labels == 1]) == pytest.approx(rx, rel=0.03)
    assert dose.max() < 1.1 * rx and dose.min() >= 0
    assert dose[labels == 4].max() < 50.0  # cord kept below tolerance
    assert fdg[labels == 1].mean() > 1.5 * fdg[labels == 4].mean()


def test_expression_table(tables: dict[str, pd.DataFrame]) -> None:
    ex = tables["expression"]
    assert ex.columns[0] == "patient_id"
    genes = list(ex.columns[1:])
    assert genes == list(all_genes()) and len(set(genes)) == len(genes)
    assert set(RSI_GENES) <= set(genes) and set(HYPOXIA_GENES) <= set(genes) and set(TOXICITY_GENES) <= set(genes)
    assert len(genes) >= 200 + 10 + 15
    values = ex[genes].to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 16


def test_truth_table(tables: dict[str, pd.DataFrame]) -> None:
    t = tables["truth"]
    assert tuple(t.columns) == TRUTH_COLUMNS
    assert t["patient_id"].tolist() == tables["patients"]["patient_id"].tolist()
    assert np.allclose(t["alpha_per_gy"], alpha_from_rsi(t["rsi_true"].to_numpy(), 0.05), rtol=1e-4)
    assert np.allclose(t["alpha_beta_gy"], t["alpha_per_gy"] / t["beta_per_gy2"], rtol=1e-4)
    assert t["hypoxic_fraction"].between(0, 1).all() and t["tcp_true"].between(0, 1).all()
    assert t["ntcp_xerostomia"].between(0, 1).all() and t["ntcp_dysphagia"].between(0, 1).all()
    assert (t["clonogens_total"] > 0).all() and (t["tox_susceptibility"] > 0).all()
    assert (t["center"] == tables["patients"]["center"]).all()


def test_dvh_matches_label_map(synth_cohort: Path, tables: dict[str, pd.DataFrame]) -> None:
    dvh = tables["dvh"]
    assert list(dvh.columns) == ["patient_id", "structure", "dose_gy", "volume_cc"]
    assert {"GTV", "parotid_l", "parotid_r", "spinal_cord"} <= set(dvh["structure"])
    labels = sitk.ReadImage(str(synth_cohort / "images" / "SYN0003" / "labels.nii.gz"))
    arr = sitk.GetArrayFromImage(labels)
    voxel_cc = float(np.prod(labels.GetSpacing())) / 1000.0
    sub = dvh[(dvh["patient_id"] == "SYN0003") & (dvh["structure"] == "GTV")]
    assert sub["volume_cc"].sum() == pytest.approx((arr == 1).sum() * voxel_cc, rel=1e-4)
    truth = tables["truth"].set_index("patient_id")
    assert sub["volume_cc"].sum() == pytest.approx(truth.at["SYN0003", "gtv_volume_cc"], rel=1e-3)
