"""The model registry (contract section 4): registration, promotion, the pyfunc wrappers, and prediction from a
registered prescriber.

* :mod:`.names`: registered model names, aliases, tags, model URIs;
* :mod:`.promotion`: whether a new version becomes ``champion`` (fails closed);
* :mod:`.register`: log and register the three models in one MLflow run;
* :mod:`.pyfunc`: the MLflow pyfunc wrappers of the three models;
* :mod:`.prediction`: load a registered prescriber, predict a batch, write records.

See ``docs/registry.md``.
"""

from radiogenomics.training.registry.names import (
    CHALLENGER,
    CHAMPION,
    METRIC_TAG_PREFIX,
    PRESCRIBER_MODEL,
    RADIOSENSITIVITY_MODEL,
    REGISTERED_MODELS,
    RSI_MODEL_TAG,
    TOXICITY_MODEL,
    parse_registry_uri,
)
from radiogenomics.training.registry.promotion import (
    FIRST_CHAMPION,
    KEPT_CHAMPION,
    PROMOTED,
    PromotionDecision,
    champion_metrics,
    metric_direction,
    own_metrics,
    promotion_decision,
)
from radiogenomics.training.registry.register import (
    RegisteredVersion,
    RegistrationResult,
    input_signature,
    model_pip_requirements,
    register_models,
    signature_example,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "FIRST_CHAMPION", "KEPT_CHAMPION", "METRIC_TAG_PREFIX", "PRESCRIBER_MODEL", "PROMOTED",
    "RADIOSENSITIVITY_MODEL", "REGISTERED_MODELS", "RSI_MODEL_TAG", "TOXICITY_MODEL", "PromotionDecision",
    "RegisteredVersion", "RegistrationResult", "champion_metrics", "input_signature", "metric_direction",
    "model_pip_requirements", "own_metrics", "parse_registry_uri", "promotion_decision", "register_models",
    "signature_example",
]
