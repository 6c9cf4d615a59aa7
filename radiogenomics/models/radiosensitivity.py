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
from scipy.stats import norm
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
from radiogenomics.features import naming
from radiogenomics.features.preprocessing import FeatureScaler, FeatureSelector, GroupImputer
from radiogenomics.features.schema import AVAILABILITY, CLINICAL, DEEP, IMAGING

log = logging.getLogger(__name__)

#: The label column: measured (expression-derived) RSI.
RSI_COLUMN = naming.genomic_column("rsi")
#: Input groups of the surrogate: never genomic, dose, treatment or outcome.
RSI_INPUT_GROUPS: tuple[str, ...] = (IMAGING, DEEP, CLINICAL, AVAILABILITY)
#: ``predict_source`` values.
SOURCE_MEASURED = "measured"
SOURCE_PREDICTED = "predicted"
SOURCE_FUSED = "fused"
#: Default clipping range of every returned RSI and interval bound: RSI is a surviving fraction in (0, 1).
DEFAULT_CLIP: tuple[float, float] = (0.001, 0.999)

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


class RSISurrogate(RegressorMixin, BaseEstimator):  # type: ignore[misc]
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
    ``CrossConformalRegressor``), ``n_train_``, ``feature_names_in_``.
    """

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

    def _check_params(self) -> None:
        if not 0.0 < self.confidence_level < 1.0:
            raise InputError(f"confidence_level must lie in (0, 1), got {self.confidence_level!r}",
                             fix="use e.g. 0.9 for 90 % intervals")
        if self.measured not in ("use", "fuse", "ignore"):
            raise InputError(f"measured must be 'use', 'fuse' or 'ignore', got {self.measured!r}",
                             fix="use one of 'use', 'fuse', 'ignore'")
        if not self.measured_sd >= 0.0:
            raise InputError(f"measured_sd must be >= 0, got {self.measured_sd!r}", fix="give an assay SD in RSI units")
        low, high = self.clip
        if not 0.0 < low < high < 1.0:
            raise InputError(f"clip must satisfy 0 < low < high < 1, got {self.clip!r}", fix="e.g. (0.001, 0.999)")

    def _frame(self, X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise InputError("RSISurrogate needs the feature table as a pandas DataFrame",
                             fix="pass read_feature_table(path) (namespaced columns select the inputs)")
        return X

    def _pipeline(self) -> Pipeline:
        exclude = tuple(self.exclude) + ("genomic", "dose", "treatment", "outcome")
        return rsi_pipeline(self.regressor, groups=self.groups, include=self.include, exclude=exclude,
                            n_screen=self.n_screen, random_state=self.random_state)

    def fit(self, X: Any, y: Any = None) -> RSISurrogate:
        from mapie.regression import CrossConformalRegressor

        self._check_params()
        frame = self._frame(X)
        target = self._target(frame, y)
        keep = np.isfinite(target)
        if not keep.all():
            log.info("RSISurrogate: %d of %d row(s) without a measured RSI dropped from fit", int((~keep).sum()),
                     len(keep))
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

    @staticmethod
    def _target(frame: pd.DataFrame, y: Any) -> np.ndarray:
        if y is None:
            if RSI_COLUMN not in frame:
                raise InputError(f"no y given and the table has no {RSI_COLUMN} column",
                                 fix="pass y (measured RSI per row) or a table with genomic.rsi")
            y = frame[RSI_COLUMN]
        values = pd.to_numeric(pd.Series(np.asarray(y, dtype=object).ravel()), errors="coerce")
        target = values.to_numpy(dtype=np.float64, na_value=np.nan)
        if target.shape[0] != len(frame):
            raise InputError(f"y has {target.shape[0]} values for {len(frame)} rows", fix="give one RSI per row")
        return target

    def _measured(self, frame: pd.DataFrame) -> np.ndarray:
        """Measured RSI per row (NaN where absent or ``measured="ignore"``)."""
        if self.measured == "ignore" or RSI_COLUMN not in frame:
            return np.full(len(frame), np.nan)
        return pd.to_numeric(frame[RSI_COLUMN], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def predict_source(self, X: Any) -> np.ndarray:
        """``"measured"``, ``"fused"`` or ``"predicted"`` per row: where :meth:`predict` takes its value from."""
        self._check_params()
        measured = self._measured(self._frame(X))
        label = SOURCE_FUSED if self.measured == "fuse" else SOURCE_MEASURED
        return np.where(np.isfinite(measured), label, SOURCE_PREDICTED).astype(object)

    def predict_all(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(:meth:`predict`, :meth:`predict_interval`, :meth:`predict_source`) from one pass of the models."""
        point, bounds = self._combine(X)
        return np.clip(point, *self.clip), np.clip(bounds, *self.clip), self.predict_source(X)

    def predict_imaging(self, X: Any) -> np.ndarray:
        """RSI predicted from the inputs alone (CV+ fold models averaged), clipped into ``clip``."""
        check_is_fitted(self, "conformal_")
        return np.clip(self.conformal_.predict(self._frame(X)), *self.clip)

    def _imaging(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Unclipped imaging point prediction and (n, 2) CV+ interval."""
        point, intervals = self.conformal_.predict_interval(frame)
        return np.asarray(point, dtype=np.float64), np.asarray(intervals, dtype=np.float64)[:, :, 0]

    def _combine(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Point RSI and (n, 2) interval per row, before clipping."""
        check_is_fitted(self, "conformal_")
        self._check_params()
        frame = self._frame(X)
        measured = self._measured(frame)
        z = float(norm.ppf(0.5 + self.confidence_level / 2.0))
        point = measured.copy()
        half = np.full(len(frame), z * float(self.measured_sd))
        bounds = np.column_stack([point - half, point + half])
        need = ~np.isfinite(measured) if self.measured != "fuse" else np.ones(len(frame), dtype=bool)
        if need.any():
            image_point, image_bounds = self._imaging(frame.loc[need])
            has = np.isfinite(measured[need])
            point[np.flatnonzero(need)[~has]] = image_point[~has]
            bounds[np.flatnonzero(need)[~has]] = image_bounds[~has]
            if has.any():  # measured="fuse": precision-weighted mean of the measurement and the imaging estimate
                rows = np.flatnonzero(need)[has]
                var_image = ((image_bounds[has, 1] - image_bounds[has, 0]) / (2.0 * z)) ** 2
                var_measured = float(self.measured_sd) ** 2
                weight = var_image / (var_image + var_measured) if var_measured > 0 else np.ones(rows.size)
                point[rows] = weight * measured[rows] + (1.0 - weight) * image_point[has]
                fused_half = z * np.sqrt(weight * var_measured)
                bounds[rows] = np.column_stack([point[rows] - fused_half, point[rows] + fused_half])
        return point, bounds

    def predict(self, X: Any) -> np.ndarray:
        """RSI per row, clipped into ``clip`` (a rank-model RSI can fall outside (0, 1)).

        ``measured="use"``: the measured ``genomic.rsi`` where present, else the imaging prediction;
        ``"fuse"``: where measured, the precision-weighted mean of the measurement (variance ``measured_sd^2``)
        and the imaging prediction (variance from its conformal half-width, ``(half / z)^2``); ``"ignore"``:
        always the imaging prediction.
        """
        return np.clip(self._combine(X)[0], *self.clip)

    def predict_interval(self, X: Any) -> np.ndarray:
        """(n, 2) lower and upper bounds of the ``confidence_level`` prediction interval of the RSI.

        Predicted rows: CV+ conformal interval for the expression-derived RSI (marginal coverage >= 1 - 2 alpha in
        theory, about 1 - alpha in practice; Barber et al. 2021). Measured rows (``"use"``):
        ``measured +- z * measured_sd``, an assay-noise interval around the measured value (see ``measured_sd``);
        fused rows: ``fused +- z * sqrt(w) * measured_sd`` with ``w`` the measurement's weight (normal
        approximation). Clipped into ``clip``.
        """
        return np.clip(self._combine(X)[1], *self.clip)
