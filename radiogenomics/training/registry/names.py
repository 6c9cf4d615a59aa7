"""The registry's names (contract section 4): registered models, aliases, tags, and model URIs."""

from __future__ import annotations

import re

PRESCRIBER_MODEL = "radiogenomics-prescriber"
RADIOSENSITIVITY_MODEL = "radiogenomics-radiosensitivity"
TOXICITY_MODEL = "radiogenomics-toxicity"
#: The three registered models, in the order they are logged.
REGISTERED_MODELS: tuple[str, ...] = (RADIOSENSITIVITY_MODEL, TOXICITY_MODEL, PRESCRIBER_MODEL)
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Version tags ``heldout.<metric>``: the held-out metrics the next challenger is compared with.
METRIC_TAG_PREFIX = "heldout."
#: Version tag (radiosensitivity and prescriber versions) and run tag ``registry.<it>``: the RSI model's class.
RSI_MODEL_TAG = "radiosensitivity_model"
#: Version tags ``evaluation_digest.<task>`` (``radiosensitivity``, ``toxicity.<endpoint>``): the digest of the
#: data each held-out metric was computed on; ``evaluation_digest``: one digest of the version's own tasks.
DIGEST_TAG = "evaluation_digest"
DIGEST_TAG_PREFIX = "evaluation_digest."
#: Version tag of the toxicity and prescriber versions: the toxicity endpoints served (JSON list).
ENDPOINTS_TAG = "endpoints"
#: Version tags ``unit.<registered model>``: the version of each of the three models registered together (the
#: unit that moves as one), ``none`` when that model got no version in the unit.
UNIT_TAG_PREFIX = "unit."
NO_VERSION = "none"
#: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; None for any other URI."""
    match = _REGISTRY_URI.match(uri.strip())
    return (match["name"], match["alias"], match["version"]) if match else None
