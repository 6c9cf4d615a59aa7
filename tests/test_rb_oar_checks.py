"""OAR limits at the recommended regimen (contract section 2): hard limits lower the dose, soft ones are reported.

Expected values are computed by hand from QUANTEC (cord Dmax 50 Gy, parotid mean 25 Gy / one gland < 20 Gy),
the LKB inverse (gEUD = TD50 (1 + m Phi^-1(p))) and the BED conversion of Fowler 1989, not from the code: an
organ dose D in n fractions of a plan prescribing P equals, in effect, the organ dose
``D (a/b + D/n) / (a/b + 2 D/P)`` of the same plan delivered with the target at 2 Gy per fraction (the
fractionation the QUANTEC limits come from); that equivalent is what must stay within the limit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import dose_targets, patient_lq
from radiogenomics.radiobiology.oar_checks import OARDose, oar_terms, scaled_limit_gy

RADIORESISTANT = patient_lq(0.6)


def conventional(dose_gy: float, prescription_gy: float, n: float, alpha_beta_gy: float) -> float:
    """The organ dose under conventional fractionation of the same plan with the same BED (Fowler 1989)."""
    return dose_gy * (alpha_beta_gy + dose_gy / n) / (alpha_beta_gy + 2.0 * dose_gy / prescription_gy)


def cord_limited_total(share: float, d: float, limit: float = 50.0, ab: float = 2.0) -> tuple[float, int]:
    """By hand: the largest total P with n = round(P/d) whole fractions where the cord (at ``share`` of P) is at
    its limit: share P (ab + share P / n) = limit (ab + 2 share), a quadratic in P for each n."""
    best: tuple[float, int] = (0.0, 0)
    for n in range(10, 60):
        a, b, c = share * share / n, share * ab, -limit * (ab + 2.0 * share)
        p = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
        if math.floor(p / d + 0.5) == n and p > best[0]:
            best = (p, n)
    return best  # GARD 33 needs ~99 Gy at 2 Gy: clipped to the head-and-neck maximum 80 Gy


def cord(dmax_gy: float) -> tuple[np.ndarray, np.ndarray]:
    """A cord DVH (planned at 70 Gy) whose hottest bin is ``dmax_gy``."""
    return np.array([10.0, 30.0, dmax_gy]), np.array([5.0, 3.0, 0.1])


def check(targets: object, structure: str, metric: str) -> dict:
    rows = [c for c in targets.oar_checks if c["structure"] == structure and c["metric"] == metric]  # type: ignore[attr-defined]
    assert len(rows) == 1, targets.oar_checks  # type: ignore[attr-defined]
    return rows[0]


def test_cord_at_82_percent_lowers_the_dose_to_its_limit() -> None:
    """Cord Dmax 57.4 Gy at 70 Gy (82 %): the dose falls until the cord's conventional equivalent is 50 Gy (at
    about 2 Gy per fraction: 31 x 1.98 Gy = 61.29 Gy, cord 50.26 Gy physical in 1.62 Gy fractions)."""
    t = dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0, oar_dvhs={"SpinalCord": cord(57.4)},
                     reference_prescription_gy=70.0)
    expected, n = cord_limited_total(0.82, 2.0)
    assert (round(expected, 2), n) == (61.29, 31)
    assert t.recommended_total_dose_gy == pytest.approx(expected, rel=1e-9) and t.recommended_n_fractions == n
    assert t.recommended_n_fractions * t.recommended_dose_per_fraction_gy == pytest.approx(
        t.recommended_total_dose_gy, rel=1e-12)
    assert "oar_limited" in t.flags and "oar_limit_exceeded" not in t.flags and "clipped_max" in t.flags
    c = check(t, "SpinalCord", "max_gy")
    assert c["hard"] is True and c["status"] == "limited"
    assert c["dose_gy"] == pytest.approx(0.82 * expected, rel=1e-9)  # physical, in 31 fractions
    assert conventional(c["dose_gy"], expected, n, 2.0) == pytest.approx(50.0, rel=1e-9)
    assert c["value_gy"] == pytest.approx(50.0, rel=1e-9) and c["limit_gy"] == 50.0  # on the rail's basis
    assert "Kirkpatrick" in c["source"]


def test_cord_above_the_limit_at_the_site_minimum_is_exceeded_for_review() -> None:
    """Cord at 90 %: even 60 Gy (site minimum) gives it 54 Gy > 50 Gy: kept at 60 Gy, flagged for review."""
    t = dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0, oar_dvhs={"SpinalCord": cord(63.0)},
                     reference_prescription_gy=70.0)
    assert t.recommended_total_dose_gy == pytest.approx(60.0)
    assert "oar_limit_exceeded" in t.flags
    c = check(t, "SpinalCord", "max_gy")
    assert c["status"] == "exceeded" and c["dose_gy"] == pytest.approx(54.0)  # 30 x 2 Gy: value = dose
    assert c["value_gy"] == pytest.approx(54.0)


def test_the_dose_per_fraction_moves_a_hard_limit() -> None:
    """The same cord (82 %) under 1.8 Gy and 2.4 Gy per fraction: hyperfractionation allows more, hypofractionation
    less (the acceptance check of the contract's "fractionation accounted at the organ's alpha/beta")."""
    totals = {}
    for d in (1.8, 2.4):
        t = dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0, dose_per_fraction_gy=d,
                         oar_dvhs={"SpinalCord": cord(57.4)}, reference_prescription_gy=70.0)
        totals[d] = t.recommended_total_dose_gy
        expected, n = cord_limited_total(0.82, d)
        if expected >= 60.0:
            assert totals[d] == pytest.approx(expected, rel=1e-9) and "oar_limited" in t.flags
        else:  # below the site minimum: kept there, flagged for review
            assert totals[d] == pytest.approx(60.0) and "oar_limit_exceeded" in t.flags
    assert totals[1.8] > totals[2.4] + 1.0
    # the objectives' ceiling (objectives.json) never exceeds the rail as written
    assert scaled_limit_gy(50.0, 10, 2.0) == pytest.approx(200.0 / (1.0 + math.sqrt(21.0)), rel=1e-12)
    assert scaled_limit_gy(50.0, 40, 2.0) == 50.0


def test_parotids_are_soft_and_one_spared_gland_meets_the_paired_rule() -> None:
    """QUANTEC: both parotid means < 25 Gy, or one < 20 Gy. Left 14 Gy, right 35 Gy (at 70 Gy)."""
    left, right = OARDose("Parotid_L", mean_gy=14.0, max_gy=40.0), OARDose("Parotid_R", mean_gy=35.0, max_gy=60.0)
    t = dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0, reference_prescription_gy=70.0,
                     oar_dvhs={"Parotid_L": left, "Parotid_R": right})
    assert t.recommended_total_dose_gy == pytest.approx(80.0)  # never lowered by a parallel organ
    spared, hot = check(t, "Parotid_L", "mean_gy"), check(t, "Parotid_R", "mean_gy")
    assert spared["value_gy"] == pytest.approx(16.0) and spared["status"] == "ok"
    assert hot["value_gy"] == pytest.approx(40.0) and hot["status"] == "ok" and "spared" in hot["note"]
    # the NTCP limit of xerostomia (<= 20 %) as gEUD: Dijkema LKB TD50 39.9 Gy, m 0.40, n 1 -> the mean dose
    geud_limit = 39.9 * (1.0 + 0.40 * norm.ppf(0.20))
    ntcp = check(t, "Parotid_R", "geud_gy")
    assert t.recommended_n_fractions * 2.0 == pytest.approx(80.0)  # 40 x 2 Gy: the conventional fractionation
    assert ntcp["limit_gy"] == pytest.approx(geud_limit, rel=1e-9)
    # 40 x 2 Gy is the conventional fractionation: the value is the physical gEUD (the mean, n = 1)
    assert ntcp["value_gy"] == pytest.approx(40.0) == pytest.approx(ntcp["dose_gy"])
    assert ntcp["status"] == "exceeded"
    assert "oar_soft_limit_exceeded" in t.flags and "oar_limited" not in t.flags
    both_hot = dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0, reference_prescription_gy=70.0,
                            oar_dvhs={"Parotid_L": right, "Parotid_R": right})
    assert {c["status"] for c in both_hot.oar_checks if c["metric"] == "mean_gy"} == {"exceeded"}


def test_no_dose_distribution_is_unchecked_and_an_ntcp_limit_without_a_dvh_is_unchecked() -> None:
    t = dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0)
    assert t.oar_checks == [] and "oar_unchecked" in t.flags
    # lung pneumonitis NTCP (n = 0.87) needs the DVH; the mean-dose limit does not
    lungs = dose_targets(patient_lq(0.4), site="lung", target_gard=33.0, reference_prescription_gy=60.0,
                         oar_dvhs={"Lungs": OARDose("Lungs", mean_gy=12.0, max_gy=60.0)})
    assert check(lungs, "Lungs", "geud_gy")["status"] == "unchecked"
    assert check(lungs, "Lungs", "mean_gy")["status"] in ("ok", "exceeded")
    assert "oar_unchecked" not in lungs.flags  # soft: reported as unchecked, no hard limit is left unchecked


def test_left_and_right_lungs_are_checked_as_one_organ() -> None:
    """Mean lung dose of both lungs: volume-weighted (1000 cc at 10 Gy, 500 cc at 25 Gy -> 15 Gy at 60 Gy)."""
    left = OARDose("Lung_L", mean_gy=10.0, max_gy=50.0, volume_cc=1000.0)
    right = OARDose("Lung_R", mean_gy=25.0, max_gy=61.0, volume_cc=500.0)
    t = dose_targets(patient_lq(0.4), site="lung", target_gard=30.0, n_fractions=30, dose_per_fraction_gy=2.0,
                     reference_prescription_gy=60.0, oar_dvhs={"Lung_L": left, "Lung_R": right})
    c = check(t, "Lung_L+Lung_R", "mean_gy")
    total, n = t.recommended_total_dose_gy, t.recommended_n_fractions
    assert c["dose_gy"] == pytest.approx(15.0 * total / 60.0)
    assert c["value_gy"] == pytest.approx(conventional(c["dose_gy"], total, n, 3.0))  # lung alpha/beta 3 Gy


def test_unknown_structures_raise_or_flag_and_targets_are_not_oars() -> None:
    dvhs = {"Mystery": cord(30.0), "PTV70": cord(72.0)}
    with pytest.raises(InputError, match="Mystery"):
        dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0, oar_dvhs=dvhs, reference_prescription_gy=70.0)
    t = dose_targets(RADIORESISTANT, site="head_neck", target_gard=33.0, oar_dvhs=dvhs, reference_prescription_gy=70.0,
                     unknown_structures="flag")
    assert "unrecognised_structure" in t.flags and t.oar_checks == []
    assert any("PTV70" in r and "target" in r for r in t.reasons)


def test_oar_terms_need_a_positive_reference() -> None:
    with pytest.raises(InputError, match="reference prescription"):
        oar_terms({"SpinalCord": cord(40.0)}, 0.0)


@settings(max_examples=60, deadline=None)
@given(share=st.floats(0.3, 1.2), rsi=st.floats(0.2, 0.75), d=st.sampled_from([1.8, 2.0, 2.2, 2.4]))
def test_the_recommendation_never_breaks_a_hard_limit_unless_flagged(share: float, rsi: float, d: float) -> None:
    """Whatever the cord share and the patient: n x d = total, and either the cord keeps its limit at the
    recommended regimen or the record says it does not (site minimum, oar_limit_exceeded)."""
    t = dose_targets(patient_lq(rsi), site="head_neck", target_gard=33.0, dose_per_fraction_gy=d,
                     oar_dvhs={"SpinalCord": cord(70.0 * share)}, reference_prescription_gy=70.0)
    total, n = t.recommended_total_dose_gy, t.recommended_n_fractions
    assert n == round(n) and n * t.recommended_dose_per_fraction_gy == pytest.approx(total, rel=1e-12)
    assert 60.0 - 1e-9 <= total <= 80.0 + 1e-9
    cord_gy = share * total
    equivalent = conventional(cord_gy, total, n, 2.0)
    if "oar_limit_exceeded" in t.flags:
        assert total == pytest.approx(60.0) and equivalent > 50.0
    else:
        assert equivalent <= 50.0 * (1 + 1e-9)
        assert total <= min(max(t.dose_for_target_gard_gy, 60.0), 80.0) + 1e-9
