"""Selection inside the nested loop: per outer fold by inner CV only; the registered held-out metrics are those of
the whole procedure (not the best candidate's pooled outer folds), and the evaluation digest."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from radiogenomics.training.config import parse_train_config
from radiogenomics.training.metrics import regression_metrics
from radiogenomics.training.nested_cv import FoldResult, NestedCVResult, nested_cv
from radiogenomics.training.run import CandidateOutcome, TaskOutcome, pooled_metrics, registry_inputs, rsi_winner
from radiogenomics.training.selection import select_per_fold
from radiogenomics.training.tracking import evaluation_digest

N = 20
Y = np.arange(N, dtype=float)
FOLD = np.repeat([0, 1], N // 2)


class IntervalModel:
    """A stand-in final estimator with conformal intervals (what the RSI registry requires)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.params: dict[str, Any] = {"measured": "ignore"}

    def predict_interval(self, X: Any) -> np.ndarray:
        return np.zeros((len(X), 2))

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def set_params(self, **params: Any) -> IntervalModel:
        self.params.update(params)
        return self


def fake_result(name: str, pred: np.ndarray, inner: tuple[float, float], final_inner: float) -> NestedCVResult:
    """A nested CV of 20 patients in two outer folds with the given outer predictions and inner-CV scores."""
    oof = pd.DataFrame({"group": [f"P{i:02d}" for i in range(N)], "fold": FOLD, "y_true": Y, "y_pred": pred,
                        "lower": pred - 3.0, "upper": pred + 3.0})
    folds = [FoldResult(k, f"outer-{k + 1}", np.flatnonzero(FOLD != k), np.flatnonzero(FOLD == k), {}, inner[k],
                        regression_metrics(Y[FOLD == k], pred[FOLD == k])) for k in (0, 1)]
    return NestedCVResult("spearman", "regression", folds, oof, {}, IntervalModel(name), [], final_inner)


@pytest.fixture()
def results() -> dict[str, NestedCVResult]:
    """``good`` predicts both folds perfectly (the best pooled outer metric); ``poor`` reverses the first fold.
    Their inner-CV scores favour ``good`` in fold 1 and ``poor`` in fold 2 and on all rows."""
    reversed_first = np.concatenate([Y[: N // 2][::-1], Y[N // 2:]])
    shuffled_second = np.concatenate([Y[: N // 2], Y[N // 2:][[3, 9, 0, 7, 2, 8, 1, 5, 6, 4]]])
    return {"good": fake_result("good", Y.copy(), (0.9, 0.2), 0.5),
            "poor": fake_result("poor", np.where(FOLD == 0, reversed_first, shuffled_second), (0.1, 0.8), 0.6)}


def test_per_fold_selection_differs_from_the_best_candidates_pooled_metric(results: dict[str, Any]) -> None:
    selection = select_per_fold(list(results.items()), "spearman")
    assert selection.per_fold == ["good", "poor"]   # by inner CV, fold by fold
    assert selection.final == "poor"                 # on all rows, by inner CV: never by the outer folds
    expected_pred = np.where(FOLD == 0, results["good"].oof["y_pred"], results["poor"].oof["y_pred"])
    expected = regression_metrics(Y, expected_pred)["spearman"]
    assert selection.heldout["spearman"] == pytest.approx(expected)
    best_pooled = max(pooled_metrics(r)["spearman"] for r in results.values())
    assert best_pooled == pytest.approx(1.0) and selection.heldout["spearman"] < best_pooled - 0.05
    assert "coverage" in selection.heldout and list(selection.oof["candidate"]) == ["good"] * 10 + ["poor"] * 10
    assert select_per_fold(list(results.items()), "spearman").heldout == selection.heldout  # deterministic
    record = selection.to_dict()
    assert record["folds"][1] == {"fold": "outer-2", "chosen": "poor", "inner_scores": {"good": 0.2, "poor": 0.8}}


def test_ties_and_undefined_scores_go_to_the_first_candidate(results: dict[str, Any]) -> None:
    nan = fake_result("nan", Y.copy(), (float("nan"), float("nan")), float("nan"))
    tie = fake_result("tie", Y.copy(), (0.9, 0.8), 0.6)
    selection = select_per_fold([("nan", nan), ("good", results["good"]), ("tie", tie)], "spearman")
    assert selection.per_fold == ["good", "tie"] and selection.final == "tie"
    assert select_per_fold([("nan", nan)], "spearman").per_fold == ["nan", "nan"]  # a single candidate is chosen
    other_folds = fake_result("x", Y.copy(), (0.1, 0.1), 0.1)
    other_folds.oof["fold"] = 1 - FOLD
    with pytest.raises(ValueError, match="same rows and outer folds"):
        select_per_fold([("good", results["good"]), ("x", other_folds)], "spearman")


def _task(label: str, task: str, results: dict[str, NestedCVResult]) -> TaskOutcome:
    from radiogenomics.training.run import select_task

    outcome = TaskOutcome(label, task, "spearman",
                          [CandidateOutcome(name, pooled_metrics(r), {}, r) for name, r in results.items()])
    outcome.selection = select_task(outcome)
    assert outcome.selection is not None
    outcome.winner = outcome.selection.final
    return outcome


def test_registered_heldout_metric_is_the_selection_procedures(results: dict[str, Any]) -> None:
    """What train hands the registry: the per-fold-selected pooled metric and digest, and the model chosen on all
    rows by inner CV, not the candidate with the best pooled outer metric."""
    outcome = _task("radiosensitivity", "radiosensitivity", results)
    rsi_model, toxicity, metrics, digests = registry_inputs([outcome])
    selection = outcome.selection
    assert selection is not None
    assert metrics["radiosensitivity.spearman"] == pytest.approx(selection.heldout["spearman"])
    assert metrics["radiosensitivity.spearman"] != pytest.approx(max(c.heldout["spearman"]
                                                                     for c in outcome.candidates))
    assert metrics["radiosensitivity.coverage"] == pytest.approx(selection.heldout["coverage"])
    assert rsi_model.name == "poor" and rsi_model.get_params()["measured"] == "use"
    assert toxicity == {} and digests == {"radiosensitivity": evaluation_digest(selection.oof)}


def test_the_rsi_model_is_chosen_by_the_same_rule_across_tasks(results: dict[str, Any]) -> None:
    """radiosensitivity and multimodal candidates compete fold by fold on their inner-CV scores."""
    net = fake_result("net", Y.copy(), (0.95, 0.1), 0.7)
    tasks = [_task("radiosensitivity", "radiosensitivity", results), _task("multimodal", "multimodal", {"net": net})]
    chosen = rsi_winner(tasks)
    assert chosen is not None
    assert chosen.selection.candidates == ["radiosensitivity/good", "radiosensitivity/poor", "multimodal/net"]
    assert chosen.selection.per_fold == ["multimodal/net", "radiosensitivity/poor"]
    assert chosen.key == "multimodal/net" and chosen.candidate.result is net
    _, _, metrics, _ = registry_inputs(tasks)
    assert metrics["radiosensitivity.spearman"] == pytest.approx(chosen.selection.heldout["spearman"])


def test_evaluation_digest_is_patients_labels_and_folds() -> None:
    oof = fake_result("a", Y.copy(), (0.0, 0.0), 0.0).oof
    digest = evaluation_digest(oof)
    assert evaluation_digest(oof.iloc[::-1]) == digest                       # any row order
    assert evaluation_digest(oof.assign(y_pred=0.0, lower=1.0)) == digest     # predictions do not enter it
    assert evaluation_digest(oof.assign(fold=1 - FOLD)) != digest             # other folds (another seed)
    assert evaluation_digest(oof.assign(y_true=Y + 1e-9)) != digest           # other labels
    assert evaluation_digest(oof.iloc[1:]) != digest                          # other patients
    assert evaluation_digest(pd.concat([oof, oof.head(1).assign(fold=-1)])) == digest  # never-tested rows ignored


def test_fixed_parameters_get_an_inner_cv_score_when_compared() -> None:
    """nested_cv(score_fixed=True) scores a candidate without a search space on the same inner folds."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"])
    y = X["a"].to_numpy() * 2 + rng.normal(0, 0.3, 30)
    config = parse_train_config({"seed": 3, "cv": {"outer_folds": 2, "inner_folds": 2, "stratify_by": None},
                                 "search": {"n_trials": 1}})
    groups = [f"P{i}" for i in range(30)]

    def build(params: dict[str, Any]) -> Ridge:
        return Ridge(**params)

    def space(trial: Any) -> dict[str, Any]:
        return {"alpha": 1.0}

    plain = nested_cv(build, space, X, y, scorer="spearman", config=config, groups=groups, progress=False)
    scored = nested_cv(build, space, X, y, scorer="spearman", config=config, groups=groups, progress=False,
                       score_fixed=True)
    assert all(np.isnan(f.best_inner_score) for f in plain.folds) and np.isnan(plain.final_inner_score)
    assert all(0.5 < f.best_inner_score <= 1.0 for f in scored.folds) and 0.5 < scored.final_inner_score <= 1.0
    pd.testing.assert_frame_equal(plain.oof, scored.oof)  # scoring does not change the outer predictions
