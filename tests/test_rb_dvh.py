"""DVH from dose grids and masks (SimpleITK and numpy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import compute_dvh, compute_dvhs, dvh_from_table


def _image(arr: np.ndarray, spacing: tuple[float, float, float] = (2.0, 2.0, 3.0),
           origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def _dose_and_mask() -> tuple[np.ndarray, np.ndarray]:
    dose = np.zeros((4, 5, 6))
    dose[:, :, :] = np.arange(6)[None, None, :] * 10.0  # 0, 10, ..., 50 Gy along x
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:3, 1:4, 2:6] = 1  # 2 x 3 x 4 = 24 voxels at 20, 30, 40, 50 Gy (6 each)
    return dose, mask


def test_numpy_dvh_volumes_and_means() -> None:
    dose, mask = _dose_and_mask()
    dvh = compute_dvh(dose, mask, voxel_volume_cc=0.012, bin_width_gy=1.0, structure="gtv")
    assert dvh.n_voxels == 24
    assert dvh.total_volume_cc == pytest.approx(24 * 0.012)
    assert dvh.mean_dose_gy == pytest.approx(35.0)
    assert (dvh.min_dose_gy, dvh.max_dose_gy) == (20.0, 50.0)
    # differential: 6 voxels in each of the bins [20,21), [30,31), [40,41), [50,51)
    nz = dvh.volume_cc > 0
    np.testing.assert_allclose(dvh.dose_gy[nz], [20.5, 30.5, 40.5, 50.5])
    np.testing.assert_allclose(dvh.volume_cc[nz], 6 * 0.012)
    # cumulative: volume receiving >= D
    assert dvh.volume_at_least(0.0) == pytest.approx(24 * 0.012)
    assert dvh.volume_at_least(25.0) == pytest.approx(18 * 0.012)
    assert dvh.volume_at_least(50.0) == pytest.approx(6 * 0.012)
    assert dvh.volume_at_least(51.0) == 0.0
    assert np.all(np.diff(dvh.cumulative_cc) <= 0)
    assert dvh.cumulative_cc[0] == pytest.approx(dvh.total_volume_cc)
    np.testing.assert_allclose(dvh.relative_volume.sum(), 1.0)
    assert dvh.geud(1.0) == pytest.approx(35.5)  # bin centres
    assert dvh.resampled is False


def test_sitk_dvh_uses_spacing_for_voxel_volume() -> None:
    dose, mask = _dose_and_mask()
    img = _image(dose)
    m = _image(mask)
    dvh = compute_dvh(img, m, bin_width_gy=1.0)
    assert dvh.voxel_volume_cc == pytest.approx(2 * 2 * 3 / 1000)
    assert dvh.total_volume_cc == pytest.approx(24 * 0.012)
    with pytest.raises(InputError, match="contradicts"):
        compute_dvh(img, m, voxel_volume_cc=1.0)


def test_label_map_selection() -> None:
    dose, mask = _dose_and_mask()
    labels = mask.astype(np.uint8) * 2
    labels[0, 0, 0] = 1
    dvhs = compute_dvh(dose, labels, voxel_volume_cc=1.0, label=2)
    assert dvhs.n_voxels == 24
    assert compute_dvh(dose, labels, voxel_volume_cc=1.0).n_voxels == 25


def test_mask_on_its_own_grid_gets_the_dose_interpolated() -> None:
    # dose 5 Gy per 2 mm voxel along x: D = 2.5 Gy/mm * x (voxel centres at x = 0, 2, ..., 14 mm)
    dose_arr = np.tile(np.arange(8, dtype=np.float64)[None, None, :] * 5.0, (4, 4, 1))
    dose = _image(dose_arr, spacing=(2.0, 2.0, 2.0))
    # mask at 1 mm: voxel centres x = 3.5 .. 6.5 mm (faces 3 .. 7 mm), y and z 0 .. 7 mm
    mask_arr = np.zeros((8, 8, 16), np.uint8)
    mask_arr[:, :, 4:8] = 1
    mask = _image(mask_arr, spacing=(1.0, 1.0, 1.0), origin=(-0.5, -0.5, -0.5))
    dvh = compute_dvh(dose, mask, bin_width_gy=1.0, structure="ptv")
    assert dvh.resampled and dvh.n_voxels == 256
    assert dvh.voxel_volume_cc == pytest.approx(0.001)  # the structure's own grid
    assert dvh.total_volume_cc == pytest.approx(2 * 4 * 4 * 8 / 1000)
    assert dvh.mean_dose_gy == pytest.approx(2.5 * 5.0)  # linear field: the dose at the centroid
    assert (dvh.min_dose_gy, dvh.max_dose_gy) == (pytest.approx(2.5 * 3.0), pytest.approx(2.5 * 7.0))
    # every voxel is on the surface (one layer in y/z at the grid border): sub-voxel doses at x = 3.17 .. 6.83 mm
    occupied = dvh.dose_gy[dvh.volume_cc > 0]
    assert occupied.min() == pytest.approx(7.5) and occupied.max() == pytest.approx(17.5)
    assert dvh.volume_at_least(12.5) == pytest.approx(dvh.total_volume_cc / 2, rel=0.05)


def test_mask_on_an_oblique_grid() -> None:
    _, mask = _dose_and_mask()
    img = _image(np.tile(np.arange(8, dtype=np.float64)[None, None, :] * 10.0, (4, 5, 1)))  # 5 Gy/mm along x
    mask = np.concatenate([mask, np.zeros((4, 5, 2), np.uint8)], axis=2)
    flipped = _image(np.ascontiguousarray(np.swapaxes(mask, 1, 2)), spacing=(2.0, 2.0, 3.0))
    flipped.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # mask axes x and y swapped
    dvh = compute_dvh(img, flipped, bin_width_gy=1.0)
    assert dvh.resampled
    assert dvh.total_volume_cc == pytest.approx(24 * 0.012)
    assert dvh.mean_dose_gy == pytest.approx(35.0)
    assert (dvh.min_dose_gy, dvh.max_dose_gy) == (pytest.approx(15.0), pytest.approx(55.0))


def test_mismatched_masks_raise() -> None:
    dose, mask = _dose_and_mask()
    with pytest.raises(InputError, match="shape"):
        compute_dvh(dose, mask[:, :, :3], voxel_volume_cc=1.0)
    with pytest.raises(InputError, match="SimpleITK image but the dose is an array"):
        compute_dvh(dose, _image(mask), voxel_volume_cc=1.0)
    with pytest.raises(InputError, match="voxel_volume_cc"):
        compute_dvh(dose, mask)
    with pytest.raises(InputError, match="selects no voxel"):
        compute_dvh(dose, np.zeros_like(mask), voxel_volume_cc=1.0)
    bad = dose.copy()
    bad[2, 2, 3] = np.nan
    with pytest.raises(InputError, match="finite"):
        compute_dvh(bad, mask, voxel_volume_cc=1.0)
    bad[2, 2, 3] = -1.0
    with pytest.raises(InputError, match="negative"):
        compute_dvh(bad, mask, voxel_volume_cc=1.0)


def test_scaling_table_roundtrip_and_ntcp() -> None:
    dose, mask = _dose_and_mask()
    dvh = compute_dvh(dose, mask, voxel_volume_cc=0.5, bin_width_gy=1.0, structure="parotid_l")
    doubled = dvh.scaled(0.5)
    assert doubled.mean_dose_gy == pytest.approx(17.5)
    assert doubled.total_volume_cc == pytest.approx(dvh.total_volume_cc)
    table = dvh.to_frame("P1")
    assert list(table.columns) == ["patient_id", "structure", "dose_gy", "volume_cc", "bin_width_gy"]
    back = dvh_from_table(pd.concat([table, table.assign(structure="other")]), "parotid_l", "P1")
    assert back.total_volume_cc == pytest.approx(dvh.total_volume_cc)
    assert back.geud(1.0) == pytest.approx(dvh.geud(1.0))
    assert 0.0 < dvh.ntcp("xerostomia") < 1.0
    both = compute_dvhs(dose, {"a": mask, "b": mask}, voxel_volume_cc=0.5)
    assert set(both) == {"a", "b"}
