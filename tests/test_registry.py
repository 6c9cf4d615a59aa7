"""Registry: promotion rule, champion/challenger aliases, tags, signatures, and loading in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from prescriber_factory import Bundle, use_tracking_uri

from radiogenomics.training.config import RegistryConfig, TrainConfig
from radiogenomics.training.registry import (
    CHALLENGER,
    CHAMPION,
    FIRST_CHAMPION,
    KEPT_CHAMPION,
    PRESCRIBER_MODEL,
    PROMOTED,
    RADIOSENSITIVITY_MODEL,
    TOXICITY_MODEL,
    metric_direction,
    own_metrics,
    promotion_decision,
    register_models,
)

CONFIG = RegistryConfig(tolerance={"spearman": 0.02, "auc": 0.02, "brier": 0.01}, coverage_band=(0.85, 0.95))
CHAMPION_METRICS = {"radiosensitivity.spearman": 0.60, "radiosensitivity.mae": 0.08,
                    "radiosensitivity.coverage": 0.90, "toxicity.xerostomia.auc": 0.75,
                    "toxicity.xerostomia.brier": 0.18}


def test_metric_direction() -> None:
    assert metric_direction("radiosensitivity.spearman") == "higher"
    assert metric_direction("toxicity.xerostomia.auc") == "higher"
    assert metric_direction("mae") == "lower"
    assert metric_direction("toxicity.dysphagia.brier") == "lower"
    assert metric_direction("radiosensitivity.coverage") == "band"
    assert metric_direction("n_patients") is None


@pytest.mark.parametrize(("change", "decision"), [
    ({}, PROMOTED),
    ({"radiosensitivity.spearman": 0.59}, PROMOTED),  # within tolerance 0.02
    ({"radiosensitivity.spearman": 0.55}, KEPT_CHAMPION),  # higher is better: 0.05 worse
    ({"toxicity.xerostomia.brier": 0.185}, PROMOTED),  # lower is better, within 0.01
    ({"toxicity.xerostomia.brier": 0.20}, KEPT_CHAMPION),
    ({"toxicity.xerostomia.brier": 0.10, "toxicity.xerostomia.auc": 0.90}, PROMOTED),  # better on both
    ({"radiosensitivity.mae": 0.0801}, KEPT_CHAMPION),  # no tolerance configured for mae: any worsening
    ({"radiosensitivity.coverage": 0.93}, PROMOTED),  # inside the band counts as good as 0.90
    ({"radiosensitivity.coverage": 0.80}, KEPT_CHAMPION),  # left the band
    ({"radiosensitivity.spearman": float("nan")}, KEPT_CHAMPION),
])
def test_promotion_decision(change: dict[str, float], decision: str) -> None:
    result = promotion_decision({**CHAMPION_METRICS, **change}, CHAMPION_METRICS, CONFIG)
    assert result.decision == decision
    if decision == KEPT_CHAMPION:
        assert next(iter(change)) in result.reason and "worse" in result.reason
    assert promotion_decision(CHAMPION_METRICS, None, CONFIG).decision == FIRST_CHAMPION


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with use_tracking_uri(uri):
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().create_experiment(
            "registry-test", artifact_location=(folder / "artifacts").as_uri()))
        yield uri


@pytest.fixture(scope="module")
def registrations(bundle: Bundle, store: str) -> list:
    """Three registrations: the first, a worse one (kept as challenger), a better one (promoted)."""
    worse = {**CHAMPION_METRICS, "radiosensitivity.spearman": 0.40}
    better = {**CHAMPION_METRICS, "radiosensitivity.spearman": 0.70, "toxicity.xerostomia.brier": 0.15}
    out = []
    for metrics in (CHAMPION_METRICS, worse, better):
        out.append(register_models(bundle.radiosensitivity, bundle.toxicity, metrics, bundle.schema, TrainConfig(),
                                   training_table=bundle.table, experiment_name="registry-test"))
    return out


def test_champion_and_challenger(registrations: list, store: str) -> None:
    first, worse, better = registrations
    client = mlflow.MlflowClient()
    for name in (PRESCRIBER_MODEL, RADIOSENSITIVITY_MODEL, TOXICITY_MODEL):
        assert first.versions[name].decision.decision == FIRST_CHAMPION
        # each model is judged on its own metrics: only the RSI got worse, so the toxicity model is promoted
        assert worse.versions[name].decision.decision == (PROMOTED if name == TOXICITY_MODEL else KEPT_CHAMPION)
        assert better.versions[name].decision.decision == PROMOTED
        assert [first.versions[name].version, worse.versions[name].version, better.versions[name].version] == \
            ["1", "2", "3"]
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "3"
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.get_model_version_by_alias(name, CHALLENGER)  # the promoted challenger left the alias
    assert worse.versions[PRESCRIBER_MODEL].aliases == (CHALLENGER,)
    # the decision and its reason in the version's tags and the run's tags
    kept = client.get_model_version(PRESCRIBER_MODEL, "2")
    assert kept.tags["promotion_decision"] == KEPT_CHAMPION
    assert "radiosensitivity.spearman" in kept.tags["promotion_reason"]
    assert float(kept.tags["heldout.radiosensitivity.spearman"]) == pytest.approx(0.40)
    run = client.get_run(worse.run_id)
    assert run.data.tags[f"registry.{PRESCRIBER_MODEL}.decision"] == KEPT_CHAMPION
    assert "not promoted" in run.data.tags[f"registry.{PRESCRIBER_MODEL}.reason"]
    assert client.get_run(better.run_id).data.tags[f"registry.{PRESCRIBER_MODEL}.decision"] == PROMOTED


def test_each_model_is_judged_on_its_own_metrics(registrations: list, store: str) -> None:
    metrics = {"radiosensitivity.spearman": 0.5, "toxicity.xerostomia.auc": 0.7}
    assert own_metrics(RADIOSENSITIVITY_MODEL, metrics) == {"radiosensitivity.spearman": 0.5}
    assert own_metrics(TOXICITY_MODEL, metrics) == {"toxicity.xerostomia.auc": 0.7}
    assert own_metrics(PRESCRIBER_MODEL, metrics) == metrics
    client = mlflow.MlflowClient()
    tags = client.get_model_version(TOXICITY_MODEL, "2").tags
    assert not any(k.startswith("heldout.radiosensitivity.") for k in tags)
    assert "heldout.toxicity.xerostomia.auc" in tags


def test_toxicity_pyfunc_takes_the_prescription_param(bundle: Bundle, registrations: list, store: str) -> None:
    """The signature declares ``prescription_gy`` (else MLflow drops it with a warning and every dose gives the
    delivered plan's probability)."""
    model = mlflow.pyfunc.load_model(f"models:/{TOXICITY_MODEL}@{CHAMPION}")
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(4)
    delivered = model.predict(features)["xerostomia_grade_ge2"].to_numpy()
    at_90 = model.predict(features, params={"prescription_gy": 90.0})["xerostomia_grade_ge2"].to_numpy()
    expected = bundle.toxicity["xerostomia"].predict_proba_at_dose(bundle.table.head(4), prescription_gy=90.0)[:, 1]
    np.testing.assert_allclose(at_90, expected, rtol=1e-9)
    assert not np.allclose(at_90, delivered)
    # and n_fractions (declared too): 90 Gy in 25 fractions of 3.6 Gy, on the models' EQD2 scale
    in_25 = model.predict(features, params={"prescription_gy": 90.0, "n_fractions": 25.0})["xerostomia_grade_ge2"]
    expected = bundle.toxicity["xerostomia"].predict_proba_at_dose(bundle.table.head(4), prescription_gy=90.0,
                                                                   n_fractions=25.0)[:, 1]
    np.testing.assert_allclose(in_25.to_numpy(), expected, rtol=1e-9)
    assert (in_25.to_numpy() >= at_90).all() and not np.allclose(in_25.to_numpy(), at_90)


def test_challenger_alias_while_champion_kept(bundle: Bundle, registrations: list, store: str) -> None:
    worse = {**CHAMPION_METRICS, "toxicity.xerostomia.auc": 0.60}
    result = register_models(bundle.radiosensitivity, bundle.toxicity, worse, bundle.schema, CONFIG,
                             training_table=bundle.table, experiment_name="registry-test")
    client = mlflow.MlflowClient()
    assert result.decision.decision == KEPT_CHAMPION and "toxicity.xerostomia.auc" in result.decision.reason
    assert str(client.get_model_version_by_alias(PRESCRIBER_MODEL, CHALLENGER).version) == "4"
    assert str(client.get_model_version_by_alias(PRESCRIBER_MODEL, CHAMPION).version) == "3"


def test_signature_and_requirements(registrations: list, store: str) -> None:
    info = mlflow.models.get_model_info(f"models:/{PRESCRIBER_MODEL}@{CHAMPION}")
    inputs = {c.name: c for c in info.signature.inputs.inputs}
    assert {"genomic.rsi", "clinical.site", "n_fractions", "dose_per_fraction_gy", "target_gard"} <= set(inputs)
    assert not any(c.required for c in inputs.values())
    assert not any(name.startswith("outcome.") for name in inputs)
    outputs = [c.name for c in info.signature.outputs.inputs]
    assert outputs[:4] == ["patient_id", "model_name", "model_version", "model_uri"]
    path = mlflow.artifacts.download_artifacts(f"models:/{PRESCRIBER_MODEL}@{CHAMPION}")
    requirements = (Path(path) / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("radiogenomics==") for r in requirements)
    torch = [r for r in requirements if r.startswith("torch")]
    assert torch and all(r.endswith("+cpu") for r in torch)
    assert any("download.pytorch.org/whl/cpu" in r for r in requirements)


FRESH = """
import json, sys
import mlflow, pandas as pd
features = pd.read_parquet(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/radiogenomics-prescriber@champion")
out = model.predict(features)
rsi = mlflow.pyfunc.load_model("models:/radiogenomics-radiosensitivity@champion").predict(features)
tox = mlflow.pyfunc.load_model("models:/radiogenomics-toxicity@champion").predict(features)
print(json.dumps({"records": out.to_dict(orient="records"), "rsi": rsi["rsi"].tolist(),
                  "tox": tox.columns.tolist()}, default=str))
"""


def test_load_champion_in_a_fresh_process(bundle: Bundle, registrations: list, store: str, tmp_path: Path) -> None:
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(3)
    features.to_parquet(tmp_path / "features.parquet")
    env = {"MLFLOW_TRACKING_URI": store, "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "features.parquet")], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    records = result["records"]
    assert [r["patient_id"] for r in records] == features["patient_id"].tolist()
    for record in records:
        assert record["model_name"] == PRESCRIBER_MODEL
        assert record["model_version"] == "3"  # the champion, found from the loaded model's id
        assert record["model_uri"] == f"models:/{PRESCRIBER_MODEL}/3"
        assert 60.0 <= record["recommended_total_dose_gy"] <= 80.0
        assert "xerostomia_grade_ge2" in record["toxicity"]
    # same records as the in-process prescriber (same version, same inputs -> same hash)
    from radiogenomics.models.prescriber import ModelInfo, Prescriber

    local = Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)
    expected = local.predict_records(features, model=ModelInfo(PRESCRIBER_MODEL, "3", f"models:/{PRESCRIBER_MODEL}/3"))
    assert [r["input_sha256"] for r in records] == [r["input_sha256"] for r in expected]
    assert result["rsi"] == pytest.approx(list(bundle.radiosensitivity.predict(local.prepare(features)[0])))
    assert result["tox"] == ["xerostomia_grade_ge2"]


def test_pyfunc_regimen_columns_and_params(registrations: list, store: str, bundle: Bundle) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{PRESCRIBER_MODEL}/1")
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(2)
    out = model.predict(features.assign(n_fractions=30, dose_per_fraction_gy=2.2))
    assert isinstance(out, pd.DataFrame) and out["model_version"].tolist() == ["1", "1"]
    assert out["n_fractions"].tolist() == [30.0, 30.0] and out["dose_per_fraction_gy"].tolist() == [2.2, 2.2]
    out = model.predict(features, params={"target_gard": 40.0})
    assert out["target_gard"].tolist() == [40.0, 40.0]
