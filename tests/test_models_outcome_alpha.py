"""OutcomeCalibratedAlpha: recovery of a known alpha from outcomes simulated under the same cure model.

Outcomes are simulated here in closed form (Poisson TCP, Webb & Nahum 1993; mixture cure model, Berkson & Gage
1952), independently of the estimator's code, so a wrong sign or convention in the likelihood fails the recovery.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from radiogenomics.errors import InputError
from radiogenomics.models.outcome_alpha import (
    CureData,
    OutcomeCalibratedAlpha,
    cure_negative_log_likelihood,
    lq_kill_terms,
)
from radiogenomics.radiobiology import alpha_from_rsi

REGIMENS = ((70.0, 35), (66.0, 33), (60.0, 30), (74.0, 37), (69.96, 33))
W_ALPHA = np.array([0.30, -0.20, 0.15, 0.0])
ALPHA_BETA_GY = 10.0
DENSITY_PER_CC = 1e7


def simulate(n: int, seed: int, *, censor_months: tuple[float, float] = (12.0, 60.0)) -> tuple[pd.DataFrame,
                                                                                              np.ndarray]:
    """A feature table with known alpha and local-control outcomes from the cure model; returns (X, true alpha)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, W_ALPHA.size))
    volume_cc = np.exp(rng.normal(np.log(12.0), 0.5, n))
    # intercept chosen so that the typical TCP is ~0.7 at 70 Gy / 35 fx with N = 1e7/cc x 12 cc
    alpha = np.exp(np.log(0.255) + x @ W_ALPHA)
    regimen = rng.integers(0, len(REGIMENS), n)
    dose = np.array([REGIMENS[r][0] for r in regimen])
    fractions = np.array([REGIMENS[r][1] for r in regimen], dtype=float)
    d = dose / fractions
    log_sf = -alpha * dose - (alpha / ALPHA_BETA_GY) * dose * d
    tcp = np.exp(-DENSITY_PER_CC * volume_cc * np.exp(log_sf))
    fails = rng.random(n) > tcp
    failure_months = np.exp(rng.normal(np.log(12.0), 0.5, n))
    censor = rng.uniform(*censor_months, n)
    event = fails & (failure_months <= censor)
    months = np.where(event, failure_months, censor)
    table = pd.DataFrame({
        "patient_id": [f"P{i:04d}" for i in range(n)],
        "clinical.age_years": rng.normal(60, 9, n),
        "clinical.hpv": rng.choice(["pos", "neg"], n),
        "clinical.total_dose_gy": dose,
        "clinical.n_fractions": fractions,
        **{f"ct.gtv.original_firstorder_F{j}": x[:, j] for j in range(W_ALPHA.size)},
        "ct.gtv.original_shape_MeshVolume": volume_cc * 1000.0,  # pyradiomics: mm^3
        "outcome.lc_event": event.astype(float),
        "outcome.lc_months": months,
    })
    return table, alpha


def _model(**params: object) -> OutcomeCalibratedAlpha:
    defaults: dict[str, object] = {"rsi_prior": "none", "l2_penalty": 10.0, "n_starts": 2, "random_state": 0}
    return OutcomeCalibratedAlpha(**{**defaults, **params})


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, np.ndarray]:
    return simulate(400, seed=1)


def test_recovers_alpha_ranking_and_scale(cohort: tuple[pd.DataFrame, np.ndarray]) -> None:
    table, alpha = cohort
    train, test = np.arange(300), np.arange(300, 400)
    model = _model(l2_penalty=0.1).fit(table.iloc[train])
    predicted = model.predict(table.iloc[test])
    assert spearmanr(predicted, alpha[test]).statistic > 0.7
    # the density is fixed at the simulated value, so the alpha scale is identified
    assert abs(np.median(predicted) / np.median(alpha[test]) - 1.0) < 0.1
    coef = dict(zip(model.alpha_feature_names_, model.coef_, strict=True))
    np.testing.assert_allclose([coef[f"ct.gtv.original_firstorder_F{j}"] for j in range(4)], W_ALPHA, atol=0.08)
    assert model.volume_column_ == "ct.gtv.original_shape_MeshVolume"
    assert np.exp(model.time_params_[0]) == pytest.approx(12.0, rel=0.25)
    # inputs never include the regimen or the outcome
    assert not any(n.startswith(("outcome.", "clinical.total_dose", "clinical.n_fractions"))
                   for n in model.alpha_feature_names_)


def test_heavy_censoring_still_recovers() -> None:
    table, alpha = simulate(400, seed=2, censor_months=(2.0, 14.0))
    assert table["outcome.lc_event"].mean() < 0.15  # most failures happen after follow-up ends
    model = _model().fit(table)
    assert spearmanr(model.predict(table), alpha).statistic > 0.7
    # treating censored patients as cured would bias alpha upwards; the cure model must not
    assert abs(np.median(model.predict(table)) / np.median(alpha) - 1.0) < 0.2


def test_censoring_is_not_ignored() -> None:
    """Refitting with every censored patient's follow-up cut to 1 month must change the fit (S(t) is used)."""
    table, _ = simulate(300, seed=3)
    short = table.copy()
    short.loc[short["outcome.lc_event"] == 0, "outcome.lc_months"] = 1.0
    full, cut = _model().fit(table), _model().fit(short)
    # short follow-up: non-failures are less informative, so fewer cures are implied -> lower alpha
    assert np.median(cut.predict(table)) < np.median(full.predict(table))


def test_lq_kill_terms() -> None:
    """-ln SF = alpha A + C: A is the BED at fixed alpha/beta, or D with a fixed beta (Fowler 1989)."""
    a, c = lq_kill_terms(np.array([70.0]), np.array([35.0]), 10.0, None)
    assert (a[0], c[0]) == pytest.approx((84.0, 0.0))
    a, c = lq_kill_terms(np.array([70.0]), np.array([35.0]), 10.0, 0.05)
    assert (a[0], c[0]) == pytest.approx((70.0, 0.05 * 70.0 * 2.0))


def test_likelihood_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    n = 6
    data = _random_data(rng, n, p=2, q=1)
    theta = np.array([np.log(0.25), 0.2, -0.1, 0.3, np.log(1e7), np.log(12.0), np.log(0.6)])
    value, _ = cure_negative_log_likelihood(theta, data, l2_penalty=0.0, distribution="lognormal",
                                            fit_density=True)
    alpha = np.exp(theta[0] + data.alpha_features @ theta[1:3] + data.offset)
    n_clonogens = np.exp(theta[4] + data.log_volume_cc + data.burden_features @ theta[3:4])
    tcp = np.exp(-n_clonogens * np.exp(-alpha * data.alpha_dose_gy))
    sigma = 0.6
    z = (np.log(data.months) - np.log(12.0)) / sigma
    from scipy.stats import norm

    density = norm.pdf(z) / (sigma * data.months)
    expected = np.where(data.event == 1, (1 - tcp) * density, tcp + (1 - tcp) * norm.sf(z))
    assert value == pytest.approx(-np.mean(np.log(expected)), rel=1e-10)


def _random_data(rng: np.random.Generator, n: int, p: int, q: int) -> CureData:
    dose = rng.choice([60.0, 66.0, 70.0], n)
    return CureData(alpha_features=rng.normal(size=(n, p)), burden_features=rng.normal(size=(n, q)),
                    penalty_weights=np.r_[np.ones(p + q - 1), 0.0], offset=rng.normal(0, 0.1, n),
                    log_volume_cc=rng.normal(2.5, 0.5, n), alpha_dose_gy=dose * 1.2, fixed_log_kill=np.zeros(n),
                    event=(rng.random(n) < 0.4).astype(float), months=rng.uniform(2, 60, n))


@pytest.mark.parametrize("distribution", ["lognormal", "weibull"])
@pytest.mark.parametrize("fit_density", [False, True])
def test_gradient_matches_finite_differences(distribution: str, fit_density: bool) -> None:
    rng = np.random.default_rng(7)
    data = _random_data(rng, 40, p=3, q=2)
    density = [np.log(3e6)] if fit_density else []
    theta = np.r_[np.log(0.22), rng.normal(0, 0.1, 5), density, np.log(14.0), np.log(0.7)]
    kwargs = {"data": data, "l2_penalty": 0.3, "distribution": distribution, "fit_density": fit_density,
              "log_density_prior": (np.log(1e7), 2.0), "log_density": np.log(1e7)}
    _, grad = cure_negative_log_likelihood(theta, **kwargs)  # type: ignore[arg-type]
    step = 1e-6
    numeric = np.array([(cure_negative_log_likelihood(theta + step * e, **kwargs)[0]  # type: ignore[arg-type]
                         - cure_negative_log_likelihood(theta - step * e, **kwargs)[0]) / (2 * step)  # type: ignore[arg-type]
                        for e in np.eye(theta.size)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_clone_pipeline_and_label_forms(cohort: tuple[pd.DataFrame, np.ndarray]) -> None:
    table, _ = cohort
    model = _model(n_starts=1)
    cloned = clone(model)
    assert cloned.get_params() == model.get_params()
    y = table[["outcome.lc_event", "outcome.lc_months"]].rename(columns=lambda c: c.split(".")[1])
    direct = clone(model).fit(table, y).predict(table)
    piped = Pipeline([("alpha", clone(model))]).fit(table, y).predict(table)
    from_columns = clone(model).fit(table).predict(table)
    structured = np.array(list(zip(y["lc_event"].astype(bool), y["lc_months"], strict=True)),
                          dtype=[("event", bool), ("time", float)])
    from_surv = clone(model).fit(table, structured).predict(table)
    np.testing.assert_allclose(piped, direct)
    np.testing.assert_allclose(from_columns, direct)
    np.testing.assert_allclose(from_surv, direct)


def test_predictions_respond_to_dose(cohort: tuple[pd.DataFrame, np.ndarray]) -> None:
    table, _ = cohort
    model = _model(n_starts=1).fit(table)
    low = model.predict_tcp(table.iloc[:20], total_dose_gy=60.0, n_fractions=30)
    high = model.predict_tcp(table.iloc[:20], total_dose_gy=74.0, n_fractions=37)
    assert np.all(high > low)
    tcp = model.predict_tcp(table.iloc[:20])
    lc = model.predict_local_control(table.iloc[:20], months=36.0)
    assert np.all(lc >= tcp) and np.all(lc <= 1.0)
    lq = model.predict_lq(table.iloc[:20])
    np.testing.assert_allclose(lq["beta_per_gy2"], lq["alpha_per_gy"] / ALPHA_BETA_GY)


@pytest.mark.parametrize("beta_per_gy2", [None, 0.05])
def test_predict_tcp_is_the_poisson_tcp(cohort: tuple[pd.DataFrame, np.ndarray], beta_per_gy2: float | None) -> None:
    table, _ = cohort
    model = _model(n_starts=1, beta_per_gy2=beta_per_gy2).fit(table)
    lq = model.predict_lq(table)
    dose, n = table["clinical.total_dose_gy"].to_numpy(), table["clinical.n_fractions"].to_numpy()
    survival = np.exp(-lq["alpha_per_gy"] * dose - lq["beta_per_gy2"] * dose * dose / n)
    expected = np.exp(-(10.0 ** lq["log10_clonogens"]) * survival)
    np.testing.assert_allclose(model.predict_tcp(table), expected, rtol=1e-9)


def test_cv_penalty_and_score(cohort: tuple[pd.DataFrame, np.ndarray]) -> None:
    table, _ = cohort
    model = _model(l2_penalty="cv", penalty_grid=(0.3, 10.0, 300.0), n_starts=1).fit(table.iloc[:300])
    assert set(model.cv_scores_) == {0.3, 10.0, 300.0}
    assert model.l2_penalty_ == max(model.cv_scores_, key=model.cv_scores_.get)
    # held-out log-likelihood beats the feature-free (population) model
    population = _model(groups=(), include=(), n_starts=1).fit(table.iloc[:300])
    assert model.score(table.iloc[300:]) > population.score(table.iloc[300:])
    assert np.ptp(population.predict(table)) == 0.0


def test_rsi_offset_and_covariate() -> None:
    table, alpha = simulate(300, seed=4)
    rng = np.random.default_rng(4)
    table["genomic.rsi"] = np.exp(-2 * (alpha * np.exp(rng.normal(0, 0.2, len(alpha))) + 0.1))  # GARD convention
    table.loc[3, "genomic.rsi"] = np.nan  # missing RSI takes the training median
    rsi_alpha = np.asarray(alpha_from_rsi(table["genomic.rsi"].to_numpy(), invalid="nan"))
    offset = _model(rsi_prior="offset", groups=(), include=(), volume_column=None).fit(table)
    ok = np.isfinite(rsi_alpha)
    assert spearmanr(offset.predict(table)[ok], rsi_alpha[ok]).statistic == pytest.approx(1.0)
    covariate = _model(rsi_prior="covariate").fit(table)
    assert covariate.alpha_feature_names_[-1] == "log_alpha_rsi"
    assert covariate.coef_[-1] > 0  # higher RSI alpha -> higher fitted alpha
    assert spearmanr(covariate.predict(table), alpha).statistic > 0.8


def test_burden_inputs_enter_clonogens() -> None:
    table, _ = simulate(200, seed=5)
    table["pet_fdg.gtv.original_firstorder_Mean"] = np.random.default_rng(5).normal(8, 2, len(table))
    model = _model(n_starts=1).fit(table)
    assert model.burden_feature_names_ == ["pet_fdg.gtv.original_firstorder_Mean"]
    assert "pet_fdg.gtv.original_firstorder_Mean" not in model.alpha_feature_names_
    assert model.burden_coef_.shape == (1,)


@pytest.mark.parametrize("column", ["clinical.total_dose_gy", "clinical.n_fractions"])
def test_missing_regimen_column_is_an_input_error(cohort: tuple[pd.DataFrame, np.ndarray], column: str) -> None:
    table, _ = cohort
    with pytest.raises(InputError, match=column):
        _model().fit(table.drop(columns=[column]))


def test_bad_values_name_the_patient(cohort: tuple[pd.DataFrame, np.ndarray]) -> None:
    table, _ = cohort
    broken = table.copy()
    broken.loc[5, "clinical.n_fractions"] = np.nan
    with pytest.raises(InputError, match="P0005"):
        _model().fit(broken)
    with pytest.raises(InputError, match="lc_months"):
        _model().fit(table.drop(columns=["outcome.lc_months"]))
    bad_event = table.copy()
    bad_event.loc[7, "outcome.lc_event"] = 2.0
    with pytest.raises(InputError, match="P0007"):
        _model().fit(bad_event)
    with pytest.raises(InputError, match="rsi_prior"):
        _model(rsi_prior="bogus").fit(table)
