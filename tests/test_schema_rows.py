"""The REST API's row path: JSON-like rows straight into the schema's layout give what the DataFrame path gives
(the same tables and input hashes; the same records, figures to rounding), and anything unusual takes the general
path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prescriber_factory import Bundle
from records_compare import assert_records_close

from radiogenomics.errors import InputError
from radiogenomics.models.applicability import ApplicabilityDomain
from radiogenomics.models.dose_scaling import scale_dose_features
from radiogenomics.models.prescriber import ModelInfo, Prescriber, frame_from_features
from radiogenomics.models.schema_rows import SchemaLayout, table_from_rows

INFO = ModelInfo("radiogenomics-prescriber", "3", "models:/radiogenomics-prescriber/3")


def _python(value: Any) -> Any:
    """A table cell as JSON would carry it: None for missing, Python int/float/str otherwise."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


@pytest.fixture(scope="module")
def rows(bundle: Bundle) -> list[dict[str, Any]]:
    """Six patients as JSON rows, varied: complete (with outcome labels, which are never inputs), one without
    any ``available.*`` flag or PET feature, one with whole numbers for float features, one without text."""
    table = bundle.table.head(6)
    out = [{k: _python(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
    out[1] = {k: v for k, v in out[1].items() if not k.startswith(("available.", "pet_"))}
    floats = [k for k, v in out[2].items() if isinstance(v, float) and v.is_integer()][:5]
    out[2].update({k: int(out[2][k]) for k in floats})
    out[3] = {k: v for k, v in out[3].items() if not isinstance(v, str) or k == "patient_id"}
    out[4] = {k: v for k, v in out[4].items() if not k.startswith("outcome.")}
    return out


def _same_records(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """The same records from two paths: identifiers, hashes and flags exactly, figures to rounding (the two
    tables need not share a memory layout, and a matrix product's kernel may depend on it)."""
    assert_records_close(a, b)


def test_rows_give_the_dataframe_paths_table(prescriber: Prescriber, rows: list[dict[str, Any]]) -> None:
    table, regimen = prescriber.prepare_rows(rows, n_fractions=30, target_gard=40.0)
    expected, expected_regimen = prescriber.prepare(frame_from_features(rows), n_fractions=30, target_gard=40.0)
    pd.testing.assert_frame_equal(table, expected)
    pd.testing.assert_frame_equal(regimen, expected_regimen)
    assert table_from_rows(rows, SchemaLayout.of(prescriber.schema)) is not None  # the fast path was taken
    assert table.filter(like="outcome.").isna().all().all()  # labels sent are never inputs
    assert (table.loc[1, prescriber.imaging_availability_columns()] == 0).all()  # flags left out: produced nothing


def test_pandas_2_path_gives_the_same_table(prescriber: Prescriber, rows: list[dict[str, Any]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``pandas.api.internals.create_dataframe_from_blocks`` (pandas 2.x) the columns are concatenated and
    reordered: the same table."""
    from radiogenomics.models import schema_rows

    layout = SchemaLayout.of(prescriber.schema)
    with_blocks = table_from_rows(rows, layout)
    monkeypatch.setattr(schema_rows, "_from_blocks", None)
    pd.testing.assert_frame_equal(table_from_rows(rows, layout), with_blocks)


@pytest.mark.blas_sensitive
def test_rows_give_the_same_records_and_hashes(prescriber: Prescriber, rows: list[dict[str, Any]]) -> None:
    from_rows = prescriber.predict_records(rows, model=INFO)
    from_frame = prescriber.predict_records(frame_from_features(rows), model=INFO)
    _same_records(from_rows, from_frame)
    assert len({r["input_sha256"] for r in from_rows}) == len(rows)


@pytest.mark.parametrize("change", [
    pytest.param(lambda r: r.update({"n_fractions": 30}), id="regimen-column"),
    pytest.param(lambda r: r.update({"clinical.age_years": "sixty"}), id="text-for-number"),
    pytest.param(lambda r: r.update({"clinical.sex": 1.0}), id="number-for-text"),
    pytest.param(lambda r: r.update({"available.ct": 1.0}), id="float-for-int8"),
    pytest.param(lambda r: r.update({"clinical.n_fractions": 35.0}), id="float-for-Int64"),
    pytest.param(lambda r: r.update({"available.ct": True}), id="bool"),
    pytest.param(lambda r: r.update({"available.ct": 5}), id="availability-not-0-or-1"),
    pytest.param(lambda r: r.update({"not.a_feature": 1.0}), id="unknown-column"),
    pytest.param(lambda r: r.pop("patient_id"), id="no-patient-id"),
])
def test_unusual_rows_take_the_general_path(prescriber: Prescriber, rows: list[dict[str, Any]], change: Any) -> None:
    row = dict(rows[0])
    change(row)
    assert table_from_rows([row], SchemaLayout.of(prescriber.schema)) is None


@pytest.mark.blas_sensitive
def test_general_path_still_explains_bad_rows(prescriber: Prescriber, rows: list[dict[str, Any]]) -> None:
    infinite = dict(rows[0], **{"clinical.age_years": float("inf")})
    assert table_from_rows([infinite], SchemaLayout.of(prescriber.schema)) is None
    with pytest.raises(InputError, match="clinical.age_years is not finite"):
        prescriber.predict_records([infinite])
    with pytest.raises(InputError, match="available.ct must be 0 or 1, got -1"):
        prescriber.predict_records([dict(rows[0], **{"available.ct": -1})])
    with pytest.raises(InputError, match="unknown feature column"):
        prescriber.predict_records([dict(rows[0], **{"not.a_feature": 1.0})])
    # whole numbers for an integer column go the general way and give the same record
    as_float = dict(rows[0], **{"clinical.n_fractions": float(rows[0]["clinical.n_fractions"])})
    _same_records(prescriber.predict_records([as_float], model=INFO),
                  prescriber.predict_records(rows[:1], model=INFO))


def test_dose_scaling_of_a_models_columns_matches_scaling_everything(bundle: Bundle) -> None:
    model = bundle.toxicity["xerostomia"]
    table = bundle.table.head(5)
    everything = scale_dose_features(table, 1.2)
    chosen = scale_dose_features(table, 1.2, columns=model.columns_)
    used = [c for c in model.columns_ if c in table.columns]
    pd.testing.assert_frame_equal(chosen[used], everything[used])
    other = [c for c in table.columns if c not in used and c.startswith("dose.") and c.endswith(".mean_gy")]
    assert other and chosen[other].equals(table[other])  # columns the model never reads are left alone
    assert not everything[other].equals(table[other])
    np.testing.assert_allclose(model.predict_proba_at_dose(table, scale=1.2), model.predict_proba(everything),
                               rtol=0, atol=1e-12)


def test_applicability_block_path_equals_reindex_path(bundle: Bundle) -> None:
    domain = ApplicabilityDomain().fit(bundle.table)
    table = bundle.table.head(8)
    mixed = table.astype({domain.columns_[0]: object})  # not float64: the general path
    pd.testing.assert_frame_equal(domain.score_samples(table), domain.score_samples(mixed))
    shuffled = table[list(reversed(table.columns))]
    pd.testing.assert_frame_equal(domain.score_samples(table), domain.score_samples(shuffled))
