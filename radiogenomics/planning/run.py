"""`radiogenomics plan`: every patient of a hand-off folder planned on their own CT and structures (contract §7).

Per patient ``PLANS/<patient_id>/``:

- ``plan_dose.nii.gz`` and ``plan_dose.dcm`` (RTDOSE): the planned total dose (Gy) on the patient's CT grid;
- ``uniform_reference_dose.nii.gz``: the standard uniform plan (the site's standard regimen, uniform target dose,
  the same OAR objectives) that the evaluation compares against;
- ``plan_evaluation.json`` (:mod:`.evaluation`).

The record is re-checked through the safety gate before planning (:func:`radiogenomics.models.gate.check_record`);
``objectives.json`` must belong to it (same ``input_sha256``). A patient that fails (no CT, no target, a record
the gate refuses, zero fluence) is listed in ``PLANS/failures.csv`` and the others complete. Files are written
atomically (staging folder, ``os.replace``); a patient whose inputs (record, objectives, map, settings, optimizer
version) are unchanged since an earlier run keeps its plan (``inputs_sha256`` in the evaluation) unless
``overwrite``. ``PLANS/plans.json`` summarises the run and ``PLANS/summary.csv`` is the Lazzeroni-style table of
every plan in the folder (this run's and earlier runs' for other patients; docs/planning.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiogenomics.errors import InputError
from radiogenomics.jsonio import json_bytes
from radiogenomics.planning.anatomy import Anatomy, load_anatomy
from radiogenomics.planning.evaluation import FORMAT, Biology, evaluate_plan
from radiogenomics.planning.optimizers.base import (
    Optimizer,
    PlanningError,
    PlanProblem,
    PlanSettings,
    PlanStructure,
    get_optimizer,
)

log = logging.getLogger(__name__)

DOSE_FILE = "plan_dose.nii.gz"
RTDOSE_FILE = "plan_dose.dcm"
UNIFORM_FILE = "uniform_reference_dose.nii.gz"
EVALUATION_FILE = "plan_evaluation.json"
OUTPUT_FILES = (DOSE_FILE, RTDOSE_FILE, UNIFORM_FILE, EVALUATION_FILE)
FAILURES_FILE = "failures.csv"
MANIFEST_FILE = "plans.json"
SUMMARY_FILE = "summary.csv"
#: Generic normal tissue alpha/beta for the body outline (late effects, alpha/beta 3 Gy; only reported).
BODY_ALPHA_PER_GY, BODY_BETA_PER_GY2 = 0.1, 0.1 / 3.0

Progress = Callable[[int, int, str], None]


@dataclass
class PatientPlan:
    """One patient's plan: the evaluation document and where it was written."""

    patient_id: str
    folder: Path
    evaluation: dict[str, Any]
    reused: bool = False


@dataclass
class PlanRunResult:
    out_dir: Path
    plans: list[PatientPlan]
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def summary_csv(self) -> Path:
        return self.out_dir / SUMMARY_FILE


def _read_json(path: Path, patient_id: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise InputError(f"cannot read {what}: {exc}", patient_id=patient_id, file=str(path),
                         fix="re-run `radiogenomics handoff` for the patient") from exc
    if not isinstance(value, dict):
        raise InputError(f"{what} is not a JSON object", patient_id=patient_id, file=str(path))
    return value


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _dose_map_on_ct(path: Path, ct: sitk.Image, mask: np.ndarray, patient_id: str) -> np.ndarray:
    """The voxel prescription on the CT grid over the CT's target; 0 outside it.

    The map lives on the PET grid and is non-zero inside the PET-grid target only; the CT-grid target differs at
    its edge (another grid, another rasterisation). So the map is first extended outside its support by the
    nearest prescribed voxel's value (exact Euclidean distance transform), then resampled linearly onto the CT:
    every CT target voxel gets the prescription of the PET voxels around it, never a blend with the 0 outside.
    """
    from scipy import ndimage

    if not path.is_file():
        raise InputError(f"objectives.json names the dose map {path.name} but it is not there", patient_id=patient_id,
                         file=str(path), fix="re-run `radiogenomics handoff` with --cohort (PET)")
    image = sitk.ReadImage(str(path), sitk.sitkFloat64)
    values = sitk.GetArrayFromImage(image)
    support = values > 0
    if not support.any():
        raise InputError("the dose-prescription map is empty", patient_id=patient_id, file=str(path),
                         fix="re-run `radiogenomics handoff` for the patient")
    _, nearest = ndimage.distance_transform_edt(~support, return_indices=True)
    filled = sitk.GetImageFromArray(values[tuple(nearest)])
    filled.CopyInformation(image)
    same = image.GetSize() == ct.GetSize() and np.allclose(image.GetSpacing(), ct.GetSpacing(), rtol=1e-4) \
        and np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3) \
        and np.allclose(image.GetDirection(), ct.GetDirection(), atol=1e-6)
    if not same:  # a CT voxel outside the PET's field of view gets the nearest PET voxel's value too
        filled = sitk.Resample(filled, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat64, True)
    return np.where(mask, sitk.GetArrayFromImage(filled), 0.0)


def _structures(objectives: Mapping[str, Any], anatomy: Anatomy) -> list[PlanStructure]:
    out = []
    for s in objectives["structures"]:
        if s["name"] not in anatomy.masks:
            continue
        out.append(PlanStructure(name=s["name"], role=s["role"], tg263_name=str(s.get("tg263_name") or s["name"]),
                                 mask=anatomy.masks[s["name"]], alpha_per_gy=float(s["alpha_per_gy"]),
                                 beta_per_gy2=float(s["beta_per_gy2"]), objectives=list(s.get("objectives") or [])))
    if anatomy.body_name not in {s.name for s in out}:
        out.append(PlanStructure(name=anatomy.body_name, role="external", tg263_name="External",
                                 mask=anatomy.masks[anatomy.body_name], alpha_per_gy=BODY_ALPHA_PER_GY,
                                 beta_per_gy2=BODY_BETA_PER_GY2, derived=anatomy.body_derived))
    return out


def _biology(cohort: Any, record: Mapping[str, Any], target_role: str, ct: sitk.Image, mask: np.ndarray,
             fmiso_reference_suv: float | None) -> Biology:
    """TCP inputs over the target's CT voxels: FDG clonogens and FMISO pO2 resampled from the PET grid."""
    from radiogenomics.planning.dose_map import TumourBiology, load_pet, tumour_biology
    from radiogenomics.planning.remaining import is_adapted, remaining_biology
    from radiogenomics.radiobiology.gard import alpha_from_rsi
    from radiogenomics.radiobiology.tcp import CLONOGEN_DENSITY_PER_CC

    pid = str(record["patient_id"])
    alpha, beta = float(record["alpha_per_gy"]), float(record["beta_per_gy2"])
    bounds = [record.get("rsi_lower"), record.get("rsi_upper")]
    alpha_range: tuple[float, float] | None = None
    if all(isinstance(b, int | float) and math.isfinite(b) for b in bounds):
        values = [float(alpha_from_rsi(float(b), beta, invalid="nan")) for b in bounds]  # type: ignore[arg-type]
        if all(math.isfinite(v) and v > 0 for v in values):
            alpha_range = (min(values), max(values))
    ct_cc = float(np.prod(ct.GetSpacing())) / 1000.0
    if is_adapted(record):  # the remaining fractions: surviving clonogens, mid-treatment pO2
        remaining = remaining_biology(record, cohort, target_name=target_role, fmiso_reference_suv=fmiso_reference_suv)
        pet, reason = (remaining.pet, "") if remaining is not None else (None, "no planning PET")
        bio = TumourBiology(remaining.clonogens, remaining.po2_mmhg, list(remaining.notes)) if remaining else None
    else:
        pet, reason = load_pet(cohort, pid, target_role)
        bio = None if pet is None else tumour_biology(pet, patient_id=pid, fmiso_reference_suv=fmiso_reference_suv)
    if pet is None or bio is None:
        return Biology(np.full(int(mask.sum()), CLONOGEN_DENSITY_PER_CC * ct_cc), None, alpha, beta, alpha_range,
                       (reason, f"uniform clonogen density {CLONOGEN_DENSITY_PER_CC:g}/cc (Webb & Nahum 1993), oxic"))
    pet_cc = float(np.prod(pet.reference.GetSpacing())) / 1000.0

    def on_ct(array: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float64))
        image.CopyInformation(pet.reference)
        return sitk.GetArrayFromImage(sitk.Resample(image, ct, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                    sitk.sitkFloat64))

    density = np.where(pet.mask, bio.clonogens / pet_cc, 0.0)
    clonogens = on_ct(density)[mask] * ct_cc
    po2 = None if bio.po2_mmhg is None else np.clip(on_ct(bio.po2_mmhg)[mask], 0.0, None)
    return Biology(clonogens, po2, alpha, beta, alpha_range, tuple(bio.notes))


def _standard_objectives(objectives: Mapping[str, Any], record: Mapping[str, Any], site: str,
                         anatomy_names: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """objectives.json of the standard uniform plan (the site's standard regimen; for an adapted record the
    baseline course's remaining fractions, i.e. no adaptation) and that regimen."""
    from radiogenomics.planning.objectives import build_objectives
    from radiogenomics.planning.remaining import delivered_dose, is_adapted
    from radiogenomics.radiobiology.rails import load_rails

    bounds = load_rails().site(site)
    delivered = None
    if is_adapted(record):  # the comparator: the baseline course continued without adaptation
        delivered = delivered_dose(record)
        n = int(round(float(record["recommended_n_fractions"]))) - delivered.n_fractions
        total = float(record["recommended_total_dose_gy"]) - delivered.target_dose_gy
        source = (f"the baseline course continued without adaptation: its remaining {n} fraction(s) after "
                  f"{delivered.timepoint}")
    else:
        n = int(bounds.standard_n_fractions)
        total = float(bounds.standard_total_dose_gy)
        source = f"site {site} standard regimen ({bounds.standard_source})"
    if n < 1 or total <= 0:
        raise InputError(f"no fractions left in the baseline course ({n})", patient_id=str(record["patient_id"]))
    d = total / n
    standard = {**dict(record), "recommended_total_dose_gy": total, "recommended_n_fractions": float(n),
                "recommended_dose_per_fraction_gy": d}
    document = build_objectives(standard, site=site, structures=list(anatomy_names),
                                target_name=str(objectives["structures"][0].get("tg263_name") or "GTV"),
                                delivered=delivered)
    regimen = {"n_fractions": n, "dose_per_fraction_gy": d, "total_dose_gy": total, "source": source}
    return document, regimen


def _resolved(cohort: Any, patient_id: str, names: Sequence[str]) -> list[Any]:
    from radiogenomics.planning.handoff import patient_structures

    return [r for r in patient_structures(cohort, patient_id) if r.structure in set(names)]


class _Planner:
    """Plans one patient at a time; holds the cohort, settings and optimizer."""

    def __init__(self, handoff_dir: Path, cohort: Any, out_dir: Path, settings: PlanSettings, optimizer: Optimizer,
                 *, uniform_reference: bool, fmiso_reference_suv: float | None, overwrite: bool,
                 show_progress: bool) -> None:
        self.handoff_dir, self.cohort, self.out_dir = handoff_dir, cohort, out_dir
        self.settings, self.optimizer = settings, optimizer
        self.uniform_reference, self.fmiso_reference_suv = uniform_reference, fmiso_reference_suv
        self.overwrite, self.show_progress = overwrite, show_progress

    def inputs_sha256(self, folder: Path, objectives: Mapping[str, Any]) -> str:
        parts = [(folder / "prescription.json").read_bytes(), (folder / "objectives.json").read_bytes(),
                 json.dumps(self.settings.to_dict(), sort_keys=True).encode(),
                 f"{self.optimizer.name} {self.optimizer.version()} uniform={self.uniform_reference} "
                 f"fmiso_ref={self.fmiso_reference_suv} format={FORMAT}".encode()]
        for s in objectives["structures"]:
            for o in s.get("objectives") or []:
                if o.get("type") == "dose_map" and (folder / str(o["file"])).is_file():
                    parts.append((folder / str(o["file"])).read_bytes())
        return _sha256(*parts)

    def _reusable(self, patient_id: str, digest: str) -> dict[str, Any] | None:
        target = self.out_dir / patient_id
        if self.overwrite or not all((target / f).is_file() for f in (DOSE_FILE, RTDOSE_FILE, EVALUATION_FILE)):
            return None
        try:
            previous = json.loads((target / EVALUATION_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return previous if isinstance(previous, dict) and previous.get("inputs_sha256") == digest else None

    def plan(self, patient_id: str) -> PatientPlan:
        from radiogenomics.models.gate import check_record
        from radiogenomics.planning.objectives import validate_objectives
        from radiogenomics.planning.remaining import check_course_rails, is_adapted
        from radiogenomics.radiobiology.rails import load_rails

        folder = self.handoff_dir / patient_id
        if not folder.is_dir():
            raise InputError("no hand-off folder for this patient", patient_id=patient_id, file=str(folder),
                             fix="run `radiogenomics handoff` for the patient first")
        record = _read_json(folder / "prescription.json", patient_id, "prescription.json")
        objectives = _read_json(folder / "objectives.json", patient_id, "objectives.json")
        validate_objectives(objectives)
        rails = load_rails()
        check_record(record, rails)  # the gate's invariants again: n x d = total, the site's rails
        if is_adapted(record):
            check_course_rails(record, rails)  # and the adapted course's
        for key in ("alpha_per_gy", "beta_per_gy2"):  # the plan's TCP needs the patient's LQ parameters
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"prescription.json's {key} is {value!r}", patient_id=patient_id,
                                 file=str(folder / "prescription.json"), fix="re-run `radiogenomics handoff`")
        if objectives.get("input_sha256") != record.get("input_sha256") or objectives["patient_id"] != patient_id:
            raise InputError("objectives.json does not belong to prescription.json (input_sha256 differs)",
                             patient_id=patient_id, file=str(folder / "objectives.json"),
                             fix="re-run `radiogenomics handoff` for the patient")
        digest = self.inputs_sha256(folder, objectives)
        previous = self._reusable(patient_id, digest)
        if previous is not None:
            return PatientPlan(patient_id, self.out_dir / patient_id, previous, reused=True)
        if patient_id not in self.cohort.patient_ids:
            raise InputError("not in the cohort: no CT to plan on", patient_id=patient_id,
                             fix="give the cohort the hand-off was made from (--cohort)")
        site = str(record["site"])
        names = {s["name"]: s["role"] for s in objectives["structures"]}
        anatomy = load_anatomy(self.cohort, patient_id, names)
        target_spec = next(s for s in objectives["structures"] if s["role"] == "target")
        if target_spec["name"] not in anatomy.masks:
            raise InputError(f"the target {target_spec['name']!r} is not in the patient's files: no plan",
                             patient_id=patient_id, fix="add the target's mask to images.csv (or its structure name)")
        structures = _structures(objectives, anatomy)
        target = next(s for s in structures if s.role == "target")
        dose_map = None
        if any(o.get("type") == "dose_map" for o in target.objectives):
            spec = next(o for o in target.objectives if o.get("type") == "dose_map")
            dose_map = _dose_map_on_ct(folder / str(spec["file"]), anatomy.ct, target.mask, patient_id)
        problem = PlanProblem(patient_id, anatomy.ct, structures, int(objectives["n_fractions"]),
                              float(objectives["dose_per_fraction_gy"]), self.settings, dose_map)
        planned = self.optimizer.optimize(problem, progress=self.show_progress)
        planned.dose_gy = planned.dose_gy.astype(np.float32).astype(np.float64)  # exactly what the NIfTI holds
        notes = list(anatomy.notes)
        uniform = regimen = None
        if self.uniform_reference:
            try:
                document, regimen = _standard_objectives(objectives, record, site,
                                                         _resolved(self.cohort, patient_id, list(anatomy.masks)))
                by_name = {s["name"]: s for s in document["structures"]}
                uniform_structures = [PlanStructure(s.name, s.role, s.tg263_name, s.mask, s.alpha_per_gy,
                                                    s.beta_per_gy2, list(by_name.get(s.name, {}).get("objectives")
                                                                         or []), s.derived) for s in structures]
                uniform = self.optimizer.optimize(PlanProblem(
                    patient_id, anatomy.ct, uniform_structures, int(regimen["n_fractions"]),
                    float(regimen["dose_per_fraction_gy"]), self.settings, None, label="uniform_reference"),
                    progress=self.show_progress)
                uniform.dose_gy = uniform.dose_gy.astype(np.float32).astype(np.float64)
            except (InputError, PlanningError) as exc:
                notes.append(f"the standard uniform plan failed: {exc}")
                uniform = regimen = None
        biology = _biology(self.cohort, record, str(target.tg263_name or "GTV"), anatomy.ct, target.mask,
                           self.fmiso_reference_suv)
        files = {"dose": DOSE_FILE, "rtdose": RTDOSE_FILE, **({"uniform_reference_dose": UNIFORM_FILE} if uniform
                                                               is not None else {})}
        evaluation = evaluate_plan(problem, planned, record=record, site=site, rails=rails, voxel_cc=anatomy.voxel_cc,
                                   biology=biology, uniform=uniform, uniform_regimen=regimen, missing=anatomy.missing,
                                   notes=notes, settings=self.settings.to_dict(), files=files)
        if self.uniform_reference and uniform is None:
            evaluation["flags"].append("uniform_reference_failed")
        evaluation["inputs_sha256"] = digest
        evaluation["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self._write(patient_id, anatomy.ct, planned.dose_gy, None if uniform is None else uniform.dose_gy, evaluation)
        return PatientPlan(patient_id, self.out_dir / patient_id, evaluation)

    def _write(self, patient_id: str, ct: sitk.Image, dose: np.ndarray, uniform: np.ndarray | None,
               evaluation: dict[str, Any]) -> None:
        from radiogenomics.radiobiology.export import image_from_array, write_dose_nifti, write_rtdose

        staging = Path(tempfile.mkdtemp(prefix=f".{patient_id}.", suffix=".tmp", dir=self.out_dir))
        try:
            image = image_from_array(dose, ct)
            write_dose_nifti(image, staging / DOSE_FILE)
            write_rtdose(image, staging / RTDOSE_FILE, patient_id=patient_id,
                         series_description="radiogenomics planned dose")
            written = [DOSE_FILE, RTDOSE_FILE]
            if uniform is not None:
                write_dose_nifti(image_from_array(uniform, ct), staging / UNIFORM_FILE)
                written.append(UNIFORM_FILE)
            (staging / EVALUATION_FILE).write_bytes(json_bytes(evaluation))
            written.append(EVALUATION_FILE)
            target = self.out_dir / patient_id
            target.mkdir(parents=True, exist_ok=True)
            for name in written:
                os.replace(staging / name, target / name)
            for name in set(OUTPUT_FILES) - set(written):
                (target / name).unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _handoff_patients(handoff_dir: Path) -> list[str]:
    manifest = handoff_dir / "handoff.json"
    if manifest.is_file():
        try:
            return [str(p["patient_id"]) for p in json.loads(manifest.read_text()).get("patients", [])]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            pass
    return sorted(p.name for p in handoff_dir.iterdir() if (p / "prescription.json").is_file())


def summary_rows(plans: Sequence[PatientPlan]) -> pd.DataFrame:
    """The Lazzeroni-style table: per patient, TCP of the standard uniform and the personalised plan, NTCP per
    endpoint (max over structures), rails, time."""
    rows = []
    for p in plans:
        e = p.evaluation
        tcp = e.get("tcp") or {}
        planned = tcp.get("planned") or {}
        uniform = tcp.get("uniform_reference") or {}
        row: dict[str, Any] = {
            "patient_id": p.patient_id, "painting": e.get("painting"),
            "regimen": f"{e['regimen']['n_fractions']} x {e['regimen']['dose_per_fraction_gy']:.2f} Gy",
            "total_dose_gy": e["regimen"]["total_dose_gy"],
            "tcp_uniform_reference": uniform.get("tcp"), "tcp_planned": planned.get("tcp"),
            "tcp_planned_low": (planned.get("tcp_range") or [None, None])[0],
            "tcp_planned_high": (planned.get("tcp_range") or [None, None])[1],
            "hard_rails_met": not any(v["hard"] for v in e.get("violations", [])),
            "all_rails_met": not e.get("violations"),
            "converged": e["optimizer"]["converged"], "seconds": e["optimizer"]["seconds"] + (
                (e.get("uniform_reference") or {}).get("seconds") or 0.0),
            "flags": " ".join(e.get("flags", []))}
        if e.get("adapted_course"):  # an adapted course: the reference is the baseline course continued
            row["delivered_dose_gy"] = e["adapted_course"]["delivered_dose_gy"]
            row["uniform_reference"] = uniform.get("source")
        for n in e.get("ntcp", []):
            key = f"ntcp_{n['endpoint']}"
            row[key] = max(row.get(key) or 0.0, n["ntcp"])
            if n.get("uniform_reference") is not None:
                ukey = f"ntcp_{n['endpoint']}_uniform"
                row[ukey] = max(row.get(ukey) or 0.0, n["uniform_reference"])
        rows.append(row)
    return pd.DataFrame(rows)


def plan_cohort(handoff_dir: Path, cohort: Path, out_dir: Path, *, patients: Sequence[str] | None = None,
                settings: PlanSettings | None = None, optimizer: str = "pyradplan", uniform_reference: bool = True,
                fmiso_reference_suv: float | None = None, overwrite: bool = False,
                progress: Progress | None = None, show_progress: bool = False) -> PlanRunResult:
    """Plan the patients of ``handoff_dir`` (default: all) on their anatomy in ``cohort`` into ``out_dir``."""
    from radiogenomics.cohort.loader import load_cohort
    from radiogenomics.features.cache import atomic_write_bytes

    handoff_dir, out_dir = Path(handoff_dir), Path(out_dir)
    if not handoff_dir.is_dir():
        raise InputError(f"hand-off folder {handoff_dir} does not exist", fix="run `radiogenomics handoff` first")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file", file=str(out_dir), fix="give a folder for --out")
    settings = settings or PlanSettings()
    adapter = get_optimizer(optimizer)
    loaded = load_cohort(cohort)
    wanted = list(dict.fromkeys(patients)) if patients is not None else _handoff_patients(handoff_dir)
    if not wanted:
        raise InputError(f"no patient folder in {handoff_dir}", fix="run `radiogenomics handoff` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    planner = _Planner(handoff_dir, loaded, out_dir, settings, adapter, uniform_reference=uniform_reference,
                       fmiso_reference_suv=fmiso_reference_suv, overwrite=overwrite, show_progress=show_progress)
    plans: list[PatientPlan] = []
    failures: list[tuple[str, str]] = []
    for index, pid in enumerate(wanted):
        if progress is not None:
            progress(index, len(wanted), pid)
        try:
            if "/" in pid or pid in ("", ".", ".."):
                raise InputError("not a patient id of the hand-off", patient_id=pid)
            plans.append(planner.plan(pid))
        except (InputError, PlanningError, RuntimeError, OSError) as exc:
            if not isinstance(exc, InputError | PlanningError):
                log.exception("plan: patient %s failed", pid)
            failures.append((pid, " ".join(str(exc).split())))
    if progress is not None:
        progress(len(wanted), len(wanted), "")
    atomic_write_bytes(out_dir / FAILURES_FILE,
                       pd.DataFrame(failures, columns=["patient_id", "reason"]).to_csv(index=False).encode())
    table = summary_rows(_folder_plans(out_dir, plans))  # every plan of the folder, not only this run's
    atomic_write_bytes(out_dir / SUMMARY_FILE, table.to_csv(index=False).encode())
    manifest = {"format": "radiogenomics-plans/1", "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "handoff": str(handoff_dir), "cohort": str(cohort), "optimizer": adapter.name,
                "optimizer_version": adapter.version(), "settings": settings.to_dict(),
                "patients": [{"patient_id": p.patient_id, "reused": p.reused, "flags": p.evaluation.get("flags", [])}
                             for p in plans],
                "failures": [{"patient_id": p, "reason": r} for p, r in failures],
                "share_tcp_ge_0_9_hard_rails_met": share_controlled(table)}
    atomic_write_bytes(out_dir / MANIFEST_FILE, json_bytes(manifest))
    if not plans:
        raise InputError(f"no patient could be planned ({len(failures)} failed); reasons in {out_dir / FAILURES_FILE}",
                         fix="see the reasons")
    return PlanRunResult(out_dir, plans, failures)


def _folder_plans(out_dir: Path, planned: Sequence[PatientPlan]) -> list[PatientPlan]:
    """This run's plans and the earlier ones in the folder (their plan_evaluation.json), in patient order."""
    by_patient = {p.patient_id: p for p in planned}
    for path in sorted(out_dir.glob(f"*/{EVALUATION_FILE}")):
        pid = path.parent.name
        if pid in by_patient:
            continue
        try:
            evaluation = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("plan: %s is unreadable (%s): left out of the summary", path, exc)
            continue
        if isinstance(evaluation, dict) and evaluation.get("format") == FORMAT:
            by_patient[pid] = PatientPlan(pid, path.parent, evaluation, reused=True)
    return [by_patient[p] for p in sorted(by_patient)]


def share_controlled(table: pd.DataFrame, threshold: float = 0.9) -> float | None:
    """Share of planned patients with planned TCP >= ``threshold`` and every hard rail met (Lazzeroni's figure)."""
    if table.empty or "tcp_planned" not in table:
        return None
    ok = (pd.to_numeric(table["tcp_planned"], errors="coerce") >= threshold) & table["hard_rails_met"].astype(bool)
    return float(ok.mean())
