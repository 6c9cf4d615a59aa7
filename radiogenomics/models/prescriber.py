"""The prescriber: feature rows -> prescription records (contract section 2).

:class:`Prescriber` holds the feature schema it was trained on, a fitted
:class:`~radiogenomics.models.radiosensitivity.RSISurrogate`, fitted
:class:`~radiogenomics.models.toxicity.ToxicityClassifier` per endpoint, an
:class:`~radiogenomics.models.applicability.ApplicabilityDomain` and the population RSI of the training
cohort. For each patient it

1. reindexes the row to the schema (unknown columns and non-finite numbers are an ``InputError`` naming them;
   absent columns are missing, NaN), see :meth:`Prescriber.prepare`;
2. predicts the RSI and its 90 % interval (the measured ``genomic.rsi`` when present; else from imaging, flag
   ``missing_genomics``); flags ``missing_imaging`` when an imaging source the schema has is unavailable, or
   every feature of one of its imaging items (``<modality>.<roi>``) is missing (a failed extraction);
3. checks the applicability domain of the imaging (and any RSI clipped at the surrogate's bounds: not a
   surviving fraction): outside it the record is flagged ``out_of_distribution``
   and, where the RSI would come from imaging, replaced by the population RSI and interval
   (``population_fallback``); an RSI outside the LQ domain falls back the same way (:func:`patient_lq`);
4. turns the RSI into LQ parameters (Scott et al., Lancet Oncol 2017;18:202, beta = 0.05 Gy^-2) and dose
   figures with :func:`radiogenomics.radiobiology.dose_targets` (GARD dose, safety rails, whole-fraction
   regimen, the doses at the two ends of the RSI interval);
5. predicts P(grade >= 2) per toxicity endpoint at the recommended total dose
   (``ToxicityClassifier.predict_proba_at_dose``), keyed ``<endpoint>_grade_ge2``;
6. hashes the exact inputs (:func:`input_sha256`).

See ``docs/registry.md`` for the defaults and their sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.features.preprocessing import numeric_matrix
from radiogenomics.features.schema import AVAILABILITY, IMAGING, OUTCOME, FeatureSchema, reindex_to_schema
from radiogenomics.models.rsi_measured import SOURCE_PREDICTED_WITHOUT_IMAGES
from radiogenomics.radiobiology import DEFAULT_BETA_PER_GY2, alpha_from_rsi, check_rsi, dose_targets, patient_lq
from radiogenomics.radiobiology.gard import FLAG_OUT_OF_DISTRIBUTION, FLAG_POPULATION_FALLBACK

log = logging.getLogger(__name__)

#: Optional per-row regimen columns of the prescriber's input (contract section 4).
REGIMEN_COLUMNS: tuple[str, ...] = ("n_fractions", "dose_per_fraction_gy", "target_gard")
#: Conventional fractionation, 35 x 2 Gy = 70 Gy (head and neck standard of care, e.g. RTOG 0522).
DEFAULT_N_FRACTIONS = 35
DEFAULT_DOSE_PER_FRACTION_GY = 2.0
#: Target GARD "often quoted" (Scott et al. 2017; **unverified**, site and cohort dependent, see
#: docs/radiobiology.md): the model's default, always written into every record, overridable per row.
DEFAULT_TARGET_GARD = 33.0
#: Attributes computed on first use from the others: never pickled (rebuilt after loading).
_DERIVED = ("_fast", "_fast_checked", "_layout", "_availability", "_item_positions")
#: The record's fields in the contract's order (section 2).
RECORD_FIELDS: tuple[str, ...] = (
    "patient_id", "model_name", "model_version", "model_uri", "rsi", "rsi_lower", "rsi_upper", "alpha_per_gy",
    "beta_per_gy2", "alpha_beta_gy", "dose_per_fraction_gy", "n_fractions", "gard", "target_gard",
    "dose_for_target_gard_gy", "recommended_total_dose_gy", "toxicity", "recommended_n_fractions",
    "recommended_dose_per_fraction_gy", "dose_for_target_gard_lower_gy", "dose_for_target_gard_upper_gy", "flags",
    "input_sha256", "created_at")
FLAG_MISSING_GENOMICS = "missing_genomics"
FLAG_MISSING_IMAGING = "missing_imaging"
RSI_COLUMN = naming.RSI_COLUMN
SITE_COLUMN = naming.clinical_column("site")
TOTAL_DOSE_COLUMN = naming.clinical_column("total_dose_gy")
#: Version of the canonical serialisation hashed into ``input_sha256`` (bump when it changes).
HASH_FORMAT = "radiogenomics-input/1"


@dataclass(frozen=True)
class ModelInfo:
    """The registry entry that produces the records (empty strings when the model is not registered)."""

    name: str = ""
    version: str = ""
    uri: str = ""


def toxicity_key(endpoint: str) -> str:
    """Record key of a trained toxicity endpoint: ``xerostomia`` -> ``xerostomia_grade_ge2`` (docs/radiobiology.md)."""
    return f"{endpoint}_grade_ge2"


def population_rsi(measured_rsi: Any, beta_per_gy2: float = DEFAULT_BETA_PER_GY2,
                   confidence_level: float = 0.9) -> tuple[float, float, float]:
    """(median, lower, upper) of the training cohort's measured RSI inside the LQ domain.

    The bounds are the central ``confidence_level`` percentiles (5th and 95th for 0.9): the population's own
    90 % interval, used by the fallback. InputError when no measured RSI is usable.
    """
    values = pd.to_numeric(pd.Series(np.asarray(measured_rsi, dtype=object).ravel()), errors="coerce")
    values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    usable = np.array([np.isfinite(v) and not check_rsi(float(v), beta_per_gy2) for v in values], dtype=bool)
    if not usable.any():
        raise InputError("no measured RSI in the LQ domain in the training table",
                         fix="train on a cohort with expression data (genomic.rsi)")
    tail = 50.0 * (1.0 - confidence_level)
    low, median, high = np.percentile(values[usable], [tail, 50.0, 100.0 - tail])
    return float(median), float(low), float(high)


def _canonical_value(value: Any) -> Any:
    """JSON-ready value: None for missing, float for numbers (shortest repr), str otherwise."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return None if math.isnan(number) else number
    return str(value)


def input_sha256(row: Mapping[str, Any], regimen: Mapping[str, float], model: ModelInfo) -> str:
    """SHA-256 (hex) of the canonical serialisation of one patient's exact inputs.

    Canonical form (``HASH_FORMAT``): UTF-8 JSON with sorted keys, no whitespace, ``allow_nan=False``, of
    ``{"format", "features": {column: value}, "regimen": {n_fractions, dose_per_fraction_gy, target_gard},
    "model": {"name", "version"}}``; numbers as floats (Python's shortest round-trip repr), missing values as
    null, text as strings. ``features`` are the reindexed schema columns the models see (without
    ``patient_id`` and ``outcome.*``).
    """
    return _digest({str(k): _canonical_value(v) for k, v in row.items()}, regimen, model)


def _digest(features: Mapping[str, Any], regimen: Mapping[str, float], model: ModelInfo) -> str:
    """:func:`input_sha256` of features already in canonical form (:func:`canonical_rows`)."""
    payload = {"format": HASH_FORMAT, "features": features,
               "regimen": {k: _canonical_value(v) for k, v in regimen.items()},
               "model": {"name": model.name, "version": model.version}}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_rows(table: pd.DataFrame, columns: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Per row of ``table``, ``{column: _canonical_value(cell)}`` of ``columns`` (default all): what
    :func:`input_sha256` hashes.

    The float64 columns are converted in one block (``tolist`` gives the same Python floats as ``float``
    of each cell); the few others cell by cell.
    """
    names = [str(c) for c in table.columns.tolist()]
    chosen = None if columns is None else columns if isinstance(columns, frozenset | set) else set(columns)
    wanted = np.array([chosen is None or c in chosen for c in names], dtype=bool)
    is_float = (table.dtypes == np.float64).to_numpy() & wanted
    others_mask = ~is_float & wanted
    floats = [c for c, f in zip(names, is_float, strict=True) if f]
    others = [c for c, f in zip(names, others_mask, strict=True) if f]
    block = table.iloc[:, np.flatnonzero(is_float)].to_numpy(dtype=np.float64).tolist()
    other_values = [[_canonical_value(v) for v in table.iloc[:, i].tolist()] for i in np.flatnonzero(others_mask)]
    rows = []
    for i, values in enumerate(block):
        row = dict(zip(floats, [None if v != v else v for v in values], strict=True))  # v != v: NaN
        row.update((c, column[i]) for c, column in zip(others, other_values, strict=True))
        rows.append(row)
    return rows


def frame_from_features(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The input table of JSON-like rows (``{"patient_id": ..., "<feature>": value}``) for
    :meth:`Prescriber.predict_records`: the same records as ``pd.DataFrame.from_records(rows)`` gives, built
    in ~5 ms instead of ~18 ms for one row of 1,400 columns.

    Columns in order of first appearance; a key absent from a row is missing. Columns whose values are all
    Python floats or None are built as one float64 block (``from_records`` infers the same; an all-None
    column, object there, is all missing after :func:`reindex_to_schema` either way); every other column
    (ints, text, bools, mixed) is inferred by pandas exactly as ``from_records`` does.
    """
    n = len(rows)
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            values = columns.get(key)
            if values is None:
                values = columns[key] = [None] * n
            values[i] = value
    floats = [k for k, values in columns.items() if all(v is None or type(v) is float for v in values)]
    float_set = set(floats)
    parts = [pd.DataFrame(np.array([columns[k] for k in floats], dtype=np.float64).T.reshape(n, len(floats)),
                          columns=floats)] if floats else []
    others = {k: v for k, v in columns.items() if k not in float_set}
    if others:
        parts.append(pd.DataFrame.from_records([dict(zip(others, values, strict=True))
                                                for values in zip(*others.values(), strict=True)],
                                               columns=list(others)))
    if not parts:
        return pd.DataFrame(index=pd.RangeIndex(n))
    frame = pd.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    return frame if not others or not floats else frame[list(columns)]


class Prescriber:
    """Feature rows -> contract section 2 records (see the module docstring).

    Parameters
    ----------
    schema:
        The training feature table's schema; input rows are reindexed to it.
    radiosensitivity:
        A fitted ``RSISurrogate`` (``predict``, ``predict_interval``, ``predict_source``).
    toxicity:
        Fitted ``ToxicityClassifier`` per endpoint (``{"xerostomia": model}``).
    applicability:
        A fitted :class:`ApplicabilityDomain`, or None (no check).
    population:
        ``(median, lower, upper)`` RSI of the training population (:func:`population_rsi`).
    site:
        Treatment site used when a row has no ``clinical.site`` (selects the rails).
    n_fractions, dose_per_fraction_gy, target_gard:
        Defaults of the regimen columns (:data:`DEFAULT_N_FRACTIONS`, ...).
    beta_per_gy2:
        beta of the RSI -> alpha conversion (Scott 2017: 0.05 Gy^-2).
    """

    def __init__(self, schema: FeatureSchema, radiosensitivity: Any, toxicity: Mapping[str, Any] | None = None,
                 applicability: Any = None, *, population: tuple[float, float, float],
                 site: str = "head_neck", n_fractions: float = DEFAULT_N_FRACTIONS,
                 dose_per_fraction_gy: float = DEFAULT_DOSE_PER_FRACTION_GY,
                 target_gard: float = DEFAULT_TARGET_GARD, beta_per_gy2: float = DEFAULT_BETA_PER_GY2) -> None:
        self.schema = schema
        self.radiosensitivity = radiosensitivity
        self.toxicity = dict(toxicity or {})
        self.applicability = applicability
        self.population = tuple(float(v) for v in population)
        self.site = site
        self.n_fractions = float(n_fractions)
        self.dose_per_fraction_gy = float(dose_per_fraction_gy)
        self.target_gard = float(target_gard)
        self.beta_per_gy2 = float(beta_per_gy2)

    @classmethod
    def from_training(cls, table: pd.DataFrame, schema: FeatureSchema, radiosensitivity: Any,
                      toxicity: Mapping[str, Any] | None = None, *, applicability: Any = "fit",
                      **options: Any) -> Prescriber:
        """A prescriber whose population RSI and applicability domain come from the training ``table``.

        ``applicability="fit"`` fits an :class:`ApplicabilityDomain` on the table's imaging features; pass a
        fitted one, or None to switch the check off. ``options`` go to :class:`Prescriber`; the default
        ``site`` is the table's most frequent ``clinical.site``.
        """
        from radiogenomics.models.applicability import ApplicabilityDomain

        if RSI_COLUMN not in table.columns:
            raise InputError(f"the training table has no {RSI_COLUMN} column", fix="train on a table with genomics")
        beta = float(options.get("beta_per_gy2", DEFAULT_BETA_PER_GY2))
        if applicability == "fit":
            applicability = ApplicabilityDomain().fit(table)
        if "site" not in options and SITE_COLUMN in table.columns and table[SITE_COLUMN].notna().any():
            options["site"] = str(table[SITE_COLUMN].dropna().astype(str).mode().iloc[0])
        return cls(schema, radiosensitivity, toxicity, applicability,
                   population=population_rsi(table[RSI_COLUMN], beta), **options)

    # ------------------------------------------------------------------------------------------- inputs
    @property
    def feature_columns(self) -> list[str]:
        """Schema columns a caller may send (without ``outcome.*``), plus ``patient_id``."""
        return [c.name for c in self.schema.columns if c.group != OUTCOME]

    def imaging_availability_columns(self) -> list[str]:
        """``available.<modality>`` columns of the imaging modalities the schema has features from."""
        cached = self.__dict__.get("_availability")
        if cached is None:
            modalities = {c.name.split(".", 1)[0] for c in self.schema.columns if c.group == IMAGING}
            cached = self._availability = [c.name for c in self.schema.columns
                                           if c.group == AVAILABILITY and c.name.split(".", 1)[1] in modalities]
        return list(cached)

    def imaging_items(self) -> dict[str, list[str]]:
        """``{"<modality>.<roi>": [its imaging feature columns]}`` of the schema (``ct.gtv``, ``pet_fdg.gtv``, ...)."""
        items: dict[str, list[str]] = {}
        for column in self.schema.columns:
            if column.group == IMAGING:
                items.setdefault(".".join(column.name.split(".")[:2]), []).append(column.name)
        return items

    def _missing_imaging_items(self, table: pd.DataFrame) -> np.ndarray:
        """True per row where every feature of some imaging item is missing: that item's extraction failed or
        was not sent (e.g. the GTV mask on another grid while the CT's organ items succeeded, so
        ``available.ct`` is still 1), and the models would see imputed values."""
        cached = self.__dict__.get("_item_positions")
        if cached is None:
            names = {name: i for i, name in enumerate(self.schema.names)}
            positions = [np.array([names[c] for c in columns], dtype=np.intp)
                         for columns in self.imaging_items().values()]
            block = np.concatenate(positions) if positions else np.zeros(0, dtype=np.intp)
            starts = np.cumsum([0] + [p.size for p in positions[:-1]]).astype(np.intp)
            cached = self._item_positions = (block, starts)
        block, starts = cached
        if block.size == 0:
            return np.zeros(len(table), dtype=bool)
        if table.shape[1] != len(self.schema.names):  # prepared tables have the schema's columns, in order
            raise AssertionError("the prescriber's table does not have the schema's columns")
        values = table.iloc[:, block].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(np.logical_and.reduceat(np.isnan(values), starts, axis=1).any(axis=1), dtype=bool)

    def prepare(self, features: pd.DataFrame, *, n_fractions: float | None = None,
                dose_per_fraction_gy: float | None = None,
                target_gard: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(rows reindexed to the schema, regimen per row). InputError for unknown columns or bad values.

        Regimen per row: the row's ``n_fractions`` / ``dose_per_fraction_gy`` / ``target_gard`` column, else
        the keyword argument, else the model's default.
        """
        if not isinstance(features, pd.DataFrame):
            raise InputError(f"features must be a pandas DataFrame, got {type(features).__name__}",
                             fix="pass one row per patient with the feature table's columns")
        if len(features) == 0:
            raise InputError("no patients in the input", fix="pass at least one row")
        known = set(self.schema.names) | set(REGIMEN_COLUMNS)
        unknown = [str(c) for c in features.columns.tolist() if c not in known]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
            raise InputError(f"unknown feature column(s) {shown}: the model was trained without them",
                             fix="send only columns of the model's feature schema (GET /v1/model) or regimen "
                                 "columns n_fractions, dose_per_fraction_gy, target_gard")
        frame = features.reset_index(drop=True)
        ids = self._patient_ids(frame)
        regimen = self._regimen(frame, ids, n_fractions, dose_per_fraction_gy, target_gard)
        self._check_finite(frame.drop(columns=[c for c in REGIMEN_COLUMNS if c in frame.columns]), ids)
        table, _ = reindex_to_schema(frame.drop(columns=[c for c in REGIMEN_COLUMNS if c in frame.columns]),
                                     self.schema)
        table[naming.PATIENT_ID] = pd.Series(ids, index=table.index, dtype=table[naming.PATIENT_ID].dtype
                                             if naming.PATIENT_ID in table.columns else "str")
        self._check_availability(table, ids)
        for column in (c.name for c in self.schema.columns if c.group == OUTCOME):
            table[column] = table[column].where(pd.Series(False, index=table.index))  # labels are never inputs
        return table, regimen

    def prepare_rows(self, rows: Sequence[Mapping[str, Any]], *, n_fractions: float | None = None,
                     dose_per_fraction_gy: float | None = None,
                     target_gard: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """:meth:`prepare` of JSON-like rows (``{"patient_id": ..., "<feature>": value}``, absent = missing):
        the same tables, built straight into the schema's layout when the rows allow it
        (:func:`radiogenomics.models.schema_rows.table_from_rows`, ~7x faster for one patient), else through
        ``prepare(frame_from_features(rows))``, which also explains bad input."""
        from radiogenomics.models.schema_rows import SchemaLayout, table_from_rows

        layout = self.__dict__.get("_layout", False)
        if layout is False:
            layout = self._layout = SchemaLayout.of(self.schema)
        table = table_from_rows(rows, layout) if layout is not None else None
        if table is None:
            return self.prepare(frame_from_features(rows), n_fractions=n_fractions,
                                dose_per_fraction_gy=dose_per_fraction_gy, target_gard=target_gard)
        ids = [str(p) for p in table[naming.PATIENT_ID].tolist()]
        return table, self._regimen(table, ids, n_fractions, dose_per_fraction_gy, target_gard)

    @staticmethod
    def _patient_ids(frame: pd.DataFrame) -> list[str]:
        if naming.PATIENT_ID not in frame.columns:
            return [f"row{i}" for i in range(len(frame))]
        ids = frame[naming.PATIENT_ID]
        if ids.isna().any():
            raise InputError(f"patient_id is missing in row {int(np.flatnonzero(ids.isna())[0])}",
                             fix="give every row a patient_id")
        return [str(p) for p in ids]

    def _regimen(self, frame: pd.DataFrame, ids: Sequence[str], n_fractions: float | None,
                 dose_per_fraction_gy: float | None, target_gard: float | None) -> pd.DataFrame:
        given = {"n_fractions": n_fractions, "dose_per_fraction_gy": dose_per_fraction_gy, "target_gard": target_gard}
        defaults = {"n_fractions": self.n_fractions, "dose_per_fraction_gy": self.dose_per_fraction_gy,
                    "target_gard": self.target_gard}
        out = {}
        for name in REGIMEN_COLUMNS:
            value = given[name]
            fallback = defaults[name] if value is None else value
            _check_regimen_value(fallback, name, None)
            if name in frame.columns:
                raw = pd.to_numeric(frame[name], errors="coerce")
                bad = frame[name].notna() & raw.isna()
                if bad.any():
                    pid = ids[int(np.flatnonzero(bad.to_numpy())[0])]
                    raise InputError(f"{name} is not a number", patient_id=pid, fix=f"give {name} as a number")
                values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
                values = np.where(np.isnan(values), float(fallback), values)
            else:
                values = np.full(len(frame), float(fallback))
            for pid, row_value in zip(ids, values, strict=True):
                _check_regimen_value(row_value, name, pid)
            out[name] = values
        return pd.DataFrame(out)

    def _check_availability(self, table: pd.DataFrame, ids: Sequence[str]) -> None:
        """``available.*`` flags are 0 (the source produced nothing) or 1; anything else is an InputError."""
        flags = [c.name for c in self.schema.columns if c.group == AVAILABILITY]
        if not flags:
            return
        values = numeric_matrix(table[flags])
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            raise InputError(f"{flags[col]} must be 0 or 1, got {values[row, col]:g}", patient_id=ids[row],
                             fix="send 1 when that source produced features, 0 (or leave it out) when not")

    def _check_finite(self, frame: pd.DataFrame, ids: Sequence[str]) -> None:
        numeric = frame.select_dtypes(include=["number", "bool"])
        if numeric.empty:
            return
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isinf(values)
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            raise InputError(f"feature {numeric.columns[col]} is not finite ({values[row, col]})",
                             patient_id=ids[row], fix="send finite numbers; leave a value out (null) when unknown")

    # ---------------------------------------------------------------------------------------- prediction
    def predict_records(self, features: pd.DataFrame | Sequence[Mapping[str, Any]], *, model: ModelInfo | None = None,
                        n_fractions: float | None = None, dose_per_fraction_gy: float | None = None,
                        target_gard: float | None = None,
                        cohort: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """One contract record per row of ``features``: a DataFrame, or JSON-like rows (``{"patient_id": ...,
        "<feature>": value}``, :meth:`prepare_rows`). See the module docstring.

        ``cohort``: a cohort folder holding these patients' images, for an RSI model that reads images itself
        (``accepts_images``, the multimodal network); by default such a model looks in its training cohort,
        and a patient it finds no image for is predicted without images and flagged ``missing_imaging``.
        """
        model = model or ModelInfo()
        prepare = self.prepare_rows if isinstance(features, list | tuple) else self.prepare
        table, regimen = prepare(features, n_fractions=n_fractions,  # type: ignore[operator]
                                 dose_per_fraction_gy=dose_per_fraction_gy, target_gard=target_gard)
        radiosensitivity, toxicity = self.fast_models()
        records = self._records(table, regimen, model, radiosensitivity, toxicity, cohort)
        if not getattr(self, "_fast_checked", False):
            self._check_fast_models(records, self._records(table, regimen, model, self.radiosensitivity,
                                                           self.toxicity, cohort))
        return records

    # ------------------------------------------------------------------------------------- compiled models
    def fast_models(self) -> tuple[Any, dict[str, Any]]:
        """(radiosensitivity, {endpoint: toxicity model}) to predict with: copies of the fitted models whose
        preprocessing pipelines are compiled (:func:`radiogenomics.models.compiled.accelerated`: the same
        numbers, ~10x less CPU per call), built on first use; the models themselves when compiling failed or
        the first prediction's check found a difference."""
        fast = getattr(self, "_fast", None)
        if fast is None:
            from radiogenomics.models.compiled import accelerated

            fast = (accelerated(self.radiosensitivity), {k: accelerated(m) for k, m in self.toxicity.items()})
            self._fast = fast
        return fast

    def _check_fast_models(self, fast: list[dict[str, Any]], original: list[dict[str, Any]]) -> None:
        """Compare the first records of the compiled models with the models' own (equal to 1e-12 relative);
        on a difference keep the models' own from now on (logged)."""
        same = [_same_record(a, b) for a, b in zip(fast, original, strict=True)]
        if not all(same):
            log.warning("compiled model pipelines differ from the models' own predictions; using the models' own")
            self._fast = (self.radiosensitivity, self.toxicity)
            fast[:] = original
        self._fast_checked = True

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the compiled copies and the row layout (rebuilt on first use)."""
        return {k: v for k, v in self.__dict__.items() if k not in _DERIVED}

    def _records(self, table: pd.DataFrame, regimen: pd.DataFrame, model: ModelInfo, radiosensitivity: Any,
                 toxicity: Mapping[str, Any], cohort: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """The records of the prepared ``table`` with these models."""
        rsi, lower, upper, flags = self._radiosensitivity(table, radiosensitivity, cohort)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        canonical = canonical_rows(table, _hashed_columns(tuple(table.columns.tolist())))
        ids = [str(p) for p in table[naming.PATIENT_ID].tolist()]
        given = table[SITE_COLUMN].tolist() if SITE_COLUMN in table.columns else [None] * len(table)
        sites = [s if isinstance(s, str) and s else self.site for s in given]
        regimens = [dict(zip(REGIMEN_COLUMNS, values, strict=True))
                    for values in regimen[list(REGIMEN_COLUMNS)].to_numpy(dtype=np.float64).tolist()]
        records: list[dict[str, Any]] = []
        for i, (pid, row_regimen) in enumerate(zip(ids, regimens, strict=True)):
            targets, row_flags, used_rsi = self._targets(sites[i], rsi[i], lower[i], upper[i], flags[i], row_regimen,
                                                         pid)
            record = {"patient_id": pid, "model_name": model.name, "model_version": model.version,
                      "model_uri": model.uri, "rsi": used_rsi[0], "rsi_lower": used_rsi[1],
                      "rsi_upper": used_rsi[2], **targets, "flags": row_flags,
                      "input_sha256": _digest(canonical[i], row_regimen, model), "created_at": created}
            records.append(record)
        self._add_toxicity(table, records, toxicity)
        return [{k: _whole_fractions(k, r[k]) for k in RECORD_FIELDS} for r in records]

    def _radiosensitivity(self, table: pd.DataFrame, model: Any, cohort: str | os.PathLike[str] | None = None,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """Point RSI, interval and flags per row; population values where imaging is out of domain."""
        images = {"cohort": cohort} if getattr(model, "accepts_images", False) else {}
        if hasattr(model, "predict_all"):  # RSISurrogate: point, interval and source from one pass of its models
            point, bounds, source = model.predict_all(table, **images)
        else:
            point, bounds = model.predict(table, **images), model.predict_interval(table, **images)
            source = model.predict_source(table, **images)
        rsi = np.asarray(point, dtype=np.float64)
        bounds = np.asarray(bounds, dtype=np.float64)
        lower, upper = np.minimum(bounds[:, 0], rsi), np.maximum(bounds[:, 1], rsi)  # CV+ may not contain its mean
        predicted = np.asarray(source) != "measured"
        availability = self.imaging_availability_columns()
        missing_imaging = (np.nan_to_num(numeric_matrix(table[availability])) == 0).any(axis=1) if availability \
            else np.zeros(len(table), dtype=bool)
        missing_imaging |= np.asarray(source) == SOURCE_PREDICTED_WITHOUT_IMAGES  # the network found no image to read
        missing_imaging |= self._missing_imaging_items(table)
        inside = (self.applicability.in_domain(table) if self.applicability is not None
                  else np.ones(len(table), dtype=bool))
        # An RSI the model had to clip into (0, 1) (an imaging extrapolation, or a rank-model score outside the
        # surviving-fraction range) is not a surviving fraction: out of distribution and the population values
        # (fail closed), never an alpha of several per Gy.
        clip_low, clip_high = getattr(model, "clip", (0.0, 1.0))
        clipped = (rsi <= clip_low) | (rsi >= clip_high)
        inside = inside & ~clipped
        flags: list[list[str]] = []
        pop_rsi, pop_low, pop_high = self.population
        for i in range(len(table)):
            row: list[str] = []
            if not inside[i]:
                row.append(FLAG_OUT_OF_DISTRIBUTION)
                if predicted[i] or clipped[i]:
                    row.append(FLAG_POPULATION_FALLBACK)
                    rsi[i], lower[i], upper[i] = pop_rsi, pop_low, pop_high
            if predicted[i]:
                row.append(FLAG_MISSING_GENOMICS)
            if missing_imaging[i]:
                row.append(FLAG_MISSING_IMAGING)
            flags.append(row)
        return rsi, lower, upper, flags

    def _targets(self, site: str, rsi: float, lower: float, upper: float, flags: list[str],
                 regimen: Mapping[str, float], pid: str) -> tuple[dict[str, Any], list[str], tuple[float, ...]]:
        """Dose fields (``dose_targets``) at ``site``, the record's flags and the (rsi, lower, upper) used."""
        pop_rsi, pop_low, pop_high = self.population
        fallback_alpha = float(alpha_from_rsi(pop_rsi, self.beta_per_gy2))
        lq = patient_lq(rsi, beta_per_gy2=self.beta_per_gy2, fallback_alpha_per_gy=fallback_alpha)
        if lq.flags:  # RSI outside the LQ domain: the population values, flagged
            rsi, lower, upper = pop_rsi, pop_low, pop_high
            lq = patient_lq(pop_rsi, beta_per_gy2=self.beta_per_gy2)
            flags = [*flags, FLAG_OUT_OF_DISTRIBUTION, FLAG_POPULATION_FALLBACK]
        try:
            targets = dose_targets(lq, site=site, target_gard=regimen["target_gard"],
                                   n_fractions=regimen["n_fractions"],
                                   dose_per_fraction_gy=regimen["dose_per_fraction_gy"], rsi_lower=lower,
                                   rsi_upper=upper)
        except InputError as exc:
            raise InputError(exc.reason, patient_id=pid, fix=exc.fix) from exc
        for reason in targets.reasons:
            log.debug("patient %s: %s", pid, reason)
        fields = targets.as_record()
        fields.pop("flags")
        return fields, list(dict.fromkeys([*flags, *targets.flags])), (float(rsi), float(lower), float(upper))

    def _add_toxicity(self, table: pd.DataFrame, records: list[dict[str, Any]], toxicity: Mapping[str, Any]) -> None:
        """P(grade >= 2) per endpoint at each record's recommended total dose, where the model can say."""
        total = np.array([r["recommended_total_dose_gy"] for r in records], dtype=np.float64)
        for endpoint, model in sorted(toxicity.items()):
            needed = [c for c in getattr(model, "columns_", []) if c.startswith(f"{naming.DOSE}.")]
            if TOTAL_DOSE_COLUMN in table.columns:
                needed.append(TOTAL_DOSE_COLUMN)
            ok = np.isfinite(total) & (total > 0)
            if needed:
                ok &= ~np.isnan(numeric_matrix(table[needed])).any(axis=1)
            if TOTAL_DOSE_COLUMN in table.columns:
                ok &= (pd.to_numeric(table[TOTAL_DOSE_COLUMN], errors="coerce").fillna(0) > 0).to_numpy()
            for i in np.flatnonzero(~ok):
                log.info("patient %s: no %s toxicity (no recommended dose, or the plan's dose features are missing;"
                         " dose features are never imputed)", records[i]["patient_id"], endpoint)
            if not ok.any():
                continue
            rows = table if ok.all() else table.loc[ok]
            probability = model.predict_proba_at_dose(rows, prescription_gy=total[ok])[:, 1]
            for i, p in zip(np.flatnonzero(ok), probability, strict=True):
                records[i]["toxicity"][toxicity_key(endpoint)] = float(p)


@lru_cache(maxsize=64)
def _hashed_columns(columns: tuple[str, ...]) -> frozenset[str]:
    """The columns :func:`input_sha256` covers: all but ``patient_id`` and ``outcome.*`` (once per column set)."""
    return frozenset(c for c in columns if c != naming.PATIENT_ID and not c.startswith(f"{OUTCOME}."))


def _same_record(a: Any, b: Any) -> bool:
    """Records equal except ``created_at``: numbers to 1e-12 relative (NaN equals NaN), everything else exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_record(a[k], b[k]) for k in a if k != "created_at")
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_record(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return bool(a == b)


def _check_regimen_value(value: Any, name: str, patient_id: str | None) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", patient_id=patient_id) from None
    if not math.isfinite(number) or number < 0 or (number == 0 and name != "target_gard"):
        raise InputError(f"{name} must be a finite {'non-negative' if name == 'target_gard' else 'positive'} "
                         f"number, got {number!r}", patient_id=patient_id, fix=f"give a valid {name}")
    if name == "n_fractions" and number != round(number):
        raise InputError(f"n_fractions must be a whole number, got {number!r}", patient_id=patient_id,
                         fix="give a whole number of fractions")


#: Record fields that count fractions: JSON integers (contract section 1 types n_fractions as an integer).
FRACTION_FIELDS = ("n_fractions", "recommended_n_fractions")


def _whole_fractions(field: str, value: Any) -> Any:
    """A fraction count as an int (NaN, no safe regimen, stays NaN); other fields unchanged."""
    if field in FRACTION_FIELDS and isinstance(value, int | float | np.integer | np.floating) \
            and math.isfinite(float(value)) and float(value) == round(float(value)):
        return int(round(float(value)))
    return value


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame in the contract's column order (``toxicity`` dicts, ``flags`` lists kept)."""
    return pd.DataFrame([{k: r[k] for k in RECORD_FIELDS} for r in records], columns=list(RECORD_FIELDS))
