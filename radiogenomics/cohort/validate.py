"""Validate a cohort folder: every problem in one run, each with patient, file and fix."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiogenomics.cohort import schema
from radiogenomics.cohort.dicom import IncompleteSeriesError, dicom_modality, is_dicom_file
from radiogenomics.cohort.geometry import geometry_differences
from radiogenomics.cohort.imageio import label_of_name, read_image
from radiogenomics.cohort.loader import Cohort, load_tables, row_structure
from radiogenomics.cohort.problems import Problem, ProblemList
from radiogenomics.cohort.roles import HOW_LABEL, HOW_LABEL_NAME, Resolved
from radiogenomics.cohort.rtstruct import check_series_complete, rasterise_rtstruct, resolve_rtstruct_role
from radiogenomics.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class ValidationReport:
    """The outcome of `validate_cohort`. `ok` is False when any error-level problem was found."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    n_patients: int = 0
    n_image_rows: int = 0
    tables: list[str] = field(default_factory=list)
    #: What each images.csv row's role resolved to in its mask file (patient_id, modality, role, structure, how,
    #: interpreted_type, kind, file), in images.csv order; filled when images are checked.
    structures: list[dict[str, object]] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, object]:
        return {"cohort": str(self.root), "ok": self.ok, "n_patients": self.n_patients,
                "n_image_rows": self.n_image_rows, "tables": self.tables,
                "n_errors": len(self.errors), "n_warnings": len(self.warnings),
                "problems": [p.to_dict() for p in self.problems], "structures": self.structures}


def validate_cohort(path: str | Path, *, check_images: bool = True,
                    progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Check tables and (unless `check_images` is False) every image, mask and dose grid."""
    root = Path(path).resolve()
    cohort, problems = load_tables(root)
    report = ValidationReport(root=root)
    if cohort is not None:
        report.n_patients = len(cohort.patients)
        all_rows = cohort.all_images if cohort.all_images is not None else cohort.images
        report.n_image_rows = len(all_rows)
        report.tables = [f for f in (schema.PATIENTS_FILE, schema.IMAGES_FILE, schema.EXPRESSION_FILE,
                                     schema.DVH_FILE) if (root / f).exists()]
        if check_images and len(all_rows):
            problems.extend(_check_image_rows(cohort, progress, report.structures))
    report.problems = list(problems)
    return report


class _ImageCache:
    """Reads each file once; remembers failures so one bad file is reported once per row, not re-read."""

    def __init__(self) -> None:
        self.images: dict[Path, sitk.Image | InputError] = {}

    def get(self, path: Path) -> sitk.Image | InputError:
        if path not in self.images:
            try:
                self.images[path] = read_image(path)
            except InputError as exc:
                self.images[path] = exc
        return self.images[path]


def _check_image_rows(cohort: Cohort, progress: Callable[[int, int], None] | None,
                      structures: list[dict[str, object]]) -> ProblemList:
    problems = ProblemList()
    cache = _ImageCache()
    checked_images: set[Path] = set()
    checked_series: dict[tuple[Path, Path], bool] = {}
    rows = cohort.all_images if cohort.all_images is not None else cohort.images  # every timepoint
    total = len(rows)
    compared: set[tuple[Path, Path]] = set()
    for done, row in enumerate(rows.itertuples(index=False), start=1):
        if progress:
            progress(done, total)
        image_path = Path(row.image)
        if row.modality not in schema.MODALITIES or not image_path.exists():
            continue  # already reported by the table parser
        loc = {"patient_id": row.patient_id, "file": str(row.image_rel)}
        image = cache.get(image_path)
        if isinstance(image, InputError):
            if image_path not in checked_images:
                problems.add(getattr(image, "code", "unreadable_image"), image.reason,
                             image.fix or "re-export the image in a supported format.", **loc)
                checked_images.add(image_path)
            continue
        if image_path not in checked_images:
            checked_images.add(image_path)
            problems.extend(_check_voxels(image, row.modality, loc))
        if getattr(row, "timepoint", schema.PLANNING) != schema.PLANNING:
            problems.extend(_compare_with_planning(cache, cohort, row, image, done, compared))
        if row.modality == schema.DOSE_MODALITY or row.mask is None or not Path(row.mask).exists():
            continue
        problems.extend(_check_mask(cache, Path(row.mask), image, row, cohort, structures, checked_series))
    return problems


def _compare_with_planning(cache: _ImageCache, cohort: Cohort, row, image: sitk.Image, row_number: int,  # type: ignore[no-untyped-def]
                           compared: set[tuple[Path, Path]]) -> ProblemList:
    """A mid-treatment image on another grid than the planning image of its modality is allowed: noted once per
    pair of files (a warning), since voxelwise comparison with the baseline then needs a registration."""
    problems = ProblemList()
    planning = cohort.image_rows(str(row.patient_id), str(row.modality))
    if planning.empty:
        return problems  # no_planning_image, reported by the table checks
    reference = Path(planning["image"].iloc[0])
    pair = (reference, Path(row.image))
    if pair in compared or reference == pair[1] or not reference.exists():
        return problems
    compared.add(pair)
    baseline = cache.get(reference)
    if isinstance(baseline, InputError):
        return problems
    differences = geometry_differences(baseline, image)
    if differences:
        problems.add("timepoint_grid_differs",
                     f"the {row.timepoint} {row.modality} image is on another grid than the planning "
                     f"{row.modality} image {planning['image_rel'].iloc[0]} ({'; '.join(differences)}).",
                     "allowed (its own mask must match it); compare it with the baseline through a registration, "
                     "or resample it onto the planning grid.", severity="warning", patient_id=row.patient_id,
                     file=str(row.image_rel), row=row_number, column="image")
    return problems


def _check_voxels(image: sitk.Image, modality: str, loc: dict[str, object]) -> ProblemList:
    problems = ProblemList()
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_bad = int((~np.isfinite(array)).sum())
        problems.add("non_finite_image", f"{n_bad} voxel(s) are NaN or infinite.",
                     "replace non-finite voxels (e.g. outside the field of view) by a finite value.", **loc)
    if modality == schema.DOSE_MODALITY and array.size:
        finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
        if finite.size and float(finite.min()) < 0:
            problems.add("negative_dose", f"dose grid has negative values (min {float(finite.min()):.3g} Gy).",
                         "export the physical dose in Gy; a dose is never negative.", **loc)
        if finite.size and float(finite.max()) > schema.MAX_PLAUSIBLE_TOTAL_DOSE_GY:
            problems.add("implausible_dose", f"dose grid maximum {float(finite.max()):.4g} Gy is implausible.",
                         "check the units: the DOSE image must be in Gy (not cGy).", **loc)
    return problems


def _check_mask(cache: _ImageCache, mask_path: Path, image: sitk.Image, row, cohort: Cohort,  # type: ignore[no-untyped-def]
                structures: list[dict[str, object]], checked_series: dict[tuple[Path, Path], bool]) -> ProblemList:
    problems = ProblemList()
    loc = {"patient_id": row.patient_id, "file": str(row.mask_rel)}
    structure, aliases = row_structure(row._asdict()), cohort.aliases_for(str(row.roi))
    if is_dicom_file(mask_path) and dicom_modality(mask_path) == "RTSTRUCT":
        try:
            resolved = resolve_rtstruct_role(mask_path, str(row.roi), structure=structure, aliases=aliases)
        except InputError as exc:
            problems.add(getattr(exc, "code", "missing_structure"), exc.reason,
                         exc.fix or "set roi to a structure name of the RTSTRUCT.", **loc)
            return problems
        structures.append(_resolution(row, resolved))
        series = (Path(row.image), mask_path)
        if series[0].is_dir() and series not in checked_series:  # once per (series, RTSTRUCT), not per role
            try:
                check_series_complete(mask_path, series[0])
                checked_series[series] = True
            except IncompleteSeriesError as exc:
                checked_series[series] = False
                problems.add(exc.code, exc.reason, exc.fix or "", patient_id=row.patient_id,
                             file=str(row.image_rel))
        if not checked_series.get(series, True):
            return problems
        try:
            mask = rasterise_rtstruct(mask_path, image, str(row.roi), structure=structure, aliases=aliases)
        except InputError as exc:
            problems.add(getattr(exc, "code", "missing_structure"), exc.reason,
                         exc.fix or "set roi to a structure name of the RTSTRUCT.", **loc)
            return problems
        if not sitk.GetArrayViewFromImage(mask).any():
            problems.add("empty_roi", f"structure '{resolved.structure}' (role {row.roi}) covers no voxel of "
                         f"image {row.image_rel}.", "check that the RTSTRUCT belongs to this image series.", **loc)
        return problems
    labels = cache.get(mask_path)
    if isinstance(labels, InputError):
        problems.add("unreadable_mask", labels.reason, labels.fix or "re-export the mask as NIfTI/NRRD/MHA or "
                     "RTSTRUCT.", **loc)
        return problems
    diffs = geometry_differences(labels, image)
    if diffs:
        problems.add("geometry_mismatch",
                     f"mask {row.mask_rel} and image {row.image_rel} differ: {'; '.join(diffs)}.",
                     "resample the mask onto the image grid (nearest neighbour) or fix the header.", **loc)
        return problems
    label = row.label
    if structure:
        try:
            label = label_of_name(labels, structure, mask_path)
        except InputError as exc:
            problems.add(getattr(exc, "code", "missing_structure"), exc.reason, exc.fix or "", **loc)
            return problems
        structures.append(_resolution(row, Resolved(str(row.roi), structure, HOW_LABEL_NAME)))
    else:
        structures.append(_resolution(row, Resolved(str(row.roi), str(row.roi), f"{HOW_LABEL} {label}")))
    array = sitk.GetArrayViewFromImage(labels)
    if not (array == label).any():
        present = [int(v) for v in np.unique(array) if v != 0][:10]
        problems.add("empty_roi", f"ROI '{row.roi}' (label {label}) is absent from the mask; labels present: "
                     f"{present or 'none'}.", "fix the label column or the mask.", **loc)
    return problems


def _resolution(row, resolved: Resolved) -> dict[str, object]:  # type: ignore[no-untyped-def]
    out = {"patient_id": row.patient_id, "modality": row.modality, **resolved.to_dict(), "file": str(row.mask_rel)}
    timepoint = getattr(row, "timepoint", schema.PLANNING)
    if timepoint != schema.PLANNING:  # planning rows keep the keys they always had
        out["timepoint"] = timepoint
    return out


def problems_frame(report: ValidationReport) -> pd.DataFrame:
    """The report's problems as a table (one row per problem)."""
    return pd.DataFrame([p.to_dict() for p in report.problems],
                        columns=["severity", "code", "patient_id", "file", "row", "column", "message", "fix"])
