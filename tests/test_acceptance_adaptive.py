"""Independent acceptance test of adaptive re-prescription (issue 19, contract §8).

"Done when": on an independent cohort with a second FMISO PET after 10 fractions, `adapt` accounts the delivered
dose exactly and the dose reduction follows the measured reoxygenation, compared with the simulator's truth.

Written from the contract (§1, §2, §3, §8), ../shared/brief/radiobiology.md, docs/cohort-format.md ("Timepoints")
and docs/adaptive.md, not from the product's code: ``radiogenomics adapt`` is a black box behind
``radiogenomics.cli.app.main``. The cohort comes from ``tests/adaptive_simulator.py`` (numpy + SimpleITK, never
``radiogenomics.synthetic``): 12 patients on a 24^3 grid of 4 mm, CT + GTV/parotid/cord label map + FDG + FMISO +
a planned DOSE grid at planning, the ten RSI genes in expression.csv (one within-sample order: every patient has
the same measured RSI, hence the same baseline prescription), and at ``fraction_10``

* ADP-001..008: a second FMISO whose tumour hypoxic excess is scaled by (1 - r), r = 0, 0.1, 0.2, 0.3, 0.45, 0.6,
  0.8, 1 (r = 0: the planning image itself; r = 1: the tumour at the reference tissue's level), and a second FDG
  with 75 % of the tumour's excess uptake (the same for all, so only FMISO varies with r);
* ADP-009: a mid-treatment FMISO with no uptake in (and next to) the tumour; ADP-010: a mid-treatment FMISO on a
  grid 300 mm away (no overlap with the planning grid); their mid-treatment FDG is the usual one: both implausible,
  the baseline course must be kept (read as "fully oxic" either would wrongly de-escalate);
* ADP-011: no mid-treatment imaging (no record); ADP-012: r = 0.45 with patients.csv ``delivered_n_fractions`` 10
  and ``delivered_dose_gy`` 19.0 (what was delivered differs from 10 x the regimen).

The site is the one the registered prescriber was trained on (the most frequent ``clinical.site`` of the session's
training table), read from the ``bundle`` fixture, not guessed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from adaptive_simulator import K_FRACTIONS, simulate_adaptive_cohort
from scipy.stats import spearmanr
from serving_factory import MODEL

from radiogenomics.cli.app import main
from radiogenomics.radiobiology.rails import load_rails

TIMEPOINT = f"fraction_{K_FRACTIONS}"
RESPONSE = ("ADP-001", "ADP-002", "ADP-003", "ADP-004", "ADP-005", "ADP-006", "ADP-007", "ADP-008")
NO_UPTAKE, ELSEWHERE, NOT_IMAGED, DELIVERED_GIVEN = "ADP-009", "ADP-010", "ADP-011", "ADP-012"
IMPLAUSIBLE = (NO_UPTAKE, ELSEWHERE)
#: Spearman threshold. With the same baseline prescription for every patient, an ideal method's reduction is a
#: non-decreasing step function of r (whole fractions; a plateau at the site's floor), so rho < 1 is expected from
#: ties alone; a reduction unrelated to r exceeds 0.7 with a probability below 5 % (n = 8: the one-sided 5 %
#: critical value of Spearman's rho is 0.643, 2.5 %: 0.738).
MIN_SPEARMAN = 0.7
#: contract §2 flags, plus §8 (deescalated, escalated) and docs/adaptive.md (adaptation_fallback)
FLAGS = {"out_of_distribution", "clipped_max", "clipped_min", "population_fallback", "missing_genomics",
         "missing_imaging", "unrecognised_structure", "site_not_in_training", "implausible_parameter",
         "oar_limited", "oar_limit_exceeded", "oar_soft_limit_exceeded", "oar_unchecked", "regimen_outside_training",
         "toxicity_unavailable", "deescalated", "escalated", "adaptation_fallback"}
EXACT = 1e-9


def _training_site(bundle: Any) -> str:
    table = bundle.table
    assert "clinical.site" in table.columns, "the training table has no clinical.site column"
    sites = table["clinical.site"].dropna().astype(str)
    assert len(sites), "the training table names no site"
    return str(sites.value_counts().idxmax())


@pytest.fixture(scope="module")
def adapted(bundle: Any, registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("acceptance_adaptive")
    site = _training_site(bundle)
    truth = simulate_adaptive_cohort(work / "cohort", site)
    assert main(["validate", str(work / "cohort")]) == 0
    out = work / "adapted.json"
    code = main(["adapt", str(work / "cohort"), "--model", MODEL, "--timepoint", TIMEPOINT, "--out", str(out),
                 "--workers", "1"])
    assert code == 0, f"adapt exited {code}"
    document = json.loads(out.read_text())
    assert set(document) >= {"records"}
    records = document["records"]
    by_id = {r["patient_id"]: r for r in records}
    assert len(by_id) == len(records), "more than one record for a patient"
    return {"site": site, "truth": truth, "records": by_id, "list": records, "cohort": work / "cohort",
            "patients": pd.read_csv(work / "cohort" / "patients.csv").set_index("patient_id")}


def _reduction(r: dict[str, Any]) -> float:
    return float(r["baseline_total_dose_gy"]) - float(r["adapted_total_dose_gy"])


def _table(adapted: dict[str, Any]) -> pd.DataFrame:
    """Truth r against what adapt returned, one row per dose-response patient (printed by the tests that use it)."""
    rows = []
    for pid in (*RESPONSE, DELIVERED_GIVEN):
        r = adapted["records"][pid]
        response = r.get("response") or {}
        before, now = response.get("baseline") or {}, response.get("mid_treatment") or {}
        rows.append({"patient_id": pid, "r": adapted["truth"].loc[pid, "r"],
                     "baseline_gy": r["baseline_total_dose_gy"], "adapted_gy": r["adapted_total_dose_gy"],
                     "reduction_gy": _reduction(r), "remaining_n": r["remaining_n_fractions"],
                     "remaining_d": r["remaining_dose_per_fraction_gy"],
                     "hf_before": before.get("hypoxic_fraction"), "hf_now": now.get("hypoxic_fraction"),
                     "hf_now_truth": adapted["truth"].loc[pid, "now_hypoxic_fraction"],
                     "po2_before": before.get("mean_po2_mmhg"), "po2_now": now.get("mean_po2_mmhg"),
                     "tcp_baseline": r.get("tcp_baseline"), "tcp_adapted": r.get("tcp_adapted"),
                     "flags": ",".join(f for f in r["flags"] if f in {"deescalated", "escalated",
                                                                       "adaptation_fallback",
                                                                       "population_fallback"})})
    return pd.DataFrame(rows).set_index("patient_id")


# -------------------------------------------------------------------------------------------- 1. who gets one


def test_one_record_per_patient_imaged_at_the_timepoint(adapted: dict[str, Any]) -> None:
    imaged = sorted(set(adapted["truth"].index) - {NOT_IMAGED})
    assert sorted(adapted["records"]) == imaged, "one record per patient imaged at fraction_10, none for the others"
    assert NOT_IMAGED not in adapted["records"]
    for pid, r in adapted["records"].items():
        assert r["timepoint"] == TIMEPOINT, (pid, r["timepoint"])
        assert r["site"] == adapted["site"], (pid, r["site"])
        for field in ("delivered_n_fractions", "delivered_dose_gy", "remaining_n_fractions",
                      "remaining_dose_per_fraction_gy", "adapted_total_dose_gy", "baseline_total_dose_gy",
                      "response", "tcp_baseline", "tcp_adapted", "recommended_total_dose_gy",
                      "recommended_n_fractions", "recommended_dose_per_fraction_gy", "flags", "model_uri"):
            assert field in r, (pid, field)


# ----------------------------------------------------------------------------------- 2./3. exact dose accounting


def _regimen_dose_per_fraction(adapted: dict[str, Any], pid: str) -> float:
    """The patient's own regimen (contract §1: patients.csv total_dose_gy / n_fractions, "the patient's own
    regimen"), the regimen §8's "K fractions of the patient's regimen" refers to."""
    row = adapted["patients"].loc[pid]
    return float(row["total_dose_gy"]) / float(row["n_fractions"])


def test_the_delivered_dose_is_ten_fractions_of_the_patients_regimen(adapted: dict[str, Any]) -> None:
    for pid, r in adapted["records"].items():
        if pid == DELIVERED_GIVEN:
            continue
        assert r["delivered_n_fractions"] == K_FRACTIONS, (pid, r["delivered_n_fractions"])
        expected = K_FRACTIONS * _regimen_dose_per_fraction(adapted, pid)
        assert abs(float(r["delivered_dose_gy"]) - expected) <= EXACT, (pid, r["delivered_dose_gy"], expected)
        # the recommended regimen delivers the recommended total (contract §2), so the baseline course is consistent
        assert float(r["recommended_n_fractions"]) * float(r["recommended_dose_per_fraction_gy"]) == pytest.approx(
            float(r["recommended_total_dose_gy"]), abs=1e-6), pid


def test_patients_csv_delivered_columns_override_the_timepoint(adapted: dict[str, Any]) -> None:
    r = adapted["records"][DELIVERED_GIVEN]
    given = adapted["patients"].loc[DELIVERED_GIVEN]
    assert r["delivered_n_fractions"] == int(given["delivered_n_fractions"]) == K_FRACTIONS
    assert abs(float(r["delivered_dose_gy"]) - float(given["delivered_dose_gy"])) <= EXACT, (
        r["delivered_dose_gy"], given["delivered_dose_gy"])
    assert abs(float(r["delivered_dose_gy"]) - K_FRACTIONS * _regimen_dose_per_fraction(adapted, DELIVERED_GIVEN)) > 0.5


def test_the_adapted_total_is_delivered_plus_remaining_exactly(adapted: dict[str, Any]) -> None:
    for pid, r in adapted["records"].items():
        total = float(r["delivered_dose_gy"]) + int(r["remaining_n_fractions"]) * float(
            r["remaining_dose_per_fraction_gy"])
        assert abs(float(r["adapted_total_dose_gy"]) - total) <= EXACT, (pid, r["adapted_total_dose_gy"], total)
        assert int(r["remaining_n_fractions"]) == r["remaining_n_fractions"] and r["remaining_n_fractions"] >= 0, pid
        assert float(r["remaining_dose_per_fraction_gy"]) > 0, pid
        assert abs(float(r["baseline_total_dose_gy"]) - float(r["recommended_total_dose_gy"])) <= EXACT, pid


# ------------------------------------------------------------------------- 4. reduction follows reoxygenation


def test_the_dose_reduction_follows_the_true_reoxygenation(adapted: dict[str, Any]) -> None:
    table = _table(adapted)
    print("\n" + table.to_string())
    records = adapted["records"]
    for pid in RESPONSE:   # plausible images: every one is adapted (a population-fallback record is adaptable)
        assert "adaptation_fallback" not in records[pid]["flags"], (pid, records[pid]["flags"],
                                                                    records[pid].get("adaptation"))
    # every patient has the same measured RSI and regimen: the same baseline prescription
    baselines = table.loc[list(RESPONSE), "baseline_gy"].astype(float)
    assert baselines.max() - baselines.min() <= 1e-6, baselines.to_dict()
    response = table.loc[list(RESPONSE)]
    rho = spearmanr(response["r"].astype(float), response["reduction_gy"].astype(float)).statistic
    print(f"Spearman rho(r, baseline - adapted) = {rho:.3f} over {len(response)} patients")
    assert rho >= MIN_SPEARMAN, (rho, response[["r", "reduction_gy"]].to_dict())
    # reoxygenation never calls for more dose
    for pid in RESPONSE:
        assert _reduction(records[pid]) >= -EXACT, (pid, _reduction(records[pid]))
        assert "escalated" not in records[pid]["flags"], (pid, records[pid]["flags"])
    # r = 0 (the planning FMISO itself): no change
    none = records["ADP-001"]
    assert abs(_reduction(none)) <= EXACT, (none["baseline_total_dose_gy"], none["adapted_total_dose_gy"])
    assert not {"deescalated", "escalated"} & set(none["flags"]), none["flags"]
    assert none["remaining_n_fractions"] == none["recommended_n_fractions"] - K_FRACTIONS
    # r = 1 (fully oxic): de-escalated, the largest reduction of all
    full = records["ADP-008"]
    floor = load_rails().site(adapted["site"]).min_total_dose_gy
    assert float(full["baseline_total_dose_gy"]) > floor + 1.0, "design: the baseline must leave room above the floor"
    assert "deescalated" in full["flags"], full["flags"]
    assert _reduction(full) > 0
    assert _reduction(full) >= max(_reduction(records[p]) for p in RESPONSE) - EXACT
    # a flag says what the numbers say
    for pid in (*RESPONSE, DELIVERED_GIVEN):
        r = records[pid]
        if float(r["adapted_total_dose_gy"]) < float(r["baseline_total_dose_gy"]) - 1e-6:
            assert "deescalated" in r["flags"] and "escalated" not in r["flags"], (pid, r["flags"])
        elif float(r["adapted_total_dose_gy"]) > float(r["baseline_total_dose_gy"]) + 1e-6:
            assert "escalated" in r["flags"], (pid, r["flags"])
        else:
            assert not {"deescalated", "escalated"} & set(r["flags"]), (pid, r["flags"])


def test_the_adapted_course_reaches_the_baseline_courses_tcp(adapted: dict[str, Any]) -> None:
    """docs/adaptive.md steps 5-6: the remaining course reaches the target TCP (``adaptation.tcp_target``) =
    max(planning projection, min(0.95, TCP of the baseline course continued)), bounded by the rails; at the floor
    it gives more than that."""
    for pid in (*RESPONSE, DELIVERED_GIVEN):
        r = adapted["records"][pid]
        target = float(r["adaptation"]["tcp_target"])
        assert float(r["tcp_adapted"]) >= target - 1e-9, (pid, r["tcp_adapted"], target, r["adaptation"]["bound"])
        if float(adapted["truth"].loc[pid, "r"]) > 0:
            # the baseline course under the reoxygenated biology controls at least as well as projected before
            assert float(r["tcp_baseline"]) >= target - 1e-9, (pid, r["tcp_baseline"], target)


# ------------------------------------------------------------------------------------- 5. rails and vocabulary


def test_never_below_the_site_floor_and_flags_from_the_vocabulary(adapted: dict[str, Any]) -> None:
    rails = load_rails()
    for pid, r in adapted["records"].items():
        site = rails.site(r["site"])
        assert float(r["adapted_total_dose_gy"]) >= site.min_total_dose_gy - EXACT, (pid, r["adapted_total_dose_gy"])
        assert float(r["adapted_total_dose_gy"]) <= site.max_total_dose_gy + EXACT, (pid, r["adapted_total_dose_gy"])
        assert isinstance(r["flags"], list) and set(r["flags"]) <= FLAGS, (pid, set(r["flags"]) - FLAGS)
        for tcp in ("tcp_baseline", "tcp_adapted"):
            if r[tcp] is not None:
                assert 0.0 <= float(r[tcp]) <= 1.0, (pid, tcp, r[tcp])


# ------------------------------------------------------------------------------ 6. implausible images fall back


@pytest.mark.parametrize("pid", IMPLAUSIBLE)
def test_an_implausible_mid_treatment_image_keeps_the_baseline_course(adapted: dict[str, Any], pid: str) -> None:
    r = adapted["records"][pid]
    assert "adaptation_fallback" in r["flags"], (pid, r["flags"], r.get("adaptation"))
    assert not {"deescalated", "escalated"} & set(r["flags"]), (pid, r["flags"])
    assert abs(float(r["adapted_total_dose_gy"]) - float(r["baseline_total_dose_gy"])) <= EXACT, (
        pid, r["adapted_total_dose_gy"], r["baseline_total_dose_gy"])
    assert r["remaining_n_fractions"] == r["recommended_n_fractions"] - K_FRACTIONS, pid
    # the baseline course continued: its remaining fractions share the dose left to the recommended total
    left = (float(r["baseline_total_dose_gy"]) - float(r["delivered_dose_gy"])) / r["remaining_n_fractions"]
    assert abs(float(r["remaining_dose_per_fraction_gy"]) - left) <= EXACT, (pid, r["remaining_dose_per_fraction_gy"])


# ------------------------------------------------------------------------------------ 7. the response, before/now


def test_the_response_moves_with_the_reoxygenation(adapted: dict[str, Any]) -> None:
    truth = adapted["truth"]
    for pid in (*RESPONSE, DELIVERED_GIVEN):
        r = adapted["records"][pid]
        before, now = r["response"]["baseline"], r["response"]["mid_treatment"]
        true_r = float(truth.loc[pid, "r"])
        hf0, hf1 = float(before["hypoxic_fraction"]), float(now["hypoxic_fraction"])
        po0, po1 = float(before["mean_po2_mmhg"]), float(now["mean_po2_mmhg"])
        tbr0, tbr1 = float(before["fmiso_tbr_max"]), float(now["fmiso_tbr_max"])
        assert all(math.isfinite(v) for v in (hf0, hf1, po0, po1, tbr0, tbr1)), (pid, before, now)
        # the planning figures agree with this module's own reading of the planning FMISO (documented defaults)
        assert hf0 == pytest.approx(float(truth.loc[pid, "before_hypoxic_fraction"]), abs=0.05), (pid, hf0)
        if true_r == 0.0:
            assert (hf1, po1, tbr1) == pytest.approx((hf0, po0, tbr0), abs=1e-9), (pid, before, now)
            continue
        assert tbr1 < tbr0, (pid, tbr0, tbr1)
        assert po1 > po0, (pid, po0, po1)
        assert hf1 <= hf0, (pid, hf0, hf1)
        if float(truth.loc[pid, "now_hypoxic_fraction"]) < float(truth.loc[pid, "before_hypoxic_fraction"]) - 0.05:
            assert hf1 < hf0, (pid, hf0, hf1)
        assert hf1 == pytest.approx(float(truth.loc[pid, "now_hypoxic_fraction"]), abs=0.05), (pid, hf1)
    # across patients the reported mid-treatment pO2 rises with r
    po2 = [float(adapted["records"][p]["response"]["mid_treatment"]["mean_po2_mmhg"]) for p in RESPONSE]
    rs = [float(truth.loc[p, "r"]) for p in RESPONSE]
    assert spearmanr(rs, po2).statistic >= 0.9, list(zip(rs, po2, strict=True))


# ----------------------------------------------------------------------------- whole-course OAR (contract §8)


def test_the_whole_course_is_checked_against_the_oar_limits(adapted: dict[str, Any]) -> None:
    """Every patient has a planned DOSE grid: the gate's OAR checks run over the whole course (delivered +
    remaining), and the cord (far from the target in this cohort) stays within its limit."""
    for pid in (*RESPONSE, DELIVERED_GIVEN):
        r = adapted["records"][pid]
        assert "oar_unchecked" not in r["flags"], (pid, r["flags"])
        assert "oar_limit_exceeded" not in r["flags"], (pid, r["flags"])
        checks = r.get("adaptation", {}).get("whole_course_oar_checks")
        assert isinstance(checks, list) and checks, (pid, r.get("adaptation"))
        names = {str(c.get("structure", "")).lower().replace(" ", "_") for c in checks}
        assert any("cord" in n for n in names), (pid, names)
        assert any("parotid" in n for n in names), (pid, names)
        for c in checks:
            assert c.get("status") in {"ok", "limited", "exceeded", "unchecked"}, (pid, c)
            if "cord" in str(c.get("structure", "")).lower():
                assert c["status"] == "ok", (pid, c)
    assert np.isfinite([_reduction(adapted["records"][p]) for p in RESPONSE]).all()
