"""`radiogenomics adapt` (contract section 8) on a synthetic cohort with a second FMISO/FDG PET after 10 fractions.

The session's registered prescriber predicts the baseline; then the mid-treatment images are changed as the four
cases of the issue need: a copy of the planning PET (no change in hypoxia: no adaptation), an oxic FMISO (full
reoxygenation: de-escalation to the site's floor), the mid-treatment FMISO on another grid (same answer), no
uptake (fallback to the baseline course). The whole-course OAR sum is tested on its own.
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
from serving_factory import MODEL

from radiogenomics.cli.app import main
from radiogenomics.radiobiology.adaptive import Course
from radiogenomics.radiobiology.rails import load_rails

K = 10



@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radiogenomics.synthetic import generate_cohort

    base = tmp_path_factory.mktemp("adapt")
    return generate_cohort(base / "cohort", n_patients=5, seed=4, grid_size=24, overwrite=True,
                           mid_treatment_fraction=K)


def _image(cohort: Path, pid: str, name: str) -> Path:
    return cohort / "images" / pid / name


def _write_like(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), useCompression=True)


@pytest.fixture(scope="module")
def adapted(cohort: Path, registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The four cases on patients 1-4 (patient 5 as simulated), and the adapt run's records by patient."""
    work = tmp_path_factory.mktemp("adapt-run")
    case = work / "cohort"
    shutil.copytree(cohort, case)
    ids = sorted(p.name for p in (case / "images").iterdir())
    fx = f"_fx{K}"
    # 1. no change: the mid-treatment PET are copies of the planning PET
    for name in ("pet_fmiso", "pet_fdg"):
        shutil.copy(_image(case, ids[0], f"{name}.nii.gz"), _image(case, ids[0], f"{name}{fx}.nii.gz"))
    # 2. full reoxygenation: FMISO at the oxic uptake everywhere uptake was above it (the reference tissue's level)
    fmiso = sitk.ReadImage(str(_image(case, ids[1], "pet_fmiso.nii.gz")))
    values = sitk.GetArrayFromImage(fmiso)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(_image(case, ids[1], "labels.nii.gz"))))
    outside = values[(labels != 1) & (values >= 0.25 * np.median(values[labels == 1]))]
    _write_like(np.where(labels == 1, np.median(outside), values), fmiso, _image(case, ids[1], f"pet_fmiso{fx}.nii.gz"))
    # 3. another grid: the simulated mid-treatment FMISO resampled onto a 1.5x coarser grid (linear)
    mid = sitk.ReadImage(str(_image(case, ids[2], f"pet_fmiso{fx}.nii.gz")))
    spacing = [s * 1.5 for s in mid.GetSpacing()]
    size = [int(round(n / 1.5)) for n in mid.GetSize()]
    coarse = sitk.Resample(mid, size, sitk.Transform(), sitk.sitkLinear, mid.GetOrigin(), spacing, mid.GetDirection())
    shutil.copy(_image(case, ids[2], f"pet_fmiso{fx}.nii.gz"), work / "fmiso_fine.nii.gz")
    sitk.WriteImage(coarse, str(_image(case, ids[2], f"pet_fmiso{fx}.nii.gz")), useCompression=True)
    # 4. no uptake: an empty mid-treatment FDG and FMISO
    for name in ("pet_fmiso", "pet_fdg"):
        reference = sitk.ReadImage(str(_image(case, ids[3], f"{name}{fx}.nii.gz")))
        _write_like(np.zeros(sitk.GetArrayFromImage(reference).shape), reference,
                    _image(case, ids[3], f"{name}{fx}.nii.gz"))
    out = work / "adapted.json"
    assert main(["adapt", str(case), "--model", MODEL, "--timepoint", f"fraction_{K}", "--out", str(out),
                 "--workers", "1"]) == 0
    records = {r["patient_id"]: r for r in json.loads(out.read_text())["records"]}
    # the same cohort with the fine-grid FMISO for patient 3: the other-grid case's reference answer
    fine = work / "fine"
    shutil.copytree(case, fine)
    shutil.copy(work / "fmiso_fine.nii.gz", _image(fine, ids[2], f"pet_fmiso{fx}.nii.gz"))
    assert main(["adapt", str(fine), "--model", MODEL, "--timepoint", f"fraction_{K}", "--out",
                 str(work / "fine.json"), "--workers", "1"]) == 0
    fine_records = {r["patient_id"]: r for r in json.loads((work / "fine.json").read_text())["records"]}
    return {"ids": ids, "records": records, "fine": fine_records, "cohort": case}


def test_every_imaged_patient_gets_an_exact_course(adapted: dict[str, Any]) -> None:
    rails = load_rails()
    patients = pd.read_csv(adapted["cohort"] / "patients.csv").set_index("patient_id")
    assert sorted(adapted["records"]) == adapted["ids"]
    for pid, r in adapted["records"].items():
        assert r["timepoint"] == f"fraction_{K}" and r["delivered_n_fractions"] == K
        regimen = patients.loc[pid]
        assert r["delivered_dose_gy"] == pytest.approx(K * regimen["total_dose_gy"] / regimen["n_fractions"])
        assert r["adapted_total_dose_gy"] == r["delivered_dose_gy"] + r["remaining_n_fractions"] * \
            r["remaining_dose_per_fraction_gy"]
        assert r["baseline_total_dose_gy"] == r["recommended_total_dose_gy"]
        site = rails.site(r["site"])
        assert site.min_total_dose_gy - 1e-9 <= r["adapted_total_dose_gy"] <= site.max_total_dose_gy + 1e-9
        if r["adapted_total_dose_gy"] < r["baseline_total_dose_gy"] - 1e-6:
            assert "deescalated" in r["flags"] and "escalated" not in r["flags"]
        elif r["adapted_total_dose_gy"] > r["baseline_total_dose_gy"] + 1e-6:
            assert "escalated" in r["flags"]
        else:
            assert not {"deescalated", "escalated"} & set(r["flags"])
        assert isinstance(r["adaptation"]["whole_course_oar_checks"], list)


def test_no_change_in_hypoxia_is_no_adaptation(adapted: dict[str, Any]) -> None:
    r = adapted["records"][adapted["ids"][0]]
    assert "adaptation_fallback" not in r["flags"]
    assert r["adapted_total_dose_gy"] == pytest.approx(r["baseline_total_dose_gy"], abs=1e-9)
    assert r["remaining_n_fractions"] == r["recommended_n_fractions"] - K
    assert r["response"]["mid_treatment"]["hypoxic_fraction"] == r["response"]["baseline"]["hypoxic_fraction"]
    assert r["tcp_adapted"] == pytest.approx(r["tcp_baseline"], abs=1e-12)


def test_full_reoxygenation_deescalates_to_the_floor(adapted: dict[str, Any]) -> None:
    r = adapted["records"][adapted["ids"][1]]
    floor = load_rails().site(r["site"]).min_total_dose_gy
    assert r["response"]["mid_treatment"]["hypoxic_fraction"] < r["response"]["baseline"]["hypoxic_fraction"]
    if r["baseline_total_dose_gy"] > floor + 1e-6:
        assert "deescalated" in r["flags"]
    assert r["adapted_total_dose_gy"] == pytest.approx(floor, abs=1e-9)
    assert r["adaptation"]["bound"] == "site_min_total"
    # at the floor the adapted course gives at least the baseline's projected TCP (reoxygenated: more control)
    assert r["tcp_adapted"] >= r["adaptation"]["tcp_target"] - 1e-9


def test_a_mid_treatment_image_on_another_grid_is_resampled(adapted: dict[str, Any]) -> None:
    pid = adapted["ids"][2]
    coarse, fine = adapted["records"][pid], adapted["fine"][pid]
    assert "adaptation_fallback" not in coarse["flags"]
    # the projected TCP of the course continued agrees; the courses may differ by a few fractions where it lies
    # near the control goal (0.95; measured: 0.93 fine, 0.997 coarse -> 23 and 20 fractions): the goal is a
    # threshold, and the coarse image's blur is a real loss of information
    assert abs(coarse["tcp_baseline"] - fine["tcp_baseline"]) <= 0.1
    assert abs(coarse["remaining_n_fractions"] - fine["remaining_n_fractions"]) <= 3
    # the coarse image is the fine one averaged over 1.5x larger voxels (8 mm at this 24^3 grid), then resampled
    # back: the target's pO2 is blurred with its surroundings, not lost
    assert coarse["response"]["mid_treatment"]["mean_po2_mmhg"] == pytest.approx(
        fine["response"]["mid_treatment"]["mean_po2_mmhg"], rel=0.25)


def test_an_image_without_uptake_falls_back_to_the_baseline_course(adapted: dict[str, Any]) -> None:
    r = adapted["records"][adapted["ids"][3]]
    assert "adaptation_fallback" in r["flags"]
    assert r["adapted_total_dose_gy"] == pytest.approx(r["baseline_total_dose_gy"], abs=1e-9)
    assert any("no tumour uptake" in n for n in r["adaptation"]["notes"])
    assert r["tcp_adapted"] is None


def test_the_whole_course_oar_sum_is_eqd2_and_caps_a_hard_organ() -> None:
    """A cord at 90 % of the target dose: 10 x 2 Gy delivered + 20 x 2 Gy, i.e. 30 x 1.8 Gy at the cord: EQD2 at
    alpha/beta 2 = 54 x 3.8 / 4 = 51.3 Gy > 50 Gy; the cap takes fractions away until 29 x 1.8 Gy (49.6 Gy), never
    below the floor."""
    from radiogenomics.planning.adaptive import cap_by_hard_organs, whole_course_oar
    from radiogenomics.radiobiology.dvh import DVH
    from radiogenomics.radiobiology.tissues import load_tissues

    rails, tissues = load_rails(), load_tissues()
    dose = np.array([63.0])  # the planned cord maximum at a 70 Gy reference prescription: 90 %
    dvh = DVH(structure="spinal_cord", dose_gy=dose, volume_cc=np.array([1.0]), bin_width_gy=0.1,
              voxel_volume_cc=1.0, mean_dose_gy=63.0, min_dose_gy=63.0, max_dose_gy=63.0, n_voxels=1)
    ab = float(tissues.lookup("spinal_cord")[0].alpha_beta_gy)
    limit = rails.oar("spinal_cord")
    checks = whole_course_oar([("spinal_cord", dvh, limit, ab)], 70.0, Course(10, 2.0), Course(20, 2.0))
    top = next(c for c in checks if c["metric"] == "max_eqd2_gy")
    d = 0.9 * 2.0
    expected = 30 * d * (d + ab) / (2 + ab)  # the same per-fraction dose throughout: one EQD2 of 30 fractions
    assert top["value"] == pytest.approx(expected, rel=1e-12) and top["hard"]
    assert ab == 2.0 and float(limit.max_dose_gy) == 50.0 and expected == pytest.approx(51.3)
    assert top["status"] == "exceeded"
    organs = [("spinal_cord", dvh, limit, ab)]
    capped, capped_checks = cap_by_hard_organs(organs, 70.0, Course(10, 2.0), Course(20, 2.0), 0)
    assert capped == Course(19, 2.0)  # 29 x 1.8 Gy: 49.59 Gy; 30 x 1.8 Gy: 51.3 Gy
    assert all(c["status"] == "ok" for c in capped_checks if c["hard"])
    floored, floored_checks = cap_by_hard_organs(organs, 70.0, Course(10, 2.0), Course(20, 2.0), 20)
    assert floored == Course(20, 2.0) and any(c["status"] == "exceeded" for c in floored_checks if c["hard"])
    two_part = whole_course_oar([("spinal_cord", dvh, limit, ab)], 70.0, Course(10, 2.0), Course(10, 3.0))
    part = next(c for c in two_part if c["metric"] == "max_eqd2_gy")["value"]
    d1, d2 = 0.9 * 2.0, 0.9 * 3.0
    assert part == pytest.approx(10 * d1 * (d1 + ab) / (2 + ab) + 10 * d2 * (d2 + ab) / (2 + ab), rel=1e-12)
