"""The remaining course of an adapted record (contract section 8) for the hand-off and the plan.

An adapted record (``radiogenomics adapt``; :mod:`.adaptive`) keeps the baseline record's fields and adds what was
delivered and the remaining course. Downstream:

- :func:`remaining_view`: the record with ``recommended_*`` set to the remaining fractions (what the objectives and
  the plan cover; ``recommended_total_dose_gy`` = ``remaining_n_fractions`` x ``remaining_dose_per_fraction_gy``);
- :func:`delivered_dose`: the :class:`~radiogenomics.planning.objectives.DeliveredDose` of the record (the target
  dose delivered, each organ's delivered EQD2 from ``adaptation.delivered_oar_eqd2``), so that the OAR objectives
  are what the delivered fractions left of each limit;
- :func:`remaining_biology`: the tumour's biology for the remaining fractions on the planning PET grid: the
  clonogens surviving the delivered fractions (FDG clonogens x the LQ surviving fraction of the delivered fractions
  with the *baseline* oxygenation, as the adaptation itself counts them: docs/adaptive.md, step 3) and the
  *mid-treatment* FMISO pO2 (step 4); an adaptation that fell back (``adaptation_fallback``) keeps the baseline
  oxygenation;
- :func:`remaining_prescription_map`: the dose-prescription map of the remaining fractions repainted from that
  biology: TCP-optimal at the remaining total's mean (:func:`~radiogenomics.radiobiology.tcp_optimal_painting`;
  Brahme & Agren 1987; Webb & Nahum 1993), each voxel between the site's minimum total dose and the painting
  maximum (:func:`~radiogenomics.planning.dose_map.painting_max_dose_gy`) less the delivered dose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from radiogenomics.errors import InputError
from radiogenomics.features.naming import structure_slug
from radiogenomics.planning.dose_map import PETImages, PrescriptionMap, load_pet, painting_max_dose_gy, tumour_biology
from radiogenomics.planning.objectives import DeliveredDose
from radiogenomics.radiobiology.rails import Rails, load_rails

#: The fields that make a record an adapted one.
ADAPTED_KEYS = ("timepoint", "delivered_n_fractions", "delivered_dose_gy", "remaining_n_fractions",
                "remaining_dose_per_fraction_gy", "adapted_total_dose_gy")


def is_adapted(record: Mapping[str, Any]) -> bool:
    """True for a record of ``radiogenomics adapt`` (it carries every field of :data:`ADAPTED_KEYS`)."""
    return all(record.get(k) is not None for k in ADAPTED_KEYS)


def _checked(record: Mapping[str, Any]) -> tuple[int, float, int, float]:
    """(delivered fractions, delivered Gy, remaining fractions, remaining Gy/fraction); InputError when the adapted
    fields do not add up (contract section 8: adapted total = delivered + remaining, exactly)."""
    pid = str(record.get("patient_id") or "") or None
    try:
        k, delivered = int(record["delivered_n_fractions"]), float(record["delivered_dose_gy"])
        n, d = int(record["remaining_n_fractions"]), float(record["remaining_dose_per_fraction_gy"])
        total = float(record["adapted_total_dose_gy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the adapted record's course fields are incomplete ({exc})", patient_id=pid,
                         fix="give a record written by `radiogenomics adapt`") from exc
    if not all(math.isfinite(v) for v in (delivered, d, total)) or k < 1 or n < 1 or d <= 0 or delivered < 0:
        raise InputError(f"the adapted course is {k} fraction(s) ({delivered:g} Gy) delivered + {n} x {d:g} Gy: "
                         "nothing to plan", patient_id=pid, fix="plan only records with remaining fractions")
    for key in ("alpha_per_gy", "beta_per_gy2"):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise InputError(f"the adapted record's {key} is {value!r}", patient_id=pid,
                             fix="give the record as `radiogenomics adapt` wrote it")
    if not isinstance(record.get("adaptation") or {}, Mapping):
        raise InputError("the adapted record's adaptation is not an object", patient_id=pid,
                         fix="give the record as `radiogenomics adapt` wrote it")
    if abs(delivered + n * d - total) > 1e-6 * max(1.0, total):
        raise InputError(f"adapted_total_dose_gy {total:g} is not delivered {delivered:g} + {n} x {d:g} Gy",
                         patient_id=pid, fix="give the record as `radiogenomics adapt` wrote it")
    return k, delivered, n, d


def check_course_rails(record: Mapping[str, Any], rails: Rails | None = None) -> None:
    """InputError unless the adapted course keeps the site's rails (contract section 8: the safety gate applies to
    the whole course): the adapted total within the site's total-dose range, the remaining dose per fraction within
    its per-fraction range."""
    _, _, n, d = _checked(record)
    pid = str(record.get("patient_id") or "") or None
    bounds = (rails or load_rails()).site(str(record.get("site")))
    total = float(record["adapted_total_dose_gy"])
    if not bounds.min_total_dose_gy - 1e-6 <= total <= bounds.max_total_dose_gy + 1e-6:
        raise InputError(f"adapted_total_dose_gy {total:.4g} Gy is outside the site's rails "
                         f"({bounds.min_total_dose_gy:g}-{bounds.max_total_dose_gy:g} Gy)", patient_id=pid,
                         fix="re-run `radiogenomics adapt`; never hand off an edited course")
    if not bounds.min_dose_per_fraction_gy - 1e-9 <= d <= bounds.max_dose_per_fraction_gy + 1e-9:
        raise InputError(f"remaining_dose_per_fraction_gy {d:.4g} Gy is outside the site's rails "
                         f"({bounds.min_dose_per_fraction_gy:g}-{bounds.max_dose_per_fraction_gy:g} Gy per fraction)",
                         patient_id=pid, fix="re-run `radiogenomics adapt`; never hand off an edited course")


def remaining_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """The adapted record with ``recommended_*`` = the remaining fractions (what objectives and plan cover)."""
    _, _, n, d = _checked(record)
    return {**dict(record), "recommended_n_fractions": float(n), "recommended_dose_per_fraction_gy": d,
            "recommended_total_dose_gy": n * d}


def delivered_dose(record: Mapping[str, Any]) -> DeliveredDose:
    """What the adapted record says was delivered (module docstring)."""
    k, delivered, n, d = _checked(record)
    adaptation = record.get("adaptation") or {}
    per_organ: dict[str, dict[str, float]] = {}
    for row in adaptation.get("delivered_oar_eqd2") or []:
        if isinstance(row, Mapping) and row.get("structure"):
            per_organ[structure_slug(str(row["structure"]))] = {
                kind: float(row[kind]) for kind in ("max_dose", "mean_dose", "geud")
                if isinstance(row.get(kind), int | float) and not isinstance(row.get(kind), bool)}
    baseline_n = record.get("recommended_n_fractions")
    pro_rata = k / float(baseline_n) if isinstance(baseline_n, int | float) and baseline_n > k else k / (k + n)
    summary = {"remaining_n_fractions": n, "remaining_dose_per_fraction_gy": d,
               "adapted_total_dose_gy": float(record["adapted_total_dose_gy"]),
               "baseline_total_dose_gy": record.get("baseline_total_dose_gy")}
    return DeliveredDose(str(record["timepoint"]), k, delivered, min(pro_rata, 1.0), per_organ, summary)


@dataclass(frozen=True)
class RemainingBiology:
    """The tumour for the remaining fractions on the planning PET grid: surviving clonogens per voxel and pO2."""

    pet: PETImages
    clonogens: np.ndarray
    po2_mmhg: np.ndarray | None
    notes: tuple[str, ...]


def remaining_biology(record: Mapping[str, Any], cohort: Any, *, target_name: str = "GTV",
                      fmiso_reference_suv: float | None = None) -> RemainingBiology | None:
    """Surviving clonogens and the mid-treatment pO2 (module docstring); None without a planning PET."""
    from radiogenomics.planning.adaptive import FLAG_FALLBACK, mid_treatment_pet
    from radiogenomics.radiobiology.tcp import effective_lq

    pid = str(record["patient_id"])
    k, delivered, _, _ = _checked(record)
    pet, _reason = load_pet(cohort, pid, target_name)
    if pet is None:
        return None
    base = tumour_biology(pet, patient_id=pid, fmiso_reference_suv=fmiso_reference_suv)
    notes = list(base.notes)
    po2_mid = base.po2_mmhg
    if FLAG_FALLBACK in (record.get("flags") or []):
        notes.append("the adaptation fell back: the baseline oxygenation for the remaining fractions")
    else:
        mid = mid_treatment_pet(cohort, pid, str(record["timepoint"]), pet)
        if mid.fmiso_suv is not None and pet.fmiso_suv is not None:
            po2_mid = tumour_biology(mid, patient_id=pid, fmiso_reference_suv=fmiso_reference_suv).po2_mmhg
            notes.append(f"the mid-treatment FMISO PET ({record['timepoint']}) gives the pO2 of the remaining "
                         "fractions")
        else:
            notes.append("no FMISO at planning and at the timepoint both: the baseline oxygenation for the "
                         "remaining fractions")
    alpha, beta = float(record["alpha_per_gy"]), float(record["beta_per_gy2"])
    a0, b0 = effective_lq(alpha, beta, base.po2_mmhg)
    d = delivered / k
    surviving = base.clonogens * np.exp(-k * (np.asarray(a0) * d + np.asarray(b0) * d * d))
    notes.append(f"clonogens surviving the {k} delivered fraction(s) of {d:.4g} Gy (baseline oxygenation)")
    return RemainingBiology(pet, np.where(pet.mask, surviving, 0.0), po2_mid, tuple(notes))


def remaining_prescription_map(record: Mapping[str, Any], biology: RemainingBiology, *, site: str,
                               rails: Rails | None = None) -> PrescriptionMap:
    """The TCP-optimal map of the remaining fractions, repainted from :func:`remaining_biology` (module
    docstring); its mean over the target is the remaining total."""
    from radiogenomics.radiobiology.painting import tcp_optimal_painting

    rails = rails or load_rails()
    bounds = rails.site(site)
    pid = str(record["patient_id"])
    _, delivered, n, d = _checked(record)
    adapted_total = float(record["adapted_total_dose_gy"])
    top = painting_max_dose_gy(bounds.max_voxel_dose_gy, adapted_total) - delivered
    floor = min(max(bounds.min_total_dose_gy - delivered, 0.0), n * d)
    mask = biology.pet.mask
    if not mask.any():
        raise InputError(f"the target ROI {biology.pet.target_roi} is empty", patient_id=pid)
    try:
        result = tcp_optimal_painting(biology.clonogens, record["alpha_per_gy"], record["beta_per_gy2"], n,
                                      max_dose_gy=max(top, n * d), min_dose_gy=floor, po2_mmhg=biology.po2_mmhg,
                                      target_tcp=None, mean_dose_gy=n * d, mask=mask)
    except InputError as exc:
        raise InputError(exc.reason, patient_id=pid, fix=exc.fix) from exc
    inside = result.dose_gy[mask]
    return PrescriptionMap(result.dose_gy, biology.pet.reference, mask, biology.pet.modalities, result.tcp,
                           float(inside.mean()), float(inside.min()), float(inside.max()),
                           [*biology.notes, f"repainted for the remaining {n} fraction(s) (mean {n * d:.4g} Gy)"])
