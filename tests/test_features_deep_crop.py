"""The deep path resampled on the ROI box only (features/deep_crop.py) gives the full path's numbers bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from radiogenomics.errors import InputError
from radiogenomics.features import deep, deep_crop
from radiogenomics.features.deep import DeepConfig
from radiogenomics.features.deep_crop import affine_grid_block

CFG = DeepConfig()


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One patient on the native 48^3 grid (8/3 x 8/3 x 10/3 mm) and on a clinical-like CT grid (256 x 256 x 60 at
    0.98 x 0.98 x 3 mm), the same seed; the clinical one also gets PET on its own grids (see _pet_grid)."""
    from radiogenomics.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("deepcrop")
    native = generate_cohort(root / "native", n_patients=1, seed=5, grid_size=48)
    clinical = generate_cohort(root / "clinical", n_patients=1, seed=5, grid_size="256,256,60",
                               spacing_mm=(0.98, 0.98, 3.0))
    return {"native": native, "clinical": clinical}


def _pet_grid(cohort: Path, size: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[Path, Path]:
    """FDG PET and the label map resampled (linear, nearest) onto a PET grid of ``size`` voxels of ``spacing`` mm
    with the CT's origin, written beside them (a scanner PET on its own coarser grid)."""
    folder = cohort / "images" / "SYN0001"
    tag = "x".join(f"{v:g}" for v in spacing)
    out_pet, out_labels = folder / f"pet_{tag}.nii.gz", folder / f"labels_{tag}.nii.gz"
    if not out_pet.exists():
        pet, labels = sitk.ReadImage(str(folder / "pet_fdg.nii.gz")), sitk.ReadImage(str(folder / "labels.nii.gz"))
        ref = sitk.Image(list(size), sitk.sitkFloat32)
        ref.SetSpacing(spacing)
        ref.SetOrigin(pet.GetOrigin())
        ref.SetDirection(pet.GetDirection())
        sitk.WriteImage(sitk.Resample(pet, ref, sitk.Transform(), sitk.sitkLinear, 0.0), str(out_pet))
        sitk.WriteImage(sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0), str(out_labels))
    return out_pet, out_labels


def _count_fast(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    calls: list[bool] = []
    original = deep_crop.resample_box

    def counting(*args: object, **kwargs: object) -> object:
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(out is not None)
        return out

    monkeypatch.setattr(deep_crop, "resample_box", counting)
    return calls


def _assert_identical(items: list[tuple[Path, Path, str, int, str]], config: DeepConfig = CFG) -> None:
    """Encoder inputs of the box path and the full path are equal bit for bit, and so are the embeddings."""
    from radiogenomics.features.tasks import PatientReader

    reader = PatientReader()  # each file decoded once for both paths
    fulls, boxes = [], []
    for image, mask, roi, label, modality in items:
        args = (str(image), str(mask), roi, label, modality, config, "SYN0001")
        full, box = deep._preprocess_full(*args, reader=reader), deep.preprocess(*args, reader=reader)
        assert full.shape == box.shape == (2, *config.box_voxels)
        assert torch.equal(full, box), f"{modality}/{roi}: max diff {float((full - box).abs().max())}"
        fulls.append(full)
        boxes.append(box)
    assert np.array_equal(deep.embed(torch.stack(fulls), config), deep.embed(torch.stack(boxes), config))


def _half_way_samples(image: Path) -> int:
    """Output voxels of the full 2 mm resampling whose nearest-neighbour sample point lies within 1e-12 voxel of
    half-way between two input voxels on some axis (where a last-bit difference would flip the mask). MONAI
    anchors the output grid on the first input voxel's centre, so 3 mm slices are sampled at thirds; 4 mm slices
    at halves. (The native 48^3 grid's 8/3 mm, stored as float32, puts every 4th x and y sample 1.8e-7 voxel
    off half-way.)"""
    from monai.transforms import Orientation, Spacing

    from radiogenomics.features.deep import sitk_to_metatensor

    img = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(
        sitk_to_metatensor(sitk.ReadImage(str(image))))
    res = deep_crop._Resampler(Spacing(pixdim=CFG.spacing_mm, mode="nearest")(img, lazy=True))
    grid = torch.nn.functional.affine_grid(res.theta, [1, 1, *res.shape], align_corners=False)
    sizes = torch.tensor(res.in_shape[::-1], dtype=torch.float64)  # grid holds (z, y, x) of the input
    index = ((grid + 1) * sizes - 1) / 2
    return int(((index - index.floor() - 0.5).abs() < 1e-12).any(dim=-1).sum())


def test_affine_grid_block_is_affine_grids_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    for size in ((7, 5, 9), (64, 64, 80), (33, 17, 40)):
        for _ in range(3):
            theta = torch.eye(4, dtype=torch.float64)[None, :3] + 0.3 * torch.rand(1, 3, 4, generator=gen,
                                                                                    dtype=torch.float64)
            for align in (False, True):
                full = torch.nn.functional.affine_grid(theta, [1, 1, *size], align_corners=align)
                block = (slice(1, size[0] - 2), slice(0, size[1]), slice(3, size[2] - 1))
                got = affine_grid_block(theta, size, block, align)
                assert torch.equal(got, full[(slice(None), *block)])
                assert torch.equal(affine_grid_block(theta, size, (slice(None),) * 3, align), full)


@pytest.mark.parametrize("grid", ["native", "clinical"])
def test_box_path_equals_full_path(cohorts: dict[str, Path], grid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cohort = cohorts[grid]
    fast = _count_fast(monkeypatch)
    rows = pd.read_csv(cohort / "images.csv", dtype=str, keep_default_na=False)
    rows = rows[rows["modality"].isin(["CT", "PET_FDG", "PET_FMISO"])]
    if grid == "clinical":  # the PETs share the CT grid here: FDG stands for them
        rows = rows[rows["modality"] != "PET_FMISO"]
    _assert_identical([(cohort / rec["image"], cohort / rec["mask"], rec["roi"], int(rec["label"]), rec["modality"])
                       for rec in rows.to_dict("records")])
    assert fast and all(fast)  # every item took the box path


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 3.0), (2.0, 2.0, 4.0)])
def test_box_path_equals_full_path_on_a_pet_grid(cohorts: dict[str, Path], spacing: tuple[float, float, float],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """PET 128 x 128 x 60 at 2 x 2 x 3 mm (3 mm slices onto 2 mm), and 4 mm slices (every other 2 mm sample exactly
    half-way between two slices)."""
    fast = _count_fast(monkeypatch)
    size = (128, 128, 60 if spacing[2] == 3.0 else 45)
    pet, labels = _pet_grid(cohorts["clinical"], size, spacing)
    _assert_identical([(pet, labels, roi, label, "PET_FDG")
                       for roi, label in (("GTV", 1), ("parotid_l", 2), ("spinal_cord", 4))])
    assert fast == [True] * 3
    if spacing[2] == 4.0:
        assert _half_way_samples(pet) > 0


def _write_pair(folder: Path, mask_index: tuple[slice, slice, slice], direction: tuple[float, ...] | None = None,
                shape: tuple[int, int, int] = (30, 36, 24)) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    array = rng.normal(0.0, 300.0, size=shape[::-1]).astype(np.float32)
    labels = np.zeros(shape[::-1], dtype=np.uint8)
    labels[mask_index[::-1]] = 1
    paths = []
    for name, values in (("image", array), ("labels", labels)):
        img = sitk.GetImageFromArray(values)
        img.SetSpacing((8 / 3, 8 / 3, 10 / 3))
        img.SetOrigin((-40.0, 12.5, 3.0))
        if direction is not None:
            img.SetDirection(direction)
        path = folder / f"{name}.nii.gz"
        sitk.WriteImage(img, str(path))
        paths.append(path)
    return paths[0], paths[1]


def test_roi_on_the_image_edge_and_oblique_grids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ROI touching the input's edge (border padding repeats it outwards; the box leaves the output grid and is
    zero-padded) and an oblique image (a non-diagonal sampling transform) on small random images."""
    fast = _count_fast(monkeypatch)
    c, s = np.cos(0.3), np.sin(0.3)
    cases = [(slice(0, 6), slice(10, 20), slice(5, 12)), (slice(20, 30), slice(30, 36), slice(18, 24))]
    for i, index in enumerate(cases):
        for j, direction in enumerate((None, (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))):
            folder = tmp_path / f"{i}-{j}"
            folder.mkdir()
            image, labels = _write_pair(folder, index, direction)
            _assert_identical([(image, labels, "GTV", 1, "CT")])
    assert fast == [True] * 4


def test_zscore_modalities_fall_back_to_the_full_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MR z-scores normalise over the whole resampled image: the box path declines and the full path runs."""
    fast = _count_fast(monkeypatch)
    image, labels = _write_pair(tmp_path, (slice(8, 16), slice(10, 20), slice(5, 12)))
    _assert_identical([(image, labels, "GTV", 1, "MR_T1")])
    assert fast == [False]
    empty = tmp_path / "empty.nii.gz"
    blank = sitk.ReadImage(str(labels)) * 0
    sitk.WriteImage(blank, str(empty))
    with pytest.raises(InputError):
        deep.preprocess(str(image), str(empty), "GTV", 1, "CT", CFG)
