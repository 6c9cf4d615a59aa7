"""Promotion (contract section 4): whether a newly registered version becomes ``champion``.

See ``docs/registry.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from radiogenomics.training.config import RegistryConfig
from radiogenomics.training.metrics import GREATER_IS_BETTER
from radiogenomics.training.registry.names import (
    CHAMPION,
    METRIC_TAG_PREFIX,
    RADIOSENSITIVITY_MODEL,
    TOXICITY_MODEL,
)

#: Decisions recorded in tags.
FIRST_CHAMPION = "first_champion"
PROMOTED = "promoted"
KEPT_CHAMPION = "kept_champion"


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a new version becomes champion, and why (``comparisons``: metric -> one-line verdict)."""

    decision: str
    reason: str
    comparisons: dict[str, str] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.decision in (FIRST_CHAMPION, PROMOTED)


def metric_direction(name: str) -> str | None:
    """``"higher"``, ``"lower"``, ``"band"`` (coverage: inside the band is best) or None (not compared).

    The metric's last dotted part decides (``toxicity.xerostomia.auc`` -> ``auc``): Spearman, AUC, C-index
    higher is better; MAE, Brier, mean interval width lower (:data:`GREATER_IS_BETTER`); ``coverage*``: the
    distance from the configured coverage band, lower is better.
    """
    key = name.rsplit(".", 1)[-1]
    if key.startswith("coverage"):
        return "band"
    if key in GREATER_IS_BETTER:
        return "higher" if GREATER_IS_BETTER[key] else "lower"
    return None


def _band_distance(value: float, band: tuple[float, float]) -> float:
    low, high = band
    return max(low - value, value - high, 0.0)


def promotion_decision(challenger: Mapping[str, float], champion: Mapping[str, float] | None,
                       config: RegistryConfig) -> PromotionDecision:
    """Promote the challenger unless one of its held-out metrics is worse than the champion's beyond tolerance.

    Compared: metrics both have and :func:`metric_direction` knows; the tolerance of a metric is
    ``config.tolerance[<last dotted part>]`` (0 when absent). A NaN challenger metric where the champion's is
    finite counts as worse. No champion: the version becomes the first champion.
    """
    if champion is None:
        return PromotionDecision(FIRST_CHAMPION, "no champion yet: the first registered version becomes champion")
    comparisons: dict[str, str] = {}
    worse: list[str] = []
    for name in sorted(set(challenger) & set(champion)):
        direction = metric_direction(name)
        if direction is None:
            continue
        new, old = float(challenger[name]), float(champion[name])
        tolerance = float(config.tolerance.get(name.rsplit(".", 1)[-1], 0.0))
        if math.isnan(old):
            continue
        if direction == "band":
            new_cmp = -_band_distance(new, config.coverage_band) if not math.isnan(new) else math.nan
            old_cmp = -_band_distance(old, config.coverage_band)
        else:
            sign = 1.0 if direction == "higher" else -1.0
            new_cmp, old_cmp = sign * new, sign * old
        is_worse = math.isnan(new_cmp) or new_cmp < old_cmp - tolerance
        verdict = (f"{name}: {new:.4g} vs champion {old:.4g} ({direction} is better, tolerance {tolerance:g}): "
                   f"{'worse' if is_worse else 'ok'}")
        comparisons[name] = verdict
        if is_worse:
            worse.append(verdict)
    if worse:
        return PromotionDecision(KEPT_CHAMPION, "not promoted: " + "; ".join(worse), comparisons)
    if not comparisons:
        return PromotionDecision(PROMOTED, "promoted: no held-out metric in common with the champion", comparisons)
    return PromotionDecision(PROMOTED, f"promoted: {len(comparisons)} held-out metric(s) within tolerance",
                             comparisons)


def champion_metrics(client: Any, name: str) -> dict[str, float] | None:
    """The ``heldout.*`` tags of the current champion version of ``name`` (None: no champion)."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no registered model or no alias: MlflowException RESOURCE_DOES_NOT_EXIST
        return None
    return {k[len(METRIC_TAG_PREFIX):]: float(v) for k, v in (version.tags or {}).items()
            if k.startswith(METRIC_TAG_PREFIX)}


def own_metrics(name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """The held-out metrics a registered model is judged on: ``radiosensitivity.*`` for
    ``radiogenomics-radiosensitivity``, ``toxicity.*`` for ``radiogenomics-toxicity``, all of them for the
    prescriber (it serves both). A better toxicity model is not held back by a worse RSI model, nor the reverse."""
    prefix = {RADIOSENSITIVITY_MODEL: "radiosensitivity.", TOXICITY_MODEL: "toxicity."}.get(name)
    return {k: v for k, v in metrics.items() if prefix is None or k.startswith(prefix)}
