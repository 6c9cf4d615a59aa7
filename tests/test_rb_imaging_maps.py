"""FDG -> clonogen density and FMISO -> pO2 conversions."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    clonogen_density_from_suv,
    clonogens_from_density,
    fmiso_uptake_from_po2,
    po2_from_fmiso,
)


def test_suv_to_density_linear_and_clipped() -> None:
    suv = np.array([1.0, 2.5, 6.25, 10.0, 12.0])
    rho = clonogen_density_from_suv(suv, density_min_per_cc=1e5, density_max_per_cc=1e7, suv_low=2.5,
                                    suv_high=10.0)
    np.testing.assert_allclose(rho, [1e5, 1e5, 1e5 + 0.5 * (1e7 - 1e5), 1e7, 1e7])
    # default suv_high: the maximum SUV in the mask
    mask = np.array([1, 1, 1, 1, 0], bool)
    rho2 = clonogen_density_from_suv(suv, mask=mask)
    assert rho2[3] == pytest.approx(1e7)
    assert clonogens_from_density(rho, 0.064)[3] == pytest.approx(6.4e5)
    with pytest.raises(InputError, match="suv"):
        clonogen_density_from_suv(np.array([-1.0, 2.0]))
    with pytest.raises(InputError, match="density_min_per_cc"):
        clonogen_density_from_suv(suv, density_min_per_cc=1e8)


def test_fmiso_inverse_roundtrip() -> None:
    p = np.array([0.0, 0.5, 2.5, 10.0, 40.0])
    u = fmiso_uptake_from_po2(p)
    assert u[0] == pytest.approx(3.0)  # anoxic
    assert np.all(np.diff(u) < 0)  # more oxygen, less retention
    np.testing.assert_allclose(po2_from_fmiso(u), p, atol=1e-9)
    # beyond the model's range: capped
    capped = po2_from_fmiso(np.array([0.5, 1.0, 4.0]), po2_max_mmhg=60.0)
    np.testing.assert_allclose(capped, [60.0, 60.0, 0.0])
    custom = po2_from_fmiso(np.array([2.0]), uptake_oxic=1.2, uptake_anoxic=2.8, k_mmhg=1.4)
    assert custom[0] == pytest.approx(1.4 * (2.8 - 2.0) / (2.0 - 1.2))
    with pytest.raises(InputError, match="uptake_anoxic"):
        po2_from_fmiso(u, uptake_oxic=3.0, uptake_anoxic=2.0)
    with pytest.raises(InputError, match="uptake"):
        po2_from_fmiso(np.array([np.nan]))


def test_images_in_images_out() -> None:
    arr = np.full((2, 3, 4), 2.0)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.0, 2.0, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    out = po2_from_fmiso(img)
    assert isinstance(out, sitk.Image)
    assert out.GetOrigin() == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), 2.5 * (3.0 - 2.0) / (2.0 - 1.0))
    dens = clonogen_density_from_suv(img, suv_high=4.0)
    assert isinstance(dens, sitk.Image)
