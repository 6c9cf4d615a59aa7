"""MLflow tracking of a training: one parent run, nested runs per Optuna trial, metrics, plots and provenance.

The store is ``$MLFLOW_TRACKING_URI`` or a local sqlite store (``TrackingConfig``). A training opens one parent
run (:meth:`Tracker.start_run`) that records:

* the configuration as parameters (flattened, ``cv.outer_folds``) and as files (``config/``);
* the feature table as an MLflow dataset input (``mlflow.data.from_pandas``, digest = the first 32 hex digits
  of the cohort's content hash: MLflow's dataset digest column holds 36 characters) and the full hash as the
  tag ``radiogenomics.cohort_sha256``;
* library versions (tags ``version.<distribution>``) and the git commit of the package checkout
  (``radiogenomics.git_commit``, ``unknown`` outside a git checkout).

:func:`~radiogenomics.training.nested_cv.nested_cv` logs each outer fold's metrics with ``step = fold`` and each
trial as a nested run (``mlflow.start_run(nested=True)`` from the objective; a worker in another process nests
under the same parent through ``parent_run_id``); :meth:`Tracker.log_result` adds the aggregated metrics, the
chosen parameters, the out-of-fold predictions and the plots of :mod:`radiogenomics.training.plots`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from radiogenomics.features.cache import file_digest, library_versions
from radiogenomics.training.config import TrainConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from radiogenomics.training.nested_cv import NestedCVResult

log = logging.getLogger(__name__)

#: Distributions whose versions every training run records.
TRACKED_LIBRARIES = ("numpy", "pandas", "scikit-learn", "scikit-survival", "mapie", "optuna", "torch", "monai",
                     "mlflow")
#: Length of the dataset digest MLflow stores (its ``datasets.digest`` column is 36 characters).
DATASET_DIGEST_CHARS = 32
COHORT_HASH_TAG = "radiogenomics.cohort_sha256"
GIT_COMMIT_TAG = "radiogenomics.git_commit"


def cohort_content_hash(path: Path | str) -> str:
    """SHA-256 of a cohort folder (every file's relative name and bytes) or of one file (a feature table)."""
    return file_digest(path)


def table_content_hash(table: pd.DataFrame) -> str:
    """SHA-256 of a DataFrame's column names, dtypes and values (row order matters, the index does not)."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in table.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return h.hexdigest()


def evaluation_digest(oof: pd.DataFrame) -> str:
    """SHA-256 of the data a task's held-out metrics were computed on: the tested rows (``fold >= 0``) of an
    out-of-fold frame, as the table ``patient_id`` (text), ``fold`` (the outer fold index, int64) and the labels
    (``y_true``, or ``event`` and ``time``; float64), sorted by patient, fold and label, hashed by
    :func:`table_content_hash`. Same patients, same labels and the same outer-fold assignment (same cohort, folds
    and seed) give the same digest, in any row order; the predictions do not enter it."""
    tested = oof[oof["fold"] >= 0]
    frame = pd.DataFrame({"patient_id": tested["group"].astype(str).to_numpy(),
                          "fold": tested["fold"].astype("int64").to_numpy()})
    for column in ("y_true", "event", "time"):
        if column in tested.columns:
            frame[column] = pd.to_numeric(tested[column], errors="coerce").astype("float64").to_numpy()
    frame = frame.sort_values(list(frame.columns), kind="mergesort").reset_index(drop=True)
    return table_content_hash(frame)


def git_commit(path: Path | str | None = None) -> str:
    """The commit of the git checkout holding ``path`` (default: this package), or ``unknown``."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else "unknown"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b": value}``; lists and None as their JSON text."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple) or value is None:
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def feature_importance(estimator: Any) -> pd.Series | None:
    """Importances of a fitted estimator or pipeline's final step (``feature_importances_`` or ``|coef_|``),
    named by the preceding steps' ``get_feature_names_out``; None when the model exposes neither."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    values = getattr(final, "feature_importances_", None)
    if values is None:
        coef = getattr(final, "coef_", None)
        if coef is None:
            return None
        values = np.abs(np.asarray(coef, dtype=float))
        values = values.mean(axis=0) if values.ndim == 2 else values
    values = np.ravel(np.asarray(values, dtype=float))
    names: Any = getattr(final, "feature_names_in_", None)
    if hasattr(estimator, "steps") and len(estimator.steps) > 1:
        try:
            names = estimator[:-1].get_feature_names_out()
        except (AttributeError, ValueError):
            names = None
    if names is None or len(names) != len(values):
        names = [f"x{i}" for i in range(len(values))]
    return pd.Series(values, index=[str(n) for n in names])


class Tracker:
    """MLflow logging of one training. Use :meth:`start_run` (parent run) or :meth:`attach` (a worker)."""

    def __init__(self, tracking_uri: str, experiment_name: str, *, artifact_location: str | None = None) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.parent_run_id: str | None = None
        mlflow.set_tracking_uri(tracking_uri)
        self.client = client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            self.experiment_id = client.create_experiment(experiment_name, artifact_location=artifact_location)
        else:
            self.experiment_id = experiment.experiment_id

    @classmethod
    def from_config(cls, config: TrainConfig, base: Path | str | None = None) -> Tracker:
        """A tracker on ``config.tracking``'s store (``$MLFLOW_TRACKING_URI`` or the local sqlite store)."""
        tracking = config.tracking
        return cls(tracking.tracking_uri(base), tracking.experiment_name,
                   artifact_location=tracking.artifact_location(base))

    def attach(self, parent_run_id: str) -> Tracker:
        """Nest this process's trial runs under an existing parent run (a search worker)."""
        self.parent_run_id = parent_run_id
        return self

    @contextmanager
    def start_run(self, run_name: str, *, config: TrainConfig | None = None, config_path: Path | str | None = None,
                  features: pd.DataFrame | None = None, features_source: str | None = None,
                  cohort_hash: str | None = None, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """Open the parent run and log the provenance; yields its run ID. The run ends FAILED on an exception."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_name=run_name, experiment_id=self.experiment_id, tags=dict(tags or {})) as run:
            self.parent_run_id = run.info.run_id
            try:
                self._log_provenance(config, config_path, features, features_source, cohort_hash)
                yield run.info.run_id
            finally:
                self.parent_run_id = None

    def _log_provenance(self, config: TrainConfig | None, config_path: Path | str | None,
                        features: pd.DataFrame | None, features_source: str | None, cohort_hash: str | None) -> None:
        import mlflow
        from mlflow.data.pandas_dataset import from_pandas

        tags = {f"version.{name}": version for name, version in library_versions(TRACKED_LIBRARIES).items()}
        tags[GIT_COMMIT_TAG] = git_commit()
        if features is not None and cohort_hash is None:
            cohort_hash = table_content_hash(features)
        if cohort_hash is not None:
            tags[COHORT_HASH_TAG] = cohort_hash
        mlflow.set_tags(tags)
        if config is not None:
            mlflow.log_params(flatten(config.model_dump(mode="json")))
            mlflow.log_text(config.to_yaml(), "config/train_resolved.yaml")
        if config_path is not None:
            mlflow.log_artifact(str(config_path), artifact_path="config")
        if features is not None:
            with warnings.catch_warnings():  # MLflow's hints about integer columns and ambiguous local sources
                warnings.simplefilter("ignore", UserWarning)
                source: dict[str, Any] = {"source": features_source} if features_source else {}
                dataset = from_pandas(features, name="features", digest=(cohort_hash or "")[:DATASET_DIGEST_CHARS],
                                      **source)
                mlflow.log_input(dataset, context="training")

    @contextmanager
    def trial_run(self, study_name: str, number: int, params: Mapping[str, Any],
                  tags: Mapping[str, str] | None = None) -> Iterator[Callable[[float], None]]:
        """A nested run for one Optuna trial; yields ``log_value(score)``."""
        import mlflow

        if self.parent_run_id is None:
            raise RuntimeError("trial runs need a parent run: use Tracker.start_run or Tracker.attach")
        mlflow.set_tracking_uri(self.tracking_uri)
        run_tags = {"optuna.study": study_name, "optuna.trial": str(number), **dict(tags or {})}
        with mlflow.start_run(run_name=f"{study_name}#{number}", experiment_id=self.experiment_id, nested=True,
                              parent_run_id=self.parent_run_id, tags=run_tags):
            mlflow.log_params(flatten(dict(params)))

            def log_value(value: float) -> None:
                mlflow.log_metric("objective", value if math.isfinite(value) else float("nan"))

            yield log_value

    def log_fold_metrics(self, metrics: Mapping[str, float], *, step: int, prefix: str = "") -> None:
        """Metrics of one outer fold on the parent run, ``step`` = fold index."""
        import mlflow

        mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step,
                           run_id=self._parent())

    def _parent(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("no parent run: use Tracker.start_run")
        return self.parent_run_id

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        """Log a matplotlib figure (PNG) on the parent run and close it."""
        import matplotlib.pyplot as plt

        try:
            self.client.log_figure(self._parent(), figure, artifact_file)
        finally:
            plt.close(figure)

    def log_result(self, result: NestedCVResult, *, prefix: str = "", plots: bool = True) -> None:
        """Aggregated metrics, chosen parameters, out-of-fold predictions and the task's plots."""
        import mlflow

        run_id = self._parent()
        mlflow.log_metrics({f"{prefix}{k}": v for k, v in result.summary().items()}, run_id=run_id)
        mlflow.log_params({f"{prefix}final.{k}": v for k, v in flatten(result.final_params).items()}, run_id=run_id)
        folder = prefix.rstrip("/.") or result.scorer
        self.client.log_dict(run_id, {f.name: f.best_params for f in result.folds},
                             f"{folder}/best_params_per_fold.json")
        self.client.log_text(run_id, result.oof.to_csv(index=False), f"{folder}/oof_predictions.csv")
        self.client.log_text(run_id, result.metrics_frame().to_csv(), f"{folder}/fold_metrics.csv")
        if plots:
            for name, figure in _result_figures(result):
                self.log_figure(figure, f"{folder}/{name}.png")


def _result_figures(result: NestedCVResult) -> Iterator[tuple[str, Figure]]:
    """The plots that fit the result's metric family (on the rows that have an out-of-fold prediction)."""
    from radiogenomics.training import plots

    oof = result.oof[result.oof["fold"] >= 0]
    if result.kind == "classification" and oof["y_true"].nunique() == 2:
        yield "calibration", plots.calibration_figure(oof["y_true"], oof["y_pred"])
        yield "roc", plots.roc_figure(oof["y_true"], oof["y_pred"])
    elif result.kind == "regression":
        lower = oof["lower"] if "lower" in oof else None
        upper = oof["upper"] if "upper" in oof else None
        yield "predicted_vs_true", plots.predicted_vs_true_figure(oof["y_true"], oof["y_pred"], lower=lower,
                                                                  upper=upper)
    elif result.kind == "survival":
        yield "km_by_predicted_group", plots.km_by_group_figure(oof["event"], oof["time"], oof["y_pred"])
    importance = feature_importance(result.final_estimator)
    if importance is not None and len(importance):
        yield "feature_importance", plots.feature_importance_figure(importance)
