"""The feature table's schema: which group each column belongs to, and which groups are features by default.

Groups (contract section 1, "The feature table"):

* ``imaging``: handcrafted radiomics, ``<modality>.<roi>.<pyradiomics key>``
* ``deep``: MONAI embeddings, ``deep.<modality>.<roi>.<i>``
* ``genomic``: ``genomic.*`` (RSI, signature scores, coverage)
* ``dose``: organ-at-risk dosimetry, ``dose.<oar>.<metric>``
* ``treatment``: what was delivered to the target: ``clinical.total_dose_gy``, ``clinical.n_fractions``,
  ``clinical.dose_per_fraction_gy`` and ``dose.<gtv|ctv|ptv|itv...>.<metric>``
* ``clinical``: the other patients.csv covariates, ``clinical.*``
* ``outcome``: outcome-like columns (``*_event``, ``*_months``, ``lc_*``, ``tox_*``, ``os_*``, ``pfs_*``)
* ``availability``: ``available.<source>`` 0/1 flags

``dose``, ``treatment`` and ``outcome`` are groups a model must opt into: they never become features by
default (a radiosensitivity model that learns from the delivered dose learns the prescriber's habits, and an
outcome column is a label).
"""

from __future__ import annotations

import re

from radiogenomics.features import naming

IMAGING = "imaging"
DEEP = "deep"
GENOMIC = "genomic"
DOSE = "dose"
TREATMENT = "treatment"
CLINICAL = "clinical"
OUTCOME = "outcome"
AVAILABILITY = "availability"
ID = "id"

GROUPS: tuple[str, ...] = (IMAGING, DEEP, GENOMIC, DOSE, TREATMENT, CLINICAL, OUTCOME, AVAILABILITY)
#: Groups that are model features unless a model opts out.
DEFAULT_FEATURE_GROUPS: tuple[str, ...] = (IMAGING, DEEP, GENOMIC, CLINICAL, AVAILABILITY)
#: Groups a model must opt into explicitly.
OPT_IN_GROUPS: tuple[str, ...] = (DOSE, TREATMENT, OUTCOME)

#: Namespace of outcome-like columns copied from patients.csv.
OUTCOME_NAMESPACE = "outcome"
#: patients.csv columns that describe the delivered treatment, not the patient.
TREATMENT_CLINICAL = frozenset({"total_dose_gy", "n_fractions", "dose_per_fraction_gy", "treatment_days",
                                "overall_treatment_time_days"})
_OUTCOME_NAME = re.compile(r"^(lc|tox|os|pfs|dfs|dmfs|lrc)_|_(event|months|status|days)$")
#: Target volumes (ICRU 50/62 names and TG-263 variants): dose to them is the prescription, a treatment variable.
_TARGET_ROI = re.compile(r"^(gtv|ctv|ptv|itv)(_|$|[0-9])")


def is_outcome_name(name: str) -> bool:
    """True for a patients.csv column that looks like an outcome or label (``os_event``, ``pfs_months``, ...)."""
    return bool(_OUTCOME_NAME.search(name.strip().lower()))


def is_target_roi(roi: str) -> bool:
    """True for a target volume (``gtv``, ``ctv_high``, ``ptv70``), whose dose is a treatment variable."""
    return bool(_TARGET_ROI.match(naming.slug(roi)))


def column_group(column: str) -> str:
    """The schema group of a feature-table column (see the module docstring); ``id`` for ``patient_id``."""
    if column == naming.PATIENT_ID:
        return ID
    ns, _, rest = column.partition(".")
    if not rest:
        raise ValueError(f"column {column!r} has no namespace (expected '<namespace>.<name>')")
    if ns == naming.AVAILABLE:
        return AVAILABILITY
    if ns == naming.DEEP:
        return DEEP
    if ns == naming.GENOMIC:
        return GENOMIC
    if ns == OUTCOME_NAMESPACE:
        return OUTCOME
    if ns == naming.DOSE:
        return TREATMENT if is_target_roi(rest.split(".", 1)[0]) else DOSE
    if ns == naming.CLINICAL:
        if rest in TREATMENT_CLINICAL:
            return TREATMENT
        return OUTCOME if is_outcome_name(rest) else CLINICAL
    return IMAGING
