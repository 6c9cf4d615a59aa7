"""The append-only audit log of the REST API (SQLite).

One row per patient per request with a valid token (one row with a null ``patient_id`` when a request names
none) with only: ``id, time_utc, token_name, endpoint, patient_id, input_sha256, model_version, outcome,
status_code``. No IP address, no token, no body, no features, no names: ``patient_id`` is the caller's
pseudonymous ID (contract section 1) and ``input_sha256`` the record's hash of the exact inputs, which
identifies the prediction without holding its data. Requests without a valid token are counted in memory
instead and written as one aggregated row per client address per window (``outcome``
``auth_failed count=<n> rate_limited=<k> ...``, the address itself not kept: :mod:`radiogenomics.serving.auth_limit`),
so a scan cannot grow the log by a row per request.

Append-only is enforced by the database: triggers ``RAISE(ABORT)`` on every ``UPDATE`` and ``DELETE`` of the
table, re-created each time the log is opened. The journal is WAL with ``synchronous=NORMAL`` (a committed
row survives a crash of the server; the last commits can be lost on power failure). Triggers stop the
application and casual edits, not someone who can write the file: keep it 0600 and ship copies off the host
for tamper evidence (docs/serving.md#the-audit-log). One connection guarded by a lock serves all threads.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("id", "time_utc", "token_name", "endpoint", "patient_id", "input_sha256",
                            "model_version", "outcome", "status_code")
SCHEMA_VERSION = 1
#: Longest text kept in a column (a request cannot fill the log with one huge value).
MAX_TEXT = 256
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc TEXT NOT NULL,
    token_name TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    patient_id TEXT,
    input_sha256 TEXT,
    model_version TEXT,
    outcome TEXT NOT NULL,
    status_code INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE is not allowed'); END;
"""


def _text(value: str | None, field: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ValueError(f"audit field {field} is required")
        return None
    if not isinstance(value, str):
        raise TypeError(f"audit field {field} must be text, got {type(value).__name__}")
    return value[:MAX_TEXT]


class AuditLog:
    """Append-only SQLite audit log at ``path`` (created with its folder when absent; mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"cannot open the audit log ({exc})", file=str(self.path),
                             fix="give a writable file path for the audit database") from exc
        if new:
            self.path.chmod(0o600)
        self._lock = threading.Lock()
        try:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise InputError(f"audit log schema version {version}, this release writes {SCHEMA_VERSION}",
                                     file=str(self.path), fix="give a new file path for the audit database")
                columns = tuple(row[1] for row in self._db.execute("PRAGMA table_info(audit)"))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise InputError(f"the audit log is not a usable SQLite database ({exc})", file=str(self.path),
                             fix="give a new file path for the audit database") from exc
        if columns != COLUMNS:
            self._db.close()
            raise InputError(f"the audit table has columns {columns}, expected {COLUMNS}", file=str(self.path),
                             fix="give a new file path for the audit database")

    def record(self, *, token_name: str, endpoint: str, patient_id: str | None, input_sha256: str | None,
               model_version: str | None, outcome: str, status_code: int) -> None:
        """Append one row; ``time_utc`` (ISO 8601, UTC, microseconds) is set here.

        Text longer than :data:`MAX_TEXT` is cut. Wrong types are a programming error (TypeError/ValueError),
        not bad user input.
        """
        if isinstance(status_code, bool) or not isinstance(status_code, int) or not 100 <= status_code <= 599:
            raise ValueError(f"audit status_code must be an HTTP status (100-599), got {status_code!r}")
        row = (datetime.now(UTC).isoformat(timespec="microseconds"), _text(token_name, "token_name", required=True),
               _text(endpoint, "endpoint", required=True), _text(patient_id, "patient_id"),
               _text(input_sha256, "input_sha256"), _text(model_version, "model_version"),
               _text(outcome, "outcome", required=True), status_code)
        with self._lock:
            self._db.execute("INSERT INTO audit (time_utc, token_name, endpoint, patient_id, input_sha256, "
                             "model_version, outcome, status_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows in the order written (``id`` ascending); with ``limit``, the latest ``limit`` of them."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative whole number, got {limit!r}")
        query = f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY id"
        if limit is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT {limit}) ORDER BY id"
        with self._lock:
            found = self._db.execute(query).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in found]

    def close(self) -> None:
        """Close the connection (further calls fail)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
