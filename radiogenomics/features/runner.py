"""Run work items: in-process, on a local process pool (default) or on a Dask distributed cluster.

All three backends call :func:`radiogenomics.features.tasks.run_patient` (one task per patient: its items share
the decoded images) and through it :func:`radiogenomics.features.tasks.run_item`, which never raises, so a failing
item cannot stop the run. Results arrive as they finish; a rich progress bar with ETA is shown on
stderr when ``progress`` is true.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.features.tasks import ItemResult, WorkItem, lookup, run_patient
from radiogenomics.progress import progress_bar

log = logging.getLogger(__name__)

#: Modules the forkserver imports once, so that each worker forks with them already loaded.
_PRELOAD = ["radiogenomics.features.tasks", "radiogenomics.features.radiomics_extraction",
            "radiogenomics.features.dosimetric", "radiogenomics.cohort", "radiogenomics.radiobiology",
            "radiomics.featureextractor", "radiomics.glcm", "radiomics.glrlm", "radiomics.glszm", "radiomics.gldm",
            "radiomics.ngtdm", "radiomics.shape", "radiomics.firstorder", "pywt"]


def default_workers() -> int:
    """CPU cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


#: Environment variables that size the thread pools of OpenMP, OpenBLAS and MKL (read when they start).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _pin_threads(n: int) -> dict[str, Any]:
    """Limit SimpleITK/ITK, torch and the BLAS/OpenMP pools of this process to ``n`` threads; returns the previous
    settings for :func:`_restore_threads`. The environment variables cover pools not started yet (a worker's), and
    threadpoolctl the ones numpy or scipy already loaded."""
    previous: dict[str, Any] = {"env": {var: os.environ.get(var) for var in THREAD_ENV}}
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    try:
        import SimpleITK as sitk

        previous["sitk"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    except Exception:  # pragma: no cover - SimpleITK is a hard dependency
        pass
    import sys

    if "torch" in sys.modules:  # not imported yet: it reads OMP_NUM_THREADS (set above) when it is
        try:
            import torch

            previous["torch"] = torch.get_num_threads()
            torch.set_num_threads(n)
        except Exception:  # torch is only needed for deep features
            pass
    try:
        from threadpoolctl import threadpool_limits

        previous["threadpoolctl"] = threadpool_limits(limits=n)
    except Exception:  # optional: without it the environment variables above are what limits BLAS
        pass
    return previous


def _restore_threads(previous: dict[str, Any]) -> None:
    for var, value in previous.get("env", {}).items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    if "sitk" in previous:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous["sitk"])
    if "torch" in previous:
        import torch

        torch.set_num_threads(previous["torch"])
    if "threadpoolctl" in previous:
        previous["threadpoolctl"].restore_original_limits()


def _worker_init(log_queue: Any = None, levels: tuple[int, int] = (logging.WARNING, logging.NOTSET)) -> None:
    """Pin numeric libraries to one thread per worker process: parallelism comes from the processes. With a
    ``log_queue``, the worker's log records (and Python warnings) go back to the parent process through it, created
    at the parent's ``levels`` (root, package): the parent's handlers (the command line's stderr rules and run
    log) decide what is shown and kept."""
    _pin_threads(1)
    if log_queue is not None:
        from logging.handlers import QueueHandler

        root = logging.getLogger()
        root.handlers = [QueueHandler(log_queue)]
        root.setLevel(levels[0])
        logging.getLogger("radiogenomics").setLevel(levels[1])
        logging.captureWarnings(True)


def _pool_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


Job = tuple[WorkItem, str]  # an item and its cache key ("" = no cache)
Group = list[Job]  # the jobs of one patient, run as one task

#: Times a broken process pool (a worker killed by a crash or the OOM killer) is replaced before the
#: items still pending are reported as failed.
POOL_RESTARTS = 2


def warm_up_pool() -> None:
    """Start the forkserver now, so that it imports pyradiomics and the readers in its own process while this
    one loads the cohort and hashes the inputs (no effect where forkserver is unavailable)."""
    ctx = _pool_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _expected_cost(job: Job) -> tuple[int, int, str]:
    """Sort key putting expensive items first (longest-processing-time-first balances the workers' tails)."""
    item = job[0]
    rank = {"deep": 0, "radiomics": 1, "dose": 2}.get(item.kind, 1)
    try:
        size = os.path.getsize(item.image)
    except OSError:
        size = 0
    return rank, -size, item.image


def _group_cost(group: Group) -> tuple[int, str]:
    """Sort key of a patient's task: larger image files first (the cost follows the items and their images)."""
    total = 0
    for path in {item.image for item, _key in group}:
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return -total * len(group), group[0][0].patient_id


def group_by_patient(jobs: Sequence[Job]) -> list[Group]:
    """One task per patient, in order of first appearance; items inside a task cheapest-last as before."""
    groups: dict[str, Group] = {}
    for job in jobs:
        groups.setdefault(job[0].patient_id, []).append(job)
    return [sorted(group, key=_expected_cost) for group in groups.values()]


class _Forward(logging.Handler):
    """Handles a worker's log record in this process, as if logged here (its logger's handlers and the root's)."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


@contextmanager
def _worker_logs(ctx: multiprocessing.context.BaseContext) -> Iterator[tuple[Any, tuple[int, int]]]:
    """(queue, levels) for :func:`_worker_init`; the records arriving on the queue are handled here meanwhile."""
    from logging.handlers import QueueListener

    queue = ctx.Queue()
    listener = QueueListener(queue, _Forward())
    listener.start()
    try:
        yield queue, (logging.getLogger().getEffectiveLevel(), logging.getLogger("radiogenomics").getEffectiveLevel())
    finally:
        listener.stop()
        queue.close()


def _iter_local(groups: Sequence[Group], cache_dir: str | None, workers: int,
                threads: int = 1) -> Iterator[ItemResult]:
    if workers <= 1:
        # in this process, with the cores asked for (`--workers 1`: one core, also for ITK, torch and BLAS; a single
        # patient's task with more workers asked for gets their number of threads instead of processes)
        previous = _pin_threads(threads)
        try:
            for group in groups:
                yield from run_patient(group, cache_dir)
        finally:
            _restore_threads(previous)
        return
    with _worker_logs(_pool_context()) as log_args:
        yield from _iter_pool(groups, cache_dir, workers, log_args)


def _iter_pool(groups: Sequence[Group], cache_dir: str | None, workers: int,
               log_args: tuple[Any, tuple[int, int]]) -> Iterator[ItemResult]:
    pending = [list(group) for group in groups]
    for attempt in range(POOL_RESTARTS + 1):
        done: set[str] = set()
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=_pool_context(),
                                     initializer=_worker_init, initargs=log_args) as pool:
                futures = [pool.submit(run_patient, group, cache_dir) for group in pending]
                for future in as_completed(futures):
                    for result in future.result():
                        done.add(result.item.item_id)
                        yield result
            return
        except BrokenProcessPool:
            pending = [kept for group in pending
                       if (kept := [(item, key) for item, key in group if item.item_id not in done])]
            log.warning("a worker process died; %d item(s) pending (restart %d of %d)",
                        sum(len(g) for g in pending), attempt + 1, POOL_RESTARTS)
    for item, _key in (job for group in pending for job in group):
        yield ItemResult(item=item, status="failed", error_type="WorkerDied",
                         reason="the worker process died while computing (crash or out of memory)")


def _iter_dask(groups: Sequence[Group], cache_dir: str | None, address: str) -> Iterator[ItemResult]:
    from radiogenomics.dask_cluster import connect

    with connect(address) as client:
        from distributed import as_completed as dask_as_completed

        futures = [client.submit(run_patient, group, cache_dir, pure=False, key=f"rg-{i}-{group[0][0].patient_id}")
                   for i, group in enumerate(groups)]
        for future in dask_as_completed(futures):
            yield from future.result()


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[ItemResult], None]]:
    counts = {"done": 0, "computed": 0, "cached": 0, "failed": 0}
    with progress_bar("extract", enabled=enabled) as update:

        def advance(result: ItemResult) -> None:
            counts["done"] += 1
            counts[result.status] = counts.get(result.status, 0) + 1
            update(counts["done"], total,
                   f"{counts['computed']} new, {counts['cached']} cached, {counts['failed']} failed")

        yield advance


def run_items(items: Sequence[WorkItem], cache_dir: str | None, *, workers: int = 0,
              dask_address: str | None = None, progress: bool = False) -> list[ItemResult]:
    """Run every item and return the results in the order of ``items``.

    ``workers``: local processes (0 = all cores, 1 = in this process). ``dask_address``: run on that Dask
    scheduler instead (the cache folder must be reachable from its workers).
    """
    if workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}")
    order = {item.item_id: i for i, item in enumerate(items)}
    if len(order) != len(items):
        raise ValueError("work items must have unique ids")
    results: list[ItemResult | None] = [None] * len(items)
    with _progress_bar(len(items), progress) as advance:
        jobs: list[Job] = []
        for item in items:  # cache hits are answered here, without starting any worker
            key, hit = lookup(item, cache_dir)
            if hit is not None:
                results[order[item.item_id]] = hit
                advance(hit)
            else:
                jobs.append((item, key))
        groups = group_by_patient(jobs)
        asked = workers or default_workers()
        n = max(1, min(asked, len(groups)))
        if n > 1 and not dask_address:
            groups.sort(key=_group_cost)
        source = (_iter_dask(groups, cache_dir, dask_address) if dask_address and groups
                  else _iter_local(groups, cache_dir, n, threads=asked if n == 1 else 1))
        for result in source:
            results[order[result.item.item_id]] = result
            advance(result)
            if result.status == "failed":
                log.warning("%s failed: %s", result.item.item_id, result.reason)
    return [r for r in results if r is not None]
