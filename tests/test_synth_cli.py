"""`radiogenomics synth`: arguments, bad input (InputError -> exit 2), progress and summary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from radiogenomics.cli.synth import synth
from radiogenomics.errors import InputError


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    app.command()(synth)
    return app


def _invoke(app: typer.Typer, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_synth_writes_a_cohort_and_a_summary(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    result = _invoke(app, str(out), "--patients", "3", "--seed", "5", "--grid-size", "16", "--workers", "1")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines at the terminal width
    assert "3 patients" in text and "local failures" in text
    assert len(pd.read_csv(out / "patients.csv")) == 3
    assert (out / "truth.csv").exists() and (out / "images" / "SYN0003" / "ct.nii.gz").exists()


@pytest.mark.parametrize("args", [("--patients", "0"), ("--patients", "-4"), ("--seed", "-1"),
                                  ("--workers", "0"), ("--grid-size", "8"), ("--grid-size", "1000")])
def test_bad_numbers_are_input_errors(app: typer.Typer, tmp_path: Path, args: tuple[str, str]) -> None:
    result = _invoke(app, str(tmp_path / "c"), *args)
    assert isinstance(result.exception, InputError), result.output
    assert not (tmp_path / "c" / "patients.csv").exists()


def test_non_empty_out_needs_overwrite(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = _invoke(app, str(out), "--patients", "2", "--grid-size", "16")
    assert isinstance(result.exception, InputError)
    assert "--overwrite" in str(result.exception)
    result = _invoke(app, str(out), "--patients", "2", "--grid-size", "16", "--workers", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "keep me"  # only the generator's own files are replaced
    # a smaller cohort over a larger one leaves no stale patients behind
    result = _invoke(app, str(out), "--patients", "1", "--grid-size", "16", "--workers", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["SYN0001"]


def test_out_must_not_be_a_file(app: typer.Typer, tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = _invoke(app, str(target), "--patients", "1", "--overwrite")
    assert isinstance(result.exception, InputError)


def test_main_maps_input_error_to_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from radiogenomics.cli.app import main

    assert main(["synth", str(tmp_path / "c"), "--patients", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
