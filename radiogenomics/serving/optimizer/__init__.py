"""The optimizer hand-off (contract section 7) and pyRadPlan as the downstream optimizer.

Names are imported lazily (PEP 562), so pyRadPlan is imported only when :func:`plan_with_pyradplan` is used.
:func:`handoff` is bound at import: the function shares its name with its module, and a lazy name would be shadowed
by the submodule once anything imports ``radiogenomics.serving.optimizer.handoff`` (import that module's other
names with ``from radiogenomics.serving.optimizer.handoff import ...``).

- :func:`build_objectives`, :func:`validate_objectives` (:mod:`.objectives`): ``objectives.json``;
- :func:`handoff`, :class:`HandoffResult` (:mod:`.handoff`): the per-patient hand-off folder;
- :func:`plan_with_pyradplan` (:mod:`.pyradplan`): an optimized pyRadPlan plan from ``objectives.json``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from radiogenomics.serving.optimizer.handoff import HandoffResult, handoff

_EXPORTS = {
    "build_objectives": "objectives",
    "validate_objectives": "objectives",
    "plan_with_pyradplan": "pyradplan",
}

__all__ = ["HandoffResult", "build_objectives", "handoff", "plan_with_pyradplan", "validate_objectives"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
