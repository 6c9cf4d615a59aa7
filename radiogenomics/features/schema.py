"""The feature table's schema: which group each column belongs to, and which groups are features by default.

Groups (contract section 1, "The feature table"):

* ``imaging``: handcrafted radiomics, ``<modality>.<roi>.<pyradiomics key>``
* ``deep``: MONAI embeddings, ``deep.<modality>.<roi>.<i>``
* ``genomic``: ``genomic.*`` (RSI, signature scores, coverage)
* ``dose``: organ-at-risk dosimetry, ``dose.<oar>.<metric>``
* ``treatment``: what was delivered to the target: ``clinical.total_dose_gy``, ``clinical.n_fractions``,
  ``clinical.dose_per_fraction_gy`` and ``dose.<gtv|ctv|ptv|itv...>.<metric>``
* ``clinical``: the other patients.csv covariates, ``clinical.*``
* ``outcome``: outcome-like columns (``*_event``, ``*_months``, ``lc_*``, ``tox_*``, ``os_*``, ``pfs_*``)
* ``availability``: ``available.<source>`` 0/1 flags

``dose``, ``treatment`` and ``outcome`` are groups a model must opt into: they never become features by
default (a radiosensitivity model that learns from the delivered dose learns the prescriber's habits, and an
outcome column is a label).

The Parquet file carries the schema in its key-value metadata (:data:`METADATA_KEYS`): the schema version,
each column's name, group and dtype in table order, the extraction parameters and the code version.
:func:`read_feature_schema` reads it back; :func:`reindex_to_schema` gives a new cohort exactly those columns.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.features import naming

log = logging.getLogger(__name__)

IMAGING = "imaging"
DEEP = "deep"
GENOMIC = "genomic"
DOSE = "dose"
TREATMENT = "treatment"
CLINICAL = "clinical"
OUTCOME = "outcome"
AVAILABILITY = "availability"
ID = "id"

GROUPS: tuple[str, ...] = (IMAGING, DEEP, GENOMIC, DOSE, TREATMENT, CLINICAL, OUTCOME, AVAILABILITY)
#: Groups that are model features unless a model opts out.
DEFAULT_FEATURE_GROUPS: tuple[str, ...] = (IMAGING, DEEP, GENOMIC, CLINICAL, AVAILABILITY)
#: Groups a model must opt into explicitly.
OPT_IN_GROUPS: tuple[str, ...] = (DOSE, TREATMENT, OUTCOME)

#: Namespace of outcome-like columns copied from patients.csv.
OUTCOME_NAMESPACE = naming.OUTCOME
#: patients.csv columns that describe the delivered treatment, not the patient.
TREATMENT_CLINICAL = frozenset({"total_dose_gy", "n_fractions", "dose_per_fraction_gy", "treatment_days",
                                "overall_treatment_time_days"})
_OUTCOME_NAME = re.compile(r"^(lc|tox|os|pfs|dfs|dmfs|lrc)_|_(event|months|status|days)$")
#: Target volumes (ICRU 50/62 names and TG-263 variants): dose to them is the prescription, a treatment variable.
_TARGET_ROI = re.compile(r"^(gtv|ctv|ptv|itv)(_|$|[0-9])")


def is_outcome_name(name: str) -> bool:
    """True for a patients.csv column that looks like an outcome or label (``os_event``, ``pfs_months``, ...)."""
    return bool(_OUTCOME_NAME.search(name.strip().lower()))


def is_target_roi(roi: str) -> bool:
    """True for a target volume (``gtv``, ``ctv_high``, ``ptv70``), whose dose is a treatment variable."""
    return bool(_TARGET_ROI.match(naming.slug(roi)))


def column_group(column: str) -> str:
    """The schema group of a feature-table column (see the module docstring); ``id`` for ``patient_id``."""
    if column == naming.PATIENT_ID:
        return ID
    ns, _, rest = column.partition(".")
    if not rest:
        raise ValueError(f"column {column!r} has no namespace (expected '<namespace>.<name>')")
    if ns == naming.AVAILABLE:
        return AVAILABILITY
    if ns == naming.DEEP:
        return DEEP
    if ns == naming.GENOMIC:
        return GENOMIC
    if ns == OUTCOME_NAMESPACE:
        return OUTCOME
    if ns == naming.DOSE:
        return TREATMENT if is_target_roi(rest.split(".", 1)[0]) else DOSE
    if ns == naming.CLINICAL:
        if rest in TREATMENT_CLINICAL:
            return TREATMENT
        return OUTCOME if is_outcome_name(rest) else CLINICAL
    return IMAGING


#: Version of the schema metadata layout (bump when the keys or their meaning change).
SCHEMA_VERSION = 1
KEY_SCHEMA_VERSION = "radiogenomics.schema_version"
KEY_COLUMNS = "radiogenomics.columns"
KEY_PARAMS = "radiogenomics.params"
KEY_VERSION = "radiogenomics.version"
METADATA_KEYS: tuple[str, ...] = (KEY_SCHEMA_VERSION, KEY_COLUMNS, KEY_PARAMS, KEY_VERSION)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the feature table: name, schema group and pandas dtype (as ``str(dtype)``)."""

    name: str
    group: str
    dtype: str


@dataclass(frozen=True)
class FeatureSchema:
    """What a feature table contains and how it was made (the Parquet ``radiogenomics.*`` metadata)."""

    columns: tuple[ColumnSpec, ...]
    params: dict[str, Any] = field(default_factory=dict)
    version: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def group_of(self) -> dict[str, str]:
        """Column name -> group."""
        return {c.name: c.group for c in self.columns}

    def to_metadata(self) -> dict[str, str]:
        """The Parquet key-value metadata (all values are strings, JSON where structured)."""
        return {
            KEY_SCHEMA_VERSION: str(self.schema_version),
            KEY_COLUMNS: json.dumps([{"name": c.name, "group": c.group, "dtype": c.dtype} for c in self.columns],
                                    separators=(",", ":")),
            KEY_PARAMS: json.dumps(self.params, sort_keys=True, separators=(",", ":"), default=str),
            KEY_VERSION: json.dumps(self.version, sort_keys=True, separators=(",", ":")),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[bytes | str, bytes | str], source: str = "") -> FeatureSchema:
        """Parse :meth:`to_metadata` output; InputError naming ``source`` when a key is absent or malformed."""
        text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in (metadata or {}).items()}
        if KEY_SCHEMA_VERSION not in text or KEY_COLUMNS not in text:
            raise InputError("the table carries no radiogenomics schema metadata", file=source or None,
                             fix="use a feature table written by `radiogenomics extract` (this version or later)")
        try:
            version = int(text[KEY_SCHEMA_VERSION])
            columns = tuple(ColumnSpec(str(c["name"]), str(c["group"]), str(c["dtype"]))
                            for c in json.loads(text[KEY_COLUMNS]))
            params = json.loads(text.get(KEY_PARAMS, "{}"))
            code = json.loads(text.get(KEY_VERSION, "{}"))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"malformed radiogenomics schema metadata: {exc}", file=source or None,
                             fix="re-extract the reference table with `radiogenomics extract`") from exc
        if version > SCHEMA_VERSION:
            raise InputError(f"schema version {version} is newer than this package understands ({SCHEMA_VERSION})",
                             file=source or None, fix="upgrade radiogenomics")
        return cls(columns=columns, params=dict(params), version=dict(code), schema_version=version)


def build_schema(table: pd.DataFrame, params: Mapping[str, Any] | None = None) -> FeatureSchema:
    """The schema of a fused table (columns in table order, with their groups and dtypes)."""
    columns = tuple(ColumnSpec(str(c), column_group(str(c)), str(t)) for c, t in table.dtypes.items())
    return FeatureSchema(columns=columns, params=dict(params or {}), version=code_version())


def read_feature_schema(path: Path | str) -> FeatureSchema:
    """The schema stored in a feature table's Parquet metadata (InputError when absent or unreadable)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"feature table {path} does not exist", file=str(path),
                         fix="give the Parquet file written by `radiogenomics extract`")
    try:
        metadata = pq.read_schema(path).metadata
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise InputError(f"cannot read the Parquet schema: {exc}", file=str(path),
                         fix="give the Parquet file written by `radiogenomics extract`") from exc
    return FeatureSchema.from_metadata(metadata or {}, source=str(path))


def read_feature_table(path: Path | str) -> pd.DataFrame:
    """A feature table with exactly the dtypes its schema records (Parquet alone loses pandas' nullable
    integers: ``Int64`` comes back as ``int64``, or ``float64`` when a value is missing)."""
    schema = read_feature_schema(path)
    table = pd.read_parquet(path)
    if table.columns.tolist() != schema.names:
        raise InputError("the table's columns differ from its schema metadata", file=str(path),
                         fix="re-extract it with `radiogenomics extract`")
    return pd.DataFrame({c.name: _cast(table[c.name], c) for c in schema.columns}, index=table.index)


@lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """``{"package": <version>, "code_sha256": <digest>}``: the package version and
    :func:`radiogenomics.features.provenance.package_digest`, the SHA-256 over the names and bytes of every
    file of the package (so an edited signature YAML or module changes it)."""
    import radiogenomics
    from radiogenomics.features.provenance import package_digest

    return {"package": str(radiogenomics.__version__), "code_sha256": package_digest()}


def reindex_to_schema(table: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, list[str]]:
    """``table`` with exactly the schema's columns, in its order, cast to its dtypes; and the dropped columns.

    A column the schema has and the table lacks is all missing (NaN; 0 for an ``available.*`` flag: that
    source produced nothing; a flag missing in some rows is 0 there too). Columns the table has beyond the
    schema are dropped and returned.
    """
    names = schema.names
    known = set(names)
    columns = table.columns.tolist()  # iterating a pandas Index is ~20x slower than its list
    if len(set(columns)) != len(columns):
        twice = sorted({str(c) for c in columns if columns.count(c) > 1})
        raise InputError(f"column(s) {', '.join(twice[:10])} appear more than once",
                         fix="give each feature column once")
    dropped = [str(c) for c in columns if c not in known]
    text: dict[Any, str] = {}  # str() of each distinct dtype once (~7 us each)
    dtypes = {c: text.get(t) or text.setdefault(t, str(t)) for c, t in zip(columns, table.dtypes.tolist(), strict=True)}
    same: list[str] = []  # present with the schema's dtype: taken in one block
    absent_float: list[str] = []  # absent float64 columns: one NaN block
    out: dict[str, pd.Series] = {}
    for spec in schema.columns:
        if spec.name in dtypes:
            if dtypes[spec.name] == spec.dtype:
                same.append(spec.name)
            elif spec.group == AVAILABILITY:  # a flag left out for some rows: that source produced nothing
                out[spec.name] = _cast(table[spec.name].fillna(0), spec)
            else:
                out[spec.name] = _cast(table[spec.name], spec)
        elif spec.group == AVAILABILITY:
            out[spec.name] = pd.Series(np.zeros(len(table), dtype=np.int8), index=table.index).astype(spec.dtype)
        elif spec.dtype == "float64":
            absent_float.append(spec.name)
        else:
            out[spec.name] = _missing(len(table), table.index, spec.dtype)
    if len(same) == len(names):
        return table[names], dropped
    parts = [table[same]] if same else []
    if absent_float:
        parts.append(pd.DataFrame(np.full((len(table), len(absent_float)), np.nan), index=table.index,
                                  columns=absent_float))
    if out:
        parts.append(pd.DataFrame(out, index=table.index))
    if not parts:
        return pd.DataFrame(index=table.index), dropped
    return pd.concat(parts, axis=1)[names], dropped


def _missing(n: int, index: pd.Index, dtype: str) -> pd.Series:
    try:
        return pd.Series([None] * n, index=index, dtype=dtype)
    except (TypeError, ValueError):
        return pd.Series(np.full(n, np.nan), index=index)


def _cast(column: pd.Series, spec: ColumnSpec) -> pd.Series:
    if str(column.dtype) == spec.dtype:
        return column
    if column.isna().all():
        return _missing(len(column), column.index, spec.dtype)
    try:
        return column.astype(spec.dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"column {spec.name} is {column.dtype} here but {spec.dtype} in the reference table: "
                         f"{exc}", fix="make the cohort's values match the reference cohort's type") from exc
