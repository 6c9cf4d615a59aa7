"""`radiogenomics train --dask`: a real scheduler and two worker processes on loopback, one SIGKILLed mid-run.

The 40-patient cohort of tests/test_train_cli.py is trained twice with the same seed and config, each as a
subprocess with its own MLflow store: locally, and with ``--dask`` on a ``distributed.LocalCluster`` of two worker
processes (one thread each). While the ``--dask`` run is computing, the process of a worker that holds training
units is killed with SIGKILL (its nanny starts a fresh one). The run must complete, with the killed worker's
units recomputed elsewhere, register each model exactly once from the coordinator (workers never import MLflow),
keep stderr free of Dask's records, and equal the local run: the same winners, selections, trials, metrics,
out-of-fold predictions, Optuna studies and registered metrics.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
from records_compare import assert_records_close
from test_train_cli import GRID, LATER, N_PATIENTS, SEED

from radiogenomics.cli.app import main

#: tests/test_train_cli.py's later config: a fixed (ridge) and two searched candidates (logistic, lkb_patient) with a
#: selection between them; the registered tasks only.
CONFIG = LATER % "true"
#: Floats of the two runs: the workers' BLAS runs one thread, the local process more; iterative fits may carry
#: a last-bit difference of a reduction a little further than one rounding. Far below any meaningful difference.
REL = 1e-6
PREFIX = "rg-train-"


@dataclass
class Runs:
    folder: Path
    local: subprocess.CompletedProcess[str]
    dask: subprocess.CompletedProcess[str]
    victim_pid: int
    victim_keys: list[str]
    stories: list[tuple[Any, ...]]
    workers_with_mlflow: list[bool]

    def uri(self, name: str) -> str:
        return f"sqlite:///{self.folder / f'{name}.db'}"


def _train(folder: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / f'{name}.db'}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    cmd = [sys.executable, "-m", "radiogenomics", "train", "cohort", "--features", "features.parquet", "--config",
           "train.yaml", "--out", name, *extra]
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _units(keys: Any) -> list[str]:
    return [str(k) for k in keys if str(k).startswith(PREFIX) and not str(k).endswith("-data")]


def _kill_a_busy_worker(client: Any, proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """Once some units are done and others are being computed, SIGKILL a worker process computing units."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, "the --dask run finished before a worker could be killed"
        assert time.monotonic() < deadline, "no training unit reached the cluster"
        done = _units(client.who_has())
        busy = {worker: _units(keys) for worker, keys in client.processing().items()}
        victim = next((worker for worker, keys in busy.items() if keys), None)
        if len(done) >= 2 and victim is not None:
            os.kill(pids[victim], signal.SIGKILL)
            return pids[victim], busy[victim]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    import distributed

    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("train-dask")
    generate_cohort(folder / "cohort", n_patients=N_PATIENTS, seed=SEED, grid_size=GRID, overwrite=True)
    extract(folder / "cohort", folder / "features.parquet",
            ExtractOptions(workers=1, cache_dir=folder / "cache", filters=("original",)))
    (folder / "train.yaml").write_text(CONFIG)
    local = _finish(_train(folder, "local"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        proc = _train(folder, "dask", "--dask", cluster.scheduler_address)
        try:
            victim_pid, victim_keys = _kill_a_busy_worker(client, proc)
        finally:
            dask = _finish(proc)
        stories = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.story(*victim_keys))
        client.wait_for_workers(2, timeout=60)
        workers_with_mlflow = list(client.run(lambda: "mlflow" in sys.modules).values())
    yield Runs(folder, local, dask, victim_pid, victim_keys, stories, workers_with_mlflow)
    mlflow.set_tracking_uri(None)


def _snapshot(runs: Runs, name: str) -> dict[str, Any]:
    """What a training produced: the parent run's metrics, params and winner/selection tags, every trial run, the
    registered versions' held-out metrics and digests, the out-of-fold files and the Optuna studies."""
    client = mlflow.MlflowClient(tracking_uri=runs.uri(name), registry_uri=runs.uri(name))
    experiment = client.get_experiment_by_name("radiogenomics")
    assert experiment is not None
    every = client.search_runs([experiment.experiment_id])
    parents = [r for r in every if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    trials = {f"{r.data.tags['optuna.study']}#{r.data.tags['optuna.trial']}":
              {"params": r.data.params, "metrics": r.data.metrics, "fold": r.data.tags["fold"]}
              for r in every if "optuna.study" in r.data.tags}
    registered = {}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        registered[model.name] = {"versions": len(versions), "same_run": all(v.run_id == parent.info.run_id
                                                                             for v in versions),
                                  "tags": {k: v for k, v in versions[0].tags.items()
                                           if k.startswith(("heldout.", "evaluation_digest"))}}
    run_dir = runs.folder / name / "runs" / parent.info.run_id
    oof = {p.name: pd.read_csv(p).to_dict("list") for p in sorted((run_dir / "oof").glob("*.csv"))}
    storage = f"sqlite:///{run_dir / 'optuna.db'}"
    studies = {s.study_name: [(t.number, t.params, t.value, t.state.name)
                              for t in optuna.load_study(study_name=s.study_name, storage=storage).trials]
               for s in optuna.get_all_study_summaries(storage)}
    tags = {k: v for k, v in parent.data.tags.items() if k.startswith(("winner.", "selection."))}
    return {"metrics": parent.data.metrics, "params": parent.data.params, "tags": tags, "trials": trials,
            "registered": registered, "oof": oof, "studies": studies}


def test_both_runs_complete(runs: Runs) -> None:
    assert runs.local.returncode == 0, runs.local.stderr[-3000:]
    assert runs.dask.returncode == 0, runs.dask.stderr[-3000:]


def test_killed_workers_units_were_recomputed(runs: Runs) -> None:
    """A unit the killed worker held was handed to a worker twice and ended in memory: the scheduler recomputed it
    (a unit that ran once only was never lost); the coordinator's log names the process that computed it."""
    assert runs.victim_keys
    recomputed = []
    for key in runs.victim_keys:
        finishes = [finish for k, _start, finish, *_ in runs.stories if k == key]
        starts = [i for i, finish in enumerate(finishes) if finish == "processing"]
        if len(starts) >= 2 and "memory" in finishes[starts[-1]:]:
            recomputed.append(key)
    assert recomputed, (runs.victim_keys, runs.stories)
    log = (runs.folder / "dask" / "train.log").read_text()
    for key in recomputed:
        label, name, unit = key.removeprefix(PREFIX).split("-", 1)[1].split("-", 2)
        pids = re.findall(rf"{re.escape(f'{label}/{name} {unit}')} computed on \S+:(\d+) in ", log)
        assert len(pids) == 1 and int(pids[0]) != runs.victim_pid, (key, pids, runs.victim_pid)


def test_results_equal_the_local_run(runs: Runs) -> None:
    local, dask = _snapshot(runs, "local"), _snapshot(runs, "dask")
    assert dask["trials"] and dask["studies"] and dask["oof"]
    assert dask["tags"]["winner.toxicity.xerostomia"] in ("logistic", "lkb_patient")
    assert_records_close(dask, local, rel=REL)


def test_each_model_registered_once_by_the_coordinator(runs: Runs) -> None:
    registered = _snapshot(runs, "dask")["registered"]
    assert set(registered) == {"radiogenomics-radiosensitivity", "radiogenomics-toxicity",
                               "radiogenomics-prescriber"}
    assert all(r["versions"] == 1 and r["same_run"] for r in registered.values()), registered
    assert runs.workers_with_mlflow == [False, False]


def test_stderr_has_only_our_records(runs: Runs) -> None:
    lines = [line for line in runs.dask.stderr.splitlines() if line.strip()]
    assert all(" radiogenomics." in line for line in lines), runs.dask.stderr[-3000:]
    assert "distributed" not in runs.dask.stderr and "tornado" not in runs.dask.stderr
    assert "computed on" in (runs.folder / "dask" / "train.log").read_text()  # the units' DEBUG lines


def test_unreachable_scheduler_is_exit_2_before_any_work(runs: Runs, tmp_path: Path) -> None:
    buffer, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(err):
        code = main(["train", str(runs.folder / "cohort"), "--features", str(runs.folder / "features.parquet"),
                     "--config", str(runs.folder / "train.yaml"), "--out", str(tmp_path / "o"),
                     "--dask", "tcp://127.0.0.1:9"])
    assert code == 2 and "Dask scheduler" in err.getvalue(), err.getvalue()
    assert not (tmp_path / "o" / "runs").exists()
