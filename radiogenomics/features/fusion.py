"""Fuse per-item results and per-patient tables into one wide table keyed by patient_id, plus its dictionary.

Column namespaces (see :mod:`radiogenomics.features.naming`): ``<modality>.<roi>.<pyradiomics key>``,
``deep.<modality>.<roi>.<i>``, ``genomic.<name>``, ``dose.<structure>.<metric>``, ``clinical.<column>``,
``outcome.<column>`` (outcome-like patients.csv columns, :func:`radiogenomics.features.schema.is_outcome_name`)
and ``available.<source>`` (1/0: that source produced features for the patient). Each column's schema group
is :func:`radiogenomics.features.schema.column_group`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radiogenomics.features import naming
from radiogenomics.features.cache import atomic_write_bytes
from radiogenomics.features.schema import TREATMENT_CLINICAL, column_group, is_outcome_name
from radiogenomics.features.tasks import DEEP, DOSE, RADIOMICS, ItemResult

INTENSITY_UNITS = {"ct": "HU", "pet_fdg": "SUV", "pet_fmiso": "SUV", "mr_t1": "a.u.", "mr_t2": "a.u.",
                   "mr_dwi": "a.u."}
_INTENSITY_FEATURES = {"Mean", "Median", "Minimum", "Maximum", "10Percentile", "90Percentile", "Range",
                       "InterquartileRange", "MeanAbsoluteDeviation", "RobustMeanAbsoluteDeviation",
                       "RootMeanSquared", "StandardDeviation"}
_SHAPE_UNITS = {"MeshVolume": "mm3", "VoxelVolume": "mm3", "SurfaceArea": "mm2", "SurfaceVolumeRatio": "1/mm",
                "Maximum3DDiameter": "mm", "Maximum2DDiameterSlice": "mm", "Maximum2DDiameterColumn": "mm",
                "Maximum2DDiameterRow": "mm", "MajorAxisLength": "mm", "MinorAxisLength": "mm",
                "LeastAxisLength": "mm"}


def item_frame(results: Iterable[ItemResult]) -> pd.DataFrame:
    """Wide frame (index patient_id) of the successful imaging items, namespaced columns."""
    patients: dict[str, int] = {}
    columns: dict[str, int] = {}
    layouts: dict[tuple[str, str, str, tuple[str, ...]], np.ndarray] = {}
    pieces: list[tuple[int, np.ndarray, np.ndarray]] = []
    for res in results:
        if res.status == "failed" or not res.features:
            continue
        item = res.item
        keys = tuple(res.features)
        layout_key = (item.kind, item.modality, item.roi, keys)
        if layout_key not in layouts:  # same modality, ROI and parameters -> same columns for every patient
            names = column_names(item.kind, item.modality, item.roi, keys, item.item_id)
            layouts[layout_key] = np.array([columns.setdefault(n, len(columns)) for n in names], dtype=np.int64)
        row = patients.setdefault(item.patient_id, len(patients))
        pieces.append((row, layouts[layout_key], np.fromiter(res.features.values(), dtype=np.float64,
                                                               count=len(keys))))
    matrix = np.full((len(patients), len(columns)), np.nan)
    for row, cols, values in pieces:
        matrix[row, cols] = values
    index = pd.Index(list(patients), name=naming.PATIENT_ID)
    return pd.DataFrame(matrix, index=index, columns=list(columns))


def column_names(kind: str, modality: str, roi: str, keys: tuple[str, ...], item_id: str) -> list[str]:
    """Table columns of an item's feature keys (radiomics, deep or dose namespace)."""
    if kind == RADIOMICS:
        if any("." in key for key in keys):
            raise ValueError(f"a pyradiomics key of {item_id} contains a dot")
        prefix = naming.radiomics_column(modality, roi, "x")[:-1]
        return [prefix + key for key in keys]
    if kind == DEEP:
        return [naming.deep_column(modality, roi, int(key)) for key in keys]
    if kind == DOSE:
        return [naming.dose_column(*key.split(".", 1)) for key in keys]
    raise ValueError(f"unknown item kind {kind!r}")


#: patients.csv columns about the course so far (contract section 8): never features.
MID_COURSE_COLUMNS = ("delivered_n_fractions", "delivered_dose_gy")


def clinical_frame(patients: pd.DataFrame) -> pd.DataFrame:
    """Every patients.csv column but the ID: ``outcome.<column>`` for outcome-like names (``lc_*``, ``tox_*``,
    ``*_event``, ``*_months``, ``os_*``, ``pfs_*``, see :func:`~radiogenomics.features.schema.is_outcome_name`),
    ``clinical.<column>`` for the rest (treatment variables such as ``total_dose_gy`` keep this name; their
    schema group is ``treatment``). What was delivered before a mid-treatment timepoint (``delivered_*``, contract
    section 8) is not a feature: it is known only during the course, and `adapt` reads it from the cohort."""
    table = patients.set_index(naming.PATIENT_ID)
    table = table.drop(columns=[c for c in table.columns if str(c) in MID_COURSE_COLUMNS])
    table.index = table.index.map(str)
    out = table.copy()
    out.columns = [naming.outcome_column(str(c)) if is_outcome_name(str(c)) and naming.slug(str(c)) not in
                   TREATMENT_CLINICAL else naming.clinical_column(str(c)) for c in table.columns]
    return out


def availability_frame(patient_ids: Sequence[str], sources: dict[str, set[str]]) -> pd.DataFrame:
    """``available.<source>`` = 1 where that source produced features for the patient, else 0."""
    data = {naming.availability_column(src): [int(pid in pids) for pid in patient_ids]
            for src, pids in sorted(sources.items())}
    frame = pd.DataFrame(data, index=pd.Index(list(patient_ids), name=naming.PATIENT_ID))
    return frame.astype(np.int8)


def fuse(patient_ids: Sequence[str], parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One row per patient (in ``patient_ids`` order), every part's columns; ``patient_id`` is a column.

    A column present in several parts (e.g. dose features from a DOSE grid and, for patients whose grid
    failed, from dvh.csv) takes the first part's value and fills its gaps from the later parts.
    """
    index = pd.Index([str(p) for p in patient_ids], name=naming.PATIENT_ID)
    frames = [part.reindex(index) for part in parts if part is not None and part.shape[1] > 0]
    table = pd.concat(frames, axis=1) if frames else pd.DataFrame(index=index)
    duplicated = table.columns[table.columns.duplicated()].unique()
    if len(duplicated):
        merged = {name: table.loc[:, name].bfill(axis=1).iloc[:, 0] for name in duplicated}
        table = table.loc[:, ~table.columns.duplicated()].copy()
        for name, values in merged.items():
            table[name] = values
    table = table[sorted(table.columns, key=_column_order)]
    available = [c for c in table.columns if naming.namespace(c) == naming.AVAILABLE]
    if available:
        table[available] = table[available].fillna(0).astype(np.int8)
    for name in table.columns:  # text as pandas' string dtype, which is what reading the Parquet gives back
        if pd.api.types.is_object_dtype(table[name]) and table[name].dropna().map(lambda v: isinstance(v, str)).all():
            table[name] = table[name].astype("str")
    return table.reset_index()


def _column_order(column: str) -> tuple[int, str]:
    ns = naming.namespace(column)
    rank = {naming.CLINICAL: 0, naming.AVAILABLE: 1, naming.GENOMIC: 2, naming.DOSE: 3, naming.DEEP: 5,
            naming.OUTCOME: 6}
    return rank.get(ns, 4), column


_PYRAD = re.compile(r"^(?P<filter>[^_]+)_(?P<cls>[^_]+)_(?P<feature>.+)$")


def describe_column(column: str) -> dict[str, str]:
    """Dictionary entry of one column: source, modality, roi, feature, unit, description."""
    if column == naming.PATIENT_ID:
        return {"source": "id", "modality": "", "roi": "", "feature": column, "unit": "",
                "description": "pseudonymous patient ID from patients.csv"}
    ns, _, rest = column.partition(".")
    if ns in (naming.CLINICAL, naming.OUTCOME):
        return {"source": ns, "modality": "", "roi": "", "feature": rest, "unit": _clinical_unit(rest),
                "description": f"patients.csv column {rest}"
                + (" (outcome-like: a label, never a default feature)" if ns == naming.OUTCOME else "")}
    if ns == naming.AVAILABLE:
        return {"source": "availability", "modality": rest, "roi": "", "feature": "available", "unit": "0/1",
                "description": f"1 when {rest} features were extracted for the patient, 0 otherwise"}
    if ns == naming.GENOMIC:
        return {"source": "genomic", "modality": "expression", "roi": "", "feature": rest,
                "unit": _genomic_unit(rest), "description": _genomic_description(rest)}
    if ns == naming.DOSE:
        structure, _, metric = rest.partition(".")
        return {"source": "dose", "modality": "DOSE", "roi": structure, "feature": metric,
                "unit": _dose_unit(metric), "description": f"{metric} of the DVH of {structure}"}
    if ns == naming.DEEP:
        modality, roi, index = rest.split(".")
        return {"source": "deep", "modality": modality, "roi": roi, "feature": index, "unit": "1",
                "description": f"MONAI encoder embedding component {index} of {roi} on {modality}"}
    roi, _, key = rest.partition(".")
    m = _PYRAD.match(key)
    filt, cls, feat = (m.group("filter"), m.group("cls"), m.group("feature")) if m else ("", "", key)
    return {"source": "radiomics", "modality": ns, "roi": roi, "feature": key,
            "unit": _radiomics_unit(ns, cls, feat),
            "description": f"pyradiomics {cls} {feat} of {roi} on {ns} ({filt} image)"}


def _clinical_unit(name: str) -> str:
    for suffix, unit in (("_years", "years"), ("_gy", "Gy"), ("_months", "months")):
        if name.endswith(suffix):
            return unit
    return ""


def _genomic_unit(name: str) -> str:
    if name == "rsi":
        return "SF2 (surviving fraction at 2 Gy)"
    if name.endswith("_coverage"):
        return "fraction of signature genes"
    return "normalised log2 expression"


def _genomic_description(name: str) -> str:
    if name == "rsi":
        return "Radiosensitivity Index (Eschrich 2009) from the 10-gene rank model"
    if name == "rsi_coverage":
        return "fraction of the 10 RSI genes observed for the patient (RSI is NaN below 1: nothing is imputed)"
    if name.endswith("_coverage"):
        return f"fraction of the {name[: -len('_coverage')]} signature genes available for the patient"
    return f"gene-signature score {name} (see radiogenomics/features/data/{name}.yaml for genes and source)"


def _dose_unit(metric: str) -> str:
    if metric.endswith("_gy"):
        return "Gy"
    if metric.endswith("_pct"):
        return "%"
    if metric.endswith("_cc"):
        return "cc"
    return ""


def _radiomics_unit(modality: str, cls: str, feature: str) -> str:
    if cls == "shape":
        return _SHAPE_UNITS.get(feature, "1")
    if cls == "firstorder":
        unit = INTENSITY_UNITS.get(modality, "a.u.")
        if feature in _INTENSITY_FEATURES:
            return unit
        if feature in ("Variance", "Energy"):
            return f"{unit}^2"
        if feature == "TotalEnergy":
            return f"{unit}^2 mm3"
    return "1"


def data_dictionary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per column of the fused table: column, group (schema group), dtype, source, modality, roi,
    feature, unit, n_missing, description."""
    missing = table.isna().sum()
    rows = [{"column": column, "group": column_group(str(column)), "dtype": str(dtype),
             **describe_column(str(column)), "n_missing": str(int(missing[column]))}
            for column, dtype in table.dtypes.items()]
    return pd.DataFrame(rows, columns=["column", "group", "dtype", "source", "modality", "roi", "feature", "unit",
                                       "n_missing", "description"])


def write_parquet(table: pd.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write the table to Parquet atomically (temporary file + rename), with ``metadata`` as the file's
    key-value metadata (the ``radiogenomics.*`` schema keys, :meth:`FeatureSchema.to_metadata`).

    Built column by column from one 2-D float block: pandas' generic conversion costs seconds for the
    ~10^4 columns of a table with filtered radiomics.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = [c for c, t in table.dtypes.items() if t == np.float64]
    block = table[floats].to_numpy(dtype=np.float64) if floats else np.empty((len(table), 0))
    position = {c: j for j, c in enumerate(floats)}
    arrays = []
    for column in table.columns:
        if column in position:
            arrays.append(pa.array(block[:, position[column]], type=pa.float64()))
        else:
            arrays.append(pa.Array.from_pandas(table[column]))
    arrow = pa.Table.from_arrays(arrays, names=[str(c) for c in table.columns])
    if metadata:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               **{k.encode(): v.encode() for k, v in metadata.items()}})
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically."""
    atomic_write_bytes(Path(path), table.to_csv(index=False).encode("utf-8"))
