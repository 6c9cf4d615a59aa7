"""Oxygen effect and Poisson TCP."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import dose_for_tcp, hypoxic_lq, oer_from_po2, omf_from_po2, tcp_poisson


def test_oer_convention() -> None:
    # dose-modifying OER relative to fully oxic cells: 3 at 0 mmHg, -> 1 at high pO2, 2 at K... by hand
    assert oer_from_po2(0.0) == pytest.approx(3.0)
    assert oer_from_po2(1e9) == pytest.approx(1.0, abs=1e-8)
    # p = K = 3 mmHg: OER = 3 (6) / (9 + 3) = 1.5
    assert oer_from_po2(3.0) == pytest.approx(1.5)
    assert omf_from_po2(0.0) == pytest.approx(1 / 3)
    p = np.array([0.0, 0.5, 2.0, 10.0, 60.0])
    np.testing.assert_allclose(np.asarray(oer_from_po2(p)) * np.asarray(omf_from_po2(p)), 1.0)
    assert np.all(np.diff(oer_from_po2(p)) < 0)
    assert oer_from_po2(0.0, oer_max=2.5, k_mmhg=2.0) == pytest.approx(2.5)


def test_oxygen_bad_input() -> None:
    with pytest.raises(InputError, match="po2_mmhg"):
        oer_from_po2(-1.0)
    with pytest.raises(InputError, match="po2_mmhg"):
        omf_from_po2(math.nan)
    with pytest.raises(InputError, match="oer_max"):
        oer_from_po2(1.0, oer_max=0.5)
    with pytest.raises(InputError, match="k_mmhg"):
        oer_from_po2(1.0, k_mmhg=0.0)


def test_hypoxic_lq_is_dose_modifying() -> None:
    a, b = hypoxic_lq(0.3, 0.03, 0.0)
    assert a == pytest.approx(0.1)
    assert b == pytest.approx(0.03 / 9)
    # an anoxic voxel given OER x the dose has the oxic survival
    sf_ox = math.exp(-30 * (0.3 * 2 + 0.03 * 4))
    d = 2 * 3.0
    assert math.exp(-30 * (a * d + b * d * d)) == pytest.approx(sf_ox)


def test_tcp_known_value() -> None:
    # one compartment: TCP = exp(-N exp(-D (alpha + beta d)))
    n0, a, b = 1e7, 0.3, 0.03
    expected = math.exp(-n0 * math.exp(-70 * (a + b * 2)))
    assert tcp_poisson(70.0, n0, a, b, 35) == pytest.approx(expected, rel=1e-12)
    # splitting the clonogens over voxels with the same dose changes nothing
    assert tcp_poisson(np.full(10, 70.0), np.full(10, n0 / 10), a, b, 35) == pytest.approx(expected, rel=1e-12)


def test_tcp_with_po2_matches_scaled_dose() -> None:
    # anoxic voxel at 3x dose (per fraction too) = oxic at 1x
    assert tcp_poisson(180.0, 1e7, 0.3, 0.03, 30, po2_mmhg=0.0) == pytest.approx(
        tcp_poisson(60.0, 1e7, 0.3, 0.03, 30), rel=1e-12)
    assert tcp_poisson(70.0, 1e7, 0.3, 0.03, 35, po2_mmhg=1.0) < tcp_poisson(70.0, 1e7, 0.3, 0.03, 35)


def test_tcp_axis_batches() -> None:
    dose = np.array([[60.0, 60.0], [70.0, 70.0]])
    out = tcp_poisson(dose, 5e6, 0.3, 0.03, 35, axis=1)
    assert out.shape == (2,)
    assert out[0] == pytest.approx(tcp_poisson(60.0, 1e7, 0.3, 0.03, 35))


@settings(max_examples=100)
@given(d1=st.floats(0.0, 100.0), extra=st.floats(0.5, 20.0), log_n=st.floats(2.0, 10.0),
       po2=st.floats(0.0, 100.0))
def test_tcp_rises_with_dose(d1: float, extra: float, log_n: float, po2: float) -> None:
    n = 10**log_n
    t1 = tcp_poisson(d1, n, 0.3, 0.03, 30, po2_mmhg=po2)
    t2 = tcp_poisson(d1 + extra, n, 0.3, 0.03, 30, po2_mmhg=po2)
    assert t2 >= t1
    if 1e-6 < t1 < 1 - 1e-6:
        assert t2 > t1


@settings(max_examples=100)
@given(dose=st.floats(20.0, 90.0), log_n=st.floats(2.0, 9.0), factor=st.floats(1.5, 100.0))
def test_tcp_falls_with_clonogens(dose: float, log_n: float, factor: float) -> None:
    n = 10**log_n
    t1 = tcp_poisson(dose, n, 0.3, 0.03, 35)
    t2 = tcp_poisson(dose, n * factor, 0.3, 0.03, 35)
    assert t2 <= t1
    if 1e-6 < t1 < 1 - 1e-6:
        assert t2 < t1


def test_tcp_bad_input() -> None:
    with pytest.raises(InputError, match="dose_gy"):
        tcp_poisson(-1.0, 1e7, 0.3, 0.03, 35)
    with pytest.raises(InputError, match="clonogens"):
        tcp_poisson(70.0, -5, 0.3, 0.03, 35)
    with pytest.raises(InputError, match="n_fractions"):
        tcp_poisson(70.0, 1e7, 0.3, 0.03, 0)
    with pytest.raises(InputError, match="alpha_per_gy"):
        tcp_poisson(70.0, 1e7, math.nan, 0.03, 35)
    with pytest.raises(InputError, match="po2_mmhg"):
        tcp_poisson(70.0, 1e7, 0.3, 0.03, 35, po2_mmhg=-2.0)


def test_dose_for_tcp_closed_form() -> None:
    n0, a, b, d = 1e7, 0.3, 0.03, 2.0
    expected = (math.log(n0) - math.log(-math.log(0.5))) / (a + b * d)
    got = dose_for_tcp(0.5, n0, a, b, dose_per_fraction_gy=d)
    assert got == pytest.approx(expected, rel=1e-12)
    assert tcp_poisson(got, n0, a, b, got / d) == pytest.approx(0.5, rel=1e-9)


def test_dose_for_tcp_with_maps() -> None:
    rng = np.random.default_rng(3)
    clon = 10 ** rng.uniform(3, 6, 500)
    po2 = rng.uniform(0.5, 40.0, 500)
    for kwargs in ({"n_fractions": 35}, {"dose_per_fraction_gy": 2.0}):
        dose = dose_for_tcp(0.8, clon, 0.3, 0.03, po2_mmhg=po2, **kwargs)
        n = kwargs.get("n_fractions", dose / 2.0)
        assert tcp_poisson(dose, clon, 0.3, 0.03, n, po2_mmhg=po2) == pytest.approx(0.8, abs=1e-8)
    oxic = dose_for_tcp(0.8, clon, 0.3, 0.03, n_fractions=35)
    hypoxic = dose_for_tcp(0.8, clon, 0.3, 0.03, n_fractions=35, po2_mmhg=po2)
    assert hypoxic > oxic


def test_dose_for_tcp_bad_input() -> None:
    with pytest.raises(InputError, match="target_tcp"):
        dose_for_tcp(1.0, 1e7, 0.3, 0.03, n_fractions=35)
    with pytest.raises(InputError, match="exactly one"):
        dose_for_tcp(0.5, 1e7, 0.3, 0.03)
