"""Patient-specific Lyman-Kutcher-Burman NTCP: TD50 modulated by patient features.

    NTCP_i = Phi((gEUD_i - TD50_i) / (m TD50_i)),   log TD50_i = log TD50 + w . x_i

The LKB form is Lyman (Radiat Res Suppl 1985;8:S13) with the volume reduction of Kutcher & Burman
(IJROBP 1989;16:1623) and the parameterisation of Burman et al. (IJROBP 1991;21:123); gEUD after Niemierko
(Med Phys 1997;24:103). Letting each patient's tolerance dose depend on covariates is the "dose-modifying
factor" extension of the LKB model (e.g. Defraene et al., IJROBP 2012;82:1233; Tucker et al., IJROBP
2008;72:568). ``TD50``, ``m`` and ``w`` are fitted by penalised maximum likelihood (ridge penalty on ``w``,
the population parameters unpenalised), starting from the tabulated population values
(:func:`radiogenomics.radiobiology.ntcp_parameters`). A larger gEUD always gives a larger NTCP, so the
model is monotone in dose by construction.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from radiogenomics.errors import InputError
from radiogenomics.models.monotone_logistic import check_binary_target

log = logging.getLogger(__name__)

#: Slope m used as the starting value when no tabulated parameter set is given.
DEFAULT_START_M = 0.3


def _column_index(X: Any, geud_column: int | str) -> int:
    if isinstance(geud_column, str):
        names = list(X.columns) if isinstance(X, pd.DataFrame) else []
        if geud_column not in names:
            raise InputError(f"PatientLKB: gEUD column {geud_column!r} is not in the input",
                             fix="pass geud_column as the column name or position of the gEUD (Gy)")
        return names.index(geud_column)
    return int(geud_column)


class PatientLKB(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """LKB NTCP with a per-patient TD50, as a scikit-learn binary classifier.

    Parameters
    ----------
    geud_column:
        Position (or DataFrame column name) of the gEUD in Gy; every other column is a covariate ``x``
        (numeric, already imputed and preferably standardised: ``w`` is then per standard deviation).
    td50_gy, m:
        Starting values of the population TD50 (Gy) and slope m; ``None``: TD50 = median training gEUD,
        m = 0.3. Use the tabulated values (``ntcp_parameters(endpoint)``) where the endpoint has them.
    alpha:
        Ridge penalty ``alpha/2 ||w||^2`` added to the negative log-likelihood (summed over patients).
    fit_population:
        Fit TD50 and m (default) or keep them at the given values and fit ``w`` only.
    max_iter:
        Iterations of L-BFGS-B.

    Learnt: ``td50_gy_``, ``m_``, ``coef_`` (w, one per covariate), ``classes_``, ``n_features_in_``.
    """

    def __init__(self, geud_column: int | str = 0, td50_gy: float | None = None, m: float | None = None,
                 alpha: float = 1.0, fit_population: bool = True, max_iter: int = 500) -> None:
        self.geud_column = geud_column
        self.td50_gy = td50_gy
        self.m = m
        self.alpha = alpha
        self.fit_population = fit_population
        self.max_iter = max_iter

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _split(self, X: Any, reset: bool, array: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        index = _column_index(X, self.geud_column)
        if array is None:
            array = validate_data(self, X, reset=reset, dtype=np.float64)
        if not 0 <= index < array.shape[1]:
            raise InputError(f"PatientLKB: gEUD column position {index} is outside the {array.shape[1]} column(s)")
        geud = array[:, index]
        if (geud < 0).any():
            raise InputError("PatientLKB: gEUD must be >= 0 Gy", fix="pass the organ's gEUD in Gy")
        return geud, np.delete(array, index, axis=1)

    def fit(self, X: Any, y: Any) -> PatientLKB:
        array, self.classes_, target = check_binary_target(self, X, y)
        geud, x = self._split(X, reset=True, array=array)
        if self.alpha < 0:
            raise InputError(f"PatientLKB: alpha must be >= 0, got {self.alpha}")
        td50_0 = float(self.td50_gy) if self.td50_gy is not None else float(np.median(geud[geud > 0])
                                                                             if (geud > 0).any() else 1.0)
        m_0 = float(self.m) if self.m is not None else DEFAULT_START_M
        if td50_0 <= 0 or m_0 <= 0:
            raise InputError(f"PatientLKB: td50_gy and m must be > 0, got {td50_0} and {m_0}")
        k = x.shape[1]
        start = np.concatenate([[np.log(td50_0), np.log(m_0)], np.zeros(k)])
        fixed = None if self.fit_population else start[:2].copy()

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            full = theta if fixed is None else np.concatenate([fixed, theta])
            nll, grad = _penalised_nll(full, geud, x, target, float(self.alpha))
            return nll, (grad if fixed is None else grad[2:])

        x0 = start if fixed is None else start[2:]
        bounds = None if fixed is None else [(None, None)] * k
        if fixed is None:  # keep m in a sane range: 0.01 .. 5 (the LKB slope is rarely outside 0.05 .. 1)
            bounds = [(np.log(1e-2 * td50_0), np.log(1e2 * td50_0)), (np.log(0.01), np.log(5.0))] + [(None, None)] * k
        result = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": int(self.max_iter)})
        if not result.success:
            log.warning("PatientLKB: optimiser stopped early (%s)", result.message)
        theta = result.x if fixed is None else np.concatenate([fixed, result.x])
        self.td50_gy_, self.m_ = float(np.exp(theta[0])), float(np.exp(theta[1]))
        self.coef_ = theta[2:].copy()
        self.n_iter_ = int(result.nit)
        return self

    def td50_per_patient_gy(self, X: Any) -> np.ndarray:
        """Each patient's TD50 (Gy): ``TD50 exp(w . x)``."""
        check_is_fitted(self, "coef_")
        _, x = self._split(X, reset=False)
        return np.asarray(self.td50_gy_ * np.exp(x @ self.coef_))

    def decision_function(self, X: Any) -> np.ndarray:
        """The probit argument ``(gEUD - TD50_i) / (m TD50_i)``."""
        check_is_fitted(self, "coef_")
        geud, x = self._split(X, reset=False)
        td50 = self.td50_gy_ * np.exp(x @ self.coef_)
        return np.asarray((geud - td50) / (self.m_ * td50))

    def predict_proba(self, X: Any) -> np.ndarray:
        p = ndtr(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        positive = self.decision_function(X) > 0
        return np.asarray(self.classes_[positive.astype(int)])


def _penalised_nll(theta: np.ndarray, geud: np.ndarray, x: np.ndarray, y: np.ndarray,
                   alpha: float) -> tuple[float, np.ndarray]:
    """Negative log-likelihood of the patient LKB model plus ``alpha/2 ||w||^2``, and its gradient.

    theta = (log TD50, log m, w). With t_i = TD50 exp(w.x_i) and z_i = (g_i / t_i - 1) / m:
    dz/dlog t_i = -(g_i / t_i) / m, dz/dlog m = -z_i; d(-log L)/dz_i = -h(z_i) for an event, h(-z_i) otherwise,
    with the inverse Mills ratio h(z) = phi(z) / Phi(z) (computed in log space; y is 0/1).
    """
    log_td50, log_m, w = theta[0], theta[1], theta[2:]
    m = np.exp(log_m)
    ratio = geud / np.exp(log_td50 + x @ w)
    z = (ratio - 1.0) / m
    log_p, log_q = log_ndtr(z), log_ndtr(-z)
    nll = -float(np.sum(y * log_p + (1.0 - y) * log_q)) + 0.5 * alpha * float(w @ w)
    log_phi = -0.5 * z * z - 0.5 * np.log(2.0 * np.pi)
    event = y > 0.5
    dz = np.where(event, -np.exp(np.where(event, log_phi - log_p, 0.0)), np.exp(np.where(event, 0.0, log_phi - log_q)))
    d_log_t = dz * (-ratio / m)
    grad = np.concatenate([[d_log_t.sum(), float(np.sum(dz * -z))], x.T @ d_log_t + alpha * w])
    return nll, grad
