"""Toxicity with fractionation: organ dose metrics as EQD2 at the organ's alpha/beta (Fowler 1989).

A small closed-form cohort: plans of 15-40 fractions of 2-3 Gy to the target, parotid mean doses a fraction of
the prescription, grade >= 2 drawn from an LKB model on the mean EQD2 of the glands (alpha/beta 3 Gy), so the
same physical dose in fewer, larger fractions is more toxic.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from radiogenomics.errors import InputError
from radiogenomics.features.schema import build_schema
from radiogenomics.models.dose_scaling import (
    GENERIC_ALPHA_BETA_GY,
    eqd2_dose_features,
    scale_dose_features,
    structure_alpha_beta_gy,
)
from radiogenomics.models.toxicity import DOSE_PER_FRACTION_TOLERANCE_GY, ToxicityClassifier
from radiogenomics.radiobiology import bed, eqd2, isoeffective_total_dose
from radiogenomics.radiobiology.tissues import load_tissues
from radiogenomics.training.registry.pyfunc import ToxicityModel

AB_GY = 3.0  # parotid alpha/beta of the tissue table
REGIMENS_80_GY = (44, 40, 34)  # 1.82, 2.0 and 2.35 Gy per fraction


def cohort(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_fx = rng.choice([15, 20, 25, 30, 35, 40], n).astype(float)
    d_target = rng.choice([2.0, 2.2, 2.5, 3.0], n)
    total = n_fx * d_target
    table = pd.DataFrame({"patient_id": [f"F{seed}_{i:04d}" for i in range(n)],
                          "clinical.age_years": rng.normal(60.0, 9.0, n),
                          "clinical.total_dose_gy": total, "clinical.n_fractions": n_fx})
    eqd2_mean = np.zeros(n)
    for side in ("l", "r"):
        mean = total * rng.uniform(0.15, 0.8, n)
        table[f"dose.parotid_{side}.mean_gy"] = mean
        table[f"dose.parotid_{side}.volume_cc"] = 25.0
        eqd2_mean += 0.5 * mean * (mean / n_fx + AB_GY) / (2.0 + AB_GY)
    event = rng.random(n) < ndtr((eqd2_mean - 32.0) / (0.35 * 32.0))
    table["outcome.tox_xerostomia"] = np.where(event, 2.0, 0.0)
    return table


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return cohort(500, seed=3)


@pytest.fixture(scope="module")
def model(table: pd.DataFrame) -> ToxicityClassifier:
    return ToxicityClassifier(calibration=None, random_state=0).fit(table)


@pytest.fixture(scope="module")
def physical(table: pd.DataFrame) -> ToxicityClassifier:
    return ToxicityClassifier(calibration=None, random_state=0, fractionation=None).fit(table)


def test_eqd2_of_dose_metrics_against_published_anchors() -> None:
    # Fowler 1989: 50 Gy in 5 fractions at alpha/beta 10 Gy is BED 100 Gy, EQD2 100/1.2 = 83.33 Gy;
    # 2 Gy fractions are their own EQD2 at any alpha/beta (60 Gy / 30 fx -> 60 Gy)
    assert bed(50.0, 5, 10.0) == pytest.approx(100.0)
    assert eqd2(50.0, 5, 10.0) == pytest.approx(250.0 / 3.0)
    frame = pd.DataFrame({"patient_id": ["a", "b", "c", "d"],
                          "dose.parotid_l.mean_gy": [50.0, 60.0, 30.0, 30.0],
                          "dose.parotid_l.max_gy": [50.0, 60.0, 45.0, 45.0],
                          "dose.parotid_l.d50_gy": [50.0, 60.0, 15.0, 15.0],
                          "dose.parotid_l.v30gy_pct": [100.0, 100.0, 50.0, 50.0],
                          "dose.parotid_l.volume_cc": [20.0, 20.0, 20.0, 20.0],
                          "dose.larynx.mean_gy": [50.0, 60.0, 15.0, 15.0],
                          "clinical.total_dose_gy": [70.0, 60.0, 70.0, 70.0]})
    n = np.array([5.0, 30.0, 35.0, np.nan])
    out = eqd2_dose_features(frame, n, {"parotid_l": 10.0, "larynx": 3.0})
    np.testing.assert_allclose(out["dose.parotid_l.mean_gy"].iloc[:2], [250.0 / 3.0, 60.0], rtol=1e-12)
    np.testing.assert_allclose(out["dose.parotid_l.max_gy"].iloc[:2], [250.0 / 3.0, 60.0], rtol=1e-12)
    np.testing.assert_allclose(out["dose.larynx.mean_gy"].iloc[:2], [50.0 * (10.0 + 3.0) / 5.0, 60.0], rtol=1e-12)
    # the organ's own dose per fraction D/n: 30 Gy in 35 fx at a/b 10 is 30 (30/35 + 10)/12 Gy
    assert out["dose.parotid_l.mean_gy"].iloc[2] == pytest.approx(30.0 * (30.0 / 35.0 + 10.0) / 12.0, rel=1e-12)
    assert out["dose.larynx.mean_gy"].iloc[2] == pytest.approx(15.0 * (15.0 / 35.0 + 3.0) / 5.0, rel=1e-12)
    # no n: NaN; V_x, volumes and the prescription stay physical
    converted = ["dose.parotid_l.mean_gy", "dose.parotid_l.max_gy", "dose.parotid_l.d50_gy", "dose.larynx.mean_gy"]
    assert out[converted].iloc[3].isna().all()
    for column in ("dose.parotid_l.v30gy_pct", "dose.parotid_l.volume_cc", "clinical.total_dose_gy", "patient_id"):
        pd.testing.assert_series_equal(out[column], frame[column])
    only = eqd2_dose_features(frame, n, {"parotid_l": 10.0}, columns=["dose.parotid_l.mean_gy"])
    pd.testing.assert_series_equal(only["dose.larynx.mean_gy"], frame["dose.larynx.mean_gy"])
    with pytest.raises(InputError, match="no alpha/beta"):
        eqd2_dose_features(frame, n, {"parotid_l": 10.0})
    with pytest.raises(InputError, match="negative") as info:
        eqd2_dose_features(frame.assign(**{"dose.larynx.mean_gy": [1.0, -1.0, 1.0, 1.0]}), n,
                           {"parotid_l": 10.0, "larynx": 3.0})
    assert info.value.patient_id == "b"


def test_organ_alpha_beta_from_the_tissue_table() -> None:
    tissues = load_tissues()
    for slug, row in (("parotid_l", "Parotid"), ("parotid_r", "Parotid"), ("submandibular_gland_r", "Glnd_Submand"),
                      ("pharyngeal_constrictors", "Musc_Constrict"), ("larynx", "Larynx"),
                      ("spinal_cord", "SpinalCord")):
        assert structure_alpha_beta_gy(slug) == (tissues.rows[row].alpha_beta_gy, None)
    assert structure_alpha_beta_gy("larynx")[0] == 3.5
    value, note = structure_alpha_beta_gy("gtv")  # a target volume: generic late-responding tissue, with a note
    assert value == GENERIC_ALPHA_BETA_GY == 3.0 and note is not None and "target volume" in note
    value, note = structure_alpha_beta_gy("no_such_organ")
    assert value == 3.0 and note is not None and "no organ" in note


def test_higher_dose_per_fraction_is_more_toxic_at_the_same_total(model: ToxicityClassifier,
                                                                   physical: ToxicityClassifier,
                                                                   table: pd.DataFrame) -> None:
    sample = table.iloc[:40]
    p = np.column_stack([model.predict_proba_at_dose(sample, prescription_gy=80.0, n_fractions=n)[:, 1]
                         for n in REGIMENS_80_GY])
    assert (np.diff(p, axis=1) > 0).all()  # 44 x 1.82 < 40 x 2.0 < 34 x 2.35 Gy, for every patient
    assert (p[:, 2] - p[:, 0]).mean() > 0.02
    # physical dose (the old behaviour): the number of fractions does not matter
    q = np.column_stack([physical.predict_proba_at_dose(sample, prescription_gy=80.0, n_fractions=n)[:, 1]
                         for n in REGIMENS_80_GY])
    np.testing.assert_array_equal(q[:, 0], q[:, 1])
    np.testing.assert_array_equal(q[:, 0], q[:, 2])
    # None keeps each row's n; a scale of 1 in the row's own n is the delivered plan
    np.testing.assert_array_equal(model.predict_proba_at_dose(sample, scale=1.0), model.predict_proba(sample))
    own = sample["clinical.n_fractions"].to_numpy()
    np.testing.assert_array_equal(model.predict_proba_at_dose(sample, scale=1.0, n_fractions=own),
                                  model.predict_proba(sample))
    with pytest.raises(InputError, match="n_fractions"):
        model.predict_proba_at_dose(sample, prescription_gy=80.0, n_fractions=0)


def test_regimens_of_equal_organ_eqd2_give_the_same_features_and_probability(model: ToxicityClassifier,
                                                                             physical: ToxicityClassifier) -> None:
    left, right = 30.0, 20.0  # parotid mean doses in 30 fractions, and the isoeffective doses in 15
    conventional = pd.DataFrame({"patient_id": ["p"], "clinical.age_years": [60.0], "clinical.total_dose_gy": [60.0],
                                 "clinical.n_fractions": [30.0], "dose.parotid_l.mean_gy": [left],
                                 "dose.parotid_l.volume_cc": [25.0], "dose.parotid_r.mean_gy": [right],
                                 "dose.parotid_r.volume_cc": [25.0], "outcome.tox_xerostomia": [np.nan]})
    hypo = conventional.assign(**{"clinical.n_fractions": [15.0], "clinical.total_dose_gy": [45.0],
                                  "dose.parotid_l.mean_gy": [isoeffective_total_dose(left, 30, AB_GY,
                                                                                     new_n_fractions=15)],
                                  "dose.parotid_r.mean_gy": [isoeffective_total_dose(right, 30, AB_GY,
                                                                                     new_n_fractions=15)]})
    assert hypo["dose.parotid_l.mean_gy"].iloc[0] < left
    a = eqd2_dose_features(conventional, [30.0], model.alpha_beta_gy_, columns=model.columns_)
    b = eqd2_dose_features(hypo, [15.0], model.alpha_beta_gy_, columns=model.columns_)
    dose = [c for c in model.columns_ if c.endswith("mean_gy")]
    np.testing.assert_allclose(a[dose].to_numpy(), b[dose].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(hypo), model.predict_proba(conventional), rtol=1e-12)
    assert not np.allclose(physical.predict_proba(hypo), physical.predict_proba(conventional))


def test_rows_without_a_number_of_fractions(table: pd.DataFrame, model: ToxicityClassifier,
                                            caplog: pytest.LogCaptureFixture) -> None:
    part = table.iloc[:300].copy()
    n = part["clinical.n_fractions"].to_numpy().copy()
    n[:25], n[25:30] = np.nan, 0.0
    part["clinical.n_fractions"] = n
    with caplog.at_level(logging.WARNING, logger="radiogenomics.models.toxicity"):
        fitted = ToxicityClassifier(calibration=None, random_state=0).fit(part)
    assert "30 graded patient(s) without a positive clinical.n_fractions left out of fit" in caplog.text
    reference = ToxicityClassifier(calibration=None, random_state=0).fit(part.iloc[30:])
    sample = table.iloc[300:340]
    np.testing.assert_allclose(fitted.predict_proba(sample), reference.predict_proba(sample), rtol=1e-12)
    # the what-if gives no probability without n (never an imputed dose); a given n answers
    missing = sample.assign(**{"clinical.n_fractions": [np.nan, 0.0] + [35.0] * 38})
    at = model.predict_proba_at_dose(missing, prescription_gy=70.0)
    assert np.isnan(at[:2]).all() and np.isfinite(at[2:]).all()
    np.testing.assert_array_equal(at[2:], model.predict_proba_at_dose(missing.iloc[2:], prescription_gy=70.0))
    np.testing.assert_array_equal(model.dose_known(missing), [False, False] + [True] * 38)
    assert model.dose_known(missing, n_fractions=35).all()
    assert np.isfinite(model.predict_proba_at_dose(missing, prescription_gy=70.0, n_fractions=35)).all()
    no_dose = sample.assign(**{"dose.parotid_l.mean_gy": [np.nan] + [20.0] * 39})
    assert not model.dose_known(no_dose)[0] and model.dose_known(no_dose)[1:].all()
    with pytest.raises(InputError, match="n_fractions"):
        ToxicityClassifier(calibration=None).fit(part.drop(columns=["clinical.n_fractions"]))
    # physical dose needs no n
    ToxicityClassifier(calibration=None, fractionation=None).fit(part.drop(columns=["clinical.n_fractions"]))
    with pytest.raises(InputError, match="fractionation"):
        ToxicityClassifier(fractionation="bed").fit(part)  # type: ignore[arg-type]


def test_training_range_of_the_dose_per_fraction(model: ToxicityClassifier, table: pd.DataFrame) -> None:
    d = table["clinical.total_dose_gy"] / table["clinical.n_fractions"]
    low, high = model.dose_per_fraction_range_gy_
    assert (low, high) == (pytest.approx(d.min()), pytest.approx(d.max())) == (pytest.approx(2.0), pytest.approx(3.0))
    tol = DOSE_PER_FRACTION_TOLERANCE_GY
    np.testing.assert_array_equal(
        model.regimen_in_training([1.8, low - tol / 2, 2.4, high + tol / 2, high + 2 * tol, 5.0, np.nan]),
        [False, True, True, True, False, False, False])
    assert model.regimen_in_training(2.0).tolist() == [True]
    # rows left out of fit (no n) do not count; a model without the columns has no range and flags nothing
    narrow = table.iloc[:300].assign(**{"clinical.n_fractions": lambda t: t["clinical.n_fractions"].where(
        t["clinical.total_dose_gy"] / t["clinical.n_fractions"] < 2.9)})
    assert ToxicityClassifier(calibration=None).fit(narrow).dose_per_fraction_range_gy_[1] == pytest.approx(2.5)
    bare = ToxicityClassifier(calibration=None, fractionation=None).fit(
        table.drop(columns=["clinical.n_fractions"]))
    assert bare.dose_per_fraction_range_gy_ is None and bare.regimen_in_training([1.0, 9.0]).all()


def test_old_pickles_predict_on_physical_dose_as_before(physical: ToxicityClassifier, model: ToxicityClassifier,
                                                        table: pd.DataFrame) -> None:
    old = pickle.loads(pickle.dumps(physical))
    for name in ("fractionation", "alpha_beta_gy_", "dose_per_fraction_range_gy_"):  # what old pickles lack
        delattr(old, name)
    old = pickle.loads(pickle.dumps(old))
    assert old.fractionation is None and old.get_params()["fractionation"] is None
    sample = table.iloc[:30]
    factor = 80.0 / sample["clinical.total_dose_gy"].to_numpy()
    before = old.model_.predict_proba(scale_dose_features(sample, factor, columns=old.columns_))
    for n in REGIMENS_80_GY:
        np.testing.assert_array_equal(old.predict_proba_at_dose(sample, prescription_gy=80.0, n_fractions=n), before)
    np.testing.assert_array_equal(old.predict_proba(sample), old.model_.predict_proba(sample))
    assert old.regimen_in_training([0.5, 2.0, 20.0]).all()  # no recorded range
    # a new model keeps its EQD2 scale through a pickle
    again = pickle.loads(pickle.dumps(model))
    assert again.fractionation == "eqd2"
    np.testing.assert_array_equal(again.predict_proba_at_dose(sample, prescription_gy=80.0, n_fractions=34),
                                  model.predict_proba_at_dose(sample, prescription_gy=80.0, n_fractions=34))


def test_pyfunc_toxicity_model_takes_n_fractions(model: ToxicityClassifier, table: pd.DataFrame) -> None:
    graded = table.iloc[:5]
    rows = graded.drop(columns=["outcome.tox_xerostomia"])  # the schema puts the label back, missing
    pyfunc = ToxicityModel()
    pyfunc.schema, pyfunc.models = build_schema(table), {"xerostomia": model}
    at_34 = pyfunc.predict(None, rows, params={"prescription_gy": 80.0, "n_fractions": 34})["xerostomia_grade_ge2"]
    np.testing.assert_allclose(at_34, model.predict_proba_at_dose(graded, prescription_gy=80.0, n_fractions=34)[:, 1],
                               rtol=1e-12)
    at_44 = pyfunc.predict(None, rows, params={"prescription_gy": 80.0, "n_fractions": 44})["xerostomia_grade_ge2"]
    assert (at_44.to_numpy() < at_34.to_numpy()).all()
    own_plan_in_10 = pyfunc.predict(None, rows, params={"n_fractions": 10, "prescription_gy": None})
    np.testing.assert_allclose(own_plan_in_10["xerostomia_grade_ge2"],
                               model.predict_proba_at_dose(graded, scale=1.0, n_fractions=10)[:, 1], rtol=1e-12)
    plain = pyfunc.predict(None, rows)["xerostomia_grade_ge2"]
    np.testing.assert_allclose(plain, model.predict_proba(graded)[:, 1], rtol=1e-12)
