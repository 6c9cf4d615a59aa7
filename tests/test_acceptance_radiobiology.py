"""Acceptance tests for the radiobiology Python API (contract §5), against the published values and the
formulas of the brief, each computed by hand here (math/numpy only), independently of the implementation."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
import pytest

import radiogenomics.radiobiology as rb

RSI_COEF = {
    "AR": -0.00980092741843779,
    "JUN": 0.0128282697929755,
    "STAT1": 0.0254552046046931,
    "PRKCB": -0.00175888592095915,
    "RELA": -0.00381713588908642,
    "ABL1": 0.107021274358643,
    "SUMO1": -0.00025093287356907,
    "CDK1": -0.00924314364533049,
    "HDAC1": -0.020446868981449,
    "IRF1": -0.0441682719957224,
}
GENES = list(RSI_COEF)


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def hand_rank(values: list[float]) -> list[float]:
    """Average ranks, lowest = 1, written out without scipy."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks


def hand_rsi(sample: dict[str, float]) -> float:
    ranks = hand_rank([sample[g] for g in GENES])
    return sum(RSI_COEF[g] * r for g, r in zip(GENES, ranks, strict=True))


# --------------------------------------------------------------------------------------------------
# Contract §5 names and signatures
# --------------------------------------------------------------------------------------------------

CONTRACT = {
    "rsi_score": ["expression"],
    "alpha_from_rsi": ["rsi", "beta_per_gy2"],
    "gard": ["rsi", "total_dose_gy", "n_fractions", "beta_per_gy2"],
    "dose_for_gard": ["rsi", "target_gard", "dose_per_fraction_gy", "beta_per_gy2"],
    "bed": ["total_dose_gy", "n_fractions", "alpha_beta_gy"],
    "eqd2": ["total_dose_gy", "n_fractions", "alpha_beta_gy"],
    "geud": ["dose_gy", "volume", "a"],
    "lkb_ntcp": ["geud_gy", "td50_gy", "m"],
    "oer_from_po2": ["po2_mmhg"],
    "tcp_poisson": ["dose_gy", "clonogens", "alpha_per_gy", "beta_per_gy2", "n_fractions", "po2_mmhg"],
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_contract_names_and_positional_parameters(name):
    func = getattr(rb, name)
    params = [p for p in inspect.signature(func).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in params][: len(CONTRACT[name])] == CONTRACT[name]


def test_contract_defaults():
    sig = inspect.signature
    assert sig(rb.alpha_from_rsi).parameters["beta_per_gy2"].default == 0.05
    assert sig(rb.gard).parameters["beta_per_gy2"].default == 0.05
    assert sig(rb.dose_for_gard).parameters["dose_per_fraction_gy"].default == 2.0
    assert sig(rb.dose_for_gard).parameters["beta_per_gy2"].default == 0.05
    assert sig(rb.tcp_poisson).parameters["po2_mmhg"].default is None
    oer = sig(rb.oer_from_po2).parameters
    assert oer["oer_max"].default == 3.0 and oer["k_mmhg"].default == 3.0


# --------------------------------------------------------------------------------------------------
# LQ: BED / EQD2 (Fowler 1989)
# --------------------------------------------------------------------------------------------------

def test_bed_sbrt_anchor():
    assert rb.bed(50.0, 5, 10.0) == pytest.approx(100.0, rel=1e-12)


def test_eqd2_hand_values():
    assert rb.eqd2(50.0, 5, 10.0) == pytest.approx(100.0 / 1.2, rel=1e-12)
    assert rb.eqd2(70.0, 35, 10.0) == pytest.approx(70.0, rel=1e-12)      # 2 Gy fractions: EQD2 = D
    assert rb.eqd2(60.0, 30, 3.0) == pytest.approx(60.0, rel=1e-12)
    assert rb.bed(60.0, 30, 3.0) == pytest.approx(60 * (1 + 2 / 3), rel=1e-12)
    assert rb.eqd2(55.0, 20, 3.0) == pytest.approx(55 * (1 + 2.75 / 3) / (1 + 2 / 3), rel=1e-12)


def test_bed_eqd2_vectorised_and_broadcast():
    d = np.array([50.0, 70.0, 60.0])
    n = np.array([5, 35, 30])
    ab = np.array([10.0, 10.0, 3.0])
    expected = d * (1 + (d / n) / ab)
    got = rb.bed(d, n, ab)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(rb.eqd2(d, n, ab), expected / (1 + 2 / ab), rtol=1e-12)
    grid = rb.bed(np.array([[60.0], [70.0]]), 30, np.array([3.0, 10.0]))
    assert grid.shape == (2, 2)
    assert grid[1, 0] == pytest.approx(70 * (1 + (70 / 30) / 3))


def test_scalar_in_float_out():
    for value in (rb.bed(50, 5, 10), rb.eqd2(50, 5, 10), rb.gard(0.3, 70, 35), rb.alpha_from_rsi(0.3),
                  rb.dose_for_gard(0.3, 33), rb.oer_from_po2(5.0), rb.lkb_ntcp(30.0, 39.9, 0.4),
                  rb.geud([10.0, 20.0], [1.0, 1.0], 1.0), rb.tcp_poisson(70.0, 1e7, 0.2, 0.02, 35)):
        assert isinstance(value, float), type(value)


# --------------------------------------------------------------------------------------------------
# RSI -> alpha -> GARD (Scott 2017)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rsi", [0.05, 0.2, 0.3, 0.46, 0.6, 0.8])
def test_alpha_from_rsi(rsi):
    assert rb.alpha_from_rsi(rsi) == pytest.approx(-math.log(rsi) / 2 - 0.1, rel=1e-12)


def test_alpha_from_rsi_other_beta_and_vector():
    assert rb.alpha_from_rsi(0.3, beta_per_gy2=0.03) == pytest.approx(-math.log(0.3) / 2 - 0.06, rel=1e-12)
    rsi = np.array([0.1, 0.3, 0.5])
    np.testing.assert_allclose(rb.alpha_from_rsi(rsi), -np.log(rsi) / 2 - 0.1, rtol=1e-12)
    # SF2 reproduces the RSI: exp(-(2 alpha + 4 beta)) = RSI.
    alpha = rb.alpha_from_rsi(rsi)
    np.testing.assert_allclose(np.exp(-(2 * alpha + 4 * 0.05)), rsi, rtol=1e-12)


@pytest.mark.parametrize("rsi,beta", [(r, b) for r in (0.1, 0.3, 0.46, 0.7) for b in (0.05, 0.02, 0.1)
                                      if -math.log(r) / 2 - 2 * b > 0])  # (alpha > 0; see the domain-rule test below)
def test_gard_at_2gy_is_minus_n_ln_rsi_whatever_beta(rsi, beta):
    assert rb.gard(rsi, 70.0, 35, beta_per_gy2=beta) == pytest.approx(-35 * math.log(rsi), rel=1e-12)


def test_gard_other_fractionation_hand():
    rsi = 0.3
    alpha = -math.log(rsi) / 2 - 0.1
    d = 66.0 / 30
    assert rb.gard(rsi, 66.0, 30) == pytest.approx(30 * d * (alpha + 0.05 * d), rel=1e-12)
    d = 3.0
    assert rb.gard(rsi, 60.0, 20) == pytest.approx(60.0 * (alpha + 0.05 * d), rel=1e-12)


def test_gard_vectorised():
    rsi = np.array([0.2, 0.3, 0.5])
    got = rb.gard(rsi, np.array([70.0, 60.0, 50.0]), np.array([35, 30, 25]))
    np.testing.assert_allclose(got, -np.array([35, 30, 25]) * np.log(rsi), rtol=1e-12)


def test_gard_flags_rsi_that_implies_negative_alpha():
    """Issue 3 domain rule: RSI > exp(-0.2) (alpha < 0 at beta 0.05) is flagged, never silently a number,
    even though -n ln RSI would be finite at 2 Gy. The explicit opt-out returns NaN, not a value."""
    with pytest.raises(ValueError, match="rsi"):
        rb.gard(0.9, 70.0, 35)
    with pytest.raises(ValueError, match="rsi"):
        rb.dose_for_gard(0.9, 33.0)
    assert math.isnan(rb.gard(0.9, 70.0, 35, invalid="nan"))
    assert rb.check_rsi(0.9, 0.05)  # the reason is reported


@pytest.mark.parametrize("rsi,target", [(0.3, 33.0), (0.2, 42.0), (0.5, 20.0)])
def test_dose_for_gard_fixed_dose_per_fraction(rsi, target):
    alpha = -math.log(rsi) / 2 - 0.1
    assert rb.dose_for_gard(rsi, target) == pytest.approx(target / (alpha + 0.1), rel=1e-12)
    assert rb.dose_for_gard(rsi, target) == pytest.approx(2 * target / -math.log(rsi), rel=1e-12)
    d = 1.8
    total = rb.dose_for_gard(rsi, target, dose_per_fraction_gy=d)
    assert total == pytest.approx(target / (alpha + 0.05 * d), rel=1e-12)
    # Round trip through gard.
    assert rb.gard(rsi, total, total / d) == pytest.approx(target, rel=1e-9)


def test_dose_for_gard_beta_argument_and_vector():
    rsi, target, d, beta = 0.3, 33.0, 2.5, 0.03
    alpha = -math.log(rsi) / 2 - 2 * beta
    assert rb.dose_for_gard(rsi, target, d, beta) == pytest.approx(target / (alpha + beta * d), rel=1e-12)
    rsis = np.array([0.2, 0.3, 0.4])
    np.testing.assert_allclose(rb.dose_for_gard(rsis, 33.0), 66.0 / -np.log(rsis), rtol=1e-12)


@pytest.mark.parametrize("rsi,target,n", [(0.3, 33.0, 35), (0.2, 42.0, 30), (0.45, 25.0, 5)])
def test_dose_for_gard_fixed_number_of_fractions(rsi, target, n):
    """Fixed n: beta n d^2 + alpha n d - G = 0 (brief), the positive root by the quadratic formula."""
    alpha, beta = -math.log(rsi) / 2 - 0.1, 0.05
    d = (-alpha * n + math.sqrt((alpha * n) ** 2 + 4 * beta * n * target)) / (2 * beta * n)
    total = rb.dose_for_gard_fixed_n(rsi, target, n)
    assert total == pytest.approx(n * d, rel=1e-9)
    assert rb.gard(rsi, total, n) == pytest.approx(target, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# RSI score (Eschrich 2009)
# --------------------------------------------------------------------------------------------------

def sample_frame() -> pd.DataFrame:
    rows = {
        "ascending": {g: float(i + 1) for i, g in enumerate(GENES)},
        "descending": {g: float(10 - i) for i, g in enumerate(GENES)},
        "all_tied": {g: 7.25 for g in GENES},
        "some_ties": dict(zip(GENES, [5.0, 3.0, 5.0, 9.0, 1.5, 3.0, 8.0, 5.0, 2.0, 6.5], strict=True)),
        "realistic": dict(zip(GENES, [8.12, 10.4, 9.93, 6.2, 11.05, 7.77, 12.3, 9.1, 10.8, 8.65], strict=True)),
    }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "patient_id"
    return frame


def test_rsi_score_hand_values_rank_within_sample():
    frame = sample_frame()
    got = rb.rsi_score(frame)
    assert isinstance(got, pd.Series)
    for pid, row in frame.iterrows():
        assert got.loc[pid] == pytest.approx(hand_rsi(row.to_dict()), abs=1e-12), pid


def test_rsi_score_ascending_is_sum_c_times_rank_no_intercept():
    got = rb.rsi_score(sample_frame()).loc["ascending"]
    assert got == pytest.approx(sum(c * (i + 1) for i, c in enumerate(RSI_COEF.values())), abs=1e-12)
    tied = rb.rsi_score(sample_frame()).loc["all_tied"]
    assert tied == pytest.approx(5.5 * sum(RSI_COEF.values()), abs=1e-12)  # ties averaged, no intercept


def test_rsi_score_theoretical_range():
    coefs = sorted(RSI_COEF.values())
    assert sum(c * (i + 1) for i, c in enumerate(coefs)) == pytest.approx(1.219, abs=1e-3)
    assert sum(c * (10 - i) for i, c in enumerate(coefs)) == pytest.approx(-0.605, abs=1e-3)
    # Expression ordered so that the largest coefficient gets rank 10, etc.: the maximum.
    order = sorted(GENES, key=lambda g: RSI_COEF[g])
    frame = pd.DataFrame([{g: float(order.index(g)) for g in GENES}], index=pd.Index(["max"], name="patient_id"))
    assert rb.rsi_score(frame).loc["max"] == pytest.approx(1.219, abs=1e-3)


def test_rsi_score_not_ranked_across_patients_and_ignores_other_genes():
    frame = sample_frame()
    alone = rb.rsi_score(frame.loc[["realistic"]]).loc["realistic"]
    together = rb.rsi_score(frame).loc["realistic"]
    assert alone == pytest.approx(together, abs=1e-15)
    shifted = frame.copy()
    shifted.loc["realistic"] = shifted.loc["realistic"] * 2.0 + 3.0  # monotone transform: same ranks
    assert rb.rsi_score(shifted).loc["realistic"] == pytest.approx(together, abs=1e-15)
    extra = frame.copy()
    extra["TP53"] = 100.0
    extra["MYC"] = -5.0
    extra = extra[["TP53", *GENES[::-1], "MYC"]]  # other genes and column order do not matter
    pd.testing.assert_series_equal(rb.rsi_score(extra).sort_index(), rb.rsi_score(frame).sort_index(),
                                   check_names=False)


def test_rsi_score_from_expression_csv_layout():
    """expression.csv read as is: patient_id is the first column, IDs like 007 as strings."""
    frame = sample_frame().reset_index()
    frame["patient_id"] = ["007", "010", "A1", "B2", "C3"]
    got = rb.rsi_score(frame)
    assert list(map(str, got.index)) == ["007", "010", "A1", "B2", "C3"]
    assert got.loc["007"] == pytest.approx(hand_rsi(sample_frame().iloc[0].to_dict()), abs=1e-12)


def test_rsi_score_missing_gene_raises_naming_it():
    frame = sample_frame().drop(columns=["HDAC1"])
    with pytest.raises(ValueError, match="HDAC1"):
        rb.rsi_score(frame)


def test_rsi_score_blank_value_raises_naming_gene_and_patient():
    frame = sample_frame()
    frame.loc["realistic", "SUMO1"] = np.nan
    with pytest.raises(ValueError) as info:
        rb.rsi_score(frame)
    assert "SUMO1" in str(info.value) and "realistic" in str(info.value)


def test_rsi_score_cdk1_slot_mappable_to_pak2():
    frame = sample_frame().rename(columns={"CDK1": "PAK2"})
    got = rb.rsi_score(frame, gene_map={"CDK1": "PAK2"})
    np.testing.assert_allclose(got.to_numpy(), rb.rsi_score(sample_frame()).to_numpy(), atol=1e-15)


# --------------------------------------------------------------------------------------------------
# NTCP: gEUD + LKB
# --------------------------------------------------------------------------------------------------

def test_geud_a_is_the_exponent():
    dose = np.array([10.0, 20.0, 40.0])
    vol = np.array([2.0, 1.0, 1.0])  # cc: normalised to fractions 0.5, 0.25, 0.25
    v = vol / vol.sum()
    for a in (1.0, 2.0, 1 / 0.12, 1 / 0.87, 0.5):
        assert rb.geud(dose, vol, a) == pytest.approx(float(np.sum(v * dose**a) ** (1 / a)), rel=1e-10), a
    assert rb.geud(dose, vol, 1.0) == pytest.approx(20.0, rel=1e-12)  # n = 1: mean dose
    assert rb.geud(dose, vol, 200.0) == pytest.approx(40.0, rel=0.01)  # large a -> max dose
    assert rb.geud(dose, vol, -10.0) == pytest.approx(float(np.sum(v * dose**-10.0) ** (-0.1)), rel=1e-10)


def test_geud_vectorised_over_leading_axis():
    dose = np.array([[10.0, 20.0], [30.0, 50.0]])
    vol = np.array([[1.0, 3.0], [1.0, 1.0]])
    got = rb.geud(dose, vol, 2.0)
    assert np.shape(got) == (2,)
    np.testing.assert_allclose(got, [math.sqrt(0.25 * 100 + 0.75 * 400), math.sqrt(0.5 * 900 + 0.5 * 2500)],
                               rtol=1e-12)


@pytest.mark.parametrize("mean_dose,lo,hi", [(25.0, 0.17, 0.18), (30.0, 0.26, 0.27)])
def test_lkb_parotid_published_range(mean_dose, lo, hi):
    """QUANTEC parotid (TD50 39.9 Gy, m 0.40, n 1): mean dose 25-30 Gy gives 17-26 % (brief)."""
    expected = phi((mean_dose - 39.9) / (0.40 * 39.9))
    got = rb.lkb_ntcp(mean_dose, 39.9, 0.40)
    assert got == pytest.approx(expected, abs=1e-12)
    assert lo <= got <= hi


def test_lkb_from_parotid_dvh_mean_dose():
    dose = np.array([5.0, 25.0, 45.0])
    vol = np.array([2.0, 10.5, 3.25])
    mean = float(np.sum(dose * vol) / vol.sum())
    ntcp = rb.lkb_ntcp(rb.geud(dose, vol, 1.0), 39.9, 0.40)
    assert ntcp == pytest.approx(phi((mean - 39.9) / (0.4 * 39.9)), abs=1e-12)


def test_lkb_vectorised_and_limits():
    geuds = np.array([0.0, 39.9, 80.0, 200.0])
    got = rb.lkb_ntcp(geuds, 39.9, 0.4)
    np.testing.assert_allclose(got, [phi((g - 39.9) / (0.4 * 39.9)) for g in geuds], atol=1e-12)
    assert got[1] == pytest.approx(0.5)
    assert rb.lkb_ntcp(24.5, 24.5, 0.18) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------
# Oxygen effect and TCP
# --------------------------------------------------------------------------------------------------

def hand_oer(p: float, oer_max: float = 3.0, k: float = 3.0) -> float:
    omf = (oer_max * p + k) / (oer_max * (p + k))
    return 1.0 / omf


def test_oer_from_po2_values():
    assert rb.oer_from_po2(0.0) == pytest.approx(3.0, rel=1e-12)
    assert rb.oer_from_po2(3.0) == pytest.approx(1.5, rel=1e-12)
    assert rb.oer_from_po2(1e4) == pytest.approx(1.0, abs=1e-3)
    assert rb.oer_from_po2(1e4) >= 1.0
    for p in (0.5, 2.5, 10.0, 40.0, 100.0):
        assert rb.oer_from_po2(p) == pytest.approx(hand_oer(p), rel=1e-12)
    assert rb.oer_from_po2(0.0, oer_max=2.5, k_mmhg=2.0) == pytest.approx(2.5, rel=1e-12)
    assert rb.oer_from_po2(4.0, oer_max=2.5, k_mmhg=2.0) == pytest.approx(hand_oer(4.0, 2.5, 2.0), rel=1e-12)


def test_oer_vectorised_and_monotone():
    p = np.array([0.0, 1.0, 3.0, 10.0, 60.0, 760.0])
    got = rb.oer_from_po2(p)
    assert isinstance(got, np.ndarray) and got.shape == p.shape
    np.testing.assert_allclose(got, [hand_oer(x) for x in p], rtol=1e-12)
    assert np.all(np.diff(got) < 0)
    assert np.all((got >= 1.0) & (got <= 3.0))


def hand_tcp(dose, clonogens, alpha, beta, n, po2=None):
    dose, clonogens, alpha, beta = (np.broadcast_to(np.asarray(x, float), np.shape(dose)) for x in
                                    (dose, clonogens, alpha, beta))
    if po2 is not None:
        p = np.asarray(po2, float)
        omf = (3.0 * p + 3.0) / (3.0 * (p + 3.0))
        alpha, beta = alpha * omf, beta * omf**2
    d = dose / n
    sf = np.exp(-n * (alpha * d + beta * d**2))
    return float(np.exp(-np.sum(clonogens * sf)))


def test_tcp_uniform_hand():
    expected = math.exp(-1e7 * math.exp(-35 * (0.2 * 2 + 0.02 * 4)))
    assert rb.tcp_poisson(70.0, 1e7, 0.2, 0.02, 35) == pytest.approx(expected, rel=1e-10)
    assert 0.55 < expected < 0.65


def test_tcp_voxels_hand():
    dose = np.array([70.0, 66.0, 72.0, 60.0])
    clon = np.array([2e6, 3e6, 1e6, 5e5])
    got = rb.tcp_poisson(dose, clon, 0.2, 0.02, 35)
    assert got == pytest.approx(hand_tcp(dose, clon, 0.2, 0.02, 35), rel=1e-10)
    alpha = np.array([0.2, 0.25, 0.18, 0.3])
    got = rb.tcp_poisson(dose, clon, alpha, 0.02, 35)
    assert got == pytest.approx(hand_tcp(dose, clon, alpha, 0.02, 35), rel=1e-10)


def test_tcp_with_po2_hand():
    dose = np.array([70.0, 70.0, 70.0, 80.0])
    clon = np.array([1e5, 1e5, 1e5, 1e5])
    po2 = np.array([0.0, 3.0, 40.0, 1.0])
    got = rb.tcp_poisson(dose, clon, 0.3, 0.03, 35, po2_mmhg=po2)
    assert got == pytest.approx(hand_tcp(dose, clon, 0.3, 0.03, 35, po2), rel=1e-10)
    # Hypoxia lowers TCP.
    assert got < rb.tcp_poisson(dose, clon, 0.3, 0.03, 35)
    # Well oxygenated ~ no pO2 given.
    assert rb.tcp_poisson(dose, clon, 0.3, 0.03, 35, po2_mmhg=np.full(4, 1e6)) == pytest.approx(
        rb.tcp_poisson(dose, clon, 0.3, 0.03, 35), rel=1e-4)


def test_tcp_anoxic_voxel_needs_oer_times_the_dose():
    """Dose-modifying OER: an anoxic voxel given 3x the dose (3x per fraction) has the oxic survival."""
    oxic = rb.tcp_poisson(60.0, 1e6, 0.25, 0.025, 30)
    anoxic = rb.tcp_poisson(180.0, 1e6, 0.25, 0.025, 30, po2_mmhg=0.0)
    assert anoxic == pytest.approx(oxic, rel=1e-10)


def test_tcp_bounds_and_monotone_in_dose():
    doses = np.linspace(40, 90, 11)
    tcps = [rb.tcp_poisson(float(d), 1e7, 0.25, 0.025, 35) for d in doses]
    assert all(0.0 <= t <= 1.0 for t in tcps)
    assert all(b >= a for a, b in zip(tcps, tcps[1:], strict=False))
    assert rb.tcp_poisson(0.0, 1e7, 0.25, 0.025, 35) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Bad input: ValueError naming the argument, never a number
# --------------------------------------------------------------------------------------------------

BAD_CALLS = [
    ("total_dose_gy", lambda: rb.bed(-50.0, 5, 10.0)),
    ("total_dose_gy", lambda: rb.bed(float("nan"), 5, 10.0)),
    ("n_fractions", lambda: rb.bed(50.0, 0, 10.0)),
    ("n_fractions", lambda: rb.eqd2(50.0, -5, 10.0)),
    ("alpha_beta_gy", lambda: rb.bed(50.0, 5, 0.0)),
    ("alpha_beta_gy", lambda: rb.eqd2(50.0, 5, -3.0)),
    ("total_dose_gy", lambda: rb.eqd2(np.array([50.0, np.inf]), 5, 10.0)),
    ("rsi", lambda: rb.alpha_from_rsi(0.0)),
    ("rsi", lambda: rb.alpha_from_rsi(-0.2)),
    ("rsi", lambda: rb.alpha_from_rsi(1.3)),
    ("rsi", lambda: rb.alpha_from_rsi(float("nan"))),
    ("rsi", lambda: rb.gard(np.array([0.3, np.nan]), 70.0, 35)),
    ("beta_per_gy2", lambda: rb.alpha_from_rsi(0.3, beta_per_gy2=-0.05)),
    ("total_dose_gy", lambda: rb.gard(0.3, -70.0, 35)),
    ("n_fractions", lambda: rb.gard(0.3, 70.0, 0)),
    ("target_gard", lambda: rb.dose_for_gard(0.3, -33.0)),
    ("target_gard", lambda: rb.dose_for_gard(0.3, float("nan"))),
    ("dose_per_fraction_gy", lambda: rb.dose_for_gard(0.3, 33.0, dose_per_fraction_gy=0.0)),
    ("dose_per_fraction_gy", lambda: rb.dose_for_gard(0.3, 33.0, dose_per_fraction_gy=-2.0)),
    ("dose_gy", lambda: rb.geud(np.array([10.0, -5.0]), np.array([1.0, 1.0]), 1.0)),
    ("volume", lambda: rb.geud(np.array([10.0, 20.0]), np.array([1.0, -1.0]), 1.0)),
    ("volume", lambda: rb.geud(np.array([10.0, 20.0]), np.array([0.0, 0.0]), 1.0)),
    ("dose_gy", lambda: rb.geud(np.array([10.0, np.nan]), np.array([1.0, 1.0]), 1.0)),
    ("a", lambda: rb.geud(np.array([10.0, 20.0]), np.array([1.0, 1.0]), float("nan"))),
    ("td50_gy", lambda: rb.lkb_ntcp(30.0, 0.0, 0.4)),
    ("td50_gy", lambda: rb.lkb_ntcp(30.0, -39.9, 0.4)),
    ("m", lambda: rb.lkb_ntcp(30.0, 39.9, 0.0)),
    ("geud_gy", lambda: rb.lkb_ntcp(float("nan"), 39.9, 0.4)),
    ("geud_gy", lambda: rb.lkb_ntcp(-1.0, 39.9, 0.4)),
    ("po2_mmhg", lambda: rb.oer_from_po2(-1.0)),
    ("po2_mmhg", lambda: rb.oer_from_po2(np.array([1.0, np.nan]))),
    ("oer_max", lambda: rb.oer_from_po2(1.0, oer_max=0.5)),
    ("k_mmhg", lambda: rb.oer_from_po2(1.0, k_mmhg=-3.0)),
    ("dose_gy", lambda: rb.tcp_poisson(-70.0, 1e7, 0.3, 0.03, 35)),
    ("clonogens", lambda: rb.tcp_poisson(70.0, -1e7, 0.3, 0.03, 35)),
    ("clonogens", lambda: rb.tcp_poisson(70.0, np.nan, 0.3, 0.03, 35)),
    ("alpha_per_gy", lambda: rb.tcp_poisson(70.0, 1e7, -0.3, 0.03, 35)),
    ("alpha_per_gy", lambda: rb.tcp_poisson(70.0, 1e7, np.inf, 0.03, 35)),
    ("beta_per_gy2", lambda: rb.tcp_poisson(70.0, 1e7, 0.3, -0.03, 35)),
    ("n_fractions", lambda: rb.tcp_poisson(70.0, 1e7, 0.3, 0.03, 0)),
    ("po2_mmhg", lambda: rb.tcp_poisson(70.0, 1e7, 0.3, 0.03, 35, po2_mmhg=-2.0)),
]


@pytest.mark.parametrize("argument,call", BAD_CALLS, ids=[f"{i}-{a}" for i, (a, _) in enumerate(BAD_CALLS)])
def test_bad_input_raises_value_error_naming_argument(argument, call):
    with pytest.raises(ValueError) as info:
        call()
    assert argument in str(info.value), str(info.value)


def test_mismatched_array_shapes_raise_value_error():
    with pytest.raises(ValueError):
        rb.geud(np.array([10.0, 20.0, 30.0]), np.array([1.0, 1.0]), 1.0)
    with pytest.raises(ValueError):
        rb.tcp_poisson(np.array([70.0, 60.0]), np.array([1e6, 1e6, 1e6]), 0.3, 0.03, 35)
