"""Adaptive re-prescription from mid-treatment PET (contract section 8): one adapted record per patient.

For a baseline record (``radiogenomics predict``) of a patient imaged at ``fraction_K``:

1. **delivered**: K fractions of the patient's regimen (patients.csv ``total_dose_gy`` / ``n_fractions``; or its
   ``delivered_*``; without either, of the record's recommended dose per fraction:
   :meth:`radiogenomics.cohort.Cohort.delivered_course`); the baseline course's remaining n - K fractions share
   the dose left to the recommended total;
2. **response** (against the planning PET, the mid-treatment images resampled linearly onto the planning PET's grid
   when theirs differs, both read inside the planning target): FMISO uptake ratio to its reference tissue (TBR: the
   hand-off's reference, docs/serving.md "The dose map"), hypoxic fraction (share of target voxels with pO2 below
   :data:`HYPOXIC_PO2_MMHG`), mean pO2 (the FMISO -> pO2 conversion of docs/radiobiology.md); FDG SUVmax, SUVmean
   and the metabolic volume (SUV >= 40 % of SUVmax, the common MTV threshold: Erdi et al., J Nucl Med 1997;38:1244)
   and the clonogen estimate of the FDG -> clonogen-density conversion (Lazzeroni et al., J Nucl Med 2026), before
   and now;
3. **remaining course** (:func:`radiogenomics.radiobiology.adaptive.adapt_course`): the fewest fractions at the
   course's dose per fraction that reach the target TCP max(planning projection, min(0.95, TCP of the baseline
   course continued)), with the mid-treatment pO2 for the remaining fractions, bounded by the site's total-dose
   rails; an adapted course outside the site's rails (total or dose per fraction) is an error, never a record;
4. **safety over the whole course**: every organ at risk of the patient's dose grid (the cohort's planned dose,
   scaled to the course) summed as EQD2 at the organ's alpha/beta (delivered + remaining; Withers 1983); a hard
   organ's limit exceeded lowers the remaining fractions (never below the site's minimum total dose: then
   ``oar_limit_exceeded``); a parallel organ's limit exceeded is flagged ``oar_soft_limit_exceeded``.

An unreadable or implausible mid-treatment image (no FDG/FMISO at that timepoint, no tumour uptake, a field of view
that misses part of the planning target, no reference tissue) gives the baseline course unchanged, flagged
``adaptation_fallback`` with the reason in ``notes``.
Flags ``deescalated`` / ``escalated`` when the adapted total is below / above the baseline's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.planning.dose_map import PETImages, load_pet, tumour_biology
from radiogenomics.radiobiology.adaptive import Adaptation, Course, adapt_course, course_eqd2, course_tcp, eqd2
from radiogenomics.radiobiology.imaging_maps import clonogen_density_from_suv

log = logging.getLogger(__name__)

#: pO2 below which a voxel counts as hypoxic (10 mmHg: the usual radiobiological hypoxia threshold; Vaupel et al.,
#: Cancer Res 1989;49:6449; the 30 ROC trial read FMISO TBR >= 1.2 as hypoxic).
HYPOXIC_PO2_MMHG = 10.0
#: FMISO uptake ratio read as hypoxic by the 30 ROC trial (TBR >= 1.2; Riaz et al., JNCI 2021; Lee et al., JCO
#: 2024): ``fmiso_tbr_hypoxic_fraction`` is the share of the target at or above it.
HYPOXIC_FMISO_TBR = 1.2
#: Metabolic tumour volume threshold: 40 % of SUVmax (Erdi et al., J Nucl Med 1997;38:1244).
MTV_FRACTION_OF_MAX = 0.4
FLAG_DEESCALATED, FLAG_ESCALATED, FLAG_FALLBACK = "deescalated", "escalated", "adaptation_fallback"


@dataclass(frozen=True)
class Response:
    """What the mid-treatment imaging showed against baseline (in the planning target)."""

    values: dict[str, Any]
    po2_baseline: np.ndarray | None
    po2_mid: np.ndarray | None
    clonogens: np.ndarray


def _on_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """The image on the reference grid (linear); NaN where the image does not reach (never a made-up 0 uptake)."""
    same = (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-4)
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6))
    if not same:
        image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, math.nan, sitk.sitkFloat64)
    return sitk.GetArrayFromImage(image).astype(np.float64)


def mid_treatment_pet(cohort: Any, patient_id: str, timepoint: str, baseline: PETImages) -> PETImages:
    """The FDG / FMISO PET at ``timepoint`` on the baseline PET's grid, with the baseline target mask."""
    arrays: dict[str, np.ndarray] = {}
    for modality in ("PET_FDG", "PET_FMISO"):
        rows = cohort.image_rows(patient_id, modality, timepoint=timepoint)
        if len(rows):
            array = _on_grid(cohort.read_image(rows.iloc[0]), baseline.reference)
            outside = ~np.isfinite(array)
            if outside[baseline.mask].any():
                raise InputError(f"the {modality} image at {timepoint} does not cover the planning target "
                                 f"({int(outside[baseline.mask].sum())} target voxel(s) outside its field of view "
                                 "or not finite)", patient_id=patient_id,
                                 fix="check the mid-treatment image and its registration")
            arrays[modality] = np.where(outside, 0.0, array)  # outside the target only: no uptake there
    if not arrays:
        raise InputError(f"no FDG or FMISO PET at {timepoint}", patient_id=patient_id,
                         fix=f"add the mid-treatment PET to images.csv with timepoint {timepoint}")
    return PETImages(baseline.reference, baseline.mask, arrays.get("PET_FDG"), arrays.get("PET_FMISO"),
                     baseline.target_roi)


def _fdg_figures(suv: np.ndarray | None, mask: np.ndarray, voxel_cc: float) -> dict[str, float | None]:
    if suv is None:
        return {"suv_max": None, "suv_mean": None, "mtv_cc": None, "clonogens": None}
    inside = suv[mask]
    peak = float(inside.max())
    mtv = float(np.count_nonzero(inside >= MTV_FRACTION_OF_MAX * peak) * voxel_cc) if peak > 0 else 0.0
    density = np.asarray(clonogen_density_from_suv(suv, mask=mask))[mask]
    return {"suv_max": peak, "suv_mean": float(inside.mean()), "mtv_cc": mtv,
            "clonogens": float(density.sum() * voxel_cc)}


def _oxygen_figures(po2: np.ndarray | None, tbr: np.ndarray | None) -> dict[str, float | None]:
    if po2 is None:
        return {"hypoxic_fraction": None, "mean_po2_mmhg": None, "fmiso_tbr_max": None,
                "fmiso_tbr_hypoxic_fraction": None}
    return {"hypoxic_fraction": float(np.mean(po2 < HYPOXIC_PO2_MMHG)), "mean_po2_mmhg": float(np.mean(po2)),
            "fmiso_tbr_max": None if tbr is None else float(np.max(tbr)),
            "fmiso_tbr_hypoxic_fraction": None if tbr is None else float(np.mean(tbr >= HYPOXIC_FMISO_TBR))}


def measure_response(baseline: PETImages, mid: PETImages, *, patient_id: str,
                     fmiso_reference_suv: float | None = None) -> Response:
    """The response figures and the per-voxel inputs of the adaptation (see the module docstring)."""
    from radiogenomics.planning.dose_map import reference_uptake

    mask = baseline.mask
    voxel_cc = float(np.prod(baseline.reference.GetSpacing())) / 1000.0
    bio0 = tumour_biology(baseline, patient_id=patient_id, fmiso_reference_suv=fmiso_reference_suv)
    for name, array in (("FDG", mid.fdg_suv), ("FMISO", mid.fmiso_suv)):
        if array is not None and not float(array[mask].max()) > 0:
            raise InputError(f"the mid-treatment {name} PET has no tumour uptake in the planning target",
                             patient_id=patient_id, fix="check the mid-treatment image and its registration")
    po2_mid = None
    tbr0 = tbr_mid = None
    if mid.fmiso_suv is not None and baseline.fmiso_suv is not None:
        bio_mid = tumour_biology(mid, patient_id=patient_id, fmiso_reference_suv=fmiso_reference_suv)
        po2_mid = None if bio_mid.po2_mmhg is None else bio_mid.po2_mmhg[mask]
        ref0 = fmiso_reference_suv or reference_uptake(baseline.fmiso_suv, mask)
        ref_mid = fmiso_reference_suv or reference_uptake(mid.fmiso_suv, mask)
        tbr0, tbr_mid = baseline.fmiso_suv[mask] / ref0, mid.fmiso_suv[mask] / ref_mid
    po2_0 = None if bio0.po2_mmhg is None else bio0.po2_mmhg[mask]
    values = {
        "baseline": {**_oxygen_figures(po2_0, tbr0), **_fdg_figures(baseline.fdg_suv, mask, voxel_cc),
                     "gtv_volume_cc": float(mask.sum() * voxel_cc)},
        "mid_treatment": {**_oxygen_figures(po2_mid, tbr_mid), **_fdg_figures(mid.fdg_suv, mask, voxel_cc)},
        "modalities": [m for m, a in (("PET_FDG", mid.fdg_suv), ("PET_FMISO", mid.fmiso_suv)) if a is not None],
        "notes": list(bio0.notes) + ([] if mid.fmiso_suv is not None else
                                     ["no FMISO PET at this timepoint: the oxygenation is taken as unchanged"]),
    }
    return Response(values, po2_0, po2_mid if po2_mid is not None else po2_0, bio0.clonogens[mask])


def organ_limits(cohort_dvh: Mapping[str, Any] | None, rails: Any, tissues: Any) -> list[tuple[str, Any, Any, float]]:
    """(structure, DVH, rails limit, alpha/beta) of every organ at risk of the patient's dose grid with a limit."""
    out = []
    for name, dvh in (cohort_dvh or {}).items():
        limit = rails.oar(name)
        if limit is None:
            continue
        try:
            tissue, _ = tissues.lookup(name)
        except InputError:
            continue
        out.append((name, dvh, limit, float(tissue.alpha_beta_gy)))
    return out


def whole_course_oar(limits: Sequence[tuple[str, Any, Any, float]], reference_gy: float, delivered: Course,
                     remaining: Course) -> list[dict[str, Any]]:
    """Each organ limit on the whole course: the organ's dose bins scaled by course, summed as EQD2 per bin."""
    from radiogenomics.radiobiology.ntcp import geud, lkb_ntcp, ntcp_parameters

    checks = []
    for name, dvh, limit, ab in limits:
        share = np.asarray(dvh.dose_gy, dtype=np.float64) / reference_gy
        volume = np.asarray(dvh.volume_cc, dtype=np.float64)
        eq = np.asarray(course_eqd2(share, delivered, remaining, ab))
        occupied = volume > 0
        rows: list[tuple[str, float, float]] = []
        if limit.max_dose_gy is not None and occupied.any():
            top = float(course_eqd2(dvh.max_dose_gy / reference_gy, delivered, remaining, ab))
            rows.append(("max_eqd2_gy", top, float(limit.max_dose_gy)))
        if limit.max_mean_dose_gy is not None and volume.sum() > 0:
            rows.append(("mean_eqd2_gy", float((eq * volume).sum() / volume.sum()), float(limit.max_mean_dose_gy)))
        if limit.max_ntcp is not None and limit.endpoint is not None and volume.sum() > 0:
            p = ntcp_parameters(limit.endpoint)
            rows.append((f"ntcp_{limit.endpoint}", float(lkb_ntcp(geud(eq, volume, 1.0 / p.n), p.td50_gy, p.m)),
                         float(limit.max_ntcp)))
        for metric, value, bound in rows:
            checks.append({"structure": name, "metric": metric, "value": value, "limit": bound,
                           "hard": bool(limit.hard), "status": "ok" if value <= bound * (1 + 1e-9) else "exceeded",
                           "alpha_beta_gy": ab, "source": limit.source})
    return checks


def cap_by_hard_organs(limits: Sequence[tuple[str, Any, Any, float]], reference_gy: float, delivered: Course,
                       remaining: Course, floor_n_fractions: int) -> tuple[Course, list[dict[str, Any]]]:
    """The remaining course with fractions taken away while a hard organ's whole-course limit is exceeded, never
    below ``floor_n_fractions`` (the site's minimum total dose), and its :func:`whole_course_oar` checks."""
    checks = whole_course_oar(limits, reference_gy, delivered, remaining)
    while any(c["hard"] and c["status"] == "exceeded" for c in checks) and remaining.n_fractions > floor_n_fractions:
        remaining = Course(remaining.n_fractions - 1, remaining.dose_per_fraction_gy)
        checks = whole_course_oar(limits, reference_gy, delivered, remaining)
    return remaining, checks


def delivered_oar_eqd2(limits: Sequence[tuple[str, Any, Any, float]], reference_gy: float,
                       delivered: Course) -> list[dict[str, Any]]:
    """Per organ with a limit, the EQD2 (Gy) the delivered fractions gave it, per limit kind (``max_dose``,
    ``mean_dose``, ``geud`` at the endpoint's ``a``): the organ's dose bins scaled to the delivered course
    (Withers 1983). The hand-off of the adapted course subtracts them from the limits."""
    from radiogenomics.radiobiology.ntcp import geud, ntcp_parameters
    from radiogenomics.radiobiology.rails import organ_key

    rows = []
    for name, dvh, limit, ab in limits:
        share = np.asarray(dvh.dose_gy, dtype=np.float64) / reference_gy
        volume = np.asarray(dvh.volume_cc, dtype=np.float64)
        if volume.sum() <= 0:
            continue
        eq = np.asarray(eqd2(share * delivered.total_gy, delivered.n_fractions, ab))
        row: dict[str, Any] = {"structure": name, "organ": organ_key(name), "alpha_beta_gy": ab,
                               "max_dose": float(eqd2(dvh.max_dose_gy / reference_gy * delivered.total_gy,
                                                      delivered.n_fractions, ab)),
                               "mean_dose": float((eq * volume).sum() / volume.sum())}
        if limit.endpoint is not None:
            a = 1.0 / ntcp_parameters(limit.endpoint).n
            row["geud"], row["geud_a"] = float(geud(eq, volume, a)), a
        rows.append(row)
    return rows


def adapt_record(record: Mapping[str, Any], cohort: Any, timepoint: str, *, rails: Any,
                 oar_dvh: Mapping[str, Any] | None = None, fmiso_reference_suv: float | None = None,
                 target_name: str = "GTV") -> dict[str, Any]:
    """The adapted record of one baseline record (module docstring). InputError when nothing can be adapted (no
    recommended dose, a course with nothing left)."""
    from radiogenomics.models import gate
    from radiogenomics.radiobiology.tissues import load_tissues

    pid = str(record["patient_id"])
    site = str(record["site"])
    bounds = rails.site(site)
    total = record.get("recommended_total_dose_gy")
    if not isinstance(total, int | float) or not math.isfinite(total):
        raise InputError("the baseline record has no recommended dose: nothing to adapt", patient_id=pid,
                         fix="see the record's flags")
    n_base = int(round(float(record["recommended_n_fractions"])))
    d = float(record["recommended_dose_per_fraction_gy"])
    given = cohort.delivered_course(pid, timepoint)
    k = int(given.n_fractions)
    delivered_gy = float(given.dose_gy) if given.dose_gy is not None else k * d
    if k < 1:
        raise InputError(f"no fraction delivered at {timepoint} (patients.csv delivered_n_fractions)",
                         patient_id=pid, fix="adapt at a timepoint after at least one delivered fraction")
    delivered = Course(k, delivered_gy / k)
    if k >= n_base:
        raise InputError(f"{k} fraction(s) delivered of a {n_base}-fraction course: nothing left to adapt",
                         patient_id=pid, fix="adapt at a timepoint before the last fraction")
    if float(total) - delivered.total_gy <= 0:
        raise InputError(f"{delivered.total_gy:.4g} Gy delivered of a {float(total):.4g} Gy course: nothing left",
                         patient_id=pid, fix="check delivered_dose_gy in patients.csv")
    baseline_remaining = Course(n_base - k, (float(total) - delivered.total_gy) / (n_base - k))
    notes: list[str] = []
    flags = [f for f in record.get("flags") or []]
    response: dict[str, Any] = {}
    adaptation: Adaptation | None = None
    measured_inputs: Response | None = None
    try:
        pet, reason = load_pet(cohort, pid, target_name)
        if pet is None:
            raise InputError(f"no planning PET: {reason}", patient_id=pid)
        mid = mid_treatment_pet(cohort, pid, timepoint, pet)
        measured = measure_response(pet, mid, patient_id=pid, fmiso_reference_suv=fmiso_reference_suv)
        response, measured_inputs = measured.values, measured
        adaptation = adapt_course(measured.clonogens, float(record["alpha_per_gy"]), float(record["beta_per_gy2"]),
                                  baseline_remaining=baseline_remaining, delivered=delivered,
                                  po2_baseline_mmhg=measured.po2_baseline, po2_mid_mmhg=measured.po2_mid,
                                  min_total_dose_gy=bounds.min_total_dose_gy,
                                  max_total_dose_gy=bounds.max_total_dose_gy)
    except (InputError, RuntimeError, OSError) as exc:  # RuntimeError: SimpleITK cannot read the image
        notes.append(f"mid-treatment imaging not usable ({' '.join(str(exc).split())}): the baseline course "
                     "continues unchanged")
        flags.append(FLAG_FALLBACK)
    remaining = adaptation.remaining if adaptation is not None else baseline_remaining
    reference_gy = float(record.get("n_fractions") or 0) * float(record.get("dose_per_fraction_gy") or 0)
    limits = organ_limits(oar_dvh, rails, load_tissues()) if reference_gy > 0 else []
    floor = max(0, math.ceil((bounds.min_total_dose_gy - delivered.total_gy) / remaining.dose_per_fraction_gy
                             - 1e-9))
    remaining, checks = cap_by_hard_organs(limits, reference_gy, delivered, remaining, floor)
    if remaining.n_fractions < (adaptation.remaining if adaptation is not None else baseline_remaining).n_fractions:
        flags.append("oar_limited")
    if any(c["hard"] and c["status"] == "exceeded" for c in checks):
        flags.append("oar_limit_exceeded")
    if any(not c["hard"] and c["status"] == "exceeded" for c in checks) and "oar_soft_limit_exceeded" not in flags:
        flags.append("oar_soft_limit_exceeded")
    if not limits:
        notes.append("no organ at risk with a rails limit on the patient's dose grid: whole-course OAR doses unchecked")
    adapted_total = delivered.total_gy + remaining.total_gy
    baseline_total = float(total)
    if adapted_total < baseline_total - 1e-6:
        flags.append(FLAG_DEESCALATED)
    elif adapted_total > baseline_total + 1e-6:
        flags.append(FLAG_ESCALATED)
    out = dict(record)
    out.update({
        "timepoint": timepoint, "delivered_n_fractions": k, "delivered_dose_gy": delivered.total_gy,
        "remaining_n_fractions": remaining.n_fractions,
        "remaining_dose_per_fraction_gy": remaining.dose_per_fraction_gy,
        "adapted_total_dose_gy": adapted_total, "baseline_total_dose_gy": baseline_total, "response": response,
        "tcp_baseline": None if adaptation is None else adaptation.tcp_baseline,
        "tcp_adapted": None if adaptation is None or measured_inputs is None else course_tcp(
            measured_inputs.clonogens, float(record["alpha_per_gy"]), float(record["beta_per_gy2"]),
            delivered=delivered, remaining=remaining, po2_baseline_mmhg=measured_inputs.po2_baseline,
            po2_mid_mmhg=measured_inputs.po2_mid),
        "adaptation": {"method": "reach max(planning TCP, min(control goal, TCP of the baseline course "
                                 "continued)) with the updated biology (docs/adaptive.md)",
                       "tcp_target": None if adaptation is None else adaptation.tcp_target,
                       "tcp_planning": None if adaptation is None else adaptation.tcp_planning,
                       "tcp_goal": None if adaptation is None else adaptation.tcp_goal,
                       "bound": None if adaptation is None else adaptation.bound,
                       "delivered_source": given.source, "whole_course_oar_checks": checks,
                       "delivered_oar_eqd2": delivered_oar_eqd2(limits, reference_gy, delivered) if limits else [],
                       "notes": notes},
        "flags": gate.ordered_flags(flags),
    })
    from radiogenomics.planning.remaining import check_course_rails

    check_course_rails(out, rails)
    return out
