"""pyradiomics extraction for one (image, mask): parameter files, filters, real-valued output."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.features import radiomics_extraction as rx


def _image_and_mask(n: int = 20, radius: float = 6.0, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n]
    c = (n - 1) / 2
    inside = (x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 <= radius**2
    arr = rng.normal(40.0, 30.0, size=(n, n, n)) + 60.0 * inside
    image = sitk.GetImageFromArray(arr.astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def _firstorder_only(params: dict) -> dict:
    return {**params, "featureClass": {"firstorder": None}}


@pytest.mark.parametrize("modality", ["CT", "PET_FDG", "PET_FMISO", "MR_T1", "MR_T2", "MR_DWI"])
def test_shipped_params_exist_and_validate(modality: str) -> None:
    params = rx.params_for_modality(modality)
    assert params is not None
    rx.validate_params(params)  # shipped files are loaded without validation at run time: check them here
    rx.validate_params(rx.with_filters(params, list(rx.FILTERS)))
    assert params["imageType"] == {"Original": {}}
    setting = params["setting"]
    assert "resampledPixelSpacing" in setting
    if modality == "CT":
        assert setting["binWidth"] == 25  # HU
    elif modality.startswith("PET"):
        assert setting["binWidth"] == 0.25  # SUV


def test_dose_has_no_radiomics_params() -> None:
    assert rx.params_for_modality("DOSE") is None


def test_invalid_params_file_raises_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: 25\n  notASetting: 3\n")
    with pytest.raises(InputError, match="bad.yaml"):
        rx.load_params(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("setting: [unclosed\n")
    with pytest.raises(InputError):
        rx.load_params(broken)
    with pytest.raises(InputError):
        rx.load_params(tmp_path / "missing.yaml")


def test_user_params_file_is_used_as_is(tmp_path: Path) -> None:
    image, mask = _image_and_mask()
    user = tmp_path / "user.yaml"
    user.write_text("imageType:\n  Original: {}\nfeatureClass:\n  firstorder: [Entropy, Mean]\n"
                    "setting:\n  binWidth: 5\n")
    params = rx.load_params(user)
    fine = rx.extract_radiomics(image, mask, params)
    assert set(fine) == {"original_firstorder_Entropy", "original_firstorder_Mean"}
    coarse = rx.extract_radiomics(image, mask, {**params, "setting": {"binWidth": 50}})
    # a coarser fixed bin width gives fewer grey levels and lower entropy; the mean is binning-independent
    assert fine["original_firstorder_Entropy"] > coarse["original_firstorder_Entropy"] + 0.5
    assert fine["original_firstorder_Mean"] == pytest.approx(coarse["original_firstorder_Mean"])
    arr = sitk.GetArrayFromImage(image)[sitk.GetArrayFromImage(mask) > 0]
    assert fine["original_firstorder_Mean"] == pytest.approx(float(arr.mean()), rel=1e-6)


def test_ct_extraction_gives_all_classes_as_floats() -> None:
    image, mask = _image_and_mask()
    feats = rx.extract_radiomics(image, mask, rx.params_for_modality("CT") or {})
    classes = {k.split("_")[1] for k in feats}
    assert classes == {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    assert all(k.startswith("original_") for k in feats)
    assert all(type(v) is float for v in feats.values())
    assert not any(k.startswith("diagnostics") for k in feats)


def test_log_and_wavelet_filters_are_selectable() -> None:
    image, mask = _image_and_mask(n=16, radius=5.0)
    params = _firstorder_only(rx.params_for_modality("PET_FDG") or {})
    params = {**params, "setting": {**params["setting"], "binWidth": 5, "resampledPixelSpacing": None}}
    feats = rx.extract_radiomics(image, mask, rx.with_filters(params, ["original", "LoG", "wavelet"]))
    prefixes = {k.split("_", 1)[0] for k in feats}
    assert {"original", "log-sigma-1-0-mm-3D", "log-sigma-3-0-mm-3D", "wavelet-LLL", "wavelet-HHH"} <= prefixes
    assert len([p for p in prefixes if p.startswith("wavelet-")]) == 8
    only_log = rx.with_filters(params, ["log"])
    assert list(only_log["imageType"]) == ["LoG"]
    with pytest.raises(InputError):
        rx.with_filters(params, ["gabor"])
    with pytest.raises(InputError):
        rx.with_filters(params, [])


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param(9.47 + 9.7e-17j, 9.47, id="python-complex"),
    pytest.param(np.complex128(9.47 + 9.7e-17j), 9.47, id="complex128"),
    pytest.param(np.complex64(1.5 - 0j), 1.5, id="complex64"),
    pytest.param(np.array(2.5 - 1e-16j), 2.5, id="complex-0d-array"),
    pytest.param(np.array([2.5 + 1e-16j]), 2.5, id="complex-1-element-array"),
    pytest.param(3.25, 3.25, id="python-float"),
    pytest.param(np.float64(3.25), 3.25, id="float64"),
    pytest.param(np.float32(0.5), 0.5, id="float32"),
    pytest.param(np.array(3.0), 3.0, id="real-0d-array"),
    pytest.param(np.array([2.5]), 2.5, id="real-1-element-array"),
    pytest.param(7, 7.0, id="python-int"),
    pytest.param(np.int64(-7), -7.0, id="int64"),
])
def test_to_real_gives_the_real_part_as_a_python_float(value: object, expected: float,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Whatever pyradiomics hands back (complex or real, scalar or 0-d/1-element array): a Python float, the
    real part exactly; a negligible imaginary part is dropped without a warning."""
    with caplog.at_level(logging.WARNING, logger="radiogenomics.features.radiomics_extraction"):
        out = rx.to_real(value)
    assert type(out) is float and out == expected
    assert "imaginary" not in caplog.text


@pytest.mark.parametrize("value", [float("nan"), np.float64(np.nan), np.array(np.nan), complex(np.nan, 0.0),
                                   np.array(np.nan + 0j)], ids=["float", "float64", "0d-array", "complex",
                                                                "complex-0d-array"])
def test_to_real_keeps_nan(value: object) -> None:
    out = rx.to_real(value)
    assert type(out) is float and np.isnan(out)


def test_to_real_rejects_non_scalars_and_text() -> None:
    with pytest.raises(ValueError):
        rx.to_real(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        rx.to_real(np.array([1.0 + 0j, 2.0 + 0j]))
    with pytest.raises(ValueError):
        rx.to_real("abc")


def test_to_real_logs_large_imaginary_part(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="radiogenomics.features.radiomics_extraction"):
        assert rx.to_real(np.complex128(2.0 + 0.5j), "x") == 2.0
    assert "imaginary" in caplog.text


def _sphere(n: int) -> tuple[sitk.Image, sitk.Image]:
    z, y, x = np.mgrid[:n, :n, :n]
    c = (n - 1) / 2
    inside = ((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 <= (n / 2 - 0.7) ** 2).astype(np.uint8)
    image = sitk.GetImageFromArray((3.0 * z + x).astype(np.float32))
    mask = sitk.GetImageFromArray(inside)
    mask.CopyInformation(image)
    return image, mask


@pytest.mark.blas_sensitive
@pytest.mark.parametrize("n", [12, 16, 20, 24])
def test_near_spherical_roi_gives_real_shape_features(n: int) -> None:
    """Spheres (repeated covariance eigenvalues): pyradiomics' principal axes may come out complex or real
    depending on the BLAS/LAPACK kernel; ours are real Python floats either way, equal to pyradiomics' real
    parts."""
    from radiomics import featureextractor

    shape_only = {"imageType": {"Original": {}}, "featureClass": {"shape": None}, "setting": {"label": 1}}
    image, mask = _sphere(n)
    raw = featureextractor.RadiomicsFeatureExtractor(shape_only).execute(image, mask)
    raw = {k: v for k, v in raw.items() if not k.startswith("diagnostics_")}
    ours = rx.extract_radiomics(image, mask, shape_only)
    assert set(ours) == set(raw)
    for key, value in ours.items():
        assert type(value) is float, key
        assert value == pytest.approx(float(np.real(raw[key])), rel=1e-12, nan_ok=True), key
    # a sphere: all principal axes equal, elongation and flatness 1
    assert ours["original_shape_Elongation"] == pytest.approx(1.0, rel=1e-6)
    assert ours["original_shape_Flatness"] == pytest.approx(1.0, rel=1e-6)
    assert ours["original_shape_MajorAxisLength"] == pytest.approx(ours["original_shape_LeastAxisLength"], rel=1e-6)


def test_complex_pyradiomics_output_becomes_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a kernel that gives complex eigenvalues makes pyradiomics return (complex128 scalars and 0-d
    arrays next to real ones, a NaN): extract_radiomics gives Python floats, the real parts, NaN kept."""
    raw = {
        "diagnostics_Versions_PyRadiomics": "v3",
        "original_shape_MajorAxisLength": np.complex128(9.47 + 9.7e-17j),
        "original_shape_Elongation": np.array(1.0 - 2e-17j),
        "original_shape_Flatness": np.array(0.999 + 0j),
        "original_shape_VoxelVolume": np.float64(1234.0),
        "original_shape_Sphericity": np.array(0.93),
        "original_shape_LeastAxisLength": complex(np.nan, 0.0),
    }

    class _Extractor:
        def execute(self, image: object, mask: object, label: int = 1) -> dict[str, object]:
            return dict(raw)

    monkeypatch.setattr(rx, "_extractor", lambda params_json: _Extractor())
    image, mask = _sphere(12)
    ours = rx.extract_radiomics(image, mask, {"featureClass": {"shape": None}})
    assert all(type(v) is float for v in ours.values()), ours
    assert {k: v for k, v in ours.items() if k != "original_shape_LeastAxisLength"} == {
        "original_shape_MajorAxisLength": 9.47, "original_shape_Elongation": 1.0, "original_shape_Flatness": 0.999,
        "original_shape_VoxelVolume": 1234.0, "original_shape_Sphericity": 0.93}
    assert np.isnan(ours["original_shape_LeastAxisLength"])


def test_empty_roi_raises_input_error() -> None:
    image, mask = _image_and_mask()
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    with pytest.raises(InputError, match="ROI"):
        rx.extract_radiomics(image, empty, rx.params_for_modality("CT") or {})
