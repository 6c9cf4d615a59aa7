"""Requests without a valid token (issue 15.10): counted in memory per client and in all, 429 with Retry-After
over the limit, one aggregated audit row per client per window (never one per request), valid tokens never
limited, windows reset; an injectable clock instead of sleeps."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prescriber_factory import build_bundle, session_base, use_tracking_uri
from serving_factory import MODEL, new_token, shared_registry, tracking_uri

from radiogenomics.errors import InputError
from radiogenomics.serving.api import OPENAPI_URL, create_app
from radiogenomics.serving.auth_limit import (
    AGGREGATED_ENDPOINT,
    AuthFailureLimiter,
    AuthFailureLimits,
    write_summaries,
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------ the limiter
def test_per_client_limit_retry_after_and_reset() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(AuthFailureLimits(per_client=3, window_s=60, total=100), clock=clock)
    assert [limiter.failed("10.0.0.1").limited for _ in range(3)] == [False] * 3
    clock.now += 10.5
    over = limiter.failed("10.0.0.1")
    assert over.limited and over.retry_after_s == 50  # ceil(1000 + 60 - 1010.5)
    assert not limiter.failed("10.0.0.2").limited  # another client: its own count
    assert limiter.take() == []  # nothing has ended yet
    clock.now += 49.5  # 1060: the first client's window (from 1000) is over, the second's (from 1010.5) not
    assert not limiter.failed("10.0.0.1").limited  # a new window for the first client
    ended = limiter.take()
    assert [(s.count, s.limited) for s in ended] == [(4, 1)]  # taken once
    assert limiter.take() == []
    fields = ended[0].audit_fields()
    assert fields["status_code"] == 429 and fields["endpoint"] == AGGREGATED_ENDPOINT
    assert fields["outcome"].startswith("auth_failed count=4 rate_limited=1 window_start=")
    assert fields["token_name"] == "" and fields["patient_id"] is None and "10.0.0" not in repr(fields)
    rest = limiter.take(close_all=True)  # shutdown: the open windows too
    assert sorted((s.count, s.limited, s.audit_fields()["status_code"]) for s in rest) == [(1, 0, 401), (1, 0, 401)]
    assert limiter.open_windows == 0


def test_global_cap_and_bounded_clients() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(AuthFailureLimits(per_client=5, window_s=30, total=8, max_clients=3), clock=clock)
    answers = [limiter.failed(f"10.0.0.{i}") for i in range(10)]  # a scan from ten addresses
    assert [a.limited for a in answers] == [False] * 8 + [True] * 2  # the global cap, whatever the address
    assert answers[-1].retry_after_s == 30
    assert limiter.open_windows == 4  # three tracked addresses and one shared bucket for the rest
    clock.now += 30
    assert not limiter.failed("10.0.0.99").limited
    summaries = limiter.take()
    assert len(summaries) == 4 and sum(s.count for s in summaries) == 10  # at most max_clients + 1 rows
    assert sorted(s.count for s in summaries) == [1, 1, 1, 7]


def test_limits_are_checked() -> None:
    for bad in ({"per_client": 0}, {"total": -1}, {"max_clients": 1.5}, {"window_s": 0}, {"window_s": float("nan")},
                {"per_client": True}):
        with pytest.raises(InputError, match="auth failure"):
            AuthFailureLimits(**bad)  # type: ignore[arg-type]


def test_rows_that_cannot_be_written_are_kept() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(AuthFailureLimits(window_s=10), clock=clock)
    limiter.failed("a")
    clock.now += 10

    class Broken:
        def record(self, **_: Any) -> None:
            raise sqlite3.ProgrammingError("closed")

    assert write_summaries(limiter, Broken()) == 0
    written: list[dict[str, Any]] = []

    class Working:
        def record(self, **fields: Any) -> None:
            written.append(fields)

    assert write_summaries(limiter, Working()) == 1 and written[0]["outcome"].startswith("auth_failed count=1 ")


# --------------------------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = session_base(tmp_path_factory)
    folder, _ = shared_registry(build_bundle(base), base)
    with use_tracking_uri(tracking_uri(folder)):
        yield folder


def _app(folder: Path, clock: Clock) -> tuple[Any, str, Path]:
    tokens, token = new_token(folder)
    audit_db = folder / "audit.sqlite"
    app = create_app(MODEL, tokens_file=tokens, audit_db=audit_db, workdir=folder / "work", clock=clock)
    return app, token, audit_db


def test_a_scan_adds_one_row_gets_429_and_valid_tokens_still_work(registry: Path, tmp_path: Path) -> None:
    clock = Clock()
    app, token, audit_db = _app(tmp_path, clock)
    audit = app.state.audit
    valid = {"Authorization": f"Bearer {token}"}
    wrong = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    with TestClient(app) as scanner, TestClient(app, client=("10.9.9.9", 4000)) as other:
        before = len(audit.rows())
        codes, retry = [], set()
        for i in range(1000):  # default limits: 60 per client, 1,000 in all, per 60 s
            headers = [{}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": "Basic x"}][i % 3]
            clock.now += 0.01
            response = scanner.post("/v1/prescriptions", headers=headers, json={"patients": []})
            codes.append(response.status_code)
            if response.status_code == 429:
                retry.add(int(response.headers["retry-after"]))
                assert response.json()["detail"].startswith("too many requests without a valid bearer token")
        assert codes[:60] == [401] * 60 and codes[60:] == [429] * 940
        assert retry and min(retry) >= 1 and max(retry) == 60  # seconds until the window ends
        assert len(audit.rows()) == before  # nothing per request
        # during it: a valid token works, from the scanning address and from another one
        assert scanner.get("/v1/patients", headers=valid).status_code == 200
        assert other.get("/v1/patients", headers=valid).status_code == 200
        assert other.get("/v1/model").status_code == 429  # the global cap (1,000 in all) is reached too
        after = audit.rows()[before:]
        assert [(r["token_name"], r["status_code"]) for r in after] == [("planner", 200)] * 2
        # the window ends: the next request writes one aggregated row per client; the count starts again
        clock.now += 60
        assert scanner.get("/v1/model").status_code == 401
        rows = audit.rows()[before + 2:]
        assert len(rows) == 2, rows
        by_count = sorted(rows, key=lambda r: r["outcome"])
        assert by_count[0]["outcome"].startswith("auth_failed count=1 rate_limited=1 ")  # the other client
        assert by_count[1]["outcome"].startswith("auth_failed count=1000 rate_limited=940 ")
        assert {(r["token_name"], r["endpoint"], r["patient_id"], r["input_sha256"], r["status_code"]) for r in rows} \
            == {("", AGGREGATED_ENDPOINT, None, None, 429)}
        assert [scanner.get("/v1/model").status_code for _ in range(59)] == [401] * 59
        assert scanner.get("/v1/model").status_code == 429
    # shutdown writes the open window: the 61 failures after the reset, in one more row
    rows = audit.rows()[before + 4:]
    assert [r["outcome"].split(" window_start")[0] for r in rows] == ["auth_failed count=61 rate_limited=1"]
    raw = b"".join(p.read_bytes() for p in audit_db.parent.glob(audit_db.name + "*"))
    for secret in (token, wrong, "testclient", "10.9.9.9", "Basic"):
        assert secret.encode() not in raw, secret


def test_openapi_declares_429_with_retry_after(registry: Path, tmp_path: Path) -> None:
    app, token, _ = _app(tmp_path, Clock())
    with TestClient(app) as client:
        schema = client.get(OPENAPI_URL, headers={"Authorization": f"Bearer {token}"}).json()
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()
                  if path.startswith("/v1")]
    assert len(operations) >= 6
    for path, method, op in operations:
        declared = op["responses"].get("429")
        assert declared is not None, (method, path)
        assert "Retry-After" in declared["headers"], (method, path)
