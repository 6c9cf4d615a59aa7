"""The patient's anatomy for planning: the planning CT and the structures of ``objectives.json`` as masks on it.

Structures are found by the names ``objectives.json`` gives (the patient's own, e.g. ``GTV-1``): each images.csv
row with a mask is resolved to its structure (:meth:`radiogenomics.cohort.Cohort.resolve_structure`); rows on
the CT are preferred, a structure drawn only on another image (a PET) is resampled onto the CT (nearest
neighbour). The body outline is the patient's external structure when the cohort has one (role ``BODY``/
``External`` or RTROIInterpretedType ``EXTERNAL``), else derived from the CT (:func:`derive_body`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

#: HU threshold of the body outline: air is -1000 HU, lung -900 to -500, fat about -100; -400 separates the patient
#: (including lung, after hole filling) from the surrounding air (the usual 'external contour' threshold of TPS
#: auto-contouring, e.g. -350 to -500 HU).
BODY_THRESHOLD_HU = -400.0
BODY_NAME = "BODY"


@dataclass
class Anatomy:
    """The planning CT (HU) and boolean masks on its grid (z/y/x) by structure name, plus notes."""

    ct: sitk.Image
    masks: dict[str, np.ndarray]
    body_name: str
    body_derived: bool
    missing: list[str] = field(default_factory=list)  # objectives structures the patient's files do not hold
    notes: list[str] = field(default_factory=list)

    @property
    def voxel_cc(self) -> float:
        return float(np.prod(self.ct.GetSpacing())) / 1000.0


def derive_body(ct: sitk.Image, threshold_hu: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Body outline from the CT: voxels above ``threshold_hu``, the largest connected component, holes filled
    slice by slice (airways and lungs inside the outline belong to the body)."""
    from scipy import ndimage

    hu = sitk.GetArrayViewFromImage(ct)
    above = np.asarray(hu) > threshold_hu
    labels, count = ndimage.label(above)
    if count == 0:
        raise InputError(f"no voxel of the CT is above {threshold_hu:g} HU: no body outline",
                         fix="check that the CT is in Hounsfield units, or give a BODY structure")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    for z in range(body.shape[0]):
        body[z] = ndimage.binary_fill_holes(body[z])
    return body


def _on_ct(mask: sitk.Image, ct: sitk.Image) -> np.ndarray:
    same = (mask.GetSize() == ct.GetSize() and np.allclose(mask.GetSpacing(), ct.GetSpacing(), rtol=1e-4)
            and np.allclose(mask.GetOrigin(), ct.GetOrigin(), atol=1e-3)
            and np.allclose(mask.GetDirection(), ct.GetDirection(), atol=1e-6))
    if not same:
        mask = sitk.Resample(mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(mask).astype(bool)


def _structure_rows(cohort: Any, patient_id: str) -> dict[str, tuple[Any, str, str]]:
    """{structure name in the files: (images.csv row, role, kind)}; CT rows first, then the others."""
    rows = cohort.image_rows(patient_id)
    rows = rows[rows["mask"].notna()]
    order = sorted(range(len(rows)), key=lambda i: rows.iloc[i]["modality"] != "CT")
    found: dict[str, tuple[Any, str, str]] = {}
    for i in order:
        row = rows.iloc[i]
        resolved = cohort.resolve_structure(row)
        found.setdefault(resolved.structure, (row, resolved.role, resolved.kind))
    return found


def planning_ct(cohort: Any, patient_id: str) -> sitk.Image:
    """The patient's CT (the first CT row of images.csv); InputError when there is none."""
    rows = cohort.image_rows(patient_id, "CT")
    if not len(rows):
        raise InputError("no CT in the cohort for this patient: nothing to plan on", patient_id=patient_id,
                         fix="add the planning CT to images.csv (modality CT)")
    return cohort.read_image(rows.iloc[0])


def load_anatomy(cohort: Any, patient_id: str, names: Mapping[str, str]) -> Anatomy:
    """The CT and the masks of the structures ``names`` ({name in the patient's files: role}) on the CT grid.

    Structures the cohort does not hold for the patient are listed in ``missing`` (the caller decides: a missing
    target is an error, a missing organ a flagged omission). The body outline comes from the cohort when it has one,
    else from :func:`derive_body` (``body_derived``).
    """
    ct = planning_ct(cohort, patient_id)
    rows = _structure_rows(cohort, patient_id)
    masks: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for name in names:
        if name not in rows:
            missing.append(name)
            continue
        row = rows[name][0]
        reference = ct if row["modality"] == "CT" else cohort.read_image(row)
        masks[name] = _on_ct(cohort.read_mask(row, reference), ct)
    notes: list[str] = []
    external = [name for name, (_, _, kind) in rows.items() if kind == "external"]
    if external:
        body_name = external[0]
        row = rows[body_name][0]
        reference = ct if row["modality"] == "CT" else cohort.read_image(row)
        masks[body_name] = _on_ct(cohort.read_mask(row, reference), ct)
        derived = False
    else:
        body_name, derived = BODY_NAME, True
        masks[BODY_NAME] = derive_body(ct)
        notes.append(f"no body outline in the cohort: BODY derived from the CT (> {BODY_THRESHOLD_HU:g} HU, largest "
                     "component, holes filled)")
    if missing:
        held = sorted(rows)
        log.info("patient %s: structures %s not in the cohort (it holds %s)", patient_id, missing, held)
    return Anatomy(ct=ct, masks=masks, body_name=body_name, body_derived=derived, missing=missing, notes=notes)
