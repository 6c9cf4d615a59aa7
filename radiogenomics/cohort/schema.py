"""Cohort folder format version 1: the vocabulary (contract §1).

Everything the loader and the validator agree on lives here, so the two cannot drift apart.
"""

from __future__ import annotations

FORMAT_VERSION = 1

PATIENTS_FILE = "patients.csv"
IMAGES_FILE = "images.csv"
EXPRESSION_FILE = "expression.csv"
DVH_FILE = "dvh.csv"
COHORT_META_FILE = "cohort.yaml"

SITES = ("head_neck", "lung", "breast", "prostate", "other")
SEXES = ("F", "M", "U")
HPV_STATUSES = ("pos", "neg", "unknown")
MODALITIES = ("CT", "PET_FDG", "PET_FMISO", "MR_T1", "MR_T2", "MR_DWI", "DOSE")
DOSE_MODALITY = "DOSE"

PATIENT_REQUIRED = ("patient_id", "site")
PATIENT_FLOAT_COLUMNS = ("age_years", "total_dose_gy", "lc_months", "delivered_dose_gy")
PATIENT_INT_COLUMNS = ("n_fractions", "lc_event", "delivered_n_fractions")
TOX_PREFIX = "tox_"
TOX_GRADE_RANGE = (0, 5)

IMAGES_REQUIRED = ("patient_id", "modality", "image")
IMAGES_COLUMNS = ("patient_id", "modality", "image", "mask", "roi", "label", "structure", "timepoint")
DVH_COLUMNS = ("patient_id", "structure", "dose_gy", "volume_cc")

#: images.csv ``timepoint`` (contract section 8): blank or ``planning`` (the default: what extract, train and
#: predict use), or ``fraction_K``: imaging acquired after K >= 1 delivered fractions (mid-treatment).
TIMEPOINT_COLUMN = "timepoint"
PLANNING = "planning"
FRACTION_PREFIX = "fraction_"

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")

# Plausibility bounds. Doses outside are not impossible, but almost always a unit or typing error
# (cGy for Gy, total for per-fraction); the validator rejects them with that hint.
MAX_PLAUSIBLE_TOTAL_DOSE_GY = 150.0
MAX_PLAUSIBLE_N_FRACTIONS = 100  # hyperfractionation reaches 68-70 fx (RTOG 90-03, EORTC 22791)
MAX_PLAUSIBLE_DOSE_PER_FRACTION_GY = 35.0
MAX_PLAUSIBLE_AGE_YEARS = 120.0
# pandas' default missing-value markers, minus "NA"/"N/A" would be wrong for gene names; we keep
# blank-only as missing in ID columns by reading everything as string first.


#: K of ``fraction_K`` has at most this many digits (a course has at most a few hundred fractions).
MAX_FRACTION_DIGITS = 4


def parse_timepoint(text: object) -> str | None:
    """The canonical timepoint of an images.csv cell: ``planning`` for blank/None/``planning`` (any case),
    ``fraction_K`` for ``fraction_K`` (any case, leading zeros dropped, K >= 1); None for anything else."""
    if text is None or (isinstance(text, float) and text != text):
        return PLANNING
    value = str(text).strip().lower()
    if value in ("", PLANNING):
        return PLANNING
    if value.startswith(FRACTION_PREFIX):
        digits = value[len(FRACTION_PREFIX):]
        if digits.isascii() and digits.isdigit() and len(digits) <= MAX_FRACTION_DIGITS and int(digits) >= 1:
            return fraction_timepoint(int(digits))
    return None


def fraction_timepoint(k: int) -> str:
    """``fraction_K``: the timepoint of imaging after ``k`` (>= 1) delivered fractions."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"a mid-treatment timepoint needs K >= 1 delivered fractions, got {k!r}")
    return f"{FRACTION_PREFIX}{int(k)}"


def timepoint_fraction(timepoint: str) -> int | None:
    """K of a canonical ``fraction_K`` timepoint; None for ``planning``. ValueError for anything else."""
    canonical = parse_timepoint(timepoint)
    if canonical is None:
        raise ValueError(f"timepoint {timepoint!r} is neither blank, 'planning' nor 'fraction_K' (K >= 1)")
    return None if canonical == PLANNING else int(canonical[len(FRACTION_PREFIX):])


def timepoint_sort_key(timepoint: str) -> int:
    """Chronological order: planning (0) first, then fraction_K by K."""
    return timepoint_fraction(timepoint) or 0
