"""MLflow pyfunc wrappers of the three registered models (contract section 4).

:class:`PrescriberModel` loads the pickled :class:`~radiogenomics.models.prescriber.Prescriber` (artifact
``prescriber``, joblib) and returns one contract record per input row as a DataFrame (``toxicity`` a dict,
``flags`` a list per row). :class:`RadiosensitivityModel` returns the RSI with its interval,
:class:`ToxicityModel` the ``<endpoint>_grade_ge2`` probabilities; both reindex input to the training schema.
At load time the prescriber finds the registry entry it was loaded from (the registered
version whose ``model_id`` is the logged model's, :func:`registered_info`), so the records carry the right
``model_name``, ``model_version`` and ``model_uri`` (``models:/<name>/<version>``) whatever alias or URI
loaded it.

``predict`` declares ``model_input: pd.DataFrame``: MLflow 3 wants type hints on ``predict`` (without them it
warns, in colour, once per class) and infers no schema from a DataFrame hint, so the models still have NO input
schema and check the columns themselves (:func:`schema_rows`; MLflow's schema enforcement would drop a misspelt
column); the logged signature describes the outputs and params.

All are plain pickles of objects from the installed ``radiogenomics`` package: loading needs the package
(see :func:`pip_requirements`).
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from radiogenomics.features import naming
from radiogenomics.features.schema import FeatureSchema, reindex_to_schema
from radiogenomics.models.inputs import check_columns
from radiogenomics.models.prescriber import ModelInfo, Prescriber, records_frame, toxicity_key

log = logging.getLogger(__name__)

PRESCRIBER_ARTIFACT = "prescriber"
RADIOSENSITIVITY_ARTIFACT = "radiosensitivity"
TOXICITY_ARTIFACT = "toxicity"
#: Index that serves the CPU build of torch (a bare ``torch`` requirement pulls a multi-GB CUDA build).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_PINNED = ("numpy", "pandas", "scipy", "scikit-learn", "mapie", "pyarrow", "joblib", "mlflow")


def pip_requirements() -> list[str]:
    """The logged models' pip requirements, set explicitly (MLflow's inference would pin torch's CUDA build).

    The package itself (``radiogenomics==<version>``, installable from a wheel or index you publish it to),
    torch's CPU build from the PyTorch CPU index (radiogenomics depends on torch), and exact pins of the
    libraries the pickles need.
    """
    import radiogenomics

    pins = []
    for name in _PINNED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    torch = metadata.version("torch").split("+", 1)[0]
    return [f"--extra-index-url {TORCH_CPU_INDEX}", f"torch=={torch}+cpu",
            f"radiogenomics=={radiogenomics.__version__}", *pins]


def _model_dir(artifact: Path) -> Path | None:
    """The folder of the MLmodel file above a model artifact."""
    for folder in (artifact.parent, *artifact.parents):
        if (folder / "MLmodel").is_file():
            return folder
    return None


def registered_info(artifact: Path | str, registered_name: str) -> ModelInfo:
    """The registry entry of the logged model holding ``artifact`` (looked up by its MLflow 3 ``model_id``,
    which a version carries as ``model_id`` or as its source ``models:/<model_id>``).

    Several versions of the same logged model: the highest. Not registered, or the registry unreachable:
    an empty name and version, the URI ``models:/<model_id>`` (logged), with a warning.
    """
    folder = _model_dir(Path(artifact))
    if folder is None:
        log.warning("no MLmodel file above %s: records carry no registry entry", artifact)
        return ModelInfo()
    meta = mlflow.models.Model.load(str(folder / "MLmodel"))
    model_id = getattr(meta, "model_id", None)
    try:
        client = mlflow.MlflowClient()
        versions: list[Any] = list(client.search_model_versions(f"name='{registered_name}'"))
    except Exception as exc:  # a registry that cannot be reached still lets the model predict
        log.warning("cannot query the model registry (%s): records carry no registry version", exc)
        versions = []
    mine = [v for v in versions if model_id and model_id in (v.model_id, (v.source or "").removeprefix("models:/"))]
    if not mine:
        log.warning("the loaded model (model_id %s) is not a version of %s", model_id, registered_name)
        return ModelInfo(uri=f"models:/{model_id}" if model_id else "")
    best = max(mine, key=lambda v: int(v.version))
    return ModelInfo(name=registered_name, version=str(best.version), uri=f"models:/{registered_name}/{best.version}")


class PrescriberModel(PythonModel):  # type: ignore[misc]
    """Pyfunc: feature rows (+ optional ``n_fractions``, ``dose_per_fraction_gy``, ``target_gard``) -> records.

    ``params`` (optional) may set ``n_fractions``, ``dose_per_fraction_gy``, ``target_gard`` for every row
    without its own value.
    """

    def __init__(self, registered_name: str = "radiogenomics-prescriber") -> None:
        self.registered_name = registered_name

    def load_context(self, context: Any) -> None:
        import joblib

        path = Path(context.artifacts[PRESCRIBER_ARTIFACT])
        self.prescriber: Prescriber = joblib.load(path)
        self.info = registered_info(path, self.registered_name)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        options = {k: v for k, v in (params or {}).items()
                   if k in ("n_fractions", "dose_per_fraction_gy", "target_gard") and v is not None}
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return records_frame(self.prescriber.predict_records(frame, model=self.info, **options))


def schema_rows(model_input: Any, schema: FeatureSchema) -> pd.DataFrame:
    """Input rows reindexed to the training schema (absent columns missing, as the estimators expect)."""
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    check_columns([str(c) for c in frame.columns], [*schema.names, naming.PATIENT_ID], gate=False)
    table, _ = reindex_to_schema(frame, schema)
    return table


class RadiosensitivityModel(PythonModel):  # type: ignore[misc]
    """Pyfunc: feature rows -> ``rsi``, ``rsi_lower``, ``rsi_upper`` (90 % interval) and ``rsi_source``.

    Artifact ``radiosensitivity``: ``{"schema": FeatureSchema, "model": RSISurrogate | MultimodalRSI}``
    (joblib). ``rsi_source``: ``measured``, ``fused``, ``predicted`` or ``predicted_without_images``.
    """

    def load_context(self, context: Any) -> None:
        import joblib

        bundle = joblib.load(context.artifacts[RADIOSENSITIVITY_ARTIFACT])
        self.schema, self.model = bundle["schema"], bundle["model"]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        table = schema_rows(model_input, self.schema)
        point, bounds, source = self.model.predict_all(table)  # one pass (one crop load for an image model)
        return pd.DataFrame({"rsi": point, "rsi_lower": bounds[:, 0], "rsi_upper": bounds[:, 1],
                             "rsi_source": source}, index=table.index)


class ToxicityModel(PythonModel):  # type: ignore[misc]
    """Pyfunc: feature rows -> ``<endpoint>_grade_ge2`` probability columns at the delivered plan.

    Artifact ``toxicity``: ``{"schema": FeatureSchema, "models": {endpoint: ToxicityClassifier}}`` (joblib).
    ``params={"prescription_gy": D}`` gives the probabilities with the plan scaled to ``D`` Gy instead;
    ``"n_fractions": n`` (optional, with or without ``prescription_gy``) delivers that plan in n fractions
    (``ToxicityClassifier.predict_proba_at_dose``; the models' EQD2 dose scale depends on it).
    """

    def load_context(self, context: Any) -> None:
        import joblib

        bundle = joblib.load(context.artifacts[TOXICITY_ARTIFACT])
        self.schema, self.models = bundle["schema"], bundle["models"]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        table = schema_rows(model_input, self.schema)
        dose, n = (params or {}).get("prescription_gy"), (params or {}).get("n_fractions")
        plan = {"scale": 1.0} if dose is None else {"prescription_gy": float(dose)}
        out = {}
        for endpoint, model in sorted(self.models.items()):
            proba = (model.predict_proba(table) if dose is None and n is None
                     else model.predict_proba_at_dose(table, **plan, n_fractions=None if n is None else float(n)))
            out[toxicity_key(endpoint)] = proba[:, 1]
        return pd.DataFrame(out, index=table.index)
