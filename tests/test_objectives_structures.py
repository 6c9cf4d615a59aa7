"""objectives.json on the patient's own structures (issue 16, point 3): ``name`` as in the patient's files,
``tg263_name`` the role, only structures the patient has, targets (by role or RTROIInterpretedType) never OARs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_cohort_roles import NAMES, write_rt_patient

from radiogenomics.cohort import load_cohort
from radiogenomics.cohort.roles import Resolved
from radiogenomics.errors import InputError
from radiogenomics.planning import build_objectives, validate_objectives
from radiogenomics.planning.handoff import _Writer, patient_structures
from radiogenomics.radiobiology.tissues import load_tissues


def record(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "patient_id": "P1", "site": "breast", "model_uri": "models:/m/1", "model_version": "1",
        "input_sha256": "ab" * 32, "alpha_per_gy": 0.3, "beta_per_gy2": 0.05, "recommended_total_dose_gy": 60.0,
        "recommended_n_fractions": 30.0, "recommended_dose_per_fraction_gy": 2.0, "flags": []}
    return {**base, **over}


def S(role: str, structure: str, kind: str = "") -> Resolved:  # noqa: N802 - reads like the table it builds
    return Resolved(role=role, structure=structure, how="test", interpreted_type=kind)


def _names(doc: dict[str, object]) -> list[tuple[str, str, str | None]]:
    return [(s["name"], s["role"], s.get("tg263_name")) for s in doc["structures"]]  # type: ignore[attr-defined]


def test_structures_are_named_as_in_the_patients_files() -> None:
    mine = [S("GTV", "GTV-1"), S("Lung_L", "Lt Lung", "AVOIDANCE"), S("Heart", "Heart", "ORGAN"),
            S("CTV", "Tumor Bed", "CTV"), S("External", "BODY", "EXTERNAL")]
    doc = build_objectives(record(), site="head_neck", structures=mine)
    validate_objectives(doc)
    assert _names(doc) == [("GTV-1", "target", "GTV"), ("Lt Lung", "oar", "Lung_L"), ("Heart", "oar", "Heart")]
    assert doc["structure_source"] == "patient"
    assert doc["structures"][1]["rt_roi_interpreted_type"] == "AVOIDANCE"
    # only what the patient has: none of the head-and-neck template's OARs
    assert not set(load_tissues().site_oars["head_neck"]) & {s["tg263_name"] for s in doc["structures"]}
    assert not [n for n in doc["notes"] if "template" in n]


def test_a_target_is_never_an_oar() -> None:
    # dicompyler-core's example: "Tumor Bed" (CTV), "Breast" and "Tumor Bed Block" typed GTV
    mine = [S("CTV", "Tumor Bed", "CTV"), S("Breast", "Breast", "GTV"), S("Tumor Bed Block", "Tumor Bed Block", "GTV"),
            S("Heart", "Heart", "ORGAN")]
    doc = build_objectives(record(), site="breast", structures=mine)
    validate_objectives(doc)
    assert _names(doc) == [("Tumor Bed", "target", "CTV"), ("Heart", "oar", "Heart")]
    assert "the patient has no structure of role GTV: the target is Tumor Bed (role CTV)" in doc["notes"]
    assert doc["structures"][0]["rt_roi_interpreted_type"] == "CTV"
    # a target of the requested role wins over the file order
    doc = build_objectives(record(), structures=[S("CTV", "Tumor Bed", "CTV"), S("GTV", "GTVp")])
    assert _names(doc)[0] == ("GTVp", "target", "GTV")
    # an unknown non-target role still fails closed (an OAR without a limit must not pass silently)
    with pytest.raises(InputError, match="'Scar' matches no organ"):
        build_objectives(record(), structures=[S("GTV", "GTV-1"), S("Scar", "Scar", "AVOIDANCE")])


def test_without_the_patients_structures_the_template_is_said_to_be_one() -> None:
    doc = build_objectives(record(), site="head_neck")
    assert doc["structure_source"] == "site_template"
    assert [s["tg263_name"] for s in doc["structures"][1:]] == [
        load_tissues().lookup(n)[1].canonical for n in load_tissues().site_oars["head_neck"]]
    assert any("OAR list is the head_neck site's template" in n for n in doc["notes"])
    doc = build_objectives(record(), structures=[S("GTV", "GTV-1"), S("External", "BODY")])
    assert _names(doc) == [("GTV-1", "target", "GTV")]
    assert "the patient's structures include no organ at risk" in doc["notes"]
    given = build_objectives(record(), oars=["cord"], structures=[S("GTV", "GTV-1"), S("Heart", "Heart")])
    assert _names(given) == [("GTV-1", "target", "GTV"), ("cord", "oar", "SpinalCord")]


def test_hand_off_names_the_patients_structures(tmp_path: Path) -> None:
    """The hand-off writes objectives.json from the cohort's images.csv roles resolved in the patient's RTSTRUCT."""
    folder = tmp_path / "P1"
    write_rt_patient(folder, "P1", {"Tumor Bed": "CTV"}, names={**NAMES, "Lt Lung": ((5, 20, 6), (2, 2, 3))})
    (tmp_path / "patients.csv").write_text("patient_id,site\nP1,breast\nP2,breast\n")
    (tmp_path / "images.csv").write_text(textwrap.dedent("""\
        patient_id,modality,image,mask,roi,structure
        P1,CT,P1/ct,P1/rs.dcm,GTV,
        P1,CT,P1/ct,P1/rs.dcm,CTV,
        P1,CT,P1/ct,P1/rs.dcm,Lung_L,
        P1,CT,P1/ct,P1/rs.dcm,Parotid_L,
        P1,CT,P1/ct,P1/rs.dcm,Lesion,Tumor Bed
        P1,CT,P1/ct,P1/rs.dcm,External,
        """))
    cohort = load_cohort(tmp_path)
    assert [(s.role, s.structure, s.kind) for s in patient_structures(cohort, "P1")] == [
        ("GTV", "GTV-1", "target"), ("CTV", "Tumor Bed", "target"), ("Lung_L", "Lt Lung", "oar"),
        ("Parotid_L", "Parotid L", "oar"), ("Lesion", "Tumor Bed", "target"), ("External", "BODY", "external")]
    out = tmp_path / "handoff"
    out.mkdir()
    writer = _Writer(out, cohort=cohort, oars=None, target_name="GTV", fmiso_reference_suv=None)
    result = writer.write(record())
    doc = json.loads((out / "P1" / "objectives.json").read_text())
    validate_objectives(doc)
    assert _names(doc) == [("GTV-1", "target", "GTV"), ("Lt Lung", "oar", "Lung_L"),
                           ("Parotid L", "oar", "Parotid_L")]
    assert doc["structure_source"] == "patient" and result.n_oars == 2
    # a patient of the cohort without structures gets the site's template, and the notes say so
    writer.write(record(patient_id="P2"))
    doc = json.loads((out / "P2" / "objectives.json").read_text())
    assert doc["structure_source"] == "site_template" and doc["structures"][0]["name"] == "GTV"
    assert any("site's template" in n for n in doc["notes"])
