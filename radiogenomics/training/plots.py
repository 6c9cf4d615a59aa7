"""Diagnostic figures of held-out predictions (matplotlib, Agg backend; logged as MLflow artifacts).

Each function returns a new ``Figure`` (the caller closes it): calibration curve (quantile bins, sklearn's
``calibration_curve``), ROC curve, predicted vs true (with prediction intervals when given), Kaplan-Meier
curves of local control by predicted group (``sksurv.nonparametric.kaplan_meier_estimator``, groups split at
the median predicted risk) and a feature-importance bar chart.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def calibration_figure(y_true: Any, p_pred: Any, *, n_bins: int = 10, title: str = "Calibration") -> Figure:
    """Observed event rate against mean predicted probability per quantile bin, with the identity line."""
    from sklearn.calibration import calibration_curve

    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_pred, dtype=float)
    bins = max(2, min(n_bins, len(y) // 5))
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    fig, ax = _figure(title, "mean predicted probability", "observed proportion")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    return fig


def roc_figure(y_true: Any, p_pred: Any, *, title: str = "ROC") -> Figure:
    """ROC curve with its AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y_true).astype(int)
    fpr, tpr, _ = roc_curve(y, p_pred)
    fig, ax = _figure(title, "1 - specificity", "sensitivity")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p_pred):.3f}")
    ax.legend(loc="lower right")
    return fig


def predicted_vs_true_figure(y_true: Any, y_pred: Any, *, lower: Any = None, upper: Any = None,
                             title: str = "Predicted vs true") -> Figure:
    """Scatter of predictions against true values, with interval bars when ``lower``/``upper`` are given."""
    y = np.asarray(y_true, dtype=float)
    pred = np.asarray(y_pred, dtype=float)
    fig, ax = _figure(title, "true", "predicted")
    if lower is not None and upper is not None:
        err = np.vstack([pred - np.asarray(lower, dtype=float), np.asarray(upper, dtype=float) - pred])
        ax.errorbar(y, pred, yerr=np.clip(err, 0, None), fmt="none", ecolor="lightgrey", lw=0.8)
    ax.scatter(y, pred, s=12)
    finite = np.concatenate([y[np.isfinite(y)], pred[np.isfinite(pred)]])
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=1)
    return fig


def km_by_group_figure(event: Any, time_months: Any, risk: Any, *, title: str = "Local control by predicted group",
                       labels: tuple[str, str] = ("low predicted risk", "high predicted risk")) -> Figure:
    """Kaplan-Meier local-control curves of the patients below and above the median predicted risk."""
    from sksurv.nonparametric import kaplan_meier_estimator

    ev = np.asarray(event).astype(bool)
    t = np.asarray(time_months, dtype=float)
    r = np.asarray(risk, dtype=float)
    high = r > np.median(r)
    fig, ax = _figure(title, "months", "local control probability")
    for mask, label in ((~high, labels[0]), (high, labels[1])):
        if mask.sum() == 0:
            continue
        times, surv = kaplan_meier_estimator(ev[mask], t[mask])
        ax.step(times, surv, where="post", label=f"{label} (n={int(mask.sum())})")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    return fig


def feature_importance_figure(importance: pd.Series, *, top: int = 20, title: str = "Feature importance") -> Figure:
    """Horizontal bars of the ``top`` largest absolute importances."""
    values = importance.abs().sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(values) + 1.5), dpi=100)
    ax.barh([str(i) for i in values.index], values.to_numpy(dtype=float))
    ax.set_title(title)
    ax.set_xlabel("|importance|")
    fig.tight_layout()
    return fig
