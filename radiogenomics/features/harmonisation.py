"""ComBat harmonisation as a scikit-learn transformer (fit on training patients, apply to new ones).

ComBat (Johnson, Li & Rabinovic, Biostatistics 2007;8:118; for imaging: Fortin et al., NeuroImage
2018;167:104 / neuroCombat) removes additive and multiplicative batch (centre/scanner) effects per
feature while keeping covariate effects:

``x = alpha + X beta + gamma_b + delta_b * eps``. Features are standardised with the pooled OLS fit, the
per-batch location/scale (gamma, delta) are estimated and shrunk with empirical-Bayes priors across
features, and each value becomes ``(z - gamma*_b) / sqrt(delta*_b) * sigma + alpha + X beta``.

Unlike the reference implementation, every estimate is learnt in :meth:`ComBat.fit` and stored, so
:meth:`ComBat.transform` harmonises patients that were not in the training set (with their own
covariates) without refitting: no information leaks from test patients. Missing values (NaN) are
allowed: estimates use the observed values of each feature and NaN stays NaN.

What is harmonised by default: the imaging columns only, i.e. the schema groups ``imaging`` (radiomics) and
``deep`` (embeddings of the same images, which carry the same scanner and protocol effects); never
availability flags, dose, treatment, genomic, clinical or outcome columns (:mod:`radiogenomics.features.schema`).
Batches the model cannot adjust pass through unchanged and are reported: a batch absent from training
(``unseen_batches_`` after :meth:`ComBat.transform`, and a warning) and a batch with fewer than
``min_batch_size`` training patients (left out of the fit: ``small_batches_``, and a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from radiogenomics.errors import InputError
from radiogenomics.features.schema import DEEP, GROUPS, IMAGING, column_group

log = logging.getLogger(__name__)

#: A within-batch variance below this (in units of the pooled variance) counts as zero: rounding of a constant.
ZERO_VARIANCE = 1e-12


def _group(column: str) -> str | None:
    """The schema group of a column, None for a name without a ``<namespace>.`` prefix (e.g. a gene)."""
    try:
        return column_group(column)
    except ValueError:
        return None


class ComBat(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """ComBat harmonisation of DataFrame columns across the batches in column ``batch``.

    Parameters
    ----------
    batch:
        Column holding the batch label (e.g. ``"clinical.center"`` in the fused table, ``"center"`` in
        patients.csv).
    columns:
        Columns to harmonise, explicitly (any columns). None = the numeric columns selected by ``prefixes``,
        else by ``groups``; the batch and covariate columns are never selected.
    prefixes:
        Name prefixes selecting the columns when ``columns`` is None, e.g. ``("ct.", "pet_fdg.")``.
    groups:
        Schema groups selecting the columns when ``columns`` and ``prefixes`` are None (default: ``imaging``
        and ``deep``). Columns without a ``<namespace>.`` prefix belong to no group.
    categorical, continuous:
        Covariate columns whose effects are preserved (categorical: one-hot, first level dropped).
    eb:
        Empirical-Bayes shrinkage of the batch estimates (parametric priors, as neuroCombat's default).
    mean_only:
        Adjust only the batch location, not the scale.
    unseen_batch:
        What :meth:`transform` does with a batch absent from the training data: ``"identity"`` (default: those
        rows pass through unchanged, a warning is logged and the batches are listed in ``unseen_batches_``)
        or ``"error"`` (InputError).
    min_batch_size:
        Batches with fewer training patients are left out of the fit (warning, ``small_batches_``) and their
        patients pass through unchanged, in fit and transform alike. At least 2: a batch's scale is a variance.
    keep_other_columns:
        Return the non-harmonised columns too (unchanged), in the input order.
    """

    def __init__(self, batch: str = "clinical.center", columns: Sequence[str] | None = None,
                 prefixes: Sequence[str] | None = None, groups: Sequence[str] = (IMAGING, DEEP),
                 categorical: Sequence[str] = (), continuous: Sequence[str] = (), eb: bool = True,
                 mean_only: bool = False, unseen_batch: Literal["error", "identity"] = "identity",
                 min_batch_size: int = 2, keep_other_columns: bool = True, conv: float = 1e-4,
                 max_iter: int = 1000) -> None:
        self.batch = batch
        self.columns = columns
        self.prefixes = prefixes
        self.groups = groups
        self.categorical = categorical
        self.continuous = continuous
        self.eb = eb
        self.mean_only = mean_only
        self.unseen_batch = unseen_batch
        self.min_batch_size = min_batch_size
        self.keep_other_columns = keep_other_columns
        self.conv = conv
        self.max_iter = max_iter

    # ------------------------------------------------------------------ helpers
    def _check_frame(self, X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise InputError("ComBat needs a pandas DataFrame with the batch column",
                             fix=f"pass the feature table including '{self.batch}'")
        needed = [self.batch, *self.categorical, *self.continuous]
        missing = [c for c in needed if c not in X.columns]
        if missing:
            raise InputError(f"ComBat: column(s) {missing} not in the data")
        if X[self.batch].isna().any():
            raise InputError(f"ComBat: the batch column '{self.batch}' has blanks")
        for col in self.continuous:
            if not np.isfinite(pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float)).all():
                raise InputError(f"ComBat: continuous covariate '{col}' must be numeric without blanks")
        return X

    def _select_columns(self, X: pd.DataFrame) -> list[str]:
        excluded = {self.batch, *self.categorical, *self.continuous}
        if self.columns is not None:
            cols = list(self.columns)
            absent = [c for c in cols if c not in X.columns]
            if absent:
                raise InputError(f"ComBat: column(s) {absent[:5]} not in the data")
            return cols
        numeric = [c for c in X.columns if c not in excluded and pd.api.types.is_numeric_dtype(X[c])
                   and not pd.api.types.is_bool_dtype(X[c])]
        if self.prefixes is not None:
            numeric = [c for c in numeric if str(c).startswith(tuple(self.prefixes))]
            how = f"prefixes {list(self.prefixes)}"
        else:
            unknown = sorted(set(self.groups) - set(GROUPS))
            if unknown:
                raise InputError(f"ComBat: unknown column group(s) {unknown}", fix=f"use groups from {list(GROUPS)}")
            numeric = [c for c in numeric if _group(str(c)) in set(self.groups)]
            how = f"groups {list(self.groups)}"
        if not numeric:
            raise InputError(f"ComBat: no numeric columns of {how} to harmonise",
                             fix="pass columns=[...] to choose them explicitly")
        return numeric

    def _covariates(self, X: pd.DataFrame) -> np.ndarray:
        blocks = []
        for col, levels in zip(self.categorical, self.categorical_levels_, strict=True):
            values = X[col].astype(str).to_numpy()
            unknown = sorted(set(values) - set(levels))
            if unknown:
                log.warning("ComBat: unseen level(s) %s of '%s' treated as the reference level", unknown, col)
            blocks.append(np.column_stack([(values == lev).astype(float) for lev in levels[1:]])
                          if len(levels) > 1 else np.zeros((len(X), 0)))
        for col in self.continuous:
            blocks.append(pd.to_numeric(X[col]).to_numpy(dtype=float)[:, None])
        return np.hstack(blocks) if blocks else np.zeros((len(X), 0))

    def _large_enough(self, X: pd.DataFrame) -> pd.DataFrame:
        """The rows of the batches with at least ``min_batch_size`` patients; sets ``small_batches_``."""
        if not isinstance(self.min_batch_size, (int, np.integer)) or self.min_batch_size < 2:
            raise InputError(f"ComBat: min_batch_size must be an integer >= 2, got {self.min_batch_size!r}",
                             fix="a batch's scale is a variance: it needs at least 2 patients")
        counts = X[self.batch].astype(str).value_counts()
        self.small_batches_ = sorted(str(b) for b in counts.index[counts < self.min_batch_size])
        if len(counts) - len(self.small_batches_) < 2:
            raise InputError(f"ComBat needs at least 2 batches with at least {self.min_batch_size} patients each in "
                             f"'{self.batch}', found {counts.to_dict()}",
                             fix="harmonise a cohort with more centres, or lower min_batch_size (>= 2)")
        if self.small_batches_:
            log.warning("ComBat: batch(es) %s have fewer than %d patients: left out of the fit, their patients "
                        "pass through unchanged", self.small_batches_, self.min_batch_size)
        return X[~X[self.batch].astype(str).isin(self.small_batches_)]

    # ------------------------------------------------------------------ fit / transform
    def fit(self, X: pd.DataFrame, y: Any = None) -> ComBat:
        """Learn the standardisation, covariate effects and (shrunk) batch effects from ``X``."""
        X = self._check_frame(X)
        cols = self._select_columns(X)
        X = self._large_enough(X)
        data = X[cols].to_numpy(dtype=np.float64)
        if np.isinf(data).any():
            raise InputError("ComBat: infinite values in the features")
        batches = X[self.batch].astype(str).to_numpy()
        levels, batch_idx = np.unique(batches, return_inverse=True)
        self.categorical_levels_ = [sorted(X[c].astype(str).unique()) for c in self.categorical]
        cov = self._covariates(X)
        onehot = (batch_idx[:, None] == np.arange(len(levels))[None, :]).astype(float)
        design = np.hstack([onehot, cov])
        n_batch, n_feat = len(levels), data.shape[1]

        beta = np.full((design.shape[1], n_feat), np.nan)
        observed = ~np.isnan(data)
        patterns: dict[bytes, list[int]] = {}
        for j in range(n_feat):
            patterns.setdefault(np.packbits(observed[:, j]).tobytes(), []).append(j)
        for cols_j in patterns.values():
            rows = observed[:, cols_j[0]]
            if rows.sum() < design.shape[1]:
                raise InputError(f"ComBat: feature '{cols[cols_j[0]]}' has too few observed values")
            beta[:, cols_j] = np.linalg.lstsq(design[rows], data[np.ix_(rows, cols_j)], rcond=None)[0]
        n_obs_batch = onehot.T @ observed  # (n_batch, n_feat) observed patients per batch and feature
        if (n_obs_batch < 2).any():
            b, j = np.argwhere(n_obs_batch < 2)[0]
            raise InputError(f"ComBat: feature '{cols[j]}' has fewer than 2 values in batch '{levels[b]}'",
                             fix="impute it inside the fold before ComBat, or leave the column out (columns=...)")
        weights = n_obs_batch / n_obs_batch.sum(axis=0, keepdims=True)
        grand_mean = (weights * beta[:n_batch]).sum(axis=0)
        beta_cov = beta[n_batch:]
        fitted = design @ beta
        var_pooled = np.nanmean((data - fitted) ** 2, axis=0)
        varies = var_pooled > 0
        var_pooled[~varies] = 1.0  # constant feature: nothing to scale
        mod_mean = cov @ beta_cov
        s = (data - grand_mean - mod_mean) / np.sqrt(var_pooled)

        gamma_hat = np.vstack([np.nanmean(s[batch_idx == b], axis=0) for b in range(n_batch)])
        if self.mean_only:
            delta_hat = np.ones_like(gamma_hat)
        else:
            delta_hat = np.vstack([np.nanvar(s[batch_idx == b], axis=0, ddof=1) for b in range(n_batch)])
            constant = delta_hat < ZERO_VARIANCE  # standardised units: the pooled variance is 1
            if (constant & varies[None, :]).any():
                log.warning("ComBat: %d feature(s) are constant within a batch (zero variance): no scale estimate "
                            "there, location adjusted only", int((constant & varies[None, :]).any(axis=0).sum()))
            delta_hat[constant] = 1.0
        if self.eb:
            gamma_star, delta_star = self._empirical_bayes(s, batch_idx, gamma_hat, delta_hat)
        else:
            gamma_star, delta_star = gamma_hat, delta_hat

        self.batches_ = [str(v) for v in levels]
        self.columns_ = cols
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.grand_mean_ = grand_mean
        self.beta_covariates_ = beta_cov
        self.var_pooled_ = var_pooled
        self.gamma_hat_, self.delta_hat_ = gamma_hat, delta_hat
        self.gamma_star_, self.delta_star_ = gamma_star, delta_star
        return self

    def _empirical_bayes(self, s: np.ndarray, batch_idx: np.ndarray, gamma_hat: np.ndarray,
                         delta_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parametric EB posterior of gamma and delta per batch (Johnson et al. 2007, it.sol)."""
        gamma_star = np.empty_like(gamma_hat)
        delta_star = np.empty_like(delta_hat)
        for b in range(gamma_hat.shape[0]):
            g_hat, d_hat = gamma_hat[b], delta_hat[b]
            g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
            sb = s[batch_idx == b]
            n = (~np.isnan(sb)).sum(axis=0)
            if self.mean_only:
                # as sva::ComBat and neuroCombat: postmean(g_hat, g_bar, n = 1, d = 1, t2)
                gamma_star[b] = (t2 * g_hat + g_bar) / (t2 + 1.0) if t2 > 0 else g_hat
                delta_star[b] = 1.0
                continue
            m, v = d_hat.mean(), d_hat.var(ddof=1)
            if not np.isfinite(v) or v <= 0 or not np.isfinite(t2) or t2 <= 0:
                gamma_star[b], delta_star[b] = g_hat, d_hat  # a single feature: no prior to learn
                continue
            a_prior = (2.0 * v + m**2) / v
            b_prior = (m * v + m**3) / v
            g_old, d_old = g_hat.copy(), d_hat.copy()
            for _ in range(self.max_iter):
                g_new = (t2 * n * g_hat + d_old * g_bar) / (t2 * n + d_old)
                sum2 = np.nansum((sb - g_new) ** 2, axis=0)
                d_new = (0.5 * sum2 + b_prior) / (n / 2.0 + a_prior - 1.0)
                # stopping rule exactly as sva::ComBat / neuroCombat (relative to the signed old value)
                change = max(np.max(np.abs(g_new - g_old) / g_old), np.max(np.abs(d_new - d_old) / d_old))
                g_old, d_old = g_new, d_new
                if change <= self.conv:
                    break
            else:
                log.warning("ComBat: EB iterations did not converge for batch %d", b)
            gamma_star[b], delta_star[b] = g_old, d_old
        return gamma_star, delta_star

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Harmonise ``X`` with the fitted estimates (rows are independent of each other)."""
        check_is_fitted(self, "gamma_star_")
        X = self._check_frame(X)
        absent = [c for c in self.columns_ if c not in X.columns]
        if absent:
            raise InputError(f"ComBat: fitted column(s) {absent[:5]} missing from the data")
        batches = X[self.batch].astype(str).to_numpy()
        index = {b: i for i, b in enumerate(self.batches_)}
        unseen = sorted(set(batches) - set(index) - set(self.small_batches_))
        if unseen and self.unseen_batch == "error":
            raise InputError(f"ComBat: batch(es) {unseen} were not in the training data",
                             fix="fit on data including them, or use unseen_batch='identity'")
        self.unseen_batches_ = unseen
        if unseen:
            log.warning("ComBat: batch(es) %s unseen in training: %d patient(s) pass through unchanged", unseen,
                        int(np.isin(batches, unseen).sum()))
        data = X[self.columns_].to_numpy(dtype=np.float64)
        mod_mean = self._covariates(X) @ self.beta_covariates_
        sd = np.sqrt(self.var_pooled_)
        s = (data - self.grand_mean_ - mod_mean) / sd
        rows = np.array([index.get(b, -1) for b in batches])
        known = rows >= 0
        gamma = np.zeros_like(s)
        delta = np.ones_like(s)
        gamma[known] = self.gamma_star_[rows[known]]
        delta[known] = self.delta_star_[rows[known]]
        adjusted = (s - gamma) / np.sqrt(delta) * sd + self.grand_mean_ + mod_mean
        adjusted[~known] = data[~known]
        out = X.copy() if self.keep_other_columns else X[self.columns_].copy()
        out[self.columns_] = adjusted
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "columns_")
        if self.keep_other_columns:
            return np.asarray(self.feature_names_in_, dtype=object)
        return np.asarray(self.columns_, dtype=object)
