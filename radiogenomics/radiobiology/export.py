"""Export of voxel dose prescriptions: NIfTI and DICOM RT Dose.

The RT Dose file follows the DICOM RT Dose IOD (PS3.3 A.18; SOP class 1.2.840.10008.5.1.4.1.1.481.2):
multi-frame, unsigned 32-bit PixelData scaled by DoseGridScaling (Gy per stored unit), DoseUnits GY,
DoseType PHYSICAL, DoseSummationType PLAN, frames located by GridFrameOffsetVector (mm, relative to the
first frame, along the slice normal). Geometry (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) comes from the SimpleITK image, whose physical space is LPS like DICOM's patient system.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from radiogenomics import __version__
from radiogenomics.errors import InputError

logger = logging.getLogger(__name__)

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
_UINT32_MAX = 2**32 - 1


def image_from_array(dose_gy: Any, reference: sitk.Image) -> sitk.Image:
    """A float64 SimpleITK image (Gy) from a numpy array (z, y, x) with the geometry of ``reference``."""
    arr = np.asarray(dose_gy, dtype=np.float64)
    if arr.shape != sitk.GetArrayViewFromImage(reference).shape:
        raise InputError(f"dose array shape {arr.shape} does not match the reference image.")
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(reference)
    return img


def _dose_array(dose_gy: sitk.Image) -> np.ndarray:
    if not isinstance(dose_gy, sitk.Image):
        raise InputError("dose_gy must be a SimpleITK image.", fix="use image_from_array(array, reference).")
    if dose_gy.GetDimension() != 3 or dose_gy.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("dose_gy must be a scalar 3-D image.")
    arr = sitk.GetArrayFromImage(dose_gy).astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError("dose_gy contains non-finite values.", fix="replace NaN/inf before export.")
    if (arr < 0).any():
        raise InputError(f"dose_gy contains negative doses (min {arr.min()}).")
    return arr


def write_dose_nifti(dose_gy: sitk.Image, path: str | Path) -> Path:
    """Write a dose (or dose-prescription) map in Gy as NIfTI (float32), keeping the geometry."""
    arr = _dose_array(dose_gy)
    out = Path(path)
    if not out.name.endswith((".nii", ".nii.gz")):
        raise InputError(f"NIfTI path must end in .nii or .nii.gz, got {out.name}.")
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.CopyInformation(dose_gy)
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(out), useCompression=out.name.endswith(".gz"))
    return out


def _ds(value: float) -> str:
    """A DICOM decimal string (<= 16 characters) for ``value``."""
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise InputError(f"cannot encode {value!r} as a DICOM DS.")


def _dose_grid_scaling(max_dose: float) -> tuple[str, float]:
    if max_dose <= 0:
        return "1e-06", 1e-6
    raw = max_dose / (_UINT32_MAX - 1)
    text = _ds(raw * (1.0 + 1e-9))
    scaling = float(text)
    while max_dose / scaling > _UINT32_MAX:  # DS rounding must not overflow the stored range
        scaling *= 1.0 + 1e-9
        text = _ds(scaling)
        scaling = float(text)
    return text, scaling


def write_rtdose(dose_gy: sitk.Image, path: str | Path, *, patient_id: str,
                 frame_of_reference_uid: str | None = None, study_instance_uid: str | None = None,
                 patient_name: str = "", series_description: str = "radiogenomics dose prescription",
                 referenced_rt_plan_uid: str | None = None) -> Path:
    """Write a 3-D dose map (Gy) as a DICOM RT Dose file a planning system can import.

    ``frame_of_reference_uid`` / ``study_instance_uid``: pass those of the planning CT so the dose lands in
    its frame and study (new UIDs otherwise). ``referenced_rt_plan_uid``: SOP instance UID of an RT Plan to
    reference (the IOD asks for one with DoseSummationType PLAN; omitted when None). Stored values are
    uint32 with DoseGridScaling; reading back and scaling reproduces the dose within one scaling step.
    """
    arr = _dose_array(dose_gy)
    if not isinstance(patient_id, str) or not patient_id.strip():
        raise InputError("patient_id must be a non-empty string.")
    out = Path(path)
    size = dose_gy.GetSize()  # (x, y, z)
    spacing = np.array(dose_gy.GetSpacing(), dtype=np.float64)
    origin = np.array(dose_gy.GetOrigin(), dtype=np.float64)
    direction = np.array(dose_gy.GetDirection(), dtype=np.float64).reshape(3, 3)
    row_dir, col_dir, slice_dir = direction[:, 0], direction[:, 1], direction[:, 2]
    normal = np.cross(row_dir, col_dir)
    if abs(abs(float(normal @ slice_dir)) - 1.0) > 1e-6:
        raise InputError("dose_gy has an oblique slice axis; RT Dose frames must be parallel slices.",
                         fix="resample the dose onto an orthogonal grid.")
    offsets = np.arange(size[2]) * spacing[2] * float(normal @ slice_dir)

    text_scaling, scaling = _dose_grid_scaling(float(arr.max()))
    stored = np.rint(arr / scaling)
    stored = np.clip(stored, 0, _UINT32_MAX).astype("<u4")

    now = _dt.datetime.now(_dt.UTC)
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RT_DOSE_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RT_DOSE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.StudyDate = ds.InstanceCreationDate
    ds.StudyTime = ds.InstanceCreationTime
    ds.Modality = "RTDOSE"
    ds.Manufacturer = "radiogenomics"
    ds.SoftwareVersions = __version__
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = frame_of_reference_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    # Image plane / pixel
    ds.ImagePositionPatient = [_ds(float(v)) for v in origin]
    ds.ImageOrientationPatient = [_ds(float(v)) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [_ds(float(spacing[1])), _ds(float(spacing[0]))]  # row spacing (y), column spacing (x)
    ds.SliceThickness = _ds(float(spacing[2]))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = int(size[1])
    ds.Columns = int(size[0])
    ds.NumberOfFrames = int(size[2])
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    ds.GridFrameOffsetVector = [_ds(float(v)) for v in offsets]
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    # RT Dose module
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = text_scaling
    if referenced_rt_plan_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = referenced_rt_plan_uid
        ds.ReferencedRTPlanSequence = Sequence([ref])
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"

    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    logger.info("wrote RT Dose %s (%s frames, DoseGridScaling %s Gy)", out, size[2], text_scaling)
    return out


def read_rtdose_gy(path: str | Path) -> sitk.Image:
    """Read an RT Dose file back as a float64 SimpleITK image in Gy (stored values x DoseGridScaling).

    Geometry from ImagePositionPatient, ImageOrientationPatient, PixelSpacing and GridFrameOffsetVector.
    Meant for round-trip checks of :func:`write_rtdose`; the cohort package has the general reader.
    """
    ds = pydicom.dcmread(str(path))
    if ds.SOPClassUID != RT_DOSE_STORAGE:
        raise InputError(f"not an RT Dose file (SOP class {ds.SOPClassUID}).", file=str(path))
    arr = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    if arr.ndim == 2:
        arr = arr[None]
    orient = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector]) if "GridFrameOffsetVector" in ds else \
        np.zeros(1)
    dz = float(offsets[1] - offsets[0]) if offsets.size > 1 else float(getattr(ds, "SliceThickness", 1.0) or 1.0)
    slice_dir = normal if dz >= 0 else -normal
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), abs(dz)))
    img.SetOrigin(tuple(float(v) for v in ds.ImagePositionPatient))
    img.SetDirection(tuple(np.column_stack([row_dir, col_dir, slice_dir]).ravel().tolist()))
    return img


def write_prescription(dose_gy: Any, reference: sitk.Image, out_dir: str | Path, *, patient_id: str,
                       frame_of_reference_uid: str | None = None, study_instance_uid: str | None = None,
                       stem: str = "dose_prescription") -> tuple[Path, Path]:
    """Write a voxel dose prescription (array on ``reference``'s grid, or an image) as NIfTI and RT Dose.

    Returns ``(nifti_path, rtdose_path)``: ``<stem>.nii.gz`` and ``<stem>.dcm`` in ``out_dir``.
    """
    img = dose_gy if isinstance(dose_gy, sitk.Image) else image_from_array(dose_gy, reference)
    out = Path(out_dir)
    nii = write_dose_nifti(img, out / f"{stem}.nii.gz")
    rtd = write_rtdose(img, out / f"{stem}.dcm", patient_id=patient_id,
                       frame_of_reference_uid=frame_of_reference_uid, study_instance_uid=study_instance_uid)
    return nii, rtd
