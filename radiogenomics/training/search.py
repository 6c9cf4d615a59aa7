"""Optuna hyperparameter search on RDB storage, shareable by several worker processes or machines.

* Storage: ``optuna.storages.RDBStorage`` on the configured URL (``sqlite:///<run folder>/optuna.db`` by
  default; a ``postgresql://`` URL works the same and lets several machines share one study). ``None`` keeps
  the study in memory (tests, throw-away searches).
* Sampler: TPE with a fixed seed (``seed + worker``, so two workers do not propose the same points).
* Studies are opened with ``load_if_exists=True``: a second worker, or a re-run after a crash, joins the
  study and its finished trials count towards the budget.
* Budget: ``n_trials`` is the study's total over all workers. Before each trial a worker counts the study's
  trials in every state (running ones included) and stops at ``n_trials``. Counting and starting a trial
  happen under :func:`budget_lock`, so two workers cannot both take the last slot: an exclusive lock file
  next to a sqlite database (local processes), a PostgreSQL advisory lock (several machines). Other databases
  get no lock and may overshoot by up to one trial per extra worker.
* Each trial is logged as a nested MLflow run under the training's parent run (optuna-integration's
  ``MLflowCallback`` is deprecated), from inside the objective (:class:`~radiogenomics.training.tracking.Tracker`).
"""

from __future__ import annotations

import fcntl
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import optuna
import sqlalchemy
from optuna.trial import TrialState

from radiogenomics.errors import InputError

if TYPE_CHECKING:
    from radiogenomics.training.tracking import Tracker

log = logging.getLogger(__name__)

#: ``search_space(trial) -> params``: draws one set of hyperparameters from an Optuna trial.
SearchSpace = Callable[[optuna.Trial], dict[str, Any]]
#: ``evaluate(params) -> score``: the objective's value for one set of hyperparameters.
Evaluate = Callable[[dict[str, Any]], float]
#: ``on_trial(n_done, note)``: called after each finished trial (progress bars).
OnTrial = Callable[[int, str], None]


def open_storage(url: str | None) -> optuna.storages.BaseStorage | None:
    """An ``RDBStorage`` for ``url`` (sqlite waits up to 60 s for a lock held by another worker); None: memory."""
    if url is None:
        return None
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # sqlalchemy raises many types for a bad URL or an unreachable server
        raise InputError(f"cannot open the Optuna storage {url!r}: {' '.join(str(exc).split())[:300]}",
                         fix="set search.storage to a reachable RDB URL (sqlite:///path.db, postgresql://...)"
                         ) from None


def open_study(storage_url: str | None, study_name: str, *, direction: Literal["minimize", "maximize"], seed: int,
               worker: int = 0) -> optuna.Study:
    """Create or join the study ``study_name`` with a seeded TPE sampler.

    Workers starting together would race to create the storage's tables and the study (sqlite: a UNIQUE
    constraint error in one of them), so creation holds the same lock as the trial budget.
    """
    sampler = optuna.samplers.TPESampler(seed=seed + worker)
    with _quiet_optuna(), budget_lock(storage_url):
        return optuna.create_study(storage=open_storage(storage_url), study_name=study_name, direction=direction,
                                   sampler=sampler, load_if_exists=True)


def _n_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False))


@contextmanager
def budget_lock(storage_url: str | None) -> Iterator[None]:
    """Hold an exclusive lock shared by every worker of ``storage_url`` (see the module doc); a no-op for
    in-memory storage and databases other than sqlite and PostgreSQL."""
    url = None if storage_url is None else sqlalchemy.engine.make_url(storage_url)
    backend = "" if url is None else url.get_backend_name()
    if url is not None and backend == "sqlite" and url.database not in (None, "", ":memory:"):
        with open(f"{url.database}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif storage_url is not None and backend == "postgresql":
        key = zlib.crc32(b"radiogenomics-optuna-budget")
        with _engine(storage_url).connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    else:
        yield


_ENGINES: dict[str, sqlalchemy.engine.Engine] = {}


def _engine(url: str) -> sqlalchemy.engine.Engine:
    if url not in _ENGINES:
        _ENGINES[url] = sqlalchemy.create_engine(url, pool_size=1)
    return _ENGINES[url]


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO on stderr; the progress bar replaces that."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def run_search(study: optuna.Study, search_space: SearchSpace, evaluate: Evaluate, *, n_trials: int,
               timeout_s: float | None = None, tracker: Tracker | None = None,
               tags: Mapping[str, str] | None = None, on_trial: OnTrial | None = None,
               storage_url: str | None = None) -> optuna.Study:
    """Run trials until the study holds ``n_trials`` (all workers together) or ``timeout_s`` has passed.

    ``storage_url``: the study's storage, for :func:`budget_lock` (None: no lock, fine for a single worker).
    A trial whose score is NaN or infinite is told FAIL and the search goes on; an exception in ``evaluate``
    is told FAIL and re-raised (a bug should not be averaged away). Returns the study.
    """
    started = time.monotonic()
    done = 0
    with _quiet_optuna():
        while True:
            if timeout_s is not None and time.monotonic() - started >= timeout_s:
                log.info("search %s stopped by its %.0f s timeout", study.study_name, timeout_s)
                break
            with budget_lock(storage_url):
                if _n_trials(study) >= n_trials:
                    break
                trial = study.ask()
            params = search_space(trial)
            try:
                if tracker is None:
                    value = evaluate(params)
                else:
                    with tracker.trial_run(study.study_name, trial.number, params, tags=tags) as log_value:
                        value = evaluate(params)
                        log_value(value)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            if math.isfinite(value):
                study.tell(trial, value)
            else:
                log.warning("trial %d of %s scored %s; told FAIL", trial.number, study.study_name, value)
                study.tell(trial, state=TrialState.FAIL)
            done += 1
            if on_trial is not None:
                on_trial(done, f"trial {trial.number}")
    return study


def best_params(study: optuna.Study, search_space: SearchSpace) -> dict[str, Any]:
    """The full parameters of the best finished trial: ``search_space`` replayed on a ``FixedTrial`` of its
    suggested values, so fixed or derived entries of the dict come back too. An error when no trial finished."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        raise RuntimeError(f"no trial of study {study.study_name!r} finished; see the failed trials' logs")
    return trial_params(study.best_trial, search_space)


def trial_params(trial: optuna.trial.FrozenTrial, search_space: SearchSpace) -> dict[str, Any]:
    """The full parameters of a finished trial (``search_space`` replayed on its suggested values): what the
    objective was called with."""
    return search_space(optuna.trial.FixedTrial(trial.params))  # type: ignore[arg-type]
