"""The feature table's schema: groups, outcome routing, Parquet metadata and reindexing to a reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from radiogenomics.errors import InputError
from radiogenomics.features import fusion, schema
from radiogenomics.features.schema import (
    FeatureSchema,
    build_schema,
    column_group,
    is_outcome_name,
    read_feature_schema,
    read_feature_table,
    reindex_to_schema,
)


@pytest.mark.parametrize(("name", "outcome"), [
    ("lc_event", True), ("lc_months", True), ("tox_xerostomia", True), ("os_event", True), ("pfs_months", True),
    ("OS_Months", True), ("death_event", True), ("age_years", False), ("total_dose_gy", False), ("center", False),
    ("smoking_pack_years", False), ("cost", False)])
def test_outcome_names(name: str, outcome: bool) -> None:
    assert is_outcome_name(name) is outcome


@pytest.mark.parametrize(("column", "group"), [
    ("patient_id", "id"), ("ct.gtv.original_firstorder_Mean", "imaging"), ("deep.ct.gtv.3", "deep"),
    ("genomic.rsi", "genomic"), ("dose.parotid_l.mean_gy", "dose"), ("dose.gtv.mean_gy", "treatment"),
    ("dose.ptv70.d95_gy", "treatment"), ("clinical.total_dose_gy", "treatment"), ("clinical.n_fractions", "treatment"),
    ("clinical.age_years", "clinical"), ("outcome.os_event", "outcome"), ("available.ct", "availability")])
def test_column_groups(column: str, group: str) -> None:
    assert column_group(column) == group


def _patients() -> pd.DataFrame:
    return pd.DataFrame({"patient_id": ["P1", "P2"], "age_years": [60.0, 70.0], "total_dose_gy": [70.0, 66.0],
                         "lc_event": [0, 1], "os_event": [1, 0], "pfs_months": [12.0, 30.0],
                         "tox_xerostomia": pd.array([2, None], dtype="Int64"), "center": ["A", "B"],
                         "overall_treatment_time_days": [45, 50]})


def test_outcome_like_columns_go_to_the_outcome_namespace() -> None:
    frame = fusion.clinical_frame(_patients())
    assert frame.columns.tolist() == ["clinical.age_years", "clinical.total_dose_gy", "outcome.lc_event",
                                      "outcome.os_event", "outcome.pfs_months", "outcome.tox_xerostomia",
                                      "clinical.center", "clinical.overall_treatment_time_days"]
    groups = {c: column_group(c) for c in frame.columns}
    assert groups["clinical.total_dose_gy"] == "treatment" and groups["outcome.os_event"] == "outcome"
    assert groups["clinical.overall_treatment_time_days"] == "treatment"  # a treatment name, though "_days"
    table = fusion.fuse(["P1", "P2"], [frame])
    dictionary = fusion.data_dictionary(table).set_index("column")
    assert dictionary.at["outcome.os_event", "group"] == "outcome"
    assert dictionary.at["clinical.total_dose_gy", "group"] == "treatment"
    assert dictionary.at["patient_id", "group"] == "id"


def _table() -> pd.DataFrame:
    return pd.DataFrame({"patient_id": ["P1", "P2"], "clinical.age_years": [60.0, np.nan],
                         "clinical.center": pd.array(["A", "B"], dtype="str"),
                         "available.ct": np.array([1, 0], dtype=np.int8), "genomic.rsi": [0.4, np.nan],
                         "ct.gtv.original_firstorder_Mean": [12.5, np.nan]})


def test_metadata_round_trip(tmp_path: Path) -> None:
    table = _table()
    params = {"filters": None, "genomic_min_coverage": 0.8, "radiomics_params": {"setting": {"binWidth": 25}}}
    written = build_schema(table, params)
    path = tmp_path / "t.parquet"
    fusion.write_parquet(table, path, written.to_metadata())
    raw = pq.read_schema(path).metadata
    assert {k.decode() for k in raw if k.startswith(b"radiogenomics")} == set(schema.METADATA_KEYS)
    assert json.loads(raw[b"radiogenomics.schema_version"]) == schema.SCHEMA_VERSION
    read = read_feature_schema(path)
    assert read == written
    assert read.names == table.columns.tolist()
    assert read.group_of()["available.ct"] == "availability" and read.group_of()["genomic.rsi"] == "genomic"
    assert [c.dtype for c in read.columns] == [str(t) for t in pd.read_parquet(path).dtypes]
    pd.testing.assert_frame_equal(read_feature_table(path), table)
    assert read.params == params
    assert read.version["package"] and len(read.version["code_sha256"]) == 64


def test_read_schema_refuses_tables_without_it(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    _table().to_parquet(plain)
    with pytest.raises(InputError, match="no radiogenomics schema"):
        read_feature_schema(plain)
    with pytest.raises(InputError, match="does not exist"):
        read_feature_schema(tmp_path / "absent.parquet")
    text = tmp_path / "text.parquet"
    text.write_text("not parquet")
    with pytest.raises(InputError, match="cannot read"):
        read_feature_schema(text)
    newer = build_schema(_table()).to_metadata()
    newer[schema.KEY_SCHEMA_VERSION] = str(schema.SCHEMA_VERSION + 1)
    with pytest.raises(InputError, match="newer"):
        FeatureSchema.from_metadata(newer)


def test_reindex_to_schema() -> None:
    reference = build_schema(_table())
    new = pd.DataFrame({"patient_id": ["Q1"], "clinical.extra": [3.0], "clinical.age_years": [55.0],
                        "clinical.center": [np.nan], "genomic.rsi": [0.2]})
    out, dropped = reindex_to_schema(new, reference)
    assert out.columns.tolist() == reference.names and dropped == ["clinical.extra"]
    assert out.at[0, "available.ct"] == 0 and out["available.ct"].dtype == np.int8
    assert np.isnan(out.at[0, "ct.gtv.original_firstorder_Mean"]) and out.at[0, "genomic.rsi"] == 0.2
    assert [str(t) for t in out.dtypes] == [c.dtype for c in reference.columns]
    assert pd.isna(out.at[0, "clinical.center"])
    clash = pd.DataFrame({"patient_id": ["Q1"], "available.ct": ["yes"]})
    with pytest.raises(InputError, match="available.ct"):
        reindex_to_schema(clash, reference)


def test_code_version_names_the_package_digest() -> None:
    from radiogenomics.features.provenance import package_digest

    version = schema.code_version()
    assert version["code_sha256"] == package_digest() and len(version["code_sha256"]) == 64
    assert version["package"] == __import__("radiogenomics").__version__
