"""Promotion (contract section 4): whether a newly registered unit becomes ``champion``, and a person's decision.

Automatic promotion fails closed. A version is promoted only if its held-out metrics were computed on the same
evaluation data as the champion's (the ``evaluation_digest.<task>`` tags are equal), it has every held-out
metric and serves every toxicity endpoint the champion has, and none of its metrics is worse than the
champion's beyond tolerance (:func:`promotion_decision`). The three registered models move as one unit: the
versions registered together are promoted together or not at all (:func:`unit_promotion_decision`), so the
prescriber ``champion`` always embeds the ``champion`` radiosensitivity and toxicity versions.
:func:`promote_unit` records a person's decision (``radiogenomics promote``).

See ``docs/registry.md``, "Champion and challenger".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from radiogenomics.errors import InputError
from radiogenomics.training.config import RegistryConfig
from radiogenomics.training.metrics import GREATER_IS_BETTER
from radiogenomics.training.registry.names import (
    CHALLENGER,
    CHAMPION,
    DIGEST_TAG_PREFIX,
    ENDPOINTS_TAG,
    METRIC_TAG_PREFIX,
    NO_VERSION,
    PRESCRIBER_MODEL,
    RADIOSENSITIVITY_MODEL,
    REGISTERED_MODELS,
    TOXICITY_MODEL,
    UNIT_TAG_PREFIX,
)

#: Decisions recorded in the version tag ``promotion_decision``.
FIRST_CHAMPION = "first_champion"
PROMOTED = "promoted"
KEPT_CHAMPION = "kept_champion"
MANUAL = "manual"
#: Metrics judged by their distance from a target value (lower distance is better).
TARGETS = {"calibration_slope": 1.0, "calibration_intercept": 0.0}


@dataclass(frozen=True)
class Evaluation:
    """What a registered version is judged on: its held-out metrics (``radiosensitivity.spearman``,
    ``toxicity.xerostomia.auc``, ...), the digest of the data each task was evaluated on (``{"radiosensitivity":
    ..., "toxicity.xerostomia": ...}``, :func:`~radiogenomics.training.tracking.evaluation_digest`) and the
    toxicity endpoints it serves."""

    metrics: Mapping[str, float]
    digests: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a new version becomes champion, and why (``comparisons``: metric -> one-line verdict;
    ``failures``: the clauses that kept it from promotion)."""

    decision: str
    reason: str
    comparisons: dict[str, str] = field(default_factory=dict)
    failures: tuple[str, ...] = ()

    @property
    def promoted(self) -> bool:
        return self.decision in (FIRST_CHAMPION, PROMOTED, MANUAL)


@dataclass(frozen=True)
class UnitDecision:
    """The decision on the versions registered together: all promoted or none (``decisions``: per model)."""

    promoted: bool
    reason: str
    decisions: dict[str, PromotionDecision]


def metric_direction(name: str) -> str | None:
    """``"higher"``, ``"lower"``, ``"band"``, ``"target"`` or None (not compared).

    The metric's last dotted part decides (``toxicity.xerostomia.auc`` -> ``auc``): Spearman, AUC, C-index
    higher is better; MAE, Brier, mean interval width lower (:data:`GREATER_IS_BETTER`); ``coverage*``: the
    distance from the configured coverage band, lower is better; ``calibration_slope`` / ``calibration_intercept``
    (``target``): the distance from 1 / 0, lower is better (a slope of 0.2 is worse than 0.95 and than 1.3).
    """
    key = name.rsplit(".", 1)[-1]
    if key.startswith("coverage"):
        return "band"
    if key in TARGETS:
        return "target"
    if key in GREATER_IS_BETTER:
        return "higher" if GREATER_IS_BETTER[key] else "lower"
    return None


def _band_distance(value: float, band: tuple[float, float]) -> float:
    low, high = band
    return max(low - value, value - high, 0.0)


def _goodness(name: str, value: float, direction: str, config: RegistryConfig) -> float:
    """The metric as "higher is better" (NaN stays NaN)."""
    if math.isnan(value):
        return math.nan
    if direction == "band":
        return -_band_distance(value, config.coverage_band)
    if direction == "target":
        return -abs(value - TARGETS[name.rsplit(".", 1)[-1]])
    return value if direction == "higher" else -value


def _explain(direction: str, name: str) -> str:
    if direction == "band":
        return "distance from the coverage band, lower is better"
    if direction == "target":
        return f"distance from {TARGETS[name.rsplit('.', 1)[-1]]:g}, lower is better"
    return f"{direction} is better"


def promotion_decision(challenger: Evaluation | Mapping[str, float], champion: Evaluation | Mapping[str, float] | None,
                       config: RegistryConfig) -> PromotionDecision:
    """Whether one model's new version may replace its champion; fails closed.

    Not promoted when (each a clause of the reason): the champion recorded no evaluation digest, or the
    challenger's digest of one of the champion's tasks differs or is missing (metrics of different data are not
    comparable, and are not compared); it does not serve one of the champion's endpoints; it lacks one of the
    champion's metrics; no metric can be compared; or a metric is worse than the champion's beyond
    ``config.tolerance[<last dotted part>]`` (0 when absent; applied to the distance for ``band`` and ``target``
    metrics). A NaN challenger metric where the champion's is finite is worse. No champion: the version becomes
    the first champion. A plain mapping is taken as metrics without digests or endpoints.
    """
    if champion is None:
        return PromotionDecision(FIRST_CHAMPION, "no champion yet: the first registered version becomes champion")
    new = challenger if isinstance(challenger, Evaluation) else Evaluation(dict(challenger))
    old = champion if isinstance(champion, Evaluation) else Evaluation(dict(champion))
    failures: list[str] = []
    incomparable: set[str] = set()  # tasks whose metrics were computed on other data (not compared)
    if not old.digests:
        failures.append("the champion's evaluation data are unknown (it has no evaluation digest): a person "
                        "decides (radiogenomics promote)")
    for task, digest in sorted(old.digests.items()):
        mine = new.digests.get(task)
        if mine is None:
            failures.append(f"not evaluated on {task}, which the champion was evaluated on")
        elif mine != digest:
            incomparable.add(task)
            failures.append(f"different evaluation data for {task} (digest {mine[:12]} vs champion {digest[:12]}: "
                            "another cohort, other labels or other folds), so its held-out metrics are not "
                            "comparable")
    missing_endpoints = sorted(set(old.endpoints) - set(new.endpoints))
    if missing_endpoints:
        failures.append(f"does not serve the champion's toxicity endpoint(s) {', '.join(missing_endpoints)}")
    missing_metrics = sorted(set(old.metrics) - set(new.metrics))
    if missing_metrics:
        failures.append(f"lacks the champion's held-out metric(s) {', '.join(missing_metrics)}")
    comparisons: dict[str, str] = {}
    for name in sorted(set(new.metrics) & set(old.metrics)):
        direction = metric_direction(name)
        if direction is None or not old.digests or name.rsplit(".", 1)[0] in incomparable:
            continue
        value, reference = float(new.metrics[name]), float(old.metrics[name])
        if math.isnan(reference):
            continue
        tolerance = float(config.tolerance.get(name.rsplit(".", 1)[-1], 0.0))
        mine_good, theirs_good = (_goodness(name, v, direction, config) for v in (value, reference))
        is_worse = math.isnan(mine_good) or mine_good < theirs_good - tolerance
        verdict = (f"{name}: {value:.4g} vs champion {reference:.4g} ({_explain(direction, name)}, tolerance "
                   f"{tolerance:g}): {'worse' if is_worse else 'ok'}")
        comparisons[name] = verdict
        if is_worse:
            failures.append(verdict)
    if not comparisons and not failures:
        failures.append("no held-out metric can be compared with the champion's")
    if failures:
        return PromotionDecision(KEPT_CHAMPION, "not promoted: " + "; ".join(failures), comparisons,
                                 tuple(failures))
    return PromotionDecision(PROMOTED, f"promoted: same evaluation data as the champion, every metric and endpoint "
                                       f"of it, {len(comparisons)} held-out metric(s) within tolerance", comparisons)


def unit_promotion_decision(challengers: Mapping[str, Evaluation], champions: Mapping[str, Evaluation | None],
                            config: RegistryConfig) -> UnitDecision:
    """One decision for the versions registered together (``challengers``: model -> its evaluation).

    Each member is judged against its own model's champion (:func:`promotion_decision`); a registered model that
    has a champion but no version in the unit (e.g. toxicity not trained) is a failure too, since the prescriber
    champion must embed the toxicity champion. The unit is promoted only when nothing failed: then every member
    becomes champion (``first_champion`` where its model had none); else every member stays challenger with
    the same reason (the distinct failure clauses of all members).
    """
    failures: list[str] = []
    per_model: dict[str, PromotionDecision] = {}
    for name in REGISTERED_MODELS:
        if name not in challengers:
            if champions.get(name) is not None:
                failures.append(f"the unit has no {name} version, while {name} has a champion the prescriber "
                                "champion must embed")
            continue
        per_model[name] = decision = promotion_decision(challengers[name], champions.get(name), config)
        failures += [f for f in decision.failures if f not in failures]
    if failures:
        reason = "not promoted: " + "; ".join(failures)
        return UnitDecision(False, reason, {name: PromotionDecision(KEPT_CHAMPION, reason, d.comparisons, d.failures)
                                            for name, d in per_model.items()})
    first = [name for name, d in per_model.items() if d.decision == FIRST_CHAMPION]
    if len(first) == len(per_model):
        reason = "no champion yet: the first registered unit becomes champion"
    else:
        compared = {m for d in per_model.values() for m in d.comparisons}
        reason = (f"promoted: same evaluation data as the champion, every metric and endpoint of it, {len(compared)} "
                  "held-out metric(s) within tolerance")
        if first:
            reason += f" ({', '.join(first)}: first version, no champion yet)"
    return UnitDecision(True, reason, {name: PromotionDecision(d.decision, reason, d.comparisons)
                                       for name, d in per_model.items()})


# ------------------------------------------------------------------------------------------- from tags
def digest_of(digests: Mapping[str, str]) -> str:
    """One digest of several tasks' evaluation digests (the version tag ``evaluation_digest``)."""
    return hashlib.sha256(json.dumps(dict(sorted(digests.items())), separators=(",", ":")).encode()).hexdigest()


def evaluation_from_tags(name: str, tags: Mapping[str, str]) -> Evaluation:
    """The :class:`Evaluation` recorded in a version's tags (``heldout.*``, ``evaluation_digest.*``,
    ``endpoints``; a version registered before the endpoints tag: the endpoints of its ``toxicity.*`` metrics)."""
    metrics = {k[len(METRIC_TAG_PREFIX):]: float(v) for k, v in tags.items() if k.startswith(METRIC_TAG_PREFIX)}
    digests = {k[len(DIGEST_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(DIGEST_TAG_PREFIX)}
    if ENDPOINTS_TAG in tags:
        endpoints = tuple(json.loads(tags[ENDPOINTS_TAG]))
    elif name == RADIOSENSITIVITY_MODEL:
        endpoints = ()
    else:
        endpoints = tuple(sorted({m.split(".")[1] for m in metrics if m.startswith("toxicity.") and m.count(".") >= 2}))
    return Evaluation(metrics, digests, endpoints)


def champion_version(client: Any, name: str) -> Any | None:
    """The model version holding ``champion`` (None: no registered model or no alias)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no registered model or no alias: MlflowException RESOURCE_DOES_NOT_EXIST
        return None


def champion_evaluation(client: Any, name: str) -> Evaluation | None:
    """The :class:`Evaluation` of the current champion of ``name`` (None: no champion)."""
    version = champion_version(client, name)
    return None if version is None else evaluation_from_tags(name, version.tags or {})


def champion_metrics(client: Any, name: str) -> dict[str, float] | None:
    """The ``heldout.*`` tags of the current champion version of ``name`` (None: no champion)."""
    evaluation = champion_evaluation(client, name)
    return None if evaluation is None else dict(evaluation.metrics)


def own_metrics(name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """The held-out metrics a registered model is judged on: ``radiosensitivity.*`` for
    ``radiogenomics-radiosensitivity``, ``toxicity.*`` for ``radiogenomics-toxicity``, all of them for the
    prescriber (it serves both). The unit is still promoted only as a whole (:func:`unit_promotion_decision`)."""
    prefix = {RADIOSENSITIVITY_MODEL: "radiosensitivity.", TOXICITY_MODEL: "toxicity."}.get(name)
    return {k: v for k, v in metrics.items() if prefix is None or k.startswith(prefix)}


def own_digests(name: str, digests: Mapping[str, str]) -> dict[str, str]:
    """The evaluation digests of the tasks a registered model is judged on (like :func:`own_metrics`)."""
    keep = {RADIOSENSITIVITY_MODEL: lambda task: task == "radiosensitivity",
            TOXICITY_MODEL: lambda task: task.startswith("toxicity.")}.get(name, lambda task: True)
    return {k: v for k, v in digests.items() if keep(k)}


def unit_tags(members: Mapping[str, str]) -> dict[str, str]:
    """``unit.<model>`` tags naming the version of each registered model in the unit (``none`` when absent)."""
    return {f"{UNIT_TAG_PREFIX}{name}": members.get(name, NO_VERSION) for name in REGISTERED_MODELS}


def unit_of(tags: Mapping[str, str]) -> dict[str, str | None] | None:
    """The unit recorded in a version's tags: model -> version (None: no version of it); None when the version
    has no unit tags (registered before units were recorded)."""
    if not any(k.startswith(UNIT_TAG_PREFIX) for k in tags):
        return None
    out: dict[str, str | None] = {}
    for name in REGISTERED_MODELS:
        value = tags.get(f"{UNIT_TAG_PREFIX}{name}", NO_VERSION)
        out[name] = None if value == NO_VERSION else value
    return out


# --------------------------------------------------------------------------------------- a person decides
@dataclass(frozen=True)
class Move:
    """One model's ``champion`` alias after :func:`promote_unit`: ``previous`` version (None: none) -> ``version``."""

    name: str
    version: str
    previous: str | None

    def describe(self) -> str:
        if self.previous == self.version:
            return f"{self.name}: champion stays version {self.version}"
        return f"{self.name}: champion {self.previous or 'none'} -> {self.version}"


def _version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise InputError(f"{name} has no version {version}",
                         fix=f"list the versions in the MLflow UI or with MlflowClient().search_model_versions("
                             f"\"name='{name}'\"); check MLFLOW_TRACKING_URI") from exc


def promote_unit(client: Any, name: str, version: str, *, reason: str, by: str,
                 now: dt.datetime | None = None) -> list[Move]:
    """Make the unit of ``name`` version ``version`` champion: a person's decision, recorded in every member's
    tags (``promotion_decision: manual``, ``promotion_reason``, ``promoted_by``, ``promoted_at`` (UTC, ISO 8601),
    ``promoted_over``: the champion it replaced). The members move together; a ``challenger`` alias on a member
    is removed.

    InputError (nothing moves) when: the reason is empty; ``name`` is not a registered model of the contract; the
    version does not exist; or its unit is incomplete: it has no unit tags, a member does not exist or names
    another unit, or a registered model with a champion has no version in the unit (the prescriber champion
    must embed the radiosensitivity and toxicity champions)."""
    reason, by = reason.strip(), by.strip()
    if not reason:
        raise InputError("promote needs a reason", fix="give --reason TEXT: why this version should be champion")
    if not by:
        raise InputError("promote needs who decides", fix="give --by NAME")
    if name not in REGISTERED_MODELS:
        raise InputError(f"{name} is not one of the registered models ({', '.join(REGISTERED_MODELS)})",
                         fix="give radiogenomics-prescriber, radiogenomics-radiosensitivity or radiogenomics-toxicity")
    version = str(version).strip()
    given = _version(client, name, version)
    unit = unit_of(given.tags or {})
    if unit is None:
        raise InputError(f"the unit of {name} version {version} is incomplete: it has no unit tags (registered "
                         "before the three models were recorded as one unit)",
                         fix="train again to register a complete unit")
    if unit.get(name) != version:
        raise InputError(f"the unit of {name} version {version} is incomplete: its unit tags name version "
                         f"{unit.get(name)} of {name}", fix="promote a version registered by radiogenomics train")
    members: dict[str, Any] = {}
    for member, member_version in unit.items():
        if member_version is None:
            if champion_version(client, member) is not None:
                raise InputError(f"the unit of {name} version {version} is incomplete: it has no {member} version, "
                                 f"while {member} has a champion the prescriber champion must embed",
                                 fix="promote a unit that has all three models (train with every task enabled)")
            continue
        try:
            mv = _version(client, member, member_version)
        except InputError as exc:
            raise InputError(f"the unit of {name} version {version} is incomplete: {exc.args[0]}",
                             fix="promote a unit whose three versions are all registered") from exc
        if unit_of(mv.tags or {}) != unit:
            raise InputError(f"the unit of {name} version {version} is incomplete: {member} version "
                             f"{member_version} belongs to another unit", fix="promote a version registered by "
                             "radiogenomics train")
        members[member] = mv
    for required in (RADIOSENSITIVITY_MODEL, PRESCRIBER_MODEL):
        if required not in members:
            raise InputError(f"the unit of {name} version {version} is incomplete: it has no {required} version",
                             fix="promote a version registered by radiogenomics train")
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")
    moves: list[Move] = []
    for member, mv in members.items():
        previous = champion_version(client, member)
        previous_version = None if previous is None else str(previous.version)
        tags = {"promotion_decision": MANUAL, "promotion_reason": reason[:5000], "promoted_by": by[:250],
                "promoted_at": stamp, "promoted_over": previous_version or NO_VERSION}
        for key, value in tags.items():
            client.set_model_version_tag(member, mv.version, key, value)
        client.set_registered_model_alias(member, CHAMPION, mv.version)
        try:
            challenger = client.get_model_version_by_alias(member, CHALLENGER)
        except Exception:  # no challenger alias
            challenger = None
        if challenger is not None and str(challenger.version) == str(mv.version):
            client.delete_registered_model_alias(member, CHALLENGER)
        moves.append(Move(member, str(mv.version), previous_version))
    return moves
