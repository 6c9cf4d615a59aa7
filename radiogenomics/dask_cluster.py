"""The one way the platform talks to a Dask cluster: check the scheduler, connect, keep distributed quiet.

Used by ``extract --dask`` (:mod:`radiogenomics.features.runner`) and ``train --dask``
(:mod:`radiogenomics.training.cluster`). Nothing listening at the address is an InputError (exit 2) before any
work starts; distributed's own log records go to DEBUG (the run's log; stderr only with ``-v``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

#: Loggers to which distributed (and the web libraries under it) attach their own stderr handlers on import.
DISTRIBUTED_LOGGERS = ("distributed", "distributed.client", "distributed.gc", "bokeh", "tornado",
                       "tornado.application")


def check_reachable(address: str) -> None:
    """Fail fast (InputError) when nothing listens at a tcp:// scheduler address."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        return  # other protocols (inproc, ucx): let distributed handle them
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=5):
            pass
    except OSError as exc:
        raise InputError(f"cannot connect to the Dask scheduler at {address}: {exc}",
                         fix="start one with `dask scheduler` / `dask worker`, or drop --dask") from exc


class _ToDebug(logging.Handler):
    """Re-logs a library's record at DEBUG on this module's logger (the run's log file; stderr only with -v)."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s %s: %s", record.levelname, record.name, record.getMessage())


@contextmanager
def distributed_logs_at_debug() -> Iterator[None]:
    """While inside, distributed's own stderr handlers are replaced by a re-log at DEBUG (quiet by default)."""
    saved = []
    for name in DISTRIBUTED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers, logger.propagate))
        logger.handlers, logger.propagate = [_ToDebug()], False
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


def check_scheduler(address: str) -> None:
    """InputError (exit 2) when the distributed package is missing or nothing listens at ``address``."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:  # pragma: no cover - optional extra
        raise InputError("--dask needs the 'distributed' package",
                         fix="pip install 'radiogenomics[distributed]'") from exc
    check_reachable(address)


@contextmanager
def connect(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` on the scheduler at ``address``, closed on exit; distributed's log records go to
    DEBUG meanwhile (:func:`distributed_logs_at_debug`). Nothing listening is an InputError."""
    check_scheduler(address)
    from distributed import Client

    with distributed_logs_at_debug():
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot connect to the Dask scheduler at {address}: {exc}",
                             fix="start one with `dask scheduler` / `dask worker`, or drop --dask") from exc
        try:
            yield client
        finally:
            client.close()
