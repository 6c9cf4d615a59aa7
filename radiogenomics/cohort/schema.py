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
PATIENT_FLOAT_COLUMNS = ("age_years", "total_dose_gy", "lc_months")
PATIENT_INT_COLUMNS = ("n_fractions", "lc_event")
TOX_PREFIX = "tox_"
TOX_GRADE_RANGE = (0, 5)

IMAGES_REQUIRED = ("patient_id", "modality", "image")
IMAGES_COLUMNS = ("patient_id", "modality", "image", "mask", "roi", "label", "structure")
DVH_COLUMNS = ("patient_id", "structure", "dose_gy", "volume_cc")

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")

# Plausibility bounds. Doses outside are not impossible, but almost always a unit or typing error
# (cGy for Gy, total for per-fraction); the validator rejects them with that hint.
MAX_PLAUSIBLE_TOTAL_DOSE_GY = 150.0
MAX_PLAUSIBLE_N_FRACTIONS = 100  # hyperfractionation reaches 68-70 fx (RTOG 90-03, EORTC 22791)
MAX_PLAUSIBLE_DOSE_PER_FRACTION_GY = 35.0
MAX_PLAUSIBLE_AGE_YEARS = 120.0
# pandas' default missing-value markers, minus "NA"/"N/A" would be wrong for gene names; we keep
# blank-only as missing in ID columns by reading everything as string first.
