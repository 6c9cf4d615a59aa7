"""Local-control survival: a ridge-penalised Cox model on GARD and covariates, with its held-out metrics.

* :func:`lc_target`: the scikit-survival label (``outcome.lc_event``, ``outcome.lc_months``).
* :class:`GARDFeature`: adds ``genomic.gard`` = GARD of the delivered regimen (Scott et al., Lancet Oncol
  2017;18:202) from the measured RSI or from an in-fold fitted RSI estimator.
* :class:`LocalControlCox`: GARD + covariates -> Cox proportional hazards (Cox, J R Stat Soc B 1972;34:187),
  Efron ties, ridge penalty (scikit-survival ``CoxPHSurvivalAnalysis``).
* :func:`survival_metrics`: Harrell's C-index, cumulative/dynamic time-dependent AUC (Uno et al., JASA
  2007;102:1387; Hung & Chiang, Can J Stat 2010;38:8) and the integrated Brier score (Graf et al., Stat Med
  1999;18:2529) at times inside follow-up (:func:`evaluation_times`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from sksurv.base import SurvivalAnalysisMixin
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored, cumulative_dynamic_auc, integrated_brier_score
from sksurv.util import Surv

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.models.radiosensitivity import RSI_COLUMN, tabular_steps
from radiogenomics.radiobiology import DEFAULT_BETA_PER_GY2, gard

log = logging.getLogger(__name__)

LC_EVENT = "outcome.lc_event"
LC_MONTHS = "outcome.lc_months"
TOTAL_DOSE = "clinical.total_dose_gy"
N_FRACTIONS = "clinical.n_fractions"
#: Column :class:`GARDFeature` adds (group ``genomic``: a genomically adjusted dose).
GARD_COLUMN = naming.genomic_column("gard")
#: Default covariates next to GARD: HPV status, T stage and age (established H&N local-control factors,
#: e.g. Ang et al., N Engl J Med 2010;363:24), GTV volume (Dubben et al., Radiother Oncol 1998;47:167),
#: GTV FDG uptake and FMISO hypoxia (Zips et al., Radiother Oncol 2012;105:21).
DEFAULT_LC_COVARIATES: tuple[str, ...] = (
    "clinical.hpv", "clinical.t_stage", "clinical.age_years", "ct.gtv.original_shape_MeshVolume",
    "pet_fdg.gtv.original_firstorder_Mean", "pet_fmiso.gtv.original_firstorder_Mean",
)


def _patient(frame: pd.DataFrame, row: int) -> str | None:
    return str(frame[naming.PATIENT_ID].iloc[row]) if naming.PATIENT_ID in frame else None


def lc_target(table: pd.DataFrame) -> np.ndarray:
    """scikit-survival structured array (``event`` bool, ``time`` months) of local control.

    InputError (naming the first bad patient) when a column is absent, an event is not 0/1, or a time is
    missing or negative.
    """
    for column in (LC_EVENT, LC_MONTHS):
        if column not in table:
            raise InputError(f"the table has no {column} column", fix="extract features with the outcome columns")
    event = pd.to_numeric(table[LC_EVENT], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    time = pd.to_numeric(table[LC_MONTHS], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_event = ~np.isin(event, (0.0, 1.0))
    bad_time = ~np.isfinite(time) | (time < 0)
    for bad, column, fix in ((bad_event, LC_EVENT, "lc_event must be 0 (censored) or 1 (local failure)"),
                             (bad_time, LC_MONTHS, "lc_months must be a time >= 0 in months")):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"{column} is {table[column].iloc[row]!r} ({int(bad.sum())} bad row(s))",
                             patient_id=_patient(table, row), fix=fix)
    return Surv.from_arrays(event=event.astype(bool), time=time, name_event="event", name_time="time")


class GARDFeature(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Append ``genomic.gard``: GARD of the delivered regimen (Scott et al., Lancet Oncol 2017).

    ``GARD = n d (alpha + beta d)``, ``alpha = -ln(RSI)/2 - 2 beta`` (:func:`radiogenomics.radiobiology.gard`),
    with ``clinical.total_dose_gy`` and ``clinical.n_fractions``.

    Parameters
    ----------
    rsi_column:
        Column holding the RSI (``genomic.rsi`` or a predicted-RSI column) when ``rsi_estimator`` is None.
    rsi_estimator:
        Optional RSI model (e.g. :class:`~radiogenomics.models.radiosensitivity.RSISurrogate`), cloned and
        fitted on the rows given to ``fit`` (a training fold); its ``predict(X)`` gives the RSI.
    beta_per_gy2:
        beta of the RSI -> alpha conversion (0.05 Gy^-2, Scott 2017).

    An RSI outside the LQ domain ((0, 1) and below exp(-4 beta), i.e. alpha > 0) or missing gives NaN GARD:
    the downstream :class:`~radiogenomics.features.preprocessing.GroupImputer` fills it with the training
    median and flags it in ``genomic.gard__missing``. A missing delivered regimen raises InputError.
    """

    def __init__(self, rsi_column: str = RSI_COLUMN, rsi_estimator: Any = None,
                 beta_per_gy2: float = DEFAULT_BETA_PER_GY2) -> None:
        self.rsi_column = rsi_column
        self.rsi_estimator = rsi_estimator
        self.beta_per_gy2 = beta_per_gy2

    def fit(self, X: Any, y: Any = None) -> GARDFeature:
        frame = _table(X, "GARDFeature")
        if self.rsi_estimator is not None:
            self.rsi_estimator_ = clone(self.rsi_estimator).fit(frame)
        elif self.rsi_column not in frame:
            raise InputError(f"the table has no {self.rsi_column} column",
                             fix="give rsi_column (measured or predicted RSI) or an rsi_estimator")
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        return self

    def rsi(self, X: Any) -> np.ndarray:
        """RSI per row used for GARD."""
        check_is_fitted(self, "n_features_in_")
        frame = _table(X, "GARDFeature")
        if self.rsi_estimator is not None:
            return np.asarray(self.rsi_estimator_.predict(frame), dtype=np.float64)
        if self.rsi_column not in frame:
            raise InputError(f"the table has no {self.rsi_column} column", fix="add the RSI column used in fit")
        return pd.to_numeric(frame[self.rsi_column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def transform(self, X: Any) -> pd.DataFrame:
        frame = _table(X, "GARDFeature")
        regimen = []
        for column in (TOTAL_DOSE, N_FRACTIONS):
            if column not in frame:
                raise InputError(f"the table has no {column} column", fix="add the delivered regimen")
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isfinite(values) | (values <= 0)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InputError(f"{column} is {frame[column].iloc[row]!r}: GARD needs the delivered regimen",
                                 patient_id=_patient(frame, row), fix=f"fill {column} (> 0) in patients.csv")
            regimen.append(values)
        rsi = self.rsi(frame)
        value = np.asarray(gard(rsi, regimen[0], regimen[1], self.beta_per_gy2, invalid="nan"), dtype=np.float64)
        n_bad = int((~np.isfinite(value)).sum())
        if n_bad:
            log.info("GARDFeature: %d row(s) with RSI missing or outside the LQ domain get NaN GARD", n_bad)
        out = frame.copy()
        out[GARD_COLUMN] = value
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        names = [str(c) for c in (self.feature_names_in_ if input_features is None else input_features)]
        return np.asarray(names + [GARD_COLUMN], dtype=object)


def _table(X: Any, who: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise InputError(f"{who} needs the feature table as a pandas DataFrame",
                         fix="pass read_feature_table(path)")
    return X


class LocalControlCox(SurvivalAnalysisMixin, BaseEstimator):  # type: ignore[misc]
    """Cox model of local control on GARD and covariates (ridge penalty, Efron ties).

    Parameters
    ----------
    covariates:
        Columns next to ``genomic.gard`` (names or ``fnmatch`` patterns; :data:`DEFAULT_LC_COVARIATES`).
        Text columns are one-hot encoded, numeric ones imputed (training median + ``__missing`` flag) and
        standardised inside the pipeline. ``outcome.*`` columns are never used.
    rsi_column, rsi_estimator, beta_per_gy2:
        Passed to :class:`GARDFeature`.
    alpha:
        Ridge penalty of ``CoxPHSurvivalAnalysis`` (on standardised covariates); chosen a priori, not tuned.
    random_state:
        Unused (the fit is deterministic); kept for the package's estimator convention.

    ``fit(X, y=None)``: ``y`` defaults to :func:`lc_target` of ``X``. ``predict`` gives the risk score
    (higher = earlier local failure); ``score`` is Harrell's C-index. Learnt: ``pipeline_``.
    """

    def __init__(self, covariates: Sequence[str] = DEFAULT_LC_COVARIATES, *, rsi_column: str = RSI_COLUMN,
                 rsi_estimator: Any = None, beta_per_gy2: float = DEFAULT_BETA_PER_GY2, alpha: float = 1.0,
                 random_state: int | None = None) -> None:
        self.covariates = covariates
        self.rsi_column = rsi_column
        self.rsi_estimator = rsi_estimator
        self.beta_per_gy2 = beta_per_gy2
        self.alpha = alpha
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> LocalControlCox:
        frame = _table(X, "LocalControlCox")
        target = lc_target(frame) if y is None else y
        names = np.asarray(target).dtype.names or ()
        if names and not np.asarray(target[names[0]], dtype=bool).any():
            raise InputError(f"no local-failure event among the {len(frame)} training patients: a Cox model "
                             "cannot be fitted", fix="add patients with observed local failures, or disable "
                             "tasks.survival in the training config")
        include = (GARD_COLUMN,) + tuple(self.covariates)
        steps = [("gard", GARDFeature(self.rsi_column, self.rsi_estimator, self.beta_per_gy2))]
        steps += tabular_steps(groups=(), include=include, exclude=("outcome",))
        steps.append(("cox", CoxPHSurvivalAnalysis(alpha=self.alpha, ties="efron")))
        self.pipeline_ = Pipeline(steps).fit(frame, target)
        self.n_features_in_ = frame.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Risk score (linear predictor) per row; higher means earlier local failure."""
        check_is_fitted(self, "pipeline_")
        return np.asarray(self.pipeline_.predict(_table(X, "LocalControlCox")), dtype=np.float64)

    def predict_survival_function(self, X: Any, return_array: bool = False) -> Any:
        """Local-control probability over time per row (Breslow baseline; scikit-survival step functions)."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict_survival_function(_table(X, "LocalControlCox"), return_array=return_array)

    @property
    def unique_times_(self) -> np.ndarray:
        return np.asarray(self.pipeline_[-1].unique_times_)

    def coefficients(self) -> pd.Series:
        """Cox log hazard ratios per (standardised / one-hot) input column."""
        check_is_fitted(self, "pipeline_")
        names = self.pipeline_[:-1].get_feature_names_out()
        return pd.Series(self.pipeline_[-1].coef_, index=[str(n) for n in names], name="log_hazard_ratio")


def evaluation_times(y_train: np.ndarray, y_test: np.ndarray,
                     percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80)) -> np.ndarray:
    """Times (months) for time-dependent AUC and Brier score: percentiles of the test follow-up times.

    Kept strictly inside the test follow-up range and below the last training time (where the censoring
    distribution, estimated on the training rows, is defined; scikit-survival's requirement).
    """
    test_time, train_time = y_test["time"], y_train["time"]
    times = np.unique(np.percentile(test_time, percentiles))
    upper = min(float(test_time.max()), float(train_time.max()))
    times = times[(times > float(test_time.min())) & (times < upper)]
    if times.size == 0:
        raise InputError("no evaluation time inside the follow-up of both training and test rows",
                         fix="use more patients per fold or give times explicitly")
    return times


def survival_metrics(estimator: Any, X_test: Any, y_train: np.ndarray, y_test: np.ndarray,
                     times: Sequence[float] | None = None) -> dict[str, Any]:
    """Held-out metrics of a fitted survival estimator.

    Returns ``c_index`` (Harrell, ``concordance_index_censored``), ``auc_times`` / ``auc`` / ``mean_auc``
    (``cumulative_dynamic_auc``, censoring weights from ``y_train``) and ``ibs`` (``integrated_brier_score``)
    at ``times`` (default :func:`evaluation_times`).
    """
    grid = evaluation_times(y_train, y_test) if times is None else np.asarray(times, dtype=np.float64)
    risk = np.asarray(estimator.predict(X_test), dtype=np.float64)
    c_index = concordance_index_censored(y_test["event"], y_test["time"], risk)[0]
    auc, mean_auc = cumulative_dynamic_auc(y_train, y_test, risk, grid)
    surv = estimator.predict_survival_function(X_test)
    probs = np.vstack([fn(grid) for fn in surv])
    ibs = integrated_brier_score(y_train, y_test, probs, grid) if grid.size > 1 else float("nan")
    return {"c_index": float(c_index), "auc_times": grid, "auc": np.asarray(auc, dtype=np.float64),
            "mean_auc": float(mean_auc), "ibs": float(ibs)}
