"""Read any image or mask the cohort format allows, as SimpleITK images.

Images: NIfTI (.nii, .nii.gz), NRRD, MetaImage (.mha/.mhd), a DICOM series folder, a DICOM RTDOSE file.
Masks: a label map or binary mask in those formats, or a DICOM RTSTRUCT rasterised onto the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radiogenomics.cohort.dicom import dicom_modality, is_dicom_file, read_dicom_series, read_rtdose
from radiogenomics.cohort.geometry import geometry_differences
from radiogenomics.cohort.integrity import check_gzip_complete
from radiogenomics.cohort.rtstruct import rasterise_rtstruct
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
              reference_path: str | Path | None = None, patient_id: str | None = None) -> sitk.Image:
    """Binary mask (UInt8 0/1) of one ROI on the grid of `reference`.

    Label maps must share the reference geometry exactly (contract §1): a mismatch is an error naming
    both files. An ROI without voxels is an error too.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("mask does not exist.", file=str(path), patient_id=patient_id,
                         fix="fix the path in images.csv.")
    if is_dicom_file(path) and dicom_modality(path) == "RTSTRUCT":
        mask = rasterise_rtstruct(path, reference, roi)
    else:
        labels = read_image(path)
        diffs = geometry_differences(labels, reference)
        if diffs:
            ref = f" and image {reference_path}" if reference_path else ""
            raise InputError(f"mask {path}{ref} differ in geometry: {'; '.join(diffs)}.", file=str(path),
                             patient_id=patient_id,
                             fix="resample the mask onto the image grid (nearest neighbour) or re-export it.")
        array = sitk.GetArrayViewFromImage(labels)
        mask = sitk.GetImageFromArray((array == label).astype(np.uint8))
        mask.CopyInformation(reference)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(f"ROI '{roi}' (label {label}) has no voxels in the mask.", file=str(path),
                         patient_id=patient_id, fix="check the label value / structure name, or drop the row.")
    return mask
