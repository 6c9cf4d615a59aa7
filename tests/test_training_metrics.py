"""Metrics against hand-computed values, simulated calibration with a known truth, and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit
from sksurv.util import Surv

from radiogenomics.training.metrics import (
    GREATER_IS_BETTER,
    c_index,
    calibration_slope_intercept,
    classification_metrics,
    get_scorer,
    interval_metrics,
    regression_metrics,
    survival_arrays,
)


def test_regression_by_hand() -> None:
    assert regression_metrics([1, 2, 3], [2, 2, 5])["mae"] == pytest.approx(1.0)
    # ranks differ by d = (1, -1, 1, -1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8
    m = regression_metrics([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert m["spearman"] == pytest.approx(0.8)
    t = 0.8 * math.sqrt(3 / (1 - 0.8**2))  # t statistic with n - 2 = 3 degrees of freedom
    assert m["spearman_p"] == pytest.approx(2 * stats.t.sf(t, 3), rel=1e-6)
    assert math.isnan(regression_metrics([1, 2, 3, 4], [1, 1, 1, 1])["spearman"])


def test_auc_and_brier_by_hand() -> None:
    # 4 positive-negative pairs, 3 ranked correctly
    assert classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["auc"] == pytest.approx(0.75)
    # (0.1^2 + 0.1^2 + 0.2^2 + 0.3^2) / 4
    assert classification_metrics([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3])["brier"] == pytest.approx(0.0375)


def _simulated(n: int = 20000, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p_true = expit(rng.normal(0.0, 1.5, n))
    return rng.binomial(1, p_true), p_true


def test_calibration_of_known_distortions() -> None:
    y, p = _simulated()
    slope, intercept = calibration_slope_intercept(y, p)  # perfectly calibrated
    assert slope == pytest.approx(1.0, abs=0.06) and intercept == pytest.approx(0.0, abs=0.05)
    over = expit(2.0 * logit(p))  # over-confident: logit doubled, so the recalibration slope is 1/2
    slope, intercept = calibration_slope_intercept(y, over)
    assert slope == pytest.approx(0.5, abs=0.04) and slope < 1
    under = expit(0.5 * logit(p))  # under-confident: slope 2
    assert calibration_slope_intercept(y, under)[0] == pytest.approx(2.0, abs=0.12)
    high = expit(logit(p) + 1.0)  # systematically too high by 1 logit: intercept -1, slope 1
    slope, intercept = calibration_slope_intercept(y, high)
    assert intercept == pytest.approx(-1.0, abs=0.05) and slope == pytest.approx(1.0, abs=0.06)


def test_calibration_matches_statsmodels_glm() -> None:
    import statsmodels.api as sm

    y, p = _simulated(n=400, seed=3)
    p = expit(1.3 * logit(p) - 0.4)
    lp = logit(p)
    joint = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    offset = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=lp).fit()
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(joint.params[1], rel=1e-6)
    assert intercept == pytest.approx(offset.params[0], abs=1e-6)


def test_calibration_undefined_cases() -> None:
    assert all(math.isnan(v) for v in calibration_slope_intercept([1, 1, 1], [0.2, 0.5, 0.9]))
    assert all(math.isnan(v) for v in calibration_slope_intercept([0, 1, 1], [0.5, 0.5, 0.5]))


def test_interval_metrics_by_hand() -> None:
    m = interval_metrics([1, 2, 3, 4], [0, 2.5, 2, 5], [2, 3, 4, 6])
    assert m["coverage"] == pytest.approx(0.5) and m["mean_width"] == pytest.approx(1.375)


def test_c_index_by_hand() -> None:
    # comparable pairs (earlier time has an event): (1,2) (1,3) (1,4) (2,3) (2,4); (2,3) is discordant
    y = Surv.from_arrays(event=[True, True, False, True], time=[1.0, 2.0, 3.0, 4.0])
    assert c_index(y, [4.0, 2.0, 3.0, 1.0]) == pytest.approx(0.8)
    assert c_index(y, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.0)  # every comparable pair reversed
    event, time = survival_arrays(y)
    assert event.dtype == bool and time.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="structured array"):
        c_index(np.array([1.0, 2.0]), [1.0, 2.0])


def test_scorers() -> None:
    assert get_scorer("spearman").direction == "maximize" and get_scorer("mae").direction == "minimize"
    assert get_scorer("auc").response == "predict_proba" and get_scorer("c_index").kind == "survival"
    assert get_scorer("brier")([0, 1], [0.0, 1.0]) == 0.0
    assert not GREATER_IS_BETTER["brier"] and GREATER_IS_BETTER["auc"]
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("accuracy")


def test_perfect_separation_has_no_slope() -> None:
    slope, intercept = calibration_slope_intercept([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert math.isnan(slope) and math.isnan(intercept)
