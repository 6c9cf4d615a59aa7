"""The adapted course downstream (issue 19, point 4): `handoff --adapted` and `plan` of adapted records.

A 32^3 synthetic cohort with a second FMISO/FDG PET after 10 fractions is adapted by `radiogenomics adapt` (the
session's registered prescriber). Patient 1's mid-treatment FMISO is made fully oxic (full reoxygenation). The
hand-off of the adapted records must cover the remaining fractions only: the regimen, the OAR limits (what the
delivered fractions left, in EQD2) and a map repainted from the mid-treatment PET whose mean is the remaining total;
`plan` then plans the remaining fractions and counts the delivered dose in the site's maximum-dose rail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from serving_factory import MODEL

from radiogenomics.cli.app import main
from radiogenomics.errors import InputError
from radiogenomics.radiobiology.rails import load_rails

K = 10


def _eqd2(total_gy: float, n: float, ab: float) -> float:
    """EQD2 written out (Withers 1983), independent of the package's helpers."""
    return total_gy * (total_gy / n + ab) / (2.0 + ab)


def _write_like(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), useCompression=True)


@pytest.fixture(scope="module")
def case(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from radiogenomics.synthetic import generate_cohort

    base = tmp_path_factory.mktemp("adaptive-planning")
    cohort = generate_cohort(base / "cohort", n_patients=3, seed=8, grid_size=32, overwrite=True,
                             mid_treatment_fraction=K)
    ids = sorted(p.name for p in (cohort / "images").iterdir())
    folder = cohort / "images" / ids[0]
    fmiso = sitk.ReadImage(str(folder / "pet_fmiso.nii.gz"))
    values = sitk.GetArrayFromImage(fmiso)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
    outside = values[(labels != 1) & (values >= 0.25 * np.median(values[labels == 1]))]
    _write_like(np.where(labels == 1, np.median(outside), values), fmiso, folder / f"pet_fmiso_fx{K}.nii.gz")
    adapted = base / "adapted.json"
    assert main(["adapt", str(cohort), "--model", MODEL, "--timepoint", f"fraction_{K}", "--out", str(adapted),
                 "--workers", "1"]) == 0
    records = {r["patient_id"]: r for r in json.loads(adapted.read_text())["records"]}
    out = base / "handoff"
    assert main(["handoff", "--adapted", str(adapted), "--cohort", str(cohort), "--out", str(out)]) == 0
    return {"base": base, "cohort": cohort, "ids": ids, "adapted": adapted, "records": records, "handoff": out}


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_objectives_cover_the_remaining_fractions(case: dict[str, Any]) -> None:
    """Regimen, target cap and every OAR limit of the hand-off are those of the remaining fractions."""
    rails = load_rails()
    for pid, record in case["records"].items():
        folder = case["handoff"] / pid
        objectives = _read(folder / "objectives.json")
        assert _read(folder / "prescription.json")["adapted_total_dose_gy"] == record["adapted_total_dose_gy"]
        n, d = record["remaining_n_fractions"], record["remaining_dose_per_fraction_gy"]
        assert objectives["n_fractions"] == n
        assert objectives["dose_per_fraction_gy"] == pytest.approx(d, rel=1e-12)
        assert objectives["total_dose_gy"] == pytest.approx(n * d, rel=1e-12)
        assert objectives["adaptive"]["timepoint"] == f"fraction_{K}"
        assert objectives["adaptive"]["delivered_dose_gy"] == pytest.approx(record["delivered_dose_gy"])
        target = next(s for s in objectives["structures"] if s["role"] == "target")
        cap = next(o for o in target["objectives"] if o["type"] == "max_dose")["dose_gy"]
        assert cap + record["delivered_dose_gy"] <= rails.site(record["site"]).max_voxel_dose_gy + 1e-9
        checked = 0
        for structure in objectives["structures"]:
            if structure["role"] != "oar":
                continue
            ab = structure["alpha_beta_gy"]
            for objective in structure["objectives"]:
                if "rail_dose_gy" not in objective:
                    continue
                # the delivered part and the remaining limit, both as EQD2, never exceed the rail
                whole = objective["delivered_eqd2_gy"] + _eqd2(objective["dose_gy"], n, ab)
                assert whole <= objective["rail_dose_gy"] * (1 + 1e-9) + 0.01, (pid, structure["name"], objective)
                assert objective["delivered_eqd2_gy"] > 0
                checked += 1
        assert checked > 0, pid


def test_map_is_repainted_for_the_remaining_fractions(case: dict[str, Any]) -> None:
    """The map's mean is the remaining total; full reoxygenation flattens it against the baseline oxygenation."""
    from radiogenomics.cohort.loader import load_cohort
    from radiogenomics.planning.remaining import remaining_biology, remaining_prescription_map

    rails = load_rails()
    for pid, record in case["records"].items():
        folder = case["handoff"] / pid
        dose = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "dose_prescription.nii.gz")))
        inside = dose[dose > 0]
        remaining = record["remaining_n_fractions"] * record["remaining_dose_per_fraction_gy"]
        assert float(inside.mean()) == pytest.approx(remaining, rel=2e-3)  # float32 file
        assert float(inside.max()) + record["delivered_dose_gy"] <= rails.site(record["site"]).max_voxel_dose_gy
    pid = case["ids"][0]
    assert "deescalated" in case["records"][pid]["flags"]
    # the same patient with room above the site's floor (the adapted course itself is at the floor: uniform)
    record = {**case["records"][pid], "remaining_n_fractions": 30, "remaining_dose_per_fraction_gy": 2.0}
    record["adapted_total_dose_gy"] = record["delivered_dose_gy"] + 60.0
    cohort = load_cohort(case["cohort"])
    oxic = remaining_biology(record, cohort)
    baseline = remaining_biology({**record, "flags": [*record["flags"], "adaptation_fallback"]}, cohort)
    assert oxic is not None and baseline is not None
    assert float(np.mean(oxic.po2_mmhg[oxic.pet.mask])) > float(np.mean(baseline.po2_mmhg[baseline.pet.mask]))
    spread = []
    for biology in (oxic, baseline):
        painted = remaining_prescription_map(record, biology, site=record["site"])
        values = painted.dose_gy[painted.mask]
        spread.append(float(values.std() / values.mean()))
    assert spread[0] < spread[1], spread


def test_handoff_adapted_refuses_what_it_cannot_use(case: dict[str, Any], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    adapted, cohort = str(case["adapted"]), str(case["cohort"])
    assert main(["handoff", "--adapted", adapted, "--out", str(tmp_path / "a")]) == 2
    assert "--cohort" in capsys.readouterr().err
    assert main(["handoff", "--adapted", adapted, "--cohort", cohort, "--model", MODEL,
                 "--out", str(tmp_path / "b")]) == 2
    assert "--model" in capsys.readouterr().err
    baseline = case["adapted"].with_name(f"{case['adapted'].stem}.baseline.json")
    assert main(["handoff", "--adapted", str(baseline), "--cohort", cohort, "--out", str(tmp_path / "c")]) == 2
    assert "remaining_n_fractions" in capsys.readouterr().err
    # CSV, as adapt also writes it, gives the same objectives
    csv = tmp_path / "adapted.csv"
    assert main(["adapt", cohort, "--model", MODEL, "--timepoint", f"fraction_{K}", "--out", str(csv),
                 "--workers", "1"]) == 0
    pid = case["ids"][1]
    assert main(["handoff", "--adapted", str(csv), "--cohort", cohort, "--out", str(tmp_path / "d"),
                 "--patients", f"{pid},nobody"]) == 0
    again, first = (_read(folder / pid / "objectives.json") for folder in (tmp_path / "d", case["handoff"]))
    assert again["structures"] == first["structures"]
    failures = (tmp_path / "d" / "failures.csv").read_text()
    assert "nobody" in failures


def test_plan_of_an_adapted_course(case: dict[str, Any]) -> None:
    """`plan` plans the remaining fractions; the delivered dose counts in the site's maximum; the reference is the
    baseline course continued."""
    from radiogenomics.planning.optimizers.base import PlanSettings
    from radiogenomics.planning.run import plan_cohort

    pid = case["ids"][0]
    record = case["records"][pid]
    out = case["base"] / "plans"
    plan_cohort(case["handoff"], case["cohort"], out, patients=[pid],
                settings=PlanSettings(beams=3, dose_grid_mm=6.0, max_iter=30))
    evaluation = _read(out / pid / "plan_evaluation.json")
    course = evaluation["adapted_course"]
    assert course["delivered_dose_gy"] == pytest.approx(record["delivered_dose_gy"])
    assert evaluation["regimen"]["n_fractions"] == record["remaining_n_fractions"]
    reference = evaluation["tcp"]["uniform_reference"]
    assert reference["n_fractions"] == int(round(record["recommended_n_fractions"])) - K
    assert "continued" in reference["source"]
    planned = sitk.GetArrayFromImage(sitk.ReadImage(str(out / pid / "plan_dose.nii.gz")))
    body = next(r for r in evaluation["rails"] if r["metric"] == "max_gy" and "limit_gy" in r
                and "max_voxel_dose_gy" in r["source"])
    assert body["achieved"] == pytest.approx(float(planned.max()) + record["delivered_dose_gy"], rel=1e-5)
    assert 0.0 <= evaluation["tcp"]["planned"]["tcp"] <= 1.0
    assert any("adapted course" in note for note in evaluation["notes"])



def test_an_adapted_plan_checks_ntcp_over_the_whole_course(case: dict[str, Any]) -> None:
    """The NTCP rail of an adapted plan adds the delivered gEUD: never below the remaining fractions' own NTCP."""
    evaluation = _read(case["base"] / "plans" / case["ids"][0] / "plan_evaluation.json")
    whole = [r for r in evaluation["rails"] if r["metric"].startswith("ntcp_") and "whole course" in r["source"]]
    assert whole
    for row in whole:
        own = next(n["ntcp"] for n in evaluation["ntcp"] if n["structure"] == row["structure"]
                   and row["metric"] == f"ntcp_{n['endpoint']}")
        assert row["achieved"] >= own - 1e-12


def test_an_edited_or_broken_adapted_record_is_refused(case: dict[str, Any], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Outside the site's rails, a non-object adaptation, no patient id: a named failure, the others complete."""
    records = json.loads(case["adapted"].read_text())["records"]
    first, second, third = (dict(r) for r in records[:3])
    first.update(remaining_n_fractions=25, remaining_dose_per_fraction_gy=4.0,
                 adapted_total_dose_gy=first["delivered_dose_gy"] + 100.0)  # 4 Gy per fraction, > 80 Gy in all
    second["adaptation"] = "x"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({"records": [first, second, third]}))
    assert main(["handoff", "--adapted", str(path), "--cohort", str(case["cohort"]), "--out",
                 str(tmp_path / "out")]) == 0
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert f"{first['patient_id']}," in failures and "outside the site's rails" in failures
    assert f"{second['patient_id']}," in failures and "adaptation is not an object" in failures
    assert (tmp_path / "out" / third["patient_id"] / "objectives.json").is_file()
    assert not (tmp_path / "out" / first["patient_id"]).exists()
    capsys.readouterr()
    del third["patient_id"]
    path.write_text(json.dumps({"records": [third]}))
    assert main(["handoff", "--adapted", str(path), "--cohort", str(case["cohort"]), "--out",
                 str(tmp_path / "none")]) == 2
    assert "record 0 has no patient_id" in capsys.readouterr().err


def test_left_and_right_organs_keep_their_own_delivered_dose(case: dict[str, Any]) -> None:
    from radiogenomics.planning.remaining import delivered_dose

    record = dict(case["records"][case["ids"][1]])
    record["adaptation"] = {**record["adaptation"], "delivered_oar_eqd2": [
        {"structure": "parotid_l", "organ": "parotid", "mean_dose": 15.0, "max_dose": 30.0},
        {"structure": "Parotid R", "organ": "parotid", "mean_dose": 3.0, "max_dose": 9.0}]}
    given = delivered_dose(record).oar_eqd2_gy
    assert given["parotid_l"]["mean_dose"] == 15.0 and given["parotid_r"]["mean_dose"] == 3.0


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_adapted_records_round_trip(case: dict[str, Any], tmp_path: Path, suffix: str) -> None:
    """adapt's three formats read back as written; a numeric-looking patient id stays text."""
    from radiogenomics.jsonio import json_safe
    from radiogenomics.planning.adapted_records import read_adapted, write_adapted

    records = [dict(r) for r in json.loads(case["adapted"].read_text())["records"]]
    records[0]["patient_id"] = "007"
    path = tmp_path / f"adapted{suffix}"
    write_adapted(records, path)
    again = read_adapted(path)
    assert again[0]["patient_id"] == "007"
    for before, after in zip(records, again, strict=True):
        expected = {k: v for k, v in json_safe(before).items() if v is not None}
        assert {k: v for k, v in after.items() if v is not None} == expected, before["patient_id"]


def test_a_mid_treatment_image_that_misses_the_target_is_not_read_as_oxic(case: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    """Half the planning grid in the mid-treatment FMISO: the target is not covered -> InputError (the fallback)."""
    from radiogenomics.cohort.loader import load_cohort
    from radiogenomics.planning.adaptive import mid_treatment_pet
    from radiogenomics.planning.dose_map import load_pet

    cohort = tmp_path / "cohort"
    shutil.copytree(case["cohort"], cohort)
    pid = case["ids"][1]
    path = cohort / "images" / pid / f"pet_fmiso_fx{K}.nii.gz"
    image = sitk.ReadImage(str(path))
    size = list(image.GetSize())
    sitk.WriteImage(sitk.RegionOfInterest(image, [size[0] // 3, *size[1:]], [0, 0, 0]), str(path))
    loaded = load_cohort(cohort)
    pet, _ = load_pet(loaded, pid, "GTV")
    assert pet is not None
    with pytest.raises(InputError, match="does not cover the planning target"):
        mid_treatment_pet(loaded, pid, f"fraction_{K}", pet)
