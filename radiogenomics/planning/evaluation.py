"""``plan_evaluation.json`` (format ``radiogenomics-plan-evaluation/1``, contract section 7) of a planned dose.

Everything is computed from the planned total dose on the CT grid, exactly the array written as
``plan_dose.nii.gz``, and the structure masks on that grid (every voxel the same volume), so anyone can re-read the
file with their own DVH code and find the same numbers:

- **structures**: volume, mean, min, max and D98/D95/D50/D2 (D_x: the dose at least x % of the volume receives,
  from the voxel doses by linear interpolation of the sorted values, numpy's default percentile);
- **objectives**: every objective of ``objectives.json`` with its goal, the achieved value and ``met``:
  ``min_dvh``/``max_dvh`` D_x against the dose, ``max_dose`` the maximum voxel dose, ``mean_dose`` the mean, ``geud``
  the gEUD of the voxel doses (Niemierko 1999), ``target_effect`` the mean LQ effect per fraction within -5 %/+7 %
  of the goal (ICRU 50/62), ``dose_map`` the quality factor QF = mean |D_planned / D_prescribed - 1| over the
  target (Vanderstraeten et al., Radiother Oncol 2006;79:249) at most :data:`QF_GOAL`;
- **rails**: every limit of the safety rails on the planned dose (OAR limits converted to the regimen as the
  objectives are, NTCP limits as NTCP, the site's maximum voxel dose over the body); a hard rail not met adds
  ``plan_violates_rail`` and a ``violations`` entry naming the structure and the amount - the planner's decision,
  never hidden;
- **tcp**: Poisson TCP (Webb & Nahum 1993) of the planned dose with the patient's alpha/beta, FDG clonogen density
  and FMISO pO2 (Lazzeroni et al., J Nucl Med 2026), for the plan (``planned``) and for the standard uniform plan
  (``uniform_reference``), each with its range over the record's RSI interval (alpha from RSI, Scott et al. 2017);
- **ntcp**: LKB NTCP per endpoint and structure from the planned OAR doses, converted to EQD2 per voxel at the
  organ's alpha/beta (Burman 1991 / QUANTEC parameters, radiobiology/data/ntcp_parameters.yaml);
- **optimizer**: name, version, iterations, whether it converged (``plan_not_converged`` otherwise);
- **adapted_course** (an adapted record, contract section 8): what was delivered; the plan covers the remaining
  fractions, the site's maximum voxel dose counts the delivered dose, the TCP is the whole course's and the uniform
  reference is the baseline course continued without adaptation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radiogenomics.planning.optimizers.base import OptimizedPlan, PlanProblem, PlanStructure

FORMAT = "radiogenomics-plan-evaluation/1"
#: ICRU 50/62 homogeneity: within -5 % / +7 % of the prescription.
UNDER_TOLERANCE, OVER_TOLERANCE = 0.05, 0.07
#: Dose painting by numbers: the plan follows the map when its quality factor is at most 5 % (Vanderstraeten et
#: al. 2006 reported QF 2-4 % for planned 'dose painting by numbers' IMRT in head and neck).
QF_GOAL = 0.05
#: A limit is met within this relative tolerance (rounding of the interpolated dose: 0.1 %).
MET_TOLERANCE = 1e-3
PERCENTS = (98, 95, 50, 2)
#: The flags an evaluation may carry (closed vocabulary).
FLAGS = ("plan_violates_rail", "plan_exceeds_soft_limit", "plan_not_converged", "target_underdosed",
         "dose_map_not_followed", "structure_missing", "body_derived", "uniform_reference_failed")


def dose_statistics(dose_gy: np.ndarray, mask: np.ndarray, voxel_cc: float) -> dict[str, float]:
    """Volume (cc), mean, min, max and D_x (Gy) of the voxels in ``mask``."""
    voxels = np.asarray(dose_gy, dtype=np.float64)[mask]
    if voxels.size == 0:
        return {"volume_cc": 0.0}
    stats = {"volume_cc": float(voxels.size * voxel_cc), "mean_gy": float(voxels.mean()),
             "min_gy": float(voxels.min()), "max_gy": float(voxels.max())}
    for pct, value in zip(PERCENTS, np.percentile(voxels, [100 - p for p in PERCENTS]), strict=True):
        stats[f"d{pct}_gy"] = float(value)
    return stats


def dose_at_volume(voxels: np.ndarray, volume_pct: float) -> float:
    """D_x: the dose that at least ``volume_pct`` % of the voxels receive."""
    return float(np.percentile(voxels, 100.0 - float(volume_pct)))


def geud_voxels(voxels: np.ndarray, a: float) -> float:
    """gEUD of equal-volume voxels: mean(D^a)^(1/a) (Niemierko, Med Phys 1999;26:1100)."""
    from radiogenomics.radiobiology.ntcp import geud

    return float(geud(voxels, np.ones_like(voxels), a))


def _within(achieved: float, goal: float, kind: str) -> bool:
    if kind == "upper":
        return achieved <= goal * (1 + MET_TOLERANCE)
    return achieved >= goal * (1 - MET_TOLERANCE)


def evaluate_objective(spec: Mapping[str, Any], structure: PlanStructure, dose_gy: np.ndarray,
                       n_fractions: int, dose_map_gy: np.ndarray | None) -> dict[str, Any]:
    """One objective of ``objectives.json`` on the planned dose: goal, achieved, met."""
    kind = str(spec.get("type"))
    voxels = np.asarray(dose_gy, dtype=np.float64)[structure.mask]
    row: dict[str, Any] = {"structure": structure.name, "type": kind, "priority": spec.get("priority")}
    if kind == "target_effect":
        d = voxels / n_fractions
        effect = float(np.mean(structure.alpha_per_gy * d + structure.beta_per_gy2 * d**2))
        goal = float(spec["effect_per_fraction"])
        row.update(goal={"effect_per_fraction": goal, "within": [-UNDER_TOLERANCE, OVER_TOLERANCE]},
                   achieved=effect, met=goal * (1 - UNDER_TOLERANCE) <= effect <= goal * (1 + OVER_TOLERANCE))
    elif kind == "dose_map":
        if dose_map_gy is None:
            row.update(goal={"quality_factor_max": QF_GOAL}, achieved=None, met=False)
            return row
        prescribed = np.asarray(dose_map_gy, dtype=np.float64)[structure.mask]
        valid = prescribed > 0
        ratio = voxels[valid] / prescribed[valid]
        qf = float(np.mean(np.abs(ratio - 1.0))) if valid.any() else math.nan
        within = float(np.mean((ratio >= 1 - UNDER_TOLERANCE) & (ratio <= 1 + OVER_TOLERANCE))) if valid.any() \
            else math.nan
        row.update(goal={"quality_factor_max": QF_GOAL}, achieved=qf, met=bool(qf <= QF_GOAL),
                   share_within_icru=within,
                   correlation=float(np.corrcoef(voxels[valid], prescribed[valid])[0, 1])
                   if valid.sum() > 2 and np.ptp(prescribed[valid]) > 0 and np.ptp(voxels[valid]) > 0 else None)
    elif kind in ("min_dvh", "max_dvh"):
        goal = float(spec["dose_gy"])
        achieved = dose_at_volume(voxels, float(spec["volume_pct"]))
        row.update(goal={"dose_gy": goal, "volume_pct": float(spec["volume_pct"])}, achieved=achieved,
                   met=_within(achieved, goal, "lower" if kind == "min_dvh" else "upper"))
    elif kind in ("max_dose", "mean_dose", "geud"):
        goal = float(spec["dose_gy"])
        if kind == "max_dose":
            achieved = float(voxels.max())
        elif kind == "mean_dose":
            achieved = float(voxels.mean())
        else:
            achieved = geud_voxels(voxels, float(spec["a"]))
        row.update(goal={"dose_gy": goal, **({"a": float(spec["a"])} if kind == "geud" else {})},
                   achieved=achieved, met=_within(achieved, goal, "upper"))
    else:
        row.update(goal=None, achieved=None, met=False, note=f"unknown objective type {kind!r}")
    return row


@dataclass(frozen=True)
class Biology:
    """TCP inputs over the target voxels (on the CT grid): clonogens per voxel, pO2 (None: oxic), the patient's LQ
    parameters and the RSI interval's alpha range."""

    clonogens: np.ndarray
    po2_mmhg: np.ndarray | None
    alpha_per_gy: float
    beta_per_gy2: float
    alpha_range: tuple[float, float] | None
    notes: tuple[str, ...] = ()


def tcp_summary(dose_gy: np.ndarray, mask: np.ndarray, biology: Biology, n_fractions: int) -> dict[str, Any]:
    """Poisson TCP of the dose over the target, and its range over the RSI interval's alpha."""
    from radiogenomics.radiobiology.tcp import tcp_poisson

    dose = np.asarray(dose_gy, dtype=np.float64)[mask]

    def tcp(alpha: float) -> float:
        return float(tcp_poisson(dose, biology.clonogens, alpha, biology.beta_per_gy2, n_fractions,
                                 biology.po2_mmhg))

    out: dict[str, Any] = {"tcp": tcp(biology.alpha_per_gy), "n_fractions": n_fractions,
                           "mean_dose_gy": float(dose.mean())}
    if biology.alpha_range is not None:
        low, high = sorted(tcp(a) for a in biology.alpha_range)
        out["tcp_range"] = [low, high]
    else:
        out["tcp_range"] = None
    return out


def ntcp_rows(problem: PlanProblem, dose_gy: np.ndarray, n_fractions: int,
              alpha_beta: Mapping[str, float]) -> list[dict[str, Any]]:
    """LKB NTCP per endpoint and organ-at-risk structure (EQD2 per voxel at the organ's alpha/beta)."""
    from radiogenomics.radiobiology.ntcp import load_ntcp_parameters, ntcp_for_endpoint
    from radiogenomics.radiobiology.rails import organ_key

    table = load_ntcp_parameters()
    rows = []
    for structure in problem.structures:
        if structure.role != "oar":
            continue
        organ = organ_key(structure.tg263_name or structure.name)
        for endpoint, params in table.items():
            if params.get("organ") != organ:
                continue
            voxels = np.asarray(dose_gy, dtype=np.float64)[structure.mask]
            ab = alpha_beta.get(structure.name)
            value = ntcp_for_endpoint(voxels, np.ones_like(voxels), endpoint, n_fractions=n_fractions,
                                      alpha_beta_gy=ab) if ab else ntcp_for_endpoint(voxels, np.ones_like(voxels),
                                                                                     endpoint)
            rows.append({"endpoint": endpoint, "structure": structure.name, "organ": organ, "ntcp": float(value),
                         "predicts": params.get("predicts", params.get("description", "")),
                         "eqd2_alpha_beta_gy": ab, "source": params.get("source", "")})
    return rows


def rail_rows(problem: PlanProblem, dose_gy: np.ndarray, n_fractions: int, site: str | None,
              rails: Any, alpha_beta: Mapping[str, float], delivered_gy: float = 0.0) -> list[dict[str, Any]]:
    """Every rail limit on the planned dose: the OARs' (as converted in objectives.json: for an adapted course
    what the delivered fractions left) and the site's (an adapted course: ``delivered_gy`` + the planned maximum)."""
    from radiogenomics.radiobiology.ntcp import ntcp_for_endpoint

    rows: list[dict[str, Any]] = []
    for structure in problem.structures:
        if structure.role != "oar":
            continue
        limit = rails.oar(structure.tg263_name or structure.name)
        if limit is None:
            continue
        voxels = np.asarray(dose_gy, dtype=np.float64)[structure.mask]
        specs = {s["type"]: s for s in structure.objectives if "rail_dose_gy" in s}
        for kind, metric in (("max_dose", "max_gy"), ("mean_dose", "mean_gy")):
            if kind in specs:
                goal = float(specs[kind]["dose_gy"])
                achieved = float(voxels.max() if kind == "max_dose" else voxels.mean())
                rows.append({"structure": structure.name, "metric": metric, "limit_gy": goal,
                             "rail_dose_gy": float(specs[kind]["rail_dose_gy"]), "achieved": achieved,
                             "met": _within(achieved, goal, "upper"), "hard": bool(limit.hard),
                             "source": limit.source})
        if limit.max_ntcp is not None and limit.endpoint is not None:
            ab = alpha_beta.get(structure.name)
            spent = specs.get("geud", {}).get("delivered_eqd2_gy")
            source = limit.source
            if spent is not None and ab:  # an adapted course: the whole course's NTCP, delivered gEUD + this plan's
                value = _whole_course_ntcp(voxels, n_fractions, ab, limit.endpoint, float(spent))
                source += ("; whole course: the delivered gEUD (EQD2) plus this plan's, an upper bound of the "
                           "course's gEUD (Minkowski)")
            else:
                value = float(ntcp_for_endpoint(voxels, np.ones_like(voxels), limit.endpoint,
                                                n_fractions=n_fractions, alpha_beta_gy=ab) if ab else
                              ntcp_for_endpoint(voxels, np.ones_like(voxels), limit.endpoint))
            rows.append({"structure": structure.name, "metric": f"ntcp_{limit.endpoint}", "limit": limit.max_ntcp,
                         "achieved": value, "met": value <= limit.max_ntcp + 1e-9, "hard": bool(limit.hard),
                         "source": source})
    if site is not None:
        bounds = rails.site(site)
        body = next((s for s in problem.structures if s.role == "external"), None)
        mask = body.mask if body is not None else np.ones(dose_gy.shape, dtype=bool)
        achieved = float(np.asarray(dose_gy)[mask].max()) + delivered_gy
        rows.append({"structure": body.name if body is not None else "(all voxels)", "metric": "max_gy",
                     "limit_gy": bounds.max_voxel_dose_gy, "achieved": achieved,
                     "met": _within(achieved, bounds.max_voxel_dose_gy, "upper"), "hard": True,
                     "source": f"site {site} max_voxel_dose_gy ({bounds.source})"
                               + (f"; the {delivered_gy:.4g} Gy delivered included" if delivered_gy else "")})
    return rows


def _whole_course_ntcp(voxels: np.ndarray, n_fractions: int, alpha_beta_gy: float, endpoint: str,
                       delivered_geud_eqd2_gy: float) -> float:
    """LKB NTCP (Burman 1991) of a course whose delivered part had gEUD ``delivered_geud_eqd2_gy`` (EQD2) and whose
    remaining part is ``voxels`` (Gy in ``n_fractions``): gEUD of the sum <= the sum of the gEUDs (a >= 1)."""
    from radiogenomics.radiobiology.adaptive import eqd2
    from radiogenomics.radiobiology.ntcp import geud, lkb_ntcp, ntcp_parameters

    params = ntcp_parameters(endpoint)
    remaining = float(geud(np.asarray(eqd2(voxels, n_fractions, alpha_beta_gy)), np.ones_like(voxels), 1.0 / params.n))
    return float(lkb_ntcp(delivered_geud_eqd2_gy + remaining, params.td50_gy, params.m))


def _violation(row: Mapping[str, Any]) -> dict[str, Any]:
    limit = row.get("limit_gy", row.get("limit"))
    unit = "Gy" if "limit_gy" in row else ""
    excess = float(row["achieved"]) - float(limit)
    text = (f"{row['structure']} {row['metric']} {float(row['achieved']):.4g}{' ' + unit if unit else ''} > "
            f"{float(limit):.4g}{' ' + unit if unit else ''} (+{excess:.3g}{' ' + unit if unit else ''})")
    return {"structure": row["structure"], "metric": row["metric"], "limit": limit, "achieved": row["achieved"],
            "excess": excess, "hard": row["hard"], "text": text}


def evaluate_plan(problem: PlanProblem, plan: OptimizedPlan, *, record: Mapping[str, Any], site: str | None,
                  rails: Any, voxel_cc: float, biology: Biology | None, uniform: OptimizedPlan | None = None,
                  uniform_regimen: Mapping[str, Any] | None = None, missing: Sequence[str] = (),
                  notes: Sequence[str] = (), settings: Mapping[str, Any] | None = None,
                  files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``radiogenomics-plan-evaluation/1`` document of one planned dose (module docstring)."""
    n = int(problem.n_fractions)
    dose = plan.dose_gy
    flags: list[str] = []
    all_notes = list(notes)
    structures = []
    for s in problem.structures:
        structures.append({"name": s.name, "tg263_name": s.tg263_name, "role": s.role, "derived": s.derived,
                           **dose_statistics(dose, s.mask, voxel_cc)})
    objectives = [evaluate_objective(spec, s, dose, n, problem.dose_map_gy)
                  for s in problem.structures for spec in s.objectives]
    alpha_beta = {s.name: s.alpha_per_gy / s.beta_per_gy2 for s in problem.structures
                  if s.role == "oar" and s.beta_per_gy2 > 0}
    from radiogenomics.planning.remaining import is_adapted

    adapted = is_adapted(record)
    delivered_gy = float(record["delivered_dose_gy"]) if adapted else 0.0
    rails_rows = rail_rows(problem, dose, n, site, rails, alpha_beta, delivered_gy)
    violations = [_violation(r) for r in rails_rows if not r["met"]]
    if any(v["hard"] for v in violations):
        flags.append("plan_violates_rail")
    if any(not v["hard"] for v in violations):
        flags.append("plan_exceeds_soft_limit")
    if not plan.converged:
        flags.append("plan_not_converged")
        all_notes.append(f"the optimizer stopped without converging after {plan.iterations} iteration(s): "
                         f"{plan.message}")
    target = problem.target
    if any(o["type"] == "min_dvh" and o["structure"] == target.name and not o["met"] for o in objectives):
        flags.append("target_underdosed")
    if any(o["type"] == "dose_map" and not o["met"] for o in objectives):
        flags.append("dose_map_not_followed")
    if missing:
        flags.append("structure_missing")
        all_notes.append(f"not in the patient's files, not planned: {', '.join(missing)}")
    if any(s.derived and s.role == "external" for s in problem.structures):
        flags.append("body_derived")
    tcp: dict[str, Any] = {"model": "Poisson TCP over target voxels (Webb & Nahum, Phys Med Biol 1993;38:653), "
                                    "FDG clonogen density and FMISO pO2 (Lazzeroni et al., J Nucl Med 2026)"}
    if biology is not None:
        tcp["alpha_per_gy"], tcp["beta_per_gy2"] = biology.alpha_per_gy, biology.beta_per_gy2
        tcp["alpha_range_per_gy"] = list(biology.alpha_range) if biology.alpha_range else None
        tcp["inputs"] = list(biology.notes)
        tcp["planned"] = tcp_summary(dose, target.mask, biology, n)
        if uniform is not None and uniform_regimen is not None:
            un = int(uniform_regimen["n_fractions"])
            tcp["uniform_reference"] = {**dict(uniform_regimen), **tcp_summary(uniform.dose_gy, target.mask,
                                                                                biology, un)}
        else:
            tcp["uniform_reference"] = None
    course: dict[str, Any] | None = None
    if adapted:
        course = {"timepoint": record["timepoint"], "delivered_n_fractions": int(record["delivered_n_fractions"]),
                  "delivered_dose_gy": delivered_gy, "remaining_n_fractions": n,
                  "adapted_total_dose_gy": float(record["adapted_total_dose_gy"]),
                  "baseline_total_dose_gy": record.get("baseline_total_dose_gy")}
        all_notes.append(f"adapted course at {record['timepoint']}: the plan covers the remaining {n} fraction(s); "
                         "TCP is the whole course's (the clonogens surviving the delivered fractions, the "
                         "mid-treatment pO2); NTCP is the remaining fractions' (the whole-course OAR sum is the "
                         "adapted record's adaptation.whole_course_oar_checks); the uniform reference is the "
                         "baseline course continued")
    ntcp = ntcp_rows(problem, dose, n, alpha_beta)
    uniform_ntcp = ntcp_rows(problem, uniform.dose_gy, int(uniform_regimen["n_fractions"]), alpha_beta) \
        if uniform is not None and uniform_regimen is not None else []
    for row, ref in zip(ntcp, uniform_ntcp, strict=False):
        row["uniform_reference"] = ref["ntcp"]
    return {"format": FORMAT, "patient_id": problem.patient_id,
            "model_uri": str(record.get("model_uri") or ""), "model_version": str(record.get("model_version") or ""),
            "input_sha256": str(record.get("input_sha256") or ""), "site": site,
            "optimizer": plan.summary(), "settings": dict(settings or {}),
            "regimen": {"n_fractions": n, "dose_per_fraction_gy": problem.dose_per_fraction_gy,
                        "total_dose_gy": n * problem.dose_per_fraction_gy, "source": "prescription record"},
            "painting": "dose_map" if problem.dose_map_gy is not None else "uniform",
            **({"adapted_course": course} if course is not None else {}),
            "structures": structures, "objectives": objectives, "rails": rails_rows, "violations": violations,
            "tcp": tcp, "ntcp": ntcp,
            "uniform_reference": uniform.summary() if uniform is not None else None,
            "flags": [f for f in FLAGS if f in flags], "notes": all_notes, "files": dict(files or {})}
