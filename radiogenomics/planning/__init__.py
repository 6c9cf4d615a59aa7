"""The planning stage: a prescription record becomes objectives, a dose-prescription map and a plan on the
patient's own anatomy, evaluated for TCP, NTCP and the safety rails (contract section 7).

Data flows one way: ``cohort``/``features`` -> ``models`` (records) -> ``planning``; the radiobiology it applies
(rails, tissue table, TCP, NTCP) comes from :mod:`radiogenomics.radiobiology`. ``serving`` only calls it.

- :mod:`.objectives`: ``objectives.json`` (``radiogenomics-objectives/1``) of a record;
- :mod:`.dose_map`: the voxel dose-prescription map from FDG / FMISO PET (dose painting by numbers);
- :mod:`.handoff`: the per-patient hand-off folder (record, objectives, map);
- :mod:`.anatomy`: the patient's CT and structures from the cohort (BODY derived when absent);
- :mod:`.optimizers`: the optimizer interface (:class:`~.optimizers.base.Optimizer`) and its adapters (pyRadPlan);
- :mod:`.evaluation`: ``plan_evaluation.json`` (``radiogenomics-plan-evaluation/1``) of a planned dose;
- :mod:`.run`: ``radiogenomics plan``: hand-off folder + cohort -> planned dose + evaluation per patient.

Names are imported lazily (PEP 562), so pyRadPlan is imported only when a plan is made. :func:`handoff` is bound
at import: the function shares its name with its module, and a lazy name would be shadowed by the submodule once
anything imports ``radiogenomics.planning.handoff`` (import that module's other names with
``from radiogenomics.planning.handoff import ...``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from radiogenomics.planning.handoff import HandoffResult, handoff

_EXPORTS = {
    "build_objectives": "objectives",
    "validate_objectives": "objectives",
    "plan_with_pyradplan": "optimizers.pyradplan",
    "plan_cohort": "run",
    "PlanSettings": "optimizers.base",
}

__all__ = ["HandoffResult", "PlanSettings", "build_objectives", "handoff", "plan_cohort", "plan_with_pyradplan",
           "validate_objectives"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
