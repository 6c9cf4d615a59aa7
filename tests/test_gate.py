"""The safety gate on the prescriber's records (contract section 2, issue 15): every case here passed unflagged
before the gate (a personalised dose for an empty or foreign-site patient, OAR limits never acting on the dose,
the patient's own regimen ignored, an implausible alpha handed on, a misspelt column dropped silently)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from prescriber_factory import Bundle

from radiogenomics.errors import InputError
from radiogenomics.models.gate import check_record
from radiogenomics.models.prescriber import RECORD_FIELDS, Prescriber
from radiogenomics.radiobiology import load_rails


@pytest.fixture(scope="module")
def features(bundle: Bundle) -> pd.DataFrame:
    return bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")])


def one(prescriber: Prescriber, rows: pd.DataFrame | list, **options: object) -> dict:
    records = prescriber.predict_records(rows, **options)  # type: ignore[arg-type]
    assert len(records) == 1 and tuple(records[0]) == RECORD_FIELDS
    return records[0]


def test_an_empty_patient_gets_the_population_and_the_standard_regimen(prescriber: Prescriber) -> None:
    for rows in ([{"patient_id": "EMPTY"}], pd.DataFrame({"patient_id": ["EMPTY"]})):
        record = one(prescriber, rows)
        assert {"population_fallback", "missing_genomics", "missing_imaging", "oar_unchecked",
                "toxicity_unavailable"} <= set(record["flags"])
        assert record["rsi_source"] == "population" and record["regimen_source"] == "default"
        assert record["site"] == "head_neck"
        assert (record["n_fractions"], record["dose_per_fraction_gy"]) == (35, 2.0)  # rails: 70 Gy in 35
        assert record["recommended_total_dose_gy"] == pytest.approx(70.0)
        assert record["rsi"] == pytest.approx(prescriber.population[0])
        assert record["toxicity"] == {}


def test_a_foreign_site_falls_back_to_that_sites_population_values(prescriber: Prescriber,
                                                                 features: pd.DataFrame) -> None:
    row = features.head(1).assign(**{"clinical.site": "prostate"})
    record = one(prescriber, row)
    assert {"site_not_in_training", "population_fallback", "toxicity_unavailable"} <= set(record["flags"])
    assert record["site"] == "prostate" and record["rsi_source"] == "population"
    assert record["alpha_beta_gy"] == pytest.approx(load_rails().site("prostate").population_alpha_beta_gy)
    rails = load_rails().site("prostate")
    assert rails.min_total_dose_gy <= record["recommended_total_dose_gy"] <= rails.max_total_dose_gy
    assert record["toxicity"] == {}  # head-and-neck toxicity models say nothing about a prostate patient
    # the patient's own regimen stays (70 Gy in 35 is inside the prostate rails): no personalised dose
    own = features.iloc[0]
    assert record["recommended_total_dose_gy"] == pytest.approx(float(own["clinical.total_dose_gy"]))


@pytest.mark.parametrize(("column", "value", "match"), [
    ("clinical.age_years", 5000.0, "clinical.age_years"),
    ("clinical.site", "mars", "clinical.site"),
    ("clinical.total_dose_gy", -70.0, "clinical.total_dose_gy"),
    ("clinical.n_fractions", 2.5, "clinical.n_fractions"),
    ("genomic.rsi", 7.0, "genomic.rsi"),
    ("dose.spinal_cord.max_gy", -1.0, "dose.spinal_cord.max_gy"),
])
def test_impossible_values_are_input_errors_naming_patient_and_field(prescriber: Prescriber, features: pd.DataFrame,
                                                                     column: str, value: object, match: str) -> None:
    row = features.head(1).astype({column: object} if column in features.columns else {}).assign(**{column: value})
    with pytest.raises(InputError, match=match) as info:
        prescriber.predict_records(row)
    assert info.value.patient_id == features["patient_id"].iloc[0]


def test_a_possible_but_unseen_clinical_value_falls_back_unless_the_rsi_is_measured(prescriber: Prescriber,
                                                                                   features: pd.DataFrame) -> None:
    ages = features["clinical.age_years"]
    unseen = float(ages.max() + 0.5 * (ages.max() - ages.min()))  # beyond the training range (+10 %), possible
    assert unseen <= 120
    predicted = one(prescriber, features.head(1).assign(**{"clinical.age_years": unseen, "genomic.rsi": np.nan}))
    assert {"out_of_distribution", "population_fallback"} <= set(predicted["flags"])
    measured = one(prescriber, features.head(1).assign(**{"clinical.age_years": unseen, "genomic.rsi": 0.4}))
    assert "out_of_distribution" in measured["flags"] and "population_fallback" not in measured["flags"]
    assert measured["rsi"] == pytest.approx(0.4) and measured["rsi_source"] == "measured"


def test_an_imaging_pattern_no_training_patient_had_falls_back_for_an_imaging_rsi(prescriber: Prescriber,
                                                                                 features: pd.DataFrame) -> None:
    no_pet = features.head(1).drop(columns=[c for c in features.columns if c.startswith("pet_fdg.")]).assign(
        **{"available.pet_fdg": 0, "genomic.rsi": np.nan})
    record = one(prescriber, no_pet)
    assert {"missing_imaging", "population_fallback"} <= set(record["flags"])
    gtv_gone = features.head(1).assign(**{"genomic.rsi": np.nan})
    gtv_gone.loc[:, [c for c in features.columns if c.startswith("ct.gtv.")]] = np.nan
    record = one(prescriber, gtv_gone)
    assert {"missing_imaging", "population_fallback"} <= set(record["flags"])
    # the record says which imaging the model uses is missing (issue 16: "the record says which")
    assert any("ct.gtv" in note for note in record["notes"]), record["notes"]
    assert any("population fallback" in note for note in record["notes"])


def test_hard_oar_limits_lower_the_dose_and_soft_ones_are_reported(prescriber: Prescriber,
                                                                   features: pd.DataFrame) -> None:
    """A radioresistant patient (measured RSI 0.6: GARD 33 needs ~99 Gy, clipped to 80) whose spinal cord gets
    82 % of the planned prescription: the cord (not a model feature) limits the dose to planned x 50 / cord."""
    row = features.head(1).assign(**{"genomic.rsi": 0.6})
    planned = float(row["clinical.total_dose_gy"].iloc[0])
    cord = one(prescriber, row.assign(**{"dose.spinal_cord.max_gy": 0.82 * planned}))
    assert "oar_limited" in cord["flags"]
    total, n = cord["recommended_total_dose_gy"], cord["recommended_n_fractions"]
    entry = next(c for c in cord["oar_checks"] if c["structure"] == "spinal_cord")
    assert entry == {**entry, "metric": "max_gy", "hard": True, "status": "limited"}
    assert entry["dose_gy"] == pytest.approx(0.82 * total) and entry["limit_gy"] == 50.0
    # by hand: the cord's dose in the same plan at 2 Gy per fraction to the target (equal BED, a/b 2 Gy) is 50 Gy
    cord_gy = 0.82 * total
    assert cord_gy * (2.0 + cord_gy / n) / (2.0 + 2.0 * 0.82) == pytest.approx(50.0, rel=1e-9)
    assert entry["value_gy"] == pytest.approx(50.0, rel=1e-9)
    # hot parotids: reported, the tumour dose is not lowered
    hot = row.assign(**{"dose.parotid_l.mean_gy": 0.6 * planned, "dose.parotid_r.mean_gy": 0.6 * planned})
    record = one(prescriber, hot)
    assert "oar_soft_limit_exceeded" in record["flags"] and "oar_limited" not in record["flags"]
    assert record["recommended_total_dose_gy"] == pytest.approx(80.0)
    assert {c["status"] for c in record["oar_checks"] if c["structure"].startswith("parotid")
            and c["metric"] == "mean_gy"} == {"exceeded"}
    # a DVH passed for the patient replaces the dose.* summary of that structure
    pid = str(row["patient_id"].iloc[0])
    dvh = (np.array([10.0, 0.9 * planned]), np.array([5.0, 0.1]))  # differential DVH: bin doses, volumes
    with_dvh = one(prescriber, row, oar_dvhs={pid: {"SpinalCord": dvh}})
    assert with_dvh["recommended_total_dose_gy"] == pytest.approx(60.0)  # the site minimum: limit exceeded there
    assert "oar_limit_exceeded" in with_dvh["flags"]


def test_the_patients_own_regimen_is_the_default(prescriber: Prescriber, features: pd.DataFrame) -> None:
    row = features.head(1).assign(**{"clinical.total_dose_gy": 60.0, "clinical.n_fractions": 30})
    own = one(prescriber, row)
    assert own["regimen_source"] == "patient"
    assert (own["n_fractions"], own["dose_per_fraction_gy"]) == (30, pytest.approx(2.0))
    asked = one(prescriber, row, n_fractions=33, dose_per_fraction_gy=2.12)
    assert asked["regimen_source"] == "request" and asked["n_fractions"] == 33
    assert asked["dose_per_fraction_gy"] == pytest.approx(2.12)
    for record in (own, asked):
        assert record["recommended_n_fractions"] * record["recommended_dose_per_fraction_gy"] == pytest.approx(
            record["recommended_total_dose_gy"], rel=1e-12)
    with pytest.raises(InputError, match="outside the head_neck rails"):
        prescriber.predict_records(row.assign(**{"clinical.total_dose_gy": 54.0, "clinical.n_fractions": 3}))


def test_toxicity_is_at_the_recommended_fractionation(prescriber: Prescriber, features: pd.DataFrame) -> None:
    """Radioresistant patients (RSI 0.6) are clipped at 80 Gy whatever the dose per fraction: the same total in
    44 x 1.82 Gy and 33 x 2.42 Gy must not give the same toxicity (EQD2 at the organ's alpha/beta)."""
    rows = features.head(3).assign(**{"genomic.rsi": 0.6})
    hyper = prescriber.predict_records(rows, dose_per_fraction_gy=1.8)
    hypo = prescriber.predict_records(rows, dose_per_fraction_gy=2.4)
    for a, b in zip(hyper, hypo, strict=True):
        assert a["recommended_total_dose_gy"] == pytest.approx(b["recommended_total_dose_gy"]) == pytest.approx(80.0)
        assert a["recommended_n_fractions"] > b["recommended_n_fractions"]
        key = "xerostomia_grade_ge2"
        assert a["toxicity"][key] < b["toxicity"][key]  # more dose per fraction: more late toxicity
        # 1.8 and 2.4 Gy lie outside the training regimens (2.0-2.2 Gy per fraction)
        assert "regimen_outside_training" in a["flags"] and "regimen_outside_training" in b["flags"]


def test_an_implausible_measured_rsi_falls_back(prescriber: Prescriber, features: pd.DataFrame) -> None:
    record = one(prescriber, features.head(1).assign(**{"genomic.rsi": 0.003}))
    assert {"implausible_parameter", "population_fallback"} <= set(record["flags"])
    assert record["alpha_per_gy"] < 1.5 and record["rsi_source"] == "population"


def test_an_interval_end_that_was_clipped_gives_no_dose(prescriber: Prescriber, features: pd.DataFrame) -> None:
    """Measured RSI 0.06 (alpha 1.31 /Gy): its assay-noise interval reaches below 0, clipped at 0.001: that end
    gives no dose, never a few-Gy 'lower dose'."""
    record = one(prescriber, features.head(1).assign(**{"genomic.rsi": 0.06}))
    assert record["rsi_source"] == "measured" and "population_fallback" not in record["flags"]
    assert math.isnan(record["dose_for_target_gard_lower_gy"]) and "implausible_parameter" in record["flags"]
    assert math.isfinite(record["dose_for_target_gard_upper_gy"])


def test_a_misspelt_column_is_refused_with_the_closest_name(prescriber: Prescriber, features: pd.DataFrame) -> None:
    with pytest.raises(InputError, match=r"genomic\.RSI \(did you mean genomic\.rsi\?\)"):
        prescriber.predict_records(features.head(1).rename(columns={"genomic.rsi": "genomic.RSI"}))
    # dose columns of organs the model does not use are gate input, not unknown columns
    assert one(prescriber, features.head(1).assign(**{"dose.brainstem.max_gy": 20.0}))


def test_check_record_rejects_what_the_gate_would_not_write(prescriber: Prescriber, features: pd.DataFrame) -> None:
    record = one(prescriber, features.head(1))
    rails = load_rails()
    check_record(record, rails)
    with pytest.raises(InputError, match="no site"):
        check_record({**record, "site": None}, rails)
    with pytest.raises(InputError, match="is not the recommended total"):
        check_record({**record, "recommended_n_fractions": record["recommended_n_fractions"] + 1}, rails)
    with pytest.raises(InputError, match="outside the head_neck rails"):
        n = record["recommended_n_fractions"]
        check_record({**record, "recommended_total_dose_gy": 2.5 * n, "recommended_dose_per_fraction_gy": 2.5}, rails)
    with pytest.raises(InputError, match="unknown flags"):
        check_record({**record, "flags": ["all_good"]}, rails)
    with pytest.raises(InputError, match="no rails for site"):
        check_record({**record, "site": "mars"}, rails)


def test_every_flag_is_in_the_objectives_schema_and_explained_on_the_planner_page() -> None:
    import json
    import re
    from importlib import resources

    from radiogenomics.models.gate import FLAGS

    schema = json.loads(resources.files("radiogenomics.planning").joinpath("data/objectives.schema.json").read_text())
    assert set(schema["properties"]["flags"]["items"]["enum"]) == set(FLAGS)
    page = resources.files("radiogenomics.serving").joinpath("static/app.js").read_text()
    block = page[page.index("const FLAG_TEXT"):page.index("});", page.index("const FLAG_TEXT"))]
    assert set(re.findall(r"^  ([a-z_]+):", block, flags=re.M)) == set(FLAGS)


def test_the_training_domain_reads_numeric_text_as_numbers_and_skips_free_text() -> None:
    """An extra patients.csv column arrives as text ("55.0"): a number outside the training range is out of the
    domain, one inside is not (it was taken for an unseen category: every external patient fell back). Free
    text (an identifier per patient) is not a category."""
    from radiogenomics.models.domain import TrainingDomain

    table = pd.DataFrame({"clinical.site": ["head_neck"] * 30,
                          "clinical.smoking_pack_years": [f"{v:.1f}" for v in np.linspace(5, 50, 30)],
                          "clinical.note": [f"free text {i}" for i in range(30)],
                          "clinical.hpv": ["pos", "neg"] * 15})
    domain = TrainingDomain.fit(table)
    assert "clinical.smoking_pack_years" in domain.numeric_ranges and "clinical.note" not in domain.categories
    inside = domain.check({"clinical.smoking_pack_years": "21.7", "clinical.note": "anything", "clinical.hpv": "pos"},
                          "head_neck")
    assert inside.out_of_range == [] and inside.site_in_training
    outside = domain.check({"clinical.smoking_pack_years": "95", "clinical.hpv": "unknown"}, "head_neck")
    assert len(outside.out_of_range) == 2 and not domain.check({}, "lung").site_in_training
