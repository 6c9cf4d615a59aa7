"""The retrospective notebooks (notebooks/*.py) run as scripts on a small synthetic cohort and give sane numbers.

Also checks notebooks/_survival.py (Kaplan-Meier, log-rank, Cox) against published reference values and
against lifelines 0.30.3 output recorded here (lifelines itself is not a dependency: it pins pandas < 3).
"""

from __future__ import annotations

import importlib.util
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


def _load_survival():
    spec = importlib.util.spec_from_file_location("_survival", NOTEBOOKS / "_survival.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_survival", module)
    spec.loader.exec_module(module)
    return module


sv = _load_survival()


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


# --------------------------------------------------------------------------------------------------------------
# notebooks/_survival.py
# --------------------------------------------------------------------------------------------------------------

# Freireich et al. 1963 6-MP leukaemia trial ("gehan" in R's MASS); "+" = censored
_MP = "6 6 6 6+ 7 9+ 10 10+ 11+ 13 16 17+ 19+ 20+ 22 23 25+ 32+ 32+ 34+ 35+".split()
_PLACEBO = "1 1 2 2 3 4 4 5 5 8 8 8 8 11 11 12 12 15 17 22 23".split()


def _gehan() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = _MP + _PLACEBO
    t = np.array([float(s.rstrip("+")) for s in obs])
    e = np.array([0 if s.endswith("+") else 1 for s in obs])
    x = np.array([0] * len(_MP) + [1] * len(_PLACEBO))
    return t, e, x


def test_survival_gehan_reference_values() -> None:
    """R survival: survdiff chisq 16.8; coxph coef 1.572 (se 0.412, LR 16.4) Efron, 1.509 (se 0.410) Breslow."""
    t, e, x = _gehan()
    lr = sv.logrank_test(t, e, x)
    assert lr.statistic == pytest.approx(16.793, abs=1e-3) and lr.dof == 1
    assert lr.p_value == pytest.approx(4.17e-5, rel=1e-2)
    assert lr.observed == (9.0, 21.0) and lr.expected[0] == pytest.approx(19.25, abs=0.01)
    efron = sv.cox_ph(t, e, x)
    assert efron.coef == pytest.approx(1.5721, abs=1e-4) and efron.se == pytest.approx(0.4124, abs=1e-4)
    assert efron.lr_statistic == pytest.approx(16.35, abs=0.01)
    assert efron.hr == pytest.approx(math.exp(efron.coef))
    assert efron.hr_lower == pytest.approx(math.exp(efron.coef - 1.959964 * efron.se), rel=1e-6)
    breslow = sv.cox_ph(t, e, x, ties="breslow")
    assert breslow.coef == pytest.approx(1.5092, abs=1e-4) and breslow.se == pytest.approx(0.4096, abs=1e-4)
    km = sv.kaplan_meier(t[x == 0], e[x == 0])
    at6 = km[km["time"] == 6].iloc[0]  # R: 0.857 (0.620, 0.952) with conf.type = "log-log"
    assert at6["survival"] == pytest.approx(0.857143, abs=1e-6) and at6["n_at_risk"] == 21
    assert at6["ci_lower"] == pytest.approx(0.6197, abs=1e-4) and at6["ci_upper"] == pytest.approx(0.9516, abs=1e-4)
    assert sv.survival_at(km, 30.0) == pytest.approx(0.448179, abs=1e-6)
    assert math.isnan(sv.survival_at(km, 36.0))


_T = np.array([3, 5, 5, 7, 8, 8, 8, 10, 12, 12, 15, 16, 18, 20, 20, 22, 25, 30, 31, 40], float)
_E = np.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0])
_G = np.array([0, 1, 2, 0, 1, 0, 2, 1, 0, 2, 1, 2, 0, 2, 1, 0, 2, 1, 0, 2])
_X = np.array([1.2, 0.3, -0.5, 2.0, 0.1, 1.1, -1.0, 0.4, 0.0, -0.2, 0.8, -1.3, 0.6, -0.7, 0.2, -0.1, -0.9, -0.4,
               0.5, -1.5])


def test_survival_matches_lifelines_with_ties() -> None:
    """Values from lifelines 0.30.3 (KaplanMeierFitter, multivariate_logrank_test, CoxPHFitter precision 1e-14)."""
    lr = sv.logrank_test(_T, _E, _G)
    assert lr.dof == 2 and lr.statistic == pytest.approx(1.1809897029520275, rel=1e-10)
    assert lr.p_value == pytest.approx(0.5540530429195412, rel=1e-10)
    cox = sv.cox_ph(_T, _E, _X)
    assert cox.coef == pytest.approx(1.2619159326635725, abs=1e-6)
    assert cox.se == pytest.approx(0.4473164182800173, abs=1e-6)
    assert cox.loglik == pytest.approx(-22.93222788035842, abs=1e-9)
    km = sv.kaplan_meier(_T, _E).set_index("time")
    expected = {3.0: 0.95, 5.0: 0.9, 7.0: 0.8470588235294115, 8.0: 0.741176470588235, 12.0: 0.6271493212669682,
                20.0: 0.4233257918552036, 31.0: 0.15874717194570134, 40.0: 0.15874717194570134}
    for time, s in expected.items():
        assert km.at[time, "survival"] == pytest.approx(s, abs=1e-12)
    assert km.at[8.0, "ci_lower"] == pytest.approx(0.48508168372452154, abs=1e-10)
    assert km.at[8.0, "ci_upper"] == pytest.approx(0.8833751494680953, abs=1e-10)
    assert km.at[20.0, "ci_lower"] == pytest.approx(0.18813642805505054, abs=1e-10)
    assert km.at[20.0, "ci_upper"] == pytest.approx(0.6425438271576974, abs=1e-10)


def test_survival_properties_and_errors() -> None:
    rng = np.random.default_rng(0)
    t = rng.exponential(10, 200).round(1) + 0.1
    e = (rng.random(200) < 0.6).astype(int)
    km = sv.kaplan_meier(t, e)
    assert km["survival"].iloc[0] == 1.0 and (np.diff(km["survival"]) <= 0).all()
    assert km["n_events"].sum() == e.sum() and km["n_censored"].sum() == (1 - e).sum()
    # two identical groups: no difference; a covariate that orders the times perfectly: C = 1
    assert sv.logrank_test(np.r_[t, t], np.r_[e, e], np.r_[np.zeros(200), np.ones(200)]).statistic \
        == pytest.approx(0.0, abs=1e-12)
    t2 = np.arange(1.0, 21.0)
    assert sv.concordance_index(t2, t2, np.ones(20)) == 1.0
    assert sv.concordance_index(t2, -t2, np.ones(20)) == 0.0
    # the coefficient does not depend on shifting the covariate; scaling it divides the coefficient
    a, b = sv.cox_ph(_T, _E, _X), sv.cox_ph(_T, _E, 10 * _X + 3)
    assert b.coef == pytest.approx(a.coef / 10, rel=1e-8) and b.p_wald == pytest.approx(a.p_wald, rel=1e-6)
    with pytest.raises(ValueError, match="event"):
        sv.cox_ph(_T, np.zeros_like(_E), _X)
    with pytest.raises(ValueError, match="vary"):
        sv.cox_ph(_T, _E, np.ones_like(_X))
    with pytest.raises(ValueError, match="two groups"):
        sv.logrank_test(_T, _E, np.zeros_like(_G))
    with pytest.raises(ValueError, match="0 .censored. or 1"):
        sv.kaplan_meier(_T, _E * 2)
    with pytest.raises(ValueError, match="finite"):
        sv.kaplan_meier(np.r_[_T[:-1], np.nan], _E)
