"""Fast prediction through fitted preprocessing pipelines: the same numbers without the per-step overhead.

Every fitted fold model of the RSI surrogate and of the toxicity classifiers is a scikit-learn ``Pipeline``
that starts ``FeatureSelector -> GroupImputer -> FeatureScaler -> ColumnTransformer(OneHotEncoder on the text
columns, numeric columns passed through)``. Scikit-learn's input validation and pandas' column bookkeeping
cost several milliseconds per step whatever the number of patients, and a prescription runs eight such
pipelines (5 CV+ folds, 3 calibration folds). :func:`accelerated` returns a deep copy of a fitted model in
which each such prefix is one :class:`CompiledPrefix` step: the same fill values, the same ``(x - centre) /
scale`` element by element, the same one-hot columns, on one float64 array, handed to the rest of the
pipeline (screening, the regressor or classifier) as the same values under the same column names. A prefix
of another shape is left as it is; an input the compiled step does not cover (other columns, a text value
that is not a string, a missing value in a non-float column) goes through the original steps.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import SelectorMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from radiogenomics.features.preprocessing import FeatureScaler, FeatureSelector, GroupImputer

log = logging.getLogger(__name__)

#: Objects of these packages are searched for fitted pipelines by :func:`accelerated`.
_SEARCHED_PACKAGES = ("sklearn", "mapie", "radiogenomics")


class _Unsupported(Exception):
    """This input needs the original steps."""


class CompiledPrefix(BaseEstimator):  # type: ignore[misc]
    """The fitted ``FeatureSelector, GroupImputer, FeatureScaler, ColumnTransformer`` steps as one transform.

    ``transform(X)`` returns what the four steps return (a DataFrame with the encoder's output names), as
    float64 columns. Built by :func:`compile_pipeline`; not fitted on its own (``fit`` returns self).
    """

    def __init__(self, steps: Sequence[Any], support: np.ndarray | None = None,
                 names_out: Sequence[str] | None = None) -> None:
        self.steps = steps
        self.support = support
        self.names_out = names_out
        selector, imputer, scaler, encoder = steps[:4]
        self.names_in_ = pd.Index(np.asarray(selector.feature_names_in_, dtype=object))
        self.selected_ = [str(c) for c in selector.columns_]
        self.selected_pos_ = self.names_in_.get_indexer(self.selected_)
        self.fill_ = dict(imputer.statistics_)
        stats = [self.fill_[c] for c in self.selected_]
        self.numeric_fill_ = np.array([isinstance(v, int | float) and not isinstance(v, bool) for v in stats])
        self.fill_array_ = np.array([float(v) if ok else np.nan for v, ok in zip(stats, self.numeric_fill_,
                                                                                strict=True)])
        encoder_in = [str(c) for c in encoder.feature_names_in_]
        indicators = list(imputer.indicator_columns_)
        if encoder_in != self.selected_ + [f"{c}__missing" for c in indicators]:
            raise _Unsupported("the encoder's inputs are not the imputer's outputs")
        self.indicator_pos_ = np.array([self.selected_.index(c) for c in indicators], dtype=np.intp)
        self.scaled_pos_ = np.array([encoder_in.index(c) for c in scaler.center_], dtype=np.intp)
        self.center_ = np.array(list(scaler.center_.values()), dtype=np.float64)
        self.scale_ = np.array([scaler.scale_[c] for c in scaler.center_], dtype=np.float64)
        self.text_, self.remainder_ = _encoder_plan(encoder)
        self.n_encoded_ = sum(len(kept) for _, kept in self.text_) + len(self.remainder_)
        self.numeric_in_ = set(self.remainder_) | {int(i) for i in self.scaled_pos_}  # encoder inputs used as numbers
        if self.n_encoded_ != len(encoder.get_feature_names_out()):
            raise _Unsupported("the encoder's output columns do not match its plan")
        self.n_features_in_ = len(self.names_in_)

    def fit(self, X: Any, y: Any = None) -> CompiledPrefix:
        return self

    def transform(self, X: pd.DataFrame) -> Any:
        try:
            return self._transform(X)
        except _Unsupported as why:
            log.debug("compiled preprocessing not applicable (%s): the original steps run", why)
            out = X
            for step in self.steps:
                out = step.transform(out)
            return out

    def _transform(self, X: pd.DataFrame) -> Any:
        if not isinstance(X, pd.DataFrame) or len(X) == 0 or not X.columns.equals(self.names_in_):
            raise _Unsupported("not the columns the pipeline was fitted on")
        n, n_selected = len(X), len(self.selected_)
        is_float = (X.dtypes == np.float64).to_numpy()[self.selected_pos_]
        block = X.iloc[:, self.selected_pos_[is_float]].to_numpy(dtype=np.float64)
        if np.isinf(block).any():
            raise _Unsupported("infinite values (the original steps raise)")
        wide = np.full((n, n_selected + len(self.indicator_pos_)), np.nan)
        missing = np.zeros((n, n_selected), dtype=bool)
        missing[:, is_float] = np.isnan(block)
        if (is_float & ~self.numeric_fill_).any():
            raise _Unsupported("a float column whose training fill value is not a number")
        fills = self.fill_array_[is_float]
        wide[:, :n_selected][:, is_float] = np.where(missing[:, is_float], fills, block)
        texts: dict[str, list[Any]] = {}
        for i in np.flatnonzero(~is_float):
            name = self.selected_[i]
            missing[:, i], numeric = self._other_column(X[name], name, texts)
            if numeric is not None:
                wide[:, i] = numeric
            elif i in self.numeric_in_:
                raise _Unsupported(f"column {name} is text here but scaled or passed through")
        wide[:, self.scaled_pos_] = (wide[:, self.scaled_pos_] - self.center_) / self.scale_
        wide[:, n_selected:] = missing[:, self.indicator_pos_].astype(np.int8)
        encoded = np.empty((n, self.n_encoded_), dtype=np.float64)
        position = 0
        for name, kept in self.text_:
            values = texts.get(name)
            if values is None:
                raise _Unsupported(f"text column {name} is numeric here")
            for category in kept:
                encoded[:, position] = [1.0 if v == category else 0.0 for v in values]
                position += 1
        encoded[:, position:] = wide[:, self.remainder_]
        if self.support is not None:
            encoded = encoded[:, self.support]
        if self.names_out is None:
            return encoded
        return pd.DataFrame(encoded, index=X.index, columns=list(self.names_out))

    def _other_column(self, column: pd.Series, name: str,
                      texts: dict[str, list[Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        """(missing, float values or None for text) of a selected column that is not float64."""
        isna = column.isna().to_numpy()
        fill = self.fill_[name]
        if isna.any():
            if fill is None or pd.api.types.is_numeric_dtype(column.dtype):
                raise _Unsupported(f"missing value in column {name}")
            column = column.fillna(fill)
        if pd.api.types.is_numeric_dtype(column.dtype):
            return isna, column.to_numpy(dtype=np.float64)
        values = column.tolist()
        if not all(isinstance(v, str) for v in values):
            raise _Unsupported(f"column {name} holds values that are not strings")
        texts[name] = values
        return isna, None


def _encoder_plan(encoder: ColumnTransformer) -> tuple[list[tuple[str, list[str]]], list[int]]:
    """(text column -> its output categories in order, passthrough column indices) of a fitted encoder."""
    if getattr(encoder, "sparse_output_", False) or encoder.verbose_feature_names_out:
        raise _Unsupported("sparse or prefixed encoder output")
    text: list[tuple[str, list[str]]] = []
    remainder: list[int] = []
    names_in = [str(c) for c in encoder.feature_names_in_]
    for _, transformer, selection in encoder.transformers_:
        indices = _indices(selection, names_in)
        if transformer == "drop" or not indices:
            continue
        if transformer == "passthrough" or (isinstance(transformer, FunctionTransformer)
                                            and transformer.func is None and transformer.inverse_func is None):
            remainder.extend(indices)
        elif isinstance(transformer, OneHotEncoder):
            if (transformer.handle_unknown != "ignore" or transformer.min_frequency is not None
                    or transformer.max_categories is not None or np.dtype(transformer.dtype) != np.float64):
                raise _Unsupported("one-hot encoder options")
            drop = transformer.drop_idx_ if transformer.drop_idx_ is not None else [None] * len(indices)
            for index, categories, dropped in zip(indices, transformer.categories_, drop, strict=True):
                if not all(isinstance(c, str) for c in categories):
                    raise _Unsupported("a category that is not a string")
                kept = [str(c) for i, c in enumerate(categories) if dropped is None or i != dropped]
                text.append((names_in[index], kept))
        else:
            raise _Unsupported(f"encoder step {type(transformer).__name__}")
    return text, remainder


def _indices(selection: Any, names: list[str]) -> list[int]:
    """Column positions of a ColumnTransformer column selection (names, positions or a boolean mask)."""
    values = list(np.asarray(selection).ravel()) if not isinstance(selection, str) else [selection]
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return [i for i, v in enumerate(values) if v]
    return [names.index(str(v)) if isinstance(v, str) else int(v) for v in values]


def compile_pipeline(pipeline: Pipeline) -> Pipeline | None:
    """A pipeline whose first four fitted steps are one :class:`CompiledPrefix`; None when not applicable."""
    steps = [step for _, step in pipeline.steps]
    if len(steps) < 5 or not (isinstance(steps[0], FeatureSelector) and isinstance(steps[1], GroupImputer)
                              and isinstance(steps[2], FeatureScaler) and isinstance(steps[3], ColumnTransformer)):
        return None
    if not all(hasattr(s, a) for s, a in zip(steps, ("columns_", "statistics_", "center_", "transformers_"),
                                               strict=False)):
        return None  # an unfitted template
    rest = pipeline.steps[4:]
    support, names_out = None, None
    if len(rest) >= 2 and isinstance(rest[0][1], SelectorMixin) and not _pandas_output(rest[0][1]):
        support = rest[0][1].get_support()  # screening folded in: the regressor gets the same array
        rest = rest[1:]
    elif not isinstance(rest[0][1], SelectorMixin):
        names_out = [str(c) for c in steps[3].get_feature_names_out()]
    else:
        return None
    if support is None and names_out is None:
        return None
    try:
        prefix = CompiledPrefix(steps[:4], support=support, names_out=names_out)
    except (_Unsupported, AttributeError, ValueError) as why:
        log.debug("pipeline not compiled: %s", why)
        return None
    return Pipeline([("compiled", prefix), *rest])


def _pandas_output(step: Any) -> bool:
    """True when ``step.transform`` is configured to return a DataFrame (``set_output(transform="pandas")``)."""
    return getattr(step, "_sklearn_output_config", {}).get("transform") == "pandas"


def accelerated(model: Any) -> Any:
    """A deep copy of a fitted ``model`` with every compilable fitted pipeline inside it compiled.

    Searches the attributes of scikit-learn, MAPIE and radiogenomics objects, and lists, tuples and dicts,
    for fitted :class:`~sklearn.pipeline.Pipeline` objects (:func:`compile_pipeline`). The original is not
    changed.
    """
    clone = copy.deepcopy(model)
    return _replace(clone, set())


def _replace(obj: Any, seen: set[int]) -> Any:
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, Pipeline):
        return compile_pipeline(obj) or obj
    if isinstance(obj, list):
        obj[:] = [_replace(v, seen) for v in obj]
    elif isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_replace(v, seen) for v in obj)
    elif isinstance(obj, dict):
        for key, value in list(obj.items()):
            obj[key] = _replace(value, seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in _SEARCHED_PACKAGES:
        for key, value in list(vars(obj).items()):
            if isinstance(value, (list, tuple, dict)) or hasattr(value, "__dict__"):
                new = _replace(value, seen)
                if new is not value:
                    setattr(obj, key, new)
    return obj
