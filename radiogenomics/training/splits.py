"""Cross-validation folds grouped by patient and stratified by centre, and leave-one-centre-out folds.

The feature table has one row per patient, but folds are still built over *groups* (``patient_id``), so that
two rows of one patient (a duplicate, a re-extraction) can never be split between a training and a test fold.

Stratification uses scikit-learn's ``StratifiedGroupKFold`` (shuffled, fixed seed) with the centre as the
class, so each fold holds about the same mix of centres. Fallback, because that splitter only warns when a
class is smaller than the number of folds: centres with fewer patients than folds are pooled into one stratum
(``POOLED``); if a stratum is still smaller than the number of folds, or only one stratum is left, the folds
are plain shuffled ``GroupKFold`` (grouped, not stratified) and a warning is logged. A missing centre counts
as the centre ``UNKNOWN``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from radiogenomics.errors import InputError
from radiogenomics.training.config import CVConfig

log = logging.getLogger(__name__)

#: Stratum of the patients whose centre has fewer patients than there are folds.
POOLED = "__pooled__"
#: Centre of a patient whose centre is missing.
UNKNOWN = "__unknown__"


@dataclass(frozen=True)
class Fold:
    """One split: positional row indices of the training and the test rows."""

    index: int
    name: str
    train: np.ndarray
    test: np.ndarray


def column_values(table: pd.DataFrame, column: str) -> np.ndarray:
    """The values of ``column`` as strings (missing -> :data:`UNKNOWN`); an InputError when it is absent."""
    if column not in table.columns:
        raise InputError(f"the feature table has no column {column!r} to group or stratify folds by",
                         fix="name an existing column in cv.group_by / cv.stratify_by, or set stratify_by: null")
    values = table[column]
    return np.asarray([UNKNOWN if pd.isna(v) else str(v) for v in values], dtype=object)


def groups_and_strata(table: pd.DataFrame, cv: CVConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row groups (``cv.group_by``) and strata (``cv.stratify_by``, None when unset) of a feature table."""
    groups = column_values(table, cv.group_by)
    if (groups == UNKNOWN).any():
        raise InputError(f"{int((groups == UNKNOWN).sum())} row(s) have no {cv.group_by}",
                         fix=f"give every row a {cv.group_by}")
    return groups, (column_values(table, cv.stratify_by) if cv.stratify_by else None)


def _group_strata(groups: np.ndarray, strata: np.ndarray) -> dict[str, str]:
    """The stratum of each group; an InputError when one patient's rows disagree."""
    frame = pd.DataFrame({"group": groups.astype(str), "stratum": strata.astype(str)})
    per_group = frame.groupby("group", sort=True)["stratum"].unique()
    mixed = per_group[per_group.map(len) > 1]
    if len(mixed):
        pid = str(mixed.index[0])
        raise InputError(f"rows of one patient are in different strata ({', '.join(mixed.iloc[0])})",
                         patient_id=pid, fix="remove the duplicate rows or correct the centre")
    return {str(g): str(s[0]) for g, s in per_group.items()}


def effective_strata(groups: np.ndarray, strata: np.ndarray, n_splits: int) -> np.ndarray | None:
    """Per-row strata after pooling small centres, or None when stratification has to be dropped."""
    by_group = _group_strata(groups, strata)
    counts = pd.Series(by_group).value_counts()
    small = set(counts[counts < n_splits].index)
    if small:
        log.info("pooling %d centre(s) with fewer than %d patients into one stratum: %s",
                 len(small), n_splits, ", ".join(sorted(small)))
    pooled = {g: (POOLED if s in small else s) for g, s in by_group.items()}
    pooled_counts = pd.Series(pooled).value_counts()
    if len(pooled_counts) < 2 or (pooled_counts < n_splits).any():
        log.warning("too few patients per centre to stratify %d folds; using grouped folds without "
                    "stratification", n_splits)
        return None
    return np.asarray([pooled[str(g)] for g in groups], dtype=object)


def grouped_folds(groups: Sequence[object] | np.ndarray, strata: Sequence[object] | np.ndarray | None,
                  n_splits: int, seed: int, *, prefix: str = "fold") -> list[Fold]:
    """``n_splits`` folds over the rows: no group in two folds, stratified by ``strata`` where possible."""
    groups = np.asarray(groups, dtype=object).astype(str)
    n_groups = len(np.unique(groups))
    if n_splits < 2:
        raise InputError(f"{n_splits} folds requested; cross-validation needs at least 2",
                         fix="set cv.outer_folds / cv.inner_folds to 2 or more")
    if n_groups < n_splits:
        raise InputError(f"{n_groups} patients cannot fill {n_splits} folds",
                         fix="use fewer folds (cv.outer_folds / cv.inner_folds) or more patients")
    rows = np.zeros((len(groups), 1))
    eff = None if strata is None else effective_strata(groups, np.asarray(strata, dtype=object), n_splits)
    if eff is None:
        splits = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(rows, groups=groups)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(rows, eff, groups=groups)
    return [Fold(i, f"{prefix}{i}", np.sort(train), np.sort(test)) for i, (train, test) in enumerate(splits)]


def leave_one_centre_out(groups: Sequence[object] | np.ndarray, centres: Sequence[object] | np.ndarray) -> list[Fold]:
    """One fold per centre: that centre's patients are the test rows, all others train.

    Patients with a missing centre (:data:`UNKNOWN`) are never a test centre; they stay in every training fold.
    """
    groups = np.asarray(groups, dtype=object).astype(str)
    centres = np.asarray(centres, dtype=object).astype(str)
    _group_strata(groups, centres)
    names = sorted(set(centres) - {UNKNOWN})
    if len(names) < 2:
        raise InputError(f"leave-one-centre-out needs at least 2 centres, found {len(names)}",
                         fix="set cv.leave_one_centre_out: false, or add patients from other centres")
    folds = []
    for i, centre in enumerate(names):
        test = np.flatnonzero(centres == centre)
        train = np.flatnonzero(centres != centre)
        folds.append(Fold(i, f"centre={centre}", train, test))
    return folds
