"""Small survival-analysis toolkit for the retrospective notebooks: Kaplan-Meier, log-rank, 1-covariate Cox.

Why not lifelines: lifelines 0.30.3 (the current release) pins ``pandas<3``, while this project runs on
pandas 3; installing it downgrades pandas. The three estimators the notebooks need are short, so they live
here, numpy/scipy only, and are checked in ``tests/test_notebooks.py`` against published reference values
(Freireich 6-MP leukaemia data, as analysed in R's ``survival`` package) and against lifelines 0.30.3
output recorded there.

* Kaplan-Meier (Kaplan & Meier, JASA 1958;53:457) with Greenwood's variance and the log(-log)
  ("exponential Greenwood") confidence interval (Kalbfleisch & Prentice 2002, section 1.4), the same
  interval lifelines and R (``conf.type="log-log"``) report.
* Log-rank test for k groups (Mantel, Cancer Chemother Rep 1966;50:163; Peto & Peto, JRSS A 1972;135:185):
  chi-square with k - 1 degrees of freedom from the hypergeometric variance.
* Cox proportional hazards with one covariate (Cox, JRSS B 1972;34:187), Efron's (JASA 1977;72:557) or
  Breslow's handling of tied event times, fitted by Newton-Raphson with step halving; Wald CI, Wald and
  likelihood-ratio tests.
* Harrell's concordance index (Harrell et al., JAMA 1982;247:2543) as lifelines defines it: higher score =
  longer survival.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["CoxResult", "LogRankResult", "concordance_index", "cox_ph", "kaplan_meier", "logrank_test",
           "survival_at"]


def _as_arrays(time: object, event: object) -> tuple[np.ndarray, np.ndarray]:
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


def kaplan_meier(time: object, event: object, *, alpha: float = 0.05) -> pd.DataFrame:
    """Kaplan-Meier estimate with a (1 - alpha) log(-log) pointwise confidence interval.

    Returns one row per distinct time (plus a first row at time 0 with survival 1): ``time``,
    ``n_at_risk`` (just before the time), ``n_events``, ``n_censored``, ``survival``, ``ci_lower``,
    ``ci_upper``. The survival column is a right-continuous step function of ``time``.
    """
    t, e = _as_arrays(time, event)
    times = np.unique(t)
    # counts per distinct time
    idx = np.searchsorted(times, t)
    d = np.bincount(idx, weights=e.astype(np.float64), minlength=times.size)
    c = np.bincount(idx, minlength=times.size) - d
    n = t.size - np.concatenate(([0.0], np.cumsum(d + c)[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 0, 1.0 - d / n, 1.0)
        surv = np.cumprod(factor)
        # Greenwood: sum d / (n (n - d)); undefined once everybody at risk has failed
        terms = np.where((n - d) > 0, d / (n * (n - d)), np.inf * (d > 0))
        green = np.cumsum(terms)
        z = stats.norm.ppf(1.0 - alpha / 2.0)
        log_surv = np.log(surv)
        se_loglog = np.sqrt(green) / np.abs(log_surv)
        loglog = np.log(-log_surv)
        lower = np.exp(-np.exp(loglog + z * se_loglog))
        upper = np.exp(-np.exp(loglog - z * se_loglog))
    lower = np.where(surv >= 1.0, 1.0, np.where(surv <= 0.0, 0.0, lower))
    upper = np.where(surv >= 1.0, 1.0, np.where(surv <= 0.0, 0.0, upper))
    frame = pd.DataFrame({"time": times, "n_at_risk": n.astype(int), "n_events": d.astype(int),
                          "n_censored": c.astype(int), "survival": surv, "ci_lower": lower, "ci_upper": upper})
    if times[0] > 0:
        first = pd.DataFrame({"time": [0.0], "n_at_risk": [t.size], "n_events": [0], "n_censored": [0],
                              "survival": [1.0], "ci_lower": [1.0], "ci_upper": [1.0]})
        frame = pd.concat([first, frame], ignore_index=True)
    return frame


def survival_at(km: pd.DataFrame, at: float, column: str = "survival") -> float:
    """Value of a Kaplan-Meier column (``survival``, ``ci_lower``, ``ci_upper``) at time ``at``.

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

    ``groups``, ``observed`` and ``expected`` give the events per group and their expectation under H0.
    """

    statistic: float
    dof: int
    p_value: float
    groups: tuple[object, ...]
    observed: tuple[float, ...]
    expected: tuple[float, ...]


def logrank_test(time: object, event: object, group: object) -> LogRankResult:
    """k-group log-rank test (Mantel 1966; Peto & Peto 1972), hypergeometric variance, k - 1 df."""
    t, e = _as_arrays(time, event)
    g = np.asarray(group, dtype=object).ravel()
    if g.size != t.size:
        raise ValueError("group must have one label per observation.")
    labels = tuple(pd.unique(g))
    if len(labels) < 2:
        raise ValueError("the log-rank test needs at least two groups.")
    member = np.stack([g == lab for lab in labels], axis=1).astype(np.float64)  # (n, k)
    event_times = np.unique(t[e])
    obs = np.zeros(len(labels))
    exp = np.zeros(len(labels))
    var = np.zeros((len(labels), len(labels)))
    for tj in event_times:
        at_risk = t >= tj
        n_k = member[at_risk].sum(axis=0)
        d_k = member[(t == tj) & e].sum(axis=0)
        n_tot, d_tot = n_k.sum(), d_k.sum()
        obs += d_k
        exp += d_tot * n_k / n_tot
        if n_tot > 1:
            frac = n_k / n_tot
            var += d_tot * (n_tot - d_tot) / (n_tot - 1) * (np.diag(frac) - np.outer(frac, frac))
    diff = (obs - exp)[:-1]
    v = var[:-1, :-1]
    stat = float(diff @ np.linalg.pinv(v) @ diff)
    dof = len(labels) - 1
    return LogRankResult(statistic=stat, dof=dof, p_value=float(stats.chi2.sf(stat, dof)), groups=labels,
                         observed=tuple(float(x) for x in obs), expected=tuple(float(x) for x in exp))


@dataclass(frozen=True)
class CoxResult:
    """One-covariate Cox model. ``coef`` is log HR per unit of the covariate; CIs are Wald intervals."""

    coef: float
    se: float
    hr: float
    hr_lower: float
    hr_upper: float
    z: float
    p_wald: float
    loglik: float
    loglik_null: float
    lr_statistic: float
    p_lr: float
    n: int
    n_events: int
    ties: str
    iterations: int
    ci_level: float


def _cox_terms(beta: float, x_sorted: np.ndarray, groups: list[tuple[int, np.ndarray]], efron: bool,
               ) -> tuple[float, float, float]:
    """Partial log-likelihood, score and information at ``beta`` (x centred, sorted by time)."""
    w = np.exp(beta * x_sorted)
    # risk-set sums: observations sorted by time ascending; risk set at t_j = indices >= first index of t_j
    s0 = np.cumsum(w[::-1])[::-1]
    s1 = np.cumsum((w * x_sorted)[::-1])[::-1]
    s2 = np.cumsum((w * x_sorted**2)[::-1])[::-1]
    loglik = score = info = 0.0
    for start, dead in groups:
        d = dead.size
        xd = x_sorted[dead]
        wd = w[dead]
        e0, e1, e2 = wd.sum(), (wd * xd).sum(), (wd * xd**2).sum()
        phi = np.arange(d) / d if efron else np.zeros(d)
        a0 = s0[start] - phi * e0
        a1 = s1[start] - phi * e1
        a2 = s2[start] - phi * e2
        loglik += beta * xd.sum() - np.log(a0).sum()
        score += xd.sum() - (a1 / a0).sum()
        info += (a2 / a0 - (a1 / a0) ** 2).sum()
    return float(loglik), float(score), float(info)


def cox_ph(time: object, event: object, covariate: object, *, ties: Literal["efron", "breslow"] = "efron",
           ci_level: float = 0.95, max_iter: int = 50, tol: float = 1e-10) -> CoxResult:
    """Fit a Cox proportional-hazards model with one covariate (Cox 1972; Efron 1977 ties by default).

    Newton-Raphson on the partial likelihood with step halving. The covariate is centred internally
    (the coefficient does not change). Raises ValueError without events or without covariate variation.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}.")
    t, e = _as_arrays(time, event)
    x = np.asarray(covariate, dtype=np.float64).ravel()
    if x.size != t.size or not np.isfinite(x).all():
        raise ValueError("covariate must be finite with one value per observation.")
    if not e.any():
        raise ValueError("the Cox model needs at least one event.")
    if np.ptp(x) == 0:
        raise ValueError("the covariate does not vary.")
    order = np.argsort(t, kind="stable")
    t, e, x = t[order], e[order], x[order] - x.mean()
    groups: list[tuple[int, np.ndarray]] = []
    for tj in np.unique(t[e]):
        start = int(np.searchsorted(t, tj, side="left"))
        groups.append((start, np.flatnonzero((t == tj) & e)))
    efron = ties == "efron"
    beta = 0.0
    ll0, score, info = _cox_terms(beta, x, groups, efron)
    ll = ll0
    iterations = 0
    converged = False
    while not converged:
        iterations += 1
        if iterations > max_iter:
            raise ValueError(f"the Cox fit did not converge in {max_iter} iterations (monotone likelihood?).")
        if info <= 0:
            raise ValueError("the Cox partial likelihood is flat: no information about the coefficient.")
        step = score / info
        new = beta + step
        ll_new, score_new, info_new = _cox_terms(new, x, groups, efron)
        halvings = 0
        while (not math.isfinite(ll_new) or ll_new < ll - 1e-12) and halvings < 30:
            step /= 2.0
            new = beta + step
            ll_new, score_new, info_new = _cox_terms(new, x, groups, efron)
            halvings += 1
        converged = abs(new - beta) < tol * (1.0 + abs(beta)) or abs(ll_new - ll) < tol
        beta, ll, score, info = new, ll_new, score_new, info_new
    se = 1.0 / math.sqrt(info)
    zq = float(stats.norm.ppf(0.5 + ci_level / 2.0))
    z = beta / se
    lr = max(2.0 * (ll - ll0), 0.0)
    return CoxResult(coef=beta, se=se, hr=math.exp(beta), hr_lower=math.exp(beta - zq * se),
                     hr_upper=math.exp(beta + zq * se), z=z, p_wald=float(2.0 * stats.norm.sf(abs(z))),
                     loglik=ll, loglik_null=ll0, lr_statistic=lr, p_lr=float(stats.chi2.sf(lr, 1)),
                     n=int(t.size), n_events=int(e.sum()), ties=ties, iterations=iterations, ci_level=ci_level)


def concordance_index(time: object, score: object, event: object) -> float:
    """Harrell's C: among comparable pairs, the fraction where the higher score has the longer time.

    Comparable: the shorter time is an event (ties in time count as comparable only when exactly one of the
    two is an event at that time, and then the event is the shorter). Ties in score count 1/2. Same
    convention as ``lifelines.utils.concordance_index`` (higher score = longer survival).
    """
    t, e = _as_arrays(time, event)
    s = np.asarray(score, dtype=np.float64).ravel()
    if s.size != t.size or not np.isfinite(s).all():
        raise ValueError("score must be finite with one value per observation.")
    num = 0.0
    den = 0.0
    for i in np.flatnonzero(e):
        # j outlives i: longer time, or same time but censored
        later = (t > t[i]) | ((t == t[i]) & ~e)
        den += later.sum()
        num += (s[later] > s[i]).sum() + 0.5 * (s[later] == s[i]).sum()
    if den == 0:
        raise ValueError("no comparable pairs.")
    return float(num / den)
