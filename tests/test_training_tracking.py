"""MLflow tracking against a real local sqlite store: parent run, nested trial runs, fold metrics, artifacts,
the feature table as a dataset input, provenance tags. Read back with MlflowClient."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from radiogenomics.training.nested_cv import NestedCVResult, nested_cv
from radiogenomics.training.tracking import (
    COHORT_HASH_TAG,
    GIT_COMMIT_TAG,
    Tracker,
    cohort_content_hash,
    feature_importance,
    git_commit,
    table_content_hash,
)

N = 48
FEATURES = ["x1", "x2", "x3"]
CONFIG_TEXT = "seed: 9\ncv:\n  outer_folds: 3\n  inner_folds: 2\nsearch:\n  n_trials: 2\n"


def _data() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(N, 3)), columns=FEATURES)
    frame.insert(0, "patient_id", [f"P{i:02d}" for i in range(N)])
    frame["clinical.center"] = rng.choice(["A", "B"], N)
    frame["y"] = frame["x1"] + rng.normal(0, 0.3, N)
    frame["label"] = (frame["y"] + rng.normal(0, 0.7, N) > 0).astype(int)
    frame["time"] = rng.exponential(np.exp(-frame["x1"]) * 10)
    frame["event"] = rng.random(N) < 0.7
    return frame


def _space(trial: Any) -> dict[str, Any]:
    return {"alpha": trial.suggest_float("alpha", 0.01, 1.0, log=True)}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mlflow")
    table = _data()
    features_path = root / "features.parquet"
    table.to_parquet(features_path)
    config_path = root / "train.yaml"
    config_path.write_text(CONFIG_TEXT)
    from radiogenomics.training.config import load_train_config

    config = load_train_config(config_path)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri, "tests", artifact_location=(root / "mlartifacts").as_uri())
    common: dict[str, Any] = {"config": config, "groups": table["patient_id"], "strata": table["clinical.center"],
                              "tracker": tracker, "progress": False}
    results: dict[str, NestedCVResult] = {}
    cohort_hash = cohort_content_hash(features_path)
    with tracker.start_run("train", config=config, config_path=config_path, features=table,
                           features_source=str(features_path), cohort_hash=cohort_hash) as run_id:
        results["rs"] = nested_cv(lambda p: make_pipeline(StandardScaler(), Ridge(**p)), _space, table[FEATURES],
                                  table["y"], scorer="spearman", metric_prefix="rs/", study_prefix="rs", **common)
        tracker.log_result(results["rs"], prefix="rs/")
        results["tox"] = nested_cv(lambda p: LogisticRegression(C=1 / p["alpha"]), _space, table[FEATURES],
                                   table["label"], scorer="auc", metric_prefix="tox/", study_prefix="tox", **common)
        tracker.log_result(results["tox"], prefix="tox/")
        y_surv = Surv.from_arrays(event=table["event"].to_numpy(), time=table["time"].to_numpy())
        results["lc"] = nested_cv(lambda p: CoxPHSurvivalAnalysis(**p), _space, table[FEATURES], y_surv,
                                  scorer="c_index", metric_prefix="lc/", study_prefix="lc", **common)
        tracker.log_result(results["lc"], prefix="lc/")
    return {"client": MlflowClient(uri), "run_id": run_id, "results": results, "tracker": tracker,
            "features_path": features_path, "config_path": config_path, "hash": cohort_hash, "root": root}


def test_parent_run_params_tags_and_config(tracked: dict[str, Any]) -> None:
    run = tracked["client"].get_run(tracked["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["cv.outer_folds"] == "3" and run.data.params["seed"] == "9"
    assert run.data.params["search.storage"] == "null"
    tags = run.data.tags
    assert tags["version.numpy"] == np.__version__ and tags["version.mlflow"] == mlflow.__version__
    assert {"version.scikit-learn", "version.scikit-survival", "version.mapie", "version.optuna", "version.torch",
            "version.monai", "version.pandas"} <= set(tags)
    assert tags[COHORT_HASH_TAG] == hashlib.sha256(tracked["features_path"].read_bytes()).hexdigest()
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    assert tags[GIT_COMMIT_TAG] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    client = tracked["client"]
    local = client.download_artifacts(tracked["run_id"], "config", str(tracked["root"] / "dl"))
    assert (Path(local) / "train.yaml").read_text() == tracked["config_path"].read_text()
    assert "outer_folds: 3" in (Path(local) / "train_resolved.yaml").read_text()


def test_fold_and_aggregated_metrics(tracked: dict[str, Any]) -> None:
    client, run_id = tracked["client"], tracked["run_id"]
    for prefix, name in (("rs/", "spearman"), ("tox/", "auc"), ("tox/", "calibration_slope"), ("lc/", "c_index")):
        result = tracked["results"][prefix.strip("/")]
        history = sorted(client.get_metric_history(run_id, prefix + name), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1, 2]
        assert [m.value for m in history] == pytest.approx([f.metrics[name] for f in result.folds], nan_ok=True)
        metrics = client.get_run(run_id).data.metrics
        defined = [f.metrics[name] for f in result.folds if not np.isnan(f.metrics[name])]
        assert metrics[f"{prefix}{name}_mean"] == pytest.approx(np.mean(defined))
        assert f"{prefix}{name}_sd" in metrics


def test_trials_are_nested_runs(tracked: dict[str, Any]) -> None:
    client, run_id = tracked["client"], tracked["run_id"]
    tracker = tracked["tracker"]
    children = client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 3 * (3 + 1) * 2  # 3 tasks x (3 outer folds + final) x 2 trials
    studies = {c.data.tags["optuna.study"] for c in children}
    assert "radiogenomics/rs/outer-0" in studies and "radiogenomics/lc/final" in studies
    assert all("objective" in c.data.metrics and "alpha" in c.data.params for c in children)
    assert {c.data.tags["fold"] for c in children} == {"outer-0", "outer-1", "outer-2", "final"}


def test_artifacts_and_dataset_input(tracked: dict[str, Any]) -> None:
    client, run_id = tracked["client"], tracked["run_id"]

    def listing(folder: str) -> set[str]:
        return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}

    assert {"predicted_vs_true.png", "feature_importance.png", "oof_predictions.csv", "fold_metrics.csv",
            "best_params_per_fold.json"} <= listing("rs")
    assert {"calibration.png", "roc.png", "feature_importance.png"} <= listing("tox")
    assert {"km_by_predicted_group.png", "feature_importance.png"} <= listing("lc")
    png = Path(client.download_artifacts(run_id, "tox/roc.png", str(tracked["root"] / "png")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "features" and dataset.digest == tracked["hash"][:32]
    assert '"num_rows": 48' in dataset.profile
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"


def test_attached_worker_and_failed_run(tracked: dict[str, Any]) -> None:
    client, tracker = tracked["client"], tracked["tracker"]
    worker = Tracker(tracker.tracking_uri, "tests").attach(tracked["run_id"])
    with worker.trial_run("extra", 0, {"alpha": 0.5}) as log_value:
        log_value(0.25)
    child = client.search_runs([tracker.experiment_id], "tags.`optuna.study` = 'extra'")[0]
    assert child.data.tags["mlflow.parentRunId"] == tracked["run_id"] and child.data.metrics["objective"] == 0.25
    with pytest.raises(ZeroDivisionError), tracker.start_run("broken") as broken_id:
        raise ZeroDivisionError
    assert client.get_run(broken_id).info.status == "FAILED"
    with pytest.raises(RuntimeError, match="parent run"):
        tracker.log_fold_metrics({"a": 1.0}, step=0)


def test_hashes_importance_and_git(tmp_path: Path) -> None:
    table = _data()
    assert table_content_hash(table) == table_content_hash(table.copy())
    changed = table.copy()
    changed.loc[3, "x2"] += 1e-9
    assert table_content_hash(changed) != table_content_hash(table)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "patients.csv").write_text("patient_id\nP1\n")
    first = cohort_content_hash(tmp_path / "c")
    (tmp_path / "c" / "patients.csv").write_text("patient_id\nP2\n")
    assert cohort_content_hash(tmp_path / "c") != first
    model = make_pipeline(StandardScaler(), Ridge()).fit(table[FEATURES], table["y"])
    importance = feature_importance(model)
    assert importance is not None and importance.idxmax() == "x1" and list(importance.index) == FEATURES
    assert git_commit(tmp_path) == "unknown"
