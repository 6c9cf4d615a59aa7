"""Run every `$ radiogenomics ...` example of docs/cli.md, in order, as a real subprocess."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _examples() -> list[tuple[list[str], int]]:
    text = DOCS.read_text()
    examples = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if not line.startswith("$ radiogenomics"):
                continue
            command, _, comment = line[2:].partition("#")
            match = re.search(r"exit (\d+)", comment)
            examples.append((shlex.split(command), int(match.group(1)) if match else 0))
    return examples


def test_docs_have_an_example_for_every_command() -> None:
    from radiogenomics.cli.app import app

    documented = {args[1] for args, _ in _examples()}
    registered = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert registered <= documented, registered - documented


@pytest.mark.slow
def test_cli_examples_run(tmp_path: Path) -> None:
    shutil.copytree(DOCS.parents[1] / "examples", tmp_path / "examples")  # configs the examples use
    for args, expected in _examples():
        proc = subprocess.run([sys.executable, "-m", "radiogenomics", *args[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == expected, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        if expected == 2:
            assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert (tmp_path / "features.parquet").exists()
    assert (tmp_path / "training" / "features.parquet").exists()  # `train` without --features extracts (cached)
    assert (tmp_path / "prescriptions.csv").exists() and (tmp_path / "mlflow" / "mlflow.db").exists()
    assert (tmp_path / "demo" / "cohort" / "truth.csv").exists()
