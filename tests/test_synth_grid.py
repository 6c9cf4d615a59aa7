"""Synthetic cohorts at clinical sizes (issue 18.4): the same seed is the same patient at every grid size.

Grids finer than the model grid (64^3 of 2 x 2 x 2.5 mm), non-cubic or with ``spacing_mm`` simulate the patient on
the model grid and write it on their own grid, so truth.csv and patients.csv are identical to the 64 grid's.
The GTV of the written label map (nearest neighbour from the model's voxels) is within the rasterisation bound:
each model voxel of edge H_k holds floor(H_k / h_k) or ceil(H_k / h_k) image voxel centres of edge h_k per axis,
so N_gtv * prod(floor(H/h) h) <= V_image <= N_gtv * prod(ceil(H/h) h); exact when h divides H (64 k voxels).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from typer.testing import CliRunner

from radiogenomics.errors import InputError
from radiogenomics.synthetic import generate_cohort
from radiogenomics.synthetic.anatomy import REFERENCE_SPACING_MM

N = 2


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth_grid")
    return {
        "64": generate_cohort(root / "g64", n_patients=N, seed=5, grid_size=64, workers=1),
        "128": generate_cohort(root / "g128", n_patients=N, seed=5, grid_size=128, workers=1),
        "clinical": generate_cohort(root / "clin", n_patients=N, seed=5, grid_size="112,112,48", workers=1,
                                    spacing_mm=(1.5, 1.5, 4.0)),
    }


@pytest.mark.parametrize("name", ["128", "clinical"])
def test_same_seed_same_truth_and_patients_at_every_grid(cohorts: dict[str, Path], name: str) -> None:
    for table in ("truth.csv", "patients.csv", "expression.csv"):
        assert (cohorts["64"] / table).read_bytes() == (cohorts[name] / table).read_bytes(), table


def test_the_64_grid_is_the_model_grid(cohorts: dict[str, Path]) -> None:
    meta = yaml.safe_load((cohorts["128"] / "cohort.yaml").read_text())["generator"]
    assert meta["grid_size"] == 128 and meta["model_grid_size"] == 64 and meta["spacing_mm"] == [1.0, 1.0, 1.25]
    meta = yaml.safe_load((cohorts["clinical"] / "cohort.yaml").read_text())["generator"]
    assert meta["grid_size"] == [112, 112, 48] and meta["spacing_mm"] == [1.5, 1.5, 4.0]


@pytest.mark.parametrize("name", ["64", "128", "clinical"])
def test_gtv_volume_within_the_rasterisation_bound(cohorts: dict[str, Path], name: str) -> None:
    truth = pd.read_csv(cohorts[name] / "truth.csv").set_index("patient_id")
    for pid in truth.index:
        labels = sitk.ReadImage(str(cohorts[name] / "images" / pid / "labels.nii.gz"))
        h = np.array(labels.GetSpacing())
        volume = float((sitk.GetArrayViewFromImage(labels) == 1).sum()) * float(np.prod(h)) / 1000.0
        model_cc = truth.at[pid, "gtv_volume_cc"]
        big_h = np.array(REFERENCE_SPACING_MM)
        n_model = model_cc / (float(np.prod(big_h)) / 1000.0)
        low = n_model * float(np.prod(np.floor(big_h / h + 1e-9) * h)) / 1000.0
        high = n_model * float(np.prod(np.ceil(big_h / h - 1e-9) * h)) / 1000.0
        assert low * (1 - 1e-5) <= volume <= high * (1 + 1e-5), (name, pid, volume, low, high)
        if name in ("64", "128"):  # h divides H: the model's volume exactly (truth.csv has 6 digits)
            assert math.isclose(volume, model_cc, rel_tol=1e-5)


def test_image_sizes_and_dvh_follow_the_written_grid(cohorts: dict[str, Path]) -> None:
    image = sitk.ReadImage(str(cohorts["clinical"] / "images" / "SYN0001" / "ct.nii.gz"))
    assert image.GetSize() == (112, 112, 48) and image.GetSpacing() == (1.5, 1.5, 4.0)
    assert image.GetPixelID() == sitk.sitkInt16
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(cohorts["clinical"] / "images" / "SYN0001" / "labels.nii.gz")))
    dvh = pd.read_csv(cohorts["clinical"] / "dvh.csv")
    gtv = dvh[(dvh["patient_id"] == "SYN0001") & (dvh["structure"] == "GTV")]["volume_cc"].sum()
    assert gtv == pytest.approx((labels == 1).sum() * 1.5 * 1.5 * 4.0 / 1000.0, rel=1e-4)


@pytest.mark.parametrize("kwargs", [dict(grid_size=513), dict(grid_size="512,512"), dict(grid_size="a,b,c"),
                                    dict(grid_size=64, spacing_mm="0.98,0.98"), dict(grid_size=64, spacing_mm="0,1,1")])
def test_refusals_leave_no_folder(tmp_path: Path, kwargs: dict[str, object]) -> None:
    out = tmp_path / "new" / "cohort"
    with pytest.raises(InputError):
        generate_cohort(out, n_patients=1, seed=0, workers=1, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "new").exists()


def test_cli_refusal_leaves_no_folder(tmp_path: Path) -> None:
    from radiogenomics.cli.app import app

    out = tmp_path / "cohort"
    result = CliRunner().invoke(app, ["synth", str(out), "--patients", "1", "--grid-size", "1024"])
    assert isinstance(result.exception, InputError)
    assert not out.exists()
    result = CliRunner().invoke(app, ["synth", str(out), "--patients", "1", "--spacing-mm", "1,1"])
    assert isinstance(result.exception, InputError)
    assert not out.exists()


def test_a_failure_mid_write_leaves_an_existing_folder(tmp_path: Path) -> None:
    """A failure after the checks (here: the old images/ is a file, which overwrite cannot remove as a folder)
    leaves a folder that existed before; one the call created would be removed (generate_cohort's except)."""
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "images").write_text("in the way")
    with pytest.raises(OSError):
        generate_cohort(existing, n_patients=1, seed=0, grid_size=16, workers=1, overwrite=True)
    assert existing.is_dir() and (existing / "images").is_file()
