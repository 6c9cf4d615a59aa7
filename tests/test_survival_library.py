"""notebooks/_survival.py: scikit-survival and statsmodels calls checked against published R ``survival`` output.

Reference data: the Freireich et al. 1963 6-MP leukaemia trial (Gehan, Biometrika 1965;52:203; ``gehan`` in
R's MASS). Reference values: R ``survival`` (``survdiff``, ``coxph``, ``survfit(conf.type = "log-log")``), as
quoted in Kalbfleisch & Prentice (2002) and R tutorials, and lifelines 0.30.3 output recorded on a small
data set with tied times.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _load_survival():
    spec = importlib.util.spec_from_file_location("_survival", NOTEBOOKS / "_survival.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_survival", module)
    spec.loader.exec_module(module)
    return module


sv = _load_survival()

# Freireich 6-MP trial; "+" = censored (remission duration in weeks)
_MP = "6 6 6 6+ 7 9+ 10 10+ 11+ 13 16 17+ 19+ 20+ 22 23 25+ 32+ 32+ 34+ 35+".split()
_PLACEBO = "1 1 2 2 3 4 4 5 5 8 8 8 8 11 11 12 12 15 17 22 23".split()


def _gehan() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = _MP + _PLACEBO
    t = np.array([float(s.rstrip("+")) for s in obs])
    e = np.array([0 if s.endswith("+") else 1 for s in obs])
    x = np.array([0] * len(_MP) + [1] * len(_PLACEBO))
    return t, e, x


def test_logrank_gehan_matches_r() -> None:
    """R: survdiff chisq = 16.8 on 1 df, p = 4.17e-05; observed 9 / 21, expected 19.25 / 10.75."""
    t, e, x = _gehan()
    lr = sv.logrank_test(t, e, x)
    assert lr.statistic == pytest.approx(16.793, abs=1e-3) and lr.dof == 1
    assert lr.p_value == pytest.approx(4.17e-5, rel=1e-2)
    assert lr.table["observed"].tolist() == [9, 21]
    assert lr.table["expected"].to_numpy() == pytest.approx([19.25, 10.75], abs=0.01)


def test_cox_gehan_matches_r() -> None:
    """R coxph, Efron: coef 1.572, se 0.412, HR 4.817 (2.147-10.81), Wald p 1.38e-4, LR 16.35; Breslow 1.509 (0.410)."""
    t, e, x = _gehan()
    efron = sv.cox_table(t, e, pd.Series(x, name="placebo"))
    row = efron.loc["placebo"]
    assert row["coef"] == pytest.approx(1.5721, abs=1e-4) and row["se"] == pytest.approx(0.4124, abs=1e-4)
    assert row["hr"] == pytest.approx(4.817, abs=1e-3)
    assert row["ci_lower"] == pytest.approx(2.147, abs=1e-3) and row["ci_upper"] == pytest.approx(10.81, abs=0.01)
    assert row["p_wald"] == pytest.approx(1.38e-4, rel=1e-2)
    assert efron.attrs["lr_statistic"] == pytest.approx(16.35, abs=0.01) and efron.attrs["n_events"] == 30
    breslow = sv.cox_table(t, e, pd.Series(x, name="placebo"), ties="breslow").loc["placebo"]
    assert breslow["coef"] == pytest.approx(1.5092, abs=1e-4) and breslow["se"] == pytest.approx(0.4096, abs=1e-4)
    # scikit-survival's own Cox estimator agrees with statsmodels and R
    y = Surv.from_arrays(e.astype(bool), t)
    for ties, coef in (("efron", 1.5721), ("breslow", 1.5092)):
        model = CoxPHSurvivalAnalysis(ties=ties).fit(x.reshape(-1, 1).astype(float), y)
        assert model.coef_[0] == pytest.approx(coef, abs=1e-4), ties


def test_kaplan_meier_gehan_matches_r() -> None:
    """R survfit(Surv(time, cens) ~ 1, subset = 6-MP, conf.type = "log-log")."""
    t, e, x = _gehan()
    km = sv.kaplan_meier(t[x == 0], e[x == 0]).set_index("time")
    r_table = {  # time: (n.risk, n.event, survival, lower 95 % CI, upper 95 % CI)
        6: (21, 3, 0.857, 0.620, 0.952), 7: (17, 1, 0.807, 0.563, 0.923), 10: (15, 1, 0.753, 0.503, 0.889),
        13: (12, 1, 0.690, 0.432, 0.849), 16: (11, 1, 0.627, 0.368, 0.805), 22: (7, 1, 0.538, 0.268, 0.747),
        23: (6, 1, 0.448, 0.188, 0.680)}
    for time, (n_risk, n_event, s, lo, hi) in r_table.items():
        row = km.loc[float(time)]
        assert (row["n_at_risk"], row["n_events"]) == (n_risk, n_event), time
        assert (row["survival"], row["ci_lower"], row["ci_upper"]) == pytest.approx((s, lo, hi), abs=5e-4), time
    assert km.at[6.0, "survival"] == pytest.approx(0.857143, abs=1e-6)
    assert km.at[6.0, "ci_lower"] == pytest.approx(0.6197, abs=1e-4)
    assert km.at[0.0, "survival"] == 1.0 and km["n_censored"].sum() == 12
    assert sv.survival_at(km.reset_index(), 30.0) == pytest.approx(0.448179, abs=1e-6)
    assert math.isnan(sv.survival_at(km.reset_index(), 36.0))


_T = np.array([3, 5, 5, 7, 8, 8, 8, 10, 12, 12, 15, 16, 18, 20, 20, 22, 25, 30, 31, 40], float)
_E = np.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0])
_G = np.array([0, 1, 2, 0, 1, 0, 2, 1, 0, 2, 1, 2, 0, 2, 1, 0, 2, 1, 0, 2])
_X = np.array([1.2, 0.3, -0.5, 2.0, 0.1, 1.1, -1.0, 0.4, 0.0, -0.2, 0.8, -1.3, 0.6, -0.7, 0.2, -0.1, -0.9, -0.4,
               0.5, -1.5])


def test_survival_matches_lifelines_with_ties() -> None:
    """Values from lifelines 0.30.3 (KaplanMeierFitter, multivariate_logrank_test, CoxPHFitter precision 1e-14)."""
    lr = sv.logrank_test(_T, _E, _G)
    assert lr.dof == 2 and lr.statistic == pytest.approx(1.1809897029520275, rel=1e-10)
    assert lr.p_value == pytest.approx(0.5540530429195412, rel=1e-10)
    cox = sv.cox_table(_T, _E, pd.Series(_X, name="x"))
    assert cox.at["x", "coef"] == pytest.approx(1.2619159326635725, abs=1e-6)
    assert cox.at["x", "se"] == pytest.approx(0.4473164182800173, abs=1e-6)
    assert cox.attrs["loglik"] == pytest.approx(-22.93222788035842, abs=1e-6)
    km = sv.kaplan_meier(_T, _E).set_index("time")
    expected = {3.0: 0.95, 5.0: 0.9, 7.0: 0.8470588235294115, 8.0: 0.741176470588235, 12.0: 0.6271493212669682,
                20.0: 0.4233257918552036, 31.0: 0.15874717194570134, 40.0: 0.15874717194570134}
    for time, s in expected.items():
        assert km.at[time, "survival"] == pytest.approx(s, abs=1e-12)
    assert km.at[8.0, "ci_lower"] == pytest.approx(0.48508168372452154, abs=1e-10)
    assert km.at[8.0, "ci_upper"] == pytest.approx(0.8833751494680953, abs=1e-10)
    assert km.at[20.0, "ci_lower"] == pytest.approx(0.18813642805505054, abs=1e-10)
    assert km.at[20.0, "ci_upper"] == pytest.approx(0.6425438271576974, abs=1e-10)


def _harrell_pairs(t: np.ndarray, e: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C by enumerating pairs (test reference): the earlier event should have the higher risk.

    A pair is comparable when the shorter time is an event; a time censored at an event's time counts as
    the longer one. Tied risks count 1/2.
    """
    num = den = 0.0
    for i in np.flatnonzero(e):
        later = (t > t[i]) | ((t == t[i]) & (e == 0))
        den += later.sum()
        num += (risk[later] < risk[i]).sum() + 0.5 * (risk[later] == risk[i]).sum()
    return num / den


def test_concordance_index() -> None:
    t2 = np.arange(1.0, 21.0)
    assert sv.concordance_index(t2, np.ones(20), -t2) == 1.0  # higher risk, earlier event
    assert sv.concordance_index(t2, np.ones(20), t2) == 0.0
    t, e, x = _gehan()
    assert sv.concordance_index(t, e, x) == pytest.approx(_harrell_pairs(t, e, x.astype(float)), abs=1e-12)
    assert sv.concordance_index(_T, _E, _X) == pytest.approx(_harrell_pairs(_T, _E, _X), abs=1e-12)


def test_survival_properties_and_errors() -> None:
    rng = np.random.default_rng(0)
    t = rng.exponential(10, 200).round(1) + 0.1
    e = (rng.random(200) < 0.6).astype(int)
    km = sv.kaplan_meier(t, e)
    assert km["survival"].iloc[0] == 1.0 and (np.diff(km["survival"]) <= 0).all()
    assert km["n_events"].sum() == e.sum() and km["n_censored"].sum() == (1 - e).sum()
    assert (km["n_at_risk"].diff().dropna() <= 0).all()
    # two identical groups: no difference
    assert sv.logrank_test(np.r_[t, t], np.r_[e, e], np.r_[np.zeros(200), np.ones(200)]).statistic \
        == pytest.approx(0.0, abs=1e-12)
    # the coefficient does not depend on shifting the covariate; scaling it divides the coefficient
    a = sv.cox_table(_T, _E, pd.Series(_X, name="x")).loc["x"]
    b = sv.cox_table(_T, _E, pd.Series(10 * _X + 3, name="x")).loc["x"]
    assert b["coef"] == pytest.approx(a["coef"] / 10, rel=1e-6) and b["p_wald"] == pytest.approx(a["p_wald"], rel=1e-5)
    two = sv.cox_table(_T, _E, pd.DataFrame({"x": _X, "g": _G}))
    assert list(two.index) == ["x", "g"] and two.attrs["lr_dof"] == 2
    with pytest.raises(ValueError, match="event"):
        sv.cox_table(_T, np.zeros_like(_E), pd.Series(_X, name="x"))
    with pytest.raises(ValueError, match="x do not vary"):
        sv.cox_table(_T, _E, pd.Series(np.ones_like(_X), name="x"))
    with pytest.raises(ValueError, match="two groups"):
        sv.logrank_test(_T, _E, np.zeros_like(_G))
    with pytest.raises(ValueError, match="0 .censored. or 1"):
        sv.kaplan_meier(_T, _E * 2)
    with pytest.raises(ValueError, match="finite"):
        sv.kaplan_meier(np.r_[_T[:-1], np.nan], _E)
