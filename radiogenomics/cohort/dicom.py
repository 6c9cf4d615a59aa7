"""DICOM image I/O: CT/MR/PET series folders, RTDOSE files, and a CT-series writer.

Series are read with SimpleITK (GDCM); RTDOSE is read with pydicom because it is one multi-frame
file whose slice positions live in GridFrameOffsetVector and whose values need DoseGridScaling,
which we apply explicitly rather than trusting a reader's defaults.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import os
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
IMAGE_MODALITIES = ("CT", "MR", "PT", "NM")
#: Slice steps may differ by this much (mm, or this fraction of the step) before a series counts as uneven.
SLICE_STEP_ATOL_MM = 0.01
SLICE_STEP_RTOL = 0.01


class IncompleteSeriesError(InputError):
    """A DICOM series that misses images (``incomplete_series``): uneven slice spacing, or images its RTSTRUCT
    references are absent from the folder."""

    code = "incomplete_series"


def is_dicom_file(path: Path) -> bool:
    """True for a file carrying the DICOM Part 10 preamble, or named *.dcm."""
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_modality(path: Path) -> str:
    """The Modality tag of a DICOM file (e.g. CT, RTSTRUCT, RTDOSE)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for corrupt files
        raise InputError(f"cannot read DICOM file: {exc}", file=str(path),
                         fix="re-export the file from the planning system.") from exc
    return str(getattr(ds, "Modality", ""))


def read_dicom_series(folder: Path) -> sitk.Image:
    """Read the one image series in `folder` (CT, MR or PET). PET in Bq/ml is converted to SUVbw."""
    reader = sitk.ImageSeriesReader()
    series_ids = [s for s in reader.GetGDCMSeriesIDs(str(folder))]
    candidates: list[tuple[str, list[str]]] = []
    for sid in series_ids:
        files = list(reader.GetGDCMSeriesFileNames(str(folder), sid))
        if files and dicom_modality(Path(files[0])) in IMAGE_MODALITIES:
            candidates.append((sid, files))
    if not candidates:
        raise InputError("no CT/MR/PET image series found in the folder.", file=str(folder),
                         fix="point the image column at a folder holding one DICOM image series.")
    if len(candidates) > 1:
        names = ", ".join(f"{sid} ({len(f)} files)" for sid, f in candidates)
        raise InputError(f"the folder holds {len(candidates)} image series: {names}.", file=str(folder),
                         fix="put each series in its own folder.")
    files = candidates[0][1]
    _check_even_spacing(files, folder)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read the DICOM series: {exc}", file=str(folder),
                         fix="check that the series is complete and uncompressed or GDCM-readable.") from exc
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    if str(getattr(first, "Modality", "")) == "PT":
        image = _pet_to_suv(image, first, folder)
    return image


def _check_even_spacing(files: list[str], folder: Path) -> None:
    """IncompleteSeriesError when the slices of a series are not evenly spaced along the slice normal (a missing
    slice leaves a double step): how many slices are present of how many an even series over the span holds."""
    if len(files) < 3:
        return
    positions = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True,
                             specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            return  # no geometry to check (GDCM orders such files by other means)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        positions.append(float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))
    z = np.sort(np.asarray(positions))
    steps = np.diff(z)
    if not len(steps) or steps.min() <= 0:
        return  # duplicate positions: GDCM's own error tells what is wrong
    step = float(steps.min())
    if float(steps.max()) - step <= max(SLICE_STEP_ATOL_MM, SLICE_STEP_RTOL * step):
        return
    expected = int(round((z[-1] - z[0]) / step)) + 1
    gaps = [f"{a:.2f}..{b:.2f}" for a, b, d in zip(z[:-1], z[1:], steps, strict=True)
            if d - step > max(SLICE_STEP_ATOL_MM, SLICE_STEP_RTOL * step)]
    raise IncompleteSeriesError(
        f"the DICOM series has uneven slice spacing (steps {step:.3g} to {float(steps.max()):.3g} mm): "
        f"{len(z)} of {expected} slices present between {z[0]:.2f} and {z[-1]:.2f} mm; gaps at "
        f"{', '.join(gaps[:5])}{' ...' if len(gaps) > 5 else ''} mm.", file=str(folder),
        fix="export every slice of the series (or resample it to an even grid and save it as NIfTI).")


def series_instance_uids(folder: Path) -> tuple[str, frozenset[str]]:
    """(SeriesInstanceUID, SOPInstanceUIDs) of the one image series in a DICOM folder (cached per folder state)."""
    folder = Path(folder)
    stamp = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file()))
    return _series_instance_uids(str(folder.resolve()), hash(stamp))


@functools.lru_cache(maxsize=16)
def _series_instance_uids(folder: str, stamp: int) -> tuple[str, frozenset[str]]:
    series: dict[str, set[str]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file():
            continue
        try:
            ds = pydicom.dcmread(entry.path, stop_before_pixels=True,
                                 specific_tags=["Modality", "SeriesInstanceUID", "SOPInstanceUID"])
        except Exception:  # not DICOM (a README, a thumbnail): not part of the series
            continue
        if str(getattr(ds, "Modality", "")) in IMAGE_MODALITIES and "SOPInstanceUID" in ds:
            series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), set()).add(str(ds.SOPInstanceUID))
    if not series:
        return "", frozenset()
    uid = max(series, key=lambda k: len(series[k]))
    return uid, frozenset(series[uid])


def _pet_to_suv(image: sitk.Image, ds: pydicom.Dataset, folder: Path) -> sitk.Image:
    """Body-weight SUV from a PET series in Bq/ml, decay-corrected to injection time.

    SUVbw = C(Bq/ml) * weight(g) / (A_inj(Bq) * 2^(-dt/T_half)); Kinahan & Fletcher,
    Semin Ultrasound CT MR 2010;31:496. Series already in other units are returned unchanged (logged).
    """
    units = str(getattr(ds, "Units", "")).upper()
    if units != "BQML":
        log.info("PET series %s has Units=%r; leaving values unchanged", folder, units)
        return image
    try:
        weight_g = float(ds.PatientWeight) * 1000.0
        info = ds.RadiopharmaceuticalInformationSequence[0]
        dose_bq = float(info.RadionuclideTotalDose)
        half_life_s = float(info.RadionuclideHalfLife)
        start = _seconds_of_day(str(info.RadiopharmaceuticalStartTime))
        scan = _seconds_of_day(str(getattr(ds, "SeriesTime", "") or ds.AcquisitionTime))
    except (AttributeError, IndexError, KeyError, ValueError) as exc:
        raise InputError("PET series in Bq/ml lacks what SUV needs (PatientWeight, "
                         "RadionuclideTotalDose, RadionuclideHalfLife, RadiopharmaceuticalStartTime, SeriesTime).",
                         file=str(folder), fix="export the PET series with those tags, or as SUV NIfTI.") from exc
    decayed_bq = dose_bq * 2.0 ** (-((scan - start) % 86400.0) / half_life_s)
    return sitk.Cast(image, sitk.sitkFloat32) * float(weight_g / decayed_bq)


def _seconds_of_day(text: str) -> float:
    text = text.split(".")[0].ljust(6, "0")
    return int(text[0:2]) * 3600.0 + int(text[2:4]) * 60.0 + float(text[4:6])


def read_rtdose(path: Path) -> sitk.Image:
    """Read a DICOM RTDOSE file as a Float64 image in Gy on the dose grid."""
    try:
        ds = pydicom.dcmread(path)
        frames = ds.pixel_array.astype(np.float64)
    except Exception as exc:
        raise InputError(f"cannot read RTDOSE: {exc}", file=str(path),
                         fix="re-export the dose from the planning system.") from exc
    units = str(getattr(ds, "DoseUnits", "GY")).upper()
    if units != "GY":
        raise InputError(f"RTDOSE DoseUnits is {units!r}; only absolute dose in GY is accepted.", file=str(path),
                         fix="export the dose in Gy (not RELATIVE).")
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    dose = frames * float(getattr(ds, "DoseGridScaling", 1.0))
    # PS3.3 C.8.8.3.2: offsets are relative (first = 0) or absolute z (first = IPP z); both are
    # positions along the normal relative to the first frame once the first element is subtracted.
    offsets = np.asarray(getattr(ds, "GridFrameOffsetVector", [0.0]), dtype=float)
    offsets = offsets - offsets[0]
    if len(offsets) != dose.shape[0]:
        raise InputError(f"GridFrameOffsetVector has {len(offsets)} entries for {dose.shape[0]} frames.",
                         file=str(path), fix="re-export the RTDOSE.")
    steps = np.diff(offsets)
    if len(steps) and not np.allclose(steps, steps[0], atol=1e-3):
        raise InputError("RTDOSE frames are not evenly spaced.", file=str(path),
                         fix="resample the dose to a regular grid in the planning system.")
    dz = float(steps[0]) if len(steps) else 1.0
    row_cos = np.asarray(ds.ImageOrientationPatient[:3], dtype=float)
    col_cos = np.asarray(ds.ImageOrientationPatient[3:], dtype=float)
    normal = np.cross(row_cos, col_cos)
    if dz < 0:  # frames run against the normal: flip to a right-handed, increasing grid
        dose, dz = dose[::-1], -dz
        origin = np.asarray(ds.ImagePositionPatient, dtype=float) + normal * offsets[-1]
    else:
        origin = np.asarray(ds.ImagePositionPatient, dtype=float) + normal * offsets[0]
    image = sitk.GetImageFromArray(dose)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    image.SetSpacing((col_spacing, row_spacing, dz))
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(np.column_stack([row_cos, col_cos, normal]).ravel()))
    return image


def _base_dataset(path: Path, sop_class: str, patient_id: str, modality: str, study_uid: str,
                  series_uid: str, frame_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    now = _dt.datetime.now(_dt.UTC)
    ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    return ds


def write_ct_series(image: sitk.Image, folder: Path, *, patient_id: str, study_instance_uid: str | None = None,
                    frame_of_reference_uid: str | None = None) -> dict[str, str]:
    """Write a 3-D image in HU as a DICOM CT series (one file per slice, int16 + rescale).

    Returns the UIDs used, so an RTSTRUCT or RTDOSE can reference the same study and frame.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uids = {"study": study_instance_uid or generate_uid(), "series": generate_uid(),
            "frame": frame_of_reference_uid or generate_uid()}
    array = np.round(sitk.GetArrayFromImage(image)).astype(np.int16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    for k in range(array.shape[0]):
        path = folder / f"CT{k:04d}.dcm"
        ds = _base_dataset(path, CT_IMAGE_STORAGE, patient_id, "CT", uids["study"], uids["series"], uids["frame"])
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.PixelData = array[k].tobytes()
        _atomic_save(ds, path)
    return uids


def _atomic_save(ds: FileDataset, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
