"""Radiosensitivity (RSI surrogate): expression-derived RSI predicted from imaging and clinical features.

:class:`RSISurrogate` learns the measured RSI (``genomic.rsi``, the 10-gene rank model of Eschrich et al.,
Int J Radiat Oncol Biol Phys 2009;75:489) from the imaging, deep, clinical and availability columns of the
feature table, so that a patient without expression data still gets an RSI, with a conformal 90 % prediction
interval (CV+, Barber et al., Ann Stat 2021;49:486; MAPIE 1.6 ``CrossConformalRegressor(method="plus")``).

Where the table has a measured RSI at prediction time, ``measured="use"`` returns it (see
:meth:`RSISurrogate.predict_interval` for its interval); ``measured="ignore"`` always predicts from imaging.
See ``docs/models.md`` ("Radiosensitivity (RSI surrogate)") for the held-out numbers behind the defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_selection import SelectKBest, f_regression
from sklearn.linear_model import ElasticNetCV, RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from radiogenomics.errors import InputError
from radiogenomics.features.preprocessing import FeatureScaler, FeatureSelector, GroupImputer
from radiogenomics.features.schema import AVAILABILITY, CLINICAL, DEEP, IMAGING
from radiogenomics.models.rsi_measured import (  # noqa: F401  (re-exported: the names' historical home)
    DEFAULT_CLIP,
    RSI_COLUMN,
    SOURCE_FUSED,
    SOURCE_MEASURED,
    SOURCE_PREDICTED,
    MeasuredRSIMixin,
    Predicted,
)

log = logging.getLogger(__name__)

#: Input groups of the surrogate: never genomic, dose, treatment or outcome.
RSI_INPUT_GROUPS: tuple[str, ...] = (IMAGING, DEEP, CLINICAL, AVAILABILITY)
#: Groups an RSI model never takes as inputs: the label (genomic), the plan, the treatment, the outcomes.
RSI_EXCLUDED_GROUPS: tuple[str, ...] = ("genomic", "dose", "treatment", "outcome")

Regressor = Literal["elasticnet", "hgb", "ridge"]


def text_encoder() -> ColumnTransformer:
    """One-hot encode the text columns (``clinical.sex``, ``clinical.hpv``, ...), pass numeric ones through.

    Categories unseen in training encode as all zeros (``handle_unknown="ignore"``); pandas output.
    """
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    return ColumnTransformer([("text", onehot, make_column_selector(dtype_exclude="number"))],
                             remainder="passthrough", verbose_feature_names_out=False).set_output(transform="pandas")


def tabular_steps(groups: Sequence[str], include: Sequence[str] = (), exclude: Sequence[str] = (),
                  ) -> list[tuple[str, Any]]:
    """Fold-fitted preprocessing: select the columns, impute (with indicators), scale, one-hot encode text."""
    return [("select", FeatureSelector(groups=tuple(groups), include=tuple(include), exclude=tuple(exclude))),
            ("impute", GroupImputer()),
            ("scale", FeatureScaler()),
            ("encode", text_encoder())]


def _regressor(kind: Regressor | BaseEstimator, random_state: int | None) -> Any:
    if isinstance(kind, BaseEstimator):
        return clone(kind)
    if kind == "elasticnet":
        return ElasticNetCV(l1_ratio=(0.5, 0.9), alphas=20, cv=KFold(5, shuffle=True, random_state=random_state),
                            max_iter=2000, tol=1e-3, random_state=random_state)
    if kind == "hgb":
        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=8, min_samples_leaf=10,
                                             l2_regularization=1.0, random_state=random_state)
    if kind == "ridge":
        return RidgeCV(alphas=np.logspace(-2, 4, 25))
    raise InputError(f"unknown RSI regressor {kind!r}", fix="use 'elasticnet', 'hgb', 'ridge' or an estimator")


def rsi_pipeline(regressor: Regressor | BaseEstimator = "elasticnet", *, groups: Sequence[str] = RSI_INPUT_GROUPS,
                 include: Sequence[str] = (), exclude: Sequence[str] = (), n_screen: int | None = 100,
                 random_state: int | None = None) -> Pipeline:
    """The point regressor: preprocessing, univariate screening (top ``n_screen`` by F-test), regressor.

    Everything is fitted on the rows given to ``fit`` (a training fold), never on held-out patients.
    """
    steps = tabular_steps(groups, include, exclude)
    if n_screen:
        steps.append(("screen", SelectKBest(f_regression, k=n_screen)))
    steps.append(("regress", _regressor(regressor, random_state)))
    return Pipeline(steps)


class RSISurrogate(MeasuredRSIMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """RSI from imaging + clinical features, with conformal prediction intervals.

    Parameters
    ----------
    regressor:
        ``"elasticnet"`` (default: ``ElasticNetCV`` after in-fold screening), ``"hgb"``
        (``HistGradientBoostingRegressor``), ``"ridge"`` (``RidgeCV``) or any scikit-learn regressor.
    groups, include, exclude:
        Input columns (:class:`~radiogenomics.features.preprocessing.FeatureSelector`); ``genomic``,
        ``dose``, ``treatment`` and ``outcome`` columns are always excluded.
    n_screen:
        Features kept by univariate F-test screening inside each fit (``None``: no screening).
    confidence_level:
        Coverage of :meth:`predict_interval` (0.9: 90 % intervals).
    cv:
        Folds of the CV+ conformal procedure (Barber et al. 2021); each fold refits the whole pipeline.
    measured:
        ``"use"``: rows with a measured ``genomic.rsi`` in ``X`` get that value; ``"fuse"``: they get the
        precision-weighted mean of the measured value and the imaging prediction; ``"ignore"``: always predict.
    measured_sd:
        Assay noise of a measured RSI (SD, RSI units) used for the interval of a measured value:
        ``measured +- z * measured_sd``. 0.05 is an assumption of this package (unverified), not a published
        reproducibility figure; set it from replicate assays where available.
    clip:
        Every returned RSI and bound is clipped into this range inside (0, 1) (RSI is a surviving fraction).
    random_state:
        Seed of the conformal folds and the regressor.

    ``fit(X, y=None)`` takes the whole feature table; ``y`` defaults to ``X["genomic.rsi"]``. Rows whose ``y``
    is NaN (no expression data) are dropped before fitting (logged). Learnt: ``conformal_`` (the fitted MAPIE
    ``CrossConformalRegressor``), ``n_train_``, ``feature_names_in_``. The measured-RSI combination and the
    predict methods come from :class:`~radiogenomics.models.rsi_measured.MeasuredRSIMixin`.
    """

    _fitted_attribute = "conformal_"

    def __init__(self, regressor: Regressor | BaseEstimator = "elasticnet", *,
                 groups: Sequence[str] = RSI_INPUT_GROUPS, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 n_screen: int | None = 100, confidence_level: float = 0.9, cv: int = 5,
                 measured: Literal["use", "fuse", "ignore"] = "use", measured_sd: float = 0.05,
                 clip: tuple[float, float] = DEFAULT_CLIP, random_state: int | None = None) -> None:
        self.regressor = regressor
        self.groups = groups
        self.include = include
        self.exclude = exclude
        self.n_screen = n_screen
        self.confidence_level = confidence_level
        self.cv = cv
        self.measured = measured
        self.measured_sd = measured_sd
        self.clip = clip
        self.random_state = random_state

    def _frame(self, X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise InputError("RSISurrogate needs the feature table as a pandas DataFrame",
                             fix="pass read_feature_table(path) (namespaced columns select the inputs)")
        return X

    def _pipeline(self) -> Pipeline:
        exclude = tuple(self.exclude) + RSI_EXCLUDED_GROUPS
        return rsi_pipeline(self.regressor, groups=self.groups, include=self.include, exclude=exclude,
                            n_screen=self.n_screen, random_state=self.random_state)

    def fit(self, X: Any, y: Any = None) -> RSISurrogate:
        from mapie.regression import CrossConformalRegressor

        frame, target, keep = self._labelled(X, y)
        n_min = max(2 * int(self.cv), 10)
        if int(keep.sum()) < n_min:
            raise InputError(f"only {int(keep.sum())} patient(s) with a measured RSI; need >= {n_min} to fit",
                             fix="add patients with expression data (genomic.rsi) or lower cv")
        train = frame.loc[keep]
        folds = KFold(int(self.cv), shuffle=True, random_state=self.random_state)
        conformal = CrossConformalRegressor(self._pipeline(), confidence_level=self.confidence_level,
                                            method="plus", cv=folds, random_state=self.random_state)
        conformal.fit_conformalize(train, target[keep])
        self.conformal_ = conformal
        self.n_train_ = int(keep.sum())
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        return self

    def predict_imaging(self, X: Any) -> np.ndarray:
        """RSI predicted from the inputs alone (CV+ fold models averaged), clipped into ``clip``."""
        check_is_fitted(self, "conformal_")
        return np.clip(self.conformal_.predict(self._frame(X)), *self.clip)

    def _predicted(self, frame: pd.DataFrame, **options: Any) -> Predicted:
        """Unclipped imaging point prediction and (n, 2) CV+ interval (marginal coverage >= 1 - 2 alpha in
        theory, about 1 - alpha in practice; Barber et al. 2021)."""
        if options:
            raise TypeError(f"RSISurrogate takes no prediction options, got {sorted(options)}")
        point, intervals = self.conformal_.predict_interval(frame)
        return Predicted(np.asarray(point, dtype=np.float64), np.asarray(intervals, dtype=np.float64)[:, :, 0],
                         np.full(len(frame), SOURCE_PREDICTED, dtype=object))
