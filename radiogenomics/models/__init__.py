"""Estimators with the scikit-learn API: radiosensitivity, outcome-calibrated alpha, toxicity, survival, the
multimodal network, and the prescriber that turns their predictions into prescription records.

Names are imported lazily (PEP 562), so ``import radiogenomics.models.prescriber`` does not pull in torch
through the multimodal network.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PatientLKB": "lkb_patient",
    "MultimodalClassifier": "multimodal",
    "MultimodalRegressor": "multimodal",
    "MultimodalRSI": "multimodal_rsi",
    "OutcomeCalibratedAlpha": "outcome_alpha",
    "RSISurrogate": "radiosensitivity",
    "GARDFeature": "survival",
    "LocalControlCox": "survival",
    "lc_target": "survival",
    "survival_metrics": "survival",
    "ToxicityClassifier": "toxicity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
