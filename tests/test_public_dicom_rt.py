"""Real, public DICOM-RT data through validate, extract, predict, the pyfunc and handoff (issue 16, point 9).

The data ships inside two PyPI packages that ``public_data`` downloads with pip at test time and caches
(never committed; no network -> the tests FAIL naming the command and the cache folder, they never skip):

* pycerr 2.5.1's Radiomics Digital Phantom (``pat_1`` .. ``pat_4``: CT series, CERR RTSTRUCT with one ROI
  ``GTV-1`` whose RTROIInterpretedType is blank; CC BY-NC 3.0, CancerData DOI 10.17195/candat.2016.08.1),
  written here as lung patients ``PHANTOM-1`` .. ``PHANTOM-4`` with ``roi: GTV`` and no ``structure`` column:
  the role must resolve to ``GTV-1`` by its target-type name prefix (contract section 1).
* dicompyler-core 0.5.6's ``example_data`` (BSD): one CT slice of a 98-slice breast series, its RTSTRUCT, the
  RTDOSE and the RTPLAN of a 14 Gy / 7 fraction boost, written as patient ``BREAST-1`` (``site: breast``, the
  plan's regimen in patients.csv) with CT rows of role ``CTV`` (``structure: Tumor Bed``: two ROIs are of type
  CTV, so the type alone is ambiguous), ``Heart`` (exact name) and ``Lung_L`` (``Lt Lung`` through the TG-263
  alias table), and a ``DOSE`` row with the RTDOSE.

Both go into one cohort (``mixed``), as a clinic's export would: ``validate`` must exit 2 with the breast series
reported as ``incomplete_series`` (1 of the 98 images its RTSTRUCT references) and nothing against the phantom
patients; ``extract`` must compute the phantom patients and report (features.failures.csv) and skip the breast
patient's items; ``predict`` with a head-and-neck model (the session's ``bundle``, registered as
``radiogenomics-prescriber@champion``) must give every patient, lung and breast, a population fallback with
``site_not_in_training``; ``handoff`` on predict's feature table the same, with the phantom's target listed under
its own name ``GTV-1`` and its role ``GTV`` in objectives.json.

How the breast patient gets a record at all: through the cohort its CT cannot be read (1 of 98 slices), so its
imaging and its DVHs (masks on the CT grid) are unavailable and the record is a population fallback without OAR
data. Its dose distribution is still real and complete, so a second route computes the DVHs *on the dose grid*
with the product's own API (``read_image`` of the RTDOSE, ``read_mask`` of each role's structure onto that grid,
``structure_dose_features``), and sends those ``dose.*`` columns with ``clinical.site = breast`` and the plan's
regimen to the registered pyfunc (``mlflow.pyfunc.load_model(...).predict``): the gate must fall back
(site_not_in_training) and check the heart against the breast rails on that dose (an ``oar_checks`` row for the
heart that is not ``unchecked``).

Independent readings, not the product's reader:

* GTV HU statistics: the CT read with pydicom (stored values x RescaleSlope + RescaleIntercept) and the
  RTSTRUCT's CLOSED_PLANAR contours rasterised here, slice by slice, by a crossing-number (even-odd) test of the
  voxel centres plus each centre's distance to the contour edges. Tolerance, from the boundary convention only:
  a voxel whose centre is within 1e-3 voxel of an edge is in under the documented rule (centre inside *or on an
  edge*) and out under a strict-inside rule, so the product's voxel count must lie between the two readings and
  its mean, min and max within the exact range that any choice of those boundary voxels gives (measured: 11 such
  voxels in PHANTOM-1, 1 in PHANTOM-4, none elsewhere; the product matched the inclusive reading exactly).
  Extraction uses a parameter file without resampling or re-segmentation, so pyradiomics' first-order Mean,
  Minimum, Maximum and shape VoxelVolume are plain statistics of the mask's voxels.
* Heart DVH: dicompyler-core's published values, parsed from the sdist's own ``tests/test_dvhcalc.py``
  (``test_dvh_calculation``: ROI 5 = Heart, volume 440.23124999 cc, mean 0.6475329 Gy, min bin 0.03 Gy, max bin
  3.1 Gy). dicompyler-core rasterises with matplotlib's ``contains_points`` (boundary centres in or out) and
  histograms dose in 1 cGy bins (mean from the bin centres: within 0.005 Gy of the voxel mean; min/max are the
  upper edges of the lowest/highest occupied bin). The product's volume may differ from it by the boundary
  voxels of the independent reading on the dose grid (7 centres on a Heart edge: 0.131 cc; measured 440.306 vs
  440.231 cc), its mean by 0.005 Gy plus the boundary effect (measured 0.6475013 vs 0.6475329 Gy).
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from public_data import dicompyler_dvh_test_file, dicompyler_example, radiomics_phantom
from serving_factory import MODEL

from radiogenomics.cli.app import main

PHANTOMS = {f"PHANTOM-{i}": f"pat_{i}" for i in range(1, 5)}
BREAST = "BREAST-1"
#: Which contour edges count as "on the edge" (voxel units): the documented rasterisation's tolerance.
EDGE_TOL_VOXELS = 1e-3
#: dicompyler-core's test_dvh_calculation (tests/test_dvhcalc.py of the 0.5.6 sdist), ROI 5 = Heart.
HEART_ROI_NUMBER = 5
DICOMPYLER_HEART = {"volume": 440.23124999, "mean": 0.6475329, "min": 0.03, "max": 3.1}
DICOMPYLER_BIN_GY = 0.01  # its histogram bins are 1 cGy wide
#: HU statistics by pyradiomics on the mask's voxels as they are (no resampling, no re-segmentation).
PLAIN_PARAMS = """\
imageType:
  Original: {}
featureClass:
  firstorder: [Mean, Minimum, Maximum]
  shape: [VoxelVolume]
setting:
  binWidth: 25
  normalize: false
  label: 1
"""


# ---------------------------------------------------------------------------------------------- independent reading


@dataclass
class Contoured:
    """A structure rasterised by the independent reader on one grid: the voxel values and two boundary readings."""

    values: np.ndarray      # the grid's values (HU or Gy), [z, y, x]
    strict: np.ndarray      # centre strictly inside (even-odd), farther than EDGE_TOL_VOXELS from every edge
    near: np.ndarray        # centre within EDGE_TOL_VOXELS of an edge (in under the documented rule)
    voxel_mm3: float
    spacing_rel_jitter: float = 0.0  # largest relative deviation of a slice step from the mean step

    @property
    def inclusive(self) -> np.ndarray:
        return self.strict | self.near

    def count_range(self) -> tuple[int, int]:
        return int(self.strict.sum()), int(self.inclusive.sum())

    def mean_range(self) -> tuple[float, float]:
        """The lowest and highest mean over (strict voxels + any subset of the boundary voxels)."""
        base = self.values[self.strict].astype(np.float64)
        extra = np.sort(self.values[self.near].astype(np.float64))
        n, s = base.size, float(base.sum())
        means = [s / n] if n else []
        for k in range(1, extra.size + 1):
            means += [(s + extra[:k].sum()) / (n + k), (s + extra[-k:].sum()) / (n + k)]
        return min(means), max(means)

    def extreme_ranges(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((lowest, highest) possible minimum, (lowest, highest) possible maximum) over the boundary choices."""
        strict, incl = self.values[self.strict], self.values[self.inclusive]
        return (float(incl.min()), float(strict.min())), (float(strict.max()), float(incl.max()))


def _edges_parity_distance(poly: np.ndarray, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Even-odd parity of points (px, py) for the closed polygon ``poly`` (N x 2) and their distance to its edges."""
    inside = np.zeros(px.shape, dtype=bool)
    distance = np.full(px.shape, np.inf)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        crosses = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < x_at)
        ex, ey = x1 - x0, y1 - y0
        length2 = ex * ex + ey * ey
        t = np.zeros_like(px) if length2 == 0 else np.clip(((px - x0) * ex + (py - y0) * ey) / length2, 0.0, 1.0)
        distance = np.minimum(distance, np.hypot(px - (x0 + t * ex), py - (y0 + t * ey)))
    return inside, distance


def rtstruct_contours(path: Path, name: str) -> list[np.ndarray]:
    """The CLOSED_PLANAR contours (each N x 3, mm) of the ROI called ``name``, read with pydicom."""
    ds = pydicom.dcmread(path)
    numbers = [int(r.ROINumber) for r in ds.StructureSetROISequence if str(r.ROIName) == name]
    assert len(numbers) == 1, f"{path.name}: {len(numbers)} ROIs named {name!r}"
    (roi,) = [c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == numbers[0]]
    contours = []
    for contour in roi.ContourSequence:
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        contours.append(np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3))
    return contours


def rasterise(contours: list[np.ndarray], z_mm: np.ndarray, origin_xy: tuple[float, float],
              spacing_xy: tuple[float, float], shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(strict, near) masks [z, y, x] of axial contours on an axial grid (rows along +y, columns along +x).

    Each contour goes to the slice whose position is nearest (within half a slice); contours on one slice combine
    by XOR (even-odd: inner contours are holes).
    """
    nz, ny, nx = shape
    parity = np.zeros(shape, dtype=bool)
    near = np.zeros(shape, dtype=bool)
    half_step = 0.5 * float(np.median(np.diff(z_mm))) if len(z_mm) > 1 else math.inf
    for points in contours:
        z = float(points[0, 2])
        assert np.ptp(points[:, 2]) < 1e-3, "contour is not axial"
        k = int(np.argmin(np.abs(z_mm - z)))
        if abs(z_mm[k] - z) > half_step:
            continue  # a contour off the grid (none in this data)
        col = (points[:, 0] - origin_xy[0]) / spacing_xy[0]
        row = (points[:, 1] - origin_xy[1]) / spacing_xy[1]
        c0, c1 = max(int(np.floor(col.min())) - 1, 0), min(int(np.ceil(col.max())) + 2, nx)
        r0, r1 = max(int(np.floor(row.min())) - 1, 0), min(int(np.ceil(row.max())) + 2, ny)
        if c0 >= c1 or r0 >= r1:
            continue
        rr, cc = np.mgrid[r0:r1, c0:c1]
        inside, distance = _edges_parity_distance(np.column_stack([col, row]), cc.ravel().astype(np.float64),
                                                   rr.ravel().astype(np.float64))
        parity[k, r0:r1, c0:c1] ^= inside.reshape(r1 - r0, c1 - c0)
        near[k, r0:r1, c0:c1] |= (distance < EDGE_TOL_VOXELS).reshape(r1 - r0, c1 - c0)
    return parity & ~near, near


def read_ct_hu(folder: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[float, float]]:
    """(HU [z, y, x], slice z in mm, (x0, y0), (column, row) spacing) of an axial CT series, with pydicom."""
    slices = [ds for ds in (pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))) if ds.Modality == "CT"]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert np.allclose(np.asarray(slices[0].ImageOrientationPatient, float), [1, 0, 0, 0, 1, 0], atol=1e-6)
    hu = np.stack([ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                   for ds in slices])
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
    row_mm, col_mm = (float(v) for v in slices[0].PixelSpacing)
    x0, y0 = (float(v) for v in slices[0].ImagePositionPatient[:2])
    return hu, z, (x0, y0), (col_mm, row_mm)


def read_gtv_reference(patient_folder: Path) -> Contoured:
    hu, z, origin, spacing = read_ct_hu(patient_folder)
    (rtstruct,) = sorted(patient_folder.glob("DCM_RS_*.dcm"))
    strict, near = rasterise(rtstruct_contours(rtstruct, "GTV-1"), z, origin, spacing, hu.shape)
    steps = np.diff(z)
    return Contoured(values=hu, strict=strict, near=near, voxel_mm3=spacing[0] * spacing[1] * float(steps.mean()),
                     spacing_rel_jitter=float(np.abs(steps - steps.mean()).max() / steps.mean()))


def read_dose_reference(example: Path, name: str) -> Contoured:
    """A structure of the example RTSTRUCT rasterised on the RTDOSE grid (read with pydicom, in Gy)."""
    ds = pydicom.dcmread(example / "rtdose.dcm")
    assert np.allclose(np.asarray(ds.ImageOrientationPatient, float), [1, 0, 0, 0, 1, 0], atol=1e-6)
    dose = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    z = float(ds.ImagePositionPatient[2]) + np.asarray(ds.GridFrameOffsetVector, dtype=np.float64)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    origin = (float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]))
    strict, near = rasterise(rtstruct_contours(example / "rtss.dcm", name), z, origin, (col_mm, row_mm), dose.shape)
    return Contoured(values=dose, strict=strict, near=near, voxel_mm3=col_mm * row_mm * float(np.diff(z).mean()))


# ---------------------------------------------------------------------------------------------- cohort and CLI


@dataclass
class Run:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}; stdout tail: {self.out[-1500:]!r}; stderr tail: {self.err[-1500:]!r}"


def cli(*args: object) -> Run:
    """``radiogenomics ARGS`` in this process (the console entry point: exit codes as in contract section 3)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return Run(code, out.getvalue(), err.getvalue())


def plan_regimen(rtplan: Path) -> tuple[float, int]:
    """(total dose to the target in Gy, fractions) of the RTPLAN: its SITE dose reference and fraction group."""
    plan = pydicom.dcmread(rtplan)
    (site,) = [r for r in plan.DoseReferenceSequence if r.DoseReferenceStructureType == "SITE"]
    return float(site.TargetPrescriptionDose), int(plan.FractionGroupSequence[0].NumberOfFractionsPlanned)


def write_mixed_cohort(root: Path, phantom: Path, example: Path) -> None:
    """Four phantom lung patients (roi GTV, no structure column needed) and the breast example (format v1)."""
    (root / "lung").mkdir(parents=True)
    images: list[dict[str, str]] = []
    for pid, pat in PHANTOMS.items():
        shutil.copytree(phantom / pat, root / "lung" / pat)
        (rtstruct,) = sorted((root / "lung" / pat).glob("DCM_RS_*.dcm"))
        images.append({"patient_id": pid, "modality": "CT", "image": f"lung/{pat}",
                       "mask": rtstruct.relative_to(root).as_posix(), "roi": "GTV", "structure": ""})
    (root / "breast" / "ct").mkdir(parents=True)
    shutil.copy2(example / "ct.0.dcm", root / "breast" / "ct" / "ct.0.dcm")
    for name in ("rtss.dcm", "rtdose.dcm", "rtplan.dcm"):
        shutil.copy2(example / name, root / "breast" / name)
    for role, structure in (("CTV", "Tumor Bed"), ("Heart", ""), ("Lung_L", "")):
        images.append({"patient_id": BREAST, "modality": "CT", "image": "breast/ct", "mask": "breast/rtss.dcm",
                       "roi": role, "structure": structure})
    images.append({"patient_id": BREAST, "modality": "DOSE", "image": "breast/rtdose.dcm", "mask": "", "roi": "",
                   "structure": ""})
    total, n = plan_regimen(example / "rtplan.dcm")
    patients = [{"patient_id": pid, "site": "lung", "center": "cerr-phantom", "total_dose_gy": "",
                 "n_fractions": ""} for pid in PHANTOMS]
    patients.append({"patient_id": BREAST, "site": "breast", "center": "dicompyler", "total_dose_gy": f"{total:g}",
                     "n_fractions": str(n)})
    pd.DataFrame(patients).to_csv(root / "patients.csv", index=False)
    pd.DataFrame(images).to_csv(root / "images.csv", index=False)
    (root / "cohort.yaml").write_text("name: public DICOM-RT (pycerr phantom + dicompyler-core example)\n"
                                      "format_version: 1\n")


@dataclass
class Public:
    phantom: Path
    example: Path
    cohort: Path
    work: Path


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Public]:
    """The downloaded data, the mixed cohort, and a fresh feature cache for this module's CLI runs."""
    phantom, example = radiomics_phantom(), dicompyler_example()
    work = tmp_path_factory.mktemp("public-dicom-rt")
    cohort = work / "mixed"
    write_mixed_cohort(cohort, phantom, example)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADIOGENOMICS_CACHE_DIR", str(work / "feature-cache"))
        yield Public(phantom, example, cohort, work)



@pytest.fixture(scope="module")
def gtv_reference(public: Public) -> dict[str, Contoured]:
    return {pid: read_gtv_reference(public.phantom / pat) for pid, pat in PHANTOMS.items()}


@pytest.fixture(scope="module")
def validated(public: Public) -> tuple[Run, dict[str, Any]]:
    run = cli("validate", public.cohort, "--json")
    try:
        report = json.loads(run.out)
    except json.JSONDecodeError:
        report = {}
    return run, report


@pytest.fixture(scope="module")
def extracted(public: Public) -> tuple[Run, Path]:
    params = public.work / "plain_hu.yaml"
    params.write_text(PLAIN_PARAMS)
    out = public.work / "extract" / "features.parquet"
    return cli("extract", public.cohort, "--out", out, "--params", params, "--workers", 1, "--no-progress"), out


@pytest.fixture(scope="module")
def predicted(public: Public, registry: Path) -> tuple[Run, Path]:
    out = public.work / "predict" / "rx.csv"
    return cli("predict", public.cohort, "--model", MODEL, "--out", out, "--workers", 1), out


@pytest.fixture(scope="module")
def handed_off(public: Public, registry: Path, predicted: tuple[Run, Path]) -> tuple[Run, Path]:
    features = predicted[1].with_name("rx.features.parquet")
    assert features.is_file(), f"predict wrote no feature table ({predicted[0]})"
    out = public.work / "handoff"
    return cli("handoff", "--model", MODEL, "--features", features, "--out", out, "--cohort", public.cohort), out


def _leaf_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaf_strings(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _leaf_strings(value)
    elif node is not None:
        yield str(node)


def _objects_naming(node: Any, *values: str) -> list[dict[str, Any]]:
    """Every mapping in a JSON document whose leaves include all ``values`` (each exactly, as a whole string)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if set(values) <= set(_leaf_strings(node)):
            found.append(node)
        for value in node.values():
            found += _objects_naming(value, *values)
    elif isinstance(node, list):
        for value in node:
            found += _objects_naming(value, *values)
    return found


def _flags(value: Any) -> set[str]:
    return set(json.loads(value) if isinstance(value, str) else value)


# ---------------------------------------------------------------------------------------------- the data itself


def test_the_downloaded_data_is_what_these_tests_describe(public: Public) -> None:
    """The assumptions the module docstring states about the two packages' files."""
    for pat in PHANTOMS.values():
        (rtstruct,) = sorted((public.phantom / pat).glob("DCM_RS_*.dcm"))
        ds = pydicom.dcmread(rtstruct)
        assert [str(r.ROIName) for r in ds.StructureSetROISequence] == ["GTV-1"]
        assert {str(getattr(o, "RTROIInterpretedType", "") or "") for o in ds.RTROIObservationsSequence} == {""}
    rtss = pydicom.dcmread(public.example / "rtss.dcm")
    names = {int(r.ROINumber): str(r.ROIName) for r in rtss.StructureSetROISequence}
    assert names[HEART_ROI_NUMBER] == "Heart" and {"Lt Lung", "Tumor Bed"} <= set(names.values())
    kinds = {int(o.ReferencedROINumber): str(o.RTROIInterpretedType) for o in rtss.RTROIObservationsSequence}
    assert sorted(names[k] for k, v in kinds.items() if v == "CTV") == ["Borders", "Tumor Bed"]  # CTV is ambiguous
    referenced = {str(i.ReferencedSOPInstanceUID) for f in rtss.ReferencedFrameOfReferenceSequence
                  for s in f.RTReferencedStudySequence for r in s.RTReferencedSeriesSequence
                  for i in r.ContourImageSequence}
    ct = pydicom.dcmread(public.example / "ct.0.dcm", stop_before_pixels=True)
    assert len(referenced) == 98 and str(ct.SOPInstanceUID) in referenced
    assert plan_regimen(public.example / "rtplan.dcm") == (14.0, 7)


def test_dicompyler_publishes_the_heart_values_used_here() -> None:
    """The expected values are dicompyler-core's own (tests/test_dvhcalc.py, test_dvh_calculation), not ours."""
    text = dicompyler_dvh_test_file().read_text()
    body = text.split("def test_dvh_calculation(self):", 1)[1].split("\n    def ", 1)[0]
    roi = re.search(r"self\.calc_dvh\((\d+)\)", body)
    assert roi is not None and int(roi.group(1)) == HEART_ROI_NUMBER
    published = {m.group(1): float(m.group(2))
                 for m in re.finditer(r"assertAlmostEqual\(dvh\.(\w+), ([0-9.]+)\)", body)}
    assert published == {k: DICOMPYLER_HEART[k] for k in ("volume", "max", "min", "mean")}


# ---------------------------------------------------------------------------------------------- validate


def test_validate_resolves_the_phantom_gtv_role_to_gtv_1(validated: tuple[Run, dict[str, Any]]) -> None:
    """Contract section 1: ``roi: GTV`` finds ``GTV-1`` (target-type prefix), and validate reports the resolution."""
    run, report = validated
    assert report, f"validate --json printed no JSON ({run})"
    problems = report.get("problems", [])
    against = [p for p in problems if p.get("patient_id") in PHANTOMS and p.get("severity") == "error"]
    assert not against, f"the complete phantom series must validate: {against}"
    for pid in PHANTOMS:
        assert _objects_naming(report, pid, "GTV", "GTV-1"), (
            f"validate --json must report what role GTV of {pid} resolved to (GTV-1); report: {run.out[:3000]}")


def test_validate_reports_the_incomplete_breast_series_with_its_counts(validated: tuple[Run, dict[str, Any]]) -> None:
    """Contract section 1: a series missing images its RTSTRUCT references is an error naming how many of how many."""
    run, report = validated
    assert run.code == 2, f"validate must exit 2 on the 1-slice breast series ({run})"
    problems = [p for p in report.get("problems", []) if p.get("code") == "incomplete_series"]
    assert problems, f"no incomplete_series problem; problems: {report.get('problems')}"
    assert {p.get("patient_id") for p in problems} == {BREAST}
    for p in problems:
        assert p["severity"] == "error"
        assert re.search(r"\b1\b\D{1,40}\b98\b", p["message"]), f"must name 1 of 98 images: {p['message']!r}"


def test_validate_reports_the_breast_roles(validated: tuple[Run, dict[str, Any]]) -> None:
    """Roles by the structure column (CTV -> Tumor Bed), exact name (Heart) and the TG-263 table (Lung_L -> Lt Lung)."""
    run, report = validated
    for role, structure in (("CTV", "Tumor Bed"), ("Heart", "Heart"), ("Lung_L", "Lt Lung")):
        assert _objects_naming(report, BREAST, role, structure), (
            f"validate --json must report role {role} of {BREAST} resolved to {structure!r}: {run.out[:3000]}")
    assert not [p for p in report.get("problems", []) if p.get("code") in ("missing_structure", "ambiguous_structure")]


# ---------------------------------------------------------------------------------------------- extract


def test_extract_computes_the_phantoms_and_skips_the_incomplete_breast(extracted: tuple[Run, Path]) -> None:
    run, out = extracted
    assert run.code == 0, f"extract must complete for the readable patients ({run})"
    table = pd.read_parquet(out).set_index("patient_id")
    assert sorted(table.index) == sorted([*PHANTOMS, BREAST])  # one row per patient of patients.csv
    assert "ct.gtv.original_firstorder_Mean" in table.columns, "features are keyed by the role (ct.gtv.*)"
    assert not [c for c in table.columns if c.startswith("ct.gtv_1.")]
    assert table.loc[list(PHANTOMS), "ct.gtv.original_firstorder_Mean"].notna().all()
    failures = pd.read_csv(out.with_name("features.failures.csv"))
    assert set(failures["patient_id"]) == {BREAST}, f"failures: {failures.to_dict('records')}"
    ct_failures = failures[failures["modality"] == "CT"]
    assert len(ct_failures) == 3, f"the breast's three CT roles must each be reported: {failures.to_dict('records')}"
    for reason in ct_failures["reason"]:
        assert re.search(r"\b1\b\D{1,40}\b98\b", reason), f"the reason must name 1 of 98 images: {reason!r}"
    breast = table.loc[BREAST]
    assert breast[[c for c in table.columns if c.startswith("ct.")]].isna().all()
    assert breast["available.ct"] == 0
    assert BREAST in run.out + run.err, f"extract must name the skipped patient ({run})"


def test_gtv_hu_statistics_match_an_independent_reading(extracted: tuple[Run, Path],
                                                        gtv_reference: dict[str, Contoured]) -> None:
    run, out = extracted
    assert run.code == 0, str(run)
    table = pd.read_parquet(out).set_index("patient_id")
    for pid, ref in gtv_reference.items():
        row = table.loc[pid]
        lo, hi = ref.count_range()
        volume = float(row["ct.gtv.original_shape_VoxelVolume"])
        rel = ref.spacing_rel_jitter + 1e-9  # the phantom's slice positions jitter by up to 1e-5 of a step
        assert lo * ref.voxel_mm3 * (1 - rel) <= volume <= hi * ref.voxel_mm3 * (1 + rel), (
            f"{pid}: GTV {volume / ref.voxel_mm3:.2f} voxels, independent reading {lo}..{hi}")
        mean_lo, mean_hi = ref.mean_range()
        mean = float(row["ct.gtv.original_firstorder_Mean"])
        assert mean_lo - 1e-9 * abs(mean_lo) - 1e-9 <= mean <= mean_hi + 1e-9 * abs(mean_hi) + 1e-9, (
            f"{pid}: GTV mean {mean} HU, independent reading {mean_lo}..{mean_hi}")
        (min_lo, min_hi), (max_lo, max_hi) = ref.extreme_ranges()
        assert min_lo <= float(row["ct.gtv.original_firstorder_Minimum"]) <= min_hi, pid
        assert max_lo <= float(row["ct.gtv.original_firstorder_Maximum"]) <= max_hi, pid


# ---------------------------------------------------------------------------------------------- the heart DVH


def test_heart_dvh_on_the_dose_grid_matches_dicompyler(public: Public) -> None:
    from radiogenomics.cohort import read_image, read_mask
    from radiogenomics.radiobiology import compute_dvh

    dose = read_image(public.example / "rtdose.dcm")
    dvh = compute_dvh(dose, read_mask(public.example / "rtss.dcm", dose, "Heart"), structure="Heart")
    ref = read_dose_reference(public.example, "Heart")
    voxel_cc = ref.voxel_mm3 / 1000.0
    lo, hi = ref.count_range()
    assert lo <= dvh.n_voxels <= hi, f"heart: {dvh.n_voxels} dose voxels, independent reading {lo}..{hi}"
    # dicompyler-core's matplotlib rasterisation falls between the same two readings
    assert lo <= round(DICOMPYLER_HEART["volume"] / voxel_cc) <= hi
    volume = float(np.sum(dvh.volume_cc))
    assert abs(volume - DICOMPYLER_HEART["volume"]) <= (hi - lo) * voxel_cc + 1e-6, (
        f"heart volume {volume} cc vs dicompyler-core {DICOMPYLER_HEART['volume']} cc")
    mean_lo, mean_hi = ref.mean_range()
    assert mean_lo - 1e-9 <= dvh.mean_dose_gy <= mean_hi + 1e-9
    assert abs(dvh.mean_dose_gy - DICOMPYLER_HEART["mean"]) <= DICOMPYLER_BIN_GY / 2 + (mean_hi - mean_lo), (
        f"heart mean {dvh.mean_dose_gy} Gy vs dicompyler-core {DICOMPYLER_HEART['mean']} Gy")
    # dicompyler-core reports the upper edge of the highest / lowest occupied 1 cGy bin
    for ours, theirs in ((dvh.max_dose_gy, DICOMPYLER_HEART["max"]), (dvh.min_dose_gy, DICOMPYLER_HEART["min"])):
        assert theirs - DICOMPYLER_BIN_GY < ours <= theirs + 1e-9, (ours, theirs)


def test_breast_record_from_its_dose_grid_through_the_pyfunc(public: Public, registry: Path) -> None:
    """The breast patient's real dose, on the dose grid, to the registered pyfunc: a fallback that checks the heart."""
    import mlflow

    from radiogenomics.cohort import read_image, read_mask
    from radiogenomics.features.dosimetric import structure_dose_features

    dose = read_image(public.example / "rtdose.dcm")
    rtss = public.example / "rtss.dcm"
    masks = {"Heart": read_mask(rtss, dose, "Heart"), "Lung_L": read_mask(rtss, dose, "Lung_L"),
             "CTV": read_mask(rtss, dose, "Tumor Bed")}
    features = {f"dose.{k}": v for k, v in structure_dose_features(dose, masks).items()}
    assert features["dose.heart.mean_gy"] == pytest.approx(DICOMPYLER_HEART["mean"], abs=DICOMPYLER_BIN_GY)
    total, n = plan_regimen(public.example / "rtplan.dcm")
    row = pd.DataFrame([{"patient_id": BREAST, "clinical.site": "breast", "clinical.total_dose_gy": total,
                         "clinical.n_fractions": n, **features}])
    records = mlflow.pyfunc.load_model(MODEL).predict(row)
    records = records.to_dict(orient="records") if hasattr(records, "to_dict") else list(records)
    (record,) = records
    assert {"site_not_in_training", "population_fallback"} <= _flags(record["flags"]), record["flags"]
    assert record["site"] == "breast" and record["rsi_source"] == "population"
    checks = record["oar_checks"]
    checks = json.loads(checks) if isinstance(checks, str) else checks
    heart = [c for c in checks if "heart" in str(c.get("structure", "")).lower() and c.get("metric") == "mean_gy"]
    assert len(heart) == 1, f"the breast rails' heart mean-dose limit must be checked on the given dose: {checks}"
    assert heart[0]["status"] in ("ok", "limited", "exceeded"), heart
    # the patient's dose distribution (its 14 Gy plan) scaled linearly to the recommended total dose
    expected = features["dose.heart.mean_gy"] * record["recommended_total_dose_gy"] / total
    assert float(heart[0]["value_gy"]) == pytest.approx(expected, rel=1e-6), (heart, record)


# ---------------------------------------------------------------------------------------------- predict, handoff


def test_predict_falls_back_for_lung_and_breast_with_a_head_and_neck_model(predicted: tuple[Run, Path]) -> None:
    run, out = predicted
    assert run.code == 0, str(run)
    frame = pd.read_csv(out).set_index("patient_id")
    assert sorted(frame.index) == sorted([*PHANTOMS, BREAST]), f"{run}; failures: {out.with_name('rx.failures.csv')}"
    for pid, record in frame.iterrows():
        site = "breast" if pid == BREAST else "lung"
        assert {"site_not_in_training", "population_fallback"} <= _flags(record["flags"]), (pid, record["flags"])
        assert record["site"] == site and record["rsi_source"] == "population", pid
        assert math.isfinite(record["recommended_total_dose_gy"]), pid
    assert BREAST in run.err, f"predict must report the breast patient's failed extraction ({run})"


def test_handoff_falls_back_and_names_the_gtv_as_in_the_rtstruct(handed_off: tuple[Run, Path]) -> None:
    run, out = handed_off
    assert run.code == 0, str(run)
    for pid in [*PHANTOMS, BREAST]:
        record = json.loads((out / pid / "prescription.json").read_text())
        assert {"site_not_in_training", "population_fallback"} <= set(record["flags"]), (pid, record["flags"])
        objectives = json.loads((out / pid / "objectives.json").read_text())
        assert objectives["format"] == "radiogenomics-objectives/1"
        assert objectives["input_sha256"] == record["input_sha256"]
        if pid in PHANTOMS:
            targets = [s for s in objectives["structures"] if s["role"] == "target"]
            assert [(s["name"], s.get("tg263_name")) for s in targets] == [("GTV-1", "GTV")], (pid, targets)
        else:
            names = {s["name"]: s.get("tg263_name") for s in objectives["structures"]}
            assert set(names) <= {"Tumor Bed", "Heart", "Lt Lung"}, names  # the patient's own names, if listed
            assert all(names[k] == v for k, v in (("Tumor Bed", "CTV"), ("Heart", "Heart"), ("Lt Lung", "Lung_L"))
                       if k in names), names
