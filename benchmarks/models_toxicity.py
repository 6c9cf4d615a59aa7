"""Held-out performance of the toxicity models (issue 8): AUC, Brier, calibration slope and intercept.

    python benchmarks/models_toxicity.py /work/data/syn300.parquet [--cohort /work/data/syn300] [--folds 5]

Outer cross-validation: ``--folds`` folds grouped by patient, stratified by centre
(``radiogenomics.training.splits.grouped_folds``), fixed ``--seed``; every model (imputer, scaler, internal
calibration folds included) is fitted on the training patients of a fold only and predicts the held-out
patients; metrics (``radiogenomics.training.metrics.classification_metrics``) are computed on the pooled
held-out predictions, with the spread over folds. No parameter is tuned on any fold.

Compared per endpoint: ``logistic`` (with ``--oar-radiomics`` also with the organs' radiomics), ``hgb`` and
``patient_lkb`` (each Platt-calibrated inside the training data), ``patient_lkb`` uncalibrated, a population
LKB fitted on the training fold (no covariates), and for endpoints with tabulated parameters the population
LKB NTCP as published (no fitting). With ``--cohort`` the
dose features of structures that the feature table lacks are added from the cohort's dvh.csv
(``radiogenomics.features.dosimetric.dvh_table_features``; e.g. the pharyngeal constrictors, which have a
DVH but no image mask in the synthetic cohort), and truth.csv gives the oracle (the true NTCP) for reference.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from radiogenomics.features.dosimetric import dvh_table_features
from radiogenomics.features.schema import read_feature_table
from radiogenomics.models.toxicity import (
    ToxicityClassifier,
    available_endpoints,
    binary_grade,
    endpoint_labels,
    population_lkb_ntcp,
)
from radiogenomics.radiobiology import load_ntcp_parameters
from radiogenomics.training.metrics import classification_metrics
from radiogenomics.training.splits import grouped_folds

log = logging.getLogger("benchmarks.models_toxicity")

DEFAULT_GROUPS = ("dose", "clinical", "genomic")
CANDIDATES: dict[str, dict[str, object]] = {
    "logistic": {"estimator": "logistic"},
    "hgb": {"estimator": "hgb"},
    "patient_lkb": {"estimator": "patient_lkb"},
    "patient_lkb (uncalibrated)": {"estimator": "patient_lkb", "calibration": None},
    "population LKB, fitted": {"estimator": "patient_lkb", "calibration": None, "groups": ("dose",)},
}


def add_dvh_structures(table: pd.DataFrame, cohort: Path) -> pd.DataFrame:
    """Dose features of dvh.csv structures that the table has no columns for (patients matched by id)."""
    extra = dvh_table_features(pd.read_csv(cohort / "dvh.csv", dtype={"patient_id": str}))
    new = [c for c in extra.columns if c not in table.columns and not c.startswith("dose.gtv")]
    if not new:
        return table
    log.info("adding %d dose column(s) from dvh.csv: %s", len(new), sorted({c.split(".")[1] for c in new}))
    added = extra[new].reindex(table["patient_id"].astype(str).to_numpy())
    return pd.concat([table.reset_index(drop=True), added.reset_index(drop=True)], axis=1)


def held_out(table: pd.DataFrame, endpoint: str, folds: int, seed: int, truth: pd.DataFrame | None,
             oar_radiomics: bool = False) -> pd.DataFrame:
    grades = endpoint_labels(table, endpoint)
    kept, label = binary_grade(grades)
    data, grades = table.loc[kept].reset_index(drop=True), grades[kept].to_numpy()
    splits = grouped_folds(data["patient_id"].astype(str).to_numpy(), data["clinical.center"].astype(str).to_numpy(),
                           folds, seed)
    candidates = dict(CANDIDATES)
    if oar_radiomics:
        candidates["logistic + OAR radiomics"] = {"estimator": "logistic", "groups": (*DEFAULT_GROUPS, "oar_imaging")}
    preds: dict[str, np.ndarray] = {name: np.full(len(data), np.nan) for name in candidates}
    fold_of = np.zeros(len(data), dtype=int)
    for fold in splits:
        fold_of[fold.test] = fold.index
        for name, params in candidates.items():
            model = ToxicityClassifier(endpoint=endpoint, random_state=seed, **params)  # type: ignore[arg-type]
            model.fit(data.iloc[fold.train], grades[fold.train])
            preds[name][fold.test] = model.predict_proba(data.iloc[fold.test])[:, 1]
    if endpoint in load_ntcp_parameters():
        preds["population LKB, published"] = population_lkb_ntcp(data, endpoint)
    if truth is not None and f"ntcp_{endpoint}" in truth.columns:
        preds["oracle (true NTCP)"] = truth.loc[data["patient_id"].astype(str), f"ntcp_{endpoint}"].to_numpy()
    rows = []
    for name, p in preds.items():
        pooled = classification_metrics(label, p)
        per_fold = [classification_metrics(label[fold_of == k], p[fold_of == k]) for k in range(folds)]
        rows.append({"endpoint": endpoint, "model": name, **pooled,
                     "auc_fold_sd": float(np.std([f["auc"] for f in per_fold])),
                     "slope_fold_min": float(np.min([f["calibration_slope"] for f in per_fold])),
                     "slope_fold_max": float(np.max([f["calibration_slope"] for f in per_fold]))})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path, help="feature table (.parquet) of the cohort")
    parser.add_argument("--cohort", type=Path, default=None, help="cohort folder (dvh.csv, truth.csv)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--endpoints", nargs="*", default=None, help="default: every tox_* column")
    parser.add_argument("--oar-radiomics", action="store_true", help="also logistic with the organs' radiomics")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads (gradient boosting)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = read_feature_table(args.features)
    truth = None
    if args.cohort is not None:
        table = add_dvh_structures(table, args.cohort)
        truth_path = args.cohort / "truth.csv"
        if truth_path.exists():
            truth = pd.read_csv(truth_path, dtype={"patient_id": str}).set_index("patient_id")
    start = time.perf_counter()
    endpoints = args.endpoints or available_endpoints(table)
    with threadpool_limits(args.threads):
        results = pd.concat([held_out(table, e, args.folds, args.seed, truth, args.oar_radiomics) for e in endpoints])
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        log.info("%s", results.to_string(index=False))
    log.info("%d patients, %d-fold CV (seed %d) in %.1f s", len(table), args.folds, args.seed,
             time.perf_counter() - start)


if __name__ == "__main__":
    main()
