"""Independent acceptance tests of the safety gate and fail-closed promotion (issue 15).

Written from the contract (../shared/brief/contract.md: §1 cohort, §2 the prescription record and **the safety
gate**, §3 CLI, §4 registry and promotion, §6 REST API, §7 hand-off) and the user docs (README.md, docs/cli.md,
docs/cohort-format.md, docs/features.md, docs/serving.md, docs/registry.md, docs/radiobiology.md), never from the
implementation. The package is used as a user would: the command line in subprocesses, the MLflow pyfunc in a
fresh interpreter, the REST API over real HTTP, ``MlflowClient`` for the registry, and the documented public
``radiogenomics.radiobiology.load_rails()`` for the site rails.

One module-scoped stack: a head-and-neck training cohort written by ``tests/safety_simulator.py`` (24 patients,
CT + GTV, expression, dvh.csv with GTV, parotids and spinal cord, xerostomia grades; 1.8-2.2 Gy per fraction)
-> ``extract`` -> ``train`` (examples/train-quick.yaml's settings, RSI + toxicity only) -> champion; a cohort of
new patients (one per safety case) -> ``predict`` (twice) and ``handoff``; ``token create``; ``serve`` on a free
loopback port; one fresh-process pyfunc run over every pyfunc case. The promotion tests (§4) train twice more
(toxicity disabled; another cohort) and run ``promote``; they and the audit test come last because they change
the registry and may rate-limit the client.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import pickle
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from safety_simulator import PatientSpec, training_specs, write_cohort

pytestmark = pytest.mark.slow

PRESCRIBER = "radiogenomics-prescriber"
RADIOSENSITIVITY = "radiogenomics-radiosensitivity"
TOXICITY = "radiogenomics-toxicity"
MODELS = (RADIOSENSITIVITY, TOXICITY, PRESCRIBER)
CHAMPION_URI = f"models:/{PRESCRIBER}@champion"

# Contract §2, every field (the table's order).
RECORD_FIELDS = (
    "patient_id", "model_name", "model_version", "model_uri", "rsi", "rsi_lower", "rsi_upper", "alpha_per_gy",
    "beta_per_gy2", "alpha_beta_gy", "dose_per_fraction_gy", "n_fractions", "gard", "target_gard",
    "dose_for_target_gard_gy", "recommended_total_dose_gy", "toxicity", "recommended_n_fractions",
    "recommended_dose_per_fraction_gy", "dose_for_target_gard_lower_gy", "dose_for_target_gard_upper_gy", "site",
    "regimen_source", "rsi_source", "oar_checks", "flags", "input_sha256", "created_at",
)
CONTRACT_FLAGS = {
    "out_of_distribution", "clipped_max", "clipped_min", "population_fallback", "missing_genomics",
    "missing_imaging", "unrecognised_structure", "site_not_in_training", "implausible_parameter", "oar_limited",
    "oar_limit_exceeded", "oar_soft_limit_exceeded", "oar_unchecked", "regimen_outside_training",
    "toxicity_unavailable",
}
SITES = ("head_neck", "lung", "breast", "prostate", "other")
REGIMEN_SOURCES = {"patient", "request", "default"}
RSI_SOURCES = {"measured", "predicted", "predicted_without_images", "population"}
OAR_CHECK_KEYS = ("structure", "metric", "limit_gy", "value_gy", "hard", "status")
OAR_STATUSES = {"ok", "limited", "exceeded", "unchecked"}
# docs/radiobiology.md "Safety rails" (QUANTEC): spinal cord Dmax 50 Gy (Kirkpatrick 2010), brainstem Dmax 54 Gy
# (Mayo 2010), parotid mean 25 Gy (Deasy 2010); conventional fractionation.
CORD_DMAX_GY = 50.0
BRAINSTEM_DMAX_GY = 54.0
# Plausible alpha/beta of a serial organ: the cord's is usually quoted as ~2 Gy; the tests accept any value in
# [0.5, inf) (inf = no fractionation correction) where only a bracket can be checked.
LOWEST_PLAUSIBLE_OAR_AB_GY = 0.5
# README "Unverified defaults": the measurement SD of an expression-derived RSI (0.05); a 90 % interval.
MEASURED_RSI_SD = 0.05
Z90 = 1.6448536269514722
BETA_PER_GY2 = 0.05

TRAIN_YAML = """\
# examples/train-quick.yaml's settings, shrunk: 2 x 2 folds, 2 trials, the fastest candidates, RSI + toxicity
cv: {outer_folds: 2, inner_folds: 2}
search: {n_trials: 2}
tasks:
  radiosensitivity: {candidates: [ridge]}
  toxicity: {candidates: [logistic]}
  outcome_alpha: {enabled: false}
  survival: {enabled: false}
"""
TRAIN_NO_TOX_YAML = TRAIN_YAML.replace("toxicity: {candidates: [logistic]}", "toxicity: {enabled: false}")

# The new patients, one per safety case. All borrow the CT and GTV of the training cohort's most central patient
# (so their imaging is inside the training domain) and have the expression (measured RSI) given here.
NEW_PATIENTS: dict[str, dict[str, Any]] = {
    # spinal cord max = 82 % of the planned 70 Gy, from a DOSE grid (masks for the OARs): a hard limit binds
    "NEW-OAR": {"dose": "grid", "cord_fraction": 0.82, "parotid_fraction": 0.2, "rsi_target": 0.5},
    # parotid means 62 % of Rx: above the QUANTEC mean-dose rule, a soft limit that never lowers the tumour dose
    "NEW-PAR": {"cord_fraction": 0.4, "parotid_fraction": 0.62, "rsi_target": 0.5},
    # parotid means 42 % of Rx: toxicity in its sensitive range for the fractionation comparison
    "NEW-TOX": {"cord_fraction": 0.4, "parotid_fraction": 0.42, "rsi_target": 0.5},
    # the patient's own regimen: 30 x 2 Gy
    "NEW-REG": {"total_dose_gy": 60.0, "n_fractions": 30, "cord_fraction": 0.4, "parotid_fraction": 0.25,
                "rsi_target": 0.4},
    # no dose distribution and no regimen of its own
    "NEW-NODOSE": {"dose": None, "total_dose_gy": None, "n_fractions": None, "rsi_target": 0.4},
    # a measured RSI near 0.77: the upper end of its 90 % assay interval lies beyond the LQ domain (RSI < e^-0.2)
    "NEW-HIRSI": {"cord_fraction": 0.4, "parotid_fraction": 0.25, "rsi_target": 0.77},
    # a site the head-and-neck model was not trained on
    "NEW-PROST": {"site": "prostate", "cord_fraction": 0.3, "parotid_fraction": 0.1, "rsi_target": 0.4},
    # cord max = 95 % of Rx: even the site's minimum (60 Gy) breaks the cord's hard limit
    "NEW-CORD95": {"cord_fraction": 0.95, "parotid_fraction": 0.2, "rsi_target": 0.5},
}

# Run in a fresh interpreter: loads the champion once and predicts every case; errors are reported, not raised.
PYFUNC_SCRIPT = r'''
import json, math, pickle, sys
import mlflow

cases = pickle.load(open(sys.argv[1], "rb"))
model = mlflow.pyfunc.load_model("models:/radiogenomics-prescriber@champion")

def plain(v):
    if v is None or type(v).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v

out = {}
for name, frame in cases.items():
    try:
        recs = model.predict(frame)
        if hasattr(recs, "to_dict"):
            recs = recs.to_dict(orient="records")
        out[name] = {"records": [{str(k): plain(v) for k, v in r.items()} for r in recs]}
    except Exception as exc:  # the tests judge the exception
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}
with open(sys.argv[2], "w") as f:
    json.dump(out, f, default=str)
'''


# ---------------------------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Everything the module fixture built and ran, for the tests to read."""

    work: Path
    env: dict[str, str]
    tracking_uri: str
    train_specs: list[PatientSpec]
    train_features: pd.DataFrame
    new_features: pd.DataFrame                    # the new patients, reindexed to the model's schema by predict
    cli: dict[str, subprocess.CompletedProcess[str]]
    cli_records: dict[str, dict[str, Any]]        # predict, default regimen
    cli_request_records: dict[str, dict[str, Any]]  # predict --n-fractions 35 --dose-per-fraction-gy 2.0
    pyfunc: dict[str, Any]
    base_url: str
    token: str
    audit_db: Path
    champion_versions: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
        """``python -m radiogenomics ARGS`` in the work folder (the result is returned, never asserted)."""
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "radiogenomics", *args], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=timeout_s)
        self.seconds[" ".join(args[:2])] = time.perf_counter() - start
        return proc


def _run(work: Path, env: Mapping[str, str], *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "radiogenomics", *args], cwd=work, env=dict(env),
                          capture_output=True, text=True, timeout=timeout_s)


def _ok(proc: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"harness step {what} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"serve did not answer /health within {timeout_s} s: {log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=20)


def _central_patient(features: pd.DataFrame) -> str:
    """The training patient whose largest robust z-score over the numeric CT features is smallest."""
    cols = [c for c in features.columns if c.startswith("ct.") and pd.api.types.is_numeric_dtype(features[c])]
    x = features[cols].astype(float)
    scale = np.maximum((x.quantile(0.75) - x.quantile(0.25)) / 1.349, x.std()).replace(0.0, np.nan)
    z = ((x - x.median()).abs() / scale).max(axis=1, skipna=True)
    return str(features.loc[z.idxmin(), "patient_id"])


def _new_specs(anchor: PatientSpec) -> list[PatientSpec]:
    return [PatientSpec(patient_id=pid, center=anchor.center, age_years=60.0, sex="M", hpv="neg", t_stage="T2",
                        image_seed=anchor.image_seed, signal=anchor.signal, **params)
            for pid, params in NEW_PATIENTS.items()]


def _records_by_id(payload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(r["patient_id"]): _norm(r) for r in payload.get("records", [])}


def _champions(tracking_uri: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    out = {}
    for name in MODELS:
        try:
            out[name] = str(client.get_model_version_by_alias(name, "champion").version)
        except Exception:  # no champion: the tests say so
            out[name] = ""
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    t0 = time.perf_counter()
    work = tmp_path_factory.mktemp("acceptance_safety")
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RADIOGENOMICS_"))}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_REGISTRY_URI=tracking_uri, PYTHONUNBUFFERED="1",
               RADIOGENOMICS_CACHE_DIR=str(work / "cache"))
    seconds: dict[str, float] = {}

    def step(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        start = time.perf_counter()
        proc = _run(work, env, *args)
        seconds[name] = time.perf_counter() - start
        return proc

    specs = training_specs(24, seed=1, prefix="TRA")
    write_cohort(work / "train_cohort", specs, name="safety training cohort")
    (work / "train.yaml").write_text(TRAIN_YAML)
    _ok(step("extract", "extract", "train_cohort", "--out", "train.parquet", "--workers", "2", "--no-progress"),
        "extract")
    _ok(step("train", "train", "train_cohort", "--features", "train.parquet", "--config", "train.yaml",
             "--out", "training"), "train")
    train_features = pd.read_parquet(work / "train.parquet")
    anchor_id = _central_patient(train_features)
    anchor = next(s for s in specs if s.patient_id == anchor_id)
    write_cohort(work / "new_cohort", _new_specs(anchor), name="safety new patients")
    bad_age = PatientSpec("BAD-AGE", age_years=5000.0, image_seed=anchor.image_seed, signal=anchor.signal,
                          rsi_target=0.4)
    write_cohort(work / "bad_age_cohort", [bad_age], name="impossible age")

    cli: dict[str, subprocess.CompletedProcess[str]] = {}
    cli["predict"] = step("predict", "predict", "new_cohort", "--model", CHAMPION_URI, "--out", "rx.json",
                          "--workers", "1")
    _ok(cli["predict"], "predict new_cohort")
    cli["predict_request"] = step("predict_request", "predict", "new_cohort", "--model", CHAMPION_URI,
                                  "--out", "rx_request.json", "--workers", "1", "--n-fractions", "35",
                                  "--dose-per-fraction-gy", "2.0")
    cli["handoff"] = step("handoff", "handoff", "--model", CHAMPION_URI, "--features", "rx.features.parquet",
                          "--out", "handoff", "--cohort", "new_cohort")
    cli["bad_age"] = step("bad_age", "predict", "bad_age_cohort", "--model", CHAMPION_URI, "--out", "bad_age.json",
                          "--workers", "1")
    cli["zero_fractions"] = step("zero_fractions", "predict", "new_cohort", "--model", CHAMPION_URI,
                                 "--out", "zero.json", "--workers", "1", "--n-fractions", "0",
                                 "--dose-per-fraction-gy", "2.0")
    cli["negative_dose"] = step("negative_dose", "predict", "new_cohort", "--model", CHAMPION_URI,
                                "--out", "negative.json", "--workers", "1", "--n-fractions", "35",
                                "--dose-per-fraction-gy=-2.0")
    new_features = pd.read_parquet(work / "rx.features.parquet")
    cli_records = _records_by_id(json.loads((work / "rx.json").read_text()))
    rx_request = work / "rx_request.json"
    cli_request_records = _records_by_id(json.loads(rx_request.read_text())) if rx_request.is_file() else {}

    # the pyfunc, in a fresh process, over every case at once
    cases = _pyfunc_cases(new_features)
    with (work / "pyfunc_cases.pkl").open("wb") as f:
        pickle.dump(cases, f)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PYFUNC_SCRIPT, "pyfunc_cases.pkl", "pyfunc.json"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    seconds["pyfunc"] = time.perf_counter() - start
    assert proc.returncode == 0, f"pyfunc script failed:\n{proc.stderr[-4000:]}"
    pyfunc = json.loads((work / "pyfunc.json").read_text())

    token = _ok(step("token", "token", "create", "safety-acceptance", "--tokens", "tokens.yaml"),
                "token create").stdout.strip()
    port = _free_port()
    audit_db = work / "audit.sqlite"
    log = work / "serve.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "radiogenomics", "serve", "--model", CHAMPION_URI, "--tokens", "tokens.yaml",
             "--features", "rx.features.parquet", "--audit-db", str(audit_db), "--host", "127.0.0.1",
             "--port", str(port), "--reload-interval-s", "1"],
            cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, server, log)
        seconds["stack"] = time.perf_counter() - t0
        yield Stack(work=work, env=env, tracking_uri=tracking_uri, train_specs=specs, train_features=train_features,
                    new_features=new_features, cli=cli, cli_records=cli_records,
                    cli_request_records=cli_request_records, pyfunc=pyfunc, base_url=base_url, token=token,
                    audit_db=audit_db, champion_versions=_champions(tracking_uri), seconds=seconds)
    finally:
        _stop(server)
        print(f"\nsafety acceptance: step seconds {json.dumps({k: round(v, 1) for k, v in seconds.items()})}, "
              f"module wall {time.perf_counter() - t0:.0f} s")


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.token}"},
                      timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def rails() -> Any:
    from radiogenomics.radiobiology import load_rails  # documented public API (docs/radiobiology.md)

    return load_rails()


# ---------------------------------------------------------------------------------------------- cases


def _row(features: pd.DataFrame, patient_id: str) -> pd.DataFrame:
    return features[features["patient_id"] == patient_id].reset_index(drop=True).copy()


def _large_tumour(frame: pd.DataFrame) -> pd.DataFrame:
    """A ~100 cc GTV (possible, but 40x the training cohort's largest) without genomics: RSI from imaging."""
    out = frame.copy()
    for col in ("ct.gtv.original_shape_VoxelVolume", "ct.gtv.original_shape_MeshVolume"):
        out[col] = 100_000.0
    for col in [c for c in out.columns if c.startswith("genomic.")]:
        out[col] = np.nan
    if "available.genomic" in out.columns:
        out["available.genomic"] = out["available.genomic"].astype("int8") * 0
    return out


# case -> (patient, n_fractions, dose_per_fraction_gy) of an explicit regimen (pyfunc columns / REST `regimen`)
REGIMEN_CASES = {
    "oar_1.8": ("NEW-OAR", 39, 1.8), "oar_2.0": ("NEW-OAR", 35, 2.0), "oar_2.4": ("NEW-OAR", 29, 2.4),
    "tox_1.9": ("NEW-TOX", 42, 1.9), "tox_2.15": ("NEW-TOX", 37, 2.15), "tox_2.4": ("NEW-TOX", 29, 2.4),
    "reg_33": ("NEW-REG", 33, 2.0),
}
BRAINSTEM_SHARE = 0.9   # brainstem max / planned prescription in the brainstem cases


def _with_brainstem(frame: pd.DataFrame) -> pd.DataFrame:
    """dose.brainstem.* columns (a structure the training cohort did not have) at 90 % of the planned Rx."""
    out = frame.copy()
    planned = float(out["clinical.total_dose_gy"].iloc[0])
    for metric in ("max_gy", "mean_gy", "d2_gy"):
        out[f"dose.brainstem.{metric}"] = round(BRAINSTEM_SHARE * planned, 3)
    return out


def _pyfunc_cases(new: pd.DataFrame) -> dict[str, pd.DataFrame]:
    reg = _row(new, "NEW-REG")
    cases: dict[str, pd.DataFrame] = {"cohort": new.copy(), "empty": pd.DataFrame({"patient_id": ["EMPTY-1"]})}
    age = reg.copy()
    age["clinical.age_years"] = 5000.0
    cases["age_5000"] = age
    neg = reg.copy()
    neg["dose.parotid_l.mean_gy"] = -5.0
    cases["negative_dose"] = neg
    zero = reg.copy()
    zero["clinical.n_fractions"] = zero["clinical.n_fractions"] * 0
    cases["zero_fractions"] = zero
    misspelt = reg.rename(columns={"genomic.rsi": "genomic.RSI"})
    cases["misspelt"] = misspelt
    for site in ("prostate", "lung"):
        foreign = reg.copy()
        foreign["clinical.site"] = site
        cases[f"site_{site}"] = foreign
    implausible = reg.copy()
    implausible["genomic.rsi"] = 0.003
    cases["rsi_0003"] = implausible
    cases["large_tumour"] = _large_tumour(reg)
    # §4: optional regimen columns n_fractions, dose_per_fraction_gy beside the features
    for case, (patient_id, n, d) in REGIMEN_CASES.items():
        frame = _row(new, patient_id)
        frame["n_fractions"] = n
        frame["dose_per_fraction_gy"] = d
        cases[case] = frame
    cases["brainstem"] = _with_brainstem(reg)
    return cases


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _features(frame: pd.DataFrame) -> dict[str, Any]:
    """One row as the §6 `features` object: every non-missing column but patient_id and outcome.*."""
    (row,) = frame.to_dict(orient="records")
    out = {}
    for col, value in row.items():
        if col == "patient_id" or str(col).startswith("outcome."):
            continue
        cell = _plain(value)
        if cell is not None:
            out[str(col)] = cell
    return out


def _norm(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record from any route as plain JSON values (JSON-string columns of CSV/Parquet decoded, NaN -> None)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("toxicity", "flags", "oar_checks") and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if isinstance(value, dict):
            value = {k: _plain(v) for k, v in value.items()}
        elif isinstance(value, list):
            value = [{k: _plain(v) for k, v in x.items()} if isinstance(x, dict) else _plain(x) for x in value]
        else:
            value = _plain(value)
        out[key] = value
    return out


def _post(client: httpx.Client, patient_id: str, features: Mapping[str, Any], **extra: Any) -> httpx.Response:
    return client.post("/v1/prescriptions", json={"patients": [{"patient_id": patient_id, "features": dict(features)}],
                                                  **extra})


def _rest_record(client: httpx.Client, patient_id: str, features: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    response = _post(client, patient_id, features, **extra)
    assert response.status_code == 200, (f"§6: POST /v1/prescriptions for {patient_id} answered "
                                         f"{response.status_code}: {response.text[:1500]}")
    (record,) = response.json()["records"]
    return _norm(record)


def _pyfunc_record(stack: Stack, case: str, patient_id: str | None = None) -> dict[str, Any]:
    result = stack.pyfunc[case]
    assert "records" in result, f"§4: the champion pyfunc raised on case {case!r}: {result.get('error')}"
    records = result["records"]
    if patient_id is None:
        (record,) = records
        return _norm(record)
    matches = [r for r in records if r.get("patient_id") == patient_id]
    assert len(matches) == 1, f"pyfunc case {case!r}: no single record for {patient_id}"
    return _norm(matches[0])


def _regimen_records(stack: Stack, client: httpx.Client, case: str) -> dict[str, dict[str, Any]]:
    """The same patient and explicit regimen through the pyfunc (regimen columns) and REST (`regimen`)."""
    patient_id, n, d = REGIMEN_CASES[case]
    features = _features(_row(stack.new_features, patient_id))
    rest = _rest_record(client, patient_id, features, regimen={"n_fractions": n, "dose_per_fraction_gy": d})
    return {f"pyfunc {patient_id} {n} x {d} Gy": _pyfunc_record(stack, case),
            f"REST {patient_id} {n} x {d} Gy": rest}


def _cli_record(stack: Stack, patient_id: str) -> dict[str, Any]:
    assert patient_id in stack.cli_records, (
        f"§3: predict wrote no record for {patient_id}; failures: "
        f"{(stack.work / 'rx.failures.csv').read_text() if (stack.work / 'rx.failures.csv').is_file() else '-'}")
    return stack.cli_records[patient_id]


# ---------------------------------------------------------------------------------------------- checks


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_record(record: Mapping[str, Any], where: str, rails: Any) -> None:
    """Every §2 field, the contract's vocabularies, and n x d = total within the site's rails."""
    missing = [f for f in RECORD_FIELDS if f not in record]
    assert not missing, f"§2: {where}: the record lacks {missing}"
    flags = record["flags"]
    assert isinstance(flags, list) and set(flags) <= CONTRACT_FLAGS, f"§2: {where}: flags {flags} not all contract"
    assert record["regimen_source"] in REGIMEN_SOURCES, f"§2: {where}: regimen_source {record['regimen_source']!r}"
    assert record["rsi_source"] in RSI_SOURCES, f"§2: {where}: rsi_source {record['rsi_source']!r}"
    assert record["site"] in SITES, f"§2: {where}: site {record['site']!r}"
    checks = record["oar_checks"]
    assert isinstance(checks, list), f"§2: {where}: oar_checks must be a list, got {checks!r}"
    for check in checks:
        assert isinstance(check, dict) and set(OAR_CHECK_KEYS) <= set(check), (
            f"§2: {where}: oar_checks entry {check!r} lacks some of {OAR_CHECK_KEYS}")
        assert check["status"] in OAR_STATUSES and isinstance(check["hard"], bool), f"§2: {where}: {check!r}"
    toxicity = record["toxicity"]
    assert isinstance(toxicity, dict), f"§2: {where}: toxicity must be an object, got {toxicity!r}"
    assert all(p is None or (_is_number(p) and 0.0 <= p <= 1.0) for p in toxicity.values()), f"{where}: {toxicity}"
    total, n, d = (record["recommended_total_dose_gy"], record["recommended_n_fractions"],
                   record["recommended_dose_per_fraction_gy"])
    if total is None:
        assert n is None and d is None, f"§2: {where}: no recommended dose but a regimen {n} x {d}"
        return
    assert _is_number(total) and _is_number(d) and _is_number(n) and float(n).is_integer() and n > 0, (
        f"§2: {where}: recommended regimen {n} x {d} = {total}")
    assert n * d == pytest.approx(total, rel=1e-6), f"§2: {where}: {n} x {d} != {total} (n x d must equal the total)"
    site = rails.site(record["site"])
    assert site.min_total_dose_gy - 1e-6 <= total <= site.max_total_dose_gy + 1e-6, (
        f"§2 safety gate: {where}: {total} Gy outside the {record['site']} rails "
        f"[{site.min_total_dose_gy}, {site.max_total_dose_gy}]")
    assert site.min_dose_per_fraction_gy - 1e-6 <= d <= site.max_dose_per_fraction_gy + 1e-6, (
        f"§2 safety gate: {where}: {d} Gy per fraction outside the {record['site']} rails")


def _eqd2(total_gy: float, n_fractions: float, alpha_beta_gy: float) -> float:
    """Fowler 1989 (docs/radiobiology.md): EQD2 = D (d + a/b) / (2 + a/b), d = D/n."""
    d = total_gy / n_fractions
    return total_gy * (d + alpha_beta_gy) / (2.0 + alpha_beta_gy)


def _letters(name: Any) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def _checks_for(record: Mapping[str, Any], organ: str) -> list[dict[str, Any]]:
    return [c for c in record.get("oar_checks") or [] if organ in _letters(c.get("structure"))]


#: docs/safety.md (the project's documented reading of §2 "fractionation accounted at the organ's alpha/beta"):
#: a rail limit L (QUANTEC, derived from conventionally fractionated plans, the target at about 2 Gy per
#: fraction) holds for an organ dose D in n fractions of a plan prescribing P when its equal-BED equivalent in the
#: same plan at 2 Gy per target fraction, D (a/b + D/n) / (a/b + 2 D/P), is at most L; cord a/b 2 Gy (the
#: tissue table). (Revised after the first run: the tester's own reading was EQD2 of the organ's own fractions;
#: the owner chose the conventional-plan reference, which equals the physical limit at 2 Gy per fraction.)
CORD_ALPHA_BETA_GY = 2.0


def _conventional(dose_gy: float, prescription_gy: float, n_fractions: float, alpha_beta_gy: float) -> float:
    return dose_gy * (alpha_beta_gy + dose_gy / n_fractions) / (alpha_beta_gy + 2.0 * dose_gy / prescription_gy)


def _assert_hard_limit_binds(record: Mapping[str, Any], share: float, limit_gy: float, organ: str, where: str) -> None:
    """The organ's max (``share`` x the recommended dose, scaled linearly), fractionation accounted at the organ's
    alpha/beta (docs/safety.md), meets ``limit_gy``, and the oar_checks entry says so (§2 safety gate)."""
    assert "oar_limited" in record["flags"], f"§2 safety gate: {where}: flags {record['flags']} lack oar_limited"
    total, n = record["recommended_total_dose_gy"], record["recommended_n_fractions"]
    assert _is_number(total) and _is_number(n), f"§2: {where}: no recommended dose ({total}, {n})"
    organ_max = share * total
    equivalent = _conventional(organ_max, total, n, CORD_ALPHA_BETA_GY)
    assert equivalent == pytest.approx(limit_gy, rel=3e-3), (
        f"§2 safety gate: {where}: the {organ} max scaled to {total:.2f} Gy in {n} fractions is {organ_max:.2f} Gy, "
        f"{equivalent:.2f} Gy on the rail's basis: a binding limit must sit at the hard limit {limit_gy} Gy")
    assert _eqd2(organ_max, n, LOWEST_PLAUSIBLE_OAR_AB_GY) <= limit_gy * (1 + 2e-3), (
        f"§2 safety gate: {where}: the {organ} exceeds {limit_gy} Gy EQD2 even at alpha/beta 0.5 Gy")
    entries = _checks_for(record, organ)
    assert entries, f"§2: {where}: no oar_checks entry for the {organ}: {record.get('oar_checks', '(field absent)')}"
    limited = [c for c in entries if c.get("hard") is True and c.get("status") == "limited"]
    assert limited, f"§2: {where}: the {organ} entries {entries} are not hard + limited"
    entry = limited[0]
    assert entry["limit_gy"] == pytest.approx(limit_gy, abs=1e-6), f"§2: {where}: {entry} (rails: {limit_gy} Gy)"
    assert _is_number(entry["value_gy"]) and entry["value_gy"] <= entry["limit_gy"] * (1 + 1e-3), (
        f"§2: {where}: {entry}: value above its limit after limiting")
    assert entry["value_gy"] >= entry["limit_gy"] * 0.99, f"§2: {where}: {entry}: a binding limit but value far below"


def _population_alpha(client: httpx.Client) -> float:
    record = _rest_record(client, "POP-REF", {})
    return float(record["alpha_per_gy"])


def _assert_site_defaults(record: Mapping[str, Any], site: Any, where: str, *, alpha_beta: bool) -> None:
    """A population fallback uses the site's standard regimen and (``alpha_beta``: for a site without training
    patients) its population alpha/beta (§2 gate), where the rails data (``load_rails().site(...)``) states them."""
    n_std, total_std = getattr(site, "standard_n_fractions", None), getattr(site, "standard_total_dose_gy", None)
    if record.get("regimen_source") == "default" and n_std is not None and total_std is not None:
        assert record["n_fractions"] == n_std and record["n_fractions"] * record["dose_per_fraction_gy"] == (
            pytest.approx(total_std, rel=1e-6)), (
            f"§2 gate: {where}: the site's standard regimen is {n_std} fractions, {total_std} Gy; the record uses "
            f"{record['n_fractions']} x {record['dose_per_fraction_gy']} Gy")
    ab = getattr(site, "population_alpha_beta_gy", None)
    if alpha_beta and ab is not None:
        assert record["alpha_beta_gy"] == pytest.approx(ab, rel=1e-6), (
            f"§2 gate: {where}: site-default alpha/beta {ab} Gy, the record has {record['alpha_beta_gy']}")


# ---------------------------------------------------------------------------------------------- 1 empty


def test_empty_patient_gets_the_population_fallback(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: no usable features -> population fallback, site-default LQ, the site's standard regimen."""
    rest = _rest_record(client, "EMPTY-1", {})
    pyfunc = _pyfunc_record(stack, "empty")
    for where, record in (("REST features {}", rest), ("pyfunc row with only patient_id", pyfunc)):
        assert "population_fallback" in record["flags"], f"§2 gate: {where}: flags {record['flags']}"
        assert record.get("rsi_source") == "population", f"§2 gate: {where}: rsi_source {record.get('rsi_source')}"
        assert record.get("regimen_source") == "default", (
            f"§2 gate: {where}: the site's standard regimen (default); got {record.get('regimen_source')}")
        assert record.get("site") == "head_neck", f"§2: {where}: site {record.get('site')} (the model's site)"
        assert "oar_unchecked" in record["flags"], f"§2 gate: {where}: no dose distribution -> oar_unchecked"
        assert _is_number(record["recommended_total_dose_gy"]), f"{where}: the standard regimen has a dose"
        _assert_site_defaults(record, rails.site("head_neck"), where, alpha_beta=False)
        _check_record(record, where, rails)
    for key in ("rsi", "alpha_per_gy", "recommended_total_dose_gy", "recommended_n_fractions"):
        assert rest[key] == pytest.approx(pyfunc[key], rel=1e-9), (
            f"§2: the population record must not depend on the route: {key} REST {rest[key]} pyfunc {pyfunc[key]}")


# ---------------------------------------------------------------------------------------------- 2 foreign site


@pytest.mark.parametrize("site", ["prostate", "lung"])
def test_foreign_site_falls_back_within_that_sites_rails(stack: Stack, client: httpx.Client, rails: Any,
                                                         site: str) -> None:
    """§2 gate: a site not in training -> population_fallback + site_not_in_training, that site's rails."""
    features = _features(_row(stack.new_features, "NEW-REG"))
    features["clinical.site"] = site
    records = {"REST": _rest_record(client, f"SITE-{site}", features),
               "pyfunc": _pyfunc_record(stack, f"site_{site}")}
    if site == "prostate":
        records["CLI predict (patients.csv site prostate)"] = _cli_record(stack, "NEW-PROST")
    bounds = rails.site(site)
    for where, record in records.items():
        where = f"{where} ({site})"
        assert {"population_fallback", "site_not_in_training"} <= set(record["flags"]), (
            f"§2 gate: {where}: flags {record['flags']}")
        assert record.get("site") == site, f"§2: {where}: site {record.get('site')!r} must say which site"
        assert record.get("rsi_source") == "population", f"§2 gate: {where}: rsi_source {record.get('rsi_source')}"
        # §1 (the patient's own regimen in every record) and §2 (the fallback's standard regimen) leave this open
        assert record.get("regimen_source") in {"patient", "default"}, f"§2: {where}: {record.get('regimen_source')}"
        total = record["recommended_total_dose_gy"]
        assert _is_number(total) and bounds.min_total_dose_gy - 1e-6 <= total <= bounds.max_total_dose_gy + 1e-6, (
            f"§2 gate: {where}: {total} Gy outside the {site} rails")
        _assert_site_defaults(record, bounds, where, alpha_beta=True)
        _check_record(record, where, rails)


# ---------------------------------------------------------------------------------------------- 3 impossible


IMPOSSIBLE = {  # column -> an impossible value (docs/cohort-format.md: age 0..120, doses >= 0, 1..100 fractions)
    "clinical.age_years": 5000.0,
    "dose.parotid_l.mean_gy": -5.0,
    "clinical.n_fractions": 0,
}


@pytest.mark.parametrize("column", list(IMPOSSIBLE))
def test_impossible_value_is_refused_by_rest_and_pyfunc(stack: Stack, client: httpx.Client, column: str) -> None:
    """§2 gate / §6: impossible values are a 422 naming the field (REST) and an exception (pyfunc), never a record."""
    features = _features(_row(stack.new_features, "NEW-REG"))
    features[column] = IMPOSSIBLE[column]
    response = _post(client, "IMPOSSIBLE-1", features)
    assert response.status_code == 422, (
        f"§2/§6: {column}={IMPOSSIBLE[column]} must be 422, got {response.status_code}: {response.text[:800]}")
    assert column in response.text, f"§6: the 422 must name the field {column}: {response.text[:800]}"
    case = {"clinical.age_years": "age_5000", "dose.parotid_l.mean_gy": "negative_dose",
            "clinical.n_fractions": "zero_fractions"}[column]
    result = stack.pyfunc[case]
    assert "error" in result, f"§2 gate: the pyfunc returned a record for {column}={IMPOSSIBLE[column]}: {result}"
    assert column in result["error"], f"§2 gate: the pyfunc's exception must name {column}: {result['error']}"


def _one_line_reason(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_impossible_values_exit_2_on_the_command_line(stack: Stack) -> None:
    """§3: bad input exits 2 with a one-line reason on stderr, and writes no record."""
    bad_age = stack.cli["bad_age"]
    reason = _one_line_reason(bad_age)
    assert bad_age.returncode == 2, (
        f"§3 / §2 gate: predict on a cohort whose only patient is 5000 years old exited {bad_age.returncode} "
        f"(stderr tail: {bad_age.stderr[-600:]!r})")
    assert "age" in reason.lower(), f"§3: the one-line reason must name the field (age_years): {reason!r}"
    out = stack.work / "bad_age.json"
    assert not out.is_file() or not json.loads(out.read_text()).get("records"), "§2 gate: a record was written"
    for name in ("zero_fractions", "negative_dose"):
        proc = stack.cli[name]
        assert proc.returncode == 2, f"§3: predict with {name} exited {proc.returncode}: {proc.stderr[-600:]!r}"
        assert _one_line_reason(proc), f"§3: predict with {name}: no reason on stderr"


def test_values_outside_the_training_domain_fall_back(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: possible values outside the training domain -> out_of_distribution + population fallback."""
    frame = _large_tumour(_row(stack.new_features, "NEW-REG"))
    records = {"REST": _rest_record(client, "LARGE-1", _features(frame)),
               "pyfunc": _pyfunc_record(stack, "large_tumour")}
    for where, record in records.items():
        where = f"{where}: a 100 cc GTV (training: < 3 cc), no genomics"
        assert {"out_of_distribution", "population_fallback"} <= set(record["flags"]), (
            f"§2 gate: {where}: flags {record['flags']}")
        assert record.get("rsi_source") == "population", f"§2 gate: {where}: rsi_source {record.get('rsi_source')}"
        _check_record(record, where, rails)


# ---------------------------------------------------------------------------------------------- 4 OAR limits


def _share(stack: Stack, patient_id: str, structure: str) -> float:
    row = _row(stack.new_features, patient_id).iloc[0]
    return float(row[f"dose.{structure}.max_gy"]) / float(row["clinical.total_dose_gy"])


def test_oar_limited_patient_is_lowered_to_the_cord_limit(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: the cord max (82 % of the planned Rx) scaled to the recommended dose meets QUANTEC Dmax 50 Gy."""
    share = _share(stack, "NEW-OAR", "spinal_cord")
    assert share == pytest.approx(0.82, abs=0.005), f"harness: cord share {share} (dose grid)"
    features = _features(_row(stack.new_features, "NEW-OAR"))
    records = {"CLI predict (dose grid)": _cli_record(stack, "NEW-OAR"),
               "pyfunc": _pyfunc_record(stack, "cohort", "NEW-OAR"),
               "REST (dose.* columns)": _rest_record(client, "NEW-OAR", features)}
    for where, record in records.items():
        _assert_hard_limit_binds(record, share, CORD_DMAX_GY, "cord", where)
        _check_record(record, where, rails)


def test_cord_limit_accounts_for_the_dose_per_fraction(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: fractionation accounted at the cord's alpha/beta: more Gy per fraction -> a lower allowed total; at
    2.4 Gy per fraction the 82 % cord breaks its limit even at the site minimum (oar_limit_exceeded, kept there)."""
    share = _share(stack, "NEW-OAR", "spinal_cord")
    low, mid, high = (_regimen_records(stack, client, case) for case in ("oar_1.8", "oar_2.0", "oar_2.4"))
    minimum = rails.site("head_neck").min_total_dose_gy
    for (where_low, rec_low), (where_mid, rec_mid), (where_high, rec_high) in zip(
            low.items(), mid.items(), high.items(), strict=True):
        totals = {}
        for where, record in ((where_low, rec_low), (where_mid, rec_mid)):
            _assert_hard_limit_binds(record, share, CORD_DMAX_GY, "cord", where)
            totals[where] = record["recommended_total_dose_gy"]
        assert rec_low["recommended_total_dose_gy"] - rec_mid["recommended_total_dose_gy"] > 1.0, (
            f"§2 gate: the cord limit must be evaluated at the cord's alpha/beta: allowed totals {totals} should "
            "differ by more than 1 Gy between 1.8 and 2.0 Gy per fraction")
        assert "oar_limit_exceeded" in rec_high["flags"], f"§2 gate: {where_high}: flags {rec_high['flags']}"
        assert rec_high["recommended_total_dose_gy"] == pytest.approx(minimum), where_high
        for where, record in ((where_low, rec_low), (where_mid, rec_mid), (where_high, rec_high)):
            _check_record(record, where, rails)


def test_parotid_soft_limit_is_reported_not_applied(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: parallel organs never lower the tumour dose; oar_soft_limit_exceeded with the toxicity."""
    features = _features(_row(stack.new_features, "NEW-PAR"))
    records = {"CLI predict": _cli_record(stack, "NEW-PAR"), "pyfunc": _pyfunc_record(stack, "cohort", "NEW-PAR"),
               "REST": _rest_record(client, "NEW-PAR", features)}
    site = rails.site("head_neck")
    for where, record in records.items():
        assert "oar_soft_limit_exceeded" in record["flags"], f"§2 gate: {where}: flags {record['flags']}"
        assert "oar_limited" not in record["flags"], f"§2 gate: {where}: a soft limit lowered the dose"
        expected = min(max(record["dose_for_target_gard_gy"], site.min_total_dose_gy), site.max_total_dose_gy)
        assert record["recommended_total_dose_gy"] == pytest.approx(expected, rel=1e-6), (
            f"§2 gate: {where}: tumour dose {record['recommended_total_dose_gy']} lowered by a parotid "
            f"(GARD dose {record['dose_for_target_gard_gy']} within the site rails is {expected})")
        parotids = _checks_for(record, "parotid")
        assert parotids and all(c.get("hard") is False for c in parotids), f"§2: {where}: parotid entries {parotids}"
        assert any(c.get("status") == "exceeded" for c in parotids), f"§2: {where}: parotid entries {parotids}"
        assert record["toxicity"], f"§2 gate: {where}: soft limits are reported with the toxicity at that regimen"
        _check_record(record, where, rails)


def test_patient_without_dose_distribution_is_oar_unchecked(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: without a dose distribution: oar_unchecked (the planning stage checks them)."""
    features = _features(_row(stack.new_features, "NEW-NODOSE"))
    records = {"CLI predict": _cli_record(stack, "NEW-NODOSE"),
               "pyfunc": _pyfunc_record(stack, "cohort", "NEW-NODOSE"),
               "REST": _rest_record(client, "NEW-NODOSE", features)}
    for where, record in records.items():
        assert "oar_unchecked" in record["flags"], f"§2 gate: {where}: flags {record['flags']}"
        assert not {"oar_limited", "oar_limit_exceeded"} & set(record["flags"]), f"§2: {where}: {record['flags']}"
        _check_record(record, where, rails)
        assert all(c["status"] == "unchecked" for c in record["oar_checks"]), f"§2: {where}: {record['oar_checks']}"


def test_site_minimum_breaking_a_hard_limit_is_oar_limit_exceeded(stack: Stack, client: httpx.Client,
                                                                  rails: Any) -> None:
    """§2 gate: if the site's minimum dose already breaks a hard limit: oar_limit_exceeded (review first)."""
    features = _features(_row(stack.new_features, "NEW-CORD95"))
    records = {"CLI predict": _cli_record(stack, "NEW-CORD95"),
               "pyfunc": _pyfunc_record(stack, "cohort", "NEW-CORD95"),
               "REST": _rest_record(client, "NEW-CORD95", features)}
    for where, record in records.items():
        where = f"{where}: cord max 95 % of Rx (57 Gy at the 60 Gy site minimum)"
        assert "oar_limit_exceeded" in record["flags"], f"§2 gate: {where}: flags {record['flags']}"
        cord = [c for c in _checks_for(record, "cord") if c.get("hard") is True]
        assert cord and any(c.get("status") == "exceeded" for c in cord), f"§2: {where}: cord entries {cord}"
        _check_record(record, where, rails)


def test_dose_columns_of_unused_structures_are_gate_input(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: dose.* columns of structures the model does not use are accepted, and their limits apply."""
    where = "pyfunc with dose.brainstem.* at 90 % of Rx"
    record = _pyfunc_record(stack, "brainstem")
    _assert_hard_limit_binds(record, BRAINSTEM_SHARE, BRAINSTEM_DMAX_GY, "brainstem", where)
    _check_record(record, where, rails)
    features = _features(_with_brainstem(_row(stack.new_features, "NEW-REG")))
    response = _post(client, "BRAINSTEM-1", features)
    assert response.status_code == 200, (
        f"§2 gate: dose.brainstem.* (a structure the model was not trained on) must be accepted as gate input, "
        f"got {response.status_code}: {response.text[:600]}")
    (record,) = response.json()["records"]
    record = _norm(record)
    where = "REST with dose.brainstem.* at 90 % of Rx"
    _assert_hard_limit_binds(record, BRAINSTEM_SHARE, BRAINSTEM_DMAX_GY, "brainstem", where)
    _check_record(record, where, rails)


# ---------------------------------------------------------------------------------------------- 5 regimen


def test_patient_regimen_is_the_default_and_a_request_overrides_it(stack: Stack, client: httpx.Client,
                                                                   rails: Any) -> None:
    """§1/§2: the patient's own regimen (30 x 2 Gy) unless the user overrides it; regimen_source says which."""
    features = _features(_row(stack.new_features, "NEW-REG"))
    own = {"CLI predict": _cli_record(stack, "NEW-REG"), "pyfunc": _pyfunc_record(stack, "cohort", "NEW-REG"),
           "REST": _rest_record(client, "NEW-REG", features)}
    for where, record in own.items():
        assert record["n_fractions"] == 30 and record["dose_per_fraction_gy"] == pytest.approx(2.0), (
            f"§1: {where}: the patient's regimen is 30 x 2 Gy, the record uses "
            f"{record['n_fractions']} x {record['dose_per_fraction_gy']}")
        assert record.get("regimen_source") == "patient", f"§2: {where}: regimen_source {record.get('regimen_source')}"
        _check_record(record, where, rails)
    assert stack.cli["predict_request"].returncode == 0, stack.cli["predict_request"].stderr[-800:]
    requested = {"CLI predict --n-fractions 35 --dose-per-fraction-gy 2.0": stack.cli_request_records.get("NEW-REG"),
                 **_regimen_records(stack, client, "reg_33")}
    for where, maybe in requested.items():
        assert maybe is not None, f"§3: {where}: no record for NEW-REG"
        assert maybe["n_fractions"] == (35 if where.startswith("CLI") else 33), f"§2: {where}: {maybe['n_fractions']}"
        assert maybe.get("regimen_source") == "request", f"§2: {where}: regimen_source {maybe.get('regimen_source')}"
        _check_record(maybe, where, rails)
    default = _cli_record(stack, "NEW-NODOSE")
    assert default.get("regimen_source") == "default", (
        f"§2: a patient without a regimen gets the site's standard one (default), got {default.get('regimen_source')}")


# ---------------------------------------------------------------------------------------------- 6 toxicity


def test_toxicity_accounts_for_the_dose_per_fraction(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: toxicity at the recommended regimen uses EQD2: same total, more Gy per fraction -> more toxicity."""
    lows, highs = _regimen_records(stack, client, "tox_1.9"), _regimen_records(stack, client, "tox_2.15")
    for (where_low, low), (where_high, high) in zip(lows.items(), highs.items(), strict=True):
        for where, record in ((where_low, low), (where_high, high)):
            assert record["toxicity"], f"§2: {where}: the patient has parotid doses: toxicity expected, got {record}"
        assert low["recommended_total_dose_gy"] == pytest.approx(high["recommended_total_dose_gy"], rel=1e-6), (
            f"precondition: {where_low} and {where_high} are both clipped to the same total (80 Gy)")
        assert low["recommended_dose_per_fraction_gy"] < high["recommended_dose_per_fraction_gy"]
        assert set(low["toxicity"]) == set(high["toxicity"])
        for endpoint in low["toxicity"]:
            p_low, p_high = low["toxicity"][endpoint], high["toxicity"][endpoint]
            assert _is_number(p_low) and _is_number(p_high) and p_high > p_low + 1e-4, (
                f"§2 gate: {where_low} vs {where_high}: {endpoint} at {low['recommended_total_dose_gy']:.1f} Gy is "
                f"{p_low} at {low['recommended_dose_per_fraction_gy']:.3f} Gy/fx and {p_high} at "
                f"{high['recommended_dose_per_fraction_gy']:.3f} Gy/fx (EQD2 at the organ's alpha/beta must raise it)")
        _check_record(low, where_low, rails)
        _check_record(high, where_high, rails)


def test_regimen_outside_training_is_flagged(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2: a dose per fraction outside the training range (1.8-2.2 Gy) -> regimen_outside_training."""
    insides, outsides = _regimen_records(stack, client, "tox_1.9"), _regimen_records(stack, client, "tox_2.4")
    for (where_in, inside), (where_out, outside) in zip(insides.items(), outsides.items(), strict=True):
        assert "regimen_outside_training" in outside["flags"], (
            f"§2: {where_out}: 2.4 Gy/fx (training 1.8-2.2 Gy) must be flagged; flags {outside['flags']}")
        assert "regimen_outside_training" not in inside["flags"], f"§2: {where_in}: inside training: {inside['flags']}"
        _check_record(outside, where_out, rails)


# ---------------------------------------------------------------------------------------------- 7 implausible


def test_implausible_rsi_falls_back_to_the_population(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2 gate: LQ parameters outside plausible ranges (RSI 0.003 -> alpha 2.8/Gy) -> implausible_parameter."""
    features = _features(_row(stack.new_features, "NEW-REG"))
    features["genomic.rsi"] = 0.003
    population_alpha = _population_alpha(client)
    records = {"REST": _rest_record(client, "RSI-0003", features), "pyfunc": _pyfunc_record(stack, "rsi_0003")}
    for where, record in records.items():
        where = f"{where} genomic.rsi 0.003"
        assert record["alpha_per_gy"] < 1.5, f"§2 gate: {where}: alpha {record['alpha_per_gy']} reached the optimizer"
        assert {"implausible_parameter", "population_fallback"} <= set(record["flags"]), (
            f"§2 gate: {where}: flags {record['flags']}")
        assert record.get("rsi_source") == "population", f"§2 gate: {where}: rsi_source {record.get('rsi_source')}"
        assert record["alpha_per_gy"] == pytest.approx(population_alpha, rel=1e-9), (
            f"§2 gate: {where}: the site-default alpha ({population_alpha}) expected, got {record['alpha_per_gy']}")
        _check_record(record, where, rails)


# ---------------------------------------------------------------------------------------------- 8 unknown column


def test_misspelt_column_is_refused_naming_the_closest_known_name(stack: Stack, client: httpx.Client) -> None:
    """§4/§6: a column the model does not know raises (pyfunc) / is 422 (REST), naming it and the closest name."""
    result = stack.pyfunc["misspelt"]
    assert "error" in result, (
        f"§4: the plain pyfunc silently accepted the unknown column genomic.RSI: {str(result)[:400]}")
    assert "genomic.RSI" in result["error"] and "genomic.rsi" in result["error"], (
        f"the exception must name genomic.RSI and the closest known column genomic.rsi: {result['error'][:600]}")
    features = _features(_row(stack.new_features, "NEW-REG"))
    features["genomic.RSI"] = features.pop("genomic.rsi")
    response = _post(client, "MISSPELT-1", features)
    assert response.status_code == 422, f"§6: unknown feature -> 422, got {response.status_code}"
    assert "genomic.RSI" in response.text and "genomic.rsi" in response.text, (
        f"§6: the 422 must name genomic.RSI and suggest genomic.rsi: {response.text[:600]}")


# ---------------------------------------------------------------------------------------------- 9 RSI interval


def test_measured_rsi_has_the_assay_interval(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2: rsi_source measured for a patient with expression; the interval is the assay-noise interval."""
    measured = float(_row(stack.new_features, "NEW-REG").iloc[0]["genomic.rsi"])
    features = _features(_row(stack.new_features, "NEW-REG"))
    records = {"CLI predict": _cli_record(stack, "NEW-REG"), "pyfunc": _pyfunc_record(stack, "cohort", "NEW-REG"),
               "REST": _rest_record(client, "NEW-REG", features)}
    half = Z90 * MEASURED_RSI_SD
    for where, record in records.items():
        assert record["rsi"] == pytest.approx(measured, rel=1e-9), f"§2: {where}: rsi {record['rsi']} != {measured}"
        assert record["rsi_lower"] == pytest.approx(measured - half, abs=2e-3), f"{where}: {record['rsi_lower']}"
        assert record["rsi_upper"] == pytest.approx(measured + half, abs=2e-3), f"{where}: {record['rsi_upper']}"
        assert record.get("rsi_source") == "measured", f"§2: {where}: rsi_source {record.get('rsi_source')}"
        _check_record(record, where, rails)


def _assert_clipped_bound_has_no_dose(record: Mapping[str, Any], bound: str, where: str) -> None:
    if record.get("rsi_source") == "population":
        assert "population_fallback" in record["flags"], f"§2 gate: {where}: population without the flag"
        return
    dose = record[f"dose_for_target_gard_{bound}_gy"]
    assert dose is None, (
        f"§2: {where}: the {bound} end of the measured interval lies outside the LQ domain (0 < RSI < e^-0.2); "
        f"it must give no dose, got dose_for_target_gard_{bound}_gy = {dose} (rsi_{bound} {record[f'rsi_{bound}']})")
    assert record["flags"], f"§2: {where}: a withheld interval dose must be flagged"
    assert record.get("rsi_source") == "measured", f"§2: {where}: rsi_source {record.get('rsi_source')}"


def test_clipped_interval_bound_gives_no_dose(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2: an interval end that would be clipped gives no dose (null, flagged), never a made-up one (9.55 Gy)."""
    high = {"CLI predict": _cli_record(stack, "NEW-HIRSI"), "pyfunc": _pyfunc_record(stack, "cohort", "NEW-HIRSI")}
    measured = float(_row(stack.new_features, "NEW-HIRSI").iloc[0]["genomic.rsi"])
    assert measured + Z90 * MEASURED_RSI_SD > math.exp(-4 * BETA_PER_GY2), f"harness: RSI {measured} too low"
    for where, record in high.items():
        where = f"{where} NEW-HIRSI (measured RSI {measured:.3f})"
        _assert_clipped_bound_has_no_dose(record, "upper", where)
        _check_record(record, where, rails)
    features = _features(_row(stack.new_features, "NEW-REG"))
    features["genomic.rsi"] = 0.07
    low = _rest_record(client, "LOW-RSI", features)
    _assert_clipped_bound_has_no_dose(low, "lower", "REST genomic.rsi 0.07 (lower end 0.07 - 0.082 < 0)")
    _check_record(low, "REST genomic.rsi 0.07", rails)


# ---------------------------------------------------------------------------------------------- 10 toxicity n/a


def test_toxicity_unavailable_is_flagged(stack: Stack, client: httpx.Client, rails: Any) -> None:
    """§2: a record whose toxicity could not be computed (no dose features) carries toxicity_unavailable."""
    features = _features(_row(stack.new_features, "NEW-NODOSE"))
    records = {"CLI predict": _cli_record(stack, "NEW-NODOSE"),
               "pyfunc": _pyfunc_record(stack, "cohort", "NEW-NODOSE"),
               "REST": _rest_record(client, "NEW-NODOSE", features), "REST features {}": _rest_record(client, "E2", {})}
    for where, record in records.items():
        computed = {k: p for k, p in record["toxicity"].items() if p is not None}
        assert not computed, f"{where}: toxicity {computed} without any dose feature"
        assert "toxicity_unavailable" in record["flags"], f"§2: {where}: flags {record['flags']}"
        _check_record(record, where, rails)
    with_dose = _cli_record(stack, "NEW-TOX")
    assert with_dose["toxicity"] and "toxicity_unavailable" not in with_dose["flags"], (
        f"§2: NEW-TOX has parotid doses: toxicity {with_dose['toxicity']}, flags {with_dose['flags']}")


# ---------------------------------------------------------------------------------------------- 11 hand-off


COMPARED = ("rsi", "rsi_lower", "rsi_upper", "alpha_per_gy", "dose_for_target_gard_gy", "recommended_total_dose_gy",
            "recommended_n_fractions", "recommended_dose_per_fraction_gy")


def _assert_same_record(a: Mapping[str, Any], b: Mapping[str, Any], where: str) -> None:
    for key in COMPARED:
        if a[key] is None or b[key] is None:
            assert a[key] is None and b[key] is None, f"§2: {where}: {key} {a[key]} vs {b[key]}"
        else:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), f"§2: {where}: {key} {a[key]} vs {b[key]}"
    for key in ("site", "regimen_source", "rsi_source", "model_version"):
        assert a.get(key) == b.get(key), f"§2: {where}: {key} {a.get(key)!r} vs {b.get(key)!r}"
    assert set(a["flags"]) == set(b["flags"]), f"§2 (one gate whatever produced it): {where}: flags differ " \
                                               f"{sorted(a['flags'])} vs {sorted(b['flags'])}"
    assert set(a["toxicity"]) == set(b["toxicity"]), f"§2: {where}: toxicity keys"
    for k in a["toxicity"]:
        if a["toxicity"][k] is not None:
            assert a["toxicity"][k] == pytest.approx(b["toxicity"][k], rel=1e-6), f"§2: {where}: toxicity {k}"
    statuses = {(_letters(c.get("structure")), c.get("metric"), c.get("status")) for c in a.get("oar_checks", [])}
    assert statuses == {(_letters(c.get("structure")), c.get("metric"), c.get("status"))
                        for c in b.get("oar_checks", [])}, f"§2: {where}: oar_checks differ"


def test_handoff_records_pass_the_gate_and_match_every_route(stack: Stack, client: httpx.Client,
                                                              rails: Any) -> None:
    """§7: handoff writes prescription.json per patient, each through the gate; CLI, pyfunc, REST agree (§2)."""
    handoff = stack.cli["handoff"]
    failures = stack.work / "handoff" / "failures.csv"
    assert handoff.returncode == 0, (
        f"§3/§7: handoff exited {handoff.returncode}: {_one_line_reason(handoff)}; failures.csv: "
        f"{failures.read_text()[:1500] if failures.is_file() else '-'}")
    for patient_id in NEW_PATIENTS:
        path = stack.work / "handoff" / patient_id / "prescription.json"
        assert path.is_file(), f"§7: no {path.relative_to(stack.work)}"
        written = _norm(json.loads(path.read_text()))
        cli = _cli_record(stack, patient_id)
        _assert_same_record(written, cli, f"{patient_id}: handoff vs predict")
        pyfunc = _pyfunc_record(stack, "cohort", patient_id)
        _assert_same_record(pyfunc, cli, f"{patient_id}: pyfunc vs predict")
        rest = _rest_record(client, patient_id, _features(_row(stack.new_features, patient_id)))
        _assert_same_record(rest, cli, f"{patient_id}: REST vs predict")
        _check_record(written, f"handoff {patient_id}/prescription.json", rails)
        _check_record(cli, f"predict {patient_id}", rails)


# ---------------------------------------------------------------------------------------------- 12 promotion


@dataclass
class Retrains:
    """Registry snapshots before and after the two extra trainings, and their processes."""

    before: dict[str, Any]
    no_tox: subprocess.CompletedProcess[str]
    after_no_tox: dict[str, Any]
    other_cohort: subprocess.CompletedProcess[str]
    after_other_cohort: dict[str, Any]


def _snapshot(tracking_uri: str) -> dict[str, Any]:
    """Per model: version -> aliases, tags, run_id; plus each run's tags (MlflowClient)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    out: dict[str, Any] = {"models": {}, "runs": {}}
    for name in MODELS:
        versions = {}
        for v in client.search_model_versions(f"name='{name}'"):
            full = client.get_model_version(name, str(v.version))
            versions[str(full.version)] = {"aliases": list(full.aliases), "tags": dict(full.tags),
                                           "run_id": full.run_id}
            if full.run_id and full.run_id not in out["runs"]:
                out["runs"][full.run_id] = dict(client.get_run(full.run_id).data.tags)
        out["models"][name] = versions
    return out


def _alias(snapshot: Mapping[str, Any], name: str, alias: str) -> str | None:
    for version, info in snapshot["models"][name].items():
        if alias in info["aliases"]:
            return str(version)
    return None


def _newest(snapshot: Mapping[str, Any], name: str) -> str:
    return str(max(int(v) for v in snapshot["models"][name]))


def _reason(info: Mapping[str, Any]) -> str:
    return " ".join(v for k, v in info["tags"].items() if "reason" in k.lower())


def _embedded(snapshot: Mapping[str, Any], prescriber_version: str, model: str) -> str | None:
    """The version of ``model`` the prescriber version embeds: a version tag naming it, else its run's
    ``registry.<model>.version`` tag (docs/registry.md)."""
    info = snapshot["models"][PRESCRIBER][prescriber_version]
    short = model.removeprefix("radiogenomics-")
    for key, value in info["tags"].items():
        if short in key.lower() and re.search(r"version|embed", key.lower()) and re.fullmatch(r"\d+", str(value)):
            return str(value)
    return snapshot["runs"].get(info["run_id"], {}).get(f"registry.{model}.version")


def _assert_models_move_together(snapshot: Mapping[str, Any], where: str) -> None:
    champion = _alias(snapshot, PRESCRIBER, "champion")
    assert champion, f"§4: {where}: no prescriber champion"
    for model in (RADIOSENSITIVITY, TOXICITY):
        embedded = _embedded(snapshot, champion, model)
        assert embedded == _alias(snapshot, model, "champion"), (
            f"§4: {where}: the champion prescriber v{champion} embeds {model} v{embedded}, but {model}'s champion "
            f"is v{_alias(snapshot, model, 'champion')} (the three models move together)")


@pytest.fixture(scope="module")
def retrains(stack: Stack) -> Retrains:
    before = _snapshot(stack.tracking_uri)
    (stack.work / "train_no_tox.yaml").write_text(TRAIN_NO_TOX_YAML)
    no_tox = stack.run("train", "train_cohort", "--features", "train.parquet", "--config", "train_no_tox.yaml",
                       "--out", "training_no_tox")
    after_no_tox = _snapshot(stack.tracking_uri)
    # the same anatomy and labels (so the same folds can be fitted), other patients' ids and ages: other data
    other = [replace(s, patient_id=s.patient_id.replace("TRA", "OTH"), age_years=(s.age_years or 60.0) + 1.5)
             for s in stack.train_specs]
    write_cohort(stack.work / "other_cohort", other, name="another cohort")
    extract = stack.run("extract", "other_cohort", "--out", "other.parquet", "--workers", "2", "--no-progress")
    assert extract.returncode == 0, f"harness: extract other_cohort: {extract.stderr[-2000:]}"
    other_train = stack.run("train", "other_cohort", "--features", "other.parquet", "--config", "train.yaml",
                            "--out", "training_other")
    return Retrains(before=before, no_tox=no_tox, after_no_tox=after_no_tox, other_cohort=other_train,
                    after_other_cohort=_snapshot(stack.tracking_uri))


def test_train_without_toxicity_stays_challenger(stack: Stack, client: httpx.Client, retrains: Retrains) -> None:
    """§4: a version that does not serve every endpoint the champion has never becomes champion."""
    assert retrains.no_tox.returncode == 0, f"§3: train (toxicity disabled) exited {retrains.no_tox.returncode}: " \
                                            f"{retrains.no_tox.stderr[-800:]}"
    before, after = retrains.before, retrains.after_no_tox
    for model in MODELS:
        assert _alias(after, model, "champion") == _alias(before, model, "champion"), (
            f"§4 fail closed: after a train without the toxicity task, {model}'s champion moved from "
            f"v{_alias(before, model, 'champion')} to v{_alias(after, model, 'champion')}")
    new = _newest(after, PRESCRIBER)
    assert new != _newest(before, PRESCRIBER), "§4: train registered no new prescriber version"
    info = after["models"][PRESCRIBER][new]
    assert "challenger" in info["aliases"], f"§4: the new prescriber v{new} is not challenger: {info['aliases']}"
    assert _reason(info).strip(), f"§4: challenger v{new} carries no reason: {info['tags']}"
    _assert_models_move_together(after, "after the train without toxicity")
    record = _rest_record(client, "NEW-TOX", _features(_row(stack.new_features, "NEW-TOX")))
    assert record["model_version"] == _alias(before, PRESCRIBER, "champion"), f"§4: served {record['model_version']}"
    assert record["toxicity"], "§4: the champion prescriber must still serve the toxicity endpoint"


def test_train_on_another_cohort_stays_challenger(retrains: Retrains) -> None:
    """§4: held-out metrics on different evaluation data (dataset digest) are not comparable: challenger."""
    assert retrains.other_cohort.returncode == 0, (
        f"§3: train on another cohort exited {retrains.other_cohort.returncode}: {retrains.other_cohort.stderr[-800:]}")
    before, after = retrains.after_no_tox, retrains.after_other_cohort
    for model in MODELS:
        assert _alias(after, model, "champion") == _alias(before, model, "champion"), (
            f"§4 fail closed: a train on another cohort moved {model}'s champion from "
            f"v{_alias(before, model, 'champion')} to v{_alias(after, model, 'champion')}")
    new = _newest(after, PRESCRIBER)
    info = after["models"][PRESCRIBER][new]
    assert "challenger" in info["aliases"], f"§4: prescriber v{new} is not challenger: {info['aliases']}"
    reason = _reason(info)
    assert re.search(r"digest|dataset|evaluation|data", reason, re.IGNORECASE), (
        f"§4: the challenger's reason must say the evaluation data differ: {reason!r}")
    _assert_models_move_together(after, "after the train on another cohort")


def test_promote_records_the_decision_and_moves_the_three_models(stack: Stack, retrains: Retrains) -> None:
    """§3/§4: `radiogenomics promote NAME VERSION --reason TEXT` makes it champion; who/why in its tags."""
    version = _newest(retrains.after_other_cohort, PRESCRIBER)
    reason = "reviewed by the safety acceptance test: external cohort accepted"
    proc = stack.run("promote", PRESCRIBER, version, "--reason", reason)
    assert proc.returncode == 0, f"§3: promote exited {proc.returncode}: {proc.stderr[-800:]}"
    after = _snapshot(stack.tracking_uri)
    assert _alias(after, PRESCRIBER, "champion") == version, f"§4: promote did not make v{version} champion"
    tags = after["models"][PRESCRIBER][version]["tags"]
    assert any(reason in str(v) for v in tags.values()), f"§4: the reason is not in v{version}'s tags: {tags}"
    user = getpass.getuser()
    assert any(user in str(v) for v in tags.values()), f"§4: who promoted ({user}) is not in the tags: {tags}"
    _assert_models_move_together(after, f"after promote v{version}")


# ---------------------------------------------------------------------------------------------- 13 audit


def _audit_rows(path: Path) -> int:
    """Rows in every table of the audit database (docs/serving.md: `serve --audit-db FILE`)."""
    if not path.is_file():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        return sum(int(db.execute(f'select count(*) from "{t}"').fetchone()[0]) for t in tables
                   if not t.startswith("sqlite_"))


# docs/serving.md "Tokens": requests without a valid token are counted per client address in 60 s windows; the
# first 60 (--auth-fail-per-client) get 401, the following ones 429 with Retry-After; valid tokens are never limited.
AUTH_FAIL_PER_CLIENT = 60


def test_unauthenticated_requests_are_rate_limited_and_not_audited_one_by_one(stack: Stack,
                                                                              client: httpx.Client) -> None:
    """§6 + docs/serving.md (Tokens, The audit log): 401, then 429 with Retry-After; no audit row per request
    (one aggregated row per client window, written when the window ends); a valid token still works."""
    before = _audit_rows(stack.audit_db)
    n_requests = 2 * AUTH_FAIL_PER_CLIENT
    responses = []
    with httpx.Client(base_url=stack.base_url, timeout=30) as anonymous:
        for i in range(n_requests):
            headers = {} if i % 2 else {"Authorization": f"Bearer rg_wrong-token-{i}"}
            responses.append(anonymous.post("/v1/prescriptions", headers=headers,
                                            json={"patients": [{"patient_id": f"ANON-{i}", "features": {}}]}))
    statuses = [r.status_code for r in responses]
    assert set(statuses[:AUTH_FAIL_PER_CLIENT]) == {401}, (
        f"§6: the first {AUTH_FAIL_PER_CLIENT} requests without a valid token get 401: "
        f"{statuses[:AUTH_FAIL_PER_CLIENT]}")
    assert set(statuses[AUTH_FAIL_PER_CLIENT:]) == {429}, (
        f"docs/serving.md: requests beyond {AUTH_FAIL_PER_CLIENT} per client and window get 429: "
        f"{statuses[AUTH_FAIL_PER_CLIENT:]}")
    for response in responses[AUTH_FAIL_PER_CLIENT:]:
        retry = response.headers.get("Retry-After", "")
        assert retry.isdigit() and int(retry) > 0, f"docs/serving.md: a 429 carries Retry-After, got {retry!r}"
    added = _audit_rows(stack.audit_db) - before
    assert added <= 1, (
        f"audit: {n_requests} requests without a valid token added {added} audit rows (docs: one aggregated row per "
        "client window, written when the window ends; never one row per request)")
    record = _rest_record(client, "NEW-REG", _features(_row(stack.new_features, "NEW-REG")))
    assert record["patient_id"] == "NEW-REG", "docs/serving.md: a valid token is never counted nor limited"
