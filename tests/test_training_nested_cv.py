"""Nested CV with plain scikit-learn estimators on synthetic tables: no leakage, metrics, intervals, LOCO."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LogisticRegression, Ridge
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from radiogenomics.training.config import parse_train_config
from radiogenomics.training.nested_cv import _fold_fit_params, nested_cv

N = 60
CFG = parse_train_config({"seed": 4, "cv": {"outer_folds": 3, "inner_folds": 2}, "search": {"n_trials": 2}})


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(N, 3)), columns=["x1", "x2", "x3"])
    frame.insert(0, "patient_id", [f"P{i:03d}" for i in range(N)])
    frame["centre"] = rng.choice(["A", "B", "C"], N)
    frame["y"] = 2.0 * frame["x1"] - frame["x2"] + rng.normal(0, 0.5, N)
    frame["label"] = (frame["y"] + rng.normal(0, 1.0, N) > 0).astype(int)
    frame["time"] = rng.exponential(np.exp(-0.8 * frame["x1"]) * 20)
    frame["event"] = rng.random(N) < 0.8
    return frame


FEATURES = ["x1", "x2", "x3"]


def ridge_space(trial: optuna.Trial) -> dict[str, Any]:
    return {"alpha": trial.suggest_float("alpha", 1e-3, 10.0, log=True)}


class RecordingRidge(BaseEstimator, RegressorMixin):
    """Ridge on the numeric columns that records which patients every fit saw."""

    fits: ClassVar[list[set[str]]] = []

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X: pd.DataFrame, y: Any) -> RecordingRidge:
        RecordingRidge.fits.append(set(X["patient_id"]))
        self.model_ = Ridge(alpha=self.alpha).fit(X[FEATURES], y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(X[FEATURES])


class QuantileIntervalRidge(RecordingRidge):
    """Ridge with a 90 % interval from the training residuals' absolute 0.9 quantile; ``shape3`` returns the
    MAPIE layout (n, 2, 1) with the point prediction in a tuple."""

    def __init__(self, alpha: float = 1.0, shape3: bool = False) -> None:
        self.alpha = alpha
        self.shape3 = shape3

    def fit(self, X: pd.DataFrame, y: Any) -> QuantileIntervalRidge:
        super().fit(X, y)
        self.q_ = float(np.quantile(np.abs(np.asarray(y) - self.predict(X)), 0.9))
        return self

    def predict_interval(self, X: pd.DataFrame) -> Any:
        pred = self.predict(X)
        bounds = np.column_stack([pred - self.q_, pred + self.q_])
        return (pred, bounds[:, :, None]) if self.shape3 else bounds


def test_no_fit_ever_sees_its_outer_test_fold(table: pd.DataFrame, tmp_path: Path) -> None:
    RecordingRidge.fits.clear()
    result = nested_cv(lambda p: RecordingRidge(**p), ridge_space, table, table["y"], scorer="spearman", config=CFG,
                       groups=table["patient_id"], strata=table["centre"], run_dir=tmp_path, progress=False)
    per_search = CFG.search.n_trials * CFG.cv.inner_folds
    fits = RecordingRidge.fits
    assert len(fits) == (len(result.folds) + 1) * (per_search + 1)
    ids = table["patient_id"].to_numpy()
    for k, fold in enumerate(result.folds):
        block = fits[k * (per_search + 1):(k + 1) * (per_search + 1)]
        test_ids = set(ids[fold.test])
        assert all(not (seen & test_ids) for seen in block)
        assert block[-1] == set(ids[fold.train])  # the refit uses the whole outer training fold
        assert all(len(seen) < len(fold.train) for seen in block[:-1])  # inner fits: part of it
    assert fits[-1] == set(ids)  # final model on all patients
    assert sorted(optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")) == sorted(result.studies)
    assert result.studies[-1] == "radiogenomics/final"


def test_regression_metrics_and_intervals(table: pd.DataFrame) -> None:
    for shape3 in (False, True):
        result = nested_cv(lambda p, s=shape3: QuantileIntervalRidge(shape3=s, **p), ridge_space, table, table["y"],
                           scorer="spearman", config=CFG, groups=table["patient_id"], strata=table["centre"],
                           progress=False)
        frame = result.metrics_frame()
        assert list(frame.index) == ["outer-0", "outer-1", "outer-2"]
        assert {"mae", "spearman", "spearman_p", "coverage", "mean_width", "inner_spearman"} <= set(frame.columns)
        summary = result.summary()
        assert summary["spearman_mean"] > 0.8
        assert summary["spearman_sd"] == pytest.approx(frame["spearman"].std(ddof=1))
        assert 0.7 <= summary["coverage_mean"] <= 1.0
        oof = result.oof
        assert (oof["fold"] >= 0).all() and oof["y_true"].tolist() == pytest.approx(table["y"].tolist())
        inside = (oof["y_true"] >= oof["lower"]) & (oof["y_true"] <= oof["upper"])
        assert inside.mean() == pytest.approx(np.mean(frame["coverage"]), abs=0.02)
        assert set(result.final_params) == {"alpha"} and hasattr(result.final_estimator, "model_")


def test_classification_with_fit_params(table: pd.DataFrame) -> None:
    weights = np.linspace(0.5, 1.5, N)
    result = nested_cv(lambda p: LogisticRegression(**p), lambda t: {"C": t.suggest_float("C", 0.01, 10, log=True)},
                       table[FEATURES], table["label"], scorer="auc", config=CFG, groups=table["patient_id"],
                       strata=table["centre"], fit_params={"sample_weight": weights}, progress=False)
    frame = result.metrics_frame()
    assert {"auc", "brier", "calibration_slope", "calibration_intercept"} <= set(frame.columns)
    assert result.summary()["auc_mean"] > 0.7
    assert result.oof["y_pred"].between(0, 1).all()
    sliced = _fold_fit_params({"sample_weight": weights, "verbose": 0}, N, np.array([0, 5]))
    assert sliced["sample_weight"].tolist() == [weights[0], weights[5]] and sliced["verbose"] == 0


def test_survival_and_leave_one_centre_out(table: pd.DataFrame) -> None:
    y = Surv.from_arrays(event=table["event"].to_numpy(), time=table["time"].to_numpy())
    loco = parse_train_config({"cv": {"inner_folds": 2, "leave_one_centre_out": True}, "search": {"n_trials": 2}})
    result = nested_cv(lambda p: CoxPHSurvivalAnalysis(**p), lambda t: {"alpha": t.suggest_float("alpha", 0.01, 1)},
                       table[FEATURES], y, scorer="c_index", config=loco, groups=table["patient_id"],
                       strata=table["centre"], progress=False)
    assert [f.name for f in result.folds] == ["centre=A", "centre=B", "centre=C"]
    centres = table["centre"].to_numpy()
    for fold in result.folds:
        assert set(centres[fold.test]) == {fold.name[-1]} and fold.name[-1] not in set(centres[fold.train])
    assert result.summary()["c_index_mean"] > 0.6
    assert {"event", "time"} <= set(result.oof.columns) and result.kind == "survival"


def test_mismatched_lengths_are_rejected(table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="must match"):
        nested_cv(lambda p: Ridge(**p), ridge_space, table[FEATURES], table["y"][:-1], scorer="mae", config=CFG,
                  groups=table["patient_id"], progress=False)


class FolderRidge(QuantileIntervalRidge):
    """Needs ``folder=`` at prediction (like the multimodal network's ``cohort=``) and records what it got."""

    seen: ClassVar[list[str]] = []

    def predict(self, X: pd.DataFrame, folder: str | None = None) -> np.ndarray:
        FolderRidge.seen.append(str(folder))
        return super().predict(X)

    def predict_interval(self, X: pd.DataFrame, folder: str | None = None) -> Any:
        FolderRidge.seen.append(f"interval:{folder}")
        return super().predict_interval(X)


def test_predict_params_reach_every_held_out_prediction(table: pd.DataFrame) -> None:
    """The multimodal candidate reads held-out images only from the folder it is given (issue 15.6)."""
    from radiogenomics.training.candidates import CandidateContext, make_candidate

    FolderRidge.seen.clear()
    result = nested_cv(lambda p: FolderRidge(**p), ridge_space, table, table["y"], scorer="spearman", config=CFG,
                       groups=table["patient_id"], progress=False, predict_params={"folder": "cohort-A"})
    assert "coverage" in result.metrics_frame().columns
    # inner folds and outer folds (points and intervals) all got the folder; fit's own predict is not held-out
    held_out = [s for s in FolderRidge.seen if s != "None"]
    assert {"cohort-A", "interval:cohort-A"} == set(held_out) and len(held_out) > 3
    context = CandidateContext(seed=0, cohort=Path("cohort-A"))
    assert make_candidate("radiosensitivity", "multimodal", context).predict_params == {"cohort": Path("cohort-A")}
    assert make_candidate("radiosensitivity", "ridge", context).predict_params == {}
