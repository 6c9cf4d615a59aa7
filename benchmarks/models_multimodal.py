"""Benchmark: the multimodal network against plain linear models on held-out folds of one cohort.

Tasks (labels from the feature table; never inputs):
* ``rsi``: the RSI surrogate, y = ``genomic.rsi`` (expression-derived), imaging inputs only (tabular groups
  ``imaging`` and ``deep``; the network adds the CT/PET crops); Spearman and MAE. Baseline: RidgeCV.
* ``xerostomia``: y = ``outcome.tox_xerostomia >= 2``, tabular groups imaging, deep, genomic, clinical,
  availability and dose (the crops add the GTV region only); AUC and Brier score. Baseline:
  LogisticRegressionCV (C chosen by an inner 5-fold CV on the training fold, log-loss).

``--models conformal`` adds, for ``rsi``, the three RSI models the train command can register, built by its
candidate factories (``radiogenomics.training.candidates``, ``measured="ignore"``, inputs imaging, deep,
clinical and availability): ``ridge`` and ``rsi_surrogate`` (RSISurrogate, CV+ intervals) and ``multimodal``
(MultimodalRSI, split-conformal intervals with the image-free Mondrian quantile); their 90 % interval
coverage and mean width are reported too.

Outer K-fold CV grouped by patient (``GroupKFold`` / ``StratifiedGroupKFold``, shuffled with ``--seed``); every
model sees the same folds, and all preprocessing (imputation, scaling, C, early stopping) is fitted on the
training fold only. Wall time is fit + predict over all folds (crops are read from the crop cache; the first
run computes them).

Run:  python benchmarks/models_multimodal.py COHORT FEATURES.parquet [--folds 5] [--epochs 30] [--tasks rsi]
      [--models baseline multimodal conformal] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import brier_score_loss, mean_absolute_error, roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from radiogenomics.features.schema import DEFAULT_FEATURE_GROUPS, read_feature_table
from radiogenomics.models import MultimodalClassifier, MultimodalRegressor
from radiogenomics.models.multimodal import TabularPreprocessor

TASKS: dict[str, dict[str, Any]] = {
    "rsi": {"groups": ("imaging", "deep"), "kind": "regression"},
    "xerostomia": {"groups": (*DEFAULT_FEATURE_GROUPS, "dose"), "kind": "classification"},
}


def labels(table: pd.DataFrame, task: str) -> tuple[pd.DataFrame, np.ndarray]:
    if task == "rsi":
        keep = table["genomic.rsi"].notna().to_numpy()
        return table[keep].reset_index(drop=True), table.loc[keep, "genomic.rsi"].to_numpy(dtype=float)
    grade = pd.to_numeric(table["outcome.tox_xerostomia"], errors="coerce")
    keep = grade.notna().to_numpy()
    return table[keep].reset_index(drop=True), (grade[keep] >= 2).astype(int).to_numpy()


def scores(task: str, y: np.ndarray, pred: np.ndarray, model: Any, X: pd.DataFrame) -> dict[str, float]:
    """Held-out metrics; with ``predict_interval``, the interval's coverage and mean width too."""
    if task != "rsi":
        return {"auc": float(roc_auc_score(y, pred)), "brier": float(brier_score_loss(y, pred))}
    out = {"spearman": float(spearmanr(pred, y).statistic), "mae": float(mean_absolute_error(y, pred))}
    if hasattr(model, "predict_interval"):
        bounds = model.predict_interval(X)
        out["coverage"] = float(np.mean((y >= bounds[:, 0]) & (y <= bounds[:, 1])))
        out["width"] = float(np.mean(bounds[:, 1] - bounds[:, 0]))
    return out


def conformal_models(cohort: Path, seed: int, net: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The registrable RSI candidates of `radiogenomics train` (see the module docstring)."""
    from radiogenomics.training.candidates import CandidateContext, make_candidate

    network = {k: v for k, v in net.items() if k not in ("cohort", "random_state")}
    models: dict[str, Callable[[], Any]] = {}
    for name in ("ridge", "rsi_surrogate", "multimodal"):
        params = network if name == "multimodal" else None
        candidate = make_candidate("radiosensitivity", name, CandidateContext(seed, cohort=cohort, params=params))
        models[f"{name} (conformal)"] = lambda c=candidate: c.build({})
    return models


def run(task: str, table: pd.DataFrame, models: dict[str, Callable[[], Any]], folds: int,
        seed: int) -> pd.DataFrame:
    X, y = labels(table, task)
    groups = X["patient_id"].to_numpy()
    if TASKS[task]["kind"] == "classification":
        splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(X, y, groups))
    else:
        splits = list(GroupKFold(folds, shuffle=True, random_state=seed).split(X, y, groups))
    rows = []
    for name, make in models.items():
        start = time.perf_counter()
        for k, (train, test) in enumerate(splits):
            model = make().fit(X.iloc[train], y[train])
            pred = (model.predict_proba(X.iloc[test])[:, 1] if TASKS[task]["kind"] == "classification"
                    else model.predict(X.iloc[test]))
            rows.append({"task": task, "model": name, "fold": k, **scores(task, y[test], pred, model, X.iloc[test])})
            logging.info("%s %s fold %d: %s", task, name, k, rows[-1])
        for row in rows[-len(splits):]:
            row["wall_s"] = time.perf_counter() - start
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("features", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--crop-size", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on shared cores)")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--models", nargs="+", choices=("baseline", "multimodal", "conformal"),
                        default=("baseline", "multimodal", "conformal"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    table = read_feature_table(args.features)
    net = {"cohort": str(args.cohort), "crop_size": args.crop_size, "epochs": args.epochs,
           "cache_dir": args.cache_dir, "n_threads": args.threads,
           "random_state": args.seed}
    results = []
    for task in args.tasks:
        groups = TASKS[task]["groups"]
        if task == "rsi":
            models: dict[str, Callable[[], Any]] = {
                "RidgeCV": lambda g=groups: Pipeline([("prep", TabularPreprocessor(g)),
                                                      ("ridge", RidgeCV(alphas=np.logspace(-2, 4, 13)))]),
                "Multimodal": lambda g=groups: MultimodalRegressor(groups=g, **net),
            }
        else:
            models = {
                "LogisticRegressionCV": lambda g=groups: Pipeline([
                    ("prep", TabularPreprocessor(g)),
                    ("logistic", LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=5, scoring="neg_log_loss",
                                                      max_iter=5000))]),
                "Multimodal": lambda g=groups: MultimodalClassifier(groups=g, **net),
            }
        chosen = {k: v for k, v in models.items() if ("multimodal" if k == "Multimodal" else "baseline") in args.models}
        if task == "rsi" and "conformal" in args.models:
            chosen.update(conformal_models(args.cohort, args.seed, net))
        results.append(run(task, table, chosen, args.folds, args.seed))
    frame = pd.concat(results)
    metrics = [c for c in ("spearman", "mae", "coverage", "width", "auc", "brier") if c in frame]
    summary = frame.groupby(["task", "model"], sort=False).agg(
        {**{m: ["mean", "std"] for m in metrics}, "wall_s": "first"})
    print(f"{args.folds}-fold CV grouped by patient, seed {args.seed}, {len(table)} patients; "
          f"network: {args.crop_size}^3 crops, <= {args.epochs} epochs, {args.threads} thread(s)")
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        print(summary.dropna(axis=1, how="all").to_string())


if __name__ == "__main__":
    main()
