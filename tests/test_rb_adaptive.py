"""The adaptive re-prescription's radiobiology (radiogenomics.radiobiology.adaptive) against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radiogenomics.errors import InputError
from radiogenomics.radiobiology.adaptive import Course, adapt_course, course_eqd2, course_tcp, eqd2
from radiogenomics.radiobiology.oxygen import omf_from_po2

ALPHA, BETA = 0.3, 0.03
LEFT, DELIVERED = Course(25, 2.0), Course(10, 2.0)
RAILS = {"min_total_dose_gy": 60.0, "max_total_dose_gy": 80.0}


def _clonogens(n: int = 2000, total: float = 1e7) -> np.ndarray:
    return np.full(n, total / n)


def test_unchanged_oxygenation_is_no_adaptation() -> None:
    rng = np.random.default_rng(0)
    po2 = rng.uniform(0.5, 60.0, 2000)
    result = adapt_course(_clonogens(), ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED,
                          po2_baseline_mmhg=po2,
                          po2_mid_mmhg=po2, **RAILS)
    assert result.remaining == Course(25, 2.0) and result.bound is None
    assert result.tcp_adapted == pytest.approx(result.tcp_target, abs=1e-9)
    assert result.tcp_baseline == pytest.approx(result.tcp_adapted, abs=1e-12)
    assert result.adapted_total_dose_gy == 70.0


def test_one_oxic_compartment_matches_the_closed_form() -> None:
    """Oxic throughout, alpha rising mid-course (e.g. a measured radiosensitisation): n_rem is the smallest whole n
    with N_K exp(-n (alpha' d + beta d^2)) <= -ln TCP_target (Webb & Nahum 1993, one compartment)."""
    n0 = 1e7
    target = math.exp(-n0 * math.exp(-35 * (ALPHA * 2 + BETA * 4)))
    log_nk = math.log(n0) - 10 * (ALPHA * 2 + BETA * 4)
    # the same patient, oxic at baseline: the delivered part uses baseline alpha; the rest pO2 -> alpha unchanged
    result = adapt_course([n0], ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED, **RAILS)
    expected = math.ceil((log_nk - math.log(-math.log(target))) / (ALPHA * 2 + BETA * 4) - 1e-9)
    assert result.remaining.n_fractions == expected == 25
    assert result.tcp_target == pytest.approx(target, rel=1e-12)
    assert result.surviving_clonogens == pytest.approx(math.exp(log_nk), rel=1e-12)


def test_full_reoxygenation_deescalates_to_the_floor_and_persisting_hypoxia_escalates_to_the_ceiling() -> None:
    hypoxic = np.where(np.arange(2000) < 200, 2.0, 60.0)  # 10 % of the clonogens at 2 mmHg
    oxic = np.full(2000, 60.0)
    down = adapt_course(_clonogens(), ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED,
                          po2_baseline_mmhg=hypoxic,
                        po2_mid_mmhg=oxic, **RAILS)
    assert down.remaining.n_fractions == 20 and down.bound == "site_min_total"  # 10 x 2 + 20 x 2 = 60 Gy floor
    assert down.adapted_total_dose_gy == RAILS["min_total_dose_gy"]
    assert down.tcp_adapted >= down.tcp_target - 1e-9 and down.tcp_baseline >= down.tcp_adapted
    worse = np.where(np.arange(2000) < 1200, 1.0, 60.0)  # 60 % at 1 mmHg
    up = adapt_course(_clonogens(), ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED,
                          po2_baseline_mmhg=hypoxic,
                      po2_mid_mmhg=worse, **RAILS)
    assert up.remaining.n_fractions == 30 and up.bound == "site_max_total"  # 80 Gy ceiling
    assert up.adapted_total_dose_gy == RAILS["max_total_dose_gy"]
    assert up.tcp_adapted < up.tcp_target


def test_partial_reoxygenation_lands_between_and_follows_the_oxygen_effect() -> None:
    """More reoxygenation, never more fractions (monotone), checked over a sweep of mid-course pO2."""
    hypoxic = np.where(np.arange(2000) < 200, 2.0, 60.0)
    counts = []
    for po2 in (2.0, 3.0, 5.0, 8.0, 16.0, 60.0):
        mid = np.where(np.arange(2000) < 200, po2, 60.0)
        counts.append(adapt_course(_clonogens(), ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED,
                                   po2_baseline_mmhg=hypoxic, po2_mid_mmhg=mid, min_total_dose_gy=20.0,
                                   max_total_dose_gy=120.0).remaining.n_fractions)
    assert counts[0] == 25 and all(b <= a for a, b in zip(counts, counts[1:], strict=False)) and counts[-1] < 25
    assert omf_from_po2(60.0) > omf_from_po2(2.0)


def test_a_tumour_projected_to_fail_is_compared_in_log_space() -> None:
    """TCP underflows to 0 for a large hypoxic tumour; the expected survivors still order the courses."""
    po2 = np.full(2000, 0.5)
    same = adapt_course(_clonogens(total=1e10), ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED,
                        po2_baseline_mmhg=po2, po2_mid_mmhg=po2, min_total_dose_gy=20.0, max_total_dose_gy=120.0)
    assert same.tcp_target == 0.0 and same.remaining.n_fractions == 25


def test_eqd2_against_published_values() -> None:
    # Withers 1983 / Fowler 1989: 15 x 3 Gy at alpha/beta 10 -> 48.75 Gy; 30 x 2 Gy -> 60 Gy at any alpha/beta
    assert float(eqd2(45.0, 15, 10.0)) == pytest.approx(48.75)
    assert float(eqd2(60.0, 30, 3.0)) == pytest.approx(60.0)
    # a two-part course adds: 10 x 2 Gy then 20 x 2.5 Gy at an organ receiving 40 % of the target dose, a/b 3
    share = 0.4
    expected = eqd2(share * 20, 10, 3.0) + eqd2(share * 50, 20, 3.0)
    assert float(course_eqd2(share, Course(10, 2.0), Course(20, 2.5), 3.0)) == pytest.approx(float(expected))
    assert float(course_eqd2(share, Course(10, 2.0), Course(0, 2.0), 3.0)) == pytest.approx(float(eqd2(8.0, 10, 3.0)))


def test_bad_courses_are_errors() -> None:
    with pytest.raises(InputError, match="nothing left to adapt"):
        adapt_course(_clonogens(), ALPHA, BETA, baseline_remaining=Course(0, 2.0), delivered=Course(35, 2.0), **RAILS)
    with pytest.raises(InputError, match="finite"):
        adapt_course([np.nan], ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED, **RAILS)


def test_a_bound_is_reached_exactly_when_the_delivered_dose_per_fraction_differs() -> None:
    """10 x 2.12 Gy delivered, 2.143 Gy planned for the rest: the floor of 60 Gy is met exactly, not overshot."""
    hypoxic = np.where(np.arange(2000) < 200, 2.0, 60.0)
    result = adapt_course(_clonogens(), ALPHA, BETA, baseline_remaining=Course(18, 60.0 / 28),
                          delivered=Course(10, 2.12),
                          po2_baseline_mmhg=hypoxic, po2_mid_mmhg=np.full(2000, 60.0), **RAILS)
    assert result.bound == "site_min_total"
    assert result.adapted_total_dose_gy == pytest.approx(60.0, abs=1e-9)
    assert result.remaining.dose_per_fraction_gy <= 60.0 / 28


def test_a_tumour_projected_to_fail_keeps_its_gain_as_control_not_as_dose() -> None:
    """T0 ~ 1e-126 at planning (30 % of 1e8 clonogens at 1 mmHg). Reoxygenation to 10 mmHg raises the continued
    course's TCP to ~0.67 < the goal 0.95: no fraction is taken away (the old rule, keep T0, cut it to the floor);
    to 60 mmHg (continued TCP ~0.97 > 0.95): fractions go only while the TCP stays at the goal or above."""
    hypoxic = np.where(np.arange(2000) < 600, 1.0, 60.0)
    for mid_po2, kept in ((10.0, True), (60.0, False)):
        mid = np.where(np.arange(2000) < 600, mid_po2, 60.0)
        result = adapt_course(_clonogens(total=1e8), ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED,
                              po2_baseline_mmhg=hypoxic, po2_mid_mmhg=mid, min_total_dose_gy=20.0,
                              max_total_dose_gy=120.0)
        assert result.tcp_planning < 1e-100 and result.tcp_goal == 0.95
        assert result.tcp_target == pytest.approx(max(result.tcp_planning, min(0.95, result.tcp_baseline)))
        if kept:
            assert result.tcp_baseline < 0.95 and result.remaining.n_fractions == 25
        else:
            assert result.tcp_baseline > 0.95 and result.tcp_adapted >= 0.95 - 1e-9
    # a small, controllable tumour that reoxygenates fully: the goal decides how far it de-escalates
    small = adapt_course(_clonogens(total=1e5), ALPHA, BETA, baseline_remaining=LEFT, delivered=DELIVERED,
                         po2_baseline_mmhg=hypoxic, po2_mid_mmhg=np.full(2000, 60.0), min_total_dose_gy=20.0,
                         max_total_dose_gy=120.0)
    assert small.remaining.n_fractions < 25 and small.tcp_adapted >= 0.95 - 1e-9
    fewer = Course(small.remaining.n_fractions - 1, 2.0)
    assert course_tcp(_clonogens(total=1e5), ALPHA, BETA, delivered=DELIVERED, remaining=fewer,
                      po2_baseline_mmhg=hypoxic, po2_mid_mmhg=np.full(2000, 60.0)) < small.tcp_target
