"""Cohort-level preprocessing as scikit-learn transformers, fitted inside training folds.

The feature table is per patient (contract section 1): nothing in it is imputed or scaled across patients.
Everything that learns from several patients lives here, so that a cross-validation pipeline fits it on the
training fold only and applies the stored statistics to the held-out patients:

* :class:`FeatureSelector`: keeps the columns of the chosen schema groups (``dose``, ``treatment`` and
  ``outcome`` are opt-in, :data:`~radiogenomics.features.schema.DEFAULT_FEATURE_GROUPS`).
* :class:`GroupImputer`: per-column median / mean (numeric) or most frequent value (other), learnt on the
  training rows, with ``<column>__missing`` 0/1 indicator columns.
* :class:`FeatureScaler`: standard or robust scaling of the numeric columns that are not 0/1 flags.
* :class:`RSIImputer`: RSI from an expression table, blank RSI genes filled with training-fold gene medians.

All take a pandas DataFrame (or an array) and return a DataFrame for a DataFrame (an array for an array;
``set_output(transform="pandas")`` also works), have ``get_feature_names_out``, keep their parameters in
``__init__`` and do their work in ``fit``. ``FeatureSelector`` (with ``include=("*",)``), ``GroupImputer``
and ``FeatureScaler`` pass scikit-learn's ``check_estimator``; ``RSIImputer`` needs gene columns and is
tested on its own.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.features.schema import AVAILABILITY, DEFAULT_FEATURE_GROUPS, GROUPS, column_group

log = logging.getLogger(__name__)

#: Suffix of the missing-value indicator column :class:`GroupImputer` adds for a column.
MISSING_SUFFIX = "__missing"


def _frame(estimator: BaseEstimator, X: Any, *, reset: bool) -> tuple[pd.DataFrame, bool]:
    """``X`` as a DataFrame (feature names and count checked as scikit-learn does) and whether it was one."""
    if isinstance(X, pd.DataFrame):
        validate_data(estimator, X, reset=reset, skip_check_array=True)
        if len(X) == 0:
            raise ValueError(f"0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
        numeric = X.select_dtypes(include="number")
        if np.isinf(numeric.to_numpy(dtype=np.float64, na_value=np.nan)).any():
            raise ValueError("Input contains infinity or a value too large for dtype('float64').")
        return X, True
    array = validate_data(estimator, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64)
    names = getattr(estimator, "feature_names_in_", None)
    columns = [str(c) for c in names] if names is not None else [f"x{i}" for i in range(array.shape[1])]
    return pd.DataFrame(array, columns=columns), False


def _output(frame: pd.DataFrame, as_frame: bool) -> Any:
    return frame if as_frame else frame.to_numpy(dtype=np.float64)


def numeric_matrix(frame: pd.DataFrame) -> np.ndarray:
    """``frame`` as a float64 array, as ``frame.apply(pd.to_numeric, errors="coerce")`` would give it: numeric
    columns as they are (missing -> NaN), only the other columns parsed (unparseable -> NaN), in one block
    conversion instead of one pandas call per column."""
    dtypes = frame.dtypes.tolist()
    numeric = {dtype: pd.api.types.is_numeric_dtype(dtype) for dtype in set(dtypes)}
    other = [c for c, dtype in zip(frame.columns.tolist(), dtypes, strict=True) if not numeric[dtype]]
    if other:
        frame = frame.copy()
        for column in other:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


def with_columns(frame: pd.DataFrame, names: Sequence[str], values: np.ndarray) -> pd.DataFrame:
    """``frame`` with the columns ``names`` replaced by the float64 columns of ``values``, column order kept.

    One block operation instead of one ``frame[name] = ...`` per column (which costs ~0.1 ms each): float64
    columns are overwritten in place in a copy, others rebuilt by a concatenation.
    """
    positions = frame.columns.get_indexer(list(names))
    if (positions >= 0).all() and bool((frame.dtypes == np.float64).to_numpy()[positions].all()):
        out = frame.copy()
        out.iloc[:, positions] = values
        return out
    replaced = pd.DataFrame(values, index=frame.index, columns=list(names))
    if len(names) < frame.shape[1]:
        replaced = pd.concat([frame.drop(columns=list(names)), replaced], axis=1)
    return replaced[frame.columns]


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


class _Tags:
    """Mixin: NaN is allowed in the input (the transformers handle or pass it through)."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.input_tags.allow_nan = True
        return tags


class FeatureSelector(_Tags, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Keep the feature-table columns of the chosen schema groups.

    Parameters
    ----------
    groups:
        Schema groups to keep (:data:`~radiogenomics.features.schema.GROUPS`); default
        :data:`~radiogenomics.features.schema.DEFAULT_FEATURE_GROUPS`, so ``dose``, ``treatment`` and
        ``outcome`` columns are dropped unless a model opts into them.
    include:
        Extra columns to keep whatever their group: group names or column-name patterns
        (``fnmatch``: ``"clinical.total_dose_gy"``, ``"dose.parotid_*.mean_gy"``; ``"*"`` keeps all).
    exclude:
        Columns to drop, group names or patterns; wins over ``groups`` and ``include``.

    ``patient_id`` (group ``id``) and columns without a ``<namespace>.`` prefix belong to no group: they are
    kept only when ``include`` names them. Learnt: ``columns_`` (the kept columns, in input order).
    """

    def __init__(self, groups: Sequence[str] = DEFAULT_FEATURE_GROUPS, include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> None:
        self.groups = groups
        self.include = include
        self.exclude = exclude

    def fit(self, X: Any, y: Any = None) -> FeatureSelector:
        unknown = sorted(set(self.groups) - set(GROUPS))
        if unknown:
            raise InputError(f"unknown feature group(s) {unknown}", fix=f"use some of {list(GROUPS)}")
        frame, _ = _frame(self, X, reset=True)
        kept, orphans = [], []
        for column in (str(c) for c in frame.columns):
            try:
                group: str | None = column_group(column)
            except ValueError:
                group = None
                orphans.append(column)
            if self._matches(column, group, self.exclude):
                continue
            if group in self.groups or self._matches(column, group, self.include):
                kept.append(column)
        dropped_orphans = [c for c in orphans if c not in kept]
        if dropped_orphans:
            log.warning("FeatureSelector: %d column(s) without a namespace dropped (%s)", len(dropped_orphans),
                        ", ".join(dropped_orphans[:5]))
        self.columns_ = kept
        return self

    @staticmethod
    def _matches(column: str, group: str | None, patterns: Sequence[str]) -> bool:
        return any(p == group or fnmatch.fnmatchcase(column, p) for p in patterns)

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "columns_")
        frame, as_frame = _frame(self, X, reset=False)
        return _output(frame[self.columns_], as_frame)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "columns_")
        _check_feature_names_in(self, input_features)
        return np.asarray(self.columns_, dtype=object)


class GroupImputer(_Tags, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Fill missing values with statistics of the training rows, flagging what was filled.

    Parameters
    ----------
    strategy:
        ``"median"`` (default) or ``"mean"`` for numeric columns; other columns (strings, categories) always
        take their most frequent training value (the smallest of a tie).
    add_indicator:
        Add a 0/1 column ``<column>__missing`` for every column that had a missing value in the training
        rows (as scikit-learn's ``SimpleImputer(add_indicator=True)``), after the imputed columns.
    empty_value:
        Fill value of a numeric column with no observed training value (it is kept, not dropped, so the
        column set stays the schema's).

    Learnt: ``statistics_`` (column -> fill value) and ``indicator_columns_``.
    """

    def __init__(self, strategy: Literal["median", "mean"] = "median", add_indicator: bool = True,
                 empty_value: float = 0.0) -> None:
        self.strategy = strategy
        self.add_indicator = add_indicator
        self.empty_value = empty_value

    def fit(self, X: Any, y: Any = None) -> GroupImputer:
        if self.strategy not in ("median", "mean"):
            raise InputError(f"unknown imputation strategy {self.strategy!r}", fix="use 'median' or 'mean'")
        frame, _ = _frame(self, X, reset=True)
        statistics: dict[str, Any] = {}
        for name, column in frame.items():
            observed = column.dropna()
            if _is_numeric(column):
                values = observed.to_numpy(dtype=np.float64)
                if values.size == 0:
                    statistics[str(name)] = float(self.empty_value)
                    log.warning("GroupImputer: column %s has no value in the training rows; filled with %g",
                                name, self.empty_value)
                else:
                    statistics[str(name)] = float(np.median(values) if self.strategy == "median"
                                                  else np.mean(values))
            else:
                counts = observed.value_counts()
                ties = [v for v, n in counts.items() if n == counts.max()]
                statistics[str(name)] = min(ties, key=str) if ties else None  # ties: the smallest, as sklearn
        self.statistics_ = statistics
        missing = frame.isna().any(axis=0)
        self.indicator_columns_ = [str(c) for c in frame.columns[missing.to_numpy()]] if self.add_indicator else []
        return self

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "statistics_")
        frame, as_frame = _frame(self, X, reset=False)
        missing = frame.isna()
        has_missing = missing.any(axis=0)
        to_fill = [c for c in frame.columns[has_missing.to_numpy()] if self.statistics_[str(c)] is not None]
        floats = [c for c in to_fill if frame[c].dtype == np.float64]  # filled in one block
        filled = frame
        if floats:
            values = frame[floats].to_numpy(dtype=np.float64)
            fills = np.array([self.statistics_[str(c)] for c in floats], dtype=np.float64)
            filled = with_columns(frame, floats, np.where(np.isnan(values), fills, values))
        others = [c for c in to_fill if frame[c].dtype != np.float64]
        if others:
            filled = filled.copy()
            for name in others:
                filled[name] = filled[name].fillna(self.statistics_[str(name)])
        if not self.indicator_columns_:
            return _output(filled, as_frame)
        flags = pd.DataFrame(missing[self.indicator_columns_].to_numpy().astype(np.int8), index=frame.index,
                             columns=[f"{c}{MISSING_SUFFIX}" for c in self.indicator_columns_])
        return _output(pd.concat([filled, flags], axis=1), as_frame)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "statistics_")
        names = list(_check_feature_names_in(self, input_features))
        return np.asarray(names + [f"{c}{MISSING_SUFFIX}" for c in self.indicator_columns_], dtype=object)


#: A column whose spread is at most this fraction of its centre is constant up to floating-point rounding.
CONSTANT_RELATIVE_SPREAD = 1e-9


class FeatureScaler(_Tags, OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Scale numeric columns with training-row statistics, leaving 0/1 flags and non-numeric columns alone.

    Parameters
    ----------
    method:
        ``"standard"``: ``(x - mean) / sd`` (population sd); ``"robust"``: ``(x - median) / IQR``. A constant
        column is only centred: scale 0, or at most :data:`CONSTANT_RELATIVE_SPREAD` of the centre (a shape
        feature equal in every patient up to rounding, e.g. the major axis of a cord spanning the whole scan, would
        otherwise be divided by ~1e-15 and a new patient's rounding would become a z-score of 1e13).

    A flag is an ``available.*`` column, a ``*__missing`` indicator, or any column whose training values are
    all 0 or 1. NaN stays NaN. Learnt: ``center_`` and ``scale_`` (column -> value, scaled columns only).
    """

    def __init__(self, method: Literal["standard", "robust"] = "standard") -> None:
        self.method = method

    def fit(self, X: Any, y: Any = None) -> FeatureScaler:
        if self.method not in ("standard", "robust"):
            raise InputError(f"unknown scaling method {self.method!r}", fix="use 'standard' or 'robust'")
        frame, _ = _frame(self, X, reset=True)
        center: dict[str, float] = {}
        scale: dict[str, float] = {}
        for name, column in frame.items():
            if not _is_numeric(column) or _is_flag(str(name), column):
                continue
            values = column.dropna().to_numpy(dtype=np.float64)
            if values.size == 0:
                continue
            if self.method == "standard":
                mid, spread = float(np.mean(values)), float(np.std(values))
            else:
                q1, mid, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
                spread = q3 - q1
            constant = not spread > CONSTANT_RELATIVE_SPREAD * abs(mid)
            center[str(name)], scale[str(name)] = mid, 1.0 if constant or spread <= 0 else spread
        self.center_, self.scale_ = center, scale
        return self

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "center_")
        frame, as_frame = _frame(self, X, reset=False)
        if not self.center_:
            return _output(frame.copy(), as_frame)
        names = list(self.center_)
        center = np.array([self.center_[n] for n in names], dtype=np.float64)
        scale = np.array([self.scale_[n] for n in names], dtype=np.float64)
        values = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
        return _output(with_columns(frame, names, (values - center) / scale), as_frame)


def _is_flag(name: str, column: pd.Series) -> bool:
    if name.endswith(MISSING_SUFFIX):
        return True
    try:
        if column_group(name) == AVAILABILITY:
            return True
    except ValueError:
        pass
    values = column.dropna().to_numpy(dtype=np.float64)
    return bool(values.size) and bool(np.isin(values, (0.0, 1.0)).all())


class RSIImputer(_Tags, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """RSI of an expression table, blank RSI genes filled with the training rows' gene medians.

    Input: normalised log2 expression, one row per patient, genes as columns (``cohort.expression``).
    Output: ``genomic.rsi`` and ``genomic.rsi_imputed`` (1 when a gene was filled for that patient).
    ``gene_map`` maps RSI slots to other columns as in :func:`radiogenomics.radiobiology.score_rsi`.
    Learnt: ``medians_`` (slot -> training median). A gene with no training value raises InputError.
    """

    def __init__(self, gene_map: Mapping[str, str] | None = None) -> None:
        self.gene_map = gene_map

    def fit(self, X: Any, y: Any = None) -> RSIImputer:
        from radiogenomics.radiobiology.rsi import RSI_GENES

        frame, _ = _frame(self, X, reset=True)
        slots = {g: dict(self.gene_map or {}).get(g, g) for g in RSI_GENES}
        medians: dict[str, float] = {}
        for slot, column in slots.items():
            values = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series()
            if values.empty:
                raise InputError(f"RSI gene {column} has no value in the training rows: cannot impute it",
                                 fix="add the gene to expression.csv or map its slot with gene_map")
            medians[slot] = float(values.median())
        self.medians_ = medians
        return self

    def transform(self, X: Any) -> Any:
        from radiogenomics.radiobiology import score_rsi

        check_is_fitted(self, "medians_")
        frame, as_frame = _frame(self, X, reset=False)
        scores = score_rsi(frame, gene_map=self.gene_map, missing="values", impute_values=self.medians_)
        imputed = np.array([p in scores.imputed_genes for p in scores.rsi.index], dtype=np.float64)
        out = pd.DataFrame({naming.genomic_column("rsi"): scores.rsi.to_numpy(),
                            naming.genomic_column("rsi_imputed"): imputed}, index=frame.index)
        return _output(out, as_frame)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "medians_")
        return np.asarray([naming.genomic_column("rsi"), naming.genomic_column("rsi_imputed")], dtype=object)
