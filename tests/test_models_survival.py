"""LocalControlCox, GARDFeature, lc_target and survival_metrics on simulated cohorts where GARD drives local control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import clone
from sksurv.metrics import concordance_index_censored

from radiogenomics.errors import InputError
from radiogenomics.models.radiosensitivity import RSI_COLUMN, RSISurrogate
from radiogenomics.models.survival import (
    GARD_COLUMN,
    GARDFeature,
    LocalControlCox,
    evaluation_times,
    lc_target,
    survival_metrics,
)
from radiogenomics.radiobiology import gard

COVARIATES = ("clinical.age_years", "clinical.hpv")


def simulate(n: int, seed: int) -> pd.DataFrame:
    """Exponential failure times with hazard falling 10 % per GARD unit (HR ~0.37 per GARD SD); uniform censoring."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    rsi = np.clip(expit(-0.3 + 0.55 * z), 0.08, 0.75)
    regimen = rng.choice(3, n)
    dose = np.array([70.0, 66.0, 69.96])[regimen]
    fractions = np.array([35, 30, 33])[regimen]
    g = np.asarray(gard(rsi, dose, fractions))
    hazard = np.log(2) / 20.0 * np.exp(-0.1 * (g - g.mean()))
    failure = rng.exponential(1.0 / hazard)
    censor = rng.uniform(12.0, 60.0, n)
    return pd.DataFrame({
        "patient_id": [f"S{seed}_{i:04d}" for i in range(n)],
        RSI_COLUMN: rsi,
        "ct.gtv.original_firstorder_StandardDeviation": np.exp(2.8 + 0.45 * z + 0.2 * rng.standard_normal(n)),
        "clinical.age_years": rng.normal(61, 9, n),
        "clinical.hpv": pd.array(rng.choice(["pos", "neg"], n), dtype="str"),
        "clinical.total_dose_gy": dose,
        "clinical.n_fractions": fractions,
        "outcome.lc_event": pd.array((failure <= censor).astype(int), dtype="Int64"),
        "outcome.lc_months": np.round(np.minimum(failure, censor), 2),
    })


@pytest.fixture(scope="module")
def cohorts() -> tuple[pd.DataFrame, pd.DataFrame]:
    return simulate(400, 11), simulate(400, 12)


def test_cindex_when_gard_drives_local_control(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = cohorts
    model = LocalControlCox(covariates=COVARIATES).fit(train)
    metrics = survival_metrics(model, test, lc_target(train), lc_target(test))
    assert metrics["c_index"] > 0.65
    assert metrics["mean_auc"] > 0.65
    assert 0.0 < metrics["ibs"] < 0.25
    assert np.all((metrics["auc"] > 0.5) & (metrics["auc"] <= 1.0))
    assert model.score(test, lc_target(test)) == pytest.approx(metrics["c_index"])
    coef = model.coefficients()
    assert coef[GARD_COLUMN] < 0 and abs(coef[GARD_COLUMN]) > 3 * coef.drop(GARD_COLUMN).abs().max()


def test_shuffled_times_give_chance_cindex(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Outcomes unrelated to the patients: chance C-index, and a model fitted on them learns no GARD effect."""
    train, test = cohorts
    rng = np.random.default_rng(3)
    y_test = lc_target(test)
    model = LocalControlCox(covariates=COVARIATES).fit(train)
    assert abs(model.score(test, y_test[rng.permutation(len(y_test))]) - 0.5) < 0.06
    y = lc_target(train)
    broken = LocalControlCox(covariates=COVARIATES).fit(train, y[rng.permutation(len(y))])
    assert abs(broken.coefficients()[GARD_COLUMN]) < 0.3 * abs(model.coefficients()[GARD_COLUMN])


def test_gard_from_in_fold_surrogate(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Without a measured RSI at test time, GARD from the imaging surrogate still ranks local control."""
    train, test = cohorts
    surrogate = RSISurrogate(regressor="ridge", n_screen=None, cv=3, measured="ignore", random_state=0)
    model = LocalControlCox(covariates=(), rsi_estimator=surrogate).fit(train)
    blind = test.assign(**{RSI_COLUMN: np.nan})
    assert model.score(blind, lc_target(test)) > 0.6
    assert model.pipeline_[0].rsi_estimator_.n_train_ == len(train)


def test_gard_feature_domain_and_imputation(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = cohorts
    table = train.iloc[:4].copy()
    table[RSI_COLUMN] = [0.4, 0.9, np.nan, -0.1]              # 0.9 >= exp(-0.2): alpha <= 0
    out = GARDFeature().fit(table).transform(table)
    expected = gard(0.4, table["clinical.total_dose_gy"].iloc[0], table["clinical.n_fractions"].iloc[0])
    assert out[GARD_COLUMN].iloc[0] == pytest.approx(float(expected))
    assert out[GARD_COLUMN].iloc[1:].isna().all()
    assert list(GARDFeature().fit(table).get_feature_names_out())[-1] == GARD_COLUMN
    holes = train.copy()
    holes.loc[holes.index[::5], RSI_COLUMN] = 0.95
    model = LocalControlCox(covariates=COVARIATES).fit(holes)
    assert f"{GARD_COLUMN}__missing" in model.coefficients().index
    assert np.isfinite(model.predict(test.assign(**{RSI_COLUMN: 0.95}))).all()


def test_bad_input_names_patient_and_field(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = cohorts
    no_dose = train.copy()
    no_dose.loc[no_dose.index[7], "clinical.total_dose_gy"] = np.nan
    with pytest.raises(InputError, match=r"S11_0007.*clinical.total_dose_gy"):
        LocalControlCox().fit(no_dose)
    bad_event = train.copy()
    bad_event["outcome.lc_event"] = bad_event["outcome.lc_event"].astype("float64")
    bad_event.loc[bad_event.index[2], "outcome.lc_event"] = 2.0
    with pytest.raises(InputError, match=r"S11_0002.*outcome.lc_event"):
        lc_target(bad_event)
    with pytest.raises(InputError, match="outcome.lc_months"):
        lc_target(train.drop(columns="outcome.lc_months"))
    with pytest.raises(InputError, match="DataFrame"):
        LocalControlCox().fit(train.to_numpy())


def test_target_and_evaluation_times(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = cohorts
    y = lc_target(train)
    assert y.dtype.names == ("event", "time")
    assert y["event"].sum() == int(train["outcome.lc_event"].sum())
    times = evaluation_times(y, lc_target(test))
    assert times.size >= 3
    assert times.min() > lc_target(test)["time"].min() and times.max() < min(y["time"].max(),
                                                                             lc_target(test)["time"].max())


def test_clone_keeps_params_and_score_is_harrell(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = cohorts
    model = LocalControlCox(covariates=COVARIATES, alpha=3.0, rsi_estimator=RSISurrogate(cv=3), random_state=1)
    copy = clone(model)
    assert copy.get_params()["alpha"] == 3.0 and copy.get_params()["rsi_estimator__cv"] == 3
    fitted = LocalControlCox(covariates=COVARIATES).fit(train)
    y = lc_target(test)
    harrell = concordance_index_censored(y["event"], y["time"], fitted.predict(test))[0]
    assert fitted.score(test, y) == pytest.approx(harrell)
    surv = fitted.predict_survival_function(test.iloc[:3], return_array=True)
    assert surv.shape[0] == 3 and np.all(np.diff(surv, axis=1) <= 1e-12)


def test_no_event_is_bad_input_not_a_crash(cohorts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train = cohorts[0].copy()
    train["outcome.lc_event"] = 0  # everyone censored: no partial likelihood to maximise
    with pytest.raises(InputError, match="no local-failure event") as err:
        LocalControlCox().fit(train)
    assert "tasks.survival" in str(err.value)
