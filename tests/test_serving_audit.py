"""The audit log: only the allowed columns, append-only (UPDATE/DELETE raise), concurrent writers, reopening."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import datetime
from pathlib import Path

import pytest

from radiogenomics.errors import InputError
from radiogenomics.serving.audit import COLUMNS, AuditLog

ROW = {"token_name": "planner", "endpoint": "POST /v1/prescriptions", "patient_id": "P001",
       "input_sha256": "ab" * 32, "model_version": "3", "outcome": "ok", "status_code": 200}


def test_rows_hold_only_the_allowed_columns(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.db"
    with AuditLog(path) as log:
        log.record(**ROW)
        log.record(**{**ROW, "patient_id": None, "input_sha256": None, "outcome": "unauthorised",
                      "status_code": 401})
        rows = log.rows()
    assert [tuple(r) for r in rows] == [COLUMNS, COLUMNS]
    assert COLUMNS == ("id", "time_utc", "token_name", "endpoint", "patient_id", "input_sha256", "model_version",
                       "outcome", "status_code")
    assert {k: rows[0][k] for k in ROW} == ROW
    assert rows[1]["patient_id"] is None and rows[1]["status_code"] == 401
    assert datetime.fromisoformat(rows[0]["time_utc"]).utcoffset().total_seconds() == 0
    assert rows[0]["id"] < rows[1]["id"]
    with sqlite3.connect(path) as db:
        assert [r[1] for r in db.execute("PRAGMA table_info(audit)")] == list(COLUMNS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_update_and_delete_are_refused_by_the_database(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        log.record(**ROW)
    db = sqlite3.connect(path)
    try:
        for statement in ("UPDATE audit SET outcome = 'edited'", "DELETE FROM audit", "DELETE FROM audit WHERE id = 1",
                          "UPDATE audit SET patient_id = NULL WHERE id = 1"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)
        db.commit()
    finally:
        db.close()
    with AuditLog(path) as log:  # reopening keeps the rows and adds to them
        assert [r["outcome"] for r in log.rows()] == ["ok"]
        log.record(**{**ROW, "outcome": "second"})
        assert [r["outcome"] for r in log.rows()] == ["ok", "second"]


def test_dropped_triggers_are_restored_on_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        log.record(**ROW)
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER audit_no_delete")
    AuditLog(path).close()
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("DELETE FROM audit")


def test_concurrent_writers_from_threads(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    n_threads, per_thread = 8, 50
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def write(k: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                log.record(**{**ROW, "patient_id": f"T{k}-{i}"})
                if i % 10 == 0:
                    log.rows(limit=5)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = log.rows()
    assert len(rows) == n_threads * per_thread
    assert len({r["patient_id"] for r in rows}) == n_threads * per_thread
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    latest = log.rows(limit=3)
    assert [r["id"] for r in latest] == [r["id"] for r in rows[-3:]]
    log.close()


def test_bad_values_and_files(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    for bad in ({"status_code": 42}, {"status_code": True}, {"status_code": "200"}):
        with pytest.raises(ValueError, match="status_code"):
            log.record(**{**ROW, **bad})
    with pytest.raises(TypeError, match="patient_id"):
        log.record(**{**ROW, "patient_id": 7})
    with pytest.raises(ValueError, match="token_name"):
        log.record(**{**ROW, "token_name": None})
    log.record(**{**ROW, "patient_id": "P" * 10_000})
    assert len(log.rows()[-1]["patient_id"]) == 256
    with pytest.raises(ValueError, match="limit"):
        log.rows(limit=-1)
    assert log.rows(limit=0) == []
    log.close()
    not_db = tmp_path / "notes.db"
    not_db.write_text("this is not a database, " * 100)
    with pytest.raises(InputError, match="not a usable SQLite database") as info:
        AuditLog(not_db)
    assert info.value.file == str(not_db)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, ip TEXT)")
    with pytest.raises(InputError, match="expected"):
        AuditLog(other)
