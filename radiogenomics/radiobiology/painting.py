"""Voxel dose prescriptions (dose painting): linear painting by numbers and TCP-optimal painting.

Sources:
- Bentzen SM, "Theragnostic imaging for radiation oncology: dose-painting by numbers",
  Lancet Oncol 2005;6:112-117 (linear map from image intensity to dose).
- Brahme A, Agren AK, "Optimal dose distribution for eradication of heterogeneous tumours",
  Acta Oncol 1987;26:377-385, and Webb S, Nahum AE, Phys Med Biol 1993;38:653-666 (TCP-maximising dose
  at fixed mean dose; pure alpha killing: ``D_i = Dmean + (ln rho_i - <ln rho>)/alpha``).
- Lazzeroni M et al., J Nucl Med 2026 (FDG/FMISO-driven voxel prescriptions aiming at 95 % TCP).

The TCP-optimal solver handles beta > 0 and hypoxia (``alpha OMF``, ``beta OMF^2``). It uses the separable
structure of the problem: at the optimum the marginal gain ``N_i S_i'(D_i)`` is equal in every voxel not at a
dose bound (Lagrange condition), so the solver runs a 1-D safeguarded Newton search on the log Lagrange
multiplier ``t`` and, for each ``t``, solves the per-voxel stationarity equation

    phi_i(D) = t + ln N_i - a_i D - q_i D^2 + ln(a_i + 2 q_i D) = 0,   q_i = beta_i / n

with a vectorised, bracketed Newton iteration (phi_i is concave and decreasing where the voxel survival is
convex). Voxels whose survival curve has a concave shoulder (``a_i^2 < 2 q_i``) compare the two candidate
minima of the per-voxel Lagrangian explicitly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import logsumexp

from radiogenomics.errors import InputError
from radiogenomics.radiobiology._validation import (
    FloatArray,
    finite,
    non_negative,
    positive,
    probability_open,
)
from radiogenomics.radiobiology.oxygen import DEFAULT_K_MMHG, DEFAULT_OER_MAX
from radiogenomics.radiobiology.tcp import effective_lq

logger = logging.getLogger(__name__)

#: Lazzeroni et al. 2026 plan to 95 % TCP.
DEFAULT_TARGET_TCP = 0.95


def linear_dose_painting(intensity: Any, *, dose_min_gy: float, dose_max_gy: float,
                         intensity_low: float | None = None, intensity_high: float | None = None,
                         mask: Any = None) -> FloatArray:
    """Linear dose painting by numbers (Bentzen, Lancet Oncol 2005;6:112), dose in Gy per voxel.

    ``D(I) = Dmin + (I - I_low)/(I_high - I_low) (Dmax - Dmin)``, clipped to [Dmin, Dmax]. ``I_low`` and
    ``I_high`` default to the minimum and maximum intensity inside ``mask`` (all voxels when None).
    Voxels outside ``mask`` get 0 Gy.
    """
    img = finite(intensity, "intensity")
    d_lo = float(non_negative(dose_min_gy, "dose_min_gy"))
    d_hi = float(non_negative(dose_max_gy, "dose_max_gy"))
    if d_hi < d_lo:
        raise InputError(f"dose_max_gy ({d_hi}) must be >= dose_min_gy ({d_lo}).")
    sel = _mask(mask, img.shape)
    if not sel.any():
        raise InputError("mask selects no voxel.", fix="pass a non-empty ROI mask.")
    i_lo = float(img[sel].min()) if intensity_low is None else float(finite(intensity_low, "intensity_low"))
    i_hi = float(img[sel].max()) if intensity_high is None else float(finite(intensity_high, "intensity_high"))
    if i_hi <= i_lo:
        if intensity_low is None and intensity_high is None:  # flat image: uniform minimum dose
            frac = np.zeros_like(img)
        else:
            raise InputError(f"intensity_high ({i_hi}) must be > intensity_low ({i_lo}).")
    else:
        frac = np.clip((img - i_lo) / (i_hi - i_lo), 0.0, 1.0)
    return np.where(sel, d_lo + frac * (d_hi - d_lo), 0.0)


def brahme_agren_dose(clonogens: Any, alpha_per_gy: float, mean_dose_gy: float) -> FloatArray:
    """Closed-form TCP-maximising dose at fixed mean dose, pure alpha killing (Brahme & Agren 1987).

    ``D_i = Dmean + (ln N_i - <ln N>)/alpha`` (equal voxel volumes, so clonogen number and density differ by
    a constant): ``ln(10)/alpha`` Gy more per decade of clonogen density. No dose bounds.
    """
    n = positive(clonogens, "clonogens")
    a = float(positive(alpha_per_gy, "alpha_per_gy"))
    mean = float(non_negative(mean_dose_gy, "mean_dose_gy"))
    ln_n = np.log(n)
    return mean + (ln_n - ln_n.mean()) / a


def brahme_agren_dose_for_tcp(clonogens: Any, alpha_per_gy: float, target_tcp: float) -> FloatArray:
    """Closed-form least-integral-dose map reaching ``target_tcp``, pure alpha killing (Brahme & Agren 1987).

    Equal marginal gain gives equal surviving clonogens per voxel, ``N_i S_i = -ln(TCP)/M``, hence
    ``D_i = ln(N_i M / (-ln TCP)) / alpha`` for M voxels. No dose bounds.
    """
    n = positive(clonogens, "clonogens")
    a = float(positive(alpha_per_gy, "alpha_per_gy"))
    tcp = float(probability_open(target_tcp, "target_tcp"))
    return np.log(n * n.size / -math.log(tcp)) / a


@dataclass(frozen=True)
class PaintingResult:
    """A TCP-optimal voxel prescription.

    ``dose_gy`` has the shape of the input grid (0 Gy outside the mask); ``tcp`` is the Poisson TCP it
    gives; ``mean_dose_gy`` and ``integral_dose_gy_voxels`` (sum of voxel doses) are over the mask;
    ``n_at_max``/``n_at_min`` count voxels on the dose bounds; ``log_multiplier`` is ``t = ln lambda``.
    """

    dose_gy: FloatArray
    tcp: float
    mean_dose_gy: float
    integral_dose_gy_voxels: float
    mode: Literal["target_tcp", "mean_dose"]
    n_at_max: int
    n_at_min: int
    log_multiplier: float
    outer_iterations: int
    inner_iterations: int


def _mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(f"mask shape {m.shape} differs from the map shape {shape}.",
                         fix="resample the mask to the map grid.")
    return m.astype(bool)


class _Problem:
    """Per-voxel data of the separable problem, restricted to the voxels in the mask (1-D arrays)."""

    def __init__(self, ln_n: FloatArray, a: FloatArray, q: FloatArray, lo: FloatArray, hi: FloatArray):
        self.ln_n, self.a, self.q, self.lo, self.hi = ln_n, a, q, lo, hi
        # Survival S(D) = exp(-a D - q D^2) is convex for u(D)^2 >= 2q, u = a + 2qD; below the inflection
        # dose D* it is concave and the per-voxel Lagrangian D + lambda N S(D) has no interior minimum.
        with np.errstate(divide="ignore", invalid="ignore"):
            d_star = np.where(q > 0, (np.sqrt(2.0 * q) - a) / (2.0 * q), 0.0)
        self.l0 = np.minimum(np.maximum(lo, d_star), hi)
        self.shoulder = np.flatnonzero(d_star > lo)
        # phi(D) = t + c(D): constants at the bounds of the convex branch
        self.c_l0 = self._c(self.l0, slice(None))
        self.c_hi = self._c(hi, slice(None))
        self.inner_iterations = 0

    def _c(self, dose: FloatArray, idx: Any) -> FloatArray:
        a, q = self.a[idx], self.q[idx]
        with np.errstate(divide="ignore"):
            return self.ln_n[idx] - dose * (a + q * dose) + np.log(a + 2.0 * q * dose)

    def log_sf(self, dose: FloatArray) -> FloatArray:
        return -dose * (self.a + self.q * dose)

    def doses(self, t: float, warm: FloatArray | None) -> tuple[FloatArray, np.ndarray]:
        """Per-voxel minimiser of ``D + exp(t) N S(D)`` on [lo, hi]; also the mask of interior voxels.

        Projected Newton on the whole vector: phi is concave and decreasing on the convex branch
        [l0, hi], so from the right of the root the iterates decrease monotonically to it, and a step
        from the left lands right of the root (or on hi). Voxels on a bound stay there after one step.
        """
        at_low = t + self.c_l0 <= 0
        at_high = t + self.c_hi >= 0
        interior = ~(at_low | at_high)
        a, q, l0, hi = self.a, self.q, self.l0, self.hi
        tn = t + self.ln_n
        x = (tn + np.log(a)) / a if warm is None else warm.copy()
        np.clip(x, l0, hi, out=x)
        x = np.where(at_high, hi, np.where(at_low, l0, x))
        for _ in range(100):
            self.inner_iterations += 1
            u = q * x
            u *= 2.0
            u += a
            phi = q * x
            phi += a
            phi *= x
            np.subtract(tn, phi, out=phi)
            phi += np.log(u)
            dphi = np.divide(2.0 * q, u)
            dphi -= u
            np.minimum(dphi, -1e-300, out=dphi)  # phi' < 0 on the convex branch; 0 only at D* (rounding)
            with np.errstate(over="ignore"):
                phi /= dphi  # Newton step
            xn = np.subtract(x, phi)
            np.clip(xn, l0, hi, out=xn)
            xn = np.where(interior & ~np.isnan(xn), xn, x)  # voxels on a bound stay there
            delta = float(np.max(np.abs(xn - x))) if x.size else 0.0
            x = xn
            if delta <= 1e-11:
                break
        if self.shoulder.size:
            self._shoulder_check(t, x, interior)
        return x, interior

    def _shoulder_check(self, t: float, dose: FloatArray, interior: np.ndarray) -> None:
        """Voxels with a concave survival shoulder: keep the better of ``lo`` and the convex-branch optimum."""
        s = self.shoulder
        d_s, lo = dose[s], self.lo[s]
        a, q, lnn = self.a[s], self.q[s], self.ln_n[s]
        x_lo = t + lnn - lo * (a + q * lo)
        x_d = t + lnn - d_s * (a + q * d_s)
        # objective at lo minus at the branch optimum: (lo - d) + exp(x_lo) - exp(x_d), in overflow-safe form
        with np.errstate(over="ignore", invalid="ignore"):
            gain = np.exp(x_lo) * -np.expm1(x_d - x_lo)
        use_lo = (gain < d_s - lo) & (d_s > lo)
        if use_lo.any():
            dose[s[use_lo]] = lo[use_lo]
            interior[s[use_lo]] = False

    def slope_terms(self, dose: FloatArray, interior: np.ndarray) -> tuple[FloatArray, FloatArray]:
        """``dD/dt = u/(u^2 - 2q)`` (0 for voxels on a bound) and ``u = a + 2 q D``, full-length arrays."""
        u = self.a + 2.0 * self.q * dose
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(interior, u / (u * u - 2.0 * self.q), 0.0)
        return slope, u


def _select(value: Any, name: str, shape: tuple[int, ...], sel: np.ndarray, n_sel: int, *,
            check: Any = non_negative) -> FloatArray:
    """``value`` (scalar or map broadcastable to the grid) validated and restricted to the selected voxels."""
    arr = check(value, name)
    if arr.ndim == 0:
        return np.full(n_sel, float(arr))
    try:
        full = np.broadcast_to(arr, shape)
    except ValueError as exc:
        raise InputError(f"{name} of shape {arr.shape} does not match the grid shape {shape}.") from exc
    return np.ascontiguousarray(full[sel], dtype=np.float64)


def tcp_optimal_painting(clonogens: Any, alpha_per_gy: Any, beta_per_gy2: Any, n_fractions: float, *,
                         max_dose_gy: Any, min_dose_gy: Any = 0.0, po2_mmhg: Any = None,
                         target_tcp: float | None = DEFAULT_TARGET_TCP, mean_dose_gy: float | None = None,
                         mask: Any = None, oer_max: float = DEFAULT_OER_MAX, k_mmhg: float = DEFAULT_K_MMHG,
                         tol: float = 1e-10, max_iter: int = 200) -> PaintingResult:
    """TCP-optimal voxel dose map (Brahme & Agren 1987; Webb & Nahum 1993; Lazzeroni et al. JNM 2026).

    Two modes (Lagrange duals of each other):

    - ``target_tcp`` (default 0.95): the least integral dose whose Poisson TCP reaches ``target_tcp``;
    - ``mean_dose_gy`` (pass it, with ``target_tcp=None``): the map of that mean dose with the highest TCP.

    ``clonogens``: clonogen number per voxel (grid); ``alpha_per_gy``, ``beta_per_gy2``: oxic LQ parameters
    (scalars or maps); ``po2_mmhg``: optional pO2 map (dose-modifying hypoxia, Alper & Howard-Flanders);
    ``n_fractions``: fixed number of fractions (dose per fraction varies per voxel); ``max_dose_gy`` /
    ``min_dose_gy``: voxel dose bounds (scalars or maps; the max is required - take it from the rails).
    Voxels outside ``mask`` get 0 Gy. Raises InputError when the target cannot be met within the bounds.
    """
    n_clon = non_negative(clonogens, "clonogens")
    shape = n_clon.shape
    sel = _mask(mask, shape)
    if not sel.any():
        raise InputError("mask selects no voxel.", fix="pass a non-empty GTV mask.")
    n = float(positive(n_fractions, "n_fractions"))
    if (target_tcp is None) == (mean_dose_gy is None):
        raise InputError("give exactly one of target_tcp or mean_dose_gy.",
                         fix="pass target_tcp=None to optimise at a fixed mean dose.")
    n_sel = n_clon[sel]
    m = n_sel.size
    po2_sel = None if po2_mmhg is None else _select(po2_mmhg, "po2_mmhg", shape, sel, m)
    a, b = effective_lq(_select(alpha_per_gy, "alpha_per_gy", shape, sel, m, check=positive),
                        _select(beta_per_gy2, "beta_per_gy2", shape, sel, m), po2_sel,
                        oer_max=oer_max, k_mmhg=k_mmhg)
    q = b / n
    lo = _select(min_dose_gy, "min_dose_gy", shape, sel, m)
    hi = _select(max_dose_gy, "max_dose_gy", shape, sel, m)
    if (hi < lo).any():
        raise InputError("max_dose_gy is below min_dose_gy in some voxel.", fix="check the dose bounds.")
    has = n_sel > 0
    # voxels without clonogens get the minimum dose; they do not enter the optimisation
    dose_sel = lo.copy()
    with np.errstate(divide="ignore"):
        ln_n = np.log(n_sel[has])
    prob = _Problem(ln_n, a[has], q[has], lo[has], hi[has])

    if target_tcp is not None:
        tcp_t = float(probability_open(target_tcp, "target_tcp"))
        t, d_has, outer = _solve_target_tcp(prob, math.log(-math.log(tcp_t)), tol, max_iter)
        mode: Literal["target_tcp", "mean_dose"] = "target_tcp"
    else:
        mean_target = float(non_negative(mean_dose_gy, "mean_dose_gy"))
        t, d_has, outer = _solve_mean_dose(prob, mean_target, lo, has, tol, max_iter)
        mode = "mean_dose"
    dose_sel[has] = d_has
    dose = np.zeros(shape, dtype=np.float64)
    dose[sel] = dose_sel
    log_surv = ln_n + prob.log_sf(d_has)
    tcp = math.exp(-math.exp(float(logsumexp(log_surv)))) if log_surv.size else 1.0
    logger.info("TCP-optimal painting (%s): %d voxels, TCP %.6f, mean %.3f Gy, %d outer / %d inner iterations",
                mode, int(sel.sum()), tcp, float(dose_sel.mean()), outer, prob.inner_iterations)
    return PaintingResult(
        dose_gy=dose, tcp=tcp, mean_dose_gy=float(dose_sel.mean()), integral_dose_gy_voxels=float(dose_sel.sum()),
        mode=mode, n_at_max=int(np.sum(dose_sel >= hi)), n_at_min=int(np.sum(dose_sel <= lo)),
        log_multiplier=t, outer_iterations=outer, inner_iterations=prob.inner_iterations)


def _next_t(t: float, newton: float, t_a: float, t_b: float, slow: bool) -> float:
    """Safeguarded step on t: inside a finite bracket the Newton iterate unless it leaves the bracket or the
    last step made poor progress (then bisection); with a one-sided bracket the Newton iterate if it moves
    outward, else an expanding step."""
    ok = math.isfinite(newton) and t_a < newton < t_b
    if math.isfinite(t_a) and math.isfinite(t_b):
        return newton if ok and not slow else 0.5 * (t_a + t_b)
    if ok:
        return newton
    if math.isfinite(t_a):
        return t_a + max(1.0, abs(t_a), 2.0 * abs(t - t_a))
    if math.isfinite(t_b):
        return t_b - max(1.0, abs(t_b), 2.0 * abs(t - t_b))
    return t + 1.0


def _initial_t(prob: _Problem) -> float:
    # pure alpha, all voxels interior: F = M/(lambda <a>) roughly -> start there
    return float(np.log(np.mean(1.0 / prob.a)) + np.log(max(prob.a.size, 1)))


def _solve_target_tcp(prob: _Problem, ln_target: float, tol: float,
                      max_iter: int) -> tuple[float, FloatArray, int]:
    """Least integral dose with ``sum N S <= L``: Newton on ``g(t) = ln F(t) - ln L`` (F decreasing in t)."""
    if prob.ln_n.size == 0:
        return 0.0, np.zeros(0), 0
    ln_f_hi = float(logsumexp(prob.ln_n + prob.log_sf(prob.hi)))
    if ln_f_hi > ln_target:
        best = math.exp(-math.exp(ln_f_hi))
        raise InputError(f"target_tcp is not reachable within max_dose_gy: the highest achievable TCP is "
                         f"{best:.6g}.", fix="lower target_tcp or raise max_dose_gy (within the rails).")
    ln_f_lo = float(logsumexp(prob.ln_n + prob.log_sf(prob.lo)))
    if ln_f_lo <= ln_target:
        return -math.inf, prob.lo.copy(), 0
    aim = ln_target - 0.5 * tol  # aim inside the feasible side, accept |g - aim| < tol/2
    t = _initial_t(prob) - ln_target
    t_a, t_b = -math.inf, math.inf  # g > aim at t_a (infeasible), g <= aim at t_b
    best_t, best_d = math.inf, prob.hi.copy()
    g_prev = math.inf
    warm: FloatArray | None = None
    for it in range(1, max_iter + 1):
        dose, interior = prob.doses(t, warm)
        warm = dose
        log_surv = prob.ln_n + prob.log_sf(dose)
        ln_f = float(logsumexp(log_surv))
        g = ln_f - aim
        if ln_f <= ln_target:
            best_t, best_d = t, dose
            if abs(g) <= 0.5 * tol:
                return t, dose, it
        if g <= 0:
            t_b = t
        else:
            t_a = t
        slope, u = prob.slope_terms(dose, interior)
        # d ln F / dt = -(sum_interior N S u dD/dt) / F
        w = np.exp(log_surv - ln_f)
        dg = -float(np.sum(w * u * slope))
        t_new = _next_t(t, t - g / dg if dg < 0 else math.nan, t_a, t_b, abs(g) > 0.5 * abs(g_prev))
        g_prev = g
        if math.isfinite(t_a) and math.isfinite(t_b) and t_b - t_a <= 1e-13 * (1.0 + abs(t_b)):
            # a jump of F(t) (a voxel with a survival shoulder switching to its minimum dose): no t gives
            # the target exactly; the feasible side is optimal up to that voxel's jump
            logger.info("TCP-optimal painting: F(t) jumps at t = %.6g; returning the feasible side", t_b)
            return best_t, best_d, it
        t = t_new
    if not math.isfinite(best_t):
        raise InputError("TCP-optimal painting did not converge to a feasible dose map.",
                         fix="check the clonogen and LQ maps; raise max_iter.")
    logger.warning("TCP-optimal painting stopped after %d iterations; returning the best feasible map", max_iter)
    return best_t, best_d, max_iter


def _solve_mean_dose(prob: _Problem, mean_target: float, lo_all: FloatArray, has: np.ndarray, tol: float,
                     max_iter: int) -> tuple[float, FloatArray, int]:
    """Highest TCP at fixed mean dose: Newton on ``G(t) = mean D(t) - Dmean`` (G increasing in t)."""
    m_all = has.size
    fixed_sum = float(lo_all[~has].sum())  # voxels without clonogens stay at their minimum
    lo_mean = (fixed_sum + float(prob.lo.sum())) / m_all
    hi_mean = (fixed_sum + float(prob.hi.sum())) / m_all
    if not lo_mean - 1e-12 <= mean_target <= hi_mean + 1e-12:
        raise InputError(f"mean_dose_gy = {mean_target} is outside the range the dose bounds allow "
                         f"[{lo_mean:.4g}, {hi_mean:.4g}] Gy.", fix="change mean_dose_gy or the dose bounds.")
    if prob.ln_n.size == 0:
        return 0.0, np.zeros(0), 0
    # pure alpha start: D_i = (t + ln(N_i a_i))/a_i
    inv_a = 1.0 / prob.a
    t = float((mean_target * m_all - fixed_sum - np.sum((prob.ln_n + np.log(prob.a)) * inv_a)) / inv_a.sum())
    t_a, t_b = -math.inf, math.inf  # G < 0 at t_a, G > 0 at t_b
    g_prev = math.inf
    dose_below, g_below = prob.lo, math.nan
    warm: FloatArray | None = None
    dose = prob.lo
    for it in range(1, max_iter + 1):
        dose, interior = prob.doses(t, warm)
        warm = dose
        g = (fixed_sum + float(dose.sum())) / m_all - mean_target
        if abs(g) <= tol * max(1.0, mean_target):
            return t, dose, it
        if g < 0:
            t_a, dose_below, g_below = t, dose, g
        else:
            t_b = t
        slope, _ = prob.slope_terms(dose, interior)
        dg = float(slope.sum()) / m_all
        t_new = _next_t(t, t - g / dg if dg > 0 else math.nan, t_a, t_b, abs(g) > 0.5 * abs(g_prev))
        g_prev = g
        if math.isfinite(t_a) and math.isfinite(t_b) and t_b - t_a <= 1e-13 * (1.0 + abs(t_b)):
            logger.info("mean-dose painting: mean dose jumps at t = %.6g; returning the side below the "
                        "requested mean (off by %.3g Gy)", t_a, g_below)
            return t_a, dose_below, it
        t = t_new
    logger.warning("mean-dose painting: mean dose off by %.3g Gy at the end of the search", g)
    return t, dose, max_iter
