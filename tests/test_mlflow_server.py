"""The registry works unchanged with a real `mlflow server` on loopback (register and load through HTTP)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from prescriber_factory import Bundle, use_tracking_uri

from radiogenomics.training.config import TrainConfig
from radiogenomics.training.registry import CHAMPION, PRESCRIBER_MODEL, register_models

HEALTH_TIMEOUT_S = 60.0
FOLDERS: dict[str, Path] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with a sqlite store and proxied artifacts under tmp, in its own process group."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    FOLDERS[url] = folder
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # setsid
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not become healthy: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


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
