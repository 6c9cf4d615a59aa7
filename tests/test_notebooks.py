"""The retrospective notebooks (notebooks/*.py) run as scripts on a small synthetic cohort and give sane numbers.

The survival statistics they use (notebooks/_survival.py) are checked in tests/test_survival_library.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
GARD_NB = NOTEBOOKS / "gard_local_control.py"
DOSING_NB = NOTEBOOKS / "personalised_dosing.py"
N_PATIENTS = 60



# --------------------------------------------------------------------------------------------------------------
# running the notebooks
# --------------------------------------------------------------------------------------------------------------

def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RADIOGENOMICS_COHORT", "RADIOGENOMICS_NOTEBOOK_OUT")}
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **extra)
    return env


def _start(script: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str], name: str) -> str:
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{name} timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, f"{name} failed (exit {proc.returncode}):\n{out[-5000:]}"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic cohort (60 patients, 20^3), both notebooks run on it concurrently, plus a no-truth copy."""
    from radiogenomics.synthetic import generate_cohort

    base = tmp_path_factory.mktemp("notebooks")
    cohort = generate_cohort(base / "cohort", n_patients=N_PATIENTS, seed=11, grid_size=20)
    no_truth = base / "cohort_no_truth"
    no_truth.mkdir()
    for name in ("cohort.yaml", "patients.csv", "expression.csv", "dvh.csv"):
        shutil.copy(cohort / name, no_truth / name)
    out = {k: base / k for k in ("gard", "dosing", "gard_nt", "dosing_nt")}
    procs = [  # the cohort comes once through the environment, once through --cohort; likewise the output
        ("gard", _start(GARD_NB, [], _env(RADIOGENOMICS_COHORT=str(cohort),
                                          RADIOGENOMICS_NOTEBOOK_OUT=str(out["gard"])))),
        ("dosing", _start(DOSING_NB, ["--cohort", str(cohort), "--out", str(out["dosing"])], _env())),
    ]
    logs = {name: _finish(proc, name) for name, proc in procs}
    procs = [
        ("gard_nt", _start(GARD_NB, ["--cohort", str(no_truth), "--out", str(out["gard_nt"])], _env())),
        ("dosing_nt", _start(DOSING_NB, ["--cohort", str(no_truth), "--out", str(out["dosing_nt"])], _env())),
    ]
    logs.update({name: _finish(proc, name) for name, proc in procs})
    (base / "logs.json").write_text(json.dumps(logs))
    return {"cohort": cohort, **out, "logs": base / "logs.json"}


def _png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gard_notebook_outputs(runs: dict[str, Path]) -> None:
    out = runs["gard"]
    _png(out / "gard_local_control.png")
    for name in ("summary.md", "summary.csv", "km.csv", "patients.csv", "calibration.csv"):
        assert (out / f"gard_local_control_{name}").is_file(), name
    result = json.loads((out / "gard_local_control_summary.json").read_text())
    counts = result["counts"]
    assert counts["patients"] == N_PATIENTS
    assert counts["analysed"] + counts["rsi_outside_lq_domain"] + counts["no_expression_or_regimen"] \
        + counts["no_local_control_data"] >= N_PATIENTS
    assert 0 < counts["events"] < counts["analysed"]
    cox = result["cox"]
    assert math.isfinite(cox["hr_per_gard"]) and cox["hr_per_gard"] > 0
    assert 0 < cox["ci_lower"] < cox["hr_per_gard"] < cox["ci_upper"]
    assert 0 <= cox["p_wald"] <= 1 and 0 <= cox["c_index"] <= 1
    assert cox["published_hr"] == 0.982
    # the synthetic truth makes GARD protective; the RSI noise keeps it imperfect
    assert cox["hr_per_gard"] < 1 and cox["c_index"] > 0.5
    assert [s["kind"] for s in result["splits"]] == ["median", "literature (unverified)"]
    for split in result["splits"]:
        assert split["logrank_p"] is None or 0 <= split["logrank_p"] <= 1
        assert sum(g["n"] for g in split["groups"].values()) == counts["analysed"]
    md = (out / "gard_local_control_summary.md").read_text()
    assert "unverified" in md and "0.982" in md and "not evidence" in md


def test_gard_notebook_km_curves(runs: dict[str, Path]) -> None:
    km = pd.read_csv(runs["gard"] / "gard_local_control_km.csv")
    assert set(km["group"]) == {"low", "high"}
    for (_split, _group), curve in km.groupby(["split", "group"]):
        s = curve["survival"].to_numpy()
        assert curve["time"].iloc[0] == 0 and s[0] == 1.0
        assert (np.diff(curve["time"].to_numpy()) > 0).all()
        assert (np.diff(s) <= 1e-12).all(), "KM curve increases"
        assert ((s >= 0) & (s <= 1)).all()
        assert (curve["ci_lower"] <= s + 1e-12).all() and (s <= curve["ci_upper"] + 1e-12).all()
        assert (curve["n_at_risk"].diff().dropna() <= 0).all()


def test_gard_notebook_calibration(runs: dict[str, Path]) -> None:
    cal = pd.read_csv(runs["gard"] / "gard_local_control_calibration.csv")
    assert len(cal) == 3 and cal["n"].sum() > 0.8 * N_PATIENTS
    assert cal["mean_true_tcp"].between(0, 1).all()
    assert cal["km_local_control"].dropna().between(0, 1).all()
    assert cal["mean_true_tcp"].iloc[-1] > cal["mean_true_tcp"].iloc[0]  # higher GARD tertile, higher true TCP


def test_dosing_notebook_outputs(runs: dict[str, Path]) -> None:
    out = runs["dosing"]
    _png(out / "personalised_dosing.png")
    result = json.loads((out / "personalised_dosing_summary.json").read_text())
    assert result["exact_tcp_patients"] == N_PATIENTS  # the generator's voxel truth re-simulated and verified
    summary = pd.DataFrame(result["summary"])
    assert set(summary["rails"]) == {"site", "site+OAR"}
    assert summary["target"].str.contains("unverified").any() and summary["target"].str.contains("median").any()
    cats = ["frac_escalated", "frac_de-escalated", "frac_unchanged", "frac_no_safe_dose", "frac_no_recommendation"]
    assert np.allclose(summary[cats].sum(axis=1), 1.0)
    site = summary[summary["rails"] == "site"]
    assert (site["frac_no_safe_dose"] == 0).all()
    assert (site["frac_escalated"] > 0).all() and (site["frac_de-escalated"] > 0).all()
    for col in ("mean_delta_tcp", "mean_delta_ntcp_xero_lkb", "mean_delta_ntcp_xero_true"):
        assert site[col].between(-1, 1).all(), col
    assert site["mean_delta_dose_gy"].between(-20, 20).all()
    md = (out / "personalised_dosing_summary.md").read_text()
    assert "not evidence" in md and "unverified" in md


def test_dosing_notebook_never_violates_rails(runs: dict[str, Path]) -> None:
    from radiogenomics.radiobiology import load_rails

    rails = load_rails()
    plan = pd.read_csv(runs["dosing"] / "personalised_dosing_patients.csv")
    assert len(plan) == N_PATIENTS * 2 * 2  # patients x targets x rails scenarios
    rec = plan[plan["recommended_total_dose_gy"].notna()]
    assert len(rec) >= N_PATIENTS * 2  # every patient gets a site-rails recommendation
    for _, r in rec.iterrows():
        sr = rails.site(r["site"])
        dose = r["recommended_total_dose_gy"]
        assert sr.min_total_dose_gy - 1e-9 <= dose <= sr.max_total_dose_gy + 1e-9
        assert r["rails_lower_gy"] - 1e-9 <= dose <= r["rails_upper_gy"] + 1e-9
        flags = str(r["flags"]) if isinstance(r["flags"], str) else ""
        if "clipped_max" in flags:
            assert dose == pytest.approx(r["rails_upper_gy"]) and r["dose_for_target_gard_gy"] > dose
        elif "clipped_min" in flags:
            assert dose == pytest.approx(r["rails_lower_gy"]) and r["dose_for_target_gard_gy"] < dose
        else:
            assert dose == pytest.approx(r["dose_for_target_gard_gy"])
    infeasible = plan[plan["change"] == "no_safe_dose"]
    assert (infeasible["rails"] == "site+OAR").all() and infeasible["recommended_total_dose_gy"].isna().all()


def test_dosing_notebook_outcome_changes_follow_dose(runs: dict[str, Path]) -> None:
    plan = pd.read_csv(runs["dosing"] / "personalised_dosing_patients.csv")
    ok = plan[plan["recommended_total_dose_gy"].notna()]
    for col in ("tcp_delivered", "tcp_recommended", "ntcp_xero_lkb_delivered", "ntcp_xero_lkb_recommended",
                "ntcp_xero_true_delivered", "ntcp_xero_true_recommended"):
        assert ok[col].between(0, 1).all(), col
    assert (ok["tcp_method"] == "exact").all()
    # TCP and NTCP rise with dose at a fixed dose per fraction
    up, down = ok[ok["delta_dose_gy"] > 0], ok[ok["delta_dose_gy"] < 0]
    assert (up["delta_tcp"] >= -1e-12).all() and (down["delta_tcp"] <= 1e-12).all()
    assert (up["delta_ntcp_xero_lkb"] >= -1e-12).all() and (down["delta_ntcp_xero_lkb"] <= 1e-12).all()
    # the TCP at the delivered dose is the truth's TCP
    truth = pd.read_csv(runs["cohort"] / "truth.csv").set_index("patient_id")
    first = ok.drop_duplicates("patient_id").set_index("patient_id")
    assert np.allclose(first["tcp_delivered"], truth.loc[first.index, "tcp_true"], atol=2e-6)
    assert np.allclose(first["ntcp_xero_true_delivered"], truth.loc[first.index, "ntcp_xerostomia"], atol=0.01)
    uniform = pd.read_csv(runs["dosing"] / "personalised_dosing_uniform.csv")
    assert uniform["uniform_total_dose_gy"].between(60, 80).all()


def test_notebooks_without_truth(runs: dict[str, Path]) -> None:
    gard = json.loads((runs["gard_nt"] / "gard_local_control_summary.json").read_text())
    assert gard["calibration"] is None and gard["cox_true_gard"] is None
    assert math.isfinite(gard["cox"]["hr_per_gard"])
    assert not (runs["gard_nt"] / "gard_local_control_calibration.csv").exists()
    _png(runs["dosing_nt"] / "personalised_dosing.png")
    plan = pd.read_csv(runs["dosing_nt"] / "personalised_dosing_patients.csv")
    assert plan["tcp_delivered"].isna().all() and plan["ntcp_xero_true_delivered"].isna().all()
    assert plan["ntcp_xero_lkb_delivered"].notna().all()  # the LKB change needs only dvh.csv


def test_notebooks_print_only_pseudonymous_ids(runs: dict[str, Path]) -> None:
    logs = json.loads(runs["logs"].read_text())
    patients = pd.read_csv(runs["cohort"] / "patients.csv")
    for text in logs.values():
        assert "Traceback" not in text
        assert not any(pid in text for pid in patients["patient_id"])  # summaries only, no per-patient listing


def test_notebooks_are_jupytext_percent_notebooks() -> None:
    import jupytext
    for path in (GARD_NB, DOSING_NB):
        nb = jupytext.read(path)
        kinds = [c.cell_type for c in nb.cells]
        assert kinds.count("markdown") >= 5 and kinds.count("code") >= 5, path.name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
