"""A small extracted synthetic cohort and fitted models for the prescriber, registry and predict tests.

The cohort (24 patients, 16^3 grid, original-image radiomics only) is generated and extracted once per test
session under pytest's base temp folder and reused by every test module that asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

N_PATIENTS = 24
SEED = 11
GRID = 16


@dataclass
class Bundle:
    """The cohort folder, its feature table (path, frame, schema) and fitted models."""

    cohort: Path
    features_path: Path
    table: pd.DataFrame
    schema: Any
    radiosensitivity: Any
    toxicity: dict[str, Any]


def extracted_cohort(base: Path) -> tuple[Path, Path]:
    """(cohort folder, feature table) under ``base``, built on first use."""
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.synthetic import generate_cohort

    cohort, features = base / "cohort", base / "features.parquet"
    if not features.is_file():
        generate_cohort(cohort, n_patients=N_PATIENTS, seed=SEED, grid_size=GRID, overwrite=True)
        extract(cohort, features, ExtractOptions(workers=1, cache_dir=base / "cache", filters=("original",)))
    return cohort, features


def build_bundle(base: Path) -> Bundle:
    """Fit a small RSI surrogate and a xerostomia classifier on the extracted cohort."""
    from threadpoolctl import threadpool_limits

    from radiogenomics.features.schema import read_feature_schema, read_feature_table
    from radiogenomics.models.radiosensitivity import RSISurrogate
    from radiogenomics.models.toxicity import ToxicityClassifier

    cohort, features = extracted_cohort(base)
    table = read_feature_table(features)
    with threadpool_limits(1):
        rsi = RSISurrogate(regressor="ridge", cv=3, n_screen=10, random_state=0).fit(table)
        tox = ToxicityClassifier(endpoint="xerostomia", calibration=None, random_state=0).fit(table)
    return Bundle(cohort, features, table, read_feature_schema(features), rsi, {"xerostomia": tox})


def session_base(tmp_path_factory: Any) -> Path:
    """A folder shared by all test modules of one pytest session."""
    base = tmp_path_factory.getbasetemp() / "prescriber-cohort"
    base.mkdir(exist_ok=True)
    return base


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[str]:
    """Point MLflow (and subprocesses, through MLFLOW_TRACKING_URI) at ``uri``; restore the previous state."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it


#: Held-out metrics and evaluation digests the bundle is registered with: fixed numbers, not computed on data;
#: one constant digest per task says that registrations of the bundle are comparable, so a second one with the
#: same metrics is promoted (docs/registry.md, "Champion and challenger").
BUNDLE_METRICS = {"radiosensitivity.spearman": 0.5, "toxicity.xerostomia.auc": 0.7}
BUNDLE_DIGESTS = {"radiosensitivity": "bundle-radiosensitivity", "toxicity.xerostomia": "bundle-xerostomia"}


def register_bundle(bundle: Bundle, folder: Path, *, experiment: str = "test",
                    metrics: dict[str, float] | None = None) -> str:
    """Register the bundle's models in a sqlite MLflow store under ``folder``; the prescriber's version.

    Call inside ``use_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")`` (the store stays pointed at).
    """
    import mlflow

    from radiogenomics.training.config import TrainConfig
    from radiogenomics.training.registry import register_models

    client = mlflow.MlflowClient()
    existing = client.get_experiment_by_name(experiment)
    experiment_id = (existing.experiment_id if existing is not None else
                     client.create_experiment(experiment, artifact_location=(folder / "artifacts").as_uri()))
    mlflow.set_experiment(experiment_id=experiment_id)
    result = register_models(bundle.radiosensitivity, bundle.toxicity, metrics or BUNDLE_METRICS, bundle.schema,
                             TrainConfig(), training_table=bundle.table, experiment_name=experiment,
                             evaluation_digests=BUNDLE_DIGESTS)
    return str(result.versions["radiogenomics-prescriber"].version)
