"""pyRadPlan as the plan optimizer: the :class:`PyRadPlanOptimizer` adapter (patient anatomy) and the TG119 example.

:class:`PyRadPlanOptimizer` implements :class:`radiogenomics.planning.optimizers.base.Optimizer` on the patient's
own CT and structures (``pyRadPlan.ct.create_ct`` / ``pyRadPlan.cst.create_voi``); :func:`plan_with_pyradplan`
plans an ``objectives.json`` on pyRadPlan's TG119 phantom (an example only).

pyRadPlan (a Python reimplementation of matRad, https://github.com/e0404/pyRadPlan) is the downstream optimizer:
each structure gets the objectives file's alpha/beta as `VOI.alpha_x` / `VOI.beta_x`, the target's
`target_effect` becomes an LQ-effect squared-deviation objective, and OAR limits become physical-dose objectives
per fraction (total / n_fractions). The photon engine gives physical dose only, so the RBE = 1 LQ matrices
`dij.alpha_dose = diag(alpha_x) D` and `dij.sqrt_beta_dose = diag(sqrt(beta_x)) D` are built here from the
physical dij. The pitfalls avoided are listed in docs/serving.md ("pyRadPlan: the downstream optimizer").
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from pyRadPlan import PhotonPlan, calc_dose_influence, fluence_optimization, generate_stf, load_tg119
from pyRadPlan.core import ProgressReporter
from pyRadPlan.optimization.objectives import MaxDVH, MinDVH, SquaredDeviation, SquaredOverdosing
from pyRadPlan.optimization.objectives._objective import Objective, ParameterMetadata

from radiogenomics.errors import InputError
from radiogenomics.planning.objectives import validate_objectives
from radiogenomics.planning.optimizers.base import (
    OptimizedPlan,
    PlanningError,
    PlanProblem,
    UnsupportedObjective,
)

logger = logging.getLogger(__name__)

DVH_METRICS = ("mean_gy", "d95_gy", "d50_gy", "d2_gy", "max_gy")
# The normal-tissue objective on BODY: squared overdosing above 60 % of the target dose with priority 100, the
# ratio of the objectives shipped with pyRadPlan's TG119 phantom (OuterTarget 50 Gy, BODY overdosing above 30 Gy at
# priority 100; AAPM TG-119, Ezzell et al., Med Phys 36:5359, 2009, as set up in matRad's TG119.mat).
NORMAL_TISSUE_DOSE_FRACTION = 0.6
NORMAL_TISSUE_PRIORITY = 100.0


class UpperGEUD(Objective):  # type: ignore[misc]  # pyRadPlan is untyped
    """One-sided gEUD limit: max(0, gEUD - eud_max)^2, gEUD = mean(d^a)^(1/a) (Niemierko, Med Phys 26:1100, 1999).

    pyRadPlan's MeanDose and EUD objectives are two-sided (they pull an OAR *up* to the reference); a limit must
    only penalise doses above it. `a = 1` is the mean dose.
    """

    name: Literal["radiogenomics upper gEUD"] = "radiogenomics upper gEUD"
    eud_max: Annotated[float, Field(default=0.0, ge=0.0), ParameterMetadata(kind="reference")]
    a: Annotated[float, Field(default=1.0, ge=1.0), ParameterMetadata(kind="numeric")]

    def _geud(self, values: np.ndarray) -> tuple[float, float]:
        moment = float(np.mean(np.power(np.clip(values, 0.0, None), self.a)))
        return moment, moment ** (1.0 / self.a)

    def compute_objective(self, values: np.ndarray) -> float:
        return max(0.0, self._geud(values)[1] - self.eud_max) ** 2

    def compute_gradient(self, values: np.ndarray) -> np.ndarray:
        moment, geud = self._geud(values)
        excess = geud - self.eud_max
        if excess <= 0.0 or moment <= 0.0:
            return np.zeros_like(values)
        dgeud = moment ** (1.0 / self.a - 1.0) * np.power(np.clip(values, 0.0, None), self.a - 1.0) / values.size
        return 2.0 * excess * dgeud


@dataclass
class PlanGeometry:
    """The geometry-only part of a plan (CT, structures, beams, physical dij): reusable across patients."""

    ct: Any
    cst: Any
    stf: Any
    pln: Any
    dij: Any
    beams: int
    dose_grid_mm: float
    bixel_width_mm: float
    seconds: float
    default_alpha_beta: dict[str, tuple[float, float]] = field(default_factory=dict)  # the structures' own


@dataclass
class PlanResult:
    """An optimized pyRadPlan plan for one objectives file.

    `dvh_total` / `dvh_per_fraction`: {pyRadPlan structure: {mean_gy, d95_gy, d50_gy, d2_gy, max_gy}} of the
    physical dose over the course and per fraction (dose grid, structures without overlap removal).
    `structure_map`: objectives structure name -> pyRadPlan structure name.
    """

    patient_id: str
    target: str
    n_fractions: int
    dose_per_fraction_gy: float
    dvh_total: dict[str, dict[str, float]]
    dvh_per_fraction: dict[str, dict[str, float]]
    structure_map: dict[str, str]
    fluence: np.ndarray
    iterations: int | None
    objective_value: float | None
    solver_message: str
    wall_time_s: float
    geometry: PlanGeometry
    dose_per_fraction: np.ndarray = field(repr=False)

    @property
    def target_median_per_fraction_gy(self) -> float:
        """Median physical dose per fraction in the target."""
        return self.dvh_per_fraction[self.target]["d50_gy"]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays, no pyRadPlan objects)."""
        return {"patient_id": self.patient_id, "target": self.target, "n_fractions": self.n_fractions,
                "dose_per_fraction_gy": self.dose_per_fraction_gy, "structure_map": self.structure_map,
                "dvh_total": self.dvh_total, "dvh_per_fraction": self.dvh_per_fraction,
                "iterations": self.iterations, "objective_value": self.objective_value,
                "solver_message": self.solver_message, "wall_time_s": round(self.wall_time_s, 3),
                "beams": self.geometry.beams, "dose_grid_mm": self.geometry.dose_grid_mm,
                "bixel_width_mm": self.geometry.bixel_width_mm, "n_beamlets": int(self.fluence.size)}

    def table(self) -> str:
        """The DVH summary as a fixed-width text table (total Gy over the course, then per fraction)."""
        header = f"{'structure':<14}" + "".join(f"{m:>10}" for m in DVH_METRICS) + f"{'(per fx)':>10}"
        lines = [f"patient {self.patient_id}: {self.n_fractions} x {self.dose_per_fraction_gy:.3f} Gy "
                 f"(total physical dose in Gy; last column: median per fraction)", header]
        for name, stats in self.dvh_total.items():
            values = "".join(f"{stats[m]:>10.2f}" for m in DVH_METRICS)
            lines.append(f"{name:<14}{values}{self.dvh_per_fraction[name]['d50_gy']:>10.3f}")
        return "\n".join(lines)


class _Demote(logging.Filter):
    """Turns pyRadPlan's log records that are expected here into DEBUG records (handlers at WARNING drop them)."""

    def __init__(self, *messages: str) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and any(str(record.msg).startswith(m) for m in self.messages):
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


#: pyRadPlan's log records that are expected here, (logger, message start): our dose grid replaces its engine's
#: default (`pln.prop_dose_calc`, on purpose); it picks its only photon fluence problem, `nonlin_fluence` (naming it
#: in `pln.prop_opt` makes the problem warn about an unknown property instead).
_EXPECTED = (("pyRadPlan.core._configurable", "Property overwritten from"),
             ("pyRadPlan.optimization.problems._factory", "No PlanningProblem specified"))


@contextmanager
def _quiet_progress(show: bool) -> Iterator[None]:
    """Around pyRadPlan's calls: its console progress bars off (restored afterwards), and its expected noise scoped
    to the call. numpy's divide-by-zero and invalid-value warnings (the Siddon ray tracer divides by ray directions
    that are 0 along an axis, by design) are ignored (`np.errstate`); the warning that no GPU is available on the
    numpy backend is filtered (it falls back to the CPU, as wanted); its expected notes (:data:`_EXPECTED`) become
    DEBUG records."""
    previous = ProgressReporter.console_progress
    ProgressReporter.console_progress = show
    demotes = [(logging.getLogger(name), _Demote(start)) for name, start in _EXPECTED]
    for logger_, demote in demotes:
        logger_.addFilter(demote)
    try:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requested GPU device is not available", category=UserWarning,
                                    module=r"pyRadPlan\.")
            yield
    finally:
        for logger_, demote in demotes:
            logger_.removeFilter(demote)
        ProgressReporter.console_progress = previous


def load_objectives(objectives: Mapping[str, Any] | Path) -> dict[str, Any]:
    """The objectives document as a dict, checked against the radiogenomics-objectives/1 schema."""
    if not isinstance(objectives, Path):
        document = dict(objectives)
        validate_objectives(document)
        return document
    try:
        document = json.loads(objectives.read_text())
        validate_objectives(document)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the objectives file: {exc}", file=str(objectives),
                         fix="pass an objectives.json written by `radiogenomics handoff`") from exc
    except InputError as exc:
        raise InputError(exc.reason, patient_id=exc.patient_id, file=str(objectives), fix=exc.fix) from exc
    return dict(document)


def prepare_geometry(*, ct: Any = None, cst: Any = None, beams: int = 5, dose_grid_mm: float = 8.0,
                     bixel_width_mm: float = 10.0, alpha_beta: Mapping[str, tuple[float, float]] | None = None,
                     progress: bool = False) -> PlanGeometry:
    """CT, structures (a copy), beams at equispaced gantry angles and the physical dij (TG119 by default).

    `alpha_beta` ({pyRadPlan structure: (alpha_x, beta_x)}) is set on the structures BEFORE the dose influence
    calculation, which copies them into `dij.alphax/betax` once.
    """
    if beams < 1 or dose_grid_mm <= 0 or bixel_width_mm <= 0:
        raise InputError(f"beams={beams}, dose_grid_mm={dose_grid_mm}, bixel_width_mm={bixel_width_mm}: "
                         "all must be positive", fix="use e.g. beams=5, dose_grid_mm=8, bixel_width_mm=10")
    start = time.perf_counter()
    if ct is None or cst is None:
        ct, cst = load_tg119()
    else:
        cst = cst.model_copy(deep=True)
    defaults = {voi.name: (float(voi.alpha_x), float(voi.beta_x)) for voi in cst.vois}
    for voi in cst.vois:
        voi.objectives = []
        if alpha_beta and voi.name in alpha_beta:
            voi.alpha_x, voi.beta_x = alpha_beta[voi.name]
    pln = PhotonPlan(machine="Generic")
    pln.prop_stf = {"generator": "photonIMRT", "bixel_width": float(bixel_width_mm),
                    "gantry_angles": np.linspace(0.0, 360.0, beams, endpoint=False).tolist(),
                    "couch_angles": [0.0] * beams}
    pln.prop_dose_calc = {"engine": "SVDPB", "dose_grid": {"resolution": dict.fromkeys("xyz", float(dose_grid_mm))}}
    with _quiet_progress(progress):
        stf = generate_stf(ct, cst, pln)
        dij = calc_dose_influence(ct, cst, stf, pln)
    seconds = time.perf_counter() - start
    logger.info("pyRadPlan geometry: %d beams, %d beamlets, %d dose voxels in %.1f s", beams,
                dij.total_num_of_bixels, dij.num_of_voxels, seconds)
    return PlanGeometry(ct, cst, stf, pln, dij, beams, dose_grid_mm, bixel_width_mm, seconds, defaults)


def structure_map(document: Mapping[str, Any], cst_names: list[str], *, target: str,
                  oar_map: Mapping[str, str] | None) -> dict[str, str]:
    """Objectives structure name -> pyRadPlan structure: `oar_map` first, the target onto `target`, else by name."""
    oar_map = dict(oar_map or {})
    patient = str(document.get("patient_id") or "") or None
    mapping: dict[str, str] = {}
    for structure in document["structures"]:
        name = str(structure.get("name"))
        if name in oar_map:
            mapping[name] = oar_map[name]
        elif structure.get("role") == "target" and target not in mapping.values():
            mapping[name] = target
        elif name in cst_names:
            mapping[name] = name
        else:
            raise InputError(f"structure {name!r} of the objectives is not mapped and not in the structure set "
                             f"{cst_names}", patient_id=patient,
                             fix=f"map it with oar_map={{{name!r}: <one of {cst_names}>}}")
    unknown = sorted(set(mapping.values()) - set(cst_names))
    if unknown:
        raise InputError(f"structure(s) {unknown} are not in the structure set {cst_names}", patient_id=patient,
                         fix="map onto structures that exist (target=..., oar_map=...)")
    doubled = sorted({v for v in mapping.values() if list(mapping.values()).count(v) > 1})
    if doubled:
        raise InputError(f"several objectives structures map onto {doubled}", patient_id=patient,
                         fix="map each objectives structure onto its own pyRadPlan structure")
    return mapping


def _radiosensitivity(document: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """{pyRadPlan structure: (alpha_x, beta_x)} from the objectives' per-structure alpha/beta."""
    return {mapping[str(s["name"])]: (float(s["alpha_per_gy"]), float(s["beta_per_gy2"]))
            for s in document["structures"]}


def _objective(spec: Mapping[str, Any], n_fractions: float, where: str) -> Any:
    """One objectives-file objective as a pyRadPlan objective; doses become per fraction (total / n_fractions)."""
    kind = spec.get("type")
    priority = float(spec.get("priority", 1.0))
    try:
        if kind == "target_effect":
            return SquaredDeviation(priority=priority, d_ref=float(spec["effect_per_fraction"]), quantity="effect")
        if kind == "dose_map":
            raise UnsupportedObjective(f"{where}: a dose_map objective needs the patient's own anatomy (the map lies "
                                       "on the patient's PET grid)",
                                       fix="plan it with `radiogenomics plan` (PyRadPlanOptimizer), or hand off "
                                           "without --cohort for the TG119 example")
        dose = float(spec["dose_gy"]) / n_fractions
        if kind == "max_dose":
            return SquaredOverdosing(priority=priority, d_max=dose)
        if kind == "min_dvh":
            return MinDVH(priority=priority, d=dose, v_min=float(spec["volume_pct"]))
        if kind == "max_dvh":
            return MaxDVH(priority=priority, d=dose, v_max=float(spec["volume_pct"]))
        if kind == "mean_dose":
            return UpperGEUD(priority=priority, eud_max=dose, a=1.0)
        if kind == "geud":
            return UpperGEUD(priority=priority, eud_max=dose, a=float(spec["a"]))
    except UnsupportedObjective:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: objective {dict(spec)} is incomplete or invalid ({exc})",
                         fix="see contract §7 for the fields of each objective type") from exc
    raise UnsupportedObjective(f"{where}: objective type {kind!r} is not supported by pyRadPlan here",
                               fix="use target_effect, min_dvh, max_dvh, max_dose, mean_dose, geud or dose_map")


def _assign_objectives(cst: Any, document: Mapping[str, Any], mapping: Mapping[str, str],
                       normal_tissue: str | None) -> None:
    """Replace every structure's objectives with the objectives file's (plus the normal-tissue objective)."""
    n_fractions = float(document["n_fractions"])
    by_name = {voi.name: voi for voi in cst.vois}
    for voi in cst.vois:
        voi.objectives = []
    for structure in document["structures"]:
        where = f"patient {document.get('patient_id')}, structure {structure.get('name')!r}"
        specs = structure.get("objectives") or []
        by_name[mapping[str(structure["name"])]].objectives = [_objective(s, n_fractions, where) for s in specs]
    if normal_tissue is not None:
        if normal_tissue not in by_name:
            raise InputError(f"normal-tissue structure {normal_tissue!r} is not in the structure set {list(by_name)}",
                             fix="pass normal_tissue=<the body outline> or normal_tissue=None")
        if normal_tissue not in mapping.values():
            limit = NORMAL_TISSUE_DOSE_FRACTION * float(document["dose_per_fraction_gy"])
            by_name[normal_tissue].objectives = [SquaredOverdosing(priority=NORMAL_TISSUE_PRIORITY, d_max=limit)]


def attach_lq_matrices(dij: Any, cst: Any) -> None:
    """Refresh `dij.alphax/betax` from the structures and build the RBE = 1 LQ influence matrices.

    alpha_dose = diag(alpha_x) D and sqrt_beta_dose = diag(sqrt(beta_x)) D, so effect = alpha d + beta d^2 per voxel.
    """
    alphax, betax = cst.get_reference_lq_params(overlap_is_applied=False, resample_grid=dij.dose_grid)
    dij.alphax, dij.betax = np.asarray(alphax, dtype=float), np.asarray(betax, dtype=float)
    alpha_dose = np.empty(dij.physical_dose.shape, dtype=object)
    sqrt_beta_dose = np.empty(dij.physical_dose.shape, dtype=object)
    for index, dose in enumerate(dij.physical_dose.flat):
        alpha_dose.flat[index] = sp.csc_array(sp.diags_array(dij.alphax) @ dose)
        sqrt_beta_dose.flat[index] = sp.csc_array(sp.diags_array(np.sqrt(dij.betax)) @ dose)
    dij.alpha_dose, dij.sqrt_beta_dose = alpha_dose, sqrt_beta_dose


def dvh_summary(dose_gy: np.ndarray, cst: Any, ct: Any, dose_grid: Any) -> dict[str, dict[str, float]]:
    """{structure: {mean_gy, d95_gy, d50_gy, d2_gy, max_gy}} of a dose on the dose grid (D_x: dose to x % volume)."""
    resampled = cst.resample_on_new_ct(ct.resample_to_grid(dose_grid))
    summary = {}
    for voi in resampled.vois:
        voxels = np.asarray(dose_gy)[np.asarray(voi.indices_numpy)]
        if voxels.size == 0:
            continue
        d95, d50, d2 = np.percentile(voxels, [5.0, 50.0, 98.0])
        summary[voi.name] = {"mean_gy": float(voxels.mean()), "d95_gy": float(d95), "d50_gy": float(d50),
                             "d2_gy": float(d2), "max_gy": float(voxels.max())}
    return summary


def plan_with_pyradplan(objectives: Mapping[str, Any] | Path, *, ct: Any = None, cst: Any = None,
                        target: str = "OuterTarget", oar_map: Mapping[str, str] | None = None, beams: int = 5,
                        dose_grid_mm: float = 8.0, bixel_width_mm: float = 10.0, max_iter: int = 150,
                        normal_tissue: str | None = "BODY", geometry: PlanGeometry | None = None,
                        progress: bool = False) -> PlanResult:
    """Optimize the objectives file with pyRadPlan (photons, scipy L-BFGS-B) on `ct`/`cst` (default TG119).

    The objectives' target maps onto `target`, OARs onto pyRadPlan structures through `oar_map` (e.g.
    {"spinal_cord": "Core"}) or by name. `normal_tissue` (default BODY) gets a low-priority overdosing objective
    unless the file names it. `geometry` (e.g. `previous.geometry`) reuses a physical dij on the same CT, beams and
    grid; alpha_x/beta_x are refreshed from this file either way. Raises InputError for bad objectives or
    structures, PlanningError when the optimizer returns zero fluence.
    """
    start = time.perf_counter()
    document = load_objectives(objectives)
    if max_iter < 1:
        raise InputError(f"max_iter={max_iter} must be >= 1", fix="use e.g. max_iter=150")
    if geometry is not None and (ct is not None or cst is not None):
        raise InputError("give either geometry or ct/cst, not both", fix="plan on geometry=previous.geometry alone")
    if geometry is None:
        if ct is None or cst is None:
            ct, cst = load_tg119()
        mapping = structure_map(document, [voi.name for voi in cst.vois], target=target, oar_map=oar_map)
        geometry = prepare_geometry(ct=ct, cst=cst, beams=beams, dose_grid_mm=dose_grid_mm,
                                    bixel_width_mm=bixel_width_mm, alpha_beta=_radiosensitivity(document, mapping),
                                    progress=progress)
    mapping = structure_map(document, [voi.name for voi in geometry.cst.vois], target=target, oar_map=oar_map)
    alpha_beta = {**geometry.default_alpha_beta, **_radiosensitivity(document, mapping)}
    for voi in geometry.cst.vois:  # structures the file does not name get back their own alpha_x/beta_x
        voi.alpha_x, voi.beta_x = alpha_beta.get(voi.name, (voi.alpha_x, voi.beta_x))
    _assign_objectives(geometry.cst, document, mapping, normal_tissue)
    attach_lq_matrices(geometry.dij, geometry.cst)

    n_fractions = int(round(float(document["n_fractions"])))
    pln = geometry.pln
    pln.num_of_fractions = n_fractions
    pln.prop_opt = {"convert_dose_objectives": False, "solver": "scipy", "max_iter": int(max_iter)}
    info: dict[str, Any] = {}
    with _quiet_progress(progress):
        fluence = np.asarray(fluence_optimization(geometry.ct, geometry.cst, geometry.stf, geometry.dij, pln,
                                                  opt_info=info))
    result_info = info.get("result_info") or {}
    patient = str(document.get("patient_id"))
    if not np.isfinite(fluence).all() or not np.any(fluence > 0):
        raise PlanningError(f"patient {patient}: pyRadPlan returned zero or non-finite fluence after "
                            f"{info.get('num_iter')} iteration(s) ({result_info.get('message', '')!s})")
    dose = np.asarray(geometry.dij.physical_dose.flat[0] @ fluence, dtype=float)
    per_fraction = dvh_summary(dose, geometry.cst, geometry.ct, geometry.dij.dose_grid)
    total = {name: {k: v * n_fractions for k, v in stats.items()} for name, stats in per_fraction.items()}
    history = info.get("obj_history") or []
    wall = time.perf_counter() - start
    logger.info("pyRadPlan plan for %s: %s iterations, %.1f s", patient, info.get("num_iter"), wall)
    return PlanResult(patient_id=patient, target=mapping_target(mapping, document), n_fractions=n_fractions,
                      dose_per_fraction_gy=float(document["dose_per_fraction_gy"]), dvh_total=total,
                      dvh_per_fraction=per_fraction, structure_map=mapping, fluence=fluence,
                      iterations=info.get("num_iter"), objective_value=float(history[-1]) if history else None,
                      solver_message=str(result_info.get("message", "")), wall_time_s=wall, geometry=geometry,
                      dose_per_fraction=dose)


def mapping_target(mapping: Mapping[str, str], document: Mapping[str, Any]) -> str:
    """The pyRadPlan structure the (first) target of the objectives maps onto."""
    return next(mapping[str(s["name"])] for s in document["structures"] if s.get("role") == "target")


#: pyRadPlan's overlap priorities (matRad's: the lower number owns a voxel in two structures): the target first,
#: then the organs at risk, the body outline (normal tissue) last.
_OVERLAP_PRIORITY = {"target": 1, "oar": 2, "external": 3}
_VOI_TYPE = {"target": "TARGET", "oar": "OAR", "external": "OAR"}


def _image_like(array: np.ndarray, reference: Any, pixel: int) -> Any:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return sitk.Cast(image, pixel)


def extended_map_per_fraction(dose_map_gy: np.ndarray, mask: np.ndarray, n_fractions: int) -> np.ndarray:
    """The voxel prescription per fraction, extended outside the target by its nearest target voxel's value.

    pyRadPlan resamples an image reference onto the dose grid with a B-spline; the map is 0 outside the target,
    so a target voxel on the dose grid next to the edge would be pulled towards 0. Extending the map by nearest
    neighbour (scipy's exact Euclidean distance transform) keeps every target voxel's reference at the map's level.
    """
    from scipy import ndimage

    inside = mask & np.isfinite(dose_map_gy)
    if not inside.any():
        raise InputError("the dose-prescription map has no value inside the target",
                         fix="re-run `radiogenomics handoff` with the patient's PET and target")
    _, nearest = ndimage.distance_transform_edt(~inside, return_indices=True)
    filled = dose_map_gy[tuple(nearest)]
    return np.asarray(filled / float(n_fractions), dtype=np.float32)


def optimisation_margin(mask: np.ndarray, ct: Any, margin_mm: float, body: np.ndarray | None) -> np.ndarray:
    """The target grown by ``margin_mm`` (exact Euclidean distance on the CT's anisotropic grid), within the body.

    The optimizer sees the dose on its dose grid; the plan is evaluated on the CT grid after linear resampling, where
    a target voxel at the edge blends with dose-grid points outside the target (the penumbra). Optimising the target
    one dose-grid spacing wider (a planning margin, as a PTV is for set-up; ICRU 62) keeps the interpolated dose
    over the whole target; the evaluation and every reported number stay on the target itself.
    """
    from scipy import ndimage

    spacing_zyx = tuple(float(s) for s in reversed(ct.GetSpacing()))
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    grown = distance <= margin_mm
    return grown & body if body is not None else grown


class PyRadPlanOptimizer:
    """Photon IMRT with pyRadPlan (SVD pencil beam, scipy L-BFGS-B) on the patient's own CT and structures.

    Objectives (``objectives.json``, total doses) become per-fraction pyRadPlan objectives (:func:`_objective`);
    ``dose_map`` becomes ``SquaredMimicking`` of the voxel prescription per fraction (dose painting by numbers);
    ``target_effect`` uses the RBE = 1 LQ matrices of the structures' alpha/beta (:func:`attach_lq_matrices`). The
    body outline gets the normal-tissue overdosing objective (60 % of the dose per fraction, priority 100) unless
    it has objectives of its own. The dose is computed on the dose grid and resampled (linear) onto the CT grid; when
    the dose grid is coarser than the CT, the target is optimised with a margin of one dose-grid spacing
    (:func:`optimisation_margin`), the map extended into it.
    """

    name = "pyradplan"

    def version(self) -> str:
        from importlib.metadata import version

        return version("pyradplan")

    def _objectives(self, problem: PlanProblem, structure: Any, ct_image: Any) -> list[Any]:
        from pyRadPlan.optimization.objectives import SquaredMimicking

        where = f"patient {problem.patient_id}, structure {structure.name!r}"
        objectives = []
        for spec in structure.objectives:
            if spec.get("type") == "dose_map":
                if problem.dose_map_gy is None:
                    raise InputError(f"{where}: a dose_map objective but no dose-prescription map",
                                     patient_id=problem.patient_id,
                                     fix="keep dose_prescription.nii.gz beside objectives.json")
                reference = extended_map_per_fraction(problem.dose_map_gy, structure.mask, problem.n_fractions)
                objectives.append(SquaredMimicking(priority=float(spec.get("priority", 1.0)),
                                                   d_ref=_image_like(reference, ct_image, 8)))  # sitkFloat32
            else:
                objectives.append(_objective(spec, float(problem.n_fractions), where))
        if structure.role == "external" and not objectives:
            objectives.append(SquaredOverdosing(priority=NORMAL_TISSUE_PRIORITY,
                                                d_max=NORMAL_TISSUE_DOSE_FRACTION * problem.dose_per_fraction_gy))
        return objectives

    def __init__(self) -> None:
        self._cached: tuple[str, Any] | None = None  # (geometry key, (ct, cst, stf, pln, dij)) of the last patient

    @staticmethod
    def _geometry_key(problem: PlanProblem) -> str:
        import hashlib

        digest = hashlib.sha256(repr((problem.patient_id, problem.settings, problem.ct.GetSize(),
                                      problem.ct.GetSpacing(), problem.ct.GetOrigin())).encode())
        for s in problem.structures:
            digest.update(f"{s.name}|{s.role}|{s.alpha_per_gy!r}|{s.beta_per_gy2!r}".encode())
            digest.update(np.packbits(s.mask).tobytes())
        digest.update(np.ascontiguousarray(sitk_array(problem.ct)).tobytes())
        return digest.hexdigest()

    def _geometry(self, problem: PlanProblem) -> tuple[Any, Any, Any, Any, Any, float]:
        """CT, structures, beams and the physical dij; reused when the next problem has the same anatomy."""
        import SimpleITK as sitk
        from pyRadPlan.cst import create_cst, create_voi
        from pyRadPlan.ct import create_ct

        key = self._geometry_key(problem)
        if self._cached is not None and self._cached[0] == key:
            return (*self._cached[1], 0.0)
        start = time.perf_counter()
        settings = problem.settings
        grid_mm = max(float(settings.dose_grid_mm), *(float(s) for s in problem.ct.GetSpacing()))
        body = next((s.mask for s in problem.structures if s.role == "external"), None)
        ct = create_ct(cube_hu=sitk.Cast(problem.ct, sitk.sitkFloat32))
        vois = []
        for structure in problem.structures:
            if not structure.mask.any():
                raise InputError(f"structure {structure.name!r} is empty", patient_id=problem.patient_id,
                                 fix="check the structure's mask or label in the cohort")
            coarser = grid_mm > max(float(s) for s in problem.ct.GetSpacing()) + 1e-6  # else nothing to blend
            mask = optimisation_margin(structure.mask, problem.ct, grid_mm, body) \
                if structure.role == "target" and coarser else structure.mask
            vois.append(create_voi(
                name=structure.name, voi_type=_VOI_TYPE[structure.role],
                mask=_image_like(mask.astype(np.uint8), problem.ct, sitk.sitkUInt8), ct_image=ct,
                alpha_x=float(structure.alpha_per_gy), beta_x=float(structure.beta_per_gy2),
                overlap_priority=_OVERLAP_PRIORITY[structure.role]))
        cst = create_cst(vois, ct=ct)
        pln = PhotonPlan(machine="Generic")
        angles = settings.angles
        pln.prop_stf = {"generator": "photonIMRT", "bixel_width": float(settings.bixel_width_mm),
                        "gantry_angles": angles, "couch_angles": [0.0] * len(angles)}
        pln.prop_dose_calc = {"engine": "SVDPB", "dose_grid": {"resolution": dict.fromkeys("xyz", grid_mm)}}
        stf = generate_stf(ct, cst, pln)
        try:
            dij = calc_dose_influence(ct, cst, stf, pln)
        except (ValueError, IndexError) as exc:  # pyRadPlan 0.5.0's ray tracer on rays that never reach the body
            raise PlanningError(f"patient {problem.patient_id}: pyRadPlan could not compute the dose influence "
                                f"({exc}): a beamlet that never enters the patient, e.g. a target at the edge of "
                                "the CT's field of view") from exc
        self._cached = (key, (ct, cst, stf, pln, dij))
        return ct, cst, stf, pln, dij, time.perf_counter() - start

    def optimize(self, problem: PlanProblem, *, progress: bool = False) -> OptimizedPlan:
        """Plan ``problem``; PlanningError when the fluence comes back all zero or not finite."""
        import SimpleITK as sitk

        start = time.perf_counter()
        with _quiet_progress(progress):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                ct, cst, stf, pln, dij, geometry_s = self._geometry(problem)
            by_name = {s.name: s for s in problem.structures}
            for voi in cst.vois:
                voi.objectives = self._objectives(problem, by_name[voi.name], problem.ct)
            pln.num_of_fractions = int(problem.n_fractions)
            if any(spec.get("type") == "target_effect" for s in problem.structures for spec in s.objectives):
                attach_lq_matrices(dij, cst)
            pln.prop_opt = {"convert_dose_objectives": False, "solver": "scipy",
                            "max_iter": int(problem.settings.max_iter)}
            info: dict[str, Any] = {}
            with warnings.catch_warnings(record=True) as optimising:
                warnings.simplefilter("always", UserWarning)
                fluence = np.asarray(fluence_optimization(ct, cst, stf, dij, pln, opt_info=info))
            notes = sorted({f"pyRadPlan: {w.message}: a structure thinner than the dose grid has no dose-grid voxel, "
                            "so its objectives could not act (its evaluation on the CT grid stands)"
                            for w in [*caught, *optimising] if "empty structure" in str(w.message)})
            result_info = info.get("result_info") or {}
            if not np.isfinite(fluence).all() or not np.any(fluence > 0):
                raise PlanningError(f"patient {problem.patient_id}: pyRadPlan returned zero or non-finite fluence "
                                    f"after {info.get('num_iter')} iteration(s) ({result_info.get('message', '')!s})")
            per_fraction = dij.compute_result_ct_grid(fluence)["physical_dose"]
        dose = np.clip(sitk.GetArrayFromImage(per_fraction).astype(np.float64), 0.0, None) * problem.n_fractions
        iterations = info.get("num_iter")
        message = str(result_info.get("message", ""))
        converged = bool(result_info.get("success", False))  # scipy: False at the iteration limit
        history = info.get("obj_history") or []
        seconds = time.perf_counter() - start
        logger.info("pyRadPlan plan for %s (%s): %s iterations, %.1f s", problem.patient_id, problem.label,
                    iterations, seconds)
        grid_mm = float(dij.dose_grid.resolution_vector[0])
        return OptimizedPlan(dose_gy=dose, optimizer=self.name, optimizer_version=self.version(),
                             iterations=None if iterations is None else int(iterations), converged=converged,
                             message=message, seconds=seconds, n_beamlets=int(fluence.size),
                             objective_value=float(history[-1]) if history else None,
                             details={"dose_engine": "SVDPB", "solver": "scipy L-BFGS-B", "dose_grid_mm": grid_mm,
                                      "geometry_seconds": round(geometry_s, 3), "geometry_reused": geometry_s == 0.0,
                                      "notes": notes})


def sitk_array(image: Any) -> np.ndarray:
    import SimpleITK as sitk

    return np.asarray(sitk.GetArrayViewFromImage(image))
