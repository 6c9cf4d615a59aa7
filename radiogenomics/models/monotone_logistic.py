"""L2-penalised logistic regression whose chosen coefficients are constrained to be >= 0.

Used by the toxicity model so that more dose never lowers the predicted probability: the coefficients of
the dose metrics (mean dose, gEUD, D_x, V_x, all non-decreasing when a plan is scaled up) are bounded below
by 0. The objective is scikit-learn's ``LogisticRegression`` one, ``C sum_i logloss_i + ||w||^2 / 2``
(intercept unpenalised), minimised by L-BFGS-B with bounds (Byrd et al., SIAM J Sci Comput 1995;16:1190).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)


def check_binary_target(estimator: BaseEstimator, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, classes, 0/1 target)`` for a binary classifier's ``fit`` (scikit-learn's messages for bad ``y``)."""
    x, y_arr = validate_data(estimator, X, y, reset=True, dtype=np.float64)
    check_classification_targets(y_arr)
    y_type = type_of_target(y_arr, input_name="y")
    if y_type != "binary" and np.unique(y_arr).size > 1:
        raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
    classes = np.unique(y_arr)
    if classes.size != 2:
        raise InputError(f"{type(estimator).__name__} needs two outcome classes, got {classes.size} class: "
                         f"{classes.tolist()}", fix="pass binary outcomes (grade >= 2 -> 1) with both values")
    return x, classes, (y_arr == classes[1]).astype(np.float64)


class MonotoneLogisticRegression(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Binary logistic regression, L2 penalty, coefficients of ``increasing`` columns >= 0.

    Parameters
    ----------
    C:
        Inverse penalty strength, as in ``sklearn.linear_model.LogisticRegression``.
    increasing:
        Column names (DataFrame input) whose coefficients must be >= 0; names absent from the input are
        ignored.
    max_iter:
        Iterations of L-BFGS-B.

    Learnt: ``coef_`` (1, n_features), ``intercept_`` (1,), ``classes_``, ``n_features_in_``.
    """

    def __init__(self, C: float = 1.0, increasing: Sequence[str] = (), max_iter: int = 1000) -> None:
        self.C = C
        self.increasing = increasing
        self.max_iter = max_iter

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: Any, y: Any) -> MonotoneLogisticRegression:
        if not self.C > 0:
            raise InputError(f"MonotoneLogisticRegression: C must be > 0, got {self.C}")
        x, self.classes_, t = check_binary_target(self, X, y)
        names = [str(c) for c in getattr(self, "feature_names_in_", [])]
        bounded = set(self.increasing)
        bounds = [(None, None)] + [(0.0, None) if n in bounded else (None, None) for n in names or [""] * x.shape[1]]
        c = float(self.C)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            eta = theta[0] + x @ theta[1:]
            loss = -float(np.sum(t * log_expit(eta) + (1.0 - t) * log_expit(-eta)))
            r = expit(eta) - t
            grad = np.concatenate([[c * r.sum()], c * (x.T @ r) + theta[1:]])
            return c * loss + 0.5 * float(theta[1:] @ theta[1:]), grad

        result = minimize(objective, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": int(self.max_iter)})
        if not result.success:
            log.warning("MonotoneLogisticRegression: optimiser stopped early (%s)", result.message)
        self.intercept_ = result.x[:1].copy()
        self.coef_ = result.x[1:][None, :].copy()
        self.n_iter_ = np.asarray([result.nit])
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        x = validate_data(self, X, reset=False, dtype=np.float64)
        return np.asarray(self.intercept_[0] + x @ self.coef_[0])

    def predict_proba(self, X: Any) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        positive = self.decision_function(X) > 0
        return np.asarray(self.classes_[positive.astype(int)])
