"""The generator is deterministic by seed: same seed -> same bytes (whatever the workers); another seed differs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from radiogenomics.synthetic import generate_cohort

TABLES = ("patients.csv", "images.csv", "expression.csv", "truth.csv", "dvh.csv", "cohort.yaml")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth_det")
    return {
        "a1": generate_cohort(root / "a1", n_patients=5, seed=11, grid_size=20, workers=1),
        "a2": generate_cohort(root / "a2", n_patients=5, seed=11, grid_size=20, workers=2),
        "b": generate_cohort(root / "b", n_patients=5, seed=12, grid_size=20, workers=1),
        "a_more": generate_cohort(root / "a_more", n_patients=7, seed=11, grid_size=20, workers=1),
    }


def test_same_seed_same_table_bytes_whatever_the_workers(cohorts: dict[str, Path]) -> None:
    for name in TABLES:
        assert (cohorts["a1"] / name).read_bytes() == (cohorts["a2"] / name).read_bytes(), name


def test_same_seed_same_image_bytes(cohorts: dict[str, Path]) -> None:
    d1, d2 = _digests(cohorts["a1"]), _digests(cohorts["a2"])
    assert d1 == d2
    assert sum(k.endswith(".nii.gz") for k in d1) == 5 * 5  # CT, FDG, FMISO, DOSE, labels per patient


def test_different_seed_differs(cohorts: dict[str, Path]) -> None:
    for name in ("patients.csv", "expression.csv", "truth.csv", "dvh.csv"):
        assert (cohorts["a1"] / name).read_bytes() != (cohorts["b"] / name).read_bytes(), name
    d1, db = _digests(cohorts["a1"]), _digests(cohorts["b"])
    assert d1["images/SYN0001/ct.nii.gz"] != db["images/SYN0001/ct.nii.gz"]


def test_patients_do_not_depend_on_cohort_size(cohorts: dict[str, Path]) -> None:
    """Patient i draws from its own SeedSequence child: a larger cohort starts with the same patients."""
    for name in ("patients.csv", "truth.csv", "expression.csv"):
        small = pd.read_csv(cohorts["a1"] / name, dtype=str)
        large = pd.read_csv(cohorts["a_more"] / name, dtype=str)
        assert len(large) == 7
        pd.testing.assert_frame_equal(small, large.iloc[:5])


def test_no_temporary_files_left(cohorts: dict[str, Path]) -> None:
    for path in cohorts["a2"].rglob("*"):
        assert not path.name.startswith(".tmp-"), path
