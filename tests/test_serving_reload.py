"""Hot reload under load: a real uvicorn server on a loopback port keeps answering while a second prescriber
version is registered and `champion` moves to it; the responses switch to the new version without a restart
and no request fails."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import uvicorn
from prescriber_factory import Bundle, register_bundle, use_tracking_uri
from serving_factory import MODEL, new_token, tracking_uri

from radiogenomics.serving.api import FeatureTable, create_app
from radiogenomics.serving.state import alias_of

log = logging.getLogger(__name__)
CLIENTS = 2
PATIENTS = ["SYN0001", "SYN0002", "SYN0003"]


@pytest.fixture(scope="module")
def server(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("serving-reload")
    with use_tracking_uri(tracking_uri(folder)):
        first = register_bundle(bundle, folder, experiment="reload")
        tokens, token = new_token(folder)
        app = create_app(MODEL, tokens_file=tokens, audit_db=folder / "audit.sqlite", reload_interval_s=0.5)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield {"app": app, "url": f"http://127.0.0.1:{port}", "token": token, "first": first, "folder": folder}
        uv.should_exit = True
        thread.join(timeout=30)


def _client_loop(url: str, token: str, body: dict[str, Any], stop: threading.Event,
                 results: list[tuple[float, int, str]], errors: list[str]) -> None:
    """POST the same body until ``stop``; every answer as (time, status, model_version)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        while not stop.is_set():
            try:
                response = client.post("/v1/prescriptions", json=body)
                version = response.json()["records"][0]["model_version"] if response.status_code == 200 else ""
                results.append((time.monotonic(), response.status_code, version))
            except Exception as exc:  # a dropped connection is a failed request too
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)


def test_alias_move_under_load(server: dict[str, Any], bundle: Bundle) -> None:
    table = FeatureTable(bundle.features_path)  # what the page sends: the table's values, as JSON
    allowed = set(server["app"].state.serving.current().prescriber.feature_columns)
    body = {"patients": [{"patient_id": pid, "features": table.features(pid, allowed)} for pid in PATIENTS]}
    stop = threading.Event()
    results: list[list[tuple[float, int, str]]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []
    threads = [threading.Thread(target=_client_loop, args=(server["url"], server["token"], body, stop, results[i],
                                                           errors), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        _wait(lambda: all(len(r) >= 2 for r in results) or bool(errors), 120, "clients got no answers")
        with use_tracking_uri(tracking_uri(server["folder"])):
            second = register_bundle(bundle, server["folder"], experiment="reload")  # promoted: champion moves
            champion = mlflow.MlflowClient().get_model_version_by_alias("radiogenomics-prescriber", "champion")
        moved_at = time.monotonic()
        assert (server["first"], second, str(champion.version)) == ("1", "2", "2")
        _wait(lambda: all(any(v == second for _, _, v in r) for r in results) or bool(errors), 180,
              "the server never answered with the new version")
        count = [len(r) for r in results]
        _wait(lambda: all(len(r) >= c + 2 for r, c in zip(results, count, strict=True)) or bool(errors), 120,
              "clients stopped getting answers after the swap")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    answers = [a for r in results for a in r]
    log.info("reload under load: %d requests from %d clients, %d failed, %d answered by version %s",
             len(answers), CLIENTS, len(errors) + sum(a[1] != 200 for a in answers),
             sum(a[2] == second for a in answers), second)
    assert not errors, errors[:3]
    assert {status for _, status, _ in answers} == {200}, [a for a in answers if a[1] != 200][:3]
    for per_client in results:  # each client: the old version, then the new one, never back
        versions = [v for _, _, v in per_client]
        switch = versions.index(second)
        assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {second}
        assert any(t < moved_at for t, _, _ in per_client[:switch])
    assert server["app"].state.serving.reloads == 1
    health = httpx.get(f"{server['url']}/health").json()
    assert health["model_version"] == second


def _wait(condition: Any, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def test_a_failed_reload_keeps_serving(server: dict[str, Any], tmp_path: Path) -> None:
    """An alias moved to a version that cannot be loaded: the loaded model keeps serving, with a warning."""
    state = server["app"].state.serving
    state.check_now()  # settle any reload in flight
    before = state.current()
    with use_tracking_uri(tracking_uri(server["folder"])):
        client = mlflow.MlflowClient()
        broken = client.create_model_version("radiogenomics-prescriber", source=str(tmp_path / "no-such-model"))
        client.set_registered_model_alias("radiogenomics-prescriber", "champion", broken.version)
        assert state.check_now() is False
    assert state.current() is before
    response = httpx.post(f"{server['url']}/v1/prescriptions", json={"patients": [{"patient_id": "P1", "features": {
        "genomic.rsi": 0.4}}]}, headers={"Authorization": f"Bearer {server['token']}"}, timeout=120)
    assert response.status_code == 200 and response.json()["records"][0]["model_version"] == before.info.version


def test_only_alias_uris_are_followed() -> None:
    assert alias_of("models:/radiogenomics-prescriber@champion") == ("radiogenomics-prescriber", "champion")
    for uri in ("models:/radiogenomics-prescriber/3", "models:/m-0123abc", "runs:/abc/prescriber", "/tmp/model"):
        assert alias_of(uri) is None
