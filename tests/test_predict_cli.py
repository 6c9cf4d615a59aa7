"""`radiogenomics predict`: records per patient from a registered model, output formats, failures, bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from prescriber_factory import Bundle, use_tracking_uri

from radiogenomics.cli.app import main
from radiogenomics.models.prescriber import RECORD_FIELDS
from radiogenomics.training.config import TrainConfig
from radiogenomics.training.registry import register_models

MODEL = "models:/radiogenomics-prescriber@champion"


@pytest.fixture(scope="module")
def registered(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("predict-registry")
    with use_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}"):
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().create_experiment(
            "predict-test", artifact_location=(folder / "artifacts").as_uri()))
        result = register_models(bundle.radiosensitivity, bundle.toxicity, {"radiosensitivity.spearman": 0.5},
                                 bundle.schema, TrainConfig(), training_table=bundle.table,
                                 experiment_name="predict-test")
        yield result.versions["radiogenomics-prescriber"].version


@pytest.fixture(autouse=True)
def shared_cache(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reuse the extraction cache of the training table (predict extracts the same cohort again)."""
    monkeypatch.setenv("RADIOGENOMICS_CACHE_DIR", str(bundle.features_path.parent / "cache"))


def test_predict_csv(bundle: Bundle, registered: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rx" / "prescriptions.csv"
    assert main(["predict", str(bundle.cohort), "--model", MODEL, "--out", str(out), "--workers", "1"]) == 0
    frame = pd.read_csv(out)
    patients = pd.read_csv(bundle.cohort / "patients.csv")
    assert frame.columns.tolist() == list(RECORD_FIELDS)
    assert sorted(frame["patient_id"]) == sorted(patients["patient_id"])
    assert set(frame["model_version"].astype(str)) == {registered}
    assert set(frame["model_uri"]) == {f"models:/radiogenomics-prescriber/{registered}"}
    for toxicity, flags in zip(frame["toxicity"], frame["flags"], strict=True):
        assert set(json.loads(toxicity)) == {"xerostomia_grade_ge2"}
        assert isinstance(json.loads(flags), list)
    assert (frame["recommended_n_fractions"] * frame["recommended_dose_per_fraction_gy"]).round(6).tolist() == \
        frame["recommended_total_dose_gy"].round(6).tolist()
    assert pd.read_csv(out.with_name("prescriptions.failures.csv")).empty
    assert out.with_name("prescriptions.features.parquet").is_file()
    assert f"{len(frame)} prescription record(s)" in capsys.readouterr().out
    # the same patients through the in-process prescriber give the same input hashes
    # (the OAR limits on every organ of the cohort's dose grids: their DVHs are part of the hashed inputs)
    from radiogenomics.features.patient_dvhs import cohort_dvhs
    from radiogenomics.training.registry.prediction import load_prescriber

    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")])
    prescriber, info = load_prescriber(MODEL)
    expected = {r["patient_id"]: r["input_sha256"]
                for r in prescriber.predict_records(features, model=info, oar_dvhs=cohort_dvhs(bundle.cohort))}
    assert frame.set_index("patient_id")["input_sha256"].to_dict() == expected
    # the plain pyfunc sees only the feature table's dose summaries: other hashes, the same dose limits applied
    model = mlflow.pyfunc.load_model(MODEL)
    assert set(model.predict(features)["patient_id"]) == set(expected)


def test_predict_json_and_parquet_with_regimen(bundle: Bundle, registered: str, tmp_path: Path) -> None:
    out = tmp_path / "rx.json"
    args = ["--target-gard", "40", "--n-fractions", "30", "--dose-per-fraction-gy", "2.2", "--workers", "1"]
    assert main(["predict", str(bundle.cohort), "--model", MODEL, "--out", str(out), *args]) == 0
    records = json.loads(out.read_text())["records"]
    assert len(records) == len(pd.read_csv(bundle.cohort / "patients.csv"))
    for record in records:
        assert list(record) == list(RECORD_FIELDS)
        assert (record["target_gard"], record["n_fractions"], record["dose_per_fraction_gy"]) == (40.0, 30.0, 2.2)
        assert isinstance(record["toxicity"], dict) and isinstance(record["flags"], list)
    parquet = tmp_path / "rx.parquet"
    assert main(["predict", str(bundle.cohort), "--model", MODEL, "--out", str(parquet), *args]) == 0
    frame = pd.read_parquet(parquet)
    assert frame["target_gard"].tolist() == [40.0] * len(records)
    assert [json.loads(f) for f in frame["flags"]] == [r["flags"] for r in records]


def test_failing_patients_are_listed_and_the_rest_complete(bundle: Bundle, registered: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(bundle.cohort, cohort)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    bad = patients["patient_id"].iloc[2]
    patients.loc[2, "site"] = "breast"  # breast rails: >= 1.8 Gy per fraction, so 1.7 Gy fails for this patient
    patients.to_csv(cohort / "patients.csv", index=False)
    out = tmp_path / "rx.csv"
    code = main(["predict", str(cohort), "--model", MODEL, "--out", str(out), "--dose-per-fraction-gy", "1.7",
                 "--workers", "1"])
    assert code == 0
    frame = pd.read_csv(out)
    assert bad not in set(frame["patient_id"]) and len(frame) == len(patients) - 1
    failures = pd.read_csv(tmp_path / "rx.failures.csv")
    assert failures["patient_id"].tolist() == [bad]
    assert "dose_per_fraction_gy" in failures["reason"].iloc[0] and "breast" in failures["reason"].iloc[0]
    err = capsys.readouterr().err
    assert "1 patient(s) failed" in err and bad in err


def test_bad_input_exit_2(bundle: Bundle, registered: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        ["predict", str(bundle.cohort), "--model", MODEL, "--out", str(tmp_path / "rx.txt")],
        ["predict", str(tmp_path / "nope"), "--model", MODEL, "--out", str(tmp_path / "rx.csv")],
        ["predict", str(bundle.cohort), "--model", "models:/no-such-model@champion", "--out", str(tmp_path / "a.csv")],
        ["predict", str(bundle.cohort), "--model", "models:/radiogenomics-toxicity@champion",
         "--out", str(tmp_path / "b.csv")],
        ["predict", str(bundle.cohort), "--model", MODEL, "--out", str(tmp_path / "c.csv"), "--n-fractions", "0",
         "--workers", "1"],
    ]
    for args in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err, err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "c.csv").exists()
