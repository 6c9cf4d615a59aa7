"""Adaptive re-prescription after K delivered fractions: the remaining course that keeps the projected TCP.

Method (docs/adaptive.md):

1. **Delivered**: K fractions of dose d_del. Surviving clonogens per target voxel after them, from the LQ model with
   the *baseline* oxygenation (the conservative choice: reoxygenation during the first K fractions is not credited)
   ``N_K,i = N_0,i exp(-K (alpha_0,i d_del + beta_0,i d_del^2))`` (Webb & Nahum, Phys Med Biol 1993;38:653; oxygen
   effect alpha OMF, beta OMF^2, Alper & Howard-Flanders 1956).
2. **Updated radiobiology**: the mid-treatment FMISO pO2 per voxel gives ``alpha_K,i = alpha OMF(pO2_K,i)`` (and
   beta OMF^2) for the remaining fractions.
3. **Target**: ``T0``, the TCP the baseline course (the delivered fractions, then the rest as planned: n_left
   fractions of d) was projected to reach with the baseline biology, ``T0 = exp(-sum_i N_K,i SF_0,i(d)^n_left)``;
   ``T1``, the TCP of that same course with the updated biology; and the control goal ``G`` (0.95, the TCP
   Lazzeroni et al., J Nucl Med 2026, plan to). The target is ``max(T0, min(G, T1))``: never below the planning
   projection (worse hypoxia escalates back to T0), and a gain from reoxygenation is given back as dose only above
   the control goal - a tumour projected to fail at planning (T0 << G) keeps the gain as control probability
   instead of being de-escalated towards the site's floor.
4. **Remaining course**: the fewest whole fractions n_rem at the course's dose per fraction d whose TCP with the
   updated biology, ``exp(-sum_i N_K,i exp(-n_rem (alpha_K,i d + beta_K,i d^2)))``, reaches TCP_target - compared
   as the expected number of surviving clonogens at the end of the course (-ln TCP, in log space), which stays
   exact where TCP itself underflows to 0 (a resistant, hypoxic tumour); then bounded
   by the site's total-dose rails (never below the minimum total dose, never above the maximum: at a bound the
   bound's fractions share the dose left, so the adapted total K d_del + remaining equals the bound exactly).
   Unchanged oxygenation gives n_rem = n_left (no adaptation, exactly); full reoxygenation
   gives fewer fractions (de-escalation, to the site's floor at most); worse hypoxia more (escalation, to the
   site's maximum at most).

``tcp_baseline`` / ``tcp_adapted``: the projected TCP of the baseline course's remaining fractions (T1) and of the
adapted remaining fractions, both with the updated biology and the surviving clonogens N_K; ``tcp_planning`` is T0.

Everything here is a pure numpy function; the images are read by :mod:`radiogenomics.planning.adaptive`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from radiogenomics.errors import InputError
from radiogenomics.radiobiology.painting import DEFAULT_TARGET_TCP
from radiogenomics.radiobiology.tcp import effective_lq

#: ln(expected survivors) is compared with this absolute tolerance (float rounding of sums over ~1e5 voxels).
LOG_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Course:
    """A regimen: ``n_fractions`` of ``dose_per_fraction_gy``."""

    n_fractions: int
    dose_per_fraction_gy: float

    @property
    def total_gy(self) -> float:
        return self.n_fractions * self.dose_per_fraction_gy


@dataclass(frozen=True)
class Adaptation:
    """The remaining course and the figures behind it (module docstring)."""

    delivered: Course
    remaining: Course
    baseline_remaining: Course
    tcp_target: float
    tcp_baseline: float
    tcp_adapted: float
    tcp_planning: float
    tcp_goal: float
    surviving_clonogens: float
    bound: str | None  # "site_min_total", "site_max_total" or None

    @property
    def adapted_total_dose_gy(self) -> float:
        return self.delivered.total_gy + self.remaining.total_gy


def _log_sf(dose_per_fraction_gy: float, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return -(alpha * dose_per_fraction_gy + beta * dose_per_fraction_gy**2)


def tcp_of_remaining(log_clonogens: np.ndarray, log_sf_per_fraction: np.ndarray, n_fractions: float) -> float:
    """Poisson TCP ``exp(-sum exp(ln N_i + n ln SF_i))``, summed in log space."""
    from scipy.special import logsumexp

    if log_clonogens.size == 0:
        return 1.0
    total = logsumexp(log_clonogens + n_fractions * log_sf_per_fraction)
    return float(math.exp(-math.exp(total))) if total < 700 else 0.0


def log_survivors(log_clonogens: np.ndarray, log_sf_per_fraction: np.ndarray, n_fractions: float) -> float:
    """ln of the expected number of surviving clonogens, ``ln sum_i N_i SF_i^n`` (= ln(-ln TCP))."""
    from scipy.special import logsumexp

    if log_clonogens.size == 0:
        return -math.inf
    return float(logsumexp(log_clonogens + n_fractions * log_sf_per_fraction))


def adapt_course(clonogens: Any, alpha_per_gy: float, beta_per_gy2: float, *, baseline_remaining: Course,
                 delivered: Course, po2_baseline_mmhg: Any = None, po2_mid_mmhg: Any = None,
                 min_total_dose_gy: float, max_total_dose_gy: float, max_n_fractions: int = 60,
                 tcp_goal: float = DEFAULT_TARGET_TCP) -> Adaptation:
    """The remaining course after ``delivered`` (see the module docstring).

    The baseline course is ``delivered`` then ``baseline_remaining`` (the rest as planned); the adapted remaining
    course keeps its dose per fraction, except at a total-dose bound, where the bound's fractions share the dose
    left exactly (the adapted total equals the bound). ``clonogens``: baseline clonogen number per target voxel;
    ``po2_*``: pO2 per voxel (None: oxic); ``tcp_goal``: the control goal G of the target (module docstring).
    InputError for non-finite inputs or nothing left to adapt.
    """
    if not 0.0 < tcp_goal < 1.0:
        raise InputError(f"tcp_goal must be in (0, 1), got {tcp_goal}")
    n0 = np.asarray(clonogens, dtype=np.float64).ravel()
    if n0.size == 0 or not np.isfinite(n0).all() or (n0 < 0).any():
        raise InputError("clonogens must be finite, non-negative and not empty")
    if baseline_remaining.n_fractions < 1 or delivered.n_fractions < 1:
        raise InputError(f"{delivered.n_fractions} delivered fraction(s) and {baseline_remaining.n_fractions} left: "
                         "nothing left to adapt", fix="image mid-treatment, after 1 .. n-1 fractions")
    a0, b0 = (np.broadcast_to(v, n0.shape) for v in effective_lq(alpha_per_gy, beta_per_gy2, po2_baseline_mmhg))
    ak, bk = (np.broadcast_to(v, n0.shape) for v in effective_lq(alpha_per_gy, beta_per_gy2, po2_mid_mmhg))
    keep = n0 > 0
    log_nk = np.log(n0[keep]) + delivered.n_fractions * _log_sf(delivered.dose_per_fraction_gy, a0[keep], b0[keep])
    d = baseline_remaining.dose_per_fraction_gy
    sf0 = _log_sf(d, a0[keep], b0[keep])
    planning_log = log_survivors(log_nk, sf0, baseline_remaining.n_fractions)  # T0, as ln(-ln TCP)
    sfk = _log_sf(d, ak[keep], bk[keep])
    continued_log = log_survivors(log_nk, sfk, baseline_remaining.n_fractions)  # T1
    goal_log = math.log(-math.log(tcp_goal))
    # max(T0, min(G, T1)) in survivors: TCP falls as the survivors rise
    target_log = min(planning_log, max(goal_log, continued_log))
    target = math.exp(-math.exp(target_log)) if target_log < 700 else 0.0
    n_rem = next((n for n in range(0, max_n_fractions + 1)
                  if log_survivors(log_nk, sfk, n) <= target_log + LOG_TOLERANCE), max_n_fractions)
    remaining, bound = Course(n_rem, d), None
    left_min = min_total_dose_gy - delivered.total_gy
    left_max = max_total_dose_gy - delivered.total_gy
    if remaining.total_gy < left_min - 1e-9:
        n = max(1, math.ceil(left_min / d - 1e-9))
        remaining, bound = Course(n, left_min / n), "site_min_total"
    elif remaining.total_gy > left_max + 1e-9:
        n = max(1, math.floor(left_max / d + 1e-9))
        remaining, bound = Course(n, left_max / n), "site_max_total"
    return Adaptation(delivered=delivered, remaining=remaining, baseline_remaining=baseline_remaining,
                      tcp_target=target, tcp_baseline=tcp_of_remaining(log_nk, sfk, baseline_remaining.n_fractions),
                      tcp_adapted=tcp_of_remaining(log_nk, _log_sf(remaining.dose_per_fraction_gy, ak[keep], bk[keep]),
                                                   remaining.n_fractions),
                      tcp_planning=tcp_of_remaining(log_nk, sf0, baseline_remaining.n_fractions), tcp_goal=tcp_goal,
                      surviving_clonogens=float(np.exp(log_nk).sum()), bound=bound)


def course_tcp(clonogens: Any, alpha_per_gy: float, beta_per_gy2: float, *, delivered: Course, remaining: Course,
               po2_baseline_mmhg: Any = None, po2_mid_mmhg: Any = None) -> float:
    """TCP of a two-part course: ``delivered`` with the baseline oxygenation, then ``remaining`` with the
    mid-treatment oxygenation (the figures :func:`adapt_course` reports, for any remaining course)."""
    n0 = np.asarray(clonogens, dtype=np.float64).ravel()
    a0, b0 = (np.broadcast_to(v, n0.shape) for v in effective_lq(alpha_per_gy, beta_per_gy2, po2_baseline_mmhg))
    ak, bk = (np.broadcast_to(v, n0.shape) for v in effective_lq(alpha_per_gy, beta_per_gy2, po2_mid_mmhg))
    keep = n0 > 0
    log_nk = np.log(n0[keep]) + delivered.n_fractions * _log_sf(delivered.dose_per_fraction_gy, a0[keep], b0[keep])
    return tcp_of_remaining(log_nk, _log_sf(remaining.dose_per_fraction_gy, ak[keep], bk[keep]),
                            remaining.n_fractions)


def eqd2(dose_gy: Any, n_fractions: float, alpha_beta_gy: float) -> Any:
    """EQD2 of ``dose_gy`` in ``n_fractions`` (Withers 1983: D (d + a/b) / (2 + a/b), d = D / n)."""
    from radiogenomics.radiobiology.lq import eqd2 as lq_eqd2

    dose = np.asarray(dose_gy, dtype=np.float64)
    if n_fractions <= 0:  # a course part with no fraction adds nothing
        return np.zeros_like(dose)
    return np.asarray(lq_eqd2(dose, n_fractions, alpha_beta_gy), dtype=np.float64)


def course_eqd2(share: Any, delivered: Course, remaining: Course, alpha_beta_gy: float) -> Any:
    """EQD2 per voxel of a two-part course at an organ: ``share`` = the organ voxel's dose per Gy of the target's
    (its planned dose / the prescription), delivered part + remaining part (EQD2 adds; Withers 1983)."""
    s = np.asarray(share, dtype=np.float64)
    return (eqd2(s * delivered.total_gy, delivered.n_fractions, alpha_beta_gy)
            + eqd2(s * remaining.total_gy, remaining.n_fractions, alpha_beta_gy))
