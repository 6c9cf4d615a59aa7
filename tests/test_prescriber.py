"""The prescriber: feature rows -> contract section 2 records, schema reindexing, flags, fallback, input hash."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prescriber_factory import Bundle

from radiogenomics.errors import InputError
from radiogenomics.models.applicability import ApplicabilityDomain, imaging_columns
from radiogenomics.models.prescriber import (
    HASH_FORMAT,
    RECORD_FIELDS,
    ModelInfo,
    Prescriber,
    input_sha256,
    population_rsi,
)
from radiogenomics.radiobiology import alpha_from_rsi, dose_for_gard_lq, load_rails

INFO = ModelInfo("radiogenomics-prescriber", "7", "models:/radiogenomics-prescriber/7")


@pytest.fixture(scope="module")
def features(bundle: Bundle) -> pd.DataFrame:
    """What a caller sends: the table without outcome columns."""
    return bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")])


def test_records_follow_the_contract(prescriber: Prescriber, features: pd.DataFrame, bundle: Bundle) -> None:
    records = prescriber.predict_records(features, model=INFO)
    assert len(records) == len(features)
    rails = load_rails().site("head_neck")
    for record, pid in zip(records, features["patient_id"], strict=True):
        assert tuple(record) == RECORD_FIELDS
        assert record["patient_id"] == pid
        assert (record["model_name"], record["model_version"], record["model_uri"]) == (INFO.name, INFO.version,
                                                                                           INFO.uri)
        assert record["rsi_lower"] <= record["rsi"] <= record["rsi_upper"]
        assert record["alpha_per_gy"] == pytest.approx(float(alpha_from_rsi(record["rsi"], 0.05)))
        assert record["alpha_beta_gy"] == pytest.approx(record["alpha_per_gy"] / 0.05)
        # the patient's own regimen (patients.csv total_dose_gy in n_fractions), contract section 1
        own = features.set_index("patient_id").loc[pid]
        n = float(own["clinical.n_fractions"])
        d = float(own["clinical.total_dose_gy"]) / n
        assert record["regimen_source"] == "patient" and record["site"] == "head_neck"
        assert (record["n_fractions"], record["target_gard"]) == (n, 33.0)
        assert record["dose_per_fraction_gy"] == pytest.approx(d, rel=1e-12)
        assert record["gard"] == pytest.approx(n * d * (record["alpha_per_gy"] + 0.05 * d))
        assert record["dose_for_target_gard_gy"] == pytest.approx(33.0 / (record["alpha_per_gy"] + 0.05 * d))
        assert record["rsi_source"] in ("measured", "predicted", "population")
        assert isinstance(record["oar_checks"], list)
        total = record["recommended_total_dose_gy"]
        assert rails.min_total_dose_gy - 1e-9 <= total <= rails.max_total_dose_gy + 1e-9
        assert record["recommended_n_fractions"] * record["recommended_dose_per_fraction_gy"] == pytest.approx(total)
        low, high = record["dose_for_target_gard_lower_gy"], record["dose_for_target_gard_upper_gy"]
        assert math.isnan(low) or low <= record["dose_for_target_gard_gy"]
        assert math.isnan(high) or record["dose_for_target_gard_gy"] <= high
        if math.isnan(low) or math.isnan(high):  # an end clipped or implausible gives no dose, flagged
            assert "implausible_parameter" in record["flags"] or "population_fallback" in record["flags"]
        assert set(record["toxicity"]) == {"xerostomia_grade_ge2"}
        assert 0.0 <= record["toxicity"]["xerostomia_grade_ge2"] <= 1.0
        assert len(record["input_sha256"]) == 64
        assert datetime.fromisoformat(record["created_at"]).utcoffset().total_seconds() == 0
    # the rails clip: a dose above the site maximum is flagged clipped_max
    for record in records:
        if record["dose_for_target_gard_gy"] > rails.max_total_dose_gy:
            assert "clipped_max" in record["flags"]


def test_toxicity_is_at_the_recommended_dose(prescriber: Prescriber, features: pd.DataFrame,
                                             bundle: Bundle) -> None:
    rows = features.head(4)
    records = prescriber.predict_records(rows)
    table, _ = prescriber.prepare(rows)
    totals = np.array([r["recommended_total_dose_gy"] for r in records])
    fractions = np.array([r["recommended_n_fractions"] for r in records], dtype=float)
    expected = bundle.toxicity["xerostomia"].predict_proba_at_dose(table, prescription_gy=totals,
                                                                   n_fractions=fractions)[:, 1]
    got = [r["toxicity"]["xerostomia_grade_ge2"] for r in records]
    np.testing.assert_allclose(got, expected)
    delivered = bundle.toxicity["xerostomia"].predict_proba(table)[:, 1]
    changed = np.abs(table["clinical.total_dose_gy"].to_numpy(dtype=float) - totals) > 1.0
    assert changed.any() and not np.allclose(np.array(got)[changed], delivered[changed])


def test_measured_rsi_is_used_and_missing_genomics_flagged(prescriber: Prescriber, features: pd.DataFrame,
                                                           bundle: Bundle) -> None:
    rows = features.head(5)
    measured = prescriber.predict_records(rows)
    clip = bundle.radiosensitivity.clip
    for record, rsi in zip(measured, rows["genomic.rsi"], strict=True):
        assert "missing_genomics" not in record["flags"]
        if "population_fallback" not in record["flags"]:
            assert record["rsi"] == pytest.approx(float(np.clip(rsi, *clip)))
    blind = rows.assign(**{"genomic.rsi": np.nan})
    predicted = prescriber.predict_records(blind)
    imaging = bundle.radiosensitivity.predict_imaging(prescriber.prepare(blind)[0])
    for record, value in zip(predicted, imaging, strict=True):
        assert "missing_genomics" in record["flags"]
        if "population_fallback" not in record["flags"]:
            assert record["rsi"] == pytest.approx(value)


def test_missing_imaging_and_missing_columns(prescriber: Prescriber, features: pd.DataFrame) -> None:
    rows = features.head(3).copy()
    assert not any("missing_imaging" in r["flags"] for r in prescriber.predict_records(rows))
    no_pet = rows.drop(columns=[c for c in rows.columns if c.startswith("pet_fdg.")]).assign(
        **{"available.pet_fdg": 0})
    records = prescriber.predict_records(no_pet)
    assert all("missing_imaging" in r["flags"] for r in records)
    assert all(math.isfinite(r["recommended_total_dose_gy"]) for r in records)
    # a column the caller leaves out is missing (NaN), not an error; an absent availability flag is 0
    minimal = rows[["patient_id", "genomic.rsi", "clinical.site"]]
    records = prescriber.predict_records(minimal)
    assert all("missing_imaging" in r["flags"] for r in records)
    assert all(r["toxicity"] == {} for r in records)  # dose features are never imputed


def test_a_failed_imaging_item_is_flagged_even_when_its_modality_is_available(prescriber: Prescriber,
                                                                              features: pd.DataFrame) -> None:
    """A GTV mask that failed extraction (e.g. on another grid) leaves every ct.gtv.* feature missing while the
    CT's organ items succeeded (available.ct stays 1): the models would see imputed values, so the record is
    flagged missing_imaging; organ items missing the same way are flagged too."""
    rows = features.head(3).copy()
    gtv = [c for c in rows.columns if c.startswith("ct.gtv.")]
    assert gtv and (rows["available.ct"] == 1).all()
    rows.loc[rows.index[1], gtv] = np.nan
    flags = [r["flags"] for r in prescriber.predict_records(rows)]
    assert ["missing_imaging" in f for f in flags] == [False, True, False]
    organ = [c for c in rows.columns if c.startswith("ct.parotid_l.")]
    rows.loc[rows.index[2], organ] = np.nan
    flags = [r["flags"] for r in prescriber.predict_records(rows)]
    assert ["missing_imaging" in f for f in flags] == [False, True, True]
    partly = features.head(1).copy()
    partly.loc[partly.index[0], gtv[:3]] = np.nan  # a few NaN features of a working item: not a failed item
    assert "missing_imaging" not in prescriber.predict_records(partly)[0]["flags"]


def test_unknown_and_non_finite_inputs_are_input_errors(prescriber: Prescriber, features: pd.DataFrame) -> None:
    rows = features.head(2)
    with pytest.raises(InputError, match="ct.gtv.not_a_feature"):
        prescriber.predict_records(rows.assign(**{"ct.gtv.not_a_feature": 1.0}))
    column = imaging_columns(rows)[0]
    bad = rows.copy()
    bad.loc[bad.index[1], column] = np.inf
    with pytest.raises(InputError, match=column) as info:
        prescriber.predict_records(bad)
    assert info.value.patient_id == rows["patient_id"].iloc[1]
    with pytest.raises(InputError, match="n_fractions"):
        prescriber.predict_records(rows, n_fractions=0)
    with pytest.raises(InputError, match="whole number"):
        prescriber.predict_records(rows.assign(n_fractions=[30, 30.5]))
    with pytest.raises(InputError, match="dose_per_fraction_gy"):
        prescriber.predict_records(rows.assign(dose_per_fraction_gy=[2.0, np.inf]))


def test_regimen_per_row_and_defaults(prescriber: Prescriber, features: pd.DataFrame) -> None:
    rows = features.head(3).assign(target_gard=[30.0, np.nan, 45.0], n_fractions=[30, 35, 33],
                                   dose_per_fraction_gy=[2.2, 2.0, 1.8])
    records = prescriber.predict_records(rows, target_gard=40.0)
    assert [r["target_gard"] for r in records] == [30.0, 40.0, 45.0]
    assert [r["n_fractions"] for r in records] == [30.0, 35.0, 33.0]
    assert {r["regimen_source"] for r in records} == {"request"}
    for r in records:
        expected = dose_for_gard_lq(r["alpha_per_gy"], r["target_gard"], beta_per_gy2=0.05,
                                    dose_per_fraction_gy=r["dose_per_fraction_gy"])
        assert r["dose_for_target_gard_gy"] == pytest.approx(float(expected))
        assert r["gard"] == pytest.approx(r["n_fractions"] * r["dose_per_fraction_gy"]
                                          * (r["alpha_per_gy"] + 0.05 * r["dose_per_fraction_gy"]))


def test_out_of_distribution_falls_back_to_population(prescriber: Prescriber, features: pd.DataFrame,
                                                      bundle: Bundle) -> None:
    typical = prescriber.predict_records(features)
    assert sum("out_of_distribution" in r["flags"] for r in typical) <= 0.2 * len(typical)
    rows = features.head(2).copy()
    columns = imaging_columns(rows)
    rows[columns] = rows[columns] * 50.0 + 1e4
    rows["genomic.rsi"] = np.nan
    records = prescriber.predict_records(rows)
    median, low, high = population_rsi(bundle.table["genomic.rsi"])
    for record in records:
        assert {"out_of_distribution", "population_fallback", "missing_genomics"} <= set(record["flags"])
        assert (record["rsi"], record["rsi_lower"], record["rsi_upper"]) == pytest.approx((median, low, high))
        assert record["alpha_per_gy"] == pytest.approx(float(alpha_from_rsi(median, 0.05)))
    # with a measured RSI the imaging is flagged but the measured value is kept
    measured = prescriber.predict_records(rows.assign(**{"genomic.rsi": 0.4}))
    assert all("out_of_distribution" in r["flags"] and "population_fallback" not in r["flags"] for r in measured)
    assert all(r["rsi"] == pytest.approx(0.4) for r in measured)


def test_population_rsi_is_the_training_median_and_percentiles() -> None:
    values = np.r_[np.linspace(0.1, 0.7, 101), np.nan, 0.95]  # 0.95 is outside the LQ domain (alpha < 0)
    median, low, high = population_rsi(values)
    assert (median, low, high) == pytest.approx((0.4, 0.13, 0.67))
    with pytest.raises(InputError):
        population_rsi([np.nan, 0.9])


def test_input_hash_is_canonical_and_sensitive(prescriber: Prescriber, features: pd.DataFrame) -> None:
    rows = features.head(2)
    first = prescriber.predict_records(rows, model=INFO)
    again = prescriber.predict_records(rows.iloc[::-1], model=INFO)[::-1]
    assert [r["input_sha256"] for r in first] == [r["input_sha256"] for r in again]
    assert first[0]["input_sha256"] != first[1]["input_sha256"]
    other_version = prescriber.predict_records(rows, model=ModelInfo(INFO.name, "8", INFO.uri))
    other_target = prescriber.predict_records(rows, model=INFO, target_gard=34.0)
    changed = rows.copy()
    changed.loc[changed.index[0], "clinical.age_years"] += 1.0
    other_feature = prescriber.predict_records(changed, model=INFO)
    for variant in (other_version, other_target, other_feature):
        assert variant[0]["input_sha256"] != first[0]["input_sha256"]
    assert other_feature[1]["input_sha256"] == first[1]["input_sha256"]
    # the documented canonical form, computed independently
    table, _ = prescriber.prepare(rows)
    row = table.iloc[0].drop(labels=["patient_id", *[c for c in table.columns if c.startswith("outcome.")]])
    features_json = {}
    for key, value in row.items():
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            features_json[key] = None
        elif isinstance(value, str):
            features_json[key] = value
        else:
            features_json[key] = float(value)
    own = rows.iloc[0]
    oars = {}
    for column in rows.columns:
        parts = column.split(".")
        if parts[0] == "dose" and parts[2] in ("mean_gy", "max_gy", "volume_cc") and parts[1] not in oars:
            values = {m: own.get(f"dose.{parts[1]}.{m}") for m in ("mean_gy", "max_gy", "volume_cc")}
            oars[parts[1]] = {m: None if v is None or math.isnan(v) else float(v) for m, v in values.items()}
            oars[parts[1]]["dvh_sha256"] = None
    gate = {"site": "head_neck", "reference_prescription_gy": float(own["clinical.total_dose_gy"]), "oars": oars}
    n = float(own["clinical.n_fractions"])
    payload = {"format": HASH_FORMAT, "features": features_json,
               "regimen": {"n_fractions": n, "dose_per_fraction_gy": float(own["clinical.total_dose_gy"]) / n,
                           "target_gard": 33.0},
               "model": {"name": INFO.name, "version": INFO.version}, "gate": gate}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    assert first[0]["input_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert input_sha256(row.to_dict(), payload["regimen"], INFO, gate) == first[0]["input_sha256"]


def test_applicability_domain(bundle: Bundle) -> None:
    domain = ApplicabilityDomain(n_splits=4).fit(bundle.table)
    scores = domain.score_samples(bundle.table)
    assert np.isfinite(domain.z_threshold_) and np.isfinite(domain.distance_threshold_)
    assert scores["in_domain"].mean() >= 0.8
    far = bundle.table.head(3).copy()
    far[domain.columns_] = far[domain.columns_] * 50.0 + 1e4
    assert not domain.in_domain(far).any()
    with pytest.raises(InputError):
        ApplicabilityDomain().fit(bundle.table.head(4))


def test_prescriber_pickles(prescriber: Prescriber, features: pd.DataFrame, tmp_path: Path) -> None:
    import joblib

    joblib.dump(prescriber, tmp_path / "p.joblib")
    loaded = joblib.load(tmp_path / "p.joblib")
    a = prescriber.predict_records(features.head(2))
    b = loaded.predict_records(features.head(2))
    assert [r["input_sha256"] for r in a] == [r["input_sha256"] for r in b]
    assert [r["recommended_total_dose_gy"] for r in a] == [r["recommended_total_dose_gy"] for r in b]



class _Extrapolating:
    """An RSI model whose imaging prediction hit its lower clip bound (as ridge does far from its data)."""

    clip = (0.001, 0.999)

    def predict_all(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(table)
        return np.full(n, 0.001), np.tile([0.001, 0.999], (n, 1)), np.array(["imaging"] * n)


def test_an_imaging_rsi_clipped_at_the_surrogate_bound_falls_back_to_the_population() -> None:
    """Fail closed: an extrapolated imaging RSI (clipped to 0.001) never becomes alpha ~3.4 /Gy."""
    from radiogenomics.features.schema import build_schema

    frame = pd.DataFrame({"patient_id": ["P1"], "ct.gtv.original_firstorder_Mean": [1.0]})
    prescriber = Prescriber(build_schema(frame), _Extrapolating(), population=(0.4, 0.3, 0.5))
    record = prescriber.predict_records(frame)[0]
    assert {"out_of_distribution", "population_fallback", "missing_genomics"} <= set(record["flags"])
    assert record["rsi"] == 0.4 and record["alpha_per_gy"] == pytest.approx(float(alpha_from_rsi(0.4)))


def test_a_measured_rsi_clipped_at_the_bound_falls_back_too() -> None:
    """A rank-model RSI <= 0 (clipped to 0.001) is no surviving fraction: population values, flagged."""
    from radiogenomics.features.schema import build_schema

    class Measured(_Extrapolating):
        def predict_all(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            point, bounds, _ = super().predict_all(table)
            return point, bounds, np.array(["measured"] * len(table))

    frame = pd.DataFrame({"patient_id": ["P1"], "ct.gtv.original_firstorder_Mean": [1.0]})
    record = Prescriber(build_schema(frame), Measured(), population=(0.4, 0.3, 0.5)).predict_records(frame)[0]
    assert {"out_of_distribution", "population_fallback"} <= set(record["flags"])
    assert "missing_genomics" not in record["flags"] and record["rsi"] == 0.4
