"""Model registry (contract section 4): log and register the models, set the ``champion``/``challenger`` aliases.

:func:`register_models` logs three models in one MLflow run and registers each:

* ``radiogenomics-radiosensitivity``: the fitted RSI surrogate (pyfunc :class:`RadiosensitivityModel`: RSI,
  its 90 % interval and its source);
* ``radiogenomics-toxicity``: the fitted toxicity classifiers (pyfunc :class:`ToxicityModel`);
* ``radiogenomics-prescriber``: the pyfunc :class:`PrescriberModel` (feature rows -> prescription records).

The versions registered together are one unit (tags ``unit.<model>``; no toxicity version when no toxicity
model was trained) and move together: the first unit becomes ``champion``; a later one becomes ``challenger``
and is promoted only when every member passes the fail-closed rule (same evaluation data, every metric and
endpoint of the champion, nothing worse beyond tolerance; :func:`unit_promotion_decision`). The decision and
its reason go into the run's tags (``registry.<model>.decision`` / ``.reason``) and the versions' tags
(``promotion_decision``, ``promotion_reason``); held-out metrics, evaluation digests and endpoints into the
versions' tags ``heldout.<metric>``, ``evaluation_digest.<task>``, ``endpoints`` (what the next challenger is
compared with). See ``docs/registry.md``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.errors import InputError
from radiogenomics.features.schema import FeatureSchema
from radiogenomics.models.prescriber import REGIMEN_COLUMNS, Prescriber, records_frame
from radiogenomics.training.config import RegistryConfig, TrainConfig
from radiogenomics.training.registry.names import (
    CHALLENGER,
    CHAMPION,
    DIGEST_TAG,
    DIGEST_TAG_PREFIX,
    ENDPOINTS_TAG,
    METRIC_TAG_PREFIX,
    PRESCRIBER_MODEL,
    RADIOSENSITIVITY_MODEL,
    REGISTERED_MODELS,
    RSI_MODEL_TAG,
    TOXICITY_MODEL,
)
from radiogenomics.training.registry.promotion import (
    PROMOTED,
    Evaluation,
    PromotionDecision,
    UnitDecision,
    champion_evaluation,
    digest_of,
    own_digests,
    own_metrics,
    unit_promotion_decision,
    unit_tags,
)

log = logging.getLogger(__name__)

#: Packages pinned besides :func:`radiogenomics.training.registry.pyfunc.pip_requirements` for an image model.
_IMAGE_MODEL_PACKAGES = ("monai",)


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version and the aliases it holds after registration."""

    name: str
    version: str
    uri: str
    model_id: str | None
    aliases: tuple[str, ...]
    decision: PromotionDecision


@dataclass(frozen=True)
class RegistrationResult:
    """What :func:`register_models` did: the run, each registered version (no toxicity version when no toxicity
    model was given), the prescriber's decision and the unit's."""

    run_id: str
    versions: dict[str, RegisteredVersion]
    unit: UnitDecision | None = None

    @property
    def decision(self) -> PromotionDecision:
        return self.versions[PRESCRIBER_MODEL].decision


def signature_example(table: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Example input for the signature: the schema's non-outcome columns (two rows) plus the regimen columns."""
    columns = [c.name for c in schema.columns if c.group != "outcome"]
    regimen = pd.DataFrame({c: np.full(min(len(table), 2), np.nan) for c in REGIMEN_COLUMNS})
    return pd.concat([table.reindex(columns=columns).head(2).reset_index(drop=True), regimen], axis=1)


def input_signature(signature: Any) -> Any:
    """``signature`` without an input schema: outputs and params kept, the input checked by the models.

    MLflow's input-schema enforcement drops (with a warning) every column the signature does not declare, so a
    misspelt ``genomic.RSI`` would reach the prescriber as a patient without a measured RSI, and the ``dose.*``
    columns of organs the model has no feature of (the safety gate's OAR input) would vanish. Without an input
    schema the models see exactly what the caller sent: unknown columns are refused naming the closest known
    one, gate columns are accepted, every value is cast to the training dtype (an ``InputError`` naming the
    column when it cannot be), missing features are allowed (contract sections 2, 4 and 6). The feature schema
    itself travels with the model (the prescriber's ``schema``; ``GET /v1/model`` lists it).
    """
    from mlflow.models.signature import ModelSignature

    return ModelSignature(inputs=None, outputs=signature.outputs, params=signature.params)


def _with_params(signature: Any, params: Any) -> Any:
    """``signature`` with this params schema: MLflow drops (with a warning) every ``params`` key a signature
    does not declare, so the toxicity model's ``prescription_gy`` (default None: the delivered plan) must be
    declared to reach ``predict``."""
    from mlflow.models.signature import ModelSignature

    return ModelSignature(inputs=signature.inputs, outputs=signature.outputs, params=params)


def _aliases(client: Any, name: str) -> set[str]:
    """The aliases a registered model has now."""
    return set(getattr(client.get_registered_model(name), "aliases", None) or {})


def _evaluations(members: list[str], metrics: Mapping[str, float], digests: Mapping[str, str],
                 endpoints: tuple[str, ...]) -> dict[str, Evaluation]:
    """Each member's :class:`Evaluation`: its own metrics and digests; the endpoints for toxicity and prescriber."""
    return {name: Evaluation(own_metrics(name, metrics), own_digests(name, digests),
                             () if name == RADIOSENSITIVITY_MODEL else endpoints) for name in members}


def _record_unit(client: Any, versions: Mapping[str, str], evaluations: Mapping[str, Evaluation],
                 unit: UnitDecision, run_tags: dict[str, str]) -> dict[str, RegisteredVersion]:
    """Tags (evaluation, unit, decision) and aliases of the unit's versions, as decided."""
    out: dict[str, RegisteredVersion] = {}
    members = unit_tags(versions)
    for name, version in versions.items():
        evaluation, decision = evaluations[name], unit.decisions[name]
        tags = {f"{METRIC_TAG_PREFIX}{metric}": repr(float(value)) for metric, value in evaluation.metrics.items()}
        tags.update({f"{DIGEST_TAG_PREFIX}{task}": digest for task, digest in evaluation.digests.items()})
        if evaluation.digests:
            tags[DIGEST_TAG] = digest_of(evaluation.digests)
        if name != RADIOSENSITIVITY_MODEL:
            tags[ENDPOINTS_TAG] = json.dumps(sorted(evaluation.endpoints))
        tags.update(members)
        tags.update({"promotion_decision": decision.decision, "promotion_reason": decision.reason[:5000]})
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        if decision.promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
            aliases: tuple[str, ...] = (CHAMPION,)
            if decision.decision == PROMOTED and CHALLENGER in _aliases(client, name):
                client.delete_registered_model_alias(name, CHALLENGER)
        else:
            client.set_registered_model_alias(name, CHALLENGER, version)
            aliases = (CHALLENGER,)
        run_tags[f"registry.{name}.version"] = version
        run_tags[f"registry.{name}.decision"] = decision.decision
        run_tags[f"registry.{name}.reason"] = decision.reason[:5000]
        log.info("registry: %s version %s -> %s (%s)", name, version, "/".join(aliases), decision.reason)
        mv = client.get_model_version(name, version)
        out[name] = RegisteredVersion(name=name, version=version, uri=f"models:/{name}/{version}",
                                      model_id=getattr(mv, "model_id", None), aliases=aliases, decision=decision)
    return out


def register_models(radiosensitivity: Any, toxicity: Mapping[str, Any], metrics: Mapping[str, float],
                    schema: FeatureSchema, config: TrainConfig | RegistryConfig, *, training_table: pd.DataFrame,
                    prescriber: Prescriber | None = None, prescriber_options: Mapping[str, Any] | None = None,
                    run_id: str | None = None, experiment_name: str | None = None,
                    evaluation_digests: Mapping[str, str] | None = None) -> RegistrationResult:
    """Log, register and alias the registered models of contract section 4 in one MLflow run, as one unit.

    Parameters
    ----------
    radiosensitivity, toxicity:
        The fitted RSI model (``RSISurrogate`` or ``MultimodalRSI``; its class is recorded in the tag
        :data:`RSI_MODEL_TAG`) and ``{endpoint: ToxicityClassifier}`` (final models, fitted on all training
        patients). An empty ``toxicity`` registers no ``radiogenomics-toxicity`` version (a disabled task
        registers nothing); the prescriber then serves no endpoint.
    metrics:
        Held-out metrics (``{"radiosensitivity.spearman": 0.61, "toxicity.xerostomia.auc": 0.74, ...}``),
        compared with the champions' by :func:`unit_promotion_decision`.
    schema:
        The training feature table's schema (the prescriber reindexes input to it).
    config:
        The training config (its ``registry`` section) or a :class:`RegistryConfig`.
    training_table:
        The training feature table: population RSI, applicability domain and the signature example.
    prescriber:
        A ready :class:`Prescriber`; default :meth:`Prescriber.from_training` with ``prescriber_options``.
    run_id:
        Log into this run (e.g. the train command's parent run); default the active run, else a new run
        ``register`` in ``experiment_name`` (default the config's, else ``radiogenomics``).
    evaluation_digests:
        ``{"radiosensitivity": ..., "toxicity.<endpoint>": ...}``: the digest of the data each task's metrics were
        computed on (:func:`~radiogenomics.training.tracking.evaluation_digest`). Without them the versions can
        become champion only as the first unit or by a person's decision (:func:`promote_unit`): automatic
        promotion needs the same evaluation data as the champion's.

    MLflow is found through ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` (or ``mlflow.set_tracking_uri``).
    """
    import joblib
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from radiogenomics.training.registry import pyfunc

    registry_config = config.registry if isinstance(config, TrainConfig) else config
    bad = {k: v for k, v in metrics.items() if not isinstance(v, int | float) or isinstance(v, bool)}
    if bad:
        raise InputError(f"held-out metrics must be numbers: {sorted(bad)}", fix="pass {name: float}")
    prescriber = prescriber or Prescriber.from_training(training_table, schema, radiosensitivity, toxicity,
                                                        **dict(prescriber_options or {}))
    example = signature_example(training_table, schema)
    features = training_table.reindex(columns=[c for c in example.columns if c not in REGIMEN_COLUMNS]).head(2)
    records = records_frame(prescriber.predict_records(features))
    if experiment_name is None and isinstance(config, TrainConfig):
        experiment_name = config.tracking.experiment_name
    client = mlflow.MlflowClient()
    active = mlflow.active_run()
    if run_id is None and active is not None:
        run_id = active.info.run_id
    context: Any
    if active is not None and active.info.run_id == run_id:
        from contextlib import nullcontext

        context = nullcontext(active)
    elif run_id is not None:
        context = mlflow.start_run(run_id=run_id)
    else:
        experiment = mlflow.set_experiment(experiment_name or "radiogenomics")
        context = mlflow.start_run(run_name="register", experiment_id=experiment.experiment_id)
    run_tags: dict[str, str] = {}
    with context as run, tempfile.TemporaryDirectory(prefix="radiogenomics-register-") as tmp, \
            warnings.catch_warnings():
        # no input example on purpose (MLflow would run predict at logging); integer columns are declared Any
        warnings.filterwarnings("ignore", message=".*input example.*|.*Inferred schema contains integer.*")
        run_id = run.info.run_id
        paths = {name: Path(tmp) / f"{name}.joblib" for name in ("prescriber", "radiosensitivity", "toxicity")}
        joblib.dump(prescriber, paths["prescriber"])
        joblib.dump({"schema": schema, "model": radiosensitivity}, paths["radiosensitivity"])
        joblib.dump({"schema": schema, "models": dict(toxicity)}, paths["toxicity"])
        rsi_model, tox_model = pyfunc.RadiosensitivityModel(), pyfunc.ToxicityModel()
        rsi_model.schema, rsi_model.model = schema, radiosensitivity
        tox_model.schema, tox_model.models = schema, dict(toxicity)
        features_only = example.drop(columns=list(REGIMEN_COLUMNS))
        specs = [
            (RADIOSENSITIVITY_MODEL, "radiosensitivity", pyfunc.RadiosensitivityModel(),
             pyfunc.RADIOSENSITIVITY_ARTIFACT, infer_signature(features_only, rsi_model.predict(None, features))),
            (TOXICITY_MODEL, "toxicity", pyfunc.ToxicityModel(), pyfunc.TOXICITY_ARTIFACT,
             _with_params(infer_signature(features_only, tox_model.predict(None, features)),
                          ParamSchema([ParamSpec("prescription_gy", "double", None),
                                       ParamSpec("n_fractions", "double", None)]))),
            (PRESCRIBER_MODEL, "prescriber", pyfunc.PrescriberModel(PRESCRIBER_MODEL), pyfunc.PRESCRIBER_ARTIFACT,
             _with_params(infer_signature(example, _signature_output(records)), ParamSchema([
                 # no regimen by default: each patient's own (else the site's standard), contract section 2
                 ParamSpec("n_fractions", "double", None), ParamSpec("dose_per_fraction_gy", "double", None),
                 ParamSpec("target_gard", "double", prescriber.target_gard)]))),
        ]
        requirements = model_pip_requirements(radiosensitivity)
        kind = type(radiosensitivity).__name__
        run_tags[f"registry.{RSI_MODEL_TAG}"] = kind
        members = [spec[0] for spec in specs if spec[0] != TOXICITY_MODEL or toxicity]
        # the champions the unit is compared with, read before anything of this unit is aliased
        champions = {name: champion_evaluation(client, name) for name in REGISTERED_MODELS}
        registered: dict[str, str] = {}
        for name, artifact_name, python_model, artifact, signature in specs:
            if name not in members:
                continue
            with mlflow_prints_quiet():
                info = mlflow.pyfunc.log_model(name=artifact_name, python_model=python_model,
                                               artifacts={artifact: str(paths[artifact_name])},
                                               signature=input_signature(signature),
                                               pip_requirements=requirements, registered_model_name=name)
            registered[name] = str(info.registered_model_version)
            log.info("registered %s version %s (model_id %s)", name, registered[name], getattr(info, "model_id", ""))
            if name != TOXICITY_MODEL:
                client.set_model_version_tag(name, registered[name], RSI_MODEL_TAG, kind)
        evaluations = _evaluations(members, metrics, dict(evaluation_digests or {}), tuple(sorted(toxicity)))
        unit = unit_promotion_decision(evaluations, champions, registry_config)
        versions = _record_unit(client, registered, evaluations, unit, run_tags)
        mlflow.set_tags(run_tags)
    return RegistrationResult(run_id=str(run_id), versions=versions, unit=unit)


@contextmanager
def mlflow_prints_quiet() -> Iterator[None]:
    """Drop what MLflow prints straight to stderr (``Successfully registered model ...``, ``Created version ...``:
    not log records) while inside, when MLflow does not own its loggers (``MLFLOW_CONFIGURE_LOGGING=false``, as the
    command line sets it; otherwise its log records use the same stream and are left alone). The registry logs
    each version itself."""
    from mlflow.environment_variables import MLFLOW_CONFIGURE_LOGGING
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    if MLFLOW_CONFIGURE_LOGGING.get():
        yield
        return
    previous = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = previous


def model_pip_requirements(radiosensitivity: Any) -> list[str]:
    """The logged models' pip requirements: :func:`~radiogenomics.training.registry.pyfunc.pip_requirements`
    (the package, torch's CPU build, exact pins of the pickles' libraries), plus an exact ``monai`` pin when the
    RSI model is the multimodal network (``accepts_images``: its pickle rebuilds a MONAI network)."""
    from radiogenomics.training.registry import pyfunc

    requirements = pyfunc.pip_requirements()
    extra = _IMAGE_MODEL_PACKAGES if getattr(radiosensitivity, "accepts_images", False) else ()
    for package in extra:
        if not any(r.split("==")[0] == package for r in requirements):
            requirements.append(f"{package}=={metadata.version(package)}")
    return requirements


def _signature_output(records: pd.DataFrame) -> pd.DataFrame:
    """Records with ``toxicity``, ``oar_checks``, ``flags`` and ``notes`` as JSON strings, for the signature's
    output schema.

    MLflow cannot infer a schema for a column of dicts with per-row keys; the pyfunc returns them as dicts
    and lists (output schemas are documentation, not enforced).
    """
    import json

    out = records.copy()
    for column in ("toxicity", "oar_checks", "flags", "notes"):
        out[column] = [json.dumps(v, sort_keys=True, default=float) for v in out[column]]
    return out
