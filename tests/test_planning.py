"""`radiogenomics plan` (contract section 7, "Planning on the patient's anatomy") on a 32^3 synthetic cohort.

Records come from the session's registered prescriber (the hand-off of its cohort), re-addressed to four patients
of a planning cohort whose hand-off folders are written by the hand-off's own writer (objectives from the patients'
structures, dose maps from their PET). Then, before planning, the cohort is changed as a clinic's would be:
patient 2 loses its right parotid's rows (an objectives structure missing), patient 3's spinal cord is redrawn
through the target (a hard rail that cannot be met), patient 4 loses its target (no plan, the others complete).
Every number of the evaluation is re-read from the written files with independent code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from prescriber_factory import Bundle
from serving_factory import MODEL

from radiogenomics.errors import InputError
from radiogenomics.planning.optimizers.base import PlanningError, PlanProblem, PlanSettings, get_optimizer
from radiogenomics.planning.run import PlanRunResult, plan_cohort

SETTINGS = PlanSettings(beams=5, dose_grid_mm=4.0, max_iter=150)
CORD_LABEL, GTV_LABEL, PAROTID_R_LABEL = 4, 1, 3



def _labels(cohort: Path, pid: str) -> tuple[Path, np.ndarray, sitk.Image]:
    path = cohort / "images" / pid / "labels.nii.gz"
    image = sitk.ReadImage(str(path))
    return path, sitk.GetArrayFromImage(image), image


@pytest.fixture(scope="module")
def case(bundle: Bundle, registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from radiogenomics.cohort.loader import load_cohort
    from radiogenomics.planning import handoff
    from radiogenomics.planning.handoff import _Writer
    from radiogenomics.synthetic import generate_cohort

    base = tmp_path_factory.mktemp("planning")
    cohort = generate_cohort(base / "cohort", n_patients=4, seed=21, grid_size=32, overwrite=True)
    source = handoff(MODEL, bundle.features_path, base / "source", cohort=bundle.cohort)
    records = [json.loads((base / "source" / p.patient_id / "prescription.json").read_text())
               for p in source.patients]
    # patient 1 gets a record below the painting bound (84 / 1.07 Gy), so that its map is painted, not uniform
    records.sort(key=lambda r: r["recommended_total_dose_gy"] > 75.0)
    records = records[:4]
    assert records[0]["recommended_total_dose_gy"] <= 75.0
    ids = load_cohort(cohort).patient_ids
    # patient 3: the cord redrawn as a rod through the middle of the target (objectives built from this anatomy):
    # surrounded by 60+ Gy on every side, no photon plan can keep it below its 50 Gy limit
    path, labels, image = _labels(cohort, ids[2])
    gtv = labels == GTV_LABEL
    _, y0, x0 = (int(round(c)) for c in np.argwhere(gtv).mean(axis=0))
    rod = np.zeros_like(gtv)
    rod[:, y0, x0] = True
    labels[labels == CORD_LABEL] = 0
    labels[gtv & rod] = CORD_LABEL
    redrawn = sitk.GetImageFromArray(labels)
    redrawn.CopyInformation(image)
    sitk.WriteImage(redrawn, str(path), useCompression=True)
    writer = _Writer(base / "handoff", cohort=load_cohort(cohort), oars=None, target_name="GTV",
                     fmiso_reference_suv=None)
    (base / "handoff").mkdir()
    for record, pid in zip(records, ids, strict=True):
        writer.write({**record, "patient_id": pid})
    # after the hand-off: patient 2 without its right parotid, patient 4 without its target
    rows = pd.read_csv(cohort / "images.csv")
    drop = ((rows.patient_id == ids[1]) & (rows.roi == "parotid_r")) | ((rows.patient_id == ids[3]) &
                                                                          (rows.roi == "GTV"))
    rows[~drop].to_csv(cohort / "images.csv", index=False)
    result = plan_cohort(base / "handoff", cohort, base / "plans", settings=SETTINGS)
    return {"base": base, "cohort": cohort, "ids": ids, "result": result, "records": dict(zip(ids, records,
                                                                                              strict=True))}


def _evaluation(case: dict[str, Any], index: int) -> dict[str, Any]:
    result: PlanRunResult = case["result"]
    pid = case["ids"][index]
    return next(p.evaluation for p in result.plans if p.patient_id == pid)


def _structure(evaluation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in evaluation["structures"] if s["name"] == name)


def test_every_plannable_patient_gets_its_files_and_the_missing_target_fails(case: dict[str, Any]) -> None:
    result: PlanRunResult = case["result"]
    ids = case["ids"]
    assert sorted(p.patient_id for p in result.plans) == sorted(ids[:3])
    assert [pid for pid, _ in result.failures] == [ids[3]]
    assert "target 'GTV' is not in the patient's files" in result.failures[0][1]
    assert pd.read_csv(result.out_dir / "failures.csv").patient_id.tolist() == [ids[3]]
    for pid in ids[:3]:
        folder = result.out_dir / pid
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["plan_dose.nii.gz", "plan_dose.dcm", "uniform_reference_dose.nii.gz", "plan_evaluation.json"])
        evaluation = json.loads((folder / "plan_evaluation.json").read_text())
        assert evaluation["format"] == "radiogenomics-plan-evaluation/1" and evaluation["patient_id"] == pid
        assert evaluation["optimizer"]["name"] == "pyradplan" and evaluation["optimizer"]["version"] == "0.5.0"
        assert isinstance(evaluation["optimizer"]["iterations"], int)
        assert isinstance(evaluation["optimizer"]["converged"], bool)
        for key in ("regimen", "structures", "objectives", "rails", "tcp", "ntcp", "flags"):
            assert key in evaluation
    summary = pd.read_csv(result.summary_csv)
    assert sorted(summary.patient_id) == sorted(ids[:3])
    manifest = json.loads((result.out_dir / "plans.json").read_text())
    assert manifest["optimizer"] == "pyradplan" and len(manifest["failures"]) == 1


def test_planned_dose_is_on_the_ct_and_the_rtdose_agrees(case: dict[str, Any]) -> None:
    from radiogenomics.radiobiology import read_rtdose_gy

    pid = case["ids"][0]
    ct = sitk.ReadImage(str(case["cohort"] / "images" / pid / "ct.nii.gz"))
    dose = sitk.ReadImage(str(case["result"].out_dir / pid / "plan_dose.nii.gz"))
    assert dose.GetSize() == ct.GetSize()
    assert np.allclose(dose.GetOrigin(), ct.GetOrigin()) and np.allclose(dose.GetSpacing(), ct.GetSpacing())
    rtdose = read_rtdose_gy(case["result"].out_dir / pid / "plan_dose.dcm")
    a, b = sitk.GetArrayFromImage(dose), sitk.GetArrayFromImage(rtdose)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-3 * a.max()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_evaluation_matches_an_independent_reading_of_the_files(case: dict[str, Any], index: int) -> None:
    """Mean and max per structure re-read from plan_dose.nii.gz and the label map; the GTV mean near the record."""
    pid = case["ids"][index]
    evaluation = _evaluation(case, index)
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(case["result"].out_dir / pid / "plan_dose.nii.gz")))
    _, labels, _ = _labels(case["cohort"], pid)
    for name, label in (("GTV", GTV_LABEL), ("parotid_l", 2), ("spinal_cord", CORD_LABEL)):
        voxels = dose[labels == label].astype(np.float64)
        reported = _structure(evaluation, name)
        assert reported["mean_gy"] == pytest.approx(voxels.mean(), rel=1e-6)
        assert reported["max_gy"] == pytest.approx(voxels.max(), rel=1e-6)
    record = case["records"][pid]
    gtv_mean = _structure(evaluation, "GTV")["mean_gy"]
    assert gtv_mean == pytest.approx(record["recommended_total_dose_gy"], rel=0.08)


def test_painting_follows_the_map_better_than_the_uniform_plan(case: dict[str, Any]) -> None:
    pid = case["ids"][0]
    evaluation = _evaluation(case, 0)
    assert evaluation["painting"] == "dose_map"
    objective = next(o for o in evaluation["objectives"] if o["type"] == "dose_map")
    folder = case["result"].out_dir / pid
    prescribed = sitk.GetArrayFromImage(sitk.ReadImage(str(case["base"] / "handoff" / pid /
                                                           "dose_prescription.nii.gz")))
    _, labels, _ = _labels(case["cohort"], pid)
    target = labels == GTV_LABEL
    planned = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "plan_dose.nii.gz")))[target]
    uniform = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "uniform_reference_dose.nii.gz")))[target]
    presc = prescribed[target]
    assert np.ptp(presc) > 5.0  # a painted map, not a uniform one
    qf = float(np.mean(np.abs(planned / presc - 1)))
    assert objective["achieved"] == pytest.approx(qf, rel=1e-6)
    assert np.corrcoef(planned, presc)[0, 1] > np.corrcoef(uniform, presc)[0, 1] + 0.1
    # the target's other objectives agree with the map: no cap below its maximum
    objectives = json.loads((case["base"] / "handoff" / pid / "objectives.json").read_text())
    target_objectives = objectives["structures"][0]["objectives"]
    assert [o["type"] for o in target_objectives] == ["target_effect", "dose_map", "min_dvh", "max_dose"]
    assert target_objectives[0]["priority"] < target_objectives[1]["priority"]  # the map leads
    assert target_objectives[3]["dose_gy"] >= presc.max() - 1e-9
    assert target_objectives[2]["dose_gy"] <= presc.min()
    tcp = evaluation["tcp"]
    low, high = tcp["planned"]["tcp_range"]
    assert 0.0 <= low <= tcp["planned"]["tcp"] <= high <= 1.0
    assert tcp["uniform_reference"]["n_fractions"] == 35 and tcp["uniform_reference"]["total_dose_gy"] == 70.0
    assert tcp["inputs"] and any("FMISO" in note for note in tcp["inputs"])


def test_a_structure_missing_for_the_patient_is_flagged_not_planned(case: dict[str, Any]) -> None:
    evaluation = _evaluation(case, 1)
    assert "structure_missing" in evaluation["flags"]
    assert any("parotid_r" in note for note in evaluation["notes"])
    assert "parotid_r" not in {s["name"] for s in evaluation["structures"]}
    assert "parotid_r" not in {o["structure"] for o in evaluation["objectives"]}


def test_a_violated_hard_rail_is_reported_with_the_structure_and_the_amount(case: dict[str, Any]) -> None:
    pid = case["ids"][2]
    evaluation = _evaluation(case, 2)
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(case["result"].out_dir / pid / "plan_dose.nii.gz")))
    _, labels, _ = _labels(case["cohort"], pid)
    cord_max = float(dose[labels == CORD_LABEL].max())
    assert cord_max > 50.0  # the cord runs through the target: its 50 Gy limit cannot be met
    assert "plan_violates_rail" in evaluation["flags"]
    violation = next(v for v in evaluation["violations"] if v["structure"] == "spinal_cord")
    assert violation["hard"] and violation["metric"] == "max_gy"
    assert violation["achieved"] == pytest.approx(cord_max, rel=1e-6)
    assert violation["excess"] == pytest.approx(cord_max - violation["limit"], rel=1e-6)
    assert "spinal_cord" in violation["text"]
    assert isinstance(evaluation["optimizer"]["notes"], list)
    rail = next(r for r in evaluation["rails"] if r["structure"] == "spinal_cord" and r["metric"] == "max_gy")
    assert rail["met"] is False and rail["hard"] is True
    # an unaffected patient meets the cord rail
    assert "plan_violates_rail" not in _evaluation(case, 0)["flags"]


def test_ntcp_per_endpoint_from_the_planned_parotid_dose(case: dict[str, Any]) -> None:
    from radiogenomics.radiobiology.ntcp import ntcp_for_endpoint

    pid = case["ids"][0]
    evaluation = _evaluation(case, 0)
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(case["result"].out_dir / pid / "plan_dose.nii.gz")))
    _, labels, _ = _labels(case["cohort"], pid)
    row = next(n for n in evaluation["ntcp"] if n["endpoint"] == "xerostomia" and n["structure"] == "parotid_l")
    voxels = dose[labels == 2].astype(np.float64)
    n = evaluation["regimen"]["n_fractions"]
    expected = ntcp_for_endpoint(voxels, np.ones_like(voxels), "xerostomia", n_fractions=n, alpha_beta_gy=3.0)
    assert row["ntcp"] == pytest.approx(expected, rel=1e-6)
    assert 0.0 <= row["uniform_reference"] <= 1.0


def test_a_second_run_reuses_unchanged_plans(case: dict[str, Any]) -> None:
    again = plan_cohort(case["base"] / "handoff", case["cohort"], case["result"].out_dir,
                        patients=[case["ids"][0]], settings=SETTINGS)
    assert [p.reused for p in again.plans] == [True]
    # the folder's table still lists every plan in it, not only this run's patient
    assert sorted(pd.read_csv(again.summary_csv).patient_id) == sorted(case["ids"][:3])
    other = plan_cohort(case["base"] / "handoff", case["cohort"], case["base"] / "plans-other",
                        patients=[case["ids"][0]], settings=PlanSettings(beams=3, dose_grid_mm=6.0, max_iter=20),
                        uniform_reference=False)
    assert [p.reused for p in other.plans] == [False]
    assert not (other.out_dir / case["ids"][0] / "uniform_reference_dose.nii.gz").exists()
    assert other.plans[0].evaluation["settings"]["beams"] == 3


def test_zero_fluence_is_an_error_not_a_plan(case: dict[str, Any]) -> None:
    """Only upper limits: the optimum is no dose at all; the optimizer must refuse, never return an empty plan."""
    from radiogenomics.cohort.loader import load_cohort
    from radiogenomics.planning.anatomy import load_anatomy
    from radiogenomics.planning.optimizers.base import PlanStructure

    pid = case["ids"][0]
    anatomy = load_anatomy(load_cohort(case["cohort"]), pid, {"GTV": "target", "spinal_cord": "oar"})
    structures = [PlanStructure("GTV", "target", "GTV", anatomy.masks["GTV"], 0.3, 0.03, []),
                  PlanStructure("spinal_cord", "oar", "SpinalCord", anatomy.masks["spinal_cord"], 0.1, 0.05,
                                [{"type": "max_dose", "dose_gy": 45.0, "priority": 800}])]
    problem = PlanProblem(pid, anatomy.ct, structures, 30, 2.0, PlanSettings(beams=3, dose_grid_mm=6.0, max_iter=30))
    with pytest.raises(PlanningError, match="zero or non-finite fluence"):
        get_optimizer("pyradplan").optimize(problem)


def test_bad_inputs_are_clear_errors(case: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown optimizer"):
        get_optimizer("no-such-optimizer")
    with pytest.raises(InputError, match="must be positive"):
        PlanSettings(beams=0)
    with pytest.raises(InputError, match="does not exist"):
        plan_cohort(tmp_path / "nothing", case["cohort"], tmp_path / "plans")
    # objectives.json of another record: refused for that patient, named in failures.csv
    handoff = tmp_path / "handoff"
    shutil.copytree(case["base"] / "handoff" / case["ids"][0], handoff / case["ids"][0])
    objectives = json.loads((handoff / case["ids"][0] / "objectives.json").read_text())
    objectives["input_sha256"] = "0" * 64
    (handoff / case["ids"][0] / "objectives.json").write_text(json.dumps(objectives))
    with pytest.raises(InputError, match="no patient could be planned"):
        plan_cohort(handoff, case["cohort"], tmp_path / "plans", settings=SETTINGS)
    reasons = pd.read_csv(tmp_path / "plans" / "failures.csv")
    assert "does not belong to prescription.json" in reasons.reason[0]


def test_the_example_prints_the_lazzeroni_style_table(case: dict[str, Any], tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "examples" / "plan_cohort.py"
    proc = subprocess.run([sys.executable, str(script), str(case["result"].out_dir), "--csv", str(tmp_path / "t.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TCP >= 0.9 with every hard rail met" in proc.stdout and "standard uniform" in proc.stdout
    written = pd.read_csv(tmp_path / "t.csv")
    assert sorted(written.patient_id) == sorted(case["ids"][:3])
    summary = pd.read_csv(case["result"].summary_csv).set_index("patient_id")
    for _, row in written.iterrows():
        evaluation = _evaluation(case, case["ids"].index(row.patient_id))
        assert row.tcp_planned == pytest.approx(evaluation["tcp"]["planned"]["tcp"], rel=1e-9, abs=1e-12)
        assert row.tcp_uniform_reference == pytest.approx(summary.loc[row.patient_id, "tcp_uniform_reference"])
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "none")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
