"""`radiogenomics train`: features -> nested CV of every candidate per task -> winners -> MLflow registry.

:func:`train` ties the training package together (docs/training.md, "Training from the command line"):

1. the feature table: ``--features`` (its patients must belong to the cohort) or a cached extraction into
   ``<out>/features.parquet``; labels come from the ``outcome.*`` columns (``genomic.rsi`` for the RSI surrogate);
2. one MLflow parent run (config, feature table as dataset input, cohort content hash, versions, git commit);
3. per enabled task (and toxicity endpoint), for each candidate (:mod:`~radiogenomics.training.candidates`):
   :func:`~radiogenomics.training.nested_cv.nested_cv` grouped by patient, stratified by centre, Optuna studies
   in ``<out>/runs/<run id>/optuna.db``; fold metrics, the candidate's pooled outer-fold metrics (for
   information), out-of-fold predictions and plots logged under ``<task>/<candidate>/``; out-of-fold predictions
   also written to ``<out>/runs/<run id>/oof/``;
4. selection inside the nested loop (:mod:`~radiogenomics.training.selection`): in each outer fold the candidate
   with the best inner-CV score is chosen, and the pooled outer predictions of these choices give the task's
   held-out metrics (logged under ``<task>/selection/``); the winner (the model registered) is the candidate
   chosen by the same rule on all patients, refitted on all patients (nested_cv's final refit);
5. :func:`~radiogenomics.training.registry.register_models` with the RSI model chosen the same way among the
   radiosensitivity and multimodal candidates, one toxicity model per endpoint (none when toxicity is not
   trained), their held-out metrics and evaluation digests: first version ``champion``, later units
   ``challenger`` unless the promotion rule promotes them.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.features import naming
from radiogenomics.training.candidates import CandidateContext, make_candidate, validate_candidates
from radiogenomics.training.config import DEFAULT_CONFIG_PATH, TrainConfig, load_train_config
from radiogenomics.training.nested_cv import NestedCV, NestedCVResult
from radiogenomics.training.selection import SELECTION_NAME, Selection, oof_metrics, select_per_fold

log = logging.getLogger(__name__)

RSI_COLUMN = naming.RSI_COLUMN
LC_EVENT, LC_MONTHS = "outcome.lc_event", "outcome.lc_months"
#: Scorer (optimised in the inner search, and the held-out selection metric) per task.
#: Tasks that are cross-validated and tracked but not registered.
UNREGISTERED_TASKS = ("outcome_alpha", "survival")
#: Tasks whose failure (no candidate could be evaluated) is noted, not fatal: the unregistered ones, and
#: ``multimodal``, an optional competitor of the radiosensitivity task (registered only when it wins).
FAILURE_TOLERANT_TASKS = (*UNREGISTERED_TASKS, "multimodal")
TASK_SCORER = {"radiosensitivity": "spearman", "multimodal": "spearman", "outcome_alpha": "c_index",
               "toxicity": "auc", "survival": "c_index"}
#: Held-out metrics handed to the registry (names ``radiosensitivity.<m>``, ``toxicity.<endpoint>.<m>``).
REGISTRY_METRICS = {"radiosensitivity": ("spearman", "mae", "coverage", "mean_width"),
                    "toxicity": ("auc", "brier", "calibration_slope", "calibration_intercept")}


@dataclass
class CandidateOutcome:
    """One candidate of one task: pooled held-out metrics, fold means, the nested-CV result or the error."""

    candidate: str
    #: Pooled outer-fold metrics of this candidate alone: for information (choosing on them is optimistic).
    heldout: dict[str, float] = field(default_factory=dict)
    fold_summary: dict[str, float] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    fit_s: float = 0.0


@dataclass
class TaskOutcome:
    """One task (``toxicity.xerostomia`` per endpoint): its candidates, the selection among them and the winner
    (the candidate chosen on all patients; None when the task could not be evaluated)."""

    label: str
    task: str
    metric: str
    candidates: list[CandidateOutcome]
    endpoint: str | None = None
    winner: str | None = None
    selection: Selection | None = None

    def winning(self) -> CandidateOutcome | None:
        return next((c for c in self.candidates if c.candidate == self.winner), None)

    @property
    def heldout(self) -> dict[str, float]:
        """The task's held-out metrics: those of the selection procedure (empty when nothing was selected)."""
        return dict(self.selection.heldout) if self.selection is not None else {}


@dataclass
class RSIChoice:
    """The RSI model to register (:func:`rsi_winner`): its task and candidate, and the selection it came from."""

    task: TaskOutcome
    candidate: CandidateOutcome
    selection: Selection

    @property
    def key(self) -> str:
        return f"{self.task.label}/{self.candidate.candidate}"


@dataclass
class TrainSummary:
    """What one `radiogenomics train` did."""

    run_id: str
    tracking_uri: str
    experiment: str
    out_dir: Path
    run_dir: Path
    features_path: Path
    n_patients: int
    tasks: list[TaskOutcome]
    registered: dict[str, Any] = field(default_factory=dict)
    registry_metrics: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def ui_command(self) -> str:
        """The command that opens the MLflow UI on the store (a server URL is opened in a browser instead)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open {self.tracking_uri} in a browser"
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children (MiB; ru_maxrss is KiB on Linux)."""
    scale = 1.0 / 1024 if sys.platform != "darwin" else 1.0 / 1024 ** 2
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * scale


# ------------------------------------------------------------------------------------------------ inputs
def cohort_patient_ids(cohort: Path) -> set[str]:
    """Patient IDs of the cohort's ``patients.csv``; InputError when the cohort is missing or unreadable."""
    patients = cohort / "patients.csv"
    if not cohort.is_dir():
        raise InputError(f"cohort folder {cohort} does not exist", file=str(cohort),
                         fix="give the path of a cohort folder (format v1)")
    if not patients.is_file():
        raise InputError("the cohort has no patients.csv", file=str(patients),
                         fix="give a cohort folder in the format of docs/cohort-format.md")
    ids = pd.read_csv(patients, usecols=["patient_id"], dtype=str)["patient_id"].dropna()
    return set(ids.astype(str))


def load_features(cohort: Path, features: Path | None, out_dir: Path, progress: bool) -> Path:
    """The feature table's path: ``features`` (checked against the cohort's patients) or a cached extraction."""
    from radiogenomics.features.schema import read_feature_table

    ids = cohort_patient_ids(cohort)
    if features is None:
        from radiogenomics.features.pipeline import ExtractOptions, extract

        features = out_dir / "features.parquet"
        summary = extract(cohort, features, ExtractOptions(progress=progress))
        if summary.failed:
            log.warning("feature extraction failed for %d item(s); reasons in %s", summary.failed, summary.failures)
    table = read_feature_table(features)
    table_ids = set(table["patient_id"].astype(str))
    foreign = sorted(table_ids - ids)
    if foreign:
        raise InputError(f"the feature table has {len(foreign)} patient(s) that are not in the cohort "
                         f"(e.g. {', '.join(foreign[:3])}): it belongs to another cohort", file=str(features),
                         fix="extract the features of this cohort, or omit --features to extract them")
    if len(table_ids) < len(ids):
        log.warning("%d cohort patient(s) have no feature row", len(ids - table_ids))
    return features


def _finite(values: Any) -> np.ndarray:
    return np.isfinite(pd.to_numeric(pd.Series(np.asarray(values, dtype=object)), errors="coerce")
                       .to_numpy(dtype=float))


def _need_columns(table: pd.DataFrame, task: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"tasks.{task} is enabled but the feature table has no {missing[0]} column",
                         fix=f"add the label to patients.csv, or set tasks.{task}.enabled: false")


def task_data(table: pd.DataFrame, task: str, endpoint: str | None = None) -> tuple[pd.DataFrame, Any]:
    """(rows with a label, the label) of a task; InputError when the task has no labels."""
    from sksurv.util import Surv

    if task in ("radiosensitivity", "multimodal"):
        _need_columns(table, task, (RSI_COLUMN,))
        keep = _finite(table[RSI_COLUMN])
        label = "a measured genomic.rsi"
    elif task == "toxicity":
        column = f"outcome.tox_{endpoint}"
        _need_columns(table, task, (column,))
        keep = _finite(table[column])
        label = f"a {column} grade"
    else:
        _need_columns(table, task, (LC_EVENT, LC_MONTHS))
        keep = _finite(table[LC_EVENT]) & _finite(table[LC_MONTHS])
        label = "lc_event and lc_months"
    rows = table.loc[keep].reset_index(drop=True)
    if int(keep.sum()) < 10:
        raise InputError(f"tasks.{task}{'.' + endpoint if endpoint else ''}: only {int(keep.sum())} patient(s) "
                         f"have {label}; need >= 10", fix=f"add labels or set tasks.{task}.enabled: false")
    if task in ("radiosensitivity", "multimodal"):
        return rows, rows[RSI_COLUMN].astype(float).to_numpy()
    if task == "toxicity":
        grade = pd.to_numeric(rows[f"outcome.tox_{endpoint}"], errors="coerce").to_numpy(dtype=float)
        y = (grade >= 2.0).astype(np.int64)  # grade >= 2 (CTCAE), the event of docs/models.md
        if y.min() == y.max():
            raise InputError(f"tasks.toxicity: every patient has the same tox_{endpoint} class (grade >= 2: "
                             f"{int(y[0])})", fix="train on a cohort with and without the toxicity")
        return rows, y
    return rows, Surv.from_arrays(rows[LC_EVENT].astype(float).to_numpy() > 0.5,
                                  rows[LC_MONTHS].astype(float).to_numpy())


# ---------------------------------------------------------------------------------------------- metrics
def pooled_metrics(result: Any) -> dict[str, float]:
    """Metrics of one nested CV's pooled out-of-fold predictions (rows never tested left out)."""
    return oof_metrics(result.oof, result.kind)


def select_task(outcome: TaskOutcome) -> Selection | None:
    """Selection inside the nested loop among the task's evaluated candidates (:func:`select_per_fold`; failed
    candidates take no part); None when none was evaluated."""
    evaluated = [(c.candidate, c.result) for c in outcome.candidates if c.error is None]
    return select_per_fold(evaluated, outcome.metric) if evaluated else None


# ----------------------------------------------------------------------------------------------- tasks
def _task_jobs(config: TrainConfig, table: pd.DataFrame) -> list[tuple[str, str | None, list[str]]]:
    """(task, endpoint, candidates) in run order; toxicity once per endpoint."""
    jobs: list[tuple[str, str | None, list[str]]] = []
    for task in ("radiosensitivity", "multimodal", "outcome_alpha", "toxicity", "survival"):
        section = getattr(config.tasks, task)
        if not section.enabled:
            continue
        if task == "toxicity":
            endpoints = config.tasks.toxicity.resolve_endpoints(table.columns)
            if not endpoints:
                raise InputError("tasks.toxicity is enabled but the feature table has no outcome.tox_* column",
                                 fix="add tox_<endpoint> grades to patients.csv and re-extract, or set "
                                     "tasks.toxicity.enabled: false")
            jobs += [(task, e.removeprefix("tox_"), list(section.candidates)) for e in endpoints]
        else:
            jobs.append((task, None, list(section.candidates)))
    return jobs


def candidate_context(config: TrainConfig, task: str, endpoint: str | None, name: str,
                      cohort: Path) -> CandidateContext:
    """What the factory of candidate ``name`` of ``task`` gets: the seed, the endpoint, the cohort and the
    configured fixed parameters."""
    return CandidateContext(seed=config.seed, endpoint=endpoint, cohort=cohort,
                            params=getattr(config.tasks, task).params.get(name))


def candidate_cv(task: str, endpoint: str | None, name: str, rows: pd.DataFrame, y: Any, config: TrainConfig,
                 context: CandidateContext, *, score_fixed: bool, tracker: Any = None,
                 run_dir: Path | None = None) -> NestedCV:
    """The nested CV of one candidate of one task, prepared (:class:`~radiogenomics.training.nested_cv.NestedCV`):
    the same on the coordinator (with tracker and run folder) and on a Dask worker (without)."""
    from radiogenomics.training.splits import groups_and_strata

    candidate = make_candidate(task, name, context)
    prefix = f"{task}.{endpoint}/{name}" if endpoint else f"{task}/{name}"
    groups, strata = groups_and_strata(rows, config.cv)
    cfg = config
    if candidate.fixed:  # nothing to search: nested_cv skips the search; one progress step per fold
        cfg = config.model_copy(update={"search": config.search.model_copy(update={"n_trials": 1})})
    return NestedCV(candidate.build, candidate.space, rows, y, scorer=TASK_SCORER[task], config=cfg, groups=groups,
                    strata=strata, tracker=tracker, run_dir=run_dir, study_prefix=prefix, metric_prefix=f"{prefix}/",
                    predict_params=candidate.predict_params, score_fixed=score_fixed)


#: ``evaluate(task, endpoint, name, rows, y, context, score_fixed) -> (nested-CV result, compute seconds)``: runs
#: (or, with --dask, collects) the nested CV of one candidate (:func:`local_evaluator`, :mod:`.cluster`).
Evaluate = Callable[[str, "str | None", str, pd.DataFrame, Any, CandidateContext, bool], "tuple[NestedCVResult, float]"]


def local_evaluator(config: TrainConfig, tracker: Any, run_dir: Path, progress: bool) -> Evaluate:
    """Each candidate's nested CV in this process, when :func:`run_task` asks for it."""
    def evaluate(task: str, endpoint: str | None, name: str, rows: pd.DataFrame, y: Any, context: CandidateContext,
                 score_fixed: bool) -> tuple[NestedCVResult, float]:
        started = time.monotonic()
        cv = candidate_cv(task, endpoint, name, rows, y, config, context, score_fixed=score_fixed, tracker=tracker,
                          run_dir=run_dir)
        return cv.run(progress), time.monotonic() - started
    return evaluate


def _run_candidate(task: str, endpoint: str | None, name: str, rows: pd.DataFrame, y: Any,
                   context: CandidateContext, tracker: Any, run_dir: Path, evaluate: Evaluate,
                   score_fixed: bool = False) -> CandidateOutcome:
    result, seconds = evaluate(task, endpoint, name, rows, y, context, score_fixed)
    label = f"{task}.{endpoint}" if endpoint else task
    prefix = f"{label}/{name}"
    tracker.log_result(result, prefix=f"{prefix}/")
    heldout = pooled_metrics(result)
    import mlflow

    mlflow.log_metrics({f"{prefix}/heldout.{k}": v for k, v in heldout.items() if math.isfinite(v)},
                       run_id=tracker.parent_run_id)
    oof = result.oof.copy()
    if task == "outcome_alpha":
        oof["alpha_per_gy"] = -oof["y_pred"]
    oof_dir = run_dir / "oof"
    oof_dir.mkdir(parents=True, exist_ok=True)
    oof.to_csv(oof_dir / f"{label}__{name}.csv", index=False)
    log.info("%s: pooled outer-fold metrics of this candidate (information) %s", prefix,
             ", ".join(f"{k}={v:.3f}" for k, v in heldout.items()))
    return CandidateOutcome(name, heldout, result.summary(), result, fit_s=seconds)


def log_selection(selection: Selection, label: str, tracker: Any, run_dir: Path) -> None:
    """The selection's held-out metrics (``<label>/selection/heldout.<metric>``), its choices and scores
    (``<label>/selection/selection.json``, tag ``selection.<label>``) and pooled out-of-fold predictions
    (``<label>/selection/oof_predictions.csv`` and ``oof/<label>__selection.csv``)."""
    import mlflow

    run_id = tracker.parent_run_id
    mlflow.log_metrics({f"{label}/{SELECTION_NAME}/heldout.{k}": v for k, v in selection.heldout.items()
                        if math.isfinite(v)}, run_id=run_id)
    mlflow.set_tag(f"selection.{label}", selection.describe()[:5000])
    tracker.client.log_dict(run_id, selection.to_dict(), f"{label}/selection/selection.json")
    tracker.client.log_text(run_id, selection.oof.to_csv(index=False), f"{label}/selection/oof_predictions.csv")
    oof = selection.oof.copy()
    if label == "outcome_alpha":
        oof["alpha_per_gy"] = -oof["y_pred"]
    oof_dir = run_dir / "oof"
    oof_dir.mkdir(parents=True, exist_ok=True)
    oof.to_csv(oof_dir / f"{label}__selection.csv", index=False)
    log.info("%s: selection per fold %s, final %s; held-out %s", label, selection.describe(), selection.final,
             ", ".join(f"{k}={v:.3f}" for k, v in selection.heldout.items()))


def run_task(task: str, endpoint: str | None, names: list[str], table: pd.DataFrame, config: TrainConfig,
             cohort: Path, tracker: Any, run_dir: Path, progress: bool, *, skip_bad_input: bool,
             compare: bool | None = None, evaluate: Evaluate | None = None) -> TaskOutcome:
    """Every candidate of one task, then the selection among them (:func:`select_task`); a candidate that
    refuses the input (InputError) is recorded as failed when ``skip_bad_input`` (auto-detected toxicity
    endpoints), else the error propagates. ``compare``: candidates with fixed parameters are scored by inner CV
    too (default: when the task has more than one candidate). ``evaluate``: where the nested CVs run (default:
    in this process, :func:`local_evaluator`)."""
    from radiogenomics.models.toxicity import calibration_notes

    rows, y = task_data(table, task, endpoint)
    compare = len(names) > 1 if compare is None else compare
    outcome = TaskOutcome(f"{task}.{endpoint}" if endpoint else task, task, TASK_SCORER[task], [], endpoint)
    evaluate = evaluate or local_evaluator(config, tracker, run_dir, progress)
    per_candidate: dict[str, int] = {}  # calibration notes per candidate
    with calibration_notes() as notes:  # one line for the task below, not one per calibration fold
        for name in names:
            context = candidate_context(config, task, endpoint, name, cohort)
            before = len(notes)
            try:
                outcome.candidates.append(_run_candidate(task, endpoint, name, rows, y, context, tracker, run_dir,
                                                         evaluate, score_fixed=compare))
            except InputError as exc:
                if not skip_bad_input:
                    raise
                log.warning("%s/%s skipped: %s", outcome.label, name, exc)
                outcome.candidates.append(CandidateOutcome(name, error=str(exc)))
            if len(notes) > before:
                per_candidate[name] = len(notes) - before
    if per_candidate:
        kinds = Counter(kind for kind, _ in notes)
        log.warning("%s: calibration notes over the folds' fits (%s): %s; each at DEBUG (-v, or the run's log)",
                    outcome.label, ", ".join(f"{k} {v}" for k, v in per_candidate.items()),
                    "; ".join(f"{n} x {kind}" for kind, n in kinds.items()))
    outcome.selection = select_task(outcome)
    if outcome.selection is not None:
        log_selection(outcome.selection, outcome.label, tracker, run_dir)
        if math.isfinite(outcome.selection.heldout.get(outcome.metric, math.nan)):
            outcome.winner = outcome.selection.final
    return outcome


# ------------------------------------------------------------------------------------------- registry
#: Tasks whose candidates compete for the registered RSI model (:func:`rsi_winner`).
RSI_TASKS = ("radiosensitivity", "multimodal")


def rsi_winner(outcomes: list[TaskOutcome]) -> RSIChoice | None:
    """The RSI model to register, chosen like a task's winner (:func:`select_per_fold`) among every evaluated
    candidate of ``radiosensitivity`` and ``multimodal`` whose model has conformal intervals
    (``predict_interval``: RSISurrogate, MultimodalRSI), in run order (radiosensitivity first: ties go to it).
    Its held-out metrics are the selection's: per outer fold the candidate with the best inner-CV Spearman,
    pooled. With the radiosensitivity task alone this is that task's own selection."""
    pool: list[tuple[str, TaskOutcome, CandidateOutcome]] = []
    for outcome in outcomes:
        if outcome.task not in RSI_TASKS or outcome.winner is None:
            continue
        pool += [(f"{outcome.label}/{c.candidate}", outcome, c) for c in outcome.candidates
                 if c.error is None and hasattr(c.result.final_estimator, "predict_interval")]
    if not pool:
        return None
    selection = select_per_fold([(key, c.result) for key, _, c in pool], TASK_SCORER["radiosensitivity"])
    _, task, candidate = next(entry for entry in pool if entry[0] == selection.final)
    return RSIChoice(task, candidate, selection)


def registry_inputs(outcomes: list[TaskOutcome]
                    ) -> tuple[Any, dict[str, Any], dict[str, float], dict[str, str]]:
    """(RSI model, {endpoint: toxicity model}, held-out metrics, evaluation digests) named as the registry
    expects: the RSI model and its metrics from :func:`rsi_winner`, each endpoint's from its task's selection;
    digests (:func:`~radiogenomics.training.tracking.evaluation_digest`) ``radiosensitivity`` and
    ``toxicity.<endpoint>`` of the rows, labels and outer folds those metrics were computed on."""
    from radiogenomics.training.tracking import evaluation_digest

    rsi_model = None
    toxicity: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    digests: dict[str, str] = {}
    chosen = rsi_winner(outcomes)
    if chosen is not None:
        rsi_model = chosen.candidate.result.final_estimator
        heldout = chosen.selection.heldout
        log.info("registry: radiosensitivity model from %s (%s; held-out Spearman of the selection %.3f)",
                 chosen.key, type(rsi_model).__name__, heldout.get("spearman", math.nan))
        if "measured" in rsi_model.get_params():
            rsi_model.set_params(measured="use")  # prediction time: a measured RSI is used (docs/models.md)
        metrics.update({f"radiosensitivity.{m}": heldout[m] for m in REGISTRY_METRICS["radiosensitivity"]
                        if m in heldout})
        digests["radiosensitivity"] = evaluation_digest(chosen.selection.oof)
    for outcome in outcomes:
        win = outcome.winning()
        if outcome.task != "toxicity" or win is None or outcome.selection is None:
            continue
        toxicity[str(outcome.endpoint)] = win.result.final_estimator
        metrics.update({f"toxicity.{outcome.endpoint}.{m}": outcome.heldout[m] for m in REGISTRY_METRICS["toxicity"]
                        if m in outcome.heldout})
        digests[f"toxicity.{outcome.endpoint}"] = evaluation_digest(outcome.selection.oof)
    return rsi_model, toxicity, {k: float(v) for k, v in metrics.items()}, digests


# ------------------------------------------------------------------------------------------------ train
def train(cohort: Path | str, features: Path | str | None = None, config: TrainConfig | Path | str | None = None,
          out_dir: Path | str = "training", progress: bool = True, dask_address: str | None = None) -> TrainSummary:
    """Train, track and register (see the module docstring); returns what happened. ``dask_address``: run the
    nested cross-validations on that Dask scheduler's workers (:mod:`radiogenomics.training.cluster`); this
    process still tracks and registers everything, and the results equal a local run's."""
    from radiogenomics.features.schema import read_feature_schema, read_feature_table
    from radiogenomics.training.registry import register_models
    from radiogenomics.training.tracking import Tracker, cohort_content_hash

    started = time.monotonic()
    cohort, out_dir = Path(cohort), Path(out_dir)
    config_path = None if isinstance(config, TrainConfig) or config is None else Path(config)
    cfg = config if isinstance(config, TrainConfig) else load_train_config(config_path)
    validate_candidates(cfg)
    cohort_patient_ids(cohort)
    if dask_address:
        from radiogenomics.dask_cluster import check_scheduler

        check_scheduler(dask_address)  # before any extraction or MLflow run
    out_dir.mkdir(parents=True, exist_ok=True)
    features_path = load_features(cohort, None if features is None else Path(features), out_dir, progress)
    table = read_feature_table(features_path)
    schema = read_feature_schema(features_path)
    jobs = _task_jobs(cfg, table)
    for task, endpoint, _ in jobs:  # every task's labels before anything is fitted
        task_data(table, task, endpoint)
    tracker = Tracker.from_config(cfg)
    outcomes: list[TaskOutcome] = []
    skipped: list[str] = []
    with tracker.start_run("train", config=cfg, config_path=config_path or DEFAULT_CONFIG_PATH, features=table,
                           features_source=str(features_path.resolve()),
                           cohort_hash=cohort_content_hash(cohort)) as run_id:
        run_dir = out_dir / "runs" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        # fixed-parameter candidates get an inner-CV score when they compete with another (selection)
        rsi_pool = sum(len(names) for task, _, names in jobs if task in RSI_TASKS)
        compare = [rsi_pool > 1 if task in RSI_TASKS else len(names) > 1 for task, _, names in jobs]
        with ExitStack() as stack:
            evaluate: Evaluate | None = None
            if dask_address:
                from radiogenomics.training.cluster import dask_training

                cluster = stack.enter_context(dask_training(dask_address, run_id[:12], cfg, tracker, run_dir,
                                                            progress))
                for (task, endpoint, names), scored in zip(jobs, compare, strict=True):
                    cluster.submit(task, endpoint, names, *task_data(table, task, endpoint), cohort.resolve(),
                                   scored)
                evaluate = cluster.evaluate
            for (task, endpoint, names), scored in zip(jobs, compare, strict=True):
                # Auto-detected toxicity endpoints, the tasks that are tracked but not registered (a small cohort's
                # fold without a local failure cannot fit a Cox model) and the optional multimodal competitor are
                # noted and skipped when they fail; the rest completes.
                skippable = ((task == "toxicity" and cfg.tasks.toxicity.endpoints is None)
                             or task in FAILURE_TOLERANT_TASKS)
                outcome = run_task(task, endpoint, names, table, cfg, cohort, tracker, run_dir, progress,
                                   skip_bad_input=skippable, compare=scored, evaluate=evaluate)
                if outcome.winner is None:
                    reasons = "; ".join(f"{c.candidate}: {c.error}" for c in outcome.candidates if c.error)
                    skipped.append(f"{outcome.label}: no candidate could be evaluated "
                                   f"({reasons or 'no finite metric'})")
                    log.warning(skipped[-1])
                outcomes.append(outcome)
        if not any(o.winner for o in outcomes):
            raise InputError("no task could be trained: " + "; ".join(skipped),
                             fix="see the reasons; add labels or enable another task in the config")
        if any(o.task == "toxicity" for o in outcomes) and not any(
                o.task == "toxicity" and o.winner for o in outcomes):
            raise InputError("tasks.toxicity: no endpoint could be modelled: " + "; ".join(skipped),
                             fix="see the reasons; add the endpoint's dose features or set tasks.toxicity.endpoints")
        summary = TrainSummary(run_id, tracker.tracking_uri, cfg.tracking.experiment_name, out_dir, run_dir,
                               features_path, len(table), outcomes, skipped=skipped)
        _log_task_tags(outcomes, tracker, run_dir)
        rsi_model, toxicity, metrics, digests = registry_inputs(outcomes)
        summary.registry_metrics = metrics
        import mlflow

        mlflow.log_metrics(metrics, run_id=run_id)
        if rsi_model is None:
            summary.skipped.append("registry: no radiosensitivity model with intervals was trained; nothing registered")
        else:
            if not toxicity:
                summary.skipped.append("registry: no toxicity model was trained; radiogenomics-toxicity gets no new "
                                       "version and the prescriber serves no toxicity endpoint")
            registration = register_models(rsi_model, toxicity, metrics, schema, cfg, training_table=table,
                                           run_id=run_id, evaluation_digests=digests)
            summary.registered = dict(registration.versions)
    summary.wall_s = time.monotonic() - started
    summary.peak_rss_mb = peak_rss_mb()
    return summary


def _log_task_tags(outcomes: list[TaskOutcome], tracker: Any, run_dir: Path) -> None:
    """Winner per task as run tags (``winner.<task>``) and the RSI model chosen for the registry
    (``winner.registered_radiosensitivity``: ``<task>/<candidate>``, :func:`rsi_winner`); when candidates of
    both RSI tasks competed, that selection is logged under ``registered_radiosensitivity/selection/``."""
    import mlflow

    tags = {f"winner.{o.label}": o.winner or "none" for o in outcomes}
    chosen = rsi_winner(outcomes)
    tags["winner.registered_radiosensitivity"] = chosen.key if chosen else "none"
    mlflow.set_tags(tags)
    if chosen is not None and len({key.split("/")[0] for key in chosen.selection.candidates}) > 1:
        log_selection(chosen.selection, "registered_radiosensitivity", tracker, run_dir)
