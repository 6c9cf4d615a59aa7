"""Unwritable or misplaced paths exit 2 with one line naming the path and the fix (never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from radiogenomics.cli.app import main
from radiogenomics.synthetic import generate_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("paths") / "c", n_patients=2, seed=3, grid_size=16)


def _one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("make_args", [
    lambda c, t: ["extract", str(c), "--out", "/proc/no-such-dir/f.parquet", "--no-progress"],
    lambda c, t: ["extract", str(c), "--out", str(t / "afile" / "f.parquet"), "--no-progress"],
    lambda c, t: ["extract", str(c), "--out", str(t / "o.parquet"), "--cache-dir", str(t / "afile"),
                  "--no-progress"],
    lambda c, t: ["extract", str(c), "--out", str(t / "adir.parquet"), "--no-progress"],
    lambda c, t: ["synth", "/proc/no-such-dir", "--patients", "2"],
    lambda c, t: ["synth", str(t / "afile" / "sub"), "--patients", "2"],
    lambda c, t: ["synth", str(t / "afile"), "--patients", "2"],
    lambda c, t: ["demo", "--out", str(t / "afile"), "--patients", "2"],
], ids=["extract-out-in-proc", "extract-out-inside-file", "extract-cache-dir-is-file", "extract-out-is-folder",
        "synth-in-proc", "synth-inside-file", "synth-onto-file", "demo-onto-file"])
def test_bad_output_paths_exit_2(make_args, cohort: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                 capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir.parquet").mkdir()
    assert main(make_args(cohort, tmp_path)) == 2
    _one_line_error(capsys, "Fix:")


def test_patients_csv_that_is_a_folder(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "patients.csv").mkdir()
    for command in (["validate", str(broken)], ["extract", str(broken), "--out", str(tmp_path / "f.parquet")]):
        assert main(command) == 2
        _one_line_error(capsys, "patients.csv", "not a folder")


def test_images_csv_that_is_a_folder_is_reported(cohort: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "patients.csv").write_bytes((cohort / "patients.csv").read_bytes())
    (broken / "images.csv").mkdir()
    assert main(["validate", str(broken)]) == 2
    _one_line_error(capsys, "images.csv")


def test_failures_file_is_named_after_the_output(cohort: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for name in ("a", "b"):
        assert main(["extract", str(cohort), "--out", str(tmp_path / f"{name}.parquet"), "--cache-dir", str(cache),
                     "--no-progress", "--workers", "1"]) == 0
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.failures.csv").is_file()
        assert (tmp_path / f"{name}.dictionary.csv").is_file()
    assert not (tmp_path / "failures.csv").exists()


def test_demo_regenerates_its_cohort_when_the_options_change(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    base = ["demo", "--out", str(out), "--grid-size", "16", "--stop-after", "extract", "--new-patients", "0"]
    assert main([*base, "--patients", "2", "--seed", "0"]) == 0
    assert len(pd.read_csv(out / "cohort" / "truth.csv")) == 2
    capsys.readouterr()
    assert main([*base, "--patients", "3", "--seed", "1"]) == 0
    assert "regenerating" in capsys.readouterr().out
    assert len(pd.read_csv(out / "cohort" / "truth.csv")) == 3
    generator = yaml.safe_load((out / "cohort" / "cohort.yaml").read_text())["generator"]
    assert (generator["seed"], generator["n_patients"]) == (1, 3)
    assert main([*base, "--patients", "3", "--seed", "1"]) == 0
    assert "reusing" in capsys.readouterr().out


def test_demo_never_overwrites_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cohort = tmp_path / "demo" / "cohort"
    cohort.mkdir(parents=True)
    (cohort / "patients.csv").write_text("patient_id,site\nP1,head_neck\n")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--patients", "2"]) == 2
    _one_line_error(capsys, "did not generate")
    assert (cohort / "patients.csv").read_text().startswith("patient_id,site")
