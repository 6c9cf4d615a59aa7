"""The training configuration (`TRAIN.yaml`), validated with pydantic.

Every section and key is optional; a file names only what it changes. The defaults are the documented file
``radiogenomics/training/data/default_train.yaml`` and ``TrainConfig()`` equals it. Unknown keys and values of
the wrong type are :class:`~radiogenomics.errors.InputError` naming the key path (``cv.outer_fold``) and the
expected type, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from radiogenomics.errors import InputError

#: The documented default configuration shipped with the package.
DEFAULT_CONFIG_PATH = Path(str(resources.files("radiogenomics.training") / "data" / "default_train.yaml"))

#: Environment variable naming the MLflow tracking store (MLflow's own).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CVConfig(_Section):
    """Nested cross-validation: folds grouped by patient, stratified by centre."""

    outer_folds: int = Field(default=5, ge=2)
    inner_folds: int = Field(default=3, ge=2)
    group_by: str = "patient_id"
    stratify_by: str | None = "clinical.center"
    leave_one_centre_out: bool = False


class SearchConfig(_Section):
    """Optuna hyperparameter search (TPE sampler, RDB storage)."""

    n_trials: int = Field(default=5, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    storage: str | None = None
    study_name: str = "radiogenomics"
    sampler_seed: int | None = None

    @field_validator("storage")
    @classmethod
    def _rdb_url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError("must be an RDB URL such as sqlite:///path/optuna.db or postgresql://user@host/db")
        return value

    def storage_url(self, run_dir: Path | str | None) -> str | None:
        """The Optuna storage URL: ``storage`` when set, else a sqlite file in ``run_dir`` (None: in memory)."""
        if self.storage is not None:
            return self.storage
        if run_dir is None:
            return None
        return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"


class TaskConfig(_Section):
    """One modelling task: whether it runs and which candidate models compete in it."""

    enabled: bool = True
    candidates: list[str] = Field(default_factory=list)
    #: Fixed estimator parameters per candidate (``{multimodal: {epochs: 5}}``), on top of the searched ones.
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ToxicityConfig(TaskConfig):
    """Toxicity task; ``endpoints`` None means every ``tox_*`` endpoint found in the cohort."""

    endpoints: list[str] | None = None

    def resolve_endpoints(self, columns: Iterable[str]) -> list[str]:
        """The endpoints to model (``tox_xerostomia``, ...): ``endpoints``, or every ``outcome.tox_*`` column
        of the feature table. A configured endpoint the table lacks is an InputError."""
        found = sorted(c.split(".", 1)[1] for c in columns if c.startswith("outcome.tox_"))
        if self.endpoints is None:
            return found
        missing = [e for e in self.endpoints if e not in found]
        if missing:
            raise InputError(f"tasks.toxicity.endpoints names {', '.join(missing)}, which the feature table lacks "
                             f"(it has: {', '.join(found) or 'no tox_* column'})",
                             fix="list endpoints present as outcome.tox_* columns, or set endpoints: null")
        return list(self.endpoints)


def _task(enabled: bool, *candidates: str) -> Any:
    return Field(default_factory=lambda: TaskConfig(enabled=enabled, candidates=list(candidates)))


class TasksConfig(_Section):
    radiosensitivity: TaskConfig = _task(True, "ridge", "rsi_surrogate")
    outcome_alpha: TaskConfig = _task(True, "outcome_alpha")
    toxicity: ToxicityConfig = Field(
        default_factory=lambda: ToxicityConfig(enabled=True, candidates=["logistic", "lkb_patient"]))
    multimodal: TaskConfig = _task(False, "multimodal")
    survival: TaskConfig = _task(True, "coxnet")


class TrackingConfig(_Section):
    """MLflow tracking. The store is ``$MLFLOW_TRACKING_URI``, else a local sqlite store in ``directory``."""

    experiment_name: str = "radiogenomics"
    directory: str = "mlflow"

    def local_dir(self, base: Path | str | None = None) -> Path:
        """The local store's folder: ``directory``, relative to ``base`` (default: the working directory)."""
        path = Path(self.directory)
        return (path if path.is_absolute() else Path(base or Path.cwd()) / path).resolve()

    def tracking_uri(self, base: Path | str | None = None) -> str:
        """``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<directory>/mlflow.db``."""
        env = os.environ.get(TRACKING_URI_ENV, "").strip()
        return env or f"sqlite:///{self.local_dir(base) / 'mlflow.db'}"

    def artifact_location(self, base: Path | str | None = None) -> str | None:
        """Artifact root for a new experiment in the local store (``<directory>/mlartifacts``); None with a
        tracking URI from the environment (the server or store decides)."""
        if os.environ.get(TRACKING_URI_ENV, "").strip():
            return None
        return (self.local_dir(base) / "mlartifacts").as_uri()


class RegistryConfig(_Section):
    """Promotion rule of a challenger over the champion (used by the registry)."""

    tolerance: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"spearman": 0.02, "auc": 0.02, "c_index": 0.02, "brier": 0.01})
    coverage_band: Annotated[tuple[float, float], Field(strict=False)] = (0.85, 0.95)

    @field_validator("coverage_band")
    @classmethod
    def _band(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low < high <= 1.0:
            raise ValueError("must be [low, high] with 0 <= low < high <= 1")
        return value


class TrainConfig(_Section):
    """The whole training configuration (see ``default_train.yaml`` for every key and its meaning)."""

    seed: int = 2026
    cv: CVConfig = Field(default_factory=CVConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _loco_needs_centre(self) -> TrainConfig:
        if self.cv.leave_one_centre_out and not self.cv.stratify_by:
            raise ValueError("cv.leave_one_centre_out needs cv.stratify_by to name the centre column")
        return self

    @property
    def sampler_seed(self) -> int:
        """The TPE sampler's seed: ``search.sampler_seed`` or the top-level ``seed``."""
        return self.seed if self.search.sampler_seed is None else self.search.sampler_seed

    def to_yaml(self) -> str:
        """The full configuration (defaults included) as YAML; loading it gives an equal config."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<top level>"


def _message(exc: ValidationError) -> str:
    """One line per problem: the key path, what was expected, and what was given."""
    lines = []
    for err in exc.errors():
        path = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {path}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key missing")
        else:
            given = err.get("input")
            lines.append(f"{path}: {err['msg'].replace('Value error, ', '')} "
                         f"(got {type(given).__name__} {given!r})")
    return "invalid training config: " + "; ".join(lines)


def _with_default_candidates(data: dict[str, Any]) -> dict[str, Any]:
    """A task section that does not name ``candidates`` keeps the default ones (a file names only what it
    changes: ``tasks: {survival: {enabled: true}}`` means coxnet, not no candidate)."""
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        return data
    defaults = TasksConfig()
    merged = dict(tasks)
    for name, section in tasks.items():
        if isinstance(section, dict) and "candidates" not in section and name in TasksConfig.model_fields:
            merged[name] = {**section, "candidates": list(getattr(defaults, name).candidates)}
    return {**data, "tasks": merged}


def parse_train_config(data: Any, source: str = "") -> TrainConfig:
    """Validate a mapping (parsed YAML) into a :class:`TrainConfig`; problems are an InputError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"training config {source} must be a mapping of sections, got {type(data).__name__}",
                         file=source or None, fix="see docs/training.md for the file's layout")
    data = _with_default_candidates(data)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(_message(exc), file=source or None,
                         fix="correct the key or value; every key and its type is in docs/training.md and "
                             f"{DEFAULT_CONFIG_PATH.name}") from None


def load_train_config(path: Path | str | None = None) -> TrainConfig:
    """Load and validate a ``TRAIN.yaml``; None gives the defaults."""
    if path is None:
        return TrainConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read training config: {exc.strerror or exc}", file=str(path),
                         fix="pass an existing YAML file to --config") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"training config is not valid YAML: {' '.join(str(exc).split())}", file=str(path),
                         fix="fix the YAML syntax") from None
    return parse_train_config(data, str(path))
