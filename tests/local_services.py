"""Real services on loopback for tests: a free port, a command in its own process group (stopped as a group
whatever happens), a real `mlflow server`, and the project's command line as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

HEALTH_TIMEOUT_S = 60.0
VENV_BIN = str(Path(sys.executable).parent)
#: The project's command line, as the tests run it.
CLI = (sys.executable, "-m", "radiogenomics")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    """``GET url/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without MLflow's and the tokens file's variables, the venv's bin first on PATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RADIOGENOMICS_TOKENS"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**env, **extra}


@contextmanager
def process_group(command: list[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run ``command`` in a new session (setsid), stdout and stderr into ``log``; on exit SIGTERM its process
    group, SIGKILL after 20 s."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                proc.wait(timeout=10)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Wait for ``url/health``; fail with the log's tail when the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{url} did not become healthy (exit {proc.poll()}): {log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextmanager
def mlflow_server(folder: Path, backend_store_uri: str) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port with ``backend_store_uri`` and proxied artifacts in
    ``folder/artifacts`` (clients get ``mlflow-artifacts:`` locations); yields its URL once healthy."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # ~510 MB instead of ~2 GB with the job runner
    log = folder / "mlflow-server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend_store_uri, "--serve-artifacts",
               "--artifacts-destination", (folder / "artifacts").as_uri()]
    with process_group(command, cwd=folder, env=env, log=log) as proc:
        wait_healthy(url, proc, log)
        yield url


def run_cli(args: list[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float = 600
            ) -> subprocess.CompletedProcess[str]:
    """``python -m radiogenomics ARGS``; fails the test with its output unless it exits 0."""
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=dict(env),
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    assert proc.returncode == 0, (args, proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc
