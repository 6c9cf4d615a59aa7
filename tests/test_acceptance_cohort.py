"""Acceptance tests for the cohort folder format (contract §1) and `radiogenomics validate` (contract §3).

Written from the contract alone: every cohort here is built by hand (SimpleITK, pydicom, plain CSV text),
the way a user or another tool would write one, independently of the project's synthetic generator.
Valid cohorts must validate (exit 0) and load with the right types; each broken cohort must be rejected
with exit 2, a one-line reason on stderr, and the problem named with its patient ID and file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radiogenomics.cli.app import main as cli_main
from radiogenomics.cohort import load_cohort, validate_cohort

RSI_GENES = ["AR", "JUN", "STAT1", "PRKCB", "RELA", "ABL1", "SUMO1", "CDK1", "HDAC1", "IRF1"]
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
CLI = Path(sys.executable).with_name("radiogenomics")

# A deliberately anisotropic, non-cubic grid so axis swaps show up.
SIZE = (20, 16, 6)  # x, y, z
SPACING = (0.8, 1.2, 2.5)
ORIGIN = (-10.0, -8.5, 30.0)


# --------------------------------------------------------------------------------------------------
# Writers (hand-made, independent of the project's generator)
# --------------------------------------------------------------------------------------------------

def image(array_zyx: np.ndarray, spacing=SPACING, origin=ORIGIN) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def ct_array(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-200, 200, size=SIZE[::-1]).astype(np.int16)


def box_mask(z: slice, y: slice, x: slice, value: int = 1, dtype=np.uint8) -> np.ndarray:
    arr = np.zeros(SIZE[::-1], dtype=dtype)
    arr[z, y, x] = value
    return arr


def write(path: Path, img: sitk.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def write_text(path: Path, text: str, *, crlf: bool = False, bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if crlf:
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)


def _file_dataset(sop_class: str, modality: str, patient_id: str, study: str, series: str,
                  frame: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = "Anon^" + patient_id
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = frame
    ds.StudyDate = ds.SeriesDate = "20240102"
    ds.StudyTime = ds.SeriesTime = "101500"
    return ds


def write_hand_ct_series(folder: Path, hu_zyx: np.ndarray, patient_id: str) -> dict[str, str]:
    """A CT series as a scanner would write it: unsigned 12-bit storage with RescaleIntercept -1024,
    files named without extension and in reverse slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    stored = (hu_zyx.astype(np.int32) + 1024).astype(np.uint16)
    nz = hu_zyx.shape[0]
    for k in range(nz):
        ds = _file_dataset(CT_STORAGE, "CT", patient_id, uids["study"], uids["series"], uids["frame"])
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = SPACING[2]
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = hu_zyx.shape[1], hu_zyx.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"IM{nz - k:05d}", enforce_file_format=True)
    return uids


def phys(ix: float, iy: float, k: int) -> list[float]:
    return [ORIGIN[0] + ix * SPACING[0], ORIGIN[1] + iy * SPACING[1], ORIGIN[2] + k * SPACING[2]]


def square_contour(x0: float, x1: float, y0: float, y1: float, k: int) -> list[float]:
    pts = [phys(x0, y0, k), phys(x1, y0, k), phys(x1, y1, k), phys(x0, y1, k)]
    return [round(v, 4) for p in pts for v in p]


def write_hand_rtstruct(path: Path, uids: dict[str, str], patient_id: str,
                        structures: dict[str, list[list[float]]]) -> None:
    """A minimal RTSTRUCT: each structure a list of CLOSED_PLANAR contours (flat x,y,z lists, mm).
    A structure with an empty list has no ContourSequence at all (as TPSs write empty structures)."""
    ds = _file_dataset(RTSTRUCT_STORAGE, "RTSTRUCT", patient_id, uids["study"], generate_uid(), uids["frame"])
    ds.StructureSetLabel = "acceptance"
    ds.StructureSetDate, ds.StructureSetTime = "20240102", "101500"
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = uids["frame"]
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref_frame])
    rois, contours_seq, observations = [], [], []
    for number, (name, contours) in enumerate(structures.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = uids["frame"]
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        if contours:
            items = []
            for data in contours:
                c = Dataset()
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(data) // 3
                c.ContourData = data
                items.append(c)
            rc.ContourSequence = Sequence(items)
        contours_seq.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "GTV" if name.upper().startswith("GTV") else "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours_seq)
    ds.RTROIObservationsSequence = Sequence(observations)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_hand_rtdose(path: Path, dose_zyx: np.ndarray, patient_id: str, uids: dict[str, str], *,
                      absolute_offsets: bool = False, origin=ORIGIN, spacing=SPACING,
                      units: str = "GY") -> float:
    """An RTDOSE as a TPS writes one: uint32 + DoseGridScaling, GridFrameOffsetVector either relative
    (first element 0, 'type A') or absolute z positions ('type B', allowed for axial HFS orientation)."""
    ds = _file_dataset(RTDOSE_STORAGE, "RTDOSE", patient_id, uids["study"], generate_uid(), uids["frame"])
    nz, ny, nx = dose_zyx.shape
    scaling = float(dose_zyx.max()) / 60000.0
    stored = np.round(dose_zyx / scaling).astype(np.uint32)
    ds.ImagePositionPatient = list(origin)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing[1], spacing[0]]
    z = [origin[2] + k * spacing[2] for k in range(nz)]
    ds.GridFrameOffsetVector = z if absolute_offsets else [k * spacing[2] for k in range(nz)]
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    ds.NumberOfFrames = nz
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = units
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = f"{scaling:.10g}"[:16]
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return float(ds.DoseGridScaling)


def dose_array() -> np.ndarray:
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in SIZE[::-1]), indexing="ij")
    return (70.0 * np.exp(-((xx - 8) ** 2 + (yy - 7) ** 2) / 60.0) + 0.5 * zz).astype(np.float32)


def expression_row(pid: str, rng: np.random.Generator, extras: dict[str, str] | None = None) -> dict[str, str]:
    row = {"patient_id": pid}
    row.update({g: f"{v:.4f}" for g, v in zip(RSI_GENES, rng.normal(8, 2, len(RSI_GENES)), strict=True)})
    row.update(extras or {})
    return row


# --------------------------------------------------------------------------------------------------
# Cohorts
# --------------------------------------------------------------------------------------------------

GTV_LABEL_BOX = (slice(2, 5), slice(4, 9), slice(5, 11))      # label 2 in the label map: 3*5*6 = 90 voxels
PAROTID_LABEL_BOX = (slice(1, 3), slice(10, 14), slice(13, 18))  # label 3: 2*4*5 = 40 voxels


def build_rich_cohort(root: Path) -> dict[str, object]:
    """Every format and quirk the contract allows, in one cohort. Returns expected facts for the checks."""
    root.mkdir(parents=True)
    write_text(root / "cohort.yaml",
               "name: acceptance-rich\ndescription: Hand-written cohort, Zürich & Leuven\nformat_version: 1\n")

    # Patient 007: NIfTI CT + label map (labels 2 and 3, no label 1), NRRD PET + binary mask, NIfTI dose.
    write(root / "ct" / "007_ct.nii.gz", image(ct_array(1)))
    labels = box_mask(*GTV_LABEL_BOX, value=2) + box_mask(*PAROTID_LABEL_BOX, value=3)
    write(root / "masks" / "007_labels.nii.gz", image(labels))
    write(root / "pet" / "007_pet.nrrd", image(np.abs(ct_array(2)).astype(np.float32) / 40.0))
    write(root / "pet" / "007_gtv.nrrd", image(box_mask(*GTV_LABEL_BOX)))
    write(root / "dose" / "007_dose.nii.gz", image(dose_array()))

    # Patient 010: scanner-style DICOM CT series + hand-written RTSTRUCT + hand-written RTDOSE.
    uids = write_hand_ct_series(root / "dicom" / "010" / "CT", ct_array(3), "010")
    # Contours a quarter voxel outside the voxel centres they enclose (no centre lies near an edge).
    gtv = [square_contour(3.75, 9.25, 2.75, 7.25, k) for k in (1, 2, 3)]      # 6*5*3 = 90 voxel centres
    parotid = [square_contour(12.75, 16.25, 9.75, 12.25, k) for k in (2, 3)]  # 4*3*2 = 24 voxel centres
    write_hand_rtstruct(root / "dicom" / "010" / "RS.010.dcm", uids, "010",
                        {"GTV": gtv, "Parotid_L": parotid})
    # A NIfTI mask exported (e.g. from 3D Slicer) on the DICOM series' grid: float32 header round-off only.
    write(root / "masks" / "010_gtv_from_slicer.nii.gz", image(box_mask(*GTV_LABEL_BOX)))
    dose_scaling = write_hand_rtdose(root / "dicom" / "010" / "RD.010.dcm", dose_array(), "010", uids)

    # Patient HN-3: MetaImage MR + MetaImage mask stored as float 0.0/1.0.
    write(root / "mr" / "HN-3_t2.mha", image(ct_array(4).astype(np.float32) + 500))
    write(root / "mr" / "HN-3_gtv.mha", image(box_mask(*GTV_LABEL_BOX, dtype=np.float32)))

    # Patient A1: the project's own DICOM writers (as the brief allows) - CT series, RTSTRUCT and RTDOSE.
    from radiogenomics.cohort.dicom import write_ct_series
    from radiogenomics.cohort.rtstruct import write_rtstruct
    from radiogenomics.radiobiology import write_rtdose

    a1_ct = image(ct_array(5))
    a1_uids = write_ct_series(a1_ct, root / "a1" / "ct", patient_id="A1")
    a1_gtv = image(box_mask(*GTV_LABEL_BOX))
    write_rtstruct({"GTV": a1_gtv}, root / "a1" / "ct", root / "a1" / "rtstruct.dcm")
    write_rtdose(image(dose_array().astype(np.float64)), root / "a1" / "rtdose.dcm", patient_id="A1",
                 frame_of_reference_uid=a1_uids["frame"], study_instance_uid=a1_uids["study"])

    write_text(root / "patients.csv", (
        "patient_id,site,center,age_years,sex,hpv,t_stage,total_dose_gy,n_fractions,lc_months,lc_event,"
        "tox_xerostomia,tox_dysphagia,smoking_pack_years,notes\n"
        '007,head_neck,"Centre A, Leuven",61.5,M,pos,T2,70,35,24.3,0,2,,20,"said ""fine"" at FU"\n'
        "010,head_neck,B,,F,neg,T3,66.0,33,12,1,,1,,\n"
        '"HN-3",lung,B,70,U,unknown,T1b,60,8,,,,0,,\n'
        "A1,other,,,,,,,,,,,,,\n"
    ), crlf=True, bom=True)
    write_text(root / "images.csv", (
        "patient_id,modality,image,mask,roi,label\n"
        "007,CT,ct/007_ct.nii.gz,masks/007_labels.nii.gz,GTV,2\n"
        "007,CT,ct/007_ct.nii.gz,masks/007_labels.nii.gz,parotid_l,3\n"
        "007,PET_FDG,pet/007_pet.nrrd,pet/007_gtv.nrrd,GTV,\n"
        "007,DOSE,dose/007_dose.nii.gz,,,\n"
        "010,CT,dicom/010/CT,dicom/010/RS.010.dcm,GTV,\n"
        "010,CT,dicom/010/CT,dicom/010/RS.010.dcm,Parotid_L,\n"
        "010,DOSE,dicom/010/RD.010.dcm,,,\n"
        '"HN-3",MR_T2,"mr/HN-3_t2.mha","mr/HN-3_gtv.mha",GTV,\n'
        "010,MR_T1,dicom/010/CT,masks/010_gtv_from_slicer.nii.gz,GTV,\n"
        "A1,CT,a1/ct,a1/rtstruct.dcm,GTV,1\n"
        "A1,DOSE,a1/rtdose.dcm,,,\n"
    ), crlf=True, bom=True)
    rng = np.random.default_rng(11)
    rows = [
        expression_row("007", rng, {"TP53": "7.1", "SEPT9": "", "MARCH1": "3.3"}),
        expression_row("010", rng, {"TP53": "", "SEPT9": "5.5", "MARCH1": ""}),
        expression_row("HN-3", rng, {"TP53": "6.0", "SEPT9": "4.4", "MARCH1": "2.0"}),
    ]
    # Extra genes before, between and after the RSI genes; A1 has no expression row.
    columns = ["patient_id", "TP53", *RSI_GENES[:5], "SEPT9", *RSI_GENES[5:], "MARCH1"]
    write_text(root / "expression.csv", pd.DataFrame(rows)[columns].to_csv(index=False, quoting=1),
               crlf=True, bom=True)  # every field quoted, as Excel/R sometimes write
    write_text(root / "dvh.csv", (
        "patient_id,structure,dose_gy,volume_cc\n"
        "007,parotid_l,5.05,2.0\n007,parotid_l,25.05,10.5\n007,parotid_l,45.05,3.25\n"
        "010,spinal_cord,0.05,1.0\n010,spinal_cord,38.95,0.5\n"
    ), crlf=True)
    return {"dose_scaling": dose_scaling, "expression": pd.DataFrame(rows)[columns]}


def build_minimal_cohort(root: Path) -> None:
    """Only the required table with only the required columns; no cohort.yaml; LF endings."""
    write_text(root / "patients.csv", "patient_id,site\n0001,breast\n0002,prostate\n00003,other\n")


def build_reordered_cohort(root: Path) -> None:
    """images.csv with its columns in another order and no label column; an uncompressed .nii label map in
    uint16; a binary mask in a label map with other labels present; whitespace after commas."""
    write(root / "img" / "p1.nii", image(ct_array(7)))
    write(root / "img" / "p1_mask.nii", image(box_mask(*GTV_LABEL_BOX, dtype=np.uint16)))
    write_text(root / "patients.csv", "patient_id, site, total_dose_gy, n_fractions\np1, head_neck, 70, 35\n"
                                      "p2, head_neck, 0, \n")
    write_text(root / "images.csv", "roi,mask,image,modality,patient_id\nGTV,img/p1_mask.nii,img/p1.nii,CT,p1\n")


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("acc") / "rich cohort"  # a space in the path, as on real desktops
    facts = build_rich_cohort(root)
    return root, facts


def base_cohort(root: Path) -> Path:
    """A small valid cohort every broken case starts from: two patients, NIfTI CT + label map, expression,
    dvh, a dose grid."""
    write(root / "images" / "P01_ct.nii.gz", image(ct_array(1)))
    write(root / "images" / "P01_labels.nii.gz", image(box_mask(*GTV_LABEL_BOX, value=1)
                                                       + box_mask(*PAROTID_LABEL_BOX, value=2)))
    write(root / "images" / "P01_dose.nii.gz", image(dose_array()))
    write(root / "images" / "P02_ct.nii.gz", image(ct_array(2)))
    write(root / "images" / "P02_gtv.nii.gz", image(box_mask(*GTV_LABEL_BOX)))
    write_text(root / "patients.csv", (
        "patient_id,site,center,age_years,sex,hpv,t_stage,total_dose_gy,n_fractions,lc_months,lc_event,"
        "tox_xerostomia\n"
        "P01,head_neck,A,60,M,pos,T2,70,35,20,0,1\n"
        "P02,head_neck,B,55,F,neg,T3,66,33,10,1,\n"
    ))
    write_text(root / "images.csv", (
        "patient_id,modality,image,mask,roi,label\n"
        "P01,CT,images/P01_ct.nii.gz,images/P01_labels.nii.gz,GTV,1\n"
        "P01,CT,images/P01_ct.nii.gz,images/P01_labels.nii.gz,parotid_l,2\n"
        "P01,DOSE,images/P01_dose.nii.gz,,,\n"
        "P02,CT,images/P02_ct.nii.gz,images/P02_gtv.nii.gz,GTV,\n"
    ))
    rng = np.random.default_rng(3)
    pd.DataFrame([expression_row("P01", rng, {"TP53": "5"}), expression_row("P02", rng, {"TP53": "6"})]).to_csv(
        root / "expression.csv", index=False)
    write_text(root / "dvh.csv", "patient_id,structure,dose_gy,volume_cc\nP01,parotid_l,25.05,4.0\n"
                                 "P02,parotid_l,30.05,3.0\n")
    return root


@pytest.fixture(scope="module")
def base_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return base_cohort(tmp_path_factory.mktemp("base") / "cohort")


@pytest.fixture
def base(base_template: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(base_template, dst)
    return dst


# --------------------------------------------------------------------------------------------------
# Running the CLI
# --------------------------------------------------------------------------------------------------

def run_cli(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The console-script entry point, in process (same code path as the installed script)."""
    capfd.readouterr()
    code = cli_main(args)
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def validate_json(root: Path, capfd: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code, out, _ = run_cli(["validate", str(root), "--json"], capfd)
    return code, json.loads(out)


def reason_lines(err: str) -> list[str]:
    """Non-blank stderr lines, minus the progress bar (its presence is tested on its own, see
    test_stderr_is_exactly_one_line)."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("validating images")]


def problem_text(problem: dict[str, object]) -> str:
    return json.dumps(problem)


def assert_rejected(root: Path, capfd: pytest.CaptureFixture[str], *, patient: str | None, file: str,
                    words: tuple[str, ...] = ()) -> dict[str, object]:
    """Exit 2, exactly one line on stderr naming the problem; the JSON report names the patient and file."""
    code, out, err = run_cli(["validate", str(root)], capfd)
    assert code == 2, f"exit {code}, expected 2; stdout:\n{out}\nstderr:\n{err}"
    lines = reason_lines(err)
    assert len(lines) == 1, f"stderr must hold one reason line, got {len(lines)}:\n{err}"
    assert len(lines[0]) > 20
    code_json, report = validate_json(root, capfd)
    assert code_json == 2
    assert report["ok"] is False
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors, report
    matching = [p for p in errors
                if (patient is None or p.get("patient_id") == patient)
                and file in problem_text(p)
                and all(w.lower() in problem_text(p).lower() for w in words)]
    assert matching, f"no error names patient={patient!r}, file={file!r}, words={words}: {errors}"
    return matching[0]


# --------------------------------------------------------------------------------------------------
# Valid cohorts
# --------------------------------------------------------------------------------------------------

def test_rich_cohort_validates_exit_0(rich, capfd):
    root, _ = rich
    code, out, err = run_cli(["validate", str(root)], capfd)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    code, report = validate_json(root, capfd)
    assert code == 0
    assert report["ok"] is True, report["problems"]
    assert [p for p in report["problems"] if p["severity"] == "error"] == []


def test_rich_cohort_validates_via_installed_script(rich):
    root, _ = rich
    proc = subprocess.run([str(CLI), "validate", str(root), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True


def test_rich_cohort_python_validate_ok(rich):
    root, _ = rich
    report = validate_cohort(root)
    assert report.ok, [p.one_line() for p in report.errors]


def test_rich_cohort_patients_types(rich):
    root, _ = rich
    cohort = load_cohort(root)
    p = cohort.patients.set_index("patient_id")
    assert list(cohort.patient_ids) == ["007", "010", "HN-3", "A1"]  # leading zeros kept, BOM stripped
    assert p.loc["007", "site"] == "head_neck"
    assert p.loc["007", "center"] == "Centre A, Leuven"  # quoted comma
    assert p.loc["007", "notes"] == 'said "fine" at FU'  # doubled quotes
    for col in ("age_years", "total_dose_gy", "lc_months"):
        assert pd.api.types.is_float_dtype(p[col]), col
    assert p.loc["007", "age_years"] == pytest.approx(61.5)
    assert pd.isna(p.loc["010", "age_years"])
    assert p.loc["010", "total_dose_gy"] == pytest.approx(66.0)
    for col in ("n_fractions", "lc_event", "tox_xerostomia", "tox_dysphagia"):
        assert pd.api.types.is_integer_dtype(p[col]), (col, p[col].dtype)
    assert int(p.loc["007", "n_fractions"]) == 35
    assert int(p.loc["010", "lc_event"]) == 1
    assert pd.isna(p.loc["010", "tox_xerostomia"])  # blank = not assessed, not 0
    assert pd.isna(p.loc["A1", "tox_dysphagia"])
    assert int(p.loc["007", "tox_xerostomia"]) == 2
    # Unknown extra columns are kept as clinical covariates.
    assert "smoking_pack_years" in cohort.patients.columns
    assert "notes" in cohort.patients.columns
    # Blank = missing for strings too.
    assert pd.isna(p.loc["A1", "sex"]) and pd.isna(p.loc["A1", "center"])
    assert cohort.meta.get("name") == "acceptance-rich"


def test_rich_cohort_expression_types(rich):
    root, facts = rich
    cohort = load_cohort(root)
    expr = cohort.expression
    assert expr is not None
    if "patient_id" in expr.columns:
        expr = expr.set_index("patient_id")
    assert sorted(map(str, expr.index)) == ["007", "010", "HN-3"]
    for gene in [*RSI_GENES, "TP53", "SEPT9", "MARCH1"]:
        assert gene in expr.columns, gene  # gene symbols not mangled (SEPT9/MARCH1 are Excel-date victims)
        assert pd.api.types.is_float_dtype(expr[gene]), gene
    written = facts["expression"].set_index("patient_id")
    assert expr.loc["010", "ABL1"] == pytest.approx(float(written.loc["010", "ABL1"]))
    assert pd.isna(expr.loc["007", "SEPT9"])
    assert pd.isna(expr.loc["010", "TP53"])


def test_rich_cohort_images_and_masks_read(rich):
    root, facts = rich
    cohort = load_cohort(root)
    rows = cohort.images
    assert len(rows) == 11
    got = {}
    for _, row in rows.iterrows():
        img = cohort.read_image(row)
        assert img.GetDimension() == 3
        if row["modality"] == "DOSE":
            arr = sitk.GetArrayFromImage(img)
            assert arr.shape == SIZE[::-1], row["image"]
            np.testing.assert_allclose(arr, dose_array(), atol=2 * 70 / 60000.0 + 1e-4, err_msg=str(row["image"]))
            assert img.GetSpacing() == pytest.approx(SPACING, abs=1e-4)
            assert img.GetOrigin() == pytest.approx(ORIGIN, abs=1e-3)
            continue
        assert img.GetSize() == SIZE, row["image"]
        assert img.GetSpacing() == pytest.approx(SPACING, abs=1e-4)
        assert img.GetOrigin() == pytest.approx(ORIGIN, abs=1e-3)
        mask = cohort.read_mask(row, img)
        key = (str(row["patient_id"]), row["modality"], row["roi"])
        got[key] = int(sitk.GetArrayFromImage(mask).astype(bool).sum())
    assert got[("007", "CT", "GTV")] == 90
    assert got[("007", "CT", "parotid_l")] == 40
    assert got[("007", "PET_FDG", "GTV")] == 90
    assert got[("HN-3", "MR_T2", "GTV")] == 90
    # Hand-written RTSTRUCT: contours a quarter voxel outside the voxel centres they enclose.
    assert got[("010", "CT", "GTV")] == 90
    assert got[("010", "CT", "Parotid_L")] == 24
    assert got[("010", "MR_T1", "GTV")] == 90
    # The project's own RTSTRUCT writer round trip (contours a quarter voxel outside the boundary centres): exact.
    assert got[("A1", "CT", "GTV")] == 90


def test_rich_cohort_dicom_ct_values_in_hu(rich):
    root, _ = rich
    cohort = load_cohort(root)
    row = cohort.image_rows("010", "CT").iloc[0]
    arr = sitk.GetArrayFromImage(cohort.read_image(row))
    np.testing.assert_array_equal(arr.astype(np.int32), ct_array(3).astype(np.int32))


def test_minimal_cohort_only_patients(tmp_path, capfd):
    root = tmp_path / "minimal"
    build_minimal_cohort(root)
    code, out, err = run_cli(["validate", str(root)], capfd)
    assert code == 0, err
    cohort = load_cohort(root)
    assert cohort.patient_ids == ["0001", "0002", "00003"]
    assert cohort.expression is None


def test_reordered_columns_and_whitespace(tmp_path, capfd):
    root = tmp_path / "reordered"
    build_reordered_cohort(root)
    code, out, err = run_cli(["validate", str(root)], capfd)
    assert code == 0, out + err
    cohort = load_cohort(root)
    row = cohort.images.iloc[0]
    assert int(row["label"]) == 1
    img = cohort.read_image(row)
    assert int(sitk.GetArrayFromImage(cohort.read_mask(row, img)).sum()) == 90


def test_cohort_yaml_absent_or_present_with_bom(tmp_path, capfd):
    root = tmp_path / "c"
    build_minimal_cohort(root)
    write_text(root / "cohort.yaml", "name: x\ndescription: y\nformat_version: 1\n", crlf=True, bom=True)
    code, _, err = run_cli(["validate", str(root)], capfd)
    assert code == 0, err
    assert load_cohort(root).meta.get("format_version") == 1


def test_rich_cohort_validate_json_is_machine_readable(rich, capfd):
    root, _ = rich
    code, out, _ = run_cli(["validate", str(root), "--json"], capfd)
    assert code == 0
    report = json.loads(out)  # stdout is pure JSON (no progress bar, no table)
    assert report["ok"] is True


def test_hand_rtdose_with_absolute_grid_frame_offsets(tmp_path):
    """DICOM PS3.3 C.8.8.3.2: GridFrameOffsetVector may hold absolute z positions (first element = z of
    ImagePositionPatient, not 0) for the axial orientation. The grid must land at the same place as with
    relative offsets."""
    from radiogenomics.cohort import read_image

    uids = {"study": generate_uid(), "frame": generate_uid()}
    rel = tmp_path / "rel.dcm"
    absolute = tmp_path / "abs.dcm"
    write_hand_rtdose(rel, dose_array(), "X", uids)
    write_hand_rtdose(absolute, dose_array(), "X", uids, absolute_offsets=True)
    a, b = read_image(rel), read_image(absolute)
    assert a.GetOrigin() == pytest.approx(ORIGIN, abs=1e-3)
    assert b.GetOrigin() == pytest.approx(ORIGIN, abs=1e-3), "absolute GridFrameOffsetVector read as relative"


# --------------------------------------------------------------------------------------------------
# Broken cohorts: one problem each
# --------------------------------------------------------------------------------------------------

def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1))


def test_base_cohort_is_valid(base, capfd):
    code, out, err = run_cli(["validate", str(base)], capfd)
    assert code == 0, out + err


def test_missing_image_file(base, capfd):
    (base / "images" / "P02_ct.nii.gz").unlink()
    assert_rejected(base, capfd, patient="P02", file="P02_ct.nii.gz")


def test_missing_mask_file(base, capfd):
    (base / "images" / "P02_gtv.nii.gz").unlink()
    assert_rejected(base, capfd, patient="P02", file="P02_gtv.nii.gz")


def test_missing_dose_file(base, capfd):
    (base / "images" / "P01_dose.nii.gz").unlink()
    assert_rejected(base, capfd, patient="P01", file="P01_dose.nii.gz")


def test_missing_patients_csv(base, capfd):
    (base / "patients.csv").unlink()
    assert_rejected(base, capfd, patient=None, file="patients.csv")


def test_cohort_folder_missing(tmp_path, capfd):
    code, _, err = run_cli(["validate", str(tmp_path / "nope")], capfd)
    assert code == 2
    assert len(reason_lines(err)) == 1, err
    assert "nope" in err


@pytest.mark.parametrize("case", ["no_folder", "bad_dose"])
def test_stderr_is_exactly_one_line(base, case):
    target = base
    if case == "no_folder":
        target = base / "does-not-exist"
    else:
        edit(base / "patients.csv", "T3,66,33", "T3,-66,33")
    proc = subprocess.run([str(CLI), "validate", str(target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_unknown_patient_in_images(base, capfd):
    with open(base / "images.csv", "a") as fh:
        fh.write("P99,CT,images/P02_ct.nii.gz,images/P02_gtv.nii.gz,GTV,\n")
    assert_rejected(base, capfd, patient="P99", file="images.csv")


def test_unknown_patient_in_expression(base, capfd):
    text = (base / "expression.csv").read_text().splitlines()
    text.append("P77" + text[-1][3:])
    (base / "expression.csv").write_text("\n".join(text) + "\n")
    assert_rejected(base, capfd, patient="P77", file="expression.csv")


def test_unknown_patient_in_dvh(base, capfd):
    with open(base / "dvh.csv", "a") as fh:
        fh.write("P55,parotid_l,20.05,1.0\n")
    assert_rejected(base, capfd, patient="P55", file="dvh.csv")


def test_duplicate_patient_id(base, capfd):
    with open(base / "patients.csv", "a") as fh:
        fh.write("P02,head_neck,B,55,F,neg,T3,66,33,10,1,\n")
    assert_rejected(base, capfd, patient="P02", file="patients.csv")


def test_duplicate_patient_id_leading_zeros_are_distinct(tmp_path, capfd):
    """'007' and '7' are different pseudonyms: not duplicates."""
    root = tmp_path / "c"
    write_text(root / "patients.csv", "patient_id,site\n007,lung\n7,lung\n07,lung\n")
    code, out, err = run_cli(["validate", str(root)], capfd)
    assert code == 0, out + err
    assert load_cohort(root).patient_ids == ["007", "7", "07"]


def test_geometry_mismatch_spacing(base, capfd):
    write(base / "images" / "P02_gtv.nii.gz", image(box_mask(*GTV_LABEL_BOX), spacing=(1.0, 1.0, 2.5)))
    p = assert_rejected(base, capfd, patient="P02", file="P02_gtv.nii.gz")
    assert "P02_ct.nii.gz" in problem_text(p), "a geometry mismatch must name both files"


def test_geometry_mismatch_origin(base, capfd):
    write(base / "images" / "P02_gtv.nii.gz", image(box_mask(*GTV_LABEL_BOX), origin=(-10.0, -8.5, 32.5)))
    p = assert_rejected(base, capfd, patient="P02", file="P02_gtv.nii.gz")
    assert "P02_ct.nii.gz" in problem_text(p)


def test_geometry_mismatch_size(base, capfd):
    arr = np.zeros((SIZE[2] + 1, SIZE[1], SIZE[0]), dtype=np.uint8)
    arr[GTV_LABEL_BOX] = 1
    write(base / "images" / "P02_gtv.nii.gz", image(arr))
    p = assert_rejected(base, capfd, patient="P02", file="P02_gtv.nii.gz")
    assert "P02_ct.nii.gz" in problem_text(p)


def test_geometry_mismatch_direction(base, capfd):
    mask = image(box_mask(*GTV_LABEL_BOX))
    mask.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    write(base / "images" / "P02_gtv.nii.gz", mask)
    p = assert_rejected(base, capfd, patient="P02", file="P02_gtv.nii.gz")
    assert "P02_ct.nii.gz" in problem_text(p)


def test_geometry_mismatch_load_time_error_names_both_files(base):
    from radiogenomics.errors import InputError

    write(base / "images" / "P02_gtv.nii.gz", image(box_mask(*GTV_LABEL_BOX), spacing=(1.0, 1.0, 2.5)))
    cohort = load_cohort(base)
    row = cohort.image_rows("P02", "CT").iloc[0]
    with pytest.raises(ValueError) as info:
        cohort.read_mask(row, cohort.read_image(row))
    assert isinstance(info.value, InputError)
    assert "P02_gtv.nii.gz" in str(info.value) and "P02_ct.nii.gz" in str(info.value)


def test_empty_roi_label_absent(base, capfd):
    edit(base / "images.csv", "parotid_l,2", "parotid_l,4")
    assert_rejected(base, capfd, patient="P01", file="P01_labels.nii.gz")


def test_empty_roi_binary_mask_all_zero(base, capfd):
    write(base / "images" / "P02_gtv.nii.gz", image(np.zeros(SIZE[::-1], dtype=np.uint8)))
    assert_rejected(base, capfd, patient="P02", file="P02_gtv.nii.gz")


@pytest.mark.parametrize("row,patient,gene,value", [(1, "P02", "STAT1", "high"), (0, "P01", "TP53", "n.d.")],
                         ids=["rsi_gene", "other_gene"])
def test_non_numeric_gene_value(base, capfd, row, patient, gene, value):
    frame = pd.read_csv(base / "expression.csv", dtype=str)
    frame.loc[row, gene] = value
    frame.to_csv(base / "expression.csv", index=False)
    assert_rejected(base, capfd, patient=patient, file="expression.csv", words=(gene,))


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e999"])
def test_non_finite_gene_value(base, capfd, value):
    frame = pd.read_csv(base / "expression.csv", dtype=str)
    frame.loc[0, "ABL1"] = value
    frame.to_csv(base / "expression.csv", index=False)
    assert_rejected(base, capfd, patient="P01", file="expression.csv", words=("ABL1",))


def test_nan_gene_value_is_not_silently_a_number(base, capfd):
    """'NaN' written as text is not a blank: either rejected or treated as missing; never a number."""
    frame = pd.read_csv(base / "expression.csv", dtype=str)
    frame.loc[0, "ABL1"] = "NaN"
    frame.to_csv(base / "expression.csv", index=False)
    report = validate_cohort(base)
    if report.ok:
        assert np.isnan(load_cohort(base).expression.loc["P01", "ABL1"])
    else:
        assert any(p.patient_id == "P01" and "ABL1" in json.dumps(p.to_dict()) for p in report.errors)


def test_blank_rsi_value_is_missing_not_invalid(base, capfd):
    """Contract: blank = missing. A blank RSI gene value is not a format error (at most a warning)."""
    frame = pd.read_csv(base / "expression.csv", dtype=str, keep_default_na=False)
    frame.loc[1, "CDK1"] = ""
    frame.to_csv(base / "expression.csv", index=False)
    code, out, err = run_cli(["validate", str(base)], capfd)
    assert code == 0, out + err
    assert np.isnan(load_cohort(base).expression.loc["P02", "CDK1"])


def test_rsi_gene_missing(base, capfd):
    frame = pd.read_csv(base / "expression.csv", dtype=str).drop(columns=["IRF1"])
    frame.to_csv(base / "expression.csv", index=False)
    assert_rejected(base, capfd, patient=None, file="expression.csv", words=("IRF1",))


@pytest.mark.parametrize("value", ["-70", "-0.5"])
def test_negative_total_dose(base, capfd, value):
    edit(base / "patients.csv", "T3,66,33", f"T3,{value},33")
    assert_rejected(base, capfd, patient="P02", file="patients.csv", words=("total_dose_gy",))


def test_implausible_total_dose_cgy(base, capfd):
    edit(base / "patients.csv", "T3,66,33", "T3,6600,33")
    assert_rejected(base, capfd, patient="P02", file="patients.csv", words=("total_dose_gy",))


@pytest.mark.parametrize("value", ["inf", "NaN", "seventy"])
def test_non_finite_or_text_total_dose(base, capfd, value):
    edit(base / "patients.csv", "T3,66,33", f"T3,{value},33")
    assert_rejected(base, capfd, patient="P02", file="patients.csv", words=("total_dose_gy",))


def test_negative_dose_grid(base, capfd):
    arr = dose_array()
    arr[0, 0, 0] = -5.0
    write(base / "images" / "P01_dose.nii.gz", image(arr))
    assert_rejected(base, capfd, patient="P01", file="P01_dose.nii.gz")


def test_dose_grid_in_cgy(base, capfd):
    write(base / "images" / "P01_dose.nii.gz", image(dose_array() * 100.0))
    assert_rejected(base, capfd, patient="P01", file="P01_dose.nii.gz")


def test_dose_grid_non_finite(base, capfd):
    arr = dose_array()
    arr[1, 2, 3] = np.nan
    write(base / "images" / "P01_dose.nrrd", image(arr))  # (SimpleITK's NIfTI I/O drops NaN; NRRD keeps it)
    edit(base / "images.csv", "images/P01_dose.nii.gz", "images/P01_dose.nrrd")
    assert_rejected(base, capfd, patient="P01", file="P01_dose.nrrd")


def test_negative_dvh_dose(base, capfd):
    edit(base / "dvh.csv", "P02,parotid_l,30.05", "P02,parotid_l,-30.05")
    assert_rejected(base, capfd, patient="P02", file="dvh.csv")


def test_negative_dvh_volume(base, capfd):
    edit(base / "dvh.csv", "30.05,3.0", "30.05,-3.0")
    assert_rejected(base, capfd, patient="P02", file="dvh.csv")


@pytest.mark.parametrize("value", ["2", "-1", "yes", "0.5"])
def test_lc_event_not_0_or_1(base, capfd, value):
    edit(base / "patients.csv", "66,33,10,1,", f"66,33,10,{value},")
    assert_rejected(base, capfd, patient="P02", file="patients.csv", words=("lc_event",))


@pytest.mark.parametrize("value", ["6", "-1", "2.5", "G2"])
def test_tox_grade_outside_0_5(base, capfd, value):
    edit(base / "patients.csv", "20,0,1\n", f"20,0,{value}\n")
    assert_rejected(base, capfd, patient="P01", file="patients.csv", words=("tox_xerostomia",))


def test_invalid_site(base, capfd):
    edit(base / "patients.csv", "P02,head_neck", "P02,oropharynx")
    assert_rejected(base, capfd, patient="P02", file="patients.csv", words=("site",))


def test_invalid_sex(base, capfd):
    edit(base / "patients.csv", "55,F,", "55,female,")
    assert_rejected(base, capfd, patient="P02", file="patients.csv", words=("sex",))


def test_invalid_modality(base, capfd):
    edit(base / "images.csv", "P02,CT,", "P02,PET,")
    assert_rejected(base, capfd, patient="P02", file="images.csv", words=("modality",))


def test_blank_patient_id(base, capfd):
    with open(base / "patients.csv", "a") as fh:
        fh.write(",head_neck,B,55,F,neg,T3,66,33,10,1,\n")
    assert_rejected(base, capfd, patient=None, file="patients.csv")


def test_missing_required_site_column(tmp_path, capfd):
    root = tmp_path / "c"
    write_text(root / "patients.csv", "patient_id,age_years\nP1,50\n")
    assert_rejected(root, capfd, patient=None, file="patients.csv", words=("site",))


def test_corrupt_image_file_is_bad_input_not_crash(base, capfd):
    (base / "images" / "P02_ct.nii.gz").write_bytes(b"this is not a nifti file" * 10)
    assert_rejected(base, capfd, patient="P02", file="P02_ct.nii.gz")


def test_corrupt_mask_file_is_bad_input_not_crash(base, capfd):
    (base / "images" / "P02_gtv.nii.gz").write_bytes(b"\x1f\x8b garbage")
    assert_rejected(base, capfd, patient="P02", file="P02_gtv.nii.gz")


def test_unsupported_format_version(base, capfd):
    write_text(base / "cohort.yaml", "name: x\nformat_version: 2\n")
    assert_rejected(base, capfd, patient=None, file="cohort.yaml")


def test_rtstruct_structure_absent(rich, tmp_path, capfd):
    root = tmp_path / "c"
    shutil.copytree(rich[0], root)
    edit(root / "images.csv", "RS.010.dcm,Parotid_L,", "RS.010.dcm,Brainstem,")
    assert_rejected(root, capfd, patient="010", file="RS.010.dcm", words=("Brainstem",))


def test_rtstruct_structure_without_contours(rich, tmp_path, capfd):
    root = tmp_path / "c"
    shutil.copytree(rich[0], root)
    frame = pydicom.dcmread(next((root / "dicom/010/CT").iterdir())).FrameOfReferenceUID
    uids = {"study": generate_uid(), "frame": frame}
    gtv = [square_contour(3.75, 9.25, 2.75, 7.25, k) for k in (1, 2, 3)]
    write_hand_rtstruct(root / "dicom" / "010" / "RS.010.dcm", uids, "010", {"GTV": gtv, "Parotid_L": []})
    assert_rejected(root, capfd, patient="010", file="RS.010.dcm")


def test_rtdose_relative_units_rejected(base, capfd):
    uids = {"study": generate_uid(), "frame": generate_uid()}
    write_hand_rtdose(base / "images" / "P01_rd.dcm", dose_array(), "P01", uids, units="RELATIVE")
    edit(base / "images.csv", "images/P01_dose.nii.gz", "images/P01_rd.dcm")
    assert_rejected(base, capfd, patient="P01", file="P01_rd.dcm")


# --------------------------------------------------------------------------------------------------
# Broken cohort: everything at once
# --------------------------------------------------------------------------------------------------

def test_all_problems_reported_in_one_run(base, capfd):
    (base / "images" / "P01_dose.nii.gz").unlink()                                          # missing file
    write(base / "images" / "P02_gtv.nii.gz", image(box_mask(*GTV_LABEL_BOX), spacing=(1, 1, 2.5)))  # geometry
    edit(base / "images.csv", "parotid_l,2", "parotid_l,7")                                # empty ROI
    with open(base / "images.csv", "a") as fh:
        fh.write("P99,CT,images/P01_ct.nii.gz,images/P01_labels.nii.gz,GTV,1\n")          # unknown patient
    edit(base / "patients.csv", "T3,66,33,10,1,", "T3,-66,33,10,3,")                      # neg dose, lc_event
    edit(base / "patients.csv", "20,0,1\n", "20,0,9\n")                                    # tox grade
    with open(base / "patients.csv", "a") as fh:
        fh.write("P01,lung,B,55,F,neg,T3,60,8,10,1,\n")                                  # duplicate ID
    frame = pd.read_csv(base / "expression.csv", dtype=str).drop(columns=["SUMO1"])        # RSI gene missing
    frame.loc[0, "JUN"] = "abc"                                                            # non-numeric
    frame.loc[1, "TP53"] = "inf"                                                           # non-finite
    frame.to_csv(base / "expression.csv", index=False)

    code, out, err = run_cli(["validate", str(base)], capfd)
    assert code == 2
    assert len(reason_lines(err)) == 1, err
    code, report = validate_json(base, capfd)
    assert code == 2
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    text = [problem_text(p) for p in errors]

    def has(patient, file, word=""):
        return any((patient is None or p.get("patient_id") == patient) and file in t and word.lower() in t.lower()
                   for p, t in zip(errors, text, strict=True))

    expected = [
        ("P01", "P01_dose.nii.gz", ""),
        ("P02", "P02_gtv.nii.gz", ""),
        ("P01", "P01_labels.nii.gz", "parotid"),
        ("P99", "images.csv", ""),
        ("P02", "patients.csv", "total_dose_gy"),
        ("P02", "patients.csv", "lc_event"),
        ("P01", "patients.csv", "tox_xerostomia"),
        ("P01", "patients.csv", "patient_id"),
        (None, "expression.csv", "SUMO1"),
        ("P01", "expression.csv", "JUN"),
        ("P02", "expression.csv", "TP53"),
    ]
    missing = [e for e in expected if not has(*e)]
    assert not missing, f"not reported: {missing}\nreported: {errors}"


# --------------------------------------------------------------------------------------------------
# Realistic valid inputs that must not be rejected
# --------------------------------------------------------------------------------------------------

def test_hyperfractionated_regimen_is_valid(tmp_path, capfd):
    root = tmp_path / "c"
    write_text(root / "patients.csv", "patient_id,site,total_dose_gy,n_fractions\nH1,head_neck,81.6,68\n"
                                      "H2,head_neck,80.5,70\n")
    code, out, err = run_cli(["validate", str(root)], capfd)
    assert code == 0, out + err


def test_blank_optional_cells_everywhere(tmp_path, capfd):
    root = tmp_path / "c"
    write_text(root / "patients.csv",
               "patient_id,site,center,age_years,sex,hpv,t_stage,total_dose_gy,n_fractions,lc_months,lc_event,"
               "tox_xerostomia\nB1,head_neck,,,,,,,,,,\nB2,lung,,,,,,,,,,\n")
    code, out, err = run_cli(["validate", str(root)], capfd)
    assert code == 0, out + err


@pytest.mark.parametrize("offset", [(0.1, 0.3), (0.45, -0.2), (-0.3, 0.35)])
def test_rtstruct_rasterisation_is_unbiased(tmp_path, offset):
    """A TPS contour does not run through voxel centres. The rasterised ROI should hold the voxels whose
    centres lie inside the contour (the usual convention: plastimatch, dicompyler), not a dilated set."""
    from matplotlib.path import Path as MPath

    from radiogenomics.cohort import read_mask

    ref = image(ct_array(0))
    uids = {"study": generate_uid(), "frame": generate_uid()}
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    cx, cy = 9.5 + offset[0], 7.5 + offset[1]
    xs, ys = cx + 4.3 * np.cos(theta), cy + 4.3 * np.sin(theta)
    contour = [round(v, 4) for x, y in zip(xs, ys, strict=True) for v in phys(x, y, 2)]
    path = tmp_path / "rs.dcm"
    write_hand_rtstruct(path, uids, "X", {"GTV": [contour]})
    got = sitk.GetArrayFromImage(read_mask(path, ref, "GTV"))[2].astype(bool)
    gy, gx = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    inside = MPath(np.c_[xs, ys]).contains_points(np.c_[gx.ravel(), gy.ravel()]).reshape(SIZE[1], SIZE[0])
    assert abs(int(got.sum()) - int(inside.sum())) <= 0.1 * inside.sum(), (int(got.sum()), int(inside.sum()))


def test_load_cohort_raises_value_error_naming_patient_and_file(base):
    edit(base / "patients.csv", "T3,66,33,10,1,", "T3,66,33,10,4,")
    with pytest.raises(ValueError) as info:
        load_cohort(base)
    assert "P02" in str(info.value) and "patients.csv" in str(info.value) and "lc_event" in str(info.value)


def test_load_cohort_valid_base_types(base):
    cohort = load_cohort(base)
    assert cohort.patient_ids == ["P01", "P02"]
    assert pd.api.types.is_integer_dtype(cohort.patients["tox_xerostomia"])
    assert cohort.images["label"].tolist() == [1, 2, 1, 1]
    assert cohort.dvh is not None and pd.api.types.is_float_dtype(cohort.dvh["dose_gy"])


@pytest.mark.parametrize("table", ["patients", "expression"])
def test_duplicate_column_is_an_error(tmp_path, table):
    root = tmp_path / "c"
    if table == "patients":
        write_text(root / "patients.csv", "patient_id,site,age_years,age_years\nP1,lung,50,60\n")
    else:
        write_text(root / "patients.csv", "patient_id,site\nP1,lung\n")
        write_text(root / "expression.csv", "patient_id," + ",".join(RSI_GENES) + ",AR\nP1,1,2,3,4,5,6,7,8,9,10,11\n")
    report = validate_cohort(root)
    assert not report.ok


# --------------------------------------------------------------------------------------------------
# Command line (contract §3): every command has --help; exit 0 / 2 / 1
# --------------------------------------------------------------------------------------------------

COMMANDS = [["synth"], ["validate"], ["extract"], ["train"], ["predict"], ["serve"], ["token"], ["token", "create"],
            ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help(command, capfd):
    code, out, err = run_cli([*command, "--help"], capfd)
    assert code == 0, err
    assert "Usage" in out and "--help" in out


def test_top_level_help_lists_every_contract_command(capfd):
    code, out, _ = run_cli(["--help"], capfd)
    assert code == 0
    for name in ("synth", "validate", "extract", "train", "predict", "serve", "token", "demo"):
        assert name in out


CONTRACT_OPTIONS = {
    "synth": ["--patients", "--seed"],
    "extract": ["--out", "--params", "--workers", "--dask"],
    "train": ["--features", "--config"],
    "predict": ["--model", "--out", "--target-gard", "--n-fractions", "--dose-per-fraction-gy"],
    "serve": ["--model", "--host", "--port", "--tokens"],
    "demo": ["--out"],
}


@pytest.mark.parametrize("command", sorted(CONTRACT_OPTIONS))
def test_contract_options_exist(command, capfd):
    code, out, _ = run_cli([command, "--help"], capfd)
    assert code == 0
    for option in CONTRACT_OPTIONS[command]:
        assert option in out, (command, option)


def test_token_create_options(capfd):
    code, out, _ = run_cli(["token", "create", "--help"], capfd)
    assert code == 0 and "--tokens" in out


@pytest.mark.parametrize("args", [["synth", "OUT", "--patients", "0", "--seed", "1"],
                                  ["synth", "OUT", "--patients", "-3", "--seed", "1"]])
def test_synth_bad_input_exit_2_one_line(args, tmp_path, capfd):
    args = [str(tmp_path / a) if a == "OUT" else a for a in args]
    code, _, err = run_cli(args, capfd)
    assert code == 2
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err


def test_usage_errors_exit_2(capfd):
    assert run_cli(["validate"], capfd)[0] == 2
    assert run_cli(["no-such-command"], capfd)[0] == 2
    assert run_cli(["validate", ".", "--no-such-option"], capfd)[0] == 2


def test_extract_on_broken_cohort_exit_2(base, tmp_path, capfd):
    edit(base / "patients.csv", "T3,66,33", "T3,-66,33")
    code, _, err = run_cli(["extract", str(base), "--out", str(tmp_path / "f.parquet")], capfd)
    assert code == 2
    assert "P02" in err
    assert len(reason_lines(err)) >= 1


def test_dose_grid_on_another_grid_is_valid(base, capfd):
    """DOSE rows may lie on their own grid (coarser, shifted): no mask, so no geometry mismatch."""
    coarse = np.full((4, 8, 10), 60.0, dtype=np.float32)
    write(base / "images" / "P01_dose.nii.gz", image(coarse, spacing=(2.0, 2.5, 3.0), origin=(-12.0, -10.0, 28.0)))
    code, out, err = run_cli(["validate", str(base)], capfd)
    assert code == 0, out + err


def test_image_row_without_mask_is_not_an_error(base, capfd):
    with open(base / "images.csv", "a") as fh:
        fh.write("P02,MR_T1,images/P02_ct.nii.gz,,,\n")
    code, out, err = run_cli(["validate", str(base), "--json"], capfd)
    assert code == 0, out + err
    assert json.loads(out)["ok"] is True
