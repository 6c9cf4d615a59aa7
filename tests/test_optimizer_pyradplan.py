"""pyRadPlan as the downstream optimizer (issue 9 point 3): objectives.json of two registered-model patients on TG119.

The two patients with the lowest and highest predicted alpha of the prescriber's cohort are planned on pyRadPlan's
TG119 phantom (target OuterTarget, OAR Core as the spinal cord): the optimized median target dose per fraction is
within 3 % of the record's recommended dose per fraction, and the more radiosensitive patient gets less dose.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prescriber_factory import build_bundle, register_bundle, session_base, use_tracking_uri

from radiogenomics.errors import InputError
from radiogenomics.planning.objectives import build_objectives
from radiogenomics.planning.optimizers.pyradplan import (
    PlanningError,
    PlanResult,
    UpperGEUD,
    plan_with_pyradplan,
)
from radiogenomics.training.registry.prediction import load_prescriber

logger = logging.getLogger(__name__)
MODEL = "models:/radiogenomics-prescriber@champion"
OAR_MAP = {"SpinalCord": "Core"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """Records of the registered champion for the least and the most radiosensitive patient (by alpha)."""
    bundle = build_bundle(session_base(tmp_path_factory))
    folder = tmp_path_factory.mktemp("pyradplan-registry")
    with use_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}"):
        register_bundle(bundle, folder, experiment="pyradplan-test")
        prescriber, info = load_prescriber(MODEL)
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")])
    records = sorted(prescriber.predict_records(features, model=info), key=lambda r: r["alpha_per_gy"])
    return records[0], records[-1]


@pytest.fixture(scope="module")
def plans(pair: tuple[dict[str, Any], dict[str, Any]],
          tmp_path_factory: pytest.TempPathFactory) -> tuple[PlanResult, PlanResult]:
    """Both patients planned; the second from an objectives.json file, reusing the first plan's physical dij."""
    low = plan_with_pyradplan(build_objectives(pair[0], oars=["SpinalCord"]), oar_map=OAR_MAP)
    path = tmp_path_factory.mktemp("pyradplan") / "objectives.json"
    path.write_text(json.dumps(build_objectives(pair[1], oars=["SpinalCord"])))
    high = plan_with_pyradplan(path, oar_map=OAR_MAP, geometry=low.geometry)
    for record, plan in zip(pair, (low, high), strict=True):
        logger.info("patient %s alpha %.4f: recommended %s x %.4f Gy; median %.4f Gy/fx (%.2f Gy total), "
                    "%s iterations, %.1f s\n%s", record["patient_id"], record["alpha_per_gy"],
                    record["recommended_n_fractions"], record["recommended_dose_per_fraction_gy"],
                    plan.target_median_per_fraction_gy, plan.dvh_total["OuterTarget"]["d50_gy"], plan.iterations,
                    plan.wall_time_s, plan.table())
    return low, high


def test_median_target_dose_per_fraction_within_3_percent(pair: tuple[dict[str, Any], dict[str, Any]],
                                                         plans: tuple[PlanResult, PlanResult]) -> None:
    for record, plan in zip(pair, plans, strict=True):
        assert plan.target == "OuterTarget" and plan.structure_map == {"GTV": "OuterTarget", "SpinalCord": "Core"}
        recommended = record["recommended_dose_per_fraction_gy"]
        assert plan.target_median_per_fraction_gy == pytest.approx(recommended, rel=0.03)
        assert plan.n_fractions == round(record["recommended_n_fractions"])
        total = plan.dvh_total["OuterTarget"]["d50_gy"]
        assert total == pytest.approx(plan.target_median_per_fraction_gy * plan.n_fractions)
        assert plan.iterations and plan.iterations > 0 and np.count_nonzero(plan.fluence) > 0


def test_more_radiosensitive_patient_gets_lower_physical_dose(pair: tuple[dict[str, Any], dict[str, Any]],
                                                              plans: tuple[PlanResult, PlanResult]) -> None:
    """Total physical target dose (median per fraction x recommended fractions) is lower for the higher alpha.

    The prescriber keeps the dose per fraction and changes the number of fractions, so per fraction the two
    medians only differ within the 3 % tolerance; over the course the difference is the prescription's.
    """
    low_alpha, high_alpha = pair
    assert high_alpha["alpha_per_gy"] > low_alpha["alpha_per_gy"]
    assert high_alpha["recommended_total_dose_gy"] < low_alpha["recommended_total_dose_gy"]
    low, high = plans
    totals = [p.target_median_per_fraction_gy * r["recommended_n_fractions"] for p, r in zip(plans, pair, strict=True)]
    assert totals[1] < totals[0]
    assert high.dvh_total["OuterTarget"]["mean_gy"] < low.dvh_total["OuterTarget"]["mean_gy"]
    ratio = high_alpha["recommended_dose_per_fraction_gy"] / low_alpha["recommended_dose_per_fraction_gy"]
    assert high.target_median_per_fraction_gy / low.target_median_per_fraction_gy == pytest.approx(ratio, rel=0.03)


def test_target_gets_the_prescribed_lq_effect(pair: tuple[dict[str, Any], dict[str, Any]],
                                              plans: tuple[PlanResult, PlanResult]) -> None:
    """The effect the optimizer reached in the target (alpha d + beta d^2 of the median) is the record's."""
    for record, plan in zip(pair, plans, strict=True):
        d = plan.target_median_per_fraction_gy
        reached = record["alpha_per_gy"] * d + record["beta_per_gy2"] * d**2
        wanted = record["alpha_per_gy"] * record["recommended_dose_per_fraction_gy"] \
            + record["beta_per_gy2"] * record["recommended_dose_per_fraction_gy"] ** 2
        assert reached == pytest.approx(wanted, rel=0.03)


def test_reused_dij_carries_the_second_patients_alpha_and_objectives(
        pair: tuple[dict[str, Any], dict[str, Any]], plans: tuple[PlanResult, PlanResult]) -> None:
    """No stale alphax: the reused geometry's dij and LQ matrices hold the second patient's target alpha/beta."""
    record, plan = pair[1], plans[1]
    dij = plan.geometry.dij
    target = np.isclose(dij.alphax, record["alpha_per_gy"])
    assert not np.isclose(dij.alphax, pair[0]["alpha_per_gy"]).any()
    assert 200 < target.sum() < 500  # OuterTarget, 168 cm^3, on the 8 mm dose grid: about 330 voxels
    assert np.isclose(dij.betax[target], record["beta_per_gy2"]).all()
    assert np.median(plan.dose_per_fraction[target]) == pytest.approx(plan.target_median_per_fraction_gy, rel=0.02)
    effect = dij.alpha_dose.flat[0] @ plan.fluence + (dij.sqrt_beta_dose.flat[0] @ plan.fluence) ** 2
    dose = plan.dose_per_fraction
    assert np.allclose(effect, dij.alphax * dose + dij.betax * dose**2, rtol=1e-6, atol=1e-9)
    vois = {voi.name: voi for voi in plan.geometry.cst.vois}
    assert vois["OuterTarget"].alpha_x == record["alpha_per_gy"]
    (effect_objective, coverage, hotspot) = vois["OuterTarget"].objectives
    assert effect_objective.quantity == "effect"
    assert effect_objective.d_ref == pytest.approx(record["alpha_per_gy"] * record["recommended_dose_per_fraction_gy"]
                                                   + record["beta_per_gy2"]
                                                   * record["recommended_dose_per_fraction_gy"] ** 2)
    n = round(record["recommended_n_fractions"])
    assert coverage.d == pytest.approx(0.95 * record["recommended_total_dose_gy"] / n) and coverage.v_min == 95.0
    assert hotspot.quantity == "physical_dose" and hotspot.d_max * n <= 1.07 * record["recommended_total_dose_gy"]
    (cord,) = vois["Core"].objectives
    assert cord.quantity == "physical_dose" and cord.d_max == pytest.approx(
        build_objectives(record, oars=["SpinalCord"])["structures"][1]["objectives"][0]["dose_gy"] / n)
    assert plan.dvh_total["Core"]["d2_gy"] <= 1.05 * cord.d_max * n


def test_zero_fluence_fails_loudly(pair: tuple[dict[str, Any], dict[str, Any]],
                                   plans: tuple[PlanResult, PlanResult]) -> None:
    """Objectives that only cap the dose are met by no beam at all: the planner raises instead of returning it."""
    document = build_objectives(pair[0], oars=["SpinalCord"])
    target = document["structures"][0]
    target["objectives"] = [o for o in target["objectives"] if o["type"] == "max_dose"]
    with pytest.raises(PlanningError, match="zero or non-finite fluence"):
        plan_with_pyradplan(document, oar_map=OAR_MAP, geometry=plans[0].geometry, normal_tissue=None)


def test_oar_mean_dose_limit_lowers_the_oar_mean(pair: tuple[dict[str, Any], dict[str, Any]],
                                                plans: tuple[PlanResult, PlanResult]) -> None:
    """A `mean_dose` objective (UpperGEUD, a = 1) inside pyRadPlan's optimizer pulls the Core mean down."""
    document = build_objectives(pair[0], oars=["SpinalCord"])
    before = plans[0].dvh_total["Core"]["mean_gy"]
    cord = document["structures"][1]
    cord["objectives"].append({"type": "mean_dose", "dose_gy": 0.5 * before, "priority": 800.0})
    limited = plan_with_pyradplan(document, oar_map=OAR_MAP, geometry=plans[1].geometry)
    assert isinstance(next(v for v in limited.geometry.cst.vois if v.name == "Core").objectives[-1], UpperGEUD)
    assert limited.dvh_total["Core"]["mean_gy"] < 0.85 * before
    assert limited.target_median_per_fraction_gy == pytest.approx(pair[0]["recommended_dose_per_fraction_gy"],
                                                                  rel=0.05)


def test_unmapped_structure_is_bad_input(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    document = build_objectives(pair[0], oars=["SpinalCord", "Esophagus"])
    with pytest.raises(InputError, match="'Esophagus'.*not mapped") as info:
        plan_with_pyradplan(document, oar_map=OAR_MAP)
    assert info.value.patient_id == pair[0]["patient_id"] and "oar_map" in str(info.value.fix)
    with pytest.raises(InputError, match="'Nowhere'.*not in the structure set"):
        plan_with_pyradplan(build_objectives(pair[0], oars=["SpinalCord"]), oar_map={"SpinalCord": "Nowhere"})


def test_unreadable_or_invalid_objectives_file(tmp_path: Path, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    broken = tmp_path / "objectives.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="cannot read") as info:
        plan_with_pyradplan(broken)
    assert info.value.file == str(broken)
    document = build_objectives(pair[0], oars=["SpinalCord"])
    document["n_fractions"] = 0
    broken.write_text(json.dumps(document))
    with pytest.raises(InputError, match="n_fractions") as info:
        plan_with_pyradplan(broken)
    assert info.value.file == str(broken)


def test_upper_geud_penalises_only_doses_above_the_limit() -> None:
    rng = np.random.default_rng(0)
    dose = rng.uniform(0.5, 2.0, 200)
    for a in (1.0, 8.0):
        geud = float(np.mean(dose**a) ** (1 / a))
        below = UpperGEUD(eud_max=geud * 1.01, a=a)
        assert below.compute_objective(dose) == 0.0 and not below.compute_gradient(dose).any()
        above = UpperGEUD(eud_max=geud * 0.9, a=a, priority=2.0)
        assert above.compute_objective(dose) == pytest.approx((0.1 * geud) ** 2)
        step, i = 1e-6, 17
        bumped = dose.copy()
        bumped[i] += step
        numeric = (above.compute_objective(bumped) - above.compute_objective(dose)) / step
        assert above.compute_gradient(dose)[i] == pytest.approx(numeric, rel=1e-3)
