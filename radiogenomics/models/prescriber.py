"""The prescriber: feature rows -> prescription records (contract section 2), every one through the safety gate.

:class:`Prescriber` holds the feature schema it was trained on, a fitted RSI model
(:class:`~radiogenomics.models.radiosensitivity.RSISurrogate` or
:class:`~radiogenomics.models.multimodal_rsi.MultimodalRSI`), fitted
:class:`~radiogenomics.models.toxicity.ToxicityClassifier` per endpoint, an
:class:`~radiogenomics.models.applicability.ApplicabilityDomain` of the imaging, the
:class:`~radiogenomics.models.domain.TrainingDomain` (sites, clinical ranges, modality patterns) and the
training population's RSI per site. For each patient it

1. checks the input: unknown columns (the closest known name in the message) and impossible values are an
   ``InputError`` naming the patient and the field; the rows are reindexed to the schema (absent = missing);
   ``dose.*`` columns of any structure, ``clinical.site``, ``clinical.total_dose_gy`` and
   ``clinical.n_fractions`` are accepted as gate input even where the model has no such feature;
2. resolves the site and the regimen (the patient's own by default, :mod:`radiogenomics.models.regimen`);
3. predicts the RSI and its 90 % interval (measured ``genomic.rsi`` when present, else from imaging) and
   checks it against the training domain and the imaging's applicability domain;
4. passes the safety gate (:func:`radiogenomics.models.gate.gate_record`): population fallback where the
   inputs are outside what the model was trained on, the rails, the OAR limits of the patient's dose
   distribution (``dose.*`` columns, or DVHs passed as ``oar_dvhs``), honest interval doses;
5. predicts P(grade >= 2) per toxicity endpoint at the recommended regimen (``predict_proba_at_dose`` with the
   recommended total and number of fractions), keyed ``<endpoint>_grade_ge2``; none for a site the models
   were not trained on; ``toxicity_unavailable`` when an endpoint could not be computed;
6. hashes the exact inputs (:func:`input_sha256`).

See ``docs/registry.md`` and ``docs/safety.md``.
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
from radiogenomics.features.schema import (
    AVAILABILITY,
    IMAGING,
    OUTCOME,
    FeatureSchema,
    is_target_roi,
    reindex_to_schema,
)
from radiogenomics.models.gate import (  # noqa: F401  (the flags re-exported: their historical home)
    FLAG_MISSING_GENOMICS,
    FLAG_MISSING_IMAGING,
    FLAG_REGIMEN_OUTSIDE_TRAINING,
    FLAG_TOXICITY_UNAVAILABLE,
    RSIEstimate,
    gate_record,
    ordered_flags,
    site_population,
)
from radiogenomics.models.inputs import (
    check_columns,
    check_impossible_values,
    first_text,
    numbers_of,
    oar_doses_of_rows,
)
from radiogenomics.models.regimen import REGIMEN_COLUMNS, resolve_regimens
from radiogenomics.models.rsi_measured import SOURCE_MEASURED, SOURCE_PREDICTED_WITHOUT_IMAGES
from radiogenomics.radiobiology import DEFAULT_BETA_PER_GY2, check_rsi, load_rails
from radiogenomics.radiobiology.oar_checks import OARDose

log = logging.getLogger(__name__)

#: Target GARD "often quoted" (Scott et al. 2017; **unverified**, site and cohort dependent, see
#: docs/radiobiology.md): the model's default, always written into every record, overridable per row.
DEFAULT_TARGET_GARD = 33.0
#: Attributes computed on first use from the others: never pickled (rebuilt after loading).
_DERIVED = ("_fast", "_fast_checked", "_layout", "_availability", "_item_positions", "_target_items")
#: The record's fields in the contract's order (section 2).
RECORD_FIELDS: tuple[str, ...] = (
    "patient_id", "model_name", "model_version", "model_uri", "rsi", "rsi_lower", "rsi_upper", "alpha_per_gy",
    "beta_per_gy2", "alpha_beta_gy", "dose_per_fraction_gy", "n_fractions", "gard", "target_gard",
    "dose_for_target_gard_gy", "recommended_total_dose_gy", "toxicity", "recommended_n_fractions",
    "recommended_dose_per_fraction_gy", "dose_for_target_gard_lower_gy", "dose_for_target_gard_upper_gy", "site",
    "regimen_source", "rsi_source", "oar_checks", "flags", "input_sha256", "created_at", "notes")
RSI_COLUMN = naming.RSI_COLUMN
SITE_COLUMN = naming.clinical_column("site")
TOTAL_DOSE_COLUMN = naming.clinical_column("total_dose_gy")
#: Version of the canonical serialisation hashed into ``input_sha256`` (bump when it changes).
HASH_FORMAT = "radiogenomics-input/2"
#: Columns of the per-row context :meth:`Prescriber.prepare` returns beside the table.
CONTEXT_COLUMNS = (*REGIMEN_COLUMNS, "regimen_source", "site", "reference_prescription_gy", "oar_doses")


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


def input_sha256(row: Mapping[str, Any], regimen: Mapping[str, float], model: ModelInfo,
                 gate: Mapping[str, Any] | None = None) -> str:
    """SHA-256 (hex) of the canonical serialisation of one patient's exact inputs.

    Canonical form (``HASH_FORMAT``): UTF-8 JSON with sorted keys, no whitespace, ``allow_nan=False``, of
    ``{"format", "features": {column: value}, "regimen": {n_fractions, dose_per_fraction_gy, target_gard},
    "model": {"name", "version"}, "gate": {"site", "reference_prescription_gy", "oars"}}``; numbers as floats
    (Python's shortest round-trip repr), missing values as null, text as strings. ``features`` are the
    reindexed schema columns the models see (without ``patient_id`` and ``outcome.*``); ``gate`` the safety
    gate's own inputs: the site, the reference prescription and each OAR dose (``{"mean_gy", "max_gy",
    "volume_cc", "dvh_sha256"}``, the last the SHA-256 of the DVH's float64 bin doses then bin volumes).
    """
    return _digest({str(k): _canonical_value(v) for k, v in row.items()}, regimen, model, gate or {})


def _digest(features: Mapping[str, Any], regimen: Mapping[str, float], model: ModelInfo,
            gate: Mapping[str, Any]) -> str:
    """:func:`input_sha256` of features already in canonical form (:func:`canonical_rows`)."""
    payload = {"format": HASH_FORMAT, "features": features,
               "regimen": {k: _canonical_value(v) for k, v in regimen.items()},
               "model": {"name": model.name, "version": model.version}, "gate": gate}
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
    """Feature rows -> contract section 2 records through the safety gate (see the module docstring).

    Parameters
    ----------
    schema:
        The training feature table's schema; input rows are reindexed to it.
    radiosensitivity:
        A fitted RSI model (``predict_all`` or ``predict`` / ``predict_interval`` / ``predict_source``).
    toxicity:
        Fitted ``ToxicityClassifier`` per endpoint (``{"xerostomia": model}``).
    applicability:
        A fitted :class:`ApplicabilityDomain` of the imaging, or None (no check).
    population:
        ``(median, lower, upper)`` RSI of the training population (:func:`population_rsi`).
    site:
        Treatment site of a row without ``clinical.site`` (selects the rails; the training site by default).
    target_gard:
        Default target GARD (overridable per row and per call).
    beta_per_gy2:
        beta of the RSI -> alpha conversion (Scott 2017: 0.05 Gy^-2).
    domain:
        The :class:`~radiogenomics.models.domain.TrainingDomain` (sites, clinical ranges, modality patterns);
        None for a model saved before the gate (every site is then taken as trained).
    populations:
        ``{site: (median, lower, upper)}`` RSI of the training population per site; default ``{site: population}``.
    """

    def __init__(self, schema: FeatureSchema, radiosensitivity: Any, toxicity: Mapping[str, Any] | None = None,
                 applicability: Any = None, *, population: tuple[float, float, float], site: str = "head_neck",
                 target_gard: float = DEFAULT_TARGET_GARD, beta_per_gy2: float = DEFAULT_BETA_PER_GY2,
                 domain: Any = None, populations: Mapping[str, tuple[float, float, float]] | None = None) -> None:
        self.schema = schema
        self.radiosensitivity = radiosensitivity
        self.toxicity = dict(toxicity or {})
        self.applicability = applicability
        self.population = tuple(float(v) for v in population)
        self.site = site
        self.target_gard = float(target_gard)
        self.beta_per_gy2 = float(beta_per_gy2)
        self.domain = domain
        self.populations = {str(k): tuple(float(x) for x in v) for k, v in (populations or {}).items()}

    @classmethod
    def from_training(cls, table: pd.DataFrame, schema: FeatureSchema, radiosensitivity: Any,
                      toxicity: Mapping[str, Any] | None = None, *, applicability: Any = "fit",
                      **options: Any) -> Prescriber:
        """A prescriber whose population RSI (overall and per site), applicability domain and training domain come
        from the training ``table``.

        ``applicability="fit"`` fits an :class:`ApplicabilityDomain` on the table's imaging features; pass a
        fitted one, or None to switch the check off. ``options`` go to :class:`Prescriber`; the default
        ``site`` is the table's most frequent ``clinical.site``.
        """
        from radiogenomics.models.applicability import ApplicabilityDomain
        from radiogenomics.models.domain import TrainingDomain

        if RSI_COLUMN not in table.columns:
            raise InputError(f"the training table has no {RSI_COLUMN} column", fix="train on a table with genomics")
        beta = float(options.get("beta_per_gy2", DEFAULT_BETA_PER_GY2))
        if applicability == "fit":
            applicability = ApplicabilityDomain().fit(table)
        if "site" not in options and SITE_COLUMN in table.columns and table[SITE_COLUMN].notna().any():
            options["site"] = str(table[SITE_COLUMN].dropna().astype(str).mode().iloc[0])
        site = str(options.get("site", "head_neck"))
        population = population_rsi(table[RSI_COLUMN], beta)
        populations = {site: population}
        if SITE_COLUMN in table.columns:
            for name, rows in table.groupby(table[SITE_COLUMN].astype(str), sort=True):
                if name != site and rows[RSI_COLUMN].notna().sum() >= MIN_SITE_POPULATION:
                    try:
                        populations[str(name)] = population_rsi(rows[RSI_COLUMN], beta)
                    except InputError:
                        continue  # no usable RSI of that site: its fallback takes the rails' population values
        options.setdefault("domain", TrainingDomain.fit(table, default_site=site))
        return cls(schema, radiosensitivity, toxicity, applicability, population=population,
                   populations=populations, **options)

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

    def _missing_imaging_items(self, table: pd.DataFrame) -> tuple[list[list[str]], np.ndarray]:
        """Per row: (the imaging items with every feature missing, whether one of them is a *target* item whose
        modality is available).

        The first: that item's extraction failed or was not sent (e.g. the GTV mask on another grid while the CT's
        organ items succeeded, so ``available.ct`` is still 1), and the models see imputed values (flag
        ``missing_imaging``). The second: the tumour's own radiomics imputed, which the conformal intervals were
        not calibrated on (population fallback for an imaging RSI)."""
        cached = self.__dict__.get("_item_positions")
        if cached is None:
            names = {name: i for i, name in enumerate(self.schema.names)}
            items = self.imaging_items()
            positions = [np.array([names[c] for c in columns], dtype=np.intp) for columns in items.values()]
            block = np.concatenate(positions) if positions else np.zeros(0, dtype=np.intp)
            starts = np.cumsum([0] + [p.size for p in positions[:-1]]).astype(np.intp)
            targets = np.array([is_target_roi(item.split(".")[1]) for item in items], dtype=bool)
            modality = [naming.availability_column(item.split(".")[0]) for item in items]
            flags = np.array([names.get(m, -1) for m in modality], dtype=np.intp)
            cached = self._item_positions = (block, starts, targets, flags, list(items))
        block, starts, targets, flags, item_names = cached
        if block.size == 0:
            return [[] for _ in range(len(table))], np.zeros(len(table), dtype=bool)
        if table.shape[1] != len(self.schema.names):  # prepared tables have the schema's columns, in order
            raise AssertionError("the prescriber's table does not have the schema's columns")
        values = table.iloc[:, block].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.logical_and.reduceat(np.isnan(values), starts, axis=1)
        available = np.ones_like(missing)
        known = flags >= 0
        if known.any():
            available[:, known] = np.nan_to_num(table.iloc[:, flags[known]].to_numpy(dtype=np.float64,
                                                                                     na_value=np.nan)) == 1
        target_missing = (missing & available & targets[None, :]).any(axis=1)
        gone = [[str(item_names[j]) for j in np.flatnonzero(row)] for row in missing]
        return gone, np.asarray(target_missing, dtype=bool)

    def prepare(self, features: pd.DataFrame, *, n_fractions: float | None = None,
                dose_per_fraction_gy: float | None = None,
                target_gard: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(rows reindexed to the schema, per-row context). InputError for unknown columns or impossible values.

        The context (:data:`CONTEXT_COLUMNS`): the regimen and its source (:mod:`radiogenomics.models.regimen`),
        the site, the reference prescription of the patient's dose distribution (``clinical.total_dose_gy``) and
        the OAR doses of its ``dose.*`` columns.
        """
        if not isinstance(features, pd.DataFrame):
            raise InputError(f"features must be a pandas DataFrame, got {type(features).__name__}",
                             fix="pass one row per patient with the feature table's columns")
        if len(features) == 0:
            raise InputError("no patients in the input", fix="pass at least one row")
        check_columns([str(c) for c in features.columns.tolist()], self.schema.names, REGIMEN_COLUMNS)
        frame = features.reset_index(drop=True)
        ids = self._patient_ids(frame)
        self._check_finite(frame.drop(columns=[c for c in REGIMEN_COLUMNS if c in frame.columns]), ids)
        check_impossible_values(frame, ids, load_rails().sites)
        context = self._context(frame, ids, n_fractions, dose_per_fraction_gy, target_gard)
        inputs = frame.drop(columns=[c for c in frame.columns if c in REGIMEN_COLUMNS or c not in self._schema_set])
        table, _ = reindex_to_schema(inputs, self.schema)
        table[naming.PATIENT_ID] = pd.Series(ids, index=table.index, dtype=table[naming.PATIENT_ID].dtype
                                             if naming.PATIENT_ID in table.columns else "str")
        self._check_availability(table, ids)
        for column in (c.name for c in self.schema.columns if c.group == OUTCOME):
            table[column] = table[column].where(pd.Series(False, index=table.index))  # labels are never inputs
        return table, context

    @property
    def _schema_set(self) -> frozenset[str]:
        return frozenset([*self.schema.names, naming.PATIENT_ID])

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
        check_impossible_values(table, ids, load_rails().sites)
        return table, self._context(table, ids, n_fractions, dose_per_fraction_gy, target_gard)

    def _context(self, frame: pd.DataFrame, ids: Sequence[str], n_fractions: float | None,
                 dose_per_fraction_gy: float | None, target_gard: float | None) -> pd.DataFrame:
        """The per-row context of :meth:`prepare` (site, regimen and source, reference prescription, OAR doses)."""
        given = first_text(frame[SITE_COLUMN].tolist()) if SITE_COLUMN in frame.columns else [None] * len(frame)
        sites = [s or self.site for s in given]
        context = resolve_regimens(frame, ids, sites, rails=load_rails(),
                                   request={"n_fractions": n_fractions, "dose_per_fraction_gy": dose_per_fraction_gy,
                                            "target_gard": target_gard},
                                   default_target_gard=self.target_gard)
        context["site"] = sites
        context["reference_prescription_gy"] = numbers_of(frame, TOTAL_DOSE_COLUMN)
        context["oar_doses"] = oar_doses_of_rows(frame)
        return context

    @staticmethod
    def _patient_ids(frame: pd.DataFrame) -> list[str]:
        if naming.PATIENT_ID not in frame.columns:
            return [f"row{i}" for i in range(len(frame))]
        ids = frame[naming.PATIENT_ID]
        if ids.isna().any():
            raise InputError(f"patient_id is missing in row {int(np.flatnonzero(ids.isna())[0])}",
                             fix="give every row a patient_id")
        return [str(p) for p in ids]

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
                        target_gard: float | None = None, cohort: str | os.PathLike[str] | None = None,
                        oar_dvhs: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """One contract record per row of ``features``: a DataFrame, or JSON-like rows (``{"patient_id": ...,
        "<feature>": value}``, :meth:`prepare_rows`). See the module docstring.

        ``cohort``: a cohort folder holding these patients' images, for an RSI model that reads images itself
        (``accepts_images``, the multimodal network); without it such a model predicts without images, flagged
        ``missing_imaging``. ``oar_dvhs``: ``{patient_id: {structure: DVH}}`` of the patients' reference plans
        (from their dose grids or dvh.csv), for the OAR limits; they replace the ``dose.*`` summary of the same
        structure.
        """
        model = model or ModelInfo()
        prepare = self.prepare_rows if isinstance(features, list | tuple) else self.prepare
        table, context = prepare(features, n_fractions=n_fractions,  # type: ignore[operator]
                                 dose_per_fraction_gy=dose_per_fraction_gy, target_gard=target_gard)
        if oar_dvhs:
            ids = [str(p) for p in table[naming.PATIENT_ID].tolist()]
            context["oar_doses"] = [_merge_oar_doses(own, oar_dvhs.get(pid) or {})
                                    for own, pid in zip(context["oar_doses"], ids, strict=True)]
        radiosensitivity, toxicity = self.fast_models()
        records = self._records(table, context, model, radiosensitivity, toxicity, cohort)
        if not getattr(self, "_fast_checked", False):
            self._check_fast_models(records, self._records(table, context, model, self.radiosensitivity,
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

    def _records(self, table: pd.DataFrame, context: pd.DataFrame, model: ModelInfo, radiosensitivity: Any,
                 toxicity: Mapping[str, Any], cohort: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """The records of the prepared ``table`` and its ``context`` with these models."""
        from radiogenomics.models.gate import Population

        estimates = self._radiosensitivity(table, radiosensitivity, cohort)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        canonical = canonical_rows(table, _hashed_columns(tuple(table.columns.tolist())))
        ids = [str(p) for p in table[naming.PATIENT_ID].tolist()]
        rails = load_rails()
        domain = getattr(self, "domain", None)
        trained = dict(getattr(self, "populations", None) or {self.site: self.population})
        clinical = _domain_rows(table, domain)
        clip = tuple(getattr(radiosensitivity, "clip", (0.0, 1.0)))
        populations: dict[str, Population] = {}
        records: list[dict[str, Any]] = []
        for i, (pid, row) in enumerate(zip(ids, context.to_dict(orient="records"), strict=True)):
            site = str(row["site"])
            check = domain.check(clinical[i], site) if domain is not None else None
            estimate = estimates[i]
            if check is not None and check.unseen_pattern and estimate.source != SOURCE_PREDICTED_WITHOUT_IMAGES:
                estimate = _replace(estimate, uncalibrated_imaging=True, reasons=[*estimate.reasons,
                                                                                 check.unseen_pattern])
            if site not in populations:
                populations[site] = site_population(site, trained, rails, self.beta_per_gy2)
            reference = row["reference_prescription_gy"]
            gate = gate_record(patient_id=pid, site=site, site_in_training=check is None or check.site_in_training,
                               clinical_outside=check.out_of_range if check is not None else [],
                               estimate=estimate, regimen=row, population=populations[site],
                               oar_doses=row["oar_doses"],
                               reference_prescription_gy=float(reference) if np.isfinite(reference) else None,
                               rails=rails, clip=(float(clip[0]), float(clip[1])))
            for reason in gate.reasons:
                log.debug("patient %s: %s", pid, reason)
            regimen = {k: row[k] for k in REGIMEN_COLUMNS}
            gate_inputs = {"site": site, "reference_prescription_gy": reference, "oar_doses": row["oar_doses"]}
            record = {"patient_id": pid, "model_name": model.name, "model_version": model.version,
                      "model_uri": model.uri, **gate.fields, "toxicity": {}, "flags": gate.flags,
                      "input_sha256": _digest(canonical[i], regimen, model, _canonical_gate(gate_inputs)),
                      "created_at": created, "notes": list(gate.reasons)}
            record["_site_in_training"] = check is None or check.site_in_training
            records.append(record)
        self._add_toxicity(table, records, toxicity)
        for record in records:
            record["flags"] = ordered_flags(record["flags"])
        return [{k: _whole_fractions(k, r[k]) for k in RECORD_FIELDS} for r in records]

    def _radiosensitivity(self, table: pd.DataFrame, model: Any, cohort: str | os.PathLike[str] | None = None,
                          ) -> list[RSIEstimate]:
        """Per row: the model's RSI, interval and source, and what the gate needs to judge them."""
        images = {"cohort": cohort} if getattr(model, "accepts_images", False) else {}
        if hasattr(model, "predict_all"):  # RSISurrogate: point, interval and source from one pass of its models
            point, bounds, source = model.predict_all(table, **images)
        else:
            point, bounds = model.predict(table, **images), model.predict_interval(table, **images)
            source = model.predict_source(table, **images)
        rsi = np.asarray(point, dtype=np.float64)
        bounds = np.asarray(bounds, dtype=np.float64)
        lower, upper = np.minimum(bounds[:, 0], rsi), np.maximum(bounds[:, 1], rsi)  # CV+ may not contain its mean
        sources = [str(s) for s in np.asarray(source).tolist()]
        availability = self.imaging_availability_columns()
        absent = (np.nan_to_num(numeric_matrix(table[availability])) == 0) if availability \
            else np.zeros((len(table), 0), dtype=bool)
        missing_items, target_missing = self._missing_imaging_items(table)
        missing_imaging = absent.any(axis=1) | np.array([bool(m) for m in missing_items], dtype=bool)
        missing_imaging |= np.asarray(sources) == SOURCE_PREDICTED_WITHOUT_IMAGES  # the network found no image
        inside = (self.applicability.in_domain(table) if self.applicability is not None
                  else np.ones(len(table), dtype=bool))
        # An RSI the model had to clip into (0, 1) (an imaging extrapolation, or a rank-model score outside the
        # surviving-fraction range) is not a surviving fraction: outside the domain, never an alpha of several /Gy.
        clip_low, clip_high = getattr(model, "clip", (0.0, 1.0))
        clipped = (rsi <= clip_low) | (rsi >= clip_high)
        usable = self._usable_inputs(table)
        estimates = []
        for i in range(len(table)):
            image_free = sources[i] == SOURCE_PREDICTED_WITHOUT_IMAGES
            reasons = _missing_imaging_notes([a for a, gone in zip(availability, absent[i], strict=True) if gone],
                                             missing_items[i], image_free)
            if target_missing[i] and not image_free:
                reasons.append("the tumour's own imaging item is missing")
            estimates.append(RSIEstimate(
                float(rsi[i]), float(lower[i]), float(upper[i]), sources[i],
                imaging_outside=bool(not inside[i] or clipped[i]),
                uncalibrated_imaging=bool(target_missing[i] and not image_free),
                missing_imaging=bool(missing_imaging[i]),
                no_usable_inputs=bool(not usable[i] and sources[i] != SOURCE_MEASURED), reasons=reasons))
        return estimates

    def _usable_inputs(self, table: pd.DataFrame) -> np.ndarray:
        """True per row with at least one value among the features an RSI model may use (imaging, deep, clinical
        covariates, a measured RSI): a row without any is not a patient the model can say anything about."""
        usable_groups = (IMAGING, "deep", "clinical", "genomic")
        columns = [c.name for c in self.schema.columns if c.group in usable_groups and c.name != SITE_COLUMN]
        if not columns:
            return np.zeros(len(table), dtype=bool)
        return np.asarray(table[columns].notna().to_numpy().any(axis=1), dtype=bool)

    def _add_toxicity(self, table: pd.DataFrame, records: list[dict[str, Any]], toxicity: Mapping[str, Any]) -> None:
        """P(grade >= 2) per endpoint at each record's recommended regimen, where the model can say; none for a
        site the models were not trained on; ``toxicity_unavailable`` when an endpoint is missing;
        ``regimen_outside_training`` when the recommended dose per fraction lies outside the models' training."""
        total = np.array([r["recommended_total_dose_gy"] for r in records], dtype=np.float64)
        fractions = np.array([r["recommended_n_fractions"] for r in records], dtype=np.float64)
        trained_site = np.array([r.pop("_site_in_training") for r in records], dtype=bool)
        reference = pd.to_numeric(table[TOTAL_DOSE_COLUMN], errors="coerce").fillna(0).to_numpy() > 0 \
            if TOTAL_DOSE_COLUMN in table.columns else np.zeros(len(table), dtype=bool)
        for endpoint, model in sorted(toxicity.items()):
            # the plan is scaled from its own prescription; dose features are never imputed
            ok = np.isfinite(total) & (total > 0) & np.isfinite(fractions) & trained_site & reference
            ok &= model.dose_known(table, n_fractions=np.where(np.isfinite(fractions), fractions, 1.0))
            for i in np.flatnonzero(~ok):
                why = ("the model was not trained on this site" if not trained_site[i] else
                       "no recommended dose" if not (np.isfinite(total[i]) and total[i] > 0) else
                       "the plan's dose features or its prescription are missing (dose features are never imputed)")
                records[i]["notes"].append(f"no {endpoint} toxicity: {why}")
            if not ok.any():
                continue
            rows = table if ok.all() else table.loc[ok]
            probability = _toxicity_at(model, rows, total[ok], fractions[ok])
            for i, p in zip(np.flatnonzero(ok), probability, strict=True):
                records[i]["toxicity"][toxicity_key(endpoint)] = float(p)
            in_training = getattr(model, "regimen_in_training", None)
            if in_training is not None:
                inside = np.asarray(in_training(total[ok] / fractions[ok]), dtype=bool)
                for i in np.flatnonzero(ok)[~inside]:
                    records[i]["flags"].append(FLAG_REGIMEN_OUTSIDE_TRAINING)
        for record in records:
            if toxicity and len(record["toxicity"]) < len(toxicity):
                record["flags"].append(FLAG_TOXICITY_UNAVAILABLE)


def _missing_imaging_notes(absent: Sequence[str], items: Sequence[str], image_free: bool) -> list[str]:
    """What imaging the model uses is missing for one patient, in words (the record's ``notes``)."""
    notes = []
    if absent:
        notes.append(f"missing imaging modality: {', '.join(c.split('.', 1)[1] for c in absent)} (available = 0)")
    if items:
        shown = ", ".join(items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
        notes.append(f"imaging item(s) the model uses without any feature: {shown}")
    if image_free:
        notes.append("the image model found no image of the patient: predicted without images")
    return notes


def _toxicity_at(model: Any, rows: pd.DataFrame, total_gy: np.ndarray, n_fractions: np.ndarray) -> np.ndarray:
    """P(grade >= 2) at the recommended total in its number of fractions."""
    return np.asarray(model.predict_proba_at_dose(rows, prescription_gy=total_gy, n_fractions=n_fractions))[:, 1]


def _replace(estimate: RSIEstimate, **changes: Any) -> RSIEstimate:
    from dataclasses import replace

    return replace(estimate, **changes)


def _merge_oar_doses(own: Mapping[str, OARDose], dvhs: Mapping[str, Any]) -> dict[str, Any]:
    """A row's ``dose.*`` OAR doses with the patient's DVHs replacing the summary of the same structure."""
    merged: dict[str, Any] = {k: v for k, v in own.items() if k not in {naming.structure_slug(s) for s in dvhs}}
    merged.update(dvhs)
    return merged


def _domain_rows(table: pd.DataFrame, domain: Any) -> list[dict[str, Any]]:
    """The columns the training domain checks, per row (``{}`` rows without a domain)."""
    if domain is None:
        return [{} for _ in range(len(table))]
    from radiogenomics.models.domain import IMAGING_AVAILABILITY

    columns = [c for c in (*domain.numeric_ranges, *domain.categories, *IMAGING_AVAILABILITY) if c in table.columns]
    return table[columns].astype(object).where(table[columns].notna(), None).to_dict(orient="records")


def _canonical_gate(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's own inputs in canonical form for :func:`input_sha256`: the site, the reference prescription and
    each OAR dose (summary metrics, and the SHA-256 of the DVH bins where given)."""
    oars: dict[str, Any] = {}
    for name, dose in sorted((inputs.get("oar_doses") or {}).items()):
        value = dose if isinstance(dose, OARDose) else OARDose.of(str(name), dose)
        bins = None
        if value.dose_gy is not None and value.volume is not None:
            bins = hashlib.sha256(np.ascontiguousarray(value.dose_gy, dtype=np.float64).tobytes()
                                  + np.ascontiguousarray(value.volume, dtype=np.float64).tobytes()).hexdigest()
        oars[str(name)] = {"mean_gy": _canonical_value(value.mean_gy), "max_gy": _canonical_value(value.max_gy),
                           "volume_cc": _canonical_value(value.volume_cc), "dvh_sha256": bins}
    return {"site": str(inputs.get("site")),
            "reference_prescription_gy": _canonical_value(inputs.get("reference_prescription_gy")), "oars": oars}


#: Training patients of a site needed for its own population RSI (else the site's fallback uses the rails').
MIN_SITE_POPULATION = 10


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
