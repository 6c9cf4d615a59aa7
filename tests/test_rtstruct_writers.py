"""RTSTRUCTs from any writer rasterise back to their masks.

Two contour conventions: rt-utils 1.2.7 (like most mask-to-RTSTRUCT exporters, OpenCV border following)
draws contours through the centres of the boundary voxels, holes through the structure's own voxels next to
the hole; our `write_rtstruct` draws them a quarter voxel outside the boundary centres. The reader counts a
centre on a contour edge as inside, so both give the source masks back. rt-utils is a test-only dependency
(Makefile); its 1.2.7 swaps row/column spacing, so the CT here has square pixels.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from rt_utils import RTStructBuilder

from radiogenomics.cohort import read_image, read_mask
from radiogenomics.cohort.dicom import write_ct_series
from radiogenomics.cohort.geometry import physical_to_index
from radiogenomics.cohort.rtstruct import rasterise_rtstruct, write_rtstruct
from radiogenomics.features.radiomics_extraction import extract_radiomics, params_for_modality

SPACING = (0.9766, 0.9766, 2.5)  # mm: square pixels (a 500 mm FOV at 512), 2.5 mm slices
SIZE = (104, 92, 24)  # x, y, z: not square, to catch row/column mix-ups
ORIGIN = (-50.31, -231.72, -28.75)  # mm, head-first supine
WRITERS = ("rt-utils", "write_rtstruct")
DICE_MIN, VOLUME_RTOL = 0.98, 0.02  # issue 7

# rt-utils 1.2.7 sets FileDataset.is_little_endian / is_implicit_VR, deprecated in pydicom 3: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'FileDataset.is_:DeprecationWarning")


def _ct(seed: int, direction: tuple[float, ...] | None = None) -> sitk.Image:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(35.0, 12.0, size=SIZE[::-1]).round().astype(np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    if direction is not None:
        image.SetDirection(direction)
    return image


def _centres_mm(reference: sitk.Image) -> np.ndarray:
    """Physical (x, y, z) of every voxel centre, array indexed [z, y, x, axis]."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in SIZE[::-1]), indexing="ij")
    index = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    points = np.asarray(reference.GetOrigin()) + index @ (direction @ np.diag(reference.GetSpacing())).T
    return points.reshape(*SIZE[::-1], 3)


def _ellipsoid(centres: np.ndarray, centre_mm: np.ndarray, radii_mm: tuple[float, float, float],
               lobes: float = 0.0) -> np.ndarray:
    """Voxels whose centre lies in an ellipsoid; `lobes` > 0 modulates the radius (irregular tumour surface)."""
    rel = (centres - centre_mm) / np.asarray(radii_mm)
    r = np.linalg.norm(rel, axis=-1)
    if lobes:
        theta, phi = np.arccos(np.clip(rel[..., 2] / np.maximum(r, 1e-9), -1, 1)), np.arctan2(rel[..., 1], rel[..., 0])
        r = r / (1.0 + lobes * np.sin(3 * phi) * np.sin(2 * theta))
    return r <= 1.0


def _mid_mm(reference: sitk.Image) -> np.ndarray:
    return np.asarray(reference.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in SIZE]))


def _airway(reference: sitk.Image) -> np.ndarray:
    return _ellipsoid(_centres_mm(reference), _mid_mm(reference) + (1.5, 21, 0), (4.5, 3.2, 60))


def _head_neck_masks(reference: sitk.Image) -> dict[str, np.ndarray]:
    """GTV, both parotids and a larynx with its airway as a hole through every slice (z, y, x bool)."""
    c, mid = _centres_mm(reference), _mid_mm(reference)
    larynx = _ellipsoid(c, mid + (0, 22, 0), (11, 9, 40)) & ~_airway(reference)
    return {
        "GTV": _ellipsoid(c, mid + (6.3, -8.1, 1.2), (14, 12, 13), lobes=0.15),
        "Parotid_L": _ellipsoid(c, mid + (-33, -4, 2), (10, 16, 19)),
        "Parotid_R": _ellipsoid(c, mid + (34, -3, -1), (9.5, 15, 18)),
        "Larynx": larynx,
    }


def _sitk_mask(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    mask = sitk.GetImageFromArray(array.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def _write(writer: str, masks: dict[str, np.ndarray], folder: Path, out: Path) -> Path:
    """Write `masks` (z, y, x) against the CT series in `folder` with rt-utils or our own writer."""
    if writer == "rt-utils":
        rtstruct = RTStructBuilder.create_new(dicom_series_path=str(folder))
        for name, array in masks.items():
            rtstruct.add_roi(mask=np.ascontiguousarray(array.transpose(1, 2, 0)), name=name)  # (rows, cols, slices)
        rtstruct.save(str(out))
        return out
    reference = read_image(folder)
    return write_rtstruct({name: _sitk_mask(a, reference) for name, a in masks.items()}, folder, out)


def _back(path: Path, reference: sitk.Image, name: str) -> np.ndarray:
    return sitk.GetArrayFromImage(rasterise_rtstruct(path, reference, name)).astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def head_neck(tmp_path_factory: pytest.TempPathFactory) -> tuple[sitk.Image, dict[str, np.ndarray], dict[str, Path]]:
    root = tmp_path_factory.mktemp("rtstruct_writers")
    write_ct_series(_ct(1), root / "ct", patient_id="HN-RT")
    reference = read_image(root / "ct")
    masks = _head_neck_masks(reference)
    paths = {w: _write(w, masks, root / "ct", root / f"{w}.dcm") for w in WRITERS}
    return reference, masks, paths


def test_writers_use_the_two_contour_conventions(head_neck) -> None:
    """The test is only meaningful if rt-utils puts vertices on voxel centres and we put them between."""
    reference, _, paths = head_neck
    for writer, expected_fraction in (("rt-utils", {0.0}), ("write_rtstruct", {0.25, 0.75})):
        ds = pydicom.dcmread(paths[writer])
        points = np.concatenate([np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
                                 for c in ds.ROIContourSequence[0].ContourSequence])
        fraction = np.round(np.mod(physical_to_index(reference, points)[:, :2], 1.0), 3) % 1.0
        assert set(np.unique(fraction)) == expected_fraction, writer


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("name", ["GTV", "Parotid_L", "Parotid_R", "Larynx"])
def test_round_trip_dice_and_volume(head_neck, writer: str, name: str) -> None:
    reference, masks, paths = head_neck
    back, truth = _back(paths[writer], reference, name), masks[name]
    assert truth.sum() > 1000 and truth.any(axis=(1, 2)).sum() >= 8, "structures of clinical size"
    assert _dice(back, truth) >= DICE_MIN, (writer, name, _dice(back, truth))
    assert back.sum() == pytest.approx(truth.sum(), rel=VOLUME_RTOL), (writer, name)
    if name == "Larynx":
        assert not back[_airway(reference)].any(), "the airway is a hole"


def _holes_and_islands() -> np.ndarray:
    """Hole shapes OpenCV traces differently (1 voxel, 2x2, diagonal, L), an island in a hole, thin lines."""
    m = np.zeros(SIZE[::-1], dtype=bool)
    m[3, 10:30, 10:30] = True
    m[3, 14, 14] = False  # 1-voxel hole
    m[3, 18:20, 18:20] = False  # 2x2 hole
    m[3, 24, 12] = m[3, 25, 13] = False  # two diagonal 1-voxel holes touching at a corner
    m[4, 10:40, 10:40] = True
    m[4, 15:35, 15:35] = False  # hole ...
    m[4, 22:26, 20:27] = True  # ... with an island in it, itself with an L-shaped hole
    m[4, 23, 21:25] = m[4, 24, 21] = False
    m[5, 40, 5:30] = True  # a 1-voxel-wide line (a 2-point contour)
    m[5, 50:60, 50:60] = np.eye(10, dtype=bool)  # a diagonal line
    m[5, 70, 70] = m[6, 12, 80] = True  # single-voxel islands (1-point contours)
    return m


@pytest.mark.parametrize("writer", WRITERS)
def test_holes_islands_and_lines_are_exact(tmp_path: Path, writer: str, caplog) -> None:
    folder = tmp_path / "ct"
    write_ct_series(_ct(2), folder, patient_id="HOLES")
    reference = read_image(folder)
    truth = _holes_and_islands()
    path = _write(writer, {"shapes": truth}, folder, tmp_path / "rs.dcm")
    with caplog.at_level(logging.WARNING, logger="radiogenomics.cohort.rtstruct"):
        back = _back(path, reference, "shapes")
    assert np.array_equal(back, truth), (writer, int((back & ~truth).sum()), int((truth & ~back).sum()))
    assert "outside" not in caplog.text
    if writer == "rt-utils":  # OpenCV writes an isolated voxel as 1 point, a straight line as 2
        z_mm = ORIGIN[2] + 6 * SPACING[2]
        assert f"'shapes': 1-point contour (x2) on slice z={ORIGIN[2] + 5 * SPACING[2]:.2f}, {z_mm:.2f} mm" \
               in caplog.text
        assert "filled as a single voxel" in caplog.text and "2-point contour" in caplog.text


def _hand_rtstruct(tmp_path: Path, contours_index: list[np.ndarray]) -> tuple[Path, sitk.Image]:
    """An RTSTRUCT with structure 'X' holding exactly `contours_index` (each (N, 3) x, y, z voxel index)."""
    folder = tmp_path / "ct"
    write_ct_series(_ct(3), folder, patient_id="HAND")
    reference = read_image(folder)
    seed = np.zeros(SIZE[::-1], dtype=bool)
    seed[0, 0, 0] = True
    path = write_rtstruct({"X": _sitk_mask(seed, reference)}, folder, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    items = []
    for index in contours_index:
        points = [reference.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p))) for p in index]
        item = Dataset()
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(points)
        item.ContourData = [f"{v:.6f}" for p in points for v in p]
        items.append(item)
    ds.ROIContourSequence[0].ContourSequence = Sequence(items)
    ds.save_as(path)
    return path, reference


def _voxels(back: np.ndarray, k: int) -> set[tuple[int, int]]:
    return {(int(x), int(y)) for y, x in zip(*np.nonzero(back[k]), strict=True)}


def test_centre_on_an_edge_is_inside_within_tolerance(tmp_path: Path) -> None:
    """A rectangle through centres x 3..8, y 3..6 holds 6 x 4 voxels; its right edge moved by 0.0005 voxel
    still does (on the edge, within 1e-3), moved inward by 0.002 it does not (strictly outside)."""
    def rect(x1: float, k: int) -> np.ndarray:
        return np.array([[3, 3, k], [x1, 3, k], [x1, 6, k], [3, 6, k]], dtype=float)

    path, reference = _hand_rtstruct(tmp_path, [rect(8.0, 2), rect(7.9995, 3), rect(7.998, 4)])
    back = _back(path, reference, "X")
    block = {(x, y) for x in range(3, 9) for y in range(3, 7)}
    assert _voxels(back, 2) == block
    assert _voxels(back, 3) == block
    assert _voxels(back, 4) == {(x, y) for x, y in block if x < 8}


def test_degenerate_and_outside_contours(tmp_path: Path, caplog) -> None:
    """Off-centre degenerate contours (as a planning system might write) fill their nearest voxels; a
    contour beyond the last slice is reported with its structure and slice position."""
    contours = [
        np.array([[20.3, 30.2, 5.0]]),  # 1 point -> voxel (20, 30)
        np.array([[3.2, 40.1, 6.0], [8.7, 40.3, 6.0]]),  # 2 points -> x 3..9 on row 40
        np.array([[50.0, 10.0, 7.0], [54.0, 14.0, 7.0]]),  # 2 points on a diagonal through centres
        np.array([[60.0, 20.0, 8.0], [62.0, 20.0, 8.0], [64.0, 20.0, 8.0]]),  # collinear: no area
        np.array([[10.0, 10.0, 30.0], [14.0, 10.0, 30.0], [14.0, 14.0, 30.0]]),  # slice 30 of 24
    ]
    path, reference = _hand_rtstruct(tmp_path, contours)
    with caplog.at_level(logging.WARNING, logger="radiogenomics.cohort.rtstruct"):
        back = _back(path, reference, "X")
    assert _voxels(back, 5) == {(20, 30)}
    assert _voxels(back, 6) == {(x, 40) for x in range(3, 10)}
    assert _voxels(back, 7) == {(50 + i, 10 + i) for i in range(5)}
    assert _voxels(back, 8) == {(x, 20) for x in range(60, 65)}
    assert int(back.sum()) == 1 + 7 + 5 + 5
    z = {k: f"{ORIGIN[2] + k * SPACING[2]:.2f}" for k in (5, 6, 7, 30)}
    text = caplog.text
    assert f"structure 'X': 1-point contour on slice z={z[5]} mm: filled as a single voxel" in text
    assert f"structure 'X': 2-point contour (x2) on slice z={z[6]}, {z[7]} mm: filled along its segment" in text
    assert "contour with no area (collinear points)" in text
    assert f"structure 'X': 1 contour outside the reference image on 1 slice (z={z[30]} mm): ignored" in text


# ------------------------------------------------------------------------------------------------------------
# The same CT patients as DICOM-RT (rt-utils) and as NIfTI give the same GTV features
# ------------------------------------------------------------------------------------------------------------

FEATURE_RTOL = 0.02  # issue 7
FEATURE_ATOL = 1e-3  # absolute floor, in the feature's own unit, for features near zero (e.g. Skewness)


def _patient_ct(seed: int, gtv: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """CT in HU: soft tissue, a heterogeneous tumour whose rim is brighter than its core (so a lost boundary
    layer shifts first-order features), and noise."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    depth_mm = ndimage.distance_transform_edt(gtv, sampling=SPACING[::-1])
    hu = 40.0 + rng.normal(0.0, 15.0, size=gtv.shape)
    hu += gtv * (60.0 - 4.0 * np.minimum(depth_mm, 10.0))  # rim ~ +60 HU, core ~ +20 HU
    image = sitk.GetImageFromArray(hu.round().astype(np.int16))
    image.CopyInformation(reference)
    return image


def test_dicom_rt_and_nifti_give_the_same_gtv_features(tmp_path: Path) -> None:
    params = dict(params_for_modality("CT") or {})
    params["featureClass"] = {"shape": None, "firstorder": None}  # the shipped CT settings, two classes
    compared = 0
    for seed, (offset_mm, radii_mm, lobes) in enumerate([((0, 0, 0), (12, 10, 11), 0.2),
                                                          ((-9, 6, 4), (8, 11, 7), 0.1),
                                                          ((7, -5, -6), (15, 9, 9), 0.25)]):
        root = tmp_path / f"p{seed}"
        template = _ct(seed)
        gtv = _ellipsoid(_centres_mm(template), _mid_mm(template) + offset_mm, radii_mm, lobes=lobes)
        ct = _patient_ct(seed, gtv, template)
        root.mkdir()
        sitk.WriteImage(ct, str(root / "ct.nii.gz"))
        sitk.WriteImage(_sitk_mask(gtv, ct), str(root / "gtv.nii.gz"))
        write_ct_series(ct, root / "dicom", patient_id=f"P{seed}")
        _write("rt-utils", {"GTV": gtv}, root / "dicom", root / "rs.dcm")

        nifti_ct = read_image(root / "ct.nii.gz")
        dicom_ct = read_image(root / "dicom")
        nifti = extract_radiomics(nifti_ct, read_mask(root / "gtv.nii.gz", nifti_ct, "GTV"), params)
        dicom = extract_radiomics(dicom_ct, read_mask(root / "rs.dcm", dicom_ct, "GTV"), params)
        assert set(nifti) == set(dicom)
        keys = [k for k in nifti if "_shape_" in k or "_firstorder_" in k]
        assert len(keys) > 25
        for key in keys:
            a, b = nifti[key], dicom[key]
            assert math.isfinite(a) and math.isfinite(b), key
            assert abs(a - b) <= FEATURE_RTOL * max(abs(a), abs(b)) + FEATURE_ATOL, (seed, key, a, b)
            compared += 1
    assert compared > 75
