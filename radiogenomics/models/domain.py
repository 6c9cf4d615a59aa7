"""The training domain stored with a model: which patients its predictions may be trusted for.

Fitted on the training feature table (contract section 2, "The safety gate"; stored in the prescriber's
pickle):

* ``sites``: the treatment sites of the training patients (``clinical.site``); a patient of another site gets
  the population fallback, flagged ``site_not_in_training``;
* ``numeric_ranges``: per numeric clinical covariate (``clinical.age_years``, ...; not the treatment columns),
  the training range widened by ``margin`` of its span on each side; a value outside is
  ``out_of_distribution`` (a text column whose every value is a number, e.g. an extra patients.csv column
  read as text, counts as numeric);
* ``categories``: per text covariate (``clinical.sex``, ``clinical.hpv``, ``clinical.t_stage``; not the
  centre, a batch label, nor the site, nor free text with more than :data:`MAX_CATEGORIES` distinct values
  in over half the rows), the values seen in training; another value is ``out_of_distribution``;
* ``modality_patterns``: how many training patients had each combination of imaging modalities
  (``available.<modality>``); a pattern seen in fewer than ``min_pattern_patients`` training patients has no
  calibrated prediction (the conformal intervals were calibrated on the patterns seen): the imaging RSI falls
  back to the population, flagged ``missing_imaging``.

The imaging features' own domain is the separate :class:`~radiogenomics.models.applicability.ApplicabilityDomain`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.cohort.schema import DOSE_MODALITY, MODALITIES
from radiogenomics.features import naming
from radiogenomics.features.schema import CLINICAL, column_group
from radiogenomics.models.inputs import finite_number

SITE_COLUMN = naming.clinical_column("site")
#: Text covariates never checked against the training values: the centre is a batch label (harmonised), the
#: site has its own check.
UNCHECKED_TEXT: tuple[str, ...] = (naming.clinical_column("center"), SITE_COLUMN)
#: Share of a covariate's training span added on each side of its range.
DEFAULT_MARGIN = 0.10
#: A text covariate with more distinct values than this (and than half its rows) is free text, not a category.
MAX_CATEGORIES = 20
#: Training patients a modality pattern needs for its predictions to count as calibrated.
DEFAULT_MIN_PATTERN_PATIENTS = 5
#: ``available.<modality>`` columns of the imaging modalities (not the dose grid, genomics or deep features).
IMAGING_AVAILABILITY: tuple[str, ...] = tuple(naming.availability_column(m) for m in MODALITIES
                                               if m != DOSE_MODALITY)


@dataclass(frozen=True)
class DomainCheck:
    """One patient against the training domain: what lies outside (human-readable reasons)."""

    site_in_training: bool = True
    out_of_range: list[str] = field(default_factory=list)
    unseen_pattern: str | None = None


@dataclass
class TrainingDomain:
    """Sites, clinical ranges and modality patterns of a training table (see the module docstring)."""

    sites: tuple[str, ...] = ()
    numeric_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    modality_patterns: dict[str, int] = field(default_factory=dict)
    margin: float = DEFAULT_MARGIN
    min_pattern_patients: int = DEFAULT_MIN_PATTERN_PATIENTS

    @classmethod
    def fit(cls, table: pd.DataFrame, *, default_site: str | None = None, margin: float = DEFAULT_MARGIN,
            min_pattern_patients: int = DEFAULT_MIN_PATTERN_PATIENTS) -> TrainingDomain:
        """The domain of ``table`` (a training feature table). ``default_site``: the site of a table without
        ``clinical.site``."""
        sites: set[str] = set()
        if SITE_COLUMN in table.columns:
            sites = {str(s) for s in table[SITE_COLUMN].dropna().tolist() if str(s)}
        if not sites and default_site:
            sites = {default_site}
        ranges: dict[str, tuple[float, float]] = {}
        categories: dict[str, tuple[str, ...]] = {}
        for column in (str(c) for c in table.columns):
            if _group(column) != CLINICAL or column in UNCHECKED_TEXT:
                continue
            values = table[column].dropna()
            if pd.api.types.is_bool_dtype(values) or values.empty:
                continue
            numbers = pd.to_numeric(values, errors="coerce")
            if numbers.notna().all():  # numbers, also an extra patients.csv column read as text ("55.0")
                finite = numbers.to_numpy(dtype=np.float64)
                finite = finite[np.isfinite(finite)]
                if finite.size:
                    low, high = float(finite.min()), float(finite.max())
                    pad = margin * (high - low)
                    ranges[column] = (low - pad, high + pad)
                continue
            seen = sorted({str(v) for v in values.tolist()})
            if len(seen) <= max(MAX_CATEGORIES, 0.5 * len(values)):
                categories[column] = tuple(seen)  # else free text (an identifier, a comment): not a category
        patterns = Counter(modality_pattern(row) for row in _availability(table).to_dict(orient="records"))
        return cls(tuple(sorted(sites)), ranges, categories, dict(patterns), margin, min_pattern_patients)

    def check(self, row: Mapping[str, Any], site: str) -> DomainCheck:
        """One patient's row (clinical and ``available.*`` columns; absent = missing) at ``site``."""
        outside: list[str] = []
        for column, (low, high) in self.numeric_ranges.items():
            value = finite_number(row.get(column))
            if value is not None and not low <= value <= high:
                outside.append(f"{column} = {value:g} outside the training range [{low:.4g}, {high:.4g}]")
        for column, seen in self.categories.items():
            value = row.get(column)
            if isinstance(value, str) and value and value not in seen:
                outside.append(f"{column} = {value!r} not seen in training ({', '.join(seen)})")
        unseen = None
        if self.modality_patterns:
            pattern = modality_pattern({k: row.get(k) for k in IMAGING_AVAILABILITY})
            if self.modality_patterns.get(pattern, 0) < self.min_pattern_patients:
                unseen = (f"imaging {pattern or 'none'}: {self.modality_patterns.get(pattern, 0)} training patient(s) "
                          f"had it (calibrated from {self.min_pattern_patients})")
        return DomainCheck(not self.sites or site in self.sites, outside, unseen)


def modality_pattern(flags: Mapping[str, Any]) -> str:
    """The imaging modalities a row has (``available.<modality>`` = 1), sorted, joined by ``+`` (``"ct+pet_fdg"``)."""
    present = [str(k).split(".", 1)[1] for k, v in flags.items() if finite_number(v) == 1.0]
    return "+".join(sorted(present))


def _availability(table: pd.DataFrame) -> pd.DataFrame:
    columns: Sequence[str] = [c for c in IMAGING_AVAILABILITY if c in table.columns]
    return table[list(columns)]


def _group(column: str) -> str | None:
    try:
        return column_group(column)
    except ValueError:
        return None
