"""Nested cross-validation with an Optuna search in the inner loop, estimator-agnostic.

For each outer fold (grouped by patient, stratified by centre, or one centre held out with
``cv.leave_one_centre_out``) an Optuna study searches the hyperparameters with inner cross-validation on the
outer *training* rows only; the best parameters are refitted on the whole outer training fold and scored on
the outer test fold, which no fit and no search has seen. Imputation, scaling, ComBat and feature selection
live inside the estimator's pipeline, so they are fitted on training rows only as well. Finally an inner
search on all rows chooses the parameters of the model refitted on all data (the one to register); its
performance estimate is the outer folds' mean, never its own fit.

Each search's best inner-CV score is kept (``FoldResult.best_inner_score`` per outer fold,
``NestedCVResult.final_inner_score`` on all rows): :mod:`radiogenomics.training.selection` chooses among
candidate models on these scores only, fold by fold. With ``score_fixed=True`` a candidate with fixed parameters
(nothing to search) is scored by the same inner cross-validation, so it can be compared with searched ones.

``build_estimator(params)`` returns a new unfitted estimator; ``search_space(trial)`` returns a params dict.
Out-of-fold predictions come from ``predict`` (or the positive-class column of ``predict_proba`` for a
probability scorer) and, where the estimator has ``predict_interval(X)``, its interval; ``predict_params`` are
passed to each of them (``cohort=`` of the multimodal network: the folder holding the held-out patients'
images, which never defaults to the one the model was trained on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from radiogenomics.progress import progress_bar
from radiogenomics.training import search
from radiogenomics.training.config import TrainConfig
from radiogenomics.training.metrics import FAMILY_METRICS, Scorer, get_scorer, interval_metrics, survival_arrays
from radiogenomics.training.splits import Fold, grouped_folds, leave_one_centre_out

if TYPE_CHECKING:
    from radiogenomics.training.tracking import Tracker

log = logging.getLogger(__name__)

BuildEstimator = Callable[[dict[str, Any]], Any]


@dataclass
class FoldResult:
    """One outer fold: its rows, the parameters the inner search chose, and the held-out metrics."""

    index: int
    name: str
    train: np.ndarray
    test: np.ndarray
    best_params: dict[str, Any]
    best_inner_score: float
    metrics: dict[str, float]


@dataclass
class NestedCVResult:
    """Per-fold metrics, out-of-fold predictions, chosen parameters and the model refitted on all data.

    ``oof`` has one row per input row (in input order): ``group``, ``fold``, the target (``y_true``, or
    ``event`` and ``time`` for survival), ``y_pred`` and, with intervals, ``lower`` and ``upper``.
    """

    scorer: str
    kind: str
    folds: list[FoldResult]
    oof: pd.DataFrame
    final_params: dict[str, Any]
    final_estimator: Any
    studies: list[str] = field(default_factory=list)
    #: Best inner-CV score of the search on all rows (the final model's parameters); NaN when not scored.
    final_inner_score: float = float("nan")

    def metrics_frame(self) -> pd.DataFrame:
        """One row per outer fold, one column per metric."""
        return pd.DataFrame([f.metrics for f in self.folds], index=[f.name for f in self.folds])

    def summary(self) -> dict[str, float]:
        """``<metric>_mean`` and ``<metric>_sd`` (sample SD, ddof=1) over the outer folds where the metric is
        defined (a NaN fold, e.g. a calibration slope under perfect separation, is left out)."""
        frame = self.metrics_frame()
        out: dict[str, float] = {}
        for name in frame.columns:
            values = frame[name].astype(float)
            out[f"{name}_mean"] = float(values.mean())
            out[f"{name}_sd"] = float(values.std(ddof=1)) if values.notna().sum() > 1 else float("nan")
        return out


def _take(obj: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` (positions) of a DataFrame, Series or array."""
    if isinstance(obj, pd.DataFrame | pd.Series):
        return obj.iloc[idx]
    return np.asarray(obj)[idx]


def _fold_fit_params(fit_params: Mapping[str, Any] | None, n_rows: int, idx: np.ndarray) -> dict[str, Any]:
    """``fit_params`` with per-row values (arrays of length n_rows) restricted to the fold's rows."""
    out: dict[str, Any] = {}
    for key, value in (fit_params or {}).items():
        per_row = hasattr(value, "__len__") and not isinstance(value, str | bytes | Mapping) and len(value) == n_rows
        out[key] = _take(value, idx) if per_row else value
    return out


def _predict(estimator: Any, X: Any, scorer: Scorer, params: Mapping[str, Any] | None = None) -> np.ndarray:
    if scorer.response == "predict_proba":
        proba = np.asarray(estimator.predict_proba(X, **(params or {})))
        return proba[:, 1] if proba.ndim == 2 else proba
    return np.asarray(estimator.predict(X, **(params or {})), dtype=float)


def _interval(estimator: Any, X: Any, params: Mapping[str, Any] | None = None,
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """(lower, upper) from ``predict_interval``: an (n, 2) or MAPIE (n, 2, 1) array, or (prediction, that)."""
    if not hasattr(estimator, "predict_interval"):
        return None
    out = estimator.predict_interval(X, **(params or {}))
    if isinstance(out, tuple):
        out = out[-1]
    arr = np.asarray(out, dtype=float)
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"predict_interval returned shape {arr.shape}; expected (n, 2) or (n, 2, 1)")
    return arr[:, 0], arr[:, 1]


def _fixed_params(search_space: search.SearchSpace) -> dict[str, Any] | None:
    """The params of a search space that suggests no hyperparameter, else None (it needs a search)."""
    import optuna

    try:
        return search_space(optuna.trial.FixedTrial({}))  # type: ignore[arg-type]
    except ValueError:  # FixedTrial: a suggested parameter has no value
        return None


@dataclass
class FoldPredictions:
    """What one outer fold produced (:meth:`NestedCV.outer_fold`): its :class:`FoldResult`, the held-out
    predictions, their targets and interval bounds, and the study name of its search ("" when not searched)."""

    result: FoldResult
    pred: np.ndarray
    targets: dict[str, np.ndarray]
    bounds: tuple[np.ndarray, np.ndarray] | None
    study: str


@dataclass
class FinalFit:
    """The search on all rows and the model refitted on them (:meth:`NestedCV.final`)."""

    params: dict[str, Any]
    inner_score: float
    study: str
    estimator: Any


class NestedCV:
    """One nested CV, prepared: data, search settings, progress and tracking (see :func:`nested_cv`).

    Its units of work are independent: :meth:`outer_fold` per outer fold (:meth:`outer_folds`) and :meth:`final`;
    :meth:`collect` puts their outcomes together. :func:`nested_cv` runs them in turn; `radiogenomics train
    --dask` runs each on a Dask worker (a copy prepared there without tracker or storage, searching in memory)
    and collects on the coordinator, which replays each search into its storage and tracker
    (:meth:`record_search`).
    """

    def __init__(self, build_estimator: BuildEstimator, search_space: search.SearchSpace, X: Any, y: Any, *,
                 scorer: str | Scorer, config: TrainConfig, groups: Any, strata: Any = None,
                 fit_params: Mapping[str, Any] | None = None, tracker: Tracker | None = None,
                 run_dir: Path | str | None = None, study_prefix: str = "", metric_prefix: str = "",
                 predict_params: Mapping[str, Any] | None = None, score_fixed: bool = False) -> None:
        self.scorer = get_scorer(scorer)
        self.groups = np.asarray(groups, dtype=object).astype(str)
        self.strata = None if strata is None else np.asarray(strata, dtype=object).astype(str)
        if len(self.groups) != len(X) or len(np.asarray(y)) != len(X):
            raise ValueError(f"X has {len(X)} rows, y {len(np.asarray(y))}, groups {len(self.groups)}: they must "
                             "match")
        if config.cv.leave_one_centre_out and self.strata is None:
            raise ValueError("leave-one-centre-out needs the centres as strata")
        self.build, self.space, self.X, self.y, self.config = build_estimator, search_space, X, y, config
        self.fit_params, self.tracker = fit_params, tracker
        self.storage_url = config.search.storage_url(run_dir)
        self.label = study_prefix
        self.study_prefix = "/".join(p for p in (config.search.study_name, study_prefix) if p)
        self.metric_prefix = metric_prefix
        self.predict_params: dict[str, Any] = dict(predict_params or {})
        self.score_fixed = score_fixed
        self.n_rows = len(self.groups)
        self.update: search.OnTrial = lambda done, note: None
        self.trials_done = 0
        #: The finished trials of each search run here, by study name (what a Dask unit sends back).
        self.trials: dict[str, list[Any]] = {}

    def outer_folds(self) -> list[Fold]:
        """The outer folds: grouped and stratified k-fold, or one centre held out per fold."""
        if self.config.cv.leave_one_centre_out:
            assert self.strata is not None
            return leave_one_centre_out(self.groups, self.strata)
        return grouped_folds(self.groups, self.strata, self.config.cv.outer_folds, self.config.seed,
                             prefix="outer-")

    def fit(self, params: dict[str, Any], idx: np.ndarray) -> Any:
        estimator = self.build(dict(params))
        estimator.fit(_take(self.X, idx), _take(self.y, idx), **_fold_fit_params(self.fit_params, self.n_rows, idx))
        return estimator

    def inner_score(self, params: dict[str, Any], rows: np.ndarray, folds: list[Fold]) -> float:
        """Mean inner-fold score of ``params`` (fits on inner training rows of ``rows`` only)."""
        scores = []
        for fold in folds:
            train, valid = rows[fold.train], rows[fold.test]
            estimator = self.fit(params, train)
            scores.append(self.scorer(_take(self.y, valid), _predict(estimator, _take(self.X, valid), self.scorer,
                                                                     self.predict_params)))
        return float(np.mean(scores))

    def inner_folds(self, rows: np.ndarray) -> list[Fold]:
        """The inner folds of ``rows`` (grouped, stratified, seeded: the same for every candidate)."""
        strata = None if self.strata is None else self.strata[rows]
        return grouped_folds(self.groups[rows], strata, self.config.cv.inner_folds, self.config.seed,
                             prefix="inner")

    def search(self, rows: np.ndarray, label: str) -> tuple[dict[str, Any], float, str]:
        """Inner search on ``rows``; returns (best params, best inner score, study name).

        A search space that suggests nothing (fixed parameters) is not searched: its params, no study, and its
        mean score over the same inner folds when ``score_fixed`` (else NaN).
        """
        fixed = _fixed_params(self.space)
        if fixed is not None:
            score = self.inner_score(fixed, rows, self.inner_folds(rows)) if self.score_fixed else float("nan")
            self.trials_done += 1
            self.update(self.trials_done, f"{label} (fixed parameters)")
            return fixed, score, ""
        folds = self.inner_folds(rows)
        name = f"{self.study_prefix}/{label}"
        study = search.open_study(self.storage_url, name, direction=self.scorer.direction,
                                  seed=self.config.sampler_seed)

        def on_trial(done: int, note: str) -> None:
            self.trials_done += 1
            self.update(self.trials_done, f"{label} {note}")

        search.run_search(study, self.space, lambda params: self.inner_score(params, rows, folds),
                          n_trials=self.config.search.n_trials, timeout_s=self.config.search.timeout_s,
                          tracker=self.tracker, tags={"fold": label}, on_trial=on_trial,
                          storage_url=self.storage_url)
        self.trials[name] = study.get_trials(deepcopy=False)
        return search.best_params(study, self.space), float(study.best_value), name

    def record_search(self, study_name: str, label: str, trials: list[Any]) -> None:
        """Replay a search run elsewhere (a Dask worker, in memory): its trials into this NestedCV's storage (the
        study ``study_name``, created) and, with a tracker, one nested run per trial as :func:`search.run_search`
        logs them."""
        if self.storage_url is not None:
            study = search.open_study(self.storage_url, study_name, direction=self.scorer.direction,
                                      seed=self.config.sampler_seed)
            study.add_trials(trials)
        if self.tracker is None:
            return
        for trial in trials:
            params = search.trial_params(trial, self.space)
            with self.tracker.trial_run(study_name, trial.number, params, tags={"fold": label}) as log_value:
                log_value(float("nan") if trial.value is None else float(trial.value))

    def targets(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        y = _take(self.y, idx)
        if self.scorer.kind == "survival":
            event, time = survival_arrays(y)
            return {"event": event, "time": time}
        return {"y_true": np.asarray(y)}

    def outer_fold(self, fold: Fold) -> FoldPredictions:
        """Search on the fold's training rows, refit there with the best parameters, predict its test rows."""
        params, inner, study = self.search(fold.train, fold.name)
        estimator = self.fit(params, fold.train)
        X_test = _take(self.X, fold.test)
        pred = _predict(estimator, X_test, self.scorer, self.predict_params)
        y_test = _take(self.y, fold.test)
        metrics = dict(FAMILY_METRICS[self.scorer.kind](y_test, pred))
        bounds = _interval(estimator, X_test, self.predict_params)
        if bounds is not None:
            metrics.update(interval_metrics(np.asarray(y_test, dtype=float), *bounds))
        metrics[f"inner_{self.scorer.name}"] = inner
        result = FoldResult(fold.index, fold.name, fold.train, fold.test, params, inner, metrics)
        return FoldPredictions(result, pred, self.targets(fold.test), bounds, study)

    def final(self) -> FinalFit:
        """The search on all rows and the model refitted on all rows with its best parameters."""
        rows = np.arange(self.n_rows)
        params, inner, study = self.search(rows, "final")
        return FinalFit(params, inner, study, self.fit(params, rows))

    def report_fold(self, fold: FoldPredictions) -> None:
        """Log one outer fold's metrics (INFO, and on the tracker with ``step = fold``)."""
        metrics = fold.result.metrics
        log.info("%s %s: %s", self.label or self.scorer.name, fold.result.name,
                 ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        if self.tracker is not None:
            self.tracker.log_fold_metrics(metrics, step=fold.result.index, prefix=self.metric_prefix)

    def collect(self, folds: list[FoldPredictions], final: FinalFit) -> NestedCVResult:
        """The :class:`NestedCVResult` of the outer folds' outcomes (in fold order) and the final fit."""
        oof = pd.DataFrame({"group": self.groups, "fold": -1})
        for fold in folds:
            test = fold.result.test
            oof.loc[test, "fold"] = fold.result.index
            oof.loc[test, "y_pred"] = fold.pred
            for key, values in fold.targets.items():
                oof.loc[test, key] = values
            if fold.bounds is not None:
                oof.loc[test, "lower"], oof.loc[test, "upper"] = fold.bounds
        studies = [s for s in (*(f.study for f in folds), final.study) if s]
        return NestedCVResult(self.scorer.name, self.scorer.kind, [f.result for f in folds], oof, final.params,
                              final.estimator, studies, final.inner_score)

    def run(self, progress: bool = True) -> NestedCVResult:
        """Every unit in turn, in this process (with a progress bar counting trials)."""
        outer = self.outer_folds()
        folds: list[FoldPredictions] = []
        n_trials = self.config.search.n_trials
        with progress_bar(f"nested CV {self.label or self.scorer.name}", enabled=progress) as update:
            self.update = lambda done, note: update(done, (len(outer) + 1) * n_trials, note)
            for fold in outer:
                folds.append(self.outer_fold(fold))
                self.report_fold(folds[-1])
            final = self.final()
        return self.collect(folds, final)


def nested_cv(build_estimator: BuildEstimator, search_space: search.SearchSpace, X: Any, y: Any, *,
              scorer: str | Scorer, config: TrainConfig, groups: Any, strata: Any = None,
              fit_params: Mapping[str, Any] | None = None, tracker: Tracker | None = None,
              run_dir: Path | str | None = None, study_prefix: str = "", metric_prefix: str = "",
              progress: bool = True, predict_params: Mapping[str, Any] | None = None,
              score_fixed: bool = False) -> NestedCVResult:
    """Nested CV of the estimators ``build_estimator`` makes, tuned over ``search_space``; see the module doc.

    ``groups``: one patient ID per row (rows of a patient stay together). ``strata``: one centre per row (None:
    no stratification; required for ``cv.leave_one_centre_out``). The Optuna storage is ``config.search``'s
    (default ``sqlite:///<run_dir>/optuna.db``; in memory without ``run_dir``); studies are named
    ``<search.study_name>/<study_prefix>/outer-<k>`` and ``.../final``. With a ``tracker`` whose parent run is
    active, fold metrics are logged with ``step = fold`` (names prefixed by ``metric_prefix``) and every
    trial as a nested run. ``predict_params``: keyword arguments of every held-out ``predict`` /
    ``predict_proba`` / ``predict_interval`` call (inner and outer folds). ``score_fixed``: score fixed
    parameters by the inner CV too, for a selection among candidates (:mod:`radiogenomics.training.selection`;
    ``cv.inner_folds`` extra fits per search). The same as ``NestedCV(...).run(progress)``.
    """
    return NestedCV(build_estimator, search_space, X, y, scorer=scorer, config=config, groups=groups, strata=strata,
                    fit_params=fit_params, tracker=tracker, run_dir=run_dir, study_prefix=study_prefix,
                    metric_prefix=metric_prefix, predict_params=predict_params,
                    score_fixed=score_fixed).run(progress)
