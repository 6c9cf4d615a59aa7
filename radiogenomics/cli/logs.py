"""Logging of the command line: a quiet stderr by default, details with ``-v``, a DEBUG log file per long run.

stderr (docs/cli.md, "Logging"):

* the package's own messages (loggers ``radiogenomics.*``) at WARNING and above; with ``-v`` at DEBUG;
* other libraries' log records (MLflow, pyRadPlan, scikit-learn, ...) and Python warnings (routed through
  logging, :func:`logging.captureWarnings`) only at ERROR and above; with ``-v`` from INFO (warnings included).
  Chatty database loggers (alembic, SQLAlchemy, huey) stay at WARNING even then.

MLflow configures its own stderr handler when imported; the command line asks it not to
(``MLFLOW_CONFIGURE_LOGGING=false``, unless set) so its records follow the rules above, and switches its
artifact progress bars off (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``, unless set).

:func:`run_log`: the long commands (``extract``, ``train``, ``demo``) also write every record of the run to a log
file beside their outputs: the package's at DEBUG, the libraries' (and warnings) from INFO. Its path is printed
once on stdout.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PACKAGE = "radiogenomics"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Environment defaults of the command line (a value the user set wins).
ENVIRONMENT = {"MLFLOW_CONFIGURE_LOGGING": "false", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
#: Loggers that MLflow sets up with their own stderr handler when it configures logging.
MLFLOW_LOGGERS = ("mlflow", "alembic", "huey", "sqlalchemy.engine")
#: Third-party loggers kept at WARNING even with -v or a log file (each migration or query is an INFO record).
CHATTY = ("alembic", "sqlalchemy", "huey")
#: Attribute marking the handlers this module installs (replaced, not stacked, when configured again).
_MARK = "_radiogenomics_cli"


def own(record: logging.LogRecord) -> bool:
    """Whether the record comes from the package's own loggers."""
    return record.name == PACKAGE or record.name.startswith(PACKAGE + ".")


class _Threshold(logging.Filter):
    """Passes the package's records from ``own_level``, everyone else's from ``other_level``."""

    def __init__(self, own_level: int, other_level: int) -> None:
        super().__init__()
        self.own_level, self.other_level = own_level, other_level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= (self.own_level if own(record) else self.other_level)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on ``sys.stderr`` as it is at each record (a test runner may swap it). tqdm's
    ``logging_redirect_tqdm`` (pyRadPlan's dose calculation) recognises it as the console handler and keeps its
    filter and format; beside any other handler it adds a bare one of its own."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def _ours(handler: logging.Handler) -> bool:
    return bool(getattr(handler, _MARK, False))


#: Root and package logger levels before :func:`configure` (restored by :func:`restore`).
_SAVED: list[tuple[int, int]] = []


def configure(verbose: bool) -> None:
    """Set up stderr logging for one command (idempotent: a second call replaces the first's handler).

    Like :func:`logging.basicConfig`, it leaves a logging setup of the host alone: when the root logger has
    handlers of someone else (an application or a test runner calling :func:`radiogenomics.cli.app.main` in its
    process), only the environment defaults are set.
    """
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    root = logging.getLogger()
    restore()
    if any(not _ours(h) for h in root.handlers):
        return
    _SAVED.append((root.level, logging.getLogger(PACKAGE).level))
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_Threshold(logging.DEBUG, logging.INFO) if verbose
                      else _Threshold(logging.WARNING, logging.ERROR))
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    _set_levels(detail=verbose)
    logging.captureWarnings(True)
    if "mlflow" in sys.modules:  # imported before (in-process use): undo its own stderr handlers
        for name in MLFLOW_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = [h for h in logger.handlers if _ours(h)]
            logger.propagate = True
            logger.setLevel(logging.NOTSET)


def restore() -> None:
    """Undo :func:`configure` (the end of an in-process command): our handlers off, levels and warnings back."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if _ours(h)]:
        root.removeHandler(handler)
    if _SAVED:
        root_level, package_level = _SAVED.pop()
        root.setLevel(root_level)
        logging.getLogger(PACKAGE).setLevel(package_level)
        logging.captureWarnings(False)


def _set_levels(detail: bool) -> None:
    """Logger levels: records below them are never created. ``detail``: -v or a log file wants them."""
    logging.getLogger().setLevel(logging.INFO if detail else logging.WARNING)
    logging.getLogger(PACKAGE).setLevel(logging.DEBUG if detail else logging.NOTSET)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def run_log(path: Path | None, announce: Callable[[str], None] | None = None) -> Iterator[Path | None]:
    """Write every record of the run to ``path`` (the package's from DEBUG, others' from INFO) while inside.

    ``announce`` (default: a line on stdout) gets ``log: PATH`` once. ``path`` None: no file. The file is
    truncated: it describes this run only. Under a host's logging setup (see :func:`configure`) the host's logger
    levels decide what reaches the file.
    """
    if path is None:
        yield None
        return
    path = Path(path).resolve()
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_Threshold(logging.DEBUG, logging.INFO))
    root = logging.getLogger()
    levels = (root.level, logging.getLogger(PACKAGE).level)
    root.addHandler(handler)
    if not any(not _ours(h) and h is not handler for h in root.handlers):  # a host's setup keeps its levels
        _set_levels(detail=True)
    (announce or print)(f"log: {path}")
    try:
        yield path
    except BaseException:
        logging.getLogger(PACKAGE).debug("the command stopped with an exception", exc_info=True)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(levels[0])
        logging.getLogger(PACKAGE).setLevel(levels[1])
