"""examples/cohort_to_plan.py: synth -> extract -> train -> handoff -> pyRadPlan, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "examples" / "cohort_to_plan.py"


@pytest.mark.slow
def test_cohort_to_plan_runs_the_whole_chain(tmp_path: Path) -> None:
    out = tmp_path / "chain"
    proc = subprocess.run([sys.executable, "-W", "ignore", str(SCRIPT), "--out", str(out), "--patients", "24",
                           "--grid-size", "16", "--max-iter", "100"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    (folder,) = [p for p in (out / "handoff").iterdir() if p.is_dir()]
    record = json.loads((folder / "prescription.json").read_text())
    objectives = json.loads((folder / "objectives.json").read_text())
    summary = json.loads((out / "plan" / "plan_summary.json").read_text())
    assert record["model_uri"].startswith("models:/radiogenomics-prescriber/")
    assert [s["name"] for s in objectives["structures"]] == ["GTV", "SpinalCord"]
    assert summary["patient_id"] == record["patient_id"] == folder.name
    assert summary["structure_map"] == {"GTV": "OuterTarget", "SpinalCord": "Core"}
    median = summary["dvh_per_fraction"]["OuterTarget"]["d50_gy"]
    assert median == pytest.approx(record["recommended_dose_per_fraction_gy"], rel=0.03)
    assert summary["dvh_total"]["OuterTarget"]["d50_gy"] == pytest.approx(median * summary["n_fractions"])
    lines = proc.stdout.splitlines()
    assert any(line.split()[:1] == ["OuterTarget"] for line in lines)
    assert any(line.split()[:1] == ["Core"] for line in lines)
    assert f"{median:.3f} Gy per fraction" in proc.stdout


def test_cohort_to_plan_rejects_too_few_patients(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--patients", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--patients must be >= 20" in proc.stderr
    assert not any(tmp_path.iterdir())
