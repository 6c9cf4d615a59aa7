"""Read any image or mask the cohort format allows, as SimpleITK images.

Images: NIfTI (.nii, .nii.gz), NRRD, MetaImage (.mha/.mhd), a DICOM series folder, a DICOM RTDOSE file.
Masks: a label map or binary mask in those formats, or a DICOM RTSTRUCT rasterised onto the image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radiogenomics.cohort.dicom import dicom_modality, is_dicom_file, read_dicom_series, read_rtdose
from radiogenomics.cohort.geometry import geometry_differences
from radiogenomics.cohort.integrity import check_gzip_complete
from radiogenomics.cohort.roles import StructureError
from radiogenomics.cohort.rtstruct import check_series_complete, rasterise_rtstruct
from radiogenomics.errors import InputError


def read_image(path: str | Path) -> sitk.Image:
    """Read an image file or DICOM series folder; RTDOSE comes back in Gy."""
    path = Path(path)
    if not path.exists():
        raise InputError("image does not exist.", file=str(path), fix="fix the path in images.csv.")
    if path.is_dir():
        return read_dicom_series(path)
    if is_dicom_file(path):
        modality = dicom_modality(path)
        if modality == "RTDOSE":
            return read_rtdose(path)
        if modality == "RTSTRUCT":
            raise InputError("an RTSTRUCT is a mask, not an image.", file=str(path),
                             fix="put the RTSTRUCT in the mask column and the CT series folder in image.")
    check_gzip_complete(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"cannot read image ({first[:200]}).", file=str(path),
                         fix="check the file is a complete NIfTI/NRRD/MHA/DICOM file.") from exc
    if image.GetDimension() != 3:
        raise InputError(f"image is {image.GetDimension()}-D; a 3-D volume is required.", file=str(path),
                         fix="give one 3-D volume per file (split 4-D series).")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("image has vector pixels; a scalar volume is required.", file=str(path),
                         fix="convert to a single-channel image.")
    return image


def read_mask(path: str | Path, reference: sitk.Image, roi: str, label: int = 1, *,
              reference_path: str | Path | None = None, patient_id: str | None = None,
              structure: str | None = None, aliases: Sequence[str] = ()) -> sitk.Image:
    """Binary mask (UInt8 0/1) of one ROI on the grid of `reference`.

    `roi` is the structure's role (contract section 1). In an RTSTRUCT it resolves to a structure by
    :func:`radiogenomics.cohort.roles.resolve_role` (`structure`: the name in the file; `aliases`: cohort.yaml's
    names of the role); when `reference_path` is the DICOM series the RTSTRUCT was drawn on, every image it
    references must be there (``incomplete_series`` otherwise). In a label map the ROI is `label`, or, with
    `structure`, the label of that name (NRRD segmentations, ``SegmentN_Name`` / ``SegmentN_LabelValue``).
    Label maps must share the reference geometry exactly (contract section 1): a mismatch is an error naming
    both files. An ROI without voxels is an error too.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("mask does not exist.", file=str(path), patient_id=patient_id,
                         fix="fix the path in images.csv.")
    if is_dicom_file(path) and dicom_modality(path) == "RTSTRUCT":
        if reference_path is not None and Path(reference_path).is_dir():
            check_series_complete(path, Path(reference_path), patient_id)
        mask = rasterise_rtstruct(path, reference, roi, structure=structure or None, aliases=aliases,
                                  patient_id=patient_id)
        shown = structure or roi
    else:
        labels = read_image(path)
        diffs = geometry_differences(labels, reference)
        if diffs:
            ref = f" and image {reference_path}" if reference_path else ""
            raise InputError(f"mask {path}{ref} differ in geometry: {'; '.join(diffs)}.", file=str(path),
                             patient_id=patient_id,
                             fix="resample the mask onto the image grid (nearest neighbour) or re-export it.")
        if structure:
            label = label_of_name(labels, structure, path, patient_id)
        array = sitk.GetArrayViewFromImage(labels)
        mask = sitk.GetImageFromArray((array == label).astype(np.uint8))
        mask.CopyInformation(reference)
        shown = roi
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(f"ROI '{shown}' (label {label}) has no voxels in the mask.", file=str(path),
                         patient_id=patient_id, fix="check the label value / structure name, or drop the row.")
    return mask


_SEGMENT_NAME = re.compile(r"^Segment(\d+)_Name$")


def label_names(labels: sitk.Image) -> dict[str, int]:
    """A label map's named labels, ``{name: label value}`` (NRRD segmentations as 3D Slicer writes them:
    ``SegmentN_Name`` and ``SegmentN_LabelValue``, default N + 1); {} when the format names none."""
    names: dict[str, int] = {}
    for key in labels.GetMetaDataKeys():
        match = _SEGMENT_NAME.match(key)
        if match is None:
            continue
        index = int(match.group(1))
        value_key = f"Segment{index}_LabelValue"
        value = labels.GetMetaData(value_key) if labels.HasMetaDataKey(value_key) else str(index + 1)
        try:
            names[labels.GetMetaData(key).strip()] = int(value)
        except ValueError:
            continue
    return names


def label_of_name(labels: sitk.Image, structure: str, path: Path, patient_id: str | None = None) -> int:
    """The label value of the label named `structure` (case-insensitive); StructureError (``missing_structure``)
    listing the names, or saying the file names no label."""
    names = label_names(labels)
    exact = names.get(structure)
    if exact is not None:
        return exact
    folded = [v for n, v in names.items() if n.casefold() == structure.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    if not names:
        raise StructureError("missing_structure", f"structure '{structure}': the label map names no label "
                             "(only NRRD segmentations carry label names).", file=str(path), patient_id=patient_id,
                             fix="leave the structure column blank and give the label value in the label column.")
    held = ", ".join(f"{n} (label {v})" for n, v in names.items())
    raise StructureError("missing_structure", f"structure '{structure}' is not a label of the label map; it holds: "
                         f"{held}.", file=str(path), patient_id=patient_id,
                         fix="set the structure column to one of the label names.")
