"""Glue between the notebooks and the survival libraries: tidy tables from scikit-survival and statsmodels.

No estimator is implemented here; every number comes from a library call:

* Kaplan-Meier with the log(-log) pointwise CI (Kalbfleisch & Prentice 2002, section 1.4; R's
  ``conf.type="log-log"``): ``sksurv.nonparametric.kaplan_meier_estimator(..., conf_type="log-log")``.
* Log-rank test for k groups (Mantel 1966; Peto & Peto 1972): ``sksurv.compare.compare_survival``.
* Cox proportional hazards (Cox 1972) with Efron's (1977) ties, hazard ratios with Wald CIs and the
  likelihood-ratio test: ``statsmodels.duration.hazard_regression.PHReg``.
* Harrell's C (Harrell et al., JAMA 1982;247:2543): ``sksurv.metrics.concordance_index_censored``.

lifelines is not used: 0.30.3 requires pandas < 3. ``tests/test_survival_library.py`` checks these calls
against the published R ``survival`` results on the Freireich 6-MP leukaemia data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_censored
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv
from statsmodels.duration.hazard_regression import PHReg

__all__ = ["LogRankResult", "concordance_index", "cox_table", "kaplan_meier", "logrank_test", "survival_at"]

#: the columns of :func:`cox_table`
COX_COLUMNS = ("coef", "se", "hr", "ci_lower", "ci_upper", "z", "p_wald")


def _as_arrays(time: object, event: object) -> tuple[np.ndarray, np.ndarray]:
    """Times (finite, >= 0) and events (0/1) as float and bool arrays; ValueError otherwise."""
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event, dtype=np.float64).ravel()
    if t.shape != e.shape:
        raise ValueError(f"time and event must have the same length, got {t.size} and {e.size}.")
    if t.size == 0:
        raise ValueError("no observations.")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("times must be finite and >= 0.")
    if not np.isin(e, (0.0, 1.0)).all():
        raise ValueError("event must be 0 (censored) or 1 (event).")
    return t, e.astype(bool)


def kaplan_meier(time: object, event: object, *, conf_level: float = 0.95) -> pd.DataFrame:
    """Kaplan-Meier table (scikit-survival) with the log(-log) pointwise CI.

    One row per distinct time, plus a first row at time 0 with survival 1: ``time``, ``n_at_risk`` (just
    before the time), ``n_events``, ``n_censored``, ``survival``, ``ci_lower``, ``ci_upper``. The survival
    column is a right-continuous step function of ``time``.
    """
    t, e = _as_arrays(time, event)
    times, surv, ci = kaplan_meier_estimator(e, t, conf_level=conf_level, conf_type="log-log")
    # the counts behind each step, for at-risk tables (bookkeeping, not estimation)
    step = np.searchsorted(times, t)
    n_events = np.bincount(step, weights=e, minlength=times.size).astype(int)
    n_censored = np.bincount(step, minlength=times.size) - n_events
    n_at_risk = t.size - np.searchsorted(np.sort(t), times, side="left")
    frame = pd.DataFrame({"time": times, "n_at_risk": n_at_risk, "n_events": n_events, "n_censored": n_censored,
                          "survival": surv, "ci_lower": ci[0], "ci_upper": ci[1]})
    if times[0] > 0:
        first = pd.DataFrame({"time": [0.0], "n_at_risk": [t.size], "n_events": [0], "n_censored": [0],
                              "survival": [1.0], "ci_lower": [1.0], "ci_upper": [1.0]})
        frame = pd.concat([first, frame], ignore_index=True)
    return frame


def survival_at(km: pd.DataFrame, at: float, column: str = "survival") -> float:
    """Value of a :func:`kaplan_meier` column (``survival``, ``ci_lower``, ``ci_upper``) at time ``at``.

    Right-continuous step function; NaN beyond the last observed time (the curve is not defined there).
    """
    times = km["time"].to_numpy()
    if at > times[-1]:
        return math.nan
    i = int(np.searchsorted(times, at, side="right")) - 1
    return float(km[column].to_numpy()[max(i, 0)])


@dataclass(frozen=True)
class LogRankResult:
    """Log-rank test: chi-square ``statistic`` on ``dof`` degrees of freedom and its ``p_value``.

    ``table`` is scikit-survival's per-group table (``counts``, ``observed``, ``expected``, ``statistic``).
    """

    statistic: float
    dof: int
    p_value: float
    table: pd.DataFrame


def logrank_test(time: object, event: object, group: object) -> LogRankResult:
    """k-group log-rank test (``sksurv.compare.compare_survival``), k - 1 degrees of freedom."""
    t, e = _as_arrays(time, event)
    g = np.asarray(group, dtype=object).ravel()
    if g.size != t.size:
        raise ValueError("group must have one label per observation.")
    labels = pd.unique(g)
    if len(labels) < 2:
        raise ValueError("the log-rank test needs at least two groups.")
    chisq, p_value, table, _cov = compare_survival(Surv.from_arrays(e, t), g, return_stats=True)
    return LogRankResult(statistic=float(chisq), dof=len(labels) - 1, p_value=float(p_value), table=table)


def cox_table(time: object, event: object, covariates: pd.DataFrame | pd.Series, *,
              ties: Literal["efron", "breslow"] = "efron", ci_level: float = 0.95) -> pd.DataFrame:
    """Cox proportional-hazards fit (statsmodels ``PHReg``) as a tidy table, one row per covariate.

    Columns :data:`COX_COLUMNS`: log hazard ratio ``coef`` and its ``se``, ``hr`` with its Wald CI at
    ``ci_level``, ``z`` and the Wald p-value. ``attrs`` holds ``n``, ``n_events``, ``ties``, ``ci_level``,
    ``loglik``, ``loglik_null`` and the likelihood-ratio test (``lr_statistic``, ``lr_dof``, ``p_lr``).
    ValueError without events, or when a covariate does not vary or is not finite.
    """
    t, e = _as_arrays(time, event)
    x = covariates.to_frame() if isinstance(covariates, pd.Series) else covariates
    values = x.to_numpy(dtype=np.float64)
    if values.shape[0] != t.size or not np.isfinite(values).all():
        raise ValueError("covariates must be finite with one row per observation.")
    if not e.any():
        raise ValueError("the Cox model needs at least one event.")
    constant = [str(c) for c, v in zip(x.columns, values.T, strict=True) if np.ptp(v) == 0]
    if constant:
        raise ValueError(f"covariate(s) {', '.join(constant)} do not vary.")
    fit = PHReg(t, values, status=e.astype(np.float64), ties=ties).fit()
    z_q = float(stats.norm.ppf(0.5 + ci_level / 2.0))
    coef, se = np.asarray(fit.params), np.asarray(fit.bse)
    table = pd.DataFrame({"coef": coef, "se": se, "hr": np.exp(coef), "ci_lower": np.exp(coef - z_q * se),
                          "ci_upper": np.exp(coef + z_q * se), "z": coef / se, "p_wald": np.asarray(fit.pvalues)},
                         index=pd.Index([str(c) for c in x.columns], name="covariate"))
    loglik_null = float(fit.model.loglike(np.zeros(coef.size)))
    lr = max(2.0 * (float(fit.llf) - loglik_null), 0.0)
    table.attrs.update(n=int(t.size), n_events=int(e.sum()), ties=ties, ci_level=ci_level, loglik=float(fit.llf),
                       loglik_null=loglik_null, lr_statistic=lr, lr_dof=int(coef.size),
                       p_lr=float(stats.chi2.sf(lr, coef.size)))
    return table


def concordance_index(time: object, event: object, risk_score: object) -> float:
    """Harrell's C (``sksurv.metrics.concordance_index_censored``): a higher ``risk_score`` = an earlier event.

    Pass ``-x`` for a protective variable ``x`` (such as GARD: higher GARD, longer local control).
    """
    t, e = _as_arrays(time, event)
    s = np.asarray(risk_score, dtype=np.float64).ravel()
    if s.size != t.size or not np.isfinite(s).all():
        raise ValueError("risk_score must be finite with one value per observation.")
    return float(concordance_index_censored(e, t, s)[0])
