"""Held-out metrics: regression, classification (discrimination and calibration), intervals and survival.

* Regression: mean absolute error and Spearman's rank correlation with its two-sided p value (scipy).
* Classification: ROC AUC, Brier score (Brier 1950), and the calibration slope and intercept by logistic
  recalibration (Cox 1958, Biometrika 45:562; Van Calster et al., J Clin Epidemiol 2016;74:167). The slope is
  ``b`` in ``logit P(y=1) = a + b * logit(p)``; the intercept ("calibration in the large") is ``a`` with the
  slope fixed at 1 (``logit(p)`` as an offset). Perfect calibration: slope 1, intercept 0; slope < 1 means
  over-confident predictions (too extreme), slope > 1 under-confident ones.
* Intervals: empirical coverage and mean width.
* Survival: Harrell's C-index with censoring (``sksurv.metrics.concordance_index_censored``).

:class:`Scorer` is what the hyperparameter search optimises: a name, a direction, the estimator method it
needs and the metric family it belongs to.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats
from scipy.special import expit
from sklearn.metrics import brier_score_loss, mean_absolute_error, roc_auc_score

log = logging.getLogger(__name__)

Kind = Literal["regression", "classification", "survival"]

#: Direction of each metric (True: higher is better), for the registry's promotion rule.
GREATER_IS_BETTER: dict[str, bool] = {
    "mae": False, "spearman": True, "auc": True, "brier": False, "c_index": True, "mean_width": False,
}

_EPS = 1e-8


def spearman(y_true: Any, y_pred: Any) -> tuple[float, float]:
    """Spearman's rho and its two-sided p value (NaN when either side is constant)."""
    a, b = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    res = stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``mae``, ``spearman`` and ``spearman_p``."""
    rho, p = spearman(y_true, y_pred)
    return {"mae": float(mean_absolute_error(y_true, y_pred)), "spearman": rho, "spearman_p": p}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _fit_logistic(y: np.ndarray, x: np.ndarray | None, offset: np.ndarray) -> np.ndarray:
    """Unpenalised maximum-likelihood logistic regression ``logit P = c0 + c1*x + offset`` by Newton-Raphson.

    Raises ``np.linalg.LinAlgError`` when it does not converge (e.g. perfect separation)."""
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    coef = np.zeros(design.shape[1])
    for _ in range(100):
        eta = design @ coef + offset
        mu = expit(eta)
        w = np.clip(mu * (1 - mu), 1e-12, None)
        hess = design.T @ (design * w[:, None])
        step = np.linalg.solve(hess, design.T @ (y - mu))
        coef = coef + step
        if np.max(np.abs(step)) < 1e-10:
            return coef
    raise np.linalg.LinAlgError("logistic recalibration did not converge")


def calibration_slope_intercept(y_true: Any, p_pred: Any) -> tuple[float, float]:
    """Calibration slope and intercept of predicted probabilities (logistic recalibration; see module doc).

    NaN when ``y_true`` has one class only or the predictions are constant (no slope to estimate).
    """
    y = np.asarray(y_true, dtype=float)
    lp = _logit(np.asarray(p_pred, dtype=float))
    if len(np.unique(y)) < 2 or np.ptp(lp) == 0:
        return float("nan"), float("nan")
    try:
        slope = float(_fit_logistic(y, lp, np.zeros_like(lp))[1])
        intercept = float(_fit_logistic(y, None, lp)[0])
    except np.linalg.LinAlgError:  # perfect separation: no finite slope
        log.warning("calibration slope undefined: the outcome is perfectly separated by the predictions")
        return float("nan"), float("nan")
    return slope, intercept


def classification_metrics(y_true: Any, p_pred: Any) -> dict[str, float]:
    """``auc``, ``brier``, ``calibration_slope``, ``calibration_intercept`` of P(y=1) predictions."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_pred, dtype=float)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    slope, intercept = calibration_slope_intercept(y, p)
    return {"auc": auc, "brier": float(brier_score_loss(y, p)), "calibration_slope": slope,
            "calibration_intercept": intercept}


def interval_metrics(y_true: Any, lower: Any, upper: Any) -> dict[str, float]:
    """``coverage`` (share of true values inside [lower, upper]) and ``mean_width``."""
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y_true, lower, upper))
    return {"coverage": float(np.mean((y >= lo) & (y <= hi))), "mean_width": float(np.mean(hi - lo))}


def survival_arrays(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """(event as bool, time) from a scikit-survival structured array (first field event, second time)."""
    arr = np.asarray(y)
    if arr.dtype.names is None or len(arr.dtype.names) != 2:
        raise ValueError("survival targets must be a structured array (event, time), e.g. sksurv.util.Surv")
    event_name, time_name = arr.dtype.names
    return arr[event_name].astype(bool), arr[time_name].astype(float)


def c_index(y: Any, risk: Any) -> float:
    """Harrell's C-index of risk scores (higher = earlier event) against censored (event, time) targets."""
    from sksurv.metrics import concordance_index_censored

    event, time = survival_arrays(y)
    if not event.any():
        return float("nan")
    return float(concordance_index_censored(event, time, np.asarray(risk, dtype=float))[0])


def survival_metrics(y: Any, risk: Any) -> dict[str, float]:
    """``c_index``."""
    return {"c_index": c_index(y, risk)}


FAMILY_METRICS: dict[Kind, Callable[[Any, Any], dict[str, float]]] = {
    "regression": regression_metrics,
    "classification": classification_metrics,
    "survival": survival_metrics,
}


@dataclass(frozen=True)
class Scorer:
    """What a search optimises: ``score(y_true, prediction)``, its direction, the estimator method giving the
    prediction (``predict_proba`` means the probability of the positive class) and the metric family."""

    name: str
    score: Callable[[Any, Any], float]
    greater_is_better: bool
    response: Literal["predict", "predict_proba"]
    kind: Kind

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.greater_is_better else "minimize"

    def __call__(self, y_true: Any, prediction: Any) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(self.score(y_true, prediction))


def _auc(y: np.ndarray, p: Any) -> float:
    """ROC AUC; NaN for a fold with one class (undefined: scikit-learn would warn and return NaN)."""
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


SCORERS: dict[str, Scorer] = {
    "spearman": Scorer("spearman", lambda y, p: spearman(y, p)[0], True, "predict", "regression"),
    "mae": Scorer("mae", lambda y, p: mean_absolute_error(y, p), False, "predict", "regression"),
    "auc": Scorer("auc", lambda y, p: _auc(np.asarray(y).astype(int), p), True, "predict_proba", "classification"),
    "brier": Scorer("brier", lambda y, p: brier_score_loss(np.asarray(y).astype(int), p), False, "predict_proba",
                    "classification"),
    "c_index": Scorer("c_index", c_index, True, "predict", "survival"),
}


def get_scorer(scorer: str | Scorer) -> Scorer:
    """A :class:`Scorer` by name (``spearman``, ``mae``, ``auc``, ``brier``, ``c_index``) or as given."""
    if isinstance(scorer, Scorer):
        return scorer
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; known: {', '.join(SCORERS)}")
    return SCORERS[scorer]
