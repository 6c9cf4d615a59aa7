"""Latency and throughput of `radiogenomics serve` against `mlflow models serve`, same prescriber, same run.

    python benchmarks/serve.py [--work DIR] [--duration-s 4] [--min-requests 3] [--patients-per-request 1 32]
                               [--clients 1 8] [--profile] [--json OUT.json]

Setup (not timed; reused when ``--work`` already holds it): a synthetic cohort of 32 patients
(``radiogenomics.synthetic.generate_cohort``, seed 7, 16^3 grid), its features (original-image radiomics),
an RSI surrogate (ridge) and a xerostomia classifier registered as ``radiogenomics-prescriber@champion`` in a
sqlite MLflow store in the work folder, and one API token.

Both servers then run as subprocesses on loopback with one worker each: ``radiogenomics serve --model
models:/radiogenomics-prescriber@champion`` (POST /v1/prescriptions, bearer token, one audit row per patient)
and ``mlflow models serve -m <same URI> --env-manager local -w 1`` (POST /invocations, ``dataframe_split``;
it needs the venv's ``bin`` on PATH). For every (patients per request, concurrent clients) pair each server
gets back-to-back requests from that many client threads on keep-alive connections: one warm-up request per
client, then at least ``--duration-s`` seconds and ``--min-requests`` requests per client. Reported: p50 and
p99 latency, requests/s and patients/s, the servers' CPU time per request (all their processes, from
``/proc``: the cost of a request whatever else loads the machine), and the ratios ours / MLflow. Both must
return the same records for the same patients (checked). Any non-200 answer counts as a failure and is
reported. ``--profile`` also times single-patient requests in-process, the API's own cost against the
prescriber's, and profiles the prescriber (cProfile).

Targets (issue 9): p50 < 20 ms for one patient; throughput >= 2x MLflow's scoring server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODEL_URI = "models:/radiogenomics-prescriber@champion"
N_PATIENTS, SEED, GRID = 32, 7, 16
HOST = "127.0.0.1"
log = logging.getLogger("benchmarks.serve")


@dataclass
class Result:
    server: str
    patients_per_request: int
    clients: int
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    patients_per_s: float
    #: CPU seconds the server's processes used per request (user + system, all its processes): what a request
    #: costs whatever else runs on the machine.
    cpu_ms_per_request: float


# ------------------------------------------------------------------------------------------------- setup
def build_registry(work: Path) -> Path:
    """Cohort, features, two fitted models registered in ``work/mlflow.db``; returns the feature table."""
    import mlflow
    from threadpoolctl import threadpool_limits

    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.features.schema import read_feature_schema, read_feature_table
    from radiogenomics.models.radiosensitivity import RSISurrogate
    from radiogenomics.models.toxicity import ToxicityClassifier
    from radiogenomics.synthetic import generate_cohort
    from radiogenomics.training.config import TrainConfig
    from radiogenomics.training.registry import register_models

    cohort, features, marker = work / "cohort", work / "features.parquet", work / "registered.txt"
    mlflow.set_tracking_uri(tracking_uri(work))
    if marker.is_file():
        return features
    if not features.is_file():
        generate_cohort(cohort, n_patients=N_PATIENTS, seed=SEED, grid_size=GRID, overwrite=True)
        extract(cohort, features, ExtractOptions(workers=1, cache_dir=work / "cache", filters=("original",)))
    table = read_feature_table(features)
    with threadpool_limits(1):
        rsi = RSISurrogate(regressor="ridge", cv=3, n_screen=10, random_state=0).fit(table)
        tox = ToxicityClassifier(endpoint="xerostomia", calibration=None, random_state=0).fit(table)
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("benchmark-serve", artifact_location=(work / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    register_models(rsi, {"xerostomia": tox}, {"radiosensitivity.spearman": 0.5}, read_feature_schema(features),
                    TrainConfig(), training_table=table, experiment_name="benchmark-serve")
    marker.write_text(MODEL_URI + "\n")
    return features


def tracking_uri(work: Path) -> str:
    return f"sqlite:///{work / 'mlflow.db'}"


def patient_rows(features: Path) -> list[dict[str, Any]]:
    """One dict per patient: ``patient_id`` and the non-missing, non-outcome feature values (JSON-ready)."""
    import pandas as pd

    from radiogenomics.features.schema import read_feature_table

    table = read_feature_table(features)
    rows = []
    for _, row in table.iterrows():
        values = {}
        for column, value in row.items():
            if column == "patient_id" or str(column).startswith("outcome.") or value is None or pd.isna(value):
                continue
            values[str(column)] = value.item() if hasattr(value, "item") else value
        rows.append({"patient_id": str(row["patient_id"]), "features": values})
    return rows


def our_body(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"patients": rows}).encode()


def mlflow_body(rows: list[dict[str, Any]]) -> bytes:
    columns = sorted({c for r in rows for c in r["features"]})
    data = [[r["patient_id"], *(r["features"].get(c) for c in columns)] for r in rows]
    return json.dumps({"dataframe_split": {"columns": ["patient_id", *columns], "data": data}}).encode()


# ------------------------------------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def running(command: list[str], env: dict[str, str], ready_path: str, port: int, log_file: Path,
            timeout_s: float = 180.0) -> Iterator[tuple[float, int]]:
    """Start ``command`` in its own process group, wait until GET ``ready_path`` answers 200; yields the
    seconds that took and the process group id; stops the whole group afterwards."""
    start = time.perf_counter()
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{command[:3]} exited with {proc.returncode}; see {log_file}")
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(f"{command[:3]} not ready after {timeout_s} s; see {log_file}")
                try:
                    conn = http.client.HTTPConnection(HOST, port, timeout=2)
                    conn.request("GET", ready_path)
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.25)
            yield time.perf_counter() - start, proc.pid
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.request("POST", path, body, headers)
    response = conn.getresponse()
    return response.status, response.read()


# --------------------------------------------------------------------------------------------------- load
def load(port: int, path: str, body: bytes, headers: dict[str, str], clients: int, duration_s: float,
         min_requests: int = 3) -> tuple[list[float], int, float]:
    """``clients`` threads POST ``body`` back to back on keep-alive connections: one warm-up request each, then
    together for at least ``duration_s`` and at least ``min_requests`` requests per client. Returns the
    latencies (s) of the measured requests, the failures (non-200 or connection errors), and the wall time from
    the common start to the last answer."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    finished = [0.0] * clients
    barrier = threading.Barrier(clients + 1)
    bounds: dict[str, float] = {}

    def one(conn: http.client.HTTPConnection) -> tuple[bool, http.client.HTTPConnection]:
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            return response.status == 200, conn
        except OSError:
            conn.close()
            return False, http.client.HTTPConnection(HOST, port, timeout=120)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        one(conn)  # warm-up: connection, first-call caches
        barrier.wait()
        barrier.wait()  # the main thread sets the window between the two
        while len(latencies[k]) < min_requests or time.perf_counter() < bounds["end"]:
            t0 = time.perf_counter()
            ok, conn = one(conn)
            latencies[k].append(time.perf_counter() - t0)
            failures[k] += 0 if ok else 1
        finished[k] = time.perf_counter()
        conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    bounds["end"] = start + duration_s
    barrier.wait()
    for t in threads:
        t.join()
    measured = [x for per in latencies for x in per]
    return measured, sum(failures), max(finished) - start


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid`` (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state: pgrp is field 5 of stat(5), utime/stime 14/15
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def summarise(server: str, patients: int, clients: int, latencies: list[float], failures: int,
              wall_s: float, cpu_s: float) -> Result:
    if not latencies:
        return Result(server, patients, clients, 0, failures, float("nan"), float("nan"), 0.0, 0.0, float("nan"))
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    rate = len(latencies) / wall_s
    return Result(server, patients, clients, len(latencies), failures, 1000 * statistics.median(ordered),
                  1000 * p99, rate, rate * patients, 1000 * cpu_s / len(latencies))


# ------------------------------------------------------------------------------------------------ checks
def same_records(ours: bytes, theirs: bytes) -> None:
    """Both servers must give the same record for the same patients (the same registered prescriber)."""
    a, b = json.loads(ours)["records"], json.loads(theirs)["predictions"]
    assert len(a) == len(b), (len(a), len(b))
    for x, y in zip(a, b, strict=True):
        for key in ("patient_id", "model_version", "rsi", "alpha_per_gy", "recommended_total_dose_gy", "input_sha256"):
            same = x[key] == y[key] or (isinstance(x[key], float) and abs(x[key] - y[key]) < 1e-9)
            assert same, (key, x[key], y[key])


def profile_single_patient(work: Path, tokens: Path, row: dict[str, Any], n_requests: int = 30) -> None:
    """Where a single-patient POST /v1/prescriptions spends its time, in-process.

    The median time of the whole request through the ASGI app (TestClient) is set against the median time of
    ``Prescriber.predict_records`` alone on the same row; the difference is the API's own cost (parsing,
    validation, token, audit, JSON). Then a cProfile of ``predict_records`` (the app runs its routes in worker
    threads, which cProfile does not follow).
    """
    import cProfile
    import pstats

    from fastapi.testclient import TestClient

    from radiogenomics.serving.api import create_app
    from radiogenomics.serving.tokens import create_token

    token = create_token(f"profile-{int(time.time())}", tokens)
    app = create_app(MODEL_URI, tokens_file=tokens, audit_db=work / "profile-audit.sqlite")
    headers = {"Authorization": f"Bearer {token}"}
    loaded = app.state.serving.current()
    rows = [{"patient_id": row["patient_id"], **row["features"]}]  # what the API hands the prescriber

    def timed(call: Callable[[], object]) -> tuple[float, float]:
        call()
        samples = []
        for _ in range(n_requests):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return 1000 * statistics.median(samples), 1000 * min(samples)

    with TestClient(app) as client:
        def request() -> None:
            assert client.post("/v1/prescriptions", json={"patients": [row]}, headers=headers).status_code == 200

        whole_ms = timed(request)
    predict_ms = timed(lambda: loaded.prescriber.predict_records(rows, model=loaded.info))
    for what, i in (("median", 0), ("fastest", 1)):
        print(f"in-process, {what} of {n_requests}: whole request {whole_ms[i]:.1f} ms, Prescriber.predict_records "
              f"{predict_ms[i]:.1f} ms, the API's own cost {whole_ms[i] - predict_ms[i]:.1f} ms")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(min(n_requests, 10)):
        loaded.prescriber.predict_records(rows, model=loaded.info)
    profiler.disable()
    print("predict_records, top functions by cumulative time:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


# -------------------------------------------------------------------------------------------------- main
def run(work: Path, sizes: list[int], clients: list[int], duration_s: float, min_requests: int,
        profile: bool) -> list[Result]:
    from radiogenomics.serving.tokens import create_token

    features = build_registry(work)
    rows = patient_rows(features)
    tokens = work / "tokens.yaml"
    tokens.unlink(missing_ok=True)
    token = create_token("benchmark", tokens)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(work), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ours_port, mlflow_port = free_port(), free_port()
    ours_cmd = [sys.executable, "-m", "radiogenomics", "serve", "--model", MODEL_URI, "--tokens", str(tokens),
                "--audit-db", str(work / "audit.sqlite"), "--host", HOST, "--port", str(ours_port)]
    mlflow_cmd = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
                  "-h", HOST, "-p", str(mlflow_port), "-w", "1"]
    ours_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    mlflow_headers = {"Content-Type": "application/json"}
    results: list[Result] = []
    with running(ours_cmd, env, "/health", ours_port, work / "serve.log") as (ours_ready_s, ours_pgid), \
            running(mlflow_cmd, env, "/ping", mlflow_port, work / "mlflow-serve.log") as (mlflow_ready_s,
                                                                                            mlflow_pgid):
        print(f"ready: radiogenomics serve {ours_ready_s:.1f} s, mlflow models serve {mlflow_ready_s:.1f} s "
              f"(each to its first healthy answer)")
        for size in sizes:
            batch = [dict(rows[i % len(rows)], patient_id=f"{rows[i % len(rows)]['patient_id']}-{i}")
                     for i in range(size)]
            bodies = {"radiogenomics": (ours_port, "/v1/prescriptions", our_body(batch), ours_headers),
                      "mlflow": (mlflow_port, "/invocations", mlflow_body(batch), mlflow_headers)}
            groups = {"radiogenomics": ours_pgid, "mlflow": mlflow_pgid}
            answers = {name: post(*spec) for name, spec in bodies.items()}
            for name, (status, text) in answers.items():
                assert status == 200, (name, status, text[:500])
            same_records(answers["radiogenomics"][1], answers["mlflow"][1])
            for n_clients in clients:
                for name, (port, path, body, headers) in bodies.items():
                    cpu_before = group_cpu_s(groups[name])
                    latencies, failures, wall_s = load(port, path, body, headers, n_clients, duration_s,
                                                       min_requests)
                    cpu_s = group_cpu_s(groups[name]) - cpu_before  # includes the warm-up requests (1 per client)
                    results.append(summarise(name, size, n_clients, latencies, failures, wall_s, cpu_s))
                    print(format_row(results[-1]), flush=True)
    audit_rows = _audit_rows(work / "audit.sqlite")
    print(f"audit rows written by radiogenomics serve: {audit_rows}")
    if profile:
        profile_single_patient(work, tokens, rows[0])
    return results


def _audit_rows(path: Path) -> int:
    from radiogenomics.serving.audit import AuditLog

    with AuditLog(path) as audit:
        return len(audit.rows())


HEADER = (f"{'server':<14} {'patients':>8} {'clients':>7} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s':>8} {'patients/s':>10} {'cpu ms/req':>10}")


def format_row(r: Result) -> str:
    return (f"{r.server:<14} {r.patients_per_request:>8} {r.clients:>7} {r.requests:>8} {r.failures:>6} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.requests_per_s:>8.1f} {r.patients_per_s:>10.1f} "
            f"{r.cpu_ms_per_request:>10.1f}")


def report(results: list[Result], print_line: Callable[[str], None] = print) -> None:
    print_line("\n" + HEADER)
    for r in results:
        print_line(format_row(r))
    print_line("\nratios radiogenomics / mlflow (p50 < 1 is faster; throughput > 1 is more)")
    print_line(f"{'patients':>8} {'clients':>7} {'p50':>8} {'p99':>8} {'throughput':>10} {'cpu/req':>8}")
    by_key = {(r.server, r.patients_per_request, r.clients): r for r in results}
    for (server, size, clients), ours in by_key.items():
        theirs = by_key.get(("mlflow", size, clients))
        if server != "radiogenomics" or theirs is None or not theirs.requests_per_s:
            continue
        print_line(f"{size:>8} {clients:>7} {ours.p50_ms / theirs.p50_ms:>8.2f} {ours.p99_ms / theirs.p99_ms:>8.2f} "
                   f"{ours.requests_per_s / theirs.requests_per_s:>10.2f} "
                   f"{ours.cpu_ms_per_request / theirs.cpu_ms_per_request:>8.2f}")
    single = [r for r in results if r.server == "radiogenomics" and r.patients_per_request == 1 and r.clients == 1]
    if single:
        print_line(f"target p50 < 20 ms for one patient: {single[0].p50_ms:.2f} ms "
                   f"({'met' if single[0].p50_ms < 20 else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="work folder (reused; default: a temp folder)")
    parser.add_argument("--duration-s", type=float, default=4.0, help="measured seconds per configuration")
    parser.add_argument("--min-requests", type=int, default=3, help="measured requests per client, at least")
    parser.add_argument("--patients-per-request", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--profile", action="store_true", help="also cProfile single-patient requests in-process")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="rg-bench-serve-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = run(work, args.patients_per_request, args.clients, args.duration_s, args.min_requests,
                      args.profile)
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.failures == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
