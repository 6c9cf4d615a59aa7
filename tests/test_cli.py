"""The CLI shell: help everywhere, exit codes 0 / 2 / 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from radiogenomics.cli.app import app, main

COMMANDS = [[c.name] for c in app.registered_commands] + [["token", "create"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main([*command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_root_help_and_version(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("synth", "validate", "extract", "train", "predict", "serve", "token", "demo"):
        assert name in out
    assert main(["--version"]) == 0
    assert "radiogenomics 0." in capsys.readouterr().out


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["no-such-command"]) == 2
    assert main(["validate"]) == 2  # missing argument


def test_bad_input_is_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synth", str(tmp_path / "c"), "--patients", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_serve_without_tokens_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RADIOGENOMICS_TOKENS_FILE", raising=False)
    assert main(["serve", "--model", "models:/x@champion"]) == 2
    assert "radiogenomics token create" in capsys.readouterr().err


def test_internal_error_is_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    import radiogenomics.cohort

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(radiogenomics.cohort, "validate_cohort", boom)
    assert main(["validate", str(tmp_path), "--json"]) == 1
    assert "internal error: RuntimeError: disk on fire" in capsys.readouterr().err
