"""Column names of the fused feature table.

Every column is ``<namespace>.<...>``: the namespace says where a value comes from, the rest is dot-free
components. Radiomic columns keep pyradiomics' own key (``ct.gtv.original_firstorder_Mean``), so a user
can look the feature up in the pyradiomics documentation.
"""

from __future__ import annotations

import re
from functools import lru_cache

PATIENT_ID = "patient_id"
AVAILABLE = "available"
DEEP = "deep"
GENOMIC = "genomic"
DOSE = "dose"
CLINICAL = "clinical"
OUTCOME = "outcome"

_SLUG = re.compile(r"[^0-9a-z]+")


def slug(text: str) -> str:
    """Lower-case, dot-free token: ``"PET_FMISO" -> "pet_fmiso"``, ``"Parotid L" -> "parotid_l"``."""
    token = _SLUG.sub("_", str(text).strip().lower()).strip("_")
    if not token:
        raise ValueError(f"cannot build a column name component from {text!r}")
    return token


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@lru_cache(maxsize=4096)
def structure_slug(name: str) -> str:
    """The column component of a structure role. Contract section 1: a role is a TG-263 name in any case/spacing,
    so every case/spacing of one TG-263 organ name gives one key, the TG-263 name in snake case (``"SpinalCord"``,
    ``"spinal_cord"``, ``"Spinal Cord"``, ``"SPINALCORD"`` -> ``"spinal_cord"``; ``"Parotid_L"``, ``"ParotidL"``,
    ``"parotid l"`` -> ``"parotid_l"``). Other names keep :func:`slug` (targets ``"GTV"`` -> ``"gtv"``; aliases
    such as ``"Lt Parotid"`` -> ``"lt_parotid"``, which the alias table resolves for the rails but which are
    not TG-263 names; unknown names)."""
    from radiogenomics.cohort.roles import role_key
    from radiogenomics.radiobiology.structures import resolve_structure

    match = resolve_structure(name)
    if match is None or match.kind != "oar" or role_key(name) != role_key(match.canonical):
        return slug(name)
    return slug(_CAMEL.sub(" ", match.canonical))


def radiomics_column(modality: str, roi: str, pyradiomics_key: str) -> str:
    """``("CT", "GTV", "original_firstorder_Mean") -> "ct.gtv.original_firstorder_Mean"``."""
    if "." in pyradiomics_key:
        raise ValueError(f"pyradiomics key {pyradiomics_key!r} contains a dot")
    return f"{slug(modality)}.{structure_slug(roi)}.{pyradiomics_key}"


def deep_column(modality: str, roi: str, index: int) -> str:
    """``("CT", "GTV", 0) -> "deep.ct.gtv.0"``."""
    return f"{DEEP}.{slug(modality)}.{structure_slug(roi)}.{int(index)}"


def genomic_column(name: str) -> str:
    """``"rsi" -> "genomic.rsi"``."""
    return f"{GENOMIC}.{slug(name)}"


#: The measured Radiosensitivity Index (Eschrich et al. 2009) of a patient's expression: the RSI models' label.
RSI_COLUMN = f"{GENOMIC}.rsi"


def dose_column(structure: str, metric: str) -> str:
    """``("parotid_l", "mean_gy") -> "dose.parotid_l.mean_gy"`` (``"Parotid L"`` too: :func:`structure_slug`)."""
    return f"{DOSE}.{structure_slug(structure)}.{slug(metric)}"


def clinical_column(name: str) -> str:
    """``"age_years" -> "clinical.age_years"``."""
    return f"{CLINICAL}.{slug(name)}"


def outcome_column(name: str) -> str:
    """``"os_event" -> "outcome.os_event"``: an outcome-like patients.csv column (a label, never a default feature)."""
    return f"{OUTCOME}.{slug(name)}"


def availability_column(source: str) -> str:
    """``"PET_FMISO" -> "available.pet_fmiso"``: 1 when that source produced at least one feature."""
    return f"{AVAILABLE}.{slug(source)}"


def namespace(column: str) -> str:
    """The source of a column: ``"ct"``, ``"deep"``, ``"genomic"``, ``"dose"``, ``"clinical"``, ``"outcome"``,
    ``"available"``."""
    return column.split(".", 1)[0]
