"""Backward compatibility: the pyfunc wrappers moved to :mod:`radiogenomics.training.registry.pyfunc`.

Models registered before the move pickled their wrapper classes by this module path; this alias lets them load.
New code imports :mod:`radiogenomics.training.registry.pyfunc`.
"""

from radiogenomics.training.registry.pyfunc import (
    PRESCRIBER_ARTIFACT,
    RADIOSENSITIVITY_ARTIFACT,
    TOXICITY_ARTIFACT,
    PrescriberModel,
    RadiosensitivityModel,
    ToxicityModel,
    pip_requirements,
    registered_info,
    schema_rows,
)

__all__ = ["PRESCRIBER_ARTIFACT", "RADIOSENSITIVITY_ARTIFACT", "TOXICITY_ARTIFACT", "PrescriberModel",
           "RadiosensitivityModel", "ToxicityModel", "pip_requirements", "registered_info", "schema_rows"]
