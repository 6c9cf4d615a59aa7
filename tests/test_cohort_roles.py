"""Structure roles (issue 16): images.csv ``roi`` is the role, ``structure`` the name in the mask file; a role
resolves in an RTSTRUCT by exact name, cohort.yaml ``structure_aliases``, the TG-263 alias table, then target
type; features are keyed by the role; an incomplete DICOM series is an error (``incomplete_series``)."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from cohort_factory import make_image
from test_features_helpers import write_fast_params
from typer.testing import CliRunner

from radiogenomics.cli.app import app
from radiogenomics.cohort import load_cohort, read_image, read_mask, validate_cohort
from radiogenomics.cohort.dicom import IncompleteSeriesError, write_ct_series
from radiogenomics.cohort.roles import RoiInfo, StructureError, parse_structure_aliases, resolve_role
from radiogenomics.cohort.rtstruct import rasterise_rtstruct, rtstruct_rois, write_rtstruct
from radiogenomics.errors import InputError
from radiogenomics.features.pipeline import ExtractOptions, extract

# ------------------------------------------------------------------------------------------------------------
# Resolution order on ROI lists (as an RTSTRUCT's StructureSetROISequence + RTROIObservationsSequence give them)
# ------------------------------------------------------------------------------------------------------------

#: dicompyler-core's example structure set (names and RTROIInterpretedType as in its rtss.dcm)
BREAST = [RoiInfo(1, "BODY", "EXTERNAL"), RoiInfo(2, "Areola", "AVOIDANCE"), RoiInfo(3, "Borders", "CTV"),
          RoiInfo(4, "Breast", "GTV"), RoiInfo(5, "Heart", "ORGAN"), RoiInfo(6, "Lt Lung", "AVOIDANCE"),
          RoiInfo(7, "Nodes", "AVOIDANCE"), RoiInfo(8, "Scar", "AVOIDANCE"), RoiInfo(9, "Tumor Bed", "CTV"),
          RoiInfo(10, "Tumor Bed Block", "GTV")]
PHANTOM = [RoiInfo(1, "GTV-1", "")]  # pycerr's radiomics phantom: one ROI, blank interpreted type


def test_exact_name_first_then_case_insensitive() -> None:
    rois = [RoiInfo(1, "GTV"), RoiInfo(2, "GTV-1", "GTV"), RoiInfo(3, "Heart")]
    assert (resolve_role("GTV", rois).structure, resolve_role("GTV", rois).how) == ("GTV", "exact name")
    assert resolve_role("heart", rois).structure == "Heart"


def test_cohort_alias_before_the_tg263_table() -> None:
    rois = [RoiInfo(1, "Parotid L"), RoiInfo(2, "PG_sin")]
    got = resolve_role("Parotid_L", rois, aliases=("pg_sin",))
    assert (got.structure, got.how) == ("PG_sin", "cohort.yaml structure_aliases")


def test_tg263_alias_table() -> None:
    for role, name in (("Lung_L", "Lt Lung"), ("External", "BODY"), ("Heart", "Heart")):
        got = resolve_role(role, BREAST)
        assert got.structure == name, role
    got = resolve_role("SpinalCord", [RoiInfo(1, "cord"), RoiInfo(2, "SpinalCanal")])
    assert (got.structure, got.how) == ("cord", "TG-263 alias table")  # the canal is another organ
    assert resolve_role("PTV70", [RoiInfo(1, "PTV_70"), RoiInfo(2, "PTV_56")]).structure == "PTV_70"


def test_target_type_by_prefix() -> None:
    got = resolve_role("GTV", PHANTOM)
    assert (got.structure, got.how, got.kind) == ("GTV-1", "target type (name prefix)", "target")
    for name in ("GTVp", "GTV_70", "gtv 1"):
        assert resolve_role("GTV", [RoiInfo(1, name), RoiInfo(2, "CTV"), RoiInfo(3, "Parotid_L")]).structure == name


def test_target_type_by_interpreted_type() -> None:
    rois = [r for r in BREAST if r.name != "Borders"]
    got = resolve_role("CTV", rois)
    assert (got.structure, got.how, got.interpreted_type, got.kind) == (
        "Tumor Bed", "target type (RTROIInterpretedType)", "CTV", "target")
    # a name prefix of another target type does not count when the file says what the structure is
    assert resolve_role("GTV", [RoiInfo(1, "GTV_ring", "PTV"), RoiInfo(2, "Tumour", "GTV")]).structure == "Tumour"


def test_several_candidates_are_an_error_listing_the_rois() -> None:
    with pytest.raises(StructureError) as info:
        resolve_role("CTV", BREAST, file="rtss.dcm")
    assert info.value.code == "ambiguous_structure"
    assert "matches 2 structures by target type CTV" in info.value.reason
    assert "Borders (CTV), Tumor Bed (CTV)" in info.value.reason
    assert "holds: BODY (EXTERNAL), Areola, Borders (CTV), Breast (GTV), Heart, Lt Lung" in info.value.reason
    # ... which a structure column or a cohort alias settles
    assert resolve_role("CTV", BREAST, structure="Tumor Bed").how == "structure column"
    assert resolve_role("CTV", BREAST, aliases=["tumor bed"]).structure == "Tumor Bed"


def test_no_candidate_is_an_error_listing_the_rois() -> None:
    with pytest.raises(StructureError) as info:
        resolve_role("PTV", PHANTOM)
    assert info.value.code == "missing_structure"
    assert "role 'PTV' matches no structure" in info.value.reason and "holds: GTV-1" in info.value.reason
    with pytest.raises(StructureError, match="structure 'GTV 1' .* holds: GTV-1") as info:
        resolve_role("GTV", PHANTOM, structure="GTV 1")  # a structure column is taken as written
    assert info.value.code == "missing_structure"
    with pytest.raises(StructureError, match="role 'Brainstem' matches no structure"):
        resolve_role("Brainstem", BREAST)


@pytest.mark.parametrize(("value", "match"), [
    (["GTV-1"], "must be a mapping"),
    ({"GTV": "GTV-1"}, r"structure_aliases.GTV must be a non-empty list"),
    ({"GTV": []}, r"structure_aliases.GTV must be a non-empty list"),
    ({"GTV": ["GTV-1", 3]}, r"structure_aliases.GTV must be"),
    ({"GTV": ["a"], "gtv": ["b"]}, "'GTV' and 'gtv' are the same role"),
    ({"GTV": ["Tumour"], "CTV": ["tumour"]}, "'tumour' is listed for 'GTV' and 'CTV'"),
])
def test_bad_structure_aliases_name_the_key(value: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_structure_aliases(value)


def test_structure_aliases_in_cohort_yaml(tmp_path: Path) -> None:
    (tmp_path / "patients.csv").write_text("patient_id,site\nP1,lung\n")
    (tmp_path / "cohort.yaml").write_text("format_version: 1\nstructure_aliases:\n  GTV: [GTV-1, GTVp]\n"
                                          "  Parotid_L: [PG sin]\n")
    cohort = load_cohort(tmp_path)
    assert cohort.structure_aliases == {"GTV": ("GTV-1", "GTVp"), "Parotid_L": ("PG sin",)}
    assert cohort.aliases_for("parotid l") == ("PG sin",) and cohort.aliases_for("CTV") == ()
    (tmp_path / "cohort.yaml").write_text("structure_aliases:\n  GTV: GTV-1\n")
    report = validate_cohort(tmp_path)
    assert [(p.code, p.file) for p in report.problems] == [("invalid_structure_aliases", "cohort.yaml")]
    assert "structure_aliases.GTV" in report.problems[0].message


# ------------------------------------------------------------------------------------------------------------
# Real files: a CT series and an RTSTRUCT with planning-system names
# ------------------------------------------------------------------------------------------------------------

SHAPE = (10, 24, 28)  # z, y, x
NAMES = {"GTV-1": ((5, 12, 14), (3, 5, 6)), "Tumor Bed": ((5, 12, 14), (4, 7, 8)),
         "Parotid L": ((4, 5, 22), (2, 3, 3)), "BODY": ((5, 12, 14), (5, 11, 13))}


def _ellipsoid(centre: tuple[int, int, int], radii: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2 <= 1.0).astype(np.uint8)


Geometry = tuple[tuple[int, int, int], tuple[int, int, int]]


def write_rt_patient(folder: Path, pid: str, types: dict[str, str] | None = None,
                   names: dict[str, Geometry] = NAMES) -> dict[str, np.ndarray]:
    """CT series in ``folder/ct``, RTSTRUCT ``folder/rs.dcm`` holding ``names``; RTROIInterpretedType as written
    by write_rtstruct, overridden by ``types``. Returns the masks (z, y, x) by name."""
    rng = np.random.default_rng(len(pid))
    image = make_image(rng.normal(40, 15, size=SHAPE).round(), origin=(-20.0, -18.0, -12.0), spacing=(1.5, 1.5, 3.0))
    write_ct_series(image, folder / "ct", patient_id=pid)
    arrays = {name: _ellipsoid(*geometry) for name, geometry in names.items()}
    masks = {}
    for name, array in arrays.items():
        masks[name] = sitk.GetImageFromArray(array)
        masks[name].CopyInformation(image)
    path = write_rtstruct(masks, folder / "ct", folder / "rs.dcm")
    if types:
        ds = pydicom.dcmread(path)
        numbers = {str(r.ROIName): int(r.ROINumber) for r in ds.StructureSetROISequence}
        for obs in ds.RTROIObservationsSequence:
            for name, kind in types.items():
                if int(obs.ReferencedROINumber) == numbers[name]:
                    obs.RTROIInterpretedType = kind
        ds.save_as(path)
    return {name: array.astype(bool) for name, array in arrays.items()}


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("roles") / "P1"
    return folder, write_rt_patient(folder, "P1", {"Tumor Bed": "CTV", "GTV-1": ""})  # GTV-1: as in pycerr's


def test_write_rtstruct_marks_targets_and_the_body(tmp_path: Path) -> None:
    write_rt_patient(tmp_path, "P9",
                     names={"GTV-1": NAMES["GTV-1"], "BODY": NAMES["BODY"], "Heart": NAMES["Parotid L"]})
    assert [(r.name, r.interpreted_type) for r in rtstruct_rois(tmp_path / "rs.dcm")] == [
        ("GTV-1", "GTV"), ("BODY", "EXTERNAL"), ("Heart", "ORGAN")]


def test_read_mask_resolves_roles(patient: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, truth = patient
    ct = read_image(folder / "ct")
    for role, name in (("GTV", "GTV-1"), ("CTV", "Tumor Bed"), ("Parotid_L", "Parotid L"), ("External", "BODY"),
                       ("GTV-1", "GTV-1")):
        mask = read_mask(folder / "rs.dcm", ct, role, reference_path=folder / "ct")
        assert np.array_equal(sitk.GetArrayFromImage(mask).astype(bool), truth[name]), role
    mask = read_mask(folder / "rs.dcm", ct, "Lesion", structure="tumor bed")
    assert np.array_equal(sitk.GetArrayFromImage(mask).astype(bool), truth["Tumor Bed"])
    holds = r"holds: GTV-1, Tumor Bed \(CTV\), Parotid L, BODY \(EXTERNAL\)\."
    with pytest.raises(StructureError, match=r"role 'PTV' matches no structure .* " + holds):
        read_mask(folder / "rs.dcm", ct, "PTV")


def _cohort(root: Path, rows: str, yaml: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pids = sorted({line.split(",")[0] for line in textwrap.dedent(rows).splitlines()[1:] if line.strip()})
    (root / "patients.csv").write_text("patient_id,site\n" + "".join(f"{p},breast\n" for p in pids))
    (root / "images.csv").write_text(textwrap.dedent(rows))
    if yaml:
        (root / "cohort.yaml").write_text(textwrap.dedent(yaml))
    return root


def test_validate_reports_what_each_role_resolved_to(patient: tuple[Path, dict[str, np.ndarray]],
                                                     tmp_path: Path) -> None:
    folder, _ = patient
    root = _cohort(tmp_path / "c", f"""\
        patient_id,modality,image,mask,roi,structure
        P1,CT,{folder}/ct,{folder}/rs.dcm,GTV,
        P1,CT,{folder}/ct,{folder}/rs.dcm,CTV,
        P1,CT,{folder}/ct,{folder}/rs.dcm,Parotid_L,
        P1,CT,{folder}/ct,{folder}/rs.dcm,Lung_R,PG sin
        P1,CT,{folder}/ct,{folder}/rs.dcm,External,
        """, "structure_aliases:\n  External: [BODY]\n")
    report = validate_cohort(root)
    assert [(p.code, p.message.split(";")[0]) for p in report.problems] == [
        ("missing_structure", "structure 'PG sin' (role 'Lung_R') is not in the RTSTRUCT")]
    resolved = [(s["role"], s["structure"], s["how"], s["kind"]) for s in report.structures]
    assert resolved == [("GTV", "GTV-1", "target type (name prefix)", "target"),
                        ("CTV", "Tumor Bed", "target type (RTROIInterpretedType)", "target"),
                        ("Parotid_L", "Parotid L", "TG-263 alias table", "oar"),
                        ("External", "BODY", "cohort.yaml structure_aliases", "external")]
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(root), "--json"])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["structures"] == report.structures
    assert doc["structures"][0] == {"patient_id": "P1", "modality": "CT", "role": "GTV", "structure": "GTV-1",
                                    "how": "target type (name prefix)", "interpreted_type": "", "kind": "target",
                                    "file": f"{folder}/rs.dcm"}
    text = runner.invoke(app, ["validate", str(root)]).stdout
    assert "GTV -> GTV-1" in text and "CTV -> Tumor Bed" in text and "target type (RTROIInterpretedType)" in text


def test_label_map_structure_names(tmp_path: Path) -> None:
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:6, 5:10, 5:10] = 4
    image = make_image(np.zeros(SHAPE), spacing=(1.5, 1.5, 3.0))
    seg = make_image(labels, spacing=(1.5, 1.5, 3.0), pixel=np.uint8)
    seg.SetMetaData("Segment0_Name", "GTV-1")
    seg.SetMetaData("Segment0_LabelValue", "4")
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(seg, str(tmp_path / "seg.nrrd"))
    sitk.WriteImage(seg, str(tmp_path / "seg.nii.gz"))
    ct = read_image(tmp_path / "ct.nrrd")
    assert sitk.GetArrayFromImage(read_mask(tmp_path / "seg.nrrd", ct, "GTV", structure="gtv-1")).sum() == 75
    with pytest.raises(StructureError, match="the label map names no label"):
        read_mask(tmp_path / "seg.nii.gz", ct, "GTV", structure="GTV-1")
    root = _cohort(tmp_path / "c", """\
        patient_id,modality,image,mask,roi,structure,label
        P1,CT,../ct.nrrd,../seg.nrrd,GTV,GTV-1,
        P1,CT,../ct.nrrd,../seg.nrrd,CTV,,4
        P1,PET_FDG,../ct.nrrd,../seg.nrrd,GTV,GTV-2,
        """)
    report = validate_cohort(root)
    assert [(p.code, p.message) for p in report.problems] == [
        ("missing_structure", "structure 'GTV-2' is not a label of the label map; it holds: GTV-1 (label 4).")]
    assert [(s["role"], s["structure"], s["how"]) for s in report.structures] == [
        ("GTV", "GTV-1", "label name"), ("CTV", "CTV", "label value 4")]


# ------------------------------------------------------------------------------------------------------------
# Features are keyed by role, identical to those of the exact name
# ------------------------------------------------------------------------------------------------------------

def test_features_are_keyed_by_role(patient: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    folder, truth = patient
    dose = make_image(np.where(truth["GTV-1"], 60.0, 10.0), origin=(-20.0, -18.0, -12.0), spacing=(1.5, 1.5, 3.0))
    sitk.WriteImage(dose, str(tmp_path / "dose.nii.gz"))
    params = write_fast_params(tmp_path / "fast.yaml")
    tables = {}
    for name, rows in (("role", "P1,CT,{f}/ct,{f}/rs.dcm,GTV,\nP1,CT,{f}/ct,{f}/rs.dcm,Lesion,Tumor Bed\n"),
                       ("exact", "P1,CT,{f}/ct,{f}/rs.dcm,GTV-1,\nP1,CT,{f}/ct,{f}/rs.dcm,Tumor Bed,\n")):
        root = _cohort(tmp_path / name, "patient_id,modality,image,mask,roi,structure\n"
                       + rows.format(f=folder) + f"P1,DOSE,{tmp_path}/dose.nii.gz,,,\n")
        summary = extract(root, tmp_path / f"{name}.parquet",
                          ExtractOptions(params=params, workers=1, use_cache=False))
        assert summary.failed == 0, pd.read_csv(summary.failures)
        tables[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
    role, exact = tables["role"], tables["exact"]
    assert "ct.gtv.original_shape_VoxelVolume" in role.columns and "dose.gtv.mean_gy" in role.columns
    assert not [c for c in role.columns if "gtv_1" in c or "tumor_bed" in c]
    assert "ct.gtv_1.original_shape_VoxelVolume" in exact.columns  # an exact name keys its features as before
    for (a, b) in (("gtv", "gtv_1"), ("lesion", "tumor_bed")):
        mine = sorted(c for c in role.columns if f".{a}." in c)
        theirs = [c.replace(f".{a}.", f".{b}.") for c in mine]
        assert len(mine) > 5 and np.array_equal(role[mine].to_numpy(), exact[theirs].to_numpy()), a
    assert role["ct.gtv.original_shape_VoxelVolume"].iloc[0] == pytest.approx(truth["GTV-1"].sum() * 1.5 * 1.5 * 3)


# ------------------------------------------------------------------------------------------------------------
# Incomplete series and contours outside the image
# ------------------------------------------------------------------------------------------------------------

def test_series_missing_referenced_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_rt_patient(tmp_path / "P2", "P2")
    write_rt_patient(tmp_path / "P3", "P3")
    files = sorted((tmp_path / "P2" / "ct").glob("CT*.dcm"))
    for f in files[1:]:  # 1 of the 10 slices left, as in dicompyler-core's example (1 of 98)
        f.unlink()
    ct = read_image(tmp_path / "P2" / "ct")
    with caplog.at_level(logging.WARNING, logger="radiogenomics.cohort.rtstruct"), \
            pytest.raises(IncompleteSeriesError, match="holds 1 of the 10 images its RTSTRUCT rs.dcm references"):
        read_mask(tmp_path / "P2" / "rs.dcm", ct, "GTV", reference_path=tmp_path / "P2" / "ct")
    assert caplog.text == ""  # refused before any contour is rasterised
    rows = "".join(f"{p},CT,{p}/ct,{p}/rs.dcm,{role},\n" for p in ("P2", "P3") for role in ("GTV", "Parotid_L"))
    root = _cohort(tmp_path, "patient_id,modality,image,mask,roi,structure\n" + rows)
    report = validate_cohort(root)
    assert [(p.code, p.patient_id, p.file) for p in report.problems] == [("incomplete_series", "P2", "P2/ct")]
    assert "1 of the 10 images" in report.problems[0].message
    params = write_fast_params(tmp_path / "fast.yaml")
    summary = extract(root, tmp_path / "f.parquet", ExtractOptions(params=params, workers=1, use_cache=False))
    failures = pd.read_csv(summary.failures)
    assert summary.failed_patients == ["P2"] and len(failures) == 2
    assert failures["reason"].str.contains("holds 1 of the 10 images its RTSTRUCT").all()
    table = pd.read_parquet(tmp_path / "f.parquet").set_index("patient_id")
    assert np.isfinite(table.loc["P3", "ct.gtv.original_shape_VoxelVolume"])
    assert np.isnan(table.loc["P2", "ct.gtv.original_shape_VoxelVolume"])


def test_uneven_slice_spacing(tmp_path: Path) -> None:
    image = make_image(np.zeros((10, 6, 8)), spacing=(1.0, 1.0, 2.5))
    write_ct_series(image, tmp_path / "ct", patient_id="P4")
    (tmp_path / "ct" / "CT0004.dcm").unlink()
    (tmp_path / "ct" / "CT0007.dcm").unlink()
    with pytest.raises(IncompleteSeriesError, match=r"uneven slice spacing \(steps 2.5 to 5 mm\): 8 of 10 slices"):
        read_image(tmp_path / "ct")
    root = _cohort(tmp_path / "c", f"patient_id,modality,image,mask,roi\nP4,CT,{tmp_path}/ct,,\n")
    report = validate_cohort(root)
    assert [p.code for p in report.errors] == ["incomplete_series"]
    assert "8 of 10 slices present" in report.errors[0].message


def test_contours_outside_the_image_are_one_line_per_structure(patient: tuple[Path, dict[str, np.ndarray]],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    folder, truth = patient
    ct = read_image(folder / "ct")
    top = ct[:, :, :2]  # the two lowest slices: every other contour of the structures lies outside
    with caplog.at_level(logging.WARNING, logger="radiogenomics.cohort.rtstruct"):
        mask = rasterise_rtstruct(folder / "rs.dcm", top, "External")
    assert np.array_equal(sitk.GetArrayFromImage(mask).astype(bool), truth["BODY"][:2])
    lines = caplog.text.strip().splitlines()
    n_out = int(truth["BODY"][2:].any(axis=(1, 2)).sum())
    assert len(lines) == 1 and n_out > 5, lines
    assert (f"structure 'BODY' (role External): {n_out} contours outside the reference image on {n_out} slices "
            f"(z=-6.00..") in lines[0] and lines[0].endswith("mm): ignored")
