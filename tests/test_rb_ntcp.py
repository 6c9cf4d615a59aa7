"""gEUD, LKB NTCP, the parameter table and the NTCP-limited prescription."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    geud,
    geud_for_ntcp,
    lkb_ntcp,
    load_ntcp_parameters,
    max_prescription_for_ntcp,
    ntcp_for_endpoint,
    ntcp_from_dvh,
    ntcp_parameters,
)


def test_parameter_table() -> None:
    table = load_ntcp_parameters()
    assert table["xerostomia"]["td50_gy"] == 39.9
    assert table["xerostomia"]["m"] == 0.40
    assert table["xerostomia"]["n"] == 1.0
    assert (table["proctitis"]["td50_gy"], table["proctitis"]["m"], table["proctitis"]["n"]) == (80.0, 0.15, 0.12)
    assert (table["pneumonitis"]["td50_gy"], table["pneumonitis"]["n"]) == (24.5, 0.87)
    assert (table["rild"]["td50_gy"], table["rild"]["m"]) == (39.8, 0.12)
    assert table["pericarditis"]["verified"] is False
    for row in table.values():
        assert row["source"]
    assert ntcp_parameters("proctitis").a == pytest.approx(1 / 0.12)
    with pytest.raises(InputError, match="unknown NTCP endpoint"):
        ntcp_parameters("baldness")


def test_parameter_table_validation(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("endpoints:\n  x:\n    td50_gy: 30\n    m: 0.2\n    n: 1\n")
    with pytest.raises(InputError, match="source"):
        load_ntcp_parameters(bad)
    bad.write_text("endpoints:\n  x:\n    td50_gy: -3\n    m: 0.2\n    n: 1\n    source: me\n")
    with pytest.raises(InputError, match="td50_gy"):
        load_ntcp_parameters(bad)
    good = tmp_path / "g.yaml"
    good.write_text("endpoints:\n  x:\n    td50_gy: 30\n    m: 0.2\n    n: 0.5\n    source: me\n")
    assert load_ntcp_parameters(good)["x"]["n"] == 0.5


def test_parotid_published_range() -> None:
    # QUANTEC / Dijkema: mean parotid dose 25-30 Gy gives roughly 17-26 % (n = 1: gEUD = mean dose)
    p = ntcp_parameters("xerostomia")
    at25 = lkb_ntcp(25.0, p.td50_gy, p.m)
    at30 = lkb_ntcp(30.0, p.td50_gy, p.m)
    assert at25 == pytest.approx(0.175, abs=0.005)
    assert 0.255 <= at30 <= 0.275
    assert lkb_ntcp(p.td50_gy, p.td50_gy, p.m) == pytest.approx(0.5)
    # a DVH with mean 27.5 Gy lies in between
    dvh_dose = np.array([10.0, 27.5, 45.0])
    vol = np.array([1.0, 2.0, 1.0])
    v = ntcp_for_endpoint(dvh_dose, vol, "xerostomia")
    assert at25 < v < at30


def test_geud_special_cases() -> None:
    dose = np.array([10.0, 20.0, 40.0])
    vol = np.array([2.0, 1.0, 1.0])  # cc, normalised inside
    assert geud(dose, vol, 1.0) == pytest.approx(20.0)
    assert geud(dose, vol, 200.0) == pytest.approx(40.0, rel=0.01)
    assert geud(dose, vol, 1 / 0.12) == pytest.approx((0.5 * 10**8.333333 + 0.25 * 20**8.3333333
                                                      + 0.25 * 40**8.33333333) ** 0.12, rel=1e-6)
    # very large a must not overflow
    assert geud(np.array([80.0, 100.0]), np.array([1.0, 1.0]), 1000.0) == pytest.approx(
        100 * 0.5**0.001, rel=1e-12)
    # negative a (targets) tends to the minimum
    assert geud(dose, vol, -50.0) == pytest.approx(10.0, rel=0.02)
    assert geud(np.array([0.0, 20.0]), np.array([1.0, 1.0]), -10.0) == 0.0
    # batches along leading axes
    batch = geud(np.vstack([dose, 2 * dose]), vol, 1.0)
    np.testing.assert_allclose(batch, [20.0, 40.0])


@settings(max_examples=100)
@given(doses=st.lists(st.floats(0.0, 80.0), min_size=2, max_size=8), n=st.floats(0.05, 1.0),
       scale=st.floats(1.01, 2.0))
def test_geud_homogeneous_and_between_min_max(doses: list[float], n: float, scale: float) -> None:
    dose = np.array(doses)
    vol = np.ones_like(dose)
    g = geud(dose, vol, 1 / n)
    assert dose.min() - 1e-9 <= g <= dose.max() + 1e-9
    assert geud(dose * scale, vol, 1 / n) == pytest.approx(scale * g, rel=1e-9, abs=1e-12)


@settings(max_examples=100)
@given(g1=st.floats(0.0, 100.0), delta=st.floats(0.1, 30.0), td50=st.floats(10.0, 80.0),
       m=st.floats(0.05, 0.5))
def test_ntcp_rises_with_geud(g1: float, delta: float, td50: float, m: float) -> None:
    assert lkb_ntcp(g1 + delta, td50, m) >= lkb_ntcp(g1, td50, m)
    assert 0.0 <= lkb_ntcp(g1, td50, m) <= 1.0


def test_geud_for_ntcp_inverts() -> None:
    g = geud_for_ntcp(0.2, 39.9, 0.4)
    assert lkb_ntcp(g, 39.9, 0.4) == pytest.approx(0.2)


def test_ntcp_bad_input() -> None:
    with pytest.raises(InputError, match="a must be non-zero"):
        geud([10.0], [1.0], 0.0)
    with pytest.raises(InputError, match="dose_gy"):
        geud([-1.0, 2.0], [1.0, 1.0], 1.0)
    with pytest.raises(InputError, match="volume"):
        geud([1.0, 2.0], [0.0, 0.0], 1.0)
    with pytest.raises(InputError, match="td50_gy"):
        lkb_ntcp(20.0, 0.0, 0.3)
    with pytest.raises(InputError, match="m"):
        lkb_ntcp(20.0, 40.0, -0.3)
    with pytest.raises(InputError, match="geud_gy"):
        lkb_ntcp(math.inf, 40.0, 0.3)


def test_max_prescription_for_ntcp_closed_form() -> None:
    # parotid DVH planned at 70 Gy with mean 30 Gy; limit 20 % -> mean 25.85 Gy allowed
    dose = np.array([10.0, 30.0, 50.0])
    vol = np.array([1.0, 1.0, 1.0])
    p = ntcp_parameters("xerostomia")
    p_max = max_prescription_for_ntcp(dose, vol, 70.0, 0.2, td50_gy=p.td50_gy, m=p.m, n=p.n)
    assert ntcp_from_dvh(dose * p_max / 70.0, vol, td50_gy=p.td50_gy, m=p.m, n=p.n) == pytest.approx(0.2)
    assert p_max == pytest.approx(70.0 * 39.9 * (1 + 0.4 * -0.8416212335729143) / 30.0, rel=1e-9)
    # a small increase breaks the limit
    assert ntcp_from_dvh(dose * (p_max + 0.1) / 70.0, vol, td50_gy=p.td50_gy, m=p.m, n=p.n) > 0.2


def test_max_prescription_for_ntcp_with_eqd2() -> None:
    dose = np.array([20.0, 40.0, 60.0])
    vol = np.array([1.0, 2.0, 1.0])
    p = ntcp_parameters("proctitis")
    p_max = max_prescription_for_ntcp(dose, vol, 60.0, 0.1, td50_gy=p.td50_gy, m=p.m, n=p.n,
                                      n_fractions=20, alpha_beta_gy=3.0)
    assert ntcp_from_dvh(dose * p_max / 60.0, vol, td50_gy=p.td50_gy, m=p.m, n=p.n, n_fractions=20,
                         alpha_beta_gy=3.0) == pytest.approx(0.1, rel=1e-8)
    # hypofractionation (larger dose per fraction at a/b 3) lowers the allowed physical prescription
    plain = max_prescription_for_ntcp(dose, vol, 60.0, 0.1, td50_gy=p.td50_gy, m=p.m, n=p.n)
    assert p_max < plain
    assert max_prescription_for_ntcp(np.zeros(3), vol, 60.0, 0.1, td50_gy=80, m=0.15, n=0.12) == math.inf
    with pytest.raises(InputError, match="both"):
        ntcp_from_dvh(dose, vol, td50_gy=80, m=0.15, n=0.12, n_fractions=20)
