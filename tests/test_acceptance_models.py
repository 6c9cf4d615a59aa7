"""Independent acceptance test of issue 8 (models, training, registry, ``predict``) on a foreign cohort.

Written from the contract (cohort format v1, feature table, §2 record, §3 CLI, §4 registry) and the user docs
(README.md, docs/cli.md, cohort-format.md, training.md, registry.md, models.md, radiobiology.md) only. The cohorts
come from ``tests/independent_simulator.py``, which shares nothing with ``radiogenomics.synthetic``. The package
is used only as a user would: the command line in subprocesses, and MLflow (``mlflow.pyfunc.load_model``,
``MlflowClient``) in fresh processes. Reference values (the RSI rank score, LQ/GARD formulas, AUC, Spearman,
the promotion rule) are recomputed here from the published formulas and the docs.

One module-scoped fixture builds two cohorts (48 training patients with a truncated NIfTI; 40 external patients,
30 without expression, with a mask on another grid), runs validate -> extract -> train -> predict (CSV and JSON)
-> a fresh-process pyfunc -> a second train once, and snapshots the registry after each train; every test only
reads those results.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from independent_simulator import SimulatedCohort, rsi_from_expression, simulate_cohort
from scipy import stats

LOG = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
MODELS = ("radiogenomics-radiosensitivity", "radiogenomics-toxicity", "radiogenomics-prescriber")
PRESCRIBER = "models:/radiogenomics-prescriber@champion"
#: contract §2, in its order
# contract §2 as revised for the safety gate (issue 15): site, regimen_source, rsi_source, oar_checks; the
# product adds `notes` after the contract's fields (docs/safety.md)
RECORD_FIELDS = ("patient_id", "model_name", "model_version", "model_uri", "rsi", "rsi_lower", "rsi_upper",
                 "alpha_per_gy", "beta_per_gy2", "alpha_beta_gy", "dose_per_fraction_gy", "n_fractions", "gard",
                 "target_gard", "dose_for_target_gard_gy", "recommended_total_dose_gy", "toxicity",
                 "recommended_n_fractions", "recommended_dose_per_fraction_gy", "dose_for_target_gard_lower_gy",
                 "dose_for_target_gard_upper_gy", "site", "regimen_source", "rsi_source", "oar_checks", "flags",
                 "input_sha256", "created_at", "notes")
CONTRACT_FLAGS = {"out_of_distribution", "clipped_max", "clipped_min", "population_fallback", "missing_genomics",
                  "missing_imaging", "unrecognised_structure", "site_not_in_training", "implausible_parameter",
                  "oar_limited", "oar_limit_exceeded", "oar_soft_limit_exceeded", "oar_unchecked",
                  "regimen_outside_training", "toxicity_unavailable"}
BETA_PER_GY2 = 0.05          # Scott et al. Lancet Oncol 2017 (docs/radiobiology.md): RSI -> alpha convention
#: docs/safety.md: the plausible range of rails.yaml (lq_plausible: alpha 0.02-1.5 /Gy, alpha/beta 0.5-30 Gy);
#: with beta 0.05 Gy^-2 that is alpha in [0.025, 1.5] /Gy; an interval end outside it gives no dose
PLAUSIBLE_ALPHA_PER_GY = (max(0.02, 0.5 * BETA_PER_GY2), min(1.5, 30.0 * BETA_PER_GY2))
#: docs/training.md, "The configuration": default promotion tolerances and coverage band
TOLERANCE = {"spearman": 0.02, "auc": 0.02, "c_index": 0.02, "brier": 0.01}
COVERAGE_BAND = (0.85, 0.95)
HIGHER_IS_BETTER = {"spearman": True, "auc": True, "c_index": True, "mae": False, "brier": False,
                    "mean_width": False}

TRAIN_YAML = """\
# small config (docs/training.md): 2 x 2 folds, 2 trials, the fastest candidates, RSI + toxicity only
seed: {seed}
cv: {{outer_folds: 2, inner_folds: 2}}
search: {{n_trials: 2}}
tasks:
  radiosensitivity: {{candidates: [ridge]}}
  toxicity: {{candidates: [logistic]}}
  outcome_alpha: {{enabled: false}}
  survival: {{enabled: false}}
"""

#: Run in a fresh interpreter: only mlflow and pandas are imported by the script itself.
MLFLOW_SCRIPT = r'''
import json, sys
import mlflow, pandas as pd
from mlflow import MlflowClient

mode, out = sys.argv[1], sys.argv[2]

def plain(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, float) and v != v:
        return None
    return v

result = {}
if mode == "predict":
    features = pd.read_parquet(sys.argv[3])
    recs = mlflow.pyfunc.load_model("models:/radiogenomics-prescriber@champion").predict(features)
    result["records"] = [{k: plain(v) for k, v in r.items()} for r in recs.to_dict(orient="records")]
    tox = mlflow.pyfunc.load_model("models:/radiogenomics-toxicity/1")
    delivered = tox.predict(features)
    result["tox_delivered"] = dict(zip(features["patient_id"], delivered.iloc[:, 0].astype(float)))
    result["tox_columns"] = list(delivered.columns)
    result["tox_at"] = {}
    for pid, (dose, n) in json.loads(sys.argv[4]).items():
        row = features[features["patient_id"] == pid]
        at = tox.predict(row, params={"prescription_gy": dose, "n_fractions": float(n)})
        result["tox_at"][pid] = float(at.iloc[0, 0])
else:
    client = MlflowClient()
    for name in json.loads(sys.argv[3]):
        info = {"versions": {}}
        for v in client.search_model_versions(f"name='{name}'"):
            version = str(v.version)
            v = client.get_model_version(name, version)    # search results carry no aliases
            info["versions"][version] = {"tags": dict(v.tags), "aliases": list(v.aliases), "run_id": v.run_id}
            mi = mlflow.models.get_model_info(f"models:/{name}/{v.version}")
            sig = mi.signature
            info["versions"][version]["signature"] = None if sig is None else {
                "inputs": None if sig.inputs is None else sig.inputs.input_names(),
                "outputs": sig.outputs.input_names(),
                "params": [p.name for p in sig.params] if sig.params else []}
            req = mlflow.artifacts.download_artifacts(f"models:/{name}/{v.version}/requirements.txt")
            info["versions"][version]["requirements"] = open(req).read().splitlines()
        result[name] = info
    run_ids = {v["run_id"] for m in result.values() for v in m["versions"].values()}
    result["runs"] = {}
    for rid in run_ids:
        run = client.get_run(rid)
        result["runs"][rid] = {
            "tags": dict(run.data.tags), "metrics": dict(run.data.metrics),
            "datasets": [(d.dataset.name, [t.value for t in d.tags]) for d in run.inputs.dataset_inputs],
            "config_artifacts": [a.path for a in client.list_artifacts(rid, "config")]}
with open(out, "w") as f:
    json.dump(result, f)
'''


@dataclass
class Pipeline:
    """Everything the fixture ran, for the tests to read."""

    work: Path
    env: dict[str, str]
    train_cohort: SimulatedCohort
    external: SimulatedCohort
    steps: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    registry_1: dict[str, Any] = field(default_factory=dict)
    registry_2: dict[str, Any] = field(default_factory=dict)
    fresh: dict[str, Any] = field(default_factory=dict)

    def run(self, step: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """``python -m radiogenomics ARGS`` (or, for ``mlflow:*`` steps, the MLflow script) in the work folder."""
        cmd = [sys.executable, "-c", MLFLOW_SCRIPT, *args] if step.startswith("mlflow:") else \
            [sys.executable, "-m", "radiogenomics", *args]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        self.seconds[step] = time.perf_counter() - start
        self.steps[step] = proc
        return proc

    def ok(self, step: str) -> subprocess.CompletedProcess[str]:
        proc = self.steps[step]
        assert proc.returncode == 0, f"{step} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        return proc


def _json_or_empty(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """Two foreign cohorts and one pass of the whole CLI chain (about a minute on 2 cores)."""
    work = tmp_path_factory.mktemp("acceptance_models")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlflow.db", RADIOGENOMICS_CACHE_DIR=str(work / "cache"),
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    start = time.perf_counter()
    p = Pipeline(work, env, simulate_cohort(work / "hn_train", 48, seed=11, broken="truncated_nifti"),
                 simulate_cohort(work / "hn_external", 40, seed=12, prefix="EXT", no_expression_fraction=0.7,
                                 broken="mask_grid"))
    p.seconds["simulate"] = time.perf_counter() - start
    (work / "train1.yaml").write_text(TRAIN_YAML.format(seed=2026))
    (work / "train2.yaml").write_text(TRAIN_YAML.format(seed=7))
    p.run("validate", "validate", "hn_train")
    p.run("validate_json", "validate", "hn_train", "--json")
    p.run("extract", "extract", "hn_train", "--out", "features/train.parquet", "--workers", "2", "--no-progress")
    p.run("train1", "train", "hn_train", "--features", "features/train.parquet", "--config", "train1.yaml",
          "--out", "run1")
    p.run("mlflow:registry1", "registry", str(work / "registry1.json"), json.dumps(MODELS))
    p.registry_1 = _json_or_empty(work / "registry1.json")
    p.run("predict_csv", "predict", "hn_external", "--model", PRESCRIBER, "--out", "pred/P.csv", "--workers", "2")
    p.run("predict_json", "predict", "hn_external", "--model", PRESCRIBER, "--out", "pred/P.json", "--workers", "2")
    p.run("predict_regimen", "predict", "hn_external", "--model", PRESCRIBER, "--out", "regimen/R.json",
          "--workers", "2", "--target-gard", "40", "--n-fractions", "30", "--dose-per-fraction-gy", "2.2")
    records = _json_or_empty(work / "pred" / "P.json").get("records", [])
    # contract §2 (issue 15): the toxicity is at the recommended regimen, its total in its number of fractions
    doses = {r["patient_id"]: [r["recommended_total_dose_gy"], r["recommended_n_fractions"]] for r in records[:4]
             if r["recommended_total_dose_gy"] is not None}
    p.run("mlflow:fresh", "predict", str(work / "fresh.json"), str(work / "pred" / "P.features.parquet"),
          json.dumps(doses))
    p.fresh = _json_or_empty(work / "fresh.json")
    # second run on the same cohort, extracting itself (cached) into run2/features.parquet, another fold seed
    p.run("train2", "train", "hn_train", "--config", "train2.yaml", "--out", "run2")
    p.run("mlflow:registry2", "registry", str(work / "registry2.json"), json.dumps(MODELS))
    p.registry_2 = _json_or_empty(work / "registry2.json")
    p.seconds["total"] = time.perf_counter() - start
    LOG.info("acceptance pipeline: %s", ", ".join(f"{k} {v:.1f} s" for k, v in p.seconds.items()))
    return p


# ---------------------------------------------------------------------------------------------------------
# helpers: independent formulas
# ---------------------------------------------------------------------------------------------------------

def alpha_from_rsi(rsi: float) -> float:
    """Scott et al. 2017: ln RSI = -(2 alpha + 4 beta) for one 2 Gy fraction."""
    return -math.log(rsi) / 2 - 2 * BETA_PER_GY2


def auc_mann_whitney(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over (events x non-events) pairs (Hanley & McNeil 1982)."""
    pos, neg = score[label == 1], score[label == 0]
    u = stats.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    return float(u / (len(pos) * len(neg)))


def site_rails() -> dict[str, float]:
    """The head-and-neck site rails as the docs state them (docs/radiobiology.md -> data/rails.yaml)."""
    rails = yaml.safe_load((REPO / "radiogenomics" / "radiobiology" / "data" / "rails.yaml").read_text())
    return dict(rails["sites"]["head_neck"])


def json_records(p: Pipeline) -> pd.DataFrame:
    p.ok("predict_json")
    recs = json.loads((p.work / "pred" / "P.json").read_text())["records"]
    return pd.DataFrame(recs).set_index("patient_id", drop=False)


# ---------------------------------------------------------------------------------------------------------
# 1. validate
# ---------------------------------------------------------------------------------------------------------

def test_validate_names_only_the_broken_patient_and_file(pipe: Pipeline) -> None:
    broken, file = pipe.train_cohort.broken_patient, pipe.train_cohort.broken_file
    assert broken and file
    plain = pipe.steps["validate"]
    assert plain.returncode == 2, plain.stderr[-2000:]          # docs: exit 2 if any error
    last = [line for line in plain.stderr.splitlines() if line.startswith("error")]
    assert len(last) == 1 and broken in last[0] and file in last[0], plain.stderr[-2000:]
    assert pipe.steps["validate_json"].returncode == 2
    report = json.loads(pipe.steps["validate_json"].stdout)
    errors = [q for q in report["problems"] if q["severity"] == "error"]
    assert errors and {q["patient_id"] for q in errors} == {broken}, errors
    assert {q["file"] for q in errors} == {file}
    assert {q["code"] for q in errors} == {"unreadable_image"}
    # everything else of the foreign format is accepted: NRRD label maps, MHA, flipped directions, PET on its own
    # grid, dvh.csv, an unknown clinical column; the blank RSI gene is only a warning naming patient and gene
    warnings = [q for q in report["problems"] if q["severity"] == "warning"]
    assert [(q["code"], q["patient_id"], q["column"]) for q in warnings] == [("missing_rsi_value", "HN11-007",
                                                                              "SUMO1")]
    assert report["n_patients"] == 48


# ---------------------------------------------------------------------------------------------------------
# 2. extract
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_table(pipe: Pipeline) -> pd.DataFrame:
    pipe.ok("extract")
    return pd.read_parquet(pipe.work / "features" / "train.parquet").set_index("patient_id", drop=False)


def test_extract_reports_the_broken_patient_and_completes_the_rest(pipe: Pipeline, train_table: pd.DataFrame
                                                                    ) -> None:
    broken = pipe.train_cohort.broken_patient
    truth = pipe.train_cohort.truth.set_index("patient_id")
    assert list(train_table.index) == list(truth.index)           # one row per patient, patients.csv order
    failures = pd.read_csv(pipe.work / "features" / "train.failures.csv", dtype=str)
    assert set(failures["patient_id"]) == {broken}, failures
    assert failures["reason"].str.contains("ct.nii.gz", regex=False).all()
    summary = json.loads((pipe.work / "features" / "train.summary.json").read_text())
    assert summary["failed_patients"] == [broken]
    others = train_table.drop(index=broken)
    assert others["ct.gtv.original_firstorder_Mean"].notna().all()
    assert others["ct.parotid_l.original_shape_MeshVolume"].notna().all()
    assert (train_table["available.pet_fdg"].astype(int) == truth["has_pet"].astype(int)).all()
    pet = others[truth.loc[others.index, "has_pet"]]
    assert pet["pet_fdg.gtv.original_firstorder_Mean"].notna().all()
    assert np.isnan(train_table.loc[broken, "ct.gtv.original_firstorder_Mean"])


def test_extracted_rsi_is_eschrichs_rank_score_of_our_expression(pipe: Pipeline, train_table: pd.DataFrame
                                                                  ) -> None:
    truth = pipe.train_cohort.truth.set_index("patient_id")
    expr = pd.read_csv(pipe.train_cohort.folder / "expression.csv").set_index("patient_id")
    measured = truth["has_expression"]
    assert measured.sum() >= 35 and (~measured).sum() >= 3
    for pid in truth.index[measured]:
        assert train_table.loc[pid, "genomic.rsi"] == pytest.approx(rsi_from_expression(expr.loc[pid].to_dict()),
                                                                     abs=1e-12)
    assert train_table.loc[truth.index[~measured], "genomic.rsi"].isna().all()   # never imputed at extraction


def test_dose_features_equal_our_dose_from_grids_and_from_dvh_csv(pipe: Pipeline, train_table: pd.DataFrame
                                                                   ) -> None:
    truth = pipe.train_cohort.truth.set_index("patient_id").drop(index=pipe.train_cohort.broken_patient)
    t = train_table.loc[truth.index]
    vol_l, vol_r = t["dose.parotid_l.volume_cc"], t["dose.parotid_r.volume_cc"]
    mean = (t["dose.parotid_l.mean_gy"] * vol_l + t["dose.parotid_r.mean_gy"] * vol_r) / (vol_l + vol_r)
    grid = truth["centre"] != "LIM"           # LIM gives dvh.csv only (0.5 Gy bins)
    np.testing.assert_allclose(mean[grid], truth.loc[grid, "mean_parotid_dose_gy"], atol=1e-3)
    np.testing.assert_allclose(mean[~grid], truth.loc[~grid, "mean_parotid_dose_gy"], atol=0.05)


# ---------------------------------------------------------------------------------------------------------
# 3. train and the registry
# ---------------------------------------------------------------------------------------------------------

def test_train_registers_three_models_as_champion_with_signatures(pipe: Pipeline) -> None:
    pipe.ok("train1")
    pipe.ok("mlflow:registry1")
    for name in MODELS:
        versions = pipe.registry_1[name]["versions"]
        assert list(versions) == ["1"], name
        v1 = versions["1"]
        assert v1["aliases"] == ["champion"], name
        assert v1["tags"]["promotion_decision"] == "first_champion"
        assert v1["tags"]["promotion_reason"]
        # docs/registry.md "Signatures" (issue 15): no input schema, so that MLflow never drops an undeclared
        # column (a misspelt one is refused by the model itself, naming the closest known column)
        assert v1["signature"] and v1["signature"]["inputs"] is None, name
        reqs = v1["requirements"]
        assert any(r.startswith("radiogenomics==") for r in reqs), reqs
        assert any(re.fullmatch(r"torch==\S+\+cpu", r) for r in reqs), reqs   # never the CUDA build
        # docs/registry.md: each model is judged on its own metrics (the prescriber, serving both, on all)
        own = {"radiogenomics-radiosensitivity": ("radiosensitivity.",), "radiogenomics-toxicity": ("toxicity.",),
               "radiogenomics-prescriber": ("radiosensitivity.", "toxicity.")}[name]
        for key in ("radiosensitivity.spearman", "radiosensitivity.coverage", "toxicity.xerostomia.auc",
                    "toxicity.xerostomia.calibration_slope"):
            if key.startswith(own):
                assert math.isfinite(float(v1["tags"][f"heldout.{key}"])), (name, key)
            else:
                assert f"heldout.{key}" not in v1["tags"], (name, key)
    presc = pipe.registry_1["radiogenomics-prescriber"]["versions"]["1"]["signature"]
    assert set(RECORD_FIELDS) <= set(presc["outputs"])
    assert {"n_fractions", "dose_per_fraction_gy", "target_gard"} <= set(presc["params"])
    rsi_sig = pipe.registry_1["radiogenomics-radiosensitivity"]["versions"]["1"]["signature"]
    assert {"rsi", "rsi_lower", "rsi_upper"} <= set(rsi_sig["outputs"])
    tox_sig = pipe.registry_1["radiogenomics-toxicity"]["versions"]["1"]["signature"]
    assert tox_sig["outputs"] == ["xerostomia_grade_ge2"]


def test_train_run_records_what_the_docs_promise(pipe: Pipeline) -> None:
    pipe.ok("mlflow:registry1")
    run_id = pipe.registry_1["radiogenomics-prescriber"]["versions"]["1"]["run_id"]
    run = pipe.registry_1["runs"][run_id]
    tags, metrics = run["tags"], run["metrics"]
    assert re.fullmatch(r"[0-9a-f]{64}", tags["radiogenomics.cohort_sha256"])
    assert tags["radiogenomics.git_commit"]
    assert tags["version.mlflow"] and tags["version.scikit-learn"]
    assert tags["winner.radiosensitivity"] == "ridge" and tags["winner.toxicity.xerostomia"] == "logistic"
    for name in MODELS:
        assert tags[f"registry.{name}.version"] == "1" and tags[f"registry.{name}.decision"] == "first_champion"
    for key in ("radiosensitivity/ridge/heldout.spearman", "radiosensitivity/ridge/heldout.coverage",
                "radiosensitivity/ridge/spearman_mean", "toxicity.xerostomia/logistic/heldout.auc",
                "toxicity.xerostomia/logistic/heldout.calibration_slope"):
        assert key in metrics, key
    assert ("features", ["training"]) in [(n, [t for t in ctx if t == "training"]) for n, ctx in run["datasets"]]
    assert "config/train_resolved.yaml" in run["config_artifacts"]
    assert "config/train1.yaml" in run["config_artifacts"]
    # learnability already visible in the logged held-out metrics (2 outer folds of 24 patients)
    assert metrics["radiosensitivity/ridge/heldout.spearman"] > 0.3
    assert metrics["toxicity.xerostomia/logistic/heldout.auc"] > 0.6


# ---------------------------------------------------------------------------------------------------------
# 4. predict
# ---------------------------------------------------------------------------------------------------------

def test_predict_writes_one_complete_record_per_patient(pipe: Pipeline) -> None:
    recs = json_records(pipe)
    truth = pipe.external.truth.set_index("patient_id")
    assert sorted(recs.index) == sorted(truth.index)
    assert list(recs.columns) == list(RECORD_FIELDS)
    for r in recs.to_dict(orient="records"):
        assert r["model_name"] == "radiogenomics-prescriber" and r["model_version"] == "1"
        assert r["model_uri"] == "models:/radiogenomics-prescriber/1"
        for k in ("rsi", "rsi_lower", "rsi_upper", "alpha_per_gy", "beta_per_gy2", "alpha_beta_gy", "gard",
                  "dose_per_fraction_gy", "target_gard", "dose_for_target_gard_gy", "recommended_total_dose_gy",
                  "recommended_dose_per_fraction_gy"):
            assert isinstance(r[k], float) and math.isfinite(r[k]), (r["patient_id"], k, r[k])
        for k in ("n_fractions", "recommended_n_fractions"):
            assert isinstance(r[k], int) and r[k] > 0, (r["patient_id"], k)
        assert isinstance(r["toxicity"], dict) and set(r["toxicity"]) == {"xerostomia_grade_ge2"}
        assert 0.0 <= r["toxicity"]["xerostomia_grade_ge2"] <= 1.0
        assert isinstance(r["flags"], list) and set(r["flags"]) <= CONTRACT_FLAGS, r["flags"]
        assert re.fullmatch(r"[0-9a-f]{64}", r["input_sha256"])
        offset = datetime.fromisoformat(r["created_at"]).utcoffset()
        assert offset is not None and offset.total_seconds() == 0, r["created_at"]
        assert r["rsi_lower"] <= r["rsi"] <= r["rsi_upper"]


def test_predict_records_follow_the_lq_and_gard_formulas(pipe: Pipeline) -> None:
    """alpha from RSI, GARD and dose for the target recomputed by hand (Scott 2017), records without fallback."""
    recs = json_records(pipe)
    own = recs[~recs["flags"].map(lambda f: "population_fallback" in f)]
    assert len(own) >= 30
    for r in own.to_dict(orient="records"):
        alpha, d, n = alpha_from_rsi(r["rsi"]), r["dose_per_fraction_gy"], r["n_fractions"]
        assert r["beta_per_gy2"] == pytest.approx(BETA_PER_GY2)
        assert r["alpha_per_gy"] == pytest.approx(alpha, rel=1e-9)
        assert r["alpha_beta_gy"] == pytest.approx(alpha / BETA_PER_GY2, rel=1e-9)
        assert r["gard"] == pytest.approx(n * d * (alpha + BETA_PER_GY2 * d), rel=1e-9)
        assert r["dose_for_target_gard_gy"] == pytest.approx(r["target_gard"] / (alpha + BETA_PER_GY2 * d), rel=1e-9)
        # the interval's doses: a more resistant end (higher RSI, lower alpha) needs more dose; an end outside the
        # LQ domain (RSI >= exp(-4 beta)) gives NaN (docs/radiobiology.md, "RSI interval")
        for end, rsi_end in (("lower", r["rsi_lower"]), ("upper", r["rsi_upper"])):
            dose = r[f"dose_for_target_gard_{end}_gy"]
            alpha_end = alpha_from_rsi(rsi_end) if rsi_end < math.exp(-4 * BETA_PER_GY2) else -1.0
            low, high = PLAUSIBLE_ALPHA_PER_GY
            if not low <= alpha_end <= high:
                # outside the LQ domain, or an implausible alpha (docs/safety.md): no dose, flagged
                assert dose is None or math.isnan(dose), (r["patient_id"], end)
                assert "implausible_parameter" in r["flags"], (r["patient_id"], r["flags"])
            else:
                assert dose == pytest.approx(r["target_gard"] / (alpha_end + BETA_PER_GY2 * d), rel=1e-9)


def test_predict_never_leaves_the_site_rails(pipe: Pipeline) -> None:
    recs = json_records(pipe)
    rails = site_rails()
    total = recs["recommended_total_dose_gy"]
    per_fx = recs["recommended_dose_per_fraction_gy"]
    assert (total >= rails["min_total_dose_gy"] - 1e-9).all() and (total <= rails["max_total_dose_gy"] + 1e-9).all()
    assert (per_fx >= rails["min_dose_per_fraction_gy"] - 1e-9).all()
    assert (per_fx <= rails["max_dose_per_fraction_gy"] + 1e-9).all()
    np.testing.assert_allclose(recs["recommended_n_fractions"] * per_fx, total, rtol=1e-9)
    clipped_max = recs["flags"].map(lambda f: "clipped_max" in f)
    clipped_min = recs["flags"].map(lambda f: "clipped_min" in f)
    np.testing.assert_allclose(total[clipped_max], rails["max_total_dose_gy"])
    np.testing.assert_allclose(total[clipped_min], rails["min_total_dose_gy"])
    # a population fallback gives the regimen in force, not a GARD dose (docs/safety.md); an OAR limit lowers it
    gated = recs["flags"].map(lambda f: bool({"population_fallback", "oar_limited", "oar_limit_exceeded"} & set(f)))
    inside = ~(clipped_max | clipped_min | gated)
    assert inside.any()
    np.testing.assert_allclose(total[inside], recs.loc[inside, "dose_for_target_gard_gy"], rtol=1e-9)


def test_predict_flags_missing_genomics_and_uses_measured_rsi(pipe: Pipeline) -> None:
    recs = json_records(pipe)
    truth = pipe.external.truth.set_index("patient_id")
    missing_genomics = recs["flags"].map(lambda f: "missing_genomics" in f)
    assert (missing_genomics == ~truth.loc[recs.index, "has_expression"]).all()
    in_domain = (truth["true_rsi"] > 0) & (truth["true_rsi"] < math.exp(-4 * BETA_PER_GY2))
    measured = truth.index[truth["has_expression"] & in_domain]
    assert len(measured) >= 5
    np.testing.assert_allclose(recs.loc[measured, "rsi"], truth.loc[measured, "true_rsi"], atol=1e-12)
    no_expr = recs.loc[missing_genomics]
    assert ((no_expr["rsi_upper"] - no_expr["rsi_lower"]) > 0).all()     # an interval, not a point
    no_pet = truth.index[~truth["has_pet"]]
    assert no_pet.size and all("missing_imaging" in f for f in recs.loc[no_pet, "flags"])


def test_predict_regimen_and_target_options(pipe: Pipeline) -> None:
    """--target-gard 40 --n-fractions 30 --dose-per-fraction-gy 2.2: same patients' LQ, new regimen and hash."""
    pipe.ok("predict_regimen")
    base = json_records(pipe)
    recs = pd.DataFrame(json.loads((pipe.work / "regimen" / "R.json").read_text())["records"]).set_index(
        "patient_id", drop=False)
    assert sorted(recs.index) == sorted(base.index)
    recs = recs.loc[base.index]
    assert (recs["target_gard"] == 40.0).all() and (recs["n_fractions"] == 30).all()
    assert (recs["dose_per_fraction_gy"] == 2.2).all()
    np.testing.assert_allclose(recs["alpha_per_gy"], base["alpha_per_gy"], rtol=1e-12)
    expected = 40.0 / (recs["alpha_per_gy"] + BETA_PER_GY2 * 2.2)
    np.testing.assert_allclose(recs["dose_for_target_gard_gy"], expected, rtol=1e-9)
    np.testing.assert_allclose(recs["gard"], 30 * 2.2 * (recs["alpha_per_gy"] + BETA_PER_GY2 * 2.2), rtol=1e-9)
    assert (recs["input_sha256"] != base["input_sha256"]).all()       # the regimen is part of the inputs


def test_input_hashes_differ_between_patients_and_are_stable_on_a_rerun(pipe: Pipeline) -> None:
    pipe.ok("predict_csv")
    recs = json_records(pipe)
    csv = pd.read_csv(pipe.work / "pred" / "P.csv", dtype={"input_sha256": str, "patient_id": str})
    assert recs["input_sha256"].is_unique
    again = csv.set_index("patient_id")["input_sha256"]
    assert (again.loc[recs.index] == recs["input_sha256"]).all()
    # CSV / JSON carry the same records (toxicity and flags as JSON strings in CSV)
    assert list(csv.columns) == list(RECORD_FIELDS)
    csv = csv.set_index("patient_id").loc[recs.index]
    assert csv["flags"].map(json.loads).tolist() == recs["flags"].tolist()
    assert csv["toxicity"].map(json.loads).tolist() == recs["toxicity"].tolist()
    for col in ("rsi", "rsi_lower", "rsi_upper", "alpha_per_gy", "gard", "recommended_total_dose_gy",
                "dose_for_target_gard_lower_gy", "dose_for_target_gard_upper_gy"):
        np.testing.assert_allclose(csv[col].to_numpy(float), recs[col].to_numpy(float), rtol=1e-12, err_msg=col)


def test_predict_reports_the_broken_patient(pipe: Pipeline) -> None:
    pipe.ok("predict_json")
    broken, file = pipe.external.broken_patient, pipe.external.broken_file
    assert broken and file
    feature_failures = pd.read_csv(pipe.work / "pred" / "P.features.failures.csv", dtype=str)
    assert set(feature_failures["patient_id"]) == {broken}        # the extraction names it already
    assert feature_failures["reason"].str.contains(Path(file).name, regex=False).all()
    failures = pd.read_csv(pipe.work / "pred" / "P.failures.csv", dtype=str)
    recs = json_records(pipe)
    listed = broken in set(failures["patient_id"])
    flagged = broken in recs.index and "missing_imaging" in recs.loc[broken, "flags"]
    assert listed or flagged, (failures, recs.loc[broken, "flags"] if broken in recs.index else None)
    assert set(recs.index) | set(failures["patient_id"]) == set(pipe.external.truth["patient_id"])


# ---------------------------------------------------------------------------------------------------------
# 5. the same records from a fresh process through MLflow alone
# ---------------------------------------------------------------------------------------------------------

def test_fresh_process_pyfunc_returns_the_same_records(pipe: Pipeline) -> None:
    pipe.ok("mlflow:fresh")
    recs = json_records(pipe)
    fresh = pd.DataFrame(pipe.fresh["records"]).set_index("patient_id", drop=False)
    assert sorted(fresh.index) == sorted(recs.index)
    assert list(fresh.columns) == list(RECORD_FIELDS)
    fresh = fresh.loc[recs.index]
    for col in RECORD_FIELDS:
        if col in ("created_at", "input_sha256", "notes"):
            # `predict` checks the OAR limits on the cohort's DVHs, the plain pyfunc on the table's dose.* summaries
            # (docs/safety.md): the DVHs are part of the hashed inputs, the notes say which source was used
            continue
        a, b = fresh[col].tolist(), recs[col].tolist()
        if col == "oar_checks":
            for x, y in zip(a, b, strict=True):
                # the DVH keeps the cohort's name (Parotid_L), the dose.* column its slug (parotid_l)
                assert [(c["structure"].lower(), c["metric"], c["status"]) for c in x] == [
                    (c["structure"].lower(), c["metric"], c["status"]) for c in y], col
                assert [c["value_gy"] for c in x] == pytest.approx([c["value_gy"] for c in y], rel=1e-3), col
            continue
        if col in ("toxicity",):
            assert [x["xerostomia_grade_ge2"] for x in a] == pytest.approx([x["xerostomia_grade_ge2"] for x in b],
                                                                           rel=1e-12), col
        elif isinstance(b[0], float):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12, err_msg=col)
        else:
            assert a == b, col


def test_record_toxicity_is_the_toxicity_model_at_the_recommended_dose(pipe: Pipeline) -> None:
    """Contract §2: toxicity is P(grade >= 2) at the recommended regimen: the registered toxicity model agrees."""
    pipe.ok("mlflow:fresh")
    recs = json_records(pipe)
    tox_at = pipe.fresh["tox_at"]
    assert len(tox_at) >= 3
    for pid, p in tox_at.items():
        assert recs.loc[pid, "toxicity"]["xerostomia_grade_ge2"] == pytest.approx(p, rel=1e-9), pid


# ---------------------------------------------------------------------------------------------------------
# 6. learnability on the external cohort (patients never trained on)
# ---------------------------------------------------------------------------------------------------------

def test_imaging_rsi_surrogate_ranks_patients_without_expression(pipe: Pipeline) -> None:
    """Spearman(predicted RSI, true RSI) over the external patients whose RSI comes from imaging.

    Signal: tumour SUV and HU are linear in (RSI - 0.35) / 0.15 plus N(0, 0.35) noise, so the best imaging
    predictor correlates about 0.94 with the true RSI; a learnt ridge on ~40 patients and ~500 columns loses some
    of that. Threshold 0.3: with n ~ 30 the null SD of Spearman is 1/sqrt(n - 1) ~ 0.19, so 0.3 rejects no signal
    only weakly, but a working model (rho >= 0.6) falls below 0.3 with probability ~2 % (Fisher z), and
    everything is seeded.
    """
    recs = json_records(pipe)
    truth = pipe.external.truth.set_index("patient_id")
    no_expr = truth.index[~truth["has_expression"] & truth.index.isin(recs.index)]
    assert len(no_expr) >= 25
    rho = stats.spearmanr(recs.loc[no_expr, "rsi"], truth.loc[no_expr, "true_rsi"]).statistic
    LOG.info("external imaging-only RSI: Spearman %.3f on %d patients", rho, len(no_expr))
    assert rho > 0.3


def test_conformal_rsi_intervals_cover_the_true_rsi(pipe: Pipeline) -> None:
    """90 % intervals on external patients without measured RSI.

    Tolerance: CV+ guarantees coverage >= 1 - 2 alpha = 0.8 and is usually near 1 - alpha = 0.9 (Barber et al.,
    Ann Stat 2021;49:486). Lower limit: the 1 % quantile of Binomial(n, 0.9) / n (about 0.77 at n = 30). No upper
    limit: P(all 30 covered | 0.9) = 4 %, so 100 % coverage cannot be rejected at this n; instead the intervals
    must be informative, narrower on average than the true RSI's own 5-95 % range in the cohort.
    """
    recs = json_records(pipe)
    truth = pipe.external.truth.set_index("patient_id")
    no_expr = truth.index[~truth["has_expression"] & truth.index.isin(recs.index)]
    r, y = recs.loc[no_expr], truth.loc[no_expr, "true_rsi"]
    covered = ((y >= r["rsi_lower"]) & (y <= r["rsi_upper"])).to_numpy()
    n = covered.size
    lower = stats.binom.ppf(0.01, n, 0.9) / n
    width = float((r["rsi_upper"] - r["rsi_lower"]).mean())
    spread = float(np.subtract(*np.percentile(truth["true_rsi"], [95, 5])))
    LOG.info("external 90 %% RSI intervals: coverage %.3f (n %d, lower limit %.3f), mean width %.3f, true RSI "
             "5-95 %% range %.3f", covered.mean(), n, lower, width, spread)
    assert covered.mean() >= lower
    assert width < spread


def test_xerostomia_model_discriminates_on_the_external_cohort(pipe: Pipeline) -> None:
    """AUC of the registered toxicity model (delivered plan) against the simulated grade >= 2, Mann-Whitney.

    Signal: P = expit((mean parotid dose - 38 Gy) / 4 Gy) with doses spread 20-60 Gy, so the true probability
    alone has AUC ~0.9; > 0.6 leaves room for a 48-patient fit, and 40 external patients (SD of AUC ~0.08).
    """
    pipe.ok("mlflow:fresh")
    truth = pipe.external.truth.set_index("patient_id")
    assert pipe.fresh["tox_columns"] == ["xerostomia_grade_ge2"]
    p = pd.Series(pipe.fresh["tox_delivered"]).loc[truth.index].to_numpy(float)
    y = truth["xerostomia_ge2"].to_numpy()
    assert 5 <= y.sum() <= len(y) - 5
    auc = auc_mann_whitney(p, y)
    LOG.info("external xerostomia AUC %.3f (%d events / %d)", auc, int(y.sum()), len(y))
    assert auc > 0.6


# ---------------------------------------------------------------------------------------------------------
# 7. a second training run: challenger or promotion by the documented rule
# ---------------------------------------------------------------------------------------------------------

#: docs/registry.md, "Champion and challenger": calibration judged by its distance from these values
CALIBRATION_TARGET = {"calibration_slope": 1.0, "calibration_intercept": 0.0}


def worse_metrics(champion: dict[str, str], challenger: dict[str, str], skip: set[str] | None = None) -> list[str]:
    """docs/registry.md, "Champion and challenger": the ``heldout.*`` tags of the challenger that are worse
    (``skip``: tasks evaluated on other data, whose metrics are not compared)."""
    worse = []
    for key, value in challenger.items():
        if not key.startswith("heldout.") or key not in champion:
            continue
        if key.removeprefix("heldout.").rsplit(".", 1)[0] in (skip or set()):
            continue
        last = key.rsplit(".", 1)[-1]
        new, old = float(value), float(champion[key])
        if math.isnan(old):
            continue
        tol = TOLERANCE.get(last, 0.0)
        if last.startswith("coverage"):
            dist = [max(COVERAGE_BAND[0] - x, x - COVERAGE_BAND[1], 0.0) for x in (new, old)]
            bad = math.isnan(new) or dist[0] > dist[1] + tol
        elif last in CALIBRATION_TARGET:
            dist = [abs(x - CALIBRATION_TARGET[last]) for x in (new, old)]
            bad = math.isnan(new) or dist[0] > dist[1] + tol
        elif last in HIGHER_IS_BETTER:
            bad = math.isnan(new) or (new < old - tol if HIGHER_IS_BETTER[last] else new > old + tol)
        else:
            continue                    # other names are not compared
        if bad:
            worse.append(key.removeprefix("heldout."))
    return worse


def failed_clauses(champion: dict[str, str], challenger: dict[str, str]) -> list[str]:
    """docs/registry.md: what keeps one version from promotion (digests, endpoints, metrics, worse metrics)."""
    failed, other_data = [], set()
    for key, digest in champion.items():
        if key.startswith("evaluation_digest.") and challenger.get(key) != digest:
            other_data.add(key.removeprefix("evaluation_digest."))
            failed.append("different evaluation data for " + key.removeprefix("evaluation_digest."))
    if not any(k.startswith("evaluation_digest.") for k in champion):
        failed.append("evaluation data are unknown")
    missing = set(json.loads(champion.get("endpoints", "[]"))) - set(json.loads(challenger.get("endpoints", "[]")))
    failed += [f"endpoint {e}" for e in sorted(missing)]
    failed += [k.removeprefix("heldout.") for k in champion if k.startswith("heldout.") and k not in challenger]
    return failed + worse_metrics(champion, challenger, other_data)


def test_second_run_is_challenger_or_promoted_by_the_documented_rule(pipe: Pipeline) -> None:
    """The three models move as one unit (same decision for all); the second run used another fold seed, so its
    evaluation data differ (digest of patients, labels and outer folds) and nothing is promoted automatically."""
    pipe.ok("train2")
    pipe.ok("mlflow:registry2")
    run2 = pipe.registry_2["radiogenomics-prescriber"]["versions"]["2"]["run_id"]
    run_tags = pipe.registry_2["runs"][run2]["tags"]
    failed = {}
    for name in MODELS:
        versions = pipe.registry_2[name]["versions"]
        assert sorted(versions) == ["1", "2"], name
        failed[name] = failed_clauses(versions["1"]["tags"], versions["2"]["tags"])
        assert {k: v for k, v in versions["2"]["tags"].items() if k.startswith("unit.")} == {
            f"unit.{m}": "2" for m in MODELS}, name
    decision = "kept_champion" if any(failed.values()) else "promoted"
    assert decision == "kept_champion"  # seed 7 vs 2026: other outer folds
    assert all(any(c.startswith("different evaluation data") for c in clauses) for clauses in failed.values())
    decisions = {}
    for name in MODELS:
        v1, v2 = pipe.registry_2[name]["versions"]["1"], pipe.registry_2[name]["versions"]["2"]
        decisions[name] = v2["tags"]["promotion_decision"]
        assert v2["tags"]["promotion_decision"] == decision, (name, v1["tags"], v2["tags"])
        for clause in failed[name]:
            assert clause.split()[-1] in v2["tags"]["promotion_reason"], (clause, v2["tags"]["promotion_reason"])
        assert run_tags[f"registry.{name}.version"] == "2"
        assert run_tags[f"registry.{name}.decision"] == decision
        if decision == "promoted":
            assert v2["aliases"] == ["champion"] and v1["aliases"] == [], name
        else:
            assert v2["aliases"] == ["challenger"] and v1["aliases"] == ["champion"], name
    LOG.info("second run decisions: %s", decisions)
