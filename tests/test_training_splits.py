"""Folds: patients never straddle folds, centres are balanced, small centres fall back, centres held out."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from radiogenomics.errors import InputError
from radiogenomics.training.splits import (
    POOLED,
    UNKNOWN,
    column_values,
    effective_strata,
    grouped_folds,
    leave_one_centre_out,
)


def _cohort(sizes: dict[str, int], duplicates: int = 0) -> tuple[np.ndarray, np.ndarray]:
    groups, centres = [], []
    for centre, n in sizes.items():
        for i in range(n):
            groups.append(f"{centre}{i:03d}")
            centres.append(centre)
    for i in range(duplicates):  # a second row for some patients
        groups.append(groups[i * 3])
        centres.append(centres[i * 3])
    return np.asarray(groups, dtype=object), np.asarray(centres, dtype=object)


def _check_partition(folds: list, groups: np.ndarray) -> None:
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(groups)))  # every row tested exactly once
    for f in folds:
        assert not set(groups[f.train]) & set(groups[f.test])
        assert len(np.intersect1d(f.train, f.test)) == 0


def test_duplicate_rows_of_a_patient_stay_together() -> None:
    groups, centres = _cohort({"A": 20, "B": 15, "C": 10}, duplicates=12)
    folds = grouped_folds(groups, centres, 5, seed=1)
    assert len(folds) == 5
    _check_partition(folds, groups)


def test_folds_are_balanced_by_centre_and_seeded() -> None:
    groups, centres = _cohort({"A": 40, "B": 20, "C": 20})
    folds = grouped_folds(groups, centres, 4, seed=7)
    for f in folds:
        counts = pd.Series(centres[f.test]).value_counts()
        assert counts["A"] == 10 and counts["B"] == 5 and counts["C"] == 5
    again = grouped_folds(groups, centres, 4, seed=7)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again, strict=True))
    other = grouped_folds(groups, centres, 4, seed=8)
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(folds, other, strict=True))


def test_small_centres_are_pooled() -> None:
    groups, centres = _cohort({"A": 30, "B": 30, "C": 3, "D": 2})
    strata = effective_strata(groups, centres, 5)
    assert strata is not None
    assert set(strata[np.isin(centres, ["C", "D"])]) == {POOLED}
    assert set(strata[centres == "A"]) == {"A"}
    _check_partition(grouped_folds(groups, centres, 5, seed=0), groups)


def test_unstratifiable_centres_fall_back_to_grouped_folds(caplog: pytest.LogCaptureFixture) -> None:
    groups, centres = _cohort({"A": 30, "C": 2})
    with caplog.at_level(logging.WARNING, logger="radiogenomics.training.splits"):
        assert effective_strata(groups, centres, 5) is None
        folds = grouped_folds(groups, centres, 5, seed=0)
    assert "without stratification" in caplog.text
    _check_partition(folds, groups)
    single, single_centres = _cohort({"A": 12})
    assert effective_strata(single, single_centres, 3) is None  # one centre: nothing to stratify
    _check_partition(grouped_folds(single, None, 3, seed=0), single)


def test_bad_groupings_are_input_errors() -> None:
    groups = np.array(["P1", "P1", "P2", "P3"], dtype=object)
    with pytest.raises(InputError) as info:
        grouped_folds(groups, np.array(["A", "B", "A", "A"], dtype=object), 2, seed=0)
    assert info.value.patient_id == "P1"
    with pytest.raises(InputError, match="3 patients cannot fill 4 folds"):
        grouped_folds(groups, None, 4, seed=0)
    with pytest.raises(InputError, match="no column 'clinical.centre'"):
        column_values(pd.DataFrame({"clinical.center": ["A"]}), "clinical.centre")
    values = column_values(pd.DataFrame({"c": ["A", None, np.nan]}), "c")
    assert values.tolist() == ["A", UNKNOWN, UNKNOWN]


def test_leave_one_centre_out() -> None:
    groups, centres = _cohort({"A": 5, "B": 4, "C": 3, UNKNOWN: 2})
    folds = leave_one_centre_out(groups, centres)
    assert [f.name for f in folds] == ["centre=A", "centre=B", "centre=C"]
    for f in folds:
        held = f.name.split("=")[1]
        assert set(centres[f.test]) == {held} and held not in set(centres[f.train])
        assert set(np.flatnonzero(centres == UNKNOWN)) <= set(f.train)  # unknown centre: always training
    with pytest.raises(InputError, match="at least 2 centres"):
        leave_one_centre_out(*_cohort({"A": 5, UNKNOWN: 3}))


def test_groups_and_strata_from_a_feature_table() -> None:
    from radiogenomics.training.config import TrainConfig, parse_train_config
    from radiogenomics.training.splits import groups_and_strata

    table = pd.DataFrame({"patient_id": ["P1", "P2"], "clinical.center": ["A", None]})
    groups, strata = groups_and_strata(table, TrainConfig().cv)
    assert groups.tolist() == ["P1", "P2"] and strata is not None and strata.tolist() == ["A", UNKNOWN]
    assert groups_and_strata(table, parse_train_config({"cv": {"stratify_by": None}}).cv)[1] is None
    with pytest.raises(InputError, match="have no patient_id"):
        groups_and_strata(pd.DataFrame({"patient_id": ["P1", None]}), TrainConfig().cv)
