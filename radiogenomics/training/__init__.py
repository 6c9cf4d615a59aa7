"""radiogenomics.training: configuration, grouped splits, metrics, nested CV with Optuna, MLflow tracking.

Estimator-agnostic: any scikit-learn-API estimator built by ``build_estimator(params)`` can be evaluated by
:func:`nested_cv`. See docs/training.md.
"""

from radiogenomics.training.config import DEFAULT_CONFIG_PATH, TrainConfig, load_train_config, parse_train_config
from radiogenomics.training.metrics import (
    GREATER_IS_BETTER,
    SCORERS,
    Scorer,
    c_index,
    calibration_slope_intercept,
    classification_metrics,
    get_scorer,
    interval_metrics,
    regression_metrics,
    survival_metrics,
)
from radiogenomics.training.nested_cv import FoldResult, NestedCVResult, nested_cv
from radiogenomics.training.search import best_params, open_storage, open_study, run_search
from radiogenomics.training.splits import Fold, grouped_folds, groups_and_strata, leave_one_centre_out
from radiogenomics.training.tracking import Tracker, cohort_content_hash, table_content_hash

__all__ = [
    "DEFAULT_CONFIG_PATH", "Fold", "FoldResult", "GREATER_IS_BETTER", "NestedCVResult", "SCORERS", "Scorer",
    "Tracker", "TrainConfig", "best_params", "c_index", "calibration_slope_intercept", "classification_metrics",
    "cohort_content_hash", "get_scorer", "grouped_folds", "groups_and_strata", "interval_metrics",
    "leave_one_centre_out", "load_train_config", "nested_cv", "open_storage", "open_study", "parse_train_config",
    "regression_metrics", "run_search", "survival_metrics", "table_content_hash",
]
