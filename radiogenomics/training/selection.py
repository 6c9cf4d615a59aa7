"""Choosing among candidate models inside the nested loop, so that the held-out estimate is not optimistic.

Picking the candidate with the best pooled outer-fold metric and reporting that metric as "held-out" is
optimistic: the outer folds were used to choose. Here the choice is part of the procedure being evaluated
(docs/training.md, "Selection and what held-out means"):

* in each outer fold, the candidate with the best **inner-CV** score on that fold's training part is chosen
  (``FoldResult.best_inner_score``: the best trial of its search, or the inner-CV score of its fixed parameters
  with ``nested_cv(..., score_fixed=True)``); the outer test rows never enter the choice;
* that fold's outer predictions are the chosen candidate's;
* the pooled outer predictions of these per-fold choices give the held-out metrics (:attr:`Selection.heldout`);
* the final model is the candidate chosen by the same rule on all rows (``NestedCVResult.final_inner_score``:
  the inner CV of the search on all rows), refitted on all rows.

Rule: the best score in the scorer's direction; a NaN score never wins; ties, and a fold where no candidate has
a finite score, go to the first candidate in the given order (the config's). With one candidate it is chosen
everywhere. Every candidate must have been cross-validated on the same rows and outer folds (same groups,
centres and seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.training.metrics import (
    Scorer,
    classification_metrics,
    get_scorer,
    interval_metrics,
    regression_metrics,
    survival_metrics,
)

#: Name the selection procedure's results are logged under, beside the candidates (``<task>/selection/...``).
SELECTION_NAME = "selection"
#: Columns of an out-of-fold frame that are the labels (the rest are predictions, ``group`` and ``fold``).
LABEL_COLUMNS = ("y_true", "event", "time")


@dataclass
class Selection:
    """The outcome of choosing among candidates fold by fold (see the module doc).

    ``candidates``: the keys compared, in order; ``per_fold``: the key chosen in each outer fold (fold order);
    ``final``: the key chosen on all rows; ``inner_scores``: per candidate, its inner-CV score per outer fold;
    ``final_scores``: per candidate, its inner-CV score on all rows; ``oof``: the pooled outer predictions of the
    per-fold choices (an out-of-fold frame like ``NestedCVResult.oof`` plus ``candidate``); ``heldout``: their
    metrics, the held-out estimate of the whole procedure.
    """

    scorer: str
    kind: str
    candidates: list[str]
    fold_names: list[str]
    per_fold: list[str]
    final: str
    inner_scores: dict[str, list[float]]
    final_scores: dict[str, float]
    oof: pd.DataFrame
    heldout: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the choices and the scores they were made on (NaN as None)."""
        def num(value: float) -> float | None:
            return float(value) if math.isfinite(value) else None

        return {
            "rule": f"best inner-CV {self.scorer} per outer fold; final model: best inner-CV {self.scorer} on all "
                    "rows; ties and undefined scores: the first candidate",
            "candidates": self.candidates,
            "folds": [{"fold": name, "chosen": chosen,
                       "inner_scores": {c: num(self.inner_scores[c][i]) for c in self.candidates}}
                      for i, (name, chosen) in enumerate(zip(self.fold_names, self.per_fold, strict=True))],
            "final": {"chosen": self.final, "inner_scores": {c: num(v) for c, v in self.final_scores.items()}},
            "heldout": {k: num(v) for k, v in self.heldout.items()},
        }

    def describe(self) -> str:
        """``outer-1:ridge,outer-2:rsi_surrogate`` (the per-fold choices)."""
        return ",".join(f"{name}:{chosen}" for name, chosen in zip(self.fold_names, self.per_fold, strict=True))


def oof_metrics(oof: pd.DataFrame, kind: str) -> dict[str, float]:
    """Held-out metrics of pooled out-of-fold predictions (rows never tested, ``fold < 0``, left out); interval
    metrics when the frame has ``lower`` and ``upper``."""
    from sksurv.util import Surv

    oof = oof[oof["fold"] >= 0]
    if kind == "regression":
        out = regression_metrics(oof["y_true"], oof["y_pred"])
        if "lower" in oof:
            out.update(interval_metrics(oof["y_true"], oof["lower"], oof["upper"]))
        return out
    if kind == "classification":
        return classification_metrics(oof["y_true"].astype(int), oof["y_pred"])
    return survival_metrics(Surv.from_arrays(oof["event"].astype(bool), oof["time"].astype(float)), oof["y_pred"])


def _best(scores: Sequence[float], greater_is_better: bool) -> int:
    """Index of the best finite score (first on ties); 0 when none is finite."""
    best, best_value = 0, math.nan
    for i, value in enumerate(scores):
        if not math.isfinite(value):
            continue
        if math.isnan(best_value) or (value > best_value if greater_is_better else value < best_value):
            best, best_value = i, value
    return best


def _check_same_folds(results: Sequence[tuple[str, Any]]) -> None:
    first_key, first = results[0]
    for key, result in results[1:]:
        same = (len(result.folds) == len(first.folds)
                and np.array_equal(result.oof["fold"].to_numpy(), first.oof["fold"].to_numpy())
                and np.array_equal(result.oof["group"].to_numpy(), first.oof["group"].to_numpy()))
        if not same:
            raise ValueError(f"candidates {first_key!r} and {key!r} were not cross-validated on the same rows and "
                             "outer folds: they cannot be compared fold by fold")


def select_per_fold(results: Sequence[tuple[str, Any]], scorer: str | Scorer) -> Selection:
    """Choose among ``results`` (``(key, NestedCVResult)`` in priority order) by the rule of the module doc."""
    if not results:
        raise ValueError("no candidate to select from")
    scorer = get_scorer(scorer)
    _check_same_folds(results)
    keys = [key for key, _ in results]
    by_key = dict(results)
    first = results[0][1]
    n_folds = len(first.folds)
    inner = {key: [float(f.best_inner_score) for f in result.folds] for key, result in results}
    final_scores = {key: float(result.final_inner_score) for key, result in results}
    per_fold = [keys[_best([inner[k][i] for k in keys], scorer.greater_is_better)] for i in range(n_folds)]
    final = keys[_best([final_scores[k] for k in keys], scorer.greater_is_better)]
    oof = first.oof[["group", "fold", *[c for c in LABEL_COLUMNS if c in first.oof.columns]]].copy()
    oof["candidate"] = ""
    oof["y_pred"] = np.nan
    intervals = all({"lower", "upper"} <= set(by_key[k].oof.columns) for k in set(per_fold))
    if intervals:
        oof["lower"], oof["upper"] = np.nan, np.nan
    for fold, chosen in zip(first.folds, per_fold, strict=True):
        rows = oof["fold"].to_numpy() == fold.index
        source = by_key[chosen].oof
        oof.loc[rows, "candidate"] = chosen
        oof.loc[rows, "y_pred"] = source.loc[rows, "y_pred"].to_numpy()
        if intervals:
            oof.loc[rows, "lower"] = source.loc[rows, "lower"].to_numpy()
            oof.loc[rows, "upper"] = source.loc[rows, "upper"].to_numpy()
    return Selection(scorer.name, first.kind, keys, [f.name for f in first.folds], per_fold, final, inner,
                     final_scores, oof, oof_metrics(oof, first.kind))
