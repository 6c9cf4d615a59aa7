"""DICOM: CT series round trip, RTSTRUCT round trip (mask -> RTSTRUCT -> mask), RTDOSE, DICOM cohorts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from cohort_factory import make_image

from radiogenomics.cohort import read_image, read_mask, validate_cohort
from radiogenomics.cohort.dicom import write_ct_series
from radiogenomics.cohort.rtstruct import rasterise_rtstruct, rtstruct_roi_names, write_rtstruct
from radiogenomics.errors import InputError


def _ellipsoid(shape_zyx: tuple[int, int, int], centre: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.ogrid[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2 <= 1.0).astype(np.uint8)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, sitk.Image]:
    shape = (14, 40, 56)  # z, y, x: non-square slices catch row/column mix-ups
    rng = np.random.default_rng(3)
    hu = rng.normal(30, 20, size=shape).round()
    image = make_image(hu, origin=(-80.0, -60.0, -20.0), spacing=(1.2, 0.9, 2.5))
    folder = tmp_path_factory.mktemp("dicom") / "ct"
    write_ct_series(image, folder, patient_id="HN-DCM")
    return folder, image


def test_ct_series_round_trip(ct_series: tuple[Path, sitk.Image]) -> None:
    folder, image = ct_series
    back = read_image(folder)
    assert back.GetSize() == image.GetSize()
    assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
    assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image).astype(np.int16))


def test_rtstruct_round_trip_dice(ct_series: tuple[Path, sitk.Image], tmp_path: Path) -> None:
    folder, image = ct_series
    shape = sitk.GetArrayViewFromImage(image).shape
    truth = {"GTV": _ellipsoid(shape, (7, 18, 30), (4, 9, 14)),
             "parotid_l": _ellipsoid(shape, (6, 25, 10), (3, 6, 5))}
    masks = {}
    for name, array in truth.items():
        m = sitk.GetImageFromArray(array)
        m.CopyInformation(image)
        masks[name] = m
    path = write_rtstruct(masks, folder, tmp_path / "rtstruct.dcm")
    assert rtstruct_roi_names(path) == ["GTV", "parotid_l"]
    reference = read_image(folder)
    for name, array in truth.items():
        back = sitk.GetArrayFromImage(rasterise_rtstruct(path, reference, name)).astype(bool)
        assert _dice(back, array.astype(bool)) > 0.95, name
        assert np.array_equal(back, array.astype(bool)), name  # contours run 1/4 voxel outside: exact
    # case-insensitive structure lookup, and a clear error for a missing one
    assert sitk.GetArrayViewFromImage(read_mask(path, reference, "gtv")).sum() > 0
    with pytest.raises(InputError, match="holds: GTV, parotid_l"):
        read_mask(path, reference, "spinal_cord")


def test_rtstruct_holes_use_even_odd(ct_series: tuple[Path, sitk.Image], tmp_path: Path) -> None:
    folder, image = ct_series
    shape = sitk.GetArrayViewFromImage(image).shape
    ring = _ellipsoid(shape, (7, 20, 28), (3, 12, 16)) & (1 - _ellipsoid(shape, (7, 20, 28), (3, 5, 6)))
    m = sitk.GetImageFromArray(ring.astype(np.uint8))
    m.CopyInformation(image)
    path = write_rtstruct({"ring": m}, folder, tmp_path / "ring.dcm")
    back = sitk.GetArrayFromImage(rasterise_rtstruct(path, read_image(folder), "ring")).astype(bool)
    assert not back[7, 20, 28]  # the hole stays empty
    assert np.array_equal(back, ring.astype(bool))


def _write_rtdose(path: Path, dose_gy: np.ndarray, origin: tuple[float, float, float],
                  spacing_xyz: tuple[float, float, float], scaling: float) -> None:
    """A minimal RTDOSE as a planning system writes it (multi-frame uint32 + DoseGridScaling)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "RTDOSE", "HN-DCM"
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.ImagePositionPatient = list(origin)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing_xyz[1], spacing_xyz[0]]
    ds.GridFrameOffsetVector = [k * spacing_xyz[2] for k in range(dose_gy.shape[0])]
    ds.NumberOfFrames = dose_gy.shape[0]
    ds.Rows, ds.Columns = dose_gy.shape[1], dose_gy.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit, ds.PixelRepresentation = 31, 0
    ds.DoseGridScaling = scaling
    ds.PixelData = np.round(dose_gy / scaling).astype(np.uint32).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_rtdose_read_in_gy(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    dose = rng.uniform(0, 72, size=(6, 10, 12))
    _write_rtdose(tmp_path / "rd.dcm", dose, (-10.0, -20.0, 5.0), (2.0, 2.5, 3.0), 1e-4)
    image = read_image(tmp_path / "rd.dcm")
    assert image.GetSize() == (12, 10, 6)
    assert np.allclose(image.GetSpacing(), (2.0, 2.5, 3.0))
    assert np.allclose(image.GetOrigin(), (-10.0, -20.0, 5.0))
    assert np.allclose(sitk.GetArrayFromImage(image), dose, atol=1e-4)
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    ds.DoseUnits = "RELATIVE"
    ds.save_as(tmp_path / "rel.dcm")
    with pytest.raises(InputError, match="RELATIVE"):
        read_image(tmp_path / "rel.dcm")


def test_dicom_cohort_validates(ct_series: tuple[Path, sitk.Image], tmp_path: Path) -> None:
    folder, image = ct_series
    shape = sitk.GetArrayViewFromImage(image).shape
    gtv = sitk.GetImageFromArray(_ellipsoid(shape, (7, 18, 30), (4, 9, 14)))
    gtv.CopyInformation(image)
    write_rtstruct({"GTV": gtv}, folder, tmp_path / "rs.dcm")
    _write_rtdose(tmp_path / "rd.dcm", np.full((4, 8, 8), 60.0), (-80.0, -60.0, -20.0), (8.0, 6.0, 10.0), 1e-3)
    (tmp_path / "patients.csv").write_text("patient_id,site\nHN-DCM,head_neck\n")
    (tmp_path / "images.csv").write_text(textwrap.dedent(f"""\
        patient_id,modality,image,mask,roi,label
        HN-DCM,CT,{folder},rs.dcm,GTV,
        HN-DCM,CT,{folder},rs.dcm,Brainstem,
        HN-DCM,DOSE,rd.dcm,,,
        """))
    report = validate_cohort(tmp_path)
    codes = [(p.code, p.patient_id) for p in report.problems]
    assert codes == [("missing_structure", "HN-DCM")], codes
