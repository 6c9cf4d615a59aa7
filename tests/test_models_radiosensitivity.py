"""RSISurrogate: learns measured RSI from imaging + clinical columns, conformal intervals, measured RSI at predict.

Fast tests simulate feature tables with the real column namespaces and a known noise level (the imaging signal
mimics the synthetic cohort: CT texture amplitude grows with logit RSI); one test runs on a feature table
extracted from a generated cohort.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from radiogenomics.errors import InputError
from radiogenomics.models.radiosensitivity import RSI_COLUMN, RSISurrogate
from radiogenomics.models.survival import LocalControlCox

N_NOISE = 20
FAST = {"n_screen": None, "cv": 5, "random_state": 0}


def simulate(n: int, seed: int, *, signal: bool = True) -> pd.DataFrame:
    """Feature table: RSI = expit(logit), imaging tracks the logit with noise; noise columns; leaky opt-in columns."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    hpv = rng.choice(["pos", "neg"], n)
    rsi = expit(-0.3 + 0.55 * z - 0.3 * (hpv == "pos"))
    driver = z if signal else rng.standard_normal(n)
    table = pd.DataFrame({
        "patient_id": [f"P{seed}_{i:05d}" for i in range(n)],
        "ct.gtv.original_firstorder_StandardDeviation": np.exp(2.8 + 0.45 * driver + 0.3 * rng.standard_normal(n)),
        "ct.gtv.original_glcm_Contrast": 3.0 + driver + 0.8 * rng.standard_normal(n),
        "clinical.age_years": rng.normal(61, 9, n),
        "clinical.hpv": pd.array(hpv, dtype="str"),
        "clinical.center": pd.array(rng.choice(["A", "B", "C"], n), dtype="str"),
        "available.genomic": np.ones(n, dtype=np.int8),
        RSI_COLUMN: rsi,
        "genomic.rsi_coverage": rsi,                      # a leak the surrogate must never see
        "dose.parotid_l.mean_gy": 100 * rsi,              # opt-in group: never an input
        "clinical.total_dose_gy": np.full(n, 70.0),
        "outcome.lc_event": (rsi > 0.5).astype(int),      # label column: never an input
    })
    for i in range(N_NOISE):
        table[f"pet_fdg.gtv.noise_{i}"] = rng.standard_normal(n)
    return table


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return simulate(300, 1)


@pytest.fixture(scope="module")
def test_table() -> pd.DataFrame:
    return simulate(3000, 2)


@pytest.fixture(scope="module")
def fitted(train: pd.DataFrame) -> RSISurrogate:
    return RSISurrogate(measured="ignore", **FAST).fit(train)


def _rho(a: object, b: object) -> float:
    return float(spearmanr(a, b).statistic)


def test_held_out_spearman_beats_shuffled_labels(fitted: RSISurrogate, train: pd.DataFrame,
                                                 test_table: pd.DataFrame) -> None:
    y = test_table[RSI_COLUMN]
    assert _rho(fitted.predict(test_table), y) > 0.6
    shuffled = train.copy()
    shuffled[RSI_COLUMN] = np.random.default_rng(0).permutation(train[RSI_COLUMN].to_numpy())
    broken = RSISurrogate(measured="ignore", **FAST).fit(shuffled)
    assert abs(_rho(broken.predict(test_table), y)) < 0.15


def test_conformal_coverage_and_shape(fitted: RSISurrogate, test_table: pd.DataFrame) -> None:
    bounds = fitted.predict_interval(test_table)
    assert bounds.shape == (len(test_table), 2)
    assert np.all(bounds[:, 0] <= bounds[:, 1])
    assert np.all((bounds > 0) & (bounds < 1))
    y = test_table[RSI_COLUMN].to_numpy()
    coverage = np.mean((y >= bounds[:, 0]) & (y <= bounds[:, 1]))
    assert 0.85 <= coverage <= 0.95
    point = fitted.predict(test_table)
    assert np.mean((point >= bounds[:, 0]) & (point <= bounds[:, 1])) > 0.99


def test_confidence_level_changes_width(train: pd.DataFrame, test_table: pd.DataFrame,
                                        fitted: RSISurrogate) -> None:
    narrow = RSISurrogate(measured="ignore", confidence_level=0.5, **FAST).fit(train).predict_interval(test_table)
    wide = fitted.predict_interval(test_table)
    assert np.mean(narrow[:, 1] - narrow[:, 0]) < 0.7 * np.mean(wide[:, 1] - wide[:, 0])
    y = test_table[RSI_COLUMN].to_numpy()
    assert 0.4 <= np.mean((y >= narrow[:, 0]) & (y <= narrow[:, 1])) <= 0.6


def test_leaky_columns_are_never_inputs() -> None:
    """Imaging without signal: only genomic/dose/outcome columns carry RSI, and they must be ignored."""
    model = RSISurrogate(measured="ignore", **FAST).fit(simulate(300, 3, signal=False))
    held_out = simulate(1000, 4, signal=False)
    assert abs(_rho(model.predict(held_out), held_out[RSI_COLUMN])) < 0.35  # hpv alone gives ~0.25
    columns = model.conformal_._mapie_regressor.estimator_.single_estimator_[:-1].get_feature_names_out()
    assert not any(str(c).split(".")[0] in ("genomic", "dose", "outcome") for c in columns)
    assert "clinical.total_dose_gy" not in set(map(str, columns))


def test_measured_rsi_is_used_when_present(fitted: RSISurrogate, test_table: pd.DataFrame) -> None:
    table = test_table.iloc[:6].copy()
    table.loc[table.index[:3], RSI_COLUMN] = np.nan
    table.loc[table.index[3], RSI_COLUMN] = -0.2          # rank-model RSI can leave (0, 1): clipped
    model = copy.deepcopy(fitted).set_params(measured="use")
    source = model.predict_source(table)
    assert source.tolist() == ["predicted"] * 3 + ["measured"] * 3
    point = model.predict(table)
    imaging = fitted.predict(table)
    np.testing.assert_allclose(point[:3], imaging[:3])
    assert point[3] == pytest.approx(0.001)
    np.testing.assert_allclose(point[4:], table[RSI_COLUMN].to_numpy()[4:])
    assert not np.allclose(point[4:], imaging[4:])
    bounds = model.predict_interval(table)
    np.testing.assert_allclose(bounds[:3], fitted.predict_interval(table)[:3])
    np.testing.assert_allclose(bounds[4:, 1] - bounds[4:, 0], 2 * 1.6448536 * model.measured_sd, rtol=1e-6)
    assert (fitted.predict_source(table) == "predicted").all()


def test_fused_rsi_lies_between_measurement_and_imaging(fitted: RSISurrogate, test_table: pd.DataFrame) -> None:
    table = test_table.iloc[:50]
    model = copy.deepcopy(fitted).set_params(measured="fuse", measured_sd=0.1)
    fused, measured, imaging = model.predict(table), table[RSI_COLUMN].to_numpy(), fitted.predict(table)
    assert (model.predict_source(table) == "fused").all()
    assert np.all((fused - np.minimum(measured, imaging) > -1e-12) & (np.maximum(measured, imaging) - fused > -1e-12))
    image_sd = np.diff(fitted.predict_interval(table), axis=1).ravel() / (2 * 1.6448536)
    weight = image_sd**2 / (image_sd**2 + 0.1**2)  # inverse-variance weights
    np.testing.assert_allclose(fused, weight * measured + (1 - weight) * imaging, atol=1e-9)
    width = np.diff(model.predict_interval(table), axis=1).ravel()
    assert np.all(width < 2 * 1.6448536 * 0.1) and np.all(width < np.diff(fitted.predict_interval(table)).ravel())
    precise = copy.deepcopy(fitted).set_params(measured="fuse", measured_sd=0.01).predict(table)
    assert np.all(np.abs(precise - measured) < np.abs(imaging - measured) / 2)
    exact = copy.deepcopy(fitted).set_params(measured="fuse", measured_sd=0.0)
    np.testing.assert_allclose(exact.predict(table), measured)


def test_rows_without_rsi_are_dropped_in_fit(train: pd.DataFrame) -> None:
    partial = train.copy()
    partial.loc[partial.index[::2], RSI_COLUMN] = np.nan
    model = RSISurrogate(**FAST).fit(partial)
    assert model.n_train_ == len(train) // 2
    with pytest.raises(InputError, match="measured RSI"):
        RSISurrogate(**FAST).fit(partial.assign(**{RSI_COLUMN: np.nan}))


def test_clone_and_pipeline(train: pd.DataFrame) -> None:
    model = RSISurrogate(regressor="ridge", n_screen=5, cv=3, random_state=4)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    pipe = Pipeline([("rsi", copy)]).fit(train)
    assert pipe.predict(train.iloc[:5]).shape == (5,)
    with pytest.raises(InputError, match="confidence_level"):
        RSISurrogate(confidence_level=1.5).fit(train)
    with pytest.raises(InputError, match="DataFrame"):
        RSISurrogate().fit(train.select_dtypes("number").to_numpy())


def test_real_feature_table(synth_cohort: Path, tmp_path: Path) -> None:
    """Surrogate and Cox on a table extracted from a generated cohort (real schema, dtypes and text columns)."""
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_table

    out = tmp_path / "features.parquet"
    extract(synth_cohort, out, ExtractOptions(workers=2, cache_dir=tmp_path / "cache"))
    table = read_feature_table(out)
    model = RSISurrogate(cv=3, n_screen=10, random_state=0).fit(table)
    assert model.n_train_ == int(table[RSI_COLUMN].notna().sum())
    blind = table.assign(**{RSI_COLUMN: np.nan})
    assert (model.predict_source(blind) == "predicted").all()
    bounds = model.predict_interval(blind)
    assert bounds.shape == (len(table), 2) and np.isfinite(bounds).all()
    assert np.all((model.predict(blind) > 0) & (model.predict(blind) < 1))
    cox = LocalControlCox().fit(table)  # real dtypes: Int64 outcome, text covariates, pyradiomics names
    assert np.isfinite(cox.predict(table)).all()
    assert {"genomic.gard", "ct.gtv.original_shape_MeshVolume"} <= set(cox.coefficients().index)
