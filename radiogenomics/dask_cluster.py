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


#: The address schemes distributed's comms understand (``host:port`` alone is tcp).
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")
#: What a malformed --dask address is told to look like.
_ADDRESS_FIX = "give the scheduler's address as tcp://HOST:PORT (or HOST:PORT), e.g. tcp://localhost:8786"


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """(scheme, host, port) of a ``--dask`` scheduler address; InputError (exit 2) for a malformed one: an
    unknown scheme (``http://``), a port that is not a number in 1..65535, a host with spaces."""
    from urllib.parse import urlsplit

    text = str(address).strip()
    if not text or any(c.isspace() for c in text):
        raise InputError(f"--dask {address!r} is not a scheduler address (it contains spaces or is blank)",
                         fix=_ADDRESS_FIX)
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    scheme = parts.scheme.lower()
    if scheme not in DASK_SCHEMES:
        raise InputError(f"--dask {address}: '{parts.scheme}://' is not a Dask scheduler protocol (one of "
                         f"{', '.join(s + '://' for s in DASK_SCHEMES)})", fix=_ADDRESS_FIX)
    if scheme in ("inproc", "ucx"):
        return scheme, None, None
    try:
        port = parts.port
    except ValueError as exc:
        raise InputError(f"--dask {address}: the port is not a number in 1..65535 ({exc})",
                         fix=_ADDRESS_FIX) from exc
    if not parts.hostname or port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InputError(f"--dask {address} is not a scheduler address (HOST:PORT)", fix=_ADDRESS_FIX)
    return scheme, parts.hostname, port


def check_reachable(address: str) -> None:
    """Fail fast (InputError) when the address is malformed (:func:`parse_address`) or nothing listens at a
    tcp:// scheduler address."""
    import socket

    scheme, host, port = parse_address(address)
    if scheme not in ("tcp", "tls") or not host or not port:
        return  # other protocols (inproc, ucx, ws), the default port: let distributed handle them
    try:
        with socket.create_connection((host, port), timeout=5):
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
        except ValueError as exc:  # an address distributed cannot parse, past parse_address
            raise InputError(f"--dask {address} is not a scheduler address: {exc}", fix=_ADDRESS_FIX) from exc
        try:
            yield client
        finally:
            client.close()
