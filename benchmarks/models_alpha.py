"""Held-out accuracy of the outcome-calibrated alpha (radiogenomics.models.outcome_alpha) on a feature table.

Usage::

    python benchmarks/models_alpha.py FEATURES.parquet [--truth COHORT/truth.csv] [--folds 5] [--seed 0]

Outer K-fold cross-validation grouped by patient (fixed seed); every model (imputation, scaling, the inner-CV
penalty) is fitted on the training folds only. Printed per variant: Spearman of the held-out predicted alpha with
the truth alpha (pooled over folds, and the mean of the per-fold values), the held-out log-likelihood, and the fit
time; then the calibration of the predicted 3-year local control against the Kaplan-Meier estimate at 36 months by
tertile of predicted local control. The truth file is read for evaluation only.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.model_selection import GroupKFold
from sksurv.nonparametric import kaplan_meier_estimator

from radiogenomics.features.schema import read_feature_table
from radiogenomics.models.outcome_alpha import OutcomeCalibratedAlpha
from radiogenomics.radiobiology import alpha_from_rsi

log = logging.getLogger("benchmarks.models_alpha")
HORIZON_MONTHS = 36.0


def variants(seed: int) -> dict[str, OutcomeCalibratedAlpha]:
    """The compared models: the default and ablations of its design choices."""
    base = OutcomeCalibratedAlpha(random_state=seed)
    no_features = {"groups": (), "include": ()}
    return {
        "default (RSI covariate)": base,
        "RSI as ordinary input": clone(base).set_params(rsi_prior="none"),
        "RSI offset (coef 1)": clone(base).set_params(rsi_prior="offset"),
        "no burden channel": clone(base).set_params(burden_include=()),
        "fitted clonogen density": clone(base).set_params(clonogen_density_per_cc=None),
        "weibull failure times": clone(base).set_params(time_distribution="weibull"),
        "RSI covariate only": clone(base).set_params(**no_features),
        "population (no features)": clone(base).set_params(rsi_prior="none", **no_features),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0:
        return float("nan")  # a constant prediction has no ranking
    return float(spearmanr(a[ok], b[ok]).statistic)


def km_at(event: np.ndarray, months: np.ndarray, horizon: float) -> float:
    """Kaplan-Meier local control at ``horizon`` months (scikit-survival)."""
    times, surv = kaplan_meier_estimator(event.astype(bool), months)
    before = times <= horizon
    return float(surv[before][-1]) if before.any() else 1.0


def run(features: Path, truth: Path | None, folds: int, seed: int, only: list[str] | None = None,
        ) -> dict[str, Any]:
    table = read_feature_table(features)
    y = pd.DataFrame({"lc_event": table["outcome.lc_event"].to_numpy(dtype=float),
                      "lc_months": table["outcome.lc_months"].to_numpy(dtype=float)})
    true_alpha = None
    if truth is not None:
        truth_table = pd.read_csv(truth).set_index("patient_id")
        true_alpha = truth_table.loc[table["patient_id"], "alpha_per_gy"].to_numpy(dtype=float)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    split = list(splitter.split(table, groups=table["patient_id"]))
    results: dict[str, Any] = {}
    chosen = variants(seed)
    for name, model in ((k, v) for k, v in chosen.items() if only is None or k in only):
        alpha = np.full(len(table), np.nan)
        lc36 = np.full(len(table), np.nan)
        fold_rho, fold_ll, seconds = [], [], []
        for train, test in split:
            start = time.perf_counter()
            fitted = clone(model).fit(table.iloc[train], y.iloc[train])
            seconds.append(time.perf_counter() - start)
            alpha[test] = fitted.predict(table.iloc[test])
            lc36[test] = fitted.predict_local_control(table.iloc[test], HORIZON_MONTHS)
            fold_ll.append(fitted.score(table.iloc[test], y.iloc[test]))
            if true_alpha is not None:
                fold_rho.append(_spearman(alpha[test], true_alpha[test]))
        ranks = true_alpha is not None and bool(np.isfinite(fold_rho).any())  # constant per fold: no ranking
        results[name] = {"alpha": alpha, "lc36": lc36, "fold_rho": fold_rho, "loglik": float(np.mean(fold_ll)),
                         "seconds": float(np.mean(seconds)),
                         "pooled_rho": _spearman(alpha, true_alpha) if ranks else float("nan")}
    if true_alpha is not None:
        rsi = table["genomic.rsi"].to_numpy(dtype=float)
        rsi_alpha = np.asarray(alpha_from_rsi(rsi, invalid="nan"))  # NaN where RSI >= exp(-4 beta): left out
        results["alpha_from_rsi (valid RSI)"] = {
            "pooled_rho": _spearman(rsi_alpha, true_alpha),
            "fold_rho": [_spearman(rsi_alpha[t], true_alpha[t]) for _, t in split]}
        results["-RSI (all patients)"] = {"pooled_rho": _spearman(-rsi, true_alpha),
                                          "fold_rho": [_spearman(-rsi[t], true_alpha[t]) for _, t in split]}
        results["truth (median alpha)"] = {"pooled_rho": 1.0, "fold_rho": [1.0] * folds, "alpha": true_alpha}
    results["_y"] = y
    return results


def report(results: dict[str, Any]) -> None:
    print(f"{'variant':28s} {'Spearman pooled':>16s} {'per-fold mean':>14s} {'held-out loglik':>16s} {'fit s':>7s} "
          f"{'median alpha':>13s}")
    for name, r in results.items():
        if name.startswith("_"):
            continue
        fold = np.asarray(r["fold_rho"], dtype=float)
        fold_mean = f"{np.nanmean(fold):.3f}" if fold.size and np.isfinite(fold).any() else "n/a"
        pooled = "no ranking" if np.isnan(r["pooled_rho"]) else f"{r['pooled_rho']:.3f}"
        loglik = f"{r['loglik']:.4f}" if "loglik" in r else "-"
        secs = f"{r['seconds']:.2f}" if "seconds" in r else "-"
        median = f"{np.nanmedian(r['alpha']):.3f}" if "alpha" in r else "-"
        print(f"{name:28s} {pooled:>16s} {fold_mean:>14s} {loglik:>16s} {secs:>7s} {median:>13s}")
    y = results["_y"]
    event, months = y["lc_event"].to_numpy(), y["lc_months"].to_numpy()
    print(f"\nCalibration of held-out 3-year local control (Kaplan-Meier at {HORIZON_MONTHS:g} months), "
          "tertiles of predicted LC:")
    for name, r in results.items():
        if name.startswith("_") or "lc36" not in r:
            continue
        groups = pd.qcut(pd.Series(r["lc36"]).rank(method="first"), 3, labels=False).to_numpy()
        cells = []
        for g in range(3):
            m = groups == g
            observed = km_at(event[m], months[m], HORIZON_MONTHS)
            cells.append(f"T{g + 1}: pred {r['lc36'][m].mean():.2f} / KM {observed:.2f}")
        print(f"  {name:28s} " + "  ".join(cells))
    print(f"  {'all patients':28s} KM {km_at(event, months, HORIZON_MONTHS):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", type=Path)
    parser.add_argument("--truth", type=Path, default=None, help="truth.csv of a synthetic cohort (evaluation only)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", default=None, help="run only this variant (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report(run(args.features, args.truth, args.folds, args.seed, args.variant))


if __name__ == "__main__":
    main()
