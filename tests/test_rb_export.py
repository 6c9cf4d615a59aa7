"""NIfTI and DICOM RT Dose export: round trips through SimpleITK and pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import image_from_array, read_rtdose_gy, write_dose_nifti, write_rtdose


def _dose(direction: tuple[float, ...] | None = None) -> sitk.Image:
    rng = np.random.default_rng(4)
    arr = rng.uniform(0.0, 84.0, (6, 7, 9))
    arr[0, 0, 0] = 0.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.25, 2.5, 3.0))
    img.SetOrigin((-120.5, 33.0, -40.0))
    if direction is not None:
        img.SetDirection(direction)
    return img


def test_rtdose_roundtrip_pydicom(tmp_path: Path) -> None:
    img = _dose()
    path = write_rtdose(img, tmp_path / "rd.dcm", patient_id="P001",
                        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.1",
                        study_instance_uid="1.2.826.0.1.3680043.8.498.2")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2"
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.Modality == "RTDOSE"
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert ds.PatientID == "P001"
    assert ds.FrameOfReferenceUID == "1.2.826.0.1.3680043.8.498.1"
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.2"
    assert (ds.BitsAllocated, ds.PixelRepresentation) == (32, 0)
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (7, 9, 6)
    assert [float(v) for v in ds.PixelSpacing] == [2.5, 1.25]
    np.testing.assert_allclose([float(v) for v in ds.GridFrameOffsetVector], np.arange(6) * 3.0)
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], (-120.5, 33.0, -40.0))
    scaling = float(ds.DoseGridScaling)
    stored = ds.pixel_array
    assert stored.dtype == np.uint32
    back = stored.astype(np.float64) * scaling
    ref = sitk.GetArrayFromImage(img)
    assert np.abs(back - ref).max() <= scaling
    assert back.max() == pytest.approx(ref.max(), abs=scaling)


def test_rtdose_roundtrip_simpleitk(tmp_path: Path) -> None:
    img = _dose()
    path = write_rtdose(img, tmp_path / "rd.dcm", patient_id="P001")
    scaling = float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)
    raw = sitk.ReadImage(str(path))  # raw stored integers
    np.testing.assert_allclose(raw.GetSpacing(), img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(raw.GetOrigin(), img.GetOrigin(), atol=1e-6)
    back = sitk.GetArrayFromImage(raw).astype(np.float64) * scaling
    assert np.abs(back - sitk.GetArrayFromImage(img)).max() <= scaling
    # our own reader gives Gy and the geometry
    gy = read_rtdose_gy(path)
    assert np.abs(sitk.GetArrayFromImage(gy) - sitk.GetArrayFromImage(img)).max() <= scaling
    np.testing.assert_allclose(gy.GetDirection(), img.GetDirection(), atol=1e-9)


def test_rtdose_flipped_slice_axis(tmp_path: Path) -> None:
    # slices stacked towards -z (feet first scans): negative frame offsets, geometry preserved
    img = _dose(direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    path = write_rtdose(img, tmp_path / "rd.dcm", patient_id="P2")
    ds = pydicom.dcmread(path)
    np.testing.assert_allclose([float(v) for v in ds.GridFrameOffsetVector], -np.arange(6) * 3.0)
    back = read_rtdose_gy(path)
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-6)
    idx = (3, 4, 5)
    np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(idx), img.TransformIndexToPhysicalPoint(idx))


def test_rtdose_bad_input(tmp_path: Path) -> None:
    img = _dose()
    with pytest.raises(InputError, match="patient_id"):
        write_rtdose(img, tmp_path / "x.dcm", patient_id="")
    neg = image_from_array(-sitk.GetArrayFromImage(img), img)
    with pytest.raises(InputError, match="negative"):
        write_rtdose(neg, tmp_path / "x.dcm", patient_id="P")
    with pytest.raises(InputError, match="SimpleITK"):
        write_rtdose(sitk.GetArrayFromImage(img), tmp_path / "x.dcm", patient_id="P")  # type: ignore[arg-type]
    nan = sitk.GetArrayFromImage(img)
    nan[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        write_rtdose(image_from_array(nan, img), tmp_path / "x.dcm", patient_id="P")


def test_all_zero_dose(tmp_path: Path) -> None:
    img = image_from_array(np.zeros((2, 3, 4)), _dose()[:4, :3, :2])
    path = write_rtdose(img, tmp_path / "z.dcm", patient_id="P")
    assert float(np.abs(sitk.GetArrayFromImage(read_rtdose_gy(path))).max()) == 0.0


def test_nifti_roundtrip(tmp_path: Path) -> None:
    img = _dose()
    path = write_dose_nifti(img, tmp_path / "dose.nii.gz")
    back = sitk.ReadImage(str(path))
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img), rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-4)
    with pytest.raises(InputError, match="NIfTI"):
        write_dose_nifti(img, tmp_path / "dose.mha")


def test_painted_prescription_export_roundtrip(tmp_path: Path) -> None:
    from radiogenomics.radiobiology import (
        clonogen_density_from_suv,
        clonogens_from_density,
        po2_from_fmiso,
        tcp_optimal_painting,
        write_prescription,
    )

    rng = np.random.default_rng(9)
    shape = (5, 6, 7)
    ref = sitk.GetImageFromArray(np.zeros(shape))
    ref.SetSpacing((2.0, 2.0, 2.0))
    gtv = np.zeros(shape, bool)
    gtv[1:4, 1:5, 1:6] = True
    suv = rng.uniform(2.0, 12.0, shape)
    fmiso = rng.uniform(1.0, 2.2, shape)
    clon = clonogens_from_density(clonogen_density_from_suv(suv, mask=gtv), 0.008)
    res = tcp_optimal_painting(clon, 0.3, 0.03, 30, po2_mmhg=po2_from_fmiso(fmiso), max_dose_gy=84.0,
                               mask=gtv, target_tcp=0.95)
    nii, rtd = write_prescription(res.dose_gy, ref, tmp_path, patient_id="P9")
    back_nii = sitk.GetArrayFromImage(sitk.ReadImage(str(nii)))
    np.testing.assert_allclose(back_nii, res.dose_gy, atol=1e-4)
    ds = pydicom.dcmread(rtd)
    back = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert np.abs(back - res.dose_gy).max() <= float(ds.DoseGridScaling)
    assert back[~gtv].max() == 0.0
