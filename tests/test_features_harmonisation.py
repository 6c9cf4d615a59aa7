"""ComBat transformer: equal to neuroCombat on the training data, no leakage to new patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from neuroCombat import neuroCombat
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from radiogenomics.errors import InputError
from radiogenomics.features.harmonisation import ComBat

SHIFT = {"A": 0.0, "B": 1.5, "C": -1.0}
SCALE = {"A": 1.0, "B": 2.0, "C": 0.5}


def _data(n: int = 60, p: int = 25, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    batch = np.array(["A", "B", "C"])[np.arange(n) % 3]
    age = np.round(rng.uniform(40, 80, n) * 2) / 2  # float32-exact: neuroCombat casts covariates to float32
    sex = rng.choice(["F", "M"], n)
    signal = rng.normal(size=(n, p))
    x = (signal * np.array([SCALE[b] for b in batch])[:, None] + np.array([SHIFT[b] for b in batch])[:, None]
         + 0.03 * age[:, None] + 0.5 * (sex == "M")[:, None] + np.linspace(0, 5, p)[None, :])
    df = pd.DataFrame(x, columns=[f"ct.gtv.f{i}" for i in range(p)])
    df["clinical.center"], df["clinical.age_years"], df["clinical.sex"] = batch, age, sex
    df["available.ct"] = np.int8(1)
    return df


FEATURES = [f"ct.gtv.f{i}" for i in range(25)]


@pytest.mark.parametrize("eb", [True, False])
@pytest.mark.parametrize("mean_only", [False, True])
def test_matches_neurocombat_on_training_data(eb: bool, mean_only: bool, capsys: pytest.CaptureFixture[str]) -> None:
    df = _data()
    covars = df[["clinical.center", "clinical.age_years", "clinical.sex"]]
    ref = neuroCombat(dat=df[FEATURES].to_numpy().T.copy(), covars=covars, batch_col="clinical.center",
                      categorical_cols=["clinical.sex"], continuous_cols=["clinical.age_years"], eb=eb,
                      mean_only=mean_only)
    ours = ComBat(categorical=["clinical.sex"], continuous=["clinical.age_years"], eb=eb,
                  mean_only=mean_only).fit(df)
    out = ours.transform(df)
    assert np.allclose(out[FEATURES].to_numpy(), ref["data"].T, rtol=0, atol=1e-9)
    est = ref["estimates"]
    assert np.allclose(ours.gamma_star_, est["gamma.star"], atol=1e-10)
    assert np.allclose(ours.delta_star_, est["delta.star"], atol=1e-10)
    assert np.allclose(ours.var_pooled_, est["var.pooled"].ravel(), atol=1e-10)
    assert np.allclose(ours.grand_mean_, est["stand.mean"][:, 0], atol=1e-10)


def test_new_patients_use_training_estimates_only() -> None:
    df = _data(n=90)
    train, test = df.iloc[:60], df.iloc[60:]
    combat = ComBat(categorical=["clinical.sex"], continuous=["clinical.age_years"]).fit(train)
    # the fitted model reproduces neuroCombat on the training patients ...
    ref = neuroCombat(dat=train[FEATURES].to_numpy().T.copy(),
                      covars=train[["clinical.center", "clinical.age_years", "clinical.sex"]],
                      batch_col="clinical.center", categorical_cols=["clinical.sex"],
                      continuous_cols=["clinical.age_years"])
    assert np.allclose(combat.transform(train)[FEATURES].to_numpy(), ref["data"].T, atol=1e-9)
    # ... and harmonises each new patient on its own: rows do not influence each other
    whole = combat.transform(test)[FEATURES].to_numpy()
    one_by_one = np.vstack([combat.transform(test.iloc[[i]])[FEATURES].to_numpy() for i in range(len(test))])
    assert np.allclose(whole, one_by_one)
    changed = test.copy()
    changed.iloc[1:, :25] += 100.0
    assert np.allclose(combat.transform(changed)[FEATURES].to_numpy()[0], whole[0])
    # with the ComBat model formula and the training estimates
    row = test.iloc[0]
    b = combat.batches_.index(row["clinical.center"])
    cov = np.array([float(row["clinical.sex"] == "M"), row["clinical.age_years"]])
    mod = cov @ combat.beta_covariates_
    sd = np.sqrt(combat.var_pooled_)
    z = (row[FEATURES].to_numpy(dtype=float) - combat.grand_mean_ - mod) / sd
    expected = (z - combat.gamma_star_[b]) / np.sqrt(combat.delta_star_[b]) * sd + combat.grand_mean_ + mod
    assert np.allclose(whole[0], expected)


def test_batch_effect_is_removed_in_new_patients() -> None:
    df = _data(n=300, seed=3)
    train, test = df.iloc[:150], df.iloc[150:]
    out = ComBat(categorical=["clinical.sex"], continuous=["clinical.age_years"]).fit(train).transform(test)

    def spread(frame: pd.DataFrame) -> float:
        means = frame.groupby("clinical.center")[FEATURES].mean()
        sds = frame.groupby("clinical.center")[FEATURES].std()
        return float((means.max() - means.min()).mean() + (sds.max() / sds.min()).mean())

    assert spread(out) < 0.4 * spread(test)
    # the covariate effect (sex) is preserved
    sex_effect = out.groupby("clinical.sex")[FEATURES].mean().diff().iloc[-1].mean()
    assert sex_effect == pytest.approx(0.5, abs=0.25)


def test_sklearn_conventions_and_pipeline() -> None:
    df = _data()
    est = ComBat(prefixes=("ct.",), keep_other_columns=False)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.transform(df)
    pipe = Pipeline([("combat", est), ("model", Ridge())])
    y = df["ct.gtv.f0"].to_numpy() * 0 + np.arange(len(df))
    pipe.fit(df.iloc[:45], y[:45])
    pred = pipe.predict(df.iloc[45:])
    assert pred.shape == (15,) and np.isfinite(pred).all()
    assert list(pipe.named_steps["combat"].get_feature_names_out()) == FEATURES
    full = ComBat(prefixes=("ct.",)).fit(df)
    out = full.transform(df)
    assert list(out.columns) == list(df.columns)
    assert (out["available.ct"] == 1).all() and out["clinical.center"].tolist() == df["clinical.center"].tolist()


def test_missing_values_stay_missing_and_do_not_break_estimates() -> None:
    df = _data()
    holes = df.copy()
    holes.loc[[0, 5, 7], "ct.gtv.f3"] = np.nan
    out = ComBat().fit(holes).transform(holes)
    assert out.loc[[0, 5, 7], "ct.gtv.f3"].isna().all()
    assert np.isfinite(out.drop(index=[0, 5, 7])["ct.gtv.f3"]).all()
    full = ComBat().fit(df).transform(df)
    other = [c for c in FEATURES if c != "ct.gtv.f3"]
    assert np.allclose(out[other], full[other], atol=0.05)


def test_input_errors() -> None:
    df = _data()
    with pytest.raises(InputError):
        ComBat().fit(df[FEATURES].to_numpy())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="center"):
        ComBat(batch="center").fit(df)
    one = df[df["clinical.center"] == "A"]
    with pytest.raises(InputError, match="2 batches"):
        ComBat().fit(one)
    fitted = ComBat(unseen_batch="error").fit(df[df["clinical.center"] != "C"])
    with pytest.raises(InputError, match="C"):
        fitted.transform(df)
    with pytest.raises(InputError, match="min_batch_size"):
        ComBat(min_batch_size=1).fit(df)
    with pytest.raises(InputError, match="groups"):
        ComBat(groups=("radiomics",)).fit(df)
    with pytest.raises(InputError, match="no numeric columns"):
        ComBat(groups=("dose",)).fit(df)


def _fused(n_per_centre: int = 20, seed: int = 5) -> pd.DataFrame:
    """A fused-table-like frame: every column, whatever its group, carries a centre shift and scale."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(["A", "B", "C"], n_per_centre)
    shift = np.array([SHIFT[c] for c in centres])[:, None]
    scale = np.array([SCALE[c] for c in centres])[:, None]
    columns = ["ct.gtv.original_firstorder_Mean", "pet_fdg.gtv.original_glcm_Contrast", "deep.ct.gtv.0",
               "clinical.age_years", "clinical.total_dose_gy", "dose.parotid_l.mean_gy", "dose.gtv.mean_gy",
               "genomic.rsi", "genomic.rsi_coverage", "available.ct", "clinical.lc_months", "outcome.os_months"]
    values = rng.normal(size=(len(centres), len(columns))) * scale + shift + 10.0
    df = pd.DataFrame(values, columns=columns)
    df["available.ct"] = rng.integers(0, 2, len(centres)).astype(float)  # a 0/1 flag stored as float
    df["clinical.center"] = centres
    return df


IMAGING_COLUMNS = ["ct.gtv.original_firstorder_Mean", "pet_fdg.gtv.original_glcm_Contrast", "deep.ct.gtv.0"]


def test_default_harmonises_imaging_columns_only() -> None:
    df = _fused()
    combat = ComBat().fit(df)
    assert combat.columns_ == IMAGING_COLUMNS
    out = combat.transform(df)
    others = [c for c in df.columns if c not in IMAGING_COLUMNS]
    pd.testing.assert_frame_equal(out[others], df[others])  # flags, dose, treatment, genomic, clinical, outcome
    assert not np.allclose(out[IMAGING_COLUMNS], df[IMAGING_COLUMNS])
    means = out.groupby("clinical.center")[IMAGING_COLUMNS].mean()
    assert float((means.max() - means.min()).max()) < 0.5 * float(max(SHIFT.values()) - min(SHIFT.values()))
    assert ComBat(groups=("imaging",)).fit(df).columns_ == IMAGING_COLUMNS[:2]
    # an explicit column list is still honoured, whatever the group
    explicit = ComBat(columns=["clinical.age_years", "genomic.rsi"]).fit(df)
    assert explicit.columns_ == ["clinical.age_years", "genomic.rsi"]
    assert not np.allclose(explicit.transform(df)["genomic.rsi"], df["genomic.rsi"])


def test_unseen_centre_passes_through_unchanged_and_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    df = _fused()
    seen = df["clinical.center"] != "C"
    combat = ComBat().fit(df[seen])
    with caplog.at_level("WARNING", logger="radiogenomics.features.harmonisation"):
        out = combat.transform(df)
    assert combat.unseen_batches_ == ["C"]
    assert "unseen" in caplog.text and "['C']" in caplog.text
    pd.testing.assert_frame_equal(out[~seen], df[~seen])
    pd.testing.assert_frame_equal(out[seen], combat.transform(df[seen]))
    assert combat.unseen_batches_ == []  # reported per transform call
    assert not np.allclose(out.loc[seen, IMAGING_COLUMNS], df.loc[seen, IMAGING_COLUMNS])


def test_small_centre_is_left_out_of_the_fit_and_passes_through(caplog: pytest.LogCaptureFixture) -> None:
    df = _data()
    lone = df.iloc[[0]].assign(**{"clinical.center": "D"})
    lone[FEATURES] += 50.0
    with_lone = pd.concat([df, lone], ignore_index=True)
    kwargs = {"categorical": ["clinical.sex"], "continuous": ["clinical.age_years"]}
    with caplog.at_level("WARNING", logger="radiogenomics.features.harmonisation"):
        combat = ComBat(**kwargs).fit(with_lone)
    assert combat.small_batches_ == ["D"] and "['D']" in caplog.text
    assert combat.batches_ == ["A", "B", "C"]
    reference = ComBat(**kwargs).fit(df)  # the same fit without the lone patient
    assert np.allclose(combat.gamma_star_, reference.gamma_star_) and np.allclose(combat.grand_mean_,
                                                                                  reference.grand_mean_)
    out = combat.transform(with_lone)
    assert np.allclose(out.iloc[-1][FEATURES].to_numpy(dtype=float), lone[FEATURES].to_numpy(dtype=float))
    assert np.allclose(out.iloc[:-1][FEATURES], reference.transform(df)[FEATURES])
    assert ComBat(**kwargs, unseen_batch="error").fit(with_lone).transform(with_lone).shape == with_lone.shape
    # a documented threshold: centres of 20 patients are "small" under min_batch_size=21
    with pytest.raises(InputError, match="2 batches with at least 21"):
        ComBat(min_batch_size=21).fit(df)


def test_feature_constant_within_a_centre(caplog: pytest.LogCaptureFixture) -> None:
    df = _data()
    df.loc[df["clinical.center"] == "A", "ct.gtv.f0"] = 3.0
    with caplog.at_level("WARNING", logger="radiogenomics.features.harmonisation"):
        out = ComBat().fit(df).transform(df)
    assert "constant within a batch" in caplog.text
    assert np.isfinite(out[FEATURES].to_numpy()).all()
    assert out.loc[df["clinical.center"] == "A", "ct.gtv.f0"].nunique() == 1  # location only: stays constant


def test_expression_harmonisation_on_synthetic_cohort(synth_cohort: Path) -> None:
    from radiogenomics.cohort import load_cohort

    cohort = load_cohort(synth_cohort)
    assert cohort.expression is not None
    centers = cohort.patients.set_index("patient_id")["center"]
    expr = cohort.expression.join(centers)
    genes = [c for c in cohort.expression.columns]
    counts = expr["center"].value_counts()
    expr = expr[expr["center"].isin(counts[counts >= 2].index)]
    with pytest.raises(InputError, match="no numeric columns"):
        ComBat(batch="center").fit(expr)  # gene names belong to no imaging group: choose them explicitly
    out = ComBat(batch="center", columns=genes).fit(expr).transform(expr)
    before = expr.groupby("center")[genes].mean()
    after = out.groupby("center")[genes].mean()
    assert float((after.max() - after.min()).mean()) < float((before.max() - before.min()).mean())
