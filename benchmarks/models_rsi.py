"""Held-out accuracy of the RSI surrogate (conformal intervals) and of the local-control Cox model.

Usage::

    python benchmarks/models_rsi.py FEATURES.parquet [--truth COHORT/truth.csv] [--folds 5] [--seed 2026]
                                     [--skip-survival]

Outer K-fold cross-validation grouped by patient and stratified by ``clinical.center`` (fixed seed); every model
(imputation, scaling, screening, the ElasticNet penalty, the CV+ folds) is fitted on the training folds only.

RSI surrogate (imaging + clinical inputs, ``measured="ignore"``) against the expression-derived RSI: Spearman and
MAE per fold and pooled, next to a plain ``RidgeCV`` on the same inputs (no screening) in the same folds; 90 %
conformal coverage and mean width per fold and pooled. With ``--truth`` (evaluation only), the measured and the
predicted RSI are also compared with the latent true RSI, which is what justifies ``measured="use"``.

Local control: ``LocalControlCox`` variants (GARD from the measured RSI with the default covariates, GARD alone,
GARD from the in-fold surrogate) with Harrell's C-index, mean time-dependent AUC and integrated Brier score.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sksurv.linear_model import CoxPHSurvivalAnalysis

from radiogenomics.features.schema import read_feature_table
from radiogenomics.models.radiosensitivity import RSI_COLUMN, RSISurrogate, rsi_pipeline, tabular_steps
from radiogenomics.models.survival import DEFAULT_LC_COVARIATES, LocalControlCox, lc_target, survival_metrics
from radiogenomics.training.splits import grouped_folds

log = logging.getLogger("benchmarks.models_rsi")
EXCLUDED = ("genomic", "dose", "treatment", "outcome")
#: Assay-noise SDs (RSI units) of the measured-RSI interval and fusion compared against truth.
MEASURED_SD = (0.05, 0.1, 0.15)


def folds(table: pd.DataFrame, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer folds: grouped by patient, stratified by centre (the training package's splitter)."""
    split = grouped_folds(table["patient_id"], table["clinical.center"], n_folds, seed)
    return [(fold.train, fold.test) for fold in split]


def _rho(a: Any, b: Any) -> float:
    return float(spearmanr(a, b).statistic)


def rsi_report(table: pd.DataFrame, splits: list[tuple[np.ndarray, np.ndarray]], seed: int,
               truth: pd.Series | None) -> pd.DataFrame:
    """Per-fold and pooled surrogate metrics; returns the held-out predictions."""
    y = table[RSI_COLUMN].to_numpy(dtype=np.float64)
    pred, ridge, low, high = (np.full(len(table), np.nan) for _ in range(4))
    measured_use = {sd: np.full((len(table), 2), np.nan) for sd in MEASURED_SD}
    fused = {sd: np.full((len(table), 3), np.nan) for sd in MEASURED_SD}
    rows = []
    for k, (train, test) in enumerate(splits, 1):
        start = time.perf_counter()
        model = RSISurrogate(measured="ignore", random_state=seed).fit(table.iloc[train])
        pred[test] = model.predict(table.iloc[test])
        low[test], high[test] = model.predict_interval(table.iloc[test]).T
        fit_s = time.perf_counter() - start
        for sd in MEASURED_SD:
            measured_use[sd][test] = model.set_params(measured="use", measured_sd=sd).predict_interval(table.iloc[test])
            model.set_params(measured="fuse")
            fused[sd][test] = np.column_stack([model.predict(table.iloc[test]),
                                               model.predict_interval(table.iloc[test])])
        model.set_params(measured="ignore")
        baseline = rsi_pipeline("ridge", exclude=EXCLUDED, n_screen=None).fit(table.iloc[train], y[train])
        ridge[test] = np.clip(baseline.predict(table.iloc[test]), 0.001, 0.999)
        inside = (y[test] >= low[test]) & (y[test] <= high[test])
        rows.append({"fold": str(k), "n_test": len(test), "spearman": _rho(pred[test], y[test]),
                     "ridge_spearman": _rho(ridge[test], y[test]), "mae": float(np.mean(np.abs(pred[test] - y[test]))),
                     "ridge_mae": float(np.mean(np.abs(ridge[test] - y[test]))), "coverage": float(inside.mean()),
                     "width": float(np.mean(high[test] - low[test])), "fit_s": fit_s})
    inside = (y >= low) & (y <= high)
    rows.append({"fold": "pooled", "n_test": len(y), "spearman": _rho(pred, y), "ridge_spearman": _rho(ridge, y),
                 "mae": float(np.mean(np.abs(pred - y))), "ridge_mae": float(np.mean(np.abs(ridge - y))),
                 "coverage": float(inside.mean()), "width": float(np.mean(high - low)),
                 "fit_s": float(sum(r["fit_s"] for r in rows))})
    report = pd.DataFrame(rows).set_index("fold")
    print("RSI surrogate (imaging + clinical, ElasticNet) vs expression RSI, held-out; RidgeCV baseline:")
    print(report.round(3).to_string())
    if truth is not None:
        truth_report(table, truth, pred, low, high, measured_use, fused)
    return pd.DataFrame({"rsi_predicted": pred, "low": low, "high": high}, index=table.index)


def truth_report(table: pd.DataFrame, truth: pd.Series, pred: np.ndarray, low: np.ndarray, high: np.ndarray,
                 measured_use: dict[float, np.ndarray], fused: dict[float, np.ndarray]) -> None:
    """Measured, predicted and fused RSI against the latent true RSI (evaluation only; never used to fit)."""
    true = truth.reindex(table["patient_id"].astype(str)).to_numpy(dtype=np.float64)
    measured = np.clip(table[RSI_COLUMN].to_numpy(dtype=np.float64), 0.001, 0.999)

    def row(name: str, point: np.ndarray, bounds: np.ndarray) -> dict[str, Any]:
        return {"rsi": name, "spearman_true": _rho(point, true), "mae_true": float(np.mean(np.abs(point - true))),
                "covers_true": float(np.mean((true >= bounds[:, 0]) & (true <= bounds[:, 1]))),
                "width": float(np.mean(bounds[:, 1] - bounds[:, 0]))}

    rows = [row("predicted (imaging, conformal)", pred, np.column_stack([low, high]))]
    for sd in MEASURED_SD:
        rows.append(row(f"measured, sd {sd}", measured, measured_use[sd]))
    for sd in MEASURED_SD:
        rows.append(row(f"fused, sd {sd}", fused[sd][:, 0], fused[sd][:, 1:]))
    print("\nAgainst the latent true RSI (truth.csv, evaluation only; held-out imaging predictions):")
    print(pd.DataFrame(rows).set_index("rsi").round(3).to_string())


def survival_report(table: pd.DataFrame, splits: list[tuple[np.ndarray, np.ndarray]], seed: int) -> pd.DataFrame:
    """Held-out C-index, mean time-dependent AUC and IBS of the LocalControlCox variants."""
    variants: dict[str, Any] = {
        "gard(measured)+covariates": LocalControlCox(random_state=seed),
        "gard(measured) only": LocalControlCox(covariates=(), random_state=seed),
        "gard(surrogate)+covariates": LocalControlCox(rsi_estimator=RSISurrogate(measured="ignore", random_state=seed),
                                                      random_state=seed),
    }
    no_gard = Pipeline(tabular_steps(groups=(), include=DEFAULT_LC_COVARIATES, exclude=("outcome",))
                       + [("cox", CoxPHSurvivalAnalysis(alpha=1.0, ties="efron"))])
    variants["covariates only (no GARD)"] = no_gard
    y = lc_target(table)
    rows, grids = [], []
    for name, model in variants.items():
        start = time.perf_counter()
        per_fold = []
        for train, test in splits:
            fitted = clone(model).fit(table.iloc[train], y[train])
            per_fold.append(survival_metrics(fitted, table.iloc[test], y[train], y[test]))
        grids.extend(m["auc_times"] for m in per_fold)
        rows.append({"model": name, "c_index": np.mean([m["c_index"] for m in per_fold]),
                     "c_index_sd": np.std([m["c_index"] for m in per_fold]),
                     "mean_auc": np.mean([m["mean_auc"] for m in per_fold]),
                     "ibs": np.mean([m["ibs"] for m in per_fold]), "seconds": time.perf_counter() - start})
    report = pd.DataFrame(rows).set_index("model")
    low, high = np.mean([g.min() for g in grids]), np.mean([g.max() for g in grids])
    print(f"\nLocal control (Cox, ridge 1), held-out, mean over folds; AUC/IBS at {low:.1f}-{high:.1f} months:")
    print(report.round(3).to_string())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", type=Path)
    parser.add_argument("--truth", type=Path, default=None, help="truth.csv of a synthetic cohort (evaluation only)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--skip-survival", action="store_true")
    parser.add_argument("--skip-rsi", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    table = read_feature_table(args.features)
    truth = None
    if args.truth is not None:
        truth = pd.read_csv(args.truth, dtype={"patient_id": str}).set_index("patient_id")["rsi_true"]
    splits = folds(table, args.folds, args.seed)
    measured = table[RSI_COLUMN].notna().to_numpy()
    print(f"{args.features}: {len(table)} patients, {int(measured.sum())} with a measured RSI, {args.folds} folds, "
          f"seed {args.seed}")
    if not args.skip_rsi:
        rsi_report(table.loc[measured].reset_index(drop=True), folds(table.loc[measured].reset_index(drop=True),
                                                                     args.folds, args.seed), args.seed, truth)
    if not args.skip_survival:
        survival_report(table, splits, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
