"""The optimizer interface: what the planning stage gives an optimizer and what it gets back.

An adapter (pyRadPlan's is :mod:`.pyradplan`) implements :class:`Optimizer`: a ``name``, a ``version()`` and
``optimize(problem) -> OptimizedPlan``. Everything around it (the patient's anatomy, the objectives, the
evaluation, the files) is the planning stage's and does not change when another optimizer is added:

1. write a class with ``name``, ``version()`` and ``optimize()`` that turns a :class:`PlanProblem` (CT in HU,
   boolean masks on the CT grid, objectives of ``objectives.json`` with total doses in Gy, the optional voxel
   dose map, :class:`PlanSettings`) into the planned **total** dose on the CT grid;
2. register it in :data:`OPTIMIZERS` (name -> ``module:Class``);
3. ``radiogenomics plan --optimizer NAME`` uses it; the evaluation of :mod:`radiogenomics.planning.evaluation`
   applies to its dose unchanged.

An objective type the optimizer cannot express must raise :class:`UnsupportedObjective` (never be dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

from radiogenomics.errors import InputError

#: Equispaced coplanar photon beams, 7 for head and neck IMRT (the common 7-field class solution; e.g. the
#: RTOG 0522/0615 era plans and the TG-119 head-and-neck test case were planned with 7-9 fields).
DEFAULT_BEAMS = 7
#: Beamlet (bixel) width in mm: 5 mm, the finest of matRad's photon IMRT defaults that keeps a 64^3 plan
#: under 10 s on 2 cores (benchmarks/plan.py).
DEFAULT_BIXEL_WIDTH_MM = 5.0
#: Dose grid resolution in mm (isotropic): 3 mm, the usual clinical dose grid for IMRT (AAPM TG-105 and
#: vendor defaults of 2-4 mm); the CT grid is used when it is coarser.
DEFAULT_DOSE_GRID_MM = 3.0
#: Optimizer iterations (L-BFGS-B); a plan that stops at the limit is reported as not converged.
DEFAULT_MAX_ITER = 400


@dataclass(frozen=True)
class PlanSettings:
    """Beams and grids of a plan (defaults above; docs/planning.md, "Beams and grid")."""

    beams: int = DEFAULT_BEAMS
    gantry_angles_deg: tuple[float, ...] | None = None  # None: `beams` equispaced angles from 0
    bixel_width_mm: float = DEFAULT_BIXEL_WIDTH_MM
    dose_grid_mm: float = DEFAULT_DOSE_GRID_MM
    max_iter: int = DEFAULT_MAX_ITER

    def __post_init__(self) -> None:
        if self.gantry_angles_deg is not None and len(self.gantry_angles_deg) == 0:
            raise InputError("gantry_angles_deg is empty", fix="give at least one angle or leave it unset")
        if self.beams < 1 or self.bixel_width_mm <= 0 or self.dose_grid_mm <= 0 or self.max_iter < 1:
            raise InputError(f"plan settings must be positive: beams={self.beams}, bixel_width_mm="
                             f"{self.bixel_width_mm}, dose_grid_mm={self.dose_grid_mm}, max_iter={self.max_iter}",
                             fix="use e.g. --beams 7 --bixel-width-mm 5 --dose-grid-mm 3")

    @property
    def angles(self) -> list[float]:
        """The gantry angles in degrees."""
        if self.gantry_angles_deg is not None:
            return [float(a) % 360.0 for a in self.gantry_angles_deg]
        return [round(360.0 * i / self.beams, 4) for i in range(self.beams)]

    def to_dict(self) -> dict[str, Any]:
        angles = self.angles
        return {"beams": len(angles), "gantry_angles_deg": angles, "couch_angles_deg": [0.0] * len(angles),
                "bixel_width_mm": self.bixel_width_mm, "dose_grid_mm": self.dose_grid_mm, "max_iter": self.max_iter,
                "modality": "photons", "technique": "IMRT"}


@dataclass
class PlanStructure:
    """One structure of the plan: its name in the patient's files, role, mask on the CT grid, LQ and objectives.

    ``role``: ``target``, ``oar`` or ``external`` (the body outline: normal tissue). ``objectives``: the
    ``objectives.json`` entries (total doses in Gy over the course; ``dose_map`` reads :attr:`PlanProblem.dose_map_gy`).
    """

    name: str
    role: str
    tg263_name: str
    mask: np.ndarray  # bool, z/y/x on the CT grid
    alpha_per_gy: float = 0.1
    beta_per_gy2: float = 0.05
    objectives: list[dict[str, Any]] = field(default_factory=list)
    derived: bool = False  # e.g. BODY thresholded from the CT

    @property
    def volume_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass
class PlanProblem:
    """Everything an optimizer needs for one patient. Doses are total physical doses in Gy over the course."""

    patient_id: str
    ct: sitk.Image  # HU
    structures: list[PlanStructure]
    n_fractions: int
    dose_per_fraction_gy: float
    settings: PlanSettings = field(default_factory=PlanSettings)
    dose_map_gy: np.ndarray | None = None  # voxel prescription on the CT grid (z/y/x), 0 outside the target
    label: str = "planned"

    @property
    def target(self) -> PlanStructure:
        return next(s for s in self.structures if s.role == "target")

    def structure(self, name: str) -> PlanStructure:
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass
class OptimizedPlan:
    """The optimizer's result: the planned total dose on the CT grid and how the optimization went."""

    dose_gy: np.ndarray  # float, z/y/x on the CT grid, total over the course
    optimizer: str
    optimizer_version: str
    iterations: int | None
    converged: bool
    message: str
    seconds: float
    n_beamlets: int
    objective_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"name": self.optimizer, "version": self.optimizer_version, "iterations": self.iterations,
                "converged": self.converged, "message": self.message, "seconds": round(self.seconds, 3),
                "n_beamlets": self.n_beamlets, "objective_value": self.objective_value, **self.details}


class PlanningError(RuntimeError):
    """The optimizer ran but produced no usable plan (e.g. all-zero fluence)."""


class UnsupportedObjective(InputError):
    """An objective type the optimizer cannot express (never silently dropped)."""


class Optimizer(Protocol):
    """A plan optimizer adapter (see the module docstring)."""

    name: str

    def version(self) -> str: ...

    def optimize(self, problem: PlanProblem, *, progress: bool = False) -> OptimizedPlan: ...


#: Registered optimizers: name -> "module:Class" (imported on first use).
OPTIMIZERS = {"pyradplan": "radiogenomics.planning.optimizers.pyradplan:PyRadPlanOptimizer"}


def get_optimizer(name: str = "pyradplan") -> Optimizer:
    """A new optimizer adapter by name; InputError naming the known ones."""
    if name not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {name!r}", fix=f"use one of {sorted(OPTIMIZERS)}")
    module, _, cls = OPTIMIZERS[name].partition(":")
    instance: Optimizer = getattr(import_module(module), cls)()
    return instance
