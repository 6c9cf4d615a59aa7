"""The mid-treatment cohort and the tables of notebook 05 (the retrospective "what if we adapted" analysis).

* :func:`mid_treatment_cohort`: a cohort with images at ``fraction_K``: the one given, the notebook's cohort when
  it has them, else a synthetic one generated under the output folder (``<out>/adaptive/cohort_fx<K>``, reused);
* :func:`patient_table`: one row per adapted record (``radiogenomics adapt``, contract section 8);
* :func:`whole_course_ntcp`: the NTCP of the whole-course OAR checks of every record, for the adapted course (as
  the record has it) and for the baseline course (recomputed with the same function the adaptation uses,
  :func:`radiogenomics.planning.adaptive.whole_course_oar`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from _common import Folders, synthetic_options

from radiogenomics.errors import InputError

#: one category per adapted record; a fallback record keeps the baseline course whatever else its flags say
CATEGORIES = ("deescalated", "escalated", "unchanged", "fallback")
#: grid of the generated cohort when the notebook's cohort is not synthetic
DEFAULT_GRID = 24


def has_timepoint(cohort_dir: Path, timepoint: str) -> bool:
    """True when images.csv has rows at ``timepoint`` (``fraction_K``, read as ``validate`` reads it)."""
    from radiogenomics.cohort.schema import parse_timepoint

    path = cohort_dir / "images.csv"
    if not path.is_file():
        return False
    images = pd.read_csv(path, dtype=str, keep_default_na=False)
    return "timepoint" in images.columns and bool((images["timepoint"].map(parse_timepoint) == timepoint).any())


def mid_treatment_cohort(folders: Folders, fraction: int, *, given: str | None, n_patients: int, seed: int,
                         grid_size: int | None) -> tuple[Path, str]:
    """(cohort folder, how it was chosen): ``given``, else the notebook's cohort if it was imaged at fraction
    ``fraction``, else a synthetic cohort with mid-treatment PET under ``<out>/adaptive`` (generated once; the
    grid of the notebook's synthetic cohort unless ``grid_size`` says otherwise, so the model meets features of
    the voxel size it was trained on)."""
    timepoint = f"fraction_{fraction}"
    if given:
        path = Path(given).expanduser()
        if not has_timepoint(path, timepoint):
            raise InputError(f"MID_COHORT={given} has no images at {timepoint}", file=str(path / "images.csv"),
                             fix=f"give a cohort whose images.csv has rows with timepoint {timepoint}")
        return path, "given (MID_COHORT)"
    if has_timepoint(folders.cohort, timepoint):
        return folders.cohort, "the notebook's cohort (it has mid-treatment images)"
    trained_on = synthetic_options(folders.cohort)
    grid = grid_size or (trained_on or {}).get("grid_size") or DEFAULT_GRID
    wanted = {"n_patients": n_patients, "grid_size": int(grid), "seed": seed}
    cohort = folders.out / "adaptive" / f"cohort_fx{fraction}"
    on_disk = synthetic_options(cohort)
    if on_disk != wanted or not has_timepoint(cohort, timepoint):
        from radiogenomics.synthetic import generate_cohort

        if on_disk is None and cohort.is_dir() and any(cohort.iterdir()):
            raise InputError(f"{cohort} holds files that were not generated here", file=str(cohort),
                             fix="set MID_COHORT to use it, or choose another RADIOGENOMICS_NOTEBOOK_OUT")
        generate_cohort(cohort, n_patients=n_patients, seed=seed, grid_size=int(grid), overwrite=on_disk is not None,
                        mid_treatment_fraction=fraction)
    return cohort, f"synthetic ({n_patients} patients, {grid}^3 voxels, seed {seed}, generated under the output folder)"


def category(flags: Sequence[str]) -> str:
    """deescalated / escalated / unchanged / fallback (the record's flags)."""
    if "adaptation_fallback" in flags:
        return "fallback"
    if "deescalated" in flags:
        return "deescalated"
    if "escalated" in flags:
        return "escalated"
    return "unchanged"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan


def patient_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per adapted record: courses, dose change, projected TCP, the measured response (indexed by
    patient_id)."""
    rows = []
    for r in records:
        response = r.get("response") or {}
        before, now = response.get("baseline") or {}, response.get("mid_treatment") or {}
        adaptation = r.get("adaptation") or {}
        rows.append({
            "patient_id": str(r["patient_id"]), "category": category(r.get("flags") or []),
            "flags": ",".join(r.get("flags") or []), "bound": adaptation.get("bound"),
            "baseline_total_dose_gy": float(r["baseline_total_dose_gy"]),
            "adapted_total_dose_gy": float(r["adapted_total_dose_gy"]),
            "delivered_n_fractions": int(r["delivered_n_fractions"]),
            "delivered_dose_gy": float(r["delivered_dose_gy"]),
            "remaining_n_fractions": int(r["remaining_n_fractions"]),
            "remaining_dose_per_fraction_gy": float(r["remaining_dose_per_fraction_gy"]),
            "baseline_n_fractions": int(round(float(r["recommended_n_fractions"]))),
            "tcp_target": _number(adaptation.get("tcp_target")),
            "tcp_planning": _number(adaptation.get("tcp_planning")),
            "tcp_baseline": _number(r.get("tcp_baseline")),
            "tcp_adapted": _number(r.get("tcp_adapted")),
            "measured_hypoxic_fraction_before": _number(before.get("hypoxic_fraction")),
            "measured_hypoxic_fraction_mid": _number(now.get("hypoxic_fraction")),
            "measured_fmiso_tbr_max_before": _number(before.get("fmiso_tbr_max")),
            "measured_fmiso_tbr_max_mid": _number(now.get("fmiso_tbr_max")),
        })
    table = pd.DataFrame(rows).set_index("patient_id")
    table["dose_change_gy"] = table["adapted_total_dose_gy"] - table["baseline_total_dose_gy"]
    table["tcp_change"] = table["tcp_adapted"] - table["tcp_baseline"]
    table["tcp_change_vs_target"] = table["tcp_adapted"] - table["tcp_target"]
    return table


def whole_course_ntcp(records: Sequence[Mapping[str, Any]], cohort_dir: Path) -> pd.DataFrame:
    """One row per record and NTCP check of the whole course (delivered + remaining, EQD2 per bin): the adapted
    course's value from the record (``adaptation.whole_course_oar_checks``) and the baseline course's value
    (the K delivered fractions, then the rest as recommended), recomputed with ``whole_course_oar``."""
    from radiogenomics.features.patient_dvhs import cohort_dvhs
    from radiogenomics.planning.adaptive import organ_limits, whole_course_oar
    from radiogenomics.radiobiology.adaptive import Course
    from radiogenomics.radiobiology.rails import load_rails
    from radiogenomics.radiobiology.tissues import load_tissues

    rails, tissues = load_rails(), load_tissues()
    dvhs = cohort_dvhs(cohort_dir, [str(r["patient_id"]) for r in records])
    rows = []
    for r in records:
        pid = str(r["patient_id"])
        k, delivered_gy = int(r["delivered_n_fractions"]), float(r["delivered_dose_gy"])
        n_base = int(round(float(r["recommended_n_fractions"])))
        delivered = Course(k, delivered_gy / k)
        baseline_remaining = Course(n_base - k, (float(r["baseline_total_dose_gy"]) - delivered_gy) / (n_base - k))
        reference_gy = float(r.get("n_fractions") or 0) * float(r.get("dose_per_fraction_gy") or 0)
        limits = organ_limits(dvhs.get(pid, {}), rails, tissues) if reference_gy > 0 else []
        baseline = {(c["structure"], c["metric"]): c["value"]
                    for c in whole_course_oar(limits, reference_gy, delivered, baseline_remaining)}
        for check in (r.get("adaptation") or {}).get("whole_course_oar_checks") or []:
            if not str(check["metric"]).startswith("ntcp_"):
                continue
            key = (check["structure"], check["metric"])
            rows.append({"patient_id": pid, "structure": key[0], "endpoint": key[1].removeprefix("ntcp_"),
                         "ntcp_baseline_course": baseline.get(key, math.nan), "ntcp_adapted_course": check["value"],
                         "limit": check["limit"]})
    table = pd.DataFrame(rows, columns=["patient_id", "structure", "endpoint", "ntcp_baseline_course",
                                        "ntcp_adapted_course", "limit"])
    table["ntcp_change"] = table["ntcp_adapted_course"] - table["ntcp_baseline_course"]
    return table
