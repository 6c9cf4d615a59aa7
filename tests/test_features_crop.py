"""Extraction cost follows the ROI: the box path gives every feature of the plain full-image path (issue 18.3).

The plain path is pyradiomics' ``RadiomicsFeatureExtractor.execute`` on the whole image and mask
(``extract_radiomics(..., crop=False)``); the box path (default) normalises, checks and resamples on a box around
the ROI (``radiogenomics.features.roi_crop``). Every feature is compared for equality (NaN == NaN), on a synthetic
patient's native grid and on a clinical-like grid (256 x 256 x 60 CT at 0.98 x 0.98 x 3 mm, 3 mm slices onto 2 mm
puts resampling points exactly half-way between slices), for the shipped CT, PET and MR parameters and for
parameter files without resampling.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radiogenomics.cohort import read_image, read_mask
from radiogenomics.features import radiomics_extraction as rx
from radiogenomics.features import roi_crop
from radiogenomics.features.tasks import PatientReader
from radiogenomics.synthetic import generate_cohort

ROIS = (("GTV", 1), ("parotid_l", 2), ("parotid_r", 3), ("spinal_cord", 4))


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = generate_cohort(tmp_path_factory.mktemp("crop") / "c", n_patients=1, seed=3, grid_size=48, workers=1)
    return root / "images" / "SYN0001"


def _on_grid(image: sitk.Image, size: tuple[int, int, int], spacing: tuple[float, float, float],
             interpolator: int, default: float) -> sitk.Image:
    """``image`` resampled onto a larger grid with clinical spacing, centred on the same point."""
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    reference = sitk.Image(size, image.GetPixelID())
    reference.SetSpacing(spacing)
    reference.SetOrigin((centre - (np.array(size) - 1) / 2 * np.array(spacing)).tolist())
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, image.GetPixelID())


def _grids(patient: Path, name: str, default: float) -> dict[str, tuple[sitk.Image, sitk.Image]]:
    image, labels = read_image(patient / name), read_image(patient / "labels.nii.gz")
    size = (256, 256, 60) if name == "ct.nii.gz" else (128, 128, 50)
    spacing = (0.98, 0.98, 3.0) if name == "ct.nii.gz" else (2.0, 2.0, 3.0)
    clinical = (_on_grid(image, size, spacing, sitk.sitkLinear, default),
                _on_grid(labels, size, spacing, sitk.sitkNearestNeighbor, 0))
    return {"native": (image, labels), "clinical": clinical}


def _assert_same(plain: dict[str, float], boxed: dict[str, float], where: str) -> None:
    assert plain.keys() == boxed.keys(), where
    differ = [k for k in plain if not (plain[k] == boxed[k] or (math.isnan(plain[k]) and math.isnan(boxed[k])))]
    assert not differ, f"{where}: {len(differ)} features differ, e.g. {differ[:3]}"


def _mask(labels: sitk.Image, image: sitk.Image, label: int) -> sitk.Image:
    mask = sitk.Cast(labels == label, sitk.sitkUInt8)
    mask.CopyInformation(image)
    return mask


@pytest.mark.parametrize("grid", ["native", "clinical"])
@pytest.mark.parametrize(("modality", "file", "default"), [("CT", "ct.nii.gz", -1000.0),
                                                          ("PET_FDG", "pet_fdg.nii.gz", 0.0)])
def test_every_feature_of_every_roi_equals_the_full_image_path(patient: Path, grid: str, modality: str, file: str,
                                                                default: float) -> None:
    image, labels = _grids(patient, file, default)[grid]
    params = rx.params_for_modality(modality) or {}
    for roi, label in ROIS:
        mask = _mask(labels, image, label)
        _assert_same(rx.extract_radiomics(image, mask, params, crop=False),
                     rx.extract_radiomics(image, mask, params), f"{grid} {modality} {roi}")


@pytest.mark.parametrize("grid", ["native", "clinical"])
def test_log_and_wavelet_features_equal_the_full_image_path(patient: Path, grid: str) -> None:
    image, labels = _grids(patient, "ct.nii.gz", -1000.0)[grid]
    params = rx.with_filters(rx.params_for_modality("CT") or {}, ["original", "log", "wavelet"])
    mask = _mask(labels, image, 1)
    plain, boxed = rx.extract_radiomics(image, mask, params, crop=False), rx.extract_radiomics(image, mask, params)
    assert len(plain) > 1000
    _assert_same(plain, boxed, f"{grid} CT GTV with filters")


def test_mr_normalisation_uses_the_whole_image_as_before(patient: Path) -> None:
    """MR.yaml z-scores over the whole image: done on the full image first, then the box.

    The one tolerance: normalisation makes the image float64, and a B-spline value at a point is then kept to
    the last bit. The cropped image's origin (``RegionOfInterest``: origin + index x spacing) is rounded in
    its last bit differently from the full image's, so ITK computes each sample's continuous index with a
    ~1e-16 relative difference and the resampled values differ in their last bits. Integer images (CT) and
    float32 ones (PET) round that away (identical above); for float64 images the features agree to 1e-9
    relative (measured: at most 5e-10, a wavelet median near zero, with LoG and wavelet on; 6e-14 for
    Original)."""
    image, labels = _grids(patient, "ct.nii.gz", -1000.0)["clinical"]
    params = rx.params_for_modality("MR_T1") or {}
    for _roi, label in ROIS:
        mask = _mask(labels, image, label)
        plain, boxed = rx.extract_radiomics(image, mask, params, crop=False), rx.extract_radiomics(image, mask, params)
        assert plain.keys() == boxed.keys()
        for key, value in plain.items():
            assert math.isclose(value, boxed[key], rel_tol=1e-9) or (math.isnan(value) and math.isnan(boxed[key])), \
                (label, key, value, boxed[key])


@pytest.mark.parametrize("pre_crop", [True, False])
def test_parameters_without_resampling(patient: Path, pre_crop: bool) -> None:
    """No resampling: preCrop crops to the box plus padDistance as pyradiomics does; without preCrop the filters see
    the whole image in pyradiomics, so the image is passed whole (prepare_for_pyradiomics returns None)."""
    image, labels = _grids(patient, "ct.nii.gz", -1000.0)["native"]
    params = rx.with_filters({"setting": {"binWidth": 25, "preCrop": pre_crop, "padDistance": 4}},
                             ["original", "log"])
    mask = _mask(labels, image, 1)
    _assert_same(rx.extract_radiomics(image, mask, params, crop=False), rx.extract_radiomics(image, mask, params),
                 f"preCrop={pre_crop}")
    settings = rx._extractor(rx.canonical_json(params)).settings
    assert (roi_crop.prepare_for_pyradiomics(image, mask, settings) is None) is (not pre_crop)


def test_resampling_margins() -> None:
    """Kernel support plus the prefilter's reach: cubic pole sqrt(3) - 2, |z|^34 < 2**-64 <= |z|^33."""
    z = abs(math.sqrt(3.0) - 2.0)
    assert z ** 34 < 2.0 ** -64 <= z ** 33
    assert roi_crop.resampling_margin(sitk.sitkBSpline) == 2 + 34
    assert roi_crop.resampling_margin(sitk.sitkLinear) == 1
    assert roi_crop.resampling_margin(sitk.sitkNearestNeighbor) == 1
    assert roi_crop.resampling_margin(sitk.sitkBSpline5) > roi_crop.resampling_margin(sitk.sitkBSpline3)
    assert roi_crop.resampling_margin(sitk.sitkGaussian) is None  # not reproduced: the plain path runs
    assert roi_crop.interpolator_code("sitkBSpline") == sitk.sitkBSpline
    assert roi_crop.interpolator_code("noSuchInterpolator") is None


def test_box_is_far_smaller_than_the_image(patient: Path) -> None:
    image, labels = _grids(patient, "ct.nii.gz", -1000.0)["clinical"]
    mask = _mask(labels, image, 1)
    settings = rx._extractor(rx.canonical_json(rx.params_for_modality("CT") or {})).settings
    prepared = roi_crop.prepare_for_pyradiomics(image, mask, settings)
    assert prepared is not None
    boxed_image, boxed_mask = prepared
    assert boxed_mask.GetPixelID() == sitk.sitkUInt32  # pyradiomics' getMask type, cast on the box only
    assert np.prod(boxed_image.GetSize()) < np.prod(image.GetSize()) / 20


def test_patient_reader_decodes_once_and_cuts_the_same_masks(patient: Path) -> None:
    reader = PatientReader()
    ct, labels = str(patient / "ct.nii.gz"), str(patient / "labels.nii.gz")
    for roi, label in ROIS:
        ours = reader.mask(labels, ct, roi, label, patient_id="SYN0001")
        theirs = read_mask(labels, read_image(ct), roi, label)
        assert ours.GetPixelID() == theirs.GetPixelID() == sitk.sitkUInt8
        assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs))
        assert ours.GetOrigin() == theirs.GetOrigin() and ours.GetSpacing() == theirs.GetSpacing()
    assert sorted(reader._images) == sorted([ct, labels])  # each file decoded once for the four ROIs
    assert reader.image(ct) is reader.image(ct)
