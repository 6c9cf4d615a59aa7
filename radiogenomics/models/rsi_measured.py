"""The measured-RSI combination shared by the RSI models (:class:`~radiogenomics.models.radiosensitivity.RSISurrogate`,
:class:`~radiogenomics.models.multimodal_rsi.MultimodalRSI`).

A model predicts the expression-derived RSI (``genomic.rsi``) with a prediction interval. Where the feature
table has a measured RSI at prediction time, :class:`MeasuredRSIMixin` combines it with the model's own
prediction according to the model's ``measured`` parameter:

* ``"use"``: the measured value, with the assay-noise interval ``measured +- z * measured_sd``;
* ``"fuse"``: the precision-weighted (inverse-variance) mean of the measurement (variance ``measured_sd^2``) and
  the prediction (variance ``(half / z)^2`` from its interval half-width), interval
  ``fused +- z * sqrt(w) * measured_sd`` with ``w`` the measurement's weight (normal approximation; e.g.
  Gelman et al., Bayesian Data Analysis, 3rd ed., 2013, section 2.5, the normal mean with known variance);
* ``"ignore"``: always the model's prediction;

with ``z`` the standard-normal quantile of ``confidence_level``. Every returned RSI and bound is clipped into
``clip`` inside (0, 1) (RSI is a surviving fraction; a rank-model RSI can leave that range).
:meth:`MeasuredRSIMixin.predict_source` says where each value comes from (:data:`SOURCE_MEASURED`,
:data:`SOURCE_FUSED`, or the model's own label of a prediction, :data:`SOURCE_PREDICTED` or
:data:`SOURCE_PREDICTED_WITHOUT_IMAGES`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.utils.validation import check_is_fitted

from radiogenomics.errors import InputError
from radiogenomics.features import naming

log = logging.getLogger(__name__)

#: The label column: measured (expression-derived) RSI.
RSI_COLUMN = naming.RSI_COLUMN
#: ``predict_source`` values.
SOURCE_MEASURED = "measured"
SOURCE_PREDICTED = "predicted"
SOURCE_FUSED = "fused"
#: A prediction made without any image crop of the patient (the multimodal model's tabular-only path).
SOURCE_PREDICTED_WITHOUT_IMAGES = "predicted_without_images"
#: Default clipping range of every returned RSI and interval bound: RSI is a surviving fraction in (0, 1).
DEFAULT_CLIP: tuple[float, float] = (0.001, 0.999)

Measured = Literal["use", "fuse", "ignore"]


@dataclass(frozen=True)
class Predicted:
    """A model's own prediction for some rows: unclipped ``point``, (n, 2) ``bounds``, ``source`` labels."""

    point: np.ndarray
    bounds: np.ndarray
    source: np.ndarray


def rsi_target(frame: pd.DataFrame, y: Any) -> np.ndarray:
    """The RSI label per row as float64 (NaN where missing): ``y``, or the table's ``genomic.rsi`` when None."""
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


class MeasuredRSIMixin:
    """``predict``, ``predict_interval``, ``predict_source`` and ``predict_all`` of an RSI model (module docstring).

    A subclass has the parameters ``confidence_level``, ``measured``, ``measured_sd`` and ``clip``, names its
    fitted attribute in ``_fitted_attribute`` and implements :meth:`_frame` (input checks) and
    :meth:`_predicted` (its own point, interval and source label for the given rows); it may override
    :meth:`_predicted_source` (default :data:`SOURCE_PREDICTED`). Keyword ``options`` of the predict methods
    (e.g. ``cohort=`` of the multimodal model) go to those two hooks.
    """

    confidence_level: float
    measured: Measured
    measured_sd: float
    clip: tuple[float, float]
    _fitted_attribute: str = ""

    def _frame(self, X: Any) -> pd.DataFrame:
        raise NotImplementedError

    def _predicted(self, frame: pd.DataFrame, **options: Any) -> Predicted:
        raise NotImplementedError

    def _predicted_source(self, frame: pd.DataFrame, **options: Any) -> np.ndarray:
        """Source label of each row the model predicts (without predicting)."""
        return np.full(len(frame), SOURCE_PREDICTED, dtype=object)

    def _check_measured_params(self) -> None:
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

    def _labelled(self, X: Any, y: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """(table, RSI label per row, rows with a label) for ``fit``, after the parameter checks; rows without
        a label are logged (the caller drops them)."""
        self._check_measured_params()
        frame = self._frame(X)
        target = rsi_target(frame, y)
        keep = np.isfinite(target)
        if not keep.all():
            log.info("%s: %d of %d row(s) without a measured RSI dropped from fit", type(self).__name__,
                     int((~keep).sum()), len(keep))
        return frame, target, keep

    def _measured(self, frame: pd.DataFrame) -> np.ndarray:
        """Measured RSI per row (NaN where absent or ``measured="ignore"``)."""
        if self.measured == "ignore" or RSI_COLUMN not in frame:
            return np.full(len(frame), np.nan)
        return pd.to_numeric(frame[RSI_COLUMN], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def _measured_label(self) -> str:
        return SOURCE_FUSED if self.measured == "fuse" else SOURCE_MEASURED

    def predict_source(self, X: Any, **options: Any) -> np.ndarray:
        """``"measured"``, ``"fused"`` or the model's prediction label per row: where :meth:`predict` takes its
        value from."""
        self._check_measured_params()
        frame = self._frame(X)
        measured = np.isfinite(self._measured(frame))
        source = np.full(len(frame), self._measured_label(), dtype=object)
        if not measured.all():
            source[~measured] = self._predicted_source(frame.loc[~measured], **options)
        return source

    def _combine(self, X: Any, **options: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point RSI, (n, 2) interval and source per row, before clipping."""
        check_is_fitted(self, self._fitted_attribute)
        self._check_measured_params()
        frame = self._frame(X)
        measured = self._measured(frame)
        z = float(norm.ppf(0.5 + self.confidence_level / 2.0))
        point = measured.copy()
        half = np.full(len(frame), z * float(self.measured_sd))
        bounds = np.column_stack([point - half, point + half])
        source = np.full(len(frame), self._measured_label(), dtype=object)
        need = ~np.isfinite(measured) if self.measured != "fuse" else np.ones(len(frame), dtype=bool)
        if need.any():
            own = self._predicted(frame.loc[need], **options)
            has = np.isfinite(measured[need])
            rows = np.flatnonzero(need)[~has]
            point[rows], bounds[rows], source[rows] = own.point[~has], own.bounds[~has], own.source[~has]
            if has.any():  # measured="fuse": precision-weighted mean of the measurement and the model's estimate
                rows = np.flatnonzero(need)[has]
                var_model = ((own.bounds[has, 1] - own.bounds[has, 0]) / (2.0 * z)) ** 2
                var_measured = float(self.measured_sd) ** 2
                if var_measured > 0:  # an infinite model interval (too few calibration rows): weight 1
                    with np.errstate(invalid="ignore"):
                        weight = np.where(np.isinf(var_model), 1.0, var_model / (var_model + var_measured))
                else:
                    weight = np.ones(rows.size)
                point[rows] = weight * measured[rows] + (1.0 - weight) * own.point[has]
                fused_half = z * np.sqrt(weight * var_measured)
                bounds[rows] = np.column_stack([point[rows] - fused_half, point[rows] + fused_half])
        return point, bounds, source

    def predict_all(self, X: Any, **options: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(:meth:`predict`, :meth:`predict_interval`, :meth:`predict_source`) from one pass of the models."""
        point, bounds, source = self._combine(X, **options)
        return np.clip(point, *self.clip), np.clip(bounds, *self.clip), source

    def predict(self, X: Any, **options: Any) -> np.ndarray:
        """RSI per row, clipped into ``clip`` (a rank-model RSI can fall outside (0, 1)).

        ``measured="use"``: the measured ``genomic.rsi`` where present, else the model's prediction;
        ``"fuse"``: where measured, the precision-weighted mean of the measurement (variance ``measured_sd^2``)
        and the prediction (variance from its interval half-width, ``(half / z)^2``); ``"ignore"``: always the
        model's prediction.
        """
        return np.clip(self._combine(X, **options)[0], *self.clip)

    def predict_interval(self, X: Any, **options: Any) -> np.ndarray:
        """(n, 2) lower and upper bounds of the ``confidence_level`` prediction interval of the RSI.

        Predicted rows: the model's conformal interval. Measured rows (``"use"``): ``measured +- z *
        measured_sd``, an assay-noise interval around the measured value (see ``measured_sd``); fused rows:
        ``fused +- z * sqrt(w) * measured_sd`` with ``w`` the measurement's weight (normal approximation).
        Clipped into ``clip``.
        """
        return np.clip(self._combine(X, **options)[1], *self.clip)
