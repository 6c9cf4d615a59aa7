"""`radiogenomics train --dask ADDRESS`: the nested cross-validations run as tasks on a Dask cluster.

The unit of work (:class:`Unit`) is one outer fold of one candidate of one task (its inner Optuna search, the
refit on the outer training rows and the predictions on the outer test rows), or that candidate's final search
and refit on all rows: ``candidates x (outer folds + 1)`` units per task, all submitted at once. Inside a unit
the search runs as it does locally, trial after trial, so the trials and the chosen parameters are those of a
local run with the same seed.

* **Inputs by value.** Each task's rows and labels are one task of the graph (``rg-train-<run>-<task>-data``,
  its value held in the scheduler's task spec); the units depend on it and get the configuration, the candidate's
  context and the outer fold's rows by value. A worker reads no file of the coordinator, except the cohort's
  images for the ``multimodal`` candidate, which must be at the same path on the workers (a shared
  filesystem; a unit fails with exit 2 when the folder is not there).
* **Lost workers.** Units are pure (same inputs, same result) and keyed by run, task, candidate and fold; when a
  worker dies the scheduler recomputes its units and their data on another worker (up to
  ``distributed.scheduler.allowed-failures`` times). Exceptions are not retried: they are deterministic.
* **One coordinator.** Workers never touch MLflow or the Optuna storage: they search in memory and send back the
  finished trials, the fold's predictions (or the final model), their calibration notes and warnings. The
  coordinator (the command) writes the trials into ``search.storage`` (default ``OUT/runs/<run id>/optuna.db``)
  and logs them as nested runs, logs every metric, selects the winners and registers them once, as a local run
  does. A search is never resumed from the storage with ``--dask``: every run searches afresh.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.dask_cluster import connect
from radiogenomics.errors import InputError
from radiogenomics.progress import ProgressUpdate, progress_bar
from radiogenomics.training.candidates import CandidateContext
from radiogenomics.training.config import TrainConfig
from radiogenomics.training.nested_cv import FinalFit, FoldPredictions, NestedCV, NestedCVResult
from radiogenomics.training.splits import Fold

log = logging.getLogger(__name__)

#: Name of the final search and refit unit of a candidate (the outer folds' units are named by their fold).
FINAL = "final"


@dataclass(frozen=True)
class Unit:
    """One unit of work: an outer fold (``fold``) of a candidate of a task, or its final search and refit
    (``fold`` None)."""

    task: str
    endpoint: str | None
    candidate: str
    context: CandidateContext
    config: TrainConfig
    score_fixed: bool
    fold: Fold | None = None

    @property
    def name(self) -> str:
        return self.fold.name if self.fold is not None else FINAL


@dataclass
class UnitResult:
    """What a unit sends back: the fold's predictions or the final fit, the finished trials of its search (by
    study name), calibration notes and warning records (``(logger, level, message)``), compute time and worker."""

    fold: FoldPredictions | None
    final: FinalFit | None
    trials: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)
    records: list[tuple[str, int, str]] = field(default_factory=list)
    seconds: float = 0.0
    worker: str = ""


class _Collect(logging.Handler):
    """Keeps the records of one thread (a unit; a worker may run several at once in threads)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append((record.name, record.levelno, record.getMessage()))


@contextmanager
def _captured_records() -> Iterator[list[tuple[str, int, str]]]:
    """The package's warning records inside (sent back with the unit and logged by the coordinator)."""
    handler = _Collect()
    logger = logging.getLogger("radiogenomics")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def _task_data(rows: pd.DataFrame, y: Any) -> tuple[pd.DataFrame, Any]:
    """The value of a task's data node (its arguments, kept by the scheduler for a recomputation)."""
    return rows, y


def worker_config(config: TrainConfig) -> TrainConfig:
    """The configuration the units get: the coordinator's without ``search.storage``, so a worker's search runs
    in memory (:meth:`~radiogenomics.training.config.SearchConfig.storage_url` None) and only the coordinator
    writes the trials into the storage."""
    return config.model_copy(update={"search": config.search.model_copy(update={"storage": None})})


def run_unit(unit: Unit, data: tuple[pd.DataFrame, Any]) -> UnitResult:
    """(on a worker) Compute one unit: the candidate's nested CV prepared as on the coordinator, without tracker
    and storage (the search runs in memory), then the outer fold or the final search and refit."""
    from radiogenomics.models.toxicity import calibration_notes
    from radiogenomics.training.run import candidate_cv

    started = time.perf_counter()
    rows, y = data
    with _captured_records() as records, calibration_notes() as notes:
        cv = candidate_cv(unit.task, unit.endpoint, unit.candidate, rows, y, unit.config, unit.context,
                          score_fixed=unit.score_fixed)
        images = cv.predict_params.get("cohort")
        if images is not None and not Path(images).is_dir():
            raise InputError(f"the cohort folder {images} is not visible on the Dask worker {os.uname().nodename}: "
                             f"the {unit.candidate} candidate reads the images from it",
                             fix="put the cohort on a filesystem the workers mount at the same path, or train "
                                 "without --dask")
        fold = cv.outer_fold(unit.fold) if unit.fold is not None else None
        final = cv.final() if unit.fold is None else None
    return UnitResult(fold, final, cv.trials, list(notes), records, time.perf_counter() - started,
                      f"{os.uname().nodename}:{os.getpid()}")


class DaskTraining:
    """The coordinator's side: :meth:`submit` every unit of a task up front, then :meth:`evaluate` (a
    :data:`~radiogenomics.training.run.Evaluate` for :func:`~radiogenomics.training.run.run_task`) collects one
    candidate's units in fold order, replays their searches into the storage and the tracker and returns the
    nested-CV result a local run would have computed."""

    def __init__(self, client: Any, run_key: str, config: TrainConfig, tracker: Any, run_dir: Path,
                 update: ProgressUpdate) -> None:
        self.client, self.run_key, self.config = client, run_key, config
        self.tracker, self.run_dir, self.update = tracker, run_dir, update
        #: The configuration sent to the workers (:func:`worker_config`: no Optuna storage).
        self.worker_config = worker_config(config)
        #: Per (task label, candidate): its prepared nested CV and (unit name, future) in fold order, final last;
        #: or the InputError that kept it from being prepared (raised by :meth:`evaluate`, where a local run
        #: raises it, so :func:`~radiogenomics.training.run.run_task` skips or reports it the same way).
        self.pending: dict[tuple[str, str], tuple[NestedCV, list[tuple[str, Any]]] | InputError] = {}
        self.submitted = self.done = 0

    def submit(self, task: str, endpoint: str | None, names: list[str], rows: pd.DataFrame, y: Any, cohort: Path,
               score_fixed: bool) -> None:
        """Submit the units of every candidate of one task (``cohort``: the path the workers see)."""
        from radiogenomics.training.run import candidate_context, candidate_cv

        label = f"{task}.{endpoint}" if endpoint else task
        prefix = f"rg-train-{self.run_key}-{label}"
        data = self.client.submit(_task_data, rows, y, key=f"{prefix}-data", pure=False)
        for name in names:
            context = candidate_context(self.config, task, endpoint, name, cohort)
            try:
                cv = candidate_cv(task, endpoint, name, rows, y, self.config, context, score_fixed=score_fixed,
                                  tracker=self.tracker, run_dir=self.run_dir)
                folds = cv.outer_folds()
            except InputError as exc:  # e.g. folds that cannot be built: reported by evaluate, as a local run does
                self.pending[(label, name)] = exc
                continue
            units = [Unit(task, endpoint, name, context, self.worker_config, score_fixed, fold)
                     for fold in (*folds, None)]
            futures = [(unit.name, self.client.submit(run_unit, unit, data, key=f"{prefix}-{name}-{unit.name}",
                                                      pure=False)) for unit in units]
            self.pending[(label, name)] = (cv, futures)
            self.submitted += len(futures)
        self.update(self.done, self.submitted)

    def evaluate(self, task: str, endpoint: str | None, name: str, rows: pd.DataFrame, y: Any,
                 context: CandidateContext, score_fixed: bool) -> tuple[NestedCVResult, float]:
        """The submitted candidate's nested CV, collected (the other arguments are those it was submitted with)."""
        from radiogenomics.models.toxicity import _calibration_note  # appends to run_task's collection

        label = f"{task}.{endpoint}" if endpoint else task
        pending = self.pending.pop((label, name))
        if isinstance(pending, InputError):
            raise pending
        cv, futures = pending
        results: list[UnitResult] = []
        for unit, future in futures:
            results.append(future.result())
            self.done += 1
            self.update(self.done, self.submitted, f"{label}/{name} {unit}")
        folds: list[FoldPredictions] = []
        for (unit, _), result in zip(futures, results, strict=True):
            log.debug("%s/%s %s computed on %s in %.1f s", label, name, unit, result.worker, result.seconds)
            for logger, level, message in result.records:
                logging.getLogger(logger).log(level, "%s", message)
            for kind, message in result.notes:
                _calibration_note(kind, message)
            for study, trials in result.trials.items():
                cv.record_search(study, unit, trials)
            if result.fold is not None:
                folds.append(result.fold)
                cv.report_fold(result.fold)
        final = results[-1].final
        assert final is not None, "the last unit of a candidate is its final fit"
        return cv.collect(folds, final), sum(r.seconds for r in results)


@contextmanager
def dask_training(address: str, run_key: str, config: TrainConfig, tracker: Any, run_dir: Path,
                  progress: bool) -> Iterator[DaskTraining]:
    """A :class:`DaskTraining` on the scheduler at ``address`` with a progress bar counting units; the client
    closes (and the units still pending are released) on exit."""
    with connect(address) as client, progress_bar("train on dask", enabled=progress) as update:
        yield DaskTraining(client, run_key, config, tracker, run_dir, update)
