"""Dose painting: Bentzen linear, Brahme-Agren closed forms, the TCP-optimal solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from radiogenomics.errors import InputError
from radiogenomics.radiobiology import (
    brahme_agren_dose,
    brahme_agren_dose_for_tcp,
    linear_dose_painting,
    load_rails,
    tcp_optimal_painting,
    tcp_poisson,
)
from radiogenomics.radiobiology.tcp import effective_lq


def test_linear_painting() -> None:
    img = np.array([0.0, 2.0, 4.0, 6.0, 8.0])
    out = linear_dose_painting(img, dose_min_gy=60.0, dose_max_gy=80.0, intensity_low=2.0, intensity_high=6.0)
    np.testing.assert_allclose(out, [60.0, 60.0, 70.0, 80.0, 80.0])
    mask = np.array([0, 1, 1, 1, 0], bool)
    out = linear_dose_painting(img, dose_min_gy=60.0, dose_max_gy=80.0, mask=mask)
    np.testing.assert_allclose(out, [0.0, 60.0, 70.0, 80.0, 0.0])
    with pytest.raises(InputError, match="dose_max_gy"):
        linear_dose_painting(img, dose_min_gy=80.0, dose_max_gy=60.0)
    with pytest.raises(InputError, match="intensity_high"):
        linear_dose_painting(img, dose_min_gy=60.0, dose_max_gy=80.0, intensity_low=5.0, intensity_high=5.0)


def test_brahme_agren_decade_rule() -> None:
    alpha = 0.35
    n = np.array([1e5, 1e6, 1e7])
    d = brahme_agren_dose(n, alpha, 70.0)
    np.testing.assert_allclose(np.diff(d), math.log(10) / alpha)
    assert d.mean() == pytest.approx(70.0)


def test_numerical_solver_matches_brahme_agren_at_beta_zero() -> None:
    rng = np.random.default_rng(11)
    n = 10 ** rng.uniform(4, 7, 2000)
    res = tcp_optimal_painting(n, 0.35, 0.0, 30, max_dose_gy=500.0, target_tcp=None, mean_dose_gy=70.0)
    np.testing.assert_allclose(res.dose_gy, brahme_agren_dose(n, 0.35, 70.0), atol=1e-8)
    assert res.mean_dose_gy == pytest.approx(70.0, abs=1e-8)
    res = tcp_optimal_painting(n, 0.35, 0.0, 30, max_dose_gy=500.0, target_tcp=0.9)
    np.testing.assert_allclose(res.dose_gy, brahme_agren_dose_for_tcp(n, 0.35, 0.9), atol=1e-7)
    assert res.tcp == pytest.approx(0.9, abs=1e-9)
    assert res.tcp >= 0.9


def _scipy_reference(n: np.ndarray, a: np.ndarray, q: np.ndarray, lo: float, hi: float,
                     target_tcp: float) -> np.ndarray:
    """Least integral dose s.t. sum N S <= -ln TCP, solved by SLSQP (reference only)."""
    ln_l = math.log(-math.log(target_tcp))
    ln_n = np.log(n)

    def cons(d: np.ndarray) -> float:
        return ln_l - float(np.log(np.sum(np.exp(ln_n - d * (a + q * d)))))

    def cons_jac(d: np.ndarray) -> np.ndarray:
        w = np.exp(ln_n - d * (a + q * d))
        return w * (a + 2 * q * d) / w.sum()

    x0 = np.full(n.size, hi * 0.9)
    res = minimize(lambda d: d.sum(), x0, jac=lambda d: np.ones_like(d), method="SLSQP",
                   bounds=[(lo, hi)] * n.size,
                   constraints=[{"type": "ineq", "fun": cons, "jac": cons_jac}],
                   options={"maxiter": 500, "ftol": 1e-12})
    assert res.success, res.message
    return np.asarray(res.x)


def test_matches_generic_optimizer_with_beta_and_hypoxia() -> None:
    rng = np.random.default_rng(5)
    m = 40
    n = 10 ** rng.uniform(4, 6, m)
    po2 = np.exp(rng.normal(1.5, 1.2, m))
    a_ox, b_ox, nfx, hi = 0.3, 0.03, 30, 110.0
    res = tcp_optimal_painting(n, a_ox, b_ox, nfx, po2_mmhg=po2, max_dose_gy=hi, target_tcp=0.95)
    a, b = effective_lq(a_ox, b_ox, po2)
    ref = _scipy_reference(n, a, b / nfx, 0.0, hi, 0.95)
    assert res.tcp >= 0.95 - 1e-12
    assert res.tcp == pytest.approx(0.95, abs=1e-9)
    # same optimum: our integral dose is no larger, and the maps agree
    assert res.integral_dose_gy_voxels <= ref.sum() + 1e-4
    np.testing.assert_allclose(res.dose_gy, ref, atol=2e-2)
    # hypoxic voxels get more dose than oxic voxels of similar clonogen number
    assert tcp_poisson(res.dose_gy, n, a_ox, b_ox, nfx, po2_mmhg=po2) == pytest.approx(res.tcp, rel=1e-12)


def test_mean_dose_mode_is_dual_of_target_mode() -> None:
    rng = np.random.default_rng(8)
    n = 10 ** rng.uniform(3, 6, (6, 7, 8))
    po2 = rng.uniform(1.0, 40.0, n.shape)
    res = tcp_optimal_painting(n, 0.3, 0.03, 35, po2_mmhg=po2, max_dose_gy=100.0, target_tcp=0.9)
    dual = tcp_optimal_painting(n, 0.3, 0.03, 35, po2_mmhg=po2, max_dose_gy=100.0, target_tcp=None,
                                mean_dose_gy=res.mean_dose_gy)
    assert dual.tcp == pytest.approx(0.9, abs=1e-7)
    np.testing.assert_allclose(dual.dose_gy, res.dose_gy, atol=1e-6)
    # any other map with the same mean dose has a lower TCP
    uniform = np.full(n.shape, res.mean_dose_gy)
    assert tcp_poisson(uniform, n, 0.3, 0.03, 35, po2_mmhg=po2) < dual.tcp


def test_mask_bounds_and_zero_clonogen_voxels() -> None:
    n = np.full((4, 4), 1e5)
    n[0, 0] = 0.0
    mask = np.ones((4, 4), bool)
    mask[3, 3] = False
    res = tcp_optimal_painting(n, 0.3, 0.03, 30, max_dose_gy=90.0, min_dose_gy=50.0, mask=mask,
                               target_tcp=0.95)
    assert res.dose_gy[3, 3] == 0.0  # outside the GTV
    assert res.dose_gy[0, 0] == 50.0  # no clonogens: minimum dose
    inside = res.dose_gy[mask]
    assert inside.min() >= 50.0 and inside.max() <= 90.0


def test_shoulder_case_single_fraction_anoxic() -> None:
    # one fraction, anoxic: alpha_eff^2 < 2 beta_eff -> survival has a concave shoulder
    rng = np.random.default_rng(2)
    n = 10 ** rng.uniform(2, 5, 50)
    res = tcp_optimal_painting(n, 0.3, 0.05, 1, po2_mmhg=np.zeros(50), max_dose_gy=200.0, target_tcp=0.95)
    assert res.tcp >= 0.95 - 1e-12
    a, b = effective_lq(0.3, 0.05, np.zeros(50))
    ref = _scipy_reference(n, a, b, 0.0, 200.0, 0.95)
    assert res.integral_dose_gy_voxels <= ref.sum() + 1e-3


def test_infeasible_and_bad_input() -> None:
    n = np.full(10, 1e7)
    with pytest.raises(InputError, match="max_dose_gy"):
        tcp_optimal_painting(n, 0.3, 0.03, 30, po2_mmhg=0.0, max_dose_gy=60.0)
    with pytest.raises(InputError, match="mean_dose_gy"):
        tcp_optimal_painting(n, 0.3, 0.03, 30, max_dose_gy=60.0, target_tcp=None, mean_dose_gy=70.0)
    with pytest.raises(InputError, match="exactly one"):
        tcp_optimal_painting(n, 0.3, 0.03, 30, max_dose_gy=60.0, target_tcp=0.9, mean_dose_gy=50.0)
    with pytest.raises(InputError, match="clonogens"):
        tcp_optimal_painting(-n, 0.3, 0.03, 30, max_dose_gy=60.0)
    with pytest.raises(InputError, match="alpha_per_gy"):
        tcp_optimal_painting(n, 0.0, 0.03, 30, max_dose_gy=60.0)
    with pytest.raises(InputError, match="n_fractions"):
        tcp_optimal_painting(n, 0.3, 0.03, 0, max_dose_gy=60.0)
    with pytest.raises(InputError, match="target_tcp"):
        tcp_optimal_painting(n, 0.3, 0.03, 30, max_dose_gy=60.0, target_tcp=1.0)
    with pytest.raises(InputError, match="max_dose_gy"):
        tcp_optimal_painting(n, 0.3, 0.03, 30, max_dose_gy=math.nan)
    with pytest.raises(InputError, match="mask"):
        tcp_optimal_painting(n, 0.3, 0.03, 30, max_dose_gy=80.0, mask=np.zeros(10, bool))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), target=st.floats(0.5, 0.99), beta=st.sampled_from([0.0, 0.02, 0.05]),
       hypoxic=st.booleans(), n_fx=st.sampled_from([1, 5, 30]))
def test_painting_respects_rails_and_reaches_target(seed: int, target: float, beta: float, hypoxic: bool,
                                                    n_fx: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 300))
    n = 10 ** rng.uniform(1, 6, size)
    po2 = rng.uniform(0.0, 30.0, size) if hypoxic else None
    max_dose = load_rails().site("head_neck").max_voxel_dose_gy
    try:
        res = tcp_optimal_painting(n, 0.3, beta, n_fx, po2_mmhg=po2, max_dose_gy=max_dose, target_tcp=target)
    except InputError as err:  # only allowed when even the max dose everywhere misses the target
        assert "not reachable" in str(err)
        assert tcp_poisson(np.full(size, max_dose), n, 0.3, beta, n_fx, po2_mmhg=po2) < target
        return
    assert res.dose_gy.max() <= max_dose
    assert res.dose_gy.min() >= 0.0
    assert res.tcp >= target - 1e-12
    assert tcp_poisson(res.dose_gy, n, 0.3, beta, n_fx, po2_mmhg=po2) >= target - 1e-12


def test_shoulder_voxel_left_at_minimum_dose() -> None:
    # single fraction, anoxic, large beta: survival is concave below D* = 2.5 Gy. A voxel with almost no
    # clonogens is best left at 0 Gy; the convex-branch stationary point (D*) would waste dose.
    n = np.array([1e6, 1e5, 0.02])
    res = tcp_optimal_painting(n, 0.3, 0.2, 1, po2_mmhg=np.zeros(3), max_dose_gy=200.0, target_tcp=0.95)
    assert res.dose_gy[2] == 0.0
    assert res.tcp == pytest.approx(0.95, abs=1e-9)
    a, b = effective_lq(0.3, 0.2, np.zeros(3))
    # brute force over the tiny voxel's dose: the other two voxels solved optimally for each value
    best = math.inf
    for d3 in np.linspace(0.0, 6.0, 61):
        sub = tcp_optimal_painting(n[:2], 0.3, 0.2, 1, po2_mmhg=np.zeros(2), max_dose_gy=200.0,
                                   target_tcp=0.95 / math.exp(-n[2] * math.exp(-d3 * (a[2] + b[2] * d3))))
        best = min(best, sub.integral_dose_gy_voxels + d3)
    assert res.integral_dose_gy_voxels <= best + 1e-9
