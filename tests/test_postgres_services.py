"""Issue 18.1: the scale-out services for real. A throwaway PostgreSQL cluster (tests/pg_cluster.py) holds the
MLflow backend store (database `mlflow`, a plain `postgresql://` URL, driver psycopg 3) and the Optuna studies
(database `optuna`, `postgresql+psycopg://`); a real `mlflow server` in front of it proxies the artifacts
(`mlflow-artifacts:`). Every step is the project's command line as a subprocess with
MLFLOW_TRACKING_URI=http://<the server>: synth, extract, train twice (the second on other outer folds, so its
unit stays `challenger`), predict, handoff, serve, and promote (serve reloads the new champion). The outcomes
are checked in PostgreSQL's own tables. On the same cluster: the Optuna budget lock (an advisory lock) and two
worker processes sharing one study, as on several machines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
import yaml
from local_services import CLI, clean_env, free_port, mlflow_server, process_group, run_cli, wait_healthy
from pg_cluster import Cluster, pg_cluster
from test_quiet_cli import OURS
from test_training_search import WORKER

from radiogenomics.serving.api import FeatureTable
from radiogenomics.training.search import budget_lock

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "train-quick.yaml"
PRESCRIBER = "radiogenomics-prescriber"
MODELS = ("radiogenomics-prescriber", "radiogenomics-radiosensitivity", "radiogenomics-toxicity")  # sorted
MODEL = f"models:/{PRESCRIBER}@champion"
PATIENTS = 24
TRAININGS = {"first": 2026, "second": 2027}  # study name -> seed (another seed: other outer folds, other digest)


@dataclass
class Stack:
    work: Path
    cluster: Cluster
    mlflow_url: str
    env: dict[str, str]
    serve_url: str = ""
    token: str = ""
    stderr: dict[str, str] = field(default_factory=dict)

    def cli(self, name: str, *args: str) -> str:
        """Run a command; it must exit 0 and write only our own lines on stderr. Returns its stdout."""
        proc = run_cli(list(args), cwd=self.work, env=self.env)
        foreign = [line for line in proc.stderr.splitlines() if line.strip() and not OURS.match(line)]
        assert not foreign, (name, foreign[:10])
        self.stderr[name] = proc.stderr
        return proc.stdout

    def aliases(self) -> dict[tuple[str, str], int]:
        """{(registered model, alias): version} from MLflow's table in PostgreSQL."""
        rows = self.cluster.rows("mlflow", "SELECT name, alias, version FROM registered_model_aliases")
        return {(name, alias): version for name, alias, version in rows}

    def post(self, patients: list[str]) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"}
        schema = httpx.get(f"{self.serve_url}/v1/model", headers=headers, timeout=60).json()
        allowed = {f["column"] for f in schema["features"]}
        table = FeatureTable(self.work / "features.parquet")
        body = {"patients": [{"patient_id": p, "features": table.features(p, allowed)} for p in patients]}
        response = httpx.post(f"{self.serve_url}/v1/prescriptions", json=body, headers=headers, timeout=120)
        assert response.status_code == 200, response.text[:2000]
        return list(response.json()["records"])


def _train_config(work: Path, name: str, seed: int, storage: str) -> Path:
    """examples/train-quick.yaml with the Optuna studies on ``storage``; only the tasks the prescriber needs."""
    config = yaml.safe_load(QUICK.read_text())
    config["seed"] = seed
    config["search"].update(storage=storage, study_name=name)
    config["tasks"].update(outcome_alpha={"enabled": False}, survival={"enabled": False})
    path = work / f"train-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with pg_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("postgres-services")
    with ExitStack() as services:  # closed in reverse order, also when a step fails: serve, then mlflow
        backend = cluster.create_database("mlflow")
        cluster.create_database("optuna")
        url = services.enter_context(mlflow_server(work, backend))
        env = clean_env(MLFLOW_TRACKING_URI=url, RADIOGENOMICS_CACHE_DIR=str(work / "cache"))
        stack = Stack(work, cluster, url, env)
        stack.cli("synth", "synth", "cohort", "--patients", str(PATIENTS), "--seed", "1", "--grid-size", "16")
        stack.cli("extract", "extract", "cohort", "--out", "features.parquet", "--workers", "2")
        for name, seed in TRAININGS.items():
            config = _train_config(work, name, seed, cluster.url("optuna", driver="psycopg"))
            stack.cli(f"train {name}", "train", "cohort", "--features", "features.parquet", "--config", str(config),
                      "--out", f"training-{name}")
        stack.token = stack.cli("token", "token", "create", "planner", "--tokens", "tokens.yaml").strip()
        port = free_port()
        stack.serve_url = f"http://127.0.0.1:{port}"
        log = work / "serve.log"
        serve = services.enter_context(process_group(
            [*CLI, "serve", "--model", MODEL, "--tokens", "tokens.yaml", "--host", "127.0.0.1", "--port",
             str(port), "--audit-db", "audit.sqlite", "--reload-interval-s", "1"], cwd=work, env=stack.env, log=log))
        wait_healthy(stack.serve_url, serve, log, timeout_s=180)
        yield stack


def test_the_registry_lives_in_postgresql(stack: Stack) -> None:
    versions = stack.cluster.rows("mlflow", "SELECT name, version FROM model_versions ORDER BY name, version")
    assert versions == [(name, v) for name in MODELS for v in (1, 2)]
    assert stack.aliases() == {**{(name, "champion"): 1 for name in MODELS},
                               **{(name, "challenger"): 2 for name in MODELS}}
    client = mlflow.MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    challenger = client.get_model_version_by_alias(PRESCRIBER, "challenger")
    assert challenger.version == "2"
    assert "different evaluation data" in challenger.tags["promotion_reason"], challenger.tags["promotion_reason"]
    (location,) = stack.cluster.rows("mlflow", "SELECT artifact_location FROM experiments WHERE name = 'radiogenomics'")
    assert location[0].startswith("mlflow-artifacts:"), location  # artifacts go through the server
    assert len(list((stack.work / "artifacts").rglob("MLmodel"))) == 6  # three models, two versions each
    parents = stack.cluster.rows("mlflow", "SELECT count(*) FROM runs r JOIN experiments e USING (experiment_id) "
                                           "WHERE e.name = 'radiogenomics' AND r.status = 'FINISHED' AND NOT EXISTS "
                                           "(SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid "
                                           "AND t.key = 'mlflow.parentRunId')")
    assert parents == [(2,)]


def test_the_optuna_studies_live_in_postgresql(stack: Stack) -> None:
    rows = stack.cluster.rows("optuna", "SELECT s.study_name, count(*) FROM studies s JOIN trials t USING (study_id) "
                                        "WHERE t.state = 'COMPLETE' GROUP BY s.study_name ORDER BY s.study_name")
    studies = dict(rows)
    for name in TRAININGS:
        mine = {study: n for study, n in studies.items() if study.startswith(f"{name}/")}
        # per task: outer-0, outer-1 and final, each with exactly search.n_trials (2) completed trials
        assert len(mine) >= 3 and set(mine.values()) == {2}, studies
        assert {s.rsplit("/", 1)[1] for s in mine} == {"outer-0", "outer-1", "final"}, mine
    assert not list(stack.work.rglob("optuna.db")), "no sqlite study beside the runs: the storage was PostgreSQL"


def test_predict_and_handoff_through_the_server(stack: Stack) -> None:
    champion = str(stack.aliases()[(PRESCRIBER, "champion")])
    stack.cli("predict", "predict", "cohort", "--model", MODEL, "--out", "prescriptions.csv")
    records = pd.read_csv(stack.work / "prescriptions.csv", dtype={"model_version": str})
    assert len(records) == PATIENTS and records["recommended_total_dose_gy"].notna().all()
    assert set(records["model_version"]) == {champion}
    patients = sorted(records["patient_id"])[:2]
    stack.cli("handoff", "handoff", "--model", MODEL, "--features", "features.parquet", "--out", "handoff",
              "--patients", ",".join(patients), "--cohort", "cohort")
    for patient in patients:
        objectives = json.loads((stack.work / "handoff" / patient / "objectives.json").read_text())
        prescription = json.loads((stack.work / "handoff" / patient / "prescription.json").read_text())
        assert objectives["format"] == "radiogenomics-objectives/1" and objectives["model_version"] == champion
        assert prescription["patient_id"] == patient and prescription["model_version"] == champion
        assert any(s["role"] == "target" for s in objectives["structures"])


def test_promote_and_serve_reloads_the_new_champion(stack: Stack) -> None:
    patients = ["SYN0001", "SYN0002"]
    assert {r["model_version"] for r in stack.post(patients)} == {"1"}
    stack.cli("promote", "promote", PRESCRIBER, "2", "--reason", "reviewed on the PostgreSQL stack", "--by", "ci")
    aliases = stack.aliases()
    assert {name: aliases[(name, "champion")] for name in MODELS} == dict.fromkeys(MODELS, 2)  # the unit moves
    assert not any(alias == "challenger" for _, alias in aliases)
    deadline = time.monotonic() + 120
    while httpx.get(f"{stack.serve_url}/health", timeout=10).json()["model_version"] != "2":
        assert time.monotonic() < deadline, "serve never reloaded the promoted champion"
        time.sleep(0.5)
    records = stack.post(patients)
    assert {r["model_version"] for r in records} == {"2"}
    assert {r["model_uri"] for r in records} == {f"models:/{PRESCRIBER}/2"}


def test_budget_lock_is_an_advisory_lock_on_postgresql(cluster: Cluster) -> None:
    url = cluster.create_database("optuna_lock").replace("postgresql://", "postgresql+psycopg://")
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    with budget_lock(url):
        assert cluster.rows("optuna_lock", held) == [(1,)]
    assert cluster.rows("optuna_lock", held) == [(0,)]


def test_two_worker_processes_share_one_postgresql_study(cluster: Cluster, tmp_path: Path) -> None:
    """tests/test_training_search.py's two workers (16 trials in all), on PostgreSQL as on several machines."""
    url = cluster.create_database("optuna_workers")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), url, str(w), str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    per_worker = [int(out.split()[-1]) for out, _ in outputs]
    trials = cluster.rows("optuna_workers", "SELECT t.number, t.state FROM trials t JOIN studies s USING (study_id) "
                                            "WHERE s.study_name = 'shared' ORDER BY t.number")
    assert trials == [(n, "COMPLETE") for n in range(16)]  # the budget held across processes: no overshoot
    assert sum(per_worker) == 16 and min(per_worker) >= 1, per_worker
