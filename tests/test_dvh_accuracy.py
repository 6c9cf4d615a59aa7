"""DVH accuracy against analytic values (Nelms et al., Med Phys 2015;42:4435: linear dose gradients through
cylinders and spheres), and exact DVH tables (round trip, scaling, sparse dvh.csv).

The analytic values are computed here from the continuous shapes: in a field D = a + g x a shape centred at x0
with half-width r along x has D_max = a + g (x0 + r), D_min = a + g (x0 - r) and (by symmetry) D_mean =
a + g x0; a cylinder of radius r and length L has volume pi r^2 L, a sphere 4/3 pi r^3. The cumulative DVH of
the sphere is the cap volume pi (r - h)^2 (2 r + h) / 3 above the plane at distance h from its centre.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import DVH, compute_dvh, dvh_from_table
from radiogenomics.radiobiology import dvh_sampling as sampling

MASK_MM = 1.0
DOSE_MM = 3.0
DOSE_ORIGIN_MM = (-29.3, -29.6, -29.8)  # dose voxel centres not aligned with the mask's


def _rotation_z(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]])


def _mask(inside: object, half_mm: float, *, direction: np.ndarray | None = None,
          z_range_mm: tuple[float, float] | None = None) -> sitk.Image:
    """Binary mask on a 1 mm grid: a voxel is in when its centre is inside the shape (centre rasterisation)."""
    rot = np.eye(3) if direction is None else direction
    n_xy = int(round(2 * half_mm / MASK_MM)) + 1
    z0, z1 = (-half_mm, half_mm) if z_range_mm is None else z_range_mm
    n_z = int(round((z1 - z0) / MASK_MM))
    origin_index = np.array([-half_mm, -half_mm, z0 + 0.5 * MASK_MM])
    k, j, i = np.meshgrid(np.arange(n_z), np.arange(n_xy), np.arange(n_xy), indexing="ij")
    local = np.stack([i, j, k], axis=-1) * MASK_MM + origin_index
    physical = local @ rot.T  # origin at rot @ origin_index, axes along the columns of rot
    img = sitk.GetImageFromArray(np.asarray(inside(physical), dtype=np.uint8))  # type: ignore[operator]
    img.SetSpacing((MASK_MM,) * 3)
    img.SetOrigin(tuple(float(v) for v in rot @ origin_index))
    img.SetDirection(tuple(float(v) for v in rot.ravel()))
    return img


def _linear_dose(a_gy: float, g_gy_per_mm: float, n: tuple[int, int, int] = (21, 21, 41)) -> sitk.Image:
    """D = a + g x on a 3 mm grid (x in mm, physical)."""
    x = DOSE_ORIGIN_MM[0] + np.arange(n[0]) * DOSE_MM
    arr = np.broadcast_to((a_gy + g_gy_per_mm * x)[None, None, :], (n[2], n[1], n[0])).astype(np.float64)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing((DOSE_MM,) * 3)
    img.SetOrigin(DOSE_ORIGIN_MM)
    return img


def _cylinder(x0: float, y0: float, r: float) -> object:
    return lambda p: (p[..., 0] - x0) ** 2 + (p[..., 1] - y0) ** 2 <= r * r


def _sphere(c: tuple[float, float, float], r: float) -> object:
    return lambda p: ((p - np.array(c)) ** 2).sum(axis=-1) <= r * r


def _mask_volume_cc(mask: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(mask).sum()) * MASK_MM**3 / 1000.0


# A 5 mm cord along z (60 mm long) on the 1 mm grid, centred off the voxel centres where the rasterised mask is
# faithful to the cylinder (its own volume within 2 %, checked below); the sphere at a generic centre.
CORD_R_MM, CORD_L_MM, CORD_CENTRE = 2.5, 60.0, (0.25, 0.25)
SPHERE_R_MM, SPHERE_CENTRE = 10.0, (0.3, 0.2, 0.1)


@pytest.mark.parametrize("gradient", [2.0, 3.0])
def test_cord_in_a_gradient_on_a_coarse_dose_grid(gradient: float) -> None:
    x0 = CORD_CENTRE[0]
    a = 75.0 - gradient * (x0 + CORD_R_MM)  # analytic Dmax 75 Gy
    mask = _mask(_cylinder(*CORD_CENTRE, CORD_R_MM), 8.0, z_range_mm=(-30.0, 30.0))
    exact_cc = math.pi * CORD_R_MM**2 * CORD_L_MM / 1000.0
    assert _mask_volume_cc(mask) == pytest.approx(exact_cc, rel=0.02)  # the mask itself is faithful
    dvh = compute_dvh(_linear_dose(a, gradient), mask, structure="spinal_cord")
    assert dvh.resampled and dvh.outside_volume_cc == 0.0
    assert dvh.max_dose_gy == pytest.approx(75.0, abs=1.0)
    assert dvh.min_dose_gy == pytest.approx(a + gradient * (x0 - CORD_R_MM), abs=1.0)
    assert dvh.mean_dose_gy == pytest.approx(a + gradient * x0, abs=0.5)
    assert dvh.total_volume_cc == pytest.approx(exact_cc, rel=0.03)


@pytest.mark.parametrize("gradient", [2.0, 3.0])
@pytest.mark.parametrize("rotation_deg", [0.0, 30.0])
def test_sphere_in_a_gradient_on_a_coarse_dose_grid(gradient: float, rotation_deg: float) -> None:
    a = 50.0 - gradient * SPHERE_CENTRE[0]  # 50 Gy at the centre
    rot = _rotation_z(rotation_deg)  # an oblique mask grid is sampled in physical space like any other
    mask = _mask(_sphere(SPHERE_CENTRE, SPHERE_R_MM), 13.0, direction=rot)
    exact_cc = 4.0 / 3.0 * math.pi * SPHERE_R_MM**3 / 1000.0
    dvh = compute_dvh(_linear_dose(a, gradient), mask, structure="sphere")
    assert dvh.max_dose_gy == pytest.approx(50.0 + gradient * SPHERE_R_MM, abs=1.0)
    assert dvh.min_dose_gy == pytest.approx(50.0 - gradient * SPHERE_R_MM, abs=1.0)
    assert dvh.mean_dose_gy == pytest.approx(50.0, abs=0.5)
    assert dvh.total_volume_cc == pytest.approx(exact_cc, rel=0.03)
    # cumulative DVH against the analytic cap volumes, every 2 Gy over the sphere's dose range
    for h in np.linspace(-0.9, 0.9, 10) * SPHERE_R_MM:
        cap_fraction = math.pi * (SPHERE_R_MM - h) ** 2 * (2 * SPHERE_R_MM + h) / 3.0 / (exact_cc * 1000.0)
        assert dvh.volume_at_least(50.0 + gradient * h) / dvh.total_volume_cc == pytest.approx(cap_fraction,
                                                                                             abs=0.02)


def test_voxelised_values_are_exact_whatever_the_alignment() -> None:
    """In a linear field, trilinear interpolation is exact: Dmean is the mean over the mask's voxel centres, Dmax
    the dose at the mask's outermost exposed voxel face and the volume the voxel count, for any alignment."""
    g, a = 3.0, 60.0
    for centre in [(0.0, 0.0), (0.5, 0.5), (0.3, 0.1), (0.25, 0.25)]:
        mask = _mask(_cylinder(*centre, CORD_R_MM), 8.0, z_range_mm=(-10.0, 10.0))
        arr = sitk.GetArrayViewFromImage(mask)
        x_mm = mask.GetOrigin()[0] + np.nonzero(arr)[2] * MASK_MM
        dvh = compute_dvh(_linear_dose(a, g), mask, structure="cord")
        assert dvh.mean_dose_gy == pytest.approx(a + g * x_mm.mean(), abs=1e-9)
        assert dvh.max_dose_gy == pytest.approx(a + g * (x_mm.max() + 0.5 * MASK_MM), abs=1e-9)
        assert dvh.min_dose_gy == pytest.approx(a + g * (x_mm.min() - 0.5 * MASK_MM), abs=1e-9)
        assert dvh.total_volume_cc == pytest.approx(x_mm.size * MASK_MM**3 / 1000.0, rel=1e-12)
        assert dvh.n_voxels == x_mm.size


def test_trilinear_matches_simpleitk_linear_resampling() -> None:
    rng = np.random.default_rng(3)
    dose = sitk.GetImageFromArray(rng.uniform(0.0, 70.0, size=(9, 10, 11)))
    dose.SetSpacing((3.0, 2.5, 3.0))
    dose.SetOrigin((-1.0, 2.0, 0.5))
    ref = sitk.Image(14, 12, 10, sitk.sitkUInt8)
    ref.SetSpacing((1.1, 1.3, 1.7))
    ref.SetOrigin((0.3, 3.1, 1.9))
    ref.SetDirection(tuple(float(v) for v in _rotation_z(10.0).ravel()))
    expected = sitk.GetArrayFromImage(sitk.Resample(dose, ref, sitk.Transform(), sitk.sitkLinear, -1.0,
                                                    sitk.sitkFloat64))
    a, b = sampling._index_to_index(ref, dose)
    idx = np.argwhere(np.ones((10, 12, 14), bool))[:, ::-1].astype(np.float64)
    got = sampling._trilinear(sitk.GetArrayFromImage(dose).astype(np.float64), idx @ a.T + b).reshape(10, 12, 14)
    inside = expected >= 0
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got[inside], expected[inside], atol=1e-9)


def test_structure_outside_the_dose_grid(caplog: pytest.LogCaptureFixture) -> None:
    dose = _linear_dose(60.0, 2.0)  # voxel faces: x in [-30.8, 32.2] mm, z in [-31.3, 91.7] mm
    far = _mask(_cylinder(32.0, 0.0, CORD_R_MM), 40.0, z_range_mm=(-10.0, 10.0))  # x = 33, 34 mm beyond
    with pytest.raises(InputError, match=r"spinal_cord.*outside the dose grid"):
        compute_dvh(dose, far, structure="spinal_cord")
    cord = _mask(_cylinder(0.25, 0.25, CORD_R_MM), 8.0, z_range_mm=(-40.0, 20.0))  # 9 of 60 slices below -31.3
    with pytest.raises(InputError, match="at most 1.00%"):
        compute_dvh(dose, cord, structure="spinal_cord")
    with caplog.at_level(logging.WARNING, logger="radiogenomics.radiobiology.dvh_sampling"):
        dvh = compute_dvh(dose, cord, structure="spinal_cord", max_outside_fraction=0.2)
    assert any("outside the dose grid" in r.getMessage() for r in caplog.records)
    total_cc = _mask_volume_cc(cord)
    assert dvh.outside_volume_cc == pytest.approx(total_cc * 9 / 60)
    assert dvh.total_volume_cc == pytest.approx(total_cc * 51 / 60)


# ---- exact DVH tables ----------------------------------------------------------------------------------------


def _graded_dvh() -> DVH:
    """A 0.1 Gy DVH with gaps: a cylinder in a 3 Gy/mm gradient, mask on its own (oblique) grid."""
    mask = _mask(_cylinder(0.25, 0.25, 4.0), 8.0, direction=_rotation_z(30.0), z_range_mm=(-5.0, 5.0))
    return compute_dvh(_linear_dose(20.0, 3.0), mask, structure="parotid_l", bin_width_gy=0.1)


def _metrics(dvh: DVH) -> dict[str, float]:
    return {"V5": dvh.volume_at_least(5.0), "V20": dvh.volume_at_least(20.0), "V13.37": dvh.volume_at_least(13.37),
            "D95": dvh.dose_at_volume(95.0), "D2": dvh.dose_at_volume(2.0), "D50": dvh.dose_at_volume(50.0),
            "gEUD1": dvh.geud(1.0), "gEUD5": dvh.geud(5.0), "gEUD-10": dvh.geud(-10.0),
            "volume": dvh.total_volume_cc}


def test_table_round_trip_keeps_every_metric() -> None:
    dvh = _graded_dvh()
    assert dvh.volume_at_least(20.0) > 0.0 and dvh.volume_at_least(5.0) == pytest.approx(dvh.total_volume_cc)
    table = dvh.to_frame("P1")
    assert (table["volume_cc"] > 0).all() and len(table) < dvh.dose_gy.size  # non-empty bins only
    back = dvh_from_table(pd.concat([table, table.assign(structure="other")]), "parotid_l", "P1")
    for name, value in _metrics(dvh).items():
        assert _metrics(back)[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    # mean dose: gEUD(a = 1) is the bins' mean (kept exactly); the samples' own mean is within half a bin
    assert back.mean_dose_gy == pytest.approx(dvh.mean_dose_gy, abs=0.05)
    # the contract's four columns alone: the width is inferred from the centres (adjacent bins exist here)
    plain = dvh_from_table(table.drop(columns="bin_width_gy"), "parotid_l")
    assert plain.bin_width_gy == pytest.approx(0.1, rel=1e-12)
    for name, value in _metrics(dvh).items():
        assert _metrics(plain)[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def test_scaled_keeps_geud_and_bins() -> None:
    dvh = _graded_dvh()
    up = dvh.scaled(1.1)
    for a in (1.0, 5.0, -10.0):
        assert up.geud(a) == pytest.approx(1.1 * dvh.geud(a), rel=1e-12)
    assert up.bin_width_gy == pytest.approx(0.11)
    assert up.dose_at_volume(95.0) == pytest.approx(1.1 * dvh.dose_at_volume(95.0), rel=1e-12)
    assert up.volume_at_least(22.0) == pytest.approx(dvh.volume_at_least(20.0), rel=1e-12)
    assert up.total_volume_cc == pytest.approx(dvh.total_volume_cc)
    back = dvh_from_table(up.to_frame("P1"), "parotid_l")
    assert back.geud(5.0) == pytest.approx(up.geud(5.0), rel=1e-12)
    assert back.volume_at_least(22.0) == pytest.approx(up.volume_at_least(22.0), rel=1e-9)


def test_sparse_table_equals_dense_table() -> None:
    dvh = _graded_dvh()
    dense = pd.DataFrame({"patient_id": "P1", "structure": "parotid_l", "dose_gy": dvh.dose_gy,
                          "volume_cc": dvh.volume_cc})
    sparse = dense[dense["volume_cc"] > 0]
    assert len(sparse) < len(dense)
    a, b = dvh_from_table(dense, "parotid_l"), dvh_from_table(sparse, "parotid_l")
    for name, value in _metrics(a).items():
        assert _metrics(b)[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    assert _metrics(a)["V20"] == pytest.approx(dvh.volume_at_least(20.0), rel=1e-9)


def test_table_bins_by_hand() -> None:
    # 0.5 Gy bins, only three non-empty: [19.5, 20), [20, 20.5), [30, 30.5) with 1, 2, 1 cc
    table = pd.DataFrame({"patient_id": "P", "structure": "cord", "dose_gy": [19.75, 20.25, 30.25],
                          "volume_cc": [1.0, 2.0, 1.0]})
    dvh = dvh_from_table(table, "cord")
    assert dvh.bin_width_gy == 0.5
    assert dvh.volume_at_least(20.0) == pytest.approx(3.0)
    assert dvh.volume_at_least(19.625) == pytest.approx(3.75)  # three quarters of the lowest bin
    assert dvh.volume_at_least(25.0) == pytest.approx(1.0)
    assert dvh.dose_at_volume(25.0) == pytest.approx(30.0)  # the gap 20.5-30 Gy holds no volume
    assert dvh.dose_at_volume(50.0) == pytest.approx(20.25)
    assert dvh.dose_at_volume(100.0) == pytest.approx(19.5)
    wide = dvh_from_table(table, "cord", bin_width_gy=0.1)
    assert wide.volume_at_least(19.75) == pytest.approx(3.5)  # bins of 0.1 Gy around each centre
    point = dvh_from_table(table.iloc[:1], "cord")  # one row, no width: a point dose
    assert point.volume_at_least(19.75) == 1.0 and point.volume_at_least(19.76) == 0.0
    assert point.dose_at_volume(50.0) == 19.75
    with pytest.raises(InputError, match="twice"):
        dvh_from_table(pd.concat([table, table]), "cord")
    with pytest.raises(InputError, match="overlap"):
        dvh_from_table(table.assign(bin_width_gy=1.0), "cord")


def test_synthetic_dvh_csv_agrees_with_the_dose_grid(synth_cohort: Path) -> None:
    """The generator's dvh.csv (0.5 Gy bins, non-empty only), read back, equals the DVH computed from its DOSE
    grid and label map; and the features reader (dvh_metrics on the same rows) agrees with both."""
    from radiogenomics.cohort import load_cohort
    from radiogenomics.features import dosimetric

    cohort = load_cohort(synth_cohort)
    assert cohort.dvh is not None
    pid = str(cohort.patients["patient_id"].iloc[0])
    rows = cohort.images[cohort.images["patient_id"] == pid]
    dose = cohort.read_image(rows[rows["modality"] == "DOSE"].iloc[0])
    features = dosimetric.dvh_table_features(cohort.dvh)
    for roi in ("parotid_l", "GTV"):
        row = rows[(rows["modality"] == "CT") & (rows["roi"] == roi)].iloc[0]
        grid = compute_dvh(dose, cohort.read_mask(row), bin_width_gy=0.5, structure=roi)
        table = dvh_from_table(cohort.dvh, roi, pid)
        assert table.bin_width_gy == 0.5
        voxel = grid.voxel_volume_cc
        assert table.total_volume_cc == pytest.approx(grid.total_volume_cc, abs=1e-5)
        for x in (20.0, 30.0, 50.0):
            assert table.volume_at_least(x) == pytest.approx(grid.volume_at_least(x), abs=voxel + 1e-5)
        for pct in (2.0, 50.0, 95.0):
            assert table.dose_at_volume(pct) == pytest.approx(grid.dose_at_volume(pct), abs=0.5)
        column = f"dose.{roi.lower()}.v30gy_pct"
        assert features.loc[pid, column] == pytest.approx(table.volume_at_least_pct(30.0), abs=1e-6)
