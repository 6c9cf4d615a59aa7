"""LQ (BED/EQD2), GARD and per-patient LQ parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    alpha_from_rsi,
    bed,
    check_rsi,
    dose_for_gard,
    dose_for_gard_fixed_n,
    dose_for_gard_lq,
    eqd2,
    gard,
    gard_lq,
    isoeffective_total_dose,
    max_valid_rsi,
    patient_lq,
    surviving_fraction,
)

# (total dose Gy, fractions, alpha/beta Gy, BED Gy, EQD2 Gy) - worked by hand from Fowler 1989.
BED_TABLE = [
    (50.0, 5, 10.0, 100.0, 250.0 / 3.0),  # SBRT anchor: BED10 = 100 Gy
    (60.0, 30, 10.0, 72.0, 60.0),  # 2 Gy fractions: EQD2 = physical dose
    (70.0, 35, 10.0, 84.0, 70.0),
    (54.0, 3, 10.0, 151.2, 126.0),  # lung SBRT 3 x 18 Gy
    (60.0, 20, 1.5, 180.0, 540.0 / 7.0),  # prostate 20 x 3 Gy: EQD2(1.5) = 77.14 Gy
    (40.0, 15, 3.0, 40.0 * (1 + (40 / 15) / 3.0), 40.0 * (1 + (40 / 15) / 3.0) * 0.6),
]


@pytest.mark.parametrize(("dose", "n", "ab", "bed_gy", "eqd2_gy"), BED_TABLE)
def test_bed_eqd2_table(dose: float, n: int, ab: float, bed_gy: float, eqd2_gy: float) -> None:
    assert bed(dose, n, ab) == pytest.approx(bed_gy, rel=1e-12)
    assert eqd2(dose, n, ab) == pytest.approx(eqd2_gy, rel=1e-12)


def test_bed_vectorised() -> None:
    doses = np.array([r[0] for r in BED_TABLE])
    ns = np.array([r[1] for r in BED_TABLE])
    abs_ = np.array([r[2] for r in BED_TABLE])
    np.testing.assert_allclose(bed(doses, ns, abs_), [r[3] for r in BED_TABLE], rtol=1e-12)
    assert isinstance(bed(50.0, 5, 10.0), float)


def test_regimen_conversion() -> None:
    # 50 Gy / 5 fx at a/b 10 -> in 2 Gy fractions = EQD2
    assert isoeffective_total_dose(50, 5, 10, new_dose_per_fraction_gy=2.0) == pytest.approx(250 / 3)
    # fixed new number of fractions: the result has the same BED
    d_new = isoeffective_total_dose(70, 35, 3.0, new_n_fractions=20)
    assert bed(d_new, 20, 3.0) == pytest.approx(bed(70, 35, 3.0), rel=1e-12)
    with pytest.raises(InputError, match="exactly one"):
        isoeffective_total_dose(70, 35, 3.0)


def test_surviving_fraction() -> None:
    assert surviving_fraction(2.0, 1, 0.3, 0.03) == pytest.approx(math.exp(-(0.6 + 0.12)))
    assert surviving_fraction(60.0, 30, 0.3, 0.03) == pytest.approx(math.exp(-30 * 0.72))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_lq_bad_dose(bad: float) -> None:
    with pytest.raises(ValueError, match="total_dose_gy"):
        bed(bad, 5, 10)


@pytest.mark.parametrize("bad", [0, -3, math.nan])
def test_lq_bad_fractions(bad: float) -> None:
    with pytest.raises(InputError, match="n_fractions"):
        eqd2(50, bad, 10)
    with pytest.raises(InputError, match="n_fractions"):
        gard(0.4, 60, bad)


def test_lq_bad_alpha_beta() -> None:
    with pytest.raises(InputError, match="alpha_beta_gy"):
        bed(50, 5, 0)
    with pytest.raises(InputError, match="total_dose_gy"):
        bed([50, -1], 5, 10)


# --- GARD (Scott et al. 2017) ---

def test_alpha_from_rsi_definition() -> None:
    # RSI = SF2 = exp(-(2 alpha + 4 beta))
    for rsi in (0.2, 0.46, 0.6, 0.8):
        a = alpha_from_rsi(rsi)
        assert math.exp(-(2 * a + 4 * 0.05)) == pytest.approx(rsi, rel=1e-12)
    assert alpha_from_rsi(0.5) == pytest.approx(-math.log(0.5) / 2 - 0.1)
    np.testing.assert_allclose(alpha_from_rsi(np.array([0.3, 0.5])), [-math.log(0.3) / 2 - 0.1,
                                                                       -math.log(0.5) / 2 - 0.1])


@pytest.mark.parametrize("rsi", [0.0, 1.0, 1.2, -0.1, 0.82, math.exp(-0.2), math.nan])
def test_alpha_from_rsi_domain_raises(rsi: float) -> None:
    with pytest.raises(InputError, match="rsi"):
        alpha_from_rsi(rsi)


def test_alpha_from_rsi_nan_only_on_request() -> None:
    out = alpha_from_rsi(np.array([0.5, 0.9, 1.1]), invalid="nan")
    assert out[0] == pytest.approx(alpha_from_rsi(0.5))
    assert np.isnan(out[1:]).all()
    # never a negative alpha
    assert not (np.nan_to_num(out, nan=1.0) < 0).any()


def test_max_valid_rsi_depends_on_beta() -> None:
    assert max_valid_rsi() == pytest.approx(0.8187307530779818)
    assert alpha_from_rsi(0.85, beta_per_gy2=0.02) > 0
    with pytest.raises(InputError):
        alpha_from_rsi(0.85)


def test_check_rsi_flags() -> None:
    assert check_rsi(0.4) == []
    assert check_rsi(1.3) == ["rsi_out_of_range"]
    assert check_rsi(-0.2) == ["rsi_out_of_range"]
    assert check_rsi(0.9) == ["rsi_nonpositive_alpha"]
    assert check_rsi(math.nan) == ["rsi_not_finite"]


@given(rsi=st.floats(0.01, 0.81), n=st.integers(1, 45))
def test_gard_at_2gy_is_minus_n_ln_rsi(rsi: float, n: int) -> None:
    for beta in (0.05, 0.0, 0.03):
        assert gard(rsi, 2.0 * n, n, beta_per_gy2=beta) == pytest.approx(-n * math.log(rsi), rel=1e-10)


def test_gard_known_value() -> None:
    # RSI 0.3745, 70 Gy / 35 fx: GARD = -35 ln 0.3745
    assert gard(0.3745, 70, 35) == pytest.approx(34.376, abs=0.001)
    # hypofractionation at 3 Gy: n d (alpha + beta d)
    a = -math.log(0.4) / 2 - 0.1
    assert gard(0.4, 60, 20) == pytest.approx(60 * (a + 0.05 * 3))


@settings(max_examples=200)
@given(rsi=st.floats(0.05, 0.8), dose=st.floats(1.0, 90.0), d=st.floats(1.0, 8.0))
def test_dose_for_gard_inverts_gard_fixed_d(rsi: float, dose: float, d: float) -> None:
    n = dose / d
    g = gard(rsi, dose, n)
    assert dose_for_gard(rsi, g, dose_per_fraction_gy=d) == pytest.approx(dose, rel=1e-10)


@settings(max_examples=200)
@given(rsi=st.floats(0.05, 0.8), dose=st.floats(1.0, 90.0), n=st.integers(1, 40),
       beta=st.sampled_from([0.0, 0.02, 0.05]))
def test_dose_for_gard_inverts_gard_fixed_n(rsi: float, dose: float, n: int, beta: float) -> None:
    g = gard(rsi, dose, n, beta_per_gy2=beta)
    assert dose_for_gard_fixed_n(rsi, g, n, beta_per_gy2=beta) == pytest.approx(dose, rel=1e-9)


def test_dose_for_gard_known_values() -> None:
    rsi = 0.5
    a = -math.log(0.5) / 2 - 0.1
    assert dose_for_gard(rsi, 33.0) == pytest.approx(33.0 / (a + 0.1))
    # fixed n: beta n d^2 + alpha n d = G
    d_total = dose_for_gard_fixed_n(rsi, 33.0, 20)
    d = d_total / 20
    assert 0.05 * 20 * d**2 + a * 20 * d == pytest.approx(33.0)
    np.testing.assert_allclose(dose_for_gard(np.array([0.3, 0.5]), 33.0),
                               [33.0 / (-math.log(0.3) / 2), 33.0 / (-math.log(0.5) / 2)])


def test_dose_for_gard_bad_input() -> None:
    with pytest.raises(InputError, match="target_gard"):
        dose_for_gard(0.4, -1.0)
    with pytest.raises(InputError, match="dose_per_fraction_gy"):
        dose_for_gard(0.4, 33.0, dose_per_fraction_gy=0.0)
    with pytest.raises(InputError, match="rsi"):
        dose_for_gard(0.95, 33.0)
    with pytest.raises(InputError, match="exactly one"):
        dose_for_gard_lq(0.3, 33.0)


def test_lq_variants_from_predicted_alpha() -> None:
    assert gard_lq(0.3, 60, 30, 0.05) == pytest.approx(60 * (0.3 + 0.1))
    assert dose_for_gard_lq(0.3, 24.0, dose_per_fraction_gy=2.0) == pytest.approx(60.0)
    assert dose_for_gard_lq(0.3, 24.0, n_fractions=30) == pytest.approx(60.0)
    with pytest.raises(InputError, match="alpha_per_gy"):
        gard_lq(-0.1, 60, 30)


def test_patient_lq() -> None:
    p = patient_lq(0.4)
    assert p.alpha_per_gy == pytest.approx(-math.log(0.4) / 2 - 0.1)
    assert p.beta_per_gy2 == 0.05
    assert p.alpha_beta_gy == pytest.approx(p.alpha_per_gy / 0.05)
    assert p.flags == []
    assert p.gard(70, 35) == pytest.approx(-35 * math.log(0.4))
    assert p.dose_for_gard(p.gard(70, 35), dose_per_fraction_gy=2.0) == pytest.approx(70)
    q = patient_lq(alpha_per_gy=0.25, beta_per_gy2=0.025)
    assert q.alpha_beta_gy == pytest.approx(10.0)


def test_patient_lq_out_of_domain_is_flagged_or_raises() -> None:
    with pytest.raises(InputError, match="fallback"):
        patient_lq(0.9)
    p = patient_lq(0.9, fallback_alpha_per_gy=0.3)
    assert p.alpha_per_gy == 0.3
    assert p.flags == ["out_of_distribution", "population_fallback"]
    assert p.reasons == ["rsi_nonpositive_alpha"]
    p2 = patient_lq(alpha_per_gy=-0.1, fallback_alpha_per_gy=0.3)
    assert "population_fallback" in p2.flags
    with pytest.raises(InputError, match="exactly one"):
        patient_lq()
