"""The registry works unchanged with a real `mlflow server` on loopback (register and load through HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from local_services import mlflow_server
from prescriber_factory import Bundle, use_tracking_uri

from radiogenomics.training.config import TrainConfig
from radiogenomics.training.registry import CHAMPION, PRESCRIBER_MODEL, register_models

FOLDERS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with a sqlite store and proxied artifacts under tmp, in its own process group."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(folder, f"sqlite:///{folder / 'mlflow.db'}") as url:
        FOLDERS[url] = folder
        yield url


def server_folder(url: str) -> Path:
    return FOLDERS[url]


def test_register_and_load_through_the_server(server: str, bundle: Bundle) -> None:
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(3)
    with use_tracking_uri(server):
        result = register_models(bundle.radiosensitivity, bundle.toxicity, {"radiosensitivity.spearman": 0.5},
                                 bundle.schema, TrainConfig(), training_table=bundle.table,
                                 experiment_name="server-test")
        version = result.versions[PRESCRIBER_MODEL].version
        client = mlflow.MlflowClient()
        assert str(client.get_model_version_by_alias(PRESCRIBER_MODEL, CHAMPION).version) == version
        assert client.get_run(result.run_id).data.tags[f"registry.{PRESCRIBER_MODEL}.decision"] == "first_champion"
        experiment = client.get_experiment_by_name("server-test")
        assert experiment.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server
        model = mlflow.pyfunc.load_model(f"models:/{PRESCRIBER_MODEL}@{CHAMPION}")
        records = model.predict(features)
    assert records["patient_id"].tolist() == features["patient_id"].tolist()
    assert set(records["model_version"]) == {version}
    assert set(records["model_uri"]) == {f"models:/{PRESCRIBER_MODEL}/{version}"}
    assert records["recommended_total_dose_gy"].between(60.0, 80.0).all()
    stored = list((server_folder(server) / "artifacts").rglob("MLmodel"))
    assert len(stored) == 3  # the three registered models' files live in the server's artifact store
