"""DICOM RTSTRUCT: list structures, rasterise one onto a reference image, write masks as RTSTRUCT.

Both directions are our own (pydicom + SimpleITK geometry; OpenCV only to trace contours), not rt-utils: rt-utils
1.2.7 swaps the row and column pixel spacings (wrong contours whenever in-plane pixels are not square),
allocates masks as (columns, rows), and reads only contours that reference a slice SOPInstanceUID.
Mapping points through the image's index <-> physical transform works for any grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from radiogenomics.cohort.dicom import RTSTRUCT_STORAGE
from radiogenomics.cohort.geometry import geometry_differences, physical_to_index
from radiogenomics.errors import InputError

log = logging.getLogger(__name__)


def _read(path: Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(f"cannot read RTSTRUCT: {exc}", file=str(path), fix="re-export the structure set.") from exc
    if str(getattr(ds, "Modality", "")) != "RTSTRUCT":
        raise InputError(f"not an RTSTRUCT (Modality={getattr(ds, 'Modality', '?')}).", file=str(path),
                         fix="give an RTSTRUCT file in the mask column.")
    return ds


def rtstruct_roi_names(path: Path) -> list[str]:
    """Names of the structures in an RTSTRUCT, in file order."""
    ds = _read(path)
    return [str(r.ROIName) for r in getattr(ds, "StructureSetROISequence", [])]


def _roi_number(ds: pydicom.Dataset, roi_name: str, path: Path) -> int:
    rois = {str(r.ROIName): int(r.ROINumber) for r in getattr(ds, "StructureSetROISequence", [])}
    if roi_name in rois:
        return rois[roi_name]
    folded = [name for name in rois if name.lower() == roi_name.lower()]
    if len(folded) == 1:
        return rois[folded[0]]
    raise InputError(f"structure '{roi_name}' is not in the RTSTRUCT; it holds: {', '.join(rois) or 'none'}.",
                     file=str(path), fix="set the roi column to one of the structure names.")


def rasterise_rtstruct(path: Path, reference: sitk.Image, roi_name: str) -> sitk.Image:
    """Rasterise structure `roi_name` onto the grid of `reference` (UInt8 0/1, same geometry).

    A voxel is inside when its centre lies inside the closed planar contours under the even-odd rule
    (inner contours make holes, DICOM PS3.3 C.8.8.6), the usual convention of planning systems.
    Points are mapped through the reference geometry, so any grid works.
    """
    ds = _read(path)
    number = _roi_number(ds, roi_name, path)
    size_x, size_y, size_z = reference.GetSize()
    per_slice: dict[int, list[np.ndarray]] = {}
    outside = 0
    for roi_contour in getattr(ds, "ROIContourSequence", []):
        if int(roi_contour.ReferencedROINumber) != number:
            continue
        for contour in getattr(roi_contour, "ContourSequence", []):
            if str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            index = physical_to_index(reference, points)
            k = int(np.round(np.median(index[:, 2])))
            if 0 <= k < size_z and len(index) >= 3:
                per_slice.setdefault(k, []).append(index[:, :2])
            else:
                outside += 1
    mask = np.zeros((size_z, size_y, size_x), dtype=np.uint8)
    for k, polygons in per_slice.items():
        mask[k] = even_odd_fill(polygons, size_y, size_x)
    if outside:
        log.warning("%s: %d contour(s) of '%s' lie outside the reference image and were ignored",
                    path, outside, roi_name)
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(reference)
    return image


def even_odd_fill(polygons: list[np.ndarray], n_rows: int, n_cols: int) -> np.ndarray:
    """Voxel centres (row y, column x) inside `polygons` (each (N, 2) in continuous x, y index) by even-odd.

    Scanline parity, vectorised: every edge crossing of the horizontal line through a row of centres
    flips the parity of all centres to its right (half-open rule, so shared vertices count once).
    Written here because cv2.fillPoly also fills boundary pixels whose centres lie outside the polygon.
    """
    toggles = np.zeros((n_rows, n_cols + 1), dtype=np.int32)
    for polygon in polygons:
        x0, y0 = polygon[:, 0], polygon[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo = max(int(np.ceil(y0.min())), 0)
        hi = min(int(np.floor(y0.max())), n_rows - 1)
        if hi < lo:
            continue
        rows = np.arange(lo, hi + 1, dtype=float)[:, None]
        crosses = ((y0 <= rows) & (y1 > rows)) | ((y1 <= rows) & (y0 > rows))
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
        r_idx, e_idx = np.nonzero(crosses)
        first_col = np.clip(np.ceil(x_cross[r_idx, e_idx]), 0, n_cols).astype(np.int64)
        np.add.at(toggles, (r_idx + lo, first_col), 1)
    return (np.cumsum(toggles, axis=1)[:, :n_cols] % 2).astype(np.uint8)


def write_rtstruct(masks: dict[str, sitk.Image], series_folder: Path, out_path: Path) -> Path:
    """Write binary masks (on the grid of the DICOM series in `series_folder`) as one RTSTRUCT file.

    Contours are traced per slice with OpenCV (outer borders and holes, through boundary voxel centres)
    and mapped to patient coordinates through the series geometry; every contour references its slice.
    """
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(series_folder))
    if len(series_ids) != 1:
        raise InputError(f"expected one image series, found {len(series_ids)}.", file=str(series_folder),
                         fix="write the RTSTRUCT against a folder holding exactly one series.")
    files = reader.GetGDCMSeriesFileNames(str(series_folder), series_ids[0])
    reader.SetFileNames(files)
    reference = reader.Execute()
    slices = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = slices[0]
    ds = _structure_set_header(first, out_path, slices)
    for number, (name, mask) in enumerate(masks.items(), start=1):
        diffs = geometry_differences(mask, reference)
        if diffs:
            raise InputError(f"mask '{name}' is not on the series grid: {'; '.join(diffs)}.",
                             file=str(series_folder), fix="resample the mask onto the CT series first.")
        array = sitk.GetArrayFromImage(mask).astype(np.uint8)
        if not array.any():
            raise InputError(f"mask '{name}' is empty.", fix="give a non-empty mask for every structure.")
        ds.StructureSetROISequence.append(_dataset(
            ROINumber=number, ReferencedFrameOfReferenceUID=first.FrameOfReferenceUID, ROIName=name,
            ROIGenerationAlgorithm="AUTOMATIC"))
        contour_items = []
        for k in np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1)):
            # Traced on a 2x nearest-neighbour upsampling, contours run a quarter voxel outside the
            # boundary voxel centres (inside for holes), so centre-in-polygon gives the mask back exactly.
            fine = np.repeat(np.repeat(array[k], 2, axis=0), 2, axis=1)
            found, _ = cv2.findContours(fine, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            for contour in found:
                xy = contour.reshape(-1, 2).astype(float) / 2.0 - 0.25
                index = np.column_stack([xy, np.full(len(xy), float(k))])
                points = _index_to_physical(reference, index)
                contour_items.append(_dataset(
                    ContourImageSequence=Sequence([_dataset(
                        ReferencedSOPClassUID=slices[k].SOPClassUID,
                        ReferencedSOPInstanceUID=slices[k].SOPInstanceUID)]),
                    ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(points),
                    ContourData=[f"{v:.4f}" for v in points.ravel()]))
        color = _COLOURS[(number - 1) % len(_COLOURS)]
        ds.ROIContourSequence.append(_dataset(ROIDisplayColor=list(color), ReferencedROINumber=number,
                                              ContourSequence=Sequence(contour_items)))
        ds.RTROIObservationsSequence.append(_dataset(
            ObservationNumber=number, ReferencedROINumber=number, RTROIInterpretedType="ORGAN",
            ROIInterpreter=""))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(out_path)
    return out_path


_COLOURS = ((255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (200, 0, 255), (0, 200, 255))


def _dataset(**values: object) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def _index_to_physical(image: sitk.Image, index: np.ndarray) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + index @ (direction @ np.diag(image.GetSpacing())).T


def _structure_set_header(first: Dataset, out_path: Path, slices: list[FileDataset]) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RTSTRUCT_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(out_path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for tag in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, tag, getattr(first, tag, ""))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.Manufacturer = "radiogenomics"
    ds.StructureSetLabel = "radiogenomics"
    ds.StructureSetDate, ds.StructureSetTime = getattr(first, "StudyDate", ""), getattr(first, "StudyTime", "")
    images = Sequence([_dataset(ReferencedSOPClassUID=s.SOPClassUID, ReferencedSOPInstanceUID=s.SOPInstanceUID)
                       for s in slices])
    series = _dataset(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=images)
    study = _dataset(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                     ReferencedSOPInstanceUID=first.StudyInstanceUID,
                     RTReferencedSeriesSequence=Sequence([series]))
    ds.ReferencedFrameOfReferenceSequence = Sequence([_dataset(
        FrameOfReferenceUID=first.FrameOfReferenceUID, RTReferencedStudySequence=Sequence([study]))])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    return ds
