"""Applicability domain of the imaging-based models: is a new patient's imaging like the training cohort's?

:class:`ApplicabilityDomain` is fitted on the training feature table's imaging columns (group ``imaging``,
numeric) and scores a patient by two distances (Sahigara et al., Molecules 2012;17:4791, review of
applicability-domain methods; robust z-scores after Rousseeuw & Croux, JASA 1993;88:1273):

* ``max_abs_z``: the largest per-feature z-score ``|x - median| / max(IQR / 1.349, SD)`` (the IQR of a normal
  distribution is 1.349 SD; the SD where it is larger keeps heavy-tailed features from dominating);
* ``mahalanobis``: the Mahalanobis distance in the space of the first ``n_components`` principal components of
  the robust z-scores winsorised at +-``z_clip`` (so that one heavy-tailed feature cannot dominate the
  components; missing values at the median, i.e. z = 0): ``sqrt(sum_k s_k^2 / var_k)``.

A constant feature (spread below 1e-9 of its magnitude) is left out, also inside the out-of-fold fits.

Each threshold is the ``quantile`` (default 0.99) of the same score on **out-of-fold** training patients
(``n_splits``-fold: the domain refitted without the fold, the fold scored), so that the threshold is not
shrunk by in-sample PCA fitting on small cohorts. A patient is in the domain when both scores are at or below
their thresholds; by construction about 2 % of patients like the training cohort fall outside.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

from radiogenomics.errors import InputError
from radiogenomics.features.preprocessing import numeric_matrix
from radiogenomics.features.schema import IMAGING, column_group

log = logging.getLogger(__name__)

#: IQR of a standard normal distribution (robust SD = IQR / 1.349).
IQR_PER_SD = 1.349


def imaging_columns(table: pd.DataFrame) -> list[str]:
    """Numeric columns of group ``imaging`` (handcrafted radiomics) of a feature table."""
    out = []
    for column in table.columns:
        try:
            group = column_group(str(column))
        except ValueError:
            continue
        if group == IMAGING and pd.api.types.is_numeric_dtype(table[column]):
            out.append(str(column))
    return out


class ApplicabilityDomain(BaseEstimator):  # type: ignore[misc]
    """Robust z-score and PCA-Mahalanobis applicability domain over the imaging features (module docstring).

    Learnt: ``columns_`` (features used), ``median_``, ``scale_``, ``pca_`` (PCA of the z-scores),
    ``z_threshold_``, ``distance_threshold_``.
    """

    def __init__(self, n_components: int = 10, quantile: float = 0.99, n_splits: int = 5, z_clip: float = 10.0,
                 random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.z_clip = z_clip
        self.quantile = quantile
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: Any = None) -> ApplicabilityDomain:
        if not isinstance(X, pd.DataFrame):
            raise InputError("ApplicabilityDomain needs the feature table as a pandas DataFrame")
        if not 0.5 < self.quantile < 1.0:
            raise InputError(f"quantile must lie in (0.5, 1), got {self.quantile!r}", fix="use e.g. 0.99")
        values = X[imaging_columns(X)].to_numpy(dtype=np.float64, na_value=np.nan)
        median, scale = _robust_centre(values)
        keep = np.isfinite(median) & np.isfinite(scale) & (scale > 0)
        if not keep.any():
            raise InputError("no imaging feature with a spread in the training table",
                             fix="train on a table with radiomics features of several patients")
        if len(X) < 2 * max(self.n_splits, 2):
            raise InputError(f"the applicability domain needs >= {2 * max(self.n_splits, 2)} training patients, "
                             f"got {len(X)}", fix="train on more patients or lower n_splits")
        self.columns_ = [c for c, k in zip(imaging_columns(X), keep, strict=True) if k]
        values = values[:, keep]
        oof_z, oof_d = np.empty(len(X)), np.empty(len(X))
        for train, test in KFold(self.n_splits, shuffle=True, random_state=self.random_state).split(values):
            centre, spread, pca = self._fit_arrays(values[train])
            oof_z[test], oof_d[test] = _scores(values[test], centre, spread, pca, self.z_clip)
        self.median_, self.scale_, self.pca_ = self._fit_arrays(values)
        self.z_threshold_ = float(np.quantile(oof_z, self.quantile))
        self.distance_threshold_ = float(np.quantile(oof_d, self.quantile))
        log.info("applicability domain: %d imaging features, %d components, thresholds max|z| %.2f, "
                 "Mahalanobis %.2f", len(self.columns_), self.pca_.n_components_, self.z_threshold_,
                 self.distance_threshold_)
        return self

    def _fit_arrays(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, PCA]:
        centre, spread = _robust_centre(values)
        # A feature without spread in this (sub-)fit carries no information here: z = 0, not (x - c) / 1, which
        # made one such feature's out-of-fold z as large as its raw value (thresholds of ~1e15).
        spread = np.where(np.isfinite(spread) & (spread > 0), spread, np.inf)
        centre = np.where(np.isfinite(centre), centre, 0.0)
        z = np.clip(np.nan_to_num((values - centre) / spread, nan=0.0), -self.z_clip, self.z_clip)
        k = max(1, min(int(self.n_components), z.shape[0] - 1, z.shape[1]))
        return centre, spread, PCA(n_components=k, random_state=self.random_state).fit(z)

    def score_samples(self, X: pd.DataFrame) -> pd.DataFrame:
        """``max_abs_z``, ``mahalanobis`` and ``in_domain`` per row (index of ``X``)."""
        check_is_fitted(self, "pca_")
        positions = X.columns.get_indexer(self.columns_)
        if (positions >= 0).all() and bool((X.dtypes.iloc[positions] == np.float64).all()):
            values = X.iloc[:, positions].to_numpy(dtype=np.float64)  # one block, no reindex (~5x faster)
        else:
            values = numeric_matrix(X.reindex(columns=self.columns_))
        z, d = _scores(values, self.median_, self.scale_, self.pca_, self.z_clip)
        inside = (z <= self.z_threshold_) & (d <= self.distance_threshold_)
        return pd.DataFrame({"max_abs_z": z, "mahalanobis": d, "in_domain": inside}, index=X.index)

    def in_domain(self, X: pd.DataFrame) -> np.ndarray:
        """True per row inside the domain (both scores at or below their thresholds)."""
        return self.score_samples(X)["in_domain"].to_numpy(dtype=bool)


def _robust_centre(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and spread max(IQR / 1.349, SD), ignoring NaN; NaN for an all-missing column, 0 for a
    constant one."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 'All-NaN slice' for an all-missing column
        q25, median, q75 = np.nanpercentile(values, [25.0, 50.0, 75.0], axis=0)
        sd = np.nanstd(values, axis=0)
    # A spread below 1e-9 of the feature's magnitude is floating-point noise of a constant feature, not a spread.
    tol = 1e-9 * np.maximum(np.abs(median), np.finfo(np.float64).tiny)
    # The larger of the robust SD and the SD: heavy-tailed features (radiomics has many, mostly near-constant with
    # a few large values) would otherwise give out-of-fold z-scores in the thousands and a max|z| threshold
    # that no absurd value exceeds; with the SD, one sample of n lies within sqrt(n) SD of the mean.
    spread = np.fmax((q75 - q25) / IQR_PER_SD, sd)
    return median, np.where(spread > tol, spread, 0.0)


def _scores(values: np.ndarray, centre: np.ndarray, spread: np.ndarray, pca: PCA,
            z_clip: float) -> tuple[np.ndarray, np.ndarray]:
    z = np.nan_to_num((values - centre) / spread, nan=0.0)
    max_abs_z = np.abs(z).max(axis=1)
    components = pca.transform(np.clip(z, -z_clip, z_clip))
    variance = np.maximum(pca.explained_variance_, 1e-12)
    return max_abs_z, np.sqrt(((components**2) / variance).sum(axis=1))

