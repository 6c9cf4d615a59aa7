"""Fold-fitted preprocessing: selector, imputer, scaler and RSI imputer as scikit-learn transformers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import estimator_checks_generator

from radiogenomics.errors import InputError
from radiogenomics.features.preprocessing import (
    MISSING_SUFFIX,
    FeatureScaler,
    FeatureSelector,
    GroupImputer,
    RSIImputer,
)
from radiogenomics.radiobiology.rsi import RSI_COEFFICIENTS, RSI_GENES


def _sklearn_checks() -> list[tuple[object, object]]:
    """scikit-learn's estimator checks, less the array-API one (it needs SCIPY_ARRAY_API and would skip)."""
    estimators = [FeatureSelector(include=("*",)), GroupImputer(), GroupImputer(add_indicator=False),
                  FeatureScaler(), FeatureScaler(method="robust")]
    return [(est, check) for estimator in estimators
            for est, check in estimator_checks_generator(estimator, legacy=True, mark=None)
            if getattr(check, "func", check).__name__ != "check_array_api_input"]


def _check_id(value: object) -> str:
    func = getattr(value, "func", value)
    return getattr(func, "__name__", type(value).__name__)


@pytest.mark.parametrize(("estimator", "check"), _sklearn_checks(), ids=_check_id)
def test_sklearn_compatible(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": ["P1", "P2", "P3", "P4"],
        "clinical.age_years": [50.0, np.nan, 70.0, 80.0],
        "clinical.sex": ["F", None, "M", "M"],
        "clinical.total_dose_gy": [70.0, 66.0, 70.0, 60.0],
        "outcome.lc_event": [0, 1, 0, 1],
        "available.ct": np.array([1, 1, 0, 1], dtype=np.int8),
        "genomic.rsi": [0.3, np.nan, 0.5, 0.4],
        "ct.gtv.original_firstorder_Mean": [10.0, 20.0, np.nan, 40.0],
        "dose.parotid_l.mean_gy": [25.0, 30.0, 20.0, 26.0],
        "dose.gtv.mean_gy": [69.0, 65.0, 70.0, 59.0],
    })


def test_selector_keeps_default_groups_only() -> None:
    table = _table()
    out = FeatureSelector().fit_transform(table)
    assert isinstance(out, pd.DataFrame)
    assert out.columns.tolist() == ["clinical.age_years", "clinical.sex", "available.ct", "genomic.rsi",
                                    "ct.gtv.original_firstorder_Mean"]
    opted = FeatureSelector(include=("treatment", "dose.parotid_*"), exclude=("ct.*",)).fit(table)
    assert opted.get_feature_names_out().tolist() == [
        "clinical.age_years", "clinical.sex", "clinical.total_dose_gy", "available.ct", "genomic.rsi",
        "dose.parotid_l.mean_gy", "dose.gtv.mean_gy"]
    assert FeatureSelector(groups=("outcome",)).fit(table).columns_ == ["outcome.lc_event"]
    with pytest.raises(InputError, match="unknown feature group"):
        FeatureSelector(groups=("radiomics",)).fit(table)


def test_imputer_learns_from_training_rows_only() -> None:
    table = _table().drop(columns=["patient_id"])
    train, test = table.iloc[[0, 1, 3]], table.iloc[[2]]
    imputer = GroupImputer().fit(train)
    assert imputer.statistics_["clinical.age_years"] == 65.0  # median of 50 and 80, not of 50, 70, 80
    assert imputer.statistics_["clinical.sex"] == "F"  # F and M once each: the smallest of a tie
    assert GroupImputer().fit(table).statistics_["clinical.sex"] == "M"  # M twice
    out = imputer.transform(test)
    assert out.at[test.index[0], "ct.gtv.original_firstorder_Mean"] == 20.0  # training median of 10, 20, 40
    assert out.at[test.index[0], f"genomic.rsi{MISSING_SUFFIX}"] == 0
    assert f"ct.gtv.original_firstorder_Mean{MISSING_SUFFIX}" not in out  # nothing missing in training
    assert out.columns.tolist() == imputer.get_feature_names_out().tolist()
    assert imputer.indicator_columns_ == ["clinical.age_years", "clinical.sex", "genomic.rsi"]  # missing in train
    mean = GroupImputer(strategy="mean", add_indicator=False).fit(train)
    assert mean.statistics_["ct.gtv.original_firstorder_Mean"] == pytest.approx(70.0 / 3)
    assert not mean.transform(train).isna().any().any()


def test_scaler_leaves_flags_and_text_alone() -> None:
    table = _table().drop(columns=["patient_id"])
    scaler = FeatureScaler().fit(table)
    out = scaler.transform(table)
    assert out["available.ct"].tolist() == [1, 1, 0, 1] and out["outcome.lc_event"].tolist() == [0, 1, 0, 1]
    assert out["clinical.sex"].tolist()[0] == "F"
    dose = table["dose.parotid_l.mean_gy"]
    assert out["dose.parotid_l.mean_gy"].tolist() == pytest.approx(((dose - dose.mean()) / dose.std(ddof=0)).tolist())
    assert np.isnan(out.at[2, "ct.gtv.original_firstorder_Mean"])
    robust = FeatureScaler(method="robust").fit(table)
    q1, q3 = np.percentile(dose, [25, 75])
    assert robust.scale_["dose.parotid_l.mean_gy"] == pytest.approx(q3 - q1)


def test_pipeline_set_output_and_clone() -> None:
    table = _table()
    pipe = make_pipeline(FeatureSelector(exclude=("clinical.sex",)), GroupImputer(), FeatureScaler())
    pipe.set_output(transform="pandas")
    out = pipe.fit_transform(table)
    assert isinstance(out, pd.DataFrame) and not out.isna().any().any()
    assert out.columns.tolist() == pipe.get_feature_names_out().tolist()
    assert "genomic.rsi__missing" in out.columns and "clinical.total_dose_gy" not in out.columns
    again = clone(pipe).fit(table).transform(table)
    pd.testing.assert_frame_equal(out, again)


def _reference_rsi(row: pd.Series) -> float:
    """RSI recomputed here from the published coefficients: ranks within the sample, ties averaged."""
    values = row[list(RSI_GENES)].astype(float)
    return float(sum(RSI_COEFFICIENTS[g] * r for g, r in values.rank(method="average").items()))


def test_rsi_imputer_uses_training_medians() -> None:
    rng = np.random.default_rng(3)
    expr = pd.DataFrame(rng.normal(8.0, 1.0, size=(6, 10)), columns=list(RSI_GENES),
                        index=pd.Index([f"P{i}" for i in range(6)], name="patient_id"))
    train, test = expr.iloc[:4], expr.iloc[4:].copy()
    test.iloc[0, RSI_GENES.index("STAT1")] = np.nan
    imputer = RSIImputer().fit(train)
    assert imputer.medians_["STAT1"] == pytest.approx(train["STAT1"].median())
    out = imputer.transform(test)
    filled = test.iloc[0].copy()
    filled["STAT1"] = train["STAT1"].median()
    assert out.iloc[0]["genomic.rsi"] == pytest.approx(_reference_rsi(filled))
    assert out.iloc[1]["genomic.rsi"] == pytest.approx(_reference_rsi(test.iloc[1]))
    assert out["genomic.rsi_imputed"].tolist() == [1.0, 0.0]
    with pytest.raises(InputError, match="STAT1"):
        RSIImputer().fit(train.drop(columns=["STAT1"]))


@pytest.mark.parametrize("method", ["standard", "robust"])
def test_scaler_treats_rounding_noise_as_constant(method: str) -> None:
    """A feature equal in every training patient up to rounding (the cord's major axis on a full-length scan) is only
    centred: a new patient's rounding stays a rounding, not a z-score of 1e13 (a ridge fold predicted -1.8e13)."""
    base = 47.99999999999999
    train = pd.DataFrame({"ct.spinal_cord.original_shape_MajorAxisLength":
                          [base, base + 7.1e-15, base - 7.1e-15, base + 1.4e-14, base]})
    scaler = FeatureScaler(method=method).fit(train)
    new = pd.DataFrame({"ct.spinal_cord.original_shape_MajorAxisLength": [base + 2.1e-14]})
    assert abs(float(scaler.transform(new).iloc[0, 0])) < 1e-9
    wide = FeatureScaler(method=method).fit(train.assign(**{train.columns[0]: [40.0, 45.0, 50.0, 55.0, 60.0]}))
    assert float(wide.transform(pd.DataFrame({train.columns[0]: [70.0]})).iloc[0, 0]) > 1.0
