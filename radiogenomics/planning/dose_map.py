"""The voxel dose-prescription map of one patient from FDG and/or FMISO PET (contract section 7).

TCP-optimal painting at fixed mean dose (:func:`radiogenomics.radiobiology.tcp_optimal_painting`; Brahme &
Agren, Acta Oncol 1987;26:377; Webb & Nahum, PMB 1993;38:653) over the target ROI, with

- the patient's predicted alpha and beta (the prescription record) at the recommended number of fractions;
- clonogens per voxel from FDG SUV (:func:`clonogen_density_from_suv` x voxel volume; without FDG a uniform
  density, ``DEFAULT_DENSITY_MAX_PER_CC``) and pO2 from FMISO (:func:`po2_from_fmiso`; without FMISO fully
  oxic), the Lazzeroni et al. (J Nucl Med 2026) workflow; every conversion default is *unverified*
  (docs/radiobiology.md);
- FMISO uptake as a ratio to a reference uptake: ``fmiso_reference_suv`` when given, else the median uptake of
  the voxels outside the target whose uptake is at least a quarter of the target's median (soft tissue, not air
  or background; an *assumption* - pass a muscle or blood reference when the clinic measures one);
- mean dose over the target = the record's ``recommended_total_dose_gy``; voxel bounds: the site's
  ``min_total_dose_gy`` (no voxel below the site's minimum prescription) and, as the upper bound,
  :func:`painting_max_dose_gy`: the ``max_voxel_dose_gy`` rail divided by the ICRU 50/62 hotspot tolerance
  (1.07), so that a plan delivering the map within +7 % stays within the hard rail; a prescription painted up to
  the rail itself cannot be delivered without exceeding it. When the recommended total dose is above that bound
  (the site's maximum total), the bound is the recommended dose (a uniform map: no room to paint below the rail).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.radiobiology.imaging_maps import (
    DEFAULT_DENSITY_MAX_PER_CC,
    clonogen_density_from_suv,
    po2_from_fmiso,
)
from radiogenomics.radiobiology.painting import tcp_optimal_painting
from radiogenomics.radiobiology.rails import Rails, load_rails
from radiogenomics.radiobiology.structures import is_target_structure

log = logging.getLogger(__name__)

FDG, FMISO = "PET_FDG", "PET_FMISO"
#: Voxels outside the target count as reference tissue when their uptake is >= this fraction of the target median.
REFERENCE_UPTAKE_FRACTION = 0.25


@dataclass(frozen=True)
class PETImages:
    """A patient's PET on one grid: the target mask (bool, z/y/x), FDG and FMISO arrays (None when absent)."""

    reference: sitk.Image
    mask: np.ndarray
    fdg_suv: np.ndarray | None = None
    fmiso_suv: np.ndarray | None = None
    target_roi: str = ""

    @property
    def modalities(self) -> list[str]:
        return [m for m, a in ((FDG, self.fdg_suv), (FMISO, self.fmiso_suv)) if a is not None]


@dataclass(frozen=True)
class PrescriptionMap:
    """A voxel dose prescription (Gy, z/y/x on ``reference``'s grid; 0 outside the target) and its figures."""

    dose_gy: np.ndarray
    reference: sitk.Image
    mask: np.ndarray
    modalities: list[str]
    tcp: float
    mean_dose_gy: float
    min_dose_gy: float
    max_dose_gy: float
    notes: list[str] = field(default_factory=list)


def _target_row(rows: Any, target_name: str) -> Any | None:
    """The images.csv row of the target ROI: named ``target_name`` (any case), else the first target volume."""
    exact = rows[rows["roi"].astype(str).str.lower() == target_name.lower()]
    if len(exact):
        return exact.iloc[0]
    targets = rows[[is_target_structure(str(r)) for r in rows["roi"]]]
    return targets.iloc[0] if len(targets) else None


def _on_grid(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    same = (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-4)
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6))
    if same:
        return image
    log.info("resampling PET onto the reference PET grid (linear)")
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat64)


def load_pet(cohort: Any, patient_id: str, target_name: str = "GTV") -> tuple[PETImages | None, str]:
    """The patient's FDG/FMISO PET and target mask from a loaded cohort, or (None, the reason there is none).

    The reference grid is the FDG image's (else FMISO's); the other PET is resampled onto it when its grid
    differs. The mask is the target ROI of the reference PET's images.csv row.
    """
    rows = {m: cohort.image_rows(patient_id, m) for m in (FDG, FMISO)}
    present = [m for m in (FDG, FMISO) if len(rows[m])]
    if not present:
        return None, "no FDG or FMISO PET in the cohort for this patient: no dose-prescription map"
    row = _target_row(rows[present[0]], target_name)
    if row is None:
        return None, (f"no target ROI ({target_name} or another GTV/CTV/PTV) on the {present[0]} rows: "
                      "no dose-prescription map")
    reference = cohort.read_image(row)
    mask = sitk.GetArrayFromImage(cohort.read_mask(row, reference)).astype(bool)
    arrays: dict[str, np.ndarray] = {present[0]: sitk.GetArrayFromImage(reference).astype(np.float64)}
    for modality in present[1:]:
        image = _on_grid(cohort.read_image(rows[modality].iloc[0]), reference)
        arrays[modality] = sitk.GetArrayFromImage(image).astype(np.float64)
    return PETImages(reference, mask, arrays.get(FDG), arrays.get(FMISO), str(row["roi"])), ""


def reference_uptake(uptake: np.ndarray, mask: np.ndarray) -> float:
    """Median uptake of the non-target voxels with uptake >= 1/4 of the target's median (see module docstring)."""
    inside = float(np.median(uptake[mask]))
    outside = uptake[~mask & (uptake >= REFERENCE_UPTAKE_FRACTION * inside)]
    if inside <= 0 or outside.size == 0:
        raise InputError("no FMISO reference tissue: the target has no uptake or nothing outside it has",
                         fix="pass fmiso_reference_suv (a muscle or blood reference uptake)")
    return float(np.median(outside))


@dataclass(frozen=True)
class TumourBiology:
    """Clonogens per voxel and pO2 (mmHg; None: fully oxic) on the PET grid, from FDG and FMISO (module docstring)."""

    clonogens: np.ndarray
    po2_mmhg: np.ndarray | None
    notes: list[str]


def tumour_biology(pet: PETImages, *, patient_id: str = "", fmiso_reference_suv: float | None = None) -> TumourBiology:
    """Clonogen number per voxel from FDG SUV and pO2 from FMISO uptake on the PET grid (the map's and the plan
    evaluation's TCP inputs; Lazzeroni et al., J Nucl Med 2026)."""
    voxel_cc = float(np.prod(pet.reference.GetSpacing())) / 1000.0
    notes: list[str] = []
    if pet.fdg_suv is not None:
        density = np.asarray(clonogen_density_from_suv(pet.fdg_suv, mask=pet.mask))
    else:
        density = np.full(pet.mask.shape, DEFAULT_DENSITY_MAX_PER_CC)
        notes.append(f"no FDG PET: uniform clonogen density {DEFAULT_DENSITY_MAX_PER_CC:g}/cc (unverified default)")
    po2 = None
    if pet.fmiso_suv is not None:
        ref = float(fmiso_reference_suv) if fmiso_reference_suv is not None else reference_uptake(pet.fmiso_suv,
                                                                                                   pet.mask)
        if not ref > 0:
            raise InputError(f"fmiso_reference_suv must be > 0, got {ref}", patient_id=patient_id or None)
        po2 = np.asarray(po2_from_fmiso(pet.fmiso_suv / ref))
        notes.append(f"FMISO uptake ratio to a reference uptake of {ref:.4g}")
    else:
        notes.append("no FMISO PET: the target is taken as fully oxic")
    return TumourBiology(density * voxel_cc, po2, notes)


#: ICRU 50/62: the planned dose may exceed the prescription by 7 % (the delivery margin below the hard rail).
HOTSPOT_TOLERANCE = 1.07


def painting_max_dose_gy(max_voxel_dose_gy: float, recommended_total_dose_gy: float) -> float:
    """The highest voxel prescription: the hard rail / 1.07, at least the recommended total, at most the rail."""
    return min(max_voxel_dose_gy, max(max_voxel_dose_gy / HOTSPOT_TOLERANCE, recommended_total_dose_gy))


def prescription_map(record: dict[str, Any], pet: PETImages, *, site: str, rails: Rails | None = None,
                     fmiso_reference_suv: float | None = None) -> PrescriptionMap:
    """TCP-optimal dose-prescription map of one record on the patient's PET (see the module docstring)."""
    rails = rails or load_rails()
    bounds = rails.site(site)
    pid = str(record.get("patient_id") or "")
    if not pet.mask.any():
        raise InputError(f"the target ROI {pet.target_roi} is empty", patient_id=pid)
    biology = tumour_biology(pet, patient_id=pid, fmiso_reference_suv=fmiso_reference_suv)
    try:
        result = tcp_optimal_painting(
            biology.clonogens, record["alpha_per_gy"], record["beta_per_gy2"], record["recommended_n_fractions"],
            max_dose_gy=painting_max_dose_gy(bounds.max_voxel_dose_gy, float(record["recommended_total_dose_gy"])),
            min_dose_gy=bounds.min_total_dose_gy, po2_mmhg=biology.po2_mmhg,
            target_tcp=None, mean_dose_gy=record["recommended_total_dose_gy"], mask=pet.mask)
    except InputError as exc:
        raise InputError(exc.reason, patient_id=pid, fix=exc.fix) from exc
    inside = result.dose_gy[pet.mask]
    return PrescriptionMap(result.dose_gy, pet.reference, pet.mask, pet.modalities, result.tcp,
                           float(inside.mean()), float(inside.min()), float(inside.max()), list(biology.notes))
