"""Toxicity models: API, recovery of a known patient-specific LKB endpoint, calibration, the dose what-if.

The cohorts are simulated here in closed form: parotid DVHs (Gaussian dose spread around a per-gland mean
dose) written as dvh.csv rows, dose features from them by the package's extraction code
(``dvh_table_features``), and grade >= 2 drawn from an LKB model (Lyman 1985; Burman 1991) whose TD50 depends
on a genomic score and sex: ``NTCP = Phi((gEUD - TD50_i) / (m TD50_i))``, ``log TD50_i = log TD50 + w . x_i``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator
from threadpoolctl import threadpool_limits

from radiogenomics.errors import InputError
from radiogenomics.features.dosimetric import dvh_table_features
from radiogenomics.features.fusion import clinical_frame, fuse
from radiogenomics.features.genomic import genomic_features
from radiogenomics.models.dose_scaling import dvhs_from_table, scale_dose_features
from radiogenomics.models.lkb_patient import PatientLKB, _penalised_nll
from radiogenomics.models.monotone_logistic import MonotoneLogisticRegression
from radiogenomics.models.toxicity import (
    ToxicityClassifier,
    available_endpoints,
    population_lkb_ntcp,
)
from radiogenomics.synthetic import generate_cohort
from radiogenomics.training.metrics import classification_metrics

TD50_GY, M = 39.9, 0.40  # the tabulated xerostomia parameters (Dijkema et al. IJROBP 2010)
W_GENOMIC, W_FEMALE = -0.25, 0.15  # true log-TD50 effects of the simulated covariates
CENTRES_GY = np.arange(0.5, 80.0, 1.0)  # 1 Gy bins


def simulate(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(feature table with outcome.tox_xerostomia, dvh.csv rows, true NTCP)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"P{seed}_{i:05d}" for i in range(n)])
    genomic = rng.normal(0.0, 1.0, n)
    female = rng.random(n) < 0.3
    prescription = rng.choice([66.0, 70.0], n)
    frames, volumes = [], {}
    for structure, volume_cc in (("parotid_l", 25.0), ("parotid_r", 22.0), ("spinal_cord", 15.0)):
        mean = rng.uniform(8.0, 60.0, n) if structure != "spinal_cord" else rng.uniform(20.0, 40.0, n)
        weights = np.exp(-0.5 * ((CENTRES_GY[None, :] - mean[:, None]) / 9.0) ** 2)
        vol = volume_cc * weights / weights.sum(axis=1, keepdims=True)
        vol[vol < 1e-6] = 0.0
        volumes[structure] = vol
        keep = vol > 0
        rows, cols = np.nonzero(keep)
        frames.append(pd.DataFrame({"patient_id": ids[rows], "structure": structure,
                                    "dose_gy": CENTRES_GY[cols], "volume_cc": vol[rows, cols]}))
    dvh = pd.concat(frames, ignore_index=True)
    both = volumes["parotid_l"] + volumes["parotid_r"]
    geud_gy = (both * CENTRES_GY).sum(axis=1) / both.sum(axis=1)  # n = 1: mean dose of both glands
    td50 = TD50_GY * np.exp(W_GENOMIC * genomic + W_FEMALE * female)
    ntcp = ndtr((geud_gy - td50) / (M * td50))
    event = rng.random(n) < ntcp
    grade = np.where(event, rng.choice([2, 3], n), rng.choice([0, 1], n)).astype(float)
    table = pd.DataFrame({"patient_id": ids, "clinical.age_years": rng.normal(60, 9, n),
                          "clinical.center": rng.choice(["A", "B"], n), "clinical.sex": np.where(female, "F", "M"),
                          "clinical.total_dose_gy": prescription, "clinical.n_fractions": 35.0,
                          "genomic.toxicity_candidate_genes": genomic, "genomic.rsi": rng.uniform(0.2, 0.6, n)})
    table["clinical.sex"] = table["clinical.sex"].astype("str")
    features = dvh_table_features(dvh).reindex(ids).reset_index(drop=True)
    table = pd.concat([table, features], axis=1)
    table["outcome.tox_xerostomia"] = grade
    return table, dvh, ntcp


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> object:
    """OpenMP gradient boosting on a shared 2-core runner is 20x slower with a thread per core."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def train() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    return simulate(700, seed=1)


@pytest.fixture(scope="module")
def held_out() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    return simulate(3000, seed=2)


def _event(table: pd.DataFrame) -> np.ndarray:
    return (table["outcome.tox_xerostomia"].to_numpy() >= 2).astype(int)


@pytest.fixture(scope="module")
def logistic(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> ToxicityClassifier:
    return ToxicityClassifier(estimator="logistic", random_state=0).fit(train[0])


@pytest.fixture(scope="module")
def lkb(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> ToxicityClassifier:
    # the simulated truth is an LKB on the physical mean dose at one regimen: its TD50 is recovered on that scale
    return ToxicityClassifier(estimator="patient_lkb", calibration=None, random_state=0,
                              fractionation=None).fit(train[0])


def test_clone_pipeline_and_label_column(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> None:
    table = train[0].iloc[:300]
    model = ToxicityClassifier(endpoint="xerostomia", estimator="hgb", calibration="isotonic", random_state=3)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    pipe = Pipeline([("tox", copy)]).fit(table, table["outcome.tox_xerostomia"])
    p = pipe.predict_proba(table)
    assert p.shape == (300, 2) and np.allclose(p.sum(axis=1), 1.0) and ((p >= 0) & (p <= 1)).all()
    from_column = clone(model).fit(table)  # y=None reads outcome.tox_xerostomia
    np.testing.assert_allclose(from_column.predict_proba(table), p)
    prefixed = clone(model).set_params(endpoint="tox_xerostomia").fit(table)  # the patients.csv column name
    np.testing.assert_allclose(prefixed.predict_proba(table), p)
    restored = pickle.loads(pickle.dumps(prefixed))
    np.testing.assert_array_equal(restored.predict_proba(table), prefixed.predict_proba(table))
    # the model never uses the outcome, the centre or the spinal cord as inputs
    used = pipe.named_steps["tox"].columns_
    assert not [c for c in used if c.startswith(("outcome.", "dose.spinal_cord", "clinical.center"))]
    assert "dose.parotid_l.mean_gy" in used and "genomic.toxicity_candidate_genes" in used


def test_missing_grades_are_dropped(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> None:
    table = train[0].iloc[:200].copy()
    grades = table["outcome.tox_xerostomia"].copy()
    grades.iloc[:20] = np.nan
    model = ToxicityClassifier(calibration=None).fit(table, grades)
    reference = ToxicityClassifier(calibration=None).fit(table.iloc[20:], grades.iloc[20:])
    np.testing.assert_allclose(model.predict_proba(table), reference.predict_proba(table))


def test_unknown_endpoint_names_it_and_the_tox_columns(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> None:
    with pytest.raises(InputError, match=r"'mucositis'.*tox_xerostomia"):
        ToxicityClassifier(endpoint="mucositis").fit(train[0])


def test_endpoint_without_its_organ_is_refused(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> None:
    table = train[0].drop(columns=[c for c in train[0].columns if c.startswith("dose.parotid")])
    with pytest.raises(InputError, match="parotid"):
        ToxicityClassifier().fit(table)


def test_patient_lkb_recovers_the_simulated_model(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray],
                                                  held_out: tuple[pd.DataFrame, pd.DataFrame, np.ndarray],
                                                  lkb: ToxicityClassifier) -> None:
    table, _, ntcp = held_out
    y = _event(table)
    oracle = roc_auc_score(y, ntcp)
    assert roc_auc_score(y, lkb.predict_proba(table)[:, 1]) > oracle - 0.02
    fitted = lkb.model_.named_steps["model"]
    names = list(lkb.model_.named_steps["inputs"].get_feature_names_out())[1:]
    coef = dict(zip(names, fitted.coef_, strict=True))
    assert coef["genomic.toxicity_candidate_genes"] == pytest.approx(W_GENOMIC, abs=0.08)  # per sd (sd 1)
    assert coef["clinical.sex_M"] == pytest.approx(-W_FEMALE, abs=0.1)  # first level F is the reference
    assert abs(coef["clinical.age_years"]) < 0.08  # a covariate without effect
    assert fitted.m_ == pytest.approx(M, rel=0.3)
    true_td50 = TD50_GY * np.exp(W_GENOMIC * table["genomic.toxicity_candidate_genes"]
                                 + W_FEMALE * (table["clinical.sex"] == "F"))
    inputs = lkb.model_.named_steps["inputs"].transform(table)
    assert np.median(np.abs(fitted.td50_per_patient_gy(inputs) / true_td50 - 1.0)) < 0.08
    # the population model (tabulated parameters, no covariates) is worse than the patient model
    assert roc_auc_score(y, population_lkb_ntcp(table, "xerostomia")) < oracle - 0.02
    logistic = ToxicityClassifier(estimator="logistic", random_state=0).fit(train[0])
    assert roc_auc_score(y, logistic.predict_proba(table)[:, 1]) > oracle - 0.03


def test_calibration_slope_on_held_out_data(held_out: tuple[pd.DataFrame, pd.DataFrame, np.ndarray],
                                            logistic: ToxicityClassifier) -> None:
    table = held_out[0]
    metrics = classification_metrics(_event(table), logistic.predict_proba(table)[:, 1])
    assert 0.8 <= metrics["calibration_slope"] <= 1.2
    assert abs(metrics["calibration_intercept"]) < 0.2


@pytest.mark.parametrize(("estimator", "groups"), [
    ("logistic", ("dose", "clinical", "genomic")), ("hgb", ("dose", "clinical", "genomic")),
    ("patient_lkb", ("dose", "clinical", "genomic")), ("logistic", ("dose", "clinical", "treatment")),
    ("patient_lkb", ("dose", "clinical", "treatment"))])
def test_what_if_is_exact_at_scale_one_and_monotone(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray],
                                                    estimator: str, groups: tuple[str, ...]) -> None:
    table = train[0]
    model = ToxicityClassifier(estimator=estimator, groups=groups,  # type: ignore[arg-type]
                               random_state=0).fit(table.iloc[:400])
    # the prescription is a (monotone) input of the logistic model, never a covariate of the LKB TD50
    assert ("clinical.total_dose_gy" in model.columns_) == ("treatment" in groups and estimator == "logistic")
    sample = table.iloc[400:460]
    now = model.predict_proba(sample)
    np.testing.assert_array_equal(model.predict_proba_at_dose(sample, scale=1.0), now)
    delivered = sample["clinical.total_dose_gy"].to_numpy()
    np.testing.assert_array_equal(model.predict_proba_at_dose(sample, prescription_gy=delivered), now)
    curve = np.column_stack([model.predict_proba_at_dose(sample, scale=s)[:, 1] for s in np.linspace(0.5, 1.5, 11)])
    assert (np.diff(curve, axis=1) >= -1e-12).all()
    assert (curve[:, -1] - curve[:, 0]).mean() > 0.1  # and it does respond to dose
    with pytest.raises(InputError, match="exactly one"):
        model.predict_proba_at_dose(sample)


def test_what_if_with_vx_needs_and_uses_the_dvhs(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> None:
    table, dvh, _ = train
    model = ToxicityClassifier(dose_metrics="all", random_state=0).fit(table.iloc[:400])
    assert "dose.parotid_l.v30gy_pct" in model.vx_columns()
    sample = table.iloc[400:440]
    with pytest.raises(InputError, match="dvhs") as info:
        model.predict_proba_at_dose(sample, scale=1.1)
    assert info.value.patient_id == sample["patient_id"].iloc[0]
    dvhs = dvhs_from_table(dvh[dvh["patient_id"].isin(sample["patient_id"])])
    np.testing.assert_array_equal(model.predict_proba_at_dose(sample, scale=1.0, dvhs=dvhs),
                                  model.predict_proba(sample))
    curve = np.column_stack([model.predict_proba_at_dose(sample, scale=s, dvhs=dvhs)[:, 1]
                             for s in (0.6, 0.8, 1.0, 1.2, 1.4)])
    assert (np.diff(curve, axis=1) >= -1e-12).all()


def test_scaled_features_match_a_scaled_plan(train: tuple[pd.DataFrame, pd.DataFrame, np.ndarray]) -> None:
    table, dvh, _ = train
    sample = table.iloc[:20]
    dvhs = dvhs_from_table(dvh[dvh["patient_id"].isin(sample["patient_id"])])
    doubled = scale_dose_features(sample, 2.0, dvhs=dvhs)
    # V_40 of the doubled plan is V_20 of the original plan; mean, gEUD, D_x double; volume and n stay
    np.testing.assert_allclose(doubled["dose.parotid_l.v40gy_pct"], sample["dose.parotid_l.v20gy_pct"])
    np.testing.assert_allclose(doubled["dose.parotid_r.d50_gy"], 2 * sample["dose.parotid_r.d50_gy"])
    np.testing.assert_allclose(doubled["dose.parotid_r.geud_gy"], 2 * sample["dose.parotid_r.geud_gy"])
    np.testing.assert_allclose(doubled["clinical.total_dose_gy"], 2 * sample["clinical.total_dose_gy"])
    np.testing.assert_array_equal(doubled["dose.parotid_l.volume_cc"], sample["dose.parotid_l.volume_cc"])
    np.testing.assert_array_equal(doubled["clinical.n_fractions"], sample["clinical.n_fractions"])
    # and against the features re-extracted from a really scaled dvh.csv
    rows = dvh[dvh["patient_id"].isin(sample["patient_id"])].assign(dose_gy=lambda d: 2 * d["dose_gy"])
    direct = dvh_table_features(rows).reindex(sample["patient_id"])
    for column in ("dose.parotid_l.v50gy_pct", "dose.parotid_r.mean_gy", "dose.parotid_l.max_gy"):
        np.testing.assert_allclose(doubled[column].to_numpy(), direct[column].to_numpy(), rtol=1e-12)


def test_penalised_likelihood_gradient() -> None:
    rng = np.random.default_rng(5)
    geud, x = rng.uniform(5, 60, 50), rng.normal(size=(50, 3))
    y = (rng.random(50) < 0.4).astype(float)
    theta = np.array([np.log(40.0), np.log(0.35), 0.1, -0.2, 0.05])
    _, grad = _penalised_nll(theta, geud, x, y, 0.7)
    step = 1e-6
    numeric = [(_penalised_nll(theta + step * e, geud, x, y, 0.7)[0]
                - _penalised_nll(theta - step * e, geud, x, y, 0.7)[0]) / (2 * step) for e in np.eye(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_patient_lkb_without_covariates_is_the_population_model() -> None:
    rng = np.random.default_rng(9)
    geud = rng.uniform(0, 80, 4000)
    y = rng.random(4000) < ndtr((geud - 50.0) / (0.2 * 50.0))
    model = PatientLKB(td50_gy=30.0, m=0.5).fit(geud[:, None], y)
    assert model.td50_gy_ == pytest.approx(50.0, rel=0.05)
    assert model.m_ == pytest.approx(0.2, rel=0.2)
    assert model.predict_proba(geud[:, None]).shape == (4000, 2)


def test_monotone_logistic_passes_check_estimator() -> None:
    check_estimator(MonotoneLogisticRegression())


def test_monotone_logistic_matches_sklearn_and_respects_bounds() -> None:
    rng = np.random.default_rng(4)
    x = pd.DataFrame(rng.normal(size=(500, 3)), columns=["a", "b", "c"])
    y = (rng.random(500) < 1 / (1 + np.exp(-(0.5 + x["a"] - 0.8 * x["b"])))).astype(int)
    free = MonotoneLogisticRegression(C=0.5).fit(x, y)
    reference = LogisticRegression(C=0.5, tol=1e-10, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(free.coef_, reference.coef_, atol=1e-4)
    np.testing.assert_allclose(free.intercept_, reference.intercept_, atol=1e-4)
    bounded = MonotoneLogisticRegression(C=0.5, increasing=["b"]).fit(x, y)
    assert bounded.coef_[0, 1] == pytest.approx(0.0, abs=1e-10) and bounded.coef_[0, 0] > 0.5


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small cohort of the package's generator, fused from its tables (dose features from dvh.csv)."""
    cohort = generate_cohort(tmp_path_factory.mktemp("tox") / "cohort", n_patients=60, seed=11, grid_size=20)
    patients = pd.read_csv(cohort / "patients.csv", dtype={"patient_id": str})
    expression = pd.read_csv(cohort / "expression.csv", dtype={"patient_id": str}).set_index("patient_id")
    dvh = pd.read_csv(cohort / "dvh.csv", dtype={"patient_id": str})
    table = fuse(patients["patient_id"].tolist(),
                 [clinical_frame(patients), genomic_features(expression), dvh_table_features(dvh)])
    return table, dvh


def test_generated_cohort_endpoints_and_what_if(generated: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    table, dvh = generated
    assert available_endpoints(table) == ["dysphagia", "xerostomia"]
    dvhs = dvhs_from_table(dvh)
    for endpoint, structures in (("xerostomia", ["parotid_l", "parotid_r"]),
                                 ("dysphagia", ["pharyngeal_constrictors"])):
        model = ToxicityClassifier(endpoint=endpoint, dose_metrics="all", random_state=0).fit(table)
        assert model.structures_ == structures
        now = model.predict_proba(table)
        np.testing.assert_array_equal(model.predict_proba_at_dose(table, scale=1.0, dvhs=dvhs), now)
        higher = model.predict_proba_at_dose(table, prescription_gy=80.0, dvhs=dvhs)[:, 1]
        assert (higher >= now[:, 1] - 1e-12).all()  # every delivered prescription is below 80 Gy


def test_endpoint_organs_are_data_with_the_lkb_organ_defined_once() -> None:
    """The endpoint -> organs table lives in radiobiology/data/endpoint_organs.yaml; the LKB organ of an endpoint
    with published LKB parameters comes from ntcp_parameters.yaml only (issue 15: tables defined once)."""
    from importlib import resources

    import yaml

    from radiogenomics.radiobiology.endpoints import endpoint_organs, toxicity_endpoints

    table = endpoint_organs()
    assert table["xerostomia"].lkb_organ == toxicity_endpoints()["xerostomia"].organ == "parotid"
    assert table["xerostomia"].organs == ("parotid", "submandibular_gland")
    assert table["dysphagia"].lkb_organ == "pharyngeal_constrictors"
    data = resources.files("radiogenomics.radiobiology").joinpath("data/endpoint_organs.yaml")
    doc = yaml.safe_load(data.read_text())
    assert not any("lkb_organ" in row for key, row in doc["endpoints"].items() if key in toxicity_endpoints())
