"""Review findings: images.csv duplicates by role slug, the delivered_* checks, the delivered course against the
timepoint, crop rows by role key, the --dask worker configuration and fold errors, malformed --dask addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cohort_factory import write_good_cohort

from radiogenomics.cli.app import main
from radiogenomics.cohort import load_cohort, validate_cohort
from radiogenomics.dask_cluster import check_reachable, check_scheduler, connect, parse_address
from radiogenomics.errors import InputError
from radiogenomics.models.crops import CropSpec, _rows
from radiogenomics.training import cluster
from radiogenomics.training.config import TrainConfig

MALFORMED = ("tcp://localhost:notaport", "localhost:99999", "http://localhost:8786", "foo bar")


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_good_cohort(tmp_path / "cohort")


def _codes(root: Path) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for p in validate_cohort(root, check_images=False).problems:
        found.setdefault(p.code, []).append(p)
    return found


def _delivered(root: Path, n: str, dose: str, k: int | None = 10) -> Path:
    """HN-001 gets delivered_n_fractions / delivered_dose_gy and (``k``) a fraction_K CT row."""
    original = root / "patients.original.csv"
    if not original.exists():
        original.write_text((root / "patients.csv").read_text())
    lines = original.read_text().splitlines()
    rows = [lines[0] + ",delivered_n_fractions,delivered_dose_gy", lines[1] + f",{n},{dose}", lines[2] + ",,"]
    (root / "patients.csv").write_text("\n".join(rows) + "\n")
    if k is not None:
        images = (root / "images.csv").read_text().splitlines()
        out = [images[0] + ",timepoint"] + [line + "," for line in images[1:]]
        out.append(f"HN-001,CT,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,GTV,1,fraction_{k}")
        (root / "images.csv").write_text("\n".join(out) + "\n")
    return root


# 1. duplicate images.csv rows keyed by the feature-column slug of the role


def test_duplicate_image_rows_match_the_role_slug(good: Path) -> None:
    text = (good / "images.csv").read_text()
    text += ("HN-001,CT,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,spinal_cord,2\n"
             "HN-001,CT,images/HN-001/ct.nii.gz,images/HN-001/labels.nii.gz,SpinalCord,2\n")
    (good / "images.csv").write_text(text)
    dupes = _codes(good)["duplicate_image_row"]
    assert [(p.row, p.patient_id, p.severity) for p in dupes] == [(7, "HN-001", "error")]
    assert "row 6" in dupes[0].message and "'spinal_cord'" in dupes[0].message and "SpinalCord" in dupes[0].message
    with pytest.raises(InputError, match="duplicate_image_row"):
        load_cohort(good)


# 5. delivered_* against the course


def test_delivered_dose_above_the_course_is_an_error(good: Path) -> None:
    found = _codes(_delivered(good, "10", "80", k=None))  # 80 Gy delivered of a 70 Gy course
    exceeds = found["delivered_exceeds_course"]
    assert [(p.severity, p.column) for p in exceeds] == [("error", "delivered_dose_gy")]


def test_delivered_whole_course_is_an_error(good: Path) -> None:
    found = _codes(_delivered(good, "35", "70", k=None))  # 35 of 35 fractions: nothing left to adapt
    whole = found["delivered_whole_course"]
    assert [(p.severity, p.patient_id, p.column) for p in whole] == [("error", "HN-001", "delivered_n_fractions")]


def test_negative_delivered_dose_is_one_error(good: Path) -> None:
    problems = validate_cohort(_delivered(good, "10", "-2", k=None), check_images=False).problems
    assert [(p.code, p.severity) for p in problems] == [("negative_dose", "error")]
    problems = validate_cohort(_delivered(good, "-1", "20", k=None), check_images=False).problems
    assert [(p.code, p.severity) for p in problems] == [("out_of_range_delivered_n_fractions", "error")]


# 6. patients.csv delivered_n_fractions describes the timepoint


def test_delivered_n_fractions_other_than_the_timepoint(good: Path) -> None:
    _delivered(good, "10", "20", k=8)  # delivered_n_fractions 10, imaging after 8
    differs = _codes(good)["delivered_differs_from_timepoint"]
    assert [(p.row, p.patient_id, p.severity) for p in differs] == [(6, "HN-001", "error")]
    assert "delivered_n_fractions = 10" in differs[0].message and "to 8" in differs[0].fix
    assert main(["validate", str(good), "--json"]) == 2

def test_delivered_course_other_than_the_timepoint(tmp_path: Path) -> None:
    # the loaded cohort's delivered course refuses it too (a timepoint without a row of images.csv)
    good = _delivered(write_good_cohort(tmp_path / "cohort"), "10", "20", k=10)
    cohort = load_cohort(good)
    assert cohort.delivered_course("HN-001", "fraction_10").n_fractions == 10
    with pytest.raises(InputError) as info:
        cohort.delivered_course("HN-001", "fraction_12")
    message = str(info.value)
    assert "HN-001" in message and "10" in message and "fraction_12" in message and "12" in (info.value.fix or "")


# 7. crop rows: the role in any case/spacing


def test_crop_rows_match_the_role_in_any_case() -> None:
    images = pd.DataFrame({"patient_id": ["P1", "P1", "P2"], "modality": ["CT", "PET_FDG", "CT"],
                           "roi": ["gtv", "G T V", "GTV"], "image": ["a", "b", "c"]})
    rows = _rows(images, "P1", CropSpec(modalities=("CT", "PET_FDG"), roi="GTV"))
    assert sorted(rows) == ["CT", "PET_FDG"] and rows["CT"]["image"] == "a"
    assert _rows(images, "P1", CropSpec(modalities=("CT",), roi="Parotid_L")) == {}


# 2. the workers get no Optuna storage


def test_worker_config_has_no_storage() -> None:
    config = TrainConfig.model_validate({"search": {"storage": "sqlite:////tmp/shared.db", "n_trials": 3}})
    worker = cluster.worker_config(config)
    assert worker.search.storage_url(None) is None and worker.search.storage is None
    assert config.search.storage_url(None) == "sqlite:////tmp/shared.db"  # the coordinator keeps it
    assert worker.search.n_trials == 3 and worker.seed == config.seed


class _Future:
    def result(self) -> Any:
        raise AssertionError("not collected in this test")


class _Client:
    def __init__(self) -> None:
        self.submitted: list[tuple[str, Any]] = []

    def submit(self, func: Any, *args: Any, key: str, pure: bool) -> _Future:
        self.submitted.append((key, args))
        return _Future()


class _CV:
    def __init__(self, fails: bool) -> None:
        self.fails = fails

    def outer_folds(self) -> list[Any]:
        if self.fails:
            raise InputError("cannot build the outer folds", fix="add patients")
        return []


def test_dask_submit_defers_a_candidates_input_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from radiogenomics.training import run

    monkeypatch.setattr(run, "candidate_context", lambda *args: None)
    monkeypatch.setattr(run, "candidate_cv", lambda task, endpoint, name, *args, **kwargs: _CV(name == "multimodal"))
    config = TrainConfig.model_validate({"search": {"storage": "sqlite:////tmp/shared.db"}})
    client = _Client()
    training = cluster.DaskTraining(client, "run", config, None, tmp_path, lambda *args: None)
    training.submit("outcome_alpha", None, ["multimodal", "ridge"], pd.DataFrame(), [], tmp_path, False)
    keys = [key for key, _ in client.submitted]
    assert keys == ["rg-train-run-outcome_alpha-data", "rg-train-run-outcome_alpha-ridge-final"]
    unit = client.submitted[1][1][0]
    assert unit.config.search.storage is None  # the coordinator's storage is not sent to the workers
    with pytest.raises(InputError, match="outer folds"):  # where a local run raises it (run_task skips it)
        training.evaluate("outcome_alpha", None, "multimodal", pd.DataFrame(), [], None, False)  # type: ignore[arg-type]


# 4. malformed --dask addresses


@pytest.mark.parametrize("address", MALFORMED)
def test_malformed_dask_address_is_bad_input(address: str) -> None:
    with pytest.raises(InputError, match="--dask") as info:
        parse_address(address)
    assert "tcp://" in (info.value.fix or "")
    with pytest.raises(InputError):
        check_reachable(address)
    with pytest.raises(InputError):
        check_scheduler(address)
    with pytest.raises(InputError), connect(address):
        pass


@pytest.mark.parametrize("address", MALFORMED)
def test_malformed_dask_address_exits_2(good: Path, tmp_path: Path, address: str) -> None:
    assert main(["extract", str(good), "--out", str(tmp_path / "f.parquet"), "--dask", address,
                 "--no-progress"]) == 2


def test_wellformed_dask_addresses_parse() -> None:
    assert parse_address("localhost:8786") == ("tcp", "localhost", 8786)
    assert parse_address("tls://scheduler.example:8786") == ("tls", "scheduler.example", 8786)
    assert parse_address("inproc://10.0.0.1/1/2")[0] == "inproc"
