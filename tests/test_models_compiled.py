"""Compiled model pipelines and the prescriber's fast paths give the numbers of the plain code: to 1e-12 relative
(the prescriber's own check of its compiled models), as the two paths' matrix products need not run the same
BLAS kernel; identifiers, hashes and flags exactly."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pandas as pd
import pytest
from prescriber_factory import Bundle
from records_compare import REL, assert_records_close

from radiogenomics.features.preprocessing import numeric_matrix, with_columns
from radiogenomics.features.schema import reindex_to_schema
from radiogenomics.models.compiled import CompiledPrefix, accelerated
from radiogenomics.models.prescriber import ModelInfo, Prescriber, frame_from_features
from radiogenomics.models.toxicity import ToxicityClassifier
from radiogenomics.radiobiology import load_rails

INFO = ModelInfo("radiogenomics-prescriber", "1", "models:/radiogenomics-prescriber/1")
#: Compiled against plain: the tolerance of Prescriber._check_fast_models (a larger difference makes the
#: prescriber drop its compiled models).
SAME_REL = 1e-12


@pytest.fixture(scope="module")
def features(bundle: Bundle) -> pd.DataFrame:
    """What a caller sends, with no measured RSI (every patient goes through the imaging models)."""
    table = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")])
    return table.assign(**{"genomic.rsi": np.nan})


def _compiled_steps(model: object) -> int:
    """How many CompiledPrefix steps a fitted model holds (its estimators, lists and dicts searched)."""
    seen: set[int] = set()

    def count(obj: object) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        if isinstance(obj, CompiledPrefix):
            return 1
        if isinstance(obj, list | tuple):
            return sum(count(v) for v in obj)
        if isinstance(obj, dict):
            return sum(count(v) for v in obj.values())
        if type(obj).__module__.split(".")[0] in ("sklearn", "mapie", "radiogenomics") and hasattr(obj, "__dict__"):
            return sum(count(v) for v in vars(obj).values())
        return 0

    return count(model)


@pytest.mark.blas_sensitive
def test_accelerated_models_give_identical_numbers(bundle: Bundle, features: pd.DataFrame) -> None:
    prescriber = Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)
    table, _ = prescriber.prepare(features)
    rsi = accelerated(bundle.radiosensitivity)
    tox = accelerated(bundle.toxicity["xerostomia"])
    assert _compiled_steps(rsi) >= 3 and _compiled_steps(tox) >= 1  # CV+ folds and the classifier compiled
    assert _compiled_steps(bundle.radiosensitivity) == 0  # the original is untouched
    for fast, plain in zip(rsi.predict_all(table), bundle.radiosensitivity.predict_all(table), strict=True):
        if fast.dtype.kind == "f":
            np.testing.assert_allclose(fast, plain, rtol=SAME_REL, atol=0)
        else:  # the source of each RSI: exactly
            np.testing.assert_array_equal(fast, plain)
    np.testing.assert_allclose(tox.predict_proba(table), bundle.toxicity["xerostomia"].predict_proba(table),
                               rtol=SAME_REL, atol=0)
    dose = np.linspace(50.0, 80.0, len(table))
    np.testing.assert_allclose(tox.predict_proba_at_dose(table, prescription_gy=dose),
                               bundle.toxicity["xerostomia"].predict_proba_at_dose(table, prescription_gy=dose),
                               rtol=SAME_REL, atol=0)


def test_compiled_prefix_falls_back_to_the_original_steps(bundle: Bundle, features: pd.DataFrame) -> None:
    prescriber = Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)
    table, _ = prescriber.prepare(features)
    tox = accelerated(bundle.toxicity["xerostomia"])
    column = next(c for c in tox.columns_ if c.startswith("dose.") and table[c].dtype == np.float64)
    bad = table.assign(**{column: np.inf})
    with pytest.raises(ValueError, match="infinity"):  # what the original steps say, not a silent number
        tox.predict_proba(bad)
    with pytest.raises(ValueError, match="infinity"):
        bundle.toxicity["xerostomia"].predict_proba(bad)
    odd = table.astype({"clinical.sex": object})
    odd.loc[0, "clinical.sex"] = 3  # a text column holding a number: the original steps handle it
    np.testing.assert_array_equal(tox.predict_proba(odd), bundle.toxicity["xerostomia"].predict_proba(odd))


@pytest.mark.blas_sensitive
def test_prescriber_checks_its_fast_models_once(bundle: Bundle, features: pd.DataFrame,
                                                caplog: pytest.LogCaptureFixture) -> None:
    prescriber = Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)
    table, regimen = prescriber.prepare(features)
    records = prescriber.predict_records(features, model=INFO)
    plain = prescriber._records(table, regimen, INFO, bundle.radiosensitivity, bundle.toxicity)
    assert_records_close(records, plain, rel=SAME_REL, abs_tol=0.0)
    assert prescriber.fast_models()[0] is not bundle.radiosensitivity
    restored = pickle.loads(pickle.dumps(prescriber))
    assert not hasattr(restored, "_fast") and not hasattr(restored, "_fast_checked")

    other = ToxicityClassifier(endpoint="xerostomia", calibration=None, C=0.01, random_state=0).fit(bundle.table)
    guarded = Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)
    guarded._fast = (bundle.radiosensitivity, {"xerostomia": other})  # "fast" models that disagree
    with caplog.at_level(logging.WARNING, logger="radiogenomics.models.prescriber"):
        first = guarded.predict_records(features, model=INFO)
    assert "differ" in caplog.text
    assert [r["toxicity"] for r in first] == [r["toxicity"] for r in plain]
    assert guarded.fast_models()[1] is guarded.toxicity


@pytest.mark.blas_sensitive
def test_frame_from_features_gives_the_same_records(bundle: Bundle, features: pd.DataFrame) -> None:
    rows = []
    for record in features.iloc[:5].to_dict("records"):
        rows.append({k: None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v
                     for k, v in record.items()})
    rows[1]["available.ct"] = 1  # an int column
    rows[2].pop("clinical.age_years")  # absent in one row
    rows[3]["ct.gtv.original_firstorder_Mean"] = None
    fast, plain = frame_from_features(rows), pd.DataFrame.from_records(rows)
    assert fast.columns.tolist() == plain.columns.tolist()
    pd.testing.assert_frame_equal(reindex_to_schema(fast, bundle.schema)[0], reindex_to_schema(plain, bundle.schema)[0])
    prescriber = Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)
    a, b = prescriber.predict_records(fast, model=INFO), prescriber.predict_records(plain, model=INFO)
    assert [r["input_sha256"] for r in a] == [r["input_sha256"] for r in b]
    assert [r["recommended_total_dose_gy"] for r in a] == pytest.approx([r["recommended_total_dose_gy"] for r in b],
                                                                          rel=REL)


def test_block_helpers_match_the_column_by_column_forms() -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": ["2.5", "x"], "c": pd.array([1, None], dtype="Int64"),
                          "d": [True, False]})
    expected = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    np.testing.assert_array_equal(numeric_matrix(frame), expected)
    replaced = with_columns(frame, ["a"], np.array([[5.0], [6.0]]))
    assert replaced.columns.tolist() == ["a", "b", "c", "d"] and replaced["a"].tolist() == [5.0, 6.0]
    assert frame["a"].iloc[0] == 1.0  # the input is not changed
    mixed = with_columns(frame, ["c", "a"], np.array([[7.0, 8.0], [9.0, 10.0]]))
    assert mixed.columns.tolist() == ["a", "b", "c", "d"] and mixed["c"].tolist() == [7.0, 9.0]
    assert mixed["a"].tolist() == [8.0, 10.0] and mixed["b"].tolist() == ["2.5", "x"]


def test_packaged_rails_are_parsed_once_and_copied() -> None:
    first = load_rails()
    first.sites.pop("lung")
    second = load_rails()
    assert "lung" in second.sites and second is not first
    assert second.sites["head_neck"] is load_rails().sites["head_neck"]  # the frozen rows are shared


def test_compiled_prefix_is_not_built_for_other_pipelines(bundle: Bundle) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    fitted = bundle.toxicity["xerostomia"].model_
    assert isinstance(accelerated(fitted).steps[0][1], CompiledPrefix)
    other = Pipeline([("scale", StandardScaler()), ("model", fitted.steps[-1][1])])
    assert accelerated(other).steps[0][0] == "scale"
