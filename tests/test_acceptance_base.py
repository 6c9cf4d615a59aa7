"""Independent acceptance checks of issue 7 ("Trustworthy base"), written from the issue text, the contract and
the user docs (docs/*.md, README.md, ``radiogenomics --help``), not from the implementation's own tests.

Only public entry points are used: the CLI (``radiogenomics.cli.app.main``), ``radiogenomics.radiobiology``,
the ``radiogenomics.cohort`` readers (and the documented RTSTRUCT writer), and
``radiogenomics.features.{preprocessing,schema,harmonisation}``. Every input is built here: CT series with
pydicom, RTSTRUCTs with rt-utils 1.2.7 (square pixels), NIfTI with SimpleITK, hand-written tables, analytic
dose fields. Reference values are recomputed here from the published formulas (RSI ranks and coefficients,
GARD, LKB), never taken from the package.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
from scipy import stats

from radiogenomics.cli.app import main

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------
# Independent reference values (transcribed from the publications via docs/radiobiology.md's table)
# ---------------------------------------------------------------------------------------------------------

#: Eschrich et al. IJROBP 2009;75:489, in slot order; RSI = sum c_g * rank_g (rank within one sample, 1 = lowest).
RSI_COEF = {
    "AR": -0.00980092741843779, "JUN": 0.0128282697929755, "STAT1": 0.0254552046046931,
    "PRKCB": -0.00175888592095915, "RELA": -0.00381713588908642, "ABL1": 0.107021274358643,
    "SUMO1": -0.00025093287356907, "CDK1": -0.00924314364533049, "HDAC1": -0.020446868981449,
    "IRF1": -0.0441682719957224,
}
RSI_GENES = list(RSI_COEF)
BETA = 0.05  # Gy^-2, Scott et al. Lancet Oncol 2017


def rsi_by_hand(values: dict[str, float]) -> float:
    """RSI from one sample's ten slot values (R's rank with average ties)."""
    x = np.array([values[g] for g in RSI_GENES], dtype=float)
    ranks = stats.rankdata(x, method="average")
    return float(sum(RSI_COEF[g] * r for g, r in zip(RSI_GENES, ranks, strict=True)))


def dose_for_gard_by_hand(rsi: float, target_gard: float, d: float) -> float:
    """D = GARD_T / (alpha + beta d), alpha = -ln(RSI)/2 - 2 beta (Scott 2017)."""
    alpha = -math.log(rsi) / 2.0 - 2.0 * BETA
    return target_gard / (alpha + BETA * d)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# ---------------------------------------------------------------------------------------------------------
# Input builders
# ---------------------------------------------------------------------------------------------------------

CT_SPACING = (1.25, 1.25, 2.5)  # x, y, z mm: square pixels (rt-utils 1.2.7 swaps non-square spacings)
CT_ORIGIN = (-31.0, -27.5, -17.5)
CT_SHAPE = (16, 44, 48)  # z, y, x


def ct_volume(seed: int) -> np.ndarray:
    """A textured CT in HU (int16), z-y-x."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(40.0, 25.0, CT_SHAPE)
    zz, yy, xx = np.indices(CT_SHAPE)
    hu += 30.0 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + 2.0 * zz
    return np.round(hu).astype(np.int16)


def phys_coords(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                origin: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    zz, yy, xx = np.indices(shape, dtype=float)
    return origin[0] + xx * spacing[0], origin[1] + yy * spacing[1], origin[2] + zz * spacing[2]


def ellipsoid(centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
    x, y, z = phys_coords(CT_SHAPE, CT_SPACING, CT_ORIGIN)
    r2 = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    return (r2 <= 1.0).astype(np.uint8)


def source_masks() -> dict[str, np.ndarray]:
    """Source masks z-y-x: a GTV sphere, two parotid ellipsoids, and degenerate contours."""
    gtv = ellipsoid((0.3, 0.4, 0.6), (9.0, 9.0, 9.0))
    island = gtv.copy()
    island[4, 5, 40] = 1  # a one-voxel island far from the sphere: a 1-point contour
    pair = np.zeros(CT_SHAPE, np.uint8)
    pair[10, 38, 6:8] = 1  # two voxels in a row: a 2-point contour
    return {
        "GTV": gtv,
        "Parotid_L": ellipsoid((17.0, -10.0, 1.0), (6.5, 9.0, 10.0)),
        "Parotid_R": ellipsoid((-19.0, -9.0, 0.0), (6.0, 8.5, 9.0)),
        "GTV_island": island,
        "Pair": pair,
    }


def write_ct_series(folder: Path, hu: np.ndarray, patient_id: str) -> None:
    """A CT series written with pydicom: one file per slice, identity orientation, ascending z."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(hu.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"ct_{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = patient_id
        ds.PatientName = "Anon"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber = "20240101", "120000", "1", 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [CT_ORIGIN[0], CT_ORIGIN[1], CT_ORIGIN[2] + k * CT_SPACING[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [CT_SPACING[1], CT_SPACING[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = CT_SPACING[2]
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(hu[k]).astype("<i2").tobytes()
        ds.save_as(str(path), enforce_file_format=True)


def write_rtutils_rtstruct(series: Path, masks: dict[str, np.ndarray], out: Path) -> None:
    """RTSTRUCT written by rt-utils 1.2.7 (contours through the boundary voxel centres)."""
    from rt_utils import RTStructBuilder

    rt = RTStructBuilder.create_new(dicom_series_path=str(series))
    for name, m in masks.items():
        rt.add_roi(mask=np.transpose(m, (1, 2, 0)).astype(bool), name=name)  # rows, columns, slices
    rt.save(str(out))


def image_like(arr: np.ndarray, ref: sitk.Image, pixel: int | None = None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    if pixel is not None:
        img = sitk.Cast(img, pixel)
    img.CopyInformation(ref)
    return img


# ---------------------------------------------------------------------------------------------------------
# Deliver 1: RTSTRUCT from any writer
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_rt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dicomrt")
    hu = ct_volume(3)
    series = root / "D1" / "ct"
    write_ct_series(series, hu, "D1")
    masks = source_masks()
    rtutils_path = root / "D1" / "rtstruct_rtutils.dcm"
    write_rtutils_rtstruct(series, masks, rtutils_path)
    from radiogenomics.cohort import read_image

    ct = read_image(series)
    return {"root": root, "hu": hu, "series": series, "masks": masks, "rtutils": rtutils_path, "ct": ct}


def test_ct_series_reads_back_in_place(dicom_rt: dict[str, Any]) -> None:
    ct = dicom_rt["ct"]
    assert ct.GetSize() == (CT_SHAPE[2], CT_SHAPE[1], CT_SHAPE[0])
    np.testing.assert_allclose(ct.GetSpacing(), CT_SPACING, atol=1e-6)
    np.testing.assert_allclose(ct.GetOrigin(), CT_ORIGIN, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), dicom_rt["hu"])


@pytest.mark.parametrize("roi", ["GTV", "Parotid_L", "Parotid_R"])
def test_rtutils_rtstruct_round_trips(dicom_rt: dict[str, Any], roi: str) -> None:
    """Deliver 1: Dice >= 0.98 and volume within 2 % of the source mask (rt-utils 1.2.7 writer)."""
    from radiogenomics.cohort import read_mask

    got = sitk.GetArrayFromImage(read_mask(dicom_rt["rtutils"], dicom_rt["ct"], roi))
    src = dicom_rt["masks"][roi]
    d = dice(got, src)
    vol_err = abs(int(got.sum()) - int(src.sum())) / int(src.sum())
    assert d >= 0.98, f"{roi}: Dice {d:.4f} against the rt-utils source mask"
    assert vol_err <= 0.02, f"{roi}: volume {got.sum()} voxels against {src.sum()} ({vol_err:.1%})"


def test_rtstruct_structure_name_is_case_insensitive(dicom_rt: dict[str, Any]) -> None:
    from radiogenomics.cohort import read_mask

    got = sitk.GetArrayFromImage(read_mask(dicom_rt["rtutils"], dicom_rt["ct"], "gtv"))
    assert dice(got, dicom_rt["masks"]["GTV"]) >= 0.98


def test_rtutils_one_voxel_island_is_kept_and_named(dicom_rt: dict[str, Any],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A 1-point contour fills its voxel; the warning says what it is (not 'outside the reference image')."""
    from radiogenomics.cohort import read_mask

    with caplog.at_level(logging.WARNING):
        got = sitk.GetArrayFromImage(read_mask(dicom_rt["rtutils"], dicom_rt["ct"], "GTV_island"))
    assert got[4, 5, 40] == 1, "the one-voxel island was dropped"
    assert dice(got, dicom_rt["masks"]["GTV_island"]) >= 0.98
    text = caplog.text
    assert "1-point" in text, f"no warning naming the 1-point contour: {text!r}"
    assert "outside the reference image" not in text


def test_rtutils_two_point_contour_fills_its_voxels(dicom_rt: dict[str, Any],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from radiogenomics.cohort import read_mask

    with caplog.at_level(logging.WARNING):
        got = sitk.GetArrayFromImage(read_mask(dicom_rt["rtutils"], dicom_rt["ct"], "Pair"))
    np.testing.assert_array_equal(got, dicom_rt["masks"]["Pair"])
    assert "2-point" in caplog.text, caplog.text


@pytest.mark.parametrize("roi", ["GTV", "Parotid_L", "Parotid_R", "GTV_island"])
def test_own_writer_rtstruct_round_trips(dicom_rt: dict[str, Any], roi: str) -> None:
    """Contours around the voxel edges (the package's documented writer) round-trip too."""
    from radiogenomics.cohort import read_mask
    from radiogenomics.cohort.rtstruct import write_rtstruct

    out = dicom_rt["root"] / f"own_{roi}.dcm"
    src = dicom_rt["masks"][roi]
    write_rtstruct({roi: image_like(src, dicom_rt["ct"])}, dicom_rt["series"], out)
    got = sitk.GetArrayFromImage(read_mask(out, dicom_rt["ct"], roi))
    assert dice(got, src) >= 0.98
    assert abs(int(got.sum()) - int(src.sum())) <= 0.02 * int(src.sum())


def test_rtutils_input_really_has_degenerate_contours(dicom_rt: dict[str, Any]) -> None:
    """Guard on the test input itself: rt-utils wrote a 1-point and a 2-point contour."""
    import pydicom

    ds = pydicom.dcmread(dicom_rt["rtutils"])
    names = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
    counts = {names[c.ReferencedROINumber]: sorted(int(s.NumberOfContourPoints) for s in c.ContourSequence)
              for c in ds.ROIContourSequence}
    assert counts["GTV_island"][0] == 1
    assert counts["Pair"] == [2]


def test_dicom_rt_and_nifti_give_the_same_gtv_features(dicom_rt: dict[str, Any],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Deliver 1: the same CT patient in DICOM-RT (rt-utils) and NIfTI: GTV first-order and shape within 2 %."""
    root = dicom_rt["root"] / "cohort_rt"
    (root / "N1").mkdir(parents=True)
    sitk.WriteImage(dicom_rt["ct"], str(root / "N1" / "ct.nii.gz"))
    sitk.WriteImage(image_like(dicom_rt["masks"]["GTV"], dicom_rt["ct"]), str(root / "N1" / "gtv.nii.gz"))
    shutil.copytree(dicom_rt["series"], root / "D1" / "ct")
    shutil.copy(dicom_rt["rtutils"], root / "D1" / "rtstruct.dcm")
    (root / "patients.csv").write_text("patient_id,site\nN1,head_neck\nD1,head_neck\n")
    (root / "images.csv").write_text("patient_id,modality,image,mask,roi,label\n"
                                     "N1,CT,N1/ct.nii.gz,N1/gtv.nii.gz,GTV,1\n"
                                     "D1,CT,D1/ct,D1/rtstruct.dcm,GTV,\n")
    out = root.parent / "rt_features.parquet"
    rc, _, err = run_cli(capsys, "extract", root, "--out", out, "--workers", "1", "--no-cache", "--no-progress")
    assert rc == 0, err
    table = pd.read_parquet(out).set_index("patient_id")
    cols = [c for c in table.columns if c.startswith(("ct.gtv.original_firstorder_", "ct.gtv.original_shape_"))]
    assert len(cols) > 30, cols
    nii, dcm = table.loc["N1", cols].astype(float), table.loc["D1", cols].astype(float)
    assert nii.notna().all() and dcm.notna().all()
    rel = (dcm - nii).abs() / nii.abs().clip(lower=1e-9)
    bad = rel[(rel > 0.02) & ((dcm - nii).abs() > 1e-6)]
    assert bad.empty, f"DICOM-RT vs NIfTI differ by more than 2 %: {bad.to_dict()}"


# ---------------------------------------------------------------------------------------------------------
# Deliver 2: DVH accuracy and tables
# ---------------------------------------------------------------------------------------------------------


def _structure_image(mask: np.ndarray, origin: tuple[float, float, float], spacing_mm: float = 1.0) -> sitk.Image:
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing((spacing_mm,) * 3)
    img.SetOrigin(origin)
    return img


def _linear_dose(a_gy: float, grad_gy_per_mm: tuple[float, float, float], centre: tuple[float, float, float],
                 origin: tuple[float, float, float], size_xyz: tuple[int, int, int], spacing_mm: float) -> sitk.Image:
    """Dose a + g . (r - centre) sampled at the voxel centres of a coarse grid (exact for any linear field)."""
    shape = (size_xyz[2], size_xyz[1], size_xyz[0])
    x, y, z = phys_coords(shape, (spacing_mm,) * 3, origin)
    d = a_gy + grad_gy_per_mm[0] * (x - centre[0]) + grad_gy_per_mm[1] * (y - centre[1]) \
        + grad_gy_per_mm[2] * (z - centre[2])
    img = sitk.GetImageFromArray(d.astype(np.float64))
    img.SetSpacing((spacing_mm,) * 3)
    img.SetOrigin(origin)
    return img


@pytest.mark.parametrize(("g_gy_per_mm", "centre_dose_gy"), [(2.0, 70.0), (3.0, 67.5)])
def test_dvh_cord_in_steep_gradient_on_coarse_dose_grid(g_gy_per_mm: float, centre_dose_gy: float) -> None:
    """The issue's case: a 5 mm cord (60 mm long) on a 1 mm grid in a linear gradient, dose on a 3 mm grid."""
    from radiogenomics.radiobiology import compute_dvh

    r, length, cx, cy = 2.5, 60.0, 0.3, 0.2  # axis off the voxel lattice
    shape = (length + 4, 24, 24)
    origin = (-11.5, -11.5, -2.0)
    x, y, z = phys_coords(tuple(int(s) for s in shape), (1.0, 1.0, 1.0), origin)  # type: ignore[arg-type]
    mask = ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) & (z >= 0) & (z < length)
    dose = _linear_dose(centre_dose_gy, (g_gy_per_mm, 0, 0), (cx, cy, 0), (-14.2, -13.9, -4.6), (11, 11, 25), 3.0)
    dvh = compute_dvh(dose, _structure_image(mask, origin), structure="SpinalCord")
    dmax, dmean, vol_cc = centre_dose_gy + g_gy_per_mm * r, centre_dose_gy, math.pi * r * r * length / 1000.0
    assert abs(dvh.max_dose_gy - dmax) <= 1.0, f"Dmax {dvh.max_dose_gy:.2f} vs analytic {dmax}"
    assert abs(dvh.mean_dose_gy - dmean) <= 0.5, f"Dmean {dvh.mean_dose_gy:.3f} vs analytic {dmean}"
    assert abs(dvh.total_volume_cc / vol_cc - 1.0) <= 0.03, f"volume {dvh.total_volume_cc:.4f} vs {vol_cc:.4f} cc"
    # no volume is lost or gained by the dose grid: the DVH holds the structure's own voxel volume
    assert dvh.total_volume_cc == pytest.approx(mask.sum() / 1000.0, rel=0.005)


@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.0), (1.2, 1.2, 1.0), (1.0, 1.0, 1.0)])
def test_dvh_sphere_linear_gradient_on_coarse_dose_grid(direction: tuple[float, float, float]) -> None:
    """A 10 mm sphere (1 mm grid) in a 2 Gy/mm gradient along an axis or oblique; dose on a 2.5 mm grid."""
    from radiogenomics.radiobiology import compute_dvh

    r, c = 10.0, (0.31, -0.22, 0.13)
    origin = (-15.5, -15.5, -15.5)
    x, y, z = phys_coords((32, 32, 32), (1.0, 1.0, 1.0), origin)
    mask = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r
    g = np.array(direction) * 2.0 / np.linalg.norm(direction)  # |g| = 2 Gy/mm
    dose = _linear_dose(60.0, tuple(g), c, (-17.9, -18.3, -17.2), (14, 14, 14), 2.5)
    dvh = compute_dvh(dose, _structure_image(mask, origin), structure="GTV")
    assert abs(dvh.max_dose_gy - (60.0 + 2.0 * r)) <= 1.0, dvh.max_dose_gy
    assert abs(dvh.min_dose_gy - (60.0 - 2.0 * r)) <= 1.0, dvh.min_dose_gy
    assert abs(dvh.mean_dose_gy - 60.0) <= 0.5, dvh.mean_dose_gy
    assert abs(dvh.total_volume_cc / (4.0 / 3.0 * math.pi * r**3 / 1000.0) - 1.0) <= 0.03, dvh.total_volume_cc


def _sparse_dvh_table() -> pd.DataFrame:
    """A dvh.csv as other tools export it: the contract's four columns, only non-empty 0.1 Gy bins."""
    return pd.DataFrame({"patient_id": "P1", "structure": "Parotid_L",
                         "dose_gy": [4.95, 5.05, 12.35, 19.95, 20.05, 33.75],
                         "volume_cc": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})


def test_dvh_csv_with_only_non_empty_bins() -> None:
    from radiogenomics.radiobiology import dvh_from_table

    dvh = dvh_from_table(_sparse_dvh_table(), "Parotid_L")
    assert dvh.total_volume_cc == pytest.approx(21.0)
    assert dvh.volume_at_least(5.0) == pytest.approx(20.0)
    assert dvh.volume_at_least(20.0) == pytest.approx(11.0)
    assert dvh.volume_at_least(30.0) == pytest.approx(6.0)
    assert dvh.volume_at_least(33.75) == pytest.approx(3.0)  # half of the [33.7, 33.8) bin
    assert dvh.volume_at_least_pct(20.0) == pytest.approx(100.0 * 11.0 / 21.0)


def test_to_frame_then_dvh_from_table_keeps_every_vx_dx() -> None:
    from radiogenomics.radiobiology import compute_dvh, dvh_from_table

    rng = np.random.default_rng(11)
    dose = np.concatenate([rng.uniform(2.0, 8.0, 300), rng.uniform(18.0, 26.0, 300), rng.uniform(45, 46, 50)])
    dvh = compute_dvh(dose.reshape(1, 1, -1), np.ones((1, 1, dose.size), np.uint8), voxel_volume_cc=0.02,
                      bin_width_gy=0.1, structure="Parotid_R")
    frame = dvh.to_frame("P7")
    assert {"patient_id", "structure", "dose_gy", "volume_cc"} <= set(frame.columns)
    assert (frame["volume_cc"] > 0).all(), "to_frame writes only non-empty bins"
    back = dvh_from_table(frame, "Parotid_R")
    assert dvh.volume_at_least(5.0) > 0 and dvh.volume_at_least(20.0) > 0
    for d in (5.0, 10.0, 20.0, 25.0, 45.5):
        assert back.volume_at_least(d) == pytest.approx(dvh.volume_at_least(d), rel=1e-9, abs=1e-12), d
    for v in (2.0, 50.0, 95.0, 98.0):
        assert back.dose_at_volume(v) == pytest.approx(dvh.dose_at_volume(v), rel=1e-9), v
    for a in (1.0, 20.0, -10.0):
        assert back.geud(a) == pytest.approx(dvh.geud(a), rel=1e-9), a


def test_scaled_keeps_geud_and_vx() -> None:
    from radiogenomics.radiobiology import dvh_from_table

    dvh = dvh_from_table(_sparse_dvh_table(), "Parotid_L")
    scaled = dvh.scaled(1.1)
    centres = _sparse_dvh_table()["dose_gy"].to_numpy()
    vols = _sparse_dvh_table()["volume_cc"].to_numpy()
    for a in (1.0, 20.0, -10.0):
        by_hand = float((np.sum(vols / vols.sum() * (1.1 * centres) ** a)) ** (1.0 / a))
        assert scaled.geud(a) == pytest.approx(1.1 * dvh.geud(a), rel=1e-9), a
        assert scaled.geud(a) == pytest.approx(by_hand, rel=1e-9), a
    for d in (5.0, 20.0, 30.0):
        assert scaled.volume_at_least(1.1 * d) == pytest.approx(dvh.volume_at_least(d), rel=1e-9), d


# ---------------------------------------------------------------------------------------------------------
# Deliver 3: rails fail closed (TG-263 alias table, QUANTEC head-and-neck limits)
# ---------------------------------------------------------------------------------------------------------


def oar_dvh(name: str, doses_gy: np.ndarray) -> Any:
    """A DVH whose dose samples are exactly ``doses_gy`` (so Dmax / Dmean are known exactly)."""
    from radiogenomics.radiobiology import compute_dvh

    d = np.asarray(doses_gy, dtype=float).reshape(1, 1, -1)
    return compute_dvh(d, np.ones(d.shape, np.uint8), voxel_volume_cc=0.1, bin_width_gy=0.1, structure=name)


def cord_dmax_48() -> Any:
    return oar_dvh("SpinalCord", np.linspace(10.0, 48.0, 77))


@pytest.mark.parametrize("name", ["SpinalCord", "Spinal Cord", "spinal_cord", "SPINAL-CORD"])
def test_rails_spinal_cord_tg263_name_is_clipped(name: str) -> None:
    """The issue's example: cord Dmax 48 Gy at 70 Gy, 80 Gy requested -> 70 x 50/48 = 72.9 Gy, clipped_max."""
    from radiogenomics.radiobiology import apply_rails

    dec = apply_rails(80.0, site="head_neck", oar_dvhs={name: cord_dmax_48()}, reference_prescription_gy=70.0)
    assert dec.recommended_total_dose_gy == pytest.approx(70.0 * 50.0 / 48.0, abs=0.05)
    assert "clipped_max" in dec.flags
    assert dec.feasible


# (name, limit kind, limit Gy): QUANTEC head-and-neck limits the issue asks for, as docs/radiobiology.md states them
QUANTEC_HN = [
    ("Brainstem", "max", 54.0), ("BrainStem", "max", 54.0), ("brain stem", "max", 54.0),
    ("OpticChiasm", "max", 55.0), ("OpticNrv_L", "max", 55.0), ("OpticNrv_R", "max", 55.0),
    ("Cochlea_L", "mean", 45.0), ("Cochlea_R", "mean", 45.0), ("Larynx", "mean", 44.0),
    ("Mandible", "max", 70.0), ("Bone_Mandible", "max", 70.0), ("Esophagus", "mean", 34.0),
    ("Glnd_Submand_L", "mean", 35.0),
]


@pytest.mark.parametrize(("name", "kind", "limit_gy"), QUANTEC_HN)
def test_rails_quantec_head_neck_limits(name: str, kind: str, limit_gy: float) -> None:
    """A uniform OAR dose at limit x 70/72 at 70 Gy allows exactly 72 Gy (doses scale with the prescription)."""
    from radiogenomics.radiobiology import apply_rails

    x = limit_gy * 70.0 / 72.0
    dvh = oar_dvh(name, np.full(40, x))
    dec = apply_rails(80.0, site="head_neck", oar_dvhs={name: dvh}, reference_prescription_gy=70.0)
    assert dec.recommended_total_dose_gy == pytest.approx(72.0, abs=0.05), (name, dec.reasons)
    assert "clipped_max" in dec.flags
    assert "unrecognised_structure" not in dec.flags


def test_rails_rectum_ntcp_limit_by_hand() -> None:
    """Rectum: proctitis NTCP <= 15 % (LKB, Burman 1991: TD50 80 Gy, m 0.15) -> gEUD_max by hand."""
    from radiogenomics.radiobiology import apply_rails

    geud_max = 80.0 * (1.0 + 0.15 * stats.norm.ppf(0.15))
    dvh = oar_dvh("Rectum", np.full(40, geud_max * 70.0 / 72.0))
    dec = apply_rails(80.0, site="prostate", oar_dvhs={"Rectum": dvh}, reference_prescription_gy=70.0)
    assert dec.recommended_total_dose_gy == pytest.approx(72.0, abs=0.05), dec.reasons
    assert "clipped_max" in dec.flags


@pytest.mark.parametrize("name", ["Parotid_L", "Lt Parotid", "parotid left", "L Parotid"])
def test_rails_parotid_variants_match(name: str) -> None:
    """TG-263 and common parotid names get the QUANTEC parotid limits (Deasy 2010)."""
    from radiogenomics.radiobiology import apply_rails

    dec = apply_rails(70.0, site="head_neck", oar_dvhs={name: oar_dvh(name, np.full(40, 21.0))},
                      reference_prescription_gy=70.0)
    # mean 21 Gy at 70 Gy: mean limit 25 Gy -> 83.3 Gy, NTCP 20 % (gEUD 26.47 Gy) -> 88.2 Gy: no clip at 70 Gy
    assert dec.recommended_total_dose_gy == pytest.approx(70.0)
    dec80 = apply_rails(80.0, site="head_neck", oar_dvhs={name: oar_dvh(name, np.full(40, 24.0))},
                        reference_prescription_gy=70.0)
    # mean 24 Gy: 70 x 25/24 = 72.92 Gy; NTCP limit 70 x 26.47/24 = 77.2 Gy; spared-gland rule 70 x 20/24 = 58.3
    assert dec80.recommended_total_dose_gy == pytest.approx(70.0 * 25.0 / 24.0, abs=0.05), dec80.reasons
    assert "clipped_max" in dec80.flags


def test_rails_unknown_organ_raises_naming_it() -> None:
    from radiogenomics.errors import InputError
    from radiogenomics.radiobiology import apply_rails

    with pytest.raises(InputError, match="Foo_Organ"):
        apply_rails(70.0, site="head_neck", oar_dvhs={"Foo_Organ": oar_dvh("Foo_Organ", np.full(10, 30.0))},
                    reference_prescription_gy=70.0)


def test_rails_unknown_organ_flagged_when_asked_to_continue() -> None:
    from radiogenomics.radiobiology import apply_rails

    dec = apply_rails(80.0, site="head_neck", reference_prescription_gy=70.0, unknown_structures="flag",
                      oar_dvhs={"Foo_Organ": oar_dvh("Foo_Organ", np.full(10, 30.0)), "SpinalCord": cord_dmax_48()})
    assert "unrecognised_structure" in dec.flags
    assert "Foo_Organ" in dec.unrecognised_structures
    assert dec.recommended_total_dose_gy == pytest.approx(72.92, abs=0.05)  # the known organ still limits


def test_rails_target_and_unlimited_organ_are_not_errors() -> None:
    from radiogenomics.radiobiology import apply_rails

    dec = apply_rails(70.0, site="prostate", reference_prescription_gy=70.0,
                      oar_dvhs={"PTV70": oar_dvh("PTV70", np.full(10, 70.0)),
                                "Bladder": oar_dvh("Bladder", np.full(10, 65.0))})
    assert dec.recommended_total_dose_gy == pytest.approx(70.0)
    assert "unrecognised_structure" not in dec.flags


TG263 = ["SpinalCord", "Brainstem", "Parotid_L", "Parotid_R", "Glnd_Submand_L", "Glnd_Submand_R", "Esophagus",
         "Larynx", "Bone_Mandible", "OpticNrv_L", "OpticNrv_R", "OpticChiasm", "Cochlea_L", "Cochlea_R", "Lung_L",
         "Lung_R", "Heart", "Rectum", "Bladder"]


def test_alias_table_has_tg263_names_and_variants() -> None:
    from radiogenomics.radiobiology import canonical_structure, resolve_structure

    for name in TG263:
        match = resolve_structure(name)
        assert match is not None and match.kind == "oar", name
        assert canonical_structure(name.upper()) == name, name
    assert canonical_structure("Spinal Cord") == "SpinalCord"
    assert canonical_structure("BrainStem") == "Brainstem"
    assert canonical_structure("Lt Parotid") == "Parotid_L"
    assert canonical_structure("Mandible") == "Bone_Mandible"
    assert resolve_structure("Foo_Organ") is None
    assert resolve_structure("PTV70").kind == "target"  # type: ignore[union-attr]
    assert (REPO / "radiogenomics" / "radiobiology" / "data" / "structure_aliases.yaml").is_file()


@pytest.mark.parametrize("name", ["Brainstem", "Larynx", "Cochlea_L", "OpticNrv_R", "OpticChiasm", "SpinalCord"])
def test_rails_quantec_limits_cite_their_source(name: str) -> None:
    from radiogenomics.radiobiology import load_rails

    limit = load_rails().oar(name)
    assert limit is not None, name
    assert "QUANTEC" in limit.source and "IJROBP 2010" in limit.source, limit.source


def test_rails_mandible_limit_says_it_is_not_quantec() -> None:
    from radiogenomics.radiobiology import load_rails

    limit = load_rails().oar("Mandible")
    assert limit is not None and limit.max_dose_gy == 70.0
    assert "not a quantec" in limit.source.lower() and "unverified" in limit.source.lower(), limit.source


# ---------------------------------------------------------------------------------------------------------
# Deliver 9: the prescription record
# ---------------------------------------------------------------------------------------------------------


def test_record_regimen_interval_and_formula() -> None:
    from radiogenomics.radiobiology import dose_targets, patient_lq

    rec = dose_targets(patient_lq(0.4), site="head_neck", target_gard=33.0, n_fractions=35,
                       dose_per_fraction_gy=2.0, rsi_lower=0.3, rsi_upper=0.5).as_record()
    assert rec["dose_for_target_gard_gy"] == pytest.approx(dose_for_gard_by_hand(0.4, 33.0, 2.0), rel=1e-9)
    assert rec["dose_for_target_gard_lower_gy"] == pytest.approx(dose_for_gard_by_hand(0.3, 33.0, 2.0), rel=1e-9)
    assert rec["dose_for_target_gard_upper_gy"] == pytest.approx(dose_for_gard_by_hand(0.5, 33.0, 2.0), rel=1e-9)
    lower, upper = rec["dose_for_target_gard_lower_gy"], rec["dose_for_target_gard_upper_gy"]
    assert lower <= rec["dose_for_target_gard_gy"] <= upper  # higher RSI = more resistant = more dose
    # 72.03 Gy is inside the head-and-neck rails: recommended = the GARD dose, delivered as 36 x 2.0008 Gy
    assert rec["recommended_total_dose_gy"] == pytest.approx(rec["dose_for_target_gard_gy"], rel=1e-12)
    assert rec["recommended_n_fractions"] == 36
    assert rec["recommended_n_fractions"] * rec["recommended_dose_per_fraction_gy"] == pytest.approx(
        rec["recommended_total_dose_gy"], rel=1e-9)
    assert rec["n_fractions"] == 35 and rec["dose_per_fraction_gy"] == 2.0  # the requested regimen stays


def test_record_clipped_by_cord_keeps_product_and_flags() -> None:
    from radiogenomics.radiobiology import dose_targets, patient_lq

    rec = dose_targets(patient_lq(0.6), site="head_neck", target_gard=33.0, n_fractions=35,
                       dose_per_fraction_gy=2.0, oar_dvhs={"SpinalCord": cord_dmax_48()},
                       reference_prescription_gy=70.0).as_record()
    assert rec["dose_for_target_gard_gy"] == pytest.approx(dose_for_gard_by_hand(0.6, 33.0, 2.0), rel=1e-9)
    # contract §2 as revised (issue 15; docs/safety.md): the cord limit acts on the dose (oar_limited), judged on
    # the cord's equal-BED dose in the same plan at 2 Gy per target fraction, at the cord's alpha/beta 2 Gy
    total = rec["recommended_total_dose_gy"]
    n, d = rec["recommended_n_fractions"], rec["recommended_dose_per_fraction_gy"]
    cord, share = 48.0 * total / 70.0, 48.0 / 70.0
    assert cord * (2.0 + cord / n) / (2.0 + 2.0 * share) == pytest.approx(50.0, rel=1e-9)
    assert "clipped_max" in rec["flags"] and "oar_limited" in rec["flags"]
    assert n == round(n) and n == 37, n  # 73.23 Gy: the whole number nearest 73.23 / 2
    assert n * d == pytest.approx(rec["recommended_total_dose_gy"], rel=1e-9)
    assert 1.6 <= d <= 2.4


def test_record_whole_fraction_regimen_docs_example() -> None:
    from radiogenomics.radiobiology import whole_fraction_regimen

    n, d = whole_fraction_regimen(73.0, 2.4, min_dose_per_fraction_gy=1.6, max_dose_per_fraction_gy=2.4)
    assert (n, d) == (31, pytest.approx(73.0 / 31))


def test_record_unknown_organ_flag() -> None:
    from radiogenomics.errors import InputError
    from radiogenomics.radiobiology import dose_targets, patient_lq

    dvhs = {"Foo_Organ": oar_dvh("Foo_Organ", np.full(10, 30.0))}
    with pytest.raises(InputError, match="Foo_Organ"):
        dose_targets(patient_lq(0.4), site="head_neck", target_gard=33.0, oar_dvhs=dvhs,
                     reference_prescription_gy=70.0)
    rec = dose_targets(patient_lq(0.4), site="head_neck", target_gard=33.0, oar_dvhs=dvhs,
                       reference_prescription_gy=70.0, unknown_structures="flag").as_record()
    assert "unrecognised_structure" in rec["flags"]


def test_record_toxicity_names_what_it_predicts() -> None:
    """Toxicity keyed by a documented endpoint name; value = LKB (Dijkema: TD50 39.9, m 0.40, n 1) by hand."""
    from radiogenomics.radiobiology import dose_targets, patient_lq, toxicity_endpoints

    rec = dose_targets(patient_lq(0.4), site="head_neck", target_gard=33.0,
                       oar_dvhs={"Lt Parotid": oar_dvh("Lt Parotid", np.full(40, 20.0))},
                       reference_prescription_gy=70.0).as_record()
    names = {e.record_name for e in toxicity_endpoints().values()}
    assert rec["toxicity"], rec
    assert set(rec["toxicity"]) <= names
    assert "xerostomia" not in rec["toxicity"]
    mean_gy = 20.0 * rec["recommended_total_dose_gy"] / 70.0
    expected = stats.norm.cdf((mean_gy - 39.9) / (0.40 * 39.9))
    assert rec["toxicity"]["xerostomia_flow_lt25pct_1y"] == pytest.approx(expected, abs=2e-3)
    doc = (REPO / "docs" / "radiobiology.md").read_text(encoding="utf-8")
    for n in names:
        assert f"`{n}`" in doc, f"endpoint {n} is not defined in docs/radiobiology.md"


# ---------------------------------------------------------------------------------------------------------
# Hand-made cohorts for Deliver 4, 5, 8, 10
# ---------------------------------------------------------------------------------------------------------

HYPOXIA_GENES = ["ADM", "ALDOA", "ALDOC", "ANKRD37", "BNIP3", "BNIP3L", "FAM162A", "KCTD11", "LOX", "NDRG1",
                 "P4HA1", "P4HA2", "PDK1", "PFKFB3", "SLC2A1"]
SMALL_SHAPE, SMALL_SPACING = (12, 20, 20), (2.0, 2.0, 2.5)


def expression_row(seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {g: round(float(v), 4) for g, v in zip(RSI_GENES + HYPOXIA_GENES, rng.normal(9.0, 1.2, 25), strict=True)}


def write_small_ct(folder: Path, seed: int, gtv_label: int = 1) -> None:
    """ct.nii.gz and labels.nii.gz (GTV = gtv_label) on a 20 x 20 x 12 grid."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hu = rng.normal(30.0, 40.0, SMALL_SHAPE).astype(np.float32)
    x, y, z = phys_coords(SMALL_SHAPE, SMALL_SPACING, (0.0, 0.0, 0.0))
    gtv = ((x - 19.3) ** 2 + (y - 20.4) ** 2 + (z - 14.1) ** 2 <= 7.0**2).astype(np.uint8) * gtv_label
    for arr, name in ((hu, "ct.nii.gz"), (gtv, "labels.nii.gz")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(SMALL_SPACING)
        sitk.WriteImage(img, str(folder / name))


PATIENT_ROWS = {
    "P1": "P1,head_neck,A,61.5,M,pos,T2,70,35,24.0,0,1,0,22.5",
    "P2": "P2,head_neck,A,55.0,F,neg,T3,66,33,12.0,1,2,1,10.0",
    "P3": "P3,head_neck,B,70.2,M,unknown,T1,70,35,30.0,0,0,0,29.0",
    "P4": "P4,head_neck,C,44.0,F,pos,T4,60,30,6.0,1,3,1,5.5",
}
PATIENTS_HEADER = ("patient_id,site,center,age_years,sex,hpv,t_stage,total_dose_gy,n_fractions,lc_months,lc_event,"
                   "tox_xerostomia,os_event,pfs_months")


def write_cohort(root: Path, patients: list[str], expression: dict[str, dict[str, float | None]],
                 images: bool = True, dvh: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "patients.csv").write_text("\n".join([PATIENTS_HEADER] + [PATIENT_ROWS[p] for p in patients]) + "\n")
    if images:
        rows = []
        for p in patients:  # P3's label map has no label 1: its GTV item fails (failures.csv)
            write_small_ct(root / "img" / p, seed=100 + int(p[1:]), gtv_label=2 if p == "P3" else 1)
            rows.append(f"{p},CT,img/{p}/ct.nii.gz,img/{p}/labels.nii.gz,GTV,1")
        (root / "images.csv").write_text("patient_id,modality,image,mask,roi,label\n" + "\n".join(rows) + "\n")
    if expression:
        genes = RSI_GENES + HYPOXIA_GENES
        lines = ["patient_id," + ",".join(genes)]
        for p, row in expression.items():
            lines.append(p + "," + ",".join("" if row.get(g) is None else str(row[g]) for g in genes))
        (root / "expression.csv").write_text("\n".join(lines) + "\n")
    if dvh:
        frames = []
        for p in patients:
            t = _sparse_dvh_table().assign(patient_id=p)
            if p == "P2":
                t = t.assign(volume_cc=t["volume_cc"][::-1].to_numpy())
            g = pd.DataFrame({"patient_id": p, "structure": "GTV", "dose_gy": [69.85, 70.05, 70.25],
                              "volume_cc": [1.0, 3.0, 1.5]})
            frames += [t, g]
        pd.concat(frames).to_csv(root / "dvh.csv", index=False)
    return root


def expression_for(patients: list[str]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for p in patients:
        row: dict[str, float | None] = dict(expression_row(int(p[1:])))
        if p == "P2":
            row["CDK1"] = None  # one RSI gene blank
        if p == "P3":
            row = {}  # an entirely blank expression row
        if p == "P4":
            row = {g: (v + 5.0 if g in ("ABL1", "IRF1") else v) for g, v in row.items()}
            row["HDAC1"] = None
        out[p] = row
    return out


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hand")
    x = write_cohort(root / "cohort_x", ["P1", "P2", "P3"], expression_for(["P1", "P2", "P3"]))
    y = write_cohort(root / "cohort_y", ["P4", "P2", "P1"], expression_for(["P4", "P2", "P1"]))
    outs = root / "outs"
    outs.mkdir()
    for cohort, name in ((x, "fx.parquet"), (y, "fy.parquet")):
        rc = main(["extract", str(cohort), "--out", str(outs / name), "--workers", "1", "--no-cache",
                   "--no-progress"])
        assert rc == 0
    return {"root": root, "x": x, "y": y, "fx": outs / "fx.parquet", "fy": outs / "fy.parquet", "outs": outs}


# ---------------------------------------------------------------------------------------------------------
# Deliver 4: per-patient features
# ---------------------------------------------------------------------------------------------------------


def test_same_patient_identical_row_whatever_the_cohort(hand: dict[str, Path]) -> None:
    fx = pd.read_parquet(hand["fx"]).set_index("patient_id")
    fy = pd.read_parquet(hand["fy"]).set_index("patient_id")
    assert list(fx.columns) == list(fy.columns)
    for pid in ("P1", "P2"):  # P2 has a blank RSI gene; the other patients differ between the cohorts
        a, b = fx.loc[pid], fy.loc[pid]
        diff = [c for c in fx.columns if not (a[c] == b[c] or (pd.isna(a[c]) and pd.isna(b[c])))]
        assert not diff, {c: (a[c], b[c]) for c in diff}
        assert a.notna().sum() > 20


def test_rsi_is_per_patient_and_never_imputed(hand: dict[str, Path]) -> None:
    fx = pd.read_parquet(hand["fx"]).set_index("patient_id")
    expected = rsi_by_hand(expression_row(1))
    assert fx.loc["P1", "genomic.rsi"] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(fx.loc["P2", "genomic.rsi"]), "a blank RSI gene must give NaN, not a cohort median"
    assert np.isnan(fx.loc["P3", "genomic.rsi"])
    assert fx.loc["P1", "available.genomic"] == 1
    assert fx.loc["P3", "available.genomic"] == 0, "an all-blank expression row is not genomics"


def test_dvh_csv_with_non_empty_bins_gives_dose_features(hand: dict[str, Path]) -> None:
    fx = pd.read_parquet(hand["fx"]).set_index("patient_id")
    p1 = fx.loc["P1"]
    assert p1["dose.parotid_l.v5gy_pct"] == pytest.approx(100 * 20 / 21, abs=1e-6)
    assert p1["dose.parotid_l.v20gy_pct"] == pytest.approx(100 * 11 / 21, abs=1e-6)
    assert p1["dose.parotid_l.v30gy_pct"] == pytest.approx(100 * 6 / 21, abs=1e-6)
    t = _sparse_dvh_table()
    assert p1["dose.parotid_l.mean_gy"] == pytest.approx(np.average(t["dose_gy"], weights=t["volume_cc"]), abs=1e-6)


def test_rsi_imputer_fills_from_training_medians_only() -> None:
    from radiogenomics.features.preprocessing import RSIImputer

    rows = {f"T{i}": expression_row(40 + i) for i in range(5)}
    train = pd.DataFrame(rows).T[RSI_GENES].astype(float)
    test_row = dict(expression_row(50))
    test = pd.DataFrame({"N1": test_row}).T[RSI_GENES].astype(float)
    test.loc["N1", "CDK1"] = np.nan
    out = RSIImputer().fit(train).transform(test)
    filled = {**test_row, "CDK1": float(np.median(train["CDK1"]))}
    assert out.loc["N1", "genomic.rsi"] == pytest.approx(rsi_by_hand(filled), abs=1e-12)
    assert out.loc["N1", "genomic.rsi_imputed"] == 1


def test_fold_transformers_learn_only_from_the_training_rows(hand: dict[str, Path]) -> None:
    from sklearn.base import clone

    from radiogenomics.features.preprocessing import FeatureScaler, GroupImputer

    fx = pd.read_parquet(hand["fx"]).set_index("patient_id")
    cols = ["clinical.age_years", "genomic.rsi"]
    train, test = fx.loc[["P1", "P2"], cols], fx.loc[["P3"], cols]
    imp = clone(GroupImputer(strategy="median")).fit(train)
    out = imp.transform(test)
    assert out.loc["P3", "genomic.rsi"] == pytest.approx(fx.loc["P1", "genomic.rsi"])  # median of {P1, NaN}
    assert out.loc["P3", "clinical.age_years"] == pytest.approx(70.2)  # observed values are not touched
    scaled = FeatureScaler().fit(train[["clinical.age_years"]]).transform(test[["clinical.age_years"]])
    mu, sd = train["clinical.age_years"].mean(), train["clinical.age_years"].std(ddof=0)
    assert scaled.iloc[0, 0] == pytest.approx((70.2 - mu) / sd, rel=1e-6) or scaled.iloc[0, 0] == pytest.approx(
        (70.2 - mu) / train["clinical.age_years"].std(ddof=1), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Deliver 5: a fixed schema
# ---------------------------------------------------------------------------------------------------------

DOCUMENTED_GROUPS = {"imaging", "deep", "genomic", "dose", "treatment", "clinical", "outcome", "availability", "id"}


def test_parquet_carries_its_schema(hand: dict[str, Path]) -> None:
    meta = {k.decode(): v.decode() for k, v in pq.read_metadata(hand["fx"]).metadata.items()}
    ours = {k for k in meta if k.startswith("radiogenomics")}
    assert {"radiogenomics.schema_version", "radiogenomics.columns", "radiogenomics.params",
            "radiogenomics.version"} <= ours
    assert json.loads(meta["radiogenomics.schema_version"]) == 1
    columns = json.loads(meta["radiogenomics.columns"])
    table = pd.read_parquet(hand["fx"])
    assert [c["name"] for c in columns] == list(table.columns)
    groups = {c["name"]: c["group"] for c in columns}
    dtypes = {c["name"]: c["dtype"] for c in columns}
    assert set(groups.values()) <= DOCUMENTED_GROUPS
    assert groups["patient_id"] == "id"
    assert groups["genomic.rsi"] == "genomic"
    assert groups["available.ct"] == "availability" and dtypes["available.ct"] == "int8"
    assert groups["clinical.age_years"] == "clinical"
    assert groups["clinical.total_dose_gy"] == "treatment" and groups["clinical.n_fractions"] == "treatment"
    assert groups["dose.gtv.mean_gy"] == "treatment"  # delivered dose to a target is the prescription
    assert groups["dose.parotid_l.mean_gy"] == "dose"
    assert any(g == "imaging" and n.startswith("ct.gtv.original_") for n, g in groups.items())
    for outcome in ("outcome.os_event", "outcome.pfs_months", "outcome.lc_event", "outcome.lc_months",
                    "outcome.tox_xerostomia"):
        assert groups[outcome] == "outcome", outcome
    assert not any(n.startswith("clinical.") and n.split(".", 1)[1] in ("os_event", "pfs_months", "lc_event")
                   for n in groups)
    params = json.loads(meta["radiogenomics.params"])
    assert "rsi_gene_map" in params and "filters" in params
    version = json.loads(meta["radiogenomics.version"])
    assert version["package"] and len(version["code_sha256"]) == 64


def test_read_feature_schema_public_api(hand: dict[str, Path]) -> None:
    from radiogenomics.features.schema import read_feature_schema, read_feature_table

    schema = read_feature_schema(hand["fx"])
    table = read_feature_table(hand["fx"])
    assert [c.name for c in schema.columns] == list(table.columns)
    assert str(table["available.ct"].dtype) == "int8"


def test_treatment_dose_and_outcome_are_not_default_features(hand: dict[str, Path]) -> None:
    from radiogenomics.features.preprocessing import FeatureSelector

    table = pd.read_parquet(hand["fx"])
    chosen = set(FeatureSelector().fit(table).get_feature_names_out())
    for col in table.columns:
        if col == "patient_id" or col.startswith(("outcome.", "dose.")) or col in (
                "clinical.total_dose_gy", "clinical.n_fractions"):
            assert col not in chosen, col
    assert "genomic.rsi" in chosen and "clinical.age_years" in chosen and "available.ct" in chosen
    assert any(c.startswith("ct.gtv.original_") for c in chosen)
    opted = set(FeatureSelector(include=("treatment",)).fit(table).get_feature_names_out())
    assert {"clinical.total_dose_gy", "clinical.n_fractions", "dose.gtv.mean_gy"} <= opted
    assert "outcome.os_event" not in opted


def test_schema_from_reindexes_a_new_cohort_and_failures_are_named_after_the_output(
        hand: dict[str, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Deliver 5 (--schema-from) and Deliver 10 (<stem>.failures.csv): a new cohort written beside fx.parquet."""
    z = hand["root"] / "cohort_z"
    z.mkdir()
    (z / "patients.csv").write_text("patient_id,site,center,age_years,bmi\nP9,head_neck,A,50.0,27.5\n")
    write_small_ct(z / "img" / "P9", seed=9)
    (z / "images.csv").write_text("patient_id,modality,image,mask,roi,label\n"
                                  "P9,CT,img/P9/ct.nii.gz,img/P9/labels.nii.gz,GTV,1\n")
    out = hand["outs"] / "fz.parquet"
    with caplog.at_level(logging.WARNING):
        rc, _, err = run_cli(capsys, "extract", z, "--out", out, "--schema-from", hand["fx"], "--workers", "1",
                             "--no-cache", "--no-progress")
    assert rc == 0, err
    from radiogenomics.features.schema import read_feature_table

    ref, new = read_feature_table(hand["fx"]), read_feature_table(out)
    assert list(new.columns) == list(ref.columns)
    assert list(new.dtypes.astype(str)) == list(ref.dtypes.astype(str))
    row = new.set_index("patient_id").loc["P9"]
    assert np.isnan(row["genomic.rsi"]) and row["available.genomic"] == 0
    assert np.isnan(row["dose.parotid_l.v20gy_pct"]) and row["available.dose"] == 0
    assert row["available.ct"] == 1 and not np.isnan(row["ct.gtv.original_firstorder_Mean"])
    assert "clinical.bmi" not in new.columns
    assert "bmi" in (err + caplog.text), "the dropped extra column is not named in a warning"
    # failures files are named after each output; fx's (P3's empty GTV) is not overwritten by fz's
    fx_fail = pd.read_csv(hand["outs"] / "fx.failures.csv")
    fz_fail = pd.read_csv(hand["outs"] / "fz.failures.csv")
    assert list(fx_fail["patient_id"]) == ["P3"], fx_fail
    assert fz_fail.empty
    assert not (hand["outs"] / "failures.csv").exists()


def test_schema_from_with_contradicting_option_exits_2(hand: dict[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(capsys, "extract", hand["x"], "--out", hand["outs"] / "other.parquet", "--schema-from",
                         hand["fx"], "--filters", "original,log", "--workers", "1", "--no-cache", "--no-progress")
    assert rc == 2
    assert "filters" in one_line(err)


# ---------------------------------------------------------------------------------------------------------
# Deliver 6: ComBat on imaging columns only; unseen and small centres
# ---------------------------------------------------------------------------------------------------------

IMAGING_COLS = ["ct.gtv.original_firstorder_Mean", "ct.gtv.original_glcm_Contrast",
                "pet_fdg.gtv.original_firstorder_Mean"]
OTHER_NUMERIC = ["clinical.age_years", "clinical.total_dose_gy", "genomic.rsi", "available.ct",
                 "dose.parotid_l.mean_gy", "outcome.os_event"]


def fused_table(centres: dict[str, int], seed: int = 5) -> pd.DataFrame:
    """A fused feature table with strong centre effects in every numeric column (imaging and not)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (centre, n) in enumerate(centres.items()):
        for i in range(n):
            rows.append({
                "patient_id": f"{centre}{i:02d}", "clinical.center": centre,
                "clinical.age_years": 50.0 + 5.0 * k + rng.normal(0, 8),
                "clinical.total_dose_gy": 66.0 + 2.0 * k, "genomic.rsi": 0.3 + 0.05 * k + rng.normal(0, 0.05),
                "available.ct": np.int8(1 if (i + k) % 4 else 0),
                "dose.parotid_l.mean_gy": 20.0 + 3.0 * k + rng.normal(0, 2), "outcome.os_event": float(i % 2),
                IMAGING_COLS[0]: 40.0 + 15.0 * k + rng.normal(0, 5),
                IMAGING_COLS[1]: (1.0 + 0.8 * k) * rng.gamma(4.0, 2.0),
                IMAGING_COLS[2]: 3.0 + 1.0 * k + rng.normal(0, 0.6),
            })
    table = pd.DataFrame(rows).set_index("patient_id")
    table["available.ct"] = table["available.ct"].astype("int8")
    return table


def test_combat_harmonises_imaging_only_and_passes_unseen_centre_through(caplog: pytest.LogCaptureFixture) -> None:
    from radiogenomics.features.harmonisation import ComBat

    table = fused_table({"A": 12, "B": 12, "C": 4})
    train = table[table["clinical.center"].isin(["A", "B"])]
    combat = ComBat().fit(train)
    with caplog.at_level(logging.WARNING):
        out = combat.transform(table)
    out = out.loc[table.index]
    for col in OTHER_NUMERIC + ["clinical.center"]:
        pd.testing.assert_series_equal(out[col], table[col], check_dtype=False, obj=col)
    unseen = table["clinical.center"] == "C"
    pd.testing.assert_frame_equal(out.loc[unseen, IMAGING_COLS], table.loc[unseen, IMAGING_COLS], check_dtype=False)
    assert "C" in list(combat.unseen_batches_)
    assert "C" in caplog.text
    seen = ~unseen
    assert not np.allclose(out.loc[seen, IMAGING_COLS[0]], table.loc[seen, IMAGING_COLS[0]])
    gap_before = abs(table.loc[table["clinical.center"] == "A", IMAGING_COLS[0]].mean()
                     - table.loc[table["clinical.center"] == "B", IMAGING_COLS[0]].mean())
    gap_after = abs(out.loc[table["clinical.center"] == "A", IMAGING_COLS[0]].mean()
                    - out.loc[table["clinical.center"] == "B", IMAGING_COLS[0]].mean())
    assert gap_after < 0.2 * gap_before, (gap_before, gap_after)


def test_combat_small_centre_is_left_out_as_documented() -> None:
    from radiogenomics.features.harmonisation import ComBat

    table = fused_table({"A": 12, "B": 12, "D": 1})
    ab = table[table["clinical.center"] != "D"]
    with_d = ComBat().fit(table)
    without_d = ComBat().fit(ab)
    assert "D" in list(with_d.small_batches_)
    out = with_d.transform(table)
    d_rows = table["clinical.center"] == "D"
    pd.testing.assert_frame_equal(out.loc[d_rows, IMAGING_COLS], table.loc[d_rows, IMAGING_COLS], check_dtype=False)
    np.testing.assert_allclose(out.loc[ab.index, IMAGING_COLS].to_numpy(float),
                               without_d.transform(ab).loc[ab.index, IMAGING_COLS].to_numpy(float), rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Deliver 8: RSI slot mapping (CDK1 read from PAK2)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pak2_cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pak2") / "cohort"
    root.mkdir()
    (root / "patients.csv").write_text("patient_id,site,center\nW1,head_neck,A\nW2,head_neck,B\n")
    genes = [("PAK2" if g == "CDK1" else g) for g in RSI_GENES]
    rows = {p: expression_row(seed) for p, seed in (("W1", 21), ("W2", 22))}
    lines = ["patient_id," + ",".join(genes)]
    for p, r in rows.items():
        lines.append(p + "," + ",".join(str(r[g]) for g in RSI_GENES))  # the CDK1 slot's value under PAK2
    (root / "expression.csv").write_text("\n".join(lines) + "\n")
    return {"root": root, "expected": {p: rsi_by_hand(r) for p, r in rows.items()}}


def test_validator_fix_names_both_ways_to_map_pak2(pak2_cohort: dict[str, Any]) -> None:
    from radiogenomics.cohort import validate_cohort

    report = validate_cohort(pak2_cohort["root"])
    subs = [p for p in report.problems if p.code == "rsi_slot_substitute"]
    assert subs, [p.one_line() for p in report.problems]
    fix = " ".join(str(p.fix) for p in subs)
    assert "--rsi-gene-map CDK1=PAK2" in fix and "rsi_gene_map" in fix, fix


def test_extract_without_map_warns_loudly(pak2_cohort: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(capsys, "extract", pak2_cohort["root"], "--out", tmp_path / "f.parquet", "--workers", "1",
                         "--no-cache", "--no-progress")
    assert rc == 0
    assert "genomic.rsi is NaN for every patient" in err, err
    assert "CDK1=PAK2" in err
    assert pd.read_parquet(tmp_path / "f.parquet")["genomic.rsi"].isna().all()


def test_extract_with_rsi_gene_map_option(pak2_cohort: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.parquet"
    rc, _, err = run_cli(capsys, "extract", pak2_cohort["root"], "--out", out, "--rsi-gene-map", "CDK1=PAK2",
                         "--workers", "1", "--no-cache", "--no-progress")
    assert rc == 0, err
    got = pd.read_parquet(out).set_index("patient_id")["genomic.rsi"]
    for p, expected in pak2_cohort["expected"].items():
        assert got[p] == pytest.approx(expected, abs=1e-12), p
    params = json.loads(pq.read_metadata(out).metadata[b"radiogenomics.params"])
    assert params["rsi_gene_map"] == {"CDK1": "PAK2"}


def test_extract_with_rsi_gene_map_in_cohort_yaml(pak2_cohort: dict[str, Any], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(pak2_cohort["root"], cohort)
    (cohort / "cohort.yaml").write_text("name: pak2\nformat_version: 1\nrsi_gene_map: {CDK1: PAK2}\n")
    out = tmp_path / "f.parquet"
    rc, _, err = run_cli(capsys, "extract", cohort, "--out", out, "--workers", "1", "--no-cache", "--no-progress")
    assert rc == 0, err
    got = pd.read_parquet(out).set_index("patient_id")["genomic.rsi"]
    for p, expected in pak2_cohort["expected"].items():
        assert got[p] == pytest.approx(expected, abs=1e-12), p


# ---------------------------------------------------------------------------------------------------------
# Deliver 10: clean exits for bad paths
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def regular_file(tmp_path: Path) -> Path:
    f = tmp_path / "afile"
    f.write_text("not a folder\n")
    return f


def bad_path_cases(cohort: Path, f: Path, tmp: Path) -> list[tuple[list[str], str]]:
    return [
        (["extract", str(cohort), "--out", "/proc/x/f.parquet"], "/proc/x"),
        (["synth", "/proc/x", "--patients", "2"], "/proc/x"),
        (["extract", str(cohort), "--out", str(f / "f.parquet")], str(f)),
        (["synth", str(f / "x"), "--patients", "2"], str(f)),
        (["extract", str(cohort), "--out", str(tmp / "ok.parquet"), "--cache-dir", str(f)], str(f)),
        (["cache", "prune", "--cache-dir", str(f), "--older-than", "1"], str(f)),
        (["demo", "--out", str(f), "--patients", "2", "--grid-size", "16"], str(f)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_bad_output_paths_exit_2_with_one_line(case: int, pak2_cohort: dict[str, Any], regular_file: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, path = bad_path_cases(pak2_cohort["root"], regular_file, tmp_path)[case]
    rc, _, err = run_cli(capsys, *argv, "--no-progress") if argv[0] == "extract" else run_cli(capsys, *argv)
    assert rc == 2, (argv, rc, err)
    line = one_line(err)
    assert path in line, err
    assert "fix" in line.lower(), f"the line does not say how to fix it: {line}"


@pytest.mark.parametrize("command", ["extract", "validate"])
def test_patients_csv_that_is_a_folder(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "cohort"
    (cohort / "patients.csv").mkdir(parents=True)
    argv = [command, str(cohort)] + (["--out", str(tmp_path / "f.parquet"), "--no-progress"]
                                     if command == "extract" else [])
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in out + err
    if command == "extract":
        line = one_line(err)
        assert "patients.csv" in line and "fix" in line.lower(), line
    else:
        assert "patients.csv" in out + err


# ---------------------------------------------------------------------------------------------------------
# Deliver 7: the cache follows the package's own code and data; cache prune
# ---------------------------------------------------------------------------------------------------------


def test_help_lists_the_cache_command(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "--help")
    assert rc == 0 and "cache" in out
    rc, out, _ = run_cli(capsys, "cache", "prune", "--help")
    assert rc == 0 and "--older-than" in out and "--max-size" in out


def _run_copy(pkg_root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys, radiogenomics; assert radiogenomics.__file__.startswith(sys.argv[1]), radiogenomics.__file__;"
            "from radiogenomics.cli.app import main; sys.exit(main(sys.argv[2:]))")
    env = {**os.environ, "PYTHONPATH": str(pkg_root)}
    return subprocess.run([sys.executable, "-c", code, str(pkg_root), *argv], capture_output=True, text=True,
                          env=env, cwd=pkg_root, timeout=300, check=False)


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One patient (2 radiomics items, 2 dose items), extracted by an edited copy of the package."""
    root = tmp_path_factory.mktemp("cachecheck")
    pkg = root / "pkg"
    shutil.copytree(REPO / "radiogenomics", pkg / "radiogenomics", ignore=shutil.ignore_patterns("__pycache__"))
    cohort = root / "cohort"
    (cohort / "img").mkdir(parents=True)
    rng = np.random.default_rng(4)
    x, y, z = phys_coords(SMALL_SHAPE, SMALL_SPACING, (0.0, 0.0, 0.0))
    labels = np.zeros(SMALL_SHAPE, np.uint8)
    labels[(x - 22.0) ** 2 + (y - 18.0) ** 2 + (z - 14.0) ** 2 <= 36.0] = 1
    labels[((x - 8.0) ** 2 + (y - 30.0) ** 2 <= 6.0) & (z > 3) & (z < 26)] = 2
    dose = 10.0 + 1.5 * x + 0.5 * z
    for arr, name in ((rng.normal(30, 40, SMALL_SHAPE).astype(np.float32), "ct.nii.gz"), (labels, "labels.nii.gz"),
                      (dose, "dose.nii.gz")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(SMALL_SPACING)
        sitk.WriteImage(img, str(cohort / "img" / name))
    (cohort / "patients.csv").write_text("patient_id,site\nC1,head_neck\n")
    (cohort / "images.csv").write_text("patient_id,modality,image,mask,roi,label\n"
                                       "C1,CT,img/ct.nii.gz,img/labels.nii.gz,GTV,1\n"
                                       "C1,CT,img/ct.nii.gz,img/labels.nii.gz,spinal_cord,2\n"
                                       "C1,DOSE,img/dose.nii.gz,,,\n")
    expr = expression_row(31)
    (cohort / "expression.csv").write_text("patient_id," + ",".join(expr) + "\nC1," +
                                           ",".join(str(v) for v in expr.values()) + "\n")
    out, cache = root / "out" / "f.parquet", root / "cache"
    argv = ["extract", str(cohort), "--out", str(out), "--cache-dir", str(cache), "--workers", "1", "--no-progress"]
    first = _run_copy(pkg, *argv)
    assert first.returncode == 0, first.stderr
    before = pd.read_parquet(out).iloc[0]
    summary1 = json.loads((root / "out" / "f.summary.json").read_text())
    # edit the package's own data: the cord's gEUD volume parameter and a signature's gene direction
    geud_yaml = pkg / "radiogenomics" / "features" / "data" / "geud_a.yaml"
    text = geud_yaml.read_text()
    assert "  spinal_cord:\n    a: 20.0" in text
    geud_yaml.write_text(text.replace("  spinal_cord:\n    a: 20.0", "  spinal_cord:\n    a: 1.0"))
    hyp = pkg / "radiogenomics" / "features" / "data" / "hypoxia_toustrup2011.yaml"
    hyp.write_text(hyp.read_text().replace("  ADM: 1\n", "  ADM: -1\n"))
    second = _run_copy(pkg, *argv)
    assert second.returncode == 0, second.stderr
    after = pd.read_parquet(out).iloc[0]
    summary2 = json.loads((root / "out" / "f.summary.json").read_text())
    return {"before": before, "after": after, "s1": summary1, "s2": summary2, "cache": cache,
            "expr": expr, "pkg": pkg, "second": second}


def test_cache_recomputes_what_an_edited_package_file_changes(cache_run: dict[str, Any]) -> None:
    s1, s2 = cache_run["s1"], cache_run["s2"]
    assert s1["computed"] == 4 and s1["cached"] == 0, s1
    assert not s2["up_to_date"], "an edited package data file must not be 'up to date'"
    assert s2["cached"] == 2 and s2["computed"] == 2, s2  # radiomics from the cache, dose recomputed
    before, after = cache_run["before"], cache_run["after"]
    assert before["dose.spinal_cord.geud_gy"] > before["dose.spinal_cord.mean_gy"] + 0.5  # a = 20
    assert after["dose.spinal_cord.geud_gy"] == pytest.approx(after["dose.spinal_cord.mean_gy"], abs=0.05)  # a = 1
    assert after["dose.gtv.mean_gy"] == pytest.approx(before["dose.gtv.mean_gy"], abs=1e-9)
    expr = cache_run["expr"]
    delta = 2.0 * (expr["ADM"] - np.median(list(expr.values()))) / 15.0  # sample_median normalisation
    assert after["genomic.hypoxia_toustrup2011"] == pytest.approx(before["genomic.hypoxia_toustrup2011"] - delta,
                                                                   abs=1e-9)
    assert after["ct.gtv.original_firstorder_Mean"] == before["ct.gtv.original_firstorder_Mean"]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*.json"))


def test_cache_prune(cache_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(cache_run["cache"], cache)
    entries = _entries(cache)
    assert len(entries) >= 4, entries
    old = entries[: len(entries) // 2]
    stamp = time.time() - 40 * 86400
    for p in old:
        os.utime(p, (stamp, stamp))
    rc, out, err = run_cli(capsys, "cache", "prune", "--cache-dir", cache, "--older-than", "30", "--dry-run")
    assert rc == 0, err
    assert _entries(cache) == entries
    rc, out, err = run_cli(capsys, "cache", "prune", "--cache-dir", cache, "--older-than", "30")
    assert rc == 0, err
    assert _entries(cache) == [p for p in entries if p not in old]
    rc, out, err = run_cli(capsys, "cache", "prune", "--cache-dir", cache, "--max-size", "0")
    assert rc == 0, err
    assert _entries(cache) == []
    rc, _, err = run_cli(capsys, "cache", "prune", "--cache-dir", cache, "--older-than", "-1")
    assert rc == 2
    one_line(err)


# ---------------------------------------------------------------------------------------------------------
# Deliver 10 (demo) and 12 (independent check of the generator on the demo's cohort)
# ---------------------------------------------------------------------------------------------------------


def test_demo_regenerates_its_cohort_when_options_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RADIOGENOMICS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    patients_csv = out / "cohort" / "patients.csv"

    def demo(n: int, seed: int) -> pd.DataFrame:
        rc, _, err = run_cli(capsys, "demo", "--out", out, "--patients", str(n), "--seed", str(seed),
                             "--grid-size", "16", "--stop-after", "extract", "--new-patients", "0")
        assert rc == 0, err
        return pd.read_csv(patients_csv, dtype=str)

    first = demo(2, 0)
    assert len(first) == 2
    expr0 = pd.read_csv(out / "cohort" / "expression.csv").set_index("patient_id")
    stamp = patients_csv.stat().st_mtime_ns
    assert demo(2, 0).equals(first) and patients_csv.stat().st_mtime_ns == stamp  # same options: reused
    demo(2, 1)
    expr1 = pd.read_csv(out / "cohort" / "expression.csv").set_index("patient_id")
    assert not expr1.equals(expr0), "--seed changed but the demo reused the old cohort"
    third = demo(3, 1)
    assert len(third) == 3, "--patients changed but the demo reused the old cohort"
    expr1 = pd.read_csv(out / "cohort" / "expression.csv").set_index("patient_id")
    feats = pd.read_parquet(out / "features.parquet")
    assert list(feats["patient_id"]) == list(third["patient_id"])

    # Deliver 12: the generator's RSI and alpha against the published formulas, recomputed here
    truth = pd.read_csv(out / "cohort" / "truth.csv").set_index("patient_id")
    np.testing.assert_allclose(truth["alpha_per_gy"], -np.log(truth["rsi_true"]) / 2 - 2 * BETA, atol=1e-5)
    rsi = feats.set_index("patient_id")["genomic.rsi"]
    for pid, row in expr1.iterrows():
        assert rsi[pid] == pytest.approx(rsi_by_hand(row.to_dict()), abs=1e-12), pid


# ---------------------------------------------------------------------------------------------------------
# Deliver 11: survival analysis from a library, against the published R results (Freireich 6-MP data)
# ---------------------------------------------------------------------------------------------------------

MP6_TIME = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
MP6_EVENT = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
PLACEBO_TIME = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]


@pytest.fixture(scope="module")
def survival_module() -> Any:
    spec = importlib.util.spec_from_file_location("_survival_acceptance", REPO / "notebooks" / "_survival.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_survival_matches_r_on_6mp(survival_module: Any) -> None:
    s = survival_module
    src = (REPO / "notebooks" / "_survival.py").read_text()
    assert "sksurv" in src and "lifelines" not in src.split('"""', 2)[2].split("import", 1)[0]
    km = s.kaplan_meier(MP6_TIME, MP6_EVENT)
    # R: summary(survfit(Surv(time, status) ~ 1)) for the 6-MP arm
    for t, surv in [(6, 0.857), (7, 0.807), (10, 0.753), (13, 0.690), (16, 0.627), (22, 0.538), (23, 0.448)]:
        assert s.survival_at(km, t) == pytest.approx(surv, abs=5e-4), t
    time_all = MP6_TIME + PLACEBO_TIME
    event_all = MP6_EVENT + [1] * 21
    group = ["6-MP"] * 21 + ["placebo"] * 21
    lr = s.logrank_test(time_all, event_all, group)
    assert lr.statistic == pytest.approx(16.8, abs=0.05) and lr.dof == 1  # R survdiff: Chisq = 16.8
    cox = s.cox_table(time_all, event_all, pd.Series([0] * 21 + [1] * 21, name="placebo"))
    assert cox.loc["placebo", "coef"] == pytest.approx(1.572, abs=1e-3)  # R coxph (Efron)
    assert cox.loc["placebo", "se"] == pytest.approx(0.412, abs=1e-3)
    assert cox.loc["placebo", "hr"] == pytest.approx(4.817, abs=5e-3)
