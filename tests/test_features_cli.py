"""`radiogenomics extract` as users run it: exit codes, a killed run that resumes, a Dask cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from test_features_helpers import subset_cohort, write_fast_params

from radiogenomics.features.cache import FeatureCache
from radiogenomics.features.pipeline import ExtractOptions, extract, output_paths


def _cli(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "radiogenomics", "extract", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]


def _summary(out: Path) -> dict[str, object]:
    return json.loads(output_paths(out)[2].read_text())


def test_cli_runs_and_reports(synth_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    subset_cohort(synth_cohort, cohort, 2)
    out = tmp_path / "features.parquet"
    res = _cli(cohort, "--out", out, "--workers", "2", "--cache-dir", tmp_path / "cache", "--params",
               write_fast_params(tmp_path / "p.yaml"), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "2 patients" in res.stdout and "0 failed" in res.stdout
    assert out.is_file() and output_paths(out)[0].is_file() and output_paths(out)[1].is_file()
    assert len(pd.read_parquet(out)) == 2


def test_cli_bad_input_exits_2(tmp_path: Path, synth_cohort: Path) -> None:
    res = _cli(tmp_path / "missing", "--out", tmp_path / "f.parquet")
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = _cli(synth_cohort, "--out", tmp_path / "f.parquet", "--filters", "gabor")
    assert res.returncode == 2 and "gabor" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidht: 25\n")
    res = _cli(synth_cohort, "--out", tmp_path / "f.parquet", "--params", bad)
    assert res.returncode == 2 and "bad.yaml" in res.stderr


def test_killed_run_resumes_without_losing_work(synth_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    subset_cohort(synth_cohort, cohort, 2)
    cache_dir = tmp_path / "cache"
    out = tmp_path / "features.parquet"
    cmd = [sys.executable, "-m", "radiogenomics", "extract", str(cohort), "--out", str(out), "--workers", "2",
           "--cache-dir", str(cache_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cache = FeatureCache(cache_dir)
    deadline = time.monotonic() + 240
    try:
        while len(cache) < 6:
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # the run died before writing its output
    done_before = set(cache.keys())
    assert len(done_before) >= 6
    for key in done_before:  # atomic writes: every entry that exists is complete
        assert cache.get(key) is not None

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = _summary(out)
    assert summary["cached"] == len(done_before)
    assert summary["computed"] == summary["n_items"] - len(done_before)
    assert summary["failed"] == 0
    assert set(cache.keys()) >= done_before and len(cache) == summary["n_items"]

    fresh = extract(cohort, tmp_path / "fresh.parquet", ExtractOptions(workers=2, cache_dir=tmp_path / "c2"))
    assert fresh.computed == summary["n_items"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "fresh.parquet"))


def test_dask_local_cluster_over_tcp(synth_cohort: Path, tmp_path: Path) -> None:
    import distributed
    cohort = tmp_path / "cohort"
    subset_cohort(synth_cohort, cohort, 2)
    params = write_fast_params(tmp_path / "p.yaml")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        out = tmp_path / "dask.parquet"
        res = _cli(cohort, "--out", out, "--dask", address, "--cache-dir", tmp_path / "cache", "--params", params,
                   "--no-progress")
        assert res.returncode == 0, res.stderr
        summary = _summary(out)
        assert summary["workers"] == f"dask {address}"
        assert summary["computed"] == summary["n_items"] and summary["failed"] == 0
        worker_pids = {w.split(":")[-1] for w in summary["peak_rss_mb"]}  # type: ignore[union-attr]
        with distributed.Client(address) as client:
            cluster_pids = {str(p) for p in client.run(os.getpid).values()}
        assert worker_pids <= cluster_pids and worker_pids
    local = extract(cohort, tmp_path / "local.parquet", ExtractOptions(workers=1, cache_dir=tmp_path / "c2",
                                                                       params=params))
    assert local.computed == summary["n_items"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "local.parquet"))


def test_unreachable_dask_scheduler_is_bad_input(synth_cohort: Path, tmp_path: Path) -> None:
    res = _cli(synth_cohort, "--out", tmp_path / "f.parquet", "--dask", "tcp://127.0.0.1:9", "--cache-dir",
               tmp_path / "cache", "--no-progress")
    assert res.returncode == 2 and "Dask" in res.stderr
