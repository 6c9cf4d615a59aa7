"""The REST API in-process (httpx through ASGI): every endpoint, tokens, strict validation, limits, audit rows,
records identical to the prescriber's; `radiogenomics serve --check`; the real server in a subprocess."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prescriber_factory import Bundle, session_base, use_tracking_uri
from records_compare import REL, assert_records_close
from serving_factory import MODEL, features_only, new_token, shared_registry, tracking_uri

from radiogenomics.cli.app import main
from radiogenomics.errors import InputError
from radiogenomics.models.prescriber import RECORD_FIELDS
from radiogenomics.serving.api import create_app
from radiogenomics.serving.schemas import ServeLimits

MAX_BODY = 1024 * 1024
MAX_PATIENTS = 5
AUDIT_COLUMNS = {"id", "time_utc", "token_name", "endpoint", "patient_id", "input_sha256", "model_version",
                 "outcome", "status_code"}


@pytest.fixture(scope="module")
def registry(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    folder, version = shared_registry(bundle, session_base(tmp_path_factory))
    with use_tracking_uri(tracking_uri(folder)):
        yield folder, version


@pytest.fixture(scope="module")
def served(bundle: Bundle, registry: tuple[Path, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("serving-api")
    tokens, token = new_token(folder)
    app = create_app(MODEL, tokens_file=tokens, audit_db=folder / "audit.sqlite", features=bundle.features_path,
                     workdir=folder / "work", limits=ServeLimits(max_body_bytes=MAX_BODY, max_patients=MAX_PATIENTS))
    with TestClient(app) as client:
        yield {"app": app, "client": client, "auth": {"Authorization": f"Bearer {token}"}, "folder": folder,
               "tokens": tokens, "token": token, "version": registry[1]}


def _patient(served: dict[str, Any], patient_id: str) -> dict[str, Any]:
    response = served["client"].get(f"/v1/patients/{patient_id}", headers=served["auth"])
    assert response.status_code == 200, response.text
    return response.json()


def _post(served: dict[str, Any], path: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return served["client"].post(path, content=content,
                                 headers={**served["auth"], "content-type": "application/json", **headers})


def test_health_and_page_are_anonymous(served: dict[str, Any]) -> None:
    client = served["client"]
    health = client.get("/health").json()
    assert health == {"status": "ok", "model_uri": f"models:/radiogenomics-prescriber/{served['version']}",
                      "model_version": served["version"]}
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("method,path", [("GET", "/v1/model"), ("GET", "/v1/patients"),
                                         ("GET", "/v1/patients/SYN0001"), ("POST", "/v1/prescriptions"),
                                         ("POST", "/v1/dose-response"), ("POST", "/v1/objectives"),
                                         ("POST", "/v1/prescriptions/images"), ("GET", "/v1/openapi.json"),
                                         ("GET", "/v1/no-such-endpoint")])
def test_v1_needs_a_valid_token(served: dict[str, Any], method: str, path: str) -> None:
    client = served["client"]
    wrong = served["token"][:-4] + ("aaaa" if not served["token"].endswith("aaaa") else "bbbb")
    for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": "Bearer "},
                    {"Authorization": f"Basic {served['token']}"}):
        response = client.request(method, path, headers=headers, json={"patients": [{"patient_id": "P1"}]})
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "missing or invalid bearer token"}


def test_model_description(served: dict[str, Any]) -> None:
    body = served["client"].get("/v1/model", headers=served["auth"]).json()
    prescriber = served["app"].state.serving.current().prescriber
    assert (body["name"], body["version"], body["alias"]) == ("radiogenomics-prescriber", served["version"],
                                                              "champion")
    assert body["uri"] == f"models:/radiogenomics-prescriber/{served['version']}"
    assert body["metrics"]["radiosensitivity.spearman"] == 0.5  # the held-out metric registered with it
    columns = [f["column"] for f in body["features"]]
    assert columns == [c for c in prescriber.feature_columns if c != "patient_id"]
    assert {f["group"] for f in body["features"]} >= {"imaging", "clinical", "genomic"}
    # the site's standard regimen (rails), used when neither the request nor the patient gives one
    assert {k: body["regimen_defaults"][k] for k in ("n_fractions", "dose_per_fraction_gy", "target_gard")} == {
        "n_fractions": 35, "dose_per_fraction_gy": 2.0, "target_gard": 33.0}
    assert "patient" in body["regimen_defaults"]["used_when"]
    assert body["toxicity_endpoints"] == ["xerostomia_grade_ge2"]
    assert body["max_patients"] == MAX_PATIENTS


def test_patients_from_the_feature_table(served: dict[str, Any], bundle: Bundle) -> None:
    client, auth = served["client"], served["auth"]
    assert client.get("/v1/patients", headers=auth).json() == {"patients": sorted(bundle.table["patient_id"])}
    first = _patient(served, "SYN0001")
    row = bundle.table.set_index("patient_id").loc["SYN0001"]
    assert first["features"]["clinical.site"] == row["clinical.site"]
    assert not any(name.startswith("outcome.") for name in first["features"])  # labels are never served
    assert all(value is not None for value in first["features"].values())
    assert client.get("/v1/patients/NOPE", headers=auth).status_code == 404
    assert client.get("/v1/patients/bad%20id", headers=auth).status_code == 422


@pytest.mark.blas_sensitive
def test_records_equal_the_prescriber(served: dict[str, Any], bundle: Bundle) -> None:
    ids = ["SYN0002", "SYN0005", "SYN0011"]
    body = {"patients": [_patient(served, pid) for pid in ids], "regimen": {"n_fractions": 30,
            "dose_per_fraction_gy": 2.2}, "target_gard": 40.0}
    response = _post(served, "/v1/prescriptions", body)
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    loaded = served["app"].state.serving.current()
    rows = features_only(bundle).set_index("patient_id").loc[ids].reset_index()
    expected = loaded.prescriber.predict_records(rows, model=loaded.info, n_fractions=30, dose_per_fraction_gy=2.2,
                                                 target_gard=40.0)
    assert [list(r) for r in records] == [list(RECORD_FIELDS)] * len(ids)
    # JSON rows (the API) and a DataFrame (here): identifiers, hashes and flags exactly, figures to rounding; a
    # NaN is JSON null
    as_json = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in expected]
    assert_records_close(records, as_json)
    assert {r["model_version"] for r in records} == {served["version"]}
    assert {(r["n_fractions"], r["dose_per_fraction_gy"], r["target_gard"]) for r in records} == {(30.0, 2.2, 40.0)}


def test_dose_response_and_objectives(served: dict[str, Any]) -> None:
    body = {"patients": [_patient(served, "SYN0003")]}
    curve = _post(served, "/v1/dose-response", body)
    assert curve.status_code == 200, curve.text
    curve_body = curve.json()
    assert curve_body["patient_id"] == "SYN0003"
    assert len(curve_body["tcp"]) == len(curve_body["total_dose_gy"]) >= 61
    # the RSI interval's band, which the page draws, reaches the client (the response model keeps it)
    low, high, tcp = (curve_body[k] for k in ("tcp_low", "tcp_high", "tcp"))
    assert len(low) == len(high) == len(tcp)
    assert all(lo <= hi + 1e-12 for lo, hi in zip(low, high, strict=True))
    assert any(hi - lo > 1e-3 for lo, hi in zip(low, high, strict=True))
    assert set(curve_body["ntcp"]) == {"xerostomia_grade_ge2"}
    assert curve_body["recommended_total_dose_gy"] in curve_body["total_dose_gy"]
    handoff = _post(served, "/v1/objectives", body)
    assert handoff.status_code == 200, handoff.text
    record, objectives = handoff.json()["record"], handoff.json()["objectives"]
    assert objectives["format"] == "radiogenomics-objectives/1"
    assert (objectives["patient_id"], objectives["input_sha256"]) == ("SYN0003", record["input_sha256"])
    two = {"patients": [_patient(served, "SYN0003"), _patient(served, "SYN0004")]}
    for path in ("/v1/dose-response", "/v1/objectives"):
        rejected = _post(served, path, two)
        assert rejected.status_code == 422 and rejected.json()["detail"][0]["loc"] == ["body", "patients"]


@pytest.mark.blas_sensitive
def test_one_patient_answers_agree_with_a_batch_record(served: dict[str, Any]) -> None:
    """/v1/objectives and /v1/dose-response predict for one patient; their record is the one a batch of five
    gives: identifiers, hash and flags exactly, figures to rounding (a batch of one and a batch of five need not
    run the same BLAS kernel; issue 20, the in-process form of the acceptance test's check)."""
    # when written, several of these five toxicities differed in their last bits between the two batch sizes,
    # on OpenBLAS' SkylakeX and on its Haswell kernels (patients differing: not the same)
    patients = [_patient(served, f"SYN{i:04d}") for i in range(1, MAX_PATIENTS + 1)]
    batch = _post(served, "/v1/prescriptions", {"patients": patients})
    assert batch.status_code == 200, batch.text
    for patient, record in zip(patients, batch.json()["records"], strict=True):
        body = {"patients": [patient]}
        answer = _post(served, "/v1/objectives", body)
        assert answer.status_code == 200, answer.text
        assert_records_close(answer.json()["record"], record)
        curve = _post(served, "/v1/dose-response", body)
        assert curve.status_code == 200, curve.text
        for key in ("recommended_total_dose_gy", "dose_for_target_gard_gy"):
            assert curve.json()[key] == pytest.approx(record[key], rel=REL), key


BAD_BODIES = [
    ("unknown feature", '{"patients": [{"patient_id": "P1", "features": {"imaging.no_such": 1.0}}]}',
     ["body", "patients", 0, "features", "imaging.no_such"]),
    ("NaN literal", '{"patients": [{"patient_id": "P1", "features": {"clinical.age_years": NaN}}]}',
     ["body", "patients", 0, "features", "clinical.age_years"]),
    ("Infinity literal", '{"patients": [{"patient_id": "P1", "features": {"clinical.age_years": Infinity}}]}',
     ["body", "patients", 0, "features", "clinical.age_years"]),
    ("-Infinity literal", '{"patients": [{"patient_id": "P1", "features": {"clinical.age_years": -Infinity}}]}',
     ["body", "patients", 0, "features", "clinical.age_years"]),
    ("bool as a number", '{"patients": [{"patient_id": "P1", "features": {"clinical.age_years": true}}]}',
     ["body", "patients", 0, "features", "clinical.age_years"]),
    ("text for a number", '{"patients": [{"patient_id": "P1", "features": {"clinical.age_years": "61"}}]}',
     ["body", "patients", 0, "features", "clinical.age_years"]),
    ("number for text", '{"patients": [{"patient_id": "P1", "features": {"clinical.site": 3}}]}',
     ["body", "patients", 0, "features", "clinical.site"]),
    ("integer out of its dtype's range", '{"patients": [{"patient_id": "P1", "features": {"available.ct": 300}}]}',
     ["body", "patients", 0, "features", "available.ct"]),
    ("fraction for an integer column", '{"patients": [{"patient_id": "P1", "features": {"available.ct": 0.5}}]}',
     ["body", "patients", 0, "features", "available.ct"]),
    ("object as a value", '{"patients": [{"patient_id": "P1", "features": {"clinical.age_years": {"v": 1}}}]}',
     ["body", "patients", 0, "features", "clinical.age_years"]),
    ("extra top-level key", '{"patients": [{"patient_id": "P1"}], "dose": 70}', ["body", "dose"]),
    ("extra patient key", '{"patients": [{"patient_id": "P1", "name": "Jane Doe"}]}',
     ["body", "patients", 0, "name"]),
    ("no patients", '{"patients": []}', ["body", "patients"]),
    ("patients missing", '{}', ["body", "patients"]),
    ("too many patients", json.dumps({"patients": [{"patient_id": f"P{i}"} for i in range(MAX_PATIENTS + 1)]}),
     ["body", "patients"]),
    ("duplicate patient", '{"patients": [{"patient_id": "P1"}, {"patient_id": "P1"}]}',
     ["body", "patients", 1, "patient_id"]),
    ("identifying patient id", '{"patients": [{"patient_id": "Jane Doe, 12 May 1950"}]}',
     ["body", "patients", 0, "patient_id"]),
    ("empty patient id", '{"patients": [{"patient_id": ""}]}', ["body", "patients", 0, "patient_id"]),
    ("fractional n_fractions", '{"patients": [{"patient_id": "P1"}], "regimen": {"n_fractions": 2.5}}',
     ["body", "regimen", "n_fractions"]),
    ("zero dose per fraction", '{"patients": [{"patient_id": "P1"}], "regimen": {"dose_per_fraction_gy": 0}}',
     ["body", "regimen", "dose_per_fraction_gy"]),
    ("NaN target GARD", '{"patients": [{"patient_id": "P1"}], "target_gard": NaN}', ["body", "target_gard"]),
    ("fraction for a whole-number feature",
     '{"patients": [{"patient_id": "P1", "features": {"clinical.n_fractions": 2.5}}]}', ["body"]),
    ("malformed JSON", '{"patients": [', ["body"]),
    ("JSON that is not an object", '[1, 2]', ["body"]),
]


@pytest.mark.parametrize("name,content,loc", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_422_naming_the_field(served: dict[str, Any], name: str, content: str,
                                            loc: list[Any]) -> None:
    response = _post(served, "/v1/prescriptions", content)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(set(item) == {"loc", "msg", "type"} and item["msg"] for item in detail)
    assert any(item["loc"][:len(loc)] == loc for item in detail), detail
    if name == "fraction for a whole-number feature":  # the prescriber's own InputError, with its column
        assert "clinical.n_fractions" in detail[0]["msg"]


def test_body_limits_and_content_type(served: dict[str, Any]) -> None:
    big = json.dumps({"patients": [{"patient_id": "P1", "features": {"clinical.center": "x" * MAX_BODY}}]})
    declared = _post(served, "/v1/prescriptions", big)
    assert declared.status_code == 413
    assert declared.json() == {"detail": f"request body larger than {MAX_BODY} bytes"}

    def chunks() -> Iterator[bytes]:  # streamed, no Content-Length: the bytes are counted
        yield b'{"patients": [{"patient_id": "P1", "features": {"clinical.center": "'
        for _ in range(8):
            yield b"x" * (MAX_BODY // 4)
        yield b'"}}]}'

    response = served["client"].post("/v1/prescriptions", content=chunks(),
                                     headers={**served["auth"], "content-type": "application/json"})
    assert "content-length" not in response.request.headers and response.status_code == 413
    lying = _post(served, "/v1/prescriptions", big, **{"content-length": "20"})
    assert lying.status_code == 413
    plain = _post(served, "/v1/prescriptions", '{"patients": [{"patient_id": "P1"}]}', **{"content-type": "text/plain"})
    assert plain.status_code == 415
    assert served["client"].get("/v1/prescriptions", headers=served["auth"]).status_code == 405


def test_images_route_is_wired(served: dict[str, Any]) -> None:
    client = served["client"]
    no_files = client.post("/v1/prescriptions/images", headers=served["auth"], data={"patient_id": "P1"})
    assert no_files.status_code == 422
    assert {tuple(i["loc"]) for i in no_files.json()["detail"]} >= {("body", "manifest"), ("body", "files")}
    bad_id = client.post("/v1/prescriptions/images", headers=served["auth"],
                         data={"patient_id": "../etc", "manifest": "{}"}, files={"files": ("a.nii", b"0")})
    assert bad_id.status_code == 422


def test_audit_rows(served: dict[str, Any]) -> None:
    audit = served["app"].state.audit
    before = len(audit.rows())
    body = {"patients": [_patient(served, pid) for pid in ("SYN0007", "SYN0008")]}
    records = _post(served, "/v1/prescriptions", body).json()["records"]
    _post(served, "/v1/prescriptions", '{"patients": [{"patient_id": "P9", "features": {"imaging.x": 1}}]}')
    assert served["client"].get("/v1/model").status_code == 401  # counted in memory, no row of its own
    # (an aggregated auth_failed row of an earlier test's window may be written meanwhile: left out here)
    rows = [r for r in audit.rows()[before:] if not r["outcome"].startswith("auth_failed")]
    assert all(set(row) == AUDIT_COLUMNS for row in rows)
    assert len(rows) == 5, rows  # tests/test_serving_auth_limit.py: one aggregated row per client per window
    feature_rows, ok_rows, rejected = rows[:2], rows[2:4], rows[4]
    assert [(r["patient_id"], r["endpoint"]) for r in feature_rows] == \
        [("SYN0007", "GET /v1/patients/{patient_id}"), ("SYN0008", "GET /v1/patients/{patient_id}")]
    assert [(r["patient_id"], r["input_sha256"]) for r in ok_rows] == \
        [(r["patient_id"], r["input_sha256"]) for r in records]
    assert {(r["token_name"], r["endpoint"], r["outcome"], r["status_code"], r["model_version"]) for r in ok_rows} \
        == {("planner", "POST /v1/prescriptions", "ok", 200, served["version"])}
    assert (rejected["patient_id"], rejected["outcome"], rejected["input_sha256"]) == ("P9", "rejected:422", None)
    text = json.dumps(rows)
    assert "imaging.x" not in text and "head_neck" not in text  # no feature values or names in the log


def test_serve_check_and_bad_input(served: dict[str, Any], bundle: Bundle, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    args = ["serve", "--model", MODEL, "--tokens", str(served["tokens"]), "--features", str(bundle.features_path),
            "--audit-db", str(tmp_path / "audit.sqlite"), "--port", "8123", "--check"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"radiogenomics-prescriber version {served['version']} (alias champion" in out
    assert "POST  /v1/prescriptions" in out and "http://127.0.0.1:8123/" in out and "patients 24" in out
    assert main(["serve", "--model", MODEL, "--tokens", str(tmp_path / "none.yaml"), "--check"]) == 2
    assert "radiogenomics token create" in capsys.readouterr().err
    assert main(["serve", "--model", "models:/no-such-model@champion", "--tokens", str(served["tokens"]),
                 "--audit-db", str(tmp_path / "a.sqlite"), "--check"]) == 2
    assert main(["serve", "--model", MODEL, "--tokens", str(served["tokens"]), "--workers", "0"]) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_app_from_environment(served: dict[str, Any], bundle: Bundle, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What each process of `serve --workers N` builds: the app configured by RADIOGENOMICS_* variables."""
    from radiogenomics.serving import api

    monkeypatch.delenv(api.ENV_MODEL, raising=False)
    with pytest.raises(InputError, match=api.ENV_MODEL):
        api.app_from_environment()
    for key, value in {api.ENV_MODEL: MODEL, api.ENV_TOKENS: str(served["tokens"]), api.ENV_RELOAD: "1",
                       api.ENV_AUDIT: str(tmp_path / "audit.sqlite"),
                       api.ENV_FEATURES: str(bundle.features_path)}.items():
        monkeypatch.setenv(key, value)
    app = api.app_from_environment()
    assert app.state.serving.reload_interval_s == 1.0 and len(app.state.features.rows) == 24
    with TestClient(app) as client:
        assert client.get("/v1/patients", headers=served["auth"]).json()["patients"][0] == "SYN0001"


def test_real_server(served: dict[str, Any], registry: tuple[Path, str], tmp_path: Path) -> None:
    """`radiogenomics serve` in a subprocess on a free loopback port: /health, then a prescription."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(registry[0]),
           "RADIOGENOMICS_TOKENS_FILE": str(served["tokens"])}
    proc = subprocess.Popen([sys.executable, "-m", "radiogenomics", "serve", "--model", MODEL, "--port", str(port),
                             "--audit-db", str(tmp_path / "audit.sqlite")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:] if proc.stdout else ""
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            time.sleep(0.5)
        assert httpx.post(f"{base}/v1/prescriptions", json={"patients": [{"patient_id": "P1"}]}).status_code == 401
        body = {"patients": [{"patient_id": "P1", "features": {"genomic.rsi": 0.4}}]}
        response = httpx.post(f"{base}/v1/prescriptions", json=body,
                              headers=served["auth"], timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["records"][0]["model_version"] == served["version"]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_no_answer_without_an_audit_row(served: dict[str, Any]) -> None:
    """Last in this module: with the audit log closed, /v1 answers 503 and withholds the answer."""
    served["app"].state.audit.close()
    response = served["client"].get("/v1/model", headers=served["auth"])
    assert response.status_code == 503 and response.json() == {"detail": "the audit log cannot be written"}
    assert served["client"].get("/health").status_code == 200  # anonymous, not audited
