"""`radiogenomics train` with the multimodal network as the only RSI candidate: it is cross-validated with conformal
intervals, registered inside the prescriber, and the champion prescriber predicts records in a fresh process."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from prescriber_factory import extracted_cohort, session_base

from radiogenomics.cli.app import main
from radiogenomics.models.prescriber import RECORD_FIELDS
from radiogenomics.training.registry import PRESCRIBER_MODEL, RADIOSENSITIVITY_MODEL, RSI_MODEL_TAG

CONFIG = """\
cv: {{outer_folds: 2, inner_folds: 2}}
search: {{n_trials: 1}}
tasks:
  radiosensitivity:
    candidates: [multimodal]
    params: {{multimodal: {{epochs: 2, crop_size: 16, width: 4, hidden: 8, patience: 1, augment: false,
                           n_threads: 1, device: cpu, calibration_fraction: 0.5, cache_dir: "{cache}"}}}}
  outcome_alpha: {{enabled: false}}
  toxicity: {{endpoints: [tox_xerostomia], candidates: [logistic]}}
  survival: {{enabled: false}}
"""
LOAD = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/radiogenomics-prescriber@champion")
features = pd.read_parquet(sys.argv[1])
features = features.drop(columns=[c for c in features.columns if c.startswith("outcome.")])
records = model.predict(features)
rsi_model = type(model.unwrap_python_model().prescriber.radiosensitivity).__name__
requirements = open(mlflow.pyfunc.get_model_dependencies("models:/radiogenomics-prescriber@champion")).read()
print(json.dumps({"model": rsi_model, "requirements": requirements.splitlines(), "columns": list(records.columns),
                  "n": len(records), "rsi": records["rsi"].tolist(), "flags": records["flags"].tolist()}))
"""


def test_train_registers_the_multimodal_model_in_the_prescriber(tmp_path_factory: pytest.TempPathFactory,
                                                                 tmp_path: Path) -> None:
    cohort, features = extracted_cohort(session_base(tmp_path_factory))
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG.format(cache=tmp_path / "crops"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(tmp_path)  # the sqlite store's default artifact root is ./mlartifacts
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["train", str(cohort), "--features", str(features), "--config", str(config),
                         "--out", str(tmp_path / "out")])
        assert code == 0
        proc = subprocess.run([sys.executable, "-c", LOAD, str(features)], capture_output=True, text=True,
                              timeout=600, cwd=tmp_path)
    mlflow.set_tracking_uri(None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["model"] == "MultimodalRSI"
    assert loaded["columns"] == list(RECORD_FIELDS) and loaded["n"] == len(pd.read_parquet(features))
    assert all(0.0 < r < 1.0 for r in loaded["rsi"])
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias(PRESCRIBER_MODEL, "champion")
    assert version.tags[RSI_MODEL_TAG] == "MultimodalRSI"
    assert client.get_model_version_by_alias(RADIOSENSITIVITY_MODEL, "champion").tags[RSI_MODEL_TAG] == "MultimodalRSI"
    run = client.get_run(version.run_id)
    assert run.data.tags["winner.registered_radiosensitivity"] == "radiosensitivity/multimodal"
    assert run.data.tags[f"registry.{RSI_MODEL_TAG}"] == "MultimodalRSI"
    # the outer folds were scored with the conformal interval, like the tabular candidates
    assert 0.0 <= run.data.metrics["radiosensitivity/multimodal/heldout.coverage"] <= 1.0
    assert "heldout.radiosensitivity.coverage" in version.tags
    assert any(line.startswith("monai==") for line in loaded["requirements"])  # the pickle rebuilds a MONAI net
