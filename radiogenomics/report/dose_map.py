"""Dose-prescription map section: one axial slice of a patient's voxel prescription.

From ``--handoff DIR``: of the patients with ``DIR/<patient>/dose_prescription.nii.gz`` written by
``radiogenomics handoff``, the one whose map varies most. Otherwise, with a cohort and records: the map is
computed here for the first patient with PET and a record, by the hand-off's own code
(:func:`radiogenomics.planning.dose_map.prescription_map`: TCP-optimal painting at the recommended
mean dose, Brahme & Agren 1987, Webb & Nahum 1993, Lazzeroni et al. J Nucl Med 2026).
The slice shown is the one with the largest dose integral; the target contour comes from the cohort's mask.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from radiogenomics.report import figures
from radiogenomics.report.sections import Figure, Paragraph, Section, Table, fmt

log = logging.getLogger(__name__)

KEY, TITLE = "dose-map", "Dose-prescription map"
MAP_FILE = "dose_prescription.nii.gz"
#: CT display window (HU): soft tissue, level 40, width 400.
CT_WINDOW_HU = (-160.0, 240.0)


def handoff_map(handoff_dir: Path) -> tuple[str, Any] | None:
    """(patient_id, SimpleITK image) of the map that varies most (largest SD of its non-zero voxel doses; the
    first patient ID on ties), or None when the folder has no map. A uniform map (a recommendation on a dose
    bound) shows little; the most painted one shows what the hand-off does."""
    import SimpleITK as sitk

    best: tuple[float, str, Any] | None = None
    for path in sorted(handoff_dir.glob(f"*/{MAP_FILE}")):
        image = sitk.ReadImage(str(path))
        dose = sitk.GetArrayViewFromImage(image)
        spread = float(np.std(dose[dose > 0])) if (dose > 0).any() else 0.0
        if best is None or spread > best[0]:
            best = (spread, path.parent.name, image)
    return None if best is None else (best[1], best[2])


def _on_grid(image: Any, reference: Any, interpolator: int) -> np.ndarray:
    import SimpleITK as sitk

    if image.GetSize() != reference.GetSize() or image.GetOrigin() != reference.GetOrigin():
        image = sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0)
    return sitk.GetArrayFromImage(image)


def cohort_context(cohort: Any, patient_id: str, reference: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(target mask, CT in HU) of the patient on ``reference``'s grid, each None when the cohort lacks it."""
    import SimpleITK as sitk

    from radiogenomics.planning.dose_map import load_pet

    mask = ct = None
    pet, _ = load_pet(cohort, patient_id)
    if pet is not None:
        image = sitk.GetImageFromArray(pet.mask.astype(np.uint8))
        image.CopyInformation(pet.reference)
        mask = _on_grid(image, reference, sitk.sitkNearestNeighbor).astype(bool)
    rows = cohort.image_rows(patient_id, "CT")
    if len(rows):
        ct = _on_grid(cohort.read_image(rows.iloc[0]), reference, sitk.sitkLinear).astype(float)
    return mask, ct


def computed_map(cohort: Any, records: list[dict[str, Any]]) -> tuple[str, Any, np.ndarray, list[str]] | None:
    """(patient_id, dose image, mask, notes) computed for the first record whose patient has PET, or None."""
    import SimpleITK as sitk

    from radiogenomics.planning.dose_map import load_pet, prescription_map

    sites = dict(zip(cohort.patients["patient_id"].astype(str), cohort.patients["site"].astype(str), strict=True))
    for record in sorted(records, key=lambda r: str(r.get("patient_id"))):
        pid = str(record.get("patient_id"))
        if pid not in sites:
            continue
        pet, reason = load_pet(cohort, pid)
        if pet is None:
            log.info("no dose map for %s: %s", pid, reason)
            continue
        result = prescription_map(dict(record), pet, site=sites[pid])
        image = sitk.GetImageFromArray(result.dose_gy)
        image.CopyInformation(result.reference)
        return pid, image, result.mask, result.notes
    return None


def dose_map_section(handoff_dir: Path | None, cohort: Any | None, records: list[dict[str, Any]] | None) -> Section:
    """The slice, the voxel-dose histogram and the map's figures (see the module docstring)."""
    import SimpleITK as sitk

    section = Section(KEY, TITLE)
    found = handoff_map(handoff_dir) if handoff_dir is not None else None
    notes: list[str] = []
    mask: np.ndarray | None = None
    if found is not None and handoff_dir is not None:
        pid, image = found
        source = (f"{handoff_dir / pid / MAP_FILE} (written by radiogenomics handoff; of the folder's maps the one "
                  "whose voxel doses vary most)")
        mask, ct = cohort_context(cohort, pid, image) if cohort is not None else (None, None)
    elif cohort is not None and records:
        computed = computed_map(cohort, records)
        if computed is None:
            return Section(KEY, TITLE, missing="no patient with a record has FDG or FMISO PET in the cohort.")
        pid, image, mask, notes = computed
        ct = cohort_context(cohort, pid, image)[1]
        source = "computed here with the hand-off's TCP-optimal painting (no --handoff folder given)"
    else:
        why = (f"{handoff_dir} holds no <patient>/{MAP_FILE}" if handoff_dir is not None
               else "give --handoff DIR (the output of radiogenomics handoff), or --cohort with --predictions "
                    "(or --model and --features) to compute one")
        return Section(KEY, TITLE, missing=f"no dose-prescription map: {why}.")
    dose = sitk.GetArrayFromImage(image).astype(float)  # z, y, x
    z = int(np.argmax(dose.reshape(dose.shape[0], -1).sum(axis=1)))
    spacing = image.GetSpacing()  # x, y, z (mm)
    inside = dose[mask] if mask is not None and mask.shape == dose.shape else dose[dose > 0]
    section.add(Paragraph(f"Patient {pid}: {source}. Axial slice {z} of {dose.shape[0]} "
                          f"(z = {image.TransformIndexToPhysicalPoint((0, 0, z))[2]:.1f} mm)."))
    for note in notes:
        section.add(Paragraph(note, kind="note"))
    contour = mask[z] if mask is not None and mask.shape == dose.shape else None
    underlay = np.clip(ct[z], *CT_WINDOW_HU) if ct is not None and ct.shape == dose.shape else None
    section.add(Figure(figures.data_uri(figures.dose_map_slice(
        dose[z], spacing_mm=(spacing[1], spacing[0]), title=f"Dose prescription, patient {pid}", contour=contour,
        underlay=underlay)),
        alt=f"axial slice of the voxel dose prescription of patient {pid}",
        caption="Prescribed total dose per voxel (Gy) over the CT (soft-tissue window) where the cohort has "
                "one; 0 Gy outside the target is left blank."))
    section.add(Figure(figures.data_uri(figures.dose_histogram(dose, title=f"Voxel doses, patient {pid}")),
                       alt="histogram of the prescribed voxel doses", caption="Distribution of the voxel doses."))
    section.add(Table(["quantity", "value"], [
        ["voxels in the target", str(int(inside.size))],
        ["mean dose in the target (Gy)", fmt(float(inside.mean()) if inside.size else None)],
        ["min / max voxel dose (Gy)", f"{fmt(float(inside.min()) if inside.size else None)} / "
                                      f"{fmt(float(inside.max()) if inside.size else None)}"],
        ["grid (voxels, x \u00d7 y \u00d7 z)", " \u00d7 ".join(str(s) for s in image.GetSize())],
        ["spacing (mm)", " \u00d7 ".join(f"{s:g}" for s in spacing)]], caption="The map's figures."))
    return section
