"""The model registry (contract section 4): registration, promotion, the pyfunc wrappers, and prediction from a
registered prescriber.

* :mod:`.names`: registered model names, aliases, tags, model URIs;
* :mod:`.promotion`: whether a new unit becomes ``champion`` (fails closed), and a person's decision;
* :mod:`.register`: log and register the three models in one MLflow run;
* :mod:`.pyfunc`: the MLflow pyfunc wrappers of the three models;
* :mod:`.prediction`: load a registered prescriber, predict a batch, write records.

See ``docs/registry.md``.
"""

from radiogenomics.training.registry.names import (
    CHALLENGER,
    CHAMPION,
    DIGEST_TAG,
    DIGEST_TAG_PREFIX,
    ENDPOINTS_TAG,
    METRIC_TAG_PREFIX,
    NO_VERSION,
    PRESCRIBER_MODEL,
    RADIOSENSITIVITY_MODEL,
    REGISTERED_MODELS,
    RSI_MODEL_TAG,
    TOXICITY_MODEL,
    UNIT_TAG_PREFIX,
    parse_registry_uri,
)
from radiogenomics.training.registry.promotion import (
    FIRST_CHAMPION,
    KEPT_CHAMPION,
    MANUAL,
    PROMOTED,
    Evaluation,
    Move,
    PromotionDecision,
    UnitDecision,
    champion_evaluation,
    champion_metrics,
    evaluation_from_tags,
    metric_direction,
    own_digests,
    own_metrics,
    promote_unit,
    promotion_decision,
    unit_of,
    unit_promotion_decision,
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
    "CHALLENGER", "CHAMPION", "DIGEST_TAG", "DIGEST_TAG_PREFIX", "ENDPOINTS_TAG", "FIRST_CHAMPION", "KEPT_CHAMPION",
    "MANUAL", "METRIC_TAG_PREFIX", "NO_VERSION", "PRESCRIBER_MODEL", "PROMOTED", "RADIOSENSITIVITY_MODEL",
    "REGISTERED_MODELS", "RSI_MODEL_TAG", "TOXICITY_MODEL", "UNIT_TAG_PREFIX", "Evaluation", "Move",
    "PromotionDecision", "RegisteredVersion", "RegistrationResult", "UnitDecision", "champion_evaluation",
    "champion_metrics", "evaluation_from_tags", "input_signature", "metric_direction", "model_pip_requirements",
    "own_digests", "own_metrics", "parse_registry_uri", "promote_unit", "promotion_decision", "register_models",
    "signature_example", "unit_of", "unit_promotion_decision",
]
