"""Requests without a valid token: counted in memory, rate-limited, audited in aggregate.

A ``/v1`` request whose bearer token is missing, malformed, unknown or revoked is not written to the audit
log one row each (an append-only table that a scan of a million requests would grow by a million rows).
:class:`AuthFailureLimiter` counts such requests instead, per client address, in fixed windows of
``window_s`` seconds that start at the client's first failed request:

* up to ``per_client`` failed requests per client per window are answered 401 as before; the following ones
  429 with ``Retry-After`` (whole seconds until the client's window ends);
* a global cap, ``total`` failed requests per window over all clients together, answers every further failed
  request 429 until that window ends (a scan spread over many addresses);
* at most ``max_clients`` addresses are tracked at once; failures from further addresses share one bucket
  (the same per-client limit applies to it), so memory and rows stay bounded whatever the addresses;
* when a window ends, one aggregated audit row is written for it (:meth:`AuthFailureSummary.audit_fields`):
  ``token_name`` empty, ``endpoint`` ``* /v1/*``, no patient, ``outcome``
  ``auth_failed count=<n> rate_limited=<k> window_start=<UTC> window_s=<s>`` and status 429 when any request
  of the window was limited, else 401. No address, no token, no body: the address is held in memory only,
  while its window is open. So a client adds at most one row per window, and all clients at most
  ``max_clients + 1``.

A request with a valid token is never counted and never limited, whatever its address or anyone's failures:
tokens hold 256 random bits (:mod:`radiogenomics.serving.tokens`), so guessing is hopeless, and locking out a
planner behind the same address (a hospital NAT or proxy) because of someone else's scan would be a denial of
service. The counters are per server process (``serve --workers N``: per worker) and start empty on restart.

The clock is injectable (``clock``: seconds, monotonic), so the windows can be tested without sleeping.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

#: The ``endpoint`` of an aggregated row: any /v1 path (the windows are per client, not per route).
AGGREGATED_ENDPOINT = "* /v1/*"
#: The outcome's first word in an aggregated row.
AUTH_FAILED = "auth_failed"
#: Aggregated rows kept in memory while the audit log cannot be written (beyond: dropped, logged).
MAX_PENDING = 10_000


@dataclass(frozen=True)
class AuthFailureLimits:
    """The documented defaults (docs/serving.md "Tokens"): 60 failed requests per client per 60 s (one a
    second on average: more than a person or a misconfigured script retrying produces before noticing, far
    less than a scan), 1,000 per 60 s over all clients, 256 tracked addresses."""

    per_client: int = 60
    window_s: float = 60.0
    total: int = 1000
    max_clients: int = 256

    def __post_init__(self) -> None:
        for name in ("per_client", "total", "max_clients"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"auth failure limit {name} must be a whole number >= 1, got {value!r}",
                                 fix="use e.g. per_client=60, total=1000, max_clients=256")
        if isinstance(self.window_s, bool) or not isinstance(self.window_s, int | float) or \
                not math.isfinite(self.window_s) or self.window_s <= 0:
            raise InputError(f"auth failure window must be a positive number of seconds, got {self.window_s!r}",
                             fix="use e.g. window_s=60")


@dataclass(frozen=True)
class Decision:
    """The answer to one failed request: 429 (``limited``, ``retry_after_s`` >= 1) or 401."""

    limited: bool
    retry_after_s: int = 0


@dataclass(frozen=True)
class AuthFailureSummary:
    """One ended (or, at shutdown, cut) window of one client: what its aggregated audit row says."""

    window_start_utc: str
    window_s: float
    count: int
    limited: int

    def outcome(self) -> str:
        return (f"{AUTH_FAILED} count={self.count} rate_limited={self.limited} window_start={self.window_start_utc} "
                f"window_s={self.window_s:g}")

    def audit_fields(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`radiogenomics.serving.audit.AuditLog.record`."""
        return {"token_name": "", "endpoint": AGGREGATED_ENDPOINT, "patient_id": None, "input_sha256": None,
                "model_version": None, "outcome": self.outcome(), "status_code": 429 if self.limited else 401}


@dataclass
class _Window:
    start: float
    start_utc: str
    count: int = 0
    limited: int = 0

    def summary(self, window_s: float) -> AuthFailureSummary:
        return AuthFailureSummary(self.start_utc, window_s, self.count, self.limited)


class _Overflow:
    """The key of the bucket shared by addresses beyond ``max_clients``."""

    def __repr__(self) -> str:
        return "<untracked clients>"


OVERFLOW = _Overflow()


class AuthFailureLimiter:
    """Counts failed requests per client and over all clients (see the module docstring); thread-safe."""

    def __init__(self, limits: AuthFailureLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or AuthFailureLimits()
        self.clock = clock
        self._lock = threading.Lock()
        self._clients: dict[object, _Window] = {}  # insertion order = window start order (all windows equal)
        self._total: _Window | None = None
        self._pending: list[AuthFailureSummary] = []

    def _new_window(self, now: float) -> _Window:
        return _Window(now, datetime.now(UTC).isoformat(timespec="seconds"))

    def failed(self, client: str | None) -> Decision:
        """Count one request without a valid token from ``client`` (its address; None when unknown)."""
        limits = self.limits
        with self._lock:
            now = self.clock()
            self._expire(now)
            if self._total is None or now - self._total.start >= limits.window_s:
                self._total = self._new_window(now)
            self._total.count += 1
            key: object = client if client is not None else OVERFLOW
            if key not in self._clients and len(self._clients) >= limits.max_clients:
                key = OVERFLOW
            window = self._clients.get(key)
            if window is None:
                window = self._clients[key] = self._new_window(now)
            window.count += 1
            ends = []
            if window.count > limits.per_client:
                ends.append(window.start + limits.window_s)
            if self._total.count > limits.total:
                ends.append(self._total.start + limits.window_s)
            if not ends:
                return Decision(False)
            window.limited += 1
            if window.limited == 1:
                reason = ("the global cap" if window.count <= limits.per_client else "the per-client limit")
                log.warning("requests without a valid token: %s reached %s (%d per client, %d in all per %g s); "
                            "answering 429", key, reason, limits.per_client, limits.total, limits.window_s)
            return Decision(True, max(1, math.ceil(max(ends) - now)))

    def _expire(self, now: float) -> None:
        """Move the ended windows (the oldest first) to the pending summaries."""
        while self._clients:
            key = next(iter(self._clients))
            window = self._clients[key]
            if now - window.start < self.limits.window_s:
                break
            del self._clients[key]
            self._pending.append(window.summary(self.limits.window_s))

    def take(self, *, close_all: bool = False) -> list[AuthFailureSummary]:
        """The summaries of the windows that have ended (with ``close_all``, of the open ones too: at
        shutdown), each returned once; cheap when there are none."""
        with self._lock:
            self._expire(self.clock())
            if close_all:
                self._pending += [w.summary(self.limits.window_s) for w in self._clients.values()]
                self._clients.clear()
            taken, self._pending = self._pending, []
        return taken

    def put_back(self, summaries: list[AuthFailureSummary]) -> None:
        """Summaries that could not be written, kept for the next attempt (the oldest dropped, logged, beyond
        :data:`MAX_PENDING`)."""
        with self._lock:
            self._pending = summaries + self._pending
            extra = len(self._pending) - MAX_PENDING
            if extra > 0:
                dropped = self._pending[:extra]
                self._pending = self._pending[extra:]
                log.error("audit log unwritable: %d aggregated auth_failed row(s) dropped (%d request(s))", extra,
                          sum(s.count for s in dropped))

    @property
    def open_windows(self) -> int:
        """Client windows being counted (for tests and diagnostics)."""
        with self._lock:
            return len(self._clients)


def write_summaries(limiter: AuthFailureLimiter, audit: Any, summaries: list[AuthFailureSummary] | None = None,
                    *, close_all: bool = False) -> int:
    """Write aggregated rows to ``audit``: ``summaries`` (taken from ``limiter`` already), else those of the
    ended windows (:meth:`AuthFailureLimiter.take`). Blocking: run it in a worker thread from async code. Rows
    that cannot be written are put back and the error logged (never raised). Returns the rows written."""
    if summaries is None:
        summaries = limiter.take(close_all=close_all)
    for i, summary in enumerate(summaries):
        try:
            audit.record(**summary.audit_fields())
        except Exception:
            log.exception("audit log write failed: %d aggregated auth_failed row(s) kept for later",
                          len(summaries) - i)
            limiter.put_back(summaries[i:])
            return i
    return len(summaries)
