"""Per-patient dose targets: the dose fields of the prescription record."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    dose_for_gard,
    dose_targets,
    lkb_ntcp,
    load_ntcp_parameters,
    patient_lq,
    toxicity_at_dose,
    toxicity_endpoints,
    toxicity_record_name,
    whole_fraction_regimen,
)

XERO = "xerostomia_flow_lt25pct_1y"


def test_dose_targets_record() -> None:
    lq = patient_lq(0.45)
    t = dose_targets(lq, site="head_neck", target_gard=33.0, n_fractions=35, dose_per_fraction_gy=2.0)
    assert t.gard == pytest.approx(-35 * math.log(0.45))
    assert t.dose_for_target_gard_gy == pytest.approx(dose_for_gard(0.45, 33.0))
    assert t.recommended_total_dose_gy == pytest.approx(min(max(t.dose_for_target_gard_gy, 60.0), 80.0))
    rec = t.as_record()
    for key in ("alpha_per_gy", "beta_per_gy2", "alpha_beta_gy", "dose_per_fraction_gy", "n_fractions", "gard",
                "target_gard", "dose_for_target_gard_gy", "recommended_total_dose_gy", "toxicity", "flags",
                "recommended_n_fractions", "recommended_dose_per_fraction_gy", "dose_for_target_gard_lower_gy",
                "dose_for_target_gard_upper_gy"):
        assert key in rec
    assert rec["recommended_n_fractions"] * rec["recommended_dose_per_fraction_gy"] == pytest.approx(
        rec["recommended_total_dose_gy"], abs=1e-9)
    assert math.isnan(rec["dose_for_target_gard_lower_gy"]) and math.isnan(rec["dose_for_target_gard_upper_gy"])


def test_recommended_regimen_is_whole_fractions() -> None:
    """Issue 7: 35 fractions must not be paired with a total that assumes another dose per fraction."""
    t = dose_targets(patient_lq(0.4), site="head_neck", target_gard=33.0, n_fractions=35, dose_per_fraction_gy=2.0)
    needed = 66.0 / -math.log(0.4)  # 72.03 Gy at 2 Gy (Scott 2017: GARD = -n ln RSI at 2 Gy)
    assert t.recommended_total_dose_gy == pytest.approx(needed)
    assert t.recommended_n_fractions == 36.0  # round(72.03 / 2) = 36
    assert t.recommended_dose_per_fraction_gy == pytest.approx(needed / 36)
    assert abs(t.recommended_n_fractions * t.recommended_dose_per_fraction_gy - t.recommended_total_dose_gy) < 1e-9
    assert t.n_fractions == 35  # the requested regimen the GARD refers to is kept
    # clipped to the site maximum (80 Gy): 40 x 2 Gy
    t2 = dose_targets(patient_lq(0.6), site="head_neck", target_gard=40.0)
    assert (t2.recommended_total_dose_gy, t2.recommended_n_fractions, t2.recommended_dose_per_fraction_gy) == (
        80.0, 40.0, 2.0)


@pytest.mark.parametrize(("total", "d", "n", "why"), [
    (72.03, 2.0, 36, "nearest whole number"),
    (61.0, 2.0, 31, "a tie takes more fractions (smaller dose per fraction)"),
    (73.0, 2.4, 31, "30 x 2.433 Gy would exceed 2.4 Gy per fraction"),
    (60.0, 1.6, 37, "37 x 1.62 Gy: 38 would go below 1.6 Gy per fraction"),
])
def test_whole_fraction_regimen(total: float, d: float, n: int, why: str) -> None:
    got_n, got_d = whole_fraction_regimen(total, d, min_dose_per_fraction_gy=1.6, max_dose_per_fraction_gy=2.4)
    assert got_n == n, why
    assert got_n * got_d == pytest.approx(total, abs=1e-9)
    assert 1.6 - 1e-12 <= got_d <= 2.4 + 1e-12


def test_whole_fraction_regimen_without_solution() -> None:
    # 3 Gy: 1 x 3 Gy is above 2.4, 2 x 1.5 Gy below 1.6
    assert all(math.isnan(v) for v in whole_fraction_regimen(3.0, 2.0, min_dose_per_fraction_gy=1.6,
                                                             max_dose_per_fraction_gy=2.4))
    assert all(math.isnan(v) for v in whole_fraction_regimen(math.nan, 2.0, min_dose_per_fraction_gy=1.6,
                                                             max_dose_per_fraction_gy=2.4))


def test_hot_parotids_are_reported_not_acted_on() -> None:
    """Parotids are parallel organs: their limits never lower the tumour dose (contract section 2, soft limits)."""
    vol = np.ones(3)
    hot_parotid = (np.array([20.0, 35.0, 50.0]), vol)  # mean 35 Gy at 70 Gy
    t = dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, reference_prescription_gy=70.0,
                     oar_dvhs={"Parotid_L": hot_parotid, "Parotid_R": hot_parotid})
    assert t.recommended_total_dose_gy == pytest.approx(min(t.dose_for_target_gard_gy, 80.0))
    assert "oar_soft_limit_exceeded" in t.flags and "oar_limited" not in t.flags
    means = [c for c in t.oar_checks if c["metric"] == "mean_gy"]
    assert {c["structure"] for c in means} == {"Parotid_L", "Parotid_R"}
    assert all(c["status"] == "exceeded" and c["hard"] is False for c in means)
    assert means[0]["value_gy"] == pytest.approx(35.0 * t.recommended_total_dose_gy / 70.0)
    assert t.toxicity  # reported with the exceeded soft limit


def test_interval_doses_follow_the_rsi_interval() -> None:
    """Higher RSI = more radioresistant = more dose: the lower RSI end gives the lower dose."""
    t = dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, rsi_lower=0.35, rsi_upper=0.55)
    # at 2 Gy, D = 2 GARD / -ln(RSI) (Scott 2017), independent of beta
    assert t.dose_for_target_gard_lower_gy == pytest.approx(66.0 / -math.log(0.35), rel=1e-12)
    assert t.dose_for_target_gard_upper_gy == pytest.approx(66.0 / -math.log(0.55), rel=1e-12)
    assert t.dose_for_target_gard_lower_gy < t.dose_for_target_gard_gy < t.dose_for_target_gard_upper_gy
    # at 3 Gy per fraction: D = G / (alpha + 3 beta), alpha = -ln(RSI)/2 - 0.1
    t3 = dose_targets(patient_lq(0.45), site="lung", target_gard=33.0, dose_per_fraction_gy=3.0, rsi_lower=0.35,
                      rsi_upper=0.55)
    assert t3.dose_for_target_gard_upper_gy == pytest.approx(33.0 / (-math.log(0.55) / 2 - 0.1 + 0.15))
    # an interval end outside the LQ domain (alpha <= 0 above exp(-0.2) = 0.819): NaN with the reason
    t4 = dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, rsi_lower=0.3, rsi_upper=0.85)
    assert math.isfinite(t4.dose_for_target_gard_lower_gy) and math.isnan(t4.dose_for_target_gard_upper_gy)
    assert any("rsi_upper = 0.85" in r for r in t4.reasons)
    # from an alpha interval (lowest, highest)
    t5 = dose_targets(patient_lq(alpha_per_gy=0.3), site="head_neck", target_gard=33.0,
                      alpha_interval_per_gy=(0.2, 0.4))
    assert t5.dose_for_target_gard_lower_gy == pytest.approx(33.0 / 0.5)
    assert t5.dose_for_target_gard_upper_gy == pytest.approx(33.0 / 0.3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rsi_lower": 0.3}, "both rsi_lower and rsi_upper"),
    ({"rsi_lower": 0.5, "rsi_upper": 0.4}, "rsi_lower"),
    ({"rsi_lower": 0.5, "rsi_upper": 0.6}, "outside its interval"),
    ({"rsi_lower": math.nan, "rsi_upper": 0.6}, "rsi_lower"),
    ({"rsi_lower": 0.3, "rsi_upper": 0.6, "alpha_interval_per_gy": (0.1, 0.2)}, "not both"),
])
def test_interval_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, **kwargs)


def test_dose_targets_clipping_and_fallback_flags() -> None:
    radioresistant = patient_lq(0.9, fallback_alpha_per_gy=0.05)
    t = dose_targets(radioresistant, site="head_neck", target_gard=60.0)
    assert t.recommended_total_dose_gy == 80.0
    assert t.flags == ["out_of_distribution", "population_fallback", "clipped_max", "oar_unchecked"]
    sensitive = patient_lq(0.1)
    t2 = dose_targets(sensitive, site="head_neck", target_gard=33.0)
    assert t2.dose_for_target_gard_gy < 60.0
    assert t2.recommended_total_dose_gy == 60.0
    assert t2.flags == ["clipped_min", "oar_unchecked"]  # no dose distribution: OAR limits not checked


def test_toxicity_at_planned_dose() -> None:
    vol = np.ones(3)
    left = (np.array([10.0, 25.0, 40.0]), vol)  # mean 25 Gy at 70 Gy
    right = (np.array([5.0, 15.0, 25.0]), vol)
    tox = toxicity_at_dose({"parotid_l": left, "parotid_r": right}, 70.0, 70.0)
    assert tox == {XERO: pytest.approx(float(lkb_ntcp(25.0, 39.9, 0.4)))}
    tox2 = toxicity_at_dose({"Parotid_L": left, "PTV70": left}, 70.0, 56.0)
    assert tox2 == {XERO: pytest.approx(float(lkb_ntcp(20.0, 39.9, 0.4)))}
    t = dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, oar_dvhs={"parotid_l": left},
                     reference_prescription_gy=70.0)
    assert t.toxicity[XERO] == pytest.approx(
        float(lkb_ntcp(25.0 * t.recommended_total_dose_gy / 70.0, 39.9, 0.4)))
    with pytest.raises(InputError, match="'gland_x'"):
        toxicity_at_dose({"gland_x": left}, 70.0, 70.0)


def test_unrecognised_structures_in_dose_targets() -> None:
    vol = np.ones(3)
    left = (np.array([10.0, 25.0, 40.0]), vol)
    with pytest.raises(InputError, match="'mystery'"):
        dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, reference_prescription_gy=70.0,
                     oar_dvhs={"Parotid_L": left, "mystery": left})
    t = dose_targets(patient_lq(0.45), site="head_neck", target_gard=33.0, reference_prescription_gy=70.0,
                     oar_dvhs={"Parotid_L": left, "mystery": left}, unknown_structures="flag")
    assert "unrecognised_structure" in t.flags
    assert set(t.toxicity) == {XERO}
    assert any("mystery" in r for r in t.reasons)


def test_toxicity_endpoints_say_what_they_predict() -> None:
    table = toxicity_endpoints()
    assert set(table) == set(load_ntcp_parameters())
    assert toxicity_record_name("xerostomia") == "xerostomia_flow_lt25pct_1y"
    assert "25 %" in table["xerostomia"].predicts and "one year" in table["xerostomia"].predicts
    docs = (Path(__file__).resolve().parents[1] / "docs/radiobiology.md").read_text()
    for e in table.values():
        assert not e.ctcae_grade_ge2  # none of the shipped LKB models predicts CTCAE grade >= 2
        assert "grade" not in e.record_name
        assert e.source and e.predicts
        assert f"`{e.record_name}`" in docs, e.record_name
