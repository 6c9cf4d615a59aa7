"""`synth --mid-treatment-fraction K`: mid-treatment FDG/FMISO PET, its truth, and an unchanged baseline cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import typer
from typer.testing import CliRunner

from radiogenomics.cli.synth import synth
from radiogenomics.cohort import load_cohort, validate_cohort
from radiogenomics.errors import InputError
from radiogenomics.synthetic import generate_cohort
from radiogenomics.synthetic.generate import TRUTH_COLUMNS
from radiogenomics.synthetic.midtreatment import MID_TRUTH_COLUMNS, reoxygenate, reoxygenation_at
from radiogenomics.synthetic.model import SynthParameters

N, SEED, GRID, K = 4, 5, 24, 10
BASELINE_TABLES = ("patients.csv", "expression.csv", "dvh.csv")


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mid")
    plain = generate_cohort(root / "plain", n_patients=N, seed=SEED, grid_size=GRID)
    mid = generate_cohort(root / "mid", n_patients=N, seed=SEED, grid_size=GRID, mid_treatment_fraction=K)
    return plain, mid


def _gtv_mean(image: Path, labels: Path) -> float:
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))
    return float(values[sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) == 1].mean())


def test_default_cohort_has_no_timepoints(cohorts: tuple[Path, Path]) -> None:
    plain, _ = cohorts
    assert "timepoint" not in pd.read_csv(plain / "images.csv").columns
    assert list(pd.read_csv(plain / "truth.csv").columns) == list(TRUTH_COLUMNS)
    assert not list(plain.glob("images/*/*_fx*.nii.gz"))
    assert "mid_treatment_fraction" not in (plain / "cohort.yaml").read_text()


def test_the_baseline_patient_is_unchanged(cohorts: tuple[Path, Path]) -> None:
    """The extra draws come from a separate stream: every baseline file is byte-identical."""
    plain, mid = cohorts
    for name in BASELINE_TABLES:
        assert (plain / name).read_bytes() == (mid / name).read_bytes(), name
    for path in sorted(plain.glob("images/*/*.nii.gz")):
        assert path.read_bytes() == (mid / path.relative_to(plain)).read_bytes(), path
    truth_plain, truth_mid = pd.read_csv(plain / "truth.csv"), pd.read_csv(mid / "truth.csv")
    pd.testing.assert_frame_equal(truth_plain, truth_mid[list(TRUTH_COLUMNS)])
    images_mid = pd.read_csv(mid / "images.csv")
    planning = images_mid[images_mid["timepoint"] == "planning"].drop(columns="timepoint").reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_csv(plain / "images.csv"), planning)


def test_mid_treatment_images_and_rows(cohorts: tuple[Path, Path]) -> None:
    _, mid = cohorts
    cohort = load_cohort(mid)
    assert validate_cohort(mid).problems == []
    assert cohort.timepoints() == ["planning", f"fraction_{K}"]
    assert "mid_treatment_fraction: 10" in (mid / "cohort.yaml").read_text()
    for pid in cohort.patient_ids:
        rows = cohort.image_rows(pid, timepoint=f"fraction_{K}")
        assert sorted(set(rows["modality"])) == ["PET_FDG", "PET_FMISO"] and len(rows) == 8
        assert {p.name for p in rows["image"]} == {f"pet_fdg_fx{K}.nii.gz", f"pet_fmiso_fx{K}.nii.gz"}
        assert set(rows["mask"]) == set(cohort.image_rows(pid)["mask"].dropna())  # the planning label map
        for modality in ("PET_FDG", "PET_FMISO"):
            base = sitk.ReadImage(str(cohort.image_rows(pid, modality)["image"].iloc[0]))
            now = sitk.ReadImage(str(rows[rows["modality"] == modality]["image"].iloc[0]))
            assert base.GetSize() == now.GetSize() and base.GetOrigin() == now.GetOrigin()
            assert base.GetSpacing() == now.GetSpacing()
        assert len(cohort.image_rows(pid)) == 13  # extract, train and predict see only these


def test_truth_records_the_response(cohorts: tuple[Path, Path]) -> None:
    _, mid = cohorts
    truth = pd.read_csv(mid / "truth.csv")
    assert list(truth.columns) == [*TRUTH_COLUMNS, *MID_TRUTH_COLUMNS]
    assert (truth["mid_fraction"] == K).all()
    assert truth["reoxygenation_fraction"].between(0, 1).all()
    assert np.allclose(truth["reoxygenation_fraction_mid"], truth["reoxygenation_fraction"])  # K = 10: r itself
    assert np.allclose(truth["hypoxic_fraction_baseline"], truth["hypoxic_fraction"])
    assert (truth["hypoxic_fraction_mid"] <= truth["hypoxic_fraction_baseline"]).all()
    assert (truth["mean_po2_mid_mmhg"] >= truth["mean_po2_baseline_mmhg"]).all()
    assert (truth["fmiso_tmr_mean_mid"] <= truth["fmiso_tmr_mean_baseline"]).all()
    assert truth["surviving_fraction_mid"].between(0, 1, inclusive="neither").all()
    # FDG falls, but far less than the clonogens do
    ratio = truth["fdg_suv_mean_mid"] / truth["fdg_suv_mean_baseline"]
    assert (ratio < 1).all() and (ratio > truth["surviving_fraction_mid"]).all() and (ratio > 0.3).all()
    assert (truth["mtv_mid_cc"] <= truth["mtv_baseline_cc"]).all()
    assert (truth["alpha_eff_baseline_per_gy"] <= truth["alpha_per_gy"] + 1e-9).all()
    assert (truth["alpha_eff_mid_per_gy"] <= truth["alpha_per_gy"] + 1e-9).all()


def test_the_images_show_the_response(cohorts: tuple[Path, Path]) -> None:
    _, mid = cohorts
    fdg, fmiso = [], []
    for folder in sorted((mid / "images").iterdir()):
        labels = folder / "labels.nii.gz"
        fdg.append(_gtv_mean(folder / f"pet_fdg_fx{K}.nii.gz", labels) / _gtv_mean(folder / "pet_fdg.nii.gz", labels))
        fmiso.append(_gtv_mean(folder / f"pet_fmiso_fx{K}.nii.gz", labels)
                     / _gtv_mean(folder / "pet_fmiso.nii.gz", labels))
    assert max(fdg) < 0.95 and min(fdg) > 0.3
    assert float(np.mean(fmiso)) < 1.0


def test_reoxygenation_model() -> None:
    params = SynthParameters()
    po2 = np.array([0.2, 2.0, 9.0, 29.0, 30.0, 60.0])
    assert np.allclose(reoxygenate(po2, 0.0, params), po2, rtol=1e-12)
    full = reoxygenate(po2, 1.0, params)
    assert np.allclose(full[:5], params.reoxygenation_oxic_po2_mmhg) and full[5] == 60.0
    half = reoxygenate(po2, 0.5, params)
    assert (half >= po2).all() and (np.diff(half) >= 0).all()
    assert reoxygenation_at(0.4, 10, params) == pytest.approx(0.4)
    assert reoxygenation_at(0.4, 5, params) < 0.4 < reoxygenation_at(0.4, 20, params)


@pytest.mark.parametrize("k", [0, -1, 30, 2.5, True])
def test_bad_fraction_is_refused_before_anything_is_created(tmp_path: Path, k: object) -> None:
    with pytest.raises(InputError, match="mid-treatment fraction"):
        generate_cohort(tmp_path / "c", n_patients=1, seed=0, grid_size=16, mid_treatment_fraction=k)  # type: ignore[arg-type]
    assert not (tmp_path / "c").exists()


def test_cli_option(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(synth)
    out = tmp_path / "cohort"
    result = CliRunner().invoke(app, [str(out), "--patients", "1", "--grid-size", "16", "--workers", "1",
                                      "--mid-treatment-fraction", "5"])
    assert result.exit_code == 0, result.output
    assert "after 5 fractions" in result.output and (out / "images/SYN0001/pet_fmiso_fx5.nii.gz").exists()
    bad = CliRunner().invoke(app, [str(tmp_path / "bad"), "--patients", "1", "--mid-treatment-fraction", "40"])
    assert bad.exit_code != 0 and not (tmp_path / "bad").exists()
