"""DICOM RTSTRUCT: list structures, rasterise one onto a reference image, write masks as RTSTRUCT.

Both directions are our own (pydicom + SimpleITK geometry; OpenCV only to trace contours), not rt-utils: rt-utils
1.2.7 swaps the row and column pixel spacings (wrong contours whenever in-plane pixels are not square),
allocates masks as (columns, rows), and reads only contours that reference a slice SOPInstanceUID.
Mapping points through the image's index <-> physical transform works for any grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence as Seq
from pathlib import Path

import cv2
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from radiogenomics.cohort.dicom import RTSTRUCT_STORAGE, IncompleteSeriesError, series_instance_uids
from radiogenomics.cohort.geometry import geometry_differences, physical_to_index
from radiogenomics.cohort.roles import Resolved, RoiInfo, resolve_role, structure_kind
from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

ON_EDGE_TOL_VOXELS = 1e-3
"""A voxel centre within this distance (in voxels) of a contour edge lies on the edge, and so inside."""


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
    return [roi.name for roi in rtstruct_rois(path)]


def rtstruct_rois(path: Path) -> list[RoiInfo]:
    """The structures of an RTSTRUCT (ROINumber, ROIName, RTROIInterpretedType), in file order."""
    return list(_rois_of(_read(path)))


def _rois_of(ds: pydicom.Dataset) -> tuple[RoiInfo, ...]:
    kinds = {int(o.ReferencedROINumber): str(getattr(o, "RTROIInterpretedType", "") or "").strip().upper()
             for o in getattr(ds, "RTROIObservationsSequence", []) if "ReferencedROINumber" in o}
    return tuple(RoiInfo(int(r.ROINumber), str(r.ROIName), kinds.get(int(r.ROINumber), ""))
                 for r in getattr(ds, "StructureSetROISequence", []))


def resolve_rtstruct_role(path: Path, role: str, *, structure: str | None = None, aliases: Seq[str] = (),
                          patient_id: str | None = None) -> Resolved:
    """The structure of the RTSTRUCT at ``path`` that ``role`` means (:func:`radiogenomics.cohort.roles.resolve_role`:
    ``structure`` column, exact name, cohort.yaml ``aliases``, TG-263 alias table, target type)."""
    return resolve_role(role, _rois_of(_read(path)), structure=structure, aliases=aliases, file=str(path),
                        patient_id=patient_id)


def referenced_images(ds: pydicom.Dataset) -> tuple[set[str], set[str]]:
    """(SeriesInstanceUIDs, SOPInstanceUIDs) of the images an RTSTRUCT references: its referenced series'
    ContourImageSequence and every contour's ContourImageSequence (ReferencedSOPInstanceUID)."""
    series: set[str] = set()
    images: set[str] = set()
    for frame in getattr(ds, "ReferencedFrameOfReferenceSequence", []):
        for study in getattr(frame, "RTReferencedStudySequence", []):
            for item in getattr(study, "RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in item:
                    series.add(str(item.SeriesInstanceUID))
                images.update(str(i.ReferencedSOPInstanceUID) for i in getattr(item, "ContourImageSequence", [])
                              if "ReferencedSOPInstanceUID" in i)
    for roi_contour in getattr(ds, "ROIContourSequence", []):
        for contour in getattr(roi_contour, "ContourSequence", []):
            images.update(str(i.ReferencedSOPInstanceUID) for i in getattr(contour, "ContourImageSequence", [])
                          if "ReferencedSOPInstanceUID" in i)
    return series, images


def check_series_complete(path: Path, series_folder: Path, patient_id: str | None = None) -> None:
    """Raise :class:`~radiogenomics.cohort.dicom.IncompleteSeriesError` (``incomplete_series``) when the DICOM
    series in ``series_folder`` misses images that the RTSTRUCT at ``path`` references.

    Only an RTSTRUCT drawn on this series is checked (it names the folder's SeriesInstanceUID or one of its
    images); one drawn on another series of the frame of reference (a CT structure set on the PET grid) is
    rasterised through the geometry alone.
    """
    series_uid, present = series_instance_uids(series_folder)
    series, referenced = referenced_images(_read(path))
    if not referenced or (series_uid not in series and not referenced & present):
        return
    have = len(referenced & present)
    if have < len(referenced):
        raise IncompleteSeriesError(
            f"the DICOM series holds {have} of the {len(referenced)} images its RTSTRUCT {path.name} references "
            f"({len(referenced) - have} missing, ReferencedSOPInstanceUID).", file=str(series_folder),
            patient_id=patient_id, fix="export the whole image series the structure set was drawn on into the folder.")


def rasterise_rtstruct(path: Path, reference: sitk.Image, roi_name: str, *, structure: str | None = None,
                       aliases: Seq[str] = (), patient_id: str | None = None) -> sitk.Image:
    """Rasterise the structure of role `roi_name` onto the grid of `reference` (UInt8 0/1, same geometry).

    The role resolves to a structure of the file as :func:`resolve_rtstruct_role` does (``structure``: the name
    in the file; ``aliases``: cohort.yaml's names of the role); an exact name is found first.

    Each contour is a closed polygon, boundary included: a voxel is inside when its centre lies inside the
    contours under the even-odd rule (inner contours make holes, DICOM PS3.3 C.8.8.6) or on any contour edge
    (within `ON_EDGE_TOL_VOXELS`). So contours traced through the centres of the boundary voxels (rt-utils,
    OpenCV-based exporters, whose hole contours run through the structure's own voxels next to the hole) and
    contours around the voxel edges (planning systems, `write_rtstruct`) both give the mask back.
    Degenerate contours (1-2 points, or no area) fill the voxels nearest to their path. Points are mapped
    through the reference geometry (continuous index space), so any grid works.
    """
    ds = _read(path)
    resolved = resolve_role(roi_name, _rois_of(ds), structure=structure, aliases=aliases, file=str(path),
                            patient_id=patient_id)
    number = resolved.number if resolved.number is not None else -1
    label = (f"structure '{resolved.structure}'" if resolved.structure == roi_name
             else f"structure '{resolved.structure}' (role {roi_name})")
    size_x, size_y, size_z = reference.GetSize()
    polygons: dict[int, list[np.ndarray]] = {}
    paths: dict[int, list[np.ndarray]] = {}
    notes: dict[str, list[float]] = {}  # what happened -> slice positions (mm)
    first, last = -0.5 - ON_EDGE_TOL_VOXELS, np.array([size_x, size_y]) - 0.5 + ON_EDGE_TOL_VOXELS  # in-plane
    for points in _closed_planar_contours(ds, number):
        index = physical_to_index(reference, points)
        k = int(np.round(np.median(index[:, 2])))
        z_mm = float(np.mean(points[:, 2]))
        xy = index[:, :2]
        if not 0 <= k < size_z or (xy.max(axis=0) < first).any() or (xy.min(axis=0) > last).any():
            notes.setdefault(_OUTSIDE, []).append(z_mm)
            continue
        if (xy < first).any() or (xy > last).any():
            notes.setdefault(_CLIPPED, []).append(z_mm)
        degenerate = _degenerate(xy)
        if degenerate:
            notes.setdefault(degenerate, []).append(z_mm)
            paths.setdefault(k, []).append(xy)
        else:
            polygons.setdefault(k, []).append(xy)
    mask = np.zeros((size_z, size_y, size_x), dtype=np.uint8)
    for k, slice_polygons in polygons.items():
        mask[k] = even_odd_fill(slice_polygons, size_y, size_x) | centres_on_edges(slice_polygons, size_y, size_x)
    for k, slice_paths in paths.items():
        mask[k] |= voxels_along_paths(slice_paths, size_y, size_x)
    for kind, z_mm_list in notes.items():
        log.warning("%s: %s: %s", path, label, _note_line(kind, z_mm_list))
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(reference)
    return image


_OUTSIDE = "contour outside the reference image"
_CLIPPED = "contour extending beyond the image in-plane"
_COLLINEAR = "contour with no area (collinear points)"
_NOTE_ACTION = {_OUTSIDE: "ignored", _CLIPPED: "clipped at the image edge",
                "1-point contour": "filled as a single voxel", "2-point contour": "filled along its segment",
                _COLLINEAR: "filled along its path"}
#: Up to this many slices are listed one by one; more (and every contour outside the image) are summarised.
_LISTED_SLICES = 5


def _note_line(kind: str, z_mm_list: list[float]) -> str:
    """One log line for all contours of one kind of one structure: the slices, or a count and z range."""
    slices = sorted(set(z_mm_list))
    if kind == _OUTSIDE or len(slices) > _LISTED_SLICES:
        n, m = len(z_mm_list), len(slices)
        return (f"{n} {kind.replace('contour', 'contours' if n > 1 else 'contour', 1)} on {m} "
                f"slice{'s' if m > 1 else ''} (z={slices[0]:.2f}" + (f"..{slices[-1]:.2f}" if m > 1 else "")
                + f" mm): {_NOTE_ACTION[kind]}")
    listed = ", ".join(f"{z:.2f}" for z in slices)
    return (f"{kind}{f' (x{len(z_mm_list)})' if len(z_mm_list) > 1 else ''} on slice z={listed} mm: "
            f"{_NOTE_ACTION[kind]}")


def _closed_planar_contours(ds: pydicom.Dataset, roi_number: int) -> list[np.ndarray]:
    """The CLOSED_PLANAR contours (each (N, 3) in mm) of one structure."""
    found = []
    for roi_contour in getattr(ds, "ROIContourSequence", []):
        if int(roi_contour.ReferencedROINumber) != roi_number:
            continue
        for contour in getattr(roi_contour, "ContourSequence", []):
            if str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            if len(points):
                found.append(points)
    return found


def _degenerate(xy: np.ndarray) -> str:
    """'' for a polygon with area; else what the contour is ('1-point contour', '2-point contour', ...)."""
    distinct = len(np.unique(np.round(xy / ON_EDGE_TOL_VOXELS), axis=0))
    if distinct <= 2:
        return f"{distinct}-point contour"
    spread = np.linalg.svd(xy - xy.mean(axis=0), compute_uv=False)
    return "" if spread[1] > ON_EDGE_TOL_VOXELS else _COLLINEAR


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


def centres_on_edges(polygons: list[np.ndarray], n_rows: int, n_cols: int,
                     tol: float = ON_EDGE_TOL_VOXELS) -> np.ndarray:
    """Voxel centres (row y, column x) within `tol` voxels of an edge of the closed `polygons` ((N, 2) x, y).

    Exact in continuous index space: along each edge's major axis every integer position is a candidate,
    the nearest integer on the minor axis the only possible centre there (|slope| <= 1), and a candidate is
    kept when its distance to the edge segment is <= tol.
    """
    start = np.concatenate(polygons)
    end = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    steep = np.abs(end[:, 1] - start[:, 1]) > np.abs(end[:, 0] - start[:, 0])
    # (major, minor) coordinates: (x, y) for shallow edges, (y, x) for steep ones
    p0 = np.where(steep[:, None], start[:, ::-1], start)
    d = np.where(steep[:, None], end[:, ::-1], end) - p0
    lo = np.maximum(np.ceil(np.minimum(p0[:, 0], p0[:, 0] + d[:, 0]) - tol), 0).astype(np.int64)
    hi = np.minimum(np.floor(np.maximum(p0[:, 0], p0[:, 0] + d[:, 0]) + tol),
                    np.where(steep, n_rows, n_cols) - 1).astype(np.int64)
    count = np.maximum(hi - lo + 1, 0)
    edge = np.repeat(np.arange(len(p0)), count)
    major = lo[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(count) - count, count)
    p0, d, steep = p0[edge], d[edge], steep[edge]
    length2 = (d * d).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.where(d[:, 0] != 0, (major - p0[:, 0]) / d[:, 0], 0.0), 0.0, 1.0)
        centre = np.column_stack([major, np.floor(p0[:, 1] + t * d[:, 1] + 0.5)])
        rel = centre - p0
        s = np.clip(np.where(length2 > 0, (rel * d).sum(axis=1) / length2, 0.0), 0.0, 1.0)
    near = np.hypot(*(rel - s[:, None] * d).T) <= tol
    x, y = np.where(steep[:, None], centre[:, ::-1], centre)[near].astype(np.int64).T
    ok = (x >= 0) & (x < n_cols) & (y >= 0) & (y < n_rows)
    out = np.zeros((n_rows, n_cols), dtype=np.uint8)
    out[y[ok], x[ok]] = 1
    return out


def voxels_along_paths(paths: list[np.ndarray], n_rows: int, n_cols: int) -> np.ndarray:
    """Voxels nearest to closed paths ((N, 2) x, y; N >= 1), sampled at least once per voxel step (DDA)."""
    out = np.zeros((n_rows, n_cols), dtype=np.uint8)
    for path in paths:
        ends = np.roll(path, -1, axis=0)
        for p0, p1 in zip(path, ends, strict=True):
            n = int(np.ceil(np.abs(p1 - p0).max())) + 1
            samples = p0 + np.linspace(0.0, 1.0, n)[:, None] * (p1 - p0)
            x, y = np.floor(samples + 0.5).astype(np.int64).T
            ok = (x >= 0) & (x < n_cols) & (y >= 0) & (y < n_rows)
            out[y[ok], x[ok]] = 1
    return out


def write_rtstruct(masks: dict[str, sitk.Image], series_folder: Path, out_path: Path) -> Path:
    """Write binary masks (on the grid of the DICOM series in `series_folder`) as one RTSTRUCT file.

    Contours are traced per slice with OpenCV (outer borders and holes) a quarter voxel outside the boundary
    voxel centres (for holes, a quarter voxel into the hole), so no centre lies near an edge and any
    centre-based reader, `rasterise_rtstruct` included, gives the mask back exactly. Points are mapped to
    patient coordinates through the series geometry; every contour references its slice.
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
            ObservationNumber=number, ReferencedROINumber=number, RTROIInterpretedType=_interpreted_type(name),
            ROIInterpreter=""))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(out_path)
    return out_path


def _interpreted_type(name: str) -> str:
    """RTROIInterpretedType of a structure written by name: GTV/CTV/PTV for a target name, EXTERNAL for the body
    outline, else ORGAN."""
    kind = structure_kind(name)
    if kind == "target":
        prefix = name.strip().upper()[:3]
        return prefix if prefix in ("GTV", "CTV", "PTV") else "CTV"  # ITV/IGTV: an internal target (a CTV)
    return "EXTERNAL" if kind == "external" else "ORGAN"


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
