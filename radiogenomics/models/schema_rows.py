"""JSON-like feature rows straight into a schema-shaped table (the REST API's per-request path).

``Prescriber.prepare(frame_from_features(rows))`` builds a DataFrame of the columns sent, then reindexes and
casts it to the schema: two passes of pandas bookkeeping over ~1,400 columns, ~11 ms for one patient. For the
common case, rows whose keys are all schema columns and whose values already have the schema's types,
:func:`table_from_rows` writes the values into one float64 block plus the few non-float columns and orders
them once: the same table (same columns, dtypes, values and index) in ~1.5 ms. Any other input (regimen or
unknown keys, a number for a text column, an integer column given a float, an infinite value) returns None
and the caller takes the general path, which validates and explains.

Written here rather than with pandas' constructors because those infer a dtype per column from Python objects
(``DataFrame.from_records``) or hash every column name on each reindex; the layout below is computed once per
schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.features import naming
from radiogenomics.features.schema import AVAILABILITY, OUTCOME, FeatureSchema

try:  # pandas >= 3.0: a DataFrame from arrays and their column positions (pandas.api.internals, public)
    from pandas.api.internals import create_dataframe_from_blocks as _from_blocks
except ImportError:  # pandas 2.x: concatenate, then reorder (tests/test_schema_rows.py runs both paths)
    _from_blocks = None

#: Schema dtypes of text columns (values must be Python ``str``).
TEXT_DTYPES = frozenset({"str", "string"})
#: Schema dtypes of integer columns built here (values must be Python ``int`` in the dtype's range).
_INT_BOUNDS: dict[str, tuple[int, int]] = {d: (int(np.iinfo(d.lower()).min), int(np.iinfo(d.lower()).max))
                                           for d in ("int8", "Int64")}


@dataclass(frozen=True)
class SchemaLayout:
    """Where each schema column goes: float64 block position, or one of the other (text/integer) columns."""

    float_names: tuple[str, ...]
    float_position: Mapping[str, int]
    other_dtype: Mapping[str, str]
    availability: frozenset[str]
    outcome: frozenset[str]
    outcome_float_positions: np.ndarray
    order: np.ndarray  # positions in (float block + others) of the schema's columns, in schema order
    float_placement: np.ndarray  # schema positions of the float block's columns
    other_placement: Mapping[str, int]  # schema position of each other column
    columns: pd.Index

    @classmethod
    def of(cls, schema: FeatureSchema) -> SchemaLayout | None:
        """The layout of ``schema``; None when a column's dtype is not float64, text, int8 or Int64."""
        floats = [c.name for c in schema.columns if c.dtype == "float64"]
        others = {c.name: c.dtype for c in schema.columns if c.dtype != "float64"}
        if any(d not in TEXT_DTYPES and d not in _INT_BOUNDS for d in others.values()):
            return None
        combined = pd.Index([*floats, *others])
        outcome = frozenset(c.name for c in schema.columns if c.group == OUTCOME)
        position = {name: i for i, name in enumerate(schema.names)}
        return cls(float_names=tuple(floats),
                   float_position={name: i for i, name in enumerate(floats)}, other_dtype=others,
                   availability=frozenset(c.name for c in schema.columns if c.group == AVAILABILITY),
                   outcome=outcome,
                   outcome_float_positions=np.array([i for i, c in enumerate(floats) if c in outcome], dtype=np.intp),
                   order=combined.get_indexer(list(schema.names)),
                   float_placement=np.array([position[c] for c in floats], dtype=np.intp),
                   other_placement={c: position[c] for c in others}, columns=pd.Index(schema.names))


def table_from_rows(rows: Sequence[Mapping[str, Any]], layout: SchemaLayout) -> pd.DataFrame | None:
    """The schema-shaped table of ``rows`` (``{"patient_id": ..., "<column>": value}``), as
    :meth:`Prescriber.prepare` makes it (absent = missing; 0 for ``available.*``; ``outcome.*`` always missing;
    ``patient_id`` as sent); None when the rows need the general path (see the module docstring)."""
    n = len(rows)
    if n == 0:
        return None
    block = np.full((n, len(layout.float_names)), np.nan)
    others: dict[str, list[Any]] = {name: [None] * n for name in layout.other_dtype}
    position, other_dtype = layout.float_position, layout.other_dtype
    for i, row in enumerate(rows):
        pid = row.get(naming.PATIENT_ID)
        if not isinstance(pid, str) or not pid:
            return None
        for key, value in row.items():
            if value is None:
                continue
            j = position.get(key)
            if j is not None:
                if type(value) is float or type(value) is int:
                    block[i, j] = value
                    continue
                return None
            dtype = other_dtype.get(key)
            if dtype is None or not _fits(value, dtype) or (key in layout.availability and value not in (0, 1)):
                return None
            others[key][i] = value
    block[:, layout.outcome_float_positions] = np.nan  # labels are never inputs
    if np.isinf(block).any():
        return None  # the general path names the column and the patient
    if any(dtype == "int8" and name not in layout.availability and None in others[name]
           for name, dtype in other_dtype.items()):
        return None  # a missing value in a plain int8 column: the general path decides
    columns = {name: _column(name, values, layout) for name, values in others.items()}
    if _from_blocks is not None:  # each array placed at its schema position: no copy, no reordering
        blocks: list[tuple[Any, np.ndarray]] = [(np.ascontiguousarray(block.T), layout.float_placement)]
        for name, array in columns.items():
            values = array if isinstance(array, pd.api.extensions.ExtensionArray) else array.reshape(1, -1)
            blocks.append((values, np.array([layout.other_placement[name]], dtype=np.intp)))
        return _from_blocks(blocks, index=pd.RangeIndex(n), columns=layout.columns)
    parts = [pd.DataFrame(block, columns=list(layout.float_names))]
    if columns:
        parts.append(pd.DataFrame(columns))
    frame = pd.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    return frame.iloc[:, layout.order]


def _fits(value: Any, dtype: str) -> bool:
    if dtype in TEXT_DTYPES:
        return type(value) is str
    low, high = _INT_BOUNDS[dtype]
    return type(value) is int and low <= value <= high


def _column(name: str, values: list[Any], layout: SchemaLayout) -> Any:
    """The array of one text or integer column (an ExtensionArray, or a 1-D int8 ndarray)."""
    dtype = layout.other_dtype[name]
    if name in layout.outcome:
        values = [None] * len(values)  # labels are never inputs
    elif name in layout.availability:
        values = [0 if v is None else v for v in values]
    if dtype == "int8":
        return np.asarray(values, dtype=np.int8)
    return pd.array(values, dtype=dtype)
